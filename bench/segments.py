"""Segments benchmark: the cost of one incremental change, and backfill throughput.

1. **Catalog.** 100 segments and 20 computed traits are generated from the rule grammar
   with a fixed seed (``--seed``): trait conditions of every operator, event conditions
   with counts, windows, property filters and first/last occurrences, ``and``/``or``/
   ``not``, and segments that read other segments or computed traits. Each field that a
   change touches (5 traits, 5 event names) has at least 10 segments or computed traits
   depending on it; the script checks and prints that.
2. **Incremental change, in memory.** 10,000 changes to profiles that already hold 20
   events each — a trait set to a new value, or a new event — each timed from "this
   changed" to "these segments and traits now hold": deciding what the change affects and
   re-evaluating it (``Definitions.reevaluate``), without the database write. Median and
   p99 per change.
3. **Backfill.** 100,000 generated profiles with 20 events each are written to the read
   model that the segments service keeps (PostgreSQL by default, a fresh database), with
   memberships and computed traits already up to date for the catalog, each profile's
   document and memberships written as the service writes them. Then a new segment
   is defined and its backfill is timed from definition to "done", pages read from the
   read model, memberships and the outbox written per page, as the service does it.

It ends with one line::

    segments: <µs> us per change (p99 <µs>), backfill <N> profiles/s

Usage::

    python bench/segments.py [--profiles 100000] [--changes 10000] [--database postgres|sqlite]
                             [--template NAME]

To iterate on the backfill alone: ``--changes 0`` skips part 2, and ``--template NAME``
(PostgreSQL) keeps the loaded database under NAME on the first run and, on later runs,
backfills over a fresh copy of it (``CREATE DATABASE ... TEMPLATE``) instead of loading
again. The copy holds what that first run's code wrote: drop NAME after changing how the
read model is written.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.segments.application import SegmentsApplication
from services.segments.evaluation import (
    EVERYTHING,
    Definitions,
    encode_profile,
    encode_segments,
    event_key,
    new_profile,
    next_due,
    record_occurrence,
    trait_key,
)
from services.segments.rules import DAY
from services.segments.schemas import ComputedTraitSchema, SegmentSchema
from shared.config import Settings
from shared.privacy import subject_of_profile

NOW = datetime(2026, 11, 1, tzinfo=UTC).timestamp()
TRAITS = {
    "country": lambda r: r.choice(["FR", "DE", "GB", "US", "ES", "IT"]),
    "plan": lambda r: r.choice(["free", "pro", "team", "enterprise"]),
    "age": lambda r: r.randint(18, 80),
    "ltv": lambda r: round(r.uniform(0, 2000), 2),
    "signed_up_at": lambda r: _iso(NOW - r.uniform(0, 400) * DAY),
}
EVENTS = {
    "Order Completed": lambda r: {"total": round(r.uniform(5, 300), 2),
                                  "currency": r.choice(["EUR", "USD", "GBP"]),
                                  "category": r.choice(["shoes", "bags", "hats", "coats"])},
    "Page Viewed": lambda r: {"path": r.choice(["/", "/pricing", "/docs", "/blog"])},
    "Product Viewed": lambda r: {"category": r.choice(["shoes", "bags", "hats", "coats"]),
                                 "price": round(r.uniform(5, 300), 2)},
    "Cart Abandoned": lambda r: {"value": round(r.uniform(5, 500), 2)},
    "Email Opened": lambda r: {"campaign": r.choice(["spring", "summer", "black-friday"])},
}


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


# ---- the catalog, from the grammar ---------------------------------------------------------
def trait_condition(r: random.Random, name: str) -> dict:
    if name == "country":
        return r.choice([{"trait": name, "op": "eq", "value": r.choice(["FR", "DE"])},
                         {"trait": name, "op": "in", "value": ["FR", "ES", "IT"]},
                         {"trait": name, "op": "ne", "value": "US"},
                         {"trait": name, "op": "not_in", "value": ["GB", "US"]}])
    if name == "plan":
        return r.choice([{"trait": name, "op": "eq", "value": "pro"},
                         {"trait": name, "op": "contains", "value": "e"},
                         {"trait": name, "op": "exists"}])
    if name == "age":
        return r.choice([{"trait": name, "op": "between", "value": [25, 40]},
                         {"trait": name, "op": "gte", "value": r.randint(20, 60)},
                         {"trait": name, "op": "lt", "value": 30}])
    if name == "ltv":
        return r.choice([{"trait": name, "op": "gt", "value": r.randint(100, 1500)},
                         {"trait": name, "op": "lte", "value": 500}])
    return r.choice([{"trait": name, "op": "within_last_days", "value": r.randint(30, 200)},
                     {"trait": name, "op": "more_than_days_ago", "value": 90},
                     {"trait": name, "op": "after", "value": "2026-01-01T00:00:00Z"}])


def event_condition(r: random.Random, name: str) -> dict:
    condition: dict = {"event": name}
    shape = r.random()
    if shape < 0.15:
        condition["occurrence"] = r.choice(["first", "last"])
        condition["within_days"] = r.choice([7, 30, 90])
        return condition
    condition["count"] = {"op": r.choice(["at_least", "at_least", "at_most", "exactly"]),
                          "value": r.randint(0, 4)}
    if r.random() < 0.8:
        condition["within_days"] = r.choice([7, 14, 30, 60, 90, 365])
    if r.random() < 0.4:
        key, value = next(iter(EVENTS[name](r).items()))
        condition["where"] = ({key: value} if isinstance(value, str) else
                              [{"property": key, "op": "gt", "value": value / 2}])
    return condition


FIELDS = [("trait", t) for t in TRAITS] + [("event", e) for e in EVENTS]


def generate_catalog(seed: int) -> tuple[dict, dict]:
    r = random.Random(seed)
    computed = {}
    for i in range(20):
        event = list(EVENTS)[i % len(EVENTS)]
        aggregate = r.choice(["count", "sum", "avg", "min", "max", "first", "last",
                              "most_frequent", "unique"])
        prop = next(iter(EVENTS[event](r)))
        if aggregate in ("sum", "avg", "min", "max") and event in ("Page Viewed", "Email Opened"):
            aggregate = "count"
        spec = {"name": f"ct_{i:02d}", "event": event, "aggregate": aggregate,
                "within_days": r.choice([7, 30, 90, 365])}
        if aggregate != "count":
            spec["property"] = prop
        computed[spec["name"]] = ComputedTraitSchema().load(spec)
    segments: dict[str, dict] = {}
    for i in range(100):
        kind, field = FIELDS[i % len(FIELDS)]  # every field leads ten segments
        parts = [trait_condition(r, field) if kind == "trait" else event_condition(r, field)]
        for _ in range(r.randint(0, 2)):
            other_kind, other = r.choice(FIELDS)
            parts.append(trait_condition(r, other) if other_kind == "trait"
                         else event_condition(r, other))
        if r.random() < 0.1:
            name = r.choice([n for n, c in computed.items() if c["aggregate"] == "count"])
            parts.append({"trait": name, "op": "gte", "value": 1})
        if segments and r.random() < 0.1:
            parts.append({"segment": r.choice(sorted(segments))})
        if len(parts) > 1 and r.random() < 0.3:
            parts[-1] = {"not": parts[-1]}
        rule = parts[0] if len(parts) == 1 else {r.choice(["and", "and", "or"]): parts}
        name = f"seg_{i:03d}"
        segments[name] = {"name": name, **SegmentSchema().load({"name": name, "rule": rule})}
    return segments, computed


def dependents_per_field(definitions: Definitions) -> dict[str, int]:
    counts = {}
    for kind, field in FIELDS:
        key = trait_key(field) if kind == "trait" else event_key(field)
        counts[f"{kind}:{field}"] = (len(definitions.dependents.get(key, ()))
                                     + len(definitions.computed_dependents.get(key, ())))
    return counts


# ---- profiles ------------------------------------------------------------------------------
def generate_profile(r: random.Random, definitions: Definitions, events: int = 20) -> dict:
    profile = new_profile()
    profile["traits"] = {name: make(r) for name, make in TRAITS.items()}
    for _ in range(events):
        name = r.choice(list(EVENTS))
        record_occurrence(profile, name, NOW - r.uniform(0, 180) * DAY, EVENTS[name](r), NOW)
    definitions.reevaluate(profile, {EVERYTHING}, NOW)
    return profile


def random_change(r: random.Random, profile: dict, now: float) -> set:
    kind, field = r.choice(FIELDS)
    if kind == "trait":
        profile["traits"][field] = TRAITS[field](r)
        return {trait_key(field)}
    record_occurrence(profile, field, now, EVENTS[field](r), now)
    return {event_key(field)}


def tessera_gc() -> None:
    """The collector settings of every tessera process (tessera/cli.py)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def bench_changes(definitions: Definitions, changes: int, seed: int) -> tuple[float, float]:
    r = random.Random(seed + 1)
    profiles = [generate_profile(r, definitions) for _ in range(1000)]
    tessera_gc()
    timings = []
    for i in range(changes):
        profile = r.choice(profiles)
        now = NOW + i
        started = time.perf_counter_ns()
        changed = random_change(r, profile, now)
        definitions.reevaluate(profile, changed, now)
        timings.append((time.perf_counter_ns() - started) / 1000)
    timings.sort()
    return statistics.median(timings), timings[int(len(timings) * 0.99) - 1]


