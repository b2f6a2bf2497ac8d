"""The console in a real browser (Debian's headless chromium driven by Playwright), on a
platform loaded with the demo's data through the public API: each role signs in, a
marketer finds a demo person and builds a segment, an admin replays a dead letter, a
compliance officer opens a person's history. A screenshot of every page visited is saved
under artifacts/console/.

Skipped only when chromium is missing outside CI; in CI (`CI` set) a missing browser fails.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
import uuid
from pathlib import Path

import httpx
import pytest
from tenacity import retry, stop_after_delay, wait_fixed

from services.gateway.access import Role
from tessera.demo.dataset import generate
from tessera.demo.run import _destinations, _send_phase
from tessera.testing.platform import Platform
from tessera.testing.webhook_receiver import WebhookReceiver

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "console"
TOKENS = {Role.MARKETER: f"tok_m_{secrets.token_hex(8)}",
          Role.COMPLIANCE: f"tok_c_{secrets.token_hex(8)}"}
PROBE_SEGMENT = {"trait": "dlq_probe", "op": "exists"}

if not os.path.exists(CHROMIUM):
    if os.environ.get("CI"):
        raise RuntimeError(f"CI must run the browser tests: no chromium at {CHROMIUM} "
                           "(.ci/run installs it)")
    pytest.skip(f"no chromium at {CHROMIUM} (apt-get install -y chromium); CI runs these",
                allow_module_level=True)

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def receiver():
    with WebhookReceiver(secrets.token_hex(8)) as running:
        yield running


@pytest.fixture(scope="module")
def demo():
    return generate(people=40, events=400, seed=11)


@pytest.fixture(scope="module", params=["embedded", pytest.param("real", marks=pytest.mark.e2e)])
def platform(request, receiver, demo):
    configs, secret_env = _destinations(demo, receiver.base_url)
    configs.append({"name": "ads", "kind": "webhook", "segments": ["probe"],
                    "purposes": ["advertising"], "secret_env": "TESSERA_CONSOLE_SECRET",
                    "config": {"url": receiver.url_for("{destination}")}})
    secrets_env = dict.fromkeys([*secret_env, "TESSERA_CONSOLE_SECRET"],
                                receiver.secret.decode())
    platform = Platform(
        mode=request.param, write_keys=demo.write_keys, destinations=configs,
        destination_secrets=secrets_env,
        extra_env={"TESSERA_DELIVERY_ATTEMPTS": "2", "TESSERA_API_TOKENS": ",".join(
            f"{role}-1={role}:{token}" for role, token in TOKENS.items())})
    platform.start()
    for name, rule in demo.segments.items():
        platform.define_segment(name, rule)
    platform.define_segment("probe", PROBE_SEGMENT)
    for calls in demo.phases:
        _send_phase(platform, demo, calls)
        platform.wait_drained(timeout=300)
    yield platform
    platform.stop()
    platform.cleanup()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def open_page(browser, platform):
    contexts = []

    def sign_in(token: str) -> Page:
        context = browser.new_context(base_url=platform.base_url)
        contexts.append(context)
        page = context.new_page()
        page.goto("/console")
        expect(page.locator("h1")).to_have_text("Sign in")
        page.fill("input[name=token]", token)
        page.click("button:has-text('Sign in')")
        expect(page.locator("h1")).to_have_text("Overview")
        return page

    yield sign_in
    for context in contexts:
        context.close()


def token_of(platform: Platform, role: str) -> str:
    return platform.admin_token if role == "admin" else TOKENS[Role(role)]


def shot(page: Page, platform: Platform, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{platform.mode}-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000


@pytest.mark.parametrize("role", ["admin", "marketer", "compliance"])
def test_each_role_signs_in_and_sees_the_pages_its_role_grants(open_page, platform, role):
    page = open_page(token_of(platform, role))
    expect(page.locator("svg.chart").first).to_be_visible()
    shot(page, platform, f"overview-{role}")
    nav = page.locator("nav")
    if role == "marketer":
        expect(nav.get_by_role("link", name="Compliance")).to_have_count(0)
        page.goto("/console/compliance")
        expect(page.locator("h1")).to_have_text("Not for your role")
        shot(page, platform, "compliance-refused-marketer")
    else:
        nav.get_by_role("link", name="Compliance").click()
        expect(page.locator("h1")).to_have_text("Compliance")
        shot(page, platform, f"compliance-{role}")
    page.goto("/console/destinations")
    expect(page.locator("h1")).to_have_text("Destinations")
    shot(page, platform, f"destinations-{role}")
    page.goto("/console/segments")
    expect(page.locator("#segment-save")).to_have_count(0 if role == "compliance" else 1)


def test_a_marketer_finds_a_person_of_the_demo_by_email(open_page, platform, demo):
    segment, emails = next((s, e) for s, e in sorted(demo.truth.member_emails.items()) if e)
    email = sorted(emails)[0]
    page = open_page(TOKENS[Role.MARKETER])
    page.locator("nav").get_by_role("link", name="Profiles").click()
    page.select_option("select[name=kind]", "email")
    page.fill("input[name=q]", email)
    page.click("#profile-search button")
    expect(page.locator("h1")).to_have_text("Profile")
    expect(page.locator("text=Now in:")).to_contain_text(segment)
    expect(page.locator("text=Timeline (latest 50)")).to_be_visible()
    # the marketer role does not grant consent or identity reads: said, not hidden
    expect(page.locator("text=does not grant consent:read")).to_be_visible()
    shot(page, platform, "profile-marketer")


def test_a_marketer_builds_a_segment_sees_its_size_live_and_saves_it(open_page, platform):
    page = open_page(TOKENS[Role.MARKETER])
    page.locator("nav").get_by_role("link", name="Segments").click()
    expect(page.locator("h1")).to_have_text("Segments")
    name = f"console-{uuid.uuid4().hex[:6]}"
    page.fill("#segment-name", name)
    page.fill("#helper-trait", "plan")
    page.select_option("#helper-op", "exists")
    page.click("#helper-add")
    expect(page.locator("#segment-preview")).to_contain_text(re.compile(r"size \d+ of \d+"))
    preview = page.locator("#segment-preview").inner_text()
    shot(page, platform, "segment-builder")
    page.click("#segment-save")
    expect(page.locator(".notice")).to_contain_text(f"Segment {name} saved")
    shot(page, platform, "segments")
    expected = int(re.search(r"size (\d+)", preview).group(1))

    @retry(stop=stop_after_delay(60), wait=wait_fixed(0.5), reraise=True)
    def backfilled():
        segment = platform.admin("GET", f"/v1/segments/{name}").json()
        assert segment["size"] == expected
    backfilled()
    page.get_by_role("link", name=name, exact=True).click()
    expect(page.locator("h1")).to_have_text(f"Segment {name}")
    shot(page, platform, "segment")


def test_an_admin_replays_a_dead_letter_and_it_is_delivered(open_page, platform, receiver):
    user_id = f"probe-{uuid.uuid4().hex[:8]}"
    receiver.fail_next(2, status=503)  # both attempts: the delivery is dead-lettered
    sent = httpx.post(f"{platform.base_url}/v1/batch", auth=("wk_demo_web", ""), timeout=30,
                      json={"batch": [{"type": "identify", "userId": user_id,
                                       "traits": {"dlq_probe": True},
                                       "context": {"consent": {"categoryPreferences": {
                                           "advertising": True}}}}]})
    assert sent.status_code == 200

    @retry(stop=stop_after_delay(90), wait=wait_fixed(0.5), reraise=True)
    def dead_lettered():
        letters = platform.admin("GET", "/v1/destinations/ads/dead-letters").json()
        assert letters["dead_letters"]
    dead_lettered()
    page = open_page(platform.admin_token)
    page.locator("nav").get_by_role("link", name="Destinations").click()
    page.get_by_role("link", name="ads", exact=True).click()
    expect(page.locator("h1")).to_have_text("Destination ads")
    shot(page, platform, "destination-with-dead-letter")
    page.click("button:has-text('Replay')")
    expect(page.locator(".notice")).to_contain_text("Dead letter replayed")
    shot(page, platform, "destination-replayed")
    profile_id = platform.admin("GET", "/v1/profiles", params={"userId": user_id}
                                ).json()["profile_id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(
            i.get("profile_id") == profile_id for i in receiver.items()):
        time.sleep(0.3)
    assert any(i.get("profile_id") == profile_id for i in receiver.items())


def test_a_compliance_officer_opens_a_persons_full_history(open_page, platform, demo):
    email = sorted(e for emails in demo.truth.member_emails.values() for e in emails)[0]
    page = open_page(TOKENS[Role.COMPLIANCE])
    page.locator("nav").get_by_role("link", name="Compliance").click()
    page.fill("#subject-lookup input[name=identifier]", f"email:{email}")
    page.click("#subject-lookup button")
    expect(page.locator("h1")).to_have_text("A person's history")
    expect(page.locator("text=Everything that happened")).to_be_visible()
    expect(page.locator("td", has_text="received").first).to_be_visible()
    shot(page, platform, "subject-history")
    with page.expect_download() as download:
        page.click("text=Download the export (JSON)")
    assert download.value.suggested_filename == "export.json"
    page.goto("/console/compliance/processing-records")
    expect(page.locator("h1")).to_have_text("Records of processing")
    shot(page, platform, "processing-records")
    page.goto("/console/compliance/audit")
    expect(page.locator("h1")).to_have_text("Audit verification")
    shot(page, platform, "audit")
    # the person's profile, from the history's identifier, as a compliance officer sees it
    page.goto("/console/profiles")
    page.fill("input[name=q]", email)
    page.click("#profile-search button")
    expect(page.locator("text=Consent per purpose and regulation")).to_be_visible()
    expect(page.locator("text=Identities and links")).to_be_visible()
    shot(page, platform, "profile-compliance")
