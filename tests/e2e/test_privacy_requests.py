"""A compliance officer's day, through the API and the `tessera` command, on the embedded
platform and on RabbitMQ + PostgreSQL: a household member asks for her data, one asks for
a correction, a late request shows up first, and every look at someone's data is logged."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import segment.analytics as analytics
from e2e_support import WRITE_KEY, profile_of, tessera
from tenacity import retry, stop_after_delay, wait_fixed

GRANTED = {"advertising": True, "marketing": True, "analytics": True}


def household(platform) -> tuple[dict, dict]:
    """Two people of one home, both seen by every service (both reach both destinations)."""
    tag = uuid.uuid4().hex[:8]
    client = analytics.Client(WRITE_KEY, host=platform.base_url, sync_mode=True)
    home = {"lastName": f"Lovelace{tag}", "address": {"street": "12 St James's Square",
                                                      "city": "London"}}
    people = ({"user_id": f"ada-{tag}", "email": f"ada.{tag}@example.com", "first": "Augusta"},
              {"user_id": f"noel-{tag}", "email": f"noel.{tag}@example.org", "first": "Noel"})
    for person in people:
        client.identify(user_id=person["user_id"], traits={
            "email": person["email"], "firstName": person["first"], **home},
            context={"consent": {"categoryPreferences": GRANTED}})
        for order in ("o-1", "o-2"):
            client.track(user_id=person["user_id"], event="Order Completed",
                         properties={"order_id": f"{order}-{person['first']}"})
    platform.wait_drained()
    for person in people:
        person["profile_id"] = profile_of(platform, person["user_id"])["profile_id"]
    return people


def request_id_of(completed) -> str:
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.split()[0]


def test_an_access_request_exports_her_data_from_every_service_and_nothing_of_his(
        platform, tmp_path):
    ada, noel = household(platform)
    filed = tessera(platform, "dsr", "file", "access", "--regulation", "GDPR",
                    "--identifier", f"email:{ada['email']}", "--as", "officer-kim")
    request_id = request_id_of(filed)
    too_soon = tessera(platform, "dsr", "complete", request_id)
    assert too_soon.returncode == 1 and "verified" in too_soon.stderr

    assert tessera(platform, "dsr", "verify", request_id, "--method", "email_confirmation",
                   "--evidence", "confirmation link clicked", "--as", "officer-kim"
                   ).returncode == 0
    out = tmp_path / "export.json"
    done = tessera(platform, "dsr", "complete", request_id, "--out", str(out), "--as",
                   "officer-kim")
    assert done.returncode == 0, done.stderr
    export = json.loads(out.read_text())

    s = export["services"]
    assert export["subject"]["profile_ids"] == [ada["profile_id"]]
    assert len(s["gateway"]["received"]) == 3
    assert s["identity"]["profiles"][0]["identifiers"]["user_id"] == [ada["user_id"]]
    assert s["contacts"]["profiles"][0]["traits"]["firstName"] == "Augusta"
    assert s["segments"]["profiles"][0]["segments"].keys() == {"buyers"}
    assert {d["destination"] for d in s["consent"]["decisions"]} == {"ads", "crm"}
    assert sorted(r["destination"] for r in export["recipients"]) == ["ads", "crm"]
    text = json.dumps(export)
    for his in (noel["user_id"], noel["email"], noel["profile_id"], "Noel"):
        assert his not in text

    shown = platform.admin("GET", f"/v1/dsr/{request_id}").json()
    assert shown["status"] == "completed"
    assert shown["verification"]["by"] == "officer-kim"
    assert shown["outcome"]["recipients"] == sorted(r["destination"]
                                                    for r in export["recipients"])


def test_the_audit_of_a_person_and_the_log_of_who_viewed_her(platform):
    ada, _ = household(platform)
    httpx.get(f"{platform.base_url}/v1/profiles/{ada['profile_id']}", timeout=30,
              headers={"Authorization": f"Bearer {platform.admin_token}",
                       "X-Tessera-Actor": "analyst-lee"}).raise_for_status()
    audit = tessera(platform, "audit", "subject", f"user_id:{ada['user_id']}")
    assert audit.returncode == 0, audit.stderr
    lines = audit.stdout.splitlines()
    assert "recipients of their data: ads, crm" in audit.stdout
    received = next(i for i, line in enumerate(lines) if " received" in line)
    delivered = next(i for i, line in enumerate(lines) if " delivered" in line)
    assert received < delivered

    views = platform.admin("GET", "/v1/audit/views",
                           params={"profile_id": ada["profile_id"]}).json()["views"]
    assert views[0]["what"] == "GET /v1/audit/subject"  # the audit itself is a view
    [lee] = [v for v in views if v["viewer"] == "analyst-lee"]
    assert lee["what"] == f"GET /v1/profiles/{ada['profile_id']}"
    assert lee["token"] and lee["token"] not in platform.admin_token


def test_a_rectification_reaches_the_profile_and_the_destinations_that_have_her(
        platform, receiver):
    ada, _ = household(platform)
    filed = platform.admin("POST", "/v1/dsr", json={
        "kind": "rectification", "regulation": "GDPR",
        "identifiers": [f"user_id:{ada['user_id']}"],
        "details": {"traits": {"firstName": "Ada"}}}).json()
    platform.admin("POST", f"/v1/dsr/{filed['request_id']}/verify",
                   json={"method": "account_login"}).raise_for_status()
    done = platform.admin("POST", f"/v1/dsr/{filed['request_id']}/complete")
    assert done.status_code == 200, done.text
    assert done.json()["result"]["deliveries_planned"] == 2
    platform.wait_drained()

    assert profile_of(platform, ada["user_id"])["traits"]["firstName"] == "Ada"

    @retry(stop=stop_after_delay(30), wait=wait_fixed(0.2), reraise=True)
    def corrected_at_both():
        sent = {i["destination"] for i in receiver.items()
                if i["profile_id"] == ada["profile_id"] and i["traits"].get("firstName") == "Ada"}
        assert sent == {"ads", "crm"}
    corrected_at_both()


def test_overdue_requests_come_first_and_steps_are_refused_with_the_rule(platform):
    late = (datetime.now(UTC) - timedelta(days=60)).isoformat()
    filed = tessera(platform, "dsr", "file", "erasure", "--regulation", "CCPA",
                    "--identifier", f"email:late-{uuid.uuid4().hex[:6]}@example.com",
                    "--received-at", late)
    request_id = request_id_of(filed)
    overdue = tessera(platform, "dsr", "overdue")
    assert overdue.stdout.splitlines()[0].startswith(request_id)
    assert "OVERDUE" in overdue.stdout.splitlines()[0]
    refused = platform.admin("POST", f"/v1/dsr/{request_id}/extend",
                             json={"notice": "we need more time"})
    assert refused.status_code == 400 and "before the first deadline" in refused.json()[
        "message"]
    bad = platform.admin("POST", "/v1/dsr", json={"kind": "forget-me", "regulation": "GDPR",
                                                  "identifiers": ["email:x@example.com"]})
    assert bad.status_code == 400 and bad.json()["field"] == "kind"


def test_the_records_of_processing_list_each_purpose_with_its_recipients(platform):
    report = tessera(platform, "audit", "processing")
    assert report.returncode == 0, report.stderr
    assert "## Purpose: advertising" in report.stdout
    assert "| ads |" in report.stdout and "| crm |" in report.stdout
    as_json = platform.admin("GET", "/v1/processing-records").json()
    assert [a["purpose"] for a in as_json["activities"]] == ["advertising", "analytics",
                                                             "marketing"]
