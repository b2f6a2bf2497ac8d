"""Warehouse destination: profiles, events and segment memberships kept current in PostgreSQL.

Tables, in the configured schema (default ``tessera``), created on first use::

    profiles            (profile_id text PRIMARY KEY, traits jsonb NOT NULL,
                         updated_at timestamptz NOT NULL)
    segment_memberships (profile_id text, segment text, is_member boolean NOT NULL,
                         entered_at timestamptz, exited_at timestamptz,
                         updated_at timestamptz NOT NULL, PRIMARY KEY (profile_id, segment))
    events              (event_id text PRIMARY KEY,      -- the event's messageId
                         profile_id text NOT NULL,       -- the person's profile now
                         resolved_profile_id text NOT NULL,  -- identity's, on arrival
                         type text NOT NULL,             -- identify, track, page, screen, …
                         event text,                     -- track's event, page/screen's name
                         user_id text, anonymous_id text,
                         properties jsonb NOT NULL,      -- track/page/screen properties
                         traits jsonb NOT NULL,          -- identify/group traits
                         context jsonb NOT NULL,
                         occurred_at timestamptz NOT NULL,  -- the clock-corrected timestamp
                         received_at timestamptz,        -- when the gateway received it
                         loaded_at timestamptz NOT NULL DEFAULT now())
                         INDEX (profile_id, occurred_at), INDEX (occurred_at)
    loads               (load_id bigserial PRIMARY KEY, operation text NOT NULL,
                         items integer NOT NULL, loaded_at timestamptz NOT NULL DEFAULT now())

A change is applied only if it is not older than what the row already holds
(``updated_at``), so a redelivered or late batch never turns an exit back into an entry;
each batch is one transaction and one row in ``loads``. Segment entries also upsert the
profile's traits.

Events arrive only for a destination configured with ``events: true`` (capability
``track_events``), each once its consent was decided for the destination's purposes; an
event delivered again (a retry, a replay) is kept once (``ON CONFLICT DO NOTHING`` on its
messageId). Deleting a subject removes its profile, memberships and events.

Merges and splits (``merge_profiles``): a merge moves the absorbed profiles' events to
the survivor (``profile_id``), folds their memberships into the survivor's and replaces
the survivor's traits with the merged ones, dropping the absorbed profiles' rows; a
split gives each part back the events identity resolved to it on arrival
(``resolved_profile_id``), its own traits, and the split profile's memberships until
segments re-evaluate it. Events that arrived under the survivor's id stay with it. A
split of a profile the warehouse never held is skipped. Like every delivery, merges and
splits are decided on consent at send time.
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
CREATE TABLE IF NOT EXISTS {schema}.events (
    event_id text PRIMARY KEY, profile_id text NOT NULL, resolved_profile_id text NOT NULL,
    type text NOT NULL, event text,
    user_id text, anonymous_id text, properties jsonb NOT NULL, traits jsonb NOT NULL,
    context jsonb NOT NULL, occurred_at timestamptz NOT NULL, received_at timestamptz,
    loaded_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX IF NOT EXISTS events_profile_time ON {schema}.events (profile_id, occurred_at);
CREATE INDEX IF NOT EXISTS events_time ON {schema}.events (occurred_at);
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
_EVENT = """
INSERT INTO {schema}.events (event_id, profile_id, resolved_profile_id, type, event, user_id,
    anonymous_id, properties, traits, context, occurred_at, received_at)
VALUES (%(event_id)s, %(profile_id)s, %(profile_id)s, %(type)s, %(event)s, %(user_id)s,
    %(anonymous_id)s,
    %(properties)s, %(traits)s, %(context)s, %(occurred_at)s, %(received_at)s)
ON CONFLICT (event_id) DO NOTHING
"""
# A merge or split knows the whole person: their traits replace the row's.
_REPLACE_PROFILE = """
INSERT INTO {schema}.profiles AS p (profile_id, traits, updated_at) VALUES (%s, %s, %s)
ON CONFLICT (profile_id) DO UPDATE SET traits = EXCLUDED.traits,
    updated_at = GREATEST(p.updated_at, EXCLUDED.updated_at)
"""
# The absorbed profiles' memberships become the survivor's (a member of either is one);
# segments re-evaluate the survivor and correct this with entries and exits after.
_FOLD_MEMBERSHIPS = """
INSERT INTO {schema}.segment_memberships AS m
    (profile_id, segment, is_member, entered_at, exited_at, updated_at)
SELECT DISTINCT ON (segment) %(survivor)s, segment, is_member, entered_at, exited_at,
    updated_at
FROM {schema}.segment_memberships WHERE profile_id = ANY(%(absorbed)s)
ORDER BY segment, is_member DESC, updated_at DESC
ON CONFLICT (profile_id, segment) DO UPDATE SET is_member = m.is_member OR EXCLUDED.is_member,
    entered_at = LEAST(m.entered_at, EXCLUDED.entered_at),
    exited_at = CASE WHEN m.is_member OR EXCLUDED.is_member THEN NULL
                     ELSE GREATEST(m.exited_at, EXCLUDED.exited_at) END,
    updated_at = GREATEST(m.updated_at, EXCLUDED.updated_at)
"""
# A split part starts with the memberships of the profile it left, until segments say.
_COPY_MEMBERSHIPS = """
INSERT INTO {schema}.segment_memberships
    (profile_id, segment, is_member, entered_at, exited_at, updated_at)
