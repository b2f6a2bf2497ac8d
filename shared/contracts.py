"""The streams services publish, who consumes them, and what one item of each looks like.

Contracts are versioned: a breaking change gets a new stream name (`…v2`) published beside
the old one for a while. `EXAMPLES` holds one valid item per stream and version; the contract
tests load every example with its schema so the examples cannot rot.
"""

from __future__ import annotations

from marshmallow import INCLUDE, Schema, fields, validate

INGEST_RECEIVED = "ingest.received"
IDENTITY_RESOLVED = "identity.resolved"
IDENTITY_PROFILE_SPLIT = "identity.profile_split"
PROFILE_CHANGED = "contacts.profile_changed"
# The profile changes that were merges or splits, for destinations that hold records of
# people (CRMs): who was merged into whom, or which profile a split part came from.
PROFILE_RECONCILED = "contacts.profile_reconciled"
MEMBERSHIP_CHANGED = "segments.membership_changed"
DELIVERY_PLANNED = "activation.delivery_planned"
CONSENT_CHANGED = "consent.changed"

# stream -> services that consume it (each gets one queue per partition).
CONSUMERS: dict[str, tuple[str, ...]] = {
    INGEST_RECEIVED: ("identity",),
    # activation: the events themselves, for destinations that follow events.
    IDENTITY_RESOLVED: ("contacts", "consent", "activation"),
    IDENTITY_PROFILE_SPLIT: ("contacts", "consent"),
    PROFILE_CHANGED: ("segments",),
    PROFILE_RECONCILED: ("activation",),
    MEMBERSHIP_CHANGED: ("activation",),
    DELIVERY_PLANNED: ("activation",),
    CONSENT_CHANGED: ("activation",),
}

# Streams partitioned by destination name rather than by a hash of the person.
PARTITIONED_BY_DESTINATION = frozenset({DELIVERY_PLANNED})
# A destination's deliveries go through its lanes, a partition each.
LANE_SEPARATOR = "~"  # not allowed in a destination's name; "#" would be a routing wildcard


def lane_partition(destination: str, lane: int) -> str:
    """The queue partition of a destination's lane; lane 0 keeps the destination's name,
    so a destination given more lanes keeps its first queue and ledger."""
    return destination if lane == 0 else f"{destination}{LANE_SEPARATOR}{lane}"


class _Item(Schema):
    class Meta:
        unknown = INCLUDE

    position = fields.Integer(required=True)


class Cause(Schema):
    """Where in identity's log the change started: consent waits until it has read that far."""

    partition = fields.String(required=True)
    position = fields.Integer(required=True)


class IngestReceivedItem(_Item):
    source = fields.String(required=True)
    event = fields.Dict(required=True)


class IdentityResolvedItem(_Item):
    profile_id = fields.String(required=True)
    source = fields.String(required=True)
    event = fields.Dict(required=True)
    identifiers = fields.List(fields.List(fields.String()), required=True)
    merged_from = fields.List(fields.String(), load_default=list)
    # Each merge this event caused: survivor, absorbed, the rule ("seen_together" or
    # "match") and, for a match, its probability.
    merges = fields.List(fields.Dict(), load_default=list)


class SplitPart(Schema):
    profile_id = fields.String(required=True)
    restored = fields.Boolean(required=True)  # True: a profile merged earlier gets its id back
    identifiers = fields.List(fields.String(), required=True)  # "type:value" nodes


class ProfileSplitItem(_Item):
    """A profile fell apart (an edge retracted, a merge rejected, an identifier erased):
    `profile_id` keeps the part holding its first identifier, each part left for its own."""

    profile_id = fields.String(required=True)
    parts = fields.List(fields.Nested(SplitPart), required=True)
    reason = fields.Dict(required=True)


class ProfileChangedItem(_Item):
    profile_id = fields.String(required=True)
    traits = fields.Dict(required=True)
    event = fields.Dict(allow_none=True, load_default=None)
    merged_from = fields.List(fields.String(), load_default=list)
    # Set when identity split a profile: every profile involved is announced, each naming
    # the profile that was split, so memberships can be evaluated again.
    split_from = fields.String(allow_none=True, load_default=None)
    cause = fields.Nested(Cause, required=True)
    received_at = fields.String(allow_none=True, load_default=None)


