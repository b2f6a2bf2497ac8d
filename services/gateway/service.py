"""The public HTTP API: Segment's Tracking API v1, plus read and admin endpoints.

Entrypoints stay thin: authenticate, parse, call the application or another service,
answer. Every request is authenticated: a write key for tracking, the admin token for
everything that reads or configures.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import eventlet
from marshmallow import ValidationError
from nameko.rpc import RpcProxy, rpc
from werkzeug.wrappers import Response

from connectors.email import UnsubscribeLinks
from services.gateway.access import Permission, Role, allows, retry_after_header
from services.gateway.application import GatewayApplication, UnknownCredential
from services.gateway.console.routes import ConsoleRoutes
from services.gateway.contacts_routes import ContactsRoutes
from services.gateway.domain import (
    MAX_REQUEST_BYTES,
    BadRequest,
    PayloadTooLarge,
    Unauthorized,
    parse_body,
    write_key_from,
)
from services.gateway.guard import api, require_declared_permissions, routes
from services.gateway.openapi import openapi_description
from services.gateway.privacy_routes import PrivacyRoutes
from services.gateway.schemas import ConsentRequestSchema
from services.gateway.translation import translator
from services.identity.normalise import normalise_email
from shared.contracts import CONSUMERS, PARTITIONED_BY_DESTINATION, lane_partition
from shared.errors import RetryLater
from shared.messaging.broker import queue_depths, queues_for
from shared.messaging.nameko_ext import (
    RequestLatency,
    ServiceApp,
    numbered_partitions,
    service_status,
)

SHORT_PATHS = {"i": "identify", "t": "track", "p": "page", "s": "screen", "g": "group",
               "a": "alias"}
SERVICES = ("gateway", "identity", "contacts", "segments", "consent", "activation")
RECEIPT_FIELDS = {"jurisdiction": "jurisdiction", "policyVersion": "policy_version",
                  "language": "language", "method": "method", "lawfulBasis": "lawful_basis",
                  "collectedAt": "collected_at"}
_consent_schema = ConsentRequestSchema()


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, default=str), status=status,
                    mimetype="application/json", headers=headers)


def _error(status: int, code: str, message: str) -> Response:
    return _json(status, {"code": code, "message": message})


class Unavailable(Exception):
    pass


class RateLimited(BadRequest):
    status = 429

    def __init__(self, wait: float) -> None:
        super().__init__("rate_limited", f"too many requests for this write key: retry "
                         f"after {retry_after_header(wait)} s")
        self.wait = wait


_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


class GatewayService(ContactsRoutes, PrivacyRoutes, ConsoleRoutes):
    name = "gateway"
    app = ServiceApp(GatewayApplication, translator)
    latency = RequestLatency()
    identity = RpcProxy("identity")
    contacts = RpcProxy("contacts")
    segments = RpcProxy("segments")
    consent = RpcProxy("consent")
    activation = RpcProxy("activation")

    # ---- tracking API -----------------------------------------------------------------
    @api("POST", "/v1/batch", Permission.TRACK)
    def batch(self, request):
        return self._track(request, None)

    @api("POST", "/v1/<string:kind>", Permission.TRACK)
    def single(self, request, kind):
        if kind in ("batch", "b"):
            return self._track(request, None)
        path_type = SHORT_PATHS.get(kind, kind)
        if path_type not in SHORT_PATHS.values():
            return _error(404, "not_found", f"no endpoint /v1/{kind}")
        return self._track(request, path_type)

    def _track(self, request, path_type):
        received_at = datetime.now(UTC)
        try:
            if (request.content_length or 0) > MAX_REQUEST_BYTES:
                raise PayloadTooLarge(f"request body exceeds {MAX_REQUEST_BYTES} bytes")
            body = parse_body(request.get_data(cache=False),
                              request.headers.get("Content-Encoding"))
            source = self._source(request, body)
            outcome = self.app.ingest(source, body, received_at=received_at, path_type=path_type,
                                      gpc=_gpc(request))
        except BadRequest as refused:
            return _refused(refused)
        except RetryLater as busy:
            return _json(503, {"code": "retry", "message": str(busy)},
                         {"Retry-After": retry_after_header(busy.retry_after)})
        if outcome.accepted == 0 and outcome.duplicates == 0 and not outcome.suppressed \
                and outcome.rejected:
            first = outcome.rejected[0]
            return _error(400, first.rule, first.message)
        return _json(200, {"success": True})

    def _source(self, request, body) -> str:
        """The source whose write key authenticates the request, within its rate limit."""
        key = write_key_from(request.headers.get("Authorization"), body)
        self.app.refresh_credentials()
        caller = self.app.keyring.write_key(key) if key else None
        if caller is None:
            raise Unauthorized("unknown, revoked or missing write key")
        wait = self.app.rate_limiter.admit(caller.credential_id)
        if wait:
            raise RateLimited(wait)
        return caller.name

    # ---- health -----------------------------------------------------------------------
    @api("GET", "/health", Permission.PUBLIC)
    def health(self, request):
        return _json(200, {"status": "ok"})

    # ---- consent through the API ------------------------------------------------------
    @api("POST", "/v1/consent", Permission.TRACK)
    def record_consent(self, request):
        """A consent receipt (purposes), a TC string, or a GPC signal (`Sec-GPC: 1`)."""
        try:
            body = parse_body(request.get_data(cache=False),
                              request.headers.get("Content-Encoding"))
            source = self._source(request, body)
            identifiers, purposes, receipt, tc_string = _consent_request(
                body, self._catalogue(), gpc=_gpc(request))
        except BadRequest as refused:
            return _refused(refused)
        try:
            answer: dict[str, Any] = {"success": True, "records": []}
            if purposes:
                answer["records"] += self._call(self.consent.record_consent, identifiers,
                                                purposes, source=f"api:{source}", **receipt)
            if tc_string is not None:
                outcome = self._call(self.consent.record_tc_string, identifiers, tc_string,
                                     f"api:{source}", receipt.get("collected_at"))
                answer["records"] += outcome["records"]
                answer["tcString"] = {k: outcome[k] for k in ("valid", "problems", "purposes")}
            if _gpc(request):
                outcome = self._call(self.consent.record_gpc, identifiers, f"api:{source}")
                answer["records"] += outcome["records"]
                # §7025(c)(6): show that the signal was processed.
                answer["gpc"] = {"honored": True, "opted_out": outcome["opted_out"]}
        except Unavailable as down:
            return _error(503, "unavailable", str(down))
        answer["records"] = sorted(set(answer["records"]))
        return _json(200, answer)

    def _catalogue(self):
        return self.app.purposes

    # ---- consent administration: objections and restrictions (data subject requests) --
    @api("GET", "/v1/consent/purposes", Permission.CONSENT_READ)
    def consent_purposes(self, request):
        return self._admin(request, lambda: _json(200, {
            "purposes": self._call(self.consent.purposes)}))

    @api("POST", "/v1/consent/objections", Permission.DSR_HANDLE)
    def record_objection(self, request):
        def answer(body):
            return self._consent_answer(self.consent.record_objection,
                                        body.get("identifiers"), body.get("purposes"),
                                        body.get("source") or "admin")
        return self._admin(request, self._with_json_body, request, answer)

    @api("POST", "/v1/consent/restrictions", Permission.DSR_HANDLE)
    def set_restriction(self, request):
        def answer(body):
            if not isinstance(body.get("restricted"), bool):
                return _error(400, "invalid_consent", "restricted: must be true or false")
            return self._consent_answer(self.consent.set_restriction, body.get("identifiers"),
                                        body["restricted"], str(body.get("reason") or ""))
        return self._admin(request, self._with_json_body, request, answer)

    def _consent_answer(self, remote, *args):
        outcome = self._call(remote, *args)
        if "error" in outcome:
            return _json(400, outcome["error"])
        return _json(200, outcome)

    # ---- privacy: erasure (docs/privacy.md) ---------------------------------------------
    @api("POST", "/v1/privacy/erasures", Permission.DSR_HANDLE)
    def request_erasure(self, request):
        def answer(body):
            identifier = body.get("identifier")
            requested_by = body.get("requested_by") or "admin-api"
            outcome = self._call_long(self.consent.erase, identifier, requested_by,
                                      body.get("request_id"))
            if "error" in outcome:
                return _json(400, outcome["error"])
            return _json(200, outcome)
        return self._admin(request, self._with_json_body, request, answer)

    @api("POST", "/v1/privacy/erasures/reapply", Permission.PRIVACY_WRITE)
    def reapply_erasures(self, request):
        return self._admin(request, lambda: _json(
            200, self._call_long(self.consent.reapply_erasures)))

    @rpc
    def erase_subject(self, profile_ids: list[str], identifiers: list[list[str]], **extra):
        """Erasure of one person at the door: keys, suppression list (services/gateway)."""
        return self.app.erase_subject(profile_ids, identifiers, **extra)

    def _call_long(self, remote, /, *args):
        """An erasure visits every service and every destination: more than one call's
        worth of time."""
        timeout = max(120.0, 10 * self.app.settings.rpc_timeout)
        try:
            with eventlet.Timeout(timeout):
                return remote(*args)
        except eventlet.Timeout as expired:
            raise Unavailable(f"the erasure did not finish within {timeout}s") from expired

    # ---- one-click unsubscribe (RFC 8058) ----------------------------------------------
    @api("POST", "/u/<string:token>", Permission.PUBLIC)
    def one_click_unsubscribe(self, request, token):
        """An email's List-Unsubscribe link: an objection to the sender's purposes."""
        if request.get_data(cache=False).strip() != b"List-Unsubscribe=One-Click":
            return _error(400, "invalid_unsubscribe",
                          "body: must be List-Unsubscribe=One-Click (RFC 8058)")
        found = UnsubscribeLinks(self.app.settings.destinations_file).read(token)
        if found is None:
            return _error(404, "not_found", "unknown unsubscribe link")
        profile_id, destination, purposes = found
        try:
            identifiers = self._call(self.identity.identifiers_of, profile_id)
            anchor = next(([kind, values[0]] for kind in ("user_id", "email", "anonymous_id")
                           for values in [identifiers.get(kind)] if values), None)
            if anchor is None:
                return _error(404, "not_found", "the link's person is unknown")
            # Email marketing goes too: the person said no to our emails, not to one list.
            objected = sorted(set(purposes) | ({"email_marketing"} & self._catalogue().ids()))
            self._call(self.consent.record_objection, [anchor], objected,
                       f"unsubscribe:{destination}", method="List-Unsubscribe one-click")
        except Unavailable as down:
            return _error(503, "unavailable", str(down))
        return _json(200, {"unsubscribed": True})

    # ---- read and admin API -----------------------------------------------------------
    @api("GET", "/v1/profiles", Permission.PROFILES_READ)
    def find_profile(self, request):
        return self._admin(request, self._find_profile, request.args)

    def _find_profile(self, args):
        for param, kind in (("userId", "user_id"), ("email", "email"),
                            ("anonymousId", "anonymous_id"), ("phone", "phone")):
            value = args.get(param)
            if value:
                profile_id = self.profile_id_for(kind, value)
                if profile_id is None:
                    return _error(404, "not_found", f"no profile with {param} {value!r}")
                return self._profile(profile_id)
        return _error(400, "missing_parameter",
                      "give one of userId, email, anonymousId or phone")

    def profile_id_for(self, kind: str, value: str) -> str | None:
        if kind == "email":  # gmail's dots and +tags reach one mailbox
            value = normalise_email(value) or value.strip().lower()
        return self._call(self.identity.profile_id_for, kind, value)

    @api("GET", "/v1/profiles/<string:profile_id>", Permission.PROFILES_READ)
    def get_profile(self, request, profile_id):
        return self._admin(request, self._profile, profile_id)

    def _profile(self, profile_id):
        profile = self.profile_view(profile_id)
        if profile is None:
            return _error(404, "not_found", f"no profile {profile_id}")
        return _json(200, profile)

    def profile_view(self, profile_id: str) -> dict[str, Any] | None:
        """A profile with its identifiers and computed traits (the API and the console)."""
        profile = self._call(self.contacts.get_profile, profile_id)
        if profile is None:
            return None
        profile["identifiers"] = self._call(self.identity.identifiers_of, profile["profile_id"])
        profile["computed_traits"] = self._call(self.segments.computed_traits_of,
                                                profile["profile_id"])
        return profile

    @api("GET", "/v1/profiles/<string:profile_id>/events", Permission.HISTORY_READ)
    def profile_events(self, request, profile_id):
        def answer():
            limit = _limit(request.args.get("limit"), default=100, most=1000)
            if limit is None:
                return _error(400, "invalid_limit", "limit: must be a whole number 1-1000")
            events = self._call(self.contacts.timeline, profile_id, limit)
            if events is None:
                return _error(404, "not_found", f"no profile {profile_id}")
            return _json(200, {"profile_id": profile_id, "events": events})
        return self._admin(request, answer)

    @api("GET", "/v1/profiles/<string:profile_id>/consent", Permission.CONSENT_READ)
    def profile_consent(self, request, profile_id):
        return self._admin(request, lambda: _json(200, self._call(self.consent.consent_of,
                                                                  profile_id)))

    @api("GET", "/v1/profiles/<string:profile_id>/segments", Permission.PROFILES_READ)
    def profile_segments(self, request, profile_id):
        return self._admin(request, lambda: _json(200, self._call(self.segments.memberships,
                                                                  profile_id)))

    # ---- identity: explain, review queue, taking merges back ---------------------------
    @api("GET", "/v1/profiles/<string:profile_id>/identity", Permission.IDENTITY_READ)
    def profile_identity(self, request, profile_id):
        def answer():
            explained = self._call(self.identity.explain, profile_id)
            if explained is None:
                return _error(404, "not_found", f"no profile {profile_id}")
            return _json(200, explained)
        return self._admin(request, answer)

    @api("POST", "/v1/profiles/<string:profile_id>/identity/retract", Permission.IDENTITY_WRITE)
    def retract_identity_edge(self, request, profile_id):
        def answer(body):
            edge = [body.get("from"), body.get("to")]
            if not all(isinstance(end, str) and ":" in end for end in edge):
                return _error(400, "invalid_edge",
                              "from, to: required, identifiers written type:value")
            return self._identity_answer(self.identity.retract_edge, profile_id, *edge,
                                         "admin")
        return self._admin(request, self._with_json_body, request, answer)

    @api("POST", "/v1/profiles/<string:profile_id>/identity/reject-merge",
         Permission.IDENTITY_WRITE)
    def reject_identity_merge(self, request, profile_id):
        return self._admin(request, lambda: self._identity_answer(
            self.identity.reject_merge, profile_id, "admin"))

    @api("GET", "/v1/identity/review", Permission.IDENTITY_READ)
    def identity_review(self, request):
        return self._admin(request, lambda: self._identity_answer(
            self.identity.review_cases, request.args.get("status", "open"), key="cases"))

    @api("POST", "/v1/identity/review/<string:case_id>", Permission.IDENTITY_WRITE)
    def decide_identity_case(self, request, case_id):
        def answer(body):
            decision = body.get("decision")
            if decision not in ("approve", "reject"):
                return _error(400, "invalid_decision", "decision: must be approve or reject")
            return self._identity_answer(self.identity.decide_case, case_id,
                                         decision == "approve", "admin")
        return self._admin(request, self._with_json_body, request, answer)

    @api("GET", "/v1/identity/generic", Permission.IDENTITY_READ)
    def generic_identifiers(self, request):
        return self._admin(request, lambda: _json(200, {
            "generic": self._call(self.identity.generic_identifiers)}))

    @api("GET", "/v1/identity/model", Permission.IDENTITY_READ)
    def identity_model(self, request):
        return self._admin(request, lambda: _json(200, self._call(self.identity.match_weights)))

    @api("POST", "/v1/identity/model/estimate", Permission.IDENTITY_WRITE)
    def estimate_identity_model(self, request):
        return self._admin(request, lambda: self._identity_answer(
            self.identity.estimate_match_weights))

    def _identity_answer(self, remote, *args, key: str | None = None):
        outcome = self._call(remote, *args)
        if "error" in outcome:
            return _json(400, outcome["error"])
        return _json(200, {key: outcome["result"]} if key else outcome["result"])

    @staticmethod
    def _with_json_body(request, answer):
        try:
            body = json.loads(request.get_data(cache=False) or b"{}")
        except ValueError:
            return _error(400, "invalid_json", "body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "invalid_body", "body must be a JSON object")
        return answer(body)

    @api("GET", "/v1/decisions/<string:decision_id>", Permission.CONSENT_READ)
    def decision(self, request, decision_id):
        def answer():
            found = self._call(self.consent.decision, decision_id)
            return _json(200, found) if found else _error(404, "not_found", "no such decision")
        return self._admin(request, answer)

    @api("GET", "/v1/segments", Permission.SEGMENTS_READ)
    def list_segments(self, request):
        return self._admin(request, lambda: _json(200, {"segments": self.segments_view()}))

    def segments_view(self) -> list[dict[str, Any]]:
        """Every segment with its size and backfill (the API and the console)."""
        sizes = self._call(self.segments.segment_sizes)
        backfills = {b["name"]: b for b in self._call(self.segments.backfills)}
        return [{**segment, "size": sizes.get(name, 0), "backfill": backfills.get(name)}
                for name, segment in self._call(self.segments.list_segments).items()]

    @api("GET", "/v1/segments/<string:name>", Permission.SEGMENTS_READ)
    def get_segment(self, request, name):
        def answer():
            segment = self._call(self.segments.list_segments).get(name)
            if segment is None:
                return _error(404, "not_found", f"no segment {name}")
            backfills = {b["name"]: b for b in self._call(self.segments.backfills)}
            return _json(200, {**segment, "size": self._call(self.segments.segment_sizes)
                               .get(name, 0), "backfill": backfills.get(name)})
        return self._admin(request, answer)

    @api("POST", "/v1/segments", Permission.SEGMENTS_WRITE)
    def define_segment(self, request):
        return self._admin(request, self._define, request, self.segments.define_segment,
                           "segment")

    @api("POST", "/v1/segments/preview", Permission.SEGMENTS_READ)
    def preview_segment(self, request):
        return self._admin(request, self._define, request, self.segments.preview, None)

    def _define(self, request, remote, key):
        body = _json_object(request)
        if isinstance(body, Response):
            return body
        result = self._call(remote, body)
        if "error" in result:
            return _json(400, result["error"])
        return _json(200, result[key] if key else result)

    @api("DELETE", "/v1/segments/<string:name>", Permission.SEGMENTS_WRITE)
    def remove_segment(self, request, name):
        def answer():
            removed = self._call(self.segments.remove_segment, name)
            if isinstance(removed, dict):
                return _json(409, removed["error"])
            if removed:
                return _json(200, {"removed": name})
            return _error(404, "not_found", f"no segment {name}")
        return self._admin(request, answer)

    @api("GET", "/v1/segments/<string:name>/members", Permission.SEGMENTS_READ)
    def segment_members(self, request, name):
        def answer():
            limit = _limit(request.args.get("limit"), default=100, most=1000)
            if limit is None:
                return _error(400, "invalid_limit", "limit: must be a whole number 1-1000")
            return _json(200, self._call(self.segments.members, name, limit,
                                         request.args.get("after", "")))
        return self._admin(request, answer)

    @api("GET", "/v1/backfills", Permission.SEGMENTS_READ)
    def backfills(self, request):
        return self._admin(request, lambda: _json(200, {
            "backfills": self._call(self.segments.backfills)}))

    @api("GET", "/v1/computed-traits", Permission.SEGMENTS_READ)
    def list_computed_traits(self, request):
        return self._admin(request, lambda: _json(200, {
            "computed_traits": list(self._call(self.segments.list_computed_traits).values())}))

    @api("POST", "/v1/computed-traits", Permission.SEGMENTS_WRITE)
    def define_computed_trait(self, request):
        return self._admin(request, self._define, request,
                           self.segments.define_computed_trait, "computed_trait")

    @api("DELETE", "/v1/computed-traits/<string:name>", Permission.SEGMENTS_WRITE)
    def remove_computed_trait(self, request, name):
        def answer():
            if self._call(self.segments.remove_computed_trait, name):
                return _json(200, {"removed": name})
            return _error(404, "not_found", f"no computed trait {name}")
        return self._admin(request, answer)

    @api("GET", "/v1/destinations", Permission.DESTINATIONS_READ)
    def destinations(self, request):
        return self._admin(request, lambda: _json(200, {
            "destinations": self._call(self.activation.destinations),
            "deliveries": self._call(self.activation.stats)}))

    @api("GET", "/v1/destinations/<string:name>/outcomes", Permission.DESTINATIONS_READ)
    def outcomes(self, request, name):
        return self._admin(request, lambda: _json(200, {
            "outcomes": self._call(self.activation.outcomes, name)}))

    @api("GET", "/v1/destinations/<string:name>/dead-letters", Permission.DESTINATIONS_READ)
    def dead_letters(self, request, name):
        return self._admin(request, lambda: _json(200, {
            "dead_letters": self._call(self.activation.dead_letters, name)}))

    @api("POST", "/v1/destinations/<string:name>/dead-letters/<string:letter_id>/replay",
         Permission.DESTINATIONS_WRITE)
    def replay(self, request, name, letter_id):
        def answer():
            replayed = self._call(self.activation.replay, name, letter_id)
            if replayed is None:
                return _error(404, "not_found", f"no dead letter {letter_id} of {name}")
            return _json(200, replayed)
        return self._admin(request, answer)

    @api("GET", "/v1/rejections", Permission.REJECTIONS_READ)
    def rejections(self, request):
        limit = _limit(request.args.get("limit"), default=100, most=1000)
        if limit is None:
            return _error(400, "invalid_limit", "limit: must be a whole number 1-1000")
        return self._admin(request, lambda: _json(200, {
            "rejections": self.app.rejections(limit=limit, source=request.args.get("source"))}))

    @api("GET", "/v1/stats", Permission.OPERATIONS_READ)
    def stats(self, request):
        return self._admin(request, lambda: _json(200, {
            "events": self.app.counts(),
            "profiles": self._call(self.identity.profile_count),
            "segments": self._call(self.segments.segment_sizes),
            "deliveries": self._call(self.activation.stats),
        }))

    @api("GET", "/v1/status", Permission.OPERATIONS_READ)
    def status(self, request):
        return self._admin(request, lambda: _json(200, self.pipeline_status()))

    def pipeline_status(self) -> dict[str, Any]:
        statuses = [service_status("gateway", self.app)]
        for name in SERVICES[1:]:
            statuses.append(self._call(getattr(self, name).status))
        destinations = [lane_partition(d["name"], lane)
                        for d in self._call(self.activation.destinations)
                        for lane in range(d.get("lanes", 1))]
        queues = []
        for stream in CONSUMERS:
            partitions = (destinations if stream in PARTITIONED_BY_DESTINATION
                          else numbered_partitions(self.app.settings))
            queues += queues_for(stream, partitions)
        depths = queue_depths(self.app.settings.broker_url, queues)
        drained = all(s["outbox_backlog"] == 0 and s["in_flight"] == 0
                      and not s.get("backfills_running") for s in statuses) \
            and not any(depths.values())
        return {"drained": drained, "services": statuses,
                "queued": sum(depths.values()), "queues": depths}

    # ---- access: write keys and API tokens --------------------------------------------
    @api("GET", "/v1/write-keys", Permission.CREDENTIALS_ADMIN)
    def list_write_keys(self, request):
        return self._list_credentials("write_key", "write_keys")

    @api("POST", "/v1/write-keys", Permission.CREDENTIALS_ADMIN)
    def issue_write_key(self, request):
        def answer(body):
            source = body.get("source")
            if not isinstance(source, str) or not _NAME.fullmatch(source):
                return _error(400, "invalid_source", "source: required, 1-64 letters, digits, "
                              "'.', '_' or '-'")
            credential, secret = self.app.issue_credential("write_key", source)
            return _json(201, {**credential.public(), "write_key": secret})
        return self._with_json_body(request, answer)

    @api("DELETE", "/v1/write-keys/<string:key_id>", Permission.CREDENTIALS_ADMIN)
    def revoke_write_key(self, request, key_id):
        return self._revoke("write_key", key_id)

    @api("GET", "/v1/tokens", Permission.CREDENTIALS_ADMIN)
    def list_tokens(self, request):
        return self._list_credentials("token", "tokens")

    @api("POST", "/v1/tokens", Permission.CREDENTIALS_ADMIN)
    def issue_token(self, request):
        def answer(body):
            name, role = body.get("name"), body.get("role")
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                return _error(400, "invalid_name", "name: required, 1-64 letters, digits, "
                              "'.', '_' or '-'")
            if role not in tuple(Role):
                return _error(400, "invalid_role",
                              f"role: must be one of {', '.join(Role)}")
            credential, secret = self.app.issue_credential("token", name, role)
            return _json(201, {**credential.public(), "token": secret})
        return self._with_json_body(request, answer)

    @api("DELETE", "/v1/tokens/<string:token_id>", Permission.CREDENTIALS_ADMIN)
    def revoke_token(self, request, token_id):
        return self._revoke("token", token_id)

    def _list_credentials(self, kind: str, key: str) -> Response:
        self.app.refresh_credentials(force=True)
        return _json(200, {key: [c.public() for c in self.app.keyring.listed(kind)]})

    def _revoke(self, kind: str, wanted: str) -> Response:
        try:
            return _json(200, self.app.revoke_credential(kind, wanted).public())
        except UnknownCredential:
            return _error(404, "not_found", f"no {kind.replace('_', ' ')} {wanted}")

    # ---- the API's description ----------------------------------------------------------
    @api("GET", "/openapi.json", Permission.PUBLIC)
    def openapi(self, request):
        return _json(200, openapi_description(routes(type(self))))

    # ---- plumbing ---------------------------------------------------------------------
    def _refuse(self, request, permission: Permission) -> Response | None:
        """Checked before every route (see guard.api): None lets the request through.
        The tracking routes authenticate their write key themselves (it may be in the
        body); public routes need nothing."""
        if permission in (Permission.PUBLIC, Permission.TRACK):
            return None
        self.app.refresh_credentials()
        caller = self._caller(request)
        if caller is None:
            return _error(401, "unauthorized", "an API token is required "
                          "(Authorization: Bearer); this one is unknown, revoked or missing")
        if not allows(caller, permission):
            return _error(403, "forbidden",
                          f"the {caller.role} role does not grant {permission}")
        return None

    def _caller(self, request):
        """The API token's holder (name, role), or None."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return self.app.keyring.token(token.strip()) if scheme == "Bearer" else None

    def _admin(self, request, handler, *args):
        """Runs an admin route's answer (access was checked by its declared permission);
        a service that does not answer in time is a 503."""
        try:
            return self._log_views(request, handler(*args))
        except Unavailable as down:
            return _error(503, "unavailable", str(down))

    def _call(self, remote, /, *args, **kwargs):
        timeout = self.app.settings.rpc_timeout
        try:
            with eventlet.Timeout(timeout):
                return remote(*args, **kwargs)
        except eventlet.Timeout as expired:
            raise Unavailable(f"a service did not answer within {timeout}s") from expired