SELECT %(part)s, segment, is_member, entered_at, exited_at, updated_at
FROM {schema}.segment_memberships WHERE profile_id = %(split)s
ON CONFLICT (profile_id, segment) DO NOTHING
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
                              Capability.REMOVE_FROM_AUDIENCE, Capability.DELETE_SUBJECT,
                              Capability.TRACK_EVENTS, Capability.MERGE_PROFILES})
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
                applied = self._apply(connection, operation, items)
                connection.execute(self._sql(
                    "INSERT INTO {schema}.loads (operation, items) VALUES (%s, %s)"),
                    (str(operation), len(applied)))
        except psycopg.OperationalError as error:  # connection lost, server restarting
            self.close()
            raise TransientDeliveryError(f"{self.name}: {error}") from error
        except psycopg.Error as error:  # bad data or permissions: the same again would fail
            raise PermanentDeliveryError(f"{self.name}: {type(error).__name__}: {error}") \
                from error
        return SendResult(delivered=[i.idempotency_key for i in applied], status=200)

    def _apply(self, connection, operation: Capability,
               items: list[DeliveryItem]) -> list[DeliveryItem]:
        """Carry out the batch; returns the items that had something to change."""
        with connection.cursor() as cursor:
            if operation == Capability.DELETE_SUBJECT:
                ids = sorted(_subject_ids(items))
                for table in ("segment_memberships", "profiles"):
                    cursor.execute(self._sql(f"DELETE FROM {{schema}}.{table} "
                                             "WHERE profile_id = ANY(%s)"), (ids,))
                cursor.execute(self._sql("DELETE FROM {schema}.events WHERE profile_id = "
                                         "ANY(%s) OR resolved_profile_id = ANY(%s)"),
                               (ids, ids))
                return items
            if operation == Capability.TRACK_EVENTS:
                cursor.executemany(self._sql(_EVENT), [_event_row(i) for i in items])
                return items
            if operation == Capability.MERGE_PROFILES:
                return [i for i in items if self._reconcile(cursor, i)]
            if operation in (Capability.UPSERT_PROFILE, Capability.ADD_TO_AUDIENCE):
                cursor.executemany(self._sql(_UPSERT_PROFILE), [
                    (i.profile_id, json.dumps(self.fields_of(i)), i.occurred_at) for i in items])
            if operation in (Capability.ADD_TO_AUDIENCE, Capability.REMOVE_FROM_AUDIENCE):
                member = operation == Capability.ADD_TO_AUDIENCE
                cursor.executemany(self._sql(_MEMBERSHIP), [
                    {"profile": i.profile_id, "segment": i.segment or "", "member": member,
                     "at": i.occurred_at} for i in items])
        return items

    def _reconcile(self, cursor, item: DeliveryItem) -> bool:
        """A merge folds the absorbed profiles' rows into the survivor's; a split gives a
        part back its own events (those identity resolved to it when they arrived). A
        split of a profile this warehouse never held changes nothing."""
        survivor = item.profile_id
        if item.action == "merged":
            absorbed = [m["profile_id"] for m in item.merged_profiles
                        if m["profile_id"] != survivor]
            cursor.execute(self._sql(_FOLD_MEMBERSHIPS),
                           {"survivor": survivor, "absorbed": absorbed})
            for table in ("segment_memberships", "profiles"):
                cursor.execute(self._sql(f"DELETE FROM {{schema}}.{table} "
                                         "WHERE profile_id = ANY(%s)"), (absorbed,))
            cursor.execute(self._sql("UPDATE {schema}.events SET profile_id = %s "
                                     "WHERE profile_id = ANY(%s)"), (survivor, absorbed))
        else:
            split = item.split_from or survivor
            held = cursor.execute(self._sql(
                "SELECT EXISTS (SELECT 1 FROM {schema}.profiles WHERE profile_id = %(p)s) OR "
                "EXISTS (SELECT 1 FROM {schema}.events WHERE profile_id = %(p)s)"),
                {"p": split}).fetchone()[0]
            if not held:
                return False
            if survivor != split:
                cursor.execute(self._sql(_COPY_MEMBERSHIPS), {"part": survivor, "split": split})
                cursor.execute(self._sql("UPDATE {schema}.events SET profile_id = %s WHERE "
                                         "profile_id = %s AND resolved_profile_id = %s"),
                               (survivor, split, survivor))
        cursor.execute(self._sql(_REPLACE_PROFILE),
                       (survivor, json.dumps(self.fields_of(item)), item.occurred_at))
        return True

    def preview(self, operation, destination, items):
        if operation == Capability.TRACK_EVENTS:
            return [{"operation": str(operation), "schema": self.config.get("schema", "tessera"),
                     "rows": [_event_row(i) for i in items]}]
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


def _subject_ids(items: list[DeliveryItem]) -> set[str]:
    """The profile ids to delete: each item's own, and those an erasure names (every
    profile merged into the person) in ``identifiers["profile_ids"]``."""
    ids = {i.profile_id for i in items if i.profile_id}
    for item in items:
        ids.update((item.identifiers or {}).get("profile_ids") or ())
    return ids


def _event_row(item: DeliveryItem) -> dict[str, Any]:
    event = item.event or {}
    return {
        "event_id": event.get("messageId") or item.idempotency_key,
        "profile_id": item.profile_id,
        "type": event.get("type") or "unknown",
        "event": event.get("event") or event.get("name"),
        "user_id": event.get("userId"),
        "anonymous_id": event.get("anonymousId"),
        "properties": json.dumps(event.get("properties") or {}),
        "traits": json.dumps(event.get("traits") or {}),
        "context": json.dumps(event.get("context") or {}),
        "occurred_at": event.get("timestamp") or item.occurred_at,
        "received_at": event.get("receivedAt") or item.received_at,
    }
