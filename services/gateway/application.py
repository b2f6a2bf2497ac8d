"""The gateway's application: judge a request, save what it accepted, answer.

An accepted event is saved (the outbox) before the 200 leaves, so it is never lost; a
rejected one leaves only its rejection record. Retried requests are recognised by
`messageId` and not saved twice.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from eventsourcing.domain import Aggregate, event
from eventsourcing.utils import get_topic

from services.gateway.access import (
    Credential,
    Keyring,
    RateLimiter,
    credential_id,
    digest,
    new_secret,
)
from services.gateway.audit_runs import AuditRuns
from services.gateway.domain import Rejection, judge_batch
from services.gateway.ingest_counts import IngestCounts
from services.gateway.message_ids import SeenMessageIds
from services.gateway.subject_log import GatewaySubjectData, PersonViewed
from services.gateway.suppression import SuppressionList
from shared.privacy import subject_of_identifier
from shared.purposes import load_catalogue
from shared.store import ServiceApplication

REJECTIONS_SCAN_LIMIT = 20_000


class IngestRequest(Aggregate):
    """One request to the tracking API: what it brought, what was kept, what was refused."""

    @event("Received")
    def __init__(self, source: str, accepted: list[dict[str, Any]],
                 rejected: list[dict[str, Any]], received_at: str):
        self.source = source
        self.accepted_count = len(accepted)


class StoredCredential(Aggregate):
    """A write key or API token: only its digest is stored, never the secret."""

    @staticmethod
    def create_id(credential_id: str, **_: Any) -> uuid.UUID:
        return _aggregate_id(credential_id)

    @event("Issued")
    def __init__(self, credential_id: str, kind: str, name: str, role: str | None,
                 secret_digest: str, origin: str, issued_at: str):
        self.credential_id = credential_id

    @event("Revoked")
    def revoke(self, revoked_at: str) -> None:
        pass


CREDENTIAL_TOPICS = [get_topic(StoredCredential.Issued), get_topic(StoredCredential.Revoked)]
INGEST_TOPICS = [get_topic(IngestRequest.Received)]
_CREDENTIAL_KINDS = {"write_key": "wk", "token": "tok"}


class UnknownCredential(LookupError):
    pass


@dataclass
class IngestOutcome:
    accepted: int = 0
    duplicates: int = 0
    suppressed: int = 0  # events of erased people, dropped (services/gateway/suppression.py)
    rejected: list[Rejection] = field(default_factory=list)


class GatewayApplication(GatewaySubjectData, ServiceApplication):
    service_name = "gateway"
    written_once = (IngestRequest, PersonViewed)
    privacy_rules = "services.gateway.privacy:RULES"
    name = "gateway"
    ingest_event_class = IngestRequest.Received

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.suppression = SuppressionList(self.read_model(), self.privacy.hashed)
        self.message_ids = SeenMessageIds(self.read_model())
        self.audit_runs = AuditRuns(self.read_model())
        self.ingest_counts = IngestCounts(self.read_model(), had_events=lambda: bool(
            self.process_recorder.select_notifications(start=None, limit=1,
                                                       topics=INGEST_TOPICS)))
        # Consent requests name purposes of this catalogue, or are refused at the door.
        self.purposes = load_catalogue(self.settings.purposes_file)
        self.keyring = Keyring()
        self.rate_limiter = RateLimiter(self.settings.rate_limit, self.settings.rate_burst)
        self._credentials_read_to = 0
        self._credential_of: dict[uuid.UUID, str] = {}
        self._credentials_read_at = 0.0
        self._credentials_lock = threading.Lock()
        self._load_environment_credentials()
        self.refresh_credentials(force=True)

    # ---- credentials ------------------------------------------------------------------
    def _load_environment_credentials(self) -> None:
        settings = self.settings
        for key, source in settings.write_keys.items():
            self.keyring.put(_from_environment("write_key", source, None, key))
        tokens = dict(settings.api_tokens)
        if settings.admin_token:
            tokens[settings.admin_token] = ("admin", "admin")
        for token, (name, role) in tokens.items():
            self.keyring.put(_from_environment("token", name, role, token))

    def refresh_credentials(self, force: bool = False) -> None:
        """Read credentials issued and revoked since the last read (by any replica), at
        most every `credentials_refresh_s` unless forced."""
        now = time.monotonic()
        if not force and now - self._credentials_read_at < self.settings.credentials_refresh_s:
            return
        with self._credentials_lock:
            while True:
                notifications = self.process_recorder.select_notifications(
                    start=self._credentials_read_to, limit=500, topics=CREDENTIAL_TOPICS,
                    inclusive_of_start=False)
                for notification in notifications:
                    self._apply_credential_event(self.mapper.to_domain_event(notification))
                if notifications:
                    self._credentials_read_to = notifications[-1].id
                if len(notifications) < 500:
                    break
            self._credentials_read_at = now

    def _apply_credential_event(self, stored: Any) -> None:
        if isinstance(stored, StoredCredential.Issued):
            self._credential_of[stored.originator_id] = stored.credential_id
            self.keyring.put(Credential(stored.credential_id, stored.kind, stored.name,
                                        stored.role, stored.secret_digest, stored.origin,
                                        stored.issued_at))
        elif isinstance(stored, StoredCredential.Revoked):
            self.keyring.revoke(self._credential_of[stored.originator_id], stored.revoked_at)

    def issue_credential(self, kind: str, name: str, role: str | None = None
                         ) -> tuple[Credential, str]:
        """A new write key (for source `name`) or API token (for `name`, with `role`);
        returns it with its secret, which is shown this once and stored only as a digest."""
        secret = new_secret(_CREDENTIAL_KINDS[kind])
        issued = StoredCredential(credential_id=str(uuid.uuid4()), kind=kind, name=name,
                                  role=role, secret_digest=digest(secret), origin="api",
                                  issued_at=_now())
        self.save_and_wake(issued)
        self.refresh_credentials(force=True)
        return self.keyring.get(issued.credential_id), secret

    def revoke_credential(self, kind: str, wanted: str) -> Credential:
        """Revoked at once in this process; other replicas within `credentials_refresh_s`."""
        self.refresh_credentials(force=True)
        known = self.keyring.get(wanted)
        if known is None or known.kind != kind:
            raise UnknownCredential(wanted)
        if known.revoked_at is None:
            stored = self.find(_aggregate_id(wanted))
            if stored is None:  # one of the environment's: stored the first time it is revoked
                stored = StoredCredential(
                    credential_id=wanted, kind=kind, name=known.name, role=known.role,
                    secret_digest=known.secret_digest, origin=known.origin,
                    issued_at=known.issued_at)
            stored.revoke(revoked_at=_now())
            self.save_and_wake(stored)
            self.refresh_credentials(force=True)
        return self.keyring.get(wanted)

    def ingest(self, source: str, body: dict[str, Any], *, received_at: datetime,
               path_type: str | None = None, gpc: bool = False) -> IngestOutcome:
        accepted, rejected = judge_batch(body, received_at=received_at, path_type=path_type)
        if gpc:
            for item in accepted:
                stamp_gpc(item)
        outcome = IngestOutcome(rejected=rejected)
        accepted, suppressed = self._suppressed(accepted)
        outcome.suppressed = len(suppressed)
        seen = self.message_ids.claim(source, [item["messageId"] for item in accepted])
        fresh, in_request = [], set()
        for item in accepted:
            if item["messageId"] in seen or item["messageId"] in in_request:
                outcome.duplicates += 1
                continue
            in_request.add(item["messageId"])
            fresh.append(item)
        try:
            if fresh or rejected or suppressed:
                writes = self.message_ids.writes(source, list(in_request), received_at)
                writes.extend(self.ingest_counts.writes(len(fresh), received_at))
                self.save_and_wake(IngestRequest(
                    source=source, accepted=fresh,
                    rejected=[_rejection_record(r) for r in rejected] + suppressed,
                    received_at=received_at.isoformat()), writes=writes)
        finally:
            self.message_ids.release(source, list(in_request))
        self.message_ids.saved(len(fresh), received_at)
        self.ingest_counts.saved(received_at)
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
        self.subject_index.forget(hashes)
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
                start=start, stop=stop, limit=500, topics=INGEST_TOPICS)
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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _aggregate_id(wanted: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"tessera:credential:{wanted}")


def _from_environment(kind: str, name: str, role: str | None, secret: str) -> Credential:
    secret_digest = digest(secret)
    return Credential(credential_id(secret_digest), kind, name, role, secret_digest, "env")


def _rejection_record(rejection: Rejection) -> dict[str, Any]:
    return asdict(rejection)


def stamp_gpc(event: dict[str, Any]) -> None:
    """`Sec-GPC: 1` on the request: the browser's Global Privacy Control opt-out, kept on
    the event under a field of our own (`context.privacy.gpc`), which consent reads. Server
    SDKs never see the user's header, so they may set the field themselves."""
    context = event.get("context") if isinstance(event.get("context"), dict) else {}
    privacy = context.get("privacy") if isinstance(context.get("privacy"), dict) else {}
    event["context"] = {**context, "privacy": {**privacy, "gpc": True}}
