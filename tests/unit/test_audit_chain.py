"""The audit's keys and when services seal: the key an embedded platform makes for itself,
none by default in real mode, keys named by their variable when malformed, sealing on stop,
and the `tessera audit` commands. Tampering with what was sealed: test_audit_tampering.py."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from shared.audit import (
    configured_signing_key,
    parse_public_keys,
    signing_key_pem,
    trusted_public_keys,
)
from shared.config import Settings
from tessera.cli import main


def verify(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["audit", "verify", *args])
    return code, capsys.readouterr().out


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
