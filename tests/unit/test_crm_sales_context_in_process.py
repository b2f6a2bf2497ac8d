"""Deals and tickets come in from the loopback HubSpot and Salesforce fakes through the
CRM sources, enter through the gateway like any tracked event, and end on the contact's
and the account's timeline and as traits a segment can use (the whole pipeline, no broker)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from test_pipeline_in_process import PARTITIONS, Broker, drain

from connectors.fakes.hubspot import FakeHubSpot
from connectors.fakes.salesforce import FakeSalesforce
from connectors.sources.hubspot import HubSpotContactsSource
from connectors.sources.salesforce import SalesforceContactsSource
from services.consent.application import ConsentApplication
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

BIG_PIPELINE = {"trait": "open_deal_value", "op": "gte", "value": 1000}


class Pipeline:
    def __init__(self, tmp_path):
        settings = Settings(data_dir=tmp_path, partitions=PARTITIONS, write_keys={"wk": "crm"})
        self.apps = {"gateway": GatewayApplication(settings),
                     "identity": IdentityApplication(settings),
                     "contacts": ContactsApplication(settings),
                     "segments": SegmentsApplication(settings),
                     "consent": ConsentApplication(settings)}
        self.broker = Broker()
        translators = {"gateway": gateway_translator, "identity": identity_translator,
                       "contacts": contacts_translator, "segments": segments_translator}
        self.relays = [OutboxRelay(self.apps[name], make(PARTITIONS), self.broker)
                       for name, make in translators.items()]
        self.apps["segments"].define_segment("big_pipeline", BIG_PIPELINE)

    def pull(self, source, cursor=None) -> tuple[str | None, list[dict]]:
        """One incremental pull, every page through the gateway as `tessera pull` sends it;
        the new cursor and the calls sent."""
        sent = []
        for page in source.pull(cursor):
            if page.calls:
                self.apps["gateway"].ingest("crm", {"batch": page.calls},
                                            received_at=datetime.now(UTC))
            sent += page.calls
            cursor = page.cursor
        self.drain()
        return cursor, sent

    def drain(self) -> None:
        apps = dict(self.apps, activation=_NoActivation())
        drain(apps, self.relays, self.broker)

    def contact(self, email: str) -> dict:
        return self.apps["contacts"].profile(self.apps["identity"].profile_id_for("email", email))

    def big_pipeline(self) -> list[str]:
        return [m["profile_id"] for m in self.apps["segments"].members("big_pipeline")["members"]]

    def close(self) -> None:
        for app in self.apps.values():
            app.close()


class _NoActivation:
    """No destination here: membership changes and events stop at activation's door."""

    def plan(self, *args):
        return 0

    def plan_events(self, *args):
        return 0


@pytest.fixture
def pipeline(tmp_path):
    made = Pipeline(tmp_path)
    yield made
    made.close()


def test_hubspot_deals_and_tickets_become_the_contacts_sales_traits_and_pick_a_segment(
        pipeline):
    with FakeHubSpot(token="pat") as hubspot:
        hubspot.edit("ada@example.com", firstname="Ada")
        renewal = hubspot.add_deal(contacts=("ada@example.com",), companies=("9001",),
                                   dealname="Renewal", amount="1500", dealstage="contractsent",
                                   hs_is_closed="false", hs_is_closed_won="false")
        hubspot.add_deal(contacts=("ada@example.com",), dealname="Pilot", amount="400",
                         dealstage="closedwon", hs_is_closed="true", hs_is_closed_won="true")
        hubspot.add_ticket(contacts=("ada@example.com",), companies=("9001",),
                           subject="Cannot log in", hs_pipeline_stage="1")
        hubspot.add_ticket(contacts=("ada@example.com",), subject="Invoice",
                           hs_pipeline_stage="4", closed_date="2025-01-01T00:09:00.000Z")
        hubspot.add_deal(dealname="Nobody's", amount="99999")  # no contact: nowhere to land
        source = HubSpotContactsSource(**HubSpotContactsSource.config_schema().load(
            {"base_url": hubspot.base_url, "access_token": "pat"}))

        cursor, first = pipeline.pull(source)

        ada = pipeline.contact("ada@example.com")
        assert ada["sales"] == {"open_deal_value": 1500.0, "open_deals": 1,
                                "latest_deal_stage": "closedwon", "open_tickets": 1,
                                "last_ticket_at": ada["sales"]["last_ticket_at"]}
        assert ada["sales"]["last_ticket_at"].startswith("2025-01-01T")
        assert ada["traits"]["first_name"] == "Ada"
        assert source.skipped_without_contact == 1
        timeline = [e["event"] for e in pipeline.apps["contacts"].timeline(ada["profile_id"])]
        assert sorted(timeline) == ["Deal Updated", "Deal Updated", "Ticket Updated",
                                    "Ticket Updated"]
        account = [e["event"] for e in pipeline.apps["contacts"].account_timeline("9001")]
        assert sorted(account) == ["Deal Updated", "Ticket Updated"]
        assert pipeline.big_pipeline() == [ada["profile_id"]]

        # Later the renewal is won: only that change comes, and Ada leaves the segment.
        hubspot.add_deal(renewal, dealstage="closedwon", hs_is_closed="true",
                         hs_is_closed_won="true")
        _, pulled = pipeline.pull(source, cursor)
        seen = {c["messageId"] for c in first}
        assert [(c["event"], c["properties"]["deal_id"]) for c in pulled
                if c["messageId"] not in seen] == [("Deal Updated", renewal)]
        assert pipeline.contact("ada@example.com")["sales"]["open_deal_value"] == 0
        assert pipeline.big_pipeline() == []
        source.close()


def test_salesforce_opportunities_and_cases_become_the_contacts_sales_traits(pipeline):
    with FakeSalesforce(client_id="id", client_secret="s") as salesforce:
        salesforce.edit("ext-grace", Email="grace@example.com", LastName="Hopper")
        grace = salesforce.contact_id("ext-grace")
        salesforce.edit_opportunity(Name="Fleet", Amount=2500.0, StageName="Negotiation/Review",
                                    IsClosed=False, IsWon=False, AccountId="001ACME",
                                    ContactId=grace)
        salesforce.edit_case(Subject="Outage", Status="New", IsClosed=False,
                             AccountId="001ACME", ContactId=grace)
        salesforce.edit_case(Subject="Question", Status="Closed", IsClosed=True,
                             ContactId=grace)
        salesforce.edit_opportunity(Name="Orphan", Amount=1.0, StageName="Prospecting",
                                    IsClosed=False, IsWon=False)
        source = SalesforceContactsSource(**SalesforceContactsSource.config_schema().load(
            {"login_url": salesforce.base_url, "client_id": "id", "client_secret": "s"}))

        cursor, first = pipeline.pull(source)

        hopper = pipeline.contact("grace@example.com")
        assert hopper["traits"]["last_name"] == "Hopper"
        sales = hopper["sales"]
        assert (sales["open_deal_value"], sales["latest_deal_stage"], sales["open_tickets"]) \
            == (2500.0, "Negotiation/Review", 1)
        assert sales["last_ticket_at"].startswith("2026-01-01T")
        assert source.skipped_without_contact == 1
        account = [e["event"] for e in pipeline.apps["contacts"].account_timeline("001ACME")]
        assert sorted(account) == ["Deal Updated", "Ticket Updated"]
        assert pipeline.big_pipeline() == [hopper["profile_id"]]

        _, again = pipeline.pull(source, cursor)
        assert {c["messageId"] for c in again} <= {c["messageId"] for c in first}
        source.close()
