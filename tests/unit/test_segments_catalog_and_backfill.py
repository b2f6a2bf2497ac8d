"""Segments as marketers use them: nested segments, computed traits, backfill of a new or
changed rule over profiles already known, preview, members, and a restart."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import orjson
import pytest
from segments_support import ADA, BOB, Clock, Feed, define, membership_changes

from services.segments.application import DefinitionError, SegmentsApplication
from services.segments.schemas import ComputedTraitSchema
from shared.config import Settings
from tessera.testing.platform import drop_database

FRENCH = {"trait": "country", "op": "eq", "value": "FR"}
BUYER = {"event": "Order Completed", "within_days": 30}


def computed(app: SegmentsApplication, **definition) -> dict:
    return app.define_computed_trait(ComputedTraitSchema().load(definition))


def people(n: int) -> list[str]:
    return sorted(str(uuid.uuid4()) for _ in range(n))


# ---- nested segments -----------------------------------------------------------------------
def test_a_segment_of_segments_follows_its_parts_as_they_change(app, feed):
    define(app, "french", FRENCH)
    define(app, "buyers", BUYER)
    define(app, "french_buyers", {"and": [{"segment": "french"}, {"segment": "buyers"}]})

    feed.send(feed.item(ADA, {"country": "FR"}))
    feed.order(ADA)
    assert app.memberships(ADA)["segments"].keys() == {"french", "buyers", "french_buyers"}

    feed.send(feed.item(ADA, {"country": "DE"}))
    assert app.memberships(ADA)["segments"].keys() == {"buyers"}
    assert [(c["segment"], c["change"]) for c in membership_changes(app)][-2:] == [
        ("french", "exited"), ("french_buyers", "exited")]


def test_a_rule_naming_an_unknown_segment_is_refused(app):
    with pytest.raises(DefinitionError, match="rule: segment vip does not exist"):
        define(app, "loyal", {"segment": "vip"})
    assert "loyal" not in app.segments()


def test_a_rule_that_would_make_a_cycle_is_refused_and_names_it(app):
    define(app, "a", FRENCH)
    define(app, "b", {"segment": "a"})
    with pytest.raises(DefinitionError, match="a -> b -> a"):
        define(app, "a", {"segment": "b"})
    assert app.segments()["a"]["rule"] == FRENCH


def test_a_segment_read_by_another_cannot_be_removed(app):
    define(app, "french", FRENCH)
    define(app, "french_vips", {"and": [{"segment": "french"}, {"trait": "vip", "op": "exists"}]})
    with pytest.raises(DefinitionError, match="used by french_vips"):
        app.remove_segment("french")


# ---- computed traits -----------------------------------------------------------------------
def test_a_computed_trait_is_kept_per_profile_and_usable_in_a_segment(app, feed):
    computed(app, name="spend_30d", event="Order Completed", aggregate="sum",
             property="total", within_days=30)
    define(app, "big_spenders", {"trait": "spend_30d", "op": "gte", "value": 100})

    feed.order(ADA, total=60)
    assert app.computed_of(ADA) == {"spend_30d": 60.0}
    assert app.memberships(ADA)["segments"] == {}
    feed.order(ADA, total=50)
    assert app.computed_of(ADA) == {"spend_30d": 110.0}
    assert app.memberships(ADA)["segments"].keys() == {"big_spenders"}
    [entered] = membership_changes(app)
    assert entered["traits"]["spend_30d"] == 110.0


def test_a_computed_trait_falls_with_time_and_takes_its_segments_along(app, feed, clock):
    computed(app, name="orders_30d", event="Order Completed", aggregate="count",
             within_days=30)
    define(app, "regulars", {"trait": "orders_30d", "op": "gte", "value": 2})
    feed.order(ADA)
    clock.advance(10)
    feed.order(ADA)
    assert app.memberships(ADA)["segments"].keys() == {"regulars"}

    clock.advance(20.5)  # the first order is now 30.5 days old
    assert app.expire_due() == 1
    assert app.computed_of(ADA) == {"orders_30d": 1}
    assert app.memberships(ADA)["segments"] == {}


def test_removing_a_computed_trait_removes_it_from_profiles(app, feed):
    computed(app, name="orders", event="Order Completed", aggregate="count")
    feed.order(ADA)
    assert app.computed_of(ADA) == {"orders": 1}
    assert app.remove_computed_trait("orders")
    app.run_backfills()
    assert app.computed_of(ADA) == {}


# ---- backfill ------------------------------------------------------------------------------
def test_a_segment_defined_later_is_backfilled_from_behaviour_already_seen(app, feed):
    french = people(5)
    for profile_id in french:
        feed.send(feed.item(profile_id, {"country": "FR"}))
        feed.order(profile_id)
    feed.send(feed.item(BOB, {"country": "DE"}))

    segment = define(app, "french_buyers", {"and": [FRENCH, BUYER]})
    assert app.segment_sizes()["french_buyers"] == 0
    assert app.backfill("french_buyers")["status"] == "running"

    assert app.run_backfills(page=2) == 6
    progress = app.backfill("french_buyers")
    assert (progress["status"], progress["done"], progress["total"], progress["entered"]) == (
        "done", 6, 6, 5)
    assert progress["percent"] == 100.0
    assert app.segment_sizes()["french_buyers"] == 5
    assert {c["profile_id"] for c in membership_changes(app)} == set(french)
    assert segment["version"] == 1


def test_changing_a_rule_backfills_the_new_version_entries_and_exits(app, feed):
    define(app, "french", FRENCH)
    feed.send(feed.item(ADA, {"country": "FR"}), feed.item(BOB, {"country": "BE"}))
    assert app.segment_sizes()["french"] == 1

    define(app, "french", {"trait": "country", "op": "in", "value": ["BE"]})
    app.run_backfills()
    assert app.backfill("french")["version"] == 2
    assert [(c["profile_id"], c["change"]) for c in membership_changes(app)][-2:] in (
        [(ADA, "exited"), (BOB, "entered")], [(BOB, "entered"), (ADA, "exited")])
    assert app.members("french")["members"][0]["profile_id"] == BOB


def test_a_removed_segment_is_emptied_by_its_backfill(app, feed):
    define(app, "french", FRENCH)
    feed.send(feed.item(ADA, {"country": "FR"}))
    app.remove_segment("french")
    app.run_backfills()
    assert app.memberships(ADA)["segments"] == {}
    assert [c["change"] for c in membership_changes(app)] == ["entered", "exited"]


def test_a_rule_change_while_events_flow_ends_exact(app, feed):
    """Live batches between backfill pages: every profile ends where a full evaluation puts
    it, and no entry is announced twice."""
    everyone = people(30)
    for profile_id in everyone[:20]:
        feed.send(feed.item(profile_id, {"country": "FR"}))
    define(app, "french_buyers", {"and": [FRENCH, BUYER]})
    live = iter(everyone)
    while app.backfill("french_buyers")["status"] == "running":
        app.run_backfills(page=3, pages=1)  # a page, then live traffic goes on
        profile_id = next(live, None)
        if profile_id is not None:
            feed.send(feed.item(profile_id, {"country": "FR"}))
            feed.order(profile_id)
    for profile_id in live:
        feed.send(feed.item(profile_id, {"country": "FR"}))
        feed.order(profile_id)

    assert app.segment_sizes()["french_buyers"] == 30
    entries = [c["profile_id"] for c in membership_changes(app) if c["change"] == "entered"]
    assert sorted(entries) == everyone


@pytest.fixture(params=["sqlite", "postgres"])
def either_app(request, tmp_path, clock):
    """On PostgreSQL a backfill reads its next page while evaluating the current one."""
    if request.param == "sqlite":
        settings = Settings(data_dir=tmp_path)
    else:
        settings = Settings(database="postgres", postgres_dbname=f"segments_{uuid.uuid4().hex}")
    made = SegmentsApplication(settings, clock=clock)
    yield made
    made.close()
    if request.param == "postgres":
        drop_database(settings.postgres_dbname)


def nine_french_buyers(app: SegmentsApplication, feed: Feed) -> list[str]:
    """Nine French buyers, and a backfill of `french_buyers` over them still to run."""
    everyone = people(9)
    for profile_id in everyone:
        feed.order(profile_id, {"country": "FR"})
    define(app, "french_buyers", {"and": [FRENCH, BUYER]})
    return everyone


def backfill_in_pages_of_three(app: SegmentsApplication, between: Callable[[], None]):
    """The backfill, with `between` run after its first page (the second page is read
    ahead while the first is evaluated)."""
    backfill_page = app._backfill_page

    def page_then(job, page):
        evaluated = backfill_page(job, page)
        if job["after"] == "":
            between()
        return evaluated

    app._backfill_page = page_then
    app.run_backfills(page=3)


def test_a_profile_changed_live_after_its_page_was_read_ahead_is_judged_as_it_is_now(
        either_app, clock):
    app, feed = either_app, Feed(either_app, clock)
    everyone = nine_french_buyers(app, feed)
    moved = everyone[4]  # on the second page, read while the first is evaluated

    backfill_in_pages_of_three(app, lambda: feed.send(feed.item(moved, {"country": "DE"})))

    members = [m["profile_id"] for m in app.members("french_buyers")["members"]]
    assert members == [p for p in everyone if p != moved]
    assert moved not in [c["profile_id"] for c in membership_changes(app)]
    assert app.preview({"trait": "country", "op": "eq", "value": "DE"})["size"] == 1


def test_a_profile_erased_after_its_page_was_read_ahead_is_not_written_back(
        either_app, clock):
    app, feed = either_app, Feed(either_app, clock)
    erased = nine_french_buyers(app, feed)[4]  # on the second page, read ahead

    backfill_in_pages_of_three(app, lambda: app.erase_subject([erased], []))

    assert app.memberships(erased) == {"profile_id": erased, "segments": {}, "history": []}
    assert app.rm.query(f"SELECT profile_id FROM {app.rm.table('profiles')} "
                        "WHERE profile_id = %s", [erased]) == []
    assert app.segment_sizes()["french_buyers"] == 8


def slow_page_saves(app: SegmentsApplication, failures: int = 0) -> list[str]:
    """Backfill pages take a while to save (and the first `failures` fail): a live batch
    comes while one is still on the wire. Returns the outcome of each page save made in
    the background (PostgreSQL; SQLite saves pages before going on)."""
    save, outcomes = app.save_and_wake, []

    def slowly(*aggregates, writes=None):
        if threading.current_thread().name != "segments-backfill-write":
            return save(*aggregates, writes=writes)
        time.sleep(0.2)
        if len(outcomes) < failures:
            outcomes.append("failed")
            raise ConnectionError("the database went away")
        outcomes.append("saved")
        return save(*aggregates, writes=writes)

    app.save_and_wake = slowly
    return outcomes


def live_change_after_first_page(app: SegmentsApplication, feed: Feed, item: dict) -> None:
    backfill_page = app._backfill_page

    def page_then_live_traffic(job, page):
        evaluated = backfill_page(job, page)
        if job["after"] == "":
            feed.send(item)  # live, while the page is being saved
        return evaluated

    app._backfill_page = page_then_live_traffic


def test_a_live_change_to_a_profile_of_a_page_being_saved_applies_after_the_page(
        either_app, clock):
    app, feed = either_app, Feed(either_app, clock)
    everyone = nine_french_buyers(app, feed)
    moved = everyone[1]  # on the first page
    outcomes = slow_page_saves(app)
    live_change_after_first_page(app, feed, feed.item(moved, {"country": "DE"}))
    app.run_backfills(page=3)

    members = [m["profile_id"] for m in app.members("french_buyers")["members"]]
    assert members == [p for p in everyone if p != moved]
    assert [c["change"] for c in membership_changes(app) if c["profile_id"] == moved] == [
        "entered", "exited"]
    # Three pages of three and the empty page that ends the backfill, saved in the background.
    assert outcomes == ([] if app.rm.sqlite else ["saved"] * 4)


def test_a_page_that_failed_to_save_is_evaluated_again_and_the_live_batch_still_applies(
        either_app, clock):
    app, feed = either_app, Feed(either_app, clock)
    if app.rm.sqlite:
        pytest.skip("SQLite saves a page before going on: no save in the background")
    everyone = nine_french_buyers(app, feed)
    moved = everyone[1]  # on the first page, whose save fails
    outcomes = slow_page_saves(app, failures=1)
    live_change_after_first_page(app, feed, feed.item(moved, {"country": "DE"}))
    app.run_backfills(page=3)

    assert app.backfill("french_buyers")["status"] == "done"
    members = [m["profile_id"] for m in app.members("french_buyers")["members"]]
    assert members == [p for p in everyone if p != moved]
    entries = [c["profile_id"] for c in membership_changes(app) if c["change"] == "entered"]
    assert sorted(entries) == [p for p in everyone if p != moved]
    assert outcomes[0] == "failed"


def test_a_page_that_failed_to_save_stops_the_backfill_until_it_resumes_from_the_last_saved(
        either_app, clock):
    app, feed = either_app, Feed(either_app, clock)
    if app.rm.sqlite:
        pytest.skip("SQLite saves a page before going on: no save in the background")
    everyone = nine_french_buyers(app, feed)
    slow_page_saves(app, failures=1)
    with pytest.raises(ConnectionError):
        app.run_backfills(page=3)  # the second page's save waits for the first: it failed
    assert app.backfill("french_buyers")["done"] == 0
    app.run_backfills(page=3)

    assert app.segment_sizes()["french_buyers"] == 9
    entries = [c["profile_id"] for c in membership_changes(app) if c["change"] == "entered"]
    assert sorted(entries) == everyone


def test_a_profile_saved_with_its_memberships_in_its_document_keeps_them(either_app, clock):
    """Read models written before memberships moved out of documents are read as they are,
    and a profile's memberships move beside its document when it is next written."""
    app, feed = either_app, Feed(either_app, clock)
    define(app, "french", FRENCH)
    feed.send(feed.item(ADA, {"country": "FR"}))
    older = orjson.dumps({"traits": {"country": "FR"}, "events": {}, "computed": {},
                          "segments": ["french"], "due": None, "merged_into": None})
    app.rm.execute(f"UPDATE {app.rm.table('profiles')} SET doc = %s WHERE profile_id = %s",
                   [older, ADA])
    app.rm.execute(f"DELETE FROM {app.rm.table('profile_segments')} WHERE profile_id = %s",
                   [ADA])
    assert app.preview({"segment": "french"})["size"] == 1

    feed.order(ADA)
    define(app, "french_buyers", {"and": [{"segment": "french"}, BUYER]})
    app.run_backfills()

    assert [(c["segment"], c["change"]) for c in membership_changes(app)] == [
        ("french", "entered"), ("french_buyers", "entered")]
    (row,) = app.rm.query(f"SELECT segments FROM {app.rm.table('profile_segments')} "
                          "WHERE profile_id = %s", [ADA])
    assert orjson.loads(row["segments"]) == ["french", "french_buyers"]


