"""The contact directory: contacts' read model for search, accounts and account timelines.

Written in the same transaction as the contacts batch that changed it (shared.readmodel),
so a search never sees a contact ahead of or behind its profile. Prefix searches are
index range scans (`key >= prefix AND key < prefix + U+FFFF`) on lower-cased keys with
byte-wise collation, which PostgreSQL and SQLite both run from a B-tree.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from shared.readmodel import ReadModel, Writes

SEARCH_LIMIT = 50
PREFIX_END = "\uffff"

CONTACT_COLUMNS = ("profile_id", "email_key", "name_key", "last_name_key", "owner", "stage",
                   "doc", "updated_at")
SHOWN_TRAITS = ("email", "phone", "title", "company", "owner")


def contact_name(traits: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(full name, last name) from Segment's or the CRMs' spelling of name traits."""
    first = traits.get("firstName") or traits.get("first_name") or traits.get("firstname")
    last = traits.get("lastName") or traits.get("last_name") or traits.get("lastname")
    full = traits.get("name") or " ".join(str(part) for part in (first, last) if part) or None
    if last is None and isinstance(full, str) and " " in full.strip():
        last = full.strip().rsplit(" ", 1)[1]
    return (str(full) if full else None), (str(last) if last else None)


NAME_TRAITS = ("name", "firstName", "first_name", "firstname", "lastName", "last_name",
               "lastname")


def entry_signature(profile: Any) -> tuple[Any, ...]:
    """What a profile's directory entry is made of, cheap to compare: most batches change
    a profile's timeline only, and its entry need not even be rendered."""
    traits = profile.traits
    return (profile.stage, sorted(profile.accounts.items()),
            [traits.get(trait) for trait in (*NAME_TRAITS, *SHOWN_TRAITS)])


def _key(value: Any) -> str | None:
    return value.strip().lower() if isinstance(value, str) and value.strip() else None


def contact_row(profile: Any) -> tuple[Any, ...]:
    """One `contacts` row (CONTACT_COLUMNS) of a live profile; `updated_at` is when the
    profile was last seen at the time its entry last changed (entry_signature)."""
    traits = profile.traits
    name, last = contact_name(traits)
    doc = {"profile_id": profile.profile_id, "name": name,
           **{trait: traits.get(trait) for trait in SHOWN_TRAITS},
           "lifecycle_stage": profile.stage, "accounts": profile.accounts}
    owner = traits.get("owner")
    return (profile.profile_id, _key(traits.get("email")), _key(name), _key(last),
            None if owner is None else str(owner), profile.stage, json.dumps(doc),
            profile.last_seen or "")


def tables(t: Callable[[str], str], sqlite: bool) -> list[str]:
    """DDL of the directory; `t` names a table in the service's schema (ReadModel.table)."""
    key = "TEXT" if sqlite else 'TEXT COLLATE "C"'
    return [
        f"CREATE TABLE IF NOT EXISTS {t('contacts')} (profile_id TEXT PRIMARY KEY, "
        f"email_key {key}, name_key {key}, last_name_key {key}, owner TEXT, stage TEXT, "
        "doc TEXT NOT NULL, updated_at TEXT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {t('contact_identifiers')} (value TEXT NOT NULL, "
        "kind TEXT NOT NULL, profile_id TEXT NOT NULL, PRIMARY KEY (value, kind, profile_id))",
        f"CREATE TABLE IF NOT EXISTS {t('accounts')} (account_id TEXT PRIMARY KEY, "
        f"name_key {key}, doc TEXT NOT NULL, updated_at TEXT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS {t('contact_accounts')} (account_id TEXT NOT NULL, "
        "profile_id TEXT NOT NULL, role TEXT NOT NULL, PRIMARY KEY (account_id, profile_id))",
        f"CREATE TABLE IF NOT EXISTS {t('account_activity')} (account_id TEXT NOT NULL, "
        "at TEXT NOT NULL, profile_id TEXT NOT NULL, doc TEXT NOT NULL)",
    ]


