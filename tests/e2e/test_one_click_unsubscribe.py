"""An email's one-click List-Unsubscribe link records an objection in consent (RFC 8058):
the next decision for that destination denies, with the objection on the record."""

from __future__ import annotations

import uuid

import httpx
import pytest
import segment.analytics as analytics
from e2e_support import WRITE_KEY

from connectors.email import unsubscribe_token
from tessera.testing.platform import Platform

SECRET = "unsubscribe-secret-e2e"


@pytest.fixture(scope="module", params=["embedded", pytest.param("real", marks=pytest.mark.e2e)])
def platform(request):
    platform = Platform(
        mode=request.param, write_keys={"web": WRITE_KEY},
        destinations=[{"name": "newsletter", "kind": "email", "config": {
            "host": "127.0.0.1", "port": 9, "starttls": False,
            "from_address": "news@shop.example.com", "subject": "Hi $first_name",
            "text": "Hello\n$unsubscribe_url", "unsubscribe_url": "https://cdp.example.com/u/{token}"},
            "secrets_env": {"unsubscribe_secret": "TESSERA_E2E_UNSUBSCRIBE"},
            "segments": ["readers"], "purposes": ["marketing"]}],
        destination_secrets={"TESSERA_E2E_UNSUBSCRIBE": SECRET})
    platform.start()
    yield platform
    platform.stop()
    platform.cleanup()


def unsubscribe(platform, token: str, body: bytes = b"List-Unsubscribe=One-Click"):
    return httpx.post(f"{platform.base_url}/u/{token}", content=body, timeout=30,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})


def test_one_click_records_an_objection_to_the_senders_purposes(platform):
    user_id = f"user-{uuid.uuid4()}"
    client = analytics.Client(WRITE_KEY, host=platform.base_url, sync_mode=True)
    client.identify(user_id=user_id, traits={"email": f"{user_id}@example.com"},
                    context={"consent": {"categoryPreferences": {"marketing": True}}})
    platform.wait_drained()
    profile_id = platform.admin("GET", "/v1/profiles", params={"userId": user_id}).json()[
        "profile_id"]

    answer = unsubscribe(platform, unsubscribe_token(SECRET, profile_id, "newsletter"))
    assert answer.status_code == 200, answer.text

    (record,) = platform.admin("GET", f"/v1/profiles/{profile_id}/consent").json()["records"]
    objection = record["purposes"]["marketing"]["unsubscribe:newsletter"]
    assert objection["granted"] is False
    assert objection["method"] == "List-Unsubscribe one-click"


def test_a_forged_or_malformed_unsubscribe_is_refused(platform):
    forged = unsubscribe_token("another-secret", str(uuid.uuid4()), "newsletter")
    assert unsubscribe(platform, forged).status_code == 404
    genuine = unsubscribe_token(SECRET, str(uuid.uuid4()), "newsletter")
    answer = unsubscribe(platform, genuine, body=b"")
    assert answer.status_code == 400
    assert answer.json()["message"].startswith("body: must be List-Unsubscribe=One-Click")
