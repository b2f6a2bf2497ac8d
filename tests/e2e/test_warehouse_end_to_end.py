"""Tracked events reach the analysts' warehouse: a running platform (embedded, and
RabbitMQ + PostgreSQL) with a warehouse destination that follows events, driven through
the public tracking API, its `events` table read from a real PostgreSQL database."""

from __future__ import annotations

import uuid

import httpx
import pytest
from e2e_support import WRITE_KEY, tessera
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from connectors.fakes.warehouse import ScratchDatabase
from tessera.testing.platform import Platform

ANALYTICS = {"consent": {"categoryPreferences": {"analytics": True}}}


@pytest.fixture(scope="module")
def warehouse():
    with ScratchDatabase() as db:
        yield db


@pytest.fixture(scope="module",
                params=["embedded", pytest.param("real", marks=pytest.mark.e2e)])
def warehouse_platform(request, warehouse):
    platform = Platform(
        mode=request.param, write_keys={"web": WRITE_KEY},
        destinations=[{"name": "analysts", "kind": "warehouse",
                       "config": {"dsn": warehouse.dsn, "schema": warehouse.schema},
                       "events": True, "segments": [], "purposes": ["analytics"]}])
    platform.start()
    yield platform
    platform.stop()
    platform.cleanup()


def send(platform, *events) -> None:
    answer = httpx.post(f"{platform.base_url}/v1/batch", auth=(WRITE_KEY, ""),
                        json={"batch": list(events)})
    assert answer.status_code == 200, answer.text


def bought(user_id: str, order: str) -> dict:
    return {"type": "track", "userId": user_id, "event": "Order Completed",
            "messageId": f"{user_id}-{order}", "properties": {"order_id": order}}


def events_of(warehouse, user_id: str) -> list[tuple]:
    return [row for row in warehouse.events() if row[0].startswith(user_id)]


def eventually(check) -> None:
    for attempt in Retrying(stop=stop_after_delay(30), wait=wait_fixed(0.2), reraise=True,
                            retry=retry_if_exception_type(AssertionError)):
        with attempt:
            check()


def outcomes(platform, profile_id: str) -> list[dict]:
    found = platform.admin("GET", "/v1/destinations/analysts/outcomes").json()["outcomes"]
    return [o for o in found if o["profile_id"] == profile_id]


def test_a_tracked_event_with_consent_lands_in_the_warehouse_once(warehouse_platform,
                                                                  warehouse):
    user_id = f"user-{uuid.uuid4()}"
    send(warehouse_platform, {"type": "identify", "userId": user_id,
                              "messageId": f"{user_id}-hello", "context": ANALYTICS})
    send(warehouse_platform, bought(user_id, "o-1"))
    send(warehouse_platform, bought(user_id, "o-1"))  # the client retried
    warehouse_platform.wait_drained()

    profile = warehouse_platform.admin("GET", "/v1/profiles",
                                       params={"userId": user_id}).json()
    assert [(r[0], r[1], r[2], r[3]) for r in events_of(warehouse, user_id)] == [
        (f"{user_id}-hello", profile["profile_id"], "identify", None),
        (f"{user_id}-o-1", profile["profile_id"], "track", "Order Completed")]
    assert events_of(warehouse, user_id)[1][4] == {"order_id": "o-1"}
    assert {o["outcome"] for o in outcomes(warehouse_platform, profile["profile_id"])} == {
        "delivered"}


def test_a_tracked_event_without_consent_stays_out_and_is_recorded_suppressed(
        warehouse_platform, warehouse):
    user_id = f"user-{uuid.uuid4()}"
    send(warehouse_platform, {"type": "identify", "userId": user_id})
    send(warehouse_platform, bought(user_id, "o-1"))
    warehouse_platform.wait_drained()

    assert events_of(warehouse, user_id) == []
    profile = warehouse_platform.admin("GET", "/v1/profiles",
                                       params={"userId": user_id}).json()
    suppressed = outcomes(warehouse_platform, profile["profile_id"])
    assert [o["outcome"] for o in suppressed] == ["suppressed", "suppressed"]
    assert all("no consent record" in o["reason"] for o in suppressed)


def test_an_erased_persons_events_leave_the_warehouse(warehouse_platform, warehouse):
    user_id = f"user-{uuid.uuid4()}"
    email = f"{user_id}@example.com"
    send(warehouse_platform, {"type": "identify", "userId": user_id, "context": ANALYTICS,
                              "messageId": f"{user_id}-hello", "traits": {"email": email}})
    send(warehouse_platform, bought(user_id, "o-1"))
    eventually(lambda: _assert(len(events_of(warehouse, user_id)) == 2))

    erased = tessera(warehouse_platform, "privacy", "erase", f"email:{email}", "--by", "dpo")
    assert erased.returncode == 0, erased.stderr + erased.stdout
    assert "analysts" in erased.stdout and "confirmed" in erased.stdout
    assert events_of(warehouse, user_id) == []


def _assert(condition: bool) -> None:
    assert condition
