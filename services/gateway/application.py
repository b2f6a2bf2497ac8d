"""The gateway's application: judge a request, save what it accepted, answer.

An accepted event is saved (the outbox) before the 200 leaves, so it is never lost; a
rejected one leaves only its rejection record. Retried requests are recognised by
`messageId` and not saved twice.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate, event

from services.gateway.domain import Rejection, judge_batch
from services.gateway.subject_log import GatewaySubjectData
from services.gateway.suppression import SuppressionList
from shared.privacy import subject_of_identifier
from shared.purposes import load_catalogue
from shared.store import ServiceApplication

SEEN_MESSAGE_IDS = 1_000_000
WARM_FROM_NOTIFICATIONS = 20_000
REJECTIONS_SCAN_LIMIT = 20_000


class IngestRequest(Aggregate):
    """One request to the tracking API: what it brought, what was kept, what was refused."""

    @event("Received")
    def __init__(self, source: str, accepted: list[dict[str, Any]],
                 rejected: list[dict[str, Any]], received_at: str):
        self.source = source
        self.accepted_count = len(accepted)


@dataclass
class IngestOutcome:
    accepted: int = 0
    duplicates: int = 0
    suppressed: int = 0  # events of erased people, dropped (services/gateway/suppression.py)
    rejected: list[Rejection] = field(default_factory=list)


class _SeenMessages:
    """The messageIds seen lately, per source, bounded (oldest forgotten first)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._seen

    def discard(self, key: tuple[str, str]) -> None:
        self._seen.pop(key, None)

    def add(self, key: tuple[str, str]) -> None:
        self._seen[key] = None
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)


class GatewayApplication(GatewaySubjectData, ServiceApplication):
    service_name = "gateway"
    privacy_rules = "services.gateway.privacy:RULES"
    name = "gateway"
    ingest_event_class = IngestRequest.Received

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.suppression = SuppressionList(self.read_model(), self.privacy.hashed)
        self._seen = _SeenMessages(SEEN_MESSAGE_IDS)
        self._warm_seen()
        # Consent requests name purposes of this catalogue, or are refused at the door.
        self.purposes = load_catalogue(self.settings.purposes_file)

    def _warm_seen(self) -> None:
        """A restarted gateway still recognises the retries of requests it accepted."""
        newest = self.process_recorder.max_notification_id() or 0
        start = max(1, newest - WARM_FROM_NOTIFICATIONS)
        while start <= newest:
            notifications = self.process_recorder.select_notifications(start=start, limit=500)
            if not notifications:
                break
            for notification in notifications:
                received = self.mapper.to_domain_event(notification)
                for item in getattr(received, "accepted", ()):
                    self._seen.add((received.source, item["messageId"]))
            start = notifications[-1].id + 1

    def ingest(self, source: str, body: dict[str, Any], *, received_at: datetime,
               path_type: str | None = None, gpc: bool = False) -> IngestOutcome:
        accepted, rejected = judge_batch(body, received_at=received_at, path_type=path_type)
        if gpc:
            for item in accepted:
                stamp_gpc(item)
        outcome = IngestOutcome(rejected=rejected)
        accepted, suppressed = self._suppressed(accepted)
        outcome.suppressed = len(suppressed)
        fresh = []
        in_request: set[str] = set()
        for item in accepted:
            key = (source, item["messageId"])
            if key in self._seen or item["messageId"] in in_request:
                outcome.duplicates += 1
                continue
            in_request.add(item["messageId"])
            fresh.append(item)
        # Claimed before saving, so a concurrent retry of the same request is recognised.
        for item in fresh:
            self._seen.add((source, item["messageId"]))
        if fresh or rejected or suppressed:
            try:
                self.save_and_wake(IngestRequest(
                    source=source, accepted=fresh,
                    rejected=[_rejection_record(r) for r in rejected] + suppressed,
                    received_at=received_at.isoformat()))
            except Exception:
                for item in fresh:
                    self._seen.discard((source, item["messageId"]))
                raise
        outcome.accepted = len(fresh)
        return outcome

    def _suppressed(self, accepted: list[dict[str, Any]]
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Events of erased people leave only a record that names nobody."""
        kept, dropped = [], []
        for index, item in enumerate(accepted):
            if self.suppression.suppresses(item):
                dropped.append(_rejection_record(Rejection(
                    index=index, message_id=item.get("messageId"), field="identifiers",
                    rule="erased", message="the person was erased: event dropped",
                    redacted={})))
            else:
                kept.append(item)
        return kept, dropped

    # ---- erasure ----------------------------------------------------------------------
    def erase_subject(self, profile_ids: list[str], identifiers: list[list[str]],
                      request_id: str | None = None, subject_hashes: list[str] = (),
                      suppression_hashes: list[str] = ()) -> dict[str, Any]:
        """Before identity, events belong to their user id or anonymous id: those keys go;
        every identifier is suppressed, so the person is not brought back."""
        subjects = [subject_of_identifier(t, v) for t, v in identifiers]
        hashes = {*(self.privacy.hashed(s) for s in subjects), *subject_hashes}
        shredded = self.privacy.keys.shred(hashes)
        self.forget_cached_state()
        suppressed = self.suppression.add(identifiers, request_id, suppression_hashes)
        self.compact_store()
        return {"service": self.service_name, "keys_shredded": shredded,
                "subject_hashes": sorted(hashes), "suppression_hashes": suppressed}

    def counts(self) -> dict[str, int]:
        accepted = rejected = 0
        for request in self.scan(IngestRequest.Received):
            accepted += len(request.accepted)
            rejected += len(request.rejected)
        return {"accepted": accepted, "rejected": rejected}

    def rejections(self, limit: int = 100, source: str | None = None) -> list[dict[str, Any]]:
        """The latest rejections, newest first, read back from the event store."""
        found: list[dict[str, Any]] = []
        newest = self.process_recorder.max_notification_id() or 0
        stop = newest
        while stop > max(0, newest - REJECTIONS_SCAN_LIMIT) and len(found) < limit:
            start = max(1, stop - 499)
            notifications = self.process_recorder.select_notifications(
                start=start, stop=stop, limit=500)
            for notification in reversed(notifications):
                received = self.mapper.to_domain_event(notification)
                if not isinstance(received, IngestRequest.Received):
                    continue  # e.g. a logged view of someone's data
                if source and received.source != source:
                    continue
                for rejection in reversed(received.rejected):
                    found.append(dict(rejection, source=received.source,
                                      received_at=received.received_at))
            stop = start - 1
        return found[:limit]


def _rejection_record(rejection: Rejection) -> dict[str, Any]:
    return asdict(rejection)


def stamp_gpc(event: dict[str, Any]) -> None:
    """`Sec-GPC: 1` on the request: the browser's Global Privacy Control opt-out, kept on
    the event under a field of our own (`context.privacy.gpc`), which consent reads. Server
    SDKs never see the user's header, so they may set the field themselves."""
    context = event.get("context") if isinstance(event.get("context"), dict) else {}
    privacy = context.get("privacy") if isinstance(context.get("privacy"), dict) else {}
    event["context"] = {**context, "privacy": {**privacy, "gpc": True}}
