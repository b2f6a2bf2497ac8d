"""Whose personal data identity's stored events hold (shared.privacy).

A profile's graph belongs to its profile; an identifier link to its own stream (derived
from the identifier, so erasure finds it from the identifier alone). A merge names two
people: what the absorbed profile brings is sealed under the absorbed profile's key.
"""

from __future__ import annotations

from services.identity.domain import (
    GraphChange,
    IdentifierLink,
    IdentityProfile,
    MatchModelState,
    ResolutionBatch,
    ReviewCase,
)
from shared.privacy import PLAIN, Items, Own, profile_stream

_PROFILE = Own(subject=profile_stream)

RULES = {
    IdentifierLink.Linked: Own(keep=("identifier_type", "profile_id")),
    IdentifierLink.Relinked: PLAIN,
    IdentifierLink.SeenWith: PLAIN,
    IdentifierLink.MarkedGeneric: PLAIN,
    IdentifierLink.Unlinked: PLAIN,
    IdentityProfile.Created: Own(keep=("first_seen", "split_from"), subject=profile_stream),
    IdentityProfile.IdentifierAdded: Own(keep=("type",), subject=profile_stream),
    IdentityProfile.RecordAttached: Own(keep=("record_id", "source"), subject=profile_stream),
    IdentityProfile.EdgeAdded: _PROFILE,
    IdentityProfile.Absorbed: Own(
        keep=("profile_id",), subject=profile_stream,
        others=tuple((name, "profile_id")
                     for name in ("identifiers", "edges", "records", "origin", "absorbed"))),
    IdentityProfile.MergedInto: Own(keep=("survivor_id",), subject=profile_stream),
    IdentityProfile.EdgeRetracted: _PROFILE,
    IdentityProfile.NodeRemoved: _PROFILE,
    IdentityProfile.Split: _PROFILE,
    IdentityProfile.Received: Own(keep=("from_profile", "restored"), subject=profile_stream),
    ReviewCase.Opened: Own(keep=("profile_id", "candidate_id", "score", "at"),
                           subject_field="profile_id",
                           others=(("candidate_node", "candidate_id"),)),
    ReviewCase.Approved: PLAIN,
    ReviewCase.Rejected: PLAIN,
    MatchModelState.Created: PLAIN,
    MatchModelState.Replaced: PLAIN,
    ResolutionBatch.Resolved: Items(),
    GraphChange.ProfileSplit: Items(),
}
