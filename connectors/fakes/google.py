"""A fake of Google's Data Manager API (``audienceMembers:ingest`` / ``:remove``).

It enforces what the reference and Google's documentation say: Bearer auth (401
UNAUTHENTICATED), a destination naming the Google Ads account and the user list, 1 to
10,000 members, ``encoding`` given, each identifier exactly one of emailAddress /
phoneNumber / address, hashes as 64 lowercase hex, address with hashed names and a plain
ISO region code and postal code, consent values from the ConsentStatus enum and never
DENIED on an ingest. Errors come in Google's ``{"error": {code, message, status}}`` shape.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from connectors.sdk.fakes import FakeRequest, FakeResponse, FakeVendor

MAX_MEMBERS = 10_000
MAX_IDENTIFIERS = 10
_HEX = re.compile(r"^[0-9a-f]{64}$")
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
           404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
           504: "DEADLINE_EXCEEDED"}
_CONSENT = {"CONSENT_STATUS_UNSPECIFIED", "CONSENT_GRANTED", "CONSENT_DENIED"}


class Invalid(Exception):
    pass


def _error(status: int, message: str) -> FakeResponse:
    return FakeResponse(status, {"error": {"code": status, "message": message,
                                           "status": _STATUS.get(status, "UNKNOWN")}})


def _identifier(entry: dict[str, Any]) -> dict[str, str]:
    kinds = [k for k in ("emailAddress", "phoneNumber", "address") if k in entry]
    if len(kinds) != 1 or len(entry) != 1:
        raise Invalid("a UserIdentifier holds exactly one of emailAddress, phoneNumber, address")
    kind = kinds[0]
    if kind == "address":
        address = entry["address"]
        for name in ("givenName", "familyName"):
            if not _HEX.match(str(address.get(name, ""))):
                raise Invalid(f"address.{name} must be a SHA-256 hex digest")
        if not re.match(r"^[A-Z]{2}$", str(address.get("regionCode", ""))):
            raise Invalid("address.regionCode must be ISO-3166-1 alpha-2")
        if not address.get("postalCode"):
            raise Invalid("address.postalCode is required")
        return {"first_name_sha256": address["givenName"],
                "last_name_sha256": address["familyName"]}
    if not _HEX.match(str(entry[kind])):
        raise Invalid(f"{kind} must be a SHA-256 hex digest (encoding HEX)")
    return {"emailAddress": {"email_sha256": entry[kind]},
            "phoneNumber": {"phone_sha256": entry[kind]}}[kind]


class FakeDataManager(FakeVendor):
    def __init__(self, token: str, refresh_token: str | None = None,
                 client: tuple[str, str] | None = None) -> None:
        super().__init__()
        self.token = token
        self.refresh_token = refresh_token
        self.client = client
        self.tokens_issued = 0
        self.audiences: dict[str, set[str]] = {}  # productDestinationId -> member keys
        self.sizes: list[int] = []
        self.identifiers: list[dict[str, str]] = []


    def error_body(self, status: int) -> Any:
        return {"error": {"code": status, "message": "injected",
                          "status": _STATUS.get(status, "UNKNOWN")}}

    def route(self, request: FakeRequest) -> FakeResponse:
        if request.path == "/token" and request.method == "POST":
            return self._token(request.form())
        if request.bearer != self.token:
            return _error(401, "Request had invalid authentication credentials.")
        if request.method != "POST" or request.path not in (
                "/v1/audienceMembers:ingest", "/v1/audienceMembers:remove"):
            return _error(404, f"no method {request.method} {request.path}")
        try:
            return self._members(request.path.endswith(":ingest"), request.json())
        except Invalid as invalid:
            return _error(400, str(invalid))

    def _token(self, form: dict[str, str]) -> FakeResponse:
        """Google's OAuth token endpoint, refresh_token grant."""
        if (form.get("client_id"), form.get("client_secret")) != self.client:
            return FakeResponse(401, {"error": "invalid_client",
                                      "error_description": "The OAuth client was not found."})
        if form.get("grant_type") != "refresh_token" or \
                form.get("refresh_token") != self.refresh_token:
            return FakeResponse(400, {"error": "invalid_grant",
                                      "error_description": "Token has been expired or revoked."})
        with self.lock:
            self.tokens_issued += 1
        return FakeResponse(200, {"access_token": self.token, "expires_in": 3599,
                                  "scope": "https://www.googleapis.com/auth/datamanager",
                                  "token_type": "Bearer"})

    def is_data_request(self, request: FakeRequest) -> bool:
        return request.path.startswith("/v1/audienceMembers:")

    def _members(self, ingest: bool, body: dict[str, Any]) -> FakeResponse:
        destinations = body.get("destinations") or []
        if len(destinations) != 1:
            raise Invalid("destinations: exactly one expected by this fake")
        account = destinations[0].get("operatingAccount") or {}
        if account.get("accountType") != "GOOGLE_ADS" or not re.match(
                r"^[0-9]+$", str(account.get("accountId", ""))):
            raise Invalid("operatingAccount: accountType GOOGLE_ADS and a digits-only accountId")
        audience = str(destinations[0].get("productDestinationId", ""))
        if not audience.isdigit():
            raise Invalid("productDestinationId: the user list id")
        if body.get("encoding") not in ("HEX", "BASE64"):
            raise Invalid("encoding is required for user data")
        members = body.get("audienceMembers") or []
        if not 1 <= len(members) <= MAX_MEMBERS:
            raise Invalid(f"audienceMembers: 1 to {MAX_MEMBERS} per request")
        seen, keys = [], []
        for member in members:
            consent = member.get("consent") or body.get("consent") or {}
            if set(consent.values()) - _CONSENT:
                raise Invalid("consent: values from ConsentStatus")
            if ingest and "CONSENT_DENIED" in consent.values():
                raise Invalid("CUSTOMER_NOT_ACCEPTED_CUSTOMER_DATA_TERMS: consent denied")
            entries = (member.get("userData") or {}).get("userIdentifiers") or []
            if not 1 <= len(entries) <= MAX_IDENTIFIERS:
                raise Invalid(f"userIdentifiers: 1 to {MAX_IDENTIFIERS} per member")
            found = [_identifier(entry) for entry in entries]
            seen.extend(found)
            keys.append(next((f["email_sha256"] for f in found if "email_sha256" in f),
                             next(iter(found[0].values()))))
        if body.get("validateOnly"):
            return FakeResponse(200, {"requestId": str(uuid.uuid4())})
        with self.lock:
            self.sizes.append(len(members))
            self.identifiers.extend(seen)
            held = self.audiences.setdefault(audience, set())
            for key in keys:
                (held.add if ingest else held.discard)(key)
        return FakeResponse(200, {"requestId": str(uuid.uuid4())})

    def batch_sizes(self) -> list[int]:
        with self.lock:
            return list(self.sizes)

    def subjects(self) -> list[str]:
        with self.lock:
            return [key for held in self.audiences.values() for key in held]

    def received_identifiers(self) -> list[dict[str, str]]:
        with self.lock:
            return list(self.identifiers)
