"""The rest of the rule language: relative dates, property conditions, date ranges,
first and last occurrences, membership of other segments, and computed traits."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from marshmallow import ValidationError

from services.segments.evaluation import (
    TIME,
    CycleError,
    Definitions,
    definition_key,
    dependency_order,
    event_key,
    new_profile,
    trait_key,
)
from services.segments.rules import DAY, State, compile_computed, compile_rule, describe
from services.segments.schemas import ComputedTraitSchema, validate_rule

NOW = 1_800_000_000.0


def iso(days_ago: float) -> str:
    return datetime.fromtimestamp(NOW - days_ago * DAY, UTC).isoformat()


def holds(rule: dict, traits=None, events=None, segments=(), now=NOW) -> bool:
    state = State(traits=traits or {}, events=events or {}, now=now, segments=set(segments))
    return compile_rule(validate_rule(rule)).test(state)


def orders(*spec: tuple[float, dict]) -> dict:
    return {"Order Completed": [(NOW - d * DAY, props) for d, props in sorted(
        spec, key=lambda s: -s[0])]}


def error_of(rule: dict) -> str:
    with pytest.raises(ValidationError) as raised:
        validate_rule(rule)
    return raised.value.messages[0]


# ---- relative dates on traits --------------------------------------------------------------
@pytest.mark.parametrize("op, days_ago, expected", [
    ("within_last_days", 3, True),
    ("within_last_days", 31, False),
    ("within_last_days", -1, False),       # in the future: not yet
    ("more_than_days_ago", 31, True),
    ("more_than_days_ago", 3, False),
])
def test_relative_date_operators_compare_a_date_trait_with_now(op, days_ago, expected):
    rule = {"trait": "signed_up_at", "op": op, "value": 30}
    assert holds(rule, {"signed_up_at": iso(days_ago)}) is expected


def test_a_relative_date_rule_expires_when_the_date_is_that_many_days_old():
    rule = compile_rule(validate_rule(
        {"trait": "signed_up_at", "op": "within_last_days", "value": 30}))
    state = State(traits={"signed_up_at": iso(3)}, events={}, now=NOW)
    assert rule.timed
    assert rule.next_expiry(state) == pytest.approx(NOW + 27 * DAY)


def test_a_relative_date_rule_on_a_missing_or_bad_date_never_holds():
    rule = {"trait": "signed_up_at", "op": "more_than_days_ago", "value": 1}
    assert not holds(rule, {})
    assert not holds(rule, {"signed_up_at": "yesterday"})


# ---- property conditions, date ranges and occurrences -------------------------------------
def test_where_conditions_compare_event_properties_with_any_operator():
    rule = {"event": "Order Completed", "count": {"op": "at_least", "value": 2},
            "where": [{"property": "total", "op": "gte", "value": 100},
                      {"property": "currency", "op": "in", "value": ["EUR", "GBP"]}]}
    assert holds(rule, events=orders((1, {"total": 150, "currency": "EUR"}),
                                     (2, {"total": 100, "currency": "GBP"})))
    assert not holds(rule, events=orders((1, {"total": 150, "currency": "EUR"}),
                                         (2, {"total": 99, "currency": "GBP"})))
    assert not holds(rule, events=orders((1, {"total": 150, "currency": "EUR"}),
                                         (2, {"total": 500, "currency": "USD"})))


def test_between_counts_only_events_between_the_two_dates():
    rule = {"event": "Order Completed", "between": [iso(20), iso(10)]}
    assert holds(rule, events=orders((15, {})))
    assert not holds(rule, events=orders((25, {}), (5, {})))


def test_first_occurrence_within_a_window_means_a_new_customer():
    new_buyer = {"event": "Order Completed", "occurrence": "first", "within_days": 30}
    assert holds(new_buyer, events=orders((10, {}), (2, {})))
    assert not holds(new_buyer, events=orders((40, {}), (2, {})))
    assert not holds(new_buyer, events={})


def test_last_occurrence_within_a_window_means_an_active_customer():
    active = {"event": "Order Completed", "occurrence": "last", "within_days": 30}
    assert holds(active, events=orders((40, {}), (2, {})))
    assert not holds(active, events=orders((40, {}), (31, {})))


def test_a_first_occurrence_rule_expires_when_that_occurrence_leaves_the_window():
    rule = compile_rule(validate_rule(
        {"event": "Order Completed", "occurrence": "first", "within_days": 30}))
    state = State(traits={}, events=orders((10, {}), (2, {})), now=NOW)
    assert rule.next_expiry(state) == pytest.approx(NOW + 20 * DAY)


def test_membership_of_another_segment_is_a_condition():
    rule = {"and": [{"segment": "vip"}, {"not": {"segment": "churned"}}]}
    assert holds(rule, segments={"vip"})
    assert not holds(rule, segments={"vip", "churned"})
    assert compile_rule(validate_rule(rule)).segments == {"vip", "churned"}


@pytest.mark.parametrize("rule, message", [
    ({"trait": "a", "op": "within_last_days", "value": 0},
     "rule.value: must be a positive number of days for op 'within_last_days'"),
    ({"trait": "a", "op": "before", "value": "soon"},
     "rule.value: must be an ISO 8601 date for op 'before'"),
    ({"event": "X", "within_days": 3, "between": [iso(2), iso(1)]},
     "rule.between: use either within_days or between, not both"),
    ({"event": "X", "between": [iso(1), iso(2)]}, "rule.between: 'from' must not be after 'to'"),
    ({"event": "X", "occurrence": "second"}, "rule.occurrence: Must be one of: first, last."),
    ({"event": "X", "occurrence": "first", "count": {"op": "at_least", "value": 2}},
     "rule.count: a first/last occurrence takes no count"),
    ({"event": "X", "where": [{"property": "total", "op": "gt", "value": "lots"}]},
     "rule.where[0].value: must be a number for op 'gt'"),
    ({"event": "X", "where": [{"property": "total", "op": "near", "value": 1}]},
     "rule.where[0].op: Must be one of: eq, ne, in, not_in, contains, exists, not_exists, "
     "gt, gte, lt, lte, between, before, after."),
    ({"segment": "Not A Name"}, "rule.segment: must be 1-64 chars of a-z, 0-9, '_' or '-'"),
    ({"and": [{"segment": "vip", "trait": "x"}]},
     "rule.and[0]: must have exactly one of and, or, not, trait, event, segment"),
])
def test_invalid_new_forms_are_refused_with_their_path(rule, message):
    assert error_of(rule) == message


def test_describe_reads_the_new_forms():
    assert describe({"segment": "vip"}) == "in segment vip"
    assert describe({"event": "Order Completed", "occurrence": "first", "within_days": 30}) \
        == "first Order Completed within 30 days"


# ---- computed traits -----------------------------------------------------------------------
SPENDS = orders((100, {"total": 5, "sku": "a"}), (20, {"total": 10, "sku": "b"}),
                (10, {"total": 30, "sku": "a"}), (1, {"total": "n/a", "sku": "c"}))


@pytest.mark.parametrize("aggregate, prop, expected", [
    ("count", None, 3),
    ("sum", "total", 40.0),
    ("avg", "total", 20.0),
    ("min", "total", 10.0),
    ("max", "total", 30.0),
    ("first", "sku", "b"),
    ("last", "sku", "c"),
    ("most_frequent", "sku", "c"),      # a tie (b, a, c once each) goes to the latest
    ("unique", "sku", ["b", "a", "c"]),
])
def test_each_aggregate_of_a_computed_trait_over_a_90_day_window(aggregate, prop, expected):
    spec = {"name": "t", "event": "Order Completed", "aggregate": aggregate,
            "within_days": 90, **({"property": prop} if prop else {})}
    trait = compile_computed(ComputedTraitSchema().load(spec))
    assert trait.compute(State(traits={}, events=SPENDS, now=NOW)) == expected


def test_aggregates_over_no_events_are_empty_not_zero_except_count():
    state = State(traits={}, events={}, now=NOW)
    for aggregate in ("sum", "avg", "min", "max", "first", "last", "most_frequent"):
        trait = compile_computed(ComputedTraitSchema().load(
            {"name": "t", "event": "X", "aggregate": aggregate, "property": "p"}))
        assert trait.compute(state) is None
    count = compile_computed(ComputedTraitSchema().load(
        {"name": "t", "event": "X", "aggregate": "count"}))
    assert count.compute(state) == 0


def test_a_computed_trait_needs_a_property_unless_it_counts():
    with pytest.raises(ValidationError) as raised:
        ComputedTraitSchema().load({"name": "t", "event": "X", "aggregate": "sum"})
    assert raised.value.messages == {"property": ["is required for aggregate 'sum'"]}


# ---- the dependency index ------------------------------------------------------------------
def definitions(segments: dict, computed: dict | None = None) -> Definitions:
    return Definitions({n: {"rule": validate_rule(r)} for n, r in segments.items()},
                       {n: ComputedTraitSchema().load({"name": n, **c})
                        for n, c in (computed or {}).items()})


def test_a_change_re_evaluates_only_what_depends_on_it():
    defs = definitions({"fr": {"trait": "country", "op": "eq", "value": "FR"},
                        "buyer": {"event": "Order Completed"},
                        "big": {"trait": "spend", "op": "gt", "value": 100}},
                       {"spend": {"event": "Order Completed", "aggregate": "sum",
                                  "property": "total"}})
    assert defs.dependents[trait_key("country")] == {"fr"}
    assert defs.dependents[event_key("Order Completed")] == {"buyer"}
    assert defs.dependents[trait_key("spend")] == {"big"}
    assert defs.computed_dependents[event_key("Order Completed")] == {"spend"}
    assert definition_key("fr") in {k for k, names in defs.dependents.items() if "fr" in names}


def test_segments_that_read_segments_are_evaluated_after_them_in_one_pass():
    defs = definitions({"a_vip_french": {"and": [{"segment": "z_vip"}, {"segment": "m_fr"}]},
                        "m_fr": {"trait": "country", "op": "eq", "value": "FR"},
                        "z_vip": {"trait": "plan", "op": "eq", "value": "vip"}})
    profile = new_profile()
    profile["traits"] = {"country": "FR", "plan": "vip"}
    changes = defs.reevaluate(profile, {trait_key("country"), trait_key("plan")}, NOW)
    assert [(c.segment, c.entered) for c in changes] == [
        ("m_fr", True), ("z_vip", True), ("a_vip_french", True)]


def test_a_cycle_between_segments_is_named():
    with pytest.raises(CycleError, match="a -> b -> a"):
        dependency_order({"a": {"rule": {"segment": "b"}}, "b": {"rule": {"segment": "a"}}})


def test_a_computed_trait_that_changes_with_time_moves_the_segments_that_read_it():
    defs = definitions({"regular": {"trait": "orders_30d", "op": "gte", "value": 2}},
                       {"orders_30d": {"event": "Order Completed", "aggregate": "count",
                                       "within_days": 30}})
    profile = new_profile()
    profile["events"] = {"Order Completed": [[NOW - 29 * DAY, {}], [NOW - DAY, {}]]}
    [entered] = defs.reevaluate(profile, {event_key("Order Completed")}, NOW)
    assert entered.entered and profile["computed"] == {"orders_30d": 2}
    assert profile["due"] == pytest.approx(NOW + DAY)

    [exited] = defs.reevaluate(profile, {TIME}, NOW + DAY)
    assert not exited.entered and profile["computed"] == {"orders_30d": 1}


def test_a_relative_date_flips_at_the_very_moment_it_is_scheduled_to():
    within = compile_rule(validate_rule(
        {"trait": "signed_up_at", "op": "within_last_days", "value": 2}))
    older = compile_rule(validate_rule(
        {"trait": "signed_up_at", "op": "more_than_days_ago", "value": 2}))
    traits = {"signed_up_at": iso(0)}
    expiry = within.next_expiry(State(traits=traits, events={}, now=NOW))
    assert expiry == pytest.approx(NOW + 2 * DAY)
    at_expiry = State(traits=traits, events={}, now=expiry)
    assert not within.test(at_expiry)
    assert older.test(at_expiry)
