"""gateway's domain events -> `ingest.received` items, partitioned by the strongest identifier."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from services.gateway.application import IngestRequest
from services.gateway.domain import partition_key
from shared.contracts import INGEST_RECEIVED
from shared.partitions import partition_of
from shared.privacy import is_erased


def translator(partitions: int):
    def translate(domain_event: Any) -> Iterator[tuple[str, str, dict[str, Any]]]:
        if isinstance(domain_event, IngestRequest.Received):
            for event in domain_event.accepted:
                # An erased person's event keeps its place (positions stay stable); the
                # relay leaves it out (shared.outbox).
                key = event["messageId"] if is_erased(event) else partition_key(event)
                partition = partition_of(key, partitions)
                yield INGEST_RECEIVED, partition, {"source": domain_event.source, "event": event}

    return translate
