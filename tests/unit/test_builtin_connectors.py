"""The built-in connectors: each passes the conformance kit against its loopback fake, and
does what its vendor documents beyond it (consent fields, throttling codes, re-auth)."""

from __future__ import annotations

import pytest

from connectors.base import DeliveryItem, load_connector
from connectors.fakes.google import FakeDataManager
from connectors.fakes.hubspot import FakeHubSpot
from connectors.fakes.meta import FakeGraphApi
from connectors.fakes.salesforce import FakeSalesforce
from connectors.sdk import Capability
from connectors.sdk.conformance import conformance_tests
from connectors.sdk.delivery import Batch, deliver_batches
from connectors.sdk.hashing import sha256_hex

TestGoogleConformance = conformance_tests("google_customer_match")
TestMetaConformance = conformance_tests("meta_custom_audiences")
TestHubSpotConformance = conformance_tests("hubspot")
TestSalesforceConformance = conformance_tests("salesforce")


def person(n: int, action: str = "entered", **traits) -> DeliveryItem:
    traits = traits or {"email": f"p{n}@example.com", "first_name": "Ada",
                        "last_name": "Lovelace", "phone": "+44 20 7946 0000"}
    return DeliveryItem(f"k{n}:{action}", f"profile-{n}", action, "buyers", traits, {},
                        "2026-01-01T00:00:00Z", f"d{n}")


def deliver(connector, operation, items, waits=None):
    return deliver_batches(connector, "dest", [Batch(operation, tuple(items))], attempts=4,
                           sleep=(waits.append if waits is not None else lambda s: None))


# ---- Google ------------------------------------------------------------------------------
@pytest.fixture
def google():
    with FakeDataManager(token="t") as fake:
        connector = load_connector("google_customer_match", {
            "base_url": fake.base_url, "access_token": "t", "operating_account_id": "123-456",
            "login_account_id": "999", "audience_id": "42"})
        yield fake, connector
        connector.close()


def test_google_ingest_sends_granted_consent_and_accepted_terms(google):
    fake, connector = google
    deliver(connector, Capability.ADD_TO_AUDIENCE, [person(1)])
    body = fake.data_requests()[0].json()
    assert body["destinations"] == [{
        "operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": "123456"},
        "loginAccount": {"accountType": "GOOGLE_ADS", "accountId": "999"},
        "productDestinationId": "42"}]
    assert body["audienceMembers"][0]["consent"] == {"adUserData": "CONSENT_GRANTED",
                                                     "adPersonalization": "CONSENT_GRANTED"}
    assert body["termsOfService"] == {"customerMatchTermsOfServiceStatus": "ACCEPTED"}
    assert body["encoding"] == "HEX"


def test_google_removal_goes_to_its_own_method_without_consent(google):
    fake, connector = google
    deliver(connector, Capability.ADD_TO_AUDIENCE, [person(1), person(2)])
    deliver(connector, Capability.REMOVE_FROM_AUDIENCE, [person(1, "exited")])
    removal = fake.data_requests()[-1]
    assert removal.path == "/v1/audienceMembers:remove"
    assert "consent" not in removal.json()["audienceMembers"][0]
    assert len(fake.subjects()) == 1


def test_google_puts_each_identifier_in_its_own_entry(google):
    fake, connector = google
    deliver(connector, Capability.ADD_TO_AUDIENCE, [person(1)])
    entries = fake.data_requests()[0].json()["audienceMembers"][0]["userData"][
        "userIdentifiers"]
    assert [list(e) for e in entries] == [["emailAddress"], ["phoneNumber"]]  # no address:
    # Google's sample sends an address only with first, last name, country and postal code


def test_google_retries_a_concurrent_modification_although_it_is_a_400(google):
    fake, connector = google
    fake.fail_next(1, 400, body={"error": {"code": 400, "status": "INVALID_ARGUMENT",
                                           "message": "databaseError: CONCURRENT_MODIFICATION"}})
    report = deliver(connector, Capability.ADD_TO_AUDIENCE, [person(1)])
    assert report.delivered == ["k1:entered"]
    assert len(fake.data_requests()) == 2


