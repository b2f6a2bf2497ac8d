"""The six applications in one process, fed by each other's relays as the broker would:
fills every service's store (SQLite or PostgreSQL) with a little real history, for tests
that look at the stores themselves (the audit chain's)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from shared.config import Settings
from shared.contracts import CONSUMERS
from shared.outbox import OutboxRelay


class Collected:
    """Stands in for the broker: keeps what the relays publish until drained."""

    def __init__(self):
        self.envelopes: list[Any] = []

    def publish(self, envelopes: list[Any]) -> None:
        self.envelopes.extend(envelopes)


@contextmanager
def applications(settings: Settings, destinations: list[Any] = ()) -> Iterator[dict[str, Any]]:
    from services.activation.application import ActivationApplication
    from services.activation.translation import translator as activation_translator
    from services.consent.application import ConsentApplication
    from services.contacts.application import ContactsApplication
    from services.contacts.translation import translator as contacts_translator
    from services.gateway.application import GatewayApplication
    from services.gateway.translation import translator as gateway_translator
    from services.identity.application import IdentityApplication
    from services.identity.translation import translator as identity_translator
    from services.segments.application import SegmentsApplication
    from services.segments.translation import translator as segments_translator

    apps = {
        "gateway": GatewayApplication(settings),
        "identity": IdentityApplication(settings),
        "contacts": ContactsApplication(settings),
        "segments": SegmentsApplication(settings),
        "consent": ConsentApplication(settings),
        "activation": ActivationApplication(settings, destinations=list(destinations),
                                            sleep=lambda seconds: None),
    }
    broker = Collected()
    translators = {"gateway": gateway_translator, "identity": identity_translator,
                   "contacts": contacts_translator, "segments": segments_translator,
                   "activation": activation_translator}
    apps["_relays"] = [OutboxRelay(apps[name], make(settings.partitions), broker)
                       for name, make in translators.items()]
    apps["_broker"] = broker
    try:
        yield apps
    finally:
        for name, app in apps.items():
            if not name.startswith("_"):
                app.close()


def stream_handlers(apps: dict[str, Any]) -> dict[tuple[str, str], Any]:
    """What each consuming service does with each stream, as its service.py would."""
    return {
        ("identity", "ingest.received"): lambda e: apps["identity"].resolve_batch(
            e.tracking_key, e.items),
        ("contacts", "identity.resolved"): lambda e: apps["contacts"].apply_batch(
            e.tracking_key, e.partition, e.items),
        ("consent", "identity.resolved"): lambda e: apps["consent"].apply_resolved(
            e.tracking_key, e.items),
        ("contacts", "identity.profile_split"): lambda e: apps["contacts"].apply_splits(
            e.tracking_key, e.partition, e.items),
        ("consent", "identity.profile_split"): lambda e: apps["consent"].apply_splits(
            e.tracking_key, e.items),
        ("segments", "contacts.profile_changed"): lambda e: apps["segments"].apply_batch(
            e.tracking_key, e.items),
        ("activation", "identity.resolved"): lambda e: apps["activation"].plan_events(
            e.tracking_key, e.partition, e.items),
        ("activation", "segments.membership_changed"): lambda e: apps["activation"].plan(
            e.tracking_key, e.items),
        ("activation", "contacts.profile_reconciled"): lambda e: apps[
            "activation"].plan_reconciliations(e.tracking_key, e.items),
        ("activation", "consent.changed"): lambda e: apps["activation"].apply_consent_changes(
            e.tracking_key, e.items),
        ("activation", "activation.delivery_planned"): lambda e: apps["activation"].deliver(
            e.tracking_key, e.partition, e.items, apps["consent"].decide_many),
    }


def drain(apps: dict[str, Any]) -> None:
    """Relay and consume until nothing moves."""
    handlers = stream_handlers(apps)
    broker = apps["_broker"]
    while True:
        moved = sum(relay.relay_once() for relay in apps["_relays"])
        published, broker.envelopes = broker.envelopes, []
        for envelope in published:
            for consumer in CONSUMERS[envelope.type]:
                handlers[(consumer, envelope.type)](envelope)
        if not moved and not published:
            return


def fill_every_store(settings: Settings, people: int = 3) -> None:
    """A few people identified, consenting, buying, entering a segment and being sent to a
    destination (suppressed: its URL answers nothing, which is fine here)."""
    from services.activation.destinations import Destination

    ads = Destination("ads", "webhook", ("buyers",), ("advertising",),
                      {"url": "http://127.0.0.1:9/unreachable", "secret": "audit"})
    with applications(settings, [ads]) as apps:
        apps["segments"].define_segment("buyers", {
            "event": "Order Completed", "count": {"op": "at_least", "value": 1},
            "within_days": 30})
        now = datetime.now(UTC)
        for person in range(people):
            user = f"person-{person}"
            apps["gateway"].ingest("web", {"batch": [
                {"type": "identify", "userId": user,
                 "traits": {"email": f"{user}@example.com"},
                 "context": {"consent": {"categoryPreferences": {"advertising": False}}}},
            ]}, received_at=now)
            drain(apps)
            apps["gateway"].ingest("web", {"batch": [
                {"type": "track", "userId": user, "event": "Order Completed"},
            ]}, received_at=now)
            drain(apps)