class MergedProfile(Schema):
    profile_id = fields.String(required=True)
    traits = fields.Dict(required=True)  # as they were just before the merge


class ProfileReconciledItem(_Item):
    """A merge (`merged_profiles`: every profile joined, the survivor first) or a split
    (`split_from`: the profile split; every part is announced, the split one included),
    with the profile's traits after it."""

    profile_id = fields.String(required=True)
    change = fields.String(required=True, validate=validate.OneOf(["merged", "split"]))
    traits = fields.Dict(required=True)
    merged_profiles = fields.List(fields.Nested(MergedProfile), load_default=list)
    split_from = fields.String(allow_none=True, load_default=None)
    cause = fields.Nested(Cause, required=True)
    received_at = fields.String(allow_none=True, load_default=None)


class MembershipChangedItem(_Item):
    profile_id = fields.String(required=True)
    segment = fields.String(required=True)
    change = fields.String(required=True, validate=validate.OneOf(["entered", "exited"]))
    at = fields.String(required=True)
    reason = fields.String(required=True)
    traits = fields.Dict(load_default=dict)
    cause = fields.Nested(Cause, required=True)
    received_at = fields.String(allow_none=True, load_default=None)


class DeliveryPlannedItem(_Item):
    idempotency_key = fields.String(required=True)
    destination = fields.String(required=True)
    profile_id = fields.String(required=True)
    segment = fields.String(allow_none=True)
    action = fields.String(required=True)
    traits = fields.Dict(required=True)
    occurred_at = fields.String(required=True)
    cause = fields.Nested(Cause, required=True)
    received_at = fields.String(allow_none=True, load_default=None)
    # For a merge (action "merged"): every profile joined, the survivor first.
    merged_profiles = fields.List(fields.Nested(MergedProfile), load_default=list)
    split_from = fields.String(allow_none=True, load_default=None)  # for a split
    # A removal planned because consent was withdrawn or processing restricted: sent
    # without a consent decision, and only if the destination holds the person.
    consent_removal = fields.Boolean(load_default=False)
    # An add planned because consent was granted later: skipped if the destination holds
    # the person already.
    consent_activation = fields.Boolean(load_default=False)
    # A tracked event (action "event") for a destination that follows events.
    event = fields.Dict(allow_none=True, load_default=None)
    # The destination's delivery lane the person's deliveries take (0 with one lane).
    lane = fields.Integer(load_default=0)


class ConsentChangedItem(_Item):
    """A change of consent that affects where a person's data may go: `withdrawn` and
    `restricted` remove them from the audiences of destinations serving those purposes;
    `granted` and `restriction_lifted` let activation plan deliveries for the segments
    they are in now (decided, as always, at send time)."""

    profile_id = fields.String(required=True)
    # The profile and every profile merged into it: audiences may hold any of them.
    profile_ids = fields.List(fields.String(), required=True)
    change = fields.String(required=True, validate=validate.OneOf(
        ["withdrawn", "granted", "restricted", "restriction_lifted"]))
    purposes = fields.List(fields.String(), required=True)
    jurisdiction = fields.String(allow_none=True, load_default=None)  # None: every one
    at = fields.String(required=True)


SCHEMAS: dict[tuple[str, int], type[Schema]] = {
    (INGEST_RECEIVED, 1): IngestReceivedItem,
    (IDENTITY_RESOLVED, 1): IdentityResolvedItem,
    (IDENTITY_PROFILE_SPLIT, 1): ProfileSplitItem,
    (PROFILE_CHANGED, 1): ProfileChangedItem,
    (PROFILE_RECONCILED, 1): ProfileReconciledItem,
    (MEMBERSHIP_CHANGED, 1): MembershipChangedItem,
    (DELIVERY_PLANNED, 1): DeliveryPlannedItem,
    (CONSENT_CHANGED, 1): ConsentChangedItem,
}

