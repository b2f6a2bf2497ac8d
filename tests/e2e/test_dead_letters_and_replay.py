"""A destination that is down loses nothing: its deliveries wait in the dead-letter store,
and `tessera dlq replay` sends each once, deciding consent again at that moment."""

from __future__ import annotations

import secrets
import uuid

import httpx
import pytest
import segment.analytics as analytics
from e2e_support import WRITE_KEY

from tessera.cli import main
from tessera.testing.platform import Platform
from tessera.testing.webhook_receiver import WebhookReceiver

GRANTED = {"advertising": True}
BUYERS = {"event": "Order Completed", "count": {"op": "at_least", "value": 2},
          "within_days": 30}


@pytest.fixture(scope="module")
def receiver():
    with WebhookReceiver(secrets.token_hex(8)) as running:
        yield running


@pytest.fixture(scope="module", params=["embedded", pytest.param("real", marks=pytest.mark.e2e)])
def platform(request, receiver):
    platform = Platform(
        mode=request.param, write_keys={"web": WRITE_KEY},
        destinations=[{"name": "ads", "kind": "webhook",
                       "config": {"url": receiver.url_for("{destination}")},
                       "secret_env": "TESSERA_E2E_SECRET", "segments": ["buyers"],
                       "purposes": ["advertising"]}],
        destination_secrets={"TESSERA_E2E_SECRET": receiver.secret.decode()},
        extra_env={"TESSERA_DELIVERY_ATTEMPTS": "2"})
    platform.start()
    platform.define_segment("buyers", BUYERS)
    yield platform
    platform.stop()
    platform.cleanup()


@pytest.fixture
def dlq(platform, monkeypatch, capsys):
    monkeypatch.setenv("TESSERA_API_URL", platform.base_url)
    monkeypatch.setenv("TESSERA_ADMIN_TOKEN", platform.admin_token)

    def run(*args: str) -> str:
        capsys.readouterr()
        assert main(["dlq", *args]) == 0
        return capsys.readouterr().out

    return run


def profile_of(platform, user_id: str) -> str:
    return platform.admin("GET", "/v1/profiles", params={"userId": user_id}).json()["profile_id"]


def test_a_destination_down_loses_nothing_and_replay_decides_consent_again(
        platform, receiver, dlq):
    client = analytics.Client(WRITE_KEY, host=platform.base_url, sync_mode=True)
    stays, withdraws = (f"user-{uuid.uuid4()}" for _ in range(2))
    receiver.fail_next(10_000, status=503)  # the destination is down
    for user_id in (stays, withdraws):
        client.identify(user_id=user_id, traits={"email": f"{user_id}@example.com"},
                        context={"consent": {"categoryPreferences": GRANTED}})
        for order in ("o-1", "o-2"):
            client.track(user_id=user_id, event="Order Completed",
                         properties={"order_id": order})
    platform.wait_drained()

    listed = dlq("list", "ads")
    assert listed.count("ads\t") >= 1 and "503" in listed
    letters = platform.admin("GET", "/v1/destinations/ads/dead-letters").json()["dead_letters"]
    waiting = {i["profile_id"] for letter in letters for i in letter["items"]}
    assert {profile_of(platform, stays), profile_of(platform, withdraws)} <= waiting
    shown = dlq("show", "ads", letters[0]["id"])
    assert letters[0]["id"] in shown and "idempotency_key" in shown

    answer = httpx.post(f"{platform.base_url}/v1/consent", auth=(WRITE_KEY, ""), json={
        "userId": withdraws, "purposes": {"advertising": False}})
    assert answer.status_code == 200, answer.text
    platform.wait_drained()
    receiver.fail_next(0)  # back up
    dlq("replay", "ads", "--all")
    dlq("replay", "ads", "--all")  # nothing left: a second replay sends nothing again

    arrived = [i["profile_id"] for i in receiver.items()]
    assert arrived.count(profile_of(platform, stays)) == 1
    assert profile_of(platform, withdraws) not in arrived
    assert receiver.duplicates == 0
    assert dlq("list", "ads") == ""
    outcomes = platform.admin("GET", "/v1/destinations/ads/outcomes").json()["outcomes"]
    assert any(o["profile_id"] == profile_of(platform, withdraws) and
               o["outcome"] == "suppressed" for o in outcomes)
