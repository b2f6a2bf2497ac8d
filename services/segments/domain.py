"""Segment and computed-trait definitions, and the record of membership changes."""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.domain import Aggregate, event

CATALOG_ID = uuid.UUID("0d7f6f1a-5b0e-4c7e-8f59-3a7e7c1d2b01")


class SegmentCatalog(Aggregate):
    """Every segment and computed trait, versioned: a new version is backfilled."""

    @staticmethod
    def create_id() -> uuid.UUID:
        return CATALOG_ID

    @event("Started")
    def __init__(self):
        self.segments: dict[str, dict[str, Any]] = {}
        self.computed: dict[str, dict[str, Any]] = {}

    @event("SegmentDefined")
    def define(self, name: str, rule: dict[str, Any], description: str, at: str) -> None:
        self.segments[name] = self._versioned(self.segments.get(name), name, at,
                                              rule=rule, description=description)

    @event("SegmentRemoved")
    def remove(self, name: str) -> None:
        self.segments.pop(name, None)

    @event("ComputedTraitDefined")
    def define_computed(self, name: str, definition: dict[str, Any], at: str) -> None:
        fields = {k: v for k, v in definition.items() if k != "name"}
        self.computed[name] = self._versioned(self.computed.get(name), name, at, **fields)

    @event("ComputedTraitRemoved")
    def remove_computed(self, name: str) -> None:
        self.computed.pop(name, None)

    @staticmethod
    def _versioned(previous: dict | None, name: str, at: str, **fields: Any) -> dict[str, Any]:
        return {
            **fields, "name": name,
            "version": (previous["version"] + 1) if previous else 1,
            "created_at": previous["created_at"] if previous else at, "updated_at": at,
        }


class MembershipBatch(Aggregate):
    """What one batch changed in memberships: the record, and the outbox of
    `segments.membership_changed`."""

    @event("MembershipsChanged")
    def __init__(self, items: list[dict[str, Any]]):
        self.size = len(items)
