"""A fake of Meta's Graph API for Custom Audiences (``/{version}/{audience_id}/users``).

Enforces: a token (``access_token`` parameter or Bearer), else 400 OAuthException code
190; a ``payload`` whose ``schema`` keys are Meta's and whose rows all have the schema's
length, at most 10,000 rows (else 400 code 100); hashed keys must be 64 lowercase hex — a
row that is not counts in ``num_invalid_entries`` and is not applied, as Meta does.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from connectors.sdk.fakes import FakeRequest, FakeResponse, FakeVendor

MAX_ROWS = 10_000
KEYS = {"EXTERN_ID", "EMAIL", "PHONE", "GEN", "DOBY", "DOBM", "DOBD", "LN", "FN", "FI", "CT",
        "ST", "ZIP", "MADID", "COUNTRY", "APPUID"}
UNHASHED = {"EXTERN_ID"}
_HEX = re.compile(r"^[0-9a-f]{64}$")
_NAMES = {"EMAIL": "email_sha256", "PHONE": "phone_sha256", "FN": "first_name_sha256",
          "LN": "last_name_sha256"}


def _error(code: int, message: str, kind: str = "OAuthException") -> FakeResponse:
    return FakeResponse(400, {"error": {"message": message, "type": kind, "code": code,
                                        "fbtrace_id": uuid.uuid4().hex[:11]}})


class FakeGraphApi(FakeVendor):
    def __init__(self, token: str, audience_id: str) -> None:
        super().__init__()
        self.token = token
        self.audience_id = audience_id
        self.members: set[str] = set()
        self.sizes: list[int] = []
        self.identifiers: list[dict[str, str]] = []

    def is_data_request(self, request: FakeRequest) -> bool:
        return request.path.endswith("/users")

    def error_body(self, status: int) -> Any:
        return {"error": {"message": "injected", "type": "OAuthException", "code": 1}} \
            if status >= 500 else {"error": {"message": "injected", "type": "OAuthException",
                                             "code": 100}}

    def route(self, request: FakeRequest) -> FakeResponse:
        token = request.query.get("access_token") or request.bearer
        if token != self.token:
            return _error(190, "Invalid OAuth access token - Cannot parse access token")
        match = re.match(r"^/v\d+\.\d+/(\d+)(/users)?$", request.path)
        if match is None or match.group(1) != self.audience_id:
            return _error(100, "Unsupported request - object does not exist",
                          "GraphMethodException")
        if match.group(2) is None:
            return FakeResponse(200, {"id": self.audience_id})
        if request.method not in ("POST", "DELETE"):
            return _error(100, "Unsupported method")
        return self._users(request.method == "POST", request.json())

    def _users(self, add: bool, body: dict[str, Any]) -> FakeResponse:
        payload = body.get("payload") if isinstance(body, dict) else None
        if not isinstance(payload, dict):
            return _error(100, "(#100) The parameter payload is required")
        schema = payload.get("schema")
        schema = [schema] if isinstance(schema, str) else schema
        if not schema or not set(schema) <= KEYS:
            return _error(100, f"(#100) Invalid schema: {schema}")
        rows = payload.get("data") or []
        if len(rows) > MAX_ROWS:
            return _error(100, f"(#100) Too many records: at most {MAX_ROWS}")
        rows = [[row] if isinstance(row, str) else row for row in rows]
        if any(len(row) != len(schema) for row in rows):
            return _error(100, "(#100) Each row must have as many values as the schema")
        invalid = 0
        with self.lock:
            self.sizes.append(len(rows))
            for row in rows:
                values = dict(zip(schema, row, strict=True))
                if any(v and k not in UNHASHED and not _HEX.match(v) for k, v in values.items()):
                    invalid += 1
                    continue
                self.identifiers.append({_NAMES[k]: v for k, v in values.items()
                                         if k in _NAMES and v})
                key = values.get("EMAIL") or values.get("EXTERN_ID") or row[0]
                (self.members.add if add else self.members.discard)(key)
        return FakeResponse(200, {"audience_id": self.audience_id,
                                  "session_id": str(uuid.uuid4().int)[:16],
                                  "num_received": len(rows), "num_invalid_entries": invalid,
                                  "invalid_entry_samples": {}})

    def batch_sizes(self) -> list[int]:
        with self.lock:
            return list(self.sizes)

    def subjects(self) -> list[str]:
        with self.lock:
            return list(self.members)

    def received_identifiers(self) -> list[dict[str, str]]:
        with self.lock:
            return list(self.identifiers)
