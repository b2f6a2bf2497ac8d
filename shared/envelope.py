"""The integration-event envelope: what services say to each other through the broker.

One envelope carries a batch of items of one stream and one partition. Each item has a
`position` (the producer's notification id * 10 000 + its index in that notification), so
a consumer that records the highest position it processed per (producer, stream,
partition) can skip what it already processed, however the relay re-batches a redelivery.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

ITEMS_PER_NOTIFICATION = 10_000


def position_of(notification_id: int, index: int) -> int:
    if index >= ITEMS_PER_NOTIFICATION:
        raise ValueError(f"a notification yields at most {ITEMS_PER_NOTIFICATION} items")
    return notification_id * ITEMS_PER_NOTIFICATION + index


def utcnow_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Envelope:
    type: str
    producer: str
    partition: str
    items: list[dict[str, Any]]
    version: int = 1
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    occurred_at: str = field(default_factory=utcnow_iso)
    correlation_id: str | None = None

    @property
    def routing_key(self) -> str:
        return f"{self.type}.{self.partition}"

    @property
    def tracking_key(self) -> str:
        """What a consumer records its progress under: (producer, stream, partition)."""
        return f"{self.producer}/{self.type}/{self.partition}"

    @property
    def last_position(self) -> int:
        return max(item["position"] for item in self.items)

    def to_message(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "type": self.type,
            "version": self.version,
            "occurred_at": self.occurred_at,
            "producer": self.producer,
            "correlation_id": self.correlation_id,
            "subject": self.partition,
            "payload": {"partition": self.partition, "items": self.items},
        }


class _PayloadSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    partition = fields.String(required=True)
    items = fields.List(fields.Dict(), required=True, validate=validate.Length(min=1))


class EnvelopeSchema(Schema):
    """Consumers load with unknown=EXCLUDE so producers may add fields without breaking them."""

    class Meta:
        unknown = EXCLUDE

    event_id = fields.String(required=True)
    type = fields.String(required=True)
    version = fields.Integer(required=True)
    occurred_at = fields.String(required=True)
    producer = fields.String(required=True)
    correlation_id = fields.String(allow_none=True, load_default=None)
    subject = fields.String(required=True)
    payload = fields.Nested(_PayloadSchema, required=True)


_envelope_schema = EnvelopeSchema()


def load_envelope(message: dict[str, Any]) -> Envelope:
    data = _envelope_schema.load(message)
    items = data["payload"]["items"]
    for index, item in enumerate(items):
        if not isinstance(item.get("position"), int):
            raise ValidationError({"payload": {"items": {index: {"position": ["required int"]}}}})
    return Envelope(
        type=data["type"],
        producer=data["producer"],
        partition=data["payload"]["partition"],
        items=items,
        version=data["version"],
        event_id=data["event_id"],
        occurred_at=data["occurred_at"],
        correlation_id=data["correlation_id"],
    )
