"""HubSpot CRM contacts: batch upsert by email, and GDPR delete.

    POST {base}/crm/v3/objects/contacts/batch/upsert     (at most 100 inputs)
      {"inputs": [{"idProperty": "email", "id": "<email>", "properties": {…}}]}
    POST {base}/crm/v3/objects/contacts/gdpr-delete      (one contact per call)
      {"objectId": "<email>", "idProperty": "email"}
    Authorization: Bearer <private app token>

Traits become contact properties through the destination's mapping (``first_name`` →
``firstname`` by default, as HubSpot names them). Upserts keyed by email are idempotent.
A 429 names its policy: TEN_SECONDLY_ROLLING waits 10 s, SECONDLY 1 s, when no
``Retry-After`` says otherwise. Each input carries an ``objectWriteTraceId`` (its
idempotency key), so a 207 Multi-Status answer is read per input: the written ones are
delivered, the refused ones retried alone (RATE_LIMITS, LOCKED) or dead-lettered (any
other category).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar

import httpx
from marshmallow import fields, validate

from connectors.base import (
    DeliveryError,
    DeliveryItem,
    PermanentDeliveryError,
    SendResult,
    TransientDeliveryError,
)
from connectors.sdk.destination import (
    Capability,
    DestinationConfigSchema,
    HttpDestination,
    OutboundRequest,
    classify_status,
)
from connectors.sdk.hashing import normalise_email

__all__ = ["DEFAULT_PROPERTIES", "HubSpotContacts", "is_own_write", "sync_stamp"]

# Tessera trait -> HubSpot's default contact property; a destination's mapping wins.
DEFAULT_PROPERTIES = {"first_name": "firstname", "last_name": "lastname", "phone": "phone",
                      "company": "company", "country": "country", "city": "city"}
POLICY_WAIT_SECONDS = {"TEN_SECONDLY_ROLLING": 10.0, "SECONDLY": 1.0}
RETRYABLE_CATEGORIES = frozenset({"RATE_LIMITS", "LOCKED"})


def sync_stamp(properties: dict[str, Any]) -> str:
    """What we wrote, as ``"<names>:<sha256 of names and values>"``: a pull that finds the
    same values under those names is our own write coming back, not a change."""
    names = sorted(properties)
    digest = hashlib.sha256(json.dumps([[n, str(properties[n])] for n in names]).encode())
    return f"{','.join(names)}:{digest.hexdigest()[:32]}"


def is_own_write(properties: dict[str, Any], stamp_property: str) -> bool:
    stamp = properties.get(stamp_property)
    if not stamp:
        return False
    names = stamp.rpartition(":")[0].split(",")
    if any(name not in properties for name in names):
        return False
    return sync_stamp({name: properties[name] for name in names}) == stamp


class HubSpotConfig(DestinationConfigSchema):
    sync_stamp_property = fields.String(
        load_default="tessera_sync_stamp", allow_none=True,
        metadata={"description": "Contact property where each upsert records what it wrote, "
                  "so the HubSpot source recognises our own writes (two-way sync without "
                  "loops); null to disable. Create it in HubSpot as a text property."})
    base_url = fields.Url(load_default="https://api.hubapi.com", require_tld=False,
                          metadata={"description": "HubSpot API endpoint (a fake's, in tests)."})
    access_token = fields.String(required=True, validate=validate.Length(min=1),
                                 metadata={"secret": True,
                                           "description": "Private app access token."})


class HubSpotContacts(HttpDestination):
    name: ClassVar[str] = "hubspot"
    config_schema = HubSpotConfig
    capabilities = frozenset({Capability.UPSERT_PROFILE, Capability.DELETE_SUBJECT})
    batch_size = 100
    rate_limit = 9.0  # 100 requests per 10 s on the smallest plans, with a margin

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config['access_token']}"}

    def _url(self, path: str) -> str:
        return f"{self.config['base_url']}/crm/v3/objects/contacts{path}"

    def properties_of(self, item: DeliveryItem) -> dict[str, Any]:
        properties = {}
        for trait, value in item.traits.items():
            name = self.mapping.get(trait) or DEFAULT_PROPERTIES.get(trait, trait)
            properties[name] = normalise_email(value) if trait == "email" else value
        stamp_property = self.config.get("sync_stamp_property")
        if stamp_property:
            properties[stamp_property] = sync_stamp(properties)
        return properties

    def sendable(self, operation, item: DeliveryItem) -> bool:
        return bool(item.traits.get("email"))  # contacts are keyed by email

    def requests_for(self, operation, destination, items):
        with_email = [i for i in items if i.traits.get("email")]
        if operation == Capability.DELETE_SUBJECT:
            return [OutboundRequest("POST", self._url("/gdpr-delete"), self._auth(), json={
                "objectId": normalise_email(i.traits["email"]), "idProperty": "email"})
                for i in with_email]
        # objectWriteTraceId turns on HubSpot's multi-status answers: a 207 then says which
        # inputs were written and which not, each by its trace id (our idempotency key).
        inputs = [{"idProperty": "email", "id": normalise_email(i.traits["email"]),
                   "properties": self.properties_of(i), "objectWriteTraceId": i.idempotency_key}
                  for i in with_email]
        return [OutboundRequest("POST", self._url("/batch/upsert"), self._auth(),
                                json={"inputs": inputs})] if inputs else []

    def check(self) -> None:
        self.request(OutboundRequest("GET", self._url("?limit=1"), self._auth()))

    def classify(self, response: httpx.Response) -> None:
        if response.status_code == 429 and "Retry-After" not in response.headers:
            policy = _json(response).get("policyName", "")
            raise TransientDeliveryError(
                f"{self.name}: HTTP 429 {policy}", status=429,
                retry_after=POLICY_WAIT_SECONDS.get(policy))
        classify_status(self.name, response)

    def interpret(self, response, operation, items):
        if response.status_code == 207:
            return self._multi_status(_json(response), items)
        return super().interpret(response, operation, items)

    def _multi_status(self, body: dict[str, Any], items: list[DeliveryItem]) -> SendResult:
        """Per input: written (a result carrying its trace id), or refused (an error naming
        it) — rate-limit and lock errors retryable, the others not. An input named nowhere
        was not confirmed: sent again."""
        keys = {i.idempotency_key for i in items}
        written = [r.get("objectWriteTraceId") for r in body.get("results") or []]
        failed: dict[str, DeliveryError] = {}
        for error in body.get("errors") or []:
            category = str(error.get("category", ""))
            detail = f"{self.name}: {category}: {error.get('message', '')}"
            refusal = (TransientDeliveryError(detail, status=207)
                       if category in RETRYABLE_CATEGORIES
                       else PermanentDeliveryError(detail, status=207))
            for key in _named_by(error) & keys:
                failed[key] = refusal
        delivered = [key for key in written if key in keys and key not in failed]
        for key in keys - set(delivered) - set(failed):
            failed[key] = TransientDeliveryError(
                f"{self.name}: input neither written nor refused in a 207", status=207)
        return SendResult(delivered=delivered, status=207, failed=failed)

    @classmethod
    def conformance_harness(cls):
        from connectors.fakes.hubspot import FakeHubSpot
        from connectors.sdk.conformance import Harness

        return Harness(
            fake=lambda: FakeHubSpot(token="pat-na1-test"),
            config=lambda fake: {"base_url": fake.base_url, "access_token": "pat-na1-test"},
            bad_config=lambda fake: {"access_token": "pat-na1-revoked"})


def _named_by(error: dict[str, Any]) -> set[str]:
    """The trace ids a batch error names: in ``context.objectWriteTraceId`` (HubSpot's
    BatchError context maps names to lists of strings) or as its ``id``."""
    context = error.get("context") if isinstance(error.get("context"), dict) else {}
    named = context.get("objectWriteTraceId") or []
    names = {str(n) for n in (named if isinstance(named, list) else [named])}
    if error.get("id"):
        names.add(str(error["id"]))
    return names


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
