"""identity's domain events -> `identity.resolved` items, partitioned by profile."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from services.identity.domain import ResolutionBatch
from shared.contracts import IDENTITY_RESOLVED
from shared.partitions import partition_of


def translator(partitions: int):
    def translate(domain_event: Any) -> Iterator[tuple[str, str, dict[str, Any]]]:
        if isinstance(domain_event, ResolutionBatch.Resolved):
            for item in domain_event.items:
                yield IDENTITY_RESOLVED, partition_of(item["profile_id"], partitions), dict(item)

    return translate
