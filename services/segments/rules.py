"""The segment rule language: JSON conditions on traits, behaviour and other segments.

    {"and": [
        {"trait": "country", "op": "eq", "value": "FR"},
        {"event": "Order Completed", "count": {"op": "at_least", "value": 3}, "within_days": 90,
         "where": {"currency": "EUR"}},
        {"not": {"segment": "churned"}}
    ]}

`compile_rule` turns a validated rule into a `Rule`: a predicate over a profile's state,
what it depends on (only changes to those re-evaluate it), and when its answer may next
change by the passing of time alone (so windows expire on time). `compile_computed`
does the same for a computed trait: an aggregate of an event property over a window.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

DAY = 86_400.0

Occurrences = Sequence[Sequence[Any]]  # [(epoch, properties), ...] in time order


class State:
    """What rules read: a profile's traits, behaviour and memberships, at `now`.

    A plain class, not a dataclass: one is made per evaluation (per profile of a backfill
    page), and a frozen dataclass's __init__ costs several times more."""

    __slots__ = ("events", "matched", "now", "segments", "traits")

    def __init__(self, traits: Mapping[str, Any], events: Mapping[str, Occurrences],
                 now: float, segments: Collection[str] = frozenset()):
        self.traits, self.events, self.now, self.segments = traits, events, now, segments
        # Rules of one pass often filter the same events the same way: filter once per pass.
        self.matched: dict[Any, list] = {}


def _never(state: State) -> float | None:
    return None


@dataclass(frozen=True)
class Rule:
    test: Callable[[State], bool]
    traits: frozenset[str] = field(default_factory=frozenset)
    events: frozenset[str] = field(default_factory=frozenset)
    segments: frozenset[str] = field(default_factory=frozenset)
    # The next moment after `state.now` at which time alone may change the answer.
    next_expiry: Callable[[State], float | None] = _never
    timed: bool = False


def _earliest(*moments: float | None) -> float | None:
    soonest = None
    for moment in moments:  # a loop, not min() over a filtered list: called per rule
        if moment is not None and (soonest is None or moment < soonest):
            soonest = moment
    return soonest


