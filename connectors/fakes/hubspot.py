"""A fake of HubSpot's CRM v3 contacts API: batch upsert, batch read, update, merge,
GDPR delete, list, search.

Enforces: Bearer token (401 with HubSpot's error shape), at most 100 inputs, each with
``idProperty`` and ``id`` and object ``properties`` (400 VALIDATION_ERROR), an email id
that looks like one. Contacts are kept by email: an upsert of a known email updates it;
an empty string clears a property (as HubSpot's update documents). GDPR delete answers
204. Injected 429s carry HubSpot's rate-limit body and headers.

Merge (``POST /crm/v3/objects/contacts/merge``, body ``{"primaryObjectId",
"objectIdToMerge"}``, both required, both existing, different): the primary keeps its
values, takes the other's where it has none, lists the other's email in
``hs_additional_emails``; the other is gone. Batch read by email answers 207 with
``errors`` for emails it does not hold. ``PATCH /crm/v3/objects/contacts/{id}`` updates
one contact by id; an email already held by another contact is a 409 CONFLICT.

Deals and tickets (``add_deal``, ``add_ticket``): ``POST /crm/v3/objects/{deals,tickets}
/search`` filtered on ``hs_lastmodifieddate`` GTE (epoch ms; the property other objects
than contacts carry), sorted on it; their associations through ``POST /crm/v4/
associations/{deals,tickets}/{contacts,companies}/batch/read`` (``{"inputs": [{"id"}]}``
-> ``results[{from: {id}, to: [{toObjectId, associationTypes}]}]``, 207 with ``errors``
for ids without any).
that looks like one. Contacts are kept by email: an upsert of a known email updates it.
GDPR delete answers 204. Injected 429s carry HubSpot's rate-limit body and headers.

``refuse(email, category)`` makes upserts of that email fail alone: when the inputs carry
``objectWriteTraceId`` (HubSpot's switch for multi-status answers), the answer is 207 with
the written inputs in ``results`` (trace id echoed) and one BatchError per refused input
in ``errors`` (``status``, ``category``, ``message``, ``context`` naming its trace id),
plus ``numErrors``; without trace ids a refusal fails the whole request with 400.
``times`` bounds how often a refusal happens (a lock that clears).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from connectors.sdk.fakes import FakeRequest, FakeResponse, FakeVendor

MAX_INPUTS = 100
MAX_SEARCH_LIMIT = 200
SEARCH_RESULTS_CAP = 10_000  # paging past this answers 400, as HubSpot's search does
FIRST_MODIFIED_MS = 1_735_689_600_000
MAX_ASSOCIATION_INPUTS = 1000
_OBJECT_SEARCH = re.compile(r"^/crm/v3/objects/(deals|tickets)/search$")
_ASSOCIATIONS = re.compile(r"^/crm/v4/associations/(deals|tickets)/(contacts|companies)"
                           r"/batch/read$")
# HubSpot-defined association type ids ([inference]: the usual defaults; nothing reads them).
ASSOCIATION_TYPES = {("deals", "contacts"): 3, ("deals", "companies"): 5,
                     ("tickets", "contacts"): 16, ("tickets", "companies"): 339}


def _error(status: int, category: str, message: str) -> FakeResponse:
    return FakeResponse(status, {"status": "error", "message": message,
                                 "correlationId": str(uuid.uuid4()), "category": category})


class FakeHubSpot(FakeVendor):
    def __init__(self, token: str, results_cap: int = SEARCH_RESULTS_CAP) -> None:
        super().__init__()
        self.token = token
        self.results_cap = results_cap
        self.contacts: dict[str, dict[str, Any]] = {}  # email -> {id, properties}
        self.sizes: list[int] = []
        self.deleted: list[str] = []
        self.merges: list[tuple[str, str]] = []  # (primary id, merged id), in order
        # "deals" | "tickets" -> id -> {"id", "properties", "contacts": [...], "companies": [...]}
        self.objects: dict[str, dict[str, dict[str, Any]]] = {"deals": {}, "tickets": {}}
        self.refusals: dict[str, list] = {}  # email -> [category, times left or None]
        self._clock_ms = FIRST_MODIFIED_MS
        self._next_id = 1001

    def refuse(self, email: str, category: str = "VALIDATION_ERROR",
               times: int | None = None) -> None:
        """Upserts of ``email`` fail alone with ``category`` (``times`` times, or always)."""
        with self.lock:
            self.refusals[email.lower()] = [category, times]

    def _refusal(self, email: str) -> str | None:
        plan = self.refusals.get(email)
        if plan is None or plan[1] == 0:
            return None
        if plan[1] is not None:
            plan[1] -= 1
        return plan[0]

    def _touch(self, contact: dict[str, Any]) -> None:
        """Every write moves lastmodifieddate on (one second per write, never backwards)."""
        self._clock_ms += 1000
        contact["properties"]["lastmodifieddate"] = str(self._clock_ms)

    def edit(self, email: str, **properties: str) -> None:
        """A person in HubSpot changes a contact (or creates one)."""
        with self.lock:
            contact = self.contacts.get(email) or self._new(email)
            contact["properties"].update(properties)
            self._touch(contact)

    def is_data_request(self, request: FakeRequest) -> bool:
        return request.method == "POST" and not request.path.endswith("/search")

    def error_body(self, status: int) -> Any:
        if status == 429:
            return {"status": "error", "message": "You have reached your ten_secondly_rolling "
                    "limit.", "errorType": "RATE_LIMIT", "correlationId": str(uuid.uuid4()),
                    "policyName": "TEN_SECONDLY_ROLLING"}
        return {"status": "error", "message": "injected", "category": "VALIDATION_ERROR"
                if status < 500 else "INTERNAL_ERROR", "correlationId": str(uuid.uuid4())}

    def route(self, request: FakeRequest) -> FakeResponse:
        if request.bearer != self.token:
            return _error(401, "INVALID_AUTHENTICATION", "Authentication credentials not "
                          "found or invalid.")
        path = request.path
        if request.method == "GET" and path == "/crm/v3/objects/contacts":
            return FakeResponse(200, {"results": [], "paging": None})
        if request.method == "POST" and path == "/crm/v3/objects/contacts/batch/upsert":
            return self._upsert(request.json())
        if request.method == "POST" and path == "/crm/v3/objects/contacts/batch/read":
            return self._batch_read(request.json())
        if request.method == "POST" and path == "/crm/v3/objects/contacts/merge":
            return self._merge(request.json())
        if request.method == "PATCH" and path.startswith("/crm/v3/objects/contacts/"):
            return self._update(path.rsplit("/", 1)[1], request.json())
        if request.method == "POST" and path == "/crm/v3/objects/contacts/gdpr-delete":
            return self._gdpr_delete(request.json())
        if request.method == "POST" and path == "/crm/v3/objects/contacts/search":
            return self._search(request.json())
        found = _OBJECT_SEARCH.match(path)
        if request.method == "POST" and found:
            return self._search_objects(found.group(1), request.json())
        found = _ASSOCIATIONS.match(path)
        if request.method == "POST" and found:
            return self._associations(found.group(1), found.group(2), request.json())
        return _error(404, "OBJECT_NOT_FOUND", f"no route {request.method} {path}")

    def _upsert(self, body: dict[str, Any]) -> FakeResponse:
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not 1 <= len(inputs) <= MAX_INPUTS:
            return _error(400, "VALIDATION_ERROR", f"inputs: 1 to {MAX_INPUTS} required")
        for entry in inputs:
            if not entry.get("idProperty") or not entry.get("id") or not isinstance(
                    entry.get("properties"), dict):
                return _error(400, "VALIDATION_ERROR",
                              "each input needs idProperty, id and object properties")
            if entry["idProperty"] == "email" and "@" not in str(entry["id"]):
                return _error(400, "VALIDATION_ERROR", f"{entry['id']!r} is not an email")
        results, errors = [], []
        multi_status = all(entry.get("objectWriteTraceId") for entry in inputs)
        with self.lock:
            self.sizes.append(len(inputs))
            for entry in inputs:
                email = str(entry["id"]).lower()
                refused = self._refusal(email)
                if refused is not None and not multi_status:
                    return _error(400, refused, f"{email}: refused")
                if refused is not None:
                    errors.append({"status": "error", "category": refused,
                                   "message": f"{email}: refused ({refused})",
                                   "context": {"objectWriteTraceId":
                                               [entry["objectWriteTraceId"]]}})
                    continue
                new = email not in self.contacts
                contact = self.contacts.get(email) or self._new(email)
                _write(contact["properties"], entry["properties"])
                contact["properties"]["email"] = email
                self._touch(contact)
                result = {"id": contact["id"], "properties": contact["properties"],
                          "archived": False, "new": new}
                if entry.get("objectWriteTraceId"):
                    result["objectWriteTraceId"] = entry["objectWriteTraceId"]
                results.append(result)
        if errors:
            return FakeResponse(207, {"status": "COMPLETE", "results": results,
                                      "errors": errors, "numErrors": len(errors)})
        return FakeResponse(200, {"status": "COMPLETE", "results": results})

    def _search(self, body: dict[str, Any]) -> FakeResponse:
        limit = int(body.get("limit", 10))
        after = int(body.get("after") or 0)
        if limit > MAX_SEARCH_LIMIT:
            return _error(400, "VALIDATION_ERROR", f"limit: at most {MAX_SEARCH_LIMIT}")
        if after + limit > self.results_cap:
            return _error(400, "VALIDATION_ERROR", f"paging past {self.results_cap} results")
        filters = [f for group in body.get("filterGroups", []) for f in group["filters"]]
        since = 0
        for found in filters:
            if found["propertyName"] != "lastmodifieddate" or found["operator"] != "GTE":
                return _error(400, "VALIDATION_ERROR", "this fake filters on "
                              "lastmodifieddate GTE only")
            since = int(found["value"])
        wanted = set(body.get("properties") or ["email"]) | {"lastmodifieddate"}
        with self.lock:
            matching = sorted((c for c in self.contacts.values()
                               if int(c["properties"]["lastmodifieddate"]) >= since),
                              key=lambda c: (int(c["properties"]["lastmodifieddate"]), c["id"]))
            page = [{"id": c["id"], "archived": False, "properties": {
                k: v for k, v in c["properties"].items() if k in wanted}}
                for c in matching[after:after + limit]]
        answer: dict[str, Any] = {"total": len(matching), "results": page}
        if after + limit < len(matching):
            answer["paging"] = {"next": {"after": str(after + limit)}}
        return FakeResponse(200, answer)

    def _gdpr_delete(self, body: dict[str, Any]) -> FakeResponse:
        if not body.get("objectId"):
            return _error(400, "VALIDATION_ERROR", "objectId is required")
        with self.lock:
            key = str(body["objectId"]).lower()
            if body.get("idProperty") != "email":
                key = next((e for e, c in self.contacts.items() if c["id"] == key), key)
            self.contacts.pop(key, None)
            self.deleted.append(key)  # an unknown email is blocklisted all the same
        return FakeResponse(204)

    # ---- deals and tickets ---------------------------------------------------------
    def _put_object(self, kind: str, object_id: str | None, contacts: list[str],
                    companies: list[str], properties: dict[str, Any]) -> str:
        with self.lock:
            object_id = object_id or str(self._next_id + 5_000_000)
            self._next_id += 1
            found = self.objects[kind].setdefault(object_id, {
                "id": object_id, "properties": {"hs_object_id": object_id,
                                                "createdate": _iso(self._clock_ms + 1000)},
                "contacts": [], "companies": []})
            found["properties"].update({k: str(v) for k, v in properties.items()})
            found["contacts"] = list(dict.fromkeys([*found["contacts"], *contacts]))
            found["companies"] = list(dict.fromkeys([*found["companies"], *companies]))
            self._clock_ms += 1000
            found["properties"]["hs_lastmodifieddate"] = _iso(self._clock_ms)
            return object_id

    def add_deal(self, deal_id: str | None = None, contacts: tuple[str, ...] = (),
                 companies: tuple[str, ...] = (), **properties: Any) -> str:
        """Someone creates or changes a deal (``contacts``: emails of associated contacts;
        ``properties``: amount, dealstage, dealname, hs_is_closed, hs_is_closed_won, …)."""
        ids = [self.contacts[e.lower()]["id"] for e in contacts]
        return self._put_object("deals", deal_id, ids, list(companies), properties)

    def add_ticket(self, ticket_id: str | None = None, contacts: tuple[str, ...] = (),
                   companies: tuple[str, ...] = (), **properties: Any) -> str:
        """Someone creates or changes a ticket (subject, hs_pipeline_stage, closed_date…)."""
        ids = [self.contacts[e.lower()]["id"] for e in contacts]
        return self._put_object("tickets", ticket_id, ids, list(companies), properties)

    def _search_objects(self, kind: str, body: dict[str, Any]) -> FakeResponse:
        limit = int(body.get("limit", 10))
        after = int(body.get("after") or 0)
        if limit > MAX_SEARCH_LIMIT:
            return _error(400, "VALIDATION_ERROR", f"limit: at most {MAX_SEARCH_LIMIT}")
        if after + limit > self.results_cap:
            return _error(400, "VALIDATION_ERROR", f"paging past {self.results_cap} results")
        since = 0
        for found in [f for group in body.get("filterGroups", []) for f in group["filters"]]:
            if found["propertyName"] != "hs_lastmodifieddate" or found["operator"] != "GTE":
                return _error(400, "VALIDATION_ERROR", f"{kind}: this fake filters on "
                              "hs_lastmodifieddate GTE only")
            since = int(found["value"])
        wanted = set(body.get("properties") or []) | {"hs_lastmodifieddate", "hs_object_id",
                                                       "createdate"}
        with self.lock:
            matching = sorted((o for o in self.objects[kind].values()
                               if _ms(o["properties"]["hs_lastmodifieddate"]) >= since),
                              key=lambda o: (o["properties"]["hs_lastmodifieddate"], o["id"]))
            page = [{"id": o["id"], "archived": False, "properties": {
                k: v for k, v in o["properties"].items() if k in wanted}}
                for o in matching[after:after + limit]]
        answer: dict[str, Any] = {"total": len(matching), "results": page}
        if after + limit < len(matching):
            answer["paging"] = {"next": {"after": str(after + limit)}}
        return FakeResponse(200, answer)

    def _associations(self, kind: str, to: str, body: dict[str, Any]) -> FakeResponse:
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not 1 <= len(inputs) <= MAX_ASSOCIATION_INPUTS \
                or not all(isinstance(i, dict) and i.get("id") for i in inputs):
            return _error(400, "VALIDATION_ERROR",
                          f"inputs: 1 to {MAX_ASSOCIATION_INPUTS}, each with an id")
        results, missing = [], []
        with self.lock:
            for entry in inputs:
                found = self.objects[kind].get(str(entry["id"]))
                targets = found[to] if found else []
                if not targets:
                    missing.append(str(entry["id"]))
                    continue
                results.append({"from": {"id": found["id"]}, "to": [
                    {"toObjectId": int(t) if str(t).isdigit() else t, "associationTypes": [
                        {"category": "HUBSPOT_DEFINED",
                         "typeId": ASSOCIATION_TYPES[(kind, to)], "label": None}]}
                    for t in targets]})
        answer: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if missing:
            answer.update(numErrors=len(missing), errors=[{
                "status": "error", "category": "OBJECT_NOT_FOUND",
                "message": f"No {to} is associated", "context": {"fromObjectId": [m]}}
                for m in missing])
            return FakeResponse(207, answer)
        return FakeResponse(200, answer)

    def _new(self, email: str) -> dict[str, Any]:
        contact = {"id": str(self._next_id), "properties": {"email": email}}
        self._next_id += 1
        self.contacts[email] = contact
        return contact

    def _by_id(self, object_id: str) -> dict[str, Any] | None:
        return next((c for c in self.contacts.values() if c["id"] == str(object_id)), None)

    def _batch_read(self, body: dict[str, Any]) -> FakeResponse:
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not 1 <= len(inputs) <= MAX_INPUTS or not all(
                isinstance(i, dict) and i.get("id") for i in inputs):
            return _error(400, "VALIDATION_ERROR", f"inputs: 1 to {MAX_INPUTS} with an id")
        by_email = body.get("idProperty") == "email"
        if body.get("idProperty") not in (None, "email", "hs_object_id"):
            return _error(400, "VALIDATION_ERROR", "idProperty must be a unique property")
        wanted = set(body.get("properties") or ["email"])
        results, missing = [], []
        with self.lock:
            for entry in inputs:
                key = str(entry["id"])
                contact = self.contacts.get(key.lower()) if by_email else self._by_id(key)
                if contact is None:
                    missing.append(key)
                    continue
                results.append({"id": contact["id"], "archived": False, "properties": {
                    k: v for k, v in contact["properties"].items() if k in wanted}})
        answer: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if missing:
            answer.update(numErrors=1, errors=[{
                "status": "error", "category": "OBJECT_NOT_FOUND",
                "message": "Could not get some CONTACT objects, they may be deleted or not "
                           "exist.", "context": {"ids": missing}}])
            return FakeResponse(207, answer)
        return FakeResponse(200, answer)

    def _merge(self, body: dict[str, Any]) -> FakeResponse:
        primary_id, other_id = body.get("primaryObjectId"), body.get("objectIdToMerge")
        if not isinstance(primary_id, str) or not isinstance(other_id, str) \
                or not primary_id or not other_id:
            return _error(400, "VALIDATION_ERROR",
                          "primaryObjectId and objectIdToMerge are required strings")
        if primary_id == other_id:
            return _error(400, "VALIDATION_ERROR", "cannot merge a contact with itself")
        with self.lock:
            primary, other = self._by_id(primary_id), self._by_id(other_id)
            if primary is None or other is None:
                return _error(404, "OBJECT_NOT_FOUND", "one of the contacts does not exist")
            properties = primary["properties"]
            for name, value in other["properties"].items():
                if name not in properties and name != "email":
                    properties[name] = value
            emails = [e for e in properties.get("hs_additional_emails", "").split(";") if e]
            properties["hs_additional_emails"] = ";".join(
                [*emails, other["properties"]["email"]])
            del self.contacts[other["properties"]["email"]]
            self.merges.append((primary["id"], other["id"]))
            self._touch(primary)
            return FakeResponse(200, {"id": primary["id"], "properties": dict(properties),
                                      "archived": False})

    def _update(self, object_id: str, body: dict[str, Any]) -> FakeResponse:
        if not isinstance((body or {}).get("properties"), dict):
            return _error(400, "VALIDATION_ERROR", "properties: an object is required")
        with self.lock:
            contact = self._by_id(object_id)
            if contact is None:
                return _error(404, "OBJECT_NOT_FOUND", f"no contact {object_id}")
            old_email = contact["properties"]["email"]
            new_email = str(body["properties"].get("email") or old_email).lower()
            if new_email != old_email and new_email in self.contacts:
                return _error(409, "CONFLICT", f"{new_email} belongs to another contact")
            _write(contact["properties"], body["properties"])
            contact["properties"]["email"] = new_email
            self.contacts[new_email] = self.contacts.pop(old_email)
            self._touch(contact)
            return FakeResponse(200, {"id": contact["id"],
                                      "properties": dict(contact["properties"])})

    def batch_sizes(self) -> list[int]:
        with self.lock:
            return list(self.sizes)

    def subjects(self) -> list[str]:
        with self.lock:
            return list(self.contacts)


def _write(properties: dict[str, Any], values: dict[str, Any]) -> None:
    """Set the values; an empty string clears a property, as HubSpot documents."""
    for name, value in values.items():
        if value == "" or value is None:
            properties.pop(name, None)
        else:
            properties[name] = value


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)
