"""The outbox relay, the integration contracts and the envelope that carries them."""

from __future__ import annotations

import threading

import pytest
from marshmallow import EXCLUDE, ValidationError

from services.identity.application import IdentityApplication
from services.identity.translation import translator
from shared.config import Settings
from shared.contracts import CONSUMERS, EXAMPLES, IDENTITY_RESOLVED, SCHEMAS
from shared.envelope import (
    ITEMS_PER_NOTIFICATION,
    Envelope,
    load_envelope,
    position_of,
)
from shared.outbox import OUTBOX_TRACKING_KEY, OutboxRelay
from shared.partitions import partition_of

PARTITIONS = 4
KEY = "gateway/ingest.received/0"


class Publisher:
    """An in-memory broker: keeps what was published, or fails while `down`."""

    def __init__(self, down: bool = False):
        self.down = down
        self.envelopes: list[Envelope] = []

    def publish(self, envelopes: list[Envelope]) -> None:
        if self.down:
            raise ConnectionError("broker unreachable")
        self.envelopes.extend(envelopes)

    def items(self) -> list[dict]:
        return [item for envelope in self.envelopes for item in envelope.items]


@pytest.fixture
def settings(tmp_path):
    return Settings(data_dir=tmp_path)


@pytest.fixture
def app(settings):
    made = IdentityApplication(settings)
    yield made
    made.close()


def relay(app, publisher, **options) -> OutboxRelay:
    return OutboxRelay(app, translator(PARTITIONS), publisher, **options)


def ingest(app, start: int, *anonymous_ids: str) -> None:
    app.resolve_batch(KEY, [
        {"position": start + i, "source": "web",
         "event": {"type": "track", "event": "Seen", "anonymousId": anonymous_id,
                   "timestamp": "2026-01-01T00:00:00.000Z"}}
        for i, anonymous_id in enumerate(anonymous_ids)])


def recorded_position(app) -> int:
    return app.process_recorder.max_tracking_id(OUTBOX_TRACKING_KEY) or 0


# ---- the relay -----------------------------------------------------------------------------
def test_each_saved_event_is_published_once(app):
    publisher = Publisher()
    outbox = relay(app, publisher)
    ingest(app, 1, "a-1", "a-2", "a-3")

    assert outbox.relay_once() > 0
    assert outbox.relay_once() == 0

    assert sorted(i["event"]["anonymousId"] for i in publisher.items()) == ["a-1", "a-2", "a-3"]
    assert outbox.backlog() == 0


def test_items_are_grouped_into_one_envelope_per_stream_and_partition(app):
    publisher = Publisher()
    ids = [f"a-{n}" for n in range(20)]
    ingest(app, 1, *ids)
    relay(app, publisher).relay_once()

    keys = [(e.type, e.partition) for e in publisher.envelopes]
    assert len(keys) == len(set(keys)) > 1
    for envelope in publisher.envelopes:
        assert envelope.type == IDENTITY_RESOLVED
        assert envelope.producer == "identity"
        assert envelope.routing_key == f"{IDENTITY_RESOLVED}.{envelope.partition}"
        assert envelope.tracking_key == f"identity/{IDENTITY_RESOLVED}/{envelope.partition}"
        assert all(partition_of(i["profile_id"], PARTITIONS) == envelope.partition
                   for i in envelope.items)
    assert len(publisher.items()) == 20


def test_an_envelope_holds_at_most_batch_max_items(app):
    publisher = Publisher()
    ingest(app, 1, *(f"a-{n}" for n in range(30)))
    relay(app, publisher, batch_max=2).relay_once()
    assert max(len(e.items) for e in publisher.envelopes) == 2
    assert len(publisher.items()) == 30


