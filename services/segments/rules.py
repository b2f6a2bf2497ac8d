"""The segment rule language: JSON conditions on traits and on behaviour in a time window.

    {"and": [
        {"trait": "country", "op": "eq", "value": "FR"},
        {"event": "Order Completed", "count": {"op": "at_least", "value": 3}, "within_days": 90,
         "where": {"currency": "EUR"}}
    ]}

`compile_rule` turns a validated rule into a `Rule`: a predicate over a profile's state,
the traits and events it depends on (only changes to those re-evaluate it), and when its
answer may next change by the passing of time alone (so windows expire on time).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

DAY = 86_400.0


@dataclass(frozen=True)
class State:
    traits: Mapping[str, Any]
    events: Mapping[str, Sequence[tuple[float, Mapping[str, Any]]]]  # name -> [(epoch, props)]
    now: float


@dataclass(frozen=True)
class Rule:
    test: Callable[[State], bool]
    traits: frozenset[str] = field(default_factory=frozenset)
    events: frozenset[str] = field(default_factory=frozenset)
    expiries: Callable[[State], list[float]] = lambda state: []

    def next_expiry(self, state: State) -> float | None:
        upcoming = [t for t in self.expiries(state) if t > state.now]
        return min(upcoming) if upcoming else None


def parse_time(value: Any) -> float | None:
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


def _compare(op: str, actual: Any, expected: Any) -> bool:
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


def _trait_rule(spec: dict) -> Rule:
    name, op, expected = spec["trait"], spec["op"], spec.get("value")
    return Rule(test=lambda s: _compare(op, s.traits.get(name), expected), traits=frozenset({name}))


def _count_ok(op: str, count: int, n: int) -> bool:
    return {"at_least": count >= n, "at_most": count <= n, "exactly": count == n}[op]


def _event_rule(spec: dict) -> Rule:
    name = spec["event"]
    count = spec.get("count") or {"op": "at_least", "value": 1}
    window = spec.get("within_days")
    where = spec.get("where") or {}

    def matching(state: State) -> list[float]:
        since = state.now - window * DAY if window else float("-inf")
        return [
            t for t, props in state.events.get(name, ())
            if since < t <= state.now and all(props.get(k) == v for k, v in where.items())
        ]

    def expiries(state: State) -> list[float]:
        return [t + window * DAY for t in matching(state)] if window else []

    return Rule(
        test=lambda s: _count_ok(count["op"], len(matching(s)), count["value"]),
        events=frozenset({name}),
        expiries=expiries,
    )


def _combine(kind: str, parts: list[Rule]) -> Rule:
    combine = all if kind == "and" else any
    return Rule(
        test=lambda s: combine(p.test(s) for p in parts),
        traits=frozenset().union(*(p.traits for p in parts)),
        events=frozenset().union(*(p.events for p in parts)),
        expiries=lambda s: [t for p in parts for t in p.expiries(s)],
    )


def compile_rule(spec: dict) -> Rule:
    """Compile a rule already validated by `RuleSchema`."""
    if "and" in spec or "or" in spec:
        kind = "and" if "and" in spec else "or"
        return _combine(kind, [compile_rule(part) for part in spec[kind]])
    if "not" in spec:
        inner = compile_rule(spec["not"])
        return Rule(test=lambda s: not inner.test(s), traits=inner.traits, events=inner.events,
                    expiries=inner.expiries)
    if "trait" in spec:
        return _trait_rule(spec)
    return _event_rule(spec)


def describe(spec: dict) -> str:
    if "and" in spec or "or" in spec:
        kind = "and" if "and" in spec else "or"
        return f" {kind} ".join(f"({describe(p)})" for p in spec[kind])
    if "not" in spec:
        return f"not ({describe(spec['not'])})"
    if "trait" in spec:
        return f"{spec['trait']} {spec['op']} {spec.get('value')!r}"
    count = spec.get("count") or {"op": "at_least", "value": 1}
    window = f" within {spec['within_days']} days" if spec.get("within_days") else ""
    return f"{spec['event']} {count['op']} {count['value']}{window}"
