"""Every service process answers on its operations port: /livez, /readyz, /metrics."""

from __future__ import annotations

import uuid

import httpx
import pytest
from broker_support import publish
from prometheus_client.parser import text_string_to_metric_families
from tenacity import retry, stop_after_delay, wait_fixed

from shared.contracts import IDENTITY_RESOLVED
from shared.partitions import partition_of
from tessera.testing.platform import Platform, create_vhost, delete_vhost

pytestmark = pytest.mark.integration


def metric(platform: Platform, name: str, service: str | None = None, **labels) -> float:
    """The sum of one metric's samples whose labels include `labels` (0 if none yet)."""
    text = httpx.get(f"{platform.ops_url(service)}/metrics", timeout=10).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


def resolved_item(position: int, profile_id: str) -> dict:
    return {"position": position, "profile_id": profile_id, "source": "web", "identifiers": [],
            "event": {"type": "track", "event": "Viewed", "messageId": str(uuid.uuid4()),
                      "timestamp": "2026-11-29T10:00:00.000Z"}}


@pytest.fixture
def contacts_alone():
    platform = Platform(mode="real", services=("contacts",), partitions=4).start()
    yield platform
    platform.stop()
    platform.cleanup()


def test_contacts_counts_the_events_it_processes_on_its_metrics_port(contacts_alone):
    platform = contacts_alone
    profile_id = str(uuid.uuid4())
    partition = partition_of(profile_id, 4)
    before = metric(platform, "tessera_events_processed_total", stream=IDENTITY_RESOLVED)

    publish(platform, IDENTITY_RESOLVED, partition,
            [resolved_item(position, profile_id) for position in range(1, 8)],
            producer="identity")

    @retry(stop=stop_after_delay(20), wait=wait_fixed(0.2), reraise=True)
    def processed_all_seven():
        assert metric(platform, "tessera_events_processed_total",
                      stream=IDENTITY_RESOLVED) == before + 7

    processed_all_seven()
    queue = f"contacts.{IDENTITY_RESOLVED}.{partition}"
    assert metric(platform, "tessera_queue_messages_ready", queue=queue) == 0
    assert metric(platform, "tessera_outbox_backlog", service="contacts") == 0


def test_a_broker_that_goes_away_makes_the_process_unready_but_not_dead(contacts_alone):
    platform = contacts_alone
    ops = platform.ops_url()
    assert httpx.get(f"{ops}/readyz", timeout=10).status_code == 200

    delete_vhost(platform.vhost)  # the broker refuses this process from now on
    try:
        @retry(stop=stop_after_delay(20), wait=wait_fixed(0.3), reraise=True)
        def unready():
            answer = httpx.get(f"{ops}/readyz", timeout=10)
            assert answer.status_code == 503
            return answer.json()["checks"]

        checks = unready()
        assert checks["broker"] != "ok"
        assert checks["contacts.event_store"] == "ok"
        assert httpx.get(f"{ops}/livez", timeout=10).status_code == 200
    finally:
        create_vhost(platform.vhost)  # the platform deletes its own vhost when it stops

    @retry(stop=stop_after_delay(30), wait=wait_fixed(0.3), reraise=True)
    def ready_again():
        assert httpx.get(f"{ops}/readyz", timeout=10).status_code == 200

    ready_again()


def test_an_unknown_operations_path_is_refused_with_the_paths_that_exist(contacts_alone):
    answer = httpx.get(f"{contacts_alone.ops_url()}/healthz", timeout=10)

    assert answer.status_code == 404
    assert "/readyz" in answer.json()["error"]
