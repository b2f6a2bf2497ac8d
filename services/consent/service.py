"""consent's nameko entrypoints."""

from __future__ import annotations

from nameko.rpc import rpc

from services.consent.application import ConsentApplication, NotCaughtUp
from services.consent.request_rpcs import SubjectRequestRpcs
from shared.contracts import IDENTITY_RESOLVED
from shared.messaging.nameko_ext import ServiceApp, partitioned_handler, service_status


class ConsentService(SubjectRequestRpcs):
    name = "consent"
    app = ServiceApp(ConsentApplication)

    @partitioned_handler(IDENTITY_RESOLVED, "consent")
    def on_identity_resolved(self, envelope):
        return self.app.apply_resolved(envelope.tracking_key, envelope.items)

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
    def consent_of(self, profile_id: str):
        return self.app.consent_of(profile_id)

    @rpc
    def decision(self, decision_id: str):
        return self.app.decision(decision_id)

    @rpc
    def status(self):
        return service_status(self.name, self.app)