def test_a_backfill_resumes_where_it_stopped_after_a_restart(tmp_path, clock):
    first = SegmentsApplication(Settings(data_dir=tmp_path), clock=clock)
    feed = Feed(first, clock)
    for profile_id in people(7):
        feed.send(feed.item(profile_id, {"country": "FR"}))
    define(first, "french", FRENCH)
    first.run_backfills(page=3, pages=1)  # one page of three, then the process dies
    first.close()

    again = SegmentsApplication(Settings(data_dir=tmp_path), clock=clock)
    assert again.run_backfills(page=3) == 0  # the dead process's lease still holds
    clock.advance(1 / 24)
    assert again.run_backfills(page=3) == 4  # then the rest, not the first page again
    progress = again.backfill("french")
    assert (progress["status"], progress["done"], progress["entered"]) == ("done", 7, 7)
    assert again.segment_sizes()["french"] == 7
    again.close()


def test_preview_gives_size_and_sample_and_saves_nothing(app, feed):
    for profile_id in people(4):
        feed.send(feed.item(profile_id, {"country": "FR"}))
    feed.send(feed.item(BOB, {"country": "DE"}))
    before = app.process_recorder.max_notification_id()

    preview = app.preview(FRENCH, sample=2)
    assert (preview["size"], preview["profiles_scanned"], len(preview["sample"])) == (4, 5, 2)
    assert preview["sample"][0]["traits"] == {"country": "FR"}
    assert app.process_recorder.max_notification_id() == before