def test_the_fake_refuses_an_unhashed_email_as_google_would(google):
    fake, _ = google
    import httpx

    answer = httpx.post(fake.base_url + "/v1/audienceMembers:ingest",
                        headers={"Authorization": "Bearer t"},
                        json={"destinations": [{"operatingAccount": {
                            "accountType": "GOOGLE_ADS", "accountId": "1"},
                            "productDestinationId": "42"}], "encoding": "HEX",
                            "audienceMembers": [{"userData": {"userIdentifiers": [
                                {"emailAddress": "ada@example.com"}]}}]})
    assert answer.status_code == 400
    assert answer.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_a_dry_run_shows_googles_request_with_the_token_hidden(google):
    _, connector = google
    (request,) = connector.preview(Capability.ADD_TO_AUDIENCE, "dest", [person(1)])
    assert request["url"].endswith("/v1/audienceMembers:ingest")
    assert request["headers"]["Authorization"] == "***"
    (first, *_) = request["body"]["audienceMembers"][0]["userData"]["userIdentifiers"]
    assert first == {"emailAddress": sha256_hex("p1@example.com")}


# ---- Meta --------------------------------------------------------------------------------
@pytest.fixture
def meta():
    with FakeGraphApi(token="t", audience_id="77") as fake:
        connector = load_connector("meta_custom_audiences", {
            "base_url": fake.base_url, "access_token": "t", "audience_id": "77"})
        yield fake, connector
        connector.close()


def test_meta_throttling_code_17_is_waited_out_and_retried(meta):
    fake, connector = meta
    fake.fail_next(1, 400, body={"error": {"message": "User request limit reached",
                                           "type": "OAuthException", "code": 17,
                                           "error_subcode": 2446079}})
    waits: list[float] = []
    report = deliver(connector, Capability.ADD_TO_AUDIENCE, [person(1)], waits)
    assert report.delivered == ["k1:entered"]
    assert waits[0] >= 60


def test_meta_invalid_token_is_permanent(meta):
    fake, _ = meta
    connector = load_connector("meta_custom_audiences", {
        "base_url": fake.base_url, "access_token": "revoked", "audience_id": "77"})
    report = deliver(connector, Capability.ADD_TO_AUDIENCE, [person(1)])
    assert "code 190" in str(report.failed[0][1])
    assert len(fake.data_requests()) == 1
    connector.close()


def test_meta_rows_follow_the_schema_with_blanks_and_an_unhashed_extern_id(meta):
    fake, connector = meta
    deliver(connector, Capability.ADD_TO_AUDIENCE, [person(1, email="a@b.co")])
    payload = fake.data_requests()[0].json()["payload"]
    assert payload["schema"] == ["EMAIL", "PHONE", "FN", "LN", "COUNTRY", "EXTERN_ID"]
    (row,) = payload["data"]
    assert row[1:5] == ["", "", "", ""]
    assert row[5] == "profile-1"


# ---- HubSpot -----------------------------------------------------------------------------
@pytest.fixture
def hubspot():
    with FakeHubSpot(token="t") as fake:
        connector = load_connector("hubspot", {"base_url": fake.base_url, "access_token": "t",
                                               "mapping": {"plan": "tessera_plan"}})
        yield fake, connector
        connector.close()


def test_hubspot_upserts_by_email_with_mapped_properties(hubspot):
    fake, connector = hubspot
    deliver(connector, Capability.UPSERT_PROFILE,
            [person(1, email="Ada@Example.com", first_name="Ada", plan="pro")])
    (entry,) = fake.data_requests()[0].json()["inputs"]
    stamp = entry["properties"].pop("tessera_sync_stamp")
    assert entry == {"idProperty": "email", "id": "ada@example.com", "properties": {
        "email": "ada@example.com", "firstname": "Ada", "tessera_plan": "pro"},
        "objectWriteTraceId": "k1:entered"}  # asks HubSpot for per-input (207) answers
    assert stamp.startswith("email,firstname,tessera_plan:")  # what we wrote, for the pull


def test_hubspot_ten_secondly_limit_waits_ten_seconds(hubspot):
    fake, connector = hubspot
    fake.fail_next(1, 429)  # HubSpot's body names TEN_SECONDLY_ROLLING, no Retry-After
    waits: list[float] = []
    report = deliver(connector, Capability.UPSERT_PROFILE, [person(1)], waits)
    assert report.delivered == ["k1:entered"]
    assert waits[0] >= 10