_TRACK = {
    "type": "track",
    "event": "Order Completed",
    "userId": "u-42",
    "anonymousId": "3b1f0c6e-1b7a-4a77-9d55-0c1b8f7f0c11",
    "messageId": "6f0e2b0a-1f4e-4c1e-9a1e-5c5b1a0b7d21",
    "properties": {"order_id": "o-1001", "revenue": 42.5, "currency": "EUR"},
    "timestamp": "2026-11-29T10:00:00.120Z",
    "receivedAt": "2026-11-29T10:00:00.250Z",
    "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
}
_CAUSE = {"partition": "3", "position": 120_000}

EXAMPLES: dict[tuple[str, int], dict] = {
    (INGEST_RECEIVED, 1): {"position": 70_000, "source": "app", "event": _TRACK},
    (IDENTITY_RESOLVED, 1): {
        "position": 120_000,
        "profile_id": "0b6f7d0e-9c55-4f57-a1c6-1f2d3e4f5a6b",
        "source": "app",
        "event": _TRACK,
        "identifiers": [["user_id", "u-42"], ["anonymous_id", _TRACK["anonymousId"]]],
        "merged_from": [],
        "merges": [],
    },
    (IDENTITY_PROFILE_SPLIT, 1): {
        "position": 120_001,
        "profile_id": "0b6f7d0e-9c55-4f57-a1c6-1f2d3e4f5a6b",
        "parts": [{"profile_id": "5d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "restored": True,
                   "identifiers": ["email:grace@example.com", "anonymous_id:a-77"]}],
        "reason": {"rule": "merge_rejected", "by": "admin",
                   "edge": "anonymous_id:a-77|user_id:u-42"},
    },
    (PROFILE_CHANGED, 1): {
        "position": 90_000,
        "profile_id": "0b6f7d0e-9c55-4f57-a1c6-1f2d3e4f5a6b",
        "traits": {"email": "ada@example.com", "country": "FR"},
        "event": {"type": "track", "event": "Order Completed", "timestamp": _TRACK["timestamp"]},
        "merged_from": [],
        "cause": _CAUSE,
    },
    (PROFILE_RECONCILED, 1): {
        "position": 90_001,
        "profile_id": "0b6f7d0e-9c55-4f57-a1c6-1f2d3e4f5a6b",
        "change": "merged",
        "traits": {"email": "ada@example.com", "phone": "+33612345678"},
        "merged_profiles": [
            {"profile_id": "0b6f7d0e-9c55-4f57-a1c6-1f2d3e4f5a6b",
             "traits": {"email": "ada@example.com"}},
            {"profile_id": "5d1c2b3a-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
             "traits": {"email": "ada.l@example.org", "phone": "+33612345678"}}],
        "cause": _CAUSE,
    },
    (MEMBERSHIP_CHANGED, 1): {
        "position": 30_000,
        "profile_id": "0b6f7d0e-9c55-4f57-a1c6-1f2d3e4f5a6b",
        "segment": "frequent_buyers",
        "change": "entered",
        "at": "2026-11-29T10:00:00.300Z",
        "reason": "Order Completed at_least 3 within 90 days",
        "cause": _CAUSE,
    },
    (DELIVERY_PLANNED, 1): {
        "position": 50_000,
        "idempotency_key": "ads:0b6f7d0e-9c55-4f57-a1c6-1f2d3e4f5a6b:frequent_buyers:30000",
        "destination": "ads",
        "profile_id": "0b6f7d0e-9c55-4f57-a1c6-1f2d3e4f5a6b",
        "segment": "frequent_buyers",
        "action": "entered",
        "traits": {"email": "ada@example.com"},
        "occurred_at": "2026-11-29T10:00:00.300Z",
        "cause": _CAUSE,
    },
    (CONSENT_CHANGED, 1): {
        "position": 40_000,
        "profile_id": "0b6f7d0e-9c55-4f57-a1c6-1f2d3e4f5a6b",
        "profile_ids": ["0b6f7d0e-9c55-4f57-a1c6-1f2d3e4f5a6b"],
        "change": "withdrawn",
        "purposes": ["advertising"],
        "jurisdiction": "GDPR",
        "at": "2026-11-29T10:00:01.000Z",
    },
}
