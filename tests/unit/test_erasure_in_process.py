"""Erasure end to end, in one process: the six applications, their relays, a webhook
destination and a HubSpot destination (a loopback fake that speaks HubSpot's HTTP)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from test_pipeline_in_process import Broker, drain

from connectors.fakes.hubspot import FakeHubSpot
from services.activation.application import ActivationApplication
from services.activation.destinations import Destination
from services.activation.translation import translator as activation_translator
from services.consent.application import ConsentApplication
from services.consent.erasure import Erasure, ErasureError, ErasureLog
from services.contacts.application import ContactsApplication
from services.contacts.translation import translator as contacts_translator
from services.gateway.application import GatewayApplication
from services.gateway.translation import translator as gateway_translator
from services.identity.application import IdentityApplication
from services.identity.translation import translator as identity_translator
from services.segments.application import SegmentsApplication
from services.segments.translation import translator as segments_translator
from shared.config import Settings
from shared.outbox import OutboxRelay
from tessera.testing.privacy_scan import Person, scan_files
from tessera.testing.webhook_receiver import WebhookReceiver

PARTITIONS = 2
ANN = Person(email="Annabelle.Qorvath@Example.org", phone="06 71 84 29 53",
             phone_e164="+33671842953", first_name="Annabelle", last_name="Qorvath")
ADDRESS = {"street": "12 rue des Zinnias", "postal_code": "75011", "city": "Paris"}
BUYERS = {"event": "Order Completed", "count": {"op": "at_least", "value": 2},
          "within_days": 30}


@pytest.fixture
def world(tmp_path):
    receiver = WebhookReceiver("in-process")
    receiver.start()
    hubspot = FakeHubSpot("pat-na1-test")
    hubspot_url = hubspot.start()
    settings = Settings(data_dir=tmp_path, partitions=PARTITIONS, write_keys={"wk": "web"})
    destinations = [
        Destination("ads", "webhook", ("buyers",), ("advertising",),
                    {"url": receiver.url_for("ads"), "secret": "in-process"}),
        Destination("crm", "hubspot", ("buyers",), ("advertising",),
                    {"base_url": hubspot_url, "access_token": "pat-na1-test"}),
    ]
    apps = {
        "gateway": GatewayApplication(settings),
        "identity": IdentityApplication(settings),
        "contacts": ContactsApplication(settings),
        "segments": SegmentsApplication(settings),
        "consent": ConsentApplication(settings),
        "activation": ActivationApplication(settings, destinations=destinations,
                                            sleep=lambda seconds: None),
    }
    translators = {"gateway": gateway_translator, "identity": identity_translator,
                   "contacts": contacts_translator, "segments": segments_translator,
                   "activation": activation_translator}
    broker = Broker()
    relays = [OutboxRelay(apps[name], make(PARTITIONS), broker)
              for name, make in translators.items()]
    apps["segments"].define_segment("buyers", BUYERS)

    def call(service, method, **kwargs):
        return getattr(apps[service], method)(**kwargs)

    world = type("World", (), {})()
    world.apps, world.receiver, world.hubspot, world.settings = apps, receiver, hubspot, settings
    world.drain = lambda: drain(apps, relays, broker)
    world.erasure = Erasure(ErasureLog(settings), call, sleep=lambda seconds: None)
    yield world
    receiver.stop()
    hubspot.stop()
    for app in apps.values():
        app.close()


def identify(user_id: str, email: str, phone: str | None, first: str, last: str) -> dict:
    traits = {"email": email, "first_name": first, "last_name": last,
              "name": f"{first} {last}", "address": ADDRESS}
    if phone:
        traits["phone"] = phone
    return {"type": "identify", "userId": user_id, "traits": traits,
            "context": {"consent": {"categoryPreferences": {"advertising": True}}}}


def order(user_id: str) -> dict:
    return {"type": "track", "userId": user_id, "event": "Order Completed",
            "properties": {"total": 42}}


def track_the_household(world) -> None:
    now = datetime.now(UTC)
    world.apps["gateway"].ingest("web", {"batch": [
        identify("ann-1", ANN.email, ANN.phone, ANN.first_name, ANN.last_name),
        {"type": "page", "anonymousId": "anon-ann", "name": "Home",
         "context": {"traits": {"email": ANN.email}}},
        identify("leo-1", "leopold.household@example.org", None, "Leopold", "Brandewijn"),
    ]}, received_at=now)
    world.drain()
    world.apps["gateway"].ingest("web", {"batch": [
        order("ann-1"), order("ann-1"), order("leo-1"), order("leo-1")]}, received_at=now)
    world.drain()


def test_an_erased_person_leaves_no_trace_in_any_store_and_their_household_stays(world):
    apps = world.apps
    track_the_household(world)
    ann_id = apps["identity"].profile_id_for("user_id", "ann-1")
    leo_id = apps["identity"].profile_id_for("user_id", "leo-1")
    assert apps["identity"].profile_id_for("anonymous_id", "anon-ann") == ann_id
    assert {i["traits"]["email"] for i in world.receiver.items()} >= {ANN.email}
    assert ANN.email.lower() in world.hubspot.contacts

    outcome = world.erasure.erase(["email", ANN.email], requested_by="dpo@example.org")
    world.drain()

    assert outcome["status"] == "erased" and outcome["profile_ids"] == [ann_id]
    assert all(s["status"] == "erased" for s in outcome["services"].values())
    assert outcome["recipients"]["crm"]["status"] == "confirmed"
    assert outcome["recipients"]["ads"]["status"] == "confirmed"  # webhooks are told too
    assert any(i.get("action") == "erased" for i in world.receiver.items())
    assert ANN.email.lower() not in world.hubspot.contacts
    assert scan_files(world.settings.data_dir, ANN.needles()) == []
    # What the person was is gone from every read; the household member is untouched.
    assert apps["identity"].profile_id_for("email", ANN.email.lower()) is None
    assert apps["contacts"].profile(ann_id)["traits"] == {}
    leo = apps["contacts"].profile(leo_id)
    assert leo["traits"]["email"] == "leopold.household@example.org"
    assert leo["traits"]["address"] == ADDRESS
    assert apps["identity"].profile_id_for("user_id", "leo-1") == leo_id


def test_an_erased_person_is_not_brought_back_by_a_later_import(world):
    track_the_household(world)
    world.erasure.erase("email:" + ANN.email, requested_by="dpo@example.org")
    before = world.apps["identity"].profile_count()

    outcome = world.apps["gateway"].ingest("csv", {"batch": [
        {"type": "identify", "userId": "crm-row-17",
         "traits": {"email": f"  {ANN.email.upper()} ", "first_name": ANN.first_name}},
        {"type": "identify", "anonymousId": "new-device", "traits": {"phone": ANN.phone_e164}},
    ]}, received_at=datetime.now(UTC))
    world.drain()

    assert outcome.suppressed == 2 and outcome.accepted == 0
    assert world.apps["identity"].profile_count() == before
    assert scan_files(world.settings.data_dir, ANN.needles()) == []
    [dropped, *_] = world.apps["gateway"].rejections(source="csv")
    assert dropped["rule"] == "erased" and dropped["redacted"] == {}


def test_the_erasure_log_names_nobody_and_is_reapplied_after_a_restore(world, tmp_path):
    track_the_household(world)
    outcome = world.erasure.erase(["user_id", "ann-1"], requested_by="dpo@example.org")
    log_file = (tmp_path / "erasures.sqlite").read_bytes()
    assert ANN.email.lower().encode() not in log_file.lower() and b"ann-1" not in log_file

    # A restored backup brings the keys back; re-applying the log shreds them again.
    contacts = world.apps["contacts"]
    with contacts.process_recorder.datastore.transaction(commit=True) as cursor:
        cursor.execute("UPDATE subject_keys SET key = X'00112233445566778899aabbccddeeff', "
                       "erased_at = NULL")
    contacts.privacy.keys._keys.clear()
    again = world.erasure.reapply()
    assert again == {"erasures": 1, "failed": {}}
    [ann_id] = outcome["profile_ids"]
    with contacts.process_recorder.datastore.transaction(commit=False) as cursor:
        cursor.execute("SELECT key FROM subject_keys WHERE subject = ?",
                       (contacts.privacy.hashed(f"profile:{ann_id}"),))
        assert cursor.fetchone()[0] is None


def test_a_destination_that_fails_is_retried_and_left_on_the_ledger_as_failed(world):
    track_the_household(world)
    world.hubspot.fail_next(3, status=503)  # each of the three attempts
    outcome = world.erasure.erase(["email", ANN.email], requested_by="dpo@example.org")
    assert outcome["recipients"]["crm"]["status"] == "failed"
    assert outcome["recipients"]["crm"]["attempts"] == 3

    again = world.erasure.erase(["email", ANN.email], requested_by="dpo@example.org",
                                request_id=outcome["request_id"])
    assert again["recipients"]["crm"]["status"] == "confirmed"
    assert again["recipients"]["crm"]["attempts"] == 4
    assert ANN.email.lower() not in world.hubspot.contacts


@pytest.mark.parametrize("identifier, rule", [
    (["email"], "a [type, value] pair"), ("email", "TYPE:VALUE"), (["email", " "], "empty"),
    (["shoe_size", "42"], "type must be one of")])
def test_a_bad_erasure_request_names_the_field_and_the_rule(world, identifier, rule):
    with pytest.raises(ErasureError, match=re.escape(rule)) as refused:
        world.erasure.erase(identifier, requested_by="dpo@example.org")
    assert str(refused.value).startswith("identifier:")


def test_an_erased_persons_dead_letters_keep_no_data_and_are_never_sent_again(world):
    world.receiver.fail_next(100, status=500)  # every attempt of every send fails
    track_the_household(world)
    activation = world.apps["activation"]
    [letter] = activation.dead_letters("ads")
    assert {i["traits"].get("email") for i in letter["items"]} >= {ANN.email}
    world.receiver.clear()
    world.receiver.fail_next(0)

    world.erasure.erase(["email", ANN.email], requested_by="dpo@example.org")

    [letter] = activation.dead_letters("ads")
    ann_items = [i for i in letter["items"] if i.get("_erased")]
    assert ann_items and all(set(i) <= {"idempotency_key", "profile_id", "destination",
                                        "segment", "action", "decision_id", "reason", "position",
                                        "_erased"} for i in ann_items)
    assert scan_files(world.settings.data_dir, ANN.needles()) == []
    activation.replay("ads", letter["id"], world.apps["consent"].decide_many)
    assert ANN.email not in {i["traits"].get("email") for i in world.receiver.items()}
    assert "leopold.household@example.org" in {
        i["traits"].get("email") for i in world.receiver.items()}


def test_every_service_rebuilds_from_its_store_after_an_erasure(world):
    track_the_household(world)
    leo_id = world.apps["identity"].profile_id_for("user_id", "leo-1")
    world.erasure.erase(["email", ANN.email], requested_by="dpo@example.org")

    settings = world.settings
    rebuilt = {cls.service_name: cls(settings) for cls in (
        GatewayApplication, IdentityApplication, ContactsApplication, SegmentsApplication,
        ConsentApplication)}
    rebuilt["activation"] = ActivationApplication(settings, destinations=[])
    try:
        assert rebuilt["identity"].profile_id_for("user_id", "leo-1") == leo_id
        assert rebuilt["identity"].profile_id_for("user_id", "ann-1") is None
        assert rebuilt["contacts"].profile(leo_id)["traits"]["first_name"] == "Leopold"
        assert rebuilt["gateway"].counts()["accepted"] == 7  # counts survive erasure
        assert rebuilt["consent"].consent_of(leo_id)["records"]
    finally:
        for app in rebuilt.values():
            app.close()
