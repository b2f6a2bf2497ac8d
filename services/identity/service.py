"""identity's nameko entrypoints: thin, load → application → dump."""

from __future__ import annotations

from nameko.rpc import rpc

from services.identity.application import IdentityApplication, IdentityError
from services.identity.translation import translator
from shared.contracts import INGEST_RECEIVED
from shared.messaging.nameko_ext import ServiceApp, partitioned_handler, service_status


def _answer(call, *args, **kwargs):
    """A refused request comes back as {"error": {code, message}}, never as an RPC failure."""
    try:
        return {"result": call(*args, **kwargs)}
    except IdentityError as refused:
        return {"error": {"code": "invalid_identity_request", "message": str(refused)}}


class IdentityService:
    name = "identity"
    app = ServiceApp(IdentityApplication, translator)

    @partitioned_handler(INGEST_RECEIVED, "identity")
    def on_ingest_received(self, envelope):
        return self.app.resolve_batch(envelope.tracking_key, envelope.items)

    @rpc
    def profile_id_for(self, identifier_type: str, value: str):
        return self.app.profile_id_for(identifier_type, value)

    @rpc
    def identifiers_of(self, profile_id: str):
        return self.app.identifiers_of_profile(profile_id)

    @rpc
    def export_subject(self, profile_ids: list[str], identifiers: list[list[str]]):
        return self.app.export_subject(profile_ids, identifiers)

    @rpc
    def profile_count(self):
        return self.app.profile_count()

    @rpc
    def explain(self, profile_id: str):
        return self.app.explain(profile_id)

    @rpc
    def review_cases(self, status: str = "open"):
        return _answer(self.app.review_cases, status)

    @rpc
    def decide_case(self, case_id: str, approve: bool, by: str):
        return _answer(self.app.decide_case, case_id, approve, by)

    @rpc
    def retract_edge(self, profile_id: str, a: str, b: str, by: str):
        return _answer(self.app.retract_edge, profile_id, a, b, by)

    @rpc
    def reject_merge(self, absorbed_id: str, by: str):
        return _answer(self.app.reject_merge, absorbed_id, by)

    @rpc
    def erase_identifier(self, identifier_type: str, value: str, by: str):
        return _answer(self.app.erase_identifier, identifier_type, value, by)

    @rpc
    def erase_record(self, record_id: str, by: str):
        return _answer(self.app.erase_record, record_id, by)

    @rpc
    def match_weights(self):
        return self.app.match_weights()

    @rpc
    def estimate_match_weights(self):
        return _answer(self.app.estimate_match_weights)

    @rpc
    def generic_identifiers(self):
        return self.app.generic_identifiers()

    @rpc
    def erase_subject(self, profile_ids: list[str], identifiers: list[list[str]], **hashes):
        """Erasure of one person in this service (services/consent/erasure.py)."""
        return self.app.erase_subject(profile_ids, identifiers, **hashes)

    @rpc
    def subject_of(self, identifier_type: str, value: str):
        """Who an erasure must reach: the person's profiles and linked identifiers."""
        return self.app.subject_of(identifier_type, value)

    @rpc
    def status(self):
        return service_status(self.name, self.app)
