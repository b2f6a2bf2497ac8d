"""Two replicas of contacts on the real broker share its partitions and keep each person's
order: 100,000 events, a merge across partitions halfway, one replica SIGKILLed mid-run
(or stopped with SIGTERM, as Kubernetes does: it finishes its batches and hands over).

At the end every person's events are stored exactly once each, in the order they were
sent, and what contacts published downstream holds every change exactly once (after the
position-based de-duplication every consumer does) in each person's order.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import defaultdict

import httpx
import orjson
import pytest
from kombu import Connection
from prometheus_client.parser import text_string_to_metric_families

from services.contacts.application import ContactsApplication
from services.contacts.domain import Profile
from shared.config import Settings
from shared.contracts import IDENTITY_RESOLVED, PROFILE_CHANGED
from shared.messaging.broker import partition_queue, queue_depths
from tessera.testing.platform import Platform
from tessera.testing.scale_workload import people_and_merges, send_everything

pytestmark = pytest.mark.integration

PARTITIONS = 8
PEOPLE = 2_000
EVENTS_EACH = 50  # 100,000 events in all
MERGES = 10


def processed_by_each_replica(platform: Platform) -> list[float]:
    figures = []
    for port, process in zip(platform.ops_ports, platform.processes, strict=True):
        if process.poll() is not None:
            figures.append(0.0)
            continue
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        figures.append(sum(s.value for f in text_string_to_metric_families(text)
                           for s in f.samples if s.name == "tessera_events_processed_total"))
    return figures


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.5)


def contacts_queues() -> list:
    return [partition_queue("contacts", IDENTITY_RESOLVED, str(p)) for p in range(PARTITIONS)]


def stored_sequences(platform: Platform, people: list[str], absorbed: set[str]):
    """Each person's seq numbers in the order contacts stored them, through merges: an
    absorbed profile's stream holds what came before the merge, its survivor's the rest."""
    app = ContactsApplication(Settings(database="postgres", postgres_dbname=platform.database,
                                       partitions=PARTITIONS))
    try:
        sequences: dict[str, list[int]] = defaultdict(list)
        for person in sorted(people, key=lambda p: p not in absorbed):
            for stored in app.events.get(uuid.UUID(person)):
                if isinstance(stored, Profile.EventsRecorded):
                    for entry in stored.entries:
                        sequences[entry["properties"]["person"]].append(
                            entry["properties"]["seq"])
        merged_into = {person: app.repository.get(uuid.UUID(person)).merged_into
                       for person in people}
    finally:
        app.close()
    return sequences, merged_into


def published_changes(broker_url: str) -> dict[str, dict[int, list[int]]]:
    """What contacts published, per person: for each downstream partition queue, the seq
    numbers in arrival order, duplicates (same position: a relay re-publishing) dropped."""
    seen_positions: set[int] = set()
    changes: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    with Connection(broker_url) as connection:
        channel = connection.channel()
        for partition in range(PARTITIONS):
            queue = partition_queue("segments", PROFILE_CHANGED, str(partition))
            while (message := channel.basic_get(queue.name, no_ack=True)) is not None:
                for item in orjson.loads(message.body)["payload"]["items"]:
                    if item["position"] in seen_positions:
                        continue
                    seen_positions.add(item["position"])
                    properties = item["event"]["properties"]
                    changes[properties["person"]][partition].append(properties["seq"])
    return changes


@pytest.mark.parametrize("stop_signal", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
def test_two_replicas_keep_each_persons_order_through_a_merge_and_a_replica_going_away(
        stop_signal):
    people, absorbed_by = people_and_merges(PEOPLE, MERGES, PARTITIONS)
    platform = Platform(mode="real", services=("contacts", "contacts"),
                        partitions=PARTITIONS).start()
    try:
        send_everything(platform.broker_url, people, absorbed_by, EVENTS_EACH, PARTITIONS)
        total = PEOPLE * EVENTS_EACH
        # The first replica to subscribe holds every partition at first, then hands over
        # what is beyond its share; kill the busier one once both have worked.
        wait_until(lambda: min(processed_by_each_replica(platform)) > 0
                   and sum(processed_by_each_replica(platform)) >= total * 0.3, 240,
                   "the replicas did not share the partitions")

        busiest = max(range(2), key=lambda i: processed_by_each_replica(platform)[i])
        os.killpg(platform.processes[busiest].pid, stop_signal)
        exit_code = platform.processes[busiest].wait(timeout=60)
        assert exit_code == (0 if stop_signal == signal.SIGTERM else -signal.SIGKILL)

        def drained() -> bool:
            if any(queue_depths(platform.broker_url, contacts_queues()).values()):
                return False
            with platform.rpc() as rpc:  # only the surviving replica answers now
                status = rpc.contacts.status()
            return (status["in_flight"] == 0 and not status["retrying"]
                    and status["outbox_backlog"] == 0)

        wait_until(drained, 300, "contacts did not drain after the kill")
        time.sleep(2)  # the last batch's worker acks after its save: let it finish
        wait_until(drained, 60, "contacts did not stay drained")
        sequences, merged_into = stored_sequences(platform, people, set(absorbed_by))
        published = published_changes(platform.broker_url)
    finally:
        platform.stop()
        platform.cleanup()

    in_order = list(range(1, EVENTS_EACH + 1))
    out_of_order = {person: seqs for person, seqs in sequences.items() if seqs != in_order}
    example = next(iter(out_of_order.items()), None)
    assert not out_of_order, (f"{len(out_of_order)} people out of order, e.g. {example}, "
                              f"merged: {example and example[0] in absorbed_by}")
    assert set(sequences) == set(people)
    assert {p: s for p, s in merged_into.items() if s is not None} == absorbed_by
    for person in people:
        per_queue = published[person]
        assert sorted(seq for seqs in per_queue.values() for seq in seqs) == in_order, person
        assert all(seqs == sorted(seqs) for seqs in per_queue.values()), person
