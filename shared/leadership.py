"""Which replica of a service runs its outbox relay: exactly one at a time.

Every replica of a service shares one event store and so one notification log. Were each
replica to relay it, every integration event would be published once per replica. The
relay therefore runs where this process holds the service's PostgreSQL advisory lock; the
lock belongs to a connection, so a replica that dies (even SIGKILLed) releases it and
another takes over from the last recorded position. One process (SQLite, embedded mode)
always leads.
"""

from __future__ import annotations

import contextlib
import time
from typing import Protocol

from shared.config import Settings
from shared.store import postgres_conninfo

RECHECK_SECONDS = 1.0


class Leadership(Protocol):
    def held(self) -> bool: ...

    def release(self) -> None: ...


class SoleProcess:
    """Embedded mode: one process, one relay."""

    def held(self) -> bool:
        return True

    def release(self) -> None:
        pass


class AdvisoryLockLeadership:
    """Held while this process's connection holds `pg_advisory_lock(key)`."""

    def __init__(self, settings: Settings, name: str):
        self.settings = settings
        self.name = name
        self._connection = None
        self._held = False
        self._checked_at = float("-inf")

    def held(self) -> bool:
        now = time.monotonic()
        if now - self._checked_at < RECHECK_SECONDS:
            return self._held
        self._checked_at = now
        try:
            self._held = self._still_held() if self._held else self._try_acquire()
        except Exception:
            self._drop_connection()
        return self._held

    def _try_acquire(self) -> bool:
        if self._connection is None:
            self._connection = _connect(self.settings)
        row = self._connection.execute(
            "SELECT pg_try_advisory_lock(hashtext(%s))", (self.name,)).fetchone()
        return bool(row[0])

    def _still_held(self) -> bool:
        self._connection.execute("SELECT 1")
        return True

    def _drop_connection(self) -> None:
        self._held = False
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
        self._connection = None

    def release(self) -> None:
        self._drop_connection()


def _connect(settings: Settings):
    import psycopg  # real mode only: embedded mode starts without libpq

    return psycopg.connect(postgres_conninfo(settings) + " connect_timeout=5", autocommit=True)


def relay_leadership(settings: Settings, service: str) -> Leadership:
    if settings.database != "postgres":
        return SoleProcess()
    return AdvisoryLockLeadership(settings, f"tessera.outbox.{service}")
