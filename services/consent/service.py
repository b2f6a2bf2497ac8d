"""consent's nameko entrypoints."""

from __future__ import annotations

import eventlet
from nameko.rpc import RpcProxy, rpc

from services.consent.application import ConsentApplication, ConsentError, NotCaughtUp
from services.consent.erasure import Erasure, ErasureError, ErasureLog
from services.consent.request_rpcs import SubjectRequestRpcs
from services.consent.translation import translator
from shared.contracts import IDENTITY_PROFILE_SPLIT, IDENTITY_RESOLVED
from shared.messaging.nameko_ext import ServiceApp, partitioned_handler, service_status


class ConsentService(SubjectRequestRpcs):
    name = "consent"
    app = ServiceApp(ConsentApplication, translator)
    gateway = RpcProxy("gateway")
    identity = RpcProxy("identity")
    contacts = RpcProxy("contacts")
    segments = RpcProxy("segments")
    activation = RpcProxy("activation")

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

    # ---- erasure (services/consent/erasure.py) -----------------------------------------
    @rpc
    def erase_subject(self, profile_ids: list[str], identifiers: list[list[str]], **hashes):
        return self.app.erase_subject(profile_ids, identifiers, **hashes)

    @rpc
    def erase(self, identifier: list[str], requested_by: str, request_id: str | None = None):
        """Erase the person behind `identifier` everywhere; what was erased, and the
        per-recipient ledger of deletion requests."""
        try:
            return self._erasure().erase(identifier, requested_by, request_id)
        except ErasureError as refused:
            return {"error": {"code": "invalid_erasure", "message": str(refused)}}

    @rpc
    def reapply_erasures(self):
        return self._erasure().reapply()

    def _erasure(self) -> Erasure:
        return Erasure(ErasureLog(self.app.settings), self._call)

    def _call(self, service: str, method: str, **kwargs):
        if service == self.name:
            return getattr(self.app, method)(**kwargs)
        timeout = max(60.0, 6 * self.app.settings.rpc_timeout)  # SQLite files are rewritten
        with eventlet.Timeout(timeout):
            return getattr(getattr(self, service), method)(**kwargs)

    @rpc
    def status(self):
        return service_status(self.name, self.app)


def _answer(action, *args):
    try:
        return action(*args)
    except ConsentError as refused:
        return {"error": {"code": "invalid_consent", "message": str(refused)}}
