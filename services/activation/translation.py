"""activation's domain events -> `activation.delivery_planned` items, one queue per destination."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from services.activation.domain import DeliveryPlan
from shared.contracts import DELIVERY_PLANNED


def translator(partitions: int):
    def translate(domain_event: Any) -> Iterator[tuple[str, str, dict[str, Any]]]:
        if isinstance(domain_event, DeliveryPlan.Planned):
            for item in domain_event.items:
                yield DELIVERY_PLANNED, item["destination"], dict(item)

    return translate