def test_hubspot_partial_failure_delivers_the_written_and_dead_letters_the_refused(hubspot):
    fake, connector = hubspot
    fake.refuse("p2@example.com", "VALIDATION_ERROR")
    report = deliver(connector, Capability.UPSERT_PROFILE, [person(1), person(2), person(3)])
    assert report.delivered == ["k1:entered", "k3:entered"]
    ((batch, error),) = report.failed
    assert batch.keys == ["k2:entered"] and not error.retryable
    assert "VALIDATION_ERROR" in str(error) and error.status == 207
    assert len(fake.data_requests()) == 1  # a refusal about the data is not retried
    assert sorted(fake.subjects()) == ["p1@example.com", "p3@example.com"]


def test_hubspot_a_locked_input_is_sent_again_alone_and_then_written(hubspot):
    fake, connector = hubspot
    fake.refuse("p2@example.com", "LOCKED", times=1)
    waits: list[float] = []
    report = deliver(connector, Capability.UPSERT_PROFILE, [person(1), person(2), person(3)],
                     waits)
    assert sorted(report.delivered) == ["k1:entered", "k2:entered", "k3:entered"]
    assert report.failed == []
    second = fake.data_requests()[1].json()["inputs"]
    assert [entry["id"] for entry in second] == ["p2@example.com"]
    assert len(waits) == 1  # one backoff before the second request


def test_hubspot_an_input_that_stays_rate_limited_is_dead_lettered_when_the_budget_is_spent(
        hubspot):
    fake, connector = hubspot
    fake.refuse("p2@example.com", "RATE_LIMITS")
    report = deliver(connector, Capability.UPSERT_PROFILE, [person(1), person(2)])
    assert report.delivered == ["k1:entered"]
    assert [batch.keys for batch, _ in report.failed] == [["k2:entered"]]
    assert len(fake.data_requests()) == 4  # the budget of 4 attempts, then no more


# ---- Salesforce --------------------------------------------------------------------------
@pytest.fixture
def salesforce():
    with FakeSalesforce(client_id="id", client_secret="s") as fake:
        connector = load_connector("salesforce", {
            "login_url": fake.base_url, "client_id": "id", "client_secret": "s"})
        yield fake, connector
        connector.close()


def test_salesforce_fetches_a_new_token_once_when_the_session_expired(salesforce):
    fake, connector = salesforce
    deliver(connector, Capability.UPSERT_PROFILE, [person(1)])
    fake.expire_tokens()
    report = deliver(connector, Capability.UPSERT_PROFILE, [person(2)])
    assert report.delivered == ["k2:entered"]
    assert sorted(fake.subjects()) == ["profile-1", "profile-2"]
    tokens = [r for r in fake.requests if r.path == "/services/oauth2/token"]
    assert len(tokens) == 2


def test_salesforce_upserts_by_external_id_with_mapped_fields(salesforce):
    fake, connector = salesforce
    deliver(connector, Capability.UPSERT_PROFILE, [person(1)])
    (record,) = fake.data_requests()[0].json()["records"]
    assert record.pop("Tessera_Sync_Stamp__c").startswith("Email,FirstName,LastName,Phone,")
    assert record == {"attributes": {"type": "Contact"}, "Tessera_Profile_Id__c": "profile-1",
                      "Email": "p1@example.com", "FirstName": "Ada", "LastName": "Lovelace",
                      "Phone": "+44 20 7946 0000"}


# ---- warehouse ---------------------------------------------------------------------------
TestWarehouseConformance = conformance_tests("warehouse")


@pytest.fixture
def warehouse():
    from connectors.fakes.warehouse import ScratchDatabase

    with ScratchDatabase() as db:
        connector = load_connector("warehouse", {"dsn": db.dsn, "schema": "analytics"})
        yield db, connector
        connector.close()


def at(item: DeliveryItem, when: str) -> DeliveryItem:
    return DeliveryItem(item.idempotency_key, item.profile_id, item.action, item.segment,
                        item.traits, {}, when, item.decision_id)


def test_the_warehouse_keeps_memberships_and_traits_current(warehouse):
    db, connector = warehouse
    deliver(connector, Capability.ADD_TO_AUDIENCE, [at(person(1, plan="pro"), "2026-01-01")])
    deliver(connector, Capability.REMOVE_FROM_AUDIENCE, [at(person(1, "exited"), "2026-01-02")])
    assert db.memberships() == [("profile-1", "buyers", False)]
    assert db.profiles() == {"profile-1": {"plan": "pro"}}


