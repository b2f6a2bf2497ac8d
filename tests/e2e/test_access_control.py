"""Who gets in: every route of the gateway, times every kind of caller, revocation, rate limits,
and no personal data in the logs of a run that carried some.

The routes are enumerated from the gateway's nameko entrypoints, so a route added later
is walked too, and one added without a declared permission fails the first test.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from tenacity import retry, stop_after_delay, wait_fixed

from services.gateway.access import ROLE_PERMISSIONS, Permission, Role
from services.gateway.guard import routes, undeclared_routes
from services.gateway.openapi import openapi_path
from services.gateway.service import GatewayService
from tessera.testing.platform import Platform
from tessera.testing.webhook_receiver import WebhookReceiver

WRITE_KEY = "wk_access_web"
RATE_LIMITED_KEY = "wk_access_limited"
TOKENS = {Role.MARKETER: f"tok_m_{secrets.token_hex(8)}",
          Role.COMPLIANCE: f"tok_c_{secrets.token_hex(8)}"}
RATE_LIMIT, RATE_BURST = 1, 4
SECRET_ENV = "TESSERA_ACCESS_SECRET"
# What a person sent; none of it may appear in any log line.
PERSON = {"email": "grace.hopper.7731@navy-example.org", "phone": "+14155550173",
          "firstName": "Gracewyn", "lastName": "Hopperfield",
          "street": "42 Cobol Crescent"}


@pytest.fixture(scope="module")
def receiver():
    receiver = WebhookReceiver(secrets.token_hex(8))
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def platform(receiver):
    destinations = [{"name": "ads", "kind": "webhook",
                     "config": {"url": receiver.url_for("{destination}")},
                     "secret_env": SECRET_ENV, "segments": ["everyone"],
                     "purposes": ["advertising"]}]
    platform = Platform(
        write_keys={"web": WRITE_KEY, "limited": RATE_LIMITED_KEY}, destinations=destinations,
        destination_secrets={SECRET_ENV: receiver.secret.decode()},
        extra_env={"TESSERA_API_TOKENS": ",".join(f"{role}-1={role}:{token}"
                                                  for role, token in TOKENS.items()),
                   "TESSERA_RATE_LIMIT": str(RATE_LIMIT), "TESSERA_RATE_BURST": str(RATE_BURST),
                   "TESSERA_LOG_LEVEL": "DEBUG"})
    platform.start()
    platform.define_segment("everyone", {"trait": "plan", "op": "exists"})
    yield platform
    platform.stop()
    platform.cleanup()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def callers(platform: Platform) -> dict[str, dict[str, str]]:
    return {"admin": bearer(platform.admin_token),
            "marketer": bearer(TOKENS[Role.MARKETER]),
            "compliance": bearer(TOKENS[Role.COMPLIANCE]),
            "no credential": {},
            "unknown token": bearer("tok_" + secrets.token_hex(16)),
            "write key": {"Authorization": httpx.BasicAuth(WRITE_KEY, "")._auth_header}}


def expected(permission: Permission, caller: str) -> str:
    """'in' (passes access control), or the status access control answers."""
    if permission is Permission.PUBLIC:
        return "in"
    if permission is Permission.TRACK:
        return "in" if caller == "write key" else "401"
    if caller in ("no credential", "unknown token", "write key"):
        return "401"
    return "in" if permission in ROLE_PERMISSIONS[Role(caller)] else "403"


def concrete(url: str) -> str:
    """A route's URL with each parameter filled (with a value that names nothing)."""
    return re.sub(r"<(?:\w+:)?(\w+)>", lambda m: "track" if m.group(1) == "kind"
                  else f"no-such-{m.group(1)}", url)


def test_every_route_of_the_gateway_declares_its_permission():
    assert list(routes(GatewayService)), "no routes found: the enumeration is broken"
    assert undeclared_routes(GatewayService) == []


