"""Personal data in stored events, encrypted per subject, so that erasure can shred it.

DESIGN §5. Every service stores events whose personal data is encrypted with AES-GCM under
the key of the person it belongs to (the *subject*); erasure deletes the key, and the
events stay (history, counts, the audit hash chain over the stored bytes) without their
personal data.

What a subject is:
- from identity on, the **profile id** (a random UUID: it names nobody);
- at the gateway, before identity, the **strongest identifier** of the event, as identity
  would normalise it (``user_id:<userId>``, else ``anonymous_id:<anonymousId>``);
- for streams keyed by one identifier (identity's identifier links, consent's records),
  the stream itself (its originator id, derived from the identifier).
Erasure finds all of a person's subjects through identity: the profile, the profiles it
absorbed, and every identifier linked to them (services/consent/erasure.py).

Which fields are personal is declared per event class in each service's ``privacy.py``
(rules below); a unit test checks that every stored event class has a rule. An event that
names two people (a merge) encrypts each person's part under that person's key.

Keys live in a ``subject_keys`` table in the service's own store (its SQLite file or PG
schema), keyed by a keyed hash of the subject (HMAC-SHA256 with ``TESSERA_PRIVACY_SECRET``)
so the table names nobody either. A new key is written in the same transaction as the
first events encrypted under it. A shredded key leaves a tombstone: whatever is written
for that subject later is encrypted under a key that is thrown away at once.

An event whose key is gone loads as *erased*: its personal fields take empty values of
their type, it is marked ``_erased``, and an event of the erased subject's own stream
changes nothing when applied (so a rebuild or a replay never crashes on it).
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import get_topic, resolve_topic

log = logging.getLogger(__name__)

SECRET_ENV = "TESSERA_PRIVACY_SECRET"
SECRET_FILE = "privacy.secret"
KEYS_TABLE = "subject_keys"
ERASED = "_erased"
ENVELOPES = "~pii"
TOMBSTONE_REFRESH_SECONDS = 1.0
HASHES_REMEMBERED = 200_000
_NONCE = 12

# What an erased field becomes, by the type it had (recorded beside the ciphertext).
_TYPE_LETTER = {dict: "d", list: "l", str: "s", int: "i", float: "f", bool: "b",
                type(None): "n"}


class ErasedDict(dict):
    """An erased mapping: any key reads as an empty string, so code that builds an
    aggregate from it (a Created event) does not fail on a missing key."""

    def __missing__(self, key: Any) -> str:
        return ""


def _placeholder(letter: str) -> Any:
    return {"d": ErasedDict, "l": list, "s": str, "i": int, "f": float, "b": bool}.get(
        letter, type(None))()


# ---- the secret and keyed hashes ---------------------------------------------------------
def privacy_secret(data_dir: Path) -> bytes:
    """``TESSERA_PRIVACY_SECRET`` if set; otherwise a secret generated once into the data
    directory (embedded mode). Real deployments must set the variable, the same on every
    replica: subjects and suppression entries are looked up by keyed hashes of it."""
    from_env = os.environ.get(SECRET_ENV)
    if from_env:
        return from_env.encode()
    path = Path(data_dir) / SECRET_FILE
    with contextlib.suppress(FileNotFoundError):
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole under another name, then linked into place: services starting
    # together never read a half-written secret, and the first link wins.
    draft = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
    with os.fdopen(os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
        f.write(secrets.token_hex(32).encode())
    try:
        os.link(draft, path)
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    return path.read_bytes().strip()


class KeyedHash:
    """HMAC-SHA256 under the privacy secret: lookups by a value without storing the value
    (nor its plain hash, which anyone can compute from a list of emails)."""

    def __init__(self, secret: bytes):
        self._key = hashlib.sha256(b"tessera-keyed-hash:" + secret).digest()
        self._known: dict[str, str] = {}  # the same subjects come back batch after batch

    def __call__(self, text: str) -> str:
        found = self._known.get(text)
        if found is None:
            found = hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()[:40]
            if len(self._known) >= HASHES_REMEMBERED:
                self._known.clear()
            self._known[text] = found
        return found

    def identifier(self, identifier_type: str, value: str) -> str:
        return self(f"{identifier_type}:{value}")


def subject_of_identifier(identifier_type: str, value: str) -> str:
    return f"{identifier_type}:{value}"


def subject_of_profile(profile_id: str) -> str:
    return f"profile:{profile_id}"


def subject_of_stream(stream_id: Any) -> str:
    return f"stream:{stream_id}"


def profile_stream(stream_id: Any) -> str:
    """A stream whose id is the profile id (contacts' profiles, consent's links...)."""
    return subject_of_profile(str(stream_id))


# ---- keys ------------------------------------------------------------------------------
class SubjectKeys:
    """The per-subject keys of one service, in its own store, cached in memory."""

    def __init__(self, datastore: Any, schema: str | None, hashed: KeyedHash):
        self.datastore = datastore
        self.sqlite = schema is None
        self.table = KEYS_TABLE if schema is None else f'"{schema}".{KEYS_TABLE}'
        self.hashed = hashed
        self._keys: dict[str, bytes | None] = {}  # subject hash -> key (None: shredded)
        self._new: dict[str, bytes] = {}  # created, not yet written
        self._absent: set[str] = set()  # asked for, had none
        self._lock = threading.RLock()
        self._tombstones_seen = ""
        self._refreshed_at = float("-inf")
        self._create_table()

    def _sql(self, statement: str) -> str:
        return statement.replace("%s", "?") if self.sqlite else statement

    def _create_table(self) -> None:
        blob = "BLOB" if self.sqlite else "BYTEA"
        with self.datastore.transaction(commit=True) as cursor:
            if not self.sqlite:
                cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                               (f"tessera.schema.{self.table}",))
            cursor.execute(f"CREATE TABLE IF NOT EXISTS {self.table} (subject TEXT PRIMARY KEY, "
                           f"key {blob}, erased_at TEXT)")
            cursor.execute(f"CREATE INDEX IF NOT EXISTS subject_keys_erased ON {self.table} "
                           "(erased_at)")

    # -- reading
    def prefetch(self, subject_hashes: Iterable[str]) -> None:
        """One query for every key of a save that is not cached yet."""
        self._refresh_tombstones()
        missing = [h for h in set(subject_hashes) if h not in self._keys and h not in self._new]
        for start in range(0, len(missing), 500):
            chunk = missing[start:start + 500]
            marks = ",".join(["%s"] * len(chunk))
            with self.datastore.transaction(commit=False) as cursor:
                cursor.execute(self._sql(
                    f"SELECT subject, key FROM {self.table} WHERE subject IN ({marks})"),
                    tuple(chunk))
                rows = cursor.fetchall()
            with self._lock:
                if len(self._keys) >= HASHES_REMEMBERED:
                    self._keys.clear()  # a cache of the table: what goes is read again
                for row in rows:
                    key = row["key"]
                    self._keys[row["subject"]] = None if key is None else bytes(key)
                # Known to have no key as of now: a writer creates one without asking again.
                if len(self._absent) >= HASHES_REMEMBERED:
                    self._absent.clear()
                self._absent.update(h for h in chunk if h not in self._keys)

    def key(self, subject_hash: str) -> bytes | None:
        """The key to decrypt with; None if shredded or never created."""
        with self._lock:
            if subject_hash in self._new:
                return self._new[subject_hash]
            if subject_hash in self._keys:
                return self._keys[subject_hash]
        self.prefetch([subject_hash])
        return self._keys.get(subject_hash)

    def key_for_writing(self, subject_hash: str) -> tuple[bytes, bool]:
        """The subject's key, created if it has none, and whether it is still unsaved.
        A shredded subject gets a key that is never stored: what is written for it now
        is erased as it is written."""
        with self._lock:
            if subject_hash in self._new:
                return self._new[subject_hash], True
            if subject_hash not in self._keys:
                pass
            elif self._keys[subject_hash] is None:
                return AESGCM.generate_key(bit_length=128), False
            else:
                return self._keys[subject_hash], False
        if subject_hash not in self._absent:
            self.prefetch([subject_hash])
        with self._lock:
            if subject_hash in self._keys:
                found = self._keys[subject_hash]
                if found is None:
                    return AESGCM.generate_key(bit_length=128), False
                return found, False
            return self._new.setdefault(subject_hash, AESGCM.generate_key(bit_length=128)), True

    # -- writing: a new key rides in the transaction of the events encrypted under it.
    # Every save that used a key not yet known to be stored inserts it: two saves of this
    # process sharing a new key never depend on each other (the same key again changes
    # nothing). Another replica's different key for the same subject (two gateways seeing
    # a new user id at once) fails the save instead of losing its events: the division by
    # zero is evaluated only when the stored key differs. SQLite has one process.
    def insert_statement(self) -> str:
        if self.sqlite:
            return (f"INSERT INTO {self.table} (subject, key) VALUES (%s, %s) "
                    "ON CONFLICT (subject) DO NOTHING")
        return (f"INSERT INTO {self.table} AS t (subject, key) VALUES (%s, %s) "
                "ON CONFLICT (subject) DO UPDATE SET erased_at = CASE WHEN t.key = excluded.key "
                "THEN t.erased_at ELSE (1 / (length(t.subject) * 0))::text END")

    def bulk_insert_statement(self) -> str | None:
        """The same, for PostgreSQL, taking one array per column (shared.readmodel.Writes)."""
        if self.sqlite:
            return None
        return (f"INSERT INTO {self.table} AS t (subject, key) SELECT * FROM "
                "unnest(%b::text[], %b::bytea[]) "
                "ON CONFLICT (subject) DO UPDATE SET erased_at = CASE WHEN t.key = excluded.key "
                "THEN t.erased_at ELSE (1 / (length(t.subject) * 0))::text END")

    def unsaved(self, used: Iterable[tuple[str, bytes]]) -> None:
        """The save failed: its new keys may lose to another writer's, ask again."""
        with self._lock:
            for subject_hash, key in used:
                if self._new.get(subject_hash) == key:
                    del self._new[subject_hash]
                self._absent.discard(subject_hash)

    def saved(self, used: Iterable[tuple[str, bytes]]) -> None:
        with self._lock:
            for subject_hash, key in used:
                if self._new.get(subject_hash) == key:
                    del self._new[subject_hash]
                    self._keys.setdefault(subject_hash, key)

    # -- shredding
    def shred(self, subject_hashes: Iterable[str]) -> int:
        """Delete the keys, leaving tombstones; returns how many keys there were."""
        hashes = sorted(set(subject_hashes))
        if not hashes:
            return 0
        at = datetime.now(UTC).isoformat()
        shredded = 0
        with self.datastore.transaction(commit=True) as cursor:
            for subject_hash in hashes:
                cursor.execute(self._sql(f"SELECT key FROM {self.table} WHERE subject = %s"),
                               (subject_hash,))
                row = cursor.fetchone()
                shredded += int(row is not None and row["key"] is not None)
                cursor.execute(self._sql(
                    f"INSERT INTO {self.table} (subject, key, erased_at) VALUES (%s, NULL, %s) "
                    "ON CONFLICT (subject) DO UPDATE SET key = NULL, erased_at = excluded.erased_at"
                ), (subject_hash, at))
        with self._lock:
            for subject_hash in hashes:
                self._keys[subject_hash] = None
                self._new.pop(subject_hash, None)
                self._absent.discard(subject_hash)
        return shredded

    def refresh(self) -> None:
        """Called once per event mapped (not per item)."""
        self._refresh_tombstones()

    def _refresh_tombstones(self) -> None:
        """Keys shredded by another replica stop working here within a second."""
        now = time.monotonic()
        if now - self._refreshed_at < TOMBSTONE_REFRESH_SECONDS and \
                TOMBSTONE_REFRESH_SECONDS > 0:
            return
        self._refreshed_at = now
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(self._sql(
                f"SELECT subject, erased_at FROM {self.table} WHERE erased_at > %s"),
                (self._tombstones_seen,))
            rows = cursor.fetchall()
        with self._lock:
            for row in rows:
                self._keys[row["subject"]] = None
                self._tombstones_seen = max(self._tombstones_seen, row["erased_at"])


