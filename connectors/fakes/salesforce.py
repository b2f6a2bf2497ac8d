"""A fake Salesforce org: OAuth client credentials and sObject Collections upsert.

Enforces: client credentials (form or Basic) else 400 ``invalid_client``; Bearer token
else 401 ``[{"errorCode": "INVALID_SESSION_ID"}]``; at most 200 records; each with
``attributes.type`` equal to the URI's object, no ``Id``, the external id field set, and
``LastName`` (per record: REQUIRED_FIELD_MISSING). Answers 200 with one result per
record in order, and ``Sforce-Limit-Info`` on every response. ``expire_tokens()`` makes
the current tokens invalid, as a session timeout does. The ``refresh_token`` grant takes a
token from ``issue_refresh_token()``; with ``rotate_refresh_tokens`` (refresh token
rotation on the connected app) each use answers a new ``refresh_token`` and voids the
one presented, as Salesforce documents (help.salesforce.com, "OAuth 2.0 Refresh Token
Flow for Renewed Sessions"); an unknown or void one gets 400 ``invalid_grant``.
"""

from __future__ import annotations

import base64
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.sdk.fakes import FakeRequest, FakeResponse, FakeVendor

MAX_RECORDS = 200
QUERY_BATCH = 2000  # records per query answer before nextRecordsUrl
_UPSERT = re.compile(r"^/services/data/v\d+\.\d/composite/sobjects/(\w+)/(\w+)$")
_QUERY = re.compile(r"^/services/data/(v\d+\.\d)/query(?:/(\w+)-(\d+))?$")
_SOQL = re.compile(r"^SELECT (?P<fields>[\w, ]+) FROM Contact"
                   r"(?: WHERE SystemModstamp >= (?P<since>[\dT:.+Z-]+))?"
                   r" ORDER BY SystemModstamp(?: ASC)?(?:, Id(?: ASC)?)?$")
FIRST_STAMP = datetime(2026, 1, 1, tzinfo=UTC)


