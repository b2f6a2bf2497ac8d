"""Contacts: traits, the bounded timeline, merges and idempotent consumption."""

from __future__ import annotations

import uuid

import pytest

from services.contacts.application import ContactsApplication
from services.contacts.domain import RECENT_EVENTS, ChangeBatch
from shared.config import Settings

KEY = "identity/identity.resolved/0"
ADA = str(uuid.uuid4())
BOB = str(uuid.uuid4())


@pytest.fixture
def app(tmp_path):
    made = ContactsApplication(Settings(data_dir=tmp_path))
    yield made
    made.close()


def resolved(position: int, profile_id: str, merged_from: tuple[str, ...] = (), **event) -> dict:
    event.setdefault("timestamp", f"2026-01-01T00:00:{position % 60:02d}.000Z")
    return {"position": position, "profile_id": profile_id, "source": "web", "event": event,
            "identifiers": [], "merged_from": list(merged_from)}


def identify(position: int, profile_id: str, **traits) -> dict:
    return resolved(position, profile_id, type="identify", traits=traits)


def track(position: int, profile_id: str, name: str = "Order Completed", **properties) -> dict:
    return resolved(position, profile_id, type="track", event=name, properties=properties,
                    messageId=f"m-{position}")


def changes(app: ContactsApplication) -> list[dict]:
    found = []
    for notification in app.process_recorder.select_notifications(start=1, limit=10_000):
        domain_event = app.mapper.to_domain_event(notification)
        if isinstance(domain_event, ChangeBatch.ProfilesChanged):
            found.extend(domain_event.items)
    return found


def test_identify_traits_land_on_the_profile(app):
    app.apply_batch(KEY, "0", [identify(1, ADA, email="ada@example.com", plan="free")])
    app.apply_batch(KEY, "0", [identify(2, ADA, plan="pro", country="FR")])
    profile = app.profile(ADA)
    assert profile["traits"] == {"email": "ada@example.com", "plan": "pro", "country": "FR"}
    assert profile["events_total"] == 0  # identify is not a timeline event


def test_traits_in_the_context_of_a_track_land_on_the_profile_too(app):
    item = resolved(1, ADA, type="track", event="Signed Up", context={"traits": {"plan": "pro"}})
    app.apply_batch(KEY, "0", [item])
    assert app.profile(ADA)["traits"] == {"plan": "pro"}


def test_the_traits_of_a_group_call_describe_the_group_not_the_person(app):
    app.apply_batch(KEY, "0", [resolved(1, ADA, type="group", groupId="acme",
                                        traits={"name": "ACME", "plan": "enterprise"})])
    profile = app.profile(ADA)
    assert profile["traits"] == {}
    assert profile["groups"] == {"acme": {"name": "ACME", "plan": "enterprise"}}


def test_track_page_and_screen_go_to_the_timeline(app):
    app.apply_batch(KEY, "0", [
        track(1, ADA, "Order Completed", revenue=10),
        resolved(2, ADA, type="page", name="Pricing"),
        resolved(3, ADA, type="screen", name="Home"),
        identify(4, ADA, plan="pro"),
    ])
    profile = app.profile(ADA)
    assert profile["events_total"] == 3
    assert [(e["type"], e["event"]) for e in profile["recent_events"]] == [
        ("track", "Order Completed"), ("page", "Pricing"), ("screen", "Home")]
    assert profile["recent_events"][0]["properties"] == {"revenue": 10}
    assert profile["last_seen"] == "2026-01-01T00:00:03.000Z"


def test_the_recent_timeline_is_bounded_while_the_total_keeps_counting(app):
    app.apply_batch(KEY, "0", [track(i, ADA, f"Step {i}") for i in range(1, 21)])
    app.apply_batch(KEY, "0", [track(i, ADA, f"Step {i}") for i in range(21, 31)])
    profile = app.profile(ADA)
    assert profile["events_total"] == 30
    assert len(profile["recent_events"]) == RECENT_EVENTS == 20
    assert [e["event"] for e in profile["recent_events"]] == [f"Step {i}" for i in range(11, 31)]


def test_each_change_is_announced_with_its_cause(app):
    app.apply_batch(KEY, "3", [identify(7, ADA, plan="pro"), track(8, ADA)])
    announced = changes(app)
    assert [c["cause"] for c in announced] == [{"partition": "3", "position": 7},
                                               {"partition": "3", "position": 8}]
    assert announced[0]["event"] is None
    assert announced[1]["event"]["event"] == "Order Completed"
    # An order makes a customer (a default lifecycle rule), and segments see that too.
    assert announced[1]["traits"] == {"plan": "pro", "lifecycle_stage": "customer"}