def test_a_late_entry_never_turns_a_later_exit_back(warehouse):
    db, connector = warehouse
    deliver(connector, Capability.REMOVE_FROM_AUDIENCE, [at(person(1, "exited"), "2026-01-02")])
    deliver(connector, Capability.ADD_TO_AUDIENCE, [at(person(1), "2026-01-01")])
    assert db.memberships() == [("profile-1", "buyers", False)]


def tracked(n: int, profile: str = "profile-1", **extra) -> DeliveryItem:
    event = {"type": "track", "event": "Order Completed", "messageId": f"m-{n}",
             "userId": "u-1", "properties": {"order_id": f"o-{n}", "revenue": 42.5},
             "context": {"library": {"name": "analytics-python"}},
             "timestamp": f"2026-01-0{n}T10:00:00.000Z",
             "receivedAt": f"2026-01-0{n}T10:00:00.250Z", **extra}
    return DeliveryItem(f"wh:event:m-{n}", profile, "event", None, {}, {},
                        event["timestamp"], f"d{n}", event=event)


def test_the_warehouse_keeps_each_event_once_however_often_it_is_delivered(warehouse):
    db, connector = warehouse
    deliver(connector, Capability.TRACK_EVENTS, [tracked(1), tracked(2)])
    deliver(connector, Capability.TRACK_EVENTS, [tracked(2), tracked(3)])
    assert [(row[0], row[1], row[2], row[3]) for row in db.events()] == [
        ("m-1", "profile-1", "track", "Order Completed"),
        ("m-2", "profile-1", "track", "Order Completed"),
        ("m-3", "profile-1", "track", "Order Completed")]
    assert db.events()[0][4] == {"order_id": "o-1", "revenue": 42.5}


def test_a_page_keeps_its_name_and_an_identify_its_traits(warehouse):
    db, connector = warehouse
    page = tracked(1, type="page", name="Pricing", event=None)
    identify = tracked(2, type="identify", event=None, traits={"plan": "pro"})
    deliver(connector, Capability.TRACK_EVENTS, [page, identify])
    [traits] = db._rows("SELECT traits FROM {schema}.events WHERE type = 'identify'")
    assert [(row[2], row[3]) for row in db.events()] == [("page", "Pricing"),
                                                          ("identify", None)]
    assert traits == ({"plan": "pro"},)


def test_deleting_a_subject_deletes_their_events_and_only_theirs(warehouse):
    db, connector = warehouse
    deliver(connector, Capability.ADD_TO_AUDIENCE, [person(1), person(2)])
    deliver(connector, Capability.TRACK_EVENTS,
            [tracked(1, "profile-1"), tracked(2, "profile-2"), tracked(3, "profile-9")])
    # An erasure names the person by identifiers, with every profile merged into them.
    erased = DeliveryItem("wh:erase:0", "", "erased", None, {"email": "p1@example.com"},
                          {"profile_ids": ["profile-1", "profile-9"]}, "2026-01-09", "")
    deliver(connector, Capability.DELETE_SUBJECT, [erased])
    assert [row[1] for row in db.events()] == ["profile-2"]
    assert set(db.profiles()) == {"profile-2"}
    assert db.subjects() == ["profile-2"]


def reconciled(action: str, profile: str, traits: dict, **extra) -> DeliveryItem:
    return DeliveryItem(f"wh:{action}:{profile}", profile, action, None, traits, {},
                        "2026-01-05T00:00:00Z", "d", **extra)


def test_a_warehouse_merge_gathers_the_absorbed_events_and_a_split_gives_them_back(
        warehouse):
    db, connector = warehouse
    deliver(connector, Capability.ADD_TO_AUDIENCE, [person(1), person(2)])
    deliver(connector, Capability.TRACK_EVENTS,
            [tracked(1, "profile-1"), tracked(2, "profile-2")])
    merged = {"email": "p1@example.com", "phone": "+44 20 7946 0000"}
    deliver(connector, Capability.MERGE_PROFILES, [reconciled(
        "merged", "profile-1", merged, merged_profiles=(
            {"profile_id": "profile-1", "traits": {}}, {"profile_id": "profile-2", "traits": {}}))])
    assert [row[1] for row in db.events()] == ["profile-1", "profile-1"]
    assert db.profiles() == {"profile-1": merged}
    assert db.memberships() == [("profile-1", "buyers", True)]

    deliver(connector, Capability.MERGE_PROFILES, [
        reconciled("split", "profile-1", {"email": "p1@example.com"}, split_from="profile-1"),
        reconciled("split", "profile-2", {"phone": "+44 20 7946 0000"},
                   split_from="profile-1")])
    assert [row[1] for row in db.events()] == ["profile-1", "profile-2"]
    assert db.profiles() == {"profile-1": {"email": "p1@example.com"},
                             "profile-2": {"phone": "+44 20 7946 0000"}}
    assert sorted(db.subjects()) == ["profile-1", "profile-2"]


