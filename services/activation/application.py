"""Activation's application: plan deliveries, decide consent at send time, deliver or suppress."""

from __future__ import annotations

import itertools
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
from services.activation.audiences import (
    CONSENT_ACTIVATION,
    CONSENT_REMOVAL,
    Audiences,
    plan_for_consent_change,
)
from services.activation.credentials import CredentialVault, load_cipher, runtime_seeds
from services.activation.destinations import (
    MAX_LANES,
    Destination,
    load_destinations,
    parse_partition,
)
from services.activation.domain import (
    RECENT_OUTCOMES,
    DeliveryPlan,
    DestinationLedger,
    idempotency_key,
    merged_stats,
    summary,
)
from shared.envelope import utcnow_iso
from shared.privacy import is_erased, subject_of_profile
from shared.purposes import check_destination_purposes, load_catalogue
from shared.store import ServiceApplication

LEDGER_OUTCOMES = {DestinationLedger.Delivered: "delivered",
                   DestinationLedger.Suppressed: "suppressed",
                   DestinationLedger.Skipped: "skipped",
                   DestinationLedger.DeadLettered: "dead_lettered"}

def _profiles_of_items(state: dict[str, Any]) -> list[str]:
    return [subject_of_profile(item["profile_id"]) for item in state.get("items") or ()
            if isinstance(item, dict) and item.get("profile_id")]


DecideMany = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


