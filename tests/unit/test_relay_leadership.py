"""Of several replicas of a service, only the one that leads relays its outbox."""

from __future__ import annotations

import secrets
import threading

import pytest
from tenacity import retry, stop_after_delay, wait_fixed

from services.identity.application import IdentityApplication
from services.identity.translation import translator
from shared.config import Settings
from shared.envelope import Envelope
from shared.leadership import AdvisoryLockLeadership
from shared.outbox import OutboxRelay


class Publisher:
    def __init__(self):
        self.envelopes: list[Envelope] = []

    def publish(self, envelopes: list[Envelope]) -> None:
        self.envelopes.extend(envelopes)


class Follower:
    """Another replica holds the lead."""

    def __init__(self):
        self.released = False

    def held(self) -> bool:
        return False

    def release(self) -> None:
        self.released = True


@pytest.fixture
def app(tmp_path):
    made = IdentityApplication(Settings(data_dir=tmp_path))
    yield made
    made.close()


def save_one(app) -> None:
    app.resolve_batch("gateway/ingest.received/0", [
        {"position": 1, "source": "web",
         "event": {"type": "track", "event": "Seen", "anonymousId": "a-1",
                   "timestamp": "2026-01-01T00:00:00.000Z"}}])


def test_a_replica_that_does_not_lead_publishes_nothing_and_gives_way_on_stop(app):
    publisher, follower = Publisher(), Follower()
    outbox = OutboxRelay(app, translator(4), publisher, leadership=follower)
    save_one(app)
    runner = threading.Thread(target=outbox.run)

    runner.start()
    outbox.stop()  # as on shutdown: stop the loop, then finish
    outbox.finish()
    runner.join(timeout=5)

    assert publisher.envelopes == []
    assert follower.released


def test_a_leading_replica_publishes_what_is_left_when_it_finishes(app):
    publisher = Publisher()
    outbox = OutboxRelay(app, translator(4), publisher)
    save_one(app)

    outbox.stop()
    outbox.finish()

    assert [item["event"]["anonymousId"] for e in publisher.envelopes for item in e.items] == [
        "a-1"]
    assert outbox.backlog() == 0


@pytest.mark.integration
def test_one_replica_leads_at_a_time_and_another_takes_over_when_it_goes():
    settings = Settings(database="postgres", postgres_dbname="postgres")
    name = f"tessera.outbox.test-{secrets.token_hex(4)}"
    first, second = AdvisoryLockLeadership(settings, name), AdvisoryLockLeadership(settings, name)

    assert first.held()
    assert not second.held()
    first.release()  # as a dying replica's connection does

    @retry(stop=stop_after_delay(10), wait=wait_fixed(0.2), reraise=True)
    def second_takes_over():
        # The server lets the lock go once it noticed the connection closed.
        assert second.held()

    second_takes_over()
    second.release()
