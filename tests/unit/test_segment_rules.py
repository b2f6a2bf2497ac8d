"""The segment rule language: trait and event conditions, combinators, windows, validation."""

from __future__ import annotations

import pytest
from marshmallow import ValidationError

from services.segments.rules import DAY, State, compile_rule, describe
from services.segments.schemas import SegmentSchema, validate_rule

NOW = 1_800_000_000.0


def state(traits=None, events=None, now=NOW) -> State:
    # A profile keeps each event's occurrences in time order.
    ordered = {name: sorted(seen, key=lambda o: o[0]) for name, seen in (events or {}).items()}
    return State(traits=traits or {}, events=ordered, now=now)


def holds(rule: dict, traits=None, events=None, now=NOW) -> bool:
    return compile_rule(validate_rule(rule)).test(state(traits, events, now))


def orders(*days_ago: float, **properties) -> dict:
    return {"Order Completed": [(NOW - d * DAY, dict(properties)) for d in days_ago]}


# ---- trait conditions ----------------------------------------------------------------------
@pytest.mark.parametrize("op, value, traits, expected", [
    ("eq", "FR", {"country": "FR"}, True),
    ("eq", "FR", {"country": "DE"}, False),
    ("eq", "FR", {}, False),
    ("ne", "FR", {"country": "DE"}, True),
    ("ne", "FR", {"country": "FR"}, False),
    ("in", ["FR", "BE"], {"country": "BE"}, True),
    ("in", ["FR", "BE"], {"country": "DE"}, False),
    ("not_in", ["FR", "BE"], {"country": "DE"}, True),
    ("not_in", ["FR", "BE"], {"country": "FR"}, False),
    ("contains", "fr", {"country": "africa"}, True),
    ("contains", "VIP", {"country": ["VIP", "beta"]}, True),
    ("contains", "VIP", {"country": ["beta"]}, False),
    ("contains", "1", {"country": 123}, False),
    ("exists", None, {"country": "FR"}, True),
    ("exists", None, {}, False),
    ("not_exists", None, {}, True),
    ("not_exists", None, {"country": "FR"}, False),
    ("gt", 10, {"country": 11}, True),
    ("gt", 10, {"country": 10}, False),
    ("gte", 10, {"country": 10}, True),
    ("gte", 10, {"country": 9.99}, False),
    ("lt", 10, {"country": "9.5"}, True),     # numeric strings compare as numbers
    ("lt", 10, {"country": 10}, False),
    ("lte", 10, {"country": 10}, True),
    ("lte", 10, {"country": 10.5}, False),
    ("gt", 10, {"country": "many"}, False),   # not a number: never matches
    ("gt", 0, {"country": True}, False),      # booleans are not numbers
    ("gt", 0, {}, False),
    ("between", [1, 5], {"country": 1}, True),
    ("between", [1, 5], {"country": 5}, True),
    ("between", [1, 5], {"country": 5.01}, False),
    ("before", "2026-01-01T00:00:00Z", {"country": "2025-12-31T23:59:59Z"}, True),
    ("before", "2026-01-01T00:00:00Z", {"country": "2026-01-01T00:00:01Z"}, False),
    ("after", "2026-01-01T00:00:00Z", {"country": "2026-01-01T00:00:01+00:00"}, True),
    ("after", "2026-01-01T00:00:00Z", {"country": "not a date"}, False),
])
def test_each_trait_operator_compares_the_trait_with_the_value(op, value, traits, expected):
    rule = {"trait": "country", "op": op}
    if value is not None:
        rule["value"] = value
    assert holds(rule, traits) is expected


def test_a_trait_rule_depends_on_its_trait_only():
    rule = compile_rule(validate_rule({"trait": "plan", "op": "eq", "value": "pro"}))
    assert rule.traits == {"plan"}
    assert rule.events == frozenset()
    assert rule.next_expiry(state({"plan": "pro"})) is None


# ---- event conditions ----------------------------------------------------------------------
@pytest.mark.parametrize("op, n, count, expected", [
    ("at_least", 3, 3, True), ("at_least", 3, 2, False),
    ("at_most", 2, 2, True), ("at_most", 2, 3, False), ("at_most", 0, 0, True),
    ("exactly", 2, 2, True), ("exactly", 2, 1, False), ("exactly", 2, 3, False),
])
def test_event_count_operators(op, n, count, expected):
    rule = {"event": "Order Completed", "count": {"op": op, "value": n}}
    assert holds(rule, events=orders(*range(count))) is expected


def test_an_event_rule_without_count_means_at_least_once():
    assert holds({"event": "Order Completed"}, events=orders(400))
    assert not holds({"event": "Order Completed"}, events={"Other": [(NOW, {})]})


def test_within_days_counts_only_events_inside_the_window():
    rule = {"event": "Order Completed", "count": {"op": "at_least", "value": 3},
            "within_days": 90}
    assert holds(rule, events=orders(1, 10, 89.9))
    assert not holds(rule, events=orders(1, 10, 90.1))
    assert not holds(rule, events=orders(1, 10, 200))


