"""Property: after any interleaving of trait changes, events (some late), merges, the passing
of time and rule changes, the memberships and computed traits kept incrementally equal a
full recomputation from scratch."""

from __future__ import annotations

import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from segments_support import START, Clock

from services.segments.application import SegmentsApplication
from services.segments.evaluation import EVERYTHING, Definitions, absorb, new_profile
from services.segments.rules import DAY
from services.segments.schemas import ComputedTraitSchema, SegmentSchema
from shared.config import Settings

PEOPLE = [str(uuid.UUID(int=i + 1)) for i in range(4)]
KEY = "contacts/contacts.profile_changed/0"

SEGMENTS = {
    "french": {"trait": "country", "op": "eq", "value": "FR"},
    "busy": {"event": "Order Completed", "count": {"op": "at_least", "value": 2},
             "within_days": 3},
    "quiet": {"and": [{"event": "Page Viewed"},
                      {"event": "Page Viewed", "count": {"op": "at_most", "value": 0},
                       "within_days": 2}]},
    "new_buyer": {"event": "Order Completed", "occurrence": "first", "within_days": 5},
    "big": {"trait": "spend_4d", "op": "gte", "value": 10},
    "recent_signup": {"trait": "signed_up_at", "op": "within_last_days", "value": 2},
    "french_big": {"and": [{"segment": "french"}, {"segment": "big"}]},
}
REDEFINED = {"french": {"trait": "country", "op": "in", "value": ["FR", "BE"]},
             "busy": {"event": "Order Completed", "where": [
                 {"property": "total", "op": "gt", "value": 3}], "within_days": 2}}
COMPUTED = {"spend_4d": {"event": "Order Completed", "aggregate": "sum", "property": "total",
                         "within_days": 4},
            "last_page": {"event": "Page Viewed", "aggregate": "last", "property": "url"}}

person = st.sampled_from(range(len(PEOPLE)))
step = st.one_of(
    st.tuples(st.just("trait"), person, st.sampled_from(["country", "signed_up_at"]),
              st.integers(0, 3)),
    st.tuples(st.just("event"), person, st.sampled_from(["Order Completed", "Page Viewed"]),
              st.integers(0, 8), st.sampled_from([0.0, 0.0, 0.5, 2.5])),
    st.tuples(st.just("advance"), st.sampled_from([0.1, 0.5, 1.0, 2.2, 4.0])),
    st.tuples(st.just("merge"), person, person),
    st.tuples(st.just("redefine"), st.sampled_from(sorted(REDEFINED)), st.booleans()),
)


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


class Reference:
    """What each profile has been told, to recompute from scratch."""

    def __init__(self):
        self.profiles = {pid: new_profile() for pid in PEOPLE}

    def survivor(self, pid: str) -> str:
        while self.profiles[pid]["merged_into"]:
            pid = self.profiles[pid]["merged_into"]
        return pid

    def recompute(self, definitions: Definitions, now: float) -> dict[str, tuple]:
        answers = {}
        for pid, told in self.profiles.items():
            if told["merged_into"]:
                answers[pid] = (set(), {})
                continue
            fresh = new_profile()
            fresh["traits"] = dict(told["traits"])
            fresh["events"] = {n: sorted(o, key=lambda p: p[0]) for n, o in told["events"].items()}
            definitions.reevaluate(fresh, {EVERYTHING}, now)
            answers[pid] = (set(fresh["segments"]), fresh["computed"])
        return answers


def trait_value(name: str, choice: int, now: float):
    if name == "country":
        return ["FR", "BE", "DE", None][choice]
    return iso(now - choice * 0.9 * DAY)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, min_size=1, max_size=40))
def test_incremental_answers_equal_a_full_recomputation(steps):
    with tempfile.TemporaryDirectory() as directory:
        clock = Clock(START)
        app = SegmentsApplication(Settings(data_dir=Path(directory)), clock=clock)
        try:
            _run(app, clock, steps)
        finally:
            app.close()


def _run(app: SegmentsApplication, clock: Clock, steps: list) -> None:
    for name, rule in SEGMENTS.items():
        app.define_segment(name, SegmentSchema().load({"name": name, "rule": rule})["rule"])
    for name, spec in COMPUTED.items():
        app.define_computed_trait(ComputedTraitSchema().load({"name": name, **spec}))
    reference, position = Reference(), 0

    def send(pid: str, traits: dict, event: dict | None, merged_from=()) -> None:
        nonlocal position
        position += 1
        app.apply_batch(KEY, [{"position": position, "profile_id": pid, "traits": traits,
                               "event": event, "merged_from": list(merged_from),
                               "cause": {"partition": "0", "position": position}}])

    for action, *args in steps:
        if action == "trait":
            pid = reference.survivor(PEOPLE[args[0]])
            value = trait_value(args[1], args[2], clock.now)
            if value is None:  # null unsets a trait
                reference.profiles[pid]["traits"].pop(args[1], None)
            else:
                reference.profiles[pid]["traits"][args[1]] = value
            send(pid, {args[1]: value}, None)
        elif action == "event":
            pid = reference.survivor(PEOPLE[args[0]])
            at = clock.now - args[3] * DAY  # some arrive late
            props = {"total": args[2], "url": f"/p/{args[2]}"}
            reference.profiles[pid]["events"].setdefault(args[1], []).append([at, props])
            send(pid, {}, {"type": "track", "event": args[1], "timestamp": iso(at),
                           "properties": props})
        elif action == "advance":
            clock.advance(args[0])
            app.expire_due()
        elif action == "merge":
            survivor, absorbed = (reference.survivor(PEOPLE[i]) for i in args)
            if survivor == absorbed:
                continue
            absorb(reference.profiles[survivor], reference.profiles[absorbed], absorbed, clock.now)
            reference.profiles[absorbed]["merged_into"] = survivor
            send(survivor, {}, None, merged_from=[absorbed])
        else:
            segment, changed = args
            rule = REDEFINED[segment] if changed else SEGMENTS[segment]
            app.define_segment(segment, SegmentSchema().load(
                {"name": segment, "rule": rule})["rule"])
            app.run_backfills()

    expected = reference.recompute(app.definitions(), clock.now)
    for pid in PEOPLE:
        kept = (set(app.memberships(pid)["segments"]), app.computed_of(pid))
        assert kept == expected[pid], pid
