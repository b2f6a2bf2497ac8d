"""contacts' domain events -> `contacts.profile_changed` items (same partition as the profile),
and, for the changes that were merges or splits, `contacts.profile_reconciled` items too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from services.contacts.domain import ChangeBatch
from shared.contracts import PROFILE_CHANGED, PROFILE_RECONCILED
from shared.partitions import partition_of


def reconciliation_of(change: dict[str, Any]) -> dict[str, Any] | None:
    """The merge or split a profile change was, for destinations holding people's records."""
    if change.get("merged_profiles"):
        kind = "merged"
    elif change.get("split_from"):
        kind = "split"
    else:
        return None
    return {"profile_id": change["profile_id"], "change": kind, "traits": change["traits"],
            "merged_profiles": change.get("merged_profiles") or [],
            "split_from": change.get("split_from"), "cause": change["cause"],
            "received_at": change.get("received_at")}


def translator(partitions: int):
    def translate(domain_event: Any) -> Iterator[tuple[str, str, dict[str, Any]]]:
        if not isinstance(domain_event, ChangeBatch.ProfilesChanged):
            return
        for change in domain_event.items:
            partition = partition_of(change["profile_id"], partitions)
            item = dict(change)
            item.pop("merged_profiles", None)
            yield PROFILE_CHANGED, partition, item
            reconciled = reconciliation_of(change)
            if reconciled is not None:
                yield PROFILE_RECONCILED, partition, reconciled

    return translate