def test_events_later_than_now_are_not_counted():
    assert not holds({"event": "Order Completed", "within_days": 7}, events=orders(-1))


def test_where_keeps_only_events_whose_properties_match():
    rule = {"event": "Order Completed", "count": {"op": "at_least", "value": 2},
            "where": {"currency": "EUR"}}
    mixed = {"Order Completed": [(NOW - DAY, {"currency": "EUR"}),
                                 (NOW - 2 * DAY, {"currency": "USD"}),
                                 (NOW - 3 * DAY, {})]}
    assert not holds(rule, events=mixed)
    assert holds(rule, events=orders(1, 2, currency="EUR"))


@pytest.mark.parametrize("op, n, expected", [
    ("at_least", 2, True), ("at_least", 3, False),
    ("at_most", 2, True), ("at_most", 1, False),
    ("exactly", 2, True), ("exactly", 3, False),
])
def test_count_window_and_where_combine(op, n, expected):
    # Two EUR orders inside 30 days; one EUR order outside it; one USD order inside it.
    events = {"Order Completed": [(NOW - 1 * DAY, {"currency": "EUR"}),
                                  (NOW - 20 * DAY, {"currency": "EUR"}),
                                  (NOW - 45 * DAY, {"currency": "EUR"}),
                                  (NOW - 2 * DAY, {"currency": "USD"})]}
    rule = {"event": "Order Completed", "count": {"op": op, "value": n}, "within_days": 30,
            "where": {"currency": "EUR"}}
    assert holds(rule, events=events) is expected


def test_at_most_with_a_window_ignores_what_happened_before_it():
    rule = {"event": "Order Completed", "count": {"op": "at_most", "value": 0},
            "within_days": 30}
    assert holds(rule, events=orders(31, 40))
    assert not holds(rule, events=orders(29))


# ---- combinators ---------------------------------------------------------------------------
FRENCH = {"trait": "country", "op": "eq", "value": "FR"}
PRO = {"trait": "plan", "op": "eq", "value": "pro"}
BUYER = {"event": "Order Completed", "within_days": 30}


@pytest.mark.parametrize("traits, events, expected", [
    ({"country": "FR", "plan": "pro"}, orders(1), True),
    ({"country": "FR", "plan": "pro"}, orders(31), False),
    ({"country": "FR", "plan": "free"}, orders(1), False),
])
def test_and_needs_every_part(traits, events, expected):
    assert holds({"and": [FRENCH, PRO, BUYER]}, traits, events) is expected


@pytest.mark.parametrize("traits, expected", [
    ({"country": "FR"}, True), ({"plan": "pro"}, True), ({"country": "DE"}, False), ({}, False)])
def test_or_needs_any_part(traits, expected):
    assert holds({"or": [FRENCH, PRO]}, traits) is expected


def test_not_inverts_its_rule_and_nests():
    assert holds({"not": FRENCH}, {"country": "DE"})
    assert not holds({"not": FRENCH}, {"country": "FR"})
    assert holds({"and": [PRO, {"not": {"or": [FRENCH, BUYER]}}]}, {"plan": "pro"}, orders(40))


def test_a_combined_rule_depends_on_the_union_of_its_parts():
    rule = compile_rule(validate_rule({"and": [FRENCH, {"not": PRO}, {"or": [BUYER]}]}))
    assert rule.traits == {"country", "plan"}
    assert rule.events == {"Order Completed"}


def test_describe_reads_like_the_rule():
    assert describe({"event": "Order Completed", "count": {"op": "at_least", "value": 3},
                     "within_days": 90}) == "Order Completed at_least 3 within 90 days"
    assert describe({"or": [FRENCH, {"not": PRO}]}) == "(country eq 'FR') or (not (plan eq 'pro'))"


# ---- next_expiry ---------------------------------------------------------------------------
def test_next_expiry_is_when_the_oldest_counted_event_leaves_the_window():
    rule = compile_rule(validate_rule({"event": "Order Completed", "within_days": 90}))
    events = orders(10, 30, 60)
    assert rule.next_expiry(state(events=events)) == pytest.approx(NOW + 30 * DAY)


def test_next_expiry_ignores_events_already_outside_the_window_and_other_names():
    rule = compile_rule(validate_rule({"and": [
        {"event": "Order Completed", "within_days": 90}, FRENCH]}))
    events = {**orders(5, 100), "Page Viewed": [(NOW - DAY, {})]}
    assert rule.next_expiry(state({"country": "FR"}, events)) == pytest.approx(NOW + 85 * DAY)


def test_a_trait_that_settles_an_and_leaves_time_nothing_to_change():
    rule = compile_rule(validate_rule({"and": [
        {"event": "Order Completed", "within_days": 90}, FRENCH]}))
    assert rule.next_expiry(state({"country": "DE"}, orders(5, 100))) is None