# ---- the cipher -----------------------------------------------------------------------
class SubjectCipher:
    """AES-GCM under a subject's key; the stream id is the associated data, so a
    ciphertext moved to another stream does not decrypt."""

    def __init__(self, keys: SubjectKeys, transcoder: Any):
        self.keys = keys
        self.transcoder = transcoder
        self._saving = threading.local()  # green-thread local under eventlet
        self._aeads: dict[bytes, AESGCM] = {}
        self._last_aad: tuple[Any, bytes] = (None, b"")

    @contextlib.contextmanager
    def saving(self) -> Iterator[list[tuple[str, bytes]]]:
        """Collects the unsaved keys that a save's events are sealed with (its rows)."""
        rows: list[tuple[str, bytes]] = []
        previous = getattr(self._saving, "rows", None)
        self._saving.rows = rows
        try:
            yield rows
        finally:
            self._saving.rows = previous

    def _aead(self, key: bytes) -> AESGCM:
        found = self._aeads.get(key)
        if found is None:
            if len(self._aeads) >= HASHES_REMEMBERED:
                self._aeads.clear()
            found = self._aeads[key] = AESGCM(key)
        return found

    def _aad(self, stream_id: Any) -> bytes:
        last = self._last_aad
        if last[0] != stream_id:  # most calls seal or open many items of one event
            last = self._last_aad = (stream_id, str(stream_id).encode())
        return last[1]

    def seal(self, subject: str, values: dict[str, Any], stream_id: Any,
             typed: bool = True) -> dict[str, Any]:
        """`typed`: record each value's type, so that an erased event can be applied with
        empty values of the right types (batch items, skipped when erased, need not)."""
        subject_hash = self.keys.hashed(subject)
        key, unsaved = self.keys.key_for_writing(subject_hash)
        if unsaved:
            rows = getattr(self._saving, "rows", None)
            if rows is not None and (subject_hash, key) not in rows:
                rows.append((subject_hash, key))
        nonce = os.urandom(_NONCE)
        sealed = self._aead(key).encrypt(nonce, self._encode(values), self._aad(stream_id))
        envelope = {"k": subject_hash, "c": binascii.b2a_base64(nonce + sealed,
                                                                 newline=False).decode()}
        if typed:
            envelope["t"] = {name: _TYPE_LETTER.get(type(v), "n") for name, v in values.items()}
        return envelope

    def open(self, envelope: dict[str, Any], stream_id: Any) -> dict[str, Any] | None:
        """The values, or None if the subject's key is gone."""
        key = self.keys.key(envelope["k"])
        if key is None:
            return None
        raw = binascii.a2b_base64(envelope["c"])
        try:
            plain = self._aead(key).decrypt(raw[:_NONCE], raw[_NONCE:], self._aad(stream_id))
        except Exception:  # a key recreated after a restore, or a moved ciphertext
            return None
        return self._decode(plain)

    # Sealed values are JSON values (they come from messages): orjson, ten times faster
    # than the transcoder. Anything orjson does not take as is (a datetime, a Decimal)
    # goes through the application's transcoder instead; the first byte says which.
    # (orjson writes a UUID as its string: sealed fields hold ids as strings.)
    def _encode(self, values: dict[str, Any]) -> bytes:
        try:
            return b"o" + orjson.dumps(values, option=_ORJSON_STRICT, default=_refuse)
        except TypeError:
            return b"t" + self.transcoder.encode(values)

    def _decode(self, plain: bytes) -> dict[str, Any]:
        if plain[:1] == b"o":
            return orjson.loads(plain[1:])
        return self.transcoder.decode(plain[1:])


