"""What the end-to-end tests share besides fixtures."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

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


def tessera(platform: Platform, *args: str) -> subprocess.CompletedProcess:
    """The `tessera` command, pointed at the platform's admin API."""
    env = {**os.environ, "TESSERA_URL": platform.base_url,
           "TESSERA_ADMIN_TOKEN": platform.admin_token}
    return subprocess.run([sys.executable, "-m", "tessera.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def profile_of(platform: Platform, user_id: str) -> dict:
    return platform.admin("GET", "/v1/profiles", params={"userId": user_id}).json()