def _refused(refused: BadRequest) -> Response:
    headers = ({"Retry-After": retry_after_header(refused.wait)}
               if isinstance(refused, RateLimited) else None)
    return _json(refused.status, {"code": refused.code, "message": refused.message}, headers)


require_declared_permissions(GatewayService)


def _json_object(request) -> dict | Response:
    try:
        body = json.loads(request.get_data(cache=False) or b"null")
    except ValueError:
        return _error(400, "invalid_json", "body is not valid JSON")
    if not isinstance(body, dict):
        return _error(400, "invalid_body", "body must be a JSON object")
    return body


def _limit(raw: str | None, *, default: int, most: int) -> int | None:
    if raw in (None, ""):
        return default
    # isdigit() alone admits '³' and other digits int() refuses (found by the fuzzer)
    return int(raw) if raw.isascii() and raw.isdigit() and 1 <= int(raw) <= most else None


def _gpc(request) -> bool:
    # The only value the GPC specification defines; anything else is no signal.
    return request.headers.get("Sec-GPC", "").strip() == "1"


def _consent_request(body: dict, catalogue, *, gpc: bool = False
                     ) -> tuple[list[list[str]], dict[str, bool], dict[str, str], str | None]:
    try:
        data = _consent_schema.load(body)
    except ValidationError as error:
        field, problems = next(iter(error.normalized_messages().items()))
        problem = problems[0] if isinstance(problems, list) else problems
        raise BadRequest("invalid_consent", f"{field}: {problem}") from error
    purposes = {k.strip().lower(): v for k, v in (data.get("purposes") or {}).items()}
    if not purposes and "tcString" not in data and not gpc:
        raise BadRequest("invalid_consent", "purposes: required (or a tcString, or the "
                                            "Sec-GPC: 1 header)")
    unknown = catalogue.unknown(purposes)
    if unknown:
        raise BadRequest("invalid_consent", f"purposes: {unknown[0]!r} is not in the purpose "
                                            "catalogue (GET /v1/consent/purposes)")
    identifiers = [[kind, value] for kind, value in (
        ("user_id", data["userId"]),
        ("email", data["email"] and data["email"].strip().lower()),
        ("anonymous_id", data["anonymousId"])) if value]
    receipt = {key: str(data[field]) for field, key in RECEIPT_FIELDS.items() if field in data}
    if "collected_at" in receipt:
        receipt["collected_at"] = data["collectedAt"].isoformat().replace("+00:00", "Z")
    return identifiers, purposes, receipt, data.get("tcString")
