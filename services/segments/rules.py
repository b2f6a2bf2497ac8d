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

from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

DAY = 86_400.0

Occurrences = Sequence[Sequence[Any]]  # [(epoch, properties), ...] in time order


@dataclass(frozen=True)
class State:
    traits: Mapping[str, Any]
    events: Mapping[str, Occurrences]
    now: float
    segments: Collection[str] = frozenset()


def _no_expiries(state: State) -> list[float]:
    return []


@dataclass(frozen=True)
class Rule:
    test: Callable[[State], bool]
    traits: frozenset[str] = field(default_factory=frozenset)
    events: frozenset[str] = field(default_factory=frozenset)
    segments: frozenset[str] = field(default_factory=frozenset)
    expiries: Callable[[State], list[float]] = _no_expiries
    timed: bool = False  # its answer can change with time alone

    def next_expiry(self, state: State) -> float | None:
        upcoming = [t for t in self.expiries(state) if t > state.now]
        return min(upcoming) if upcoming else None


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


def compare(op: str, actual: Any, expected: Any, now: float = 0.0) -> bool:
    if op == "exists":
        return actual is not None
    if op == "not_exists":
        return actual is None
    if op == "eq":
        return actual == expected
    if op == "ne":
        return actual != expected
    if op == "in":
        return actual in expected
    if op == "not_in":
        return actual not in expected
    if op == "contains":
        return isinstance(actual, str | list) and expected in actual
    if op in ("before", "after"):
        a, e = parse_time(actual), parse_time(expected)
        return a is not None and e is not None and (a < e if op == "before" else a > e)
    if op in RELATIVE_OPS:
        a = parse_time(actual)
        if a is None:
            return False
        since = now - expected * DAY
        return since <= a <= now if op == "within_last_days" else a < since
    a = _number(actual)
    if a is None:
        return False
    if op == "between":
        low, high = _number(expected[0]), _number(expected[1])
        return low is not None and high is not None and low <= a <= high
    e = _number(expected)
    if e is None:
        return False
    return {"gt": a > e, "gte": a >= e, "lt": a < e, "lte": a <= e}[op]


# ---- conditions ----------------------------------------------------------------------------
def _trait_rule(spec: dict) -> Rule:
    name, op, expected = spec["trait"], spec["op"], spec.get("value")
    if op not in RELATIVE_OPS:
        return Rule(test=lambda s: compare(op, s.traits.get(name), expected),
                    traits=frozenset({name}))

    def expiries(state: State) -> list[float]:
        # Both relative operators flip when the date is exactly `value` days old; a date
        # in the future also flips `within_last_days` when it arrives.
        at = parse_time(state.traits.get(name))
        return [] if at is None else [at, at + expected * DAY]

    return Rule(test=lambda s: compare(op, s.traits.get(name), expected, s.now),
                traits=frozenset({name}), expiries=expiries, timed=True)


def _filters(where: Any) -> list[tuple[str, str, Any]]:
    """`where` as {property: value} (equality) or [{property, op, value}, ...]."""
    if isinstance(where, Mapping):
        return [(key, "eq", value) for key, value in where.items()]
    return [(f["property"], f["op"], f.get("value")) for f in where or ()]


def _matcher(filters: list[tuple[str, str, Any]]) -> Callable[[Mapping[str, Any]], bool]:
    if not filters:
        return lambda props: True
    return lambda props: all(compare(op, props.get(key), value) for key, op, value in filters)


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

    def changes_at(self, at: float) -> list[float]:
        """When an occurrence at `at` starts or stops counting."""
        if self.days is not None:
            return [at, at + self.days * DAY]
        return [at]


def _matching(spec: dict) -> Callable[[State], list[Sequence[Any]]]:
    name, accepts = spec["event"], _matcher(_filters(spec.get("where")))
    return lambda state: [o for o in state.events.get(name, ()) if accepts(o[1])]


def _count_ok(op: str, count: int, n: int) -> bool:
    return {"at_least": count >= n, "at_most": count <= n, "exactly": count == n}[op]


def _event_rule(spec: dict) -> Rule:
    matching, window = _matching(spec), Window.of(spec)
    occurrence = spec.get("occurrence")
    count = spec.get("count") or {"op": "at_least", "value": 1}

    if occurrence:
        def chosen(state: State) -> Sequence[Any] | None:
            seen = [o for o in matching(state) if o[0] <= state.now]
            return (seen[0] if occurrence == "first" else seen[-1]) if seen else None

        def test(state: State) -> bool:
            picked = chosen(state)
            return picked is not None and window.holds(picked[0], state.now)

        def expiries(state: State) -> list[float]:
            picked = chosen(state)
            pending = [o[0] for o in matching(state) if o[0] > state.now]
            return pending + (window.changes_at(picked[0]) if picked else [])
    else:
        def test(state: State) -> bool:
            inside = sum(1 for o in matching(state) if window.holds(o[0], state.now))
            return _count_ok(count["op"], inside, count["value"])

        def expiries(state: State) -> list[float]:
            return [t for o in matching(state) for t in window.changes_at(o[0])]

    return Rule(test=test, events=frozenset({spec["event"]}), expiries=expiries,
                timed=window.timed)


def _segment_rule(spec: dict) -> Rule:
    name = spec["segment"]
    return Rule(test=lambda s: name in s.segments, segments=frozenset({name}))


def _combine(kind: str, parts: list[Rule]) -> Rule:
    combine = all if kind == "and" else any
    return Rule(
        test=lambda s: combine(p.test(s) for p in parts),
        traits=frozenset().union(*(p.traits for p in parts)),
        events=frozenset().union(*(p.events for p in parts)),
        segments=frozenset().union(*(p.segments for p in parts)),
        expiries=lambda s: [t for p in parts for t in p.expiries(s)],
        timed=any(p.timed for p in parts),
    )


def compile_rule(spec: dict) -> Rule:
    """Compile a rule already validated by `validate_rule`."""
    if "and" in spec or "or" in spec:
        kind = "and" if "and" in spec else "or"
        return _combine(kind, [compile_rule(part) for part in spec[kind]])
    if "not" in spec:
        inner = compile_rule(spec["not"])
        return Rule(test=lambda s: not inner.test(s), traits=inner.traits, events=inner.events,
                    segments=inner.segments, expiries=inner.expiries, timed=inner.timed)
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
    expiries: Callable[[State], list[float]]
    timed: bool

    def next_expiry(self, state: State) -> float | None:
        upcoming = [t for t in self.expiries(state) if t > state.now]
        return min(upcoming) if upcoming else None


def compile_computed(spec: dict) -> ComputedTrait:
    """A computed trait validated by `ComputedTraitSchema`: an aggregate over a window."""
    matching, window = _matching(spec), Window.of(spec)
    aggregate, prop = AGGREGATES[spec["aggregate"]], spec.get("property")

    def compute(state: State) -> Any:
        inside = [o for o in matching(state) if window.holds(o[0], state.now)]
        if prop is None:
            return aggregate(inside)
        return aggregate([o[1][prop] for o in inside if o[1].get(prop) is not None])

    def expiries(state: State) -> list[float]:
        return [t for o in matching(state) for t in window.changes_at(o[0])]

    return ComputedTrait(name=spec["name"], compute=compute, events=frozenset({spec["event"]}),
                         expiries=expiries, timed=window.timed)


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
