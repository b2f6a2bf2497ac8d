"""Destinations come from a configuration file; their secrets from the environment.

    {"destinations": [{"name": "ads", "kind": "webhook",
                       "config": {"url": "http://127.0.0.1:9000/hooks/{destination}"},
                       "secret_env": "TESSERA_SECRET_ADS",
                       "segments": ["frequent_buyers"], "purposes": ["advertising"]}]}
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from connectors.sdk.delivery import SYNC_MODES
from shared.contracts import LANE_SEPARATOR, lane_partition

MAX_LANES = 32


def lane_of(profile_id: str, lanes: int) -> int:
    """The lane a person's deliveries take: stable across restarts and replicas."""
    return zlib.crc32(profile_id.encode()) % lanes if lanes > 1 else 0


def parse_partition(partition: str) -> tuple[str, int]:
    """(destination, lane) of a delivery partition."""
    destination, _, lane = partition.partition(LANE_SEPARATOR)
    return destination, int(lane) if lane else 0


class DestinationSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=validate.Regexp(r"^[a-z0-9_\-]{1,64}$"))
    kind = fields.String(required=True)
    config = fields.Dict(load_default=dict)
    secret_env = fields.String(load_default=None, allow_none=True)
    # Config field -> environment variable holding its secret (tokens, client secrets).
    secrets_env = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    # How segment changes become operations: add_on_entry, remove_on_exit, upsert_traits,
    # mirror (= add_on_entry + remove_on_exit). Default: what the connector declares.
    sync = fields.List(fields.String(validate=validate.OneOf(sorted(SYNC_MODES))),
                       load_default=None, allow_none=True)
    segments = fields.List(fields.String(), required=True)
    # Send every tracked event of the people it may receive (the connector must declare
    # track_events): off by default, events are far more numerous than segment changes.
    events = fields.Boolean(load_default=False)
    purposes = fields.List(fields.String(), required=True, validate=validate.Length(min=1))
    # Delivery lanes: batches in flight at once for this destination, each lane its own
    # queue and ledger. A person always goes through the same lane, so their changes
    # arrive in order; more lanes hide the vendor's and the database's latency.
    lanes = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_LANES))


class DestinationsFileSchema(Schema):
    destinations = fields.List(fields.Nested(DestinationSchema), required=True)


@dataclass(frozen=True)
class Destination:
    name: str
    kind: str
    segments: tuple[str, ...]
    purposes: tuple[str, ...]
    config: dict[str, Any] = field(default_factory=dict, compare=False)
    sync: tuple[str, ...] | None = None  # None: the connector's default
    events: bool = False  # receives the tracked events too
    lanes: int = 1  # batches in flight at once (see DestinationSchema.lanes)

    def follows(self, segment: str) -> bool:
        return segment in self.segments

    def lane_of(self, profile_id: str) -> int:
        return lane_of(profile_id, self.lanes)

    def partitions(self) -> list[str]:
        return [lane_partition(self.name, lane) for lane in range(self.lanes)]

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "segments": list(self.segments),
                "purposes": list(self.purposes),
                "sync": list(self.sync) if self.sync is not None else None,
                "events": self.events, "lanes": self.lanes}


def load_destinations(path: Path | None) -> list[Destination]:
    if path is None or not path.exists():
        return []
    try:
        data = DestinationsFileSchema().load(json.loads(path.read_text()))
    except ValidationError as error:
        raise ValueError(f"{path}: {error.normalized_messages()}") from error
    destinations = []
    for spec in data["destinations"]:
        config = dict(spec["config"])
        if spec["secret_env"]:
            secret = os.environ.get(spec["secret_env"])
            if not secret:
                raise ValueError(f"destination {spec['name']}: environment variable "
                                 f"{spec['secret_env']} (its secret) is not set")
            config["secret"] = secret
        for config_field, variable in spec["secrets_env"].items():
            config[config_field] = _secret(spec["name"], variable)
        sync = tuple(spec["sync"]) if spec["sync"] is not None else None
        destinations.append(Destination(spec["name"], spec["kind"], tuple(spec["segments"]),
                                        tuple(spec["purposes"]), config, sync,
                                        spec["events"], spec["lanes"]))
    return destinations


def _secret(destination: str, variable: str) -> str:
    value = os.environ.get(variable)
    if not value:
        raise ValueError(f"destination {destination}: environment variable {variable} "
                         "(its secret) is not set")
    return value
