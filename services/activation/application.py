"""Activation's application: plan deliveries, decide consent at send time, deliver or suppress."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from connectors.base import DeliveryItem, load_connector
from connectors.sdk.delivery import (
    CircuitBreaker,
    DeliveryReport,
    RateLimiter,
    as_destination,
    default_sync,
    deliver_batches,
    plan_batches,
    validate_sync,
)
from connectors.sdk.destination import Capability
from services.activation.credentials import CredentialVault, load_cipher
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
                 sleep: Callable[[float], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, **kwargs):
        super().__init__(settings, **kwargs)
        if destinations is None:
            destinations = load_destinations(settings.destinations_file)
        self.destinations = {d.name: d for d in destinations}
        self._connectors: dict[str, Any] = {}
        self._limiters: dict[str, RateLimiter] = {}
        self._circuits: dict[str, CircuitBreaker] = {}
        self._credentials: CredentialVault | None = None
        self._sleep = sleep
        self._clock = clock  # the circuits' (tests turn it by hand)

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
        While its circuit is open, raises `DestinationPaused` before doing anything: the
        batch waits in its queue, costing nothing (see `CircuitBreaker`).
        """
        fresh = self.fresh_items(tracking_key, items)
        if not fresh:
            return {"delivered": 0, "suppressed": 0, "dead_lettered": 0}
        destination = self.destinations[destination_name]
        self._circuit(destination_name).admit(destination_name)
        allowed, denied = self._decide(destination, fresh, decide_many)
        outcome = {"delivered": 0, "suppressed": len(denied), "dead_lettered": 0}
        # Sent first, recorded after: a send that raises (a paused destination, a bug)
        # leaves nothing half-recorded on the cached ledger.
        report = self._send(destination, allowed, self._circuit(destination_name)) \
            if allowed else None
        ledger = self._ledger(destination_name)
        if denied:
            ledger.suppressed_batch([summary(i) for i in denied])
        if report is not None:
            self._record_report(ledger, allowed, report)
            outcome["delivered"] = len(report.delivered)
            outcome["dead_lettered"] = sum(len(batch.items) for batch, _ in report.failed)
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

    def _send(self, destination: Destination, items: list[dict[str, Any]],
              circuit: CircuitBreaker | None = None) -> DeliveryReport:
        """Batches by operation, within the rate limit, each retried; failures reported."""
        connector = self._connector(destination)
        pinned = {i["idempotency_key"]: Capability(i["operation"])
                  for i in items if i.get("operation")}
        batches = plan_batches([_delivery_item(i) for i in items],
                               self._sync(destination, connector), connector.capabilities,
                               connector.batch_size, pinned)
        return deliver_batches(connector, destination.name, batches,
                               attempts=self.settings.delivery_attempts,
                               limiter=self._limiter(destination, connector), sleep=self._sleep,
                               circuit=circuit)

    def _record_report(self, ledger: DestinationLedger, items: list[dict[str, Any]],
                report: DeliveryReport) -> None:
        """Delivered items on the ledger; each batch that failed for good, a dead letter
        remembering its operation (a replay repeats just that)."""
        by_key = {i["idempotency_key"]: i for i in items}
        if report.delivered:
            ledger.delivered_batch([summary(by_key[k]) for k in report.delivered],
                                   report.status, list(report.duplicate_keys))
        if report.skipped:
            ledger.skipped_batch([summary(by_key[k]) for k in report.skipped])
        for batch, error in report.failed:
            letter = [dict(by_key[k], operation=str(batch.operation)) for k in batch.keys]
            ledger.dead_letter(str(uuid.uuid4()), letter, repr(error), utcnow_iso())

    @staticmethod
    def _sync(destination: Destination, connector) -> frozenset[str]:
        if destination.sync is not None:
            return validate_sync(destination.sync)
        return default_sync(connector.capabilities) or validate_sync({"mirror"})

    def _circuit(self, destination: str) -> CircuitBreaker:
        if destination not in self._circuits:
            self._circuits[destination] = CircuitBreaker(
                threshold=self.settings.circuit_failures, clock=self._clock)
        return self._circuits[destination]

    def _limiter(self, destination: Destination, connector) -> RateLimiter:
        if destination.name not in self._limiters:
            self._limiters[destination.name] = RateLimiter(connector.rate_limit,
                                                           sleep=self._sleep)
        return self._limiters[destination.name]

    def _connector(self, destination: Destination):
        if destination.name not in self._connectors:
            connector = as_destination(load_connector(destination.kind, destination.config))
            runtime = getattr(connector, "runtime_credentials", frozenset())
            seeds = {name: destination.config[name] for name in runtime
                     if destination.config.get(name)}
            if seeds:  # only then is a key needed
                connector.credentials = self._vault().for_destination(destination.name, seeds)
            self._connectors[destination.name] = connector
        return self._connectors[destination.name]

    def _vault(self) -> CredentialVault:
        if self._credentials is None:
            self._credentials = CredentialVault(self.read_model(), load_cipher(self.settings))
        return self._credentials

    def dry_run(self, destination_name: str, items: list[dict[str, Any]]) -> list[dict]:
        """What would be sent for ``items`` (planned deliveries), secrets hidden."""
        destination = self.destinations[destination_name]
        connector = self._connector(destination)
        batches = plan_batches([_delivery_item(dict(i, decision_id=i.get("decision_id", "")))
                                for i in items], self._sync(destination, connector),
                               connector.capabilities, connector.batch_size)
        return [{"operation": str(batch.operation),
                 "requests": connector.preview(batch.operation, destination.name,
                                               list(batch.items))}
                for batch in batches]

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
                # The operator's replay goes even while the circuit is open; its success
                # closes it.
                report = self._send(destination, allowed)
                if report.failed:
                    raise report.failed[0][1]
                if report.delivered:
                    self._circuit(destination_name).succeeded()
                self._record_report(ledger, allowed, report)
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


def _delivery_item(item: dict[str, Any]) -> DeliveryItem:
    return DeliveryItem(
        idempotency_key=item["idempotency_key"], profile_id=item["profile_id"],
        action=item["action"], segment=item["segment"], traits=item["traits"],
        identifiers={}, occurred_at=item["occurred_at"], decision_id=item["decision_id"],
        received_at=item.get("received_at"))
