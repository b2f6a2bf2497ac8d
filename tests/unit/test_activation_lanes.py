"""Delivery lanes: a destination given several lanes has several batches in flight, each
lane its own queue partition and ledger, and each person always in the same lane.

Deliveries go to a real loopback WebhookReceiver; consent is a fake `decide_many`.
"""

from __future__ import annotations

import json
import uuid

import pytest
from marshmallow import ValidationError
from test_activation_delivery import Consent, Publisher, change

from services.activation.application import ActivationApplication
from services.activation.destinations import (
    Destination,
    DestinationSchema,
    lane_of,
    parse_partition,
)
from services.activation.service import destination_partitions
from services.activation.translation import translator
from shared.config import Settings
from shared.contracts import DELIVERY_PLANNED, SCHEMAS, lane_partition
from shared.outbox import OutboxRelay
from tessera.testing.webhook_receiver import WebhookReceiver

SECRET = "s3cret"
KEY = "segments/segments.membership_changed/0"
LANES = 3
PEOPLE = [str(uuid.UUID(int=n)) for n in range(1, 31)]


@pytest.fixture
def receiver():
    with WebhookReceiver(SECRET) as running:
        yield running


def webhook(receiver: WebhookReceiver, lanes: int = LANES) -> Destination:
    return Destination("ads", "webhook", ("frequent_buyers",), ("advertising",),
                       {"url": receiver.base_url + "/hooks/{destination}", "secret": SECRET},
                       lanes=lanes)


@pytest.fixture
def app(tmp_path, receiver):
    made = ActivationApplication(Settings(data_dir=tmp_path, delivery_attempts=2),
                                 destinations=[webhook(receiver)], sleep=lambda s: None)
    yield made
    made.close()


def planned_by_partition(app: ActivationApplication, changes: list[dict]) -> dict[str, list]:
    app.plan(KEY, changes)
    publisher = Publisher()
    OutboxRelay(app, translator(8), publisher).relay_once()
    by_partition: dict[str, list] = {}
    for envelope in publisher.envelopes:
        assert envelope.type == DELIVERY_PLANNED
        by_partition.setdefault(envelope.partition, []).append(envelope)
    return by_partition


def test_each_person_is_planned_on_the_lane_their_profile_id_hashes_to(app):
    changes = [change(i + 1, person) for i, person in enumerate(PEOPLE)]

    by_partition = planned_by_partition(app, changes)

    assert set(by_partition) == {"ads", "ads~1", "ads~2"}
    for partition, envelopes in by_partition.items():
        destination, lane = parse_partition(partition)
        assert destination == "ads"
        for item in (i for e in envelopes for i in e.items):
            assert lane_of(item["profile_id"], LANES) == lane
            assert SCHEMAS[(DELIVERY_PLANNED, 1)]().load(item)["lane"] == lane


def test_a_persons_entry_and_exit_take_the_same_lane_in_order(app):
    ada = PEOPLE[0]

    by_partition = planned_by_partition(app, [change(1, ada), change(2, ada, kind="exited")])

    (partition,) = by_partition
    items = [i for e in by_partition[partition] for i in e.items]
    assert [i["action"] for i in items] == ["entered", "exited"]


def test_every_lane_delivers_and_the_destination_counts_them_all(app, receiver):
    by_partition = planned_by_partition(app, [change(i + 1, p) for i, p in enumerate(PEOPLE)])
    consent = Consent(*PEOPLE[:-3])  # the last three have no consent

    for partition, envelopes in by_partition.items():
        for envelope in envelopes:
            app.deliver(envelope.tracking_key, partition, envelope.items, consent)

    assert sorted(i["profile_id"] for i in receiver.items()) == sorted(PEOPLE[:-3])
    stats = app.stats()["ads"]
    assert (stats["delivered"], stats["suppressed"]) == (len(PEOPLE) - 3, 3)
    outcomes = app.outcomes("ads")
    assert sorted(o["profile_id"] for o in outcomes) == sorted(PEOPLE)


def test_a_dead_letter_on_any_lane_is_listed_and_replayed_from_the_destination(app, receiver):
    by_partition = planned_by_partition(app, [change(i + 1, p) for i, p in enumerate(PEOPLE)])
    (envelope,) = by_partition["ads~2"]
    receiver.fail_next(5, status=503)
    app.deliver(envelope.tracking_key, "ads~2", envelope.items, Consent(*PEOPLE))
    (letter,) = app.dead_letters("ads")
    receiver.fail_next(0)

    outcome = app.replay("ads", letter["id"], Consent(*PEOPLE))

    assert outcome == {"delivered": len(envelope.items), "suppressed": 0}
    assert app.dead_letters("ads") == []
    assert app.stats()["ads"]["delivered"] == len(envelope.items)


def test_lanes_dropped_from_the_configuration_keep_their_dead_letters(tmp_path, receiver):
    settings = Settings(data_dir=tmp_path, delivery_attempts=2)
    wide = ActivationApplication(settings, destinations=[webhook(receiver)],
                                 sleep=lambda s: None)
    by_partition = planned_by_partition(wide, [change(i + 1, p) for i, p in enumerate(PEOPLE)])
    (envelope,) = by_partition["ads~2"]
    receiver.fail_next(5, status=503)
    wide.deliver(envelope.tracking_key, "ads~2", envelope.items, Consent(*PEOPLE))
    wide.close()

    narrow = ActivationApplication(settings, destinations=[webhook(receiver, lanes=1)],
                                   sleep=lambda s: None)
    try:
        assert len(narrow.dead_letters("ads")) == 1
        assert narrow.stats()["ads"]["dead_letters"] == 1
    finally:
        narrow.close()


def test_lane_zero_keeps_the_destinations_own_partition_and_ledger():
    assert lane_partition("ads", 0) == "ads"
    assert lane_partition("ads", 2) == "ads~2"
    assert parse_partition("ads") == ("ads", 0)
    assert parse_partition("ads~2") == ("ads", 2)


def test_the_service_consumes_a_queue_per_lane(tmp_path):
    path = tmp_path / "destinations.json"
    path.write_text(json.dumps({"destinations": [
        {"name": "ads", "kind": "webhook", "segments": ["s"], "purposes": ["advertising"],
         "lanes": 3},
        {"name": "crm", "kind": "webhook", "segments": ["s"], "purposes": ["advertising"]}]}))

    partitions = destination_partitions(Settings(data_dir=tmp_path, destinations_file=path))

    assert partitions == ["ads", "ads~1", "ads~2", "crm"]


@pytest.mark.parametrize("lanes", [0, 33, "two"])
def test_a_lane_count_out_of_range_is_refused_naming_the_field(lanes):
    spec = {"name": "ads", "kind": "webhook", "segments": ["s"], "purposes": ["advertising"],
            "lanes": lanes}

    with pytest.raises(ValidationError) as refused:
        DestinationSchema().load(spec)

    assert "lanes" in refused.value.messages
