"""Warehouse destination: profiles and segment memberships kept current in PostgreSQL.

Tables, in the configured schema (default ``tessera``), created on first use::

    profiles            (profile_id text PRIMARY KEY, traits jsonb NOT NULL,
                         updated_at timestamptz NOT NULL)
    segment_memberships (profile_id text, segment text, is_member boolean NOT NULL,
                         entered_at timestamptz, exited_at timestamptz,
                         updated_at timestamptz NOT NULL, PRIMARY KEY (profile_id, segment))
    loads               (load_id bigserial PRIMARY KEY, operation text NOT NULL,
                         items integer NOT NULL, loaded_at timestamptz NOT NULL DEFAULT now())

A change is applied only if it is not older than what the row already holds
(``updated_at``), so a redelivered or late batch never turns an exit back into an entry;
each batch is one transaction and one row in ``loads``. Deleting a subject removes its
profile and memberships. Segment entries also upsert the profile's traits.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import psycopg
from marshmallow import fields, validate
from psycopg import sql

from connectors.base import (
    DeliveryItem,
    PermanentDeliveryError,
    SendResult,
    TransientDeliveryError,
)
from connectors.sdk.destination import Capability, Destination, DestinationConfigSchema

__all__ = ["PostgresWarehouse"]

_TABLES = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.profiles (
    profile_id text PRIMARY KEY, traits jsonb NOT NULL, updated_at timestamptz NOT NULL);
CREATE TABLE IF NOT EXISTS {schema}.segment_memberships (
    profile_id text NOT NULL, segment text NOT NULL, is_member boolean NOT NULL,
    entered_at timestamptz, exited_at timestamptz, updated_at timestamptz NOT NULL,
    PRIMARY KEY (profile_id, segment));
CREATE TABLE IF NOT EXISTS {schema}.loads (
    load_id bigserial PRIMARY KEY, operation text NOT NULL, items integer NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now());
"""
_UPSERT_PROFILE = """
INSERT INTO {schema}.profiles AS p (profile_id, traits, updated_at) VALUES (%s, %s, %s)
ON CONFLICT (profile_id) DO UPDATE SET traits = p.traits || EXCLUDED.traits,
    updated_at = EXCLUDED.updated_at WHERE p.updated_at <= EXCLUDED.updated_at
"""
_MEMBERSHIP = """
INSERT INTO {schema}.segment_memberships AS m
    (profile_id, segment, is_member, entered_at, exited_at, updated_at)
VALUES (%(profile)s, %(segment)s, %(member)s,
        CASE WHEN %(member)s THEN %(at)s::timestamptz END,
        CASE WHEN %(member)s THEN NULL ELSE %(at)s::timestamptz END, %(at)s)
ON CONFLICT (profile_id, segment) DO UPDATE SET is_member = EXCLUDED.is_member,
    entered_at = COALESCE(EXCLUDED.entered_at, m.entered_at),
    exited_at = EXCLUDED.exited_at, updated_at = EXCLUDED.updated_at
WHERE m.updated_at <= EXCLUDED.updated_at
"""


class WarehouseConfig(DestinationConfigSchema):
    dsn = fields.String(required=True, validate=validate.Length(min=1),
                        metadata={"secret": True, "description": "libpq connection string "
                                  "of the analysts' database (holds its password)."})
    schema = fields.String(load_default="tessera",
                           validate=validate.Regexp(r"^[a-z_][a-z0-9_]{0,62}$",
                                                    error="a lowercase SQL identifier"),
                           metadata={"description": "Schema of the tables (created if "
                                     "missing)."})


class PostgresWarehouse(Destination):
    name: ClassVar[str] = "warehouse"
    config_schema = WarehouseConfig
    capabilities = frozenset({Capability.UPSERT_PROFILE, Capability.ADD_TO_AUDIENCE,
                              Capability.REMOVE_FROM_AUDIENCE, Capability.DELETE_SUBJECT})
    batch_size = 1000

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self._connection: psycopg.Connection | None = None
        self._schema = sql.Identifier(config.get("schema") or "tessera")

    def _sql(self, template: str) -> sql.Composed:
        return sql.SQL(template).format(schema=self._schema)

    def _connect(self) -> psycopg.Connection:
        if self._connection is None or self._connection.closed:
            self._connection = psycopg.connect(self.config["dsn"], connect_timeout=5)
            with self._connection.transaction():
                self._connection.execute(self._sql(_TABLES))
        return self._connection

    def check(self) -> None:
        try:
            self._connect()
        except psycopg.Error as error:
            raise PermanentDeliveryError(f"{self.name}: {type(error).__name__}: {error}") \
                from error

    def deliver(self, operation, destination, items):
        try:
            connection = self._connect()
            with connection.transaction():
                self._apply(connection, operation, items)
                connection.execute(self._sql(
                    "INSERT INTO {schema}.loads (operation, items) VALUES (%s, %s)"),
                    (str(operation), len(items)))
        except psycopg.OperationalError as error:  # connection lost, server restarting
            self.close()
            raise TransientDeliveryError(f"{self.name}: {error}") from error
        except psycopg.Error as error:  # bad data or permissions: the same again would fail
            raise PermanentDeliveryError(f"{self.name}: {type(error).__name__}: {error}") \
                from error
        return SendResult(delivered=[i.idempotency_key for i in items], status=200)

    def _apply(self, connection, operation: Capability, items: list[DeliveryItem]) -> None:
        with connection.cursor() as cursor:
            if operation == Capability.DELETE_SUBJECT:
                ids = [i.profile_id for i in items]
                cursor.execute(self._sql("DELETE FROM {schema}.segment_memberships "
                                         "WHERE profile_id = ANY(%s)"), (ids,))
                cursor.execute(self._sql("DELETE FROM {schema}.profiles "
                                         "WHERE profile_id = ANY(%s)"), (ids,))
                return
            if operation in (Capability.UPSERT_PROFILE, Capability.ADD_TO_AUDIENCE):
                cursor.executemany(self._sql(_UPSERT_PROFILE), [
                    (i.profile_id, json.dumps(self.fields_of(i)), i.occurred_at) for i in items])
            if operation in (Capability.ADD_TO_AUDIENCE, Capability.REMOVE_FROM_AUDIENCE):
                member = operation == Capability.ADD_TO_AUDIENCE
                cursor.executemany(self._sql(_MEMBERSHIP), [
                    {"profile": i.profile_id, "segment": i.segment or "", "member": member,
                     "at": i.occurred_at} for i in items])

    def preview(self, operation, destination, items):
        return [{"operation": str(operation), "schema": self.config.get("schema", "tessera"),
                 "rows": [{"profile_id": i.profile_id, "segment": i.segment,
                           "traits": self.fields_of(i), "at": i.occurred_at} for i in items]}]

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    @classmethod
    def conformance_harness(cls):
        from connectors.fakes.warehouse import ScratchDatabase
        from connectors.sdk.conformance import Harness

        return Harness(
            fake=ScratchDatabase,
            config=lambda db: {"dsn": db.dsn, "schema": "analytics"},
            bad_config=lambda db: {"dsn": db.dsn.replace(db.name, db.name + "_missing")},
            faults=False)
