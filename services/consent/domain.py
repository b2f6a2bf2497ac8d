"""Consent, fail-closed: records per identifier and purpose, decisions per profile.

A record is kept against the identifier the person consented with and applies to the
profile that identifier resolves to through deterministic links. A destination gets a
person's data only if every purpose it serves is allowed; no record, an unknown purpose,
an unknown jurisdiction, a restriction or a disagreement between linked records means deny.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Set
from dataclasses import dataclass
from typing import Any

from eventsourcing.domain import Aggregate, event

_NAMESPACE = uuid.UUID("2f1c9a7e-4b3d-4e21-9c0a-5d6e7f8a9b10")


@functools.lru_cache(maxsize=65536)
def record_id(identifier_type: str, value: str) -> uuid.UUID:
    # Cached: every decision asks it for each of the person's identifiers, and uuid5 hashes.
    return uuid.uuid5(_NAMESPACE, f"{identifier_type}:{value}")


class ConsentRecord(Aggregate):
    """Everything one identifier's owner said about each purpose, per regulation.

    Each entry carries the fields of ISO/IEC TS 27560 and the Kantara consent receipt:
    purpose, lawful basis, notice/policy version, language, collection method,
    jurisdiction, timestamp and source, plus its kind (consent, withdrawal, objection, a
    GPC or TCF signal). GDPR and CCPA answers are kept apart: one never replaces the other.
    """

    @staticmethod
    def create_id(identifier_type: str, value: str) -> uuid.UUID:
        return record_id(identifier_type, value)

    @event("Opened")
    def __init__(self, identifier_type: str, value: str):
        self.identifier_type = identifier_type
        # jurisdiction -> purpose -> source -> latest entry. Each source (a CMP, the CRM,
        # the API) keeps its own answer: a later answer from the same source replaces the
        # earlier one, while answers from different sources stand side by side (and deny
        # wins between them).
        self.regulations: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
        self.restriction: dict[str, Any] | None = None  # GDPR Art. 18, while in force

    def says(self, purpose: str, source: str, jurisdiction: str) -> bool | None:
        entry = self.regulations.get(jurisdiction, {}).get(purpose, {}).get(source)
        return None if entry is None else entry["granted"]

    def entries(self, purpose: str, jurisdiction: str) -> list[dict[str, Any]]:
        return list(self.regulations.get(jurisdiction, {}).get(purpose, {}).values())

    @event("Recorded")
    def record(self, purpose: str, granted: bool, jurisdiction: str, source: str,
               collected_at: str, lawful_basis: str = "consent", policy_version: str = "",
               language: str = "", method: str = "", kind: str = "") -> None:
        by_purpose = self.regulations.setdefault(jurisdiction, {}).setdefault(purpose, {})
        by_purpose[source] = {
            "granted": granted, "jurisdiction": jurisdiction, "source": source,
            "collected_at": collected_at, "lawful_basis": lawful_basis,
            "policy_version": policy_version, "language": language, "method": method,
            "kind": kind or ("consent" if granted else "withdrawal"),
            # apply() runs before the aggregate's version moves on to this event's version.
            "version": self.version + 1,
        }

    @event("RestrictionSet")
    def set_restriction(self, restricted: bool, reason: str, at: str) -> None:
        self.restriction = ({"reason": reason, "at": at, "version": self.version + 1}
                            if restricted else None)


class ProfileLinks(Aggregate):
    """The identifiers deterministically linked to a profile, as identity announced them.

    A profile identity merged into this one through a probabilistic match keeps its own
    identifiers (in `matched`): its consent is its own, never carried to this one's.
    """

    @staticmethod
    def create_id(profile_id: str) -> uuid.UUID:
        return uuid.UUID(profile_id)

    @event("Started")
    def __init__(self, profile_id: str):
        self.profile_id = profile_id
        self.identifiers: list[list[str]] = []
        self.merged_into: str | None = None
        self.matched: list[str] = []  # profiles joined by a probabilistic match
        self.absorbed: list[str] = []  # every profile merged into this one, any rule
        self.jurisdiction: str | None = None  # from an explicit `jurisdiction` trait
        self.source_jurisdiction: str | None = None  # from the first source's configuration

    def holds(self, identifier: list[str] | tuple[str, str]) -> bool:
        return [*identifier] in self.identifiers

    def missing(self, identifiers: Iterable[list[str]]) -> list[list[str]]:
        known = {tuple(i) for i in self.identifiers}
        return [list(i) for i in identifiers if tuple(i) not in known]

    @event("Linked")
    def link(self, identifiers: list[list[str]]) -> None:
        self.identifiers.extend(identifiers)

    @event("MergedInto")
    def merge_into(self, survivor_id: str) -> None:
        self.merged_into = survivor_id

    @event("Absorbed")
    def absorb(self, profile_id: str, probabilistic: bool, matched: list[str]) -> None:
        self.absorbed.append(profile_id)
        if probabilistic:
            self.matched.append(profile_id)
        else:  # its own probabilistic matches come along, still apart
            self.matched.extend(m for m in matched if m not in self.matched)

    @event("Unlinked")
    def unlink(self, identifiers: list[list[str]]) -> None:
        gone = {tuple(i) for i in identifiers}
        self.identifiers = [i for i in self.identifiers if tuple(i) not in gone]

    @event("Separated")
    def separate(self, profile_id: str) -> None:
        """A profile merged into this one has been split off again (by identity)."""
        self.absorbed = [p for p in self.absorbed if p != profile_id]
        self.matched = [p for p in self.matched if p != profile_id]

    @event("Restored")
    def restore(self) -> None:
        self.merged_into = None

    @event("JurisdictionLearnt")
    def learn_jurisdiction(self, jurisdiction: str, by: str) -> None:
        if by == "trait":
            self.jurisdiction = jurisdiction
        else:
            self.source_jurisdiction = jurisdiction

    def jurisdiction_or(self, default: str) -> str:
        return self.jurisdiction or self.source_jurisdiction or default


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str
    relied_on: list[dict[str, Any]]


def decide(purposes: list[str], records: list[ConsentRecord], known_purposes: Set[str],
           jurisdiction: str, known_jurisdictions: Set[str]) -> Verdict:
    """All of the destination's purposes must be allowed; anything unclear denies."""
    if jurisdiction not in known_jurisdictions:
        return Verdict(False, f"unknown jurisdiction '{jurisdiction}'", [])
    relied_on = []
    for record in records:
        if record.restriction is not None:
            relied_on.append({"record": str(record.id), "restriction": record.restriction,
                              "version": record.restriction["version"]})
            return Verdict(False, "processing restricted (GDPR Art. 18): "
                           f"{record.restriction['reason']}", relied_on)
    for purpose in purposes:
        if purpose not in known_purposes:
            return Verdict(False, f"unknown purpose '{purpose}'", relied_on)
        answers = []
        for record in records:
            for entry in record.entries(purpose, jurisdiction):
                answers.append(entry["granted"])
                relied_on.append({"record": str(record.id), "purpose": purpose,
                                  "jurisdiction": jurisdiction, "source": entry["source"],
                                  "version": entry["version"], "granted": entry["granted"]})
        if not answers:
            return Verdict(False, f"no consent record for purpose '{purpose}'", relied_on)
        if not all(answers):
            return Verdict(False, f"consent to '{purpose}' denied", relied_on)
    return Verdict(True, "all purposes allowed", relied_on)


def decide_for_people(purposes: list[str], people: list[list[ConsentRecord]],
                      known_purposes: Set[str], jurisdiction: str,
                      known_jurisdictions: Set[str]) -> Verdict:
    """A profile holding several people (probabilistic matches) is allowed only if every
    one of them is: one person's consent never covers another."""
    relied_on: list[dict[str, Any]] = []
    for records in people:
        verdict = decide(purposes, records, known_purposes, jurisdiction, known_jurisdictions)
        relied_on.extend(verdict.relied_on)
        if not verdict.allowed:
            return Verdict(False, verdict.reason, relied_on)
    return Verdict(True, "all purposes allowed", relied_on)


class ConsentChanges(Aggregate):
    """Changes of consent that matter to activation: the outbox of `consent.changed`."""

    @event("Changed")
    def __init__(self, items: list[dict[str, Any]]):
        self.size = len(items)


class DecisionBatch(Aggregate):
    """Decisions made in one `decide_many` call, each with the record versions it relied on."""

    @staticmethod
    def create_id(batch_id: str) -> uuid.UUID:
        return uuid.UUID(batch_id)

    @event("Decided")
    def __init__(self, batch_id: str, decisions: list[dict[str, Any]]):
        self.decisions = decisions