def indexes(t: Callable[[str], str]) -> list[str]:
    """Separate from `tables` so a bulk load (bench/contacts.py) can build them after COPY."""
    return [
        f"CREATE INDEX IF NOT EXISTS contacts_email ON {t('contacts')} (email_key)",
        f"CREATE INDEX IF NOT EXISTS contacts_name ON {t('contacts')} (name_key)",
        f"CREATE INDEX IF NOT EXISTS contacts_last_name ON {t('contacts')} (last_name_key)",
        f"CREATE INDEX IF NOT EXISTS contacts_owner ON {t('contacts')} (owner, name_key)",
        f"CREATE INDEX IF NOT EXISTS contacts_stage ON {t('contacts')} (stage, name_key)",
        f"CREATE INDEX IF NOT EXISTS contact_accounts_profile ON {t('contact_accounts')} "
        "(profile_id)",
        f"CREATE INDEX IF NOT EXISTS accounts_name ON {t('accounts')} (name_key)",
        f"CREATE INDEX IF NOT EXISTS account_activity_account ON {t('account_activity')} "
        "(account_id, at)",
    ]


class RecentlyWritten:
    """Rows this process wrote last. Most batches only add events to a timeline: their
    contacts' entries and identifiers are unchanged and need no write at all.

    Identifier rows are only ever inserted (and deleted with a merged-away profile, which
    gets no more events until a split gives it back: `split` forgets them), so a remembered
    one stays true; a contact's entry is remembered with the profile's version, and trusted
    only while the profile is at that version.
    """

    def __init__(self, most: int = 200_000):
        self.rows: dict[Any, Any] = {}
        self.most = most

    def unchanged(self, key: Any, row: Any) -> bool:
        return self.rows.get(key, _NOT_WRITTEN) == row

    def remember(self, written: dict[Any, Any]) -> None:
        if len(self.rows) + len(written) > self.most:
            self.rows.clear()
        self.rows.update(written)

    def forget(self) -> None:
        """After a failed save: what is in the database is no longer known."""
        self.rows.clear()

    def forget_key(self, key: Any) -> None:
        self.rows.pop(key, None)


_NOT_WRITTEN = object()