def test_members_are_listed_in_pages(app, feed):
    define(app, "french", FRENCH)
    french = people(5)
    for profile_id in french:
        feed.send(feed.item(profile_id, {"country": "FR"}))
    first = app.members("french", limit=3)
    rest = app.members("french", limit=3, after=first["next"])
    assert [m["profile_id"] for m in first["members"] + rest["members"]] == french
    assert rest["next"] is None


def test_a_restart_keeps_every_scheduled_expiry(tmp_path):
    clock = Clock(1_800_000_000.0)
    first = SegmentsApplication(Settings(data_dir=tmp_path), clock=clock)
    feed = Feed(first, clock)
    # Not a member now: becomes one when the order is 30 days old.
    define(first, "lapsed", {"and": [{"event": "Order Completed"},
                                     {"not": BUYER}]})
    feed.order(ADA)
    assert first.memberships(ADA)["segments"] == {}
    first.close()

    again = SegmentsApplication(Settings(data_dir=tmp_path), clock=clock)
    clock.advance(30.01)
    assert again.expire_due() == 1
    assert again.memberships(ADA)["segments"].keys() == {"lapsed"}
    again.close()


def test_a_segment_defined_on_one_replica_counts_on_the_next_batch_of_another(
        tmp_path, clock):
    one = SegmentsApplication(Settings(data_dir=tmp_path), clock=clock)
    other = SegmentsApplication(Settings(data_dir=tmp_path), clock=clock)
    other_feed = Feed(other, clock)
    define(other, "german", {"trait": "country", "op": "eq", "value": "DE"})
    other_feed.send(other_feed.item(BOB, {"country": "DE"}))  # `other` holds its catalog

    define(one, "french", FRENCH)
    other_feed.send(other_feed.item(ADA, {"country": "FR"}))
    assert other.memberships(ADA)["segments"].keys() == {"french"}
    one.close()
    other.close()
