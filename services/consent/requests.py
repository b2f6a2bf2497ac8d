"""Data subject requests: what a person asked for, by when it is due, how we knew it was them.

A request is received, its requester's identity verified, possibly extended (with the
notice given to the requester), then completed or rejected; each step is an event naming
who took it and when. Nothing can be carried out before the identity is verified.

Due dates (calendar, in UTC):
- GDPR Art. 12(3): one month after receipt, extendable by two further months; the person
  must be told of the extension, with the reasons, within the first month.
- CCPA/CPRA (Cal. Civ. Code 1798.130(a)(2)): 45 days after receipt, extendable once by
  another 45 days, with notice within the first 45.
A month ends on the same day of a later month, or on that month's last day when it has no
such day (31 January + one month = 28/29 February).
"""

from __future__ import annotations

import calendar
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from eventsourcing.domain import Aggregate, event

KINDS = ("access", "portability", "rectification", "erasure", "objection", "restriction")
VERIFICATION_METHODS = ("account_login", "email_confirmation", "identity_document",
                        "knowledge_questions", "authorised_agent", "in_person")
OPEN, VERIFIED, EXTENDED, COMPLETED, REJECTED = (
    "received", "verified", "extended", "completed", "rejected")
CLOSED = (COMPLETED, REJECTED)