# ---- backfill ------------------------------------------------------------------------------
def open_app(database: str, workdir: Path, dbname: str | None = None) -> SegmentsApplication:
    if database == "postgres":
        os.environ["TESSERA_DATABASE"] = "postgres"
        os.environ["TESSERA_POSTGRES_DBNAME"] = (
            dbname or f"tessera_bench_segments_{uuid.uuid4().hex[:8]}")
    settings = Settings.from_env()
    if database == "sqlite":
        settings = Settings(data_dir=workdir)
    return SegmentsApplication(settings, clock=lambda: NOW)


def load_profiles(app: SegmentsApplication, definitions: Definitions, count: int,
                  seed: int) -> None:
    r = random.Random(seed + 2)
    table = app.rm.table("profiles")
    segments = app.rm.table("profile_segments")
    members = app.rm.table("members")
    keys = app.privacy.keys.table
    started = time.perf_counter()
    for start in range(0, count, 5000):
        rows, segment_rows, member_rows, key_rows = [], [], [], []
        for _ in range(min(5000, count - start)):
            profile_id = str(uuid.UUID(int=r.getrandbits(128)))
            profile = generate_profile(r, definitions)
            rows.append((profile_id, encode_profile(profile), next_due(profile)))
            segment_rows.append((profile_id, encode_segments(profile)))
            member_rows += [(s, profile_id, _iso(NOW)) for s in profile["segments"]]
            if profile["segments"]:
                # The service sealed their entries under their key: it has one.
                key_rows.append((app.privacy.hashed(subject_of_profile(profile_id)),
                                 AESGCM.generate_key(bit_length=128)))
        with app.rm.datastore.transaction(commit=True) as cursor:
            cursor.executemany(app.rm.sql(f"INSERT INTO {table} (profile_id, doc, due) "
                                          "VALUES (%s, %s, %s)"), rows)
            cursor.executemany(app.rm.sql(f"INSERT INTO {segments} (profile_id, segments) "
                                          "VALUES (%s, %s)"), segment_rows)
            cursor.executemany(app.rm.sql(f"INSERT INTO {members} (segment, profile_id, "
                                          "entered_at) VALUES (%s, %s, %s)"), member_rows)
            cursor.executemany(app.rm.sql(f"INSERT INTO {keys} (subject, key) "
                                          "VALUES (%s, %s)"), key_rows)
        print(f"  loaded {start + len(rows):>7} profiles "
              f"({time.perf_counter() - started:.0f} s)", end="\r", flush=True)
    print()


