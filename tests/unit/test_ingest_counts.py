"""Accepted events per minute, counted at ingest for the console's overview
(services/gateway/ingest_counts.py), embedded and on PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.gateway.application import GatewayApplication
from services.gateway.ingest_counts import minute_of

NOON = datetime(2026, 11, 30, 12, 0, 30, tzinfo=UTC)


@pytest.fixture
def settings(store_settings):
    return store_settings


def track(message_id: str | None = None, **extra) -> dict:
    return {"type": "track", "userId": "ada", "event": "Viewed",
            "messageId": message_id or str(uuid.uuid4()), **extra}


def test_accepted_events_are_counted_in_the_minute_they_were_received(settings):
    gateway = GatewayApplication(settings)
    gateway.ingest("web", {"batch": [track(), track()]}, received_at=NOON)
    gateway.ingest("web", {"batch": [track()]}, received_at=NOON + timedelta(seconds=20))
    gateway.ingest("web", {"batch": [track()]}, received_at=NOON + timedelta(minutes=1))

    counts = gateway.ingest_counts.per_minute(minute_of(NOON - timedelta(minutes=5)),
                                              minute_of(NOON + timedelta(minutes=5)))

    assert counts == {"2026-11-30T12:00": 3, "2026-11-30T12:01": 1}


def test_duplicates_and_rejected_events_are_not_counted(settings):
    gateway = GatewayApplication(settings)
    gateway.ingest("web", {"batch": [track("m-1")]}, received_at=NOON)
    gateway.ingest("web", {"batch": [track("m-1"), {"type": "track", "userId": "ada"}]},
                   received_at=NOON)  # a retry, and an event without its name

    assert gateway.ingest_counts.per_minute("2026-11-30T12:00", "2026-11-30T12:00") == {
        "2026-11-30T12:00": 1}


def test_two_gateways_count_apart_and_are_added_up(settings):
    first, second = GatewayApplication(settings), GatewayApplication(settings)
    first.ingest("web", {"batch": [track()]}, received_at=NOON)
    second.ingest("web", {"batch": [track(), track()]}, received_at=NOON)

    assert first.ingest_counts.per_minute("2026-11-30T12:00", "2026-11-30T12:00") == {
        "2026-11-30T12:00": 3}


def test_a_store_that_held_events_before_counting_began_says_since_when(settings):
    GatewayApplication(settings).ingest("web", {"batch": [track()]}, received_at=NOON)
    gateway = GatewayApplication(settings)
    assert gateway.ingest_counts.since() is None  # counted from its first event

    rm = gateway.read_model()
    rm.execute(f"DROP TABLE {rm.table('accepted_per_minute_started')}")  # as before the upgrade
    before = minute_of(datetime.now(UTC))
    upgraded = GatewayApplication(settings)

    assert before <= upgraded.ingest_counts.since() <= minute_of(datetime.now(UTC))
