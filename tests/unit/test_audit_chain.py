"""Every service's history, embedded (SQLite): `tessera audit verify` passes on what the
services stored and fails, naming the place, on each way of tampering with it."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.audit import (
    SERVICES,
    Sealer,
    configured_signing_key,
    event_digest,
    open_audit_store,
    parse_public_keys,
    public_key_text,
    signing_key_pem,
    trusted_public_keys,
)
from shared.config import Settings
from tessera.cli import main
from tessera.testing.pipeline import fill_every_store
from tessera.testing.tampering import Tampering

SIGNING_KEY = Ed25519PrivateKey.generate()


def seal(settings: Settings, service: str, key=SIGNING_KEY, batch: int = 3) -> int:
    store = open_audit_store(settings, service, create=True)
    try:
        return Sealer(store, key, batch=batch).seal()
    finally:
        store.close()


@pytest.fixture(scope="module")
def sealed_template(tmp_path_factory):
    """The six stores after a few people went through the pipeline, sealed in small
    batches (so there are several checkpoints) with the trusted key."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("audit-template"), partitions=2,
                        write_keys={"wk": "web"})
    fill_every_store(settings)
    for service in SERVICES:
        seal(settings, service)
    return settings.data_dir


@pytest.fixture
def history(sealed_template, tmp_path, monkeypatch):
    """A fresh copy of the sealed stores, and `tessera audit verify` pointed at them with
    only the public key (an auditor cannot sign)."""
    data_dir = tmp_path / "data"
    shutil.copytree(sealed_template, data_dir)
    for name in list(os.environ):
        if name.startswith("TESSERA_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TESSERA_DATA_DIR", str(data_dir))
    monkeypatch.setenv("TESSERA_AUDIT_PUBLIC_KEYS", public_key_text(SIGNING_KEY.public_key()))
    return Settings(data_dir=data_dir)


def verify(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["audit", "verify", *args])
    return code, capsys.readouterr().out


def place(row) -> str:
    return f"notification {row.notification_id} (originator {row.originator_id} " \
           f"version {row.version})"


def service_line(out: str, service: str) -> str:
    return next(line for line in out.splitlines() if line.strip().startswith(service))


def test_the_untampered_history_of_every_service_verifies(history, capsys):
    code, out = verify(capsys)
    assert code == 0, out
    for service in SERVICES:
        assert " OK " in service_line(out, service)
    assert out.rstrip().endswith(": OK")


def first_finding(out: str) -> str:
    return next(line.strip() for line in out.splitlines() if line.startswith("    "))