def test_a_split_of_a_profile_the_warehouse_never_held_is_skipped(warehouse):
    db, connector = warehouse
    report = deliver(connector, Capability.MERGE_PROFILES, [
        reconciled("split", "profile-7", {"email": "x@example.com"}, split_from="profile-6")])
    assert report.delivered == [] and report.skipped == ["wh:split:profile-7"]
    assert db.profiles() == {}


def test_the_warehouse_dry_run_shows_the_event_rows(warehouse):
    _, connector = warehouse
    [preview] = connector.preview(Capability.TRACK_EVENTS, "wh", [tracked(1)])
    assert preview["rows"][0]["event_id"] == "m-1"
    assert preview["rows"][0]["occurred_at"] == "2026-01-01T10:00:00.000Z"


# ---- email -------------------------------------------------------------------------------
TestEmailConformance = conformance_tests("email")


@pytest.fixture(scope="module")
def smtp():
    from connectors.fakes.smtp import FakeSmtpServer

    with FakeSmtpServer() as server:
        yield server


def mailer(smtp, **overrides):
    from connectors.email import SmtpEmail

    config = dict(SmtpEmail.conformance_harness().config(smtp), **overrides)
    return load_connector("email", config)


def test_a_message_is_personalised_and_carries_one_click_unsubscribe(smtp):
    from connectors.email import read_unsubscribe_token

    connector = mailer(smtp)
    deliver(connector, Capability.SEND_MESSAGE,
            [person(90, email="ada@example.com", first_name="Ada")])
    (message,) = [m for m in smtp.messages() if m["rcpt"] == ["ada@example.com"]]
    headers = message["headers"]
    assert headers["Subject"] == "Hello Ada"
    assert message["text"].startswith("Dear Ada,")
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = headers["List-Unsubscribe"].split(">")[0].lstrip("<")
    assert url in message["text"]  # the visible link Gmail asks for, too
    token = url.rsplit("/", 1)[1]
    assert read_unsubscribe_token("unsub-secret", token) == ("profile-90", "dest")
    assert read_unsubscribe_token("another-secret", token) is None
    connector.close()


def test_marketing_mail_without_an_unsubscribe_link_is_refused_by_config(smtp):
    with pytest.raises(ValueError, match="unsubscribe_url and unsubscribe_secret"):
        mailer(smtp, unsubscribe_url=None)
    with pytest.raises(ValueError, match="unsubscribe_url: must be an https:// URL"):
        mailer(smtp, unsubscribe_url="http://cdp.example.com/u/{token}")


def test_google_renews_its_access_token_from_the_refresh_token_before_it_expires():
    now = [0.0]
    with FakeDataManager(token="ya29.t", refresh_token="1//r", client=("id", "s")) as fake:
        from connectors.google_customer_match import GoogleCustomerMatch

        config = GoogleCustomerMatch.config_schema().load({
            "base_url": fake.base_url, "token_url": fake.base_url + "/token",
            "refresh_token": "1//r", "client_id": "id", "client_secret": "s",
            "operating_account_id": "1", "audience_id": "2"})
        connector = GoogleCustomerMatch(clock=lambda: now[0], **config)
        deliver(connector, Capability.ADD_TO_AUDIENCE, [person(1)])
        deliver(connector, Capability.ADD_TO_AUDIENCE, [person(2)])
        assert fake.tokens_issued == 1  # cached while valid
        now[0] = 3599 - 30  # within the last minute of its life
        deliver(connector, Capability.ADD_TO_AUDIENCE, [person(3)])
        assert fake.tokens_issued == 2
        assert len(fake.subjects()) == 3
        connector.close()


def test_google_needs_an_access_token_or_a_refresh_token_with_its_client():
    with pytest.raises(ValueError, match="access_token: give access_token, or refresh_token"):
        load_connector("google_customer_match", {"operating_account_id": "1",
                                                 "audience_id": "2", "refresh_token": "r"})
