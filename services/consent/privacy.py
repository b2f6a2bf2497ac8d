"""Whose personal data consent's stored events hold (shared.privacy).

A consent record is kept against an identifier: the identifier's value is sealed under
the record's own stream (derived from the identifier). What was agreed, when and how, is
the evidence consent exists to keep, and names nobody; decisions name profiles only.
"""

from __future__ import annotations

from typing import Any

from services.consent.domain import ConsentChanges, ConsentRecord, DecisionBatch, ProfileLinks
from services.consent.requests import SubjectRequest
from shared.privacy import PLAIN, Own, profile_stream, subject_of_identifier


def requester(state: dict[str, Any]) -> str:
    """A request's identifiers belong to the person it was filed for: erasing them shreds
    that person's key, and the request stays on the record without them."""
    identifiers = state.get("identifiers") or [["request", "unknown"]]
    return subject_of_identifier(*identifiers[0])


RULES = {
    ConsentRecord.Opened: Own(keep=("identifier_type",)),
    ConsentRecord.Recorded: PLAIN,
    ProfileLinks.Started: Own(keep=("profile_id",), subject=profile_stream),
    ProfileLinks.Linked: Own(subject=profile_stream),
    ProfileLinks.MergedInto: PLAIN,
    DecisionBatch.Decided: PLAIN,
    ConsentRecord.RestrictionSet: Own(keep=("restricted", "at")),  # the reason is free text
    ProfileLinks.Absorbed: PLAIN,  # profile ids
    ProfileLinks.JurisdictionLearnt: PLAIN,
    ProfileLinks.Restored: PLAIN,
    ProfileLinks.Separated: PLAIN,
    ProfileLinks.Unlinked: Own(subject=profile_stream),
    ConsentChanges.Changed: PLAIN,  # profile ids, purposes, jurisdictions: the outbox
    # What a compliance officer must keep showing (kind, dates, who acted) stays readable;
    # the rest (identifiers, details, evidence, notices, outcomes) is sealed.
    SubjectRequest.Received: Own(keep=("kind", "regulation", "received_at", "due_at",
                                       "filed_by"), subject_of_state=requester),
    SubjectRequest.Verified: Own(keep=("method", "verified_by", "at")),
    SubjectRequest.Extended: Own(keep=("extended_by", "at", "due_at")),
    SubjectRequest.Completed: Own(keep=("completed_by", "at")),
    SubjectRequest.Rejected: Own(keep=("rejected_by", "at")),
}
