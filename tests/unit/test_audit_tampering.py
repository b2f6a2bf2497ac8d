"""Every service's history, embedded (SQLite) and on the real PostgreSQL (one schema per
service): `tessera audit verify` passes on what the services stored and fails, naming the
place, on each way of tampering with it. Each test gets its own copy of the sealed stores."""

from __future__ import annotations

import os
import re
import secrets
import shutil

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.audit import (
    SERVICES,
    Sealer,
    SealingTimer,
    event_digest,
    open_audit_store,
    public_key_text,
    signing_key_pem,
)
from shared.config import Settings
from tessera.cli import main
from tessera.testing.pipeline import fill_every_store
from tessera.testing.platform import drop_database
from tessera.testing.tampering import Tampering

SIGNING_KEY = Ed25519PrivateKey.generate()
ADMIN = "host=127.0.0.1 user=postgres dbname=postgres"


def postgres(dbname: str) -> Settings:
    return Settings(database="postgres", postgres_dbname=dbname, partitions=2,
                    write_keys={"wk": "web"})


def seal(settings: Settings, service: str) -> int:
    store = open_audit_store(settings, service, create=True)
    try:
        return Sealer(store, SIGNING_KEY, batch=3).seal()
    finally:
        store.close()


def seal_every_store(settings: Settings) -> None:
    """A few people through the pipeline, sealed in small batches (so there are several
    checkpoints) with the trusted key."""
    fill_every_store(settings)
    for service in SERVICES:
        seal(settings, service)


@pytest.fixture(scope="module", params=["sqlite", pytest.param(
    "postgres", marks=pytest.mark.integration)])
def sealed_template(request, tmp_path_factory):
    if request.param == "sqlite":
        settings = Settings(data_dir=tmp_path_factory.mktemp("audit-template"), partitions=2,
                            write_keys={"wk": "web"})
        seal_every_store(settings)
        yield "sqlite", settings.data_dir
        return
    name = f"tessera_audit_tpl_{secrets.token_hex(4)}"
    seal_every_store(postgres(name))
    yield "postgres", name
    drop_database(name)


@pytest.fixture
def history(sealed_template, tmp_path, monkeypatch):
    """A fresh copy of the sealed stores, and `tessera audit verify` pointed at them with
    only the public key (an auditor cannot sign)."""
    for variable in list(os.environ):
        if variable.startswith("TESSERA_"):
            monkeypatch.delenv(variable)
    monkeypatch.setenv("TESSERA_AUDIT_PUBLIC_KEYS", public_key_text(SIGNING_KEY.public_key()))
    backend, template = sealed_template
    if backend == "sqlite":
        data_dir = tmp_path / "data"
        shutil.copytree(template, data_dir)
        monkeypatch.setenv("TESSERA_DATA_DIR", str(data_dir))
        yield Settings(data_dir=data_dir)
        return
    name = f"tessera_audit_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    monkeypatch.setenv("TESSERA_DATABASE", "postgres")
    monkeypatch.setenv("TESSERA_POSTGRES_DBNAME", name)
    yield postgres(name)
    drop_database(name)


def verify(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["audit", "verify", *args])
    return code, capsys.readouterr().out


def first_finding(out: str) -> str:
    return next(line.strip() for line in out.splitlines() if line.startswith("    "))


def place(row) -> str:
    return (f"notification {row.notification_id} (originator {row.originator_id} "
            f"version {row.version})")


def test_the_untampered_history_of_every_service_verifies(history, capsys):
    code, out = verify(capsys)

    assert code == 0, out
    assert all(re.search(rf"{service}\s+OK", out) for service in SERVICES)
    assert out.rstrip().endswith(": OK")