_ORJSON_STRICT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _refuse(value: Any) -> Any:
    raise TypeError(type(value).__name__)


# ---- rules: which fields of which event are whose -------------------------------------
@dataclass(frozen=True)
class Plain:
    """No personal data: stored as is."""

    def seal(self, state, stream_id, cipher):
        return state

    def subjects(self, state, stream_id) -> Iterator[str]:
        return iter(())


@dataclass(frozen=True)
class Own:
    """The stream belongs to one person: every field but `keep` is theirs.
    `subject`: how the subject follows from the stream id (default: the stream itself);
    `others`: fields that belong to another person, named by a kept field
    (field -> name of the field holding that person's profile id)."""

    keep: tuple[str, ...] = ()
    subject: Callable[[Any], str] = subject_of_stream
    others: tuple[tuple[str, str], ...] = ()
    subject_field: str | None = None  # the person is named by this (kept) field instead
    # ... or by the event's content (a request filed with the person's identifiers)
    subject_of_state: Callable[[dict[str, Any]], str] | None = None

    def own_subject(self, state, stream_id) -> str:
        if self.subject_of_state is not None:
            return self.subject_of_state(state)
        if self.subject_field is not None:
            return subject_of_profile(str(state.get(self.subject_field)))
        return self.subject(stream_id)

    def _parts(self, state, stream_id) -> list[tuple[str, list[str]]]:
        kept = {*self.keep, "timestamp", "originator_topic", "class_version"}
        if self.subject_field is not None:
            kept.add(self.subject_field)
        # Another person's fields go under their key when the event names them, else
        # under the stream's: nothing personal is ever left unsealed.
        others = {name: state.get(owner) for name, owner in self.others}
        mine = [n for n in state if n not in kept and not others.get(n)]
        parts = [(self.own_subject(state, stream_id), mine)]
        by_person: dict[str, list[str]] = {}
        for name, owner in others.items():
            if name in state and owner:
                by_person.setdefault(subject_of_profile(str(owner)), []).append(name)
        parts.extend(by_person.items())
        return [(s, names) for s, names in parts if names]

    def seal(self, state, stream_id, cipher):
        sealed = dict(state)
        envelopes = []
        for subject, names in self._parts(state, stream_id):
            envelopes.append(cipher.seal(subject, {n: sealed.pop(n) for n in names}, stream_id))
        sealed[ENVELOPES] = envelopes
        return sealed

    def subjects(self, state, stream_id) -> Iterator[str]:
        return (subject for subject, _ in self._parts(state, stream_id))


