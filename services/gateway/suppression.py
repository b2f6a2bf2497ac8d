"""The suppression list: erased people must not come back through the door.

Erasure (services/consent/erasure.py) adds each of the person's identifiers here as a
keyed hash (HMAC under TESSERA_PRIVACY_SECRET, never a plain hash that a list of emails
would reverse). Every event the gateway accepts — tracked, imported from a CSV file,
pulled from a CRM: all of them arrive through POST /v1/batch — is checked against it; an
event carrying a suppressed identifier is dropped and recorded without personal data.

Identifiers are normalised as identity normalises them (its pure functions), so that an
email written differently, or a phone number with or without its country code, still
matches.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from services.identity.normalise import normalise_email, normalise_phone
from shared.privacy import KeyedHash
from shared.readmodel import ReadModel

REFRESH_SECONDS = 1.0


def identifiers_of_event(event: dict[str, Any], phone_region: str) -> Iterator[tuple[str, str]]:
    """The identifiers identity would take from the event (services/identity/domain.py)."""
    for kind, key in (("user_id", "userId"), ("anonymous_id", "anonymousId"),
                      ("anonymous_id", "previousId")):
        value = event.get(key)
        if value not in (None, ""):
            yield kind, str(value).strip()
    context = event.get("context") if isinstance(event.get("context"), dict) else {}
    traits = event.get("traits") or context.get("traits") or {}
    if isinstance(traits, dict):
        email = normalise_email(traits.get("email"))
        if email:
            yield "email", email
        phone = normalise_phone(traits.get("phone"), phone_region)
        if phone:
            yield "phone", phone
    for external in context.get("externalIds") or ():
        if isinstance(external, dict) and external.get("type") and external.get("id"):
            yield str(external["type"]), str(external["id"]).strip()


class SuppressionList:
    def __init__(self, rm: ReadModel, hashed: KeyedHash):
        self.rm = rm
        self.hashed = hashed
        self.phone_region = os.environ.get("TESSERA_PHONE_REGION") or "FR"
        self.table = rm.table("suppressed_identifiers")
        rm.create(f"CREATE TABLE IF NOT EXISTS {self.table} (hash TEXT PRIMARY KEY, "
                  "added_at TEXT NOT NULL, request_id TEXT)")
        self._hashes: set[str] = set()
        self._seen_up_to = ""
        self._refreshed_at = float("-inf")
        self._lock = threading.Lock()
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> None:
        """Entries added through another gateway replica count here within a second."""
        if not force and time.monotonic() - self._refreshed_at < REFRESH_SECONDS:
            return
        self._refreshed_at = time.monotonic()
        rows = self.rm.query(f"SELECT hash, added_at FROM {self.table} WHERE added_at > %s",
                             (self._seen_up_to,))
        with self._lock:
            for row in rows:
                self._hashes.add(row["hash"])
                self._seen_up_to = max(self._seen_up_to, row["added_at"])

    def add(self, identifiers: Iterable[Iterable[str]], request_id: str | None = None,
            hashes: Iterable[str] = ()) -> list[str]:
        """Suppress these identifiers (or these hashes of them, when re-applying the
        erasure log after a restore); returns the hashes."""
        added = sorted({*(self.hashed.identifier(t, v) for t, v in identifiers), *hashes})
        at = datetime.now(UTC).isoformat()
        for value in added:
            self.rm.execute(f"INSERT INTO {self.table} (hash, added_at, request_id) "
                            "VALUES (%s, %s, %s) ON CONFLICT (hash) DO NOTHING",
                            (value, at, request_id))
        with self._lock:
            self._hashes.update(added)
        return added

    def suppresses(self, event: dict[str, Any]) -> bool:
        self.refresh()
        if not self._hashes:  # nobody erased yet: no hashing on the hot path
            return False
        return any(self.hashed.identifier(kind, value) in self._hashes
                   for kind, value in identifiers_of_event(event, self.phone_region))

    def __len__(self) -> int:
        return len(self._hashes)
