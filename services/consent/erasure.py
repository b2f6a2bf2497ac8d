"""Erasure of a person, end to end (DESIGN §4-5; docs/privacy.md).

Given one identifier, the orchestrator:
1. asks identity who the person is: their profile, the profiles merged into it, and every
   identifier linked to them (deterministic links only: nobody else's);
2. asks every service to erase them (`erase_subject`): keys shredded, read models,
   snapshots, caches, lookup indexes and dead letters purged; the gateway adds the
   identifiers, as keyed hashes, to the suppression list that every ingest checks;
3. asks each destination that can delete a person to delete them, keeping a per-recipient
   ledger (requested → confirmed | failed | unsupported; failed ones are retried, and again
   whenever the same request is run again);
4. writes the erasure log: what must be shredded again after a backup is restored. It
   holds profile ids (random, naming nobody) and keyed hashes only, never an identifier.

The log is kept apart from the event stores (its own SQLite file, its own PostgreSQL
schema): back it up separately, never restore it from an event-store backup, and run
`tessera privacy reapply-erasures` after restoring the stores.

No nameko here: the service hands in `call(service, method, **kwargs)`.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from shared.config import Settings

# The gateway first: from then on nothing of the person gets in.
SERVICES = ("gateway", "identity", "contacts", "segments", "activation", "consent")
IDENTIFIER_TYPES = frozenset({"user_id", "anonymous_id", "email", "phone"})
DELETE_ATTEMPTS = 3
LOG_SCHEMA = "privacy_log"
LOG_FILE = "erasures.sqlite"

Call = Callable[..., Any]


class ErasureError(ValueError):
    """A request that cannot be carried out as given (names the field and the rule)."""


def parse_identifier(identifier: Any) -> tuple[str, str]:
    """`["email", "ann@example.com"]` or `"email:ann@example.com"`."""
    if isinstance(identifier, str):
        kind, sep, value = identifier.partition(":")
        if not sep:
            raise ErasureError("identifier: must be TYPE:VALUE, e.g. email:ann@example.com")
        identifier = [kind, value]
    if not isinstance(identifier, list | tuple) or len(identifier) != 2:
        raise ErasureError("identifier: must be a [type, value] pair")
    kind, value = (str(part).strip() for part in identifier)
    if kind not in IDENTIFIER_TYPES and not kind.endswith("_id"):
        raise ErasureError(f"identifier: type must be one of {sorted(IDENTIFIER_TYPES)} "
                           "or a CRM id type ending in _id")
    if not value:
        raise ErasureError("identifier: value must not be empty")
    return kind, value


class ErasureLog:
    """Erasures and their per-recipient ledger, outside the event stores."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.postgres = settings.database == "postgres"
        prefix = f"{LOG_SCHEMA}." if self.postgres else ""
        self.erasures = f"{prefix}erasures"
        self.recipients = f"{prefix}erasure_recipients"
        with self._connection() as db:
            if self.postgres:
                db.execute("SELECT pg_advisory_lock(hashtext('tessera.privacy_log'))")
                db.execute(f"CREATE SCHEMA IF NOT EXISTS {LOG_SCHEMA}")
            db.execute(f"CREATE TABLE IF NOT EXISTS {self.erasures} (request_id TEXT PRIMARY "
                       "KEY, requested_by TEXT NOT NULL, requested_at TEXT NOT NULL, "
                       "status TEXT NOT NULL, profile_ids TEXT NOT NULL, "
                       "subject_hashes TEXT NOT NULL, suppression_hashes TEXT NOT NULL)")
            db.execute(f"CREATE TABLE IF NOT EXISTS {self.recipients} (request_id TEXT NOT "
                       "NULL, destination TEXT NOT NULL, status TEXT NOT NULL, attempts "
                       "INTEGER NOT NULL, last_error TEXT, updated_at TEXT NOT NULL, "
                       "PRIMARY KEY (request_id, destination))")
            if self.postgres:
                db.execute("SELECT pg_advisory_unlock(hashtext('tessera.privacy_log'))")

    @contextlib.contextmanager
    def _connection(self):
        if self.postgres:
            import psycopg

            from shared.store import postgres_conninfo
            with psycopg.connect(postgres_conninfo(self.settings), autocommit=True) as db:
                yield db
        else:
            self.settings.data_dir.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.settings.data_dir / LOG_FILE, timeout=30,
                                 isolation_level=None)
            try:
                yield db
            finally:
                db.close()

    def _sql(self, statement: str) -> str:
        return statement if self.postgres else statement.replace("%s", "?")

    def _rows(self, statement: str, params: tuple = ()) -> list[tuple]:
        with self._connection() as db:
            return list(db.execute(self._sql(statement), params).fetchall())

    def _run(self, statement: str, params: tuple = ()) -> None:
        with self._connection() as db:
            db.execute(self._sql(statement), params)

    def record(self, request_id: str, requested_by: str, status: str, profile_ids: list[str],
               subject_hashes: dict[str, list[str]], suppression_hashes: list[str]) -> None:
        previous = self.erasure(request_id)
        if previous is not None:  # a request run again keeps what it shredded before
            profile_ids = sorted({*previous["profile_ids"], *profile_ids})
            for service, hashes in previous["subject_hashes"].items():
                subject_hashes[service] = sorted({*hashes, *subject_hashes.get(service, ())})
            suppression_hashes = sorted({*previous["suppression_hashes"],
                                         *suppression_hashes})
        self._run(f"DELETE FROM {self.erasures} WHERE request_id = %s", (request_id,))
        self._run(f"INSERT INTO {self.erasures} VALUES (%s, %s, %s, %s, %s, %s, %s)", (
            request_id, requested_by, _now(), status, json.dumps(profile_ids),
            json.dumps(subject_hashes), json.dumps(suppression_hashes)))

    def erasure(self, request_id: str) -> dict[str, Any] | None:
        rows = self._rows(f"SELECT * FROM {self.erasures} WHERE request_id = %s",
                          (request_id,))
        return _erasure(rows[0]) if rows else None

    def all(self) -> list[dict[str, Any]]:
        return [_erasure(row) for row in self._rows(
            f"SELECT * FROM {self.erasures} ORDER BY requested_at")]

    def recipient(self, request_id: str, destination: str, status: str, attempts: int,
                  error: str | None = None) -> None:
        self._run(f"DELETE FROM {self.recipients} WHERE request_id = %s AND destination = %s",
                  (request_id, destination))
        self._run(f"INSERT INTO {self.recipients} VALUES (%s, %s, %s, %s, %s, %s)",
                  (request_id, destination, status, attempts, error, _now()))

    def ledger(self, request_id: str) -> dict[str, dict[str, Any]]:
        rows = self._rows(f"SELECT destination, status, attempts, last_error, updated_at "
                          f"FROM {self.recipients} WHERE request_id = %s", (request_id,))
        return {row[0]: {"status": row[1], "attempts": row[2], "last_error": row[3],
                         "updated_at": row[4]} for row in rows}


