"""Which stored events concern whom: an index from a person to their events.

A data subject's export (and the console's "person's full history") must find one person's
events among millions. Batches (an ingest request, a delivery plan, a decision batch) hold
many people each, so no stream is one person's; without an index the export reads and
decrypts the whole store. Each service names, per event class its export reads, the terms
an event is found by (``subject_of_profile(...)``, ``subject_of_identifier(...)``), and
`ServiceApplication` writes one row per (term, event) in the transaction that stores the
event: the index is never ahead of or behind the store.

The table names nobody: a term is kept as its keyed hash (shared.privacy.KeyedHash), as
the subject keys are, and erasure deletes the erased subjects' rows with their keys.
An index only narrows the read: the export still decides on the decoded event whether it
is the person's (a term may be shared, a key may be gone).

A save writes one *pending* row per indexed event (its terms as a JSON list): appended in
key order, it costs the save a page or two, where a row per person per event would land
on a random page of a large b-tree each (a delivery batch of 100 people: 100 pages
written at commit). Pending rows are folded into the index in bulk, sorted, every
`FOLD_EVERY` indexed events a process saves, and before anything reads or erases by the
index: a lookup never misses an event, and the index is written a page at a time.

A store written before the index existed is indexed once when the service starts
(`backfill`); rows are idempotent, so a replica starting at the same time, or the write
path indexing new events meanwhile, changes nothing.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

from shared.privacy import KeyedHash
from shared.readmodel import ReadModel, Writes

TABLE = "subject_index"
PENDING = "subject_index_pending"
BUILT = "subject_index_built"
FOLD_EVERY = 200  # indexed events a process saves between folds
BACKFILL_PAGE = 500
LOOKUP_CHUNK = 500

# event class -> the terms (subject strings) an event of that class is found by
Terms = dict[type, Callable[[dict[str, Any]], Iterable[str]]]


def _sqlite_id(originator_id: Any) -> str:
    return originator_id.hex if isinstance(originator_id, uuid.UUID) else str(originator_id)


class SubjectIndex:
    def __init__(self, read_model: ReadModel, events_table: str, hashed: KeyedHash,
                 terms: Terms):
        self.rm = read_model
        self.hashed = hashed
        self.terms = {get_topic(cls): of for cls, of in terms.items()}
        self.table = read_model.table(TABLE)
        self.pending_table = read_model.table(PENDING)
        self.built_table = read_model.table(BUILT)
        self._unfolded = 0  # events this process indexed since its last fold
        self._folding = threading.Lock()
        self.events_table = read_model.table(events_table)
        self.id_type = "TEXT" if read_model.sqlite else "UUID"
        if self.terms:
            self._create()

    def __bool__(self) -> bool:
        return bool(self.terms)

    def _create(self) -> None:
        self.rm.create(
            f"CREATE TABLE IF NOT EXISTS {self.table} (term TEXT NOT NULL, "
            f"originator_id {self.id_type} NOT NULL, originator_version INTEGER NOT NULL, "
            "PRIMARY KEY (term, originator_id, originator_version))",
            f"CREATE TABLE IF NOT EXISTS {self.pending_table} ("
            + ("id INTEGER PRIMARY KEY AUTOINCREMENT" if self.rm.sqlite
               else "id BIGSERIAL PRIMARY KEY")
            + f", originator_id {self.id_type} NOT NULL, originator_version INTEGER NOT NULL, "
            "terms TEXT NOT NULL)",
            f"CREATE TABLE IF NOT EXISTS {self.built_table} (topic TEXT PRIMARY KEY, "
            "built_at TEXT)")

    # ---- writing: rows for the events of one save -------------------------------------
    def pending(self, domain_events: Iterable[Any]) -> list[tuple[Any, int, str]]:
        """One pending row per indexed event of a save: (stream, version, its terms)."""
        pending = []
        for domain_event in domain_events:
            of = self.terms.get(get_topic(type(domain_event)))
            if of is None:
                continue
            originator_id = domain_event.originator_id
            stream = _sqlite_id(originator_id) if self.rm.sqlite else originator_id
            terms = sorted({self.hashed(term) for term in of(vars(domain_event))})
            if terms:
                pending.append((stream, domain_event.originator_version, json.dumps(terms)))
        return pending

    def pending_writes(self, pending: list[tuple[Any, int, str]]) -> Writes:
        writes = Writes()
        writes.add(f"INSERT INTO {self.pending_table} (originator_id, originator_version, "
                   "terms) VALUES (%s, %s, %s)", pending)
        return writes

    def saved(self, pending: list[tuple[Any, int, str]]) -> None:
        """After a save with pending rows: fold them in once enough have gathered."""
        self._unfolded += len(pending)
        if self._unfolded >= FOLD_EVERY:
            self.fold()

    def fold(self) -> None:
        """Move every pending row into the index, sorted, in one transaction."""
        with self._folding:
            self._unfolded = 0
            with self.rm.datastore.transaction(commit=True) as cursor:
                if self.rm.sqlite:  # one writer: what the insert read, the delete removes
                    cursor.execute(
                        f"INSERT INTO {self.table} (term, originator_id, originator_version) "
                        f"SELECT j.value, p.originator_id, p.originator_version "
                        f"FROM {self.pending_table} p, json_each(p.terms) j WHERE true "
                        "ORDER BY 1, 2, 3 ON CONFLICT DO NOTHING")
                    cursor.execute(f"DELETE FROM {self.pending_table}")
                else:  # exactly the rows deleted are folded, whoever commits meanwhile
                    cursor.execute(
                        f"WITH gone AS (DELETE FROM {self.pending_table} RETURNING "
                        "originator_id, originator_version, terms) "
                        f"INSERT INTO {self.table} (term, originator_id, originator_version) "
                        "SELECT t.term, g.originator_id, g.originator_version FROM gone g, "
                        "jsonb_array_elements_text(g.terms::jsonb) AS t(term) "
                        "ORDER BY 1, 2, 3 ON CONFLICT DO NOTHING")

    def _rows_of(self, of, state, originator_id, version) -> Iterator[tuple[str, Any, int]]:
        # As each recorder stores it: SQLite a UUID's hex, PostgreSQL a uuid.
        stream = _sqlite_id(originator_id) if self.rm.sqlite else originator_id
        for term in set(of(state)):
            yield self.hashed(term), stream, version

    def writes(self, rows: list[tuple[str, Any, int]]) -> Writes:
        writes = Writes()
        writes.add(f"INSERT INTO {self.table} (term, originator_id, originator_version) "
                   "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING", rows,
                   None if self.rm.sqlite else
                   f"INSERT INTO {self.table} (term, originator_id, originator_version) "
                   "SELECT * FROM unnest(%s::text[], %s::uuid[], %s::int[]) "
                   "ON CONFLICT DO NOTHING")
        return writes

    # ---- reading --------------------------------------------------------------------------
    def notifications(self, terms: Iterable[str], *event_classes: type) -> list[Notification]:
        """The stored events of these classes found by any of the terms, in store order."""
        hashes = sorted({self.hashed(term) for term in terms})
        self.fold()
        topics = [get_topic(cls) for cls in event_classes]
        for topic in topics:
            if topic not in self.terms:
                raise ValueError(f"{topic} is not indexed by subject")
        found: dict[int, Notification] = {}
        position = "e.rowid" if self.rm.sqlite else "e.notification_id"
        for start in range(0, len(hashes), LOOKUP_CHUNK):
            chunk = hashes[start:start + LOOKUP_CHUNK]
            rows = self.rm.query(
                f"SELECT DISTINCT {position} AS id, e.originator_id, e.originator_version, "
                f"e.topic, e.state FROM {self.table} i JOIN {self.events_table} e "
                "ON e.originator_id = i.originator_id "
                "AND e.originator_version = i.originator_version "
                f"WHERE i.term IN ({','.join(['%s'] * len(chunk))}) "
                f"AND e.topic IN ({','.join(['%s'] * len(topics))})", [*chunk, *topics])
            for row in rows:
                originator_id = row["originator_id"]
                found[row["id"]] = Notification(
                    id=row["id"], topic=row["topic"], state=bytes(row["state"]),
                    originator_version=row["originator_version"],
                    originator_id=originator_id if isinstance(originator_id, uuid.UUID)
                    else uuid.UUID(originator_id))
        return [found[n] for n in sorted(found)]

    # ---- erasure --------------------------------------------------------------------------
    def forget(self, term_hashes: Iterable[str]) -> None:
        """Erasure: the rows of the erased subjects go with their keys."""
        hashes = sorted(set(term_hashes))
        if not self.terms:
            return
        self.fold()
        for start in range(0, len(hashes), LOOKUP_CHUNK):
            chunk = hashes[start:start + LOOKUP_CHUNK]
            self.rm.execute(f"DELETE FROM {self.table} WHERE term IN "
                            f"({','.join(['%s'] * len(chunk))})", chunk)

    # ---- a store written before the index ---------------------------------------------
    def backfill(self, recorder: Any, decode: Callable[[Notification], Any]) -> int:
        """Index every stored event of an indexed class not indexed yet (once per class:
        `BUILT` remembers it). Returns how many events were read."""
        built = {row["topic"] for row in self.rm.query(f"SELECT topic FROM {self.built_table}")}
        missing = sorted(set(self.terms) - built)
        if not missing:
            return 0
        read, start = 0, 0
        while True:
            page = recorder.select_notifications(start=start, limit=BACKFILL_PAGE,
                                                 topics=missing, inclusive_of_start=False)
            rows: set[tuple[str, Any, int]] = set()
            for notification in page:
                state = vars(decode(notification))
                rows.update(self._rows_of(self.terms[notification.topic], state,
                                          notification.originator_id,
                                          notification.originator_version))
            self._insert(sorted(rows, key=lambda row: (row[0], str(row[1]), row[2])))
            read += len(page)
            if len(page) < BACKFILL_PAGE:
                break
            start = page[-1].id
        for topic in missing:
            self.rm.execute(f"INSERT INTO {self.built_table} (topic, built_at) "
                            "VALUES (%s, CURRENT_TIMESTAMP) ON CONFLICT DO NOTHING", [topic])
        return read

    def _insert(self, rows: list[tuple[str, Any, int]]) -> None:
        if not rows:
            return
        [(sql, given, bulk)] = self.writes(rows).statements
        with self.rm.datastore.transaction(commit=True) as cursor:
            if self.rm.sqlite:
                cursor.executemany(self.rm.sql(sql), given)
            else:
                cursor.execute(bulk, [list(column) for column in zip(*given, strict=True)])
