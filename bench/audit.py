"""How fast `tessera audit verify` checks a large history, in each backend.

Fills one service's store with N synthetic events (states of realistic size, random bytes:
ciphertext-like), seals it in the services' batches, then verifies it as `tessera audit
verify` does and prints events/s, in wall-clock and CPU time (the CPU figure is the one
to compare on a loaded machine).

    .venv/bin/python bench/audit.py --events 1000000 --backends sqlite,postgres
"""

from __future__ import annotations

import argparse
import os
import secrets
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.audit import Sealer, key_id, open_audit_store, verify_service
from shared.config import Settings

SERVICE = "contacts"
FILL_BATCH = 20_000


def synthetic_rows(count: int, state_bytes: int):
    """Aggregates of ~10 events each, as a busy service stores them."""
    originator = None
    for index in range(count):
        if index % 10 == 0:
            originator = uuid.uuid4()
        yield (originator, index % 10 + 1, "services.contacts.domain:Profile.Changed",
               os.urandom(state_bytes))


def fill_sqlite(settings: Settings, count: int, state_bytes: int) -> None:
    path = settings.data_dir / f"{SERVICE}.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE stored_events (originator_id TEXT, originator_version "
                   "INTEGER, topic TEXT, state BLOB, PRIMARY KEY (originator_id, "
                   "originator_version))")
        db.executemany("INSERT INTO stored_events VALUES (?, ?, ?, ?)",
                       ((o.hex, v, t, s) for o, v, t, s in synthetic_rows(count, state_bytes)))


def fill_postgres(settings: Settings, count: int, state_bytes: int) -> None:
    import psycopg

    from shared.store import postgres_conninfo

    with psycopg.connect(postgres_conninfo(settings, "postgres"), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{settings.postgres_dbname}"')
    with psycopg.connect(postgres_conninfo(settings)) as db:
        db.execute(f'CREATE SCHEMA "{SERVICE}"')
        db.execute(f'CREATE TABLE "{SERVICE}"."{SERVICE}_events" (originator_id uuid NOT NULL, '
                   "originator_version bigint NOT NULL, topic text, state bytea, "
                   "notification_id bigserial, PRIMARY KEY (originator_id, originator_version))")
        db.execute(f'CREATE UNIQUE INDEX ON "{SERVICE}"."{SERVICE}_events" (notification_id)')
        with db.cursor().copy(f'COPY "{SERVICE}"."{SERVICE}_events" (originator_id, '
                              "originator_version, topic, state) FROM STDIN") as copy:
            for row in synthetic_rows(count, state_bytes):
                copy.write_row(row)


def measure(backend: str, count: int, state_bytes: int) -> None:
    key = Ed25519PrivateKey.generate()
    with tempfile.TemporaryDirectory(prefix="tessera-audit-bench-") as workdir:
        if backend == "postgres":
            settings = Settings(database="postgres",
                                postgres_dbname=f"tessera_audit_bench_{secrets.token_hex(4)}")
            fill_postgres(settings, count, state_bytes)
        else:
            settings = Settings(data_dir=Path(workdir))
            fill_sqlite(settings, count, state_bytes)
        try:
            store = open_audit_store(settings, SERVICE, create=True)
            started = time.perf_counter()
            sealed = Sealer(store, key).seal()
            sealing = time.perf_counter() - started
            store.close()
            wall, cpu = time.perf_counter(), time.process_time()
            report = verify_service(settings, SERVICE, {key_id(key.public_key()): key.public_key()})
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            assert report.ok and report.events == count, report
            print(f"{backend:<9} {count:>10,} events ({state_bytes} B states): sealed at "
                  f"{sealed / sealing:,.0f} events/s; verified {report.checkpoints} checkpoints "
                  f"at {count / wall:,.0f} events/s wall, {count / cpu:,.0f} events/s CPU "
                  f"(this process; PostgreSQL's own work not counted)")
        finally:
            if backend == "postgres":
                from tessera.testing.platform import drop_database

                drop_database(settings.postgres_dbname)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--state-bytes", type=int, default=300)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    for backend in args.backends.split(","):
        measure(backend.strip(), args.events, args.state_bytes)


if __name__ == "__main__":
    main()
