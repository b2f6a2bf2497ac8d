"""Deciding which definitions a change touches, and re-evaluating only those.

A profile as segments sees it is a plain dict (kept in the read model, see application):

    {"traits": {...}, "events": {name: [[epoch, properties], ...]},
     "computed": {trait: value}, "segments": {segment, ...},
     "due": epoch or None, "merged_into": None}

Stored, "segments" is kept apart from the rest (`encode_segments`, `encode_profile`).

`Definitions` compiles the catalog once per version into a dependency index: trait, event
and segment keys -> the computed traits and segments that read them. A change names the
keys it touched; only their dependents are re-evaluated, computed traits first (segments
may read them), then segments in dependency order, so a segment that reads another sees
its new answer in the same pass.

`due` is the next moment time alone may change one of the profile's answers. It is exact
after a pass over every timed definition (an expiry tick, a merge) and may only be early,
never late, after a partial pass: a partial pass lowers it to the soonest expiry it saw
and otherwise keeps it. An early wake-up costs one evaluation and finds the exact moment.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from services.segments.rules import (
    ComputedTrait,
    Rule,
    State,
    compile_computed,
    compile_rule,
    describe,
    referenced_segments,
)

# Behaviour older than this can satisfy no window we allow: prune it to bound the state.
MAX_WINDOW_SECONDS = 3650 * 86_400.0
MAX_OCCURRENCES_PER_EVENT = 1000

Key = tuple[str, str]
TIME: Key = ("time", "")
EVERYTHING: Key = ("all", "")
_NOTHING: frozenset = frozenset()


def trait_key(name: str) -> Key:
    return ("trait", name)


def event_key(name: str) -> Key:
    return ("event", name)


def segment_key(name: str) -> Key:
    return ("segment", name)


def definition_key(name: str) -> Key:
    return ("definition", name)


def new_profile() -> dict[str, Any]:
    return {"traits": {}, "events": EventLog(), "computed": {}, "segments": set(), "due": None,
            "merged_into": None}


class EventLog(dict):
    """A profile's occurrences per event name, decoded only for the names that are read.

    Stored, each name's occurrences are a JSON string inside the profile's document: a
    profile loads with one string per event name, and a rule that reads one event decodes
    that one (most of a document is behaviour, and most passes read little of it).
    """

    def _decoded(self, name: str) -> Any:
        value = dict.get(self, name)
        if isinstance(value, str):
            value = orjson.loads(value)
            dict.__setitem__(self, name, value)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        value = self._decoded(name)
        return default if value is None else value

    def __getitem__(self, name: str) -> Any:
        if name not in self:
            raise KeyError(name)
        return self._decoded(name)

    def setdefault(self, name: str, default: Any = None) -> Any:
        if name not in self:
            dict.__setitem__(self, name, default)
        return self._decoded(name)

    def items(self):
        return [(name, self._decoded(name)) for name in list(self.keys())]

    def values(self):
        return [value for _, value in self.items()]

    def encoded(self) -> dict[str, str]:
        return {name: value if isinstance(value, str) else orjson.dumps(value).decode()
                for name, value in dict.items(self)}


def encode_profile(profile: dict[str, Any]) -> bytes:
    """The profile's document, without its memberships (`encode_segments`): a backfill
    that changes only memberships then writes a short row, not the whole document."""
    events = profile["events"]
    encoded = events.encoded() if isinstance(events, EventLog) else EventLog(events).encoded()
    document = {**profile, "events": encoded}
    del document["segments"]
    return orjson.dumps(document)


def encode_segments(profile: dict[str, Any]) -> str:
    return orjson.dumps(sorted(profile["segments"])).decode()


def decode_profile(document: bytes, segments: str | None = None) -> dict[str, Any]:
    """A profile from its document and its memberships, kept beside it. A profile not
    written since memberships moved out of documents has none beside it: its document
    holds them."""
    profile = orjson.loads(document)
    profile["events"] = EventLog(profile["events"])
    profile["segments"] = set(orjson.loads(segments) if segments is not None
                              else profile.get("segments", ()))
    return profile


@dataclass(frozen=True)
class MembershipChange:
    segment: str
    entered: bool
    reason: str


class CycleError(ValueError):
    pass


def dependency_order(segments: Mapping[str, dict]) -> list[str]:
    """Segments ordered so that each comes after the segments its rule reads."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = [*path[path.index(name):], name]
            raise CycleError(" -> ".join(cycle))
        state[name] = "visiting"
        for needed in sorted(referenced_segments(segments[name]["rule"])):
            if needed in segments:
                visit(needed, [*path, name])
        state[name] = "done"
        order.append(name)

    for name in sorted(segments):
        visit(name, [])
    return order


