"""Consent's application: record consent, follow identity's links, decide fail-closed."""

from __future__ import annotations

import time
import uuid
from typing import Any

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.utils import get_topic

from services.consent.domain import ConsentRecord, DecisionBatch, ProfileLinks, decide, record_id
from services.consent.request_desk import SubjectRequestDesk
from shared.envelope import utcnow_iso
from shared.privacy import subject_of_identifier, subject_of_profile, subject_of_stream
from shared.store import ServiceApplication

KNOWN_PURPOSES = frozenset({"advertising", "marketing", "analytics", "personalization",
                            "functional", "sale_sharing"})
KNOWN_JURISDICTIONS = frozenset({"GDPR", "CCPA"})
RECORDS_REFRESH_SECONDS = 1.0
IDENTITY_RESOLVED_KEY = "identity/identity.resolved/{partition}"


class NotCaughtUp(Exception):
    """Consent has not yet read identity's log as far as a decision needs: ask again soon."""


class ConsentApplication(SubjectRequestDesk, ServiceApplication):
    service_name = "consent"
    privacy_rules = "services.consent.privacy:RULES"
    name = "consent"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Which identifiers have a consent record at all: most have none, and asking the
        # database for each of them at every decision is what decisions would cost.
        self._with_records: set[uuid.UUID] = set()
        self._records_seen_up_to = 0
        self._records_refreshed_at = float("-inf")
        self._refresh_records_index(force=True)

    def _refresh_records_index(self, force: bool = False) -> None:
        """Learn of records opened by other replicas (our own are added as we open them)."""
        if not force and time.monotonic() - self._records_refreshed_at < RECORDS_REFRESH_SECONDS:
            return
        self._records_refreshed_at = time.monotonic()
        newest = self.process_recorder.max_notification_id() or 0
        topic = [get_topic(ConsentRecord.Opened)]
        while self._records_seen_up_to < newest:
            notifications = self.process_recorder.select_notifications(
                start=self._records_seen_up_to, stop=newest, limit=1000, topics=topic,
                inclusive_of_start=False)
            for notification in notifications:
                self._with_records.add(uuid.UUID(str(notification.originator_id)))
            if len(notifications) < 1000:
                self._records_seen_up_to = newest
            else:
                self._records_seen_up_to = notifications[-1].id

    # ---- recording --------------------------------------------------------------------
    def _consent_record(self, touched: dict, identifier: tuple[str, str]) -> ConsentRecord:
        key = record_id(*identifier)
        if key not in touched:
            record = self.find(key)
            if record is None:
                record = ConsentRecord(*identifier)
                self._with_records.add(key)
            touched[key] = record
        return touched[key]

    def record_consent(self, identifiers: list[tuple[str, str]], purposes: dict[str, bool],
                       *, source: str, jurisdiction: str | None = None,
                       collected_at: str | None = None, **receipt: str) -> list[str]:
        touched: dict = {}
        self._apply_preferences(touched, identifiers, purposes, source=source,
                                jurisdiction=jurisdiction or self.settings.default_jurisdiction,
                                collected_at=collected_at or utcnow_iso(), **receipt)
        self.save_and_wake(*touched.values())
        return [str(k) for k in touched]

    def _apply_preferences(self, touched, identifiers, purposes, **details) -> None:
        # The identifier the person consented with: the strongest one on the event.
        anchor = identifiers[0]
        record = self._consent_record(touched, anchor)
        for purpose, granted in purposes.items():
            name = str(purpose).strip().lower()
            if record.says(name, details["source"]) is not bool(granted):
                record.record(name, bool(granted), **details)

    # ---- following identity -----------------------------------------------------------
    def apply_resolved(self, tracking_key: str, items: list[dict[str, Any]]) -> int:
        fresh = self.fresh_items(tracking_key, items)
        if not fresh:
            return 0
        touched: dict = {}
        for item in fresh:
            links = self._links(touched, item["profile_id"])
            while links.merged_into is not None:  # an absorbed id's event still in flight
                links = self._links(touched, links.merged_into)
            for absorbed_id in item.get("merged_from", ()):
                self._fold(touched, absorbed_id, links)
            missing = links.missing(item["identifiers"])
            if missing:
                links.link(missing)
            preferences = ((item["event"].get("context") or {}).get("consent") or {}).get(
                "categoryPreferences")
            if isinstance(preferences, dict) and item["identifiers"]:
                self._apply_preferences(
                    touched, [tuple(i) for i in item["identifiers"]], preferences,
                    source=f"event:{item['source']}",
                    jurisdiction=self.settings.default_jurisdiction,
                    collected_at=item["event"].get("timestamp") or utcnow_iso(),
                    method="context.consent.categoryPreferences")
        self.save_processed(*touched.values(), tracking_key=tracking_key,
                            position=fresh[-1]["position"])
        return len(fresh)

    def _links(self, touched: dict, profile_id: str) -> ProfileLinks:
        key = uuid.UUID(profile_id)
        if key not in touched:
            touched[key] = self.find(key) or ProfileLinks(profile_id)
        return touched[key]

    def _fold(self, touched: dict, absorbed_id: str, survivor: ProfileLinks) -> None:
        absorbed = self._links(touched, absorbed_id)
        missing = survivor.missing(absorbed.identifiers)
        if missing:
            survivor.link(missing)
        if absorbed.merged_into is None and absorbed is not survivor:
            absorbed.merge_into(survivor.profile_id)

    # ---- erasure ----------------------------------------------------------------------
    def erase_subject(self, profile_ids: list[str], identifiers: list[list[str]],
                      subject_hashes: list[str] = ()) -> dict[str, Any]:
        """Erasure (services/consent/erasure.py): the keys of the person's links and of
        the consent records kept against each of their identifiers go. Decisions stay:
        they name profiles and purposes only."""
        named = {tuple(i) for i in identifiers}
        for profile_id in profile_ids:
            stream = _uuid_or_none(profile_id)
            links = self.find(stream) if stream is not None else None
            if isinstance(links, ProfileLinks):
                named.update(tuple(i) for i in links.identifiers)
        subjects = [subject_of_profile(p) for p in profile_ids]
        subjects += [subject_of_stream(record_id(t, v)) for t, v in named]
        subjects += [subject_of_identifier(t, v) for t, v in named]  # their requests
        hashes = {*(self.privacy.hashed(s) for s in subjects), *subject_hashes}
        shredded = self.shred_subjects_by_hash(hashes)
        self.compact_store()
        return {"service": self.service_name, "keys_shredded": shredded,
                "subject_hashes": sorted(hashes)}

    # ---- deciding ---------------------------------------------------------------------
    def caught_up(self, after: dict[str, Any] | None) -> bool:
        if not after or not after.get("position"):
            return True
        key = IDENTITY_RESOLVED_KEY.format(partition=after["partition"])
        if self.tracked_position(key) >= after["position"]:
            return True
        # Another replica may own that partition: ask the database, not our memory, and
        # learn of the records that replica opened on the way.
        self._tracked[key] = self.process_recorder.max_tracking_id(key) or 0
        self._refresh_records_index(force=True)
        return self._tracked[key] >= after["position"]

    def decide_many(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Decide each (profile, destination, purposes); record every decision; deny by default."""
        for request in requests:
            if not self.caught_up(request.get("after")):
                raise NotCaughtUp(f"identity partition {request['after']['partition']}")
        batch_id = uuid.uuid4()
        decisions = []
        for index, request in enumerate(requests):
            verdict = self._verdict(request)
            decisions.append({
                "decision_id": f"{batch_id}:{index}",
                "profile_id": request["profile_id"],
                "destination": request["destination"],
                "purposes": list(request["purposes"]),
                "allowed": verdict.allowed,
                "reason": verdict.reason,
                "relied_on": verdict.relied_on,
                "decided_at": utcnow_iso(),
            })
        self.save_and_wake(DecisionBatch(batch_id=str(batch_id), decisions=decisions))
        return decisions

    def _verdict(self, request: dict[str, Any]):
        records = self._records_of(request["profile_id"])
        jurisdiction = request.get("jurisdiction") or self.settings.default_jurisdiction
        return decide(list(request["purposes"]), records, set(KNOWN_PURPOSES), jurisdiction,
                      set(KNOWN_JURISDICTIONS))

    def _records_of(self, profile_id: str) -> list[ConsentRecord]:
        self._refresh_records_index()
        try:
            links = self.repository.get(uuid.UUID(profile_id))
            while links.merged_into is not None:
                links = self.repository.get(uuid.UUID(links.merged_into))
        except (AggregateNotFoundError, ValueError):
            return []
        records = []
        for identifier_type, value in links.identifiers:
            key = record_id(identifier_type, value)
            # In the index but not found: its save failed after the index heard of it.
            record = self.find(key) if key in self._with_records else None
            if record is not None:
                records.append(record)
        return records

    # ---- queries ----------------------------------------------------------------------
    def consent_of(self, profile_id: str) -> dict[str, Any]:
        records = self._records_of(profile_id)
        return {"profile_id": profile_id, "records": [
            {"record": str(r.id), "identifier_type": r.identifier_type, "purposes": r.purposes}
            for r in records]}

    def decision(self, decision_id: str) -> dict[str, Any] | None:
        batch_id, _, index = decision_id.partition(":")
        try:
            batch = self.repository.get(uuid.UUID(batch_id))
            return batch.decisions[int(index)]
        except (AggregateNotFoundError, ValueError, IndexError):
            return None


def _uuid_or_none(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
