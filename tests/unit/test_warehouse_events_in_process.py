"""Tracked events reach a warehouse (or a webhook) that follows them: the six applications
in one process, fed by each other's relays as the broker would (tessera.testing.pipeline),
and a real PostgreSQL database as the analysts' warehouse."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connectors.fakes.warehouse import ScratchDatabase
from services.activation.destinations import Destination
from shared.config import Settings
from shared.contracts import CONSUMERS
from tessera.testing.pipeline import applications, drain, stream_handlers

ANALYTICS = {"consent": {"categoryPreferences": {"analytics": True}}}


def warehouse_destination(db: ScratchDatabase, events: bool = True) -> Destination:
    return Destination("warehouse", "warehouse", (), ("analytics",),
                       {"dsn": db.dsn, "schema": db.schema}, events=events)


@pytest.fixture
def db():
    with ScratchDatabase() as scratch:
        yield scratch


@pytest.fixture
def settings(tmp_path):
    return Settings(data_dir=tmp_path, partitions=2)


def send(apps, *events) -> None:
    apps["gateway"].ingest("web", {"batch": list(events)}, received_at=datetime.now(UTC))
    drain(apps)


def bought(user: str, order: str) -> dict:
    return {"type": "track", "userId": user, "event": "Order Completed",
            "messageId": f"{user}-{order}", "properties": {"order_id": order}}


def test_a_consenting_persons_events_land_in_the_warehouse_once(db, settings):
    with applications(settings, [warehouse_destination(db)]) as apps:
        send(apps, {"type": "identify", "userId": "ada", "messageId": "ada-id",
                    "traits": {"email": "ada@example.com"}, "context": ANALYTICS})
        send(apps, bought("ada", "o-1"), bought("ada", "o-2"))
        send(apps, bought("ada", "o-2"))  # sent again by the client: the gateway dedupes

        rows = db.events()
        assert [(r[0], r[2], r[3]) for r in rows] == [
            ("ada-id", "identify", None), ("ada-o-1", "track", "Order Completed"),
            ("ada-o-2", "track", "Order Completed")]
        assert len({r[1] for r in rows}) == 1
        assert rows[1][4] == {"order_id": "o-1"}
        assert apps["activation"].stats()["warehouse"]["delivered"] == 3


def test_an_identity_resolved_batch_delivered_again_adds_nothing(db, settings):
    with applications(settings, [warehouse_destination(db)]) as apps:
        apps["gateway"].ingest("web", {"batch": [
            {"type": "identify", "userId": "ada", "context": ANALYTICS},
            bought("ada", "o-1")]}, received_at=datetime.now(UTC))
        seen = []
        handlers = stream_handlers(apps)
        while True:  # drain, remembering what activation was given of identity.resolved
            moved = sum(relay.relay_once() for relay in apps["_relays"])
            published, apps["_broker"].envelopes = apps["_broker"].envelopes, []
            seen += [e for e in published if e.type == "identity.resolved"]
            for envelope in published:
                for consumer in CONSUMERS[envelope.type]:
                    handlers[(consumer, envelope.type)](envelope)
            if not moved and not published:
                break
        assert seen and len(db.events()) == 2
        assert sum(apps["activation"].plan_events(e.tracking_key, e.partition, e.items)
                   for e in seen) == 0
        drain(apps)
        assert len(db.events()) == 2


def test_events_of_a_person_without_consent_are_suppressed_not_loaded(db, settings):
    with applications(settings, [warehouse_destination(db)]) as apps:
        send(apps, {"type": "identify", "userId": "bob", "traits": {"email": "b@example.com"}})
        send(apps, bought("bob", "o-1"))

        assert db.events() == []
        outcomes = apps["activation"].outcomes("warehouse")
        assert [o["outcome"] for o in outcomes] == ["suppressed", "suppressed"]
        assert all(o["action"] == "event" and "no consent record" in o["reason"]
                   for o in outcomes)


def test_a_withdrawal_stops_the_events_that_follow_it(db, settings):
    with applications(settings, [warehouse_destination(db)]) as apps:
        send(apps, {"type": "identify", "userId": "cy", "context": ANALYTICS})
        send(apps, bought("cy", "o-1"))
        send(apps, {"type": "identify", "userId": "cy",
                    "context": {"consent": {"categoryPreferences": {"analytics": False}}}})
        send(apps, bought("cy", "o-2"))

        assert [r[0] for r in db.events() if r[2] == "track"] == ["cy-o-1"]


def test_a_warehouse_not_following_events_gets_none_and_activation_records_nothing(
        db, settings):
    with applications(settings, [warehouse_destination(db, events=False)]) as apps:
        send(apps, {"type": "identify", "userId": "di", "context": ANALYTICS})
        send(apps, bought("di", "o-1"))

        assert db.events() == []
        assert apps["activation"].outcomes("warehouse") == []
        assert apps["activation"].event_followers == []


def test_following_events_with_a_connector_that_takes_none_is_refused_by_name(settings):
    ads = Destination("ads", "meta_custom_audiences", ("buyers",), ("advertising",),
                      {"access_token": "t", "audience_id": "2"},
                      events=True)
    with pytest.raises(ValueError, match=r"destination ads: events: .*track_events"), \
            applications(settings, [ads]):
        pass


def test_a_merge_brings_the_absorbed_profiles_events_under_the_survivor(db, settings):
    with applications(settings, [warehouse_destination(db)]) as apps:
        send(apps, {"type": "identify", "userId": "eve", "messageId": "eve-1",
                    "context": ANALYTICS})
        send(apps, {"type": "page", "anonymousId": "a-eve", "name": "Pricing",
                    "messageId": "eve-2", "context": ANALYTICS})
        before = {r[0]: r[1] for r in db.events()}
        assert len(set(before.values())) == 2

        send(apps, {"type": "identify", "userId": "eve", "anonymousId": "a-eve",
                    "messageId": "eve-3", "context": ANALYTICS})

        after = {r[0]: r[1] for r in db.events()}
        assert set(after) == {"eve-1", "eve-2", "eve-3"}
        assert len(set(after.values())) == 1 and after["eve-1"] == before["eve-1"]


def test_a_webhook_following_events_gets_each_with_its_event_and_a_segment_webhook_none(
        settings):
    from tessera.testing.webhook_receiver import WebhookReceiver

    receiver = WebhookReceiver("events")
    receiver.start()
    try:
        hooks = [Destination(name, "webhook", (), ("analytics",),
                             {"url": receiver.url_for(name), "secret": "events"},
                             events=events)
                 for name, events in (("stream", True), ("audience", False))]
        with applications(settings, hooks) as apps:
            send(apps, {"type": "identify", "userId": "fay", "messageId": "fay-1",
                        "context": ANALYTICS})
            send(apps, bought("fay", "o-1"))
        received = receiver.items()
    finally:
        receiver.stop()
    assert {i["destination"] for i in received} == {"stream"}
    assert [(i["action"], i["event"]["messageId"]) for i in received] == [
        ("event", "fay-1"), ("event", "fay-o-1")]
