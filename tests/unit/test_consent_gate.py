"""The gate across the real services (in one process): consent changes both ways reach the
destinations, restriction blocks everything, GPC and TC strings count (DESIGN §4)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import httpx
import pytest
from consent_platform import ConsentPlatform
from test_consent_tcf import V1

DESTINATIONS = {"ads": (("pro",), ("advertising",)),
                "social": (("pro",), ("advertising",)),
                "stats": (("pro",), ("analytics",))}
DELIVERY_PLANNED = "activation.delivery_planned"


@pytest.fixture
def platform(tmp_path):
    made = ConsentPlatform(tmp_path, DESTINATIONS, tcf_vendor_id=11)
    made.apps["segments"].define_segment("pro", {"trait": "plan", "op": "eq", "value": "pro"})
    yield made
    made.close()


def enter(platform, anonymous_id: str, **extra) -> None:
    platform.send({"type": "identify", "anonymousId": anonymous_id,
                   "traits": {"plan": "pro", **extra.pop("traits", {})}, **extra})


def leave(platform, anonymous_id: str) -> None:
    platform.send({"type": "identify", "anonymousId": anonymous_id, "traits": {"plan": "free"}})


def grant(platform, anonymous_id: str, **purposes: bool) -> None:
    platform.apps["consent"].record_consent([("anonymous_id", anonymous_id)], purposes,
                                            source="cmp")
    platform.drain()


def sent(platform, destination: str) -> list[tuple[str, str]]:
    """(action, how it was allowed) of each request the destination received."""
    return [(i["action"], "removal" if i["decision_id"] == "consent_removal" else "decided")
            for i in platform.received(destination)]


def test_consent_granted_after_someone_entered_a_segment_activates_them_then(platform):
    enter(platform, "a1")
    assert platform.received() == []
    grant(platform, "a1", advertising=True)
    assert sent(platform, "ads") == sent(platform, "social") == [("entered", "decided")]
    assert sent(platform, "stats") == []  # analytics was never granted


def test_a_withdrawn_person_is_removed_from_every_audience_they_fed(platform):
    grant(platform, "a1", advertising=True, analytics=True)
    enter(platform, "a1")
    grant(platform, "a1", advertising=False)
    assert sent(platform, "ads") == sent(platform, "social") == [
        ("entered", "decided"), ("exited", "removal")]
    assert sent(platform, "stats") == [("entered", "decided")]  # analytics still granted


def test_a_removal_goes_only_to_audiences_that_received_the_person(platform):
    grant(platform, "a1", analytics=True)
    enter(platform, "a1")
    grant(platform, "a1", advertising=False)
    assert sent(platform, "ads") == sent(platform, "social") == []
    [outcome, _] = platform.apps["activation"].outcomes("ads")
    assert (outcome["outcome"], outcome["action"]) == ("skipped", "exited")


def test_deliveries_pending_when_consent_is_withdrawn_are_dropped_at_send_time(platform):
    grant(platform, "a1", advertising=True)
    platform.apps["gateway"].ingest("web", {"batch": [
        {"type": "identify", "anonymousId": "a1", "traits": {"plan": "pro"}}]},
        received_at=datetime.now(UTC))
    pending = platform.drain(hold=frozenset({DELIVERY_PLANNED}))
    assert pending and platform.received() == []
    platform.apps["consent"].record_consent([("anonymous_id", "a1")], {"advertising": False},
                                            source="cmp")
    # Each destination's queue keeps its order: the planned adds go first.
    pending += platform.drain(hold=frozenset({DELIVERY_PLANNED}))
    for envelope in pending:
        platform.consume(envelope)
    platform.drain()
    assert platform.received() == []
    assert platform.apps["activation"].stats()["ads"]["suppressed"] == 1


def test_an_objection_without_purposes_covers_every_direct_marketing_purpose(platform):
    grant(platform, "a1", advertising=True, analytics=True)
    enter(platform, "a1")
    answer = platform.apps["consent"].record_objection([["anonymous_id", "a1"]], None, "dsr")
    platform.drain()
    assert {"advertising", "email_marketing", "sale_sharing"} <= set(answer["purposes"])
    assert "analytics" not in answer["purposes"]
    leave(platform, "a1")
    enter(platform, "a1")
    assert sent(platform, "ads") == [("entered", "decided"), ("exited", "removal")]
    assert [a for a, _ in sent(platform, "stats")] == ["entered", "exited", "entered"]
    grant(platform, "a1", advertising=True)  # the CMP again: the objection still stands
    assert len(sent(platform, "ads")) == 2


def test_restriction_blocks_all_activation_keeps_the_data_and_lifting_it_activates_again(
        platform):
    grant(platform, "a1", advertising=True, analytics=True)
    enter(platform, "a1")
    consent = platform.apps["consent"]
    consent.set_restriction([["anonymous_id", "a1"]], True, "accuracy contested")
    platform.drain()
    for destination in DESTINATIONS:
        assert sent(platform, destination) == [("entered", "decided"), ("exited", "removal")]
    profile_id = platform.profile_of("anonymous_id", "a1")
    assert platform.apps["contacts"].profile(profile_id)["traits"]["plan"] == "pro"
    (decision,) = consent.decide_many([{"profile_id": profile_id, "destination": "stats",
                                        "purposes": ["analytics"]}])
    assert decision["reason"] == "processing restricted (GDPR Art. 18): accuracy contested"

    consent.set_restriction([["anonymous_id", "a1"]], False, "resolved")
    platform.drain()
    for destination in DESTINATIONS:
        assert sent(platform, destination)[-1] == ("entered", "decided")


def test_gpc_opts_a_ccpa_profile_out_of_ads_and_its_later_absence_does_not_opt_back_in(
        platform):
    enter(platform, "a1", traits={"jurisdiction": "CCPA"})
    grant(platform, "a1", advertising=True)  # recorded under the profile's CCPA
    assert sent(platform, "ads") == [("entered", "decided")]
    platform.send({"type": "page", "anonymousId": "a1", "name": "Home",
                   "context": {"privacy": {"gpc": True}}})
    assert sent(platform, "ads") == [("entered", "decided"), ("exited", "removal")]
    platform.send({"type": "page", "anonymousId": "a1", "name": "Home"})  # no signal now
    leave(platform, "a1")
    enter(platform, "a1")
    assert len(sent(platform, "ads")) == 2
    record = platform.apps["consent"].consent_of(platform.profile_of("anonymous_id", "a1"))[
        "records"][0]
    gpc = record["regulations"]["CCPA"]["sale_sharing"]["gpc"]
    assert (gpc["granted"], gpc["kind"]) == (False, "gpc")


def test_a_tc_string_on_an_event_grants_what_it_consents_to_for_our_vendor(platform):
    # V1: purposes 1, 3-6 and vendor 11 (ours here): advertising (1, 3, 4), not analytics.
    enter(platform, "a1", context={"consent": {"tcString": V1}})
    assert sent(platform, "ads") == [("entered", "decided")]
    assert sent(platform, "stats") == []


def test_an_add_planned_when_consent_came_back_is_not_sent_twice(platform):
    grant(platform, "a1", advertising=True)
    platform.apps["gateway"].ingest("web", {"batch": [
        {"type": "identify", "anonymousId": "a1", "traits": {"plan": "pro"}}]},
        received_at=datetime.now(UTC))
    pending = platform.drain(hold=frozenset({DELIVERY_PLANNED}))  # the add, not yet sent
    platform.apps["consent"].record_consent([("anonymous_id", "a1")], {"analytics": True},
                                            source="cmp")
    pending += platform.drain(hold=frozenset({DELIVERY_PLANNED}))
    platform.apps["consent"].record_consent([("anonymous_id", "a1")], {"advertising": True},
                                            source="crm")  # granted again, elsewhere
    pending += platform.drain(hold=frozenset({DELIVERY_PLANNED}))
    for envelope in pending:
        platform.consume(envelope)
    platform.drain()
    assert sent(platform, "ads") == [("entered", "decided")]
    assert sent(platform, "stats") == [("entered", "decided")]


def test_an_entry_and_consent_granted_meanwhile_reach_a_destination_once_in_one_batch(
        platform):
    platform.apps["gateway"].ingest("web", {"batch": [
        {"type": "identify", "anonymousId": "a1", "traits": {"plan": "pro"}}]},
        received_at=datetime.now(UTC))
    pending = platform.drain(hold=frozenset({DELIVERY_PLANNED}))  # the entry's add
    platform.apps["consent"].record_consent([("anonymous_id", "a1")], {"advertising": True},
                                            source="cmp")
    pending += platform.drain(hold=frozenset({DELIVERY_PLANNED}))  # consent's add
    for destination in ("ads", "social"):
        planned = [e for e in pending if e.partition == destination]
        items = sorted((i for e in planned for i in e.items), key=lambda i: i["position"])
        assert len(items) == 2
        platform.consume(dataclasses.replace(planned[0], items=items))
    platform.drain()
    assert sent(platform, "ads") == sent(platform, "social") == [("entered", "decided")]


def test_a_dead_lettered_removal_is_replayed_without_asking_consent_again(platform):
    grant(platform, "a1", advertising=True)
    enter(platform, "a1")
    control = platform.receiver.url_for("x").rsplit("/hooks/", 1)[0] + "/_control"
    httpx.post(control, json={"fail_next": 1000, "status": 503}).raise_for_status()
    grant(platform, "a1", advertising=False)  # the removals fail, for good
    httpx.post(control, json={"fail_next": 0}).raise_for_status()
    activation = platform.apps["activation"]
    [letter] = activation.dead_letters("ads")
    assert activation.replay("ads", letter["id"], platform.apps["consent"].decide_many) == {
        "delivered": 1, "suppressed": 0}
    assert sent(platform, "ads") == [("entered", "decided"), ("exited", "removal")]
