"""contacts' domain events -> `contacts.profile_changed` items (same partition as the profile)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from services.contacts.domain import ChangeBatch
from shared.contracts import PROFILE_CHANGED
from shared.partitions import partition_of


def translator(partitions: int):
    def translate(domain_event: Any) -> Iterator[tuple[str, str, dict[str, Any]]]:
        if isinstance(domain_event, ChangeBatch.ProfilesChanged):
            for item in domain_event.items:
                yield PROFILE_CHANGED, partition_of(item["profile_id"], partitions), dict(item)

    return translate
