"""contacts' nameko entrypoints."""

from __future__ import annotations

from nameko.rpc import rpc

from services.contacts.application import ContactsApplication
from services.contacts.translation import translator
from shared.contracts import IDENTITY_PROFILE_SPLIT, IDENTITY_RESOLVED
from shared.messaging.nameko_ext import ServiceApp, partitioned_handler, service_status


class ContactsService:
    name = "contacts"
    app = ServiceApp(ContactsApplication, translator)

    @partitioned_handler(IDENTITY_RESOLVED, "contacts")
    def on_identity_resolved(self, envelope):
        return self.app.apply_batch(envelope.tracking_key, envelope.partition, envelope.items)

    @partitioned_handler(IDENTITY_PROFILE_SPLIT, "contacts")
    def on_profile_split(self, envelope):
        return self.app.apply_splits(envelope.tracking_key, envelope.partition, envelope.items)

    @rpc
    def get_profile(self, profile_id: str):
        return self.app.profile(profile_id)

    @rpc
    def timeline(self, profile_id: str, limit: int = 100):
        return self.app.timeline(profile_id, limit)

    @rpc
    def status(self):
        return service_status(self.name, self.app)
