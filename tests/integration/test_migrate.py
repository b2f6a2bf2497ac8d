"""`tessera migrate` (the chart's init Job) prepares PostgreSQL for every service and exits."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import psycopg
import pytest

from tessera.testing.platform import SERVICES, drop_database

pytestmark = pytest.mark.integration


@pytest.fixture
def database_name():
    name = f"tessera_migrate_{secrets.token_hex(4)}"
    yield name
    drop_database(name)


def migrate(database: str, *services: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    env |= {"TESSERA_DATABASE": "postgres", "TESSERA_POSTGRES_DBNAME": database}
    return subprocess.run([sys.executable, "-m", "tessera.cli", "migrate", *services],
                          env=env, capture_output=True, text=True, timeout=120)


def tables_by_schema(database: str) -> dict[str, set[str]]:
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={database}") as db:
        rows = db.execute("SELECT table_schema, table_name FROM information_schema.tables "
                          "WHERE table_schema = ANY(%s)", (list(SERVICES),)).fetchall()
    found: dict[str, set[str]] = {}
    for schema, table in rows:
        found.setdefault(schema, set()).add(table)
    return found


def test_migrate_creates_the_database_and_each_services_event_table(database_name):
    finished = migrate(database_name)

    assert finished.returncode == 0, finished.stderr
    tables = tables_by_schema(database_name)
    assert set(tables) == set(SERVICES)
    assert all(f"{service}_events" in tables[service] for service in SERVICES)


def test_migrating_twice_changes_nothing_and_succeeds(database_name):
    assert migrate(database_name, "contacts").returncode == 0
    again = migrate(database_name, "contacts")

    assert again.returncode == 0, again.stderr
    assert set(tables_by_schema(database_name)) == {"contacts"}


def test_migrate_refuses_an_unknown_service_by_name(database_name):
    finished = migrate(database_name, "billing")

    assert finished.returncode != 0
    assert "unknown service(s): billing" in finished.stderr
