"""A refresh token that Salesforce rotates is kept encrypted in activation's store: seeded
from the destination's config (the environment), replaced on each rotation, read back
after a restart — against the loopback Salesforce fake, which voids a used token."""

from __future__ import annotations

import os
import stat
import uuid

import pytest
from cryptography.fernet import Fernet

from connectors.fakes.salesforce import FakeSalesforce
from services.activation.application import ActivationApplication
from services.activation.credentials import KEY_ENV, KEY_FILE, load_cipher
from services.activation.destinations import Destination
from shared.config import Settings
from tessera.testing.platform import drop_database


def allow_all(requests: list[dict]) -> list[dict]:
    return [{"decision_id": f"d{i}", "allowed": True, "reason": "ok"}
            for i, _ in enumerate(requests)]


def batch(position: int) -> list[dict]:
    profile = str(uuid.uuid4())
    return [{"position": position, "idempotency_key": f"crm:{profile}:{position}",
             "destination": "crm", "profile_id": profile, "segment": "buyers",
             "action": "entered", "traits": {"email": f"{profile[:8]}@example.com",
                                             "last_name": "Lovelace"},
             "occurred_at": "2026-11-29T10:00:00.000Z", "cause": None, "received_at": None}]


@pytest.fixture
def salesforce():
    with FakeSalesforce(client_id="id", client_secret="s") as fake:
        yield fake


def crm(fake: FakeSalesforce, refresh_token: str) -> Destination:
    return Destination("crm", "salesforce", ("buyers",), ("marketing",), {
        "login_url": fake.base_url, "client_id": "id", "client_secret": "s",
        "refresh_token": refresh_token})


def app_for(tmp_path, destination: Destination,
            settings: Settings | None = None) -> ActivationApplication:
    return ActivationApplication(settings or Settings(data_dir=tmp_path, delivery_attempts=1),
                                 destinations=[destination])


@pytest.fixture(autouse=True)
def no_configured_key(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)


def test_a_rotated_refresh_token_is_kept_encrypted_and_used_after_a_restart(
        tmp_path, salesforce):
    seed = salesforce.issue_refresh_token()
    app = app_for(tmp_path, crm(salesforce, seed))
    assert app.deliver("k", "crm", batch(1), allow_all)["delivered"] == 1
    assert seed not in salesforce.refresh_tokens  # rotation voided the seed
    (rotated,) = salesforce.refresh_tokens
    app.close()

    stored = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert rotated.encode() not in stored  # never in clear on disk

    salesforce.expire_tokens()
    restarted = app_for(tmp_path, crm(salesforce, seed))  # same (now void) seed
    try:
        assert restarted.deliver("k", "crm", batch(2), allow_all)["delivered"] == 1
    finally:
        restarted.close()
    assert salesforce.refresh_grants == 2


def test_on_postgresql_the_rotated_token_is_shared_through_the_database(
        tmp_path, salesforce, monkeypatch):
    monkeypatch.setenv(KEY_ENV, Fernet.generate_key().decode())
    settings = Settings(data_dir=tmp_path, database="postgres", delivery_attempts=1,
                        postgres_dbname=f"activation_{uuid.uuid4().hex}")
    seed = salesforce.issue_refresh_token()
    try:
        first = app_for(tmp_path, crm(salesforce, seed), settings)
        assert first.deliver("k", "crm", batch(1), allow_all)["delivered"] == 1
        first.close()
        salesforce.expire_tokens()
        replica = app_for(tmp_path, crm(salesforce, seed), settings)  # another process
        assert replica.deliver("k", "crm", batch(2), allow_all)["delivered"] == 1
        replica.close()
    finally:
        drop_database(settings.postgres_dbname)


def test_a_new_seed_from_the_environment_wins_over_the_stored_token(tmp_path, salesforce):
    app = app_for(tmp_path, crm(salesforce, salesforce.issue_refresh_token()))
    app.deliver("k", "crm", batch(1), allow_all)
    app.close()
    salesforce.refresh_tokens.clear()  # the operator revoked everything and authorised again
    salesforce.expire_tokens()
    reissued = salesforce.issue_refresh_token()

    again = app_for(tmp_path, crm(salesforce, reissued))
    try:
        assert again.deliver("k", "crm", batch(2), allow_all)["delivered"] == 1
    finally:
        again.close()


def test_without_a_configured_key_one_is_generated_into_the_data_dir_readable_by_us_only(
        tmp_path):
    settings = Settings(data_dir=tmp_path)
    token = load_cipher(settings).encrypt(b"x")
    assert stat.S_IMODE(os.stat(tmp_path / KEY_FILE).st_mode) == 0o600
    assert load_cipher(settings).decrypt(token) == b"x"  # the same key next time


def test_a_configured_key_is_used_and_an_old_one_listed_after_it_still_decrypts(
        tmp_path, monkeypatch):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    monkeypatch.setenv(KEY_ENV, old)
    written = load_cipher(Settings(data_dir=tmp_path)).encrypt(b"x")
    monkeypatch.setenv(KEY_ENV, f"{new},{old}")
    assert load_cipher(Settings(data_dir=tmp_path)).decrypt(written) == b"x"
    assert not (tmp_path / KEY_FILE).exists()


def test_a_malformed_key_is_refused_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "not-a-key")
    with pytest.raises(ValueError, match=KEY_ENV):
        load_cipher(Settings(data_dir=tmp_path))


def test_with_postgresql_the_key_must_come_from_the_environment(tmp_path):
    with pytest.raises(ValueError, match=f"{KEY_ENV} is not set"):
        load_cipher(Settings(data_dir=tmp_path, database="postgres"))
