"""Shared fixtures: real platforms (embedded, and RabbitMQ + PostgreSQL) driven from outside."""

from __future__ import annotations

import secrets
import sqlite3

import psycopg
import pytest

from tessera.testing.platform import SERVICES, Platform
from tessera.testing.webhook_receiver import WebhookReceiver

WRITE_KEY = "wk_e2e_web"
PURPOSES = {"ads": ["advertising"], "crm": ["marketing", "analytics"]}
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
         "secret_env": "TESSERA_E2E_SECRET", "segments": ["buyers"], "purposes": purposes}
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


def stored_event_counts(platform: Platform) -> dict[str, int]:
    """How many events each service has stored (its own database or schema)."""
    counts = {}
    if platform.mode == "embedded":
        for service in SERVICES:
            path = platform.workdir / "data" / f"{service}.sqlite"
            with sqlite3.connect(path) as db:
                counts[service] = db.execute("SELECT COUNT(*) FROM stored_events").fetchone()[0]
        return counts
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={platform.database}") as db:
        for service in SERVICES:
            row = db.execute(f'SELECT COUNT(*) FROM "{service}"."{service}_events"').fetchone()
            counts[service] = row[0]
    return counts
