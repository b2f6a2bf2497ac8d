"""A tamper-evident history of every service: a hash chain over its stored events, sealed
by signed checkpoints (DESIGN §5, docs/audit.md).

What is chained is each event *as stored*: notification id, originator id, originator
version, topic and the state bytes exactly as they sit in the store (ciphertext, once PII
is encrypted per subject), never decoded content. Shredding a subject's key therefore
changes nothing that is chained, and verification needs no key but the public one.

    digest_i = SHA-256(sizes || originator id || topic || state), where sizes packs the
               lengths of originator id, topic, state and the version (big-endian)
    chain_0  = SHA-256("tessera.audit.v1" 0x00 service)
    chain_i  = SHA-256(chain_{i-1} || notification id_i || digest_i)

A *sealer* (one per service, the leader only in real mode) chains what was stored since
its last checkpoint and, in one transaction, writes a ledger row per event (notification
id, originator id and version, digest: what lets verification name the event that was
altered, deleted or moved) and a checkpoint (service, notification id, event count,
chain head, time) signed with Ed25519. The ledger is a diagnostic aid, never trusted:
only signed checkpoints are.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import heapq
import logging
import os
import sqlite3
import struct
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.config import Settings

log = logging.getLogger(__name__)

SERVICES = ("gateway", "identity", "contacts", "segments", "consent", "activation")
SEAL_BATCH = 10_000
READ_BATCH = 10_000
DEFAULT_SEAL_SECONDS = 10.0
EMBEDDED_SIGNING_KEY_FILE = "audit-signing-key.pem"
EMBEDDED_PUBLIC_KEY_FILE = "audit-public-key.txt"

_SIZES = struct.Struct(">IqII")  # originator id length, version, topic length, state length
_INT64 = struct.Struct(">q")
_CHECKPOINT_LABEL = b"tessera.audit.checkpoint.v1\n"


# ---- hashing --------------------------------------------------------------------------
def genesis(service: str) -> bytes:
    return hashlib.sha256(b"tessera.audit.v1\x00" + service.encode()).digest()


def event_digest(originator_id: str, version: int, topic: str, state: bytes) -> bytes:
    """The stored event's own fingerprint; its position is chained separately, so that an
    event moved elsewhere is recognised as moved. The lengths come first, so no two
    events encode alike."""
    oid, top = originator_id.encode(), topic.encode()
    return hashlib.sha256(_SIZES.pack(len(oid), version, len(top), len(state))
                          + oid + top + state).digest()


def next_link(previous: bytes, notification_id: int, digest: bytes) -> bytes:
    return hashlib.sha256(previous + _INT64.pack(notification_id) + digest).digest()


# ---- keys -----------------------------------------------------------------------------
def key_id(public_key: Ed25519PublicKey) -> str:
    """A short name for a public key: the first 16 hex digits of SHA-256 of its raw bytes."""
    return hashlib.sha256(public_bytes(public_key)).hexdigest()[:16]


def public_bytes(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_text(public_key: Ed25519PublicKey) -> str:
    """How a public key is written in TESSERA_AUDIT_PUBLIC_KEYS: base64 of its 32 bytes."""
    return base64.b64encode(public_bytes(public_key)).decode()


def signing_key_pem(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())


def parse_signing_key(text: str, *, source: str) -> Ed25519PrivateKey:
    """A PKCS#8 PEM Ed25519 key, or base64 of its 32-byte seed."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode(), password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError("not an Ed25519 key")
            return key
        return Ed25519PrivateKey.from_private_bytes(_b64_32(text))
    except ValueError as error:
        raise ValueError(f"{source}: not an Ed25519 private key (PKCS#8 PEM, or base64 of "
                         f"its 32-byte seed): {error}") from None


def parse_public_keys(text: str, *, source: str) -> dict[str, Ed25519PublicKey]:
    """Base64 raw Ed25519 public keys, separated by commas or lines; '#' starts a comment."""
    keys = {}
    for line in text.splitlines():
        for chunk in line.split("#", 1)[0].split(","):
            if chunk.strip():
                try:
                    key = Ed25519PublicKey.from_public_bytes(_b64_32(chunk.strip()))
                except ValueError as error:
                    raise ValueError(f"{source}: '{chunk.strip()}' is not a base64 Ed25519 "
                                     f"public key (32 bytes): {error}") from None
                keys[key_id(key)] = key
    return keys


