"""identity's nameko entrypoints: thin, load → application → dump."""

from __future__ import annotations

from nameko.rpc import rpc

from services.identity.application import IdentityApplication
from services.identity.translation import translator
from shared.contracts import INGEST_RECEIVED
from shared.messaging.nameko_ext import ServiceApp, partitioned_handler, service_status


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
    def profile_count(self):
        return self.app.profile_count()

    @rpc
    def status(self):
        return service_status(self.name, self.app)
