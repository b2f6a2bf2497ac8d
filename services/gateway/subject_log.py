"""What the gateway holds on one person, and the log of who viewed whose data.

Mixed into GatewayApplication. Every read of a person's data through the API is itself
recorded as an event (who, in which role, whose profile, what, when), so a compliance
officer can answer "who looked at this person?" from the store, not from access logs.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.domain import Aggregate, event

from services.identity.normalise import normalise_email
from shared.envelope import utcnow_iso
from shared.privacy import subject_of_identifier, subject_of_profile


class PersonViewed(Aggregate):
    """One read of one or more people's data through the API."""

    @event("Viewed")
    def __init__(self, viewer: str, role: str, profile_ids: list[str], what: str, at: str,
                 token: str = ""):
        self.viewer = viewer


def _emails_of(event: dict[str, Any]) -> set[str]:
    """The emails an event gives as its sender's (as identity reads them): not those that
    merely appear in its properties, which may be someone else's (a gift's recipient)."""
    found = set()
    for holder in (event.get("traits"), (event.get("context") or {}).get("traits")):
        if isinstance(holder, dict) and isinstance(holder.get("email"), str):
            raw = holder["email"].strip().lower()
            found.update(filter(None, (raw, normalise_email(raw))))
    return found


def terms_of_event(event: dict[str, Any]) -> list[str]:
    """What an accepted event is found by in the subject index: each identifier that
    `concerns` tests, as a subject."""
    terms = [subject_of_identifier(kind, str(event[key]))
             for kind, key in (("user_id", "userId"), ("anonymous_id", "anonymousId"))
             if event.get(key) is not None]
    return terms + [subject_of_identifier("email", email) for email in _emails_of(event)]


def terms_of_identifiers(by_type: dict[str, set[str]]) -> list[str]:
    return [subject_of_identifier(kind, value)
            for kind in ("user_id", "anonymous_id", "email") for value in by_type.get(kind, ())]


def concerns(event: dict[str, Any], identifiers: dict[str, set[str]]) -> bool:
    """Whether an accepted event is the person's: their user id, anonymous id or email."""
    return (str(event.get("userId")) in identifiers.get("user_id", ())
            or str(event.get("anonymousId")) in identifiers.get("anonymous_id", ())
            or bool(_emails_of(event) & identifiers.get("email", set())))


def _view_of(seen: Any) -> dict[str, Any]:
    return {"viewer": seen.viewer, "role": seen.role, "token": seen.token,
            "profile_ids": seen.profile_ids, "what": seen.what, "at": seen.at}


class GatewaySubjectData:
    """Needs a ServiceApplication (`scan`, `save_and_wake`) and `IngestRequest`."""

    ingest_event_class: type

    def subject_terms(self):
        """The subject index (shared.subject_index): accepted events by the identifiers
        they carry, views by the profile ids viewed."""
        return {
            self.ingest_event_class: lambda state: [
                term for accepted in state.get("accepted") or () if isinstance(accepted, dict)
                for term in terms_of_event(accepted)],
            PersonViewed.Viewed: lambda state: [
                subject_of_profile(p) for p in state.get("profile_ids") or ()],
        }

    def record_view(self, viewer: str, role: str, profile_ids: list[str], what: str,
                    token: str = "") -> None:
        """`token`: a fingerprint of the credential used (never the credential)."""
        ids = sorted({p for p in profile_ids if p})
        if ids:
            self.save_and_wake(PersonViewed(viewer=viewer, role=role, profile_ids=ids,
                                            what=what, at=utcnow_iso(), token=token))

    def views(self, profile_id: str | None = None, viewer: str | None = None,
              limit: int = 100) -> list[dict[str, Any]]:
        """The latest views, newest first, of one person or by one viewer (or all)."""
        found = []
        seen_events = self.scan(PersonViewed.Viewed) if profile_id is None else \
            self.events_of_subjects([subject_of_profile(profile_id)], PersonViewed.Viewed)
        for seen in seen_events:
            if profile_id and profile_id not in seen.profile_ids:
                continue
            if viewer and seen.viewer != viewer:
                continue
            found.append(_view_of(seen))
        found.reverse()
        return found[:limit]

    def export_subject(self, profile_ids: list[str], identifiers: list[list[str]]
                       ) -> dict[str, Any]:
        """Each accepted event that names the person (user id, anonymous id or email), as
        received; and every view of their data. Rejected events are kept redacted, with
        no identifier left to tell whose they were, so none can be attributed."""
        by_type: dict[str, set[str]] = {}
        for identifier_type, value in identifiers:
            by_type.setdefault(identifier_type, set()).add(
                value.strip().lower() if identifier_type == "email" else value)
        candidates = self.events_of_subjects(terms_of_identifiers(by_type),
                                             self.ingest_event_class)
        received = [{"source": request.source, "received_at": request.received_at,
                     "event": accepted}
                    for request in candidates
                    for accepted in request.accepted if concerns(accepted, by_type)]
        mine = set(profile_ids)
        views = [_view_of(seen) for seen in self.events_of_subjects(
            [subject_of_profile(p) for p in mine], PersonViewed.Viewed)]
        for view in views:  # the other people of a list view are not this person's business
            view["profile_ids"] = sorted(mine & set(view["profile_ids"]))
        return {"service": "gateway", "received": received, "views": views}
