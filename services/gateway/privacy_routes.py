"""Data subject requests, a person's export and history, the view log and the Art. 30
report: admin endpoints mixed into the gateway (one HTTP listener).

Thin: parse, call consent (the compliance home of requests) or `privacy.SubjectData`,
answer. Intended roles (see docs/privacy-requests.md): a compliance officer reaches all
of these; none of them changes configuration.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

from nameko.exceptions import RemoteError
from werkzeug.wrappers import Response

from services.gateway.access import Permission
from services.gateway.guard import api
from services.gateway.processing_records import (
    ProcessingConfigError,
    load_processing_config,
    records_of_processing,
    render_markdown,
)
from services.gateway.subject_data import (
    SubjectData,
    SubjectNotFound,
    parse_identifier,
    subject_history,
)
from shared.envelope import utcnow_iso

VIEWER_HEADER = "X-Tessera-Actor"
# Reading the view log would log a view of everyone in it: it is not itself a view.
NOT_VIEWS = ("/v1/audit/views",)
PROFILE_KEYS = ("profile_id", "profile_ids")


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body, default=str), status=status, mimetype="application/json")


def _error(status: int, code: str, message: str, field: str | None = None) -> Response:
    return _json(status, {"code": code, "message": message, "field": field})


def _answer(outcome: dict[str, Any]) -> Response:
    """consent's {"result"} or {"error"} as an HTTP answer."""
    error = outcome.get("error")
    if error is None:
        return _json(200, outcome["result"])
    status = {"not_found": 404}.get(error["code"], 409 if error.get("field") in (
        "status", "verification") else 400)
    return _error(status, error["code"], error["message"], error.get("field"))


def _body(request) -> dict | Response:
    try:
        body = json.loads(request.get_data(cache=False) or b"{}")
    except ValueError:
        return _error(400, "invalid_json", "body is not valid JSON")
    if not isinstance(body, dict):
        return _error(400, "invalid_body", "body must be a JSON object")
    return body


def profile_ids_in(body: Any, depth: int = 0) -> set[str]:
    """Every profile id an answer shows: whose data was viewed."""
    found: set[str] = set()
    if depth > 12:
        return found
    if isinstance(body, dict):
        for key, value in body.items():
            if key == "profile_id" and isinstance(value, str):
                found.add(value)
            elif key == "profile_ids" and isinstance(value, list):
                found.update(v for v in value if isinstance(v, str))
            else:
                found |= profile_ids_in(value, depth + 1)
    elif isinstance(body, list):
        for item in body:
            found |= profile_ids_in(item, depth + 1)
    return found


def token_fingerprint(authorization: str) -> str:
    """Which credential was used, without keeping it: 12 hex digits of its SHA-256."""
    token = authorization.removeprefix("Bearer ").strip()
    return hashlib.sha256(token.encode()).hexdigest()[:12] if token else ""


class _Timed:
    """A service's RPCs called through the gateway's timeout (`_call`)."""

    def __init__(self, proxy, call):
        self._proxy, self._call = proxy, call

    def __getattr__(self, name):
        return functools.partial(self._call, getattr(self._proxy, name))