@dataclass(frozen=True)
class Items:
    """A batch: each item of `field` belongs to the person `subject(item)` names (None: to
    nobody). Fields in `keep` stay readable (ids, positions), the rest is encrypted."""

    field: str = "items"
    subject: Callable[[dict[str, Any]], str | None] = lambda item: subject_of_profile(
        item["profile_id"]) if item.get("profile_id") else None
    keep: tuple[str, ...] = ("profile_id", "position")

    def seal(self, state, stream_id, cipher):
        sealed = dict(state)
        items = []
        for item in state.get(self.field) or ():
            subject = self._subject_with_secrets(item)
            if subject is None:
                items.append(item)
                continue
            kept = {k: v for k, v in item.items() if k in self.keep}
            secret = {k: v for k, v in item.items() if k not in self.keep}
            kept[ENVELOPES] = [cipher.seal(subject, secret, stream_id, typed=False)]
            items.append(kept)
        sealed[self.field] = items
        return sealed

    def subjects(self, state, stream_id) -> Iterator[str]:
        for item in state.get(self.field) or ():
            subject = self._subject_with_secrets(item)
            if subject is not None:
                yield subject

    def _subject_with_secrets(self, item: Any) -> str | None:
        """Whose key seals the item; None when it belongs to nobody or holds nothing but
        readable fields (a ledger's summaries): an empty envelope would cost a key lookup
        and a cipher call per item and hide nothing."""
        if not isinstance(item, dict) or all(k in self.keep for k in item):
            return None
        return self.subject(item)


