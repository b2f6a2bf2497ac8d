"""identity's domain events -> `identity.resolved` items, partitioned by profile."""

from services.identity.domain import ResolutionBatch
from shared.contracts import IDENTITY_RESOLVED
from shared.outbox import items_by_profile

translator = items_by_profile(ResolutionBatch.Resolved, IDENTITY_RESOLVED)
