"""Consent through the public API, on both platforms: granted later activates, an objection
removes from the audience, restriction, Sec-GPC and TC strings (docs/consent.md)."""

from __future__ import annotations

import uuid

import httpx
import segment.analytics as analytics
from e2e_support import WRITE_KEY

V2_POLICY_TOO_OLD = ("CQSbk4AQSbk4ANwAAAENAwCgAAAAAAAAAAYgACPAAAAA.IDKQA4AAgAKAGQAygAAA."
                     "YAAAAAAAAAAA")


def consent(platform, body: dict, **headers) -> httpx.Response:
    return httpx.post(f"{platform.base_url}/v1/consent", auth=(WRITE_KEY, ""), json=body,
                      headers=headers, timeout=30)


def buyer(platform) -> tuple[str, str]:
    user_id = f"user-{uuid.uuid4()}"
    client = analytics.Client(WRITE_KEY, host=platform.base_url, sync_mode=True)
    client.identify(user_id=user_id, traits={"email": f"{user_id}@example.com"})
    for order in ("o-1", "o-2"):
        client.track(user_id=user_id, event="Order Completed", properties={"order_id": order})
    platform.wait_drained()
    profile = platform.admin("GET", "/v1/profiles", params={"userId": user_id}).json()
    return user_id, profile["profile_id"]


def sent_to(receiver, destination: str, profile_id: str) -> list[tuple[str, str]]:
    return [(i["action"], i["decision_id"]) for i in receiver.items()
            if i["profile_id"] == profile_id and i["destination"] == destination]


def test_consent_granted_later_activates_and_an_objection_removes_from_the_audience(
        platform, receiver):
    user_id, profile_id = buyer(platform)
    assert sent_to(receiver, "ads", profile_id) == []

    assert consent(platform, {"userId": user_id, "purposes": {"advertising": True},
                              "policyVersion": "2026-11", "language": "en"}).status_code == 200
    platform.wait_drained()
    [(action, decision_id)] = sent_to(receiver, "ads", profile_id)
    assert action == "entered"
    assert platform.admin("GET", f"/v1/decisions/{decision_id}").json()["allowed"] is True

    answer = platform.admin("POST", "/v1/consent/objections", json={
        "identifiers": [["user_id", user_id]], "purposes": ["advertising"], "source": "dsr:7"})
    assert answer.status_code == 200, answer.text
    platform.wait_drained()
    assert sent_to(receiver, "ads", profile_id)[1:] == [("exited", "consent_removal")]


def test_a_restricted_person_is_removed_and_the_endpoint_checks_its_body(platform, receiver):
    user_id, profile_id = buyer(platform)
    consent(platform, {"userId": user_id, "purposes": {"advertising": True}})
    platform.wait_drained()
    answer = platform.admin("POST", "/v1/consent/restrictions", json={
        "identifiers": [["user_id", user_id]], "restricted": True, "reason": "contested"})
    assert answer.status_code == 200, answer.text
    platform.wait_drained()
    assert [a for a, _ in sent_to(receiver, "ads", profile_id)] == ["entered", "exited"]
    refused = platform.admin("POST", "/v1/consent/restrictions", json={
        "identifiers": [["user_id", user_id]], "restricted": "yes"})
    assert (refused.status_code, refused.json()["message"]) == (
        400, "restricted: must be true or false")
    refused = platform.admin("POST", "/v1/consent/objections", json={"identifiers": []})
    assert refused.status_code == 400
    assert refused.json()["message"].startswith("identifiers:")


def test_sec_gpc_is_honoured_on_tracking_and_consent_requests(platform):
    user_id = f"user-{uuid.uuid4()}"
    answer = httpx.post(f"{platform.base_url}/v1/track", auth=(WRITE_KEY, ""),
                        headers={"Sec-GPC": "1"}, timeout=30,
                        json={"userId": user_id, "event": "Page Viewed"})
    assert answer.status_code == 200
    platform.wait_drained()
    profile = platform.admin("GET", "/v1/profiles", params={"userId": user_id}).json()
    [record] = platform.admin("GET", f"/v1/profiles/{profile['profile_id']}/consent").json()[
        "records"]
    assert record["regulations"]["CCPA"]["sale_sharing"]["gpc"]["granted"] is False

    answer = consent(platform, {"userId": user_id}, **{"Sec-GPC": "1"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["gpc"]["honored"] is True
    assert "sale_sharing" in answer.json()["gpc"]["opted_out"]


def test_a_tc_string_is_decoded_and_one_with_a_too_old_policy_is_reported_invalid(platform):
    answer = consent(platform, {"userId": f"user-{uuid.uuid4()}",
                                "tcString": V2_POLICY_TOO_OLD})
    assert answer.status_code == 200, answer.text
    assert answer.json()["tcString"]["valid"] is False
    assert answer.json()["tcString"]["problems"] == [
        "TcfPolicyVersion 2 is older than the configured 4"]
    assert not any(answer.json()["tcString"]["purposes"].values())


def test_consent_to_a_purpose_outside_the_catalogue_is_refused(platform):
    answer = consent(platform, {"userId": "u-1", "purposes": {"telepathy": True}})
    assert answer.status_code == 400
    assert answer.json()["message"].startswith("purposes: 'telepathy' is not in the purpose")
    assert consent(platform, {"userId": "u-1"}).json()["message"].startswith("purposes:")