def parse_time(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


RELATIVE_OPS = ("within_last_days", "more_than_days_ago")


def comparator(op: str, expected: Any) -> Callable[[Any, float], bool]:
    """`(actual, now) -> bool` for one operator and value, decided once per rule."""
    if op in _SIMPLE:
        simple = _SIMPLE[op]
        return lambda actual, now: simple(actual, expected)
    if op in ("before", "after"):
        e = parse_time(expected)
        return lambda actual, now: _dated(op, parse_time(actual), e)
    if op in RELATIVE_OPS:
        span = expected * DAY
        return lambda actual, now: _recent(op, parse_time(actual), now, span)
    if op == "between":
        low, high = _number(expected[0]), _number(expected[1])
        return lambda actual, now: _within(_number(actual), low, high)
    e, order = _number(expected), _ORDER[op]
    return lambda actual, now: _ordered(order, _number(actual), e)


def compare(op: str, actual: Any, expected: Any, now: float = 0.0) -> bool:
    return comparator(op, expected)(actual, now)


_SIMPLE: dict[str, Callable[[Any, Any], bool]] = {
    "exists": lambda a, e: a is not None,
    "not_exists": lambda a, e: a is None,
    "eq": lambda a, e: a == e,
    "ne": lambda a, e: a != e,
    "in": lambda a, e: a in e,
    "not_in": lambda a, e: a not in e,
    "contains": lambda a, e: isinstance(a, str | list) and e in a,
}
_ORDER: dict[str, Callable[[float, float], bool]] = {
    "gt": float.__gt__, "gte": float.__ge__, "lt": float.__lt__, "lte": float.__le__}


def _dated(op: str, a: float | None, e: float | None) -> bool:
    return a is not None and e is not None and (a < e if op == "before" else a > e)


def _recent(op: str, a: float | None, now: float, span: float) -> bool:
    # Both flip at the instant the date is exactly `span` old, like event windows: that
    # instant is the expiry scheduled, so the answer there must already be the new one.
    if a is None:
        return False
    return now - span < a <= now if op == "within_last_days" else a <= now - span


def _within(a: float | None, low: float | None, high: float | None) -> bool:
    return a is not None and low is not None and high is not None and low <= a <= high


def _ordered(order: Callable[[float, float], bool], a: float | None, e: float | None) -> bool:
    return a is not None and e is not None and order(a, e)


# ---- conditions ----------------------------------------------------------------------------
def _trait_rule(spec: dict) -> Rule:
    name, op, expected = spec["trait"], spec["op"], spec.get("value")
    if op not in RELATIVE_OPS:
        check = comparator(op, expected)
        return Rule(test=lambda s: check(s.traits.get(name), 0.0), traits=frozenset({name}))

    def next_expiry(state: State) -> float | None:
        # Both relative operators flip when the date is exactly `value` days old; a date
        # in the future also flips `within_last_days` when it arrives.
        at = parse_time(state.traits.get(name))
        if at is None:
            return None
        return _earliest(*(t for t in (at, at + expected * DAY) if t > state.now))

    check = comparator(op, expected)
    return Rule(test=lambda s: check(s.traits.get(name), s.now),
                traits=frozenset({name}), next_expiry=next_expiry, timed=True)


def _filters(where: Any) -> list[tuple[str, str, Any]]:
    """`where` as {property: value} (equality) or [{property, op, value}, ...]."""
    if isinstance(where, Mapping):
        return [(key, "eq", value) for key, value in where.items()]
    return [(f["property"], f["op"], f.get("value")) for f in where or ()]


def _matcher(filters: list[tuple[str, str, Any]]) -> Callable[[Mapping[str, Any]], bool]:
    if not filters:
        return lambda props: True
    checks = [(key, comparator(op, value)) for key, op, value in filters]

    def accepts(props: Mapping[str, Any]) -> bool:
        # Plain loops here and below: all()/any() over a generator cost a frame per call,
        # and these run for every rule of every change.
        for key, check in checks:  # noqa: SIM110
            if not check(props.get(key), 0.0):
                return False
        return True

    return accepts


def _time(occurrence: Sequence[Any]) -> float:
    return occurrence[0]


def _after(occurrences: Occurrences, moment: float) -> int:
    """Index of the first occurrence later than `moment` (occurrences are time-ordered)."""
    return bisect_right(occurrences, moment, key=_time)


@dataclass(frozen=True)
class Window:
    """Which occurrences count now: the last D days, between two dates, or ever."""

    days: float | None = None
    start: float | None = None
    end: float | None = None

    @classmethod
    def of(cls, spec: Mapping[str, Any]) -> Window:
        between = spec.get("between")
        if between:
            return cls(start=parse_time(between[0]), end=parse_time(between[1]))
        return cls(days=spec.get("within_days"))

    @property
    def timed(self) -> bool:
        return self.days is not None or self.end is not None

    def holds(self, at: float, now: float) -> bool:
        if at > now:
            return False
        if self.days is not None:
            return at > now - self.days * DAY
        if self.start is not None:
            return self.start <= at <= self.end
        return True

    def bounds(self, occurrences: Occurrences, now: float) -> tuple[int, int]:
        """The slice of occurrences that count at `now`."""
        stop = _after(occurrences, now)
        if self.days is not None:
            return _after(occurrences, now - self.days * DAY), stop
        if self.start is not None:
            stop = _after(occurrences, min(now, self.end))
            return bisect_left(occurrences, self.start, key=_time), stop
        return 0, stop

    def next_change(self, occurrences: Occurrences, now: float) -> float | None:
        """When time alone next changes which occurrences count: the oldest counted one
        leaving a sliding window, or the next future-dated one arriving."""
        start, stop = self.bounds(occurrences, now)
        arriving = occurrences[stop][0] if stop < len(occurrences) else None
        if self.end is not None and arriving is not None and arriving > self.end:
            arriving = None
        leaving = (occurrences[start][0] + self.days * DAY
                   if self.days is not None and start < stop else None)
        return _earliest(arriving, leaving)

    def moments_of(self, at: float, now: float) -> float | None:
        """When an occurrence at `at` next starts or stops counting."""
        for moment in (at, at + self.days * DAY) if self.days is not None else (at,):
            if moment > now:
                return moment
        return None


def _matching(spec: dict) -> Callable[[State], Occurrences]:
    name, filters = spec["event"], _filters(spec.get("where"))
    key = (name, repr(filters))
    if not filters:
        return lambda state: state.events.get(name, ())
    accepts = _matcher(filters)

    def matching(state: State) -> Occurrences:
        found = state.matched.get(key)
        if found is None:
            found = state.matched[key] = [o for o in state.events.get(name, ())
                                          if accepts(o[1])]
        return found

    return matching


def _count_test(op: str, n: int) -> Callable[[int], bool]:
    if op == "at_least":
        return lambda count: count >= n
    if op == "at_most":
        return lambda count: count <= n
    return lambda count: count == n


def _event_rule(spec: dict) -> Rule:
    matching, window = _matching(spec), Window.of(spec)
    occurrence = spec.get("occurrence")
    if occurrence:
        return _occurrence_rule(spec, matching, window, occurrence)
    count = spec.get("count") or {"op": "at_least", "value": 1}
    enough = _count_test(count["op"], count["value"])

    def test(state: State) -> bool:
        start, stop = window.bounds(matching(state), state.now)
        return enough(stop - start)

    return Rule(test=test, events=frozenset({spec["event"]}),
                next_expiry=lambda s: window.next_change(matching(s), s.now),
                timed=window.timed)


def _occurrence_rule(spec: dict, matching, window: Window, occurrence: str) -> Rule:
    def chosen(state: State) -> Sequence[Any] | None:
        seen = matching(state)
        stop = _after(seen, state.now)
        if not stop:
            return None
        return seen[0] if occurrence == "first" else seen[stop - 1]

    def test(state: State) -> bool:
        picked = chosen(state)
        return picked is not None and window.holds(picked[0], state.now)

    def next_expiry(state: State) -> float | None:
        seen, picked = matching(state), chosen(state)
        stop = _after(seen, state.now)
        arriving = seen[stop][0] if stop < len(seen) else None
        return _earliest(arriving, window.moments_of(picked[0], state.now) if picked else None)

    return Rule(test=test, events=frozenset({spec["event"]}), next_expiry=next_expiry,
                timed=window.timed)


def _segment_rule(spec: dict) -> Rule:
    name = spec["segment"]
    return Rule(test=lambda s: name in s.segments, segments=frozenset({name}))


def _earliest_of(parts: list[Rule]) -> Callable[[State], float | None]:
    if not parts:
        return _never
    if len(parts) == 1:
        return parts[0].next_expiry
    expiries = [p.next_expiry for p in parts]

    def earliest(state: State) -> float | None:
        soonest = None
        for next_expiry in expiries:
            moment = next_expiry(state)
            if moment is not None and (soonest is None or moment < soonest):
                soonest = moment
        return soonest

    return earliest


def _combine(kind: str, parts: list[Rule]) -> Rule:
    # Parts time cannot change (traits, other segments) are tested first: they are cheap,
    # and when one settles the answer the timed parts are neither read nor timed.
    steady = [p.test for p in parts if not p.timed]
    timed = [p.test for p in parts if p.timed]
    tests = steady + timed
    earliest = _earliest_of([p for p in parts if p.timed])
    decisive = kind == "or"  # a steady part answering this settles the whole

    def every(state: State) -> bool:
        for test in tests:  # noqa: SIM110
            if not test(state):
                return False
        return True

    def some(state: State) -> bool:
        for test in tests:  # noqa: SIM110
            if test(state):
                return True
        return False

    def settled(state: State) -> bool:
        """A steady part decides the whole (false in an `and`, true in an `or`) until a
        change that re-evaluates the rule anyway: time alone changes nothing."""
        for test in steady:  # noqa: SIM110
            if bool(test(state)) == decisive:
                return True
        return False

    def next_expiry(state: State) -> float | None:
        return None if settled(state) else earliest(state)

    return Rule(
        test=every if kind == "and" else some,
        traits=frozenset().union(*(p.traits for p in parts)),
        events=frozenset().union(*(p.events for p in parts)),
        segments=frozenset().union(*(p.segments for p in parts)),
        next_expiry=next_expiry if steady and timed else earliest,
        timed=bool(timed),
    )


def compile_rule(spec: dict) -> Rule:
    """Compile a rule already validated by `validate_rule`."""
    if "and" in spec or "or" in spec:
        kind = "and" if "and" in spec else "or"
        return _combine(kind, [compile_rule(part) for part in spec[kind]])
    if "not" in spec:
        inner = compile_rule(spec["not"])
        return Rule(test=lambda s: not inner.test(s), traits=inner.traits, events=inner.events,
                    segments=inner.segments, next_expiry=inner.next_expiry, timed=inner.timed)
    if "trait" in spec:
        return _trait_rule(spec)
    if "segment" in spec:
        return _segment_rule(spec)
    return _event_rule(spec)


def referenced_segments(spec: dict) -> set[str]:
    if "and" in spec or "or" in spec:
        return set().union(*(referenced_segments(p) for p in spec.get("and") or spec["or"]))
    if "not" in spec:
        return referenced_segments(spec["not"])
    return {spec["segment"]} if "segment" in spec else set()


# ---- computed traits -----------------------------------------------------------------------
def _most_frequent(values: list[Any]) -> Any:
    counts = Counter(_hashable(v) for v in values)
    top = max(counts.values())
    # Ties go to the value seen most recently: what the person does now.
    return next(v for v in reversed(values) if counts[_hashable(v)] == top)


def _hashable(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | None) else repr(value)


def _unique(values: list[Any]) -> list[Any]:
    seen: dict[Any, Any] = {}
    for value in values:
        seen.setdefault(_hashable(value), value)
    return list(seen.values())


def _numbers(values: list[Any]) -> list[float]:
    return [n for n in map(_number, values) if n is not None]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


AGGREGATES: dict[str, Callable[[list[Any]], Any]] = {
    "count": len,
    "sum": lambda vs: _rounded(sum(_numbers(vs))) if _numbers(vs) else None,
    "avg": lambda vs: _rounded(sum(_numbers(vs)) / len(_numbers(vs))) if _numbers(vs) else None,
    "min": lambda vs: min(_numbers(vs)) if _numbers(vs) else None,
    "max": lambda vs: max(_numbers(vs)) if _numbers(vs) else None,
    "first": lambda vs: vs[0] if vs else None,
    "last": lambda vs: vs[-1] if vs else None,
    "most_frequent": lambda vs: _most_frequent(vs) if vs else None,
    "unique": _unique,
}


@dataclass(frozen=True)
class ComputedTrait:
    name: str
    compute: Callable[[State], Any]
    events: frozenset[str]
    next_expiry: Callable[[State], float | None]
    timed: bool


def compile_computed(spec: dict) -> ComputedTrait:
    """A computed trait validated by `ComputedTraitSchema`: an aggregate over a window."""
    matching, window = _matching(spec), Window.of(spec)
    aggregate, prop = AGGREGATES[spec["aggregate"]], spec.get("property")

    def compute(state: State) -> Any:
        seen = matching(state)
        start, stop = window.bounds(seen, state.now)
        if prop is None:
            return aggregate(seen[start:stop])
        return aggregate([o[1][prop] for o in seen[start:stop] if o[1].get(prop) is not None])

    return ComputedTrait(name=spec["name"], compute=compute, events=frozenset({spec["event"]}),
                         next_expiry=lambda s: window.next_change(matching(s), s.now),
                         timed=window.timed)


# ---- reading a rule back -------------------------------------------------------------------
def _describe_window(spec: dict) -> str:
    if spec.get("within_days"):
        return f" within {spec['within_days']} days"
    if spec.get("between"):
        return f" between {spec['between'][0]} and {spec['between'][1]}"
    return ""


def describe(spec: dict) -> str:
    if "and" in spec or "or" in spec:
        kind = "and" if "and" in spec else "or"
        return f" {kind} ".join(f"({describe(p)})" for p in spec[kind])
    if "not" in spec:
        return f"not ({describe(spec['not'])})"
    if "trait" in spec:
        return f"{spec['trait']} {spec['op']} {spec.get('value')!r}"
    if "segment" in spec:
        return f"in segment {spec['segment']}"
    if spec.get("occurrence"):
        return f"{spec['occurrence']} {spec['event']}{_describe_window(spec)}"
    count = spec.get("count") or {"op": "at_least", "value": 1}
    return f"{spec['event']} {count['op']} {count['value']}{_describe_window(spec)}"