@pytest.mark.parametrize("service", SERVICES)
def test_altering_one_stored_event_fails_and_names_it(history, capsys, service):
    attacker = Tampering(history, service)
    victim = attacker.rows()[len(attacker.rows()) // 2]
    attacker.alter(victim.notification_id)
    attacker.close()

    code, out = verify(capsys, "--service", service)

    assert code == 1
    assert re.search(rf"{service}\s+FAIL", out)
    assert first_finding(out).startswith(f"altered: altered event: the stored bytes of "
                                         f"{place(victim)}")
    assert f"FAILED: {service}" in out


@pytest.mark.parametrize("service", SERVICES)
def test_deleting_one_stored_event_fails_and_names_it(history, capsys, service):
    attacker = Tampering(history, service)
    victim = attacker.rows()[len(attacker.rows()) // 2]
    attacker.delete(victim.notification_id)
    attacker.close()

    code, out = verify(capsys, "--service", service)

    assert code == 1
    assert first_finding(out) == (f"deleted: deleted event: {place(victim)} was chained "
                                  "and is no longer stored")
    assert "chain_mismatch" in out  # the signed checkpoint covering it, not just the ledger


@pytest.mark.parametrize("service", SERVICES)
def test_swapping_two_stored_events_fails_and_names_both_places(history, capsys, service):
    attacker = Tampering(history, service)
    rows = attacker.rows()
    first, second = rows[1], rows[3]
    attacker.swap(first.notification_id, second.notification_id)
    attacker.close()

    code, out = verify(capsys, "--service", service)

    assert code == 1
    moved = [line.strip() for line in out.splitlines() if "reordered:" in line]
    assert moved[0].startswith(
        f"reordered: reordered events: notification {first.notification_id} now holds "
        f"originator {second.originator_id} version {second.version}, which was chained at "
        f"notification {second.notification_id}")
    assert f"notification {second.notification_id} now holds" in moved[1]


@pytest.mark.parametrize("service", SERVICES)
def test_cutting_off_the_tail_fails_and_says_how_much_is_missing(history, capsys, service):
    attacker = Tampering(history, service)
    gone = attacker.cut_tail(2)
    attacker.close()

    code, out = verify(capsys, "--service", service)

    assert code == 1
    assert first_finding(out).startswith("tail_cut: tail cut off")
    assert f"the first missing one was at {place(gone[0])}" in out


@pytest.mark.parametrize("service", SERVICES)
def test_a_chain_recomputed_without_the_signing_key_fails(history, capsys, service):
    attacker = Tampering(history, service)
    attacker.alter(attacker.rows()[0].notification_id)
    assert attacker.reseal(Ed25519PrivateKey.generate()) > 0  # ledger and seals redone
    attacker.close()

    code, out = verify(capsys, "--service", service)

    assert code == 1
    assert re.match(r"unknown_key: checkpoint #\d+ \(up to notification \d+, \d+ events",
                    first_finding(out))
    assert "not a trusted key: the chain was sealed by someone without the signing key" in out


@pytest.mark.parametrize("service", SERVICES)
def test_shredding_a_subject_key_leaves_the_history_verifiable(history, capsys, service):
    """Per-subject encryption (DESIGN §5): the events hold ciphertext, the keys sit in a key
    table. Erasure deletes keys; the chain covers only the stored bytes."""
    seal(history, service)
    attacker = Tampering(history, service)
    stored = attacker.run(f"SELECT state FROM {attacker.events} ORDER BY {attacker.id}")
    [(keys,)] = attacker.run(f"SELECT count(*) FROM {attacker.audit}subject_keys")
    assert keys > 0
    attacker.run(f"DELETE FROM {attacker.audit}subject_keys")  # every person here erased
    assert attacker.run(f"SELECT state FROM {attacker.events} "
                        f"ORDER BY {attacker.id}") == stored
    attacker.close()

    code, out = verify(capsys, "--service", service)

    assert code == 0, out


def test_a_tail_cut_with_its_seals_is_caught_by_anchors_kept_outside(history, capsys,
                                                                    tmp_path):
    """Without a copy of the latest checkpoint kept elsewhere, removing the newest events
    together with the ledger and checkpoints that cover them leaves a consistent, shorter
    history: the anchors are what prove the tail."""
    anchors = tmp_path / "anchors.json"
    assert main(["audit", "export", "--output", str(anchors)]) == 0
    attacker = Tampering(history, "contacts")
    gone = attacker.cut_tail(2)
    for table in ("audit_ledger", "audit_checkpoints"):
        attacker.run(f"DELETE FROM {attacker.audit}{table} WHERE notification_id >= %s",
                     gone[0].notification_id)
    attacker.close()

    assert verify(capsys, "--service", "contacts")[0] == 0
    code, out = verify(capsys, "--service", "contacts", "--anchors", str(anchors))

    assert code == 1
    assert "tail_cut: tail cut off" in out and "anchored checkpoint" in out


def test_only_the_leading_replica_seals(history, monkeypatch):
    if history.database != "postgres":
        pytest.skip("one process holds an embedded store: there is no other replica")
    monkeypatch.setenv("TESSERA_AUDIT_SIGNING_KEY", signing_key_pem(SIGNING_KEY).decode())
    attacker = Tampering(history, "consent")  # here, simply a writer of one more event
    attacker.run(f"INSERT INTO {attacker.events} (originator_id, originator_version, topic, "
                 "state) VALUES (%s, 1, 'late:Event', %s)",
                 "9f1c1c1e-0000-4000-8000-000000000001", b"\x00")
    attacker.close()
    leader, follower = SealingTimer(history, "consent"), SealingTimer(history, "consent")
    try:
        assert leader.seal_once() == 1
        assert follower.seal_once() == 0
    finally:
        leader.stop()
        follower.stop()


def test_events_stored_after_the_latest_checkpoint_pass_unless_strict(history, capsys):
    attacker = Tampering(history, "gateway")
    attacker.run(f"INSERT INTO {attacker.events} (originator_id, originator_version, topic, "
                 "state) VALUES (%s, 1, 'late:Event', %s)",
                 "9f1c1c1e-0000-4000-8000-000000000001", b"\x00")
    attacker.close()

    code, out = verify(capsys, "--service", "gateway")
    assert code == 0, out
    assert "1 newer than the latest checkpoint" in out

    code, out = verify(capsys, "--service", "gateway", "--strict")
    assert code == 1


def test_a_store_that_was_never_sealed_fails(history, capsys):
    attacker = Tampering(history, "segments")
    attacker.forget_seals()
    attacker.close()

    code, out = verify(capsys, "--service", "segments")

    assert code == 1
    assert "no_checkpoint" in out


def test_sealing_again_chains_only_what_is_new(history):
    assert seal(history, "gateway") == 0
    store = open_audit_store(history, "gateway", create=True)
    latest = store.latest_checkpoint()
    # Another sealer got there first: this one writes nothing and reports it.
    assert store.append(latest.notification_id - 1, [], latest) is False
    store.close()


def test_an_event_altered_together_with_its_ledger_row_is_caught_by_its_checkpoint(
        history, capsys):
    """The ledger only names places; what proves anything is the signed checkpoint."""
    attacker = Tampering(history, "identity")
    victim = attacker.rows()[4]
    attacker.alter(victim.notification_id)
    [(topic, state)] = attacker.run(f"SELECT topic, state FROM {attacker.events} "
                                    f"WHERE {attacker.id} = %s", victim.notification_id)
    attacker.run(f"UPDATE {attacker.audit}audit_ledger SET digest = %s "
                 "WHERE notification_id = %s",
                 event_digest(victim.originator_id, victim.version, topic, bytes(state)),
                 victim.notification_id)
    attacker.close()

    code, out = verify(capsys, "--service", "identity")

    assert code == 1
    assert first_finding(out).startswith("chain_mismatch: the chain recomputed from the "
                                         "stored events")
    assert "    altered:" not in out  # the ledger was made to agree: it cannot say which


def test_an_edited_checkpoint_fails_its_signature(history, capsys):
    attacker = Tampering(history, "consent")
    checkpoints = f"{attacker.audit}audit_checkpoints"
    attacker.run(f"UPDATE {checkpoints} SET event_count = event_count + 1 "
                 f"WHERE id = (SELECT max(id) FROM {checkpoints})")
    attacker.close()

    code, out = verify(capsys, "--service", "consent")

    assert code == 1
    assert re.match(r"bad_signature: checkpoint #\d+ .* has a signature that key \w+ did not "
                    r"make: the checkpoint was forged or edited", first_finding(out))



def test_a_key_made_by_keygen_seals_from_a_file_and_its_printed_public_key_verifies(
        history, capsys, monkeypatch, tmp_path):
    key_file = tmp_path / "audit.pem"
    capsys.readouterr()
    assert main(["audit", "keygen", "--output", str(key_file)]) == 0
    public = capsys.readouterr().out.split("TESSERA_AUDIT_PUBLIC_KEYS: ")[1].strip()
    assert key_file.stat().st_mode & 0o077 == 0
    assert main(["audit", "keygen", "--output", str(key_file)]) == 2  # never overwrites a key
    attacker = Tampering(history, "segments")
    attacker.forget_seals()
    attacker.close()
    monkeypatch.setenv("TESSERA_AUDIT_SIGNING_KEY_FILE", str(key_file))

    assert main(["audit", "seal", "--service", "segments"]) == 0
    monkeypatch.setenv("TESSERA_AUDIT_PUBLIC_KEYS", public)
    code, out = verify(capsys, "--service", "segments", "--strict")

    assert code == 0, out
