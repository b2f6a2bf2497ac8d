"""identity's domain events -> integration items, each to its profile's partition.

`identity.resolved` carries every resolved event (with the merges it caused, each naming
its rule); `identity.profile_split` carries each split: the profile that was split and the
profiles its parts went to.
"""

from services.identity.domain import GraphChange, ResolutionBatch
from shared.contracts import IDENTITY_PROFILE_SPLIT, IDENTITY_RESOLVED
from shared.outbox import items_by_profile


def translator(partitions: int):
    resolved = items_by_profile(ResolutionBatch.Resolved, IDENTITY_RESOLVED)(partitions)
    splits = items_by_profile(GraphChange.ProfileSplit, IDENTITY_PROFILE_SPLIT)(partitions)

    def translate(domain_event):
        yield from resolved(domain_event)
        yield from splits(domain_event)

    return translate
