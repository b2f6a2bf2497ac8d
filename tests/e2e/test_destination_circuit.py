"""A destination that asks for a long pause gets it: its circuit opens, later batches wait
in its queue (no dead letters, no requests, no worker held) and go through by themselves
once it answers again — on the embedded platform and on RabbitMQ + PostgreSQL."""

from __future__ import annotations

import secrets
import time
import uuid

import pytest
import segment.analytics as analytics
from e2e_support import WRITE_KEY

from tessera.testing.platform import Platform
from tessera.testing.webhook_receiver import WebhookReceiver

GRANTED = {"advertising": True}
BUYERS = {"event": "Order Completed", "count": {"op": "at_least", "value": 2},
          "within_days": 30}
PAUSE = 12  # seconds the destination asks for: beyond what a worker waits inline (10 s)


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
        destination_secrets={"TESSERA_E2E_SECRET": receiver.secret.decode()})
    platform.start()
    platform.define_segment("buyers", BUYERS)
    yield platform
    platform.stop()
    platform.cleanup()


def buyer(client) -> str:
    user_id = f"user-{uuid.uuid4()}"
    client.identify(user_id=user_id, traits={"email": f"{user_id}@example.com"},
                    context={"consent": {"categoryPreferences": GRANTED}})
    for order in ("o-1", "o-2"):
        client.track(user_id=user_id, event="Order Completed", properties={"order_id": order})
    return user_id


def test_a_paused_destination_receives_the_waiting_batches_once_it_is_back(platform, receiver):
    client = analytics.Client(WRITE_KEY, host=platform.base_url, sync_mode=True)
    receiver.clear()
    receiver.fail_next(1, status=429, retry_after=PAUSE)  # "come back in 12 s"
    first = buyer(client)
    deadline = time.monotonic() + 60
    while receiver.requests == 0:  # the first batch was answered 429: the circuit is open
        assert time.monotonic() < deadline, "the first batch never reached the destination"
        time.sleep(0.1)
    opened = time.time()

    second = buyer(client)  # arrives while the destination is paused
    platform.wait_drained(timeout=120)

    arrived = {i["profile_id"]: i for i in receiver.items()}
    letters = platform.admin("GET", "/v1/destinations/ads/dead-letters").json()["dead_letters"]
    for user_id in (first, second):
        profile = platform.admin("GET", "/v1/profiles",
                                 params={"userId": user_id}).json()["profile_id"]
        # Delivered by itself once the pause the destination asked for was over: not
        # sent into it, not dead-lettered, not waiting for a replay.
        assert arrived[profile]["arrived_at"] - opened >= PAUSE - 1.5
    assert letters == []
    # The one answered 429, then at most one request per buyer (they may have been merged
    # while they waited): nothing was sent during the pause.
    assert receiver.requests <= 3
    assert receiver.duplicates == 0
