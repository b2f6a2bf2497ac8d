"""`tessera up` has one operations port for its six services; its figures move with events."""

from __future__ import annotations

import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.contracts import IDENTITY_RESOLVED, INGEST_RECEIVED, PROFILE_CHANGED
from tessera.testing.platform import Platform

WRITE_KEY = "wk_ops_web"


@pytest.fixture(scope="module")
def embedded():
    platform = Platform(mode="embedded", write_keys={"web": WRITE_KEY}).start()
    yield platform
    platform.stop()
    platform.cleanup()


def samples(platform: Platform, name: str) -> list:
    text = httpx.get(f"{platform.ops_url()}/metrics", timeout=10).text
    return [sample for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == name]


def processed(platform: Platform, service: str, stream: str) -> float:
    return sum(s.value for s in samples(platform, "tessera_events_processed_total")
               if s.labels == {"service": service, "stream": stream})


def batch_requests_timed(platform: Platform) -> float:
    return sum(s.value for s in samples(platform, "tessera_http_request_duration_seconds_count")
               if s.labels["route"] == "/v1/batch" and s.labels["status"] == "200")


def send_identifies(platform: Platform, count: int) -> None:
    events = [{"type": "identify", "userId": f"user-{uuid.uuid4()}", "messageId": str(uuid.uuid4()),
               "traits": {"plan": "pro"}} for _ in range(count)]
    answer = httpx.post(f"{platform.base_url}/v1/batch", json={"batch": events},
                        auth=(WRITE_KEY, ""), timeout=10)
    assert answer.status_code == 200, answer.text


def test_events_flowing_through_the_pipeline_move_every_hops_figures(embedded):
    hops = [("identity", INGEST_RECEIVED), ("contacts", IDENTITY_RESOLVED),
            ("consent", IDENTITY_RESOLVED), ("segments", PROFILE_CHANGED)]
    before = {hop: processed(embedded, *hop) for hop in hops}
    timed_before = batch_requests_timed(embedded)

    send_identifies(embedded, 5)
    embedded.wait_drained(timeout=60)

    assert {hop: processed(embedded, *hop) - before[hop] for hop in hops} == {
        hop: 5 for hop in hops}
    assert batch_requests_timed(embedded) == timed_before + 1


def test_the_embedded_process_is_alive_and_ready(embedded):
    live = httpx.get(f"{embedded.ops_url()}/livez", timeout=10)
    ready = httpx.get(f"{embedded.ops_url()}/readyz", timeout=10)

    assert live.status_code == 200
    assert ready.status_code == 200
    assert set(ready.json()["checks"]) == {"broker", *(f"{s}.event_store" for s in (
        "gateway", "identity", "contacts", "segments", "consent", "activation"))}