def _erasure(row: tuple) -> dict[str, Any]:
    return {"request_id": row[0], "requested_by": row[1], "requested_at": row[2],
            "status": row[3], "profile_ids": json.loads(row[4]),
            "subject_hashes": json.loads(row[5]), "suppression_hashes": json.loads(row[6])}


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Erasure:
    """The orchestrator (see the module docstring)."""

    def __init__(self, log: ErasureLog, call: Call, sleep: Callable[[float], None] = time.sleep):
        self.log = log
        self.call = call
        self.sleep = sleep

    def erase(self, identifier: Any, requested_by: str, request_id: str | None = None
              ) -> dict[str, Any]:
        kind, value = parse_identifier(identifier)
        if not str(requested_by or "").strip():
            raise ErasureError("requested_by: must name who asked for the erasure")
        request_id = request_id or str(uuid.uuid4())
        person = self.call("identity", "subject_of", identifier_type=kind, value=value)
        profile_ids, identifiers = person["profile_ids"], person["identifiers"]
        services: dict[str, Any] = {}
        subject_hashes: dict[str, list[str]] = {}
        suppression: list[str] = []
        for service in SERVICES:
            extra = {"request_id": request_id} if service == "gateway" else {}
            try:
                done = self.call(service, "erase_subject", profile_ids=profile_ids,
                                 identifiers=identifiers, **extra)
            except Exception as failed:  # the request stays incomplete: run it again
                services[service] = {"status": "failed", "error": type(failed).__name__}
                continue
            services[service] = {"status": "erased", "keys_shredded": done["keys_shredded"]}
            subject_hashes[service] = done.get("subject_hashes", [])
            suppression.extend(done.get("suppression_hashes", ()))
        recipients = self._delete_at_destinations(request_id, identifiers, profile_ids)
        complete = all(s["status"] == "erased" for s in services.values())
        self.log.record(request_id, requested_by, "erased" if complete else "incomplete",
                        profile_ids, subject_hashes, suppression)
        return {"request_id": request_id, "status": "erased" if complete else "incomplete",
                "profile_ids": profile_ids, "identifiers": len(identifiers),
                "services": services, "recipients": recipients}

    def _delete_at_destinations(self, request_id: str, identifiers: list[list[str]],
                                profile_ids: list[str]) -> dict[str, dict[str, Any]]:
        ledger = self.log.ledger(request_id)
        done = {name for name, entry in ledger.items()
                if entry["status"] in ("confirmed", "unsupported")}
        pending: list[str] | None = None  # None: every destination, the first time
        if ledger:
            pending = [name for name in ledger if name not in done]
            if not pending:
                return ledger
        for attempt in range(1, DELETE_ATTEMPTS + 1):
            try:
                outcomes = self.call("activation", "delete_at_destinations",
                                     identifiers=identifiers, only=pending,
                                     profile_ids=profile_ids)
            except Exception as failed:
                outcomes = {name: {"status": "failed", "error": type(failed).__name__}
                            for name in (pending or ())}
            for name, outcome in outcomes.items():
                attempts = ledger.get(name, {}).get("attempts", 0) + 1
                if name not in ledger:
                    self.log.recipient(request_id, name, "requested", attempts - 1)
                self.log.recipient(request_id, name, outcome["status"], attempts,
                                   outcome.get("error"))
                ledger[name] = {"status": outcome["status"], "attempts": attempts}
            pending = [name for name, entry in ledger.items() if entry["status"] == "failed"]
            if not pending:
                break
            if attempt < DELETE_ATTEMPTS:
                self.sleep(0.5 * 2 ** (attempt - 1))
        return self.log.ledger(request_id)

    def reapply(self) -> dict[str, Any]:
        """After a restore: shred again every key the log says was shredded, purge the
        profiles again, suppress the identifiers again. Safe to run any number of times."""
        erasures = self.log.all()
        failed: dict[str, str] = {}
        for entry in erasures:
            for service in SERVICES:
                extra = ({"suppression_hashes": entry["suppression_hashes"]}
                         if service == "gateway" else {})
                try:
                    self.call(service, "erase_subject", profile_ids=entry["profile_ids"],
                              identifiers=[], subject_hashes=entry["subject_hashes"].get(
                                  service, []), **extra)
                except Exception as error:
                    failed[f"{entry['request_id']}/{service}"] = type(error).__name__
        return {"erasures": len(erasures), "failed": failed}
