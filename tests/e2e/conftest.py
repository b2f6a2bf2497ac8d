"""Shared fixtures: real platforms (embedded, and RabbitMQ + PostgreSQL) driven from outside."""

from __future__ import annotations

import secrets

import pytest
from e2e_support import WRITE_KEY

from tessera.testing.platform import Platform
from tessera.testing.webhook_receiver import WebhookReceiver

PURPOSES = {"ads": ["advertising"], "crm": ["marketing", "analytics"]}
# crm delivers through two lanes (two queues, two ledgers): every test through it covers them.
LANES = {"ads": 1, "crm": 2}
BUYERS = {"event": "Order Completed", "count": {"op": "at_least", "value": 2},
          "within_days": 30}


@pytest.fixture(scope="module")
def receiver():
    receiver = WebhookReceiver(secrets.token_hex(8))
    receiver.start()
    yield receiver
    receiver.stop()


def start_platform(mode: str, receiver: WebhookReceiver) -> Platform:
    destinations = [
        {"name": name, "kind": "webhook", "config": {"url": receiver.url_for("{destination}")},
         "secret_env": "TESSERA_E2E_SECRET", "segments": ["buyers"], "purposes": purposes,
         "lanes": LANES[name]}
        for name, purposes in PURPOSES.items()
    ]
    platform = Platform(mode=mode, write_keys={"web": WRITE_KEY}, destinations=destinations,
                        destination_secrets={"TESSERA_E2E_SECRET": receiver.secret.decode()})
    platform.start()
    platform.define_segment("buyers", BUYERS)
    return platform


@pytest.fixture(scope="module", params=["embedded", pytest.param("real", marks=pytest.mark.e2e)])
def platform(request, receiver):
    platform = start_platform(request.param, receiver)
    yield platform
    platform.stop()
    platform.cleanup()
