"""What an attacker with write access to a service's database could do to its history,
done straight in SQLite or PostgreSQL (the audit tests check that each is caught)."""

from __future__ import annotations

import sqlite3
from typing import Any, NamedTuple

from shared.audit import Sealer, open_audit_store
from shared.config import Settings


class Row(NamedTuple):
    notification_id: int
    originator_id: str
    version: int


class Tampering:
    def __init__(self, settings: Settings, service: str):
        self.settings = settings
        self.service = service
        if settings.database == "postgres":
            import psycopg

            from shared.store import postgres_conninfo

            self.db: Any = psycopg.connect(postgres_conninfo(settings), autocommit=True)
            self.events, self.id = f'"{service}"."{service}_events"', "notification_id"
            self.audit = f'"{service}".'
            self.mark = "%s"
        else:
            self.db = sqlite3.connect(settings.data_dir / f"{service}.sqlite",
                                      isolation_level=None)
            self.events, self.id, self.audit, self.mark = "stored_events", "rowid", "", "?"

    def run(self, statement: str, *params: Any) -> list[tuple]:
        cursor = self.db.execute(statement.replace("%s", self.mark), params)
        return list(cursor.fetchall()) if cursor.description else []

    def rows(self) -> list[Row]:
        return [Row(nid, str(oid), version) for nid, oid, version in self.run(
            f"SELECT {self.id}, originator_id, originator_version FROM {self.events} "
            f"ORDER BY {self.id}")]

    def alter(self, nid: int) -> None:
        """Change one byte of the event's stored state."""
        [(state,)] = self.run(f"SELECT state FROM {self.events} WHERE {self.id} = %s", nid)
        state = bytes(state)
        changed = bytes([state[0] ^ 0x01]) + state[1:]
        self.run(f"UPDATE {self.events} SET state = %s WHERE {self.id} = %s", changed, nid)

    def delete(self, nid: int) -> None:
        self.run(f"DELETE FROM {self.events} WHERE {self.id} = %s", nid)

    def swap(self, first: int, second: int) -> None:
        """Exchange two events' places in the notification order."""
        columns = "originator_id, originator_version, topic, state"
        [a] = self.run(f"SELECT {columns} FROM {self.events} WHERE {self.id} = %s", first)
        [b] = self.run(f"SELECT {columns} FROM {self.events} WHERE {self.id} = %s", second)
        update = (f"UPDATE {self.events} SET originator_id = %s, originator_version = %s, "
                  f"topic = %s, state = %s WHERE {self.id} = %s")
        # (originator id, version) is unique: park the first under a free version meanwhile.
        self.run(f"UPDATE {self.events} SET originator_version = -1 WHERE {self.id} = %s",
                 first)
        self.run(update, *a, second)
        self.run(update, *b, first)

    def cut_tail(self, count: int) -> list[Row]:
        gone = self.rows()[-count:]
        for row in gone:
            self.delete(row.notification_id)
        return gone

    def forget_seals(self) -> None:
        """Remove the ledger and checkpoints, as someone rewriting history would."""
        self.run(f"DELETE FROM {self.audit}audit_ledger")
        self.run(f"DELETE FROM {self.audit}audit_checkpoints")

    def reseal(self, key) -> int:
        """Recompute the whole chain and its checkpoints with a key of one's own."""
        self.forget_seals()
        store = open_audit_store(self.settings, self.service, create=True)
        try:
            return Sealer(store, key).seal()
        finally:
            store.close()

    def close(self) -> None:
        self.db.close()
