"""Identity resolution's aggregates: identifier links, profiles as graphs, review cases.

Identifiers are normalised, blocked values never link, guards keep a profile to one
user id and a few values of each type, the oldest profile survives a merge and absorbed
profiles stay resolvable (they point at their survivor). Every merge, split and retraction
is an event naming the rule or score behind it, so each can be explained and undone.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from eventsourcing.domain import Aggregate, event

from services.identity.graph import RECORD, components, edge_key, node, node_kind, node_value
from services.identity.normalise import normalise_email, normalise_phone
from services.identity.policy import IdentityPolicy

DEFAULT_POLICY = IdentityPolicy()
# Highest priority first: the strongest identifier on an event picks its profile.
PRIORITY = DEFAULT_POLICY.type_names
_NAMESPACE = uuid.UUID("6c7a3f1e-2d4b-4c55-9a1e-7f0b3c2d1e00")


@dataclass(frozen=True, order=True)
class Identifier:
    type: str
    value: str

    @property
    def link_id(self) -> uuid.UUID:
        return uuid.uuid5(_NAMESPACE, f"{self.type}:{self.value}")

    @property
    def node(self) -> str:
        return node(self.type, self.value)


def is_blocked(value: str, policy: IdentityPolicy = DEFAULT_POLICY) -> bool:
    return policy.is_blocked(value)


def identifiers_of(event: dict[str, Any], policy: IdentityPolicy | str = DEFAULT_POLICY
                   ) -> list[Identifier]:
    """The identifiers an event carries, normalised, blocked ones left out, by priority."""
    if isinstance(policy, str):  # a bare phone region, as older callers pass it
        policy = DEFAULT_POLICY.with_changes(phone_region=policy)
    traits = event.get("traits") or (event.get("context") or {}).get("traits") or {}
    candidates = [
        ("user_id", event.get("userId")),
        ("anonymous_id", event.get("anonymousId")),
        ("anonymous_id", event.get("previousId")),
        ("email", normalise_email(traits.get("email"))),
        ("phone", normalise_phone(traits.get("phone"), policy.phone_region)),
    ]
    for external in (event.get("context") or {}).get("externalIds") or ():
        if isinstance(external, dict) and external.get("type") in policy.type_names:
            candidates.append((external["type"], external.get("id")))
    known = set(policy.type_names)
    found = {
        Identifier(kind, str(value).strip())
        for kind, value in candidates
        if kind in known and value not in (None, "") and not policy.is_blocked(str(value))
    }
    return sorted(found, key=lambda ident: (policy.priority(ident.type), ident.value))


class IdentifierLink(Aggregate):
    """Which profile an identifier belongs to (merges are followed from there)."""

    @staticmethod
    def create_id(identifier_type: str, value: str) -> uuid.UUID:
        return Identifier(identifier_type, value).link_id

    @event("Linked")
    def __init__(self, identifier_type: str, value: str, profile_id: str):
        self.identifier_type = identifier_type
        self.value = value
        self.profile_id: str | None = profile_id
        self.seen_with: list[str] = []
        self.generic = False

    @event("Relinked")
    def relink(self, profile_id: str, reason: str) -> None:
        self.profile_id = profile_id

    @event("SeenWith")
    def seen_with_profile(self, profile_id: str) -> None:
        """Seen on an event of a profile it may not join (another user id, a full type)."""
        self.seen_with.append(profile_id)

    @event("MarkedGeneric")
    def mark_generic(self, profiles: int, profile_id: str | None = None) -> None:
        """`profile_id`: the profile it belonged to when it was found generic."""
        self.generic = True

    @event("Unlinked")
    def unlink(self, reason: str) -> None:
        self.profile_id = None


class IdentityProfile(Aggregate):
    """One person: the identifiers and records of one connected component, and its edges."""

    @event("Created")
    def __init__(self, first_seen: str, split_from: str | None = None,
                 record: dict[str, Any] | None = None):
        """`record`: the record that starts the profile, when it comes with no identifier
        (one event instead of two: most records of an import start a profile)."""
        self.first_seen = first_seen
        self.identifiers: dict[str, list[str]] = {}
        self.edges: dict[str, dict[str, Any]] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self.origin: str | None = None
        if record is not None:
            self.records[record["id"]] = {"source": record["source"],
                                          "attributes": record["attributes"]}
            self.origin = node(RECORD, record["id"])
        self.merged_into: str | None = None
        self.merge_reason: dict[str, Any] | None = None
        self.absorbed: dict[str, str | None] = {}  # absorbed profile id -> its origin node
        self.split_from = split_from

    @property
    def user_ids(self) -> set[str]:
        return set(self.identifiers.get("user_id", ()))

    @property
    def nodes(self) -> list[str]:
        found = [node(kind, v) for kind, values in self.identifiers.items() for v in values]
        return found + [node(RECORD, r) for r in self.records]

    def holds(self, identifier: Identifier) -> bool:
        return identifier.value in self.identifiers.get(identifier.type, ())

    def count(self, type_name: str) -> int:
        return len(self.identifiers.get(type_name, ()))

    def sources(self) -> set[str]:
        return {r["source"] for r in self.records.values()}

    # ---- growing ------------------------------------------------------------------------
    @event("IdentifierAdded")
    def add_identifier(self, type: str, value: str, edge: dict[str, Any] | None = None) -> None:
        self.identifiers.setdefault(type, []).append(value)
        self.origin = self.origin or node(type, value)
        if edge is not None:
            self.edges[edge_key(edge["a"], edge["b"])] = edge

    @event("RecordAttached")
    def attach_record(self, record_id: str, source: str, attributes: dict[str, Any],
                      edge: dict[str, Any] | None = None) -> None:
        self.records[record_id] = {"source": source, "attributes": attributes}
        self.origin = self.origin or node(RECORD, record_id)
        if edge is not None:
            self.edges[edge_key(edge["a"], edge["b"])] = edge

    @event("EdgeAdded")
    def add_edge(self, edge: dict[str, Any]) -> None:
        self.edges[edge_key(edge["a"], edge["b"])] = edge

    # ---- merging ------------------------------------------------------------------------
    @event("Absorbed")
    def absorb(self, profile_id: str, identifiers: dict[str, list[str]],
               edges: dict[str, dict[str, Any]] | None = None,
               records: dict[str, dict[str, Any]] | None = None,
               origin: str | None = None, absorbed: dict[str, str | None] | None = None,
               reason: dict[str, Any] | None = None) -> None:
        for kind, values in identifiers.items():
            mine = self.identifiers.setdefault(kind, [])
            mine.extend(v for v in values if v not in mine)
        self.edges.update(edges or {})
        self.records.update(records or {})
        self.absorbed[profile_id] = origin
        self.absorbed.update(absorbed or {})

    @event("MergedInto")
    def merge_into(self, survivor_id: str, reason: dict[str, Any] | None = None) -> None:
        self.merged_into = survivor_id
        self.merge_reason = reason

    def contents(self) -> dict[str, Any]:
        return {"identifiers": {k: list(v) for k, v in self.identifiers.items()},
                "edges": dict(self.edges), "records": dict(self.records),
                "origin": self.origin, "absorbed": dict(self.absorbed)}

    # ---- taking apart -------------------------------------------------------------------
    @event("EdgeRetracted")
    def retract_edge(self, key: str, reason: dict[str, Any]) -> None:
        self.edges.pop(key, None)

    @event("NodeRemoved")
    def remove_node(self, name: str, reason: dict[str, Any]) -> None:
        """An identifier or record leaves the graph (erasure, or a value found generic)."""
        self._forget(name)
        self.edges = {k: e for k, e in self.edges.items() if name not in (e["a"], e["b"])}
        if self.origin == name:
            self.origin = self.nodes[0] if self.nodes else None

    def _forget(self, name: str) -> None:
        kind, value = node_kind(name), node_value(name)
        if kind == RECORD:
            self.records.pop(value, None)
        elif value in self.identifiers.get(kind, ()):
            self.identifiers[kind].remove(value)
            if not self.identifiers[kind]:
                del self.identifiers[kind]

    def parts(self) -> list[list[str]]:
        """The components the graph falls into; the one holding the origin comes first."""
        found = components(self.nodes, self.edges.values())
        found.sort(key=lambda members: self.origin not in members)
        return found

    def part_contents(self, members: list[str], target_id: str) -> dict[str, Any]:
        """What a part of this graph takes with it to the profile `target_id`: its nodes,
        the edges between them, and the merges whose origins are among them."""
        inside = set(members)
        identifiers: dict[str, list[str]] = {}
        for name in members:
            if node_kind(name) != RECORD:
                identifiers.setdefault(node_kind(name), []).append(node_value(name))
        own_origin = self.absorbed.get(target_id)
        return {"identifiers": identifiers,
                "edges": {k: e for k, e in self.edges.items()
                          if e["a"] in inside and e["b"] in inside},
                "records": {node_value(n): self.records[node_value(n)] for n in members
                            if node_kind(n) == RECORD},
                "origin": own_origin if own_origin in inside else members[0],
                "absorbed": {pid: origin for pid, origin in self.absorbed.items()
                             if origin in inside and pid != target_id}}

    @event("Split")
    def split(self, parts: list[dict[str, Any]], reason: dict[str, Any]) -> None:
        """Nodes of each part leave for the profile named beside them; history stays here."""
        leaving = {name for part in parts for name in part["nodes"]}
        for name in leaving:
            self._forget(name)
        self.edges = {k: e for k, e in self.edges.items()
                      if e["a"] not in leaving and e["b"] not in leaving}
        for part in parts:
            self.absorbed.pop(part["profile_id"], None)

    @event("Received")
    def receive(self, contents: dict[str, Any], from_profile: str, reason: dict[str, Any],
                restored: bool = False) -> None:
        """The part of a split profile this one now holds (a restored or a new profile)."""
        self.identifiers = contents["identifiers"]
        self.edges = contents["edges"]
        self.records = contents["records"]
        self.origin = contents["origin"]
        self.absorbed = contents["absorbed"]
        self.merged_into = None
        self.merge_reason = None


class ReviewCase(Aggregate):
    """A probable match not strong enough to merge alone: a person decides."""

    @event("Opened")
    def __init__(self, record_node: str, profile_id: str, candidate_id: str, score: float,
                 comparison: dict[str, Any], at: str, candidate_node: str = ""):
        self.record_node = record_node
        self.candidate_node = candidate_node
        self.profile_id = profile_id
        self.candidate_id = candidate_id
        self.score = score
        self.comparison = comparison
        self.at = at
        self.status = "open"
        self.decided_by: str | None = None

    @event("Approved")
    def approve(self, by: str) -> None:
        self.status, self.decided_by = "approved", by

    @event("Rejected")
    def reject(self, by: str) -> None:
        self.status, self.decided_by = "rejected", by

    def view(self) -> dict[str, Any]:
        return {"case_id": str(self.id), "record": self.record_node,
                "profile_id": self.profile_id, "candidate_id": self.candidate_id,
                "score": self.score, "comparison": self.comparison, "at": self.at,
                "status": self.status, "decided_by": self.decided_by}


class MatchModelState(Aggregate):
    """The Fellegi-Sunter weights in use, estimated from unlabelled records or configured."""

    @staticmethod
    def create_id() -> uuid.UUID:
        return uuid.uuid5(_NAMESPACE, "match-model")

    @event("Created")
    def __init__(self, model: dict[str, Any]):
        self.model = model

    @event("Replaced")
    def replace(self, model: dict[str, Any]) -> None:
        self.model = model


def compatible(user_ids: set[str], other: IdentityProfile) -> bool:
    """One user id per profile: two profiles with different user ids never merge."""
    return not (user_ids and other.user_ids and user_ids != other.user_ids)


class ResolutionBatch(Aggregate):
    """What one consumed batch resolved to: the outbox of `identity.resolved`."""

    @event("Resolved")
    def __init__(self, items: list[dict[str, Any]]):
        self.size = len(items)


class GraphChange(Aggregate):
    """A split or retraction decided outside any consumed batch: the outbox of splits."""

    @event("ProfileSplit")
    def __init__(self, items: list[dict[str, Any]]):
        self.size = len(items)
