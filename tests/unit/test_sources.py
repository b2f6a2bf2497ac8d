"""Sources: the HubSpot incremental pull passes the source kit (past the 10,000-result
cap, cursor on lastmodifieddate, our own writes not pulled back)."""

from __future__ import annotations

import json

from connectors.fakes.hubspot import FakeHubSpot
from connectors.sdk.source_conformance import source_conformance_tests
from connectors.sources.csv_file import CsvSource
from connectors.sources.hubspot import HubSpotContactsSource
from connectors.sources.salesforce import SalesforceContactsSource

TestHubSpotSourceConformance = source_conformance_tests(HubSpotContactsSource)
TestSalesforceSourceConformance = source_conformance_tests(SalesforceContactsSource)
TestCsvSourceConformance = source_conformance_tests(CsvSource)


def hubspot_source(fake, token):
    config = {"base_url": fake.base_url, "access_token": token}
    return HubSpotContactsSource(**HubSpotContactsSource.config_schema().load(config))


def pull_all(source, cursor=None):
    calls = []
    for page in source.pull(cursor):
        calls.extend(page.calls)
        cursor = page.cursor
    return calls, cursor


def test_a_human_edit_after_our_write_is_pulled_again():
    with FakeHubSpot(token="pat-test") as fake:
        source = hubspot_source(fake, "pat-test")
        harness = HubSpotContactsSource.conformance_harness()
        harness.echo(fake, ["ada@example.com"])
        calls, cursor = pull_all(source)
        assert calls == [] and source.skipped_own_writes == 1
        fake.edit("ada@example.com", firstname="Adeline")
        calls, _ = pull_all(source, cursor)
        assert [c["traits"] for c in calls] == [{"email": "ada@example.com",
                                                 "first_name": "Adeline"}]
        source.close()


def test_a_contact_becomes_an_identify_with_its_hubspot_id():
    with FakeHubSpot(token="t") as fake:
        fake.edit("bob@example.com", firstname="Bob", lastname="Stone")
        source = hubspot_source(fake, "t")
        (call,), _ = pull_all(source)
        assert call["anonymousId"] == "hubspot:1001"
        assert call["traits"] == {"email": "bob@example.com", "first_name": "Bob",
                                  "last_name": "Stone"}
        assert call["context"]["externalIds"][0]["type"] == "hubspot_contact_id"
        source.close()


def test_tessera_pull_sends_changes_through_the_gateway_and_remembers_its_cursor(
        tmp_path, monkeypatch, capsys):
    import json

    from test_csv_import import WRITE_KEY, FakeGateway

    from tessera.cli import main

    with FakeHubSpot(token="pat-x") as hubspot, FakeGateway() as gateway:
        for n in range(3):
            hubspot.edit(f"p{n}@example.com", firstname=f"P{n}")
        monkeypatch.setenv("TESSERA_API_URL", gateway.base_url)
        monkeypatch.setenv("TESSERA_WRITE_KEY", WRITE_KEY)
        monkeypatch.setenv("TESSERA_DATA_DIR", str(tmp_path))
        monkeypatch.setenv("TESSERA_TEST_HUBSPOT", "pat-x")
        arguments = ["pull", "hubspot", "--source", "crm", "--config",
                     json.dumps({"base_url": hubspot.base_url}),
                     "--secret-env", "access_token=TESSERA_TEST_HUBSPOT"]
        assert main(arguments) == 0
        assert "pulled 3 records" in capsys.readouterr().out
        hubspot.edit("p1@example.com", firstname="Changed")
        assert main(arguments) == 0
        assert len({c["messageId"] for c in gateway.calls}) == 4
        assert gateway.calls[-1]["traits"]["first_name"] == "Changed"


def test_the_command_line_runs_the_source_kit(capsys):
    from tessera.cli import main

    assert main(["connector", "test", "hubspot", "--source"]) == 0
    assert capsys.readouterr().out.strip().endswith("hubspot: 5 passed, 0 failed, 0 skipped")


def test_a_cursor_left_by_a_pull_before_deals_and_tickets_still_counts_for_contacts():
    with FakeHubSpot(token="t") as fake:
        fake.edit("old@example.com", firstname="Old")
        source = hubspot_source(fake, "t")
        _, cursor = pull_all(source)
        contacts_cursor = json.loads(cursor)["contacts"]
        fake.edit("new@example.com", firstname="New")
        calls, _ = pull_all(source, contacts_cursor)  # a plain cursor, as older pulls left
        assert {c["traits"]["email"] for c in calls} == {"old@example.com", "new@example.com"}
        assert "{" not in contacts_cursor
        assert json.loads(pull_all(source, contacts_cursor)[1])["contacts"] > contacts_cursor
        source.close()
