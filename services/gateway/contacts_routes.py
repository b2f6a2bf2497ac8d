"""The contact directory's admin endpoints, mixed into the gateway (one HTTP listener).

Thin: parse the request, call contacts, answer. Contacts validates and names the field
and the rule of any bad input; the gateway only turns its answer into a status code.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from werkzeug.wrappers import Response

from services.gateway.access import Permission
from services.gateway.guard import api

API_SOURCE = "api"
SEARCH_PARAMETERS = ("identifier", "email", "name", "account", "owner", "stage", "limit")


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body, default=str), status=status, mimetype="application/json")


def _answer(result: dict[str, Any], key: str | None = None) -> Response:
    error = result.get("error")
    if error is not None:
        return _json(404 if error["code"] == "not_found" else 400,
                     {"code": error["code"], "message": error["message"],
                      "field": error.get("field")})
    return _json(200, result[key] if key else result)


def _body(request) -> dict | Response:
    try:
        body = json.loads(request.get_data(cache=False) or b"null")
    except ValueError:
        return _json(400, {"code": "invalid_json", "message": "body is not valid JSON"})
    if not isinstance(body, dict):
        return _json(400, {"code": "invalid_body", "message": "body must be a JSON object"})
    return body


class ContactsRoutes:
    """Needs the gateway's `contacts` RpcProxy, `_admin` and `_call`."""

    @api("GET", "/v1/contacts", Permission.PROFILES_READ)
    def search_contacts(self, request):
        def answer():
            criteria = {k: v for k, v in request.args.items() if k in SEARCH_PARAMETERS}
            return _answer(self._call(self.contacts.search_contacts, criteria))
        return self._admin(request, answer)

    @api("POST", "/v1/contacts", Permission.CONTACTS_WRITE)
    def create_contact(self, request):
        return self._admin(request, self._create_contact, request)

    def _create_contact(self, request):
        """An identify call from the `api` source: identity decides whether the person is
        new or known (same user id or email), as for any other source."""
        body = _body(request)
        if isinstance(body, Response):
            return body
        traits = body.get("traits")
        if not isinstance(traits, dict) or not traits:
            return _json(400, {"code": "invalid_contact", "field": "traits",
                               "message": "traits: must set at least one trait"})
        identify = {"type": "identify", "traits": traits, "messageId": str(uuid.uuid4()),
                    "anonymousId": body.get("anonymousId") or str(uuid.uuid4())}
        if body.get("userId"):
            identify["userId"] = str(body["userId"])
        received_at = datetime.now(UTC)
        outcome = self.app.ingest(API_SOURCE, {"batch": [identify]}, received_at=received_at)
        if not outcome.accepted:
            first = outcome.rejected[0]
            return _json(400, {"code": first.rule, "message": first.message})
        return _json(202, {"accepted": True, "messageId": identify["messageId"]})

    @api("PATCH", "/v1/contacts/<string:profile_id>", Permission.CONTACTS_WRITE)
    def update_contact(self, request, profile_id):
        return self._admin(request, self._command, request, self.contacts.update_contact,
                           {"profile_id": profile_id}, "contact")

    @api("PUT", "/v1/contacts/<string:profile_id>/stage", Permission.CONTACTS_WRITE)
    def set_stage(self, request, profile_id):
        return self._admin(request, self._command, request, self.contacts.set_stage,
                           {"profile_id": profile_id}, "contact")

    @api("POST", "/v1/contacts/<string:profile_id>/notes", Permission.CONTACTS_WRITE)
    def add_note(self, request, profile_id):
        return self._admin(request, self._command, request, self.contacts.add_note,
                           {"profile_id": profile_id}, "contact")

    @api("PUT", "/v1/contacts/<string:profile_id>/accounts/<string:account_id>",
         Permission.CONTACTS_WRITE)
    def link_account(self, request, profile_id, account_id):
        return self._admin(request, self._command, request, self.contacts.link_account,
                           {"profile_id": profile_id, "account_id": account_id}, "contact")

    @api("POST", "/v1/contacts/bulk", Permission.CONTACTS_WRITE)
    def bulk_update(self, request):
        return self._admin(request, self._command, request, self.contacts.bulk_update, {}, None)

    @api("GET", "/v1/accounts", Permission.PROFILES_READ)
    def search_accounts(self, request):
        return self._admin(request, lambda: _answer(self._call(
            self.contacts.search_accounts, request.args.get("name", ""))))

    @api("GET", "/v1/accounts/<string:account_id>", Permission.PROFILES_READ)
    def get_account(self, request, account_id):
        def answer():
            account = self._call(self.contacts.get_account, account_id)
            if account is None:
                return _json(404, {"code": "not_found", "message": f"no account {account_id}"})
            return _json(200, account)
        return self._admin(request, answer)

    @api("PATCH", "/v1/accounts/<string:account_id>", Permission.CONTACTS_WRITE)
    def update_account(self, request, account_id):
        return self._admin(request, self._command, request, self.contacts.update_account,
                           {"account_id": account_id}, "account")

    @api("GET", "/v1/accounts/<string:account_id>/contacts", Permission.PROFILES_READ)
    def account_contacts(self, request, account_id):
        return self._admin(request, lambda: _answer(self._call(
            self.contacts.search_contacts, {"account": account_id})))

    @api("GET", "/v1/accounts/<string:account_id>/events", Permission.HISTORY_READ)
    def account_events(self, request, account_id):
        return self._admin(request, lambda: _json(200, {
            "account_id": account_id,
            "events": self._call(self.contacts.account_timeline, account_id)}))

    def _command(self, request, remote, path_fields: dict[str, str], key: str | None):
        body = _body(request)
        if isinstance(body, Response):
            return body
        return _answer(self._call(remote, {**body, **path_fields}), key)
