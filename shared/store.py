"""Each service's event store: an eventsourcing Application on SQLite or PostgreSQL.

A service saves what it decided together with the tracking record of what it consumed,
in one transaction (`save_processed`), so a redelivered batch changes nothing. Its
notification log is the outbox that the relay publishes from.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

# psycopg's C build would block eventlet's loop while it waits for PostgreSQL; its
# select-based wait yields to other green threads (DESIGN §8). Set before psycopg loads,
# here, so that `tessera run` and `nameko run` both get it.
os.environ.setdefault("PSYCOPG_WAIT_FUNC", "wait_select")

# Imported up front: services start concurrently and a lazy import would race.
import eventsourcing.sqlite
from eventsourcing.application import (
    AggregateNotFoundError,
    Application,
    LRUCache,
    ProcessingEvent,
)
from eventsourcing.persistence import IntegrityError, ProcessRecorder, Tracking
from eventsourcing.utils import get_topic

from shared.config import Settings
from shared.privacy import (
    SECRET_ENV,
    KeyedHash,
    Privacy,
    PrivacyMapper,
    SubjectKeys,
    privacy_secret,
    rules_of,
)
from shared.readmodel import READ_MODEL_WRITES, ReadModel, Writes
from shared.subject_index import SubjectIndex, Terms

try:  # Only real mode needs PostgreSQL (and libpq); embedded mode must start without it.
    import eventsourcing.postgres  # noqa: F401
    import psycopg
except ImportError:  # pragma: no cover - depends on the machine
    psycopg = None

AGGREGATE_CACHE_SIZE = 200_000
RECENTLY_RECORDED = 256  # the relay is woken by each save: a short memory suffices


def store_env(service: str, settings: Settings) -> dict[str, str]:
    """The eventsourcing environment of one service: its own SQLite file or PG schema."""
    common = {
        # One active consumer per partition means one writer per aggregate: the cache
        # is the truth and needs neither fast-forwarding nor defensive copies.
        "AGGREGATE_CACHE_MAXSIZE": str(AGGREGATE_CACHE_SIZE),
        "AGGREGATE_CACHE_FASTFORWARD": "n",
        "DEEPCOPY_FROM_AGGREGATE_CACHE": "n",
        "CREATE_TABLE": "y",
    }
    if settings.database == "postgres":
        return common | {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": settings.postgres_dbname,
            "POSTGRES_HOST": settings.postgres_host,
            "POSTGRES_PORT": str(settings.postgres_port),
            "POSTGRES_USER": settings.postgres_user,
            "POSTGRES_PASSWORD": settings.postgres_password,
            "POSTGRES_SCHEMA": service,
            "POSTGRES_POOL_SIZE": "4",
            "POSTGRES_MAX_OVERFLOW": "4",
            "PROCESS_RECORDER_TOPIC": "shared.pg_recorder:BinaryInsertProcessRecorder",
        }
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return common | {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(settings.data_dir / f"{service}.sqlite"),
        "SQLITE_LOCK_TIMEOUT": "30",
        "PROCESS_RECORDER_TOPIC": "shared.readmodel:SQLiteReadModelRecorder",
    }


def postgres_conninfo(settings: Settings, dbname: str | None = None) -> str:
    conninfo = (
        f"host={settings.postgres_host} port={settings.postgres_port} "
        f"user={settings.postgres_user} dbname={dbname or settings.postgres_dbname}"
    )
    if settings.postgres_password:
        conninfo += f" password={settings.postgres_password}"
    return conninfo


@contextlib.contextmanager
def _created_concurrently():
    """Services starting together race to create the same database or schema: fine."""
    with contextlib.suppress(psycopg.errors.UniqueViolation,
                             psycopg.errors.DuplicateDatabase, psycopg.errors.DuplicateSchema):
        yield


def ensure_postgres_schema(settings: Settings, schema: str) -> None:
    with psycopg.connect(postgres_conninfo(settings), autocommit=True) as conn, \
            _created_concurrently():
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')


def ensure_postgres_database(settings: Settings) -> None:
    if psycopg is None:
        raise RuntimeError("PostgreSQL mode needs psycopg and libpq (apt-get install libpq5)")
    with psycopg.connect(postgres_conninfo(settings, "postgres"), autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (settings.postgres_dbname,)
        ).fetchone()
        if not exists:
            with _created_concurrently():
                conn.execute(f'CREATE DATABASE "{settings.postgres_dbname}"')


@contextlib.contextmanager
def _schema_lock(settings: Settings, schema: str):
    """Replicas and the migration Job starting together would create the same tables at
    once, and PostgreSQL's CREATE ... IF NOT EXISTS is not safe against itself (a unique
    violation in its catalog, "tuple concurrently updated"): one at a time, then."""
    with psycopg.connect(postgres_conninfo(settings), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"tessera.schema.{schema}",))
        yield  # the lock goes with the connection


def service_privacy_secret(settings: Settings) -> bytes:
    """The secret of keyed hashes (shared.privacy): TESSERA_PRIVACY_SECRET, the same on
    every replica. Without it, embedded mode generates one into the data directory and
    real mode keeps a generated one in the database, so that all replicas agree (weaker:
    whoever reads the database reads the secret; set the variable in production).
    Losing the secret makes every stored event read as erased: back it up."""
    if os.environ.get(SECRET_ENV) or settings.database != "postgres":
        return privacy_secret(settings.data_dir)
    ensure_postgres_database(settings)
    with psycopg.connect(postgres_conninfo(settings), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext('tessera.privacy_log'))")
        with _created_concurrently():
            conn.execute("CREATE SCHEMA IF NOT EXISTS privacy_log")
        conn.execute("CREATE TABLE IF NOT EXISTS privacy_log.secret "
                     "(id INTEGER PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute("INSERT INTO privacy_log.secret VALUES (1, %s) ON CONFLICT DO NOTHING",
                     (secrets.token_hex(32),))
        value = conn.execute("SELECT value FROM privacy_log.secret WHERE id = 1").fetchone()[0]
        conn.execute("SELECT pg_advisory_unlock(hashtext('tessera.privacy_log'))")
    return value.encode()


class ServiceApplication(Application):
    """Base of every service's application."""

    service_name = "service"
    # Topic of the service's privacy rules (services/<name>/privacy.py:RULES): which fields
    # of which stored events are whose personal data (shared.privacy).
    privacy_rules: str | None = None
    # Aggregates saved once and never loaded again (a stream's batches, one request's
    # record): kept in the aggregate cache they would fill it, and memory with it, for
    # nothing.
    written_once: tuple[type, ...] = ()

    def subject_terms(self) -> Terms:
        """Per event class the service's subject export reads, the terms (subject strings)
        an event is found by (shared.subject_index): none by default."""
        return {}

    def __init__(self, settings: Settings, env: dict[str, str] | None = None):
        self.settings = settings
        merged = store_env(self.service_name, settings) | (env or {})
        if settings.database == "postgres":
            ensure_postgres_database(settings)
            with _schema_lock(settings, self.service_name):
                ensure_postgres_schema(settings, self.service_name)
                super().__init__(env=merged)
        else:
            super().__init__(env=merged)
        self._install_privacy()
        self._install_subject_index()
        self._tracked: dict[str, int] = {}
        self._tracking_to_flush: dict[str, int] = {}
        # The events this process recorded last, by notification id: the outbox relay
        # publishes them without decoding (and decrypting) what it has just encoded.
        self._recently_recorded: dict[int, Any] = {}
        self._listeners: list[Callable[[], None]] = []

    def _install_privacy(self) -> None:
        """Per-subject encryption of personal data in stored events (shared.privacy)."""
        hashed = KeyedHash(service_privacy_secret(self.settings))
        schema = self.service_name if self.settings.database == "postgres" else None
        keys = SubjectKeys(self.process_recorder.datastore, schema, hashed)
        self.privacy = Privacy(hashed, keys, rules_of(type(self)))
        if self.privacy.rules:
            mapper = PrivacyMapper(self.mapper.transcoder, self.privacy.rules, keys,
                                   compressor=self.mapper.compressor)
            self.mapper = self.events.mapper = mapper
            if self.snapshots is not None:
                self.snapshots.mapper = mapper

    def _install_subject_index(self) -> None:
        table = self.process_recorder.events_table_name
        self.subject_index = SubjectIndex(self.read_model(), table, self.privacy.hashed,
                                          self.subject_terms())
        if self.subject_index:
            self.subject_index.backfill(self.process_recorder, self.mapper.to_domain_event)

    def events_of_subjects(self, terms: Iterable[str], *event_classes: type,
                           open_item: Callable[[dict[str, Any]], bool] | None = None
                           ) -> Iterator[Any]:
        """The stored events of these classes that the subject index finds by any of the
        terms, oldest first: what `scan` would yield of them, without reading the rest.
        `open_item`: decrypt only the batch items it accepts (PrivacyMapper)."""
        mapper = self.mapper
        for notification in self.subject_index.notifications(terms, *event_classes):
            if open_item is not None and isinstance(mapper, PrivacyMapper):
                yield mapper.to_domain_event(notification, open_item)
            else:
                yield mapper.to_domain_event(notification)

    def _record(self, processing: ProcessingEvent) -> list[Any]:
        pending = self.subject_index.pending(processing.events) if self.subject_index else []
        if pending:  # in the transaction of the events they index (shared.readmodel)
            writes = self.subject_index.pending_writes(pending)
            writes.extend(processing.saved_kwargs.get(READ_MODEL_WRITES))
            processing.saved_kwargs[READ_MODEL_WRITES] = writes
        recordings = self._record_sealed(processing)
        if pending:
            self.subject_index.saved(pending)
        cache = self.repository.cache
        if self.written_once and cache is not None:
            for aggregate_id, aggregate in processing.aggregates.items():
                if isinstance(aggregate, self.written_once):
                    with contextlib.suppress(KeyError):
                        cache.get(aggregate_id, evict=True)
        return recordings

    def _record_sealed(self, processing: ProcessingEvent) -> list[Any]:
        """New subject keys are written in the transaction of the events sealed with them."""
        if not isinstance(self.mapper, PrivacyMapper):
            return super()._record(processing)
        self.mapper.prefetch(processing.events)
        given = processing.saved_kwargs.get(READ_MODEL_WRITES)
        with self.mapper.subject_cipher.saving() as new_keys:
            # Filled while the events are mapped, read when the recorder runs the writes.
            writes = Writes([(self.privacy.keys.insert_statement(), new_keys,
                             self.privacy.keys.bulk_insert_statement())])
            writes.extend(given)
            processing.saved_kwargs[READ_MODEL_WRITES] = writes
            try:
                recordings = super()._record(processing)
            except Exception:
                self.privacy.keys.unsaved(new_keys)
                raise
        self.privacy.keys.saved(new_keys)
        return recordings

    # ---- erasure (shared.privacy) --------------------------------------------------------
    def shred_subjects(self, subjects: Iterable[str]) -> int:
        """Erasure's common part: the subjects' keys go, and every decrypted copy this
        process holds (cached aggregates, snapshots) with them. Returns the keys shredded."""
        return self.shred_subjects_by_hash(self.privacy.hashed(s) for s in subjects)

    def shred_subjects_by_hash(self, subject_hashes: Iterable[str]) -> int:
        """The same, by the subjects' keyed hashes (what the erasure log keeps)."""
        hashes = set(subject_hashes)
        shredded = self.privacy.keys.shred(hashes)
        self.subject_index.forget(hashes)
        self.purge_snapshots()
        self.flush_tracking()  # what is only remembered would be forgotten with the cache
        self.forget_cached_state()
        self._recently_recorded.clear()  # decrypted: the relay reads the store again
        return shredded

    def purge_snapshots(self) -> None:
        """Snapshots are decrypted state: all of them go (they are taken again)."""
        if self.snapshots is None:
            return
        recorder = self.snapshots.recorder
        table = recorder.events_table_name
        if self.settings.database == "postgres":
            table = f'"{recorder.datastore.schema}".{table}'
        with recorder.datastore.transaction(commit=True) as cursor:
            cursor.execute(f"DELETE FROM {table}")

    def compact_store(self) -> None:
        """SQLite keeps deleted rows' bytes in free pages and its WAL until rewritten:
        after an erasure the file is rewritten so nothing erased can be read back from it.
        (PostgreSQL's dead tuples are not readable through SQL; its VACUUM reclaims them.)

        VACUUM may renumber rowids of tables without an INTEGER PRIMARY KEY, and the
        notification ids of eventsourcing's SQLite table are rowids: SQLite's VACUUM
        copies tables whole (rowids kept), and we check that it did."""
        if self.settings.database != "sqlite":
            return
        import sqlite3

        path = self.settings.data_dir / f"{self.service_name}.sqlite"
        table = self.process_recorder.events_table_name
        fingerprint = (f"SELECT count(*), max(rowid), sum(rowid * (originator_version + "
                       f"length(topic))) FROM {table}")
        with contextlib.closing(sqlite3.connect(path, timeout=30, isolation_level=None)) as db:
            before = db.execute(fingerprint).fetchone()
            db.execute("PRAGMA secure_delete = ON")
            db.execute("VACUUM")
            after = db.execute(fingerprint).fetchone()
            if after != before:
                raise RuntimeError(f"VACUUM renumbered the notifications of {path}: "
                                   f"{before} became {after}")
            for _ in range(50):  # a reader still on an old snapshot holds the WAL back
                busy, *_ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if not busy:
                    return
                time.sleep(0.1)
            raise RuntimeError(f"{path}: the WAL could not be emptied after an erasure")

    def construct_recorder(self):
        # A process recorder keeps tracking records in the same transaction as events.
        return self.factory.process_recorder()

    @property
    def process_recorder(self) -> ProcessRecorder:
        recorder = self.recorder
        assert isinstance(recorder, ProcessRecorder)
        return recorder

    def _notify(self, recordings: list[Any]) -> None:
        super()._notify(recordings)
        recent = self._recently_recorded
        for recording in recordings:
            recent[recording.notification.id] = recording.domain_event
        if len(recent) > RECENTLY_RECORDED:
            for notification_id in sorted(recent)[:len(recent) - RECENTLY_RECORDED // 2]:
                recent.pop(notification_id, None)

    def recorded_event(self, notification: Any) -> Any:
        """The domain event of a notification: the one this process recorded, if it still
        remembers it, else decoded from the store."""
        found = self._recently_recorded.pop(notification.id, None)
        return found if found is not None else self.mapper.to_domain_event(notification)

    def read_model(self) -> ReadModel:
        """Tables beside the event store, in the same file or schema (shared.readmodel)."""
        schema = self.service_name if self.settings.database == "postgres" else None
        return ReadModel(self.process_recorder, schema)

    def on_saved(self, listener: Callable[[], None]) -> None:
        """Wakes the outbox relay as soon as something is saved, instead of on its next tick."""
        self._listeners.append(listener)

    def _wake(self) -> None:
        for listener in self._listeners:
            listener()

    def scan(self, *event_classes: type, page: int = 1000) -> Iterator[Any]:
        """Every stored event of the given classes, oldest first (for counts and read-backs)."""
        topics = [get_topic(cls) for cls in event_classes]
        start = 0
        while True:
            notifications = self.process_recorder.select_notifications(
                start=start, limit=page, topics=topics, inclusive_of_start=False)
            for notification in notifications:
                yield self.mapper.to_domain_event(notification)
            if len(notifications) < page:
                return
            start = notifications[-1].id

    def find(self, aggregate_id: Any) -> Any | None:
        """The aggregate with this id, or None if it was never saved."""
        try:
            return self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return None

    # ---- idempotent consumption -------------------------------------------------------
    def tracked_position(self, key: str) -> int:
        """Read from the store for every batch: another replica may have held this
        partition since we last did (and gone on past our remembered position). What we
        remember may be ahead: batches that changed nothing, not flushed yet."""
        stored = self.process_recorder.max_tracking_id(key) or 0
        self._tracked[key] = max(stored, self._tracked.get(key, 0))
        return self._tracked[key]

    def fresh_items(self, key: str, items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Items not yet processed: a redelivery, however re-batched, yields nothing new."""
        done = self.tracked_position(key)
        return [item for item in items if item["position"] > done]

    def save_processed(self, *aggregates: Any, tracking_key: str, position: int,
                       writes: Writes | None = None) -> None:
        """Save aggregates and the tracking record in one transaction, or nothing at all.

        A batch that changed nothing costs no transaction: its position is remembered and
        written by `flush_tracking` a moment later. Should the process die first, the batch
        is delivered again and again changes nothing. `writes` (read-model rows) go in the
        same transaction.
        """
        if not writes and not any(getattr(a, "pending_events", ()) for a in aggregates):
            self._tracked[tracking_key] = position
            self._tracking_to_flush[tracking_key] = position
            return
        self._tracking_to_flush.pop(tracking_key, None)
        processing = ProcessingEvent(Tracking(tracking_key, position))
        if writes:
            processing.saved_kwargs[READ_MODEL_WRITES] = writes
        self.save_collected(*aggregates, processing=processing)
        self._tracked[tracking_key] = position

    def save_collected(self, *aggregates: Any, processing: ProcessingEvent | None = None
                       ) -> list[Any]:
        """Save aggregates in one transaction, their events collected by hand:
        ProcessingEvent.collect_events checks each object against a runtime Protocol,
        which costs more than the rest of a small save."""
        processing = processing if processing is not None else ProcessingEvent()
        for aggregate in aggregates:
            processing.events.extend(aggregate.collect_events())
            processing.aggregates[aggregate.id] = aggregate
        try:
            recordings = self._record(processing)
        except Exception:
            self.forget_cached_state()
            raise
        self._take_snapshots(processing)
        self._notify(recordings)
        if recordings:
            self._wake()
        return recordings

    def flush_tracking(self) -> None:
        """Write the positions of batches that changed nothing (see `save_processed`)."""
        pending, self._tracking_to_flush = self._tracking_to_flush, {}
        for key, position in pending.items():
            with contextlib.suppress(IntegrityError):  # a later save already went past it
                self.process_recorder.insert_tracking(Tracking(key, position))

    def save_and_wake(self, *aggregates: Any, writes: Writes | None = None) -> None:
        try:
            recordings = self.save(*aggregates, **({READ_MODEL_WRITES: writes} if writes else {}))
        except Exception:
            self.forget_cached_state()
            raise
        if recordings:
            self._wake()

    def forget_cached_state(self) -> None:
        """After a failed save the cached aggregates may hold unsaved changes: drop them."""
        self._tracked.clear()
        cache = self.repository.cache
        if isinstance(cache, LRUCache):
            with cache.lock:
                cache.cache.clear()
                cache.clear()
                cache.full = False
