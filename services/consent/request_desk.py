"""Consent's compliance desk: data subject requests, and what consent holds on one person.

Mixed into ConsentApplication (kept apart so that the consent gate's code and this one
change independently). Simple types in and out; no nameko.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from eventsourcing.application import AggregateNotFoundError

from services.consent.domain import ConsentRecord, DecisionBatch, ProfileLinks, record_id
from services.consent.requests import RequestError, SubjectRequest, overdue_report
from shared.envelope import utcnow_iso
from shared.privacy import subject_of_identifier, subject_of_profile


class SubjectRequestDesk:
    """Needs a ServiceApplication: `find`, `scan`, `repository`, `save_and_wake`."""

    # ---- filing and working on requests -----------------------------------------------
    def file_request(self, kind: str, regulation: str, identifiers: list[list[str]],
                     filed_by: str, received_at: str | None = None,
                     details: dict[str, Any] | None = None, note: str = "") -> dict[str, Any]:
        request = SubjectRequest.file(kind, regulation, [list(i) for i in identifiers],
                                      received_at=received_at or utcnow_iso(),
                                      filed_by=filed_by, details=details, note=note)
        self.save_and_wake(request)
        return request.view(_now())

    def verify_request(self, request_id: str, method: str, verified_by: str,
                       at: str | None = None, evidence: str = "") -> dict[str, Any]:
        return self._step(request_id, lambda r: r.verify(method, verified_by,
                                                         at or utcnow_iso(), evidence))

    def extend_request(self, request_id: str, notice: str, extended_by: str,
                       at: str | None = None) -> dict[str, Any]:
        return self._step(request_id, lambda r: r.extend(notice, extended_by,
                                                         at or utcnow_iso()))

    def complete_request(self, request_id: str, completed_by: str, outcome: dict[str, Any],
                         at: str | None = None) -> dict[str, Any]:
        return self._step(request_id, lambda r: r.complete(completed_by, at or utcnow_iso(),
                                                           outcome))

    def reject_request(self, request_id: str, rejected_by: str, reason: str,
                       at: str | None = None) -> dict[str, Any]:
        return self._step(request_id, lambda r: r.reject(rejected_by, at or utcnow_iso(),
                                                         reason))

    def ready_to_carry_out(self, request_id: str) -> dict[str, Any]:
        """The request, if it may be carried out now (verified, still open); else refused."""
        request = self._request(request_id)
        request.check_can_complete()
        return request.view(_now())

    def _step(self, request_id: str, step) -> dict[str, Any]:
        request = self._request(request_id)
        step(request)
        self.save_and_wake(request)
        return request.view(_now())

    def _request(self, request_id: str) -> SubjectRequest:
        try:
            found = self.repository.get(uuid.UUID(str(request_id)))
        except (AggregateNotFoundError, ValueError) as missing:
            raise RequestError("request_id", f"no request {request_id}") from missing
        if not isinstance(found, SubjectRequest):
            raise RequestError("request_id", f"no request {request_id}")
        return found

    # ---- reading requests -------------------------------------------------------------
    def request(self, request_id: str) -> dict[str, Any]:
        return self._request(request_id).view(_now())

    def _all_requests(self) -> list[SubjectRequest]:
        return self._requests_of(self.scan(SubjectRequest.Received))

    def _requests_of(self, filed: Iterable[Any]) -> list[SubjectRequest]:
        return [self.repository.get(received.originator_id) for received in filed]

    def list_requests(self, status: str | None = None, kind: str | None = None
                      ) -> list[dict[str, Any]]:
        now = _now()
        return [r.view(now) for r in self._all_requests()
                if (status is None or r.status == status) and (kind is None or r.kind == kind)]

    def overdue_requests(self, now: str | None = None) -> list[dict[str, Any]]:
        moment = datetime.fromisoformat(now.replace("Z", "+00:00")) if now else _now()
        return overdue_report(self._all_requests(), moment)

    # ---- what consent holds on one person ---------------------------------------------
    def export_subject(self, profile_ids: list[str], identifiers: list[list[str]]
                       ) -> dict[str, Any]:
        """Records kept against the person's identifiers, the links consent followed,
        every decision about the person's profiles, and the person's requests."""
        profiles = set(profile_ids)
        known = {tuple(i) for i in identifiers}
        links = []
        for profile_id in sorted(profiles):
            found = self._links_of(profile_id)
            if found is not None:
                links.append({"profile_id": profile_id, "identifiers": found.identifiers,
                              "merged_into": found.merged_into})
                # Only identifiers of this person's own profiles (deterministic links).
                known.update(tuple(i) for i in found.identifiers)
        records = []
        for identifier_type, value in sorted(known):
            record = self.find(record_id(identifier_type, value))
            if isinstance(record, ConsentRecord):
                records.append({"record": str(record.id), "identifier": [identifier_type, value],
                                "regulations": record.regulations,
                                "restriction": record.restriction,
                                "history": self._record_history(record.id)})
        decisions = [dict(decision, at=decision.get("decided_at"))
                     for batch in self.events_of_subjects(
                         [subject_of_profile(p) for p in profiles], DecisionBatch.Decided)
                     for decision in batch.decisions if decision["profile_id"] in profiles]
        filed = self.events_of_subjects([subject_of_identifier(*i) for i in known],
                                        SubjectRequest.Received)
        requests = [r.view(_now()) for r in self._requests_of(filed) if r.about(known)]
        return {"service": "consent", "links": links, "records": records,
                "decisions": decisions, "requests": requests}

    def _links_of(self, profile_id: str) -> ProfileLinks | None:
        try:
            found = self.find(uuid.UUID(profile_id))
        except ValueError:
            return None
        return found if isinstance(found, ProfileLinks) else None

    def _record_history(self, record_uuid: uuid.UUID) -> list[dict[str, Any]]:
        """Each answer the record ever got, in order: a later one replaces, never erases."""
        history = []
        for stored in self.events.get(record_uuid):
            if isinstance(stored, ConsentRecord.Recorded):
                history.append({"purpose": stored.purpose, "granted": stored.granted,
                                "source": stored.source, "jurisdiction": stored.jurisdiction,
                                "collected_at": stored.collected_at,
                                "lawful_basis": stored.lawful_basis,
                                "policy_version": stored.policy_version,
                                "language": stored.language, "method": stored.method,
                                "kind": getattr(stored, "kind", ""),
                                "recorded_at": stored.timestamp.isoformat()})
        return history


def _now() -> datetime:
    return datetime.now(UTC)