class PrivacyRoutes:
    """Needs the gateway's RpcProxies, `app`, `_admin` and `_call`."""

    # ---- who is looking ---------------------------------------------------------------
    def _viewer(self, request) -> tuple[str, str]:
        """(who, role): the caller's token says both; a header may name the person using a
        shared token, for the record (it grants nothing)."""
        caller = self._caller(request)
        name, role = (caller.name, caller.role) if caller is not None else ("unknown", "none")
        who = (request.headers.get(VIEWER_HEADER) or name).strip()[:200] or name
        return who, role

    def _log_views(self, request, response):
        """Called for every admin answer: a 2xx that shows people's data is a view."""
        if not isinstance(response, Response) or response.status_code >= 300 \
                or request.path.startswith(NOT_VIEWS) or response.mimetype != "application/json":
            return response
        try:
            shown = profile_ids_in(json.loads(response.get_data()))
        except ValueError:
            return response
        if shown:
            who, role = self._viewer(request)
            self.app.record_view(who, role, sorted(shown), f"{request.method} {request.path}",
                                 token_fingerprint(request.headers.get("Authorization", "")))
        return response

    def _subject_data(self) -> SubjectData:
        services: dict[str, Any] = {name: _Timed(getattr(self, name), self._call) for name in (
            "identity", "contacts", "segments", "consent", "activation")}
        services["gateway"] = self.app  # the gateway's own store: no RPC to itself
        return SubjectData(services)

    # ---- data subject requests --------------------------------------------------------
    @api("POST", "/v1/dsr", Permission.DSR_HANDLE)
    def file_request(self, request):
        def answer():
            body = _body(request)
            if isinstance(body, Response):
                return body
            try:
                identifiers = [parse_identifier(i) if isinstance(i, str) else i
                               for i in body.get("identifiers") or []]
            except ValueError as bad:
                return _error(400, "invalid_request", str(bad), "identifiers")
            command = {**body, "identifiers": identifiers,
                       "filed_by": body.get("filed_by") or self._viewer(request)[0]}
            return _answer(self._call(self.consent.file_request, command))
        return self._admin(request, answer)

    @api("GET", "/v1/dsr", Permission.DSR_READ)
    def list_requests(self, request):
        return self._admin(request, lambda: _json(200, {"requests": self._call(
            self.consent.list_requests, request.args.get("status"), request.args.get("kind"))}))

    @api("GET", "/v1/dsr/overdue", Permission.DSR_READ)
    def overdue_requests(self, request):
        return self._admin(request, lambda: _json(200, {"requests": self._call(
            self.consent.overdue_requests)}))

    @api("GET", "/v1/dsr/<string:request_id>", Permission.DSR_READ)
    def show_request(self, request, request_id):
        return self._admin(request, lambda: _answer(self._call(self.consent.request,
                                                               request_id)))

    @api("POST", "/v1/dsr/<string:request_id>/verify", Permission.DSR_HANDLE)
    def verify_request(self, request, request_id):
        return self._admin(request, self._request_step, request, request_id,
                           self.consent.verify_request, "verified_by")

    @api("POST", "/v1/dsr/<string:request_id>/extend", Permission.DSR_HANDLE)
    def extend_request(self, request, request_id):
        return self._admin(request, self._request_step, request, request_id,
                           self.consent.extend_request, "extended_by")

    @api("POST", "/v1/dsr/<string:request_id>/reject", Permission.DSR_HANDLE)
    def reject_request(self, request, request_id):
        return self._admin(request, self._request_step, request, request_id,
                           self.consent.reject_request, "rejected_by")

    def _request_step(self, request, request_id, remote, by_field):
        body = _body(request)
        if isinstance(body, Response):
            return body
        command = {**body, "request_id": request_id,
                   by_field: body.get(by_field) or self._viewer(request)[0]}
        return _answer(self._call(remote, command))

    @api("POST", "/v1/dsr/<string:request_id>/complete", Permission.DSR_HANDLE)
    def complete_request(self, request, request_id):
        return self._admin(request, self._complete, request, request_id)

    def _complete(self, request, request_id):
        """Carry the request out, then record it completed with what was done. If carrying
        out fails, the request stays open (and says nothing was done)."""
        return self.carry_out_request(request_id, self._viewer(request)[0])

    def carry_out_request(self, request_id: str, by: str) -> Response:
        """The API's and the console's way to carry a verified request out."""
        ready = self._call(self.consent.ready_to_carry_out, request_id)
        if "error" in ready:
            return _answer(ready)
        try:
            outcome, result = self._subject_data().carry_out(ready["result"], by)
        except SubjectNotFound as missing:
            return _error(404, "subject_not_found", f"identifiers: {missing}", "identifiers")
        except RemoteError as failed:  # e.g. a service without the RPC this kind needs
            return _error(502, "not_carried_out", f"{ready['result']['kind']}: a service "
                          f"refused ({failed.exc_type}: {failed.value}); the request stays "
                          "open")
        completed = self._call(self.consent.complete_request, {
            "request_id": request_id, "completed_by": by, "outcome": outcome})
        if "error" in completed:
            return _answer(completed)
        return _json(200, {"request": completed["result"], "result": result})

    # ---- one person ---------------------------------------------------------------------
    def _identifiers(self, request) -> list[list[str]]:
        given = request.args.getlist("identifier")
        if not given:
            raise ValueError("identifier: give at least one, written type:value")
        return [parse_identifier(i) for i in given]

    @api("GET", "/v1/subjects/export", Permission.DSR_HANDLE)
    def export_subject(self, request):
        return self._admin(request, self._about_subject, request, lambda export: export)

    @api("GET", "/v1/audit/subject", Permission.AUDIT_READ)
    def audit_subject(self, request):
        return self._admin(request, self._about_subject, request, lambda export: {
            "subject": export["subject"], "recipients": export["recipients"],
            "history": subject_history(export)})

    def _about_subject(self, request, shape):
        try:
            identifiers = self._identifiers(request)
            return _json(200, shape(self._subject_data().export(identifiers)))
        except ValueError as bad:
            return _error(400, "invalid_identifier", str(bad), "identifier")
        except SubjectNotFound as missing:
            return _error(404, "not_found", str(missing), "identifier")

    @api("GET", "/v1/audit/views", Permission.AUDIT_READ)
    def list_views(self, request):
        def answer():
            raw = request.args.get("limit", "100")
            if not raw.isdigit() or not 1 <= int(raw) <= 10_000:
                return _error(400, "invalid_limit", "limit: must be a whole number 1-10000",
                              "limit")
            return _json(200, {"views": self.app.views(request.args.get("profile_id"),
                                                       request.args.get("viewer"), int(raw))})
        return self._admin(request, answer)

    # ---- records of processing (Art. 30) ------------------------------------------------
    @api("GET", "/v1/processing-records", Permission.AUDIT_READ)
    def processing_records(self, request):
        def answer():
            try:
                report = self.processing_report()
            except (ProcessingConfigError, OSError) as bad:
                return _error(500, "invalid_configuration", str(bad))
            if request.args.get("format") == "markdown":
                return Response(render_markdown(report), status=200, mimetype="text/markdown")
            return _json(200, report)
        return self._admin(request, answer)

    def processing_report(self) -> dict[str, Any]:
        """The Art. 30 report of what is configured now (the API and the console)."""
        return records_of_processing(self._call(self.activation.destinations),
                                     load_processing_config(), utcnow_iso())
