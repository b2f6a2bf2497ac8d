"""activation's nameko entrypoints: plan from membership changes and events, deliver per
destination."""

from __future__ import annotations

import eventlet
from nameko.rpc import RpcProxy, rpc

from connectors.sdk.delivery import DestinationPaused
from services.activation.application import ActivationApplication
from services.activation.destinations import load_destinations
from services.activation.translation import translator
from shared.contracts import (
    CONSENT_CHANGED,
    DELIVERY_PLANNED,
    IDENTITY_RESOLVED,
    MEMBERSHIP_CHANGED,
    PROFILE_RECONCILED,
)
from shared.messaging.nameko_ext import ServiceApp, partitioned_handler, service_status


class ConsentPending(Exception):
    """Consent cannot decide yet (lagging or unreachable): the batch waits and is retried."""


def destination_partitions(settings) -> list[str]:
    """A queue per lane of each destination (one lane unless configured)."""
    return [partition for d in load_destinations(settings.destinations_file)
            for partition in d.partitions()]


class ActivationService:
    name = "activation"
    app = ServiceApp(ActivationApplication, translator)
    consent = RpcProxy("consent")

    @partitioned_handler(MEMBERSHIP_CHANGED, "activation")
    def on_membership_changed(self, envelope):
        return self.app.plan(envelope.tracking_key, envelope.items)

    @partitioned_handler(IDENTITY_RESOLVED, "activation")
    def on_identity_resolved(self, envelope):
        return self.app.plan_events(envelope.tracking_key, envelope.partition, envelope.items)

    @partitioned_handler(PROFILE_RECONCILED, "activation")
    def on_profile_reconciled(self, envelope):
        return self.app.plan_reconciliations(envelope.tracking_key, envelope.items)

    @partitioned_handler(CONSENT_CHANGED, "activation")
    def on_consent_changed(self, envelope):
        return self.app.apply_consent_changes(envelope.tracking_key, envelope.items)

    @partitioned_handler(DELIVERY_PLANNED, "activation", partitions=destination_partitions)
    def on_delivery_planned(self, envelope):
        try:
            return self.app.deliver(envelope.tracking_key, envelope.partition,
                                    envelope.items, self._decide_many)
        except DestinationPaused as paused:
            return paused  # the lane hands the batch back once the pause is over

    def _decide_many(self, requests):
        unanswered = ConsentPending("consent service did not answer")
        with eventlet.Timeout(self.app.settings.rpc_timeout, unanswered):
            answer = self.consent.decide_many(requests)
        if "pending" in answer:
            raise ConsentPending(answer["pending"])
        return answer["decisions"]

    @rpc
    def stats(self):
        return self.app.stats()

    @rpc
    def outcomes(self, destination: str):
        return self.app.outcomes(destination)

    @rpc
    def dead_letters(self, destination: str):
        return self.app.dead_letters(destination)

    @rpc
    def replay(self, destination: str, letter_id: str):
        """None when there is no such destination or dead letter."""
        if destination not in self.app.destinations:
            return None
        try:
            return self.app.replay(destination, letter_id, self._decide_many)
        except KeyError as missing:
            if missing.args != (letter_id,):
                raise
            return None

    @rpc
    def destinations(self):
        return [d.public() for d in self.app.destinations.values()]

    @rpc
    def export_subject(self, profile_ids: list[str], identifiers: list[list[str]]):
        return self.app.export_subject(profile_ids, identifiers)

    @rpc
    def plan_rectification(self, profile_id: str, segments: list[str], traits: dict,
                           request_id: str):
        return self.app.plan_rectification(profile_id, segments, traits, request_id)

    @rpc
    def erase_subject(self, profile_ids: list[str], identifiers: list[list[str]], **hashes):
        """Erasure of one person in this service (services/consent/erasure.py)."""
        return self.app.erase_subject(profile_ids, identifiers, **hashes)

    @rpc
    def delete_at_destinations(self, identifiers: list[list[str]], only: list[str] | None = None,
                               profile_ids: list[str] = ()):
        return self.app.delete_at_destinations(identifiers, only, profile_ids)

    @rpc
    def status(self):
        return service_status(self.name, self.app)
