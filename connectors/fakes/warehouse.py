"""A throw-away PostgreSQL database on this machine for the warehouse destination.

Not a fake at all: the real server, a fresh database per run (no fixed name, so runs in
parallel never collide), dropped afterwards. It answers the conformance kit's questions
from the warehouse's own tables.
"""

from __future__ import annotations

import os
import secrets

import psycopg

ADMIN_DSN = os.environ.get("TESSERA_TEST_POSTGRES_DSN",
                           "host=127.0.0.1 user=postgres dbname=postgres")


class ScratchDatabase:
    schema = "analytics"

    def __init__(self) -> None:
        self.name = f"tessera_wh_{secrets.token_hex(6)}"
        self.dsn = ADMIN_DSN.replace("dbname=postgres", f"dbname={self.name}")

    def __enter__(self) -> ScratchDatabase:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.name}"')
        return self

    def __exit__(self, *exc_info: object) -> None:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def _rows(self, query: str) -> list[tuple]:
        with psycopg.connect(self.dsn) as connection:
            return connection.execute(query.format(schema=self.schema)).fetchall()

    def batch_sizes(self) -> list[int]:
        return [row[0] for row in self._rows("SELECT items FROM {schema}.loads ORDER BY load_id")]

    def subjects(self) -> list[str]:
        members = self._rows("SELECT profile_id FROM {schema}.segment_memberships "
                             "WHERE is_member")
        return [row[0] for row in members]

    def profiles(self) -> dict[str, dict]:
        return dict(self._rows("SELECT profile_id, traits FROM {schema}.profiles"))

    def memberships(self) -> list[tuple]:
        return self._rows("SELECT profile_id, segment, is_member FROM "
                          "{schema}.segment_memberships ORDER BY profile_id, segment")

    def events(self) -> list[tuple]:
        """(event_id, profile_id, type, event, properties) of every event, oldest first;
        none when the warehouse was never written to (its tables are made on first use)."""
        if self._rows("SELECT to_regclass('{schema}.events')") == [(None,)]:
            return []
        return self._rows("SELECT event_id, profile_id, type, event, properties FROM "
                          "{schema}.events ORDER BY occurred_at, event_id")

    def event_ids(self) -> list[str]:
        return [row[0] for row in self.events()]

    def received_identifiers(self) -> list[dict[str, str]]:
        return []

    def data_requests(self) -> list:
        return self.batch_sizes()