def test_a_merge_folds_the_absorbed_profile_into_the_survivor_whose_own_values_win(app):
    app.apply_batch(KEY, "0", [
        identify(1, ADA, email="ada@example.com", plan="pro"),
        track(2, ADA),
        identify(3, BOB, plan="free", country="FR"),
        track(4, BOB), track(5, BOB),
    ])
    app.apply_batch(KEY, "0", [resolved(6, ADA, merged_from=(BOB,), type="track",
                                        event="Merged Visit")])
    survivor = app.profile(ADA)
    assert survivor["traits"] == {"email": "ada@example.com", "plan": "pro", "country": "FR"}
    assert survivor["events_total"] == 1 + 2 + 1
    assert survivor["absorbed"] == [BOB]
    # The absorbed id resolves to the survivor.
    assert app.profile(BOB) == survivor
    assert changes(app)[-1]["merged_from"] == [BOB]


def test_events_for_the_absorbed_id_land_on_the_survivor(app):
    app.apply_batch(KEY, "0", [identify(1, ADA, plan="pro"), identify(2, BOB, country="FR")])
    app.apply_batch(KEY, "0", [resolved(3, ADA, merged_from=(BOB,), type="identify")])
    app.apply_batch(KEY, "1", [track(4, BOB, "Late Event"), identify(5, BOB, city="Lyon")])
    survivor = app.profile(ADA)
    assert survivor["events_total"] == 1
    assert survivor["recent_events"][-1]["event"] == "Late Event"
    assert survivor["traits"]["city"] == "Lyon"
    assert {c["profile_id"] for c in changes(app)[-2:]} == {ADA}


def test_a_merge_in_the_same_batch_moves_the_absorbed_profiles_pending_timeline(app):
    app.apply_batch(KEY, "0", [
        track(1, ADA, "A1"), track(2, BOB, "B1"),
        resolved(3, ADA, merged_from=(BOB,), type="identify"),
    ])
    survivor = app.profile(ADA)
    assert survivor["events_total"] == 2
    assert {e["event"] for e in survivor["recent_events"]} == {"A1", "B1"}


def test_a_merge_announced_before_the_absorbed_profile_was_seen_still_redirects_its_events(app):
    # Identity's items are partitioned by profile: the absorbed id's own events can still be
    # in flight on another partition when the merge arrives.
    app.apply_batch(KEY, "0", [identify(1, ADA, plan="pro")])
    app.apply_batch(KEY, "0", [resolved(2, ADA, merged_from=(BOB,), type="identify")])
    app.apply_batch("identity/identity.resolved/1", "1", [track(1, BOB, "In Flight")])
    survivor = app.profile(ADA)
    assert survivor["events_total"] == 1
    assert survivor["recent_events"][-1]["event"] == "In Flight"
    assert app.profile(BOB)["profile_id"] == ADA


def test_a_redelivered_batch_changes_nothing(app):
    batch = [identify(1, ADA, plan="pro"), track(2, ADA), track(3, ADA)]
    assert app.apply_batch(KEY, "0", batch) == 3
    before = app.process_recorder.max_notification_id()
    assert app.apply_batch(KEY, "0", batch) == 0
    assert app.process_recorder.max_notification_id() == before
    assert app.profile(ADA)["events_total"] == 2


def test_a_rebatched_redelivery_only_counts_the_new_events(app):
    app.apply_batch(KEY, "0", [track(1, ADA), track(2, ADA)])
    assert app.apply_batch(KEY, "0", [track(2, ADA), track(3, ADA)]) == 1
    assert app.profile(ADA)["events_total"] == 3
    assert len(changes(app)) == 3


def test_an_unknown_profile_has_no_view(app):
    assert app.profile(str(uuid.uuid4())) is None
    assert app.profile("not-a-uuid") is None


def test_the_timeline_lists_a_profiles_events_newest_first_including_merged_ones(app):
    survivor, absorbed = str(uuid.uuid4()), str(uuid.uuid4())
    app.apply_batch("identity/identity.resolved/0", "0", [
        {"position": 1, "profile_id": absorbed, "merged_from": [], "event": {
            "type": "page", "name": "Home", "timestamp": "2026-11-01T10:00:00.000Z"}},
        {"position": 2, "profile_id": survivor, "merged_from": [], "event": {
            "type": "track", "event": "Signed Up", "timestamp": "2026-11-02T10:00:00.000Z"}},
        {"position": 3, "profile_id": survivor, "merged_from": [absorbed], "event": {
            "type": "track", "event": "Order Completed",
            "timestamp": "2026-11-03T10:00:00.000Z"}},
    ])

    timeline = app.timeline(survivor)

    assert [entry["event"] for entry in timeline] == ["Order Completed", "Signed Up", "Home"]
    assert app.timeline(absorbed) == timeline  # an absorbed id shows its survivor
    assert app.timeline(str(uuid.uuid4())) is None


