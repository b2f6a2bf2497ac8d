"""Contacts benchmark: directory search at a million contacts, on PostgreSQL.

1. **Load.** ``--contacts`` generated contacts (fixed seed) go into the contacts service's
   directory tables in a fresh PostgreSQL database: names from a syllable generator (tens
   of thousands of distinct last names), an email and a user id each, an owner, a
   lifecycle stage, and one account per contact (``--per-account`` contacts per account).
   Rows are loaded with COPY into tables created by the service's own DDL, then the
   service's indexes are built and the tables analysed. The load is not timed as search.
2. **Search.** The contacts application, opened on that database as the service opens it,
   answers ``--queries`` searches of each kind, one at a time, each timed from call to
   decoded rows (at most 50 per answer, as the API returns):
   by email (the full address, as a prefix search), by name prefix (the first three
   letters of a first or last name in use), by account, and by exact identifier (a user id).

It ends with one line, the worst p95 of the kinds::

    contacts: search p95 <ms> ms at <N> contacts

Usage::

    python bench/contacts.py [--contacts 1000000] [--queries 1000] [--keep]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg

from services.contacts.application import ContactsApplication
from services.contacts.directory import CONTACT_COLUMNS, indexes, tables
from services.contacts.policy import DEFAULT_STAGES
from shared.config import Settings
from shared.store import ensure_postgres_database, ensure_postgres_schema
from tessera.testing.platform import drop_database

SCHEMA = "contacts"
SYLLABLES = ("ka", "lo", "mi", "ren", "sa", "to", "vel", "an", "bri", "cor", "den", "el",
             "fa", "gor", "hal", "is", "jo", "kel", "lin", "mar", "nor", "ol", "pe", "qui",
             "ros", "sel", "tan", "ul", "vin", "wes")
DOMAINS = ("example.com", "mail.test", "corp.example", "shop.test", "inbox.example")


def last_names(rng: random.Random, count: int) -> list[str]:
    names = set()
    while len(names) < count:
        names.add("".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 3, 3)))))
    return sorted(name.capitalize() for name in names)


def contacts(n: int, per_account: int, seed: int) -> Iterator[dict]:
    rng = random.Random(seed)
    firsts = [name.capitalize() for name in last_names(rng, 800)]
    lasts = last_names(rng, 20_000)
    owners = [f"owner{i:02d}@sales.example" for i in range(50)]
    for i in range(n):
        first, last = rng.choice(firsts), rng.choice(lasts)
        yield {
            "profile_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "first": first, "last": last,
            "email": f"{first.lower()}.{last.lower()}.{i}@{DOMAINS[i % len(DOMAINS)]}",
            "user_id": f"u-{i:07d}", "owner": owners[i % len(owners)],
            "stage": DEFAULT_STAGES[rng.randrange(len(DEFAULT_STAGES))],
            "account": f"acct-{i // per_account:06d}",
        }


def _line(*values: str | None) -> str:
    return "\t".join(r"\N" if v is None else v for v in values) + "\n"


def load(settings: Settings, n: int, per_account: int, seed: int) -> list[dict]:
    """COPY the generated contacts in; returns a sample to query with."""
    ensure_postgres_database(settings)
    ensure_postgres_schema(settings, SCHEMA)

    def table(name: str) -> str:
        return f'"{SCHEMA}".{name}'

    sample, rng = [], random.Random(seed + 1)
    conninfo = f"host={settings.postgres_host} user={settings.postgres_user} " \
               f"dbname={settings.postgres_dbname}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for statement in tables(table, sqlite=False):
            conn.execute(statement)
        started = time.perf_counter()
        # One COPY per connection: a connection runs one COPY at a time.
        with psycopg.connect(conninfo) as ids_conn, psycopg.connect(conninfo) as links_conn, \
                conn.cursor().copy(f"COPY {table('contacts')} ({', '.join(CONTACT_COLUMNS)}) "
                                   "FROM STDIN") as contacts_copy, \
                ids_conn.cursor().copy(f"COPY {table('contact_identifiers')} "
                                       "(value, kind, profile_id) FROM STDIN") as ids_copy, \
                links_conn.cursor().copy(f"COPY {table('contact_accounts')} "
                                         "(account_id, profile_id, role) FROM STDIN") as links_copy:
            for count, person in enumerate(contacts(n, per_account, seed), 1):
                _copy_person(person, contacts_copy, ids_copy, links_copy)
                if rng.random() < 5000 / n:
                    sample.append(person)
                if count % 200_000 == 0:
                    print(f"  copied {count:>8} contacts "
                          f"({time.perf_counter() - started:.0f} s)", flush=True)
        conn.execute(f"INSERT INTO {table('accounts')} (account_id, name_key, doc, updated_at) "
                     f"SELECT DISTINCT account_id, lower(account_id), '{{}}', '' "
                     f"FROM {table('contact_accounts')}")
        print(f"  copied in {time.perf_counter() - started:.0f} s; building indexes", flush=True)
        started = time.perf_counter()
        for statement in indexes(table):
            conn.execute(statement)
        for name in ("contacts", "contact_identifiers", "contact_accounts", "accounts"):
            conn.execute(f"ANALYZE {table(name)}")
        print(f"  indexes built and analysed in {time.perf_counter() - started:.0f} s",
              flush=True)
    return sample


def _copy_person(person: dict, contacts_copy, ids_copy, links_copy) -> None:
    name = f"{person['first']} {person['last']}"
    doc = json.dumps({"profile_id": person["profile_id"], "name": name,
                      "email": person["email"], "phone": None, "title": None,
                      "company": None, "owner": person["owner"],
                      "lifecycle_stage": person["stage"], "accounts": {person["account"]:
                                                                       "member"}})
    pid = person["profile_id"]
    contacts_copy.write(_line(pid, person["email"], name.lower(), person["last"].lower(),
                              person["owner"], person["stage"], doc, "2026-11-29T00:00:00Z"))
    ids_copy.write(_line(person["email"], "email", pid) + _line(person["user_id"], "user_id",
                                                                 pid))
    links_copy.write(_line(person["account"], pid, "member"))


def timed(queries: list[Callable[[], list]]) -> tuple[list[float], int]:
    latencies, found = [], 0
    for query in queries:
        started = time.perf_counter()
        found += len(query())
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies, found


def p95(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100, method="inclusive")[94]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--per-account", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()

    settings = Settings(database="postgres", postgres_dbname=f"bench_contacts_{uuid.uuid4().hex}")
    print(f"loading {args.contacts} contacts into {settings.postgres_dbname}", flush=True)
    try:
        sample = load(settings, args.contacts, args.per_account, args.seed)
        app = ContactsApplication(settings)
        total = app.directory.rm.query(f'SELECT count(*) AS n FROM "{SCHEMA}".contacts')[0]["n"]
        rng = random.Random(args.seed + 2)
        picks = [rng.choice(sample) for _ in range(args.queries)]
        kinds = {
            "email": [lambda p=p: app.search(email=p["email"]) for p in picks],
            "name prefix": [lambda p=p, i=i: app.search(
                name=(p["last"] if i % 2 else p["first"])[:3]) for i, p in enumerate(picks)],
            "account": [lambda p=p: app.search(account=p["account"]) for p in picks],
            "identifier": [lambda p=p: app.search(identifier=p["user_id"]) for p in picks],
        }
        timed([lambda: app.search(name="ka")] * 20)  # warm the pool and the plan cache
        worst = 0.0
        for kind, queries in kinds.items():
            latencies, found = timed(queries)
            worst = max(worst, p95(latencies))
            print(f"  {kind:<12} p50 {statistics.median(latencies):6.2f} ms  "
                  f"p95 {p95(latencies):6.2f} ms  max {max(latencies):6.2f} ms  "
                  f"({found / len(queries):.1f} contacts per answer)", flush=True)
        app.close()
    finally:
        if not args.keep:
            drop_database(settings.postgres_dbname)
    print(f"contacts: search p95 {worst:.1f} ms at {total} contacts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
