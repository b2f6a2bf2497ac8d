"""The console's access rules: the same tokens and roles as the API, a cookie session with
a CSRF token, and refusals a person can read."""

from __future__ import annotations

import re
import secrets

import httpx
import pytest

from services.gateway.access import Role
from services.gateway.console.session import COOKIE
from tessera.testing.platform import Platform

TOKENS = {Role.MARKETER: f"tok_m_{secrets.token_hex(8)}",
          Role.COMPLIANCE: f"tok_c_{secrets.token_hex(8)}"}
BROWSER = {"Accept": "text/html,application/xhtml+xml"}


@pytest.fixture(scope="module")
def platform():
    platform = Platform(extra_env={"TESSERA_API_TOKENS": ",".join(
        f"{role}-1={role}:{token}" for role, token in TOKENS.items())})
    platform.start()
    yield platform
    platform.stop()
    platform.cleanup()


def signed_in(platform: Platform, token: str) -> httpx.Client:
    client = httpx.Client(base_url=platform.base_url, headers=BROWSER, timeout=60)
    answer = client.post("/console/sign-in", data={"token": token})
    assert answer.status_code == 303, answer.text
    assert client.cookies.get(COOKIE) == token
    return client


def csrf_of(page: httpx.Response) -> str:
    return re.search(r'name="csrf-token" content="([0-9a-f]+)"', page.text).group(1)


def test_signing_in_sets_an_http_only_strict_cookie_and_opens_the_overview(platform):
    client = httpx.Client(base_url=platform.base_url, headers=BROWSER, timeout=60)
    answer = client.post("/console/sign-in", data={"token": platform.admin_token})
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    overview = client.get("/console")
    assert overview.status_code == 200
    assert "Events in per minute" in overview.text and "<svg" in overview.text


def test_a_wrong_token_does_not_sign_in(platform):
    answer = httpx.post(f"{platform.base_url}/console/sign-in", data={"token": "tok_wrong"})
    assert answer.status_code == 400
    assert "token: unknown, revoked or missing" in answer.text
    assert "set-cookie" not in answer.headers


def test_a_browser_without_a_session_is_sent_to_sign_in_and_an_api_client_gets_401(platform):
    browser = httpx.get(f"{platform.base_url}/console/segments", headers=BROWSER)
    assert browser.status_code == 303
    assert browser.headers["location"].startswith("/console/sign-in?next=")
    assert httpx.get(f"{platform.base_url}/console/segments").status_code == 401


def test_a_marketer_gets_a_readable_403_on_compliance_pages_and_no_compliance_link(platform):
    marketer = signed_in(platform, TOKENS[Role.MARKETER])
    overview = marketer.get("/console")
    assert 'href="/console/segments"' in overview.text
    assert 'href="/console/compliance"' not in overview.text
    for path in ("/console/compliance", "/console/compliance/processing-records",
                 "/console/compliance/subject?identifier=email:a@b.example"):
        refused = marketer.get(path)
        assert refused.status_code == 403, path
        assert "Not for your role" in refused.text and "marketer" in refused.text


def test_a_compliance_officer_cannot_save_a_segment_and_sees_no_save_button(platform):
    compliance = signed_in(platform, TOKENS[Role.COMPLIANCE])
    page = compliance.get("/console/segments")
    assert page.status_code == 200 and "Save segment" not in page.text
    refused = compliance.post("/console/segments", data={
        "csrf": csrf_of(page), "name": "sneaky", "rule": '{"trait": "plan", "op": "exists"}'})
    assert refused.status_code == 403
    assert "sneaky" not in str(platform.admin("GET", "/v1/segments").json())
    assert compliance.get("/console/compliance").status_code == 200


def test_a_form_posted_without_its_csrf_token_is_refused(platform):
    admin = signed_in(platform, platform.admin_token)
    page = admin.get("/console/segments")
    rule = '{"trait": "plan", "op": "exists"}'
    missing = admin.post("/console/segments", data={"name": "no-csrf", "rule": rule})
    assert missing.status_code == 403 and "CSRF" in missing.text
    forged = admin.post("/console/segments", data={"name": "no-csrf", "rule": rule,
                                                   "csrf": "0" * 64})
    assert forged.status_code == 403
    assert "no-csrf" not in str(platform.admin("GET", "/v1/segments").json())
    saved = admin.post("/console/segments", data={"name": "with-csrf", "rule": rule,
                                                  "csrf": csrf_of(page)})
    assert saved.status_code == 303
    assert "with-csrf" in str(platform.admin("GET", "/v1/segments").json())


def test_a_revoked_token_is_sent_back_to_sign_in_at_once(platform):
    issued = platform.admin("POST", "/v1/tokens", json={"name": "temp", "role": "marketer"})
    client = signed_in(platform, issued.json()["token"])
    assert client.get("/console/segments").status_code == 200
    platform.admin("DELETE", f"/v1/tokens/{issued.json()['id']}")
    answer = client.get("/console/segments")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/console/sign-in")
    assert "Max-Age=0" in answer.headers["set-cookie"]


def test_signing_out_clears_the_cookie(platform):
    admin = signed_in(platform, platform.admin_token)
    page = admin.get("/console")
    answer = admin.post("/console/sign-out", data={"csrf": csrf_of(page)})
    assert answer.status_code == 303 and "Max-Age=0" in answer.headers["set-cookie"]
    assert admin.get("/console").status_code == 303


def test_pages_forbid_framing_and_third_party_content(platform):
    admin = signed_in(platform, platform.admin_token)
    policy = admin.get("/console").headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy


def test_the_overview_counts_the_events_accepted_in_the_last_hour(platform):
    admin = signed_in(platform, platform.admin_token)
    before = int(re.search(r"(\d+) events in the last 60 minutes", admin.get("/console").text)[1])
    sent = httpx.post(f"{platform.base_url}/v1/batch", auth=("wk_test_web", ""), json={
        "batch": [{"type": "track", "userId": f"u-{i}", "event": "Viewed"} for i in range(3)]})
    assert sent.status_code == 200
    after = int(re.search(r"(\d+) events in the last 60 minutes", admin.get("/console").text)[1])
    assert after == before + 3


def test_a_compliance_officer_files_and_verifies_a_request_from_the_console(platform):
    compliance = signed_in(platform, TOKENS[Role.COMPLIANCE])
    page = compliance.get("/console/compliance")
    filed = compliance.post("/console/compliance/requests", data={
        "csrf": csrf_of(page), "kind": "access", "regulation": "GDPR",
        "identifier": "email:filed.from.console@example.org"})
    assert filed.status_code == 303 and "Request+filed" in filed.headers["location"]
    [request] = [r for r in platform.admin("GET", "/v1/dsr").json()["requests"]
                 if r["identifiers"] == [["email", "filed.from.console@example.org"]]]
    assert request["filed_by"] == "compliance-1" and request["status"] == "received"
    listed = compliance.get("/console/compliance").text
    assert "filed.from.console@example.org" in listed and "Mark verified" in listed
    verified = compliance.post(f"/console/compliance/requests/{request['request_id']}/verify",
                               data={"csrf": csrf_of(page)})
    assert verified.status_code == 303 and "verified" in verified.headers["location"]
    assert platform.admin("GET", f"/v1/dsr/{request['request_id']}").json()["status"] \
        == "verified"