def test_every_route_answers_each_caller_as_its_permission_says(platform):
    outcomes, wrong = {}, []
    for route in routes(GatewayService):
        for caller, headers in callers(platform).items():
            answer = httpx.request(route.method, platform.base_url + concrete(route.url),
                                   headers=headers, json={}, timeout=60)
            got = (str(answer.status_code) if answer.status_code in (401, 403) else "in")
            outcomes[(route.method, route.url, caller)] = answer.status_code
            want = expected(route.permission, caller)
            if got != want or answer.status_code >= 500:
                wrong.append(f"{route.method} {route.url} as {caller}: "
                             f"{answer.status_code} (expected {want}) {answer.text[:120]}")
    assert not wrong, "\n".join(wrong)
    assert len(outcomes) >= 50 * 6


def test_the_roles_draw_the_lines_the_team_agreed(platform):
    marketer, compliance = bearer(TOKENS[Role.MARKETER]), bearer(TOKENS[Role.COMPLIANCE])
    url = platform.base_url

    def status(method, path, headers, **kwargs):
        return httpx.request(method, url + path, headers=headers, timeout=30,
                             **kwargs).status_code

    # A marketer works on audiences, reads profiles, sees no compliance page.
    assert status("GET", "/v1/segments", marketer) == 200
    assert status("GET", "/v1/destinations", marketer) == 200
    assert status("GET", "/v1/rejections", marketer) == 403
    assert status("GET", "/v1/decisions/any", marketer) == 403
    assert status("GET", "/v1/write-keys", marketer) == 403
    assert status("POST", "/v1/tokens", marketer, json={"name": "me", "role": "admin"}) == 403
    # A compliance officer reads everything that happened and changes no configuration.
    assert status("GET", "/v1/rejections", compliance) == 200
    assert status("GET", "/v1/segments", compliance) == 200
    assert status("POST", "/v1/segments", compliance,
                  json={"name": "x", "rule": {"trait": "plan", "op": "exists"}}) == 403
    assert status("POST", "/v1/destinations/ads/dead-letters/x/replay", compliance) == 403
    assert status("POST", "/v1/write-keys", compliance, json={"source": "web"}) == 403


def test_the_openapi_description_lists_exactly_the_routes_of_the_gateway(platform):
    described = httpx.get(f"{platform.base_url}/openapi.json", timeout=30).json()
    listed = {(method.upper(), path) for path, operations in described["paths"].items()
              for method in operations}
    assert listed == {(r.method, openapi_path(r.url)) for r in routes(GatewayService)}
    assert described["paths"]["/v1/segments"]["post"]["x-permission"] == "segments:write"


def track(platform: Platform, key: str) -> httpx.Response:
    return httpx.post(f"{platform.base_url}/v1/track", auth=(key, ""), timeout=30, json={
        "userId": f"u-{uuid.uuid4()}", "event": "Viewed", "messageId": str(uuid.uuid4())})


def test_a_write_key_issued_through_the_api_works_until_revoked_then_gets_401(platform):
    issued = platform.admin("POST", "/v1/write-keys", json={"source": "kiosk"})
    assert issued.status_code == 201
    key = issued.json()["write_key"]
    assert track(platform, key).status_code == 200

    listed = platform.admin("GET", "/v1/write-keys").json()["write_keys"]
    [shown] = [k for k in listed if k["id"] == issued.json()["id"]]
    assert shown["source"] == "kiosk" and not shown["revoked"]
    assert key not in str(listed)  # the secret is shown once, at issue

    assert platform.admin("DELETE", f"/v1/write-keys/{shown['id']}").status_code == 200
    refused = track(platform, key)
    assert refused.status_code == 401
    assert platform.admin("DELETE", "/v1/write-keys/no-such-key").status_code == 404


def test_a_write_key_from_the_environment_can_be_revoked_too_and_stays_revoked(platform):
    temporary = platform.admin("POST", "/v1/write-keys", json={"source": "temp"}).json()
    listed = platform.admin("GET", "/v1/write-keys").json()["write_keys"]
    assert {"web", "limited", "temp"} <= {k["source"] for k in listed}
    assert any(k["origin"] == "env" and k["source"] == "web" for k in listed)
    platform.admin("DELETE", f"/v1/write-keys/{temporary['id']}")
    again = platform.admin("DELETE", f"/v1/write-keys/{temporary['id']}").json()
    assert again["revoked"] is True


