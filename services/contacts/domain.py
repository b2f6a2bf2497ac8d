"""The profile as contacts keeps it: traits, groups, and a bounded recent timeline.

The full timeline lives in the profile's own event stream (`EventsRecorded`), so loading
a profile never replays more than its snapshot and the events since.
"""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.domain import Aggregate, event

RECENT_EVENTS = 20
TIMELINE_TYPES = frozenset({"track", "page", "screen"})


def summarise(event_: dict[str, Any]) -> dict[str, Any]:
    """What a timeline entry keeps of an event."""
    kind = event_.get("type")
    name = event_.get("event") if kind == "track" else event_.get("name")
    return {
        "type": kind,
        "event": name,
        "timestamp": event_.get("timestamp"),
        "messageId": event_.get("messageId"),
        "properties": event_.get("properties") or {},
    }


class Profile(Aggregate):
    @event("Created")
    def __init__(self, profile_id: str):
        self.profile_id = profile_id
        self.traits: dict[str, Any] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        self.events_total = 0
        self.last_seen: str | None = None
        self.recent: list[dict[str, Any]] = []
        self.merged_into: str | None = None
        self.absorbed: list[str] = []

    @staticmethod
    def create_id(profile_id: str) -> uuid.UUID:
        return uuid.UUID(profile_id)

    def changed_traits(self, traits: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in traits.items() if self.traits.get(k, _MISSING) != v}

    @event("TraitsUpdated")
    def update_traits(self, traits: dict[str, Any]) -> None:
        self.traits.update(traits)

    @event("EventsRecorded")
    def record_events(self, entries: list[dict[str, Any]]) -> None:
        self.events_total += len(entries)
        self.recent = (self.recent + entries)[-RECENT_EVENTS:]
        stamps = [e["timestamp"] for e in entries if e.get("timestamp")]
        if stamps:
            self.last_seen = max([*stamps, self.last_seen or ""])

    @event("GroupJoined")
    def join_group(self, group_id: str, traits: dict[str, Any]) -> None:
        self.groups.setdefault(group_id, {}).update(traits)

    @event("Absorbed")
    def absorb(self, profile_id: str, traits: dict[str, Any], events_total: int) -> None:
        # The survivor's own values win; the absorbed profile only fills gaps.
        for key, value in traits.items():
            self.traits.setdefault(key, value)
        self.events_total += events_total
        self.absorbed.append(profile_id)

    @event("MergedInto")
    def merge_into(self, survivor_id: str) -> None:
        self.merged_into = survivor_id

    @event("PartReleased")
    def release(self, profile_id: str) -> None:
        """Identity split a part off: a profile merged in earlier is no longer ours.
        Traits it filled in stay (we cannot tell them apart afterwards); its timeline goes."""
        if profile_id in self.absorbed:
            self.absorbed.remove(profile_id)

    @event("Restored")
    def restore(self, split_from: str) -> None:
        self.merged_into = None

    def view(self) -> dict[str, Any]:
        return {
            "profile_id": self.profile_id,
            "traits": self.traits,
            "groups": self.groups,
            "events_total": self.events_total,
            "last_seen": self.last_seen,
            "recent_events": self.recent,
            "merged_into": self.merged_into,
            "absorbed": self.absorbed,
        }


_MISSING = object()


class ChangeBatch(Aggregate):
    """What one consumed batch changed: the outbox of `contacts.profile_changed`."""

    @event("ProfilesChanged")
    def __init__(self, items: list[dict[str, Any]]):
        self.size = len(items)
