"""Segment membership as changes and time pass, with an injected clock."""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter

from segments_support import ADA, BOB, KEY, START, define, membership_changes, partition

import services.segments.evaluation as segments_evaluation
from services.segments.rules import DAY

FREQUENT_BUYERS = {"event": "Order Completed", "count": {"op": "at_least", "value": 3},
                   "within_days": 90}
FRENCH = {"trait": "country", "op": "eq", "value": "FR"}


# ---- behaviour in a window -----------------------------------------------------------------
def test_a_profile_entering_frequent_buyers_produces_one_entered_change(app, feed, clock):
    define(app, "frequent_buyers", FREQUENT_BUYERS)
    feed.order(ADA)
    clock.advance(1)
    feed.order(ADA)
    assert membership_changes(app) == []
    clock.advance(1)
    feed.order(ADA)

    (change,) = membership_changes(app)
    assert (change["profile_id"], change["segment"], change["change"]) == (
        ADA, "frequent_buyers", "entered")
    assert change["reason"] == "Order Completed at_least 3 within 90 days"
    assert change["at"] == "2026-01-03T00:00:00.000Z"  # the injected clock, not the wall
    assert change["cause"] == {"partition": "0", "position": 30}
    assert app.memberships(ADA)["segments"] == {"frequent_buyers": change["at"]}


def test_a_fourth_order_produces_no_new_change(app, feed, clock):
    define(app, "frequent_buyers", FREQUENT_BUYERS)
    for _ in range(3):
        feed.order(ADA)
        clock.advance(1)
    before = app.process_recorder.max_notification_id()
    feed.order(ADA)
    assert len(membership_changes(app)) == 1
    # Only the profile's read-model row and the tracking record were saved: no event.
    assert app.process_recorder.max_notification_id() == before


def test_orders_outside_the_window_do_not_count(app, feed, clock):
    define(app, "frequent_buyers", FREQUENT_BUYERS)
    feed.order(ADA)
    clock.advance(50)
    feed.order(ADA)
    clock.advance(50)  # the first order is now 100 days old
    feed.order(ADA)
    assert membership_changes(app) == []


def test_where_filters_which_orders_count(app, feed, clock):
    define(app, "euro_buyers", {**FREQUENT_BUYERS, "where": {"currency": "EUR"}})
    feed.order(ADA, currency="EUR")
    feed.order(ADA, currency="USD")
    feed.order(ADA, currency="EUR")
    assert membership_changes(app) == []
    feed.order(ADA, currency="EUR")
    assert [c["change"] for c in membership_changes(app)] == ["entered"]


def test_the_window_expires_on_time_alone_without_any_new_event(app, feed, clock):
    define(app, "frequent_buyers", FREQUENT_BUYERS)
    for _ in range(4):  # orders on days 0, 1, 2, 3
        feed.order(ADA)
        clock.advance(1)
    assert [c["change"] for c in membership_changes(app)] == ["entered"]

    clock.now = START + 90 * DAY + 3600  # day 0 left the window: days 1, 2, 3 remain
    assert app.expire_due() == 0
    assert app.memberships(ADA)["segments"].keys() == {"frequent_buyers"}

    clock.now = START + 91 * DAY + 3600  # day 1 left too: two orders remain
    assert app.expire_due() == 1
    _, exited = membership_changes(app)
    assert app.process_recorder.max_tracking_id(KEY) == feed.position  # nothing consumed
    assert (exited["profile_id"], exited["segment"], exited["change"]) == (
        ADA, "frequent_buyers", "exited")
    assert exited["cause"] == {"partition": partition(ADA), "position": 0}
    assert app.memberships(ADA)["segments"] == {}
    assert app.expire_due() == 0


def test_nothing_expires_before_its_time(app, feed, clock):
    define(app, "frequent_buyers", FREQUENT_BUYERS)
    for _ in range(3):
        feed.order(ADA)
    clock.advance(89)
    assert app.expire_due() == 0
    assert app.memberships(ADA)["segments"].keys() == {"frequent_buyers"}