def _b64_32(text: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise ValueError("not base64") from None
    if len(raw) != 32:
        raise ValueError(f"{len(raw)} bytes instead of 32")
    return raw


def _env_or_file(name: str) -> tuple[str, str] | None:
    """(value, where it came from) of NAME, or of the file NAME_FILE names."""
    value = os.environ.get(name, "").strip()
    if value:
        return value, name
    path = os.environ.get(f"{name}_FILE", "").strip()
    if path:
        try:
            return Path(path).read_text(), f"{name}_FILE ({path})"
        except OSError as error:
            raise ValueError(f"{name}_FILE: cannot read {path}: {error.strerror}") from None
    return None


def configured_signing_key(settings: Settings) -> Ed25519PrivateKey | None:
    """TESSERA_AUDIT_SIGNING_KEY(_FILE); embedded mode without one gets a key generated
    once into its data directory. Real mode without one signs nothing (and says so)."""
    found = _env_or_file("TESSERA_AUDIT_SIGNING_KEY")
    if found is not None:
        return parse_signing_key(found[0], source=found[1])
    if settings.database == "sqlite":
        return embedded_signing_key(settings.data_dir)
    return None


def embedded_signing_key(data_dir: Path) -> Ed25519PrivateKey:
    """The data directory's own key, created on first use (mode 0600) with its public key
    beside it. Six services starting together: the first link wins, the others read it."""
    path = data_dir / EMBEDDED_SIGNING_KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        draft = data_dir / f".{EMBEDDED_SIGNING_KEY_FILE}.{uuid.uuid4().hex}"
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(signing_key_pem(key))
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
        draft.unlink()
    key = parse_signing_key(path.read_text(), source=str(path))
    public = data_dir / EMBEDDED_PUBLIC_KEY_FILE
    if not public.exists():
        public.write_text(public_key_text(key.public_key()) + "\n")
    return key


def trusted_public_keys(settings: Settings) -> tuple[dict[str, Ed25519PublicKey], str]:
    """The keys verification accepts, and where they came from. TESSERA_AUDIT_PUBLIC_KEYS
    (_FILE) first: an auditor needs no signing key. Else the configured signing key's own;
    else, embedded, the public key written beside the data."""
    found = _env_or_file("TESSERA_AUDIT_PUBLIC_KEYS")
    if found is not None:
        keys = parse_public_keys(found[0], source=found[1])
        if not keys:
            raise ValueError(f"{found[1]}: no public key in it")
        return keys, found[1]
    signing = _env_or_file("TESSERA_AUDIT_SIGNING_KEY")
    if signing is not None:
        key = parse_signing_key(signing[0], source=signing[1]).public_key()
        return {key_id(key): key}, f"the public half of {signing[1]}"
    public = settings.data_dir / EMBEDDED_PUBLIC_KEY_FILE
    if settings.database == "sqlite" and public.exists():
        return parse_public_keys(public.read_text(), source=str(public)), (
            f"{public}, beside the data it vouches for: set TESSERA_AUDIT_PUBLIC_KEYS "
            "to verify against a key kept apart")
    raise ValueError("no public key to verify with: set TESSERA_AUDIT_PUBLIC_KEYS "
                     "(or TESSERA_AUDIT_PUBLIC_KEYS_FILE)")


# ---- checkpoints ----------------------------------------------------------------------
@dataclass(frozen=True)
class Checkpoint:
    service: str
    notification_id: int  # the last event it covers
    event_count: int  # how many events, from the first, it covers
    chain_head: bytes
    created_at: str  # ISO 8601, UTC
    key_id: str
    signature: bytes
    number: int | None = None  # its row in the checkpoint table (None: from an anchor file)

    def message(self) -> bytes:
        return message_of(self.service, self.notification_id, self.event_count,
                          self.chain_head, self.created_at)

    def where(self) -> str:
        name = f"checkpoint #{self.number}" if self.number is not None else "anchored checkpoint"
        return (f"{name} (up to notification {self.notification_id}, "
                f"{self.event_count} events, {self.created_at})")

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "notification_id": self.notification_id,
                "event_count": self.event_count, "chain_head": self.chain_head.hex(),
                "created_at": self.created_at, "key_id": self.key_id,
                "signature": base64.b64encode(self.signature).decode()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Checkpoint:
        return cls(service=str(data["service"]), notification_id=int(data["notification_id"]),
                   event_count=int(data["event_count"]),
                   chain_head=bytes.fromhex(data["chain_head"]),
                   created_at=str(data["created_at"]), key_id=str(data["key_id"]),
                   signature=base64.b64decode(data["signature"]))


def message_of(service: str, notification_id: int, event_count: int, chain_head: bytes,
               created_at: str) -> bytes:
    return _CHECKPOINT_LABEL + "\n".join(
        (service, str(notification_id), str(event_count), chain_head.hex(), created_at)
    ).encode()


def sign_checkpoint(key: Ed25519PrivateKey, service: str, notification_id: int,
                    event_count: int, chain_head: bytes, created_at: str | None = None
                    ) -> Checkpoint:
    created_at = created_at or datetime.now(UTC).isoformat(timespec="microseconds")
    signature = key.sign(message_of(service, notification_id, event_count, chain_head,
                                    created_at))
    return Checkpoint(service, notification_id, event_count, chain_head, created_at,
                      key_id(key.public_key()), signature)


# ---- where a service's history is kept ------------------------------------------------
class StoredEvent(NamedTuple):
    notification_id: int
    originator_id: str
    version: int
    topic: str
    state: bytes


class LedgerRow(NamedTuple):
    notification_id: int
    originator_id: str
    version: int
    digest: bytes


class MissingStore(Exception):
    """The service has no event store here (no SQLite file, no PostgreSQL schema)."""


class AuditStore:
    """One service's events, ledger and checkpoints: its SQLite file or PostgreSQL schema.

    SQL is written once with `%s` placeholders and `{events}`, `{ledger}`,
    `{checkpoints}` table names."""

    placeholder = "%s"

    def __init__(self, service: str):
        self.service = service
        self.tables: dict[str, str] = {}

    def sql(self, statement: str) -> str:
        return statement.format(**self.tables).replace("%s", self.placeholder)

    # Implemented per backend.
    def create_tables(self) -> None: raise NotImplementedError
    def has_audit_tables(self) -> bool: raise NotImplementedError
    def _rows(self, statement: str, params: Sequence[Any]) -> Iterator[tuple]:
        raise NotImplementedError
    def _append(self, previous: int, ledger: list[LedgerRow], checkpoint: Checkpoint
                ) -> bool: raise NotImplementedError
    def close(self) -> None: raise NotImplementedError

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """One consistent view of events, ledger and checkpoints, for verification."""
        yield

    def events(self, after: int = 0, limit: int | None = None) -> Iterator[tuple]:
        """Plain rows shaped as StoredEvent, in notification order (the hot path)."""
        statement = ("SELECT notification_id, {originator_id}, originator_version, topic, "
                     "state FROM {events} WHERE notification_id > %s ORDER BY notification_id")
        params: list[Any] = [after]
        if limit is not None:
            statement += " LIMIT %s"
            params.append(limit)
        yield from self._rows(self.sql(statement), params)

    def ledger(self, after: int = 0) -> Iterator[tuple]:
        """Plain rows shaped as LedgerRow, in notification order."""
        statement = ("SELECT notification_id, originator_id, originator_version, digest "
                     "FROM {ledger} WHERE notification_id > %s ORDER BY notification_id")
        yield from self._rows(self.sql(statement), (after,))

    def positions_of(self, originator_id: str, version: int) -> list[int]:
        """The notification ids at which the store keeps this event (one, or none)."""
        statement = ("SELECT notification_id FROM {events} "
                     "WHERE originator_id = %s AND originator_version = %s")
        return [row[0] for row in self._rows(self.sql(statement), (originator_id, version))]

    def ledger_position_of(self, originator_id: str, version: int) -> int | None:
        statement = ("SELECT notification_id FROM {ledger} "
                     "WHERE originator_id = %s AND originator_version = %s")
        for (nid,) in self._rows(self.sql(statement), (originator_id, version)):
            return nid
        return None

    def checkpoints(self, from_position: int = 0) -> Iterator[Checkpoint]:
        """In chain order, streamed: a long-running service has millions of them.
        `from_position`: only those ending at or after this notification id."""
        statement = ("SELECT id, notification_id, event_count, chain_head, created_at, key_id, "
                     "signature FROM {checkpoints} WHERE notification_id >= %s "
                     "ORDER BY notification_id, event_count, id")
        for number, nid, count, head, created, kid, sig in self._rows(self.sql(statement),
                                                                      (from_position,)):
            yield Checkpoint(self.service, nid, count, bytes(head), created, kid, bytes(sig),
                             number)

    def sealed_to(self) -> int:
        """The notification id the newest checkpoint ends at (0: none)."""
        statement = "SELECT max(notification_id) FROM {checkpoints}"
        for (nid,) in self._rows(self.sql(statement), ()):
            return nid or 0
        return 0

    def latest_checkpoint(self) -> Checkpoint | None:
        statement = ("SELECT id, notification_id, event_count, chain_head, created_at, key_id, "
                     "signature FROM {checkpoints} ORDER BY notification_id DESC, id DESC "
                     "LIMIT 1")
        for number, nid, count, head, created, kid, sig in self._rows(self.sql(statement), ()):
            return Checkpoint(self.service, nid, count, bytes(head), created, kid, bytes(sig),
                              number)
        return None

    def append(self, previous: int, ledger: list[LedgerRow], checkpoint: Checkpoint) -> bool:
        """Write ledger rows and their checkpoint in one transaction, only if the latest
        checkpoint still ends at `previous` (else another sealer got there: False)."""
        return self._append(previous, ledger, checkpoint)


_LEDGER_COLUMNS = "(notification_id, originator_id, originator_version, digest)"
_CHECKPOINT_COLUMNS = "(notification_id, event_count, chain_head, created_at, key_id, signature)"


class SQLiteAuditStore(AuditStore):
    placeholder = "?"

    def __init__(self, service: str, path: Path, *, create: bool):
        super().__init__(service)
        if not path.exists():
            raise MissingStore(f"no event store at {path}")
        # Verification opens the file read-only: it must never change what it checks.
        uri = f"file:{path}" + ("" if create else "?mode=ro")
        self.connection = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None,
                                          check_same_thread=False)
        self.tables = {"events": "stored_events", "ledger": "audit_ledger",
                       "checkpoints": "audit_checkpoints", "originator_id": "originator_id"}
        if create:
            self.create_tables()

    def create_tables(self) -> None:
        self.connection.executescript(
            "CREATE TABLE IF NOT EXISTS audit_ledger (notification_id INTEGER PRIMARY KEY, "
            "originator_id TEXT NOT NULL, originator_version INTEGER NOT NULL, "
            "digest BLOB NOT NULL);"
            "CREATE TABLE IF NOT EXISTS audit_checkpoints (id INTEGER PRIMARY KEY "
            "AUTOINCREMENT, notification_id INTEGER NOT NULL, event_count INTEGER NOT NULL, "
            "chain_head BLOB NOT NULL, created_at TEXT NOT NULL, key_id TEXT NOT NULL, "
            "signature BLOB NOT NULL);"
            "CREATE INDEX IF NOT EXISTS audit_checkpoints_position "
            "ON audit_checkpoints (notification_id);")

    def has_audit_tables(self) -> bool:
        names = {row[0] for row in self.connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        return {"audit_ledger", "audit_checkpoints"} <= names

    def has_events_table(self) -> bool:
        return self.connection.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'stored_events'").fetchone() is not None

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        self.connection.execute("BEGIN")
        try:
            yield
        finally:
            self.connection.execute("ROLLBACK")

    def _rows(self, statement: str, params: Sequence[Any]) -> Iterator[tuple]:
        cursor = self.connection.execute(statement, tuple(params))
        while rows := cursor.fetchmany(READ_BATCH):
            yield from rows

    def events(self, after: int = 0, limit: int | None = None) -> Iterator[tuple]:
        # In SQLite the notification id of an event is the rowid of its row.
        statement = ("SELECT rowid, originator_id, originator_version, topic, state "
                     "FROM stored_events WHERE rowid > ? ORDER BY rowid")
        params: list[Any] = [after]
        if limit is not None:
            statement += " LIMIT ?"
            params.append(limit)
        cursor = self.connection.execute(statement, params)
        while rows := cursor.fetchmany(READ_BATCH):
            yield from rows

    def positions_of(self, originator_id: str, version: int) -> list[int]:
        return [row[0] for row in self.connection.execute(
            "SELECT rowid FROM stored_events WHERE originator_id = ? "
            "AND originator_version = ?", (originator_id, version))]

    def _append(self, previous: int, ledger: list[LedgerRow], checkpoint: Checkpoint) -> bool:
        connection = self.connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            latest = connection.execute(
                "SELECT MAX(notification_id) FROM audit_checkpoints").fetchone()[0] or 0
            if latest != previous:
                connection.execute("ROLLBACK")
                return False
            connection.executemany(
                f"INSERT INTO audit_ledger {_LEDGER_COLUMNS} VALUES (?, ?, ?, ?)",
                [(r.notification_id, r.originator_id, r.version, r.digest) for r in ledger])
            connection.execute(
                f"INSERT INTO audit_checkpoints {_CHECKPOINT_COLUMNS} VALUES (?, ?, ?, ?, ?, ?)",
                _checkpoint_row(checkpoint))
            connection.execute("COMMIT")
            return True
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.connection.close()


class PostgresAuditStore(AuditStore):
    def __init__(self, service: str, settings: Settings, *, create: bool):
        super().__init__(service)
        import psycopg

        from shared.store import postgres_conninfo

        self.connection = psycopg.connect(postgres_conninfo(settings) + " connect_timeout=10",
                                          autocommit=True)
        exists = self.connection.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s "
            "AND table_name = %s", (service, f"{service}_events")).fetchone()
        if not exists:
            self.connection.close()
            raise MissingStore(f"no event store in schema \"{service}\" of database "
                               f"{settings.postgres_dbname}")
        self.tables = {name: f'"{service}".{table}' for name, table in (
            ("events", f'"{service}_events"'), ("ledger", "audit_ledger"),
            ("checkpoints", "audit_checkpoints"))}
        self.tables["originator_id"] = "originator_id::text"  # a uuid column here
        self._cursors = 0
        if create:
            self.create_tables()

    def create_tables(self) -> None:
        # Replicas starting together: one at a time, as for the event store (shared.store).
        with self.connection.transaction():
            self.connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                                    (f"tessera.schema.{self.service}",))
            self.connection.execute(self.sql(
                "CREATE TABLE IF NOT EXISTS {ledger} (notification_id bigint PRIMARY KEY, "
                "originator_id text NOT NULL, originator_version bigint NOT NULL, "
                "digest bytea NOT NULL)"))
            self.connection.execute(self.sql(
                "CREATE TABLE IF NOT EXISTS {checkpoints} (id bigserial PRIMARY KEY, "
                "notification_id bigint NOT NULL, event_count bigint NOT NULL, "
                "chain_head bytea NOT NULL, created_at text NOT NULL, key_id text NOT NULL, "
                "signature bytea NOT NULL)"))
            self.connection.execute(self.sql(
                "CREATE INDEX IF NOT EXISTS audit_checkpoints_position "
                "ON {checkpoints} (notification_id)"))

    def has_audit_tables(self) -> bool:
        row = self.connection.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s "
            "AND table_name IN ('audit_ledger', 'audit_checkpoints')", (self.service,)
        ).fetchone()
        return row[0] == 2

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        self.connection.autocommit = False
        self.connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            yield
        finally:
            self.connection.rollback()
            self.connection.autocommit = True

    def _rows(self, statement: str, params: Sequence[Any]) -> Iterator[tuple]:
        if self.connection.autocommit:  # outside a snapshot: a plain query
            yield from self.connection.execute(statement, tuple(params), binary=True).fetchall()
            return
        # Inside one: a server-side cursor, so millions of rows stream in batches.
        self._cursors += 1
        with self.connection.cursor(name=f"audit_{self._cursors}", binary=True) as cursor:
            cursor.itersize = READ_BATCH
            cursor.execute(statement, tuple(params))
            yield from cursor

    def positions_of(self, originator_id: str, version: int) -> list[int]:
        statement = self.sql("SELECT notification_id FROM {events} "
                             "WHERE originator_id = %s::uuid AND originator_version = %s")
        return [row[0] for row in self._rows(statement, (originator_id, version))]

    def _append(self, previous: int, ledger: list[LedgerRow], checkpoint: Checkpoint) -> bool:
        with self.connection.transaction():
            self.connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                                    (f"tessera.audit.seal.{self.service}",))
            latest = self.connection.execute(self.sql(
                "SELECT max(notification_id) FROM {checkpoints}")).fetchone()[0] or 0
            if latest != previous:
                return False
            self.connection.execute(self.sql(
                f"INSERT INTO {{ledger}} {_LEDGER_COLUMNS} SELECT * FROM "
                "unnest(%b::bigint[], %b::text[], %b::bigint[], %b::bytea[])"), (
                [r.notification_id for r in ledger], [r.originator_id for r in ledger],
                [r.version for r in ledger], [r.digest for r in ledger]))
            self.connection.execute(self.sql(
                f"INSERT INTO {{checkpoints}} {_CHECKPOINT_COLUMNS} "
                "VALUES (%s, %s, %s, %s, %s, %s)"), _checkpoint_row(checkpoint))
        return True

    def close(self) -> None:
        self.connection.close()


