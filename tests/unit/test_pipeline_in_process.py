"""The whole pipeline without a broker: each service's relay feeds the next service's
application, exactly as the broker would, and every item on the way fits its contract."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from marshmallow import EXCLUDE

from services.activation.application import ActivationApplication
from services.activation.destinations import Destination
from services.activation.translation import translator as activation_translator
from services.consent.application import ConsentApplication
from services.contacts.application import ContactsApplication
from services.contacts.translation import translator as contacts_translator
from services.gateway.application import GatewayApplication
from services.gateway.translation import translator as gateway_translator
from services.identity.application import IdentityApplication
from services.identity.translation import translator as identity_translator
from services.segments.application import SegmentsApplication
from services.segments.translation import translator as segments_translator
from shared.config import Settings
from shared.contracts import CONSUMERS, SCHEMAS
from shared.envelope import Envelope
from shared.outbox import OutboxRelay
from tessera.testing.pipeline import stream_handlers
from tessera.testing.webhook_receiver import WebhookReceiver

PARTITIONS = 2


class Broker:
    """Collects what relays publish, checking each item against its contract."""

    def __init__(self):
        self.envelopes: list[Envelope] = []

    def publish(self, envelopes: list[Envelope]) -> None:
        for envelope in envelopes:
            schema = SCHEMAS[(envelope.type, envelope.version)](many=True, unknown=EXCLUDE)
            schema.load(envelope.items)  # raises if a producer broke its contract
        self.envelopes.extend(envelopes)

    def take(self, stream: str) -> list[Envelope]:
        taken = [e for e in self.envelopes if e.type == stream]
        self.envelopes = [e for e in self.envelopes if e.type != stream]
        return taken


@pytest.fixture
def platform(tmp_path):
    receiver = WebhookReceiver("in-process")
    receiver.start()
    settings = Settings(data_dir=tmp_path, partitions=PARTITIONS,
                        write_keys={"wk": "web"})
    ads = Destination("ads", "webhook", ("buyers",), ("advertising",),
                      {"url": receiver.url_for("ads"), "secret": "in-process"})
    apps = {
        "gateway": GatewayApplication(settings),
        "identity": IdentityApplication(settings),
        "contacts": ContactsApplication(settings),
        "segments": SegmentsApplication(settings),
        "consent": ConsentApplication(settings),
        "activation": ActivationApplication(settings, destinations=[ads],
                                            sleep=lambda seconds: None),
    }
    broker = Broker()
    translators = {"gateway": gateway_translator, "identity": identity_translator,
                   "contacts": contacts_translator, "segments": segments_translator,
                   "activation": activation_translator}
    relays = [OutboxRelay(apps[name], make(PARTITIONS), broker)
              for name, make in translators.items()]
    yield InProcess(apps, relays, broker, receiver)
    receiver.stop()
    for app in apps.values():
        app.close()


class InProcess:
    def __init__(self, apps, relays, broker, receiver):
        self.apps, self.relays, self.broker, self.receiver = apps, relays, broker, receiver

    def drain(self) -> None:
        drain(self.apps, self.relays, self.broker)


def drain(apps, relays, broker) -> None:
    """Relay and consume until nothing moves, as the broker and the lanes would."""
    handlers = stream_handlers(apps)
    while True:
        moved = sum(relay.relay_once() for relay in relays)
        published = list(broker.envelopes)
        broker.envelopes.clear()
        for envelope in published:
            for consumer in CONSUMERS[envelope.type]:
                handlers[(consumer, envelope.type)](envelope)
        if not moved and not published:
            return


def track(user_id: str, event: str, **extra) -> dict:
    return {"type": "track", "userId": user_id, "event": event, **extra}


def test_an_event_travels_from_the_gateway_to_the_webhook_fitting_every_contract(platform):
    apps, receiver = platform.apps, platform.receiver
    apps["segments"].define_segment("buyers", {
        "event": "Order Completed", "count": {"op": "at_least", "value": 2},
        "within_days": 30})
    now = datetime.now(UTC)
    apps["gateway"].ingest("web", {"batch": [
        {"type": "identify", "userId": "ada", "traits": {"email": "Ada@Example.com"},
         "context": {"consent": {"categoryPreferences": {"advertising": True}}}},
        {"type": "identify", "userId": "bob", "traits": {"email": "bob@example.com"}},
    ]}, received_at=now)
    platform.drain()
    apps["gateway"].ingest("web", {"batch": [
        track("ada", "Order Completed"), track("ada", "Order Completed"),
        track("bob", "Order Completed"), track("bob", "Order Completed"),
    ]}, received_at=now)
    platform.drain()

    [delivered] = receiver.items()
    assert delivered["traits"]["email"] == "Ada@Example.com"
    assert apps["activation"].stats()["ads"]["suppressed"] == 1
    bob = apps["identity"].profile_id_for("user_id", "bob")
    [suppressed] = [o for o in apps["activation"].outcomes("ads") if o["profile_id"] == bob]
    assert apps["consent"].decision(suppressed["decision_id"])["allowed"] is False


def test_a_merge_across_partitions_keeps_one_profile_everywhere(platform):
    apps = platform.apps
    now = datetime.now(UTC)
    apps["gateway"].ingest("web", {"batch": [
        {"type": "page", "anonymousId": "anon-7", "name": "Home"},
        {"type": "identify", "userId": "cat", "traits": {"email": "cat@example.com"}},
    ]}, received_at=now)
    platform.drain()
    apps["gateway"].ingest("web", {"batch": [
        {"type": "identify", "anonymousId": "anon-7", "traits": {"email": "cat@example.com",
                                                                  "plan": "pro"}},
    ]}, received_at=now)
    platform.drain()

    survivor = apps["identity"].profile_id_for("user_id", "cat")
    assert apps["identity"].profile_id_for("anonymous_id", "anon-7") == survivor
    profile = apps["contacts"].profile(survivor)
    assert profile["traits"]["plan"] == "pro"
    assert profile["events_total"] == 1  # the page seen before the merge came along
    assert apps["identity"].profile_count() == 1
