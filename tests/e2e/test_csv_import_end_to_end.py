"""A CSV import enters through the gateway like tracked events: profiles appear with the
mapped traits, and a second import of the same file changes nothing."""

from __future__ import annotations

import csv
import uuid

from e2e_support import WRITE_KEY

from tessera.cli import main


def test_an_imported_file_becomes_profiles_once(platform, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TESSERA_API_URL", platform.base_url)
    monkeypatch.setenv("TESSERA_WRITE_KEY", WRITE_KEY)
    run = uuid.uuid4().hex[:8]
    path = tmp_path / "crm.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([
            ["Id", "Email", "First", "Plan"],
            [f"crm-{run}-1", f"ada-{run}@example.com", "Ada", "pro"],
            [f"crm-{run}-2", "broken-email", "Bob", "free"],
            [f"crm-{run}-3", f"cat-{run}@example.com", "Cat", "free"]])
    arguments = ["import", str(path), "--source", "web", "--user-id-column", "Id",
                 "--map", "Email=email", "--map", "First=first_name", "--map", "Plan=plan"]

    assert main(arguments) == 0
    assert "imported 2 rows in 1 batches, rejected 1" in capsys.readouterr().out
    platform.wait_drained()
    profile = platform.admin("GET", "/v1/profiles",
                             params={"email": f"ada-{run}@example.com"}).json()
    assert profile["traits"]["first_name"] == "Ada"
    assert profile["traits"]["plan"] == "pro"
    before = platform.admin("GET", "/v1/stats").json()

    assert main(arguments) == 0  # the same rows again: recognised by their messageId
    platform.wait_drained()
    assert platform.admin("GET", "/v1/stats").json() == before
