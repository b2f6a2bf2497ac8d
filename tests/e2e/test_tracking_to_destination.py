"""One event from Segment's own Python client to a loopback webhook, gated by consent.

Each test runs on the embedded platform and on RabbitMQ + PostgreSQL (the `platform`
fixture), driven only through the public HTTP API.
"""

from __future__ import annotations

import uuid

import httpx
import segment.analytics as analytics
from e2e_support import WRITE_KEY, stored_event_counts
from tenacity import retry, stop_after_delay, wait_fixed

GRANTED = {"advertising": True, "marketing": True, "analytics": True}


def client_for(platform) -> analytics.Client:
    return analytics.Client(WRITE_KEY, host=platform.base_url, sync_mode=True)


def new_user() -> str:
    return f"user-{uuid.uuid4()}"


def buy_twice(client, user_id: str) -> None:
    for order in ("o-1", "o-2"):
        client.track(user_id=user_id, event="Order Completed", properties={"order_id": order})


def deliveries_for(receiver, user_id: str, platform) -> list[dict]:
    profile = platform.admin("GET", "/v1/profiles", params={"userId": user_id}).json()
    return [i for i in receiver.items() if i["profile_id"] == profile["profile_id"]]


def outcomes_for(platform, destination: str, profile_id: str) -> list[dict]:
    found = platform.admin("GET", f"/v1/destinations/{destination}/outcomes").json()
    return [o for o in found["outcomes"] if o["profile_id"] == profile_id]


def test_an_event_with_consent_reaches_the_webhook_exactly_once(platform, receiver):
    client = client_for(platform)
    user_id = new_user()
    client.identify(user_id=user_id, traits={"email": f"{user_id}@example.com"},
                    context={"consent": {"categoryPreferences": GRANTED}})
    buy_twice(client, user_id)
    platform.wait_drained()

    arrived = deliveries_for(receiver, user_id, platform)
    assert sorted(i["destination"] for i in arrived) == ["ads", "crm"]
    assert all(i["action"] == "entered" and i["segment"] == "buyers" for i in arrived)
    assert all(i["traits"]["email"] == f"{user_id}@example.com" for i in arrived)
    decision = platform.admin("GET", f"/v1/decisions/{arrived[0]['decision_id']}").json()
    assert decision["allowed"] is True
    assert [s["retrying"] for s in platform.status()["services"]] == [[]] * 6


def test_an_event_without_consent_reaches_nothing_and_leaves_a_suppression(platform, receiver):
    client = client_for(platform)
    user_id = new_user()
    client.identify(user_id=user_id, traits={"email": f"{user_id}@example.com"})
    buy_twice(client, user_id)
    platform.wait_drained()

    assert deliveries_for(receiver, user_id, platform) == []
    profile = platform.admin("GET", "/v1/profiles", params={"userId": user_id}).json()
    for destination in ("ads", "crm"):
        [suppressed] = outcomes_for(platform, destination, profile["profile_id"])
        assert suppressed["outcome"] == "suppressed"
        assert "no consent record" in suppressed["reason"]
        decision = platform.admin("GET", f"/v1/decisions/{suppressed['decision_id']}").json()
        assert decision["allowed"] is False
        assert decision["profile_id"] == profile["profile_id"]


def test_consent_for_some_purposes_only_reaches_only_the_destinations_it_covers(
        platform, receiver):
    client = client_for(platform)
    user_id = new_user()
    client.identify(user_id=user_id, context={"consent": {"categoryPreferences": {
        "advertising": True, "marketing": True, "analytics": False}}})
    buy_twice(client, user_id)
    platform.wait_drained()

    assert [i["destination"] for i in deliveries_for(receiver, user_id, platform)] == ["ads"]


def test_an_invalid_event_leaves_nothing_but_its_rejection(platform):
    before = stored_event_counts(platform)
    stats_before = platform.admin("GET", "/v1/stats").json()
    message_id = str(uuid.uuid4())

    answer = httpx.post(f"{platform.base_url}/v1/track", auth=(WRITE_KEY, ""), json={
        "userId": new_user(), "messageId": message_id, "properties": {"plan": "pro"}})
    platform.wait_drained()

    assert answer.status_code == 400
    assert answer.json() == {"code": "required", "message": answer.json()["message"]}
    assert "event" in answer.json()["message"]
    after = stored_event_counts(platform)
    assert after["gateway"] == before["gateway"] + 1  # the rejection record, nothing else
    assert {k: v for k, v in after.items() if k != "gateway"} == {
        k: v for k, v in before.items() if k != "gateway"}
    stats_after = platform.admin("GET", "/v1/stats").json()
    assert stats_after["events"]["accepted"] == stats_before["events"]["accepted"]
    assert stats_after["profiles"] == stats_before["profiles"]
    assert platform.status()["queued"] == 0
    [rejection] = [r for r in platform.admin("GET", "/v1/rejections").json()["rejections"]
                   if r["message_id"] == message_id]
    assert (rejection["field"], rejection["rule"]) == ("event", "required")
    assert rejection["redacted"]["properties"]["plan"] == "***"


def test_a_batch_mixing_valid_and_invalid_events_keeps_the_valid_ones(platform):
    good, bad = new_user(), str(uuid.uuid4())
    answer = httpx.post(f"{platform.base_url}/v1/batch", auth=(WRITE_KEY, ""), json={"batch": [
        {"type": "identify", "userId": good, "traits": {"plan": "pro"}},
        {"type": "track", "messageId": bad, "event": "Signed Up"},  # no userId/anonymousId
    ]})
    assert answer.status_code == 200

    @retry(stop=stop_after_delay(30), wait=wait_fixed(0.2), reraise=True)
    def profile_of_the_valid_one():
        found = platform.admin("GET", "/v1/profiles", params={"userId": good})
        assert found.status_code == 200
        return found.json()

    assert profile_of_the_valid_one()["traits"] == {"plan": "pro"}
    rejections = platform.admin("GET", "/v1/rejections").json()["rejections"]
    assert [r["rule"] for r in rejections if r["message_id"] == bad] == ["no_user_anon_id"]