def define_catalog(app: SegmentsApplication, segments: dict, computed: dict) -> None:
    for spec in computed.values():
        app.define_computed_trait(spec)
    for name in app_order(segments):
        app.define_segment(name, segments[name]["rule"])
    with app.rm.datastore.transaction(commit=True) as cursor:
        cursor.execute(f"DELETE FROM {app.rm.table('backfills')}")  # profiles are loaded as
        # already evaluated against this catalog


def app_order(segments: dict) -> list[str]:
    from services.segments.evaluation import dependency_order
    return dependency_order(segments)


def bench_backfill(app: SegmentsApplication) -> tuple[float, float, dict]:
    rule = {"and": [{"event": "Order Completed", "count": {"op": "at_least", "value": 2},
                     "within_days": 90},
                    {"trait": "country", "op": "in", "value": ["FR", "DE", "ES"]}]}
    started, cpu = time.perf_counter(), time.process_time()
    app.define_segment("bench_new_segment", SegmentSchema().load(
        {"name": "bench_new_segment", "rule": rule})["rule"])
    app.run_backfills()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return elapsed, cpu, app.backfill("bench_new_segment")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--changes", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--template", help="PostgreSQL database to keep the loaded profiles "
                        "in, and to copy on later runs instead of loading again")
    args = parser.parse_args()

    segments, computed = generate_catalog(args.seed)
    definitions = Definitions(segments, computed)
    per_field = dependents_per_field(definitions)
    kinds = Counter(next(iter(s["rule"])) for s in segments.values())
    print(f"catalog: {len(segments)} segments ({dict(kinds)}), {len(computed)} computed traits")
    print("dependents per changing field: " + ", ".join(f"{k}={v}" for k, v in per_field.items()))
    assert min(per_field.values()) >= 10, "each changing field needs 10 dependents"

    median = p99 = float("nan")
    if not args.changes:
        tessera_gc()
    else:
        median, p99 = bench_changes(definitions, args.changes, args.seed)
        print(f"incremental change ({args.changes} changes, 20 events per profile): "
              f"median {median:.1f} us, p99 {p99:.1f} us")

    with tempfile.TemporaryDirectory() as workdir:
        if args.template and args.database == "postgres":
            if not database_exists(args.template):
                loading = open_app(args.database, Path(workdir), args.template)
                try:
                    load(loading, segments, computed, args)
                finally:
                    loading.close()
            dbname = f"tessera_bench_segments_{uuid.uuid4().hex[:8]}"
            copy_database(args.template, dbname)
            app = open_app(args.database, Path(workdir), dbname)
        else:
            app = open_app(args.database, Path(workdir))
            load(app, segments, computed, args)
        try:
            elapsed, cpu, progress = bench_backfill(app)
            rate = progress["done"] / elapsed
            print(f"backfill of a new segment: {progress['done']} profiles in {elapsed:.2f} s, "
                  f"{progress['entered']} entered ({rate:,.0f} profiles/s; this process's CPU "
                  f"{cpu / progress['done'] * 1e6:.1f} us per profile)")
        finally:
            app.close()
            drop_database(args.database)
    print(f"segments: {median:.0f} us per change (p99 {p99:.0f} us), "
          f"backfill {rate:.0f} profiles/s")


def load(app: SegmentsApplication, segments: dict, computed: dict,
         args: argparse.Namespace) -> None:
    define_catalog(app, segments, computed)
    print(f"loading {args.profiles} profiles into the read model ({args.database})")
    load_profiles(app, app.definitions(), args.profiles, args.seed)


def _admin():
    import psycopg
    settings = Settings.from_env()
    return psycopg.connect(f"host={settings.postgres_host} port={settings.postgres_port} "
                           f"user={settings.postgres_user} dbname=postgres", autocommit=True)


def database_exists(name: str) -> bool:
    os.environ["TESSERA_DATABASE"] = "postgres"
    with _admin() as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            (name,)).fetchone() is not None


def copy_database(template: str, name: str) -> None:
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')


def drop_database(database: str) -> None:
    if database != "postgres":
        return
    settings = Settings.from_env()
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{settings.postgres_dbname}" WITH (FORCE)')


if __name__ == "__main__":
    main()
