"""Meta Custom Audiences: add and remove people with hashed, multi-key rows.

    POST   {base}/v25.0/{audience_id}/users     add
    DELETE {base}/v25.0/{audience_id}/users     remove
    Authorization: Bearer <access token>
    {"payload": {"schema": ["EMAIL", "PHONE", "FN", "LN", "COUNTRY", "EXTERN_ID"],
                 "data": [["<sha256>", "<sha256>", …, "<profile id, not hashed>"]]}}

Normalisation as Meta documents it: email trimmed and lowercased; phone as digits with
the country code and **no** ``+``; names lowercased without punctuation; country as a
lowercase ISO code; every key SHA-256 hex except EXTERN_ID, sent as is. An absent key is
``""``. At most 10,000 rows per request. Meta answers most errors with HTTP 400 and an
``error.code``: 1, 2 (temporary) and 4, 17, 341, 613 (throttling) are retried.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx
from marshmallow import fields, validate

from connectors.base import DeliveryItem, PermanentDeliveryError, TransientDeliveryError
from connectors.sdk.destination import (
    Capability,
    DestinationConfigSchema,
    HttpDestination,
    OutboundRequest,
    classify_status,
)
from connectors.sdk.hashing import meta_phone, normalise_email, normalise_name, sha256_hex

__all__ = ["SCHEMA", "MetaCustomAudiences", "row_of"]

SCHEMA = ["EMAIL", "PHONE", "FN", "LN", "COUNTRY", "EXTERN_ID"]
RETRYABLE_CODES = frozenset({1, 2, 4, 17, 341, 613})
THROTTLE_WAIT_SECONDS = 60.0  # Meta gives no Retry-After; its limits are per hour


class MetaConfig(DestinationConfigSchema):
    base_url = fields.Url(load_default="https://graph.facebook.com", require_tld=False,
                          metadata={"description": "Graph API endpoint (a fake's, in tests)."})
    api_version = fields.String(load_default="v25.0",
                                validate=validate.Regexp(r"^v\d+\.\d+$", error="like v25.0"),
                                metadata={"description": "Graph API version."})
    access_token = fields.String(required=True, validate=validate.Length(min=1),
                                 metadata={"secret": True,
                                           "description": "System user access token."})
    audience_id = fields.String(required=True,
                                validate=validate.Regexp(r"^[0-9]+$", error="digits"),
                                metadata={"description": "The custom audience's id."})
    default_region = fields.String(
        load_default="US", validate=validate.Regexp(r"^[A-Z]{2}$", error="ISO 3166 alpha-2"),
        metadata={"description": "Region assumed for phones written without +country."})


def row_of(traits: dict[str, Any], profile_id: str, default_region: str = "US") -> list[str]:
    def hashed(value: str | None) -> str:
        return sha256_hex(value) if value else ""

    phone = meta_phone(str(traits["phone"]), default_region) if traits.get("phone") else None
    return [
        hashed(normalise_email(str(traits["email"])) if traits.get("email") else None),
        hashed(phone),
        hashed(normalise_name(str(traits["first_name"])) if traits.get("first_name") else None),
        hashed(normalise_name(str(traits["last_name"])) if traits.get("last_name") else None),
        hashed(str(traits["country"]).strip().lower() if traits.get("country") else None),
        profile_id,  # EXTERN_ID goes unhashed
    ]


class MetaCustomAudiences(HttpDestination):
    name: ClassVar[str] = "meta_custom_audiences"
    config_schema = MetaConfig
    capabilities = frozenset({Capability.ADD_TO_AUDIENCE, Capability.REMOVE_FROM_AUDIENCE})
    batch_size = 10_000
    rate_limit = 5.0
    hashing = "meta"

    def sendable(self, operation, item: DeliveryItem) -> bool:
        traits = self.fields_of(item)
        return bool(traits.get("email") or traits.get("phone"))

    def _url(self, suffix: str = "/users") -> str:
        return (f"{self.config['base_url']}/{self.config['api_version']}/"
                f"{self.config['audience_id']}{suffix}")

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config['access_token']}"}

    def requests_for(self, operation, destination, items: list[DeliveryItem]):
        rows = [row_of(self.fields_of(i), i.profile_id, self.config["default_region"])
                for i in items]
        method = "POST" if operation == Capability.ADD_TO_AUDIENCE else "DELETE"
        return [OutboundRequest(method, self._url(), self._auth(),
                                json={"payload": {"schema": SCHEMA, "data": rows}})]

    def check(self) -> None:
        self.request(OutboundRequest("GET", self._url("?fields=id"), self._auth()))

    def classify(self, response: httpx.Response) -> None:
        if response.status_code == 400:
            try:
                error = response.json().get("error") or {}
            except ValueError:
                error = {}
            code = error.get("code")
            detail = f"{self.name}: HTTP 400 code {code}: {error.get('message', '')}"
            if code in RETRYABLE_CODES:
                wait = None if code in (1, 2) else THROTTLE_WAIT_SECONDS
                raise TransientDeliveryError(detail, retry_after=wait, status=400)
            raise PermanentDeliveryError(detail, status=400)
        classify_status(self.name, response)

    @classmethod
    def conformance_harness(cls):
        from connectors.fakes.meta import FakeGraphApi
        from connectors.sdk.conformance import Harness

        return Harness(
            fake=lambda: FakeGraphApi(token="EAAB-test-token", audience_id="2385"),
            config=lambda fake: {"base_url": fake.base_url, "access_token": "EAAB-test-token",
                                 "audience_id": "2385"},
            bad_config=lambda fake: {"access_token": "EAAB-revoked"})
