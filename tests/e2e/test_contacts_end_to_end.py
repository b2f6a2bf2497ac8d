"""Contacts as a CRM-grade store through the public API and the `tessera` command, on the
embedded platform and on RabbitMQ + PostgreSQL: a CRM source and the app disagree, deals
arrive as events, people search, note and move stages."""

from __future__ import annotations

import json
import uuid

import pytest
import segment.analytics as analytics
from e2e_support import WRITE_KEY, profile_of, tessera
from tenacity import retry, stop_after_delay, wait_fixed

from tessera.testing.platform import Platform

CRM_KEY = "wk_e2e_hubspot"
CONFIG = {"survivorship": {"title": ["hubspot"]},
          "stage_rules": [{"event": "Demo Requested", "to": "salesqualifiedlead"},
                          {"event": "Deal Updated", "where": {"won": True}, "to": "customer"}]}


@pytest.fixture(scope="module", params=["embedded", pytest.param("real", marks=pytest.mark.e2e)])
def platform(request):
    platform = Platform(mode=request.param, write_keys={"web": WRITE_KEY, "hubspot": CRM_KEY},
                        extra_env={"TESSERA_CONTACTS_CONFIG": json.dumps(CONFIG)})
    platform.start()
    yield platform
    platform.stop()
    platform.cleanup()


def test_a_crm_and_the_app_meet_in_one_searchable_contact(platform):
    tag = uuid.uuid4().hex[:8]
    app = analytics.Client(WRITE_KEY, host=platform.base_url, sync_mode=True)
    crm = analytics.Client(CRM_KEY, host=platform.base_url, sync_mode=True)
    user_id, account = f"ada-{tag}", f"acme-{tag}"
    crm.identify(user_id=user_id, traits={"email": f"ada.{tag}@example.com", "firstName": "Ada",
                                          "lastName": f"Lovelace{tag}", "title": "CTO",
                                          "owner": f"maria-{tag}"})
    app.identify(user_id=user_id, traits={"title": "Engineer", "plan": "pro"})
    crm.group(user_id=user_id, group_id=account, traits={"name": f"ACME {tag}"},
              context={"role": "Decision Maker"})
    app.track(user_id=user_id, event="Demo Requested")
    crm.track(user_id=user_id, event="Deal Updated", properties={
        "deal_id": f"d-{tag}", "amount": 12000, "stage": "contractsent", "closed": False,
        "won": False})
    platform.wait_drained()

    profile = profile_of(platform, user_id)
    assert profile["traits"]["title"] == "CTO"  # the CRM wins the title, though the app came later
    assert [e["source"] for e in profile["trait_sources"]["title"]] == ["hubspot", "web"]
    assert profile["lifecycle_stage"] == "salesqualifiedlead"
    assert profile["sales"]["open_deal_value"] == 12000

    found = platform.admin("GET", "/v1/contacts", params={"name": f"lovelace{tag}"}).json()
    assert [c["profile_id"] for c in found["contacts"]] == [profile["profile_id"]]
    by_owner = platform.admin("GET", "/v1/contacts", params={"owner": f"maria-{tag}"}).json()
    assert [c["name"] for c in by_owner["contacts"]] == [f"Ada Lovelace{tag}"]
    members = platform.admin("GET", f"/v1/accounts/{account}").json()["contacts"]
    assert members == [{"profile_id": profile["profile_id"], "role": "Decision Maker"}]
    deals = platform.admin("GET", f"/v1/accounts/{account}/events").json()["events"]
    assert [e["event"] for e in deals] == ["Deal Updated"]

    # Segments read the traits contacts derives.
    big_deals = f"big_deals_{tag}"
    platform.admin("POST", "/v1/segments", json={"name": big_deals, "rule": {
        "and": [{"trait": "open_deal_value", "op": "gte", "value": 10000},
                {"trait": "owner", "op": "eq", "value": f"maria-{tag}"}]}}).raise_for_status()
    wait_for_members(platform, big_deals, {profile["profile_id"]})


def test_people_search_note_and_move_stages_from_the_command_line(platform):
    tag = uuid.uuid4().hex[:8]
    crm = analytics.Client(CRM_KEY, host=platform.base_url, sync_mode=True)
    user_id = f"bob-{tag}"
    crm.identify(user_id=user_id, traits={"email": f"bob.{tag}@example.org",
                                          "name": f"Bob Stone{tag}"})
    crm.track(user_id=user_id, event="Deal Updated", properties={
        "deal_id": f"d-{tag}", "amount": 50, "closed": True, "won": True})
    platform.wait_drained()
    profile_id = profile_of(platform, user_id)["profile_id"]

    searched = tessera(platform, "contacts", "search", "--email", f"bob.{tag}")
    assert searched.returncode == 0, searched.stderr
    assert profile_id in searched.stdout and "customer" in searched.stdout

    noted = tessera(platform, "contacts", "note", profile_id, "Asked for a refund",
                    "--author", "omar")
    assert noted.returncode == 0, noted.stderr
    events = platform.admin("GET", f"/v1/profiles/{profile_id}/events").json()["events"]
    assert (events[0]["type"], events[0]["author"]) == ("note", "omar")

    moved = tessera(platform, "contacts", "stage", profile_id, "lead", "--author", "omar")
    assert moved.returncode == 0, moved.stderr
    assert "stage customer -> lead (person: omar)" in moved.stdout

    refused = platform.admin("PUT", f"/v1/contacts/{profile_id}/stage", json={"stage": "vip"})
    assert refused.status_code == 400
    assert refused.json()["field"] == "stage"
    assert "'vip' is not one of" in refused.json()["message"]
    missing = platform.admin("PATCH", f"/v1/contacts/{uuid.uuid4()}",
                             json={"traits": {"plan": "x"}})
    assert missing.status_code == 404


def test_a_contact_created_through_the_api_is_resolved_like_any_other(platform):
    tag = uuid.uuid4().hex[:8]
    email = f"cyd.{tag}@example.net"
    created = platform.admin("POST", "/v1/contacts", json={
        "traits": {"email": email, "name": f"Cyd Charisse{tag}", "owner": "omar"}})
    assert created.status_code == 202, created.text
    platform.wait_drained()
    found = platform.admin("GET", "/v1/contacts", params={"identifier": email}).json()
    assert [c["name"] for c in found["contacts"]] == [f"Cyd Charisse{tag}"]
    profile = platform.admin("GET", f"/v1/profiles/{found['contacts'][0]['profile_id']}").json()
    assert profile["trait_sources"]["owner"][0]["source"] == "api"

    refused = platform.admin("POST", "/v1/contacts", json={"traits": {}})
    assert (refused.status_code, refused.json()["field"]) == (400, "traits")


@retry(stop=stop_after_delay(30), wait=wait_fixed(0.3), reraise=True)
def wait_for_members(platform, segment: str, expected: set[str]) -> None:
    members = platform.admin("GET", f"/v1/segments/{segment}/members").json()["members"]
    assert {m["profile_id"] for m in members} == expected