class Definitions:
    """The compiled catalog: what to re-evaluate for which change, and how."""

    def __init__(self, segments: Mapping[str, dict], computed: Mapping[str, dict]):
        self.segment_specs = dict(segments)
        self.computed: dict[str, ComputedTrait] = {
            name: compile_computed(spec) for name, spec in sorted(computed.items())}
        self.order = dependency_order(segments)
        self.rules: dict[str, Rule] = {name: compile_rule(segments[name]["rule"])
                                       for name in self.order}
        self.rank = {name: i for i, name in enumerate(self.order)}
        self.dependents: dict[Key, set[str]] = {}
        self.computed_dependents: dict[Key, set[str]] = {}
        for name, trait in self.computed.items():
            for key in (*map(event_key, trait.events), definition_key(name), EVERYTHING):
                self.computed_dependents.setdefault(key, set()).add(name)
            if trait.timed:
                self.computed_dependents.setdefault(TIME, set()).add(name)
        for name, rule in self.rules.items():
            keys = [*map(trait_key, rule.traits), *map(event_key, rule.events),
                    *map(segment_key, rule.segments), definition_key(name), EVERYTHING]
            if rule.timed:
                keys.append(TIME)
            for key in keys:
                self.dependents.setdefault(key, set()).add(name)
        # A computed trait is read by segments as a trait of the same name.
        self.reasons = {name: describe(spec["rule"]) for name, spec in segments.items()}

    def reevaluate(self, profile: dict[str, Any], changed: Iterable[Key],
                   now: float) -> list[MembershipChange]:
        """Bring `profile` up to date with what `changed` touched; returns membership changes.

        Mutates the profile's computed traits, segments and due.
        """
        return self.reevaluated(profile, changed, now)[0]

    def reevaluated(self, profile: dict[str, Any], changed: Iterable[Key],
                    now: float) -> tuple[list[MembershipChange], bool]:
        """`reevaluate`, and whether the profile's computed traits or due changed too: a
        backfill writes a profile only if something did."""
        changed = set(changed)
        soonest: list[float] = []
        due = profile["due"]
        computed = self._update_computed(profile, changed, now, soonest)
        changed |= computed
        state = State(traits=self._traits(profile), events=profile["events"], now=now,
                      segments=profile["segments"])
        changes = self._exit_removed(profile)
        changed |= {segment_key(change.segment) for change in changes}
        pending: list[tuple[int, str]] = []
        queued: set[str] = set()

        def enqueue(key: Key) -> None:
            for name in self.dependents.get(key, ()):
                if name not in queued:
                    queued.add(name)
                    heapq.heappush(pending, (self.rank[name], name))

        for key in changed:
            enqueue(key)
        while pending:
            _, name = heapq.heappop(pending)
            rule = self.rules[name]
            inside = rule.test(state)
            if rule.timed:
                expiry = rule.next_expiry(state)
                if expiry is not None:
                    soonest.append(expiry)
            if inside == (name in profile["segments"]):
                continue
            if inside:
                profile["segments"].add(name)
            else:
                profile["segments"].discard(name)
            changes.append(MembershipChange(name, inside, self.reasons[name]))
            enqueue(segment_key(name))
        everything = TIME in changed or EVERYTHING in changed
        kept = None if everything else profile["due"]
        profile["due"] = min(soonest, default=None) if kept is None else min([kept, *soonest])
        return changes, bool(computed) or profile["due"] != due

    def _update_computed(self, profile: dict, changed: set[Key], now: float,
                         soonest: list[float]) -> set[Key]:
        names: set[str] = set()
        for key in changed:
            names |= self.computed_dependents.get(key, _NOTHING)
        gone: Iterable[str] = ()
        if not self.computed.keys() >= profile["computed"].keys():  # definitions removed
            gone = profile["computed"].keys() - self.computed.keys()
        touched = {trait_key(name) for name in gone}
        for name in gone:
            del profile["computed"][name]
        if not names:
            return touched
        state = State(traits={}, events=profile["events"], now=now)
        for name in names:
            trait = self.computed[name]
            value = trait.compute(state)
            if trait.timed:
                expiry = trait.next_expiry(state)
                if expiry is not None:
                    soonest.append(expiry)
            if value is None:  # nothing to aggregate: the trait is absent, as for traits
                if profile["computed"].pop(name, None) is not None:
                    touched.add(trait_key(name))
            elif profile["computed"].get(name) != value:
                profile["computed"][name] = value
                touched.add(trait_key(name))
        return touched

    @staticmethod
    def _traits(profile: dict) -> Mapping[str, Any]:
        computed = profile["computed"]
        return {**profile["traits"], **computed} if computed else profile["traits"]

    def _exit_removed(self, profile: dict) -> list[MembershipChange]:
        if self.rules.keys() >= profile["segments"]:
            return []
        gone = sorted(profile["segments"] - self.rules.keys())
        profile["segments"].difference_update(gone)
        return [MembershipChange(name, False, "segment removed") for name in gone]


