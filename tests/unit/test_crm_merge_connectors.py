"""The HubSpot and Salesforce connectors' merges, against their loopback fakes: the cases
the conformance kit's generic check does not reach."""

from __future__ import annotations

import httpx
import pytest

from connectors.base import DeliveryItem, load_connector
from connectors.fakes.hubspot import FakeHubSpot
from connectors.fakes.salesforce import FakeSalesforce
from connectors.sdk import Capability


def item(profile_id: str, action: str, traits: dict, merged=()) -> DeliveryItem:
    return DeliveryItem(f"k:{profile_id}:{action}", profile_id, action, None, traits, {},
                        "2026-01-01T00:00:00Z", "d", merged_profiles=tuple(merged))


@pytest.fixture
def hubspot():
    with FakeHubSpot(token="pat") as fake:
        connector = load_connector("hubspot", {"base_url": fake.base_url,
                                               "access_token": "pat"})
        yield fake, connector
        connector.close()


@pytest.fixture
def salesforce():
    with FakeSalesforce(client_id="id", client_secret="s") as fake:
        connector = load_connector("salesforce", {"login_url": fake.base_url,
                                                  "client_id": "id", "client_secret": "s"})
        yield fake, connector
        connector.close()


def test_hubspot_merges_onto_the_contact_of_the_survivors_new_email(hubspot):
    fake, connector = hubspot
    fake.edit("old@example.com", firstname="Ann")
    fake.edit("other@example.com", phone="+15550000")
    merge = item("p-1", "merged", {"email": "new@example.com", "first_name": "Ann"}, [
        {"profile_id": "p-1", "traits": {"email": "old@example.com"}},
        {"profile_id": "p-2", "traits": {"email": "other@example.com"}}])

    result = connector.deliver(Capability.MERGE_PROFILES, "crm", [merge])

    assert result.delivered == [merge.idempotency_key]
    assert list(fake.contacts) == ["new@example.com"]
    kept = fake.contacts["new@example.com"]["properties"]
    assert (kept["firstname"], kept["phone"]) == ("Ann", "+15550000")


def test_hubspot_has_nothing_to_merge_for_people_it_never_held(hubspot):
    fake, connector = hubspot
    merge = item("p-1", "merged", {"email": "a@example.com"}, [
        {"profile_id": "p-1", "traits": {"email": "a@example.com"}},
        {"profile_id": "p-2", "traits": {"email": "b@example.com"}}])
    assert connector.deliver(Capability.MERGE_PROFILES, "crm", [merge]).delivered == []
    assert fake.contacts == {} and fake.merges == []


def test_the_hubspot_fake_refuses_a_merge_without_both_ids(hubspot):
    fake, _ = hubspot
    fake.edit("a@example.com")
    answer = httpx.post(f"{fake.base_url}/crm/v3/objects/contacts/merge",
                        headers={"Authorization": "Bearer pat"},
                        json={"primaryObjectId": fake.contacts["a@example.com"]["id"]})
    assert answer.status_code == 400
    assert answer.json()["category"] == "VALIDATION_ERROR"


def test_salesforce_keys_an_absorbed_record_to_the_survivor_when_it_had_none(salesforce):
    fake, connector = salesforce
    fake.edit("p-2", Email="b@example.com", LastName="B", Tessera_Profile_Id__c="p-2")
    merge = item("p-1", "merged", {"email": "b@example.com", "last_name": "B"}, [
        {"profile_id": "p-1", "traits": {}}, {"profile_id": "p-2", "traits": {}}])

    assert connector.deliver(Capability.MERGE_PROFILES, "crm", [merge]).delivered
    assert list(fake.contacts) == ["p-1"]
    assert fake.contacts["p-1"]["Tessera_Profile_Id__c"] == "p-1"
    assert fake.merged_away == {}


def test_salesforce_fetches_a_new_session_when_soap_says_it_expired(salesforce):
    fake, connector = salesforce
    for key in ("p-1", "p-2"):
        fake.edit(key, LastName=key, Tessera_Profile_Id__c=key)
    connector.check()  # a token now
    fake.expire_tokens()
    merge = item("p-1", "merged", {"last_name": "One"}, [
        {"profile_id": "p-1", "traits": {}}, {"profile_id": "p-2", "traits": {}}])

    assert connector.deliver(Capability.MERGE_PROFILES, "crm", [merge]).delivered
    assert list(fake.contacts) == ["p-1"] and len(fake.merged_away) == 1
    assert fake.contacts["p-1"]["LastName"] == "One"


def test_the_salesforce_fake_refuses_a_merge_of_more_than_three_records(salesforce):
    fake, connector = salesforce
    for key in ("p-1", "p-2", "p-3", "p-4"):
        fake.edit(key, LastName=key)
    master, *victims = [fake.contacts[k]["Id"] for k in ("p-1", "p-2", "p-3", "p-4")]
    token = connector._authenticate()["access_token"]
    envelope = (
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:urn="urn:partner.soap.sforce.com" xmlns:sf="urn:sobject.partner.soap.sforce.com">'
        f"<soapenv:Header><urn:SessionHeader><urn:sessionId>{token}</urn:sessionId>"
        "</urn:SessionHeader></soapenv:Header><soapenv:Body><urn:merge><urn:request>"
        f"<urn:masterRecord><sf:type>Contact</sf:type><sf:Id>{master}</sf:Id></urn:masterRecord>"
        + "".join(f"<urn:recordToMergeIds>{v}</urn:recordToMergeIds>" for v in victims)
        + "</urn:request></urn:merge></soapenv:Body></soapenv:Envelope>")

    answer = httpx.post(f"{fake.base_url}/services/Soap/u/66.0", content=envelope,
                        headers={"Content-Type": "text/xml", "SOAPAction": '""'})

    assert answer.status_code == 200
    assert b"<success>false</success>" in answer.content and b"INVALID_FIELD" in answer.content
    assert len(fake.contacts) == 4
