"""contacts' domain events -> `contacts.profile_changed` items (same partition as the profile)."""

from services.contacts.domain import ChangeBatch
from shared.contracts import PROFILE_CHANGED
from shared.outbox import items_by_profile

translator = items_by_profile(ChangeBatch.ProfilesChanged, PROFILE_CHANGED)