# ---- splits ----------------------------------------------------------------------------------
SPLIT_KEY = "identity/identity.profile_split/0"


def split(position: int, profile_id: str, part: str, restored: bool = True) -> dict:
    return {"position": position, "profile_id": profile_id, "reason": {"rule": "merge_rejected"},
            "parts": [{"profile_id": part, "restored": restored, "identifiers": []}]}


def test_a_split_gives_a_merged_profile_its_own_timeline_back(app):
    app.apply_batch(KEY, "0", [track(1, ADA, "Viewed"), track(2, BOB, "Bought")])
    app.apply_batch(KEY, "0", [resolved(3, ADA, merged_from=(BOB,), type="identify")])
    assert app.profile(BOB)["profile_id"] == ADA

    assert app.apply_splits(SPLIT_KEY, "0", [split(1, ADA, BOB)]) == 1

    assert app.profile(BOB)["profile_id"] == BOB
    assert app.profile(ADA)["absorbed"] == []
    assert [e["event"] for e in app.timeline(ADA)] == ["Viewed"]
    assert [e["event"] for e in app.timeline(BOB)] == ["Bought"]
    announced = changes(app)[-2:]
    assert [(c["profile_id"], c["split_from"]) for c in announced] == [(ADA, ADA), (BOB, ADA)]


def test_a_split_off_part_never_seen_before_starts_as_an_empty_profile(app):
    app.apply_batch(KEY, "0", [track(1, ADA, "Viewed")])
    newcomer = str(uuid.uuid4())
    app.apply_splits(SPLIT_KEY, "0", [split(1, ADA, newcomer, restored=False)])
    assert app.profile(newcomer)["events_total"] == 0
    assert [e["event"] for e in app.timeline(ADA)] == ["Viewed"]


def test_a_redelivered_split_changes_nothing(app):
    app.apply_batch(KEY, "0", [track(1, ADA), resolved(2, ADA, merged_from=(BOB,),
                                                       type="identify")])
    app.apply_splits(SPLIT_KEY, "0", [split(1, ADA, BOB)])
    assert app.apply_splits(SPLIT_KEY, "0", [split(1, ADA, BOB)]) == 0


def test_after_a_split_the_parts_identifiers_find_the_part_again(app):
    bob_email = {**identify(2, BOB, name="Bob"), "identifiers": [["email", "bob@example.com"]]}
    app.apply_batch(KEY, "0", [identify(1, ADA, name="Ada"), bob_email])
    app.apply_batch(KEY, "0", [resolved(3, ADA, merged_from=(BOB,), type="identify")])
    assert [c["profile_id"] for c in app.search(identifier="bob@example.com")] == [ADA]

    part = {"profile_id": BOB, "restored": True, "identifiers": ["email:bob@example.com"]}
    app.apply_splits(SPLIT_KEY, "0", [{**split(1, ADA, BOB), "parts": [part]}])

    assert [c["profile_id"] for c in app.search(identifier="bob@example.com")] == [BOB]


def test_a_split_takes_back_the_traits_and_deals_the_part_brought(app):
    app.apply_batch(KEY, "0", [identify(1, ADA, email="ada@example.com", plan="pro"),
                               identify(2, BOB, email="bob@example.org", phone="+33612345678"),
                               track(3, BOB, "Deal Updated", deal_id="d-1", amount=500)])
    app.apply_batch(KEY, "0", [resolved(4, ADA, merged_from=(BOB,), type="identify")])
    merged = app.profile(ADA)
    assert merged["traits"]["phone"] == "+33612345678"
    assert merged["sales"]["open_deal_value"] == 500

    app.apply_splits(SPLIT_KEY, "0", [split(1, ADA, BOB)])

    assert app.profile(ADA)["traits"] == {"email": "ada@example.com", "plan": "pro"}
    assert app.profile(ADA)["deals"] == {}
    assert app.profile(BOB)["traits"] == {"email": "bob@example.org", "phone": "+33612345678"}
    announced = {c["profile_id"]: c["traits"] for c in changes(app)[-2:]}
    assert "phone" not in announced[ADA] and "open_deal_value" not in announced[ADA]
    assert announced[BOB]["open_deal_value"] == 500


def test_a_merge_announces_each_profile_as_it_was_before(app):
    app.apply_batch(KEY, "0", [identify(1, ADA, email="ada@example.com"),
                               identify(2, BOB, email="bob@example.org")])
    app.apply_batch(KEY, "0", [resolved(3, ADA, merged_from=(BOB,), type="identify")])
    [merge] = changes(app)[-1:]
    assert merge["merged_profiles"] == [
        {"profile_id": ADA, "traits": {"email": "ada@example.com"}},
        {"profile_id": BOB, "traits": {"email": "bob@example.org"}}]
