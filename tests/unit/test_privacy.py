"""Per-subject encryption of personal data in stored events (shared.privacy)."""

from __future__ import annotations

import inspect
import sqlite3
import uuid
from datetime import UTC, datetime

import pytest
from eventsourcing.domain import Aggregate

import shared.privacy as privacy
from services.activation import privacy as activation_rules
from services.consent import privacy as consent_rules
from services.contacts import privacy as contacts_rules
from services.contacts.application import ContactsApplication
from services.contacts.domain import Profile
from services.gateway import privacy as gateway_rules
from services.gateway.application import GatewayApplication, IngestRequest
from services.identity import privacy as identity_rules
from services.segments import privacy as segments_rules
from shared.config import Settings
from shared.privacy import KeyedHash, is_erased, subject_of_profile

EMAIL = "ann.erased@example.com"


@pytest.fixture
def settings(tmp_path):
    return Settings(data_dir=tmp_path, write_keys={"wk": "web"})


def stored_bytes(settings: Settings, service: str) -> bytes:
    path = settings.data_dir / f"{service}.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.read_bytes()


def a_profile(app: ContactsApplication, **traits) -> Profile:
    profile = Profile(str(uuid.uuid4()))
    profile.update_traits(traits)
    app.save(profile)
    return profile


def test_personal_data_reaches_the_event_store_only_encrypted(settings):
    app = ContactsApplication(settings)
    profile = a_profile(app, email=EMAIL, name="Ann Erased")
    assert app.repository.get(profile.id).traits["email"] == EMAIL
    raw = stored_bytes(settings, "contacts")
    assert EMAIL.encode() not in raw and b"Ann Erased" not in raw


def test_a_restarted_service_reads_its_own_encrypted_events(settings):
    writer = ContactsApplication(settings)
    profile = a_profile(writer, email=EMAIL)
    restarted = ContactsApplication(settings)
    assert restarted.repository.get(profile.id).traits == {"email": EMAIL}


def test_a_shredded_subject_loads_as_erased_and_its_aggregate_still_loads(settings):
    app = ContactsApplication(settings)
    profile = a_profile(app, email=EMAIL)
    profile.update_traits({"plan": "pro"})
    app.save(profile)
    assert app.shred_subjects([subject_of_profile(profile.profile_id)]) == 1

    for reader in (app, ContactsApplication(settings)):  # this process, and a rebuild
        erased = reader.repository.get(profile.id)
        assert erased.traits == {}
        assert erased.version == 3 and erased.profile_id == profile.profile_id
    events = list(app.events.get(profile.id))
    assert all(is_erased(e) for e in events[1:])


def test_what_is_written_for_an_erased_subject_is_erased_as_it_is_written(settings):
    app = ContactsApplication(settings)
    profile = a_profile(app, email=EMAIL)
    app.shred_subjects([subject_of_profile(profile.profile_id)])
    late = app.repository.get(profile.id)
    late.update_traits({"email": EMAIL})  # an event of the person still in flight
    app.save(late)
    rebuilt = ContactsApplication(settings)
    assert rebuilt.repository.get(profile.id).traits == {}


def test_other_people_are_untouched_by_an_erasure(settings):
    app = ContactsApplication(settings)
    ann, bob = a_profile(app, email=EMAIL), a_profile(app, email="bob@example.com")
    app.shred_subjects([subject_of_profile(ann.profile_id)])
    rebuilt = ContactsApplication(settings)
    assert rebuilt.repository.get(bob.id).traits == {"email": "bob@example.com"}


def test_a_merge_seals_the_absorbed_persons_traits_under_their_own_key(settings):
    app = ContactsApplication(settings)
    survivor = a_profile(app, plan="pro")
    absorbed_id = str(uuid.uuid4())
    survivor.absorb(absorbed_id, {"email": EMAIL}, 3)
    app.save(survivor)
    app.shred_subjects([subject_of_profile(absorbed_id)])

    rebuilt = ContactsApplication(settings)
    loaded = rebuilt.repository.get(survivor.id)
    assert loaded.traits == {"plan": "pro"}  # the absorbed person's email is gone
    assert loaded.absorbed == [absorbed_id] and loaded.events_total == 3


def test_a_batch_seals_each_item_under_its_own_persons_key(settings):
    gateway = GatewayApplication(settings)
    gateway.ingest("web", {"batch": [
        {"type": "identify", "userId": "ann", "traits": {"email": EMAIL}},
        {"type": "identify", "userId": "bob", "traits": {"email": "bob@example.com"}},
    ]}, received_at=datetime.now(UTC))
    gateway.shred_subjects(["user_id:ann"])

    rebuilt = GatewayApplication(settings)
    [received] = rebuilt.scan(IngestRequest.Received)
    ann, bob = received.accepted
    # What the gateway needs to recognise retries stays readable; nothing else does.
    assert ann == {"messageId": ann["messageId"], "_erased": True} and ann["messageId"]
    assert bob["traits"] == {"email": "bob@example.com"} and not is_erased(bob)
    assert EMAIL.encode() not in stored_bytes(settings, "gateway")


