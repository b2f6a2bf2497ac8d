"""What identity may link: identifier types and their priority, limits, blocked values.

The defaults follow what Segment, RudderStack and Adobe ship (user_id > email > phone >
CRM ids > anonymous_id; one user_id per profile). A deployment overrides them with a JSON
file named by TESSERA_IDENTITY_POLICY_FILE; a bad file is refused with the field and rule.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


class PolicyError(ValueError):
    """A policy that cannot be used; the message names the field and the rule."""


@dataclass(frozen=True)
class IdentifierType:
    name: str
    # At most this many values of the type on one profile (None: no limit).
    limit: int | None = None


DEFAULT_TYPES = (
    IdentifierType("user_id", limit=1),
    IdentifierType("email", limit=5),
    IdentifierType("phone", limit=5),
    IdentifierType("crm_id", limit=3),
    IdentifierType("anonymous_id"),
)
DEFAULT_BLOCKED_VALUES = frozenset({
    "null", "none", "nil", "undefined", "anonymous", "unknown", "n/a", "na", "nan",
    "test@test.com", "test@example.com", "noemail@noemail.com", "none@none.com",
    "email@email.com", "user@example.com",
})
DEFAULT_BLOCKED_PATTERNS = (r"^[0\-]*$", r"^(.)\1{5,}$")


@dataclass(frozen=True)
class IdentityPolicy:
    # Strongest first: the strongest identifier of an event picks its profile.
    types: tuple[IdentifierType, ...] = DEFAULT_TYPES
    max_identifiers: int = 50
    blocked_values: frozenset[str] = DEFAULT_BLOCKED_VALUES
    blocked_patterns: tuple[str, ...] = DEFAULT_BLOCKED_PATTERNS
    # A value seen with more than this many profiles it may not join stops linking.
    generic_after: int = 3
    phone_region: str = "FR"
    dates_day_first: bool = True
    # Probabilistic matching: a match probability at or above `merge_at` merges,
    # between `review_at` and `merge_at` goes to the review queue, below makes a profile.
    merge_at: float = 0.99
    review_at: float = 0.80
    # Sources whose every record is a different person (a CRM's contact table, a census):
    # a profile holds at most one record of each.
    one_record_per_profile: frozenset[str] = frozenset()
    _compiled: tuple[re.Pattern, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "_compiled",
                           tuple(re.compile(p, re.IGNORECASE) for p in self.blocked_patterns))

    @property
    def type_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.types)

    def priority(self, type_name: str) -> int:
        names = self.type_names
        return names.index(type_name) if type_name in names else len(names)

    def limit(self, type_name: str) -> int | None:
        for kind in self.types:
            if kind.name == type_name:
                return kind.limit
        return None

    def is_blocked(self, value: str) -> bool:
        text = value.strip()
        return text.lower() in self.blocked_values or any(p.match(text) for p in self._compiled)

    def with_changes(self, **changes: Any) -> IdentityPolicy:
        return replace(self, **changes)

    # ---- loading ------------------------------------------------------------------------
    @classmethod
    def from_env(cls) -> IdentityPolicy:
        path = os.environ.get("TESSERA_IDENTITY_POLICY_FILE")
        policy = cls.from_mapping(_read_json(path)) if path else cls()
        region = os.environ.get("TESSERA_PHONE_REGION")
        return policy.with_changes(phone_region=region.upper()) if region else policy

    @classmethod
    def from_mapping(cls, raw: dict[str, Any]) -> IdentityPolicy:
        if not isinstance(raw, dict):
            raise PolicyError("policy: must be a JSON object")
        unknown = set(raw) - _FIELDS
        if unknown:
            raise PolicyError(f"{sorted(unknown)[0]}: unknown field (known: {sorted(_FIELDS)})")
        changes: dict[str, Any] = {}
        if "types" in raw:
            changes["types"] = _types(raw["types"])
        for name in ("max_identifiers", "generic_after"):
            if name in raw:
                changes[name] = _positive_int(name, raw[name])
        if "blocked_values" in raw:
            changes["blocked_values"] = frozenset(
                v.lower() for v in _strings("blocked_values", raw["blocked_values"]))
        if "blocked_patterns" in raw:
            changes["blocked_patterns"] = tuple(_patterns(raw["blocked_patterns"]))
        if "one_record_per_profile" in raw:
            changes["one_record_per_profile"] = frozenset(
                _strings("one_record_per_profile", raw["one_record_per_profile"]))
        if "phone_region" in raw:
            region = raw["phone_region"]
            if not (isinstance(region, str) and re.fullmatch(r"[A-Za-z]{2}", region)):
                raise PolicyError("phone_region: must be a two-letter ISO 3166 region code")
            changes["phone_region"] = region.upper()
        for name in ("merge_at", "review_at"):
            if name in raw:
                changes[name] = _probability(name, raw[name])
        policy = cls(**changes)
        if policy.review_at > policy.merge_at:
            raise PolicyError("review_at: must not be above merge_at")
        return policy


def _read_json(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except OSError as unreadable:
        raise PolicyError(f"TESSERA_IDENTITY_POLICY_FILE: cannot read {path} "
                          f"({unreadable.strerror})") from unreadable
    except ValueError as malformed:
        raise PolicyError(f"TESSERA_IDENTITY_POLICY_FILE: {path} is not valid JSON "
                          f"({malformed})") from malformed


_FIELDS = {"types", "max_identifiers", "generic_after", "blocked_values", "blocked_patterns",
           "one_record_per_profile", "phone_region", "merge_at", "review_at"}


def _types(raw: Any) -> tuple[IdentifierType, ...]:
    if not isinstance(raw, list) or not raw:
        raise PolicyError("types: must be a non-empty list, strongest first")
    types = []
    for index, entry in enumerate(raw):
        where = f"types[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise PolicyError(f"{where}.name: required, a string")
        limit = entry.get("limit")
        if limit is not None:
            limit = _positive_int(f"{where}.limit", limit)
        types.append(IdentifierType(entry["name"], limit))
    names = [t.name for t in types]
    if len(set(names)) != len(names):
        raise PolicyError("types: each name may appear once")
    return tuple(types)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PolicyError(f"{name}: must be a whole number of at least 1")
    return value


def _probability(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise PolicyError(f"{name}: must be a probability strictly between 0 and 1")
    return float(value)


def _strings(name: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{name}: must be a list of strings")
    return value


def _patterns(value: Any) -> list[str]:
    patterns = _strings("blocked_patterns", value)
    for index, pattern in enumerate(patterns):
        try:
            re.compile(pattern)
        except re.error as error:
            raise PolicyError(f"blocked_patterns[{index}]: not a regular expression "
                              f"({error})") from error
    return patterns