def next_due(profile: dict[str, Any]) -> float | None:
    return profile["due"]


def record_occurrence(profile: dict[str, Any], name: str, at: float, properties: dict,
                      now: float) -> None:
    seen = profile["events"].setdefault(name, [])
    seen.append([at, properties])
    if len(seen) > 1 and seen[-2][0] > at:  # late arrival: keep time order
        seen.sort(key=lambda pair: pair[0])
    _prune(seen, now)


def absorb(survivor: dict[str, Any], absorbed: dict[str, Any], absorbed_id: str,
           now: float) -> None:
    """A merge: the survivor takes the absorbed profile's behaviour and unknown traits.

    Each occurrence taken is marked with the absorbed profile's id, and the absorbed
    profile keeps its own, so that a split can give them back (`release`)."""
    for name, seen in absorbed["events"].items():
        mine = survivor["events"].setdefault(name, [])
        mine.extend([o[0], o[1], absorbed_id] for o in seen)
        mine.sort(key=lambda occurrence: occurrence[0])
        _prune(mine, now)
    for key, value in absorbed["traits"].items():
        survivor["traits"].setdefault(key, value)
    absorbed["due"], absorbed["computed"] = None, {}


def release(split: dict[str, Any], part_id: str) -> bool:
    """A split: what a merge brought in from `part_id` leaves the profile it was merged
    into. What arrived after the merge under the merged identity cannot be told apart and
    stays. Returns whether anything left."""
    released = False
    for name in list(split["events"].keys()):
        seen = split["events"][name]
        kept = [o for o in seen if len(o) < 3 or o[2] != part_id]
        if len(kept) != len(seen):
            split["events"][name] = kept
            released = True
    return released


def _prune(seen: list[list[Any]], now: float) -> None:
    """Drop what no window can reach and what exceeds the cap (the list is time-ordered)."""
    horizon = now - MAX_WINDOW_SECONDS
    stale = 0
    while stale < len(seen) and seen[stale][0] < horizon:
        stale += 1
    excess = max(stale, len(seen) - MAX_OCCURRENCES_PER_EVENT)
    if excess:
        del seen[:excess]
