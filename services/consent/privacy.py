"""Whose personal data consent's stored events hold (shared.privacy).

A consent record is kept against an identifier: the identifier's value is sealed under
the record's own stream (derived from the identifier). What was agreed, when and how, is
the evidence consent exists to keep, and names nobody; decisions name profiles only.
"""

from __future__ import annotations

from services.consent.domain import ConsentRecord, DecisionBatch, ProfileLinks
from shared.privacy import PLAIN, Own, profile_stream

RULES = {
    ConsentRecord.Opened: Own(keep=("identifier_type",)),
    ConsentRecord.Recorded: PLAIN,
    ProfileLinks.Started: Own(keep=("profile_id",), subject=profile_stream),
    ProfileLinks.Linked: Own(subject=profile_stream),
    ProfileLinks.MergedInto: PLAIN,
    DecisionBatch.Decided: PLAIN,
}