class DirectoryChanges:
    """What one batch (or API command) changes in the directory, turned into `Writes`.

    Call `saved()` once the save went through, so the rows count as written.
    """

    def __init__(self, rm: ReadModel, recent: RecentlyWritten | None = None):
        self.rm = rm
        self.recent = recent if recent is not None else RecentlyWritten(most=0)
        self._written: dict[Any, Any] = {}
        self.identifiers: dict[tuple[str, str, str], None] = {}
        self.merges: list[tuple[str, str]] = []  # (absorbed, survivor)
        self.split_off: list[tuple[str, str, str]] = []  # (value, kind, profile split)
        self.accounts: dict[str, dict[str, Any]] = {}
        self.activity: list[tuple[str, str, str, str]] = []

    def saw_identifiers(self, profile_id: str, identifiers: Iterable[Iterable[str]]) -> None:
        for kind, value in identifiers:
            self.identifiers[(value, kind, profile_id)] = None

    def merged(self, absorbed_id: str, survivor_id: str) -> None:
        self.merges.append((absorbed_id, survivor_id))

    def split(self, split_id: str, part_id: str, identifiers: Iterable[tuple[str, str]]) -> None:
        """Identity split `part_id` off `split_id`: its identifiers find it again."""
        for kind, value in identifiers:
            self.split_off.append((value, kind, split_id))
            self.identifiers[(value, kind, part_id)] = None
            # Written before the merge, deleted by it: not a row this process can trust.
            self.recent.forget_key((value, kind, part_id))

    def saw_account(self, account_id: str, traits: Mapping[str, Any], at: str) -> None:
        seen = self.accounts.setdefault(account_id, {"traits": {}, "at": at})
        seen["traits"].update(traits)
        seen["at"] = max(seen["at"], at)

    def account_event(self, account_id: str, profile_id: str, entry: Mapping[str, Any]) -> None:
        self.activity.append((account_id, entry.get("timestamp") or "", profile_id,
                              json.dumps(entry, default=str)))

    def writes(self, profiles: Iterable[Any]) -> Writes:
        t, writes = self.rm.table, Writes()
        changed = [p for p in profiles if getattr(p, "pending_events", None)]
        live = [p for p in changed if p.merged_into is None]
        self._merge_writes(writes)
        writes.add(f"DELETE FROM {t('contact_identifiers')} WHERE value = %s AND kind = %s "
                   "AND profile_id = %s", self.split_off)
        entries = self._contact_writes(writes, live,
                                       [p.profile_id for p in changed if p.merged_into])
        writes.add(
            f"INSERT INTO {t('contact_identifiers')} (value, kind, profile_id) "
            "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            self._fresh([(key, key) for key in self.identifiers]),
            bulk=f"INSERT INTO {t('contact_identifiers')} (value, kind, profile_id) SELECT * "
                 "FROM unnest(%s::text[], %s::text[], %s::text[]) ON CONFLICT DO NOTHING")
        # A profile's links are part of its entry (entry_signature): written with it.
        links = [(account, p.profile_id, role) for p in entries
                 for account, role in p.accounts.items()]
        writes.add(
            f"INSERT INTO {t('contact_accounts')} (account_id, profile_id, role) "
            "VALUES (%s, %s, %s) ON CONFLICT (account_id, profile_id) DO UPDATE SET "
            "role = excluded.role", links)
        self._account_writes(writes)
        writes.add(f"INSERT INTO {t('account_activity')} (account_id, at, profile_id, doc) "
                   "VALUES (%s, %s, %s, %s)", self.activity)
        return writes

    def saved(self) -> None:
        self.recent.remember(self._written)

    def _fresh(self, keyed_rows: list[tuple[Any, tuple]],
               compare: Callable[[tuple], Any] = lambda row: row) -> list[tuple]:
        """The rows not already written as they are (updated_at aside: see contact_row)."""
        fresh = []
        for key, row in keyed_rows:
            if not self.recent.unchanged(key, compare(row)):
                fresh.append(row)
                self._written[key] = compare(row)
        return fresh

    def _merge_writes(self, writes: Writes) -> None:
        t = self.rm.table
        writes.add(
            f"INSERT INTO {t('contact_identifiers')} (value, kind, profile_id) SELECT value, "
            f"kind, %s FROM {t('contact_identifiers')} WHERE profile_id = %s "
            "ON CONFLICT DO NOTHING", [(survivor, absorbed) for absorbed, survivor in self.merges])
        for table in ("contact_identifiers", "contact_accounts"):
            writes.add(f"DELETE FROM {t(table)} WHERE profile_id = %s",
                       [(absorbed,) for absorbed, _ in self.merges])
        writes.add(f"UPDATE {t('account_activity')} SET profile_id = %s WHERE profile_id = %s",
                   [(survivor, absorbed) for absorbed, survivor in self.merges])

    def _contact_writes(self, writes: Writes, live: list[Any], gone: list[str]) -> list[Any]:
        """Writes the entries of the profiles whose entry changed; returns those profiles."""
        t = self.rm.table
        columns = ", ".join(CONTACT_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in CONTACT_COLUMNS[1:])
        writes.add(f"DELETE FROM {t('contacts')} WHERE profile_id = %s", [(g,) for g in gone])
        entries = []
        for profile in live:
            # Only trusted if nobody saved the profile since this process wrote its entry
            # (another replica may have owned its partition meanwhile).
            loaded_version = profile.version - len(profile.pending_events)
            signature = entry_signature(profile)
            if not self.recent.unchanged(profile.profile_id, (loaded_version, signature)):
                entries.append(profile)
            # Written or still right: either way true of the version this save makes.
            self._written[profile.profile_id] = (profile.version, signature)
        rows = [contact_row(profile) for profile in entries]
        writes.add(
            f"INSERT INTO {t('contacts')} ({columns}) VALUES ({', '.join(['%s'] * 8)}) "
            f"ON CONFLICT (profile_id) DO UPDATE SET {updates}", rows,
            bulk=f"INSERT INTO {t('contacts')} ({columns}) SELECT * FROM unnest("
                 f"{', '.join(['%s::text[]'] * 8)}) ON CONFLICT (profile_id) DO UPDATE SET "
                 f"{updates}")
        return entries

    def _account_writes(self, writes: Writes) -> None:
        t = self.rm.table
        merged_doc = ("json_patch(existing.doc, excluded.doc)" if self.rm.sqlite else
                      "(existing.doc::jsonb || excluded.doc::jsonb)::text")
        # In key order: partitions upserting the same accounts then lock rows in one order
        # and cannot deadlock each other.
        rows = self._fresh([(("account", account_id), (
            account_id, _key(seen["traits"].get("name")),
            json.dumps(seen["traits"], sort_keys=True), seen["at"]))
            for account_id, seen in sorted(self.accounts.items())], compare=lambda row: row[:-1])
        writes.add(
            f"INSERT INTO {t('accounts')} AS existing (account_id, name_key, doc, updated_at) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (account_id) DO UPDATE SET "
            "name_key = COALESCE(excluded.name_key, existing.name_key), "
            f"doc = {merged_doc}, updated_at = excluded.updated_at", rows)


