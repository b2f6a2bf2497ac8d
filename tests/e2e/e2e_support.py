"""What the end-to-end tests share besides fixtures."""

from __future__ import annotations

import sqlite3

import psycopg

from tessera.testing.platform import SERVICES, Platform

WRITE_KEY = "wk_e2e_web"


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
