"""A fake Salesforce org: OAuth client credentials and sObject Collections upsert.

Enforces: client credentials (form or Basic) else 400 ``invalid_client``; Bearer token
else 401 ``[{"errorCode": "INVALID_SESSION_ID"}]``; at most 200 records; each with
``attributes.type`` equal to the URI's object, no ``Id``, the external id field set, and
``LastName`` (per record: REQUIRED_FIELD_MISSING). Answers 200 with one result per
record in order, and ``Sforce-Limit-Info`` on every response. ``expire_tokens()`` makes
the current tokens invalid, as a session timeout does. A field sent as ``null`` is cleared.

Also: ``GET …/sobjects/Contact/{ext id field}/{value}`` (404 NOT_FOUND when no record),
``PATCH …/sobjects/Contact/{Id}`` (204), and the SOAP API's ``merge()`` on
``POST /services/Soap/u/{version}`` (partner namespace): a ``SessionHeader`` with a valid
token (else a ``sf:INVALID_SESSION_ID`` fault, HTTP 500), at most 200 ``request``
elements, each a ``masterRecord`` of type Contact with its ``Id`` and one or two
``recordToMergeIds`` (three records at most, as Salesforce documents); external ids are
not accepted. The victims are deleted (kept in ``merged_away`` with their
``MasterRecordId``), fields the master lacks are filled from them.

Opportunities and cases (``edit_opportunity``, ``edit_case``) answer SOQL on
``LastModifiedDate`` (or ``SystemModstamp``) with their standard fields, ``ContactId``
and the relationship field ``Contact.Email`` (nested as ``{"Contact": {...}}``); an
unknown field is refused with INVALID_FIELD.
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
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.sdk.fakes import FakeRequest, FakeResponse, FakeVendor

MAX_RECORDS = 200
QUERY_BATCH = 2000  # records per query answer before nextRecordsUrl
_UPSERT = re.compile(r"^/services/data/v\d+\.\d/composite/sobjects/(\w+)/(\w+)$")
_QUERY = re.compile(r"^/services/data/(v\d+\.\d)/query(?:/(\w+)-(\d+))?$")
_SOQL = re.compile(r"^SELECT (?P<fields>[\w., ]+) FROM (?P<object>Contact|Opportunity|Case)"
                   r"(?: WHERE (?P<stamp>SystemModstamp|LastModifiedDate) >= "
                   r"(?P<since>[\dT:.+Z-]+))?"
                   r" ORDER BY (?P<order>SystemModstamp|LastModifiedDate)(?: ASC)?"
                   r"(?:, Id(?: ASC)?)?$")
# Fields of Opportunity and Case the fake knows (a query naming others is refused, as
# Salesforce refuses an unknown field with INVALID_FIELD).
OBJECT_FIELDS = {
    "Opportunity": {"Id", "Name", "Amount", "StageName", "IsClosed", "IsWon", "AccountId",
                    "ContactId", "CreatedDate", "LastModifiedDate", "SystemModstamp"},
    "Case": {"Id", "Subject", "Status", "IsClosed", "AccountId", "ContactId", "CreatedDate",
             "LastModifiedDate", "SystemModstamp"},
}
_BY_EXTERNAL_ID = re.compile(r"^/services/data/v\d+\.\d/sobjects/(\w+)/(\w+)/([^/]+)$")
_BY_ID = re.compile(r"^/services/data/v\d+\.\d/sobjects/(\w+)/(\w{15,18})$")
_SOAP = re.compile(r"^/services/Soap/u/\d+\.\d$")
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
PARTNER = "urn:partner.soap.sforce.com"
SOBJECT = "urn:sobject.partner.soap.sforce.com"
MAX_MERGE_REQUESTS = 200
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
        self.merged_away: dict[str, dict[str, Any]] = {}  # victim Id -> its last state
        self.objects: dict[str, dict[str, dict[str, Any]]] = {"Opportunity": {}, "Case": {}}

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

    def _put(self, sobject: str, record_id: str | None, fields: dict[str, Any]) -> str:
        with self.lock:
            prefix = {"Opportunity": "006", "Case": "500"}[sobject]
            record_id = record_id or prefix + secrets.token_hex(6)
            record = self.objects[sobject].setdefault(record_id, {"Id": record_id})
            if "CreatedDate" not in record:
                record["CreatedDate"] = soql_datetime(self._stamp + timedelta(seconds=1))
            record.update(fields)
            self._touch(record)
            record["LastModifiedDate"] = record["SystemModstamp"]
            return record["Id"]

    def edit_opportunity(self, opportunity_id: str | None = None, **fields: Any) -> str:
        """Someone creates or changes an opportunity (Name, Amount, StageName, IsClosed,
        IsWon, AccountId, ContactId: the Id of a contact here)."""
        return self._put("Opportunity", opportunity_id, fields)

    def edit_case(self, case_id: str | None = None, **fields: Any) -> str:
        """Someone creates or changes a case (Subject, Status, IsClosed, AccountId,
        ContactId)."""
        return self._put("Case", case_id, fields)

    def contact_id(self, external_id: str) -> str:
        return self.contacts[external_id]["Id"]

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
        if request.bearer not in self.tokens and not _SOAP.match(request.path):
            return FakeResponse(401, [{"message": "Session expired or invalid",
                                       "errorCode": "INVALID_SESSION_ID"}])
        if request.method == "POST" and _SOAP.match(request.path):
            return self._soap(request)
        query = _QUERY.match(request.path)
        if request.method == "GET" and query is not None:
            return self._query(query, request.query.get("q"))
        found = _BY_EXTERNAL_ID.match(request.path)
        if request.method == "GET" and found is not None:
            return self._get_by_external_id(*found.groups())
        by_id = _BY_ID.match(request.path)
        if request.method == "PATCH" and by_id is not None:
            return self._update_by_id(by_id.group(2), request.json())
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
                _write(stored, {k: v for k, v in record.items() if k != "attributes"})
                self._touch(stored)
                results.append({"id": stored["Id"], "success": True, "errors": [],
                                "created": created})
        return FakeResponse(200, results)

    def _by_sf_id(self, record_id: str) -> tuple[str, dict[str, Any]] | None:
        return next(((k, r) for k, r in self.contacts.items() if r["Id"] == record_id), None)

    def _get_by_external_id(self, sobject: str, field: str, value: str) -> FakeResponse:
        with self.lock:
            record = self.contacts.get(value) if sobject == "Contact" else None
            if record is None:
                return FakeResponse(404, [{"message": "The requested resource does not "
                                           "exist", "errorCode": "NOT_FOUND"}])
            return FakeResponse(200, {"attributes": {"type": "Contact"}, **record,
                                      field: value})

    def _update_by_id(self, record_id: str, body: dict[str, Any]) -> FakeResponse:
        if not isinstance(body, dict) or "Id" in body:
            return FakeResponse(400, [{"message": "a body of fields, without Id",
                                       "errorCode": "INVALID_FIELD", "fields": ["Id"]}])
        with self.lock:
            found = self._by_sf_id(record_id)
            if found is None:
                return FakeResponse(404, [{"message": "The requested resource does not "
                                           "exist", "errorCode": "NOT_FOUND"}])
            key, record = found
            new_key = body.get(EXTERNAL_ID_FIELD, key)
            _write(record, body)
            self.contacts[new_key] = self.contacts.pop(key)
            self._touch(record)
        return FakeResponse(204)

    # ---- SOAP merge() ------------------------------------------------------------------
    def _soap(self, request: FakeRequest) -> FakeResponse:
        if not request.headers.get("content-type", "").startswith("text/xml") \
                or "soapaction" not in request.headers:
            return _fault("soapenv:Client", "Content-Type text/xml and SOAPAction required")
        try:
            envelope = ET.fromstring(request.body)
        except ET.ParseError as error:
            return _fault("soapenv:Client", f"malformed XML: {error}")
        session = envelope.findtext(f"{{{SOAP_ENV}}}Header/{{{PARTNER}}}SessionHeader/"
                                    f"{{{PARTNER}}}sessionId")
        with self.lock:
            if session not in self.tokens:
                return _fault("sf:INVALID_SESSION_ID", "INVALID_SESSION_ID: Invalid Session "
                              "ID found in SessionHeader: Illegal Session")
        merge = envelope.find(f"{{{SOAP_ENV}}}Body/{{{PARTNER}}}merge")
        if merge is None:
            return _fault("sf:INVALID_OPERATION", "this fake answers merge() only")
        requests = merge.findall(f"{{{PARTNER}}}request")
        if not 1 <= len(requests) <= MAX_MERGE_REQUESTS:
            return _fault("sf:EXCEEDED_ID_LIMIT", f"1 to {MAX_MERGE_REQUESTS} merge requests")
        results = [self._merge_one(r) for r in requests]
        body = "".join(results)
        return FakeResponse(200, (
            f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv='
            f'"{SOAP_ENV}" xmlns="{PARTNER}"><soapenv:Body><mergeResponse>{body}'
            f'</mergeResponse></soapenv:Body></soapenv:Envelope>').encode(),
            {"Content-Type": "text/xml; charset=utf-8"})

    def _merge_one(self, request: ET.Element) -> str:
        master = request.find(f"{{{PARTNER}}}masterRecord")
        victims = [e.text or "" for e in request.findall(f"{{{PARTNER}}}recordToMergeIds")]
        if master is None or master.findtext(f"{{{SOBJECT}}}type") != "Contact":
            return _merge_error("INVALID_TYPE", "masterRecord must be a Contact")
        master_id = master.findtext(f"{{{SOBJECT}}}Id") or ""
        if not 1 <= len(victims) <= 2:
            return _merge_error("INVALID_FIELD", "one or two recordToMergeIds (three "
                                "records at most)")
        with self.lock:
            found = self._by_sf_id(master_id)
            losers = [self._by_sf_id(v) for v in victims]
            if found is None or any(x is None for x in losers) or master_id in victims:
                return _merge_error("ENTITY_IS_DELETED", "a record to merge does not exist "
                                    "(external ids cannot be used with merge)")
            _, kept = found
            overrides = {child.tag.split("}")[1]: child.text for child in master
                         if child.tag.split("}")[1] not in ("type", "Id", "fieldsToNull")}
            for key, victim in losers:  # type: ignore[misc]
                for name, value in victim.items():
                    kept.setdefault(name, value)
                self.merged_away[victim["Id"]] = dict(victim, MasterRecordId=master_id,
                                                      IsDeleted=True)
                del self.contacts[key]
            _write(kept, overrides)
            self._touch(kept)
        merged = "".join(f"<mergedRecordIds>{v}</mergedRecordIds>" for v in victims)
        return (f"<result><id>{master_id}</id>{merged}<success>true</success>"
                "</result>")

    def _related_contact(self, row: dict[str, Any], names: list[str], version: str
                         ) -> dict[str, Any]:
        """``Contact.<field>`` in a query: the related contact, nested as Salesforce nests it
        (``{"Contact": {"attributes": …, "<field>": …}}``, or null without one)."""
        wanted = [n.split(".", 1)[1] for n in names if n.startswith("Contact.")]
        if not wanted:
            return {}
        contact = next((c for c in self.contacts.values()
                        if c["Id"] == row.get("ContactId")), None)
        if contact is None:
            return {"Contact": None}
        return {"Contact": {"attributes": {"type": "Contact", "url": f"/services/data/"
                                           f"{version}/sobjects/Contact/{contact['Id']}"},
                            **{n: contact.get(n) for n in wanted}}}

    def _query(self, match: re.Match, soql: str | None) -> FakeResponse:
        version, cursor, offset = match.groups()
        if cursor is None:
            parsed = _SOQL.match(soql or "")
            if parsed is None:
                return FakeResponse(400, [{"message": f"this fake cannot run {soql!r}",
                                           "errorCode": "MALFORMED_QUERY"}])
            names = [n.strip() for n in parsed["fields"].split(",")]
            sobject, order = parsed["object"], parsed["order"]
            if parsed["stamp"] not in (None, order):
                return FakeResponse(400, [{"message": "this fake orders by the field it "
                                           "filters on", "errorCode": "MALFORMED_QUERY"}])
            unknown = [n for n in names if sobject in OBJECT_FIELDS and n not in OBJECT_FIELDS[
                sobject] and not n.startswith("Contact.")]
            if unknown:
                return FakeResponse(400, [{"message": f"No such column '{unknown[0]}' on "
                                           f"entity '{sobject}'", "errorCode": "INVALID_FIELD"}])
            since = parsed["since"] or ""
            with self.lock:
                source = self.contacts if sobject == "Contact" else self.objects[sobject]
                rows = sorted((r for r in source.values() if r.get(order, "") >= since),
                              key=lambda r: (r[order], r["Id"]))
                rows = [{"attributes": {"type": sobject,
                                        "url": f"/services/data/{version}/sobjects/{sobject}/"
                                               f"{r['Id']}"},
                         **{n: r.get(n) for n in names if "." not in n},
                         **self._related_contact(r, names, version)} for r in rows]
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


EXTERNAL_ID_FIELD = "Tessera_Profile_Id__c"  # the key records are kept by (the default)


def _write(record: dict[str, Any], fields: dict[str, Any]) -> None:
    """Set the fields; ``null`` clears one, as in Salesforce's REST API."""
    for name, value in fields.items():
        if value is None:
            record.pop(name, None)
        else:
            record[name] = value


def _fault(code: str, message: str) -> FakeResponse:
    return FakeResponse(500, (
        f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{SOAP_ENV}"'
        f' xmlns:sf="urn:fault.partner.soap.sforce.com"><soapenv:Body><soapenv:Fault>'
        f"<faultcode>{code}</faultcode><faultstring>{message}</faultstring></soapenv:Fault>"
        "</soapenv:Body></soapenv:Envelope>").encode(),
        {"Content-Type": "text/xml; charset=utf-8"})


def _merge_error(code: str, message: str) -> str:
    return (f"<result><success>false</success><errors><statusCode>{code}</statusCode>"
            f"<message>{message}</message></errors></result>")
