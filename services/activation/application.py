"""Activation's application: plan deliveries, decide consent at send time, deliver or suppress."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from connectors.base import DeliveryError, DeliveryItem, load_connector
from connectors.retry import send_with_retries
from services.activation.destinations import Destination, load_destinations
from services.activation.domain import (
    DeliveryPlan,
    DestinationLedger,
    idempotency_key,
    summary,
)
from shared.envelope import utcnow_iso
from shared.store import ServiceApplication

DecideMany = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


class ActivationApplication(ServiceApplication):
    service_name = "activation"
    name = "activation"
    snapshotting_intervals = {DestinationLedger: 200}

    def __init__(self, settings, destinations: list[Destination] | None = None,
                 sleep: Callable[[float], None] | None = None, **kwargs):
        super().__init__(settings, **kwargs)
        if destinations is None:
            destinations = load_destinations(settings.destinations_file)
        self.destinations = {d.name: d for d in destinations}
        self._connectors: dict[str, Any] = {}
        self._sleep = sleep

    # ---- planning ---------------------------------------------------------------------
    def plan(self, tracking_key: str, changes: list[dict[str, Any]]) -> int:
        fresh = self.fresh_items(tracking_key, changes)
        if not fresh:
            return 0
        planned = [
            {
                "idempotency_key": idempotency_key(destination.name, change),
                "destination": destination.name,
                "profile_id": change["profile_id"],
                "segment": change["segment"],
                "action": change["change"],
                "traits": change.get("traits") or {},
                "occurred_at": change["at"],
                "cause": change["cause"],
                "received_at": change.get("received_at"),
            }
            for change in fresh
            for destination in self.destinations.values()
            if destination.follows(change["segment"])
        ]
        aggregates = [DeliveryPlan(items=planned)] if planned else []
        self.save_processed(*aggregates, tracking_key=tracking_key,
                            position=fresh[-1]["position"])
        return len(planned)

    # ---- delivering -------------------------------------------------------------------
    def deliver(self, tracking_key: str, destination_name: str, items: list[dict[str, Any]],
                decide_many: DecideMany) -> dict[str, int]:
        """Decide consent for the batch right now, then send the allowed, suppress the rest.

        Raises when consent cannot be decided yet (the batch waits and is retried); a
        destination that keeps failing ends in the dead-letter store, never in a loop.
        """
        fresh = self.fresh_items(tracking_key, items)
        if not fresh:
            return {"delivered": 0, "suppressed": 0, "dead_lettered": 0}
        destination = self.destinations[destination_name]
        ledger = self._ledger(destination_name)
        allowed, denied = self._decide(destination, fresh, decide_many)
        outcome = {"delivered": 0, "suppressed": len(denied), "dead_lettered": 0}
        if denied:
            ledger.suppressed_batch([summary(i) for i in denied])
        if allowed:
            try:
                result = self._send(destination, allowed)
                ledger.delivered_batch([summary(i) for i in allowed], result.status,
                                       list(result.duplicate_keys))
                outcome["delivered"] = len(allowed)
            except DeliveryError as error:
                ledger.dead_letter(str(uuid.uuid4()), allowed, repr(error), utcnow_iso())
                outcome["dead_lettered"] = len(allowed)
            except Exception:
                self.forget_cached_state()  # the cached ledger holds unsaved changes
                raise
        self.save_processed(ledger, tracking_key=tracking_key, position=fresh[-1]["position"])
        return outcome

    def _decide(self, destination: Destination, items: list[dict[str, Any]],
                decide_many: DecideMany) -> tuple[list[dict], list[dict]]:
        requests = [{"profile_id": i["profile_id"], "destination": destination.name,
                     "purposes": list(destination.purposes), "after": i.get("cause")}
                    for i in items]
        decisions = decide_many(requests)
        allowed, denied = [], []
        for item, decision in zip(items, decisions, strict=True):
            record = dict(item, decision_id=decision["decision_id"])
            if decision["allowed"]:
                allowed.append(record)
            else:
                denied.append(dict(record, reason=decision["reason"]))
        return allowed, denied

    def _send(self, destination: Destination, items: list[dict[str, Any]]):
        connector = self._connector(destination)
        batch = [
            DeliveryItem(
                idempotency_key=i["idempotency_key"], profile_id=i["profile_id"],
                action=i["action"], segment=i["segment"], traits=i["traits"],
                identifiers={}, occurred_at=i["occurred_at"], decision_id=i["decision_id"],
                received_at=i.get("received_at"))
            for i in items
        ]
        return send_with_retries(connector, destination.name, batch,
                                 attempts=self.settings.delivery_attempts, sleep=self._sleep)

    def _connector(self, destination: Destination):
        if destination.name not in self._connectors:
            self._connectors[destination.name] = load_connector(destination.kind,
                                                                destination.config)
        return self._connectors[destination.name]

    def _ledger(self, destination: str) -> DestinationLedger:
        return (self.find(DestinationLedger.create_id(destination))
                or DestinationLedger(destination))

    # ---- dead letters -----------------------------------------------------------------
    def dead_letters(self, destination: str) -> list[dict[str, Any]]:
        return list(self._ledger(destination).dead_letters.values())

    def replay(self, destination_name: str, letter_id: str,
               decide_many: DecideMany) -> dict[str, int]:
        """Send a dead letter again, deciding consent again: the decision that counts is now."""
        ledger = self._ledger(destination_name)
        letter = ledger.dead_letters.get(letter_id)
        if letter is None:
            raise KeyError(letter_id)
        destination = self.destinations[destination_name]
        allowed, denied = self._decide(destination, letter["items"], decide_many)
        try:
            if denied:
                ledger.suppressed_batch([summary(i) for i in denied])
            if allowed:
                result = self._send(destination, allowed)
                ledger.delivered_batch([summary(i) for i in allowed], result.status,
                                       list(result.duplicate_keys))
        except Exception:
            self.forget_cached_state()  # the cached ledger holds unsaved changes: drop them
            raise
        ledger.replayed(letter_id)
        self.save_and_wake(ledger)
        return {"delivered": len(allowed), "suppressed": len(denied)}

    # ---- queries ----------------------------------------------------------------------
    def outcomes(self, destination: str) -> list[dict[str, Any]]:
        return list(reversed(self._ledger(destination).recent))

    def stats(self) -> dict[str, dict[str, Any]]:
        return {name: self._ledger(name).stats() for name in self.destinations}

    def close(self) -> None:
        for connector in self._connectors.values():
            connector.close()
        super().close()
