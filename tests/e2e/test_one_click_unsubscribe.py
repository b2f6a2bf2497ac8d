"""Email from a segment entry to the person's one-click unsubscribe: the platform sends a
templated message through a real SMTP server (its own process), and the message's
List-Unsubscribe link records an objection in consent (RFC 8058)."""

from __future__ import annotations

import uuid

import httpx
import pytest
import segment.analytics as analytics
from e2e_support import WRITE_KEY

from connectors.email import unsubscribe_token
from connectors.fakes.smtp import FakeSmtpServer
from tessera.testing.platform import Platform

SECRET = "unsubscribe-secret-e2e"


@pytest.fixture(scope="module")
def smtp():
    with FakeSmtpServer() as server:
        yield server


@pytest.fixture(scope="module", params=["embedded", pytest.param("real", marks=pytest.mark.e2e)])
def platform(request, smtp):
    platform = Platform(
        mode=request.param, write_keys={"web": WRITE_KEY},
        destinations=[{"name": "newsletter", "kind": "email", "config": {
            "host": "127.0.0.1", "port": smtp.port, "starttls": False,
            "username": smtp.username, "from_address": "news@shop.example.com",
            "subject": "Hi $first_name", "text": "Hello $first_name\n$unsubscribe_url",
            "unsubscribe_url": "https://cdp.example.com/u/{token}"},
            "secrets_env": {"unsubscribe_secret": "TESSERA_E2E_UNSUBSCRIBE",
                            "password": "TESSERA_E2E_SMTP_PASSWORD"},
            "segments": ["readers"], "purposes": ["marketing"]}],
        destination_secrets={"TESSERA_E2E_UNSUBSCRIBE": SECRET,
                             "TESSERA_E2E_SMTP_PASSWORD": smtp.password})
    platform.start()
    platform.define_segment("readers", {"trait": "newsletter", "op": "eq", "value": True})
    yield platform
    platform.stop()
    platform.cleanup()


def unsubscribe(platform, token: str, body: bytes = b"List-Unsubscribe=One-Click"):
    return httpx.post(f"{platform.base_url}/u/{token}", content=body, timeout=30,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})


def test_a_segment_entry_sends_mail_whose_one_click_link_records_an_objection(
        platform, smtp):
    user_id = f"user-{uuid.uuid4()}"
    email = f"{user_id}@example.com"
    client = analytics.Client(WRITE_KEY, host=platform.base_url, sync_mode=True)
    client.identify(user_id=user_id, traits={"email": email, "first_name": "Ada",
                                             "newsletter": True},
                    context={"consent": {"categoryPreferences": {"marketing": True}}})
    platform.wait_drained()
    profile_id = platform.admin("GET", "/v1/profiles", params={"userId": user_id}).json()[
        "profile_id"]

    (message,) = [m for m in smtp.messages() if m["rcpt"] == [email]]
    assert message["headers"]["Subject"] == "Hi Ada"
    assert message["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = message["headers"]["List-Unsubscribe"].strip("<>")
    assert link in message["text"]
    token = link.rsplit("/", 1)[1]
    assert token == unsubscribe_token(SECRET, profile_id, "newsletter")

    answer = unsubscribe(platform, token)
    assert answer.status_code == 200, answer.text

    (record,) = platform.admin("GET", f"/v1/profiles/{profile_id}/consent").json()["records"]
    objection = record["regulations"]["GDPR"]["marketing"]["unsubscribe:newsletter"]
    assert objection["granted"] is False
    assert objection["method"] == "List-Unsubscribe one-click"


def test_a_forged_or_malformed_unsubscribe_is_refused(platform):
    forged = unsubscribe_token("another-secret", str(uuid.uuid4()), "newsletter")
    assert unsubscribe(platform, forged).status_code == 404
    genuine = unsubscribe_token(SECRET, str(uuid.uuid4()), "newsletter")
    answer = unsubscribe(platform, genuine, body=b"")
    assert answer.status_code == 400
    assert answer.json()["message"].startswith("body: must be List-Unsubscribe=One-Click")