def _checkpoint_row(checkpoint: Checkpoint) -> tuple:
    return (checkpoint.notification_id, checkpoint.event_count, checkpoint.chain_head,
            checkpoint.created_at, checkpoint.key_id, checkpoint.signature)


def open_audit_store(settings: Settings, service: str, *, create: bool = False) -> AuditStore:
    """`create`: the sealer's store (creates the audit tables); else read-only, for checks."""
    if settings.database == "postgres":
        return PostgresAuditStore(service, settings, create=create)
    return SQLiteAuditStore(service, settings.data_dir / f"{service}.sqlite", create=create)


# ---- sealing --------------------------------------------------------------------------
class Sealer:
    """Chains what a service stored since its last checkpoint and signs a new one."""

    def __init__(self, store: AuditStore, signing_key: Ed25519PrivateKey,
                 batch: int = SEAL_BATCH):
        self.store = store
        self.signing_key = signing_key
        self.batch = batch

    MAX_RACES = 10

    def seal(self) -> int:
        """Seal everything stored so far; returns how many events it chained."""
        sealed = races = 0
        while races < self.MAX_RACES:
            latest = self.store.latest_checkpoint()
            after, count, chain = ((latest.notification_id, latest.event_count,
                                    latest.chain_head) if latest is not None
                                   else (0, 0, genesis(self.store.service)))
            events = list(map(StoredEvent._make,
                              self.store.events(after=after, limit=self.batch)))
            if not events:
                return sealed
            ledger = []
            for event in events:
                digest = event_digest(event.originator_id, event.version, event.topic,
                                      event.state)
                chain = next_link(chain, event.notification_id, digest)
                ledger.append(LedgerRow(event.notification_id, event.originator_id,
                                        event.version, digest))
            checkpoint = sign_checkpoint(self.signing_key, self.store.service,
                                         events[-1].notification_id, count + len(events), chain)
            if self.store.append(after, ledger, checkpoint):
                sealed += len(events)
            else:  # another sealer (a replica losing leadership) got there first
                races += 1
        return sealed


