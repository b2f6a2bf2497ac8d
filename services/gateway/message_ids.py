"""The messageIds each source sent lately, so that a retried event is recognised.

Segment de-duplicates over about a day; so does the gateway (`WINDOW`). The ids live in
the gateway's own store, written in the transaction that records the accepted events: a
restarted gateway and its replicas share them, and the process's memory stays flat however
long it runs. Only requests still being saved are held in memory (`_in_flight`): a
concurrent copy of one is asked to retry, never taken twice nor dropped.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from shared.errors import RetryLater
from shared.readmodel import ReadModel, Writes

WINDOW = timedelta(hours=24)
PRUNE_EVERY = 10_000  # accepted events between two clear-outs of ids older than WINDOW
IN_FLIGHT_RETRY_S = 1.0


class SeenMessageIds:
    def __init__(self, rm: ReadModel, window: timedelta = WINDOW):
        self.rm = rm
        self.window = window
        self.table = rm.table("seen_message_ids")
        rm.create(
            f"CREATE TABLE IF NOT EXISTS {self.table} (source TEXT NOT NULL, "
            "message_id TEXT NOT NULL, received_at TEXT NOT NULL, "
            "PRIMARY KEY (source, message_id))",
            f"CREATE INDEX IF NOT EXISTS seen_message_ids_received ON {self.table} "
            "(received_at)")
        self._in_flight: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._since_prune = 0

    def claim(self, source: str, message_ids: list[str]) -> set[str]:
        """Claims the ids and returns those already stored (duplicates); the others stay
        claimed until `release`, which follows the save, whatever its outcome.

        Raises RetryLater while another request holding some of them is being saved:
        whether it will be stored is not known yet, so this copy may be neither taken nor
        called a duplicate (the client retries, as the SDKs do on a 503)."""
        wanted = list(dict.fromkeys(message_ids))
        with self._lock:
            if any((source, m) in self._in_flight for m in wanted):
                raise RetryLater("a request with the same messageIds is being saved",
                                 IN_FLIGHT_RETRY_S)
            self._in_flight.update((source, m) for m in wanted)
        try:
            stored = self._stored(source, wanted)
        except BaseException:
            self.release(source, wanted)
            raise
        self.release(source, [m for m in wanted if m in stored])
        return stored

    def release(self, source: str, message_ids: list[str]) -> None:
        with self._lock:
            self._in_flight.difference_update((source, m) for m in message_ids)

    def writes(self, source: str, message_ids: list[str], received_at: datetime) -> Writes:
        writes = Writes()
        at = received_at.isoformat()
        writes.add(f"INSERT INTO {self.table} (source, message_id, received_at) "
                   "VALUES (%s, %s, %s)", [(source, m, at) for m in message_ids])
        return writes

    def saved(self, count: int, now: datetime) -> None:
        """After each save: now and then, ids older than the window are let go."""
        self._since_prune += count
        if self._since_prune >= PRUNE_EVERY:
            self._since_prune = 0
            self.rm.execute(f"DELETE FROM {self.table} WHERE received_at < %s",
                            [(now - self.window).isoformat()])

    def _stored(self, source: str, message_ids: list[str]) -> set[str]:
        if not message_ids:
            return set()
        marks = ", ".join(["%s"] * len(message_ids))
        rows = self.rm.query(f"SELECT message_id FROM {self.table} WHERE source = %s "
                             f"AND message_id IN ({marks})", [source, *message_ids])
        return {row["message_id"] for row in rows}
