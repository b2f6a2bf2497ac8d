"""segments' domain events -> `segments.membership_changed` items."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from services.segments.domain import MembershipBatch
from shared.contracts import MEMBERSHIP_CHANGED
from shared.partitions import partition_of


def translator(partitions: int):
    def translate(domain_event: Any) -> Iterator[tuple[str, str, dict[str, Any]]]:
        if isinstance(domain_event, MembershipBatch.MembershipsChanged):
            for item in domain_event.items:
                yield MEMBERSHIP_CHANGED, partition_of(item["profile_id"], partitions), dict(item)

    return translate
