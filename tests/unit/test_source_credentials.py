"""A Salesforce source's rotated refresh token outlives the pull: `tessera pull` keeps it
encrypted in activation's credential store (seeded from the environment), so the next
pull uses it — against the loopback Salesforce fake, which voids a token once used."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest
from cryptography.fernet import Fernet
from test_csv_import import WRITE_KEY, FakeGateway

from connectors.fakes.salesforce import FakeSalesforce
from services.activation.credentials import KEY_ENV
from tessera.cli import main
from tessera.testing.platform import drop_database

CONFIG_ENV = "TESSERA_TEST_SF_REFRESH"


@pytest.fixture
def salesforce():
    with FakeSalesforce(client_id="id", client_secret="s") as fake:
        fake.edit("ext-ada", Email="ada@example.com", LastName="Lovelace")
        yield fake


@pytest.fixture
def gateway(monkeypatch, tmp_path):
    with FakeGateway() as fake:
        monkeypatch.setenv("TESSERA_API_URL", fake.base_url)
        monkeypatch.setenv("TESSERA_WRITE_KEY", WRITE_KEY)
        monkeypatch.setenv("TESSERA_DATA_DIR", str(tmp_path))
        monkeypatch.delenv(KEY_ENV, raising=False)
        yield fake


def pull(salesforce) -> int:
    return main(["pull", "salesforce", "--source", "crm", "--config",
                 json.dumps({"login_url": salesforce.base_url, "client_id": "id",
                             "objects": ["Contact"]}),
                 "--secret-env", "client_secret=TESSERA_TEST_SF_SECRET",
                 "--secret-env", f"refresh_token={CONFIG_ENV}"])


def seed(monkeypatch, salesforce) -> str:
    token = salesforce.issue_refresh_token()
    monkeypatch.setenv("TESSERA_TEST_SF_SECRET", "s")
    monkeypatch.setenv(CONFIG_ENV, token)
    return token


def test_a_rotated_refresh_token_is_used_by_the_next_pull_and_never_stored_in_clear(
        monkeypatch, tmp_path, salesforce, gateway):
    seeded = seed(monkeypatch, salesforce)
    assert pull(salesforce) == 0
    assert seeded not in salesforce.refresh_tokens  # rotation voided the seed
    (rotated,) = salesforce.refresh_tokens

    stored = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert rotated.encode() not in stored  # never in clear on disk

    salesforce.expire_tokens()
    salesforce.edit("ext-ada", LastName="King")
    assert pull(salesforce) == 0  # the environment still holds the void seed
    assert salesforce.refresh_grants == 2
    assert gateway.calls[-1]["traits"]["last_name"] == "King"


def test_a_new_seed_in_the_environment_wins_over_a_token_rotated_from_an_older_one(
        monkeypatch, salesforce, gateway):
    seed(monkeypatch, salesforce)
    assert pull(salesforce) == 0
    salesforce.refresh_tokens.clear()  # the operator revoked everything, then re-authorised
    seed(monkeypatch, salesforce)
    assert pull(salesforce) == 0
    assert salesforce.refresh_grants == 2


def test_without_a_refresh_token_a_pull_needs_no_credential_store(
        monkeypatch, tmp_path, salesforce, gateway):
    monkeypatch.setenv("TESSERA_TEST_SF_SECRET", "s")
    assert main(["pull", "salesforce", "--source", "crm", "--config",
                 json.dumps({"login_url": salesforce.base_url, "client_id": "id",
                             "objects": ["Contact"]}),
                 "--secret-env", "client_secret=TESSERA_TEST_SF_SECRET"]) == 0
    assert not (tmp_path / "activation.sqlite").exists()
    assert salesforce.refresh_grants == 0


def test_on_postgresql_the_rotated_token_sits_encrypted_in_activations_schema(
        monkeypatch, salesforce, gateway):
    database = f"tessera_src_{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("TESSERA_DATABASE", "postgres")
    monkeypatch.setenv("TESSERA_POSTGRES_DBNAME", database)
    monkeypatch.setenv(KEY_ENV, Fernet.generate_key().decode())
    try:
        seed(monkeypatch, salesforce)
        assert pull(salesforce) == 0
        (rotated,) = salesforce.refresh_tokens
        with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={database}") as db:
            rows = db.execute('SELECT destination, name, ciphertext FROM '
                              '"activation".credentials').fetchall()
        assert [(owner, name) for owner, name, _ in rows] == [
            ("source:salesforce:crm", "refresh_token")]
        assert rotated not in rows[0][2]

        salesforce.expire_tokens()
        assert pull(salesforce) == 0
        assert salesforce.refresh_grants == 2
    finally:
        drop_database(database)


def test_without_the_key_on_postgresql_the_pull_stops_naming_the_variable(
        monkeypatch, salesforce, gateway, capsys):
    monkeypatch.setenv("TESSERA_DATABASE", "postgres")
    monkeypatch.setenv("TESSERA_POSTGRES_DBNAME", "tessera_never_created")
    seed(monkeypatch, salesforce)
    with pytest.raises(SystemExit, match=KEY_ENV):
        pull(salesforce)