def test_an_unknown_write_key_is_refused_with_401(platform):
    answer = httpx.post(f"{platform.base_url}/v1/batch", auth=("wk_nobody", ""),
                        json={"batch": [{"type": "track", "userId": "u", "event": "E"}]})
    assert answer.status_code == 401
    assert answer.json()["code"] == "unauthorized"


def test_the_read_api_needs_the_admin_token(platform):
    assert httpx.get(f"{platform.base_url}/v1/stats").status_code == 401
    assert httpx.get(f"{platform.base_url}/v1/stats",
                     headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_a_retried_batch_is_not_counted_twice(platform):
    user_id = new_user()
    batch = {"batch": [{"type": "track", "userId": user_id, "event": "Viewed",
                        "messageId": str(uuid.uuid4())}]}
    for _ in range(2):
        assert httpx.post(f"{platform.base_url}/v1/batch", auth=(WRITE_KEY, ""),
                          json=batch).status_code == 200
    platform.wait_drained()
    profile = platform.admin("GET", "/v1/profiles", params={"userId": user_id}).json()
    assert profile["events_total"] == 1
    timeline = platform.admin("GET", f"/v1/profiles/{profile['profile_id']}/events").json()
    assert [entry["event"] for entry in timeline["events"]] == ["Viewed"]
    assert platform.admin("GET", f"/v1/profiles/{profile['profile_id']}/events",
                          params={"limit": "lots"}).status_code == 400


MALFORMED_BODIES = [
    b"",
    b"not json",
    b"[]",
    b"null",
    b'{"batch": "nope"}',
    b'{"batch": []}',
    b'{"batch": [1, "two", null, []]}',
    b'{"batch": [{"type": "track"}]}',
    b'{"batch": [{"type": "spaceship", "userId": "u"}]}',
    b'{"batch": [{"type": "track", "userId": {"nested": 1}, "event": "E"}]}',
    b'{"batch": [{"type": "track", "userId": "u", "event": "E", "timestamp": "yesterday"}]}',
    b'{"batch": [{"type": "track", "userId": "u", "event": "E", "properties": [1, 2]}]}',
    b'{"batch": [{"type": "identify", "userId": "u", "traits": "vip"}]}',
    b'{"batch": [{"type": "track", "userId": "u", "event": 1e999}]}',
    b'{"batch": [{"type": "track", "userId": "u", "event": "E"}], "context": 5}',
    b'{"batch": [{"type": "alias", "userId": "u"}]}',
    "{\"batch\": [{\"type\": \"track\", \"userId\": \"\u0000\", \"event\": \"\udcff\"}]}".encode(
        "utf-8", "surrogatepass"),
]


def test_bad_input_gets_a_4xx_naming_the_problem_and_never_a_500(platform):
    for body in MALFORMED_BODIES:
        answer = httpx.post(f"{platform.base_url}/v1/batch", auth=(WRITE_KEY, ""),
                            content=body, headers={"Content-Type": "text/plain"})
        assert answer.status_code in (400, 413), (body, answer.status_code, answer.text)
        assert set(answer.json()) == {"code", "message"}, body
    gzip_lie = httpx.post(f"{platform.base_url}/v1/batch", auth=(WRITE_KEY, ""),
                          content=b"plain", headers={"Content-Encoding": "gzip"})
    assert gzip_lie.status_code == 400
    too_big = httpx.post(f"{platform.base_url}/v1/batch", auth=(WRITE_KEY, ""),
                         content=b"x" * (4 * 1024 * 1024 + 1))
    assert too_big.status_code == 413


def test_consent_recorded_through_the_api_lets_the_person_through(platform, receiver):
    user_id = new_user()
    email = f"{user_id}@example.com"
    answer = httpx.post(f"{platform.base_url}/v1/consent", auth=(WRITE_KEY, ""), json={
        "email": email.upper(), "purposes": {"advertising": True},
        "policyVersion": "2026-11", "method": "signup form"})
    assert answer.status_code == 200, answer.text
    client = client_for(platform)
    client.identify(user_id=user_id, traits={"email": email})
    buy_twice(client, user_id)
    platform.wait_drained()

    assert [i["destination"] for i in deliveries_for(receiver, user_id, platform)] == ["ads"]
    profile = platform.admin("GET", "/v1/profiles", params={"email": email}).json()
    [record] = platform.admin("GET", f"/v1/profiles/{profile['profile_id']}/consent").json()[
        "records"]
    entry = record["regulations"]["GDPR"]["advertising"]["api:web"]
    assert (entry["granted"], entry["policy_version"], entry["method"]) == (
        True, "2026-11", "signup form")


def test_a_consent_request_without_an_identifier_is_refused_naming_the_field(platform):
    answer = httpx.post(f"{platform.base_url}/v1/consent", auth=(WRITE_KEY, ""),
                        json={"purposes": {"advertising": True}})
    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid_consent"
    assert answer.json()["message"].startswith("userId:")


def test_an_invalid_segment_rule_is_refused_naming_its_path_and_nothing_is_defined(platform):
    answer = platform.admin("POST", "/v1/segments", json={"name": "broken", "rule": {
        "and": [{"trait": "country", "op": "equals", "value": "FR"}]}})

    assert answer.status_code == 400
    assert answer.json()["message"].startswith("rule.and[0].op:")
    names = [s["name"] for s in platform.admin("GET", "/v1/segments").json()["segments"]]
    assert "broken" not in names