def _open_into(target: dict[str, Any], cipher: SubjectCipher, stream_id: Any) -> bool:
    """Replace the envelopes in `target` by what they hold; True if any key was gone."""
    erased = False
    for envelope in target.pop(ENVELOPES, ()):
        values = cipher.open(envelope, stream_id)
        if values is None:
            erased = True
            values = {name: _placeholder(letter)
                      for name, letter in envelope.get("t", {}).items()}
        target.update(values)
    if erased:
        target[ERASED] = True
    return erased


def is_erased(value: Any) -> bool:
    """An event or an item whose subject was erased."""
    if isinstance(value, dict):
        return bool(value.get(ERASED)) or (
            isinstance(value.get("event"), dict) and bool(value["event"].get(ERASED)))
    return bool(getattr(value, ERASED, False))


# ---- the mapper -----------------------------------------------------------------------
class PrivacyMapper(Mapper):
    """eventsourcing's Mapper, with each rule's personal fields sealed before the
    transcoder runs and opened after it."""

    def __init__(self, transcoder, rules: dict[type, Any], keys: SubjectKeys, **kwargs):
        super().__init__(transcoder, **kwargs)
        self.rules = {get_topic(cls): rule for cls, rule in rules.items()}
        self.keys = keys
        self.cipher = None  # the whole-state cipher of eventsourcing: not used
        self.subject_cipher = SubjectCipher(keys, transcoder)
        self._erased_classes: dict[type, type] = {}

    def rule(self, topic: str) -> Any:
        return self.rules.get(topic, PLAIN)

    def prefetch(self, domain_events: Iterable[Any]) -> None:
        hashes = []
        for domain_event in domain_events:
            rule = self.rule(get_topic(type(domain_event)))
            if rule is PLAIN:
                continue
            state = vars(domain_event)
            hashes.extend(self.keys.hashed(s)
                          for s in rule.subjects(state, domain_event.originator_id))
        if hashes:
            self.keys.prefetch(hashes)

    def to_stored_event(self, domain_event) -> StoredEvent:
        topic = get_topic(type(domain_event))
        rule = self.rule(topic)
        if rule is PLAIN:
            return super().to_stored_event(domain_event)
        state = dict(vars(domain_event))
        originator_id = state.pop("originator_id")
        originator_version = state.pop("originator_version")
        class_version = getattr(type(domain_event), "class_version", 1)
        if class_version > 1:
            state["class_version"] = class_version
        self.keys.refresh()
        sealed = rule.seal(state, originator_id, self.subject_cipher)
        stored = self.transcoder.encode(sealed)
        if self.compressor:
            stored = self.compressor.compress(stored)
        return StoredEvent(originator_id=originator_id, originator_version=originator_version,
                           topic=topic, state=stored)

    def to_domain_event(self, stored_event: StoredEvent,
                        open_item: Callable[[dict[str, Any]], bool] | None = None):
        """`open_item`: of a batch (an `Items` rule), open only the items it accepts (by
        their kept fields); the others stay sealed, for a reader that wants a few people
        of a batch of hundreds."""
        domain_event = super().to_domain_event(stored_event)
        rule = self.rule(stored_event.topic)
        if rule is PLAIN:
            return domain_event
        state = vars(domain_event)
        stream_id = stored_event.originator_id
        self.keys.refresh()
        if isinstance(rule, Items):
            sealed = [item for item in state.get(rule.field) or ()
                      if isinstance(item, dict) and ENVELOPES in item
                      and (open_item is None or open_item(item))]
            # A batch holds many people: their keys in one query, not one query each.
            self.keys.prefetch(envelope["k"] for item in sealed for envelope in item[ENVELOPES])
            for item in sealed:
                _open_into(item, self.subject_cipher, stream_id)
            return domain_event
        own_subject = rule.own_subject(state, stream_id)
        own_hash = self.keys.hashed(own_subject)
        own_erased = False
        envelopes = state.get(ENVELOPES, ())
        for envelope in envelopes:
            values = self.subject_cipher.open(envelope, stream_id)
            if values is None:
                own_erased = own_erased or envelope["k"] == own_hash
                values = {name: _placeholder(letter)
                          for name, letter in envelope.get("t", {}).items()}
                state[ERASED] = True
            state.update(values)
        state.pop(ENVELOPES, None)
        if own_erased:
            # The stream's own person is gone: the event changes nothing when applied.
            object.__setattr__(domain_event, "__class__", self._erased_class(type(domain_event)))
        return domain_event

    def _erased_class(self, cls: type) -> type:
        found = self._erased_classes.get(cls)
        if found is None:
            found = type(cls)(f"Erased{cls.__name__}", (cls,), {
                "apply": _apply_nothing, "__module__": cls.__module__,
                "__qualname__": f"{cls.__qualname__}.Erased"})
            self._erased_classes[cls] = found
        return found


def _apply_nothing(self, aggregate: Any) -> None:
    """An erased event: its aggregate's version moves on, its state does not."""


PLAIN = Plain()


# ---- the application side -------------------------------------------------------------
@dataclass
class Privacy:
    """What a ServiceApplication holds: the keyed hash, the keys, the mapper's rules."""

    hashed: KeyedHash
    keys: SubjectKeys
    rules: dict[type, Any] = field(default_factory=dict)

    def shred(self, subjects: Iterable[str]) -> int:
        return self.keys.shred(self.hashed(s) for s in subjects)


def rules_of(application_cls: type) -> dict[type, Any]:
    """A service's rules: `privacy_rules` on its application class, as a topic string to
    import (its own services/<name>/privacy.py), so shared/ imports no service."""
    topic = getattr(application_cls, "privacy_rules", None)
    if not topic:
        return {}
    return resolve_topic(topic)
