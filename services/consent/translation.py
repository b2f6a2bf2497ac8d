"""consent's domain events -> `consent.changed` items, each to its profile's partition."""

from services.consent.domain import ConsentChanges
from shared.contracts import CONSENT_CHANGED
from shared.outbox import items_by_profile

translator = items_by_profile(ConsentChanges.Changed, CONSENT_CHANGED)
