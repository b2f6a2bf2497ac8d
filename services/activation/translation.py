"""activation's domain events -> `activation.delivery_planned` items, a queue per lane."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from services.activation.domain import DeliveryPlan
from shared.contracts import DELIVERY_PLANNED, lane_partition


def translator(partitions: int):
    def translate(domain_event: Any) -> Iterator[tuple[str, str, dict[str, Any]]]:
        if isinstance(domain_event, DeliveryPlan.Planned):
            for item in domain_event.items:
                partition = lane_partition(item["destination"], item.get("lane", 0))
                yield DELIVERY_PLANNED, partition, dict(item)

    return translate
