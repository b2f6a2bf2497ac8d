"""Read models kept in a service's own database, written in the same transaction as its events.

A service that needs fast reads of current state over many subjects (segments' backfill
reads every profile) keeps a table beside its event store. Its writes ride along with
`ServiceApplication.save_processed`: the recorder runs them inside the transaction that
stores the events and the tracking record, so the read model is never ahead of or behind
what the service has processed.

SQL is written once with `%s` placeholders; SQLite gets `?`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

READ_MODEL_WRITES = "read_model_writes"


@dataclass
class Writes:
    """Statements to run, in order, inside the transaction that records a save.

    A statement may come with a PostgreSQL `bulk` form that takes one array per column
    (`... SELECT * FROM unnest(%s::text[], ...)`): one round of parsing and planning for
    the whole batch instead of one per row.
    """

    statements: list[tuple[str, list[Sequence[Any]], str | None]] = field(default_factory=list)

    def add(self, sql: str, rows: list[Sequence[Any]], bulk: str | None = None) -> None:
        if rows:
            self.statements.append((sql, rows, bulk))

    def extend(self, other: Writes | None) -> None:
        if other is not None:
            self.statements.extend(other.statements)

    def __bool__(self) -> bool:
        return bool(self.statements)


def run_writes(cursor: Any, kwargs: dict[str, Any], sqlite: bool) -> None:
    """Called by the recorders (shared.pg_recorder, SQLiteReadModelRecorder below)."""
    writes: Writes | None = kwargs.get(READ_MODEL_WRITES)
    if not writes:
        return
    for sql, rows, bulk in writes.statements:
        if sqlite:
            cursor.executemany(sql.replace("%s", "?"), rows)
        elif bulk is not None and len(rows) > 1:
            cursor.execute(bulk, [list(column) for column in zip(*rows, strict=True)])
        else:
            cursor.executemany(sql, rows)


class ReadModel:
    """Reads and schema of one service's read-model tables (SQLite file or PG schema)."""

    def __init__(self, recorder: Any, schema: str | None):
        self.datastore = recorder.datastore
        self.sqlite = schema is None
        self.schema = schema
        self.prefix = "" if schema is None else f'"{schema}".'

    def table(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def sql(self, statement: str) -> str:
        return statement.replace("%s", "?") if self.sqlite else statement

    def create(self, *statements: str) -> None:
        """Create the tables, one process at a time: replicas starting together would
        otherwise collide in PostgreSQL's catalog (CREATE ... IF NOT EXISTS is not safe
        against itself). Same lock as the event store's tables (shared.store)."""
        with self.datastore.transaction(commit=True) as cursor:
            if not self.sqlite:
                cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                               (f"tessera.schema.{self.schema}",))
            for statement in statements:
                cursor.execute(statement)

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        with self.datastore.transaction(commit=False) as cursor:
            if self.sqlite:
                cursor.execute(self.sql(statement), tuple(params))
            else:  # binary results: bytea arrives as bytes, not as hex text to decode
                cursor.execute(statement, tuple(params), binary=True)
            return list(cursor.fetchall())

    def execute(self, statement: str, params: Sequence[Any] = ()) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(self.sql(statement), tuple(params))

    def pages(self, statement: str, key_column: str, size: int,
              after: Any = "") -> Iterator[list[Any]]:
        """Rows in key order, `size` at a time, by key (no long-lived cursor to hold)."""
        while True:
            rows = self.query(statement, (after, size))
            if not rows:
                return
            yield rows
            if len(rows) < size:
                return
            after = rows[-1][key_column]


try:
    from eventsourcing.sqlite import SQLiteProcessRecorder
except ImportError:  # pragma: no cover
    SQLiteProcessRecorder = object  # type: ignore[misc,assignment]


class SQLiteReadModelRecorder(SQLiteProcessRecorder):  # type: ignore[misc,valid-type]
    """SQLite's process recorder, also running the read-model writes of a save."""

    def _insert_events(self, c, stored_events, **kwargs):
        returning = super()._insert_events(c, stored_events, **kwargs)
        run_writes(c, kwargs, sqlite=True)
        return returning
