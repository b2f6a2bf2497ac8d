"""Segments' application: keep every profile's memberships and computed traits exact as
changes and time pass, and backfill new definitions over every profile already known.

State lives in two places, written in one transaction per batch:
- the event store holds the definitions (`SegmentCatalog`) and every membership change
  (`MembershipBatch`, also the outbox of `segments.membership_changed`);
- the read model holds each profile as segments sees it (traits, behaviour, computed
  traits, memberships, next expiry), the members of each segment, each profile's
  membership history, and the progress of backfills. Backfill and preview read it, not
  the event store. Behaviour itself is recorded upstream (contacts); here it is a cache of
  what rules can still reach.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from services.segments.domain import CATALOG_ID, MembershipBatch, SegmentCatalog
from services.segments.evaluation import (
    EVERYTHING,
    TIME,
    CycleError,
    Definitions,
    EventLog,
    Key,
    MembershipChange,
    absorb,
    decode_profile,
    definition_key,
    dependency_order,
    encode_profile,
    encode_segments,
    event_key,
    new_profile,
    next_due,
    record_occurrence,
    release,
    trait_key,
)
from services.segments.expiries import ExpiryQueue
from services.segments.rules import State, compile_rule, parse_time, referenced_segments
from shared.partitions import partition_of
from shared.privacy import subject_of_profile
from shared.readmodel import Writes
from shared.store import ServiceApplication

log = logging.getLogger(__name__)

BACKFILL_PAGE = 2000
BACKFILL_LEASE_SECONDS = 30.0


class DefinitionError(ValueError):
    """A definition that is valid on its own but not in the catalog (unknown, cyclic)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, f"{field}: {message}"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _tables(sqlite: bool, t: Callable[[str], str]) -> list[str]:
    blob, real = ("BLOB", "REAL") if sqlite else ("BYTEA", "DOUBLE PRECISION")
    return [
        f"CREATE TABLE IF NOT EXISTS {t('profiles')} (profile_id TEXT PRIMARY KEY, "
        f"doc {blob} NOT NULL, due {real})",
        *([] if sqlite else [
            # Documents are a few KB: lz4 compresses them several times faster than pglz.
            f"ALTER TABLE {t('profiles')} ALTER COLUMN doc SET COMPRESSION lz4",
            # Every change rewrites a profile's row: room left on each page lets PostgreSQL
            # update in place (HOT), without new index entries or bloat.
            f"ALTER TABLE {t('profiles')} SET (fillfactor = 70)"]),
        f"CREATE INDEX IF NOT EXISTS profiles_due ON {t('profiles')} (due)"
        if sqlite else
        f"CREATE INDEX IF NOT EXISTS profiles_due ON {t('profiles')} (due) WHERE due IS NOT NULL",
        # Each profile's memberships (a JSON list), apart from its document: a backfill that
        # only changes memberships writes this short row, not the document.
        f"CREATE TABLE IF NOT EXISTS {t('profile_segments')} (profile_id TEXT PRIMARY KEY, "
        "segments TEXT NOT NULL)",
        *([] if sqlite else [f"ALTER TABLE {t('profile_segments')} SET (fillfactor = 70)"]),
        f"CREATE TABLE IF NOT EXISTS {t('members')} (segment TEXT NOT NULL, "
        "profile_id TEXT NOT NULL, entered_at TEXT NOT NULL, PRIMARY KEY (segment, profile_id))",
        f"CREATE TABLE IF NOT EXISTS {t('history')} (profile_id TEXT NOT NULL, "
        "segment TEXT NOT NULL, change TEXT NOT NULL, at TEXT NOT NULL, reason TEXT NOT NULL)",
        f"CREATE INDEX IF NOT EXISTS history_profile ON {t('history')} (profile_id)",
        f"CREATE INDEX IF NOT EXISTS members_profile ON {t('members')} (profile_id)",
        f"CREATE TABLE IF NOT EXISTS {t('backfills')} (name TEXT PRIMARY KEY, kind TEXT NOT NULL, "
        "version INTEGER NOT NULL, status TEXT NOT NULL, total INTEGER NOT NULL, "
        "done INTEGER NOT NULL, after TEXT NOT NULL, entered INTEGER NOT NULL, "
        "exited INTEGER NOT NULL, started_at TEXT NOT NULL, finished_at TEXT, owner TEXT, "
        f"lease_until {real})",
    ]