def test_a_ciphertext_moved_to_another_stream_does_not_decrypt(settings):
    app = ContactsApplication(settings)
    profile = a_profile(app, email=EMAIL)
    stored = app.recorder.select_events(profile.id)[-1]
    moved = type(stored)(originator_id=uuid.uuid4(), originator_version=stored.originator_version,
                         topic=stored.topic, state=stored.state)
    assert is_erased(app.mapper.to_domain_event(moved))


def test_the_key_table_names_nobody(settings):
    app = ContactsApplication(settings)
    profile = a_profile(app, email=EMAIL)
    with sqlite3.connect(settings.data_dir / "contacts.sqlite") as db:
        subjects = [row[0] for row in db.execute("SELECT subject FROM subject_keys")]
    assert profile.profile_id not in " ".join(subjects)
    assert subjects == [app.privacy.hashed(subject_of_profile(profile.profile_id))]


def test_a_key_shredded_by_another_replica_stops_working_here(settings, monkeypatch):
    monkeypatch.setattr(privacy, "TOMBSTONE_REFRESH_SECONDS", 0.0)
    here, there = ContactsApplication(settings), ContactsApplication(settings)
    profile = a_profile(here, email=EMAIL)
    assert there.repository.get(profile.id).traits == {"email": EMAIL}
    here.shred_subjects([subject_of_profile(profile.profile_id)])
    there.forget_cached_state()
    assert there.repository.get(profile.id).traits == {}


def test_keyed_hashes_depend_on_the_secret():
    one, other = KeyedHash(b"one"), KeyedHash(b"other")
    assert one.identifier("email", EMAIL) != other.identifier("email", EMAIL)
    assert one.identifier("email", EMAIL) == KeyedHash(b"one").identifier("email", EMAIL)


def test_without_the_variable_a_secret_is_generated_once_into_the_data_dir(tmp_path,
                                                                          monkeypatch):
    monkeypatch.delenv(privacy.SECRET_ENV, raising=False)
    first = privacy.privacy_secret(tmp_path)
    assert privacy.privacy_secret(tmp_path) == first and len(first) >= 32
    assert (tmp_path / privacy.SECRET_FILE).stat().st_mode & 0o077 == 0
    monkeypatch.setenv(privacy.SECRET_ENV, "from-the-environment")
    assert privacy.privacy_secret(tmp_path) == b"from-the-environment"


def _stored_event_classes(module) -> set[type]:
    """The events an aggregate of the module can store: its created event and the
    events of its decorated methods."""
    from eventsourcing import domain

    found = set()
    for _, aggregate in inspect.getmembers(module, inspect.isclass):
        if not issubclass(aggregate, Aggregate) or aggregate.__module__ != module.__name__:
            continue
        found.update(domain._created_event_classes.get(aggregate, ()))
        for _, member in inspect.getmembers(aggregate, inspect.isclass):
            if member in domain.decorated_funcs and member.__qualname__.startswith(
                    aggregate.__qualname__ + "."):
                found.add(member)
    return found


@pytest.mark.parametrize("rules", [gateway_rules, identity_rules, contacts_rules,
                                   segments_rules, consent_rules, activation_rules],
                         ids=lambda m: m.__name__.split(".")[1])
def test_every_stored_event_class_has_a_privacy_rule(rules):
    import importlib

    service = rules.__name__.split(".")[1]
    modules = [importlib.import_module(f"services.{service}.domain")]
    if service == "gateway":
        modules = [importlib.import_module("services.gateway.application"),
                   importlib.import_module("services.gateway.subject_log")]
    if service == "consent":
        modules.append(importlib.import_module("services.consent.requests"))
    declared = set(rules.RULES)
    missing = {cls.__qualname__ for m in modules for cls in _stored_event_classes(m)
               if cls not in declared and not cls.__name__.startswith("Erased")}
    assert not missing, f"no privacy rule for {sorted(missing)} in services/{service}/privacy.py"


