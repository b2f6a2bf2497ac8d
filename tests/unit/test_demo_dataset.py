"""The demo data set is deterministic, realistic, and its truth is right.

The truth is re-derived here a second way (breadth-first search over the identifiers
each call links, and the two segment rules written out by hand) so that a mistake in
the generator's own resolver shows up as a disagreement.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from segment.analytics import Client

from tessera.demo.dataset import (
    DESTINATIONS,
    SEGMENTS,
    Call,
    Dataset,
    generate,
    summary,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
PURPOSES = ("advertising", "marketing", "analytics")


@pytest.fixture(scope="module")
def default() -> Dataset:
    return generate(now=NOW)


@pytest.fixture(scope="module")
def tiny() -> Dataset:
    return generate(people=5, events=60, seed=1, now=NOW)


def all_calls(ds: Dataset) -> list[Call]:
    return [c for phase in ds.phases for c in phase]


def identifiers(call: Call) -> set[str]:
    kw = call.kwargs
    ids = set()
    if kw.get("user_id"):
        ids.add("u:" + kw["user_id"])
    if kw.get("anonymous_id"):
        ids.add("a:" + kw["anonymous_id"])
    traits = kw.get("traits") or {}
    if call.method == "identify" and traits.get("email"):
        ids.add("e:" + traits["email"].strip().lower())
    if call.method == "identify" and traits.get("phone"):
        ids.add("p:" + traits["phone"])
    return ids


def components(ds: Dataset) -> list[set[str]]:
    """Connected components of the identifier graph, by breadth-first search."""
    graph: dict[str, set[str]] = defaultdict(set)
    for call in all_calls(ds):
        ids = identifiers(call)
        for x in ids:
            graph[x] |= ids
    seen: set[str] = set()
    out = []
    for start in graph:
        if start in seen:
            continue
        comp, todo = set(), [start]
        while todo:
            x = todo.pop()
            if x in comp:
                continue
            comp.add(x)
            todo.extend(graph[x] - comp)
        seen |= comp
        out.append(comp)
    return out


def recompute(ds: Dataset, now: datetime = NOW) -> dict:
    """The whole truth again, with the segment rules written out by hand."""
    comps = components(ds)
    where = {x: i for i, comp in enumerate(comps) for x in comp}
    orders: dict[int, list[datetime]] = defaultdict(list)
    countries: dict[int, set[str]] = defaultdict(set)
    prefs: dict[int, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for call in all_calls(ds):
        i = where[next(iter(identifiers(call)))]
        kw = call.kwargs
        if call.method == "track" and kw["event"] == "Order Completed":
            orders[i].append(kw["timestamp"])
        if call.method == "identify" and "country" in (kw.get("traits") or {}):
            countries[i].add(kw["traits"]["country"])
        consent = (kw.get("context") or {}).get("consent", {}).get("categoryPreferences", {})
        for purpose, value in consent.items():
            prefs[i][purpose].append(value)

    def n_orders(i: int, days: int) -> int:
        return sum(1 for t in orders[i] if now - timedelta(days=days) < t <= now)

    members = {
        "frequent_buyers": {i for i in range(len(comps)) if n_orders(i, 90) >= 3},
        "fr_recent_buyers": {
            i for i in range(len(comps)) if countries[i] == {"FR"} and n_orders(i, 30) >= 1
        },
    }

    def allowed(i: int, purpose: str) -> bool:
        return bool(prefs[i][purpose]) and all(prefs[i][purpose])

    deliveries, suppressions, consented = {}, {}, {}
    for dest, spec in DESTINATIONS.items():
        ok = {i for i in range(len(comps)) if all(allowed(i, p) for p in spec["purposes"])}
        deliveries[dest] = sum(len(members[s] & ok) for s in spec["segments"])
        suppressions[dest] = sum(len(members[s] - ok) for s in spec["segments"])
        consented[dest] = len(set().union(*(members[s] for s in spec["segments"])) & ok)
    return {
        "components": comps,
        "members": members,
        "segment_members": {s: len(m) for s, m in members.items()},
        "deliveries": deliveries,
        "suppressions": suppressions,
        "consented": consented,
        "member_emails": {
            s: {x[2:] for i in m for x in comps[i] if x.startswith("e:")}
            for s, m in members.items()
        },
    }


def test_the_same_seed_gives_the_same_data_set():
    a = generate(people=200, events=4000, seed=3, now=NOW)
    b = generate(people=200, events=4000, seed=3, now=NOW)
    assert a.phases == b.phases
    assert a.truth == b.truth
    c = generate(people=200, events=4000, seed=4, now=NOW)
    assert c.phases != a.phases


def test_every_call_has_a_user_id_or_an_anonymous_id(default):
    for call in all_calls(default):
        assert call.kwargs.get("user_id") or call.kwargs.get("anonymous_id"), call


def test_every_call_is_accepted_by_the_segment_python_client(default):
    clients = {
        source: Client(key, send=False, sync_mode=True)
        for source, key in default.write_keys.items()
    }
    for call in all_calls(default)[::7] + default.phases[0]:
        ok, msg = call.send(clients[call.source])
        assert ok
        assert msg["type"] == call.method
        assert msg.get("userId") or msg.get("anonymousId")
        assert msg["messageId"] == call.kwargs["message_id"]


def test_sources_are_labelled_and_keyed_as_the_brief_says(default):
    assert default.write_keys == {"web": "wk_demo_web", "crm": "wk_demo_crm", "app": "wk_demo_app"}
    for call in all_calls(default):
        kw = call.kwargs
        if call.source == "crm":
            assert call.method == "identify"
            assert "user_id" not in kw
            assert kw["anonymous_id"].startswith("crm-")
            assert kw["traits"]["email"].strip()
        elif call.source == "app":
            assert kw["user_id"] and "anonymous_id" not in kw
            if call.method == "identify":
                assert kw["traits"]["email"]
        else:
            assert kw["anonymous_id"]
            if call.method != "identify":
                assert "user_id" not in kw
        assert call.source != "web" or call.method != "screen"
        assert call.source != "app" or call.method != "page"


def test_phase_one_holds_only_identity_calls_and_phase_two_only_behaviour(default):
    first, second = default.phases
    assert first and second
    assert {c.method for c in first} <= {"identify", "alias"}
    assert {c.method for c in second} <= {"track", "page", "screen"}


def test_only_crm_and_web_identify_calls_carry_consent(default):
    carriers = [c for c in all_calls(default) if "consent" in (c.kwargs.get("context") or {})]
    assert carriers
    assert {(c.source, c.method) for c in carriers} == {("crm", "identify"), ("web", "identify")}
    crm = [c for c in default.phases[0] if c.source == "crm"]
    share = sum(1 for c in crm if "consent" in c.kwargs["context"]) / len(crm)
    assert 0.45 < share < 0.65


def test_timestamps_are_utc_and_within_the_last_25_days(default):
    for call in all_calls(default):
        ts = call.kwargs["timestamp"]
        assert ts.utcoffset() == timedelta(0)
        assert NOW - timedelta(days=25) < ts < NOW


def test_no_order_window_closes_within_the_next_hour(default):
    for call in default.phases[1]:
        if call.method == "track" and call.kwargs["event"] == "Order Completed":
            assert call.kwargs["timestamp"] > NOW - timedelta(days=30) + timedelta(hours=1)


def test_expected_profiles_equals_the_number_of_connected_components(default):
    assert default.truth.expected_profiles == len(components(default))


def test_no_profile_holds_two_user_ids(default):
    for comp in components(default):
        assert sum(1 for x in comp if x.startswith("u:")) <= 1


def test_the_truth_matches_an_independent_recomputation(default):
    again = recompute(default)
    truth = default.truth
    assert truth.segment_members == again["segment_members"]
    assert truth.expected_deliveries == again["deliveries"]
    assert truth.expected_suppressions == again["suppressions"]
    assert truth.consented == again["consented"]
    assert truth.member_emails == again["member_emails"]


def test_a_tiny_data_set_is_consistent_and_checkable_by_hand(tiny):
    truth = tiny.truth
    calls = all_calls(tiny)
    assert truth.people == 5
    assert truth.records_in == len(calls) == 60
    comps = components(tiny)
    assert truth.expected_profiles == len(comps)
    # every person is at least one profile, at most two (an anonymous web one on top)
    assert 5 <= truth.expected_profiles <= 10
    # profiles with an email are people; each holds exactly one email
    emails = [sum(1 for x in comp if x.startswith("e:")) for comp in comps]
    assert all(n <= 1 for n in emails)
    assert sum(emails) <= 5
    again = recompute(tiny)
    assert truth.segment_members == again["segment_members"]
    assert truth.expected_deliveries == again["deliveries"]
    assert truth.expected_suppressions == again["suppressions"]
    assert truth.consented == again["consented"]
    assert truth.member_emails == again["member_emails"]
    for segment, emails_in in truth.member_emails.items():
        assert len(emails_in) <= truth.segment_members[segment]


def test_the_tiny_data_set_has_the_figures_checked_by_hand(tiny):
    # Checked by reading the 6 identify calls and 2 orders of generate(5, 60, seed=1).
    # Regenerate these figures by hand if the generator changes on purpose.
    # Pierre's CRM record ("Pierre86@Sfr.fr", FR, consent advertising only) and his app
    # identify ("pierre86@sfr.fr") are one profile; his one app order puts it in
    # fr_recent_buyers, and crm_sync (marketing + analytics) must suppress it. Camille
    # (app), William (CRM) and Jessica (CRM + app, linked by email) are one profile each;
    # three web visitors never log in and stay anonymous. The other order is one of theirs.
    truth = tiny.truth
    assert len(tiny.phases[0]) == 6
    assert truth.expected_profiles == 7
    assert sum(1 for comp in components(tiny) if not any(x[0] == "e" for x in comp)) == 3
    orders = [
        c for c in tiny.phases[1] if c.method == "track" and c.kwargs["event"] == "Order Completed"
    ]
    assert len(orders) == 2
    assert truth.segment_members == {"frequent_buyers": 0, "fr_recent_buyers": 1}
    assert truth.member_emails == {
        "frequent_buyers": set(),
        "fr_recent_buyers": {"pierre86@sfr.fr"},
    }
    assert truth.expected_deliveries == {"ads": 0, "crm_sync": 0}
    assert truth.expected_suppressions == {"ads": 0, "crm_sync": 1}
    assert truth.consented == {"ads": 0, "crm_sync": 0}


def test_deliveries_plus_suppressions_equal_members_of_followed_segments(default, tiny):
    for ds in (default, tiny):
        truth = ds.truth
        for dest, spec in ds.destinations.items():
            members = sum(truth.segment_members[s] for s in spec["segments"])
            assert truth.expected_deliveries[dest] + truth.expected_suppressions[dest] == members
            assert truth.consented[dest] <= truth.expected_deliveries[dest]


def test_every_consented_profile_is_counted_once_per_destination(default):
    # ads follows one segment, so its consented profiles are exactly its deliveries
    assert default.truth.consented["ads"] == default.truth.expected_deliveries["ads"]
    assert default.truth.expected_deliveries["ads"] > 0
    assert default.truth.expected_suppressions["ads"] > 0


def test_member_emails_only_leave_out_anonymous_profiles(default):
    again = recompute(default)
    for segment, members in again["members"].items():
        with_email = [
            i for i in members if any(x.startswith("e:") for x in again["components"][i])
        ]
        assert len(default.truth.member_emails[segment]) == len(with_email)
    anonymous = default.truth.segment_members["frequent_buyers"] - len(
        default.truth.member_emails["frequent_buyers"]
    )
    assert anonymous > 0  # unidentified web visitors can be frequent buyers
    assert default.truth.segment_members["fr_recent_buyers"] == len(
        default.truth.member_emails["fr_recent_buyers"]
    )


def test_default_args_give_1000_people_and_about_20000_calls(default):
    assert default.truth.people >= 1000
    assert 18000 <= default.truth.records_in <= 22000
    assert default.truth.records_in == len(all_calls(default))


def test_a_realistic_share_of_people_are_frequent_buyers(default):
    share = default.truth.segment_members["frequent_buyers"] / default.truth.people
    assert 0.25 <= share <= 0.35
    assert default.truth.segment_members["fr_recent_buyers"] > 0


def test_sources_overlap_realistically(default):
    people = default.truth.people
    crm = {c.kwargs["anonymous_id"] for c in default.phases[0] if c.source == "crm"}
    app = {c.kwargs["user_id"] for c in all_calls(default) if c.source == "app"}
    web = {c.kwargs["anonymous_id"] for c in all_calls(default) if c.source == "web"}
    assert 0.62 <= len(crm) / people <= 0.78
    assert 0.42 <= len(app) / people <= 0.58
    assert 0.50 <= len(web) / people <= 0.68  # a few web users only show up in the app


def test_some_emails_exercise_normalisation(default):
    raw = [
        c.kwargs["traits"]["email"]
        for c in default.phases[0]
        if "email" in (c.kwargs.get("traits") or {})
    ]
    assert any(e != e.strip() for e in raw)
    assert any(e != e.lower() for e in raw)


def test_phones_are_e164(default):
    phones = [
        c.kwargs["traits"]["phone"]
        for c in default.phases[0]
        if "phone" in (c.kwargs.get("traits") or {})
    ]
    assert phones
    for phone in phones:
        assert phone.startswith("+") and phone[1:].isdigit() and 8 <= len(phone) <= 16


def test_segments_and_destinations_are_the_agreed_json(default):
    assert default.segments == SEGMENTS
    assert default.segments["frequent_buyers"] == {
        "event": "Order Completed",
        "count": {"op": "at_least", "value": 3},
        "within_days": 90,
    }
    assert default.segments["fr_recent_buyers"] == {
        "and": [
            {"trait": "country", "op": "eq", "value": "FR"},
            {
                "event": "Order Completed",
                "count": {"op": "at_least", "value": 1},
                "within_days": 30,
            },
        ]
    }
    assert default.destinations == {
        "ads": {"segments": ["frequent_buyers"], "purposes": ["advertising"]},
        "crm_sync": {
            "segments": ["frequent_buyers", "fr_recent_buyers"],
            "purposes": ["marketing", "analytics"],
        },
    }


def test_orders_carry_id_revenue_and_currency(default):
    ids = set()
    for call in default.phases[1]:
        if call.method == "track" and call.kwargs["event"] == "Order Completed":
            props = call.kwargs["properties"]
            assert props["revenue"] > 0
            assert props["currency"] in {"EUR", "GBP", "USD"}
            ids.add(props["order_id"])
    assert len(ids) == sum(
        1
        for c in default.phases[1]
        if c.method == "track" and c.kwargs["event"] == "Order Completed"
    )


def test_summary_is_a_json_friendly_dict_of_the_truth(default):
    out = summary(default)
    json.dumps(out)
    assert out["expected_profiles"] == default.truth.expected_profiles
    assert out["records_in"] == sum(out["calls_per_phase"])
    assert summary(default.truth)["segment_members"] == default.truth.segment_members


def test_a_naive_now_is_refused():
    with pytest.raises(ValueError):
        generate(people=3, events=30, now=datetime(2025, 1, 1))
