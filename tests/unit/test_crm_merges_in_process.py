"""Merges and splits reach the CRMs: the whole pipeline without a broker, delivering to the
loopback HubSpot and Salesforce fakes through activation's normal path (queues by
destination, consent at send time, retries)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from test_pipeline_in_process import PARTITIONS, Broker, drain

from connectors.fakes.hubspot import FakeHubSpot
from connectors.fakes.salesforce import FakeSalesforce
from services.activation.application import ActivationApplication
from services.activation.destinations import Destination
from services.activation.translation import translator as activation_translator
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

CONSENTED = {"consent": {"categoryPreferences": {"marketing": True}}}


@pytest.fixture
def crms(tmp_path):
    hubspot = FakeHubSpot(token="pat-na1-test")
    salesforce = FakeSalesforce(client_id="3MVG9-test", client_secret="s3cret")
    with hubspot, salesforce:
        settings = Settings(data_dir=tmp_path, partitions=PARTITIONS, write_keys={"wk": "web"})
        destinations = [
            Destination("hubspot", "hubspot", ("people",), ("marketing",),
                        {"base_url": hubspot.base_url, "access_token": "pat-na1-test"}),
            Destination("salesforce", "salesforce", ("people",), ("marketing",),
                        {"login_url": salesforce.base_url, "client_id": "3MVG9-test",
                         "client_secret": "s3cret"}),
        ]
        apps = {
            "gateway": GatewayApplication(settings),
            "identity": IdentityApplication(settings),
            "contacts": ContactsApplication(settings),
            "segments": SegmentsApplication(settings),
            "consent": ConsentApplication(settings),
            "activation": ActivationApplication(settings, destinations=destinations,
                                                sleep=lambda seconds: None),
        }
        broker = Broker()
        translators = {"gateway": gateway_translator, "identity": identity_translator,
                       "contacts": contacts_translator, "segments": segments_translator,
                       "activation": activation_translator}
        relays = [OutboxRelay(apps[name], make(PARTITIONS), broker)
                  for name, make in translators.items()]
        apps["segments"].define_segment("people", {"trait": "email", "op": "exists"})
        yield apps, (lambda: drain(apps, relays, broker)), hubspot, salesforce
        for app in apps.values():
            app.close()


def send(apps, drain_all, *calls) -> None:
    apps["gateway"].ingest("web", {"batch": list(calls)}, received_at=datetime.now(UTC))
    drain_all()


def two_people_then_one(crms) -> tuple[str, str]:
    """Two profiles reach both CRMs, then one event shows they are the same person."""
    apps, drain_all, _, _ = crms
    send(apps, drain_all, {"type": "identify", "userId": "cat", "context": CONSENTED,
                           "traits": {"email": "cat@example.com", "first_name": "Cat"}})
    send(apps, drain_all, {"type": "identify", "anonymousId": "anon-7", "context": CONSENTED,
                           "traits": {"email": "cat.home@example.org", "phone": "+33612345678",
                                      "title": "Engineer"}})
    survivor = apps["identity"].profile_id_for("user_id", "cat")
    absorbed = apps["identity"].profile_id_for("anonymous_id", "anon-7")
    send(apps, drain_all, {"type": "identify", "userId": "cat", "anonymousId": "anon-7"})
    assert apps["identity"].profile_id_for("anonymous_id", "anon-7") == survivor
    return survivor, absorbed


def test_a_merge_leaves_one_contact_in_hubspot_and_in_salesforce(crms):
    apps, _, hubspot, salesforce = crms
    survivor, absorbed = two_people_then_one(crms)

    assert list(hubspot.contacts) == ["cat@example.com"]
    [contact] = hubspot.contacts.values()
    assert contact["properties"]["phone"] == "+33612345678"
    assert contact["properties"]["firstname"] == "Cat"
    assert contact["properties"]["hs_additional_emails"] == "cat.home@example.org"
    assert len(hubspot.merges) == 1

    assert list(salesforce.contacts) == [survivor]
    [record] = salesforce.contacts.values()
    assert (record["Email"], record["Phone"], record["Title"]) == (
        "cat@example.com", "+33612345678", "Engineer")
    [(_, victim)] = salesforce.merged_away.items()
    assert victim["Tessera_Profile_Id__c"] == absorbed
    assert victim["MasterRecordId"] == record["Id"]
    merged = [o for o in apps["activation"].outcomes("salesforce") if o["action"] == "merged"]
    assert [o["outcome"] for o in merged] == ["delivered"]


def test_a_split_gives_each_person_their_own_crm_record_with_only_their_data(crms):
    apps, drain_all, hubspot, salesforce = crms
    survivor, absorbed = two_people_then_one(crms)
    assert len(hubspot.contacts) == len(salesforce.contacts) == 1

    apps["identity"].reject_merge(absorbed, by="admin")
    drain_all()

    assert sorted(hubspot.contacts) == ["cat.home@example.org", "cat@example.com"]
    cat = hubspot.contacts["cat@example.com"]["properties"]
    home = hubspot.contacts["cat.home@example.org"]["properties"]
    assert "phone" not in cat and cat["firstname"] == "Cat"
    assert home["phone"] == "+33612345678" and "firstname" not in home

    assert sorted(salesforce.contacts) == sorted([survivor, absorbed])
    assert "Phone" not in salesforce.contacts[survivor]
    assert "Title" not in salesforce.contacts[survivor]
    assert salesforce.contacts[absorbed]["Phone"] == "+33612345678"
    assert salesforce.contacts[absorbed]["Email"] == "cat.home@example.org"


def test_a_merge_is_not_sent_to_a_crm_for_a_person_who_withdrew_consent(crms):
    apps, drain_all, hubspot, _ = crms
    send(apps, drain_all, {"type": "identify", "userId": "cat", "context": CONSENTED,
                           "traits": {"email": "cat@example.com"}})
    send(apps, drain_all, {"type": "identify", "anonymousId": "anon-7", "context": CONSENTED,
                           "traits": {"email": "cat.home@example.org"}})
    withdrawn = {"consent": {"categoryPreferences": {"marketing": False}}}
    send(apps, drain_all, {"type": "identify", "userId": "cat", "anonymousId": "anon-7",
                           "context": withdrawn})

    assert hubspot.merges == []
    outcomes = [o for o in apps["activation"].outcomes("hubspot") if o["action"] == "merged"]
    assert [o["outcome"] for o in outcomes] == ["suppressed"]


def test_a_merge_refused_by_hubspot_is_dead_lettered_then_replayed_into_one_contact(crms):
    apps, drain_all, hubspot, _ = crms
    send(apps, drain_all, {"type": "identify", "userId": "cat", "context": CONSENTED,
                           "traits": {"email": "cat@example.com"}})
    send(apps, drain_all, {"type": "identify", "anonymousId": "anon-7", "context": CONSENTED,
                           "traits": {"email": "cat.home@example.org"}})
    hubspot.fail_next(1, status=503)  # retried within the same delivery
    hubspot.fail_next(1, status=400)  # then refused: a dead letter
    send(apps, drain_all, {"type": "identify", "userId": "cat", "anonymousId": "anon-7"})
    assert len(hubspot.contacts) == 2
    [letter] = apps["activation"].dead_letters("hubspot")
    assert [i["operation"] for i in letter["items"]] == ["merge_profiles"]

    apps["activation"].replay("hubspot", letter["id"], apps["consent"].decide_many)

    assert list(hubspot.contacts) == ["cat@example.com"]
    assert apps["activation"].dead_letters("hubspot") == []