class Directory:
    """Queries of the directory."""

    def __init__(self, rm: ReadModel):
        self.rm = rm

    def create(self) -> None:
        self.rm.create(*tables(self.rm.table, self.rm.sqlite), *indexes(self.rm.table))

    def search(self, *, identifier: str | None = None, email: str | None = None,
               name: str | None = None, account: str | None = None, owner: str | None = None,
               stage: str | None = None, limit: int = SEARCH_LIMIT) -> list[dict[str, Any]]:
        """Contacts matching every criterion given: exact on an identifier, owner, stage or
        account; prefix on email and on name (full name first, then last name).

        An identifier or a name may match in several ways; each way is its own query that
        an index answers in order, rather than one OR that no index can.
        """
        t = self.rm.table
        shared: list[tuple[str, list[Any]]] = []
        if email is not None:
            shared.append(("c.email_key >= %s AND c.email_key < %s", _prefix(email)))
        if account is not None:
            shared.append((f"c.profile_id IN (SELECT profile_id FROM {t('contact_accounts')} "
                           "WHERE account_id = %s)", [account]))
        for column, value in (("owner", owner), ("stage", stage)):
            if value is not None:
                shared.append((f"c.{column} = %s", [value]))
        ways = [(shared, "c.email_key" if email is not None else "c.name_key")]
        if identifier is not None:
            ways = [([*where, way], order) for where, order in ways
                    for way in self._identifier_ways(identifier)]
        if name is not None:
            ways = [([*where, (f"c.{key} >= %s AND c.{key} < %s", _prefix(name))], f"c.{key}")
                    for where, _ in ways for key in ("name_key", "last_name_key")]
        if not any(where for where, _ in ways):
            raise ValueError("search: give at least one of identifier, email, name, account, "
                             "owner or stage")
        found: dict[str, dict[str, Any]] = {}
        for where, order in ways:
            if len(found) >= limit:
                break
            rows = self.rm.query(
                f"SELECT c.profile_id, c.doc FROM {t('contacts')} c WHERE "
                f"{' AND '.join(sql for sql, _ in where)} ORDER BY {order} LIMIT %s",
                [*(p for _, params in where for p in params), limit])
            for row in rows:
                found.setdefault(row["profile_id"], json.loads(row["doc"]))
        return list(found.values())[:limit]

    def _identifier_ways(self, identifier: str) -> list[tuple[str, list[Any]]]:
        lowered = identifier.strip().lower()
        return [
            (f"c.profile_id IN (SELECT profile_id FROM {self.rm.table('contact_identifiers')} "
             "WHERE value IN (%s, %s))", [identifier, lowered]),
            ("c.email_key = %s", [lowered]),
            ("c.profile_id = %s", [identifier]),
        ]

    def account(self, account_id: str) -> dict[str, Any] | None:
        t = self.rm.table
        rows = self.rm.query(f"SELECT doc, updated_at FROM {t('accounts')} WHERE account_id = %s",
                             [account_id])
        if not rows:
            return None
        members = self.rm.query(
            f"SELECT profile_id, role FROM {t('contact_accounts')} WHERE account_id = %s "
            "ORDER BY profile_id", [account_id])
        return {"account_id": account_id, "traits": json.loads(rows[0]["doc"]),
                "updated_at": rows[0]["updated_at"],
                "contacts": [{"profile_id": m["profile_id"], "role": m["role"]} for m in members]}

    def search_accounts(self, name: str, limit: int = SEARCH_LIMIT) -> list[dict[str, Any]]:
        t = self.rm.table
        rows = self.rm.query(
            f"SELECT account_id, doc FROM {t('accounts')} WHERE name_key >= %s AND "
            "name_key < %s ORDER BY name_key LIMIT %s", [*_prefix(name), limit])
        return [{"account_id": row["account_id"], "traits": json.loads(row["doc"])}
                for row in rows]

    def account_timeline(self, account_id: str, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.rm.query(
            f"SELECT profile_id, doc FROM {self.rm.table('account_activity')} "
            "WHERE account_id = %s ORDER BY at DESC LIMIT %s", [account_id, limit])
        return [{**json.loads(row["doc"]), "profile_id": row["profile_id"]} for row in rows]


def _prefix(text: str) -> list[str]:
    key = text.strip().lower()
    if not key:
        raise ValueError("search: a prefix must not be empty")
    return [key, key + PREFIX_END]