def test_positions_increase_across_and_within_envelopes(app):
    publisher = Publisher()
    outbox = relay(app, publisher)
    ingest(app, 1, "a-1", "a-2")
    outbox.relay_once()
    ingest(app, 3, "a-3", "a-4")
    outbox.relay_once()

    positions = [i["position"] for i in publisher.items()]
    assert len(set(positions)) == 4
    by_partition: dict[str, list[int]] = {}
    for envelope in publisher.envelopes:
        by_partition.setdefault(envelope.partition, []).extend(
            i["position"] for i in envelope.items)
    for seen in by_partition.values():
        assert seen == sorted(seen)
    # A later save gets later positions; each position names its notification.
    first, second = positions[:2], positions[2:]
    assert max(first) < min(second)
    notification_ids = {p // ITEMS_PER_NOTIFICATION for p in positions}
    assert notification_ids <= set(range(1, app.process_recorder.max_notification_id() + 1))


def test_the_position_is_recorded_only_after_the_publisher_succeeded(app):
    ingest(app, 1, "a-1")
    broken = Publisher(down=True)
    outbox = relay(app, broken)

    with pytest.raises(ConnectionError):
        outbox.relay_once()
    assert recorded_position(app) == 0
    assert outbox.backlog() > 0

    broken.down = False
    assert outbox.relay_once() > 0
    assert [i["event"]["anonymousId"] for i in broken.items()] == ["a-1"]
    assert recorded_position(app) == app.process_recorder.max_notification_id()


def test_a_new_relay_resumes_from_the_recorded_position(settings, app):
    first = Publisher()
    ingest(app, 1, "a-1", "a-2")
    relay(app, first).relay_once()

    ingest(app, 3, "a-3")
    restarted_app = IdentityApplication(settings)
    try:
        second = Publisher()
        assert relay(restarted_app, second).relay_once() > 0
        assert [i["event"]["anonymousId"] for i in second.items()] == ["a-3"]
        assert relay(restarted_app, second).relay_once() == 0
    finally:
        restarted_app.close()


def test_a_save_wakes_the_relay(app):
    outbox = relay(app, Publisher())
    assert not outbox._wake.is_set()
    ingest(app, 1, "a-1")
    assert outbox._wake.is_set()


def test_the_run_loop_survives_a_broker_outage_and_catches_up(app):
    publisher = Publisher(down=True)
    outbox = relay(app, publisher, linger_seconds=0)
    ingest(app, 1, "a-1")
    ingest(app, 2, "a-2")
    naps: list[float] = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 2:
            publisher.down = False
        if publisher.items():
            outbox.stop()

    runner = threading.Thread(target=outbox.run, kwargs={"sleep": nap})
    runner.start()
    runner.join(timeout=10)
    outbox.stop()
    runner.join(timeout=10)
    assert not runner.is_alive()
    assert sorted(i["event"]["anonymousId"] for i in publisher.items()) == ["a-1", "a-2"]
    assert recorded_position(app) == app.process_recorder.max_notification_id()
    assert naps[:2] == [0.2, 0.4]  # backoff while the broker is down


# ---- contracts -----------------------------------------------------------------------------
@pytest.mark.parametrize("stream_version", sorted(EXAMPLES))
def test_every_example_loads_with_its_schema(stream_version):
    schema = SCHEMAS[stream_version]()
    example = EXAMPLES[stream_version]
    loaded = schema.load(example)
    assert loaded["position"] == example["position"]


def test_every_contract_has_an_example_and_consumers():
    assert set(EXAMPLES) == set(SCHEMAS)
    assert {stream for stream, _ in SCHEMAS} == set(CONSUMERS)


@pytest.mark.parametrize("stream_version", sorted(EXAMPLES))
def test_an_example_without_a_position_is_rejected(stream_version):
    example = dict(EXAMPLES[stream_version])
    del example["position"]
    with pytest.raises(ValidationError) as caught:
        SCHEMAS[stream_version]().load(example)
    assert "position" in caught.value.messages


def test_a_consumer_ignores_fields_a_newer_producer_added():
    stream_version = (IDENTITY_RESOLVED, 1)
    example = {**EXAMPLES[stream_version], "brand_new_field": 1}
    loaded = SCHEMAS[stream_version]().load(example, unknown=EXCLUDE)
    assert "brand_new_field" not in loaded


def test_what_identity_publishes_fits_its_contract(app):
    publisher = Publisher()
    ingest(app, 1, "a-1", "a-2")
    relay(app, publisher).relay_once()
    for envelope in publisher.envelopes:
        for item in envelope.items:
            SCHEMAS[(envelope.type, envelope.version)]().load(item)


# ---- the envelope --------------------------------------------------------------------------
def test_an_envelope_round_trips_through_its_message():
    sent = Envelope(type=IDENTITY_RESOLVED, producer="identity", partition="3",
                    items=[{"position": position_of(7, 0), "profile_id": "p"},
                           {"position": position_of(7, 1), "profile_id": "q"}],
                    correlation_id="c-1")
    message = sent.to_message()
    assert message["subject"] == "3"

    received = load_envelope(message)

    assert received == sent
    assert received.last_position == 70_001
    assert received.tracking_key == "identity/identity.resolved/3"


def test_extra_fields_in_a_message_are_ignored():
    message = Envelope(type="t", producer="p", partition="0",
                       items=[{"position": 1}]).to_message()
    message["added_later"] = True
    message["payload"]["also_new"] = 1
    assert load_envelope(message).items == [{"position": 1}]


def _message(**changes) -> dict:
    message = Envelope(type="t", producer="p", partition="0",
                       items=[{"position": 1}]).to_message()
    message.update(changes)
    return message


@pytest.mark.parametrize("malformed", [
    {k: v for k, v in _message().items() if k != "type"},
    {k: v for k, v in _message().items() if k != "payload"},
    _message(version="one"),
    _message(payload={"partition": "0", "items": []}),
    _message(payload={"partition": "0", "items": [{"no_position": 1}]}),
    _message(payload={"partition": "0", "items": [{"position": "1"}]}),
    _message(payload={"items": [{"position": 1}]}),
    _message(payload="not an object"),
])
def test_a_malformed_envelope_raises_validation_error(malformed):
    with pytest.raises(ValidationError):
        load_envelope(malformed)


def test_a_notification_yields_a_bounded_number_of_positions():
    assert position_of(3, ITEMS_PER_NOTIFICATION - 1) < position_of(4, 0)
    with pytest.raises(ValueError):
        position_of(3, ITEMS_PER_NOTIFICATION)