def test_a_token_issued_with_a_role_has_that_role_and_none_once_revoked(platform):
    issued = platform.admin("POST", "/v1/tokens", json={"name": "ana", "role": "marketer"})
    assert issued.status_code == 201
    token = issued.json()["token"]
    assert httpx.get(f"{platform.base_url}/v1/segments", headers=bearer(token)).status_code \
        == 200
    assert httpx.get(f"{platform.base_url}/v1/rejections", headers=bearer(token)).status_code \
        == 403
    assert platform.admin("POST", "/v1/tokens", json={"name": "x", "role": "root"}
                          ).json()["code"] == "invalid_role"
    platform.admin("DELETE", f"/v1/tokens/{issued.json()['id']}")
    assert httpx.get(f"{platform.base_url}/v1/segments", headers=bearer(token)).status_code \
        == 401


def test_the_cli_issues_lists_and_revokes_write_keys(platform):
    from e2e_support import tessera

    issued = tessera(platform, "keys", "issue", "pos")
    assert issued.returncode == 0, issued.stderr
    key_id, secret = re.search(r"write key (\S+) for source pos: (\S+)", issued.stdout).groups()
    assert track(platform, secret).status_code == 200
    assert key_id in tessera(platform, "keys", "list").stdout
    assert tessera(platform, "keys", "revoke", key_id).returncode == 0
    assert track(platform, secret).status_code == 401
    assert "revoked" in tessera(platform, "keys", "list").stdout


def test_a_write_key_over_its_rate_gets_429_with_retry_after_and_others_go_on(platform):
    time.sleep(RATE_BURST / RATE_LIMIT)  # a full bucket
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: track(platform, RATE_LIMITED_KEY), range(16)))
    statuses = [a.status_code for a in answers]
    assert set(statuses) == {200, 429}
    # the burst, plus what the bucket refilled while the requests were answered
    assert RATE_BURST <= statuses.count(200) < 16
    refused = next(a for a in answers if a.status_code == 429)
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["code"] == "rate_limited"
    assert track(platform, WRITE_KEY).status_code == 200  # another key is not held back
    time.sleep(int(refused.headers["Retry-After"]))
    assert track(platform, RATE_LIMITED_KEY).status_code == 200


def test_the_logs_of_a_run_that_carried_personal_data_hold_none_of_it(platform, receiver):
    user_id = f"u-{uuid.uuid4()}"
    consent = {"consent": {"categoryPreferences": {"advertising": True}}}
    sent = httpx.post(f"{platform.base_url}/v1/batch", auth=(WRITE_KEY, ""), timeout=30, json={
        "batch": [
            {"type": "identify", "userId": user_id, "context": consent,
             "traits": {**PERSON, "plan": "pro"}},
            {"type": "track", "userId": user_id, "event": "Address Changed",
             "properties": {"street": PERSON["street"], "email": PERSON["email"]}},
            # refused (no id): its personal data must not reach the logs either
            {"type": "identify", "traits": {"email": PERSON["email"], "phone": PERSON["phone"]}},
        ]})
    assert sent.status_code == 200
    consented = httpx.post(f"{platform.base_url}/v1/consent", auth=(WRITE_KEY, ""), timeout=30,
                           json={"email": PERSON["email"], "purposes": {"advertising": True}})
    assert consented.status_code == 200

    @retry(stop=stop_after_delay(60), wait=wait_fixed(0.3), reraise=True)
    def delivered():
        profile = platform.admin("GET", "/v1/profiles", params={"userId": user_id}).json()
        assert any(i["profile_id"] == profile["profile_id"] for i in receiver.items())
        return profile

    profile = delivered()
    platform.wait_drained()
    assert profile["traits"]["firstName"] == PERSON["firstName"]  # it was all there

    logs = platform.logs(tail=1_000_000)
    assert len(logs.splitlines()) > 20, "the run logged (almost) nothing: the test proves nothing"
    leaked = {name: value for name, value in PERSON.items() if value.lower() in logs.lower()}
    lines = [line[:300] for line in logs.splitlines()
             if any(value.lower() in line.lower() for value in leaked.values())]
    assert not leaked, f"personal data in the logs: {leaked}, e.g.\n" + "\n".join(lines[:5])
