"""Accepted events per minute, counted where they are accepted (the console's overview).

Reading the chart from the event store meant decoding (and decrypting) the newest ingest
batches on every view: its cost grew with the traffic it showed. Each save of accepted
events adds its count to its minute's row instead, in the same transaction (so a failed
save counts nothing and a stored one is counted once), and the overview reads at most 60
rows per writer.

Each gateway process counts in rows of its own (`writer`): replicas never wait on one
another's row lock, and the reader adds the writers up. Rows older than `KEPT` go now and
then. On a store that already held events when the table was created (an upgrade), the
counts begin then (`since`), and the page says that earlier traffic is not in them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from shared.readmodel import ReadModel, Writes

TABLE = "accepted_per_minute"
STARTED = "accepted_per_minute_started"
KEPT = timedelta(days=2)
PRUNE_EVERY = 1_000  # saves between two clear-outs of old rows


def minute_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


class IngestCounts:
    def __init__(self, rm: ReadModel, had_events: Callable[[], bool]):
        self.rm = rm
        self.table = rm.table(TABLE)
        self.started_table = rm.table(STARTED)
        self.writer = uuid.uuid4().hex[:12]
        self._saves = 0
        rm.create(
            f"CREATE TABLE IF NOT EXISTS {self.table} (minute TEXT NOT NULL, "
            "writer TEXT NOT NULL, accepted INTEGER NOT NULL, PRIMARY KEY (minute, writer))",
            f"CREATE TABLE IF NOT EXISTS {self.started_table} (id INTEGER PRIMARY KEY, "
            "started_at TEXT)")
        if not rm.query(f"SELECT id FROM {self.started_table}"):
            started = minute_of(datetime.now(UTC)) if had_events() else None
            rm.execute(f"INSERT INTO {self.started_table} (id, started_at) VALUES (1, %s) "
                       "ON CONFLICT DO NOTHING", [started])

    def writes(self, accepted: int, received_at: datetime) -> Writes:
        writes = Writes()
        if accepted:
            writes.add(f"INSERT INTO {self.table} AS t (minute, writer, accepted) "
                       "VALUES (%s, %s, %s) ON CONFLICT (minute, writer) "
                       "DO UPDATE SET accepted = t.accepted + excluded.accepted",
                       [(minute_of(received_at), self.writer, accepted)])
        return writes

    def saved(self, now: datetime) -> None:
        self._saves += 1
        if self._saves >= PRUNE_EVERY:
            self._saves = 0
            self.rm.execute(f"DELETE FROM {self.table} WHERE minute < %s",
                            [minute_of(now - KEPT)])

    def since(self) -> str | None:
        """When counting began, if the store held events before (None: from the first)."""
        rows = self.rm.query(f"SELECT started_at FROM {self.started_table}")
        return rows[0]["started_at"] if rows else None

    def per_minute(self, first: str, last: str) -> dict[str, int]:
        """Accepted events per minute from `first` to `last` (minutes as minute_of)."""
        rows = self.rm.query(f"SELECT minute, sum(accepted) AS accepted FROM {self.table} "
                             "WHERE minute >= %s AND minute <= %s GROUP BY minute",
                             [first, last])
        return {row["minute"]: int(row["accepted"]) for row in rows}
