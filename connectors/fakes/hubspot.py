"""A fake of HubSpot's CRM v3 contacts API: batch upsert, GDPR delete, list.

Enforces: Bearer token (401 with HubSpot's error shape), at most 100 inputs, each with
``idProperty`` and ``id`` and object ``properties`` (400 VALIDATION_ERROR), an email id
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

import uuid
from typing import Any

from connectors.sdk.fakes import FakeRequest, FakeResponse, FakeVendor

MAX_INPUTS = 100
MAX_SEARCH_LIMIT = 200
SEARCH_RESULTS_CAP = 10_000  # paging past this answers 400, as HubSpot's search does
FIRST_MODIFIED_MS = 1_735_689_600_000


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
        self.refusals: dict[str, list] = {}  # email -> [category, times left or None]
        self._clock_ms = FIRST_MODIFIED_MS

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
            contact = self.contacts.setdefault(
                email, {"id": str(len(self.contacts) + 1001), "properties": {"email": email}})
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
        if request.method == "POST" and path == "/crm/v3/objects/contacts/gdpr-delete":
            return self._gdpr_delete(request.json())
        if request.method == "POST" and path == "/crm/v3/objects/contacts/search":
            return self._search(request.json())
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
                contact = self.contacts.setdefault(
                    email, {"id": str(len(self.contacts) + 1001), "properties": {}})
                contact["properties"].update(entry["properties"], email=email)
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

    def batch_sizes(self) -> list[int]:
        with self.lock:
            return list(self.sizes)

    def subjects(self) -> list[str]:
        with self.lock:
            return list(self.contacts)
