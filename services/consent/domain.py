"""Consent, fail-closed: records per identifier and purpose, decisions per profile.

A record is kept against the identifier the person consented with and applies to the
profile that identifier resolves to through deterministic links. A destination gets a
person's data only if every purpose it serves is allowed; no record, an unknown purpose or
a disagreement between linked records means deny.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from eventsourcing.domain import Aggregate, event

_NAMESPACE = uuid.UUID("2f1c9a7e-4b3d-4e21-9c0a-5d6e7f8a9b10")


def record_id(identifier_type: str, value: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"{identifier_type}:{value}")


class ConsentRecord(Aggregate):
    """Everything one identifier's owner said about each purpose (ISO/IEC TS 27560 fields)."""

    @staticmethod
    def create_id(identifier_type: str, value: str) -> uuid.UUID:
        return record_id(identifier_type, value)

    @event("Opened")
    def __init__(self, identifier_type: str, value: str):
        self.identifier_type = identifier_type
        # purpose -> source -> latest entry. Each source (a CMP, the CRM, the API) keeps its
        # own answer: a later answer from the same source replaces the earlier one, while
        # answers from different sources stand side by side (and deny wins between them).
        self.purposes: dict[str, dict[str, dict[str, Any]]] = {}

    def says(self, purpose: str, source: str) -> bool | None:
        entry = self.purposes.get(purpose, {}).get(source)
        return None if entry is None else entry["granted"]

    def entries(self, purpose: str) -> list[dict[str, Any]]:
        return list(self.purposes.get(purpose, {}).values())

    @event("Recorded")
    def record(self, purpose: str, granted: bool, jurisdiction: str, source: str,
               collected_at: str, lawful_basis: str = "consent", policy_version: str = "",
               language: str = "", method: str = "") -> None:
        self.purposes.setdefault(purpose, {})[source] = {
            "granted": granted, "jurisdiction": jurisdiction, "source": source,
            "collected_at": collected_at, "lawful_basis": lawful_basis,
            "policy_version": policy_version, "language": language, "method": method,
            # apply() runs before the aggregate's version moves on to this event's version.
            "version": self.version + 1,
        }


class ProfileLinks(Aggregate):
    """The identifiers deterministically linked to a profile, as identity announced them."""

    @staticmethod
    def create_id(profile_id: str) -> uuid.UUID:
        return uuid.UUID(profile_id)

    @event("Started")
    def __init__(self, profile_id: str):
        self.profile_id = profile_id
        self.identifiers: list[list[str]] = []
        self.merged_into: str | None = None

    def missing(self, identifiers: Iterable[list[str]]) -> list[list[str]]:
        known = {tuple(i) for i in self.identifiers}
        return [list(i) for i in identifiers if tuple(i) not in known]

    @event("Linked")
    def link(self, identifiers: list[list[str]]) -> None:
        self.identifiers.extend(identifiers)

    @event("MergedInto")
    def merge_into(self, survivor_id: str) -> None:
        self.merged_into = survivor_id


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str
    relied_on: list[dict[str, Any]]


def decide(purposes: list[str], records: list[ConsentRecord], known_purposes: set[str],
           jurisdiction: str, known_jurisdictions: set[str]) -> Verdict:
    """All of the destination's purposes must be allowed; anything unclear denies."""
    if jurisdiction not in known_jurisdictions:
        return Verdict(False, f"unknown jurisdiction '{jurisdiction}'", [])
    relied_on = []
    for purpose in purposes:
        if purpose not in known_purposes:
            return Verdict(False, f"unknown purpose '{purpose}'", relied_on)
        answers = []
        for record in records:
            for entry in record.entries(purpose):
                if entry["jurisdiction"] != jurisdiction:
                    continue
                answers.append(entry["granted"])
                relied_on.append({"record": str(record.id), "purpose": purpose,
                                  "source": entry["source"], "version": entry["version"],
                                  "granted": entry["granted"]})
        if not answers:
            return Verdict(False, f"no consent record for purpose '{purpose}'", relied_on)
        if not all(answers):
            return Verdict(False, f"consent to '{purpose}' denied", relied_on)
    return Verdict(True, "all purposes allowed", relied_on)


class DecisionBatch(Aggregate):
    """Decisions made in one `decide_many` call, each with the record versions it relied on."""

    @staticmethod
    def create_id(batch_id: str) -> uuid.UUID:
        return uuid.UUID(batch_id)

    @event("Decided")
    def __init__(self, batch_id: str, decisions: list[dict[str, Any]]):
        self.decisions = decisions
