"""Every service's history on the real PostgreSQL (one schema per service): `tessera audit
verify` passes on what the services stored and fails, naming the place, on each way of
tampering with it. Each test gets its own copy of one sealed database."""

from __future__ import annotations

import os
import re
import secrets

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.audit import SERVICES, Sealer, open_audit_store, public_key_text
from shared.config import Settings
from tessera.cli import main
from tessera.testing.pipeline import fill_every_store
from tessera.testing.platform import drop_database
from tessera.testing.tampering import Tampering

pytestmark = pytest.mark.integration

SIGNING_KEY = Ed25519PrivateKey.generate()
ADMIN = "host=127.0.0.1 user=postgres dbname=postgres"


def postgres(dbname: str) -> Settings:
    return Settings(database="postgres", postgres_dbname=dbname, partitions=2,
                    write_keys={"wk": "web"})


def seal(settings: Settings, service: str, key=SIGNING_KEY, batch: int = 3) -> int:
    store = open_audit_store(settings, service, create=True)
    try:
        return Sealer(store, key, batch=batch).seal()
    finally:
        store.close()


@pytest.fixture(scope="module")
def sealed_template():
    name = f"tessera_audit_tpl_{secrets.token_hex(4)}"
    settings = postgres(name)
    fill_every_store(settings)
    for service in SERVICES:
        seal(settings, service)
    yield name
    drop_database(name)


@pytest.fixture
def history(sealed_template, monkeypatch):
    name = f"tessera_audit_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{sealed_template}"')
    for variable in list(os.environ):
        if variable.startswith("TESSERA_"):
            monkeypatch.delenv(variable)
    monkeypatch.setenv("TESSERA_DATABASE", "postgres")
    monkeypatch.setenv("TESSERA_POSTGRES_DBNAME", name)
    monkeypatch.setenv("TESSERA_AUDIT_PUBLIC_KEYS", public_key_text(SIGNING_KEY.public_key()))
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


@pytest.mark.parametrize("service", SERVICES)
def test_altering_one_stored_event_fails_and_names_it(history, capsys, service):
    attacker = Tampering(history, service)
    victim = attacker.rows()[len(attacker.rows()) // 2]
    attacker.alter(victim.notification_id)
    attacker.close()

    code, out = verify(capsys, "--service", service)

    assert code == 1
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
    assert "chain_mismatch" in out


@pytest.mark.parametrize("service", SERVICES)
def test_swapping_two_stored_events_fails_and_names_both_places(history, capsys, service):
    attacker = Tampering(history, service)
    rows = attacker.rows()
    first, second = rows[1], rows[3]
    attacker.swap(first.notification_id, second.notification_id)
    attacker.close()

    code, out = verify(capsys, "--service", service)

    assert code == 1
    assert first_finding(out).startswith(
        f"reordered: reordered events: notification {first.notification_id} now holds "
        f"originator {second.originator_id} version {second.version}, which was chained at "
        f"notification {second.notification_id}")


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
    assert attacker.reseal(Ed25519PrivateKey.generate()) > 0
    attacker.close()

    code, out = verify(capsys, "--service", service)

    assert code == 1
    assert re.match(r"unknown_key: checkpoint #\d+ \(up to notification \d+, \d+ events",
                    first_finding(out))


@pytest.mark.parametrize("service", SERVICES)
def test_shredding_a_subject_key_leaves_the_history_verifiable(history, capsys, service):
    """Erasure deletes keys from the service's key table; the events, chained, stay."""
    seal(history, service)
    attacker = Tampering(history, service)
    stored = attacker.run(f"SELECT state FROM {attacker.events} ORDER BY notification_id")
    [(keys,)] = attacker.run(f'SELECT count(*) FROM "{service}".subject_keys')
    assert keys > 0
    attacker.run(f'DELETE FROM "{service}".subject_keys')  # every person here erased
    assert attacker.run(f"SELECT state FROM {attacker.events} "
                        "ORDER BY notification_id") == stored
    attacker.close()

    code, out = verify(capsys, "--service", service)

    assert code == 0, out


def test_a_tail_cut_with_its_seals_is_caught_by_anchors_kept_outside(history, capsys,
                                                                    tmp_path):
    anchors = tmp_path / "anchors.json"
    assert main(["audit", "export", "--output", str(anchors)]) == 0
    attacker = Tampering(history, "identity")
    gone = attacker.cut_tail(2)
    attacker.run('DELETE FROM "identity".audit_ledger WHERE notification_id >= %s',
                 gone[0].notification_id)
    attacker.run('DELETE FROM "identity".audit_checkpoints WHERE notification_id >= %s',
                 gone[0].notification_id)
    attacker.close()

    assert verify(capsys, "--service", "identity")[0] == 0
    code, out = verify(capsys, "--service", "identity", "--anchors", str(anchors))

    assert code == 1
    assert "tail_cut: tail cut off" in out and "anchored checkpoint" in out


def test_only_the_leading_replica_seals(history, monkeypatch):
    from shared.audit import SealingTimer, signing_key_pem

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