class ActivationApplication(ServiceApplication):
    service_name = "activation"
    written_once = (DeliveryPlan,)
    privacy_rules = "services.activation.privacy:RULES"
    name = "activation"
    snapshotting_intervals = {DestinationLedger: 200}

    def subject_terms(self):
        """The subject index (shared.subject_index): plans and outcomes by the profile of
        each item, what `export_subject` reads."""
        return dict.fromkeys((DeliveryPlan.Planned, *LEDGER_OUTCOMES), _profiles_of_items)

    def __init__(self, settings, destinations: list[Destination] | None = None,
                 sleep: Callable[[float], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, **kwargs):
        super().__init__(settings, **kwargs)
        if destinations is None:
            destinations = load_destinations(settings.destinations_file)
        check_destination_purposes(destinations, load_catalogue(settings.purposes_file))
        self.destinations = {d.name: d for d in destinations}
        self.audiences = Audiences(self.read_model())
        self._connectors: dict[str, Any] = {}
        self._limiters: dict[str, RateLimiter] = {}
        self._circuits: dict[str, CircuitBreaker] = {}
        self._dropped: dict[str, list[int]] = {}  # destination -> lanes it no longer has
        self._credentials: CredentialVault | None = None
        self._sleep = sleep
        self._clock = clock  # the circuits' (tests turn it by hand)
        self.event_followers = self._event_followers()

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
        aggregates = self._plans(planned)
        self.save_processed(*aggregates, tracking_key=tracking_key,
                            position=fresh[-1]["position"],
                            writes=self.audiences.membership_writes(fresh))
        return len(planned)

    def plan_events(self, tracking_key: str, partition: str,
                    resolved: list[dict[str, Any]]) -> int:
        """`identity.resolved`: each event, for each destination that follows events, as a
        delivery of its own (its destination's queue, consent at send time, retries, dead
        letters, replay). Without such a destination, nothing at all: not even a tracking
        record, since events outnumber everything else activation reads."""
        if not self.event_followers:
            return 0
        fresh = self.fresh_items(tracking_key, resolved)
        if not fresh:
            return 0
        planned = [event_delivery(destination.name, partition, item)
                   for item in fresh for destination in self.event_followers]
        aggregates = self._plans(planned)
        self.save_processed(*aggregates, tracking_key=tracking_key,
                            position=fresh[-1]["position"])
        return len(planned)

    def _plans(self, planned: list[dict[str, Any]]) -> list[DeliveryPlan]:
        """The plan of a batch (none if empty), each item on its person's lane."""
        if not planned:
            return []
        for item in planned:
            destination = self.destinations.get(item["destination"])
            if destination is not None and destination.lanes > 1:
                item["lane"] = destination.lane_of(item["profile_id"])
        return [DeliveryPlan(items=planned)]

    def _event_followers(self) -> list[Destination]:
        followers = [d for d in self.destinations.values() if d.events]
        for destination in followers:
            if Capability.TRACK_EVENTS not in self._connector(destination).capabilities:
                raise ValueError(f"destination {destination.name}: events: a {destination.kind} "
                                 "connector does not take events (it declares no "
                                 f"{Capability.TRACK_EVENTS})")
        return followers

    def apply_consent_changes(self, tracking_key: str, changes: list[dict[str, Any]]) -> int:
        """`consent.changed`: remove the person from the audiences they fed, or plan their
        deliveries for the segments they are in now (see services.activation.audiences)."""
        fresh = self.fresh_items(tracking_key, changes)
        if not fresh:
            return 0
        planned = [item for change in fresh for item in plan_for_consent_change(
            change, list(self.destinations.values()), self.audiences)]
        aggregates = self._plans(planned)
        self.save_processed(*aggregates, tracking_key=tracking_key,
                            position=fresh[-1]["position"])
        return len(planned)

    def plan_reconciliations(self, tracking_key: str, changes: list[dict[str, Any]]) -> int:
        """Merges and splits, planned for each destination whose connector follows them
        (declares ``merge_profiles``): from here on they travel as any delivery does —
        their destination's queue, consent at send time, retries, dead letters."""
        fresh = self.fresh_items(tracking_key, changes)
        if not fresh:
            return 0
        following = [d for d in self.destinations.values()
                     if Capability.MERGE_PROFILES in self._connector(d).capabilities]
        planned = [
            {
                "idempotency_key": idempotency_key(destination.name, dict(
                    change, segment="", change=change["change"])),
                "destination": destination.name,
                "profile_id": change["profile_id"],
                "segment": None,
                "action": change["change"],
                "traits": change.get("traits") or {},
                "merged_profiles": change.get("merged_profiles") or [],
                "split_from": change.get("split_from"),
                "occurred_at": utcnow_iso(),
                "cause": change["cause"],
                "received_at": change.get("received_at"),
            }
            for change in fresh for destination in following
        ]
        aggregates = self._plans(planned)
        self.save_processed(*aggregates, tracking_key=tracking_key,
                            position=fresh[-1]["position"])
        return len(planned)

    # ---- delivering -------------------------------------------------------------------
    def deliver(self, tracking_key: str, partition: str, items: list[dict[str, Any]],
                decide_many: DecideMany) -> dict[str, int]:
        """Decide consent for the batch right now, then send the allowed, suppress the rest.

        ``partition`` is a lane of a destination (its name for lane 0, see
        `lane_partition`); each lane keeps its own ledger, so lanes never contend.

        Raises when consent cannot be decided yet (the batch waits and is retried); a
        destination that keeps failing ends in the dead-letter store, never in a loop.
        While its circuit is open, raises `DestinationPaused` before doing anything: the
        batch waits in its queue, costing nothing (see `CircuitBreaker`).
        """
        fresh = self.fresh_items(tracking_key, items)
        if not fresh:
            return {"delivered": 0, "suppressed": 0, "dead_lettered": 0}
        destination_name, lane = parse_partition(partition)
        destination = self.destinations[destination_name]
        circuit = self._circuit(destination_name)
        circuit.admit(destination_name)
        ledger = self._ledger(destination_name, lane)
        removals, to_decide = self._consent_removals(destination_name, fresh, ledger)
        allowed, denied = self._decide(destination, to_decide, decide_many) if to_decide \
            else ([], [])
        allowed += removals
        outcome = {"delivered": 0, "suppressed": len(denied), "dead_lettered": 0}
        writes = None
        try:
            report = self._send(destination, allowed, circuit) if allowed else None
        except Exception:
            self.forget_cached_state()  # the cached ledger holds unsaved changes (skips)
            raise
        if denied:
            ledger.suppressed_batch([summary(i) for i in denied])
        if report is not None:
            self._record_report(ledger, allowed, report)
            writes = self._holdings_writes(destination_name, allowed, report)
            outcome["delivered"] = len(report.delivered)
            outcome["dead_lettered"] = sum(len(batch.items) for batch, _ in report.failed)
        self.save_processed(ledger, tracking_key=tracking_key, position=fresh[-1]["position"],
                            writes=writes)
        return outcome

    def _consent_removals(self, destination: str, items: list[dict[str, Any]],
                          ledger: DestinationLedger) -> tuple[list[dict], list[dict]]:
        """Removals planned because consent went away skip the decision (they send
        nothing new); those for an audience that never got the person are dropped, as are
        adds planned because consent came back for an audience that holds them already.
        Of two adds for one audience in one batch only the later goes: the add planned
        from a segment entry and the one planned because consent came meanwhile race each
        other into the same batch."""
        # Only what consent changes planned asks what the destination holds.
        asking = sorted({i["profile_id"] for i in items
                         if i.get(CONSENT_REMOVAL) or i.get(CONSENT_ACTIVATION)})
        held = {(h["profile_id"], h["segment"]) for h in self.audiences.holdings(asking)
                if h["destination"] == destination}
        removals, others, pointless = [], [], []
        latest_add: dict[tuple[str, str], int] = {}  # audience -> its add's index in others
        for item in items:
            place = (item["profile_id"], item.get("segment"))
            if item.get(CONSENT_REMOVAL):
                latest_add.pop(place, None)
                if place in held:
                    removals.append(dict(item, decision_id=CONSENT_REMOVAL))
                else:
                    pointless.append(dict(item, reason="not in the destination's audience"))
                continue
            if item.get(CONSENT_ACTIVATION) and place in held:
                pointless.append(dict(item, reason="already in the destination's audience"))
                continue
            if place[1] is not None and item["action"] == "entered":
                earlier = latest_add.pop(place, None)
                if earlier is not None:
                    pointless.append(dict(others[earlier],
                                          reason="superseded by a later add in the batch"))
                    others[earlier] = None
                latest_add[place] = len(others)
            elif place[1] is not None:
                latest_add.pop(place, None)
            others.append(item)
        others = [item for item in others if item is not None]
        if pointless:
            ledger.skipped_batch([summary(i) for i in pointless])
        return removals, others

    def _holdings_writes(self, destination: str, items: list[dict[str, Any]],
                         report: DeliveryReport):
        by_key = {i["idempotency_key"]: i for i in items}
        return self.audiences.delivery_writes(destination, [by_key[k] for k in report.delivered])

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
            seeds = runtime_seeds(connector, destination.config)
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

    def _ledger(self, destination: str, lane: int = 0) -> DestinationLedger:
        return (self.find(DestinationLedger.create_id(destination, lane))
                or DestinationLedger(destination, lane))

    def _ledgers(self, destination: str) -> list[DestinationLedger]:
        """The ledgers of every lane the destination has, and of lanes it had: a
        destination given fewer lanes keeps the dead letters of the lanes it dropped."""
        configured = self.destinations[destination].lanes \
            if destination in self.destinations else 1
        ledgers = [self._ledger(destination, lane) for lane in range(configured)]
        for lane in self._dropped_lanes(destination, configured):
            ledgers.append(self._ledger(destination, lane))
        return ledgers

    def _dropped_lanes(self, destination: str, configured: int) -> list[int]:
        """Lanes beyond the configuration that have a ledger, looked up once: no queue
        feeds them any more, so none appears later."""
        if destination not in self._dropped:
            self._dropped[destination] = [
                lane for lane in range(configured, MAX_LANES)
                if self.find(DestinationLedger.create_id(destination, lane)) is not None]
        return self._dropped[destination]

    # ---- dead letters -----------------------------------------------------------------
    def dead_letters(self, destination: str) -> list[dict[str, Any]]:
        return [letter for ledger in self._ledgers(destination)
                for letter in ledger.dead_letters.values()]

    def replay(self, destination_name: str, letter_id: str,
               decide_many: DecideMany) -> dict[str, int]:
        """Send a dead letter again, deciding consent again: the decision that counts is now."""
        ledger = next((ledger for ledger in self._ledgers(destination_name)
                       if letter_id in ledger.dead_letters), None)
        if ledger is None:
            raise KeyError(letter_id)
        letter = ledger.dead_letters[letter_id]
        destination = self.destinations[destination_name]
        # Items of people erased since are not sent again (their traits are gone).
        items = [i for i in letter["items"] if not is_erased(i)]
        writes = None
        try:
            removals, to_decide = self._consent_removals(destination_name, items, ledger)
            allowed, denied = self._decide(destination, to_decide, decide_many) if to_decide \
                else ([], [])
            allowed += removals
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
                writes = self._holdings_writes(destination_name, allowed, report)
        except Exception:
            self.forget_cached_state()  # the cached ledger holds unsaved changes: drop them
            raise
        ledger.replayed(letter_id)
        self.save_and_wake(ledger, writes=writes)
        return {"delivered": len(allowed), "suppressed": len(denied)}

    # ---- data subject requests --------------------------------------------------------
    def export_subject(self, profile_ids: list[str], identifiers: list[list[str]]
                       ) -> dict[str, Any]:
        """Every delivery planned for the person (with the traits it carried), every
        outcome per destination (delivered, suppressed with the decision, skipped, dead
        lettered), and the recipients: the destinations that received their data."""
        mine = set(profile_ids)
        terms = [subject_of_profile(p) for p in mine]

        def theirs(item: dict[str, Any]) -> bool:  # the others' items are left sealed
            return item.get("profile_id") in mine

        planned = [dict(item, planned_at=stored.timestamp.isoformat())
                   for stored in self.events_of_subjects(terms, DeliveryPlan.Planned,
                                                         open_item=theirs)
                   for item in stored.items if item["profile_id"] in mine]
        outcomes: dict[str, list[dict[str, Any]]] = {}
        for stored in self.events_of_subjects(terms, *LEDGER_OUTCOMES, open_item=theirs):
            kind = LEDGER_OUTCOMES[type(stored)]
            destination = self._ledger_name(stored.originator_id)
            for item in stored.items:
                if item["profile_id"] in mine:
                    outcomes.setdefault(destination, []).append(
                        {**summary(item), "outcome": kind,
                         "at": stored.timestamp.isoformat()})
        recipients = []
        for name, seen in sorted(outcomes.items()):
            delivered = [o for o in seen if o["outcome"] == "delivered"]
            if not delivered:
                continue
            destination = self.destinations.get(name)
            recipients.append({
                "destination": name, "kind": destination.kind if destination else None,
                "purposes": list(destination.purposes) if destination else [],
                "first_delivery": delivered[0]["at"], "last_delivery": delivered[-1]["at"],
                "deliveries": len(delivered)})
        return {"service": "activation", "planned": planned, "outcomes": outcomes,
                "recipients": recipients}

    def _ledger_name(self, ledger_id: uuid.UUID) -> str:
        for destination in self.destinations.values():
            if any(DestinationLedger.create_id(destination.name, lane) == ledger_id
                   for lane in range(destination.lanes)):
                return destination.name
        found = self.find(ledger_id)
        return found.destination if found is not None else str(ledger_id)

    def plan_rectification(self, profile_id: str, segments: list[str],
                           traits: dict[str, Any], request_id: str) -> int:
        """Send a person's corrected traits again to every destination that follows a
        segment they are in: an upsert for a CRM, a re-add for an audience, each decided
        on consent at send time as any delivery."""
        at = utcnow_iso()
        planned = [
            {"idempotency_key": f"{destination.name}:{profile_id}:{segment}:rectified:"
                                f"{request_id}",
             "destination": destination.name, "profile_id": profile_id, "segment": segment,
             "action": "entered", "traits": traits, "occurred_at": at,
             "cause": {"partition": "dsr", "position": 0}, "received_at": None}
            for segment in sorted(segments)
            for destination in self.destinations.values() if destination.follows(segment)]
        if planned:
            self.save_and_wake(*self._plans(planned))
        return len(planned)
    # ---- erasure ----------------------------------------------------------------------
    def erase_subject(self, profile_ids: list[str], identifiers: list[list[str]],
                      subject_hashes: list[str] = ()) -> dict[str, Any]:
        """Erasure (services/consent/erasure.py): the profiles' keys go, and with them the
        traits of their planned, delivered and dead-lettered items; the ledgers' snapshots
        (decrypted dead letters) are dropped and taken again."""
        hashes = {*(self.privacy.hashed(subject_of_profile(p)) for p in profile_ids),
                  *subject_hashes}
        shredded = self.shred_subjects_by_hash(hashes)
        self.audiences.forget(profile_ids)
        self.compact_store()
        return {"service": self.service_name, "keys_shredded": shredded,
                "subject_hashes": sorted(hashes)}

    def delete_at_destinations(self, identifiers: list[list[str]],
                               only: list[str] | None = None,
                               profile_ids: list[str] = ()) -> dict[str, dict[str, Any]]:
        """Ask each destination that can delete a person to delete this one. Returns, per
        destination, "confirmed", "failed" (with the error; the caller retries) or
        "unsupported" (the connector declares no delete_subject). Destinations keyed by
        our profile ids (the warehouse) find them in each item's ``identifiers``."""
        emails = sorted({v for t, v in identifiers if t == "email"})
        phones = sorted({v for t, v in identifiers if t == "phone"})
        outcomes: dict[str, dict[str, Any]] = {}
        for name, destination in self.destinations.items():
            if only is not None and name not in only:
                continue
            connector = self._connector(destination)
            if Capability.DELETE_SUBJECT not in connector.capabilities:
                outcomes[name] = {"status": "unsupported"}
                continue
            items = [DeliveryItem(
                idempotency_key=f"{name}:erase:{index}", profile_id="", action="erased",
                segment=None, traits={"email": email, **({"phone": phones[0]} if phones else {})},
                identifiers={"profile_ids": list(profile_ids)}, occurred_at=utcnow_iso(),
                decision_id="")
                for index, email in enumerate(emails or [None])]
            try:
                connector.deliver(Capability.DELETE_SUBJECT, name, items)
                outcomes[name] = {"status": "confirmed"}
            except Exception as failed:  # recorded on the erasure ledger, retried from there
                outcomes[name] = {"status": "failed", "error": f"{type(failed).__name__}"}
        return outcomes

    # ---- queries ----------------------------------------------------------------------
    def outcomes(self, destination: str) -> list[dict[str, Any]]:
        """The latest outcomes, newest first. Lanes' outcomes are taken in turn, newest of
        each first: lanes move at about the same pace, and an outcome carries no time."""
        newest_first = [reversed(ledger.recent) for ledger in self._ledgers(destination)]
        in_turn = itertools.chain.from_iterable(itertools.zip_longest(*newest_first))
        return [outcome for outcome in in_turn if outcome is not None][:RECENT_OUTCOMES]

    def stats(self) -> dict[str, dict[str, Any]]:
        return {name: merged_stats(name, [ledger.stats() for ledger in self._ledgers(name)])
                for name in self.destinations}

    def close(self) -> None:
        for connector in self._connectors.values():
            connector.close()
        super().close()


def _delivery_item(item: dict[str, Any]) -> DeliveryItem:
    return DeliveryItem(
        idempotency_key=item["idempotency_key"], profile_id=item["profile_id"],
        action=item["action"], segment=item["segment"], traits=item["traits"],
        identifiers={}, occurred_at=item["occurred_at"], decision_id=item["decision_id"],
        received_at=item.get("received_at"),
        merged_profiles=tuple(item.get("merged_profiles") or ()),
        split_from=item.get("split_from"), event=item.get("event"))


def event_delivery(destination: str, partition: str, resolved: dict[str, Any]
                   ) -> dict[str, Any]:
    """One identity-resolved event, planned for one destination that follows events.

    Keyed by the event's messageId (the gateway's dedupe key), so a redelivered event is
    the same delivery; the cause makes consent read identity's log that far first, so
    consent given on this very event counts."""
    event = resolved["event"]
    event_id = event.get("messageId") or f"{partition}:{resolved['position']}"
    return {
        "idempotency_key": f"{destination}:event:{event_id}",
        "destination": destination,
        "profile_id": resolved["profile_id"],
        "segment": None,
        "action": "event",
        "traits": {},
        "event": event,
        "occurred_at": event.get("timestamp") or event.get("receivedAt") or utcnow_iso(),
        "cause": {"partition": partition, "position": resolved["position"]},
        "received_at": event.get("receivedAt"),
    }