def soql_datetime(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000+0000")


class FakeSalesforce(FakeVendor):
    def __init__(self, client_id: str, client_secret: str,
                 query_batch: int = QUERY_BATCH) -> None:
        super().__init__()
        self.query_batch = query_batch
        self._stamp = FIRST_STAMP
        self._cursors: dict[str, list[dict[str, Any]]] = {}
        self.client_id, self.client_secret = client_id, client_secret
        self.tokens: set[str] = set()
        self.refresh_tokens: set[str] = set()
        self.rotate_refresh_tokens = True  # the connected app's "refresh token rotation"
        self.refresh_grants = 0
        self.contacts: dict[str, dict[str, Any]] = {}  # external id -> record
        self.sizes: list[int] = []
        self.api_usage = 0

    def is_data_request(self, request: FakeRequest) -> bool:
        return request.path.startswith("/services/data/")

    def error_body(self, status: int) -> Any:
        code = {400: "MALFORMED_QUERY", 429: "REQUEST_LIMIT_EXCEEDED"}.get(status, "SERVER_ERROR")
        return [{"message": "injected", "errorCode": code, "fields": []}]

    def _touch(self, record: dict[str, Any]) -> None:
        self._stamp += timedelta(seconds=1)
        record["SystemModstamp"] = soql_datetime(self._stamp)

    def edit(self, external_id: str, **fields: Any) -> None:
        """Someone changes (or creates) a contact in Salesforce."""
        with self.lock:
            record = self.contacts.setdefault(external_id, {"Id": "003" + secrets.token_hex(6)})
            record.update(fields)
            self._touch(record)

    def expire_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    def route(self, request: FakeRequest) -> FakeResponse:
        response = self._route(request)
        with self.lock:
            self.api_usage += 1
            response.headers["Sforce-Limit-Info"] = f"api-usage={self.api_usage}/100000"
        return response

    def _route(self, request: FakeRequest) -> FakeResponse:
        if request.path == "/services/oauth2/token" and request.method == "POST":
            return self._token(request)
        if request.bearer not in self.tokens:
            return FakeResponse(401, [{"message": "Session expired or invalid",
                                       "errorCode": "INVALID_SESSION_ID"}])
        query = _QUERY.match(request.path)
        if request.method == "GET" and query is not None:
            return self._query(query, request.query.get("q"))
        match = _UPSERT.match(request.path)
        if request.method != "PATCH" or match is None:
            return FakeResponse(404, [{"message": "The requested resource does not exist",
                                       "errorCode": "NOT_FOUND"}])
        return self._upsert(match.group(1), match.group(2), request.json())

    def _token(self, request: FakeRequest) -> FakeResponse:
        form = request.form()
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        basic = request.headers.get("authorization", "")
        if basic.startswith("Basic "):
            client_id, _, client_secret = base64.b64decode(basic[6:]).decode().partition(":")
        grant = form.get("grant_type")
        if grant not in ("client_credentials", "refresh_token"):
            return FakeResponse(400, {"error": "unsupported_grant_type",
                                      "error_description": "grant type not supported"})
        if (client_id, client_secret) != (self.client_id, self.client_secret):
            return FakeResponse(400, {"error": "invalid_client",
                                      "error_description": "invalid client credentials"})
        token = "00D" + secrets.token_hex(12)
        answer = {"access_token": token, "instance_url": self.base_url,
                  "id": f"{self.base_url}/id/00D/005", "token_type": "Bearer",
                  "issued_at": "1735689600000", "signature": "x"}
        with self.lock:
            if grant == "refresh_token":
                presented = form.get("refresh_token")
                if presented not in self.refresh_tokens:
                    return FakeResponse(400, {"error": "invalid_grant",
                                              "error_description": "expired access/refresh "
                                              "token"})
                self.refresh_grants += 1
                if self.rotate_refresh_tokens:  # a new one each time, the old one is void
                    self.refresh_tokens.discard(presented)
                    answer["refresh_token"] = self.issue_refresh_token()
            self.tokens.add(token)
        return FakeResponse(200, answer)

    def issue_refresh_token(self) -> str:
        """A refresh token, as the web-server flow's authorization would give one."""
        token = "5Aep861" + secrets.token_hex(16)
        self.refresh_tokens.add(token)
        return token

    def _upsert(self, sobject: str, field: str, body: dict[str, Any]) -> FakeResponse:
        records = body.get("records")
        if not isinstance(records, list) or not 1 <= len(records) <= MAX_RECORDS:
            return FakeResponse(400, [{"message": f"records: 1 to {MAX_RECORDS}",
                                       "errorCode": "INVALID_FIELD", "fields": []}])
        for record in records:
            if (record.get("attributes") or {}).get("type") != sobject:
                return FakeResponse(400, [{"message": "attributes.type must match the URI",
                                           "errorCode": "INVALID_TYPE", "fields": []}])
            if "Id" in record:
                return FakeResponse(400, [{"message": "record ids are not allowed",
                                           "errorCode": "INVALID_FIELD", "fields": ["Id"]}])
        results = []
        with self.lock:
            self.sizes.append(len(records))
            for record in records:
                key = record.get(field)
                if not key or not record.get("LastName"):
                    missing = field if not key else "LastName"
                    results.append({"success": False, "created": False, "errors": [
                        {"statusCode": "REQUIRED_FIELD_MISSING", "message": "Required fields "
                         f"are missing: [{missing}]", "fields": [missing]}]})
                    continue
                created = key not in self.contacts
                stored = self.contacts.setdefault(key, {"Id": "003" + secrets.token_hex(6)})
                stored.update({k: v for k, v in record.items() if k != "attributes"})
                self._touch(stored)
                results.append({"id": stored["Id"], "success": True, "errors": [],
                                "created": created})
        return FakeResponse(200, results)

    def _query(self, match: re.Match, soql: str | None) -> FakeResponse:
        version, cursor, offset = match.groups()
        if cursor is None:
            parsed = _SOQL.match(soql or "")
            if parsed is None:
                return FakeResponse(400, [{"message": f"this fake cannot run {soql!r}",
                                           "errorCode": "MALFORMED_QUERY"}])
            names = [n.strip() for n in parsed["fields"].split(",")]
            since = parsed["since"] or ""
            with self.lock:
                rows = sorted((r for r in self.contacts.values()
                               if r["SystemModstamp"] >= since),
                              key=lambda r: (r["SystemModstamp"], r["Id"]))
                rows = [{"attributes": {"type": "Contact",
                                        "url": f"/services/data/{version}/sobjects/Contact/"
                                               f"{r['Id']}"},
                         **{n: r.get(n) for n in names}} for r in rows]
                cursor = "01g" + secrets.token_hex(6)
                self._cursors[cursor] = rows
            offset = 0
        with self.lock:
            rows = self._cursors.get(cursor)
        if rows is None:
            return FakeResponse(400, [{"message": "invalid query locator",
                                       "errorCode": "INVALID_QUERY_LOCATOR"}])
        start = int(offset)
        page = rows[start:start + self.query_batch]
        done = start + self.query_batch >= len(rows)
        answer: dict[str, Any] = {"totalSize": len(rows), "done": done, "records": page}
        if not done:
            answer["nextRecordsUrl"] = (f"/services/data/{version}/query/{cursor}-"
                                        f"{start + self.query_batch}")
        return FakeResponse(200, answer)

    def batch_sizes(self) -> list[int]:
        with self.lock:
            return list(self.sizes)

    def subjects(self) -> list[str]:
        with self.lock:
            return list(self.contacts)