class Pass:
    """What one batch (or expiry tick, or backfill page) changed, to save in one go."""

    def __init__(self, app: SegmentsApplication, now: float):
        self.app, self.now = app, now
        self.at = _iso(now)
        self.dirty: dict[str, dict] = {}  # documents to write
        self.recorded: dict[str, dict] = {}  # memberships to write (documents' and more)
        self.items: list[dict[str, Any]] = []
        self.writes = Writes()
        self._membership: dict[tuple[str, str], str | None] = {}  # final state per pass
        self._history: list[tuple] = []

    def record(self, profile_id: str, profile: dict, changes: list[MembershipChange],
               origin: dict[str, Any], rewritten: bool = True) -> None:
        """`rewritten`: whether anything besides memberships changed (the document)."""
        if rewritten:
            self.dirty[profile_id] = profile
        self.recorded[profile_id] = profile
        at = self.at
        traits = {**profile["traits"], **profile["computed"]}
        for change in changes:
            kind = "entered" if change.entered else "exited"
            self._membership[(change.segment, profile_id)] = at if change.entered else None
            self._history.append((profile_id, change.segment, kind, at, change.reason))
            self.items.append({
                "profile_id": profile_id, "segment": change.segment, "change": kind, "at": at,
                "reason": change.reason, "traits": traits,
                "cause": origin.get("cause") or {"partition": self.app.partition(profile_id),
                                                 "position": 0},
                "received_at": origin.get("received_at"),
            })

    def collect(self) -> tuple[list[Any], Writes]:
        t = self.app.rm.table
        self.app._written(self.recorded)
        members_out = [key for key, at in self._membership.items() if at is None]
        members_in = [(*key, at) for key, at in self._membership.items() if at is not None]
        self.writes.add(
            f"INSERT INTO {t('profiles')} (profile_id, doc, due) VALUES (%s, %s, %s) "
            "ON CONFLICT (profile_id) DO UPDATE SET doc = excluded.doc, due = excluded.due",
            [(pid, encode_profile(doc), next_due(doc)) for pid, doc in self.dirty.items()],
            bulk=f"INSERT INTO {t('profiles')} (profile_id, doc, due) SELECT * FROM "
                 "unnest(%b::text[], %b::bytea[], %b::float8[]) ON CONFLICT (profile_id) "
                 "DO UPDATE SET doc = excluded.doc, due = excluded.due")
        # Every profile recorded, also those whose memberships did not change: a document
        # written before memberships moved out of it then leaves them beside it.
        self.writes.add(
            f"INSERT INTO {t('profile_segments')} (profile_id, segments) VALUES (%s, %s) "
            "ON CONFLICT (profile_id) DO UPDATE SET segments = excluded.segments",
            [(pid, encode_segments(doc)) for pid, doc in self.recorded.items()],
            bulk=f"INSERT INTO {t('profile_segments')} (profile_id, segments) SELECT * FROM "
                 "unnest(%b::text[], %b::text[]) ON CONFLICT (profile_id) "
                 "DO UPDATE SET segments = excluded.segments")
        self.writes.add(
            f"DELETE FROM {t('members')} WHERE segment = %s AND profile_id = %s",
            members_out,
            bulk=f"DELETE FROM {t('members')} m USING unnest(%b::text[], %b::text[]) AS "
                 "gone(segment, profile_id) WHERE m.segment = gone.segment AND "
                 "m.profile_id = gone.profile_id")
        self.writes.add(
            f"INSERT INTO {t('members')} (segment, profile_id, entered_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (segment, profile_id) DO NOTHING", members_in,
            bulk=f"INSERT INTO {t('members')} (segment, profile_id, entered_at) SELECT * FROM "
                 "unnest(%b::text[], %b::text[], %b::text[]) ON CONFLICT (segment, profile_id) "
                 "DO NOTHING")
        self.writes.add(
            f"INSERT INTO {t('history')} (profile_id, segment, change, at, reason) "
            "VALUES (%s, %s, %s, %s, %s)", self._history,
            bulk=f"INSERT INTO {t('history')} (profile_id, segment, change, at, reason) "
                 "SELECT * FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], "
                 "%b::text[])")
        aggregates = [MembershipBatch(items=self.items)] if self.items else []
        return aggregates, self.writes

    def scheduled(self) -> Iterable[tuple[str, float | None]]:
        for profile_id, profile in self.dirty.items():  # due changes only with the document
            yield profile_id, next_due(profile)


