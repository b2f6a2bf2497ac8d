"""Segment definitions and each profile's behaviour and memberships, as segments sees them."""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.domain import Aggregate, event

# Behaviour older than this can satisfy no window we allow: prune it to bound the state.
MAX_WINDOW_SECONDS = 3650 * 86_400.0
MAX_OCCURRENCES_PER_EVENT = 1000
CATALOG_ID = uuid.UUID("0d7f6f1a-5b0e-4c7e-8f59-3a7e7c1d2b01")


class SegmentCatalog(Aggregate):
    @staticmethod
    def create_id() -> uuid.UUID:
        return CATALOG_ID

    @event("Started")
    def __init__(self):
        self.segments: dict[str, dict[str, Any]] = {}

    @event("SegmentDefined")
    def define(self, name: str, rule: dict[str, Any], description: str, at: str) -> None:
        previous = self.segments.get(name)
        self.segments[name] = {
            "name": name, "rule": rule, "description": description,
            "version": (previous["version"] + 1) if previous else 1,
            "created_at": previous["created_at"] if previous else at, "updated_at": at,
        }

    @event("SegmentRemoved")
    def remove(self, name: str) -> None:
        self.segments.pop(name, None)


class ProfileActivity(Aggregate):
    @staticmethod
    def create_id(profile_id: str) -> uuid.UUID:
        return uuid.UUID(profile_id)

    @event("Started")
    def __init__(self, profile_id: str):
        self.profile_id = profile_id
        self.traits: dict[str, Any] = {}
        self.events: dict[str, list[list[Any]]] = {}  # name -> [[epoch, properties], ...]
        self.memberships: dict[str, str] = {}  # segment -> entered at
        self.merged_into: str | None = None

    @event("Observed")
    def observe(self, traits: dict[str, Any], occurrences: list[list[Any]], now: float) -> None:
        self.traits.update(traits)
        for name, at, properties in occurrences:
            seen = self.events.setdefault(name, [])
            seen.append([at, properties])
            if len(seen) > 1 and seen[-2][0] > at:  # late arrival: keep time order
                seen.sort(key=lambda pair: pair[0])
            self._prune(seen, now)

    @staticmethod
    def _prune(seen: list[list[Any]], now: float) -> None:
        """Drop what no window can reach and what exceeds the cap (the list is time-ordered)."""
        horizon = now - MAX_WINDOW_SECONDS
        stale = 0
        while stale < len(seen) and seen[stale][0] < horizon:
            stale += 1
        excess = max(stale, len(seen) - MAX_OCCURRENCES_PER_EVENT)
        if excess:
            del seen[:excess]

    @event("Entered")
    def enter(self, segment: str, at: str, reason: str) -> None:
        self.memberships[segment] = at

    @event("Exited")
    def exit(self, segment: str, at: str, reason: str) -> None:
        self.memberships.pop(segment, None)

    @event("Absorbed")
    def absorb(self, profile_id: str, events: dict[str, list[list[Any]]], now: float) -> None:
        for name, seen in events.items():
            mine = self.events.setdefault(name, [])
            mine.extend(seen)
            mine.sort(key=lambda pair: pair[0])
            self._prune(mine, now)

    @event("MergedInto")
    def merge_into(self, survivor_id: str) -> None:
        self.merged_into = survivor_id


class MembershipBatch(Aggregate):
    """What one batch changed in memberships: the outbox of `segments.membership_changed`."""

    @event("MembershipsChanged")
    def __init__(self, items: list[dict[str, Any]]):
        self.size = len(items)