class RequestError(ValueError):
    """A request or a step on it is refused: `field` names what, the message the rule."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = f"{field}: {message}"


@dataclass(frozen=True)
class Deadline:
    """How long a regulation gives, and how much longer after an extension."""

    months: int = 0
    days: int = 0

    def after(self, moment: datetime) -> datetime:
        return add_months(moment, self.months) + timedelta(days=self.days)

    def __add__(self, other: Deadline) -> Deadline:
        return Deadline(self.months + other.months, self.days + other.days)


@dataclass(frozen=True)
class Regulation:
    name: str
    answer_within: Deadline
    extended_by: Deadline


REGULATIONS = {
    "GDPR": Regulation("GDPR", Deadline(months=1), Deadline(months=2)),
    "CCPA": Regulation("CCPA", Deadline(days=45), Deadline(days=45)),
}


def add_months(moment: datetime, months: int) -> datetime:
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def parse_time(value: str, field: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (AttributeError, ValueError) as bad:
        raise RequestError(field, f"'{value}' is not an ISO 8601 date-time") from bad
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def iso(moment: datetime) -> str:
    """UTC, to the second; to the millisecond when there is one (steps taken now)."""
    spec = "milliseconds" if moment.microsecond else "seconds"
    return moment.astimezone(UTC).isoformat(timespec=spec).replace("+00:00", "Z")


def regulation_of(name: str) -> Regulation:
    regulation = REGULATIONS.get(str(name).upper())
    if regulation is None:
        raise RequestError("regulation", f"must be one of {sorted(REGULATIONS)}")
    return regulation


def check_details(kind: str, details: dict[str, Any]) -> dict[str, Any]:
    """What each kind needs to be carried out, checked when it is filed."""
    if kind not in KINDS:
        raise RequestError("kind", f"must be one of {list(KINDS)}")
    if kind == "rectification":
        traits = details.get("traits")
        if not isinstance(traits, dict) or not traits:
            raise RequestError("details.traits",
                               "a rectification must give the corrected traits (an object)")
        return {"traits": traits}
    if kind == "objection":
        purposes = details.get("purposes")
        if purposes is not None and (not isinstance(purposes, list) or not purposes
                                     or not all(isinstance(p, str) and p for p in purposes)):
            raise RequestError("details.purposes",
                               "must be a non-empty list of purposes, or absent for all")
        return {"purposes": purposes}
    if kind == "restriction":
        restricted = details.get("restricted", True)
        if not isinstance(restricted, bool):
            raise RequestError("details.restricted", "must be true or false")
        return {"restricted": restricted, "reason": str(details.get("reason") or "")}
    return {}


class SubjectRequest(Aggregate):
    """One data subject request and every step taken on it."""

    @event("Received")
    def __init__(self, kind: str, regulation: str, identifiers: list[list[str]],
                 received_at: str, due_at: str, filed_by: str, details: dict[str, Any],
                 note: str = ""):
        self.kind = kind
        self.regulation = regulation
        self.identifiers = identifiers
        self.received_at = received_at
        self.due_at = due_at
        self.filed_by = filed_by
        self.details = details
        self.note = note
        self.status = OPEN
        self.verification: dict[str, Any] | None = None
        self.extension: dict[str, Any] | None = None
        self.outcome: dict[str, Any] | None = None
        self.steps: list[dict[str, Any]] = [
            {"step": OPEN, "by": filed_by, "at": received_at}]

    @classmethod
    def file(cls, kind: str, regulation: str, identifiers: list[list[str]], *,
             received_at: str, filed_by: str, details: dict[str, Any] | None = None,
             note: str = "") -> SubjectRequest:
        rules = regulation_of(regulation)
        if not identifiers:
            raise RequestError("identifiers", "give at least one identifier of the person")
        received = parse_time(received_at, "received_at")
        received = received.replace(microsecond=received.microsecond // 1000 * 1000)
        return cls(kind=kind, regulation=rules.name, identifiers=identifiers,
                   received_at=iso(received), due_at=iso(rules.answer_within.after(received)),
                   filed_by=filed_by, details=check_details(kind, details or {}), note=note)

    @property
    def closed(self) -> bool:
        return self.status in CLOSED

    def _still_open(self, step: str) -> None:
        if self.closed:
            raise RequestError("status", f"the request is {self.status}; it cannot be {step}")

    # ---- verifying the requester --------------------------------------------------------
    def verify(self, method: str, verified_by: str, at: str, evidence: str = "") -> None:
        self._still_open("verified")
        if method not in VERIFICATION_METHODS:
            raise RequestError("method", f"must be one of {list(VERIFICATION_METHODS)}")
        if not verified_by.strip():
            raise RequestError("verified_by", "say who verified the requester's identity")
        self._verified(method=method, verified_by=verified_by,
                       at=iso(parse_time(at, "at")), evidence=evidence)

    @event("Verified")
    def _verified(self, method: str, verified_by: str, at: str, evidence: str) -> None:
        self.verification = {"method": method, "by": verified_by, "at": at,
                             "evidence": evidence}
        if self.status == OPEN:
            self.status = VERIFIED
        self.steps.append({"step": VERIFIED, "by": verified_by, "at": at, "method": method})

    # ---- extending the deadline ---------------------------------------------------------
    def extend(self, notice: str, extended_by: str, at: str) -> None:
        self._still_open("extended")
        if self.extension is not None:
            raise RequestError("status", "the request was already extended once")
        if not notice.strip():
            raise RequestError("notice", "record what the requester was told, and why")
        when = parse_time(at, "at")
        if when > parse_time(self.due_at, "due_at"):
            raise RequestError("at", f"the requester must be told of an extension before the "
                               f"first deadline ({self.due_at})")
        rules = regulation_of(self.regulation)
        # Counted from receipt: 31 January + 1 + 2 months is 30 April, not 28 April + 2.
        due = (rules.answer_within + rules.extended_by).after(
            parse_time(self.received_at, "received_at"))
        self._extended(notice=notice, extended_by=extended_by, at=iso(when), due_at=iso(due))

    @event("Extended")
    def _extended(self, notice: str, extended_by: str, at: str, due_at: str) -> None:
        self.extension = {"notice": notice, "by": extended_by, "at": at,
                          "previous_due_at": self.due_at}
        self.due_at = due_at
        self.status = EXTENDED
        self.steps.append({"step": EXTENDED, "by": extended_by, "at": at, "due_at": due_at})

    # ---- closing ------------------------------------------------------------------------
    def check_can_complete(self) -> None:
        self._still_open("completed")
        if self.verification is None:
            raise RequestError("verification", "the requester's identity must be verified "
                               "before the request is carried out")

    def complete(self, completed_by: str, at: str, outcome: dict[str, Any]) -> None:
        self.check_can_complete()
        self._completed(completed_by=completed_by, at=iso(parse_time(at, "at")),
                        outcome=outcome)

    @event("Completed")
    def _completed(self, completed_by: str, at: str, outcome: dict[str, Any]) -> None:
        self.status = COMPLETED
        self.outcome = outcome
        self.steps.append({"step": COMPLETED, "by": completed_by, "at": at})

    def reject(self, rejected_by: str, at: str, reason: str) -> None:
        self._still_open("rejected")
        if not reason.strip():
            raise RequestError("reason", "a rejection must give its reason")
        self._rejected(rejected_by=rejected_by, at=iso(parse_time(at, "at")), reason=reason)

    @event("Rejected")
    def _rejected(self, rejected_by: str, at: str, reason: str) -> None:
        self.status = REJECTED
        self.outcome = {"rejected": reason}
        self.steps.append({"step": REJECTED, "by": rejected_by, "at": at, "reason": reason})

    # ---- reading ------------------------------------------------------------------------
    def overdue(self, now: datetime) -> bool:
        return not self.closed and now > parse_time(self.due_at, "due_at")

    def about(self, identifiers: set[tuple[str, str]]) -> bool:
        return any(tuple(i) in identifiers for i in self.identifiers)

    def view(self, now: datetime | None = None) -> dict[str, Any]:
        shown = {"request_id": str(self.id), "kind": self.kind, "regulation": self.regulation,
                 "identifiers": self.identifiers, "status": self.status,
                 "received_at": self.received_at, "due_at": self.due_at,
                 "filed_by": self.filed_by, "details": self.details, "note": self.note,
                 "verification": self.verification, "extension": self.extension,
                 "outcome": self.outcome, "steps": self.steps}
        if now is not None:
            shown["overdue"] = self.overdue(now)
            left = parse_time(self.due_at, "due_at") - now
            shown["days_left"] = math.floor(left / timedelta(days=1))
        return shown


def overdue_report(requests: list[SubjectRequest], now: datetime) -> list[dict[str, Any]]:
    """Open requests, the overdue ones first, each group by due date (soonest first)."""
    open_requests = [r for r in requests if not r.closed]
    open_requests.sort(key=lambda r: (not r.overdue(now), parse_time(r.due_at, "due_at")))
    return [r.view(now) for r in open_requests]


def new_request_id() -> uuid.UUID:
    return uuid.uuid4()