@pytest.mark.parametrize("service", SERVICES)
def test_altering_one_stored_event_fails_and_names_it(history, capsys, service):
    attacker = Tampering(history, service)
    victim = attacker.rows()[len(attacker.rows()) // 2]
    attacker.alter(victim.notification_id)
    attacker.close()

    code, out = verify(capsys, "--service", service)

    assert code == 1
    assert "FAIL" in service_line(out, service)
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
    seal(history, service, SIGNING_KEY)
    with sqlite3.connect(history.data_dir / f"{service}.sqlite") as db:
        stored = db.execute("SELECT state FROM stored_events ORDER BY rowid").fetchall()
        assert db.execute("SELECT count(*) FROM subject_keys").fetchone()[0] > 0
        db.execute("DELETE FROM subject_keys")  # every person in this store erased
        assert db.execute("SELECT state FROM stored_events ORDER BY rowid").fetchall() == stored

    code, out = verify(capsys, "--service", service)

    assert code == 0, out


def test_events_stored_after_the_latest_checkpoint_pass_unless_strict(history, capsys):
    with sqlite3.connect(history.data_dir / "gateway.sqlite") as db:
        db.execute("INSERT INTO stored_events (originator_id, originator_version, topic, state) "
                   "VALUES ('9f1c1c1e-0000-4000-8000-000000000001', 1, 'late:Event', x'00')")

    code, out = verify(capsys, "--service", "gateway")
    assert code == 0, out
    assert "1 newer than the latest checkpoint" in out

    code, out = verify(capsys, "--service", "gateway", "--strict")
    assert code == 1


def test_a_tail_cut_with_its_seals_is_caught_by_anchors_kept_outside(history, capsys,
                                                                    tmp_path):
    """Without a copy of the latest checkpoint kept elsewhere, removing the newest events
    together with the ledger and checkpoints that cover them leaves a consistent, shorter
    history: the anchors are what prove the tail."""
    anchors = tmp_path / "anchors.json"
    assert main(["audit", "export", "--output", str(anchors)]) == 0
    attacker = Tampering(history, "contacts")
    gone = attacker.cut_tail(2)
    attacker.run("DELETE FROM audit_ledger WHERE notification_id >= ?", gone[0].notification_id)
    attacker.run("DELETE FROM audit_checkpoints WHERE notification_id >= ?",
                 gone[0].notification_id)
    attacker.close()

    assert verify(capsys, "--service", "contacts")[0] == 0
    code, out = verify(capsys, "--service", "contacts", "--anchors", str(anchors))

    assert code == 1
    assert "tail_cut: tail cut off" in out and "anchored checkpoint" in out


def test_a_store_that_was_never_sealed_fails(history, capsys):
    Tampering(history, "segments").forget_seals()

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


def test_embedded_mode_generates_its_own_key_once_and_verifies_with_it(tmp_path,
                                                                       monkeypatch):
    for name in ("TESSERA_AUDIT_SIGNING_KEY", "TESSERA_AUDIT_SIGNING_KEY_FILE",
                 "TESSERA_AUDIT_PUBLIC_KEYS", "TESSERA_AUDIT_PUBLIC_KEYS_FILE"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(data_dir=tmp_path)
    first, again = configured_signing_key(settings), configured_signing_key(settings)
    assert signing_key_pem(first) == signing_key_pem(again)
    assert (tmp_path / "audit-signing-key.pem").stat().st_mode & 0o077 == 0
    trusted, source = trusted_public_keys(settings)
    [trusted_key] = trusted.values()
    assert trusted_key.public_bytes_raw() == first.public_key().public_bytes_raw()
    assert "beside the data" in source


def test_real_mode_has_no_default_key(monkeypatch):
    for name in ("TESSERA_AUDIT_SIGNING_KEY", "TESSERA_AUDIT_SIGNING_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert configured_signing_key(Settings(database="postgres")) is None


def test_a_malformed_key_is_named_with_its_variable(monkeypatch):
    with pytest.raises(ValueError, match="TESSERA_AUDIT_PUBLIC_KEYS: 'bm90IGEga2V5' is not "
                                         "a base64 Ed25519 public key"):
        parse_public_keys("bm90IGEga2V5", source="TESSERA_AUDIT_PUBLIC_KEYS")
    monkeypatch.setenv("TESSERA_AUDIT_SIGNING_KEY", "not a key")
    with pytest.raises(ValueError, match="TESSERA_AUDIT_SIGNING_KEY: not an Ed25519"):
        configured_signing_key(Settings())


def test_a_service_seals_what_it_stored_when_it_stops(tmp_path, monkeypatch, capsys):
    from services.gateway.application import GatewayApplication
    from shared.audit import SealingTimer

    for name in list(os.environ):
        if name.startswith("TESSERA_"):
            monkeypatch.delenv(name)
    settings = Settings(data_dir=tmp_path, write_keys={"wk": "web"})
    gateway = GatewayApplication(settings)
    gateway.ingest("web", {"batch": [{"type": "identify", "userId": "ada"}]},
                   received_at=datetime.now(UTC))
    gateway.close()
    timer = SealingTimer(settings, "gateway")

    timer.stop()
    timer.stop()  # nameko may stop a dependency twice: the second does nothing

    monkeypatch.setenv("TESSERA_DATA_DIR", str(tmp_path))
    code, out = verify(capsys, "--service", "gateway", "--strict")
    assert code == 0, out
    assert "gateway     OK    1 events, 1 signed checkpoints" in out


def test_an_event_altered_together_with_its_ledger_row_is_caught_by_its_checkpoint(
        history, capsys):
    """The ledger only names places; what proves anything is the signed checkpoint."""
    attacker = Tampering(history, "identity")
    victim = attacker.rows()[4]
    attacker.alter(victim.notification_id)
    [(state,)] = attacker.run("SELECT state FROM stored_events WHERE rowid = ?",
                              victim.notification_id)
    attacker.run("UPDATE audit_ledger SET digest = ? WHERE notification_id = ?",
                 event_digest(victim.originator_id, victim.version,
                              attacker.run("SELECT topic FROM stored_events WHERE rowid = ?",
                                           victim.notification_id)[0][0], state),
                 victim.notification_id)
    attacker.close()

    code, out = verify(capsys, "--service", "identity")

    assert code == 1
    assert first_finding(out).startswith("chain_mismatch: the chain recomputed from the "
                                         "stored events")
    assert "    altered:" not in out  # the ledger was made to agree: it cannot say which


def test_an_edited_checkpoint_fails_its_signature(history, capsys):
    attacker = Tampering(history, "consent")
    attacker.run("UPDATE audit_checkpoints SET event_count = event_count + 1 "
                 "WHERE id = (SELECT max(id) FROM audit_checkpoints)")
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
    Tampering(history, "segments").forget_seals()
    monkeypatch.setenv("TESSERA_AUDIT_SIGNING_KEY_FILE", str(key_file))

    assert main(["audit", "seal", "--service", "segments"]) == 0
    monkeypatch.setenv("TESSERA_AUDIT_PUBLIC_KEYS", public)
    code, out = verify(capsys, "--service", "segments", "--strict")

    assert code == 0, out


def test_verify_joins_a_tessera_audit_command_that_another_module_made_first():
    import argparse

    from tessera import audit_chain_cli

    parser = argparse.ArgumentParser(prog="tessera")
    commands = parser.add_subparsers(dest="command", required=True)
    theirs = commands.add_parser("audit").add_subparsers(dest="audit_command", required=True)
    theirs.add_parser("subject").add_argument("identifier")

    audit_chain_cli.add_commands(commands)

    assert parser.parse_args(["audit", "subject", "email:a@b.c"]).identifier == "email:a@b.c"
    assert parser.parse_args(["audit", "verify", "--strict"]).strict is True
