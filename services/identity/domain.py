"""Deterministic identity resolution: identifiers seen together belong to one profile.

Identifiers are normalised, blocked values never link, a profile holds at most one
user id, the oldest profile survives a merge and absorbed profiles stay resolvable
(they point at their survivor).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from eventsourcing.domain import Aggregate, event

from services.identity.normalise import normalise_email, normalise_phone

# Highest priority first: the strongest identifier on an event picks its profile.
PRIORITY = ("user_id", "email", "phone", "anonymous_id")
_BLOCKED = re.compile(r"^[0\-]*$")
BLOCKED_VALUES = frozenset(
    {"null", "none", "undefined", "anonymous", "unknown", "n/a", "test@test.com", "nan"}
)
_NAMESPACE = uuid.UUID("6c7a3f1e-2d4b-4c55-9a1e-7f0b3c2d1e00")


@dataclass(frozen=True, order=True)
class Identifier:
    type: str
    value: str

    @property
    def link_id(self) -> uuid.UUID:
        return uuid.uuid5(_NAMESPACE, f"{self.type}:{self.value}")


def is_blocked(value: str) -> bool:
    return bool(_BLOCKED.match(value)) or value.lower() in BLOCKED_VALUES


def identifiers_of(event: dict[str, Any], default_region: str = "FR") -> list[Identifier]:
    """The identifiers an event carries, normalised, blocked ones left out, by priority."""
    traits = event.get("traits") or (event.get("context") or {}).get("traits") or {}
    candidates = [
        ("user_id", event.get("userId")),
        ("anonymous_id", event.get("anonymousId")),
        ("anonymous_id", event.get("previousId")),
        ("email", normalise_email(traits.get("email"))),
        ("phone", normalise_phone(traits.get("phone"), default_region)),
    ]
    found = {
        Identifier(kind, str(value))
        for kind, value in candidates
        if value not in (None, "") and not is_blocked(str(value))
    }
    return sorted(found, key=lambda ident: (PRIORITY.index(ident.type), ident.value))


class IdentifierLink(Aggregate):
    """Which profile an identifier was first linked to (merges are followed from there)."""

    @staticmethod
    def create_id(identifier_type: str, value: str) -> uuid.UUID:
        return Identifier(identifier_type, value).link_id

    @event("Linked")
    def __init__(self, identifier_type: str, value: str, profile_id: str):
        self.identifier_type = identifier_type
        self.profile_id = profile_id


class IdentityProfile(Aggregate):
    @event("Created")
    def __init__(self, first_seen: str):
        self.first_seen = first_seen
        self.identifiers: dict[str, list[str]] = {}
        self.merged_into: str | None = None

    @property
    def user_ids(self) -> set[str]:
        return set(self.identifiers.get("user_id", ()))

    def holds(self, identifier: Identifier) -> bool:
        return identifier.value in self.identifiers.get(identifier.type, ())

    @event("IdentifierAdded")
    def add_identifier(self, type: str, value: str) -> None:
        self.identifiers.setdefault(type, []).append(value)

    @event("Absorbed")
    def absorb(self, profile_id: str, identifiers: dict[str, list[str]]) -> None:
        for kind, values in identifiers.items():
            mine = self.identifiers.setdefault(kind, [])
            mine.extend(v for v in values if v not in mine)

    @event("MergedInto")
    def merge_into(self, survivor_id: str) -> None:
        self.merged_into = survivor_id


def compatible(user_ids: set[str], other: IdentityProfile) -> bool:
    """One user id per profile: two profiles with different user ids never merge."""
    return not (user_ids and other.user_ids and user_ids != other.user_ids)


class ResolutionBatch(Aggregate):
    """What one consumed batch resolved to: the outbox of `identity.resolved`."""

    @event("Resolved")
    def __init__(self, items: list[dict[str, Any]]):
        self.size = len(items)