def test_a_trait_that_settles_an_or_leaves_time_nothing_to_change():
    rule = compile_rule(validate_rule({"or": [
        {"event": "Order Completed", "within_days": 90}, FRENCH]}))
    assert rule.next_expiry(state({"country": "FR"}, orders(5, 100))) is None
    assert rule.next_expiry(state({"country": "DE"}, orders(5, 100))) == pytest.approx(
        NOW + 85 * DAY)


def test_there_is_no_expiry_without_a_window_or_without_events():
    assert compile_rule(validate_rule({"event": "Order Completed"})).next_expiry(
        state(events=orders(1))) is None
    assert compile_rule(validate_rule({"event": "Order Completed", "within_days": 7})
                        ).next_expiry(state()) is None


def test_at_its_expiry_moment_the_event_no_longer_counts():
    rule = compile_rule(validate_rule({"event": "Order Completed", "within_days": 1}))
    event_at = NOW - 0.5 * DAY
    events = {"Order Completed": [(event_at, {})]}
    expiry = rule.next_expiry(state(events=events))
    assert expiry == pytest.approx(event_at + DAY)
    assert rule.test(state(events=events, now=expiry - 1))
    # Re-checked exactly when it expires, the answer must change (or another expiry be due),
    # or the profile would stay in the segment until its next event.
    assert not rule.test(state(events=events, now=expiry))


# ---- validation ----------------------------------------------------------------------------
def error_of(rule) -> str:
    with pytest.raises(ValidationError) as caught:
        SegmentSchema().load({"name": "s", "rule": rule})
    (message,) = caught.value.messages["rule"]
    return message


def test_a_valid_segment_loads_with_defaults():
    loaded = SegmentSchema().load({"name": "frequent_buyers", "rule": {
        "and": [FRENCH, {"event": "Order Completed", "within_days": 90}]}})
    assert loaded["description"] == ""
    assert loaded["rule"]["and"][1] == {"event": "Order Completed", "within_days": 90,
                                        "count": {"op": "at_least", "value": 1}, "where": {}}


@pytest.mark.parametrize("rule, path", [
    ({"trait": "country", "op": "like", "value": "FR"}, "rule.op"),
    ({"and": [FRENCH, {"event": "Order Completed", "count": {"op": "twice", "value": 2}}]},
     "rule.and[1].count.op"),
    ({"or": [FRENCH, {"not": {"event": "X", "count": {"op": "at_least"}}}]},
     "rule.or[1].not.count.value"),
    ({"event": "X", "count": {"op": "at_least", "value": -1}}, "rule.count.value"),
    ({"event": "X", "count": {"op": "at_least", "value": "3"}}, "rule.count.value"),
    ({"event": "X", "count": {"op": "at_least", "value": 3, "per": "day"}}, "rule.count.per"),
    ({"trait": "country", "op": "eq"}, "rule.value"),
    ({"and": [PRO, {"trait": "country", "op": "in", "value": "FR"}]}, "rule.and[1].value"),
    ({"trait": "country", "op": "between", "value": [1]}, "rule.value"),
    ({"trait": "country", "op": "eq", "value": "FR", "colour": "red"}, "rule.colour"),
    ({"event": "X", "within_days": "90"}, "rule.within_days"),
    ({"event": "X", "within_days": 0}, "rule.within_days"),
    ({"event": "X", "where": ["currency"]}, "rule.where[0]"),
    ({"event": 42}, "rule.event"),
    ({"trait": "", "op": "exists"}, "rule.trait"),
    ({"and": []}, "rule.and"),
    ({"and": FRENCH}, "rule.and"),
    ({"and": [PRO, "FR"]}, "rule.and[1]"),
    ({"trait": "country", "event": "X"}, "rule"),
    ({}, "rule"),
])
def test_an_invalid_rule_is_rejected_with_the_path_of_its_error(rule, path):
    message = error_of(rule)
    assert message.startswith(f"{path}: "), message


def test_unknown_keys_beside_a_combinator_are_rejected_too():
    assert error_of({"and": [FRENCH], "colour": "red"}).startswith("rule.colour: ")
    assert error_of({"not": FRENCH, "extra": 1}).startswith("rule.extra: ")


@pytest.mark.parametrize("op", ["gt", "gte", "lt", "lte"])
def test_a_numeric_comparison_with_a_value_that_is_not_a_number_is_rejected(op):
    assert error_of({"trait": "age", "op": op, "value": "old"}).startswith("rule.value: ")


def test_between_needs_numeric_bounds():
    assert error_of({"trait": "age", "op": "between", "value": ["a", "z"]}).startswith(
        "rule.value: ")


def test_a_stored_rule_with_a_non_numeric_bound_never_crashes_evaluation():
    # Definitions saved before stricter validation are compiled as they are.
    assert compile_rule({"trait": "age", "op": "gt", "value": "old"}).test(
        state({"age": 30})) is False
    assert compile_rule({"trait": "age", "op": "between", "value": ["a", 5]}).test(
        state({"age": 3})) is False


def test_a_segment_name_must_be_a_slug():
    with pytest.raises(ValidationError) as caught:
        SegmentSchema().load({"name": "Frequent Buyers", "rule": FRENCH})
    assert "name" in caught.value.messages
