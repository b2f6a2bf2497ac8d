"""A retried event is recognised by its messageId for a day, across restarts, without the
gateway holding every id it ever saw in memory."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.gateway import message_ids
from services.gateway.application import GatewayApplication
from shared.config import Settings
from shared.errors import RetryLater

NOON = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def track(message_id: str) -> dict:
    return {"type": "track", "userId": "u1", "event": "Signed Up", "messageId": message_id}


@pytest.fixture
def settings(tmp_path):
    return Settings(data_dir=tmp_path, partitions=2, write_keys={"wk": "web"})


def send(gateway, *message_ids: str, at=NOON, source="web"):
    return gateway.ingest(source, {"batch": [track(m) for m in message_ids]}, received_at=at)


def test_an_event_sent_again_after_a_restart_is_a_duplicate(settings):
    first = GatewayApplication(settings)
    assert send(first, "m1", "m2").accepted == 2
    first.close()

    restarted = GatewayApplication(settings)
    outcome = send(restarted, "m2", "m3", at=NOON + timedelta(hours=23))
    assert (outcome.accepted, outcome.duplicates) == (1, 1)
    restarted.close()


def test_the_same_message_id_from_another_source_is_another_event(settings):
    gateway = GatewayApplication(settings)
    send(gateway, "m1")
    assert send(gateway, "m1", source="app").accepted == 1
    gateway.close()


def test_ids_older_than_a_day_are_let_go_and_then_accepted_again(settings, monkeypatch):
    monkeypatch.setattr(message_ids, "PRUNE_EVERY", 1)
    gateway = GatewayApplication(settings)
    send(gateway, "m1")
    send(gateway, "m2", at=NOON + timedelta(hours=25))  # clears what is older than a day
    assert send(gateway, "m1", at=NOON + timedelta(hours=25)).accepted == 1
    assert send(gateway, "m2", at=NOON + timedelta(hours=25)).duplicates == 1
    gateway.close()


def test_a_concurrent_copy_of_a_request_being_saved_is_asked_to_retry_not_dropped(settings):
    gateway = GatewayApplication(settings)
    assert gateway.message_ids.claim("web", ["m1", "m2"]) == set()
    with pytest.raises(RetryLater):
        send(gateway, "m2", "m3")
    gateway.message_ids.release("web", ["m1", "m2"])  # the first request's save failed
    assert send(gateway, "m2", "m3").accepted == 2  # so the retry is taken
    gateway.close()


def test_a_lookup_that_fails_with_the_database_leaves_nothing_claimed(settings, monkeypatch):
    gateway = GatewayApplication(settings)

    def down(*args):
        raise ConnectionError("database went away")

    monkeypatch.setattr(gateway.message_ids, "_stored", down)
    with pytest.raises(ConnectionError):
        send(gateway, "m1")
    monkeypatch.undo()
    assert send(gateway, "m1").accepted == 1
    gateway.close()


def test_a_failed_save_releases_its_ids_so_the_retry_is_accepted(settings, monkeypatch):
    gateway = GatewayApplication(settings)
    real_save = gateway.save_and_wake

    def failing(*args, **kwargs):
        raise ConnectionError("database went away")

    monkeypatch.setattr(gateway, "save_and_wake", failing)
    with pytest.raises(ConnectionError):
        send(gateway, "m1")
    monkeypatch.setattr(gateway, "save_and_wake", real_save)
    assert send(gateway, "m1").accepted == 1
    gateway.close()
