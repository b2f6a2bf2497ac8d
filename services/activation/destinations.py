"""Destinations come from a configuration file; their secrets from the environment.

    {"destinations": [{"name": "ads", "kind": "webhook",
                       "config": {"url": "http://127.0.0.1:9000/hooks/{destination}"},
                       "secret_env": "TESSERA_SECRET_ADS",
                       "segments": ["frequent_buyers"], "purposes": ["advertising"]}]}
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate


class DestinationSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=validate.Regexp(r"^[a-z0-9_\-]{1,64}$"))
    kind = fields.String(required=True)
    config = fields.Dict(load_default=dict)
    secret_env = fields.String(load_default=None, allow_none=True)
    segments = fields.List(fields.String(), required=True)
    purposes = fields.List(fields.String(), required=True, validate=validate.Length(min=1))


class DestinationsFileSchema(Schema):
    destinations = fields.List(fields.Nested(DestinationSchema), required=True)


@dataclass(frozen=True)
class Destination:
    name: str
    kind: str
    segments: tuple[str, ...]
    purposes: tuple[str, ...]
    config: dict[str, Any] = field(default_factory=dict, compare=False)

    def follows(self, segment: str) -> bool:
        return segment in self.segments

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "segments": list(self.segments),
                "purposes": list(self.purposes)}


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
        destinations.append(Destination(spec["name"], spec["kind"], tuple(spec["segments"]),
                                        tuple(spec["purposes"]), config))
    return destinations