def test_an_at_most_segment_is_entered_when_old_behaviour_expires(app, feed, clock):
    define(app, "lapsed", {"and": [
        {"trait": "plan", "op": "exists"},
        {"event": "Order Completed", "count": {"op": "at_most", "value": 0}, "within_days": 30},
    ]})
    feed.send(feed.item(ADA, {"plan": "pro"}, "Order Completed"))
    assert membership_changes(app) == []
    clock.advance(31)
    assert app.expire_due() == 1
    assert membership_changes(app)[-1]["change"] == "entered"


# ---- traits --------------------------------------------------------------------------------
def counting_rules(monkeypatch) -> Counter:
    """Count how often each segment's rule is evaluated."""
    calls: Counter = Counter()
    real = segments_evaluation.compile_rule

    def compile_counting(spec):
        rule = real(spec)
        label = segments_evaluation.describe(spec)

        def test(state):
            calls[label] += 1
            return rule.test(state)

        return dataclasses.replace(rule, test=test)

    monkeypatch.setattr(segments_evaluation, "compile_rule", compile_counting)
    return calls


def test_a_trait_only_segment_is_re_evaluated_only_when_its_traits_change(
        app, feed, monkeypatch):
    calls = counting_rules(monkeypatch)
    define(app, "french", FRENCH)
    define(app, "frequent_buyers", FREQUENT_BUYERS)
    french = "country eq 'FR'"

    feed.send(feed.item(ADA, {"plan": "pro"}))
    feed.order(ADA, {"plan": "pro"})
    assert calls[french] == 0

    feed.send(feed.item(ADA, {"plan": "pro", "country": "FR"}))
    assert calls[french] == 1
    assert [(c["segment"], c["change"]) for c in membership_changes(app)] == [
        ("french", "entered")]

    feed.send(feed.item(ADA, {"plan": "enterprise", "country": "FR"}))  # country unchanged
    assert calls[french] == 1
    feed.send(feed.item(ADA, {"plan": "enterprise", "country": "DE"}))
    assert calls[french] == 2
    assert [(c["segment"], c["change"]) for c in membership_changes(app)] == [
        ("french", "entered"), ("french", "exited")]


def test_a_change_carries_the_profiles_traits(app, feed):
    define(app, "french", FRENCH)
    feed.send(feed.item(ADA, {"country": "FR", "email": "ada@example.com"}))
    assert membership_changes(app)[0]["traits"] == {"country": "FR", "email": "ada@example.com"}


def test_membership_history_lists_entries_and_exits_with_their_reasons(app, feed, clock):
    define(app, "french", FRENCH)
    define(app, "frequent_buyers", FREQUENT_BUYERS)
    feed.send(feed.item(ADA, {"country": "FR"}))
    for _ in range(3):
        feed.order(ADA, {"country": "FR"})
    feed.send(feed.item(ADA, {"country": "DE"}))
    clock.advance(91)
    app.expire_due()

    history = app.memberships(ADA)["history"]
    assert [(h["segment"], h["change"], h["reason"]) for h in history] == [
        ("french", "entered", "country eq 'FR'"),
        ("frequent_buyers", "entered", "Order Completed at_least 3 within 90 days"),
        ("french", "exited", "country eq 'FR'"),
        ("frequent_buyers", "exited", "Order Completed at_least 3 within 90 days"),
    ]
    assert app.memberships(ADA)["segments"] == {}
    assert all(h["at"] for h in history)


def test_an_unknown_profile_has_no_memberships(app):
    unknown = str(uuid.uuid4())
    assert app.memberships(unknown) == {"profile_id": unknown, "segments": {}, "history": []}
    assert app.memberships("not-a-uuid")["segments"] == {}


# ---- merges --------------------------------------------------------------------------------
def test_a_merge_moves_behaviour_to_the_survivor_and_the_absorbed_profile_exits(
        app, feed, clock):
    define(app, "frequent_buyers", FREQUENT_BUYERS)
    for _ in range(3):
        feed.order(BOB)
    feed.order(ADA)
    assert [(c["profile_id"], c["change"]) for c in membership_changes(app)] == [
        (BOB, "entered")]

    feed.send(feed.item(ADA, {"email": "ada@example.com"}, merged_from=(BOB,)))

    changes = [(c["profile_id"], c["segment"], c["change"], c["reason"])
               for c in membership_changes(app)[1:]]
    assert sorted(changes) == sorted([
        (ADA, "frequent_buyers", "entered", "Order Completed at_least 3 within 90 days"),
        (BOB, "frequent_buyers", "exited", "profile merged into another"),
    ])
    assert app.memberships(BOB)["segments"] == {}
    assert app.memberships(ADA)["segments"].keys() == {"frequent_buyers"}


