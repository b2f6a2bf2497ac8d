"""Deliveries: planned from membership changes, decided on consent just before sending."""

from __future__ import annotations

import uuid
from typing import Any

from eventsourcing.domain import Aggregate, event

from shared.contracts import lane_partition

RECENT_OUTCOMES = 200
_NAMESPACE = uuid.UUID("8a3e1c2b-7d4f-4a6b-9e0d-1c2b3a4d5e6f")

def summary(item: dict[str, Any]) -> dict[str, Any]:
    """What the ledger keeps of a delivered or suppressed item: who, what, and the consent
    decision it relied on (the traits sent are in the plan that preceded it)."""
    return {"idempotency_key": item["idempotency_key"], "profile_id": item["profile_id"],
            "segment": item.get("segment"), "action": item.get("action"),
            "decision_id": item.get("decision_id"), "reason": item.get("reason")}


def idempotency_key(destination: str, change: dict[str, Any]) -> str:
    """Stable across retries and replays: one membership change, one destination."""
    return f"{destination}:{change['profile_id']}:{change['segment']}:{change['change']}:" \
           f"{change['position']}"


class DeliveryPlan(Aggregate):
    """The deliveries planned from one batch: the outbox of `activation.delivery_planned`."""

    @event("Planned")
    def __init__(self, items: list[dict[str, Any]]):
        self.size = len(items)


class DestinationLedger(Aggregate):
    """Every outcome for one lane of a destination: delivered, suppressed, dead-lettered,
    replayed. Lane 0's ledger is the one a destination had before it had lanes."""

    @staticmethod
    def create_id(destination: str, lane: int = 0) -> uuid.UUID:
        return uuid.uuid5(_NAMESPACE, lane_partition(destination, lane))

    @event("Opened")
    def __init__(self, destination: str, lane: int = 0):
        self.destination = destination
        self.lane = lane
        self.delivered = 0
        self.suppressed = 0
        self.duplicates = 0
        self.dead_letters: dict[str, dict[str, Any]] = {}
        self.recent: list[dict[str, Any]] = []  # the latest outcomes, newest last

    def _remember(self, outcome: str, items: list[dict[str, Any]]) -> None:
        self.recent.extend(dict(summary(i), outcome=outcome) for i in items)
        del self.recent[:-RECENT_OUTCOMES]

    @event("Delivered")
    def delivered_batch(self, items: list[dict[str, Any]], status: int,
                        duplicate_keys: list[str]) -> None:
        self.delivered += len(items)
        self.duplicates += len(duplicate_keys)
        self._remember("delivered", items)

    @event("Suppressed")
    def suppressed_batch(self, items: list[dict[str, Any]]) -> None:
        self.suppressed += len(items)
        self._remember("suppressed", items)

    @event("Skipped")
    def skipped_batch(self, items: list[dict[str, Any]]) -> None:
        """Allowed, but the connector had nothing to send (e.g. no identifier its vendor
        matches on): on the record, not counted as delivered."""
        self._remember("skipped", items)

    @event("DeadLettered")
    def dead_letter(self, letter_id: str, items: list[dict[str, Any]], error: str,
                    at: str) -> None:
        self.dead_letters[letter_id] = {"id": letter_id, "items": items, "error": error,
                                        "at": at}
        self._remember("dead_lettered", items)

    @event("Replayed")
    def replayed(self, letter_id: str) -> None:
        self.dead_letters.pop(letter_id, None)

    def stats(self) -> dict[str, Any]:
        return {"destination": self.destination, "delivered": self.delivered,
                "suppressed": self.suppressed, "duplicates": self.duplicates,
                "dead_letters": len(self.dead_letters)}


def merged_stats(destination: str, lanes: list[dict[str, Any]]) -> dict[str, Any]:
    """A destination's counts: the sum of its lanes' ledgers."""
    totals = {"destination": destination}
    for name in ("delivered", "suppressed", "duplicates", "dead_letters"):
        totals[name] = sum(lane[name] for lane in lanes)
    return totals
