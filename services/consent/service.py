"""consent's nameko entrypoints."""

from __future__ import annotations

from nameko.rpc import rpc

from services.consent.application import ConsentApplication, ConsentError, NotCaughtUp
from services.consent.translation import translator
from shared.contracts import IDENTITY_PROFILE_SPLIT, IDENTITY_RESOLVED
from shared.messaging.nameko_ext import ServiceApp, partitioned_handler, service_status


class ConsentService:
    name = "consent"
    app = ServiceApp(ConsentApplication, translator)

    @partitioned_handler(IDENTITY_RESOLVED, "consent")
    def on_identity_resolved(self, envelope):
        return self.app.apply_resolved(envelope.tracking_key, envelope.items)

    @partitioned_handler(IDENTITY_PROFILE_SPLIT, "consent")
    def on_profile_split(self, envelope):
        return self.app.apply_splits(envelope.tracking_key, envelope.items)

    @rpc
    def decide_many(self, requests: list[dict]):
        try:
            return {"decisions": self.app.decide_many(requests)}
        except NotCaughtUp as lagging:
            return {"pending": str(lagging)}

    @rpc
    def record_consent(self, identifiers: list, purposes: dict, source: str, **receipt):
        return self.app.record_consent([tuple(i) for i in identifiers], purposes, source=source,
                                       **receipt)

    @rpc
    def record_objection(self, identifiers: list, purposes: list | None, source: str,
                         method: str = "objection"):
        """{"records", "purposes", "jurisdictions"} or {"error": {"code", "message"}}."""
        return _answer(self.app.record_objection, identifiers, purposes, source, method)

    @rpc
    def set_restriction(self, identifiers: list, restricted: bool, reason: str):
        """{"records", "restricted"} or {"error": {"code", "message"}}."""
        return _answer(self.app.set_restriction, identifiers, restricted, reason)

    @rpc
    def record_tc_string(self, identifiers: list, tc_string: str, source: str,
                         collected_at: str | None = None):
        return self.app.record_tc_string(identifiers, tc_string, source, collected_at)

    @rpc
    def record_gpc(self, identifiers: list, source: str):
        return self.app.record_gpc(identifiers, source)

    @rpc
    def purposes(self):
        return self.app.purposes()

    @rpc
    def consent_of(self, profile_id: str):
        return self.app.consent_of(profile_id)

    @rpc
    def decision(self, decision_id: str):
        return self.app.decision(decision_id)

    @rpc
    def status(self):
        return service_status(self.name, self.app)


def _answer(action, *args):
    try:
        return action(*args)
    except ConsentError as refused:
        return {"error": {"code": "invalid_consent", "message": str(refused)}}