def test_a_split_gives_the_part_its_behaviour_back_and_re_evaluates_both(app, feed):
    define(app, "frequent_buyers", FREQUENT_BUYERS)
    for _ in range(2):
        feed.order(BOB)
    feed.order(ADA)
    feed.send(feed.item(ADA, merged_from=(BOB,)))
    assert app.memberships(ADA)["segments"].keys() == {"frequent_buyers"}  # 3 orders

    # Identity announces every profile the split involved, each naming the split one.
    feed.send(feed.item(ADA, split_from=ADA), feed.item(BOB, split_from=ADA))

    assert app.memberships(ADA)["segments"] == {}  # back to its own single order
    assert app.memberships(BOB)["segments"] == {}  # two orders of its own
    feed.order(BOB)  # BOB's events are BOB's again, not redirected to ADA
    assert app.memberships(BOB)["segments"].keys() == {"frequent_buyers"}
    assert app.memberships(ADA)["segments"] == {}
    assert [(c["profile_id"], c["change"], c["reason"]) for c in membership_changes(app)] == [
        (ADA, "entered", "Order Completed at_least 3 within 90 days"),
        (ADA, "exited", "Order Completed at_least 3 within 90 days"),
        (BOB, "entered", "Order Completed at_least 3 within 90 days")]


def test_a_split_announced_part_first_ends_the_same(app, feed):
    define(app, "frequent_buyers", FREQUENT_BUYERS)
    for _ in range(2):
        feed.order(BOB)
    feed.order(ADA)
    feed.send(feed.item(ADA, merged_from=(BOB,)))
    feed.send(feed.item(BOB, split_from=ADA))  # the parts come on their own partitions
    feed.send(feed.item(ADA, split_from=ADA))
    assert app.memberships(ADA)["segments"] == {}
    feed.order(BOB)
    assert app.memberships(BOB)["segments"].keys() == {"frequent_buyers"}


def test_events_of_the_absorbed_id_count_for_the_survivor(app, feed):
    define(app, "frequent_buyers", FREQUENT_BUYERS)
    feed.order(ADA)
    feed.order(BOB)
    feed.send(feed.item(ADA, merged_from=(BOB,)))
    assert membership_changes(app) == []
    feed.order(BOB)  # still in flight under the absorbed id
    assert [(c["profile_id"], c["change"]) for c in membership_changes(app)] == [
        (ADA, "entered")]


def test_a_merge_announced_before_the_absorbed_profile_was_seen_still_redirects_it(app, feed):
    define(app, "frequent_buyers", FREQUENT_BUYERS)
    feed.order(ADA)
    feed.order(ADA)
    feed.send(feed.item(ADA, merged_from=(BOB,)))
    feed.order(BOB)  # the absorbed id's own event arrives after the merge
    assert [(c["profile_id"], c["change"]) for c in membership_changes(app)] == [
        (ADA, "entered")]


# ---- idempotence ---------------------------------------------------------------------------
def test_a_redelivered_batch_changes_no_membership(app, feed):
    define(app, "frequent_buyers", FREQUENT_BUYERS)
    batch = [feed.item(ADA, event="Order Completed") for _ in range(3)]
    assert feed.send(*batch) == 3
    before = app.process_recorder.max_notification_id()
    assert feed.send(*batch) == 0
    assert app.process_recorder.max_notification_id() == before
    assert len(membership_changes(app)) == 1


def test_members_of_a_removed_segment_exit_on_their_next_change(app, feed):
    define(app, "french", FRENCH)
    feed.send(feed.item(ADA, {"country": "FR"}))
    assert app.remove_segment("french")
    assert not app.remove_segment("french")
    assert "french" not in app.segments()

    feed.send(feed.item(ADA, {"country": "FR", "plan": "pro"}))

    last = membership_changes(app)[-1]
    assert (last["profile_id"], last["segment"], last["change"], last["reason"]) == (
        ADA, "french", "exited", "segment removed")
    assert app.memberships(ADA)["segments"] == {}
