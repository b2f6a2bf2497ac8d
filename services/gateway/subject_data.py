"""One person across every service: the export, the history, and carrying out requests.

Each service answers `export_subject(profile_ids, identifiers)` with what it holds on the
person; identity goes first and says which profile ids and identifiers are the person's
(deterministic links and merges only), and the others are asked for exactly those. Here
the answers are put together (the access/portability export), laid out in time order
(`tessera audit subject`), and used to carry out a verified request.

No nameko here: `services` maps a service name to anything with that service's RPC
methods (RpcProxies behind a timeout in the gateway, the applications or fakes in tests).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from shared.envelope import utcnow_iso

EXPORT_FORMAT = "tessera.subject-export/1"
EXPORTING_SERVICES = ("gateway", "contacts", "segments", "consent", "activation")
IDENTIFIER_TYPES = ("user_id", "email", "anonymous_id", "phone", "crm_id")
# Not an identifier the person gave, but how to find them after erasure took the others.
PROFILE_ID = "profile_id"


class SubjectNotFound(LookupError):
    pass


def parse_identifier(text: str) -> list[str]:
    """'email:ada@example.com' -> ['email', 'ada@example.com'] (the type is checked)."""
    kind, sep, value = str(text).partition(":")
    if not sep or not value or kind not in (*IDENTIFIER_TYPES, PROFILE_ID):
        raise ValueError(f"identifier: '{text}' must be written type:value, the type one of "
                         f"{[*IDENTIFIER_TYPES, PROFILE_ID]}")
    return [kind, value.strip().lower() if kind == "email" else value.strip()]


class SubjectData:
    def __init__(self, services: Mapping[str, Any]):
        self.services = services

    def export(self, identifiers: list[list[str]]) -> dict[str, Any]:
        """Everything every service holds on the person, and the list of recipients."""
        identity = self._identity_of(identifiers)
        identifiers = [i for i in identifiers if i[0] != PROFILE_ID]
        profile_ids = identity["profile_ids"]
        known = sorted({tuple(i) for i in [*identity["identifiers"], *identifiers]})
        known_lists = [list(i) for i in known]
        sections = {"identity": identity}
        for name in EXPORTING_SERVICES:
            sections[name] = self.services[name].export_subject(profile_ids, known_lists)
        return {"format": EXPORT_FORMAT, "generated_at": utcnow_iso(),
                "subject": {"identifiers": known_lists, "profile_ids": profile_ids},
                "recipients": sections["activation"]["recipients"],
                "services": sections}

    def _identity_of(self, identifiers: list[list[str]]) -> dict[str, Any]:
        given_ids = [value for kind, value in identifiers if kind == PROFILE_ID]
        identity = self.services["identity"].export_subject(
            given_ids, [i for i in identifiers if i[0] != PROFILE_ID])
        if not identity["profiles"]:
            raise SubjectNotFound(f"no profile holds {identifiers}")
        return identity

    # ---- carrying out a verified request ----------------------------------------------
    def carry_out(self, request: dict[str, Any], by: str) -> tuple[dict[str, Any], Any]:
        """Do what the request asks; returns (what to record on it, what to answer)."""
        kind, request_id = request["kind"], request["request_id"]
        identifiers = request["identifiers"]
        if kind in ("access", "portability"):
            export = self.export(identifiers)
            return export_receipt(export), export
        if kind == "rectification":
            outcome = self.rectify(identifiers, request["details"]["traits"], request_id)
            return outcome, outcome
        consent = self.services["consent"]
        if kind == "erasure":
            # consent.erase takes one identifier and erases the person it resolves to; each
            # of the request's identifiers goes, in case some never linked to the others.
            outcome = [consent.erase(identifier, by, request_id) for identifier in identifiers]
        elif kind == "objection":
            outcome = consent.record_objection(identifiers, request["details"].get("purposes"),
                                               f"dsr:{request_id}")
        elif kind == "restriction":
            outcome = consent.set_restriction(identifiers, request["details"]["restricted"],
                                              request["details"].get("reason")
                                              or f"dsr:{request_id}")
        else:  # the request's own checks make this unreachable
            raise ValueError(f"kind: cannot carry out '{kind}'")
        return {kind: outcome}, outcome

    def rectify(self, identifiers: list[list[str]], traits: dict[str, Any],
                request_id: str) -> dict[str, Any]:
        """Corrected traits on each of the person's profiles (source `dsr`), then sent
        again to every destination following a segment the person is in."""
        identity = self._identity_of(identifiers)
        rectified, planned = [], 0
        for profile in identity["profiles"]:
            profile_id = profile["profile_id"]
            view = self.services["contacts"].rectify(profile_id, traits, request_id)
            if view is None:
                continue
            rectified.append(profile_id)
            memberships = self.services["segments"].export_subject([profile_id], identifiers)
            segments = sorted({s for p in memberships["profiles"] for s in p["segments"]})
            current = {**view["traits"], **traits}
            planned += self.services["activation"].plan_rectification(
                profile_id, segments, current, request_id)
        return {"rectified_profiles": rectified, "traits": sorted(traits),
                "deliveries_planned": planned}


def export_receipt(export: dict[str, Any]) -> dict[str, Any]:
    """What the request keeps of an export: its digest and shape, not the data again."""
    body = json.dumps(export, sort_keys=True, default=str).encode()
    return {"export_sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body),
            "profile_ids": export["subject"]["profile_ids"],
            "recipients": [r["destination"] for r in export["recipients"]],
            "generated_at": export["generated_at"]}


# ---- the person's history in time order -------------------------------------------------
def subject_history(export: dict[str, Any]) -> list[dict[str, Any]]:
    """Every dated thing the services know of the person, oldest first."""
    s = export["services"]
    entries: list[dict[str, Any]] = []

    def add(at: Any, service: str, what: str, **detail: Any) -> None:
        if at:
            entries.append({"at": str(at), "service": service, "what": what,
                            "detail": {k: v for k, v in detail.items() if v is not None}})

    for item in s["gateway"]["received"]:
        event = item["event"]
        add(event.get("receivedAt") or item["received_at"], "gateway", "received",
            type=event.get("type"), event=event.get("event"), source=item["source"],
            message_id=event.get("messageId"))
    for view in s["gateway"]["views"]:
        add(view["at"], "gateway", "viewed", by=view["viewer"], role=view["role"],
            looked_at=view["what"])
    for profile in s["identity"]["profiles"]:
        add(profile["first_seen"], "identity", "profile created",
            profile_id=profile["profile_id"], split_from=profile["split_from"])
        for step in profile["history"]:
            if step["what"] == "received":
                continue  # the gateway's entry says more
            add(step["at"], "identity", step["what"], profile_id=profile["profile_id"],
                other=step.get("profile_id"), parts=step.get("parts"), reason=step.get("reason"))
    for profile in s["contacts"]["profiles"]:
        for change in profile.get("stage_history", []):
            add(change.get("at") or (change.get("cause") or {}).get("at"), "contacts",
                "stage changed", stage=change.get("stage"), previous=change.get("previous"))
        for entry in profile.get("timeline", []):
            if entry.get("type") == "note":
                add(entry.get("timestamp"), "contacts", "note added", by=entry.get("author"))
    for profile in s["segments"]["profiles"]:
        for change in profile["history"]:
            add(change["at"], "segments", f"segment {change['change']}",
                segment=change["segment"], reason=change["reason"])
    consent = s["consent"]
    for record in consent["records"]:
        for answer in record["history"]:
            add(answer["recorded_at"], "consent",
                f"consent {'granted' if answer['granted'] else 'denied'}",
                purpose=answer["purpose"], source=answer["source"],
                jurisdiction=answer["jurisdiction"], identifier=record["identifier"][0])
    for decision in consent["decisions"]:
        add(decision.get("decided_at"), "consent",
            "decision: allow" if decision["allowed"] else "decision: deny",
            destination=decision["destination"], reason=decision["reason"],
            decision_id=decision["decision_id"])
    for request in consent["requests"]:
        for step in request["steps"]:
            add(step["at"], "consent", f"{request['kind']} request {step['step']}",
                request_id=request["request_id"], by=step.get("by"))
        if request["kind"] == "erasure" and request["status"] == "completed":
            add(request["steps"][-1]["at"], "consent", "erased",
                request_id=request["request_id"], ledger=(request["outcome"] or {}).get(
                    "erasure"))
    for destination, outcomes in s["activation"]["outcomes"].items():
        for outcome in outcomes:
            add(outcome["at"], "activation", outcome["outcome"], destination=destination,
                segment=outcome.get("segment"), action=outcome.get("action"),
                decision_id=outcome.get("decision_id"), reason=outcome.get("reason"))
    entries.sort(key=lambda e: _instant(e["at"]))
    return entries


def _instant(at: str) -> datetime:
    """ISO times from different services (…Z, +00:00, with or without microseconds)."""
    try:
        moment = datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError:
        return datetime.max.replace(tzinfo=UTC)  # undatable: last, never lost
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
