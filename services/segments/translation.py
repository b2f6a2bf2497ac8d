"""segments' domain events -> `segments.membership_changed` items."""

from services.segments.domain import MembershipBatch
from shared.contracts import MEMBERSHIP_CHANGED
from shared.outbox import items_by_profile

translator = items_by_profile(MembershipBatch.MembershipsChanged, MEMBERSHIP_CHANGED)
