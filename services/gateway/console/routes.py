"""The web console's routes, mixed into the gateway (one HTTP listener, docs/console.md).

Every page is declared with `guard.api` and a permission, as the /v1 routes are, and gets
its data from the same RPCs and helpers as the JSON API. Access is checked by
`_refuse_page`: the API token comes from the console's cookie (or a Bearer header), is
looked up in the keyring on every request, and a refusal is a readable page.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from werkzeug.wrappers import Response

from services.gateway.access import ROLE_PERMISSIONS, Caller, Permission, allows
from services.gateway.console import pages
from services.gateway.console.html import Viewer
from services.gateway.console.session import (
    COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    cleared_cookie,
    csrf_matches,
    csrf_token,
    session_cookie,
)
from services.gateway.guard import api
from services.gateway.ingest_counts import minute_of
from services.gateway.subject_data import SubjectNotFound, parse_identifier, subject_history
from shared.audit import latest_checkpoints, trusted_public_keys

STATIC = Path(__file__).parent / "static"
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript"}
# Content only from the gateway itself: no inline script, no third party.
SECURITY_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                               "frame-ancestors 'none'",
                    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
                    "Cache-Control": "no-store"}
MINUTES_SHOWN = 60
SEGMENT_MEMBERS_READ = 1000


def _html(status: int, body: str, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status=status, mimetype="text/html",
                    headers={**SECURITY_HEADERS, **(headers or {})})


def _see_other(location: str, headers: dict[str, str] | None = None) -> Response:
    return Response("", status=303, headers={"Location": location, **(headers or {})})


class ConsoleRoutes:
    """Needs the gateway's RpcProxies, `app`, `_call`, `pipeline_status`, `profile_view`,
    `profile_id_for`, `segments_view`, `processing_report`, `carry_out_request`,
    `_subject_data`."""

    # ---- access -------------------------------------------------------------------------
    def _console_token(self, request) -> str:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme == "Bearer":
            return token.strip()
        return request.cookies.get(COOKIE, "")

    def _console_caller(self, request) -> Caller | None:
        token = self._console_token(request)
        return self.app.keyring.token(token) if token else None

    def _console_viewer(self, request) -> Viewer:
        caller = self._console_caller(request)
        return Viewer(caller.name, str(caller.role), ROLE_PERMISSIONS[caller.role],
                      csrf_token(self._console_token(request)))

    def _refuse_page(self, request, permission: Permission) -> Response | None:
        """As `_refuse`, with pages: a browser without a valid session goes to sign in (a
        revoked token's cookie is cleared), an API client gets 401; a POST made with the
        cookie must carry the session's CSRF token."""
        if permission is Permission.PUBLIC:
            return None
        self.app.refresh_credentials()
        caller = self._console_caller(request)
        if caller is None:
            browser = COOKIE in request.cookies or "text/html" in request.headers.get(
                "Accept", "")
            if browser:
                wanted = request.full_path.rstrip("?") if request.method == "GET" else ""
                target = "/console/sign-in" + (f"?{urlencode({'next': wanted})}"
                                               if wanted else "")
                return _see_other(target, {"Set-Cookie": cleared_cookie()})
            return _html(401, pages.refused(None, 401, "Sign in with an API token: this one "
                                                       "is unknown, revoked or missing."))
        viewer = self._console_viewer(request)
        if not allows(caller, permission):
            return _html(403, pages.refused(viewer, 403, f"The {caller.role} role does not "
                                                         f"grant {permission}."))
        if request.method == "POST" and not request.headers.get("Authorization"):
            offered = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD)
            if not csrf_matches(self._console_token(request), offered):
                return _html(403, pages.refused(viewer, 403, "This form is missing its CSRF "
                                                             "token, or it is stale: reload "
                                                             "the page and try again."))
        return None

    def _page(self, request, render, *args) -> Response:
        """Runs a page; a service that does not answer in time is a 503 page."""
        from services.gateway.service import Unavailable  # the gateway imports this module

        try:
            return render(self._console_viewer(request), *args)
        except Unavailable as down:
            return _html(503, pages.refused(self._console_viewer(request), 503, str(down)))

    # ---- signing in and out ---------------------------------------------------------------
    @api("GET", "/console/sign-in", Permission.PUBLIC, refuse="_refuse_page")
    def console_sign_in_form(self, request):
        return _html(200, pages.sign_in(next_path=_local(request.args.get("next"))))

    @api("POST", "/console/sign-in", Permission.PUBLIC, refuse="_refuse_page")
    def console_sign_in(self, request):
        token = (request.form.get("token") or "").strip()
        self.app.refresh_credentials()
        if not token or self.app.keyring.token(token) is None:
            return _html(400, pages.sign_in("token: unknown, revoked or missing",
                                            _local(request.form.get("next"))))
        secure = request.scheme == "https" or \
            request.headers.get("X-Forwarded-Proto") == "https"
        return _see_other(_local(request.form.get("next")),
                          {"Set-Cookie": session_cookie(token, secure=secure)})

    @api("POST", "/console/sign-out", Permission.PUBLIC, refuse="_refuse_page")
    def console_sign_out(self, request):
        return _see_other("/console/sign-in", {"Set-Cookie": cleared_cookie()})

    @api("GET", "/console/static/<string:name>", Permission.PUBLIC, refuse="_refuse_page")
    def console_static(self, request, name):
        path = STATIC / name
        if name not in {p.name for p in STATIC.iterdir()} or path.suffix not in STATIC_TYPES:
            return _html(404, pages.refused(None, 404, "no such file"))
        return Response(path.read_bytes(), status=200, mimetype=STATIC_TYPES[path.suffix],
                        headers={"Cache-Control": "max-age=300",
                                 "X-Content-Type-Options": "nosniff"})

    # ---- overview -------------------------------------------------------------------------
    @api("GET", "/console", Permission.OPERATIONS_READ, refuse="_refuse_page")
    def console_overview(self, request):
        def render(viewer):
            return _html(200, pages.overview(viewer, *self._events_per_minute(),
                                             self.pipeline_status(),
                                             self._call(self.activation.stats)))
        return self._page(request, render)

    def _events_per_minute(self) -> tuple[list[tuple[str, int]], str | None]:
        """Accepted events per minute over the last hour, as counted at ingest
        (services/gateway/ingest_counts.py), and since when they are counted."""
        now = datetime.now(UTC)
        minutes = [minute_of(now - timedelta(minutes=m))
                   for m in range(MINUTES_SHOWN - 1, -1, -1)]
        counts = self.app.ingest_counts.per_minute(minutes[0], minutes[-1])
        since = self.app.ingest_counts.since()
        return [(minute[11:], counts.get(minute, 0)) for minute in minutes], \
            since if since and since > minutes[0] else None

    # ---- profiles -------------------------------------------------------------------------
    @api("GET", "/console/profiles", Permission.PROFILES_READ, refuse="_refuse_page")
    def console_profiles(self, request):
        def render(viewer):
            kind, value = request.args.get("kind", "email"), request.args.get("q", "").strip()
            if not value:
                return _html(200, pages.profile_search(viewer, kind))
            if kind not in dict(pages.SEARCH_KINDS):
                return _html(400, pages.profile_search(
                    viewer, "email", value, f"kind: must be one of "
                                            f"{', '.join(dict(pages.SEARCH_KINDS))}"))
            found = value if kind == "profile_id" else self.profile_id_for(kind, value)
            if found is None:
                return _html(404, pages.profile_search(viewer, kind, value,
                                                       "No profile has this identifier."))
            return _see_other(f"/console/profiles/{quote(found)}")
        return self._page(request, render)

    @api("GET", "/console/profiles/<string:profile_id>", Permission.PROFILES_READ,
         refuse="_refuse_page")
    def console_profile(self, request, profile_id):
        def render(viewer):
            found = self.profile_view(profile_id)
            if found is None:
                return _html(404, pages.profile_search(viewer, "profile_id", profile_id,
                                                       "No such profile."))
            pid = found["profile_id"]
            parts = {
                "identity": self._call(self.identity.explain, pid)
                if viewer.may(Permission.IDENTITY_READ) else None,
                "events": self._call(self.contacts.timeline, pid, pages.TIMELINE_LIMIT)
                if viewer.may(Permission.HISTORY_READ) else None,
                "consent": self._call(self.consent.consent_of, pid)
                if viewer.may(Permission.CONSENT_READ) else None,
                "segments": self._call(self.segments.memberships, pid),
                "outcomes": self._outcomes_of(pid),
            }
            self._record_console_view(request, viewer, [pid])
            return _html(200, pages.profile(viewer, found, parts))
        return self._page(request, render)

    def _outcomes_of(self, profile_id: str) -> list[dict[str, Any]]:
        """The person's recent deliveries and suppressions, each with its decision."""
        found = []
        for destination in self._call(self.activation.destinations):
            found += [dict(o, destination=destination["name"])
                      for o in self._call(self.activation.outcomes, destination["name"])
                      if o.get("profile_id") == profile_id]
        return found

    def _record_console_view(self, request, viewer: Viewer, profile_ids: list[str]) -> None:
        """A page that shows people's data is a view, logged as the API's are."""
        from services.gateway.privacy_routes import token_fingerprint

        self.app.record_view(viewer.name, viewer.role, sorted(profile_ids),
                             f"{request.method} {request.path}",
                             token_fingerprint(self._console_token(request)))

    # ---- segments -------------------------------------------------------------------------
    @api("GET", "/console/segments", Permission.SEGMENTS_READ, refuse="_refuse_page")
    def console_segments(self, request):
        return self._page(request, lambda viewer: _html(200, pages.segments(
            viewer, self.segments_view(), saved=request.args.get("saved", ""))))

    @api("POST", "/console/segments", Permission.SEGMENTS_WRITE, refuse="_refuse_page")
    def console_save_segment(self, request):
        def render(viewer):
            draft = {k: request.form.get(k, "") for k in ("name", "description", "rule")}
            try:
                rule = json.loads(draft["rule"] or "null")
            except ValueError:
                rule = None
            if not isinstance(rule, dict):
                return _html(400, pages.segments(viewer, self.segments_view(),
                                                 "rule: must be a JSON object", draft=draft))
            result = self._call(self.segments.define_segment, {
                "name": draft["name"], "description": draft["description"], "rule": rule})
            if "error" in result:
                return _html(400, pages.segments(viewer, self.segments_view(),
                                                 result["error"]["message"], draft=draft))
            return _see_other(f"/console/segments?{urlencode({'saved': draft['name']})}")
        return self._page(request, render)

    @api("POST", "/console/segments/preview", Permission.SEGMENTS_READ, refuse="_refuse_page")
    def console_preview_segment(self, request):
        """The builder's live preview: the size and a sample of a rule (saves nothing)."""
        try:
            body = json.loads(request.get_data(cache=False) or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return Response(json.dumps({"code": "invalid_body", "message": "body must be a "
                                        "JSON object with a rule"}), status=400,
                            mimetype="application/json")
        from services.gateway.service import Unavailable

        try:
            result = self._call(self.segments.preview, {"rule": body.get("rule")})
        except Unavailable as down:
            return Response(json.dumps({"code": "unavailable", "message": str(down)}),
                            status=503, mimetype="application/json")
        status = 400 if "error" in result else 200
        return Response(json.dumps(result.get("error", result), default=str), status=status,
                        mimetype="application/json")

    @api("GET", "/console/segments/<string:name>", Permission.SEGMENTS_READ,
         refuse="_refuse_page")
    def console_segment(self, request, name):
        def render(viewer):
            found = next((s for s in self.segments_view() if s["name"] == name), None)
            if found is None:
                return _html(404, pages.refused(viewer, 404, f"No segment {name}."))
            members = self._call(self.segments.members, name, SEGMENT_MEMBERS_READ, "")
            return _html(200, pages.segment(viewer, found, members))
        return self._page(request, render)

    # ---- destinations ---------------------------------------------------------------------
    @api("GET", "/console/destinations", Permission.DESTINATIONS_READ, refuse="_refuse_page")
    def console_destinations(self, request):
        def render(viewer):
            listed = self._call(self.activation.destinations)
            stats = self._call(self.activation.stats)
            return _html(200, pages.destinations(viewer, listed, stats,
                                                 self._destination_health(listed, stats)))
        return self._page(request, render)

    def _destination_health(self, listed, stats) -> dict[str, str]:
        """Retrying (its circuit open or backing off) > dead letters waiting > ok."""
        retrying = " ".join(self._call(self.activation.status).get("retrying", []))
        health = {}
        for destination in listed:
            name = destination["name"]
            if name in retrying:
                health[name] = "retrying (paused or backing off)"
            elif stats.get(name, {}).get("dead_letters"):
                health[name] = "ok, dead letters waiting"
            else:
                health[name] = "ok"
        return health

    @api("GET", "/console/destinations/<string:name>", Permission.DESTINATIONS_READ,
         refuse="_refuse_page")
    def console_destination(self, request, name):
        def render(viewer):
            config = next((d for d in self._call(self.activation.destinations)
                           if d["name"] == name), None)
            if config is None:
                return _html(404, pages.refused(viewer, 404, f"No destination {name}."))
            return _html(200, pages.destination(
                viewer, name, config, self._call(self.activation.stats).get(name, {}),
                self._call(self.activation.outcomes, name),
                self._call(self.activation.dead_letters, name),
                request.args.get("message", "")))
        return self._page(request, render)

    @api("POST", "/console/destinations/<string:name>/dead-letters/<string:letter_id>/replay",
         Permission.DESTINATIONS_WRITE, refuse="_refuse_page")
    def console_replay(self, request, name, letter_id):
        def render(viewer):
            replayed = self._call(self.activation.replay, name, letter_id)
            message = (f"No dead letter {letter_id} of {name}." if replayed is None else
                       f"Dead letter replayed: {_counts(replayed)}.")
            return _see_other(f"/console/destinations/{quote(name)}?"
                              f"{urlencode({'message': message})}")
        return self._page(request, render)

    # ---- compliance -----------------------------------------------------------------------
    @api("GET", "/console/compliance", Permission.DSR_READ, refuse="_refuse_page")
    def console_compliance(self, request):
        def render(viewer):
            checkpoints = [c.to_json() for c in latest_checkpoints(self.app.settings)]
            return _html(200, pages.compliance(viewer, self._call(self.consent.overdue_requests),
                                               checkpoints, request.args.get("message", "")))
        return self._page(request, render)

    @api("POST", "/console/compliance/requests", Permission.DSR_HANDLE, refuse="_refuse_page")
    def console_file_request(self, request):
        def render(viewer):
            try:
                identifier = parse_identifier(request.form.get("identifier", ""))
            except ValueError as bad:
                return self._back_to_compliance(f"identifier: {bad}")
            outcome = self._call(self.consent.file_request, {
                "kind": request.form.get("kind", ""),
                "regulation": request.form.get("regulation", ""),
                "identifiers": [identifier], "filed_by": viewer.name})
            if "error" in outcome:
                return self._back_to_compliance(outcome["error"]["message"])
            return self._back_to_compliance(f"Request filed, due {outcome['result']['due_at']}.")
        return self._page(request, render)

    @api("POST", "/console/compliance/requests/<string:request_id>/verify",
         Permission.DSR_HANDLE, refuse="_refuse_page")
    def console_verify_request(self, request, request_id):
        def render(viewer):
            outcome = self._call(self.consent.verify_request, {
                "request_id": request_id, "verified_by": viewer.name,
                "method": request.form.get("method") or "account_login"})
            return self._back_to_compliance(outcome["error"]["message"] if "error" in outcome
                                            else "Request verified.")
        return self._page(request, render)

    @api("POST", "/console/compliance/requests/<string:request_id>/complete",
         Permission.DSR_HANDLE, refuse="_refuse_page")
    def console_complete_request(self, request, request_id):
        def render(viewer):
            answer = self.carry_out_request(request_id, viewer.name)
            body = json.loads(answer.get_data() or b"{}")
            return self._back_to_compliance("Request carried out and completed."
                                            if answer.status_code == 200
                                            else body.get("message", "not carried out"))
        return self._page(request, render)

    @staticmethod
    def _back_to_compliance(message: str) -> Response:
        return _see_other(f"/console/compliance?{urlencode({'message': message})}")

    @api("GET", "/console/compliance/subject", Permission.AUDIT_READ, refuse="_refuse_page")
    def console_subject(self, request):
        def render(viewer):
            given = request.args.get("identifier", "")
            try:
                export = self._subject_data().export([parse_identifier(given)])
            except ValueError as bad:
                return _html(400, pages.refused(viewer, 400, f"identifier: {bad}"))
            except SubjectNotFound:
                return _html(404, pages.refused(viewer, 404, "Nobody has this identifier."))
            self._record_console_view(request, viewer, export["subject"]["profile_ids"])
            return _html(200, pages.subject(viewer, given, export, subject_history(export)))
        return self._page(request, render)

    @api("GET", "/console/compliance/export", Permission.DSR_HANDLE, refuse="_refuse_page")
    def console_export(self, request):
        def render(viewer):
            try:
                export = self._subject_data().export(
                    [parse_identifier(request.args.get("identifier", ""))])
            except ValueError as bad:
                return _html(400, pages.refused(viewer, 400, f"identifier: {bad}"))
            except SubjectNotFound:
                return _html(404, pages.refused(viewer, 404, "Nobody has this identifier."))
            self._record_console_view(request, viewer, export["subject"]["profile_ids"])
            return Response(json.dumps(export, default=str, indent=1), status=200,
                            mimetype="application/json", headers={
                                "Content-Disposition": 'attachment; filename="export.json"',
                                "Cache-Control": "no-store"})
        return self._page(request, render)

    @api("GET", "/console/compliance/audit", Permission.AUDIT_READ, refuse="_refuse_page")
    def console_audit(self, request):
        """Incremental by default (services/gateway/audit_runs.py); `?full=1` recomputes
        every chain from its first event, as `tessera audit verify` does."""
        def render(viewer):
            try:
                trusted, keys_from = trusted_public_keys(self.app.settings)
            except ValueError as unset:  # e.g. real mode with no key configured
                return _html(200, pages.audit(viewer, [], f"Cannot verify: {unset}."))
            full = request.args.get("full") == "1"
            reports = self.app.audit_runs.verify(self.app.settings, trusted, full=full)
            return _html(200, pages.audit(viewer, reports,
                                          f"Signatures checked with {keys_from}.", full=full))
        return self._page(request, render)

    @api("GET", "/console/compliance/processing-records", Permission.AUDIT_READ,
         refuse="_refuse_page")
    def console_processing_records(self, request):
        return self._page(request, lambda viewer: _html(200, pages.processing_records(
            viewer, self.processing_report())))


def _local(path: str | None) -> str:
    """Only a path of the console itself: never a redirect to another site."""
    if path and path.startswith("/console") and not path.startswith("//"):
        return path
    return "/console"


def _counts(replayed: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(replayed.items())) or "nothing to send"