class SealingTimer:
    """Seals a service's history every few seconds, where this process leads (the same
    rule as the outbox relay: one replica at a time in real mode)."""

    def __init__(self, settings: Settings, service: str, leadership: Any = None):
        from shared.leadership import AdvisoryLockLeadership, SoleProcess

        self.settings = settings
        self.service = service
        self.seconds = seal_seconds()
        self.leadership = (leadership if leadership is not None
                           else AdvisoryLockLeadership(settings, f"tessera.audit.{service}")
                           if settings.database == "postgres" else SoleProcess())
        self.signing_key = configured_signing_key(settings)
        self._sealer: Sealer | None = None
        self._stopping = threading.Event()
        if self.signing_key is None:
            log.error("%s: TESSERA_AUDIT_SIGNING_KEY is not set, so its history is not "
                      "sealed and `tessera audit verify` will fail (docs/audit.md)", service)

    def seal_once(self) -> int:
        if self.signing_key is None or not self.leadership.held():
            return 0
        if self._sealer is None:
            store = open_audit_store(self.settings, self.service, create=True)
            self._sealer = Sealer(store, self.signing_key)
        try:
            return self._sealer.seal()
        except Exception:
            self._drop()  # a broken connection: open a new one next time
            raise

    def run(self) -> None:
        while not self._stopping.wait(self.seconds):
            try:
                self.seal_once()
            except Exception:
                log.exception("could not seal the history of %s; will try again",
                              self.service)

    def stop(self) -> None:
        """Seal what is left (a replica going away leaves nothing unsealed), then close."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        try:
            self.seal_once()
        except Exception:
            log.exception("could not seal the history of %s on shutdown", self.service)
        finally:
            self._drop()
            self.leadership.release()

    def _drop(self) -> None:
        if self._sealer is not None:
            with contextlib.suppress(Exception):
                self._sealer.store.close()
        self._sealer = None


def seal_seconds() -> float:
    raw = os.environ.get("TESSERA_AUDIT_SEAL_SECONDS", "").strip()
    if not raw:
        return DEFAULT_SEAL_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        raise ValueError(f"TESSERA_AUDIT_SEAL_SECONDS: '{raw}' must be a positive number")
    return seconds


# ---- verifying ------------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    """One thing wrong, and where: `kind` is altered, deleted, reordered, inserted,
    tail_cut, chain_mismatch, bad_signature, unknown_key, no_checkpoint."""

    kind: str
    message: str
    notification_id: int | None = None
    originator_id: str | None = None
    version: int | None = None


@dataclass
class ServiceReport:
    service: str
    events: int = 0
    checkpoints: int = 0
    unsealed: int = 0  # stored after the latest checkpoint: not vouched for yet
    findings: list[Finding] = field(default_factory=list)
    unlisted: int = 0  # findings past the first MAX_FINDINGS, counted only
    missing: str | None = None  # why there is nothing to check
    # Incremental runs (`start`): the signed checkpoint the run trusted as verified before
    # and went on from; what was hashed this time; the last checkpoint it verified.
    started_from: Checkpoint | None = None
    hashed: int = 0
    verified_to: Checkpoint | None = None

    @property
    def ok(self) -> bool:
        return not self.findings and self.missing is None


def _chain_order(checkpoint: Checkpoint) -> tuple[int, int]:
    return checkpoint.notification_id, checkpoint.event_count


def _ledger_row(row: tuple | None) -> LedgerRow | None:
    return None if row is None else LedgerRow._make(row)


def _event_name(originator_id: str, version: int) -> str:
    return f"originator {originator_id} version {version}"


class _Verification:
    """One pass over a service's events in notification order, against its ledger (to name
    the place) and its signed checkpoints (what proves anything)."""

    MAX_FINDINGS = 20
    MAX_LOOKUPS = 10

    def __init__(self, store: AuditStore, trusted: dict[str, Ed25519PublicKey],
                 anchors: Iterable[Checkpoint], start: Checkpoint | None = None):
        self.store = store
        self.trusted = trusted
        self.report = ServiceReport(store.service)
        self.anchors = [a for a in anchors if a.service == store.service]
        self.lookups = 0
        # Only a checkpoint whose signature holds can be gone on from: a start point
        # edited where it is kept would otherwise choose which history is checked.
        self.start = start if start is not None and self._trusted(start) else None

    def add(self, finding: Finding) -> None:
        if len(self.report.findings) < self.MAX_FINDINGS:
            self.report.findings.append(finding)
        else:
            self.report.unlisted += 1

    def run(self) -> ServiceReport:
        report = self.report
        if not self.store.has_audit_tables():
            stored = sum(1 for _ in self.store.events())
            report.events = report.unsealed = stored
            if stored or self.anchors:
                self.add(Finding("no_checkpoint", f"no audit tables, while {stored} events are "
                                 "stored: this history was never sealed, or its seals were "
                                 "removed"))
            return report
        start = self.start
        after = (0, 0) if start is None else _chain_order(start)
        in_order = heapq.merge(
            (c for c in self.store.checkpoints(after[0]) if _chain_order(c) > after),
            sorted((a for a in self.anchors if _chain_order(a) > after), key=_chain_order),
            key=_chain_order)
        sealed_to = max([self.store.sealed_to(), *(a.notification_id for a in self.anchors)])
        report.started_from = start
        self._walk(self._signed(in_order), sealed_to)
        return report

    def _trusted(self, checkpoint: Checkpoint) -> bool:
        key = self.trusted.get(checkpoint.key_id)
        if key is None or checkpoint.service != self.store.service:
            return False
        try:
            key.verify(checkpoint.signature, checkpoint.message())
        except InvalidSignature:
            return False
        return True

    def _signed(self, checkpoints: Iterable[Checkpoint]) -> Iterator[Checkpoint]:
        """Those whose signature holds under a trusted key; the others are findings (a
        chain recomputed without the signing key ends here)."""
        for checkpoint in checkpoints:
            key = self.trusted.get(checkpoint.key_id)
            if key is None:
                self.add(Finding("unknown_key", f"{checkpoint.where()} is signed by key "
                                 f"{checkpoint.key_id}, which is not a trusted key: "
                                 "the chain was sealed by someone without the signing key",
                                 checkpoint.notification_id))
                continue
            try:
                key.verify(checkpoint.signature, checkpoint.message())
            except InvalidSignature:
                self.add(Finding("bad_signature", f"{checkpoint.where()} has a signature "
                                 f"that key {checkpoint.key_id} did not make: the "
                                 "checkpoint was forged or edited", checkpoint.notification_id))
                continue
            self.report.checkpoints += 1
            yield checkpoint

    def _walk(self, checkpoints: Iterator[Checkpoint], sealed_to: int) -> None:
        report = self.report
        upcoming = next(checkpoints, None)
        chain, count, last = genesis(self.store.service), 0, 0
        if self.start is not None:
            chain, count, last = (self.start.chain_head, self.start.event_count,
                                  self.start.notification_id)
        ledger = self.store.ledger(after=last)
        entry = next(ledger, None)
        sha256, pack_sizes, pack_id = hashlib.sha256, _SIZES.pack, _INT64.pack
        unsealed = hashed = 0
        for row in self.store.events(after=last):
            nid, oid, version, topic, state = row
            oid_bytes, topic_bytes = oid.encode(), topic.encode()
            digest = sha256(pack_sizes(len(oid_bytes), version, len(topic_bytes), len(state))
                            + oid_bytes + topic_bytes + state).digest()
            if entry is not None and entry[0] == nid and entry[3] == digest:
                entry = next(ledger, None)  # the usual case: stored as chained
            else:
                entry = self._compare(StoredEvent._make(row), digest, entry, ledger, sealed_to)
            while upcoming is not None and upcoming.notification_id < nid:
                chain, count = self._check(upcoming, chain, count, last, tail=False)
                upcoming = next(checkpoints, None)
            chain = sha256(chain + pack_id(nid) + digest).digest()
            count += 1
            hashed += 1
            last = nid
            if nid > sealed_to:
                unsealed += 1
        report.unsealed = unsealed
        report.hashed = hashed
        report.events = count
        first_missing = _ledger_row(entry)
        ledger.close()
        while upcoming is not None:
            chain, count = self._check(upcoming, chain, count, last,
                                       first_missing=first_missing)
            upcoming = next(checkpoints, None)
        if first_missing is not None and not any(f.kind == "tail_cut" for f in report.findings):
            self._deleted(first_missing, later_event=None)
        if report.events and not report.checkpoints and not report.findings \
                and self.start is None:  # going on from one is going on from a checkpoint
            self.add(Finding("no_checkpoint", f"{report.events} events are stored and no "
                             "checkpoint signed by a trusted key vouches for them"))

    def _compare(self, event: StoredEvent, digest: bytes, entry: LedgerRow | None,
                 ledger: Iterator[LedgerRow], sealed_to: int) -> LedgerRow | None:
        """The stored event differs from the ledger's next entry: say how. Returns the
        ledger entry to compare the next event with."""
        nid = event.notification_id
        entry = _ledger_row(entry)
        while entry is not None and entry.notification_id < nid:
            self._deleted(entry, later_event=event)
            entry = _ledger_row(next(ledger, None))
        if entry is not None and entry.notification_id == nid:
            if entry.digest != digest:
                self._differs(event, entry)
            return next(ledger, None)
        if nid <= sealed_to:
            self.add(Finding("inserted", f"an event at notification {nid} "
                             f"({_event_name(event.originator_id, event.version)}) was "
                             "never chained: it was inserted after sealing", nid,
                             event.originator_id, event.version))
        return entry

    def _check(self, checkpoint: Checkpoint, chain: bytes, count: int, last: int,
               first_missing: LedgerRow | None = None, tail: bool = True
               ) -> tuple[bytes, int]:
        """Compare the recomputed chain with a signed checkpoint; after a mismatch, carry on
        from the checkpoint (it is signed), so later, independent damage is found too."""
        if chain == checkpoint.chain_head and count == checkpoint.event_count:
            if not self.report.findings:
                self.report.verified_to = checkpoint
            return chain, count
        if tail and checkpoint.notification_id > last and count < checkpoint.event_count:
            if any(f.kind == "tail_cut" for f in self.report.findings):
                return checkpoint.chain_head, checkpoint.event_count
            missing = checkpoint.event_count - count
            named = (f"; the first missing one was at notification "
                     f"{first_missing.notification_id} "
                     f"({_event_name(first_missing.originator_id, first_missing.version)})"
                     if first_missing is not None else "")
            self.add(Finding(
                "tail_cut", f"tail cut off: the store ends at notification {last}, but signed "
                f"{checkpoint.where()} vouches for {missing} more event(s){named}",
                first_missing.notification_id if first_missing else last + 1,
                first_missing.originator_id if first_missing else None,
                first_missing.version if first_missing else None))
        else:
            self.add(Finding(
                "chain_mismatch", f"the chain recomputed from the stored events ({count} "
                f"events up to notification {min(last, checkpoint.notification_id)}) does not "
                f"match signed {checkpoint.where()}: an event at or before notification "
                f"{checkpoint.notification_id} was altered, deleted, inserted or moved",
                checkpoint.notification_id))
        return checkpoint.chain_head, checkpoint.event_count

    def _deleted(self, entry: LedgerRow, later_event: StoredEvent | None) -> None:
        where = _event_name(entry.originator_id, entry.version)
        if later_event is None:
            self.add(Finding("tail_cut", f"tail cut off: the chained events from notification "
                             f"{entry.notification_id} ({where}) on are gone from the store",
                             entry.notification_id, entry.originator_id, entry.version))
            return
        moved_to = self._position_of(entry)
        if moved_to is not None:
            return  # reported where it now sits (as reordered)
        self.add(Finding("deleted", f"deleted event: notification {entry.notification_id} "
                         f"({where}) was chained and is no longer stored",
                         entry.notification_id, entry.originator_id, entry.version))

    def _position_of(self, entry: LedgerRow) -> int | None:
        """Where, if anywhere, the store now keeps this chained event (under another id)."""
        if self.lookups >= self.MAX_LOOKUPS:
            return None
        self.lookups += 1
        for position in self.store.positions_of(entry.originator_id, entry.version):
            if position != entry.notification_id:
                return position
        return None

    def _differs(self, event: StoredEvent, entry: LedgerRow) -> None:
        nid = event.notification_id
        stored, chained = (_event_name(event.originator_id, event.version),
                           _event_name(entry.originator_id, entry.version))
        if (event.originator_id, event.version) == (entry.originator_id, entry.version):
            self.add(Finding("altered", f"altered event: the stored bytes of notification "
                             f"{nid} ({stored}) are not those that were chained", nid,
                             event.originator_id, event.version))
            return
        chained_at = (self.store.ledger_position_of(event.originator_id, event.version)
                      if self.lookups < self.MAX_LOOKUPS else None)
        self.lookups += 1
        if chained_at is not None:
            self.add(Finding("reordered", f"reordered events: notification {nid} now holds "
                             f"{stored}, which was chained at notification {chained_at}, in "
                             f"place of {chained}", nid, event.originator_id, event.version))
        else:
            self.add(Finding("altered", f"altered event: notification {nid} holds {stored}, "
                             f"never chained, in place of {chained}", nid,
                             event.originator_id, event.version))


def verify_store(store: AuditStore, trusted: dict[str, Ed25519PublicKey],
                 anchors: Iterable[Checkpoint] = (), start: Checkpoint | None = None
                 ) -> ServiceReport:
    """Recompute the service's chain from its store and check every signed checkpoint.

    `start`: an incremental run. A signed checkpoint up to which the chain was verified
    before (`ServiceReport.verified_to` of an earlier run): the chain is taken up again
    from its head, and only the events and checkpoints after it are read. Nothing before
    it is checked again, so tampering with that part is found only by a full run (no
    `start`); a start whose signature does not hold is ignored (a full run)."""
    with store.snapshot():
        return _Verification(store, trusted, anchors, start).run()


def verify_service(settings: Settings, service: str, trusted: dict[str, Ed25519PublicKey],
                   anchors: Iterable[Checkpoint] = (), start: Checkpoint | None = None
                   ) -> ServiceReport:
    try:
        store = open_audit_store(settings, service)
    except MissingStore as missing:
        report = ServiceReport(service)
        report.missing = str(missing)
        return report
    try:
        if isinstance(store, SQLiteAuditStore) and not store.has_events_table():
            report = ServiceReport(service)
            report.missing = "its SQLite file holds no event store"
            return report
        return verify_store(store, trusted, anchors, start)
    finally:
        store.close()


def latest_checkpoints(settings: Settings, services: Iterable[str] = SERVICES
                       ) -> list[Checkpoint]:
    """The newest checkpoint of each service: what to keep outside as anchors."""
    found = []
    for service in services:
        try:
            store = open_audit_store(settings, service)
        except MissingStore:
            continue
        try:
            if store.has_audit_tables() and (latest := store.latest_checkpoint()):
                found.append(latest)
        finally:
            store.close()
    return found
