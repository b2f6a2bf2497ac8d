"""Helpers for the segments tests: an injected clock and a feed of contacts' changes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from services.segments.application import SegmentsApplication
from services.segments.domain import MembershipBatch
from services.segments.rules import DAY
from services.segments.schemas import SegmentSchema
from shared.config import Settings
from shared.partitions import partition_of

KEY = "contacts/contacts.profile_changed/0"
START = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
ADA = str(uuid.uuid4())
BOB = str(uuid.uuid4())


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, days: float) -> None:
        self.now += days * DAY


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def clock():
    return Clock(START)


@pytest.fixture
def app(tmp_path, clock):
    made = SegmentsApplication(Settings(data_dir=tmp_path), clock=clock)
    yield made
    made.close()


def define(app: SegmentsApplication, name: str, rule: dict) -> dict:
    loaded = SegmentSchema().load({"name": name, "rule": rule})
    return app.define_segment(loaded["name"], loaded["rule"])


class Feed:
    """Contacts' `profile_changed` items, with increasing positions."""

    def __init__(self, app: SegmentsApplication, clock: Clock):
        self.app, self.clock, self.position = app, clock, 0

    def item(self, profile_id: str, traits: dict | None = None, event: str | None = None,
             merged_from: tuple[str, ...] = (), split_from: str | None = None,
             **properties) -> dict:
        self.position += 1
        summary = None
        if event is not None:
            summary = {"type": "track", "event": event, "timestamp": iso(self.clock.now),
                       "messageId": f"m-{self.position}", "properties": properties}
        return {"position": self.position, "profile_id": profile_id, "traits": traits or {},
                "event": summary, "merged_from": list(merged_from), "split_from": split_from,
                "cause": {"partition": "0", "position": self.position * 10},
                "received_at": None}

    def send(self, *items: dict) -> int:
        return self.app.apply_batch(KEY, list(items))

    def order(self, profile_id: str, traits: dict | None = None, **properties) -> int:
        return self.send(self.item(profile_id, traits, "Order Completed", **properties))


@pytest.fixture
def feed(app, clock):
    return Feed(app, clock)


def membership_changes(app: SegmentsApplication) -> list[dict]:
    found = []
    for notification in app.process_recorder.select_notifications(start=1, limit=10_000):
        domain_event = app.mapper.to_domain_event(notification)
        if isinstance(domain_event, MembershipBatch.MembershipsChanged):
            found.extend(domain_event.items)
    return found


def partition(profile_id: str) -> str:
    return partition_of(profile_id, Settings().partitions)


