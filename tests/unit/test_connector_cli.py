"""`tessera connector list|dry-run`: what is installed, and what a destination would be sent."""

from __future__ import annotations

import json

import pytest

from connectors.sdk.hashing import sha256_hex
from tessera.cli import main


@pytest.fixture
def destinations(tmp_path, monkeypatch):
    path = tmp_path / "destinations.json"
    path.write_text(json.dumps({"destinations": [{
        "name": "ads", "kind": "google_customer_match",
        "config": {"operating_account_id": "123", "audience_id": "9"},
        "secrets_env": {"access_token": "TESSERA_TEST_GOOGLE_TOKEN"},
        "segments": ["buyers"], "purposes": ["advertising"], "sync": ["mirror"]}]}))
    monkeypatch.setenv("TESSERA_DESTINATIONS_FILE", str(path))
    monkeypatch.setenv("TESSERA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TESSERA_TEST_GOOGLE_TOKEN", "ya29.very-secret")
    return path


def test_a_dry_run_prints_what_google_would_be_sent_and_hides_the_token(destinations, capsys):
    assert main(["connector", "dry-run", "ads", "--trait", "email= Ada@Example.com"]) == 0
    out = capsys.readouterr().out
    (planned,) = json.loads(out)
    assert planned["operation"] == "add_to_audience"
    (request,) = planned["requests"]
    assert request["url"] == "https://datamanager.googleapis.com/v1/audienceMembers:ingest"
    assert request["body"]["audienceMembers"][0]["userData"]["userIdentifiers"] == [
        {"emailAddress": sha256_hex("ada@example.com")}]
    assert "very-secret" not in out


def test_an_exit_is_dry_run_as_a_removal(destinations, capsys):
    assert main(["connector", "dry-run", "ads", "--action", "exited",
                 "--trait", "email=ada@example.com"]) == 0
    (planned,) = json.loads(capsys.readouterr().out)
    assert planned["operation"] == "remove_from_audience"


def test_a_dry_run_of_an_unknown_destination_names_the_known_ones(destinations):
    with pytest.raises(SystemExit, match=r"destination: 'crm' is not in .*\(known: ads\)"):
        main(["connector", "dry-run", "crm"])


def test_a_missing_secret_is_named_by_its_variable(destinations, monkeypatch):
    monkeypatch.delenv("TESSERA_TEST_GOOGLE_TOKEN")
    with pytest.raises(ValueError, match="TESSERA_TEST_GOOGLE_TOKEN"):
        main(["connector", "dry-run", "ads"])


def test_every_built_in_connector_is_listed(capsys):
    assert main(["connector", "list"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines()}
    assert {"webhook", "google_customer_match", "meta_custom_audiences", "hubspot",
            "salesforce", "warehouse", "email"} <= listed
