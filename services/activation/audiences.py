"""Who is in which segment, and which destination holds whom: what activation needs to act
on a change of consent (`consent.changed`).

Two read-model tables beside activation's event store, written in the transaction of the
save they belong to (shared.readmodel):

- `memberships`: the segments each profile is in now, with the traits and cause of its
  entry (from `segments.membership_changed`): consent granted later plans deliveries
  for these;
- `holdings`: the (destination, segment, profile) a destination received an add for and
  no remove since: withdrawal, objection and restriction remove the person from these.
"""

from __future__ import annotations

import json
from typing import Any

from shared.readmodel import ReadModel, Writes

# A removal planned because consent went away: sent without a consent decision (it sends
# nothing new, and the person asked for it), and only to a destination still holding them.
CONSENT_REMOVAL = "consent_removal"
# An add planned because consent was granted later: dropped at send time if the
# destination holds the person already (an earlier add got there first).
CONSENT_ACTIVATION = "consent_activation"
NO_CAUSE = {"partition": "0", "position": 0}
TAKE_AWAY = frozenset({"withdrawn", "restricted"})
GIVE_BACK = frozenset({"granted", "restriction_lifted"})


def tables(rm: ReadModel) -> list[str]:
    t = rm.table
    return [
        f"CREATE TABLE IF NOT EXISTS {t('memberships')} (profile_id TEXT NOT NULL, "
        "segment TEXT NOT NULL, traits TEXT NOT NULL, cause TEXT NOT NULL, "
        "PRIMARY KEY (profile_id, segment))",
        f"CREATE TABLE IF NOT EXISTS {t('holdings')} (destination TEXT NOT NULL, "
        "profile_id TEXT NOT NULL, segment TEXT NOT NULL, traits TEXT NOT NULL, "
        "PRIMARY KEY (destination, profile_id, segment))",
        f"CREATE INDEX IF NOT EXISTS holdings_profile ON {t('holdings')} (profile_id)",
    ]


class Audiences:
    def __init__(self, rm: ReadModel):
        self.rm = rm
        self.rm.create(*tables(rm))

    def forget(self, profile_ids: list[str]) -> None:
        """Erasure: the traits kept here are the person's own."""
        for table in ("memberships", "holdings"):
            for profile_id in profile_ids:
                self.rm.execute(f"DELETE FROM {self.rm.table(table)} WHERE profile_id = %s",
                                [profile_id])

    # ---- writes, riding along with the save that caused them ---------------------------
    def membership_writes(self, changes: list[dict[str, Any]]) -> Writes:
        t = self.rm.table
        writes = Writes()
        for change in changes:
            if change["change"] == "entered":
                writes.add(
                    f"INSERT INTO {t('memberships')} (profile_id, segment, traits, cause) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (profile_id, segment) DO UPDATE SET "
                    "traits = excluded.traits, cause = excluded.cause",
                    [(change["profile_id"], change["segment"],
                      json.dumps(change.get("traits") or {}), json.dumps(change["cause"]))])
            else:
                writes.add(f"DELETE FROM {t('memberships')} WHERE profile_id = %s "
                           "AND segment = %s", [(change["profile_id"], change["segment"])])
        return writes

    def delivery_writes(self, destination: str, delivered: list[dict[str, Any]]) -> Writes:
        t = self.rm.table
        writes = Writes()
        for item in delivered:
            if item.get("segment") is None:
                continue
            if item["action"] == "entered":
                writes.add(
                    f"INSERT INTO {t('holdings')} (destination, profile_id, segment, traits) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (destination, profile_id, segment) "
                    "DO UPDATE SET traits = excluded.traits",
                    [(destination, item["profile_id"], item["segment"],
                      json.dumps(item.get("traits") or {}))])
            else:
                writes.add(f"DELETE FROM {t('holdings')} WHERE destination = %s AND "
                           "profile_id = %s AND segment = %s",
                           [(destination, item["profile_id"], item["segment"])])
        return writes

    # ---- reads ------------------------------------------------------------------------
    def memberships(self, profile_ids: list[str]) -> list[dict[str, Any]]:
        if not profile_ids:
            return []
        marks = ", ".join(["%s"] * len(profile_ids))
        rows = self.rm.query(f"SELECT profile_id, segment, traits, cause FROM "
                             f"{self.rm.table('memberships')} WHERE profile_id IN ({marks})",
                             profile_ids)
        # Rows are sqlite3.Row or psycopg dicts: read them by column name.
        return [{"profile_id": r["profile_id"], "segment": r["segment"],
                 "traits": json.loads(r["traits"]), "cause": json.loads(r["cause"])}
                for r in rows]

    def holdings(self, profile_ids: list[str]) -> list[dict[str, Any]]:
        if not profile_ids:
            return []
        marks = ", ".join(["%s"] * len(profile_ids))
        rows = self.rm.query(f"SELECT destination, profile_id, segment, traits FROM "
                             f"{self.rm.table('holdings')} WHERE profile_id IN ({marks})",
                             profile_ids)
        return [{"destination": r["destination"], "profile_id": r["profile_id"],
                 "segment": r["segment"], "traits": json.loads(r["traits"])} for r in rows]


def plan_for_consent_change(change: dict[str, Any], destinations, audiences: Audiences
                            ) -> list[dict[str, Any]]:
    """Deliveries one change of consent calls for, for destinations serving its purposes:
    removals from every audience the person may have fed, or adds for the segments they
    are in now (each decided on consent when it is sent, like any other)."""
    concerned = [d for d in destinations
                 if set(d.purposes) & set(change["purposes"])]
    if not concerned:
        return []
    members = audiences.memberships(change["profile_ids"])
    held = audiences.holdings(change["profile_ids"])
    planned: dict[str, dict[str, Any]] = {}

    def plan(destination, row, action, cause, removal):
        key = (f"{destination.name}:{row['profile_id']}:{row['segment']}:"
               f"consent_{change['change']}:{change['position']}")
        planned.setdefault(key, {
            "idempotency_key": key, "destination": destination.name,
            "profile_id": row["profile_id"], "segment": row["segment"], "action": action,
            "traits": row["traits"], "occurred_at": change["at"], "cause": cause,
            "received_at": None, CONSENT_REMOVAL: removal, CONSENT_ACTIVATION: not removal})

    if change["change"] in TAKE_AWAY:
        # Memberships too, not only holdings: an add may be on its way to a destination
        # still; the removal goes after it, and is sent only if the add arrived.
        for destination in concerned:
            for row in held:
                if row["destination"] == destination.name:
                    plan(destination, row, "exited", NO_CAUSE, True)
            for row in members:
                if destination.follows(row["segment"]):
                    plan(destination, row, "exited", NO_CAUSE, True)
    elif change["change"] in GIVE_BACK:
        holding = {(r["destination"], r["profile_id"], r["segment"]) for r in held}
        for destination in concerned:
            for row in members:
                if destination.follows(row["segment"]) and (
                        destination.name, row["profile_id"], row["segment"]) not in holding:
                    plan(destination, row, "entered", row["cause"], False)
    return list(planned.values())