def test_a_relay_reading_an_erased_persons_events_publishes_nothing_of_them(settings):
    from services.gateway.translation import translator
    from shared.outbox import OutboxRelay

    gateway = GatewayApplication(settings)
    gateway.ingest("web", {"batch": [
        {"type": "identify", "userId": "ann", "traits": {"email": EMAIL}},
        {"type": "identify", "userId": "bob", "traits": {"email": "bob@example.com"}},
    ]}, received_at=datetime.now(UTC))
    gateway.shred_subjects(["user_id:ann"])

    published = []
    publisher = type("Publisher", (), {"publish": lambda self, e: published.extend(e)})()
    restarted = GatewayApplication(settings)
    OutboxRelay(restarted, translator(2), publisher).relay_once()
    items = [item for envelope in published for item in envelope.items]
    assert [item["event"]["userId"] for item in items] == ["bob"]


def test_erasure_drops_snapshots_which_hold_decrypted_state(settings):
    from services.activation.application import ActivationApplication

    activation = ActivationApplication(settings, destinations=[])
    ledger = activation._ledger("ads")
    profile_id = str(uuid.uuid4())
    item = {"idempotency_key": f"ads:{profile_id}:x", "profile_id": profile_id,
            "destination": "ads", "segment": "buyers", "action": "entered",
            "traits": {"email": EMAIL}}
    ledger.dead_letter("letter-1", [item], "HTTP 500", "2026-11-30T00:00:00Z")
    while ledger.version < 200:  # the ledger is snapshotted every 200 events
        ledger.skipped_batch([])
    activation.save(ledger)
    assert EMAIL.encode() in stored_bytes(settings, "activation")  # in the snapshot

    activation.erase_subject([profile_id], [["email", EMAIL]])

    assert EMAIL.encode() not in stored_bytes(settings, "activation")
    [letter] = activation.dead_letters("ads")
    assert is_erased(letter["items"][0]) and "traits" not in letter["items"][0]


@pytest.fixture
def postgres_settings(tmp_path):
    from tessera.testing.platform import drop_database

    settings = Settings(database="postgres", data_dir=tmp_path,
                        postgres_dbname=f"privacy_{uuid.uuid4().hex}")
    yield settings
    drop_database(settings.postgres_dbname)


def test_on_postgres_two_replicas_creating_one_subjects_key_never_lose_events(
        postgres_settings):
    """Two gateways see a new user id at once: the second save fails (and is retried
    with the key the first one stored) instead of storing events under a lost key."""
    first, second = GatewayApplication(postgres_settings), GatewayApplication(postgres_settings)
    try:
        subject = first.privacy.hashed("user_id:ann")
        second.privacy.keys.key_for_writing(subject)  # the second makes its own new key...
        # ...while the first stores another:
        first.ingest("web", {"batch": [{"type": "identify", "userId": "ann",
                                        "traits": {"email": EMAIL}}]},
                     received_at=datetime.now(UTC))
        event = {"type": "identify", "userId": "ann", "traits": {"plan": "pro"}}
        with pytest.raises(Exception, match="division by zero"):
            second.ingest("web", {"batch": [event]}, received_at=datetime.now(UTC))
        second.ingest("web", {"batch": [event]}, received_at=datetime.now(UTC))  # the retry

        reader = GatewayApplication(postgres_settings)
        requests = list(reader.scan(IngestRequest.Received))
        assert [r.accepted[0]["traits"] for r in requests] == [{"email": EMAIL},
                                                                {"plan": "pro"}]
        assert not any(is_erased(r.accepted[0]) for r in requests)
        reader.close()
    finally:
        first.close()
        second.close()


def test_on_postgres_a_save_of_many_new_keys_fails_whole_if_one_collides(postgres_settings):
    """Many new keys go in one statement: one of them colliding with another replica's
    still fails the save, and its retry stores every event under the stored keys."""
    first, second = GatewayApplication(postgres_settings), GatewayApplication(postgres_settings)
    try:
        second.privacy.keys.key_for_writing(first.privacy.hashed("user_id:ann"))
        first.ingest("web", {"batch": [{"type": "identify", "userId": "ann",
                                        "traits": {"email": EMAIL}}]},
                     received_at=datetime.now(UTC))
        batch = {"batch": [{"type": "identify", "userId": user, "traits": {"plan": "pro"}}
                           for user in ("bob", "ann", "cy")]}
        with pytest.raises(Exception, match="division by zero"):
            second.ingest("web", batch, received_at=datetime.now(UTC))
        second.ingest("web", batch, received_at=datetime.now(UTC))

        reader = GatewayApplication(postgres_settings)
        [_, retried] = list(reader.scan(IngestRequest.Received))
        assert [i["userId"] for i in retried.accepted] == ["bob", "ann", "cy"]
        assert not any(is_erased(item) for item in retried.accepted)
        reader.close()
    finally:
        first.close()
        second.close()