class Background:
    """A thread that runs, in turn, what a backfill hands it (reads ahead, or page saves).

    Started once per `run_backfills`, not per page: starting a thread waits until it runs,
    and in a busy process that wait is long. A thread, or a green thread once eventlet has
    patched threading: either way a query is on the wire while this process evaluates.
    """

    def __init__(self, name: str) -> None:
        self._tasks: queue.Queue[Task | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def run(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Task:
        task = Task(call, args, kwargs)
        self._tasks.put(task)
        time.sleep(0)  # let a green worker send its query before we stop yielding
        return task

    def stop(self) -> None:
        """After what was handed over (a read ahead left for later finishes unwatched)."""
        self._tasks.put(None)

    def _run(self) -> None:
        while (task := self._tasks.get()) is not None:
            task.run()


class Task:
    def __init__(self, call: Callable[..., Any], args: tuple, kwargs: dict):
        self._call, self._args, self._kwargs = call, args, kwargs
        self._done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._call(*self._args, **self._kwargs)
        except BaseException as error:  # for whoever waits for the task
            self.error = error
        finally:
            self._done.set()

    def wait(self) -> Task:
        self._done.wait()
        return self


class NextPage:
    """The next backfill page, read while the current one is evaluated and saved.

    PostgreSQL reads it on its own core while this process evaluates. Profiles that this
    process writes in the meantime (live batches between pages) are read again before use.
    """

    def __init__(self, app: SegmentsApplication, job: dict, after: str, size: int,
                 background: Background):
        self.key = (job["name"], job["version"], after)
        self.written: set[str] = set()
        self._size = size
        self._read = background.run(app._page_rows, after, size)

    def rows(self, app: SegmentsApplication) -> tuple[list[Any], str | None, bool]:
        """The page's rows as they are now, the last profile id read and whether the page
        was full (rows of profiles erased since are gone: the page may be shorter)."""
        read = self._read.wait()
        if read.error is not None:
            raise read.error
        rows = read.result or []
        last, full = (rows[-1]["profile_id"] if rows else None), len(rows) == self._size
        stale = self.written.intersection(row["profile_id"] for row in rows)
        if not stale:
            return rows, last, full
        fresh = {row["profile_id"]: row for row in app._rows_of(stale)}
        return [fresh[row["profile_id"]] if row["profile_id"] in stale else row
                for row in rows if row["profile_id"] not in stale
                or row["profile_id"] in fresh], last, full


class PageWrite:
    """A backfill page's save, on the wire while the next page is evaluated.

    PostgreSQL writes it on its own core while this process evaluates the next page, whose
    profiles are other ones. Whoever takes the lock next (a live batch, an expiry tick, a
    definition, the next page's save) waits for it first (`SegmentsApplication._turn`), so
    nothing reads a profile of the page before the page is saved, and pages are saved in
    order. Its expiries are scheduled once it is saved.
    """

    def __init__(self, app: SegmentsApplication, work: Pass, aggregates: list[Any],
                 writes: Writes, background: Background | None):
        self._work = work
        save = app.save_and_wake
        if background is None:  # SQLite writes in-process anyway
            self._save = Task(save, aggregates, {"writes": writes})
            self._save.run()
        else:
            self._save = background.run(save, *aggregates, writes=writes)

    def wait(self) -> BaseException | None:
        """Once the page is saved: None, or what stopped it (nothing of it was saved)."""
        error = self._save.wait().error
        if error is None:
            self._work.app._schedule(self._work)
        return error


class SegmentsApplication(ServiceApplication):
    service_name = "segments"
    written_once = (MembershipBatch,)
    privacy_rules = "services.segments.privacy:RULES"
    name = "segments"

    def __init__(self, *args, clock: Callable[[], float] = time.time, **kwargs):
        super().__init__(*args, **kwargs)
        self.clock = clock
        self.partition = lambda profile_id: partition_of(profile_id, self.settings.partitions)
        self.rm = self.read_model()
        self.rm.create(*_tables(self.rm.sqlite, self.rm.table))
        # Live batches, expiry ticks and backfill pages interleave; each reads and writes
        # whole profiles, so they take turns.
        self._lock = threading.RLock()
        self._definitions: tuple[int, Definitions] | None = None
        self._owner = uuid.uuid4().hex
        self._next_page: NextPage | None = None
        self._page_write: PageWrite | None = None
        # While run_backfills runs, on PostgreSQL: reads ahead, and page saves, each in turn.
        self._reader: Background | None = None
        self._writer: Background | None = None
        self._continued: dict | None = None  # the backfill this process is paging through
        # (when, profile_id): the next moment a window may change a profile's answers.
        self._expiries = ExpiryQueue(
            (row["profile_id"], row["due"]) for row in self.rm.query(
                f"SELECT profile_id, due FROM {self.rm.table('profiles')} WHERE due IS NOT NULL"))

    @contextlib.contextmanager
    def _turn(self):
        """The lock, once the backfill page being saved (if any) is: whoever reads or
        writes profiles next sees them as that page left them."""
        with self._lock:
            self._settle(reraise=False)
            yield

    def _settle(self, reraise: bool = True) -> None:
        """Wait for the backfill page being saved. If its save failed, the backfill goes
        on from the last page saved; the failure is the backfill's (`reraise`), not that
        of a live batch that only waited for it."""
        writing, self._page_write = self._page_write, None
        error = writing.wait() if writing is not None else None
        if error is None:
            return
        self._continued, self._next_page = None, None
        if reraise:
            raise error
        log.warning("a backfill page was not saved (%s); the backfill resumes from the "
                    "last page saved", error)

    # ---- erasure ----------------------------------------------------------------------
    def erase_subject(self, profile_ids: list[str], identifiers: list[list[str]],
                      subject_hashes: list[str] = ()) -> dict[str, Any]:
        """Erasure (services/consent/erasure.py): the profiles' keys go, and so do their
        rows of the read model (traits, memberships, history) and pending expiries."""
        gone = set(profile_ids)
        with self._turn():
            self._written(gone)  # a page read ahead holds them still: read it again
            for profile_id in profile_ids:
                for table in ("profiles", "profile_segments", "members", "history"):
                    self.rm.execute(
                        f"DELETE FROM {self.rm.table(table)} WHERE profile_id = %s",
                        (profile_id,))
            self._expiries.forget(gone)
            hashes = {*(self.privacy.hashed(subject_of_profile(p)) for p in profile_ids),
                      *subject_hashes}
            shredded = self.shred_subjects_by_hash(hashes)
        self.compact_store()
        return {"service": self.service_name, "keys_shredded": shredded,
                "subject_hashes": sorted(hashes)}

    # ---- definitions ------------------------------------------------------------------
    def _catalog(self) -> SegmentCatalog:
        return self.find(CATALOG_ID) or SegmentCatalog()

    def _fresh_catalog(self) -> SegmentCatalog:
        self.definitions()  # drops a catalog another replica has changed since
        return self._catalog()

    def definitions(self) -> Definitions:
        """The compiled catalog, as of now: another replica may have changed it, and a batch
        evaluated with an old catalog would miss a segment its backfill has passed."""
        if self._definitions is not None and self.recorder.select_events(
                CATALOG_ID, gt=self._definitions[0], limit=1):
            self.refresh_catalog()
        catalog = self._catalog()
        if self._definitions is None or self._definitions[0] != catalog.version:
            self._definitions = (catalog.version,
                                 Definitions(catalog.segments, catalog.computed))
        return self._definitions[1]

    def define_segment(self, name: str, rule: dict, description: str = "") -> dict:
        with self._turn():
            catalog = self._fresh_catalog()
            self._check_references(catalog, name, rule)
            catalog.define(name, rule, description, _iso(self.clock()))
            definition = catalog.segments[name]
            self.save_and_wake(catalog, writes=self._backfill_writes(
                name, "segment", definition["version"]))
            return {**definition, "backfill": self.backfill(name)}

    def remove_segment(self, name: str) -> bool:
        with self._turn():
            catalog = self._fresh_catalog()
            if name not in catalog.segments:
                return False
            readers = sorted(other for other, spec in catalog.segments.items()
                             if name in referenced_segments(spec["rule"]) and other != name)
            if readers:
                raise DefinitionError("name", f"segment {name} is used by {', '.join(readers)}")
            catalog.remove(name)
            self.save_and_wake(catalog, writes=self._backfill_writes(name, "removal", 0))
            return True

    def define_computed_trait(self, definition: dict) -> dict:
        with self._turn():
            catalog = self._fresh_catalog()
            name = definition["name"]
            catalog.define_computed(name, definition, _iso(self.clock()))
            saved = catalog.computed[name]
            self.save_and_wake(catalog, writes=self._backfill_writes(
                name, "computed", saved["version"]))
            return {**saved, "backfill": self.backfill(name)}

    def remove_computed_trait(self, name: str) -> bool:
        with self._turn():
            catalog = self._fresh_catalog()
            if name not in catalog.computed:
                return False
            catalog.remove_computed(name)
            self.save_and_wake(catalog, writes=self._backfill_writes(name, "removal", 0))
            return True

    def segments(self) -> dict[str, dict]:
        return dict(self._catalog().segments)

    def computed_traits(self) -> dict[str, dict]:
        return dict(self._catalog().computed)

    def refresh_catalog(self) -> None:
        """Other replicas may have changed definitions: drop the cached catalog."""
        cache = self.repository.cache
        if cache is not None:
            with contextlib.suppress(KeyError):
                cache.get(CATALOG_ID, evict=True)

    @staticmethod
    def _check_references(catalog: SegmentCatalog, name: str, rule: dict) -> None:
        for needed in sorted(referenced_segments(rule)):
            if needed != name and needed not in catalog.segments:
                raise DefinitionError("rule", f"segment {needed} does not exist")
        try:
            dependency_order({**catalog.segments, name: {"rule": rule}})
        except CycleError as cycle:
            raise DefinitionError("rule", f"segments would depend on themselves: {cycle}") \
                from None

    # ---- live changes -----------------------------------------------------------------
    def apply_batch(self, tracking_key: str, items: list[dict[str, Any]]) -> int:
        fresh = self.fresh_items(tracking_key, items)
        if not fresh:
            return 0
        with self._turn():
            definitions, now = self.definitions(), self.clock()
            profiles = self._load({i["profile_id"] for i in fresh}
                                  | {m for i in fresh for m in i.get("merged_from", ())}
                                  | {i["split_from"] for i in fresh if i.get("split_from")})
            work = Pass(self, now)
            for item in fresh:
                self._apply_item(item, profiles, definitions, work)
            aggregates, writes = work.collect()
            self.save_processed(*aggregates, tracking_key=tracking_key,
                                position=fresh[-1]["position"], writes=writes)
            self._schedule(work)
        return len(fresh)

    def _apply_item(self, item: dict, profiles: dict[str, dict], definitions: Definitions,
                    work: Pass) -> None:
        origin = {"cause": item["cause"], "received_at": item.get("received_at")}
        changed: set[Key] = set()
        if item.get("split_from"):
            profile_id = item["profile_id"]  # its own profile again: no redirect
            self._follow_split(profile_id, item["split_from"], profiles, definitions, work,
                               origin)
            changed.add(EVERYTHING)
        else:
            profile_id = self._survivor(item["profile_id"], profiles)
        profile = profiles[profile_id]
        for key, value in item["traits"].items():
            if profile["traits"].get(key) == value:
                continue
            if value is None:  # a trait set to null is unset
                del profile["traits"][key]
            else:
                profile["traits"][key] = value
            changed.add(trait_key(key))
        occurrence = _occurrence(item.get("event"))
        if occurrence is not None:
            record_occurrence(profile, *occurrence, now=work.now)
            changed.add(event_key(occurrence[0]))
        for absorbed_id in item.get("merged_from", ()):
            if self._fold_merge(profile_id, absorbed_id, profiles, definitions, work, origin):
                changed.add(EVERYTHING)
        if changed:
            changes = definitions.reevaluate(profile, changed, work.now)
            work.record(profile_id, profile, changes, origin)

    def _fold_merge(self, survivor_id: str, absorbed_id: str, profiles: dict[str, dict],
                    definitions: Definitions, work: Pass, origin: dict) -> bool:
        if absorbed_id not in profiles:
            profiles.update(self._load({absorbed_id}))
        absorbed = profiles[absorbed_id]
        # An absorbed id not seen yet is still recorded: its own events may be in flight
        # on another partition and must then go to the survivor.
        if absorbed["merged_into"] is not None or absorbed_id == survivor_id:
            return False
        absorb(profiles[survivor_id], absorbed, absorbed_id, work.now)
        absorbed["merged_into"] = survivor_id
        exits = [MembershipChange(name, False, "profile merged into another")
                 for name in sorted(absorbed["segments"])]
        absorbed["segments"] = set()
        work.record(absorbed_id, absorbed, exits, origin)
        return True

    def _follow_split(self, part_id: str, split_id: str, profiles: dict[str, dict],
                      definitions: Definitions, work: Pass, origin: dict) -> None:
        """Identity split `split_id`: each part comes announced on its own; one that had
        been merged in gets its behaviour back, and the split profile is evaluated
        without it."""
        if part_id == split_id:
            return
        profiles[part_id]["merged_into"] = None
        split = profiles[split_id]
        if release(split, part_id):
            changes = definitions.reevaluate(split, {EVERYTHING}, work.now)
            work.record(split_id, split, changes, origin)

    def _survivor(self, profile_id: str, profiles: dict[str, dict]) -> str:
        seen = set()
        while profiles[profile_id]["merged_into"] is not None and profile_id not in seen:
            seen.add(profile_id)
            profile_id = profiles[profile_id]["merged_into"]
            if profile_id not in profiles:
                profiles.update(self._load({profile_id}))
        return profile_id

    def _load(self, profile_ids: Iterable[str]) -> dict[str, dict]:
        ids = sorted(set(profile_ids))
        found: dict[str, dict] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            if self.rm.sqlite:
                rows = self.rm.query(self._profiles_sql(
                    f"p.profile_id IN ({', '.join('%s' for _ in chunk)})"), chunk)
            else:
                rows = self.rm.query(self._profiles_sql("p.profile_id = ANY(%s)"), [chunk])
            found.update((row["profile_id"], _decoded(row)) for row in rows)
        return {pid: found.get(pid) or new_profile() for pid in ids}

    def _schedule(self, work: Pass) -> None:
        for profile_id, due in work.scheduled():
            self._expiries.schedule(profile_id, due)

    # ---- time -------------------------------------------------------------------------
    def expire_due(self, *_: Any) -> int:
        """Re-evaluate profiles whose window moved; returns the membership changes made."""
        now = self.clock()
        due = self._expiries.pop_due(now)
        if not due:
            return 0
        with self._turn():
            definitions = self.definitions()
            work = Pass(self, now)
            for profile_id, profile in self._load(due).items():
                when = next_due(profile)
                if profile["merged_into"] is not None or when is None or when > now:
                    # Re-evaluated since it was scheduled (by another replica, say).
                    self._expiries.schedule(profile_id, None if profile["merged_into"]
                                            else when)
                    continue
                work.record(profile_id, profile, definitions.reevaluate(profile, {TIME}, now),
                            {})
            aggregates, writes = work.collect()
            if writes:
                self.save_and_wake(*aggregates, writes=writes)
            self._schedule(work)
            return len(work.items)

    # ---- backfill ---------------------------------------------------------------------
    def _backfill_writes(self, name: str, kind: str, version: int) -> Writes:
        """A new or changed definition starts (or restarts) its backfill in the same save."""
        total = self.rm.query(f"SELECT count(*) AS n FROM {self.rm.table('profiles')}")[0]["n"]
        writes = Writes()
        writes.add(
            f"INSERT INTO {self.rm.table('backfills')} (name, kind, version, status, total, done,"
            " after, entered, exited, started_at, finished_at, owner, lease_until) VALUES "
            "(%s, %s, %s, 'running', %s, 0, '', 0, 0, %s, NULL, NULL, NULL) "
            "ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, version = excluded.version, "
            "status = 'running', total = excluded.total, done = 0, after = '', entered = 0, "
            "exited = 0, started_at = excluded.started_at, finished_at = NULL, owner = NULL, "
            "lease_until = NULL",
            [(name, kind, version, total, _iso(self.clock()))])
        return writes

    def backfill(self, name: str) -> dict[str, Any] | None:
        rows = self.rm.query(f"SELECT * FROM {self.rm.table('backfills')} WHERE name = %s",
                             [name])
        return _progress(rows[0]) if rows else None

    def backfills(self) -> list[dict[str, Any]]:
        rows = self.rm.query(f"SELECT * FROM {self.rm.table('backfills')} ORDER BY started_at")
        return [_progress(row) for row in rows]

    def run_backfills(self, budget_seconds: float | None = None, page: int = BACKFILL_PAGE,
                      pages: int | None = None) -> int:
        """Work through running backfills, a page at a time; returns profiles evaluated.

        Each page is its own transaction, so live batches go on between pages and a
        restarted service resumes from the last page saved. A lease keeps two replicas
        off the same backfill.
        """
        started, evaluated, done = time.monotonic(), 0, 0
        if not self.rm.sqlite:
            self._reader = Background("segments-backfill-read")
            self._writer = Background("segments-backfill-write")
        try:
            while pages is None or done < pages:
                if budget_seconds is not None and time.monotonic() - started >= budget_seconds:
                    break
                job = self._claim_backfill()
                if job is None:
                    break
                evaluated += self._backfill_page(job, page)
                done += 1
        finally:
            # A page read ahead and left for later would grow stale unwatched (other
            # replicas' writes are not seen by `written`): read it again next time. The
            # last page is saved before this returns.
            self._next_page, self._continued = None, None
            try:
                with self._lock:
                    self._settle()
            finally:
                for background in (self._reader, self._writer):
                    if background is not None:
                        background.stop()
                self._reader = self._writer = None
        return evaluated

    def _claim_backfill(self) -> dict | None:
        """The backfill to page through: the one this process is already in while its
        lease has time left and the catalog has not changed (the row in the read model may
        be a page behind, its save on the wire), otherwise the first running one free."""
        continued = self._continued
        if (continued is not None and self.clock() < continued["lease_until"]
                - BACKFILL_LEASE_SECONDS / 2):
            return continued  # the page checks the catalog (`_backfill_page`)
        with self._lock:
            self._settle()
            catalog = self._catalog_version()
        table, now = self.rm.table("backfills"), self.clock()
        for row in self.rm.query(f"SELECT name FROM {table} WHERE status = 'running' "
                                 "ORDER BY started_at"):
            self.rm.execute(
                f"UPDATE {table} SET owner = %s, lease_until = %s WHERE name = %s AND "
                "status = 'running' AND (owner IS NULL OR owner = %s OR lease_until < %s)",
                [self._owner, now + BACKFILL_LEASE_SECONDS, row["name"], self._owner, now])
            claimed = self.rm.query(f"SELECT * FROM {table} WHERE name = %s AND owner = %s "
                                    "AND status = 'running'", [row["name"], self._owner])
            if claimed:
                return {**claimed[0], "catalog": catalog}
        return None

    def _catalog_version(self) -> int:
        self.definitions()  # notices a catalog another replica changed
        return self._definitions[0]

    def _written(self, profile_ids: Iterable[str]) -> None:
        if self._next_page is not None:
            self._next_page.written.update(profile_ids)

    def _profiles_sql(self, where: str) -> str:
        """Some profiles' documents and memberships (rows for `_decoded`)."""
        return (f"SELECT p.profile_id, p.doc, s.segments FROM {self.rm.table('profiles')} p "
                f"LEFT JOIN {self.rm.table('profile_segments')} s "
                f"ON s.profile_id = p.profile_id WHERE {where}")

    def _page_rows(self, after: str, size: int) -> list[Any]:
        # The bound is given to both sides: the planner does not carry it across the left
        # join, and would otherwise read memberships from the first row at every page.
        return self.rm.query(
            f"SELECT p.profile_id, p.doc, s.segments FROM {self.rm.table('profiles')} p "
            f"LEFT JOIN {self.rm.table('profile_segments')} s ON s.profile_id = p.profile_id "
            "AND s.profile_id > %s WHERE p.profile_id > %s ORDER BY p.profile_id LIMIT %s",
            [after, after, size])

    def _pages(self, size: int = BACKFILL_PAGE) -> Iterable[list[Any]]:
        after = ""
        while True:
            rows = self._page_rows(after, size)
            if rows:
                yield rows
            if len(rows) < size:
                return
            after = rows[-1]["profile_id"]

    def _rows_of(self, profile_ids: Iterable[str]) -> list[Any]:
        return self.rm.query(self._profiles_sql("p.profile_id = ANY(%s)"),
                             [sorted(profile_ids)])

    def _page(self, job: dict, size: int) -> tuple[list[Any], str, bool]:
        """This page's rows (read ahead if they were), the profile id it ends at, and
        whether more may follow; and the next page set reading."""
        ahead, self._next_page = self._next_page, None
        if ahead is not None and ahead.key == (job["name"], job["version"], job["after"]):
            rows, last, full = ahead.rows(self)
        else:
            rows = self._page_rows(job["after"], size)
            last, full = (rows[-1]["profile_id"] if rows else None), len(rows) == size
        last = last if last is not None else job["after"]
        if full and self._reader is not None:  # not SQLite: its reads are in-process
            self._next_page = NextPage(self, job, last, size, self._reader)
        return rows, last, full

    def _backfill_page(self, job: dict, page: int) -> int:
        with self._lock:
            rows, last, full = self._page(job, page)
            definitions, now = self.definitions(), self.clock()
            work = Pass(self, now)
            touched = [definition_key(job["name"])]
            for row in rows:
                profile = _decoded(row)
                if profile["merged_into"] is not None:
                    continue
                changes, rewritten = definitions.reevaluated(profile, touched, now)
                if changes or rewritten:
                    work.record(row["profile_id"], profile, changes, {}, rewritten)
            aggregates, writes = work.collect()
            finished = not full
            entered = sum(1 for item in work.items if item["change"] == "entered")
            writes.add(
                f"UPDATE {self.rm.table('backfills')} SET done = done + %s, after = %s, "
                "entered = entered + %s, exited = exited + %s, status = %s, finished_at = %s "
                "WHERE name = %s AND version = %s",
                [(len(rows), last, entered,
                  len(work.items) - entered, "done" if finished else "running",
                  _iso(now) if finished else None, job["name"], job["version"])])
            self._settle()  # the page before is saved first: progress is kept in order
            self._page_write = PageWrite(self, work, aggregates, writes, self._writer)
            changed = self._definitions[0] != job["catalog"]  # claim it again from the row
            self._continued = None if finished or changed else {
                **job, "after": last, "done": job["done"] + len(rows)}
        return len(rows)

    # ---- queries ----------------------------------------------------------------------
    def segment_sizes(self) -> dict[str, int]:
        sizes = dict.fromkeys(self._catalog().segments, 0)
        for row in self.rm.query(f"SELECT segment, count(*) AS n FROM "
                                 f"{self.rm.table('members')} GROUP BY segment"):
            if row["segment"] in sizes:
                sizes[row["segment"]] = row["n"]
        return sizes

    def members(self, segment: str, limit: int = 100, after: str = "") -> dict[str, Any]:
        rows = self.rm.query(
            f"SELECT profile_id, entered_at FROM {self.rm.table('members')} WHERE segment = %s "
            "AND profile_id > %s ORDER BY profile_id LIMIT %s", [segment, after, limit])
        members = [{"profile_id": r["profile_id"], "entered_at": r["entered_at"]} for r in rows]
        return {"segment": segment, "members": members,
                "next": members[-1]["profile_id"] if len(members) == limit else None}

    def memberships(self, profile_id: str) -> dict[str, Any]:
        members = self.rm.query(f"SELECT segment, entered_at FROM {self.rm.table('members')} "
                                "WHERE profile_id = %s ORDER BY segment", [profile_id])
        history = [
            {"segment": r["segment"], "change": r["change"], "at": r["at"], "reason": r["reason"]}
            for r in self.rm.query(f"SELECT segment, change, at, reason FROM "
                                   f"{self.rm.table('history')} WHERE profile_id = %s ORDER BY at",
                                   [profile_id])]
        return {"profile_id": profile_id,
                "segments": {r["segment"]: r["entered_at"] for r in members},
                "history": history}

    def export_subject(self, profile_ids: list[str], identifiers: list[list[str]]
                       ) -> dict[str, Any]:
        """Per profile id of the person: segments' copy of the traits, computed traits,
        the event counts segments keep, current memberships and their history."""
        docs = self._load(profile_ids)
        profiles = []
        for profile_id in sorted(profile_ids):
            memberships = self.memberships(profile_id)
            doc = docs[profile_id]
            if not memberships["history"] and not doc["traits"] and not doc["events"]:
                continue  # segments never saw this id
            events = doc["events"]
            plain = {"traits": doc["traits"], "computed": doc["computed"],
                     "events": dict(events.items() if isinstance(events, EventLog)
                                    else events),
                     "merged_into": doc["merged_into"]}
            profiles.append({"profile_id": profile_id, "profile": plain,
                             "segments": memberships["segments"],
                             "history": memberships["history"]})
        return {"service": "segments", "profiles": profiles}

    def computed_of(self, profile_id: str) -> dict[str, Any]:
        return dict(self._load([profile_id])[profile_id]["computed"])

    def preview(self, rule: dict, sample: int = 10) -> dict[str, Any]:
        """How many known profiles a rule would hold now, and a few of them; saves nothing."""
        catalog = self._catalog()
        self._check_references(catalog, "__preview__", rule)
        compiled, now = compile_rule(rule), self.clock()
        size, scanned, chosen = 0, 0, []
        for rows in self._pages():
            for row in rows:
                profile = _decoded(row)
                if profile["merged_into"] is not None:
                    continue
                scanned += 1
                state = State(traits={**profile["traits"], **profile["computed"]},
                              events=profile["events"], now=now, segments=profile["segments"])
                if compiled.test(state):
                    size += 1
                    if len(chosen) < sample:
                        chosen.append({"profile_id": row["profile_id"],
                                       "traits": profile["traits"]})
        return {"size": size, "profiles_scanned": scanned, "sample": chosen}


def _decoded(row: Any) -> dict[str, Any]:
    return decode_profile(row["doc"], row["segments"])


def _occurrence(summary: dict | None) -> tuple[str, float, dict] | None:
    if not summary or summary.get("type") != "track" or not summary.get("event"):
        return None
    at = parse_time(summary.get("timestamp"))
    return None if at is None else (summary["event"], at, summary.get("properties") or {})


def _progress(row: Any) -> dict[str, Any]:
    total, done = row["total"], row["done"]
    return {
        "name": row["name"], "kind": row["kind"], "version": row["version"],
        "status": row["status"], "total": total, "done": done,
        "percent": 100.0 if row["status"] == "done" or not total
        else round(min(100.0, 100.0 * done / total), 1),
        "entered": row["entered"], "exited": row["exited"],
        "started_at": row["started_at"], "finished_at": row["finished_at"],
    }
