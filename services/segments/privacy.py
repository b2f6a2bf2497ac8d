"""Whose personal data segments' stored events hold (shared.privacy): each membership
change carries its profile's traits; definitions name nobody."""

from __future__ import annotations

from services.segments.domain import MembershipBatch, SegmentCatalog
from shared.privacy import PLAIN, Items

RULES = {
    SegmentCatalog.Started: PLAIN,
    SegmentCatalog.SegmentDefined: PLAIN,
    SegmentCatalog.SegmentRemoved: PLAIN,
    SegmentCatalog.ComputedTraitDefined: PLAIN,
    SegmentCatalog.ComputedTraitRemoved: PLAIN,
    MembershipBatch.MembershipsChanged: Items(keep=("profile_id", "segment", "change")),
}
