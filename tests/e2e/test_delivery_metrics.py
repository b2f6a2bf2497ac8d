"""activation's operations port counts what it delivered and what consent suppressed,
on the embedded platform and on RabbitMQ + PostgreSQL (the `platform` fixture)."""

from __future__ import annotations

import uuid

import httpx
import segment.analytics as analytics
from e2e_support import WRITE_KEY
from prometheus_client.parser import text_string_to_metric_families

from shared.contracts import DELIVERY_PLANNED

GRANTED = {"advertising": True, "marketing": True, "analytics": True}


def outcome(platform, name: str) -> float:
    text = httpx.get(f"{platform.ops_url('activation')}/metrics", timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == "tessera_batch_outcomes_total"
               and sample.labels == {"service": "activation", "stream": DELIVERY_PLANNED,
                                     "outcome": name})


def buyer(client, consent: dict | None) -> None:
    user_id = f"user-{uuid.uuid4()}"
    context = {"consent": {"categoryPreferences": consent}} if consent else {}
    client.identify(user_id=user_id, traits={"plan": "pro"}, context=context)
    for order in ("o-1", "o-2"):
        client.track(user_id=user_id, event="Order Completed", properties={"order_id": order})


def test_deliveries_and_suppressions_are_counted_per_outcome(platform):
    client = analytics.Client(WRITE_KEY, host=platform.base_url, sync_mode=True)
    before = {name: outcome(platform, name) for name in ("delivered", "suppressed")}

    buyer(client, GRANTED)  # enters "buyers": delivered to both destinations
    buyer(client, None)  # enters "buyers" too, without consent: suppressed for both
    platform.wait_drained()

    assert outcome(platform, "delivered") - before["delivered"] == 2
    assert outcome(platform, "suppressed") - before["suppressed"] == 2
    assert outcome(platform, "dead_lettered") == 0
