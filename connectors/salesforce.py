"""Salesforce contacts: OAuth client credentials, then upsert by external id in batches.

    POST  {login_url}/services/oauth2/token   grant_type=client_credentials (form, Basic)
          -> {"access_token", "instance_url", "token_type": "Bearer", …}
          or grant_type=refresh_token&refresh_token=… when a refresh token is configured;
          with refresh token rotation the answer carries a new ``refresh_token`` and the
          one sent is void: it goes to ``self.credentials`` (encrypted in activation's store)
    PATCH {instance_url}/services/data/v66.0/composite/sobjects/Contact/{external_id_field}
          {"allOrNone": false,
           "records": [{"attributes": {"type": "Contact"}, "<ext id field>": "<profile id>",
                        "LastName": "…", …}]}                     (at most 200 records)
          -> 200 [{"id", "success", "errors": [...], "created"}, …] in request order

The token is fetched on first use and fetched again once when Salesforce answers 401
INVALID_SESSION_ID. Records are keyed by the profile id in the external id field, so a
repeated upsert changes nothing. A record failing with UNABLE_TO_LOCK_ROW makes the batch
retryable; any other record error is permanent. Salesforce requires ``LastName`` on a
Contact: a profile without one gets ``"[not provided]"``.
"""

from __future__ import annotations

import hashlib
import json
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

__all__ = ["DEFAULT_FIELDS", "SalesforceContacts", "is_own_write", "sync_stamp"]

DEFAULT_FIELDS = {"email": "Email", "first_name": "FirstName", "last_name": "LastName",
                  "phone": "Phone", "title": "Title", "company": "Department"}
RETRYABLE_RECORD_ERRORS = frozenset({"UNABLE_TO_LOCK_ROW"})


def sync_stamp(fields_: dict[str, Any]) -> str:
    """What we wrote, as ``"<names>:<digest>"`` (see :func:`connectors.hubspot.sync_stamp`)."""
    names = sorted(fields_)
    digest = hashlib.sha256(json.dumps([[n, str(fields_[n])] for n in names]).encode())
    return f"{','.join(names)}:{digest.hexdigest()[:32]}"


def is_own_write(record: dict[str, Any], stamp_field: str) -> bool:
    stamp = record.get(stamp_field)
    if not stamp:
        return False
    names = stamp.rpartition(":")[0].split(",")
    return all(n in record for n in names) and \
        sync_stamp({n: record[n] for n in names}) == stamp


class SalesforceConfig(DestinationConfigSchema):
    sync_stamp_field = fields.String(
        load_default="Tessera_Sync_Stamp__c", allow_none=True,
        metadata={"description": "Contact text field where each upsert records what it "
                  "wrote, so the Salesforce source skips our own writes; null to disable."})
    login_url = fields.Url(required=True, require_tld=False,
                           metadata={"description": "Your My Domain URL, e.g. "
                                     "https://acme.my.salesforce.com (token endpoint host)."})
    client_id = fields.String(required=True, validate=validate.Length(min=1),
                              metadata={"description": "Consumer key of the connected app."})
    client_secret = fields.String(required=True, validate=validate.Length(min=1),
                                  metadata={"secret": True,
                                            "description": "Consumer secret of the app."})
    refresh_token = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(min=1),
        metadata={"secret": True, "description": "A refresh token from the web-server flow: "
                  "then sessions come from the refresh_token grant, not client credentials. "
                  "With refresh token rotation each use returns a new one, which Tessera "
                  "keeps encrypted in its store; this value only seeds it."})
    api_version = fields.String(load_default="v66.0",
                                validate=validate.Regexp(r"^v\d+\.\d$", error="like v66.0"),
                                metadata={"description": "REST API version."})
    external_id_field = fields.String(
        load_default="Tessera_Profile_Id__c",
        validate=validate.Regexp(r"^\w+__c$", error="a custom field name ending in __c"),
        metadata={"description": "External id field of Contact holding the profile id."})


class SalesforceContacts(HttpDestination):
    name: ClassVar[str] = "salesforce"
    config_schema = SalesforceConfig
    capabilities = frozenset({Capability.UPSERT_PROFILE})
    batch_size = 200
    rate_limit = 5.0
    runtime_credentials = frozenset({"refresh_token"})

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self._token: dict[str, str] | None = None

    # ---- OAuth ---------------------------------------------------------------------
    def _authenticate(self) -> dict[str, str]:
        form = {"grant_type": "client_credentials", "client_id": self.config["client_id"],
                "client_secret": self.config["client_secret"]}
        refresh_token = self.credentials.get("refresh_token") \
            if self.config.get("refresh_token") else None
        if refresh_token:
            form.update(grant_type="refresh_token", refresh_token=refresh_token)
        response = self.request(OutboundRequest(
            "POST", f"{self.config['login_url']}/services/oauth2/token",
            {"Content-Type": "application/x-www-form-urlencoded"}, data=form))
        token = response.json()
        rotated = token.get("refresh_token")
        if refresh_token and rotated and rotated != refresh_token:
            # Rotation voided the one we sent: keep the new one before anything else.
            self.credentials.put("refresh_token", rotated)
        self._token = {"access_token": token["access_token"],
                       "instance_url": token["instance_url"]}
        return self._token

    def check(self) -> None:
        self._authenticate()

    # ---- upserts -------------------------------------------------------------------
    def record_of(self, item: DeliveryItem) -> dict[str, Any]:
        record: dict[str, Any] = {"attributes": {"type": "Contact"},
                                  self.config["external_id_field"]: item.profile_id}
        for trait, value in item.traits.items():
            name = self.mapping.get(trait) or DEFAULT_FIELDS.get(trait)
            if name and name not in ("Id", self.config["external_id_field"]):
                record[name] = value
        record.setdefault("LastName", "[not provided]")
        stamp_field = self.config.get("sync_stamp_field")
        if stamp_field:
            written = {k: v for k, v in record.items() if k != "attributes"}
            record[stamp_field] = sync_stamp(written)
        return record

    def _upsert(self, items: list[DeliveryItem], token: dict[str, str]) -> OutboundRequest:
        url = (f"{token['instance_url']}/services/data/{self.config['api_version']}"
               f"/composite/sobjects/Contact/{self.config['external_id_field']}")
        return OutboundRequest("PATCH", url, {"Authorization": f"Bearer {token['access_token']}"},
                               json={"allOrNone": False,
                                     "records": [self.record_of(i) for i in items]})

    def requests_for(self, operation, destination, items):
        token = self._token or {"access_token": "<fetched at send time>",
                                "instance_url": "<instance_url>"}
        return [self._upsert(items, token)]

    def deliver(self, operation, destination, items):
        token = self._token or self._authenticate()
        try:
            response = self.request(self._upsert(items, token))
        except PermanentDeliveryError as error:
            if error.status != 401:
                raise
            # The session expired: one new token, one more try.
            response = self.request(self._upsert(items, self._authenticate()))
        return self.interpret(response, operation, items)

    def interpret(self, response, operation, items):
        results = response.json()
        failures = [(item, result) for item, result in zip(items, results, strict=False)
                    if not result.get("success")]
        if failures:
            codes = {e.get("statusCode") for _, r in failures for e in r.get("errors", [])}
            detail = f"{self.name}: {len(failures)} records failed: {sorted(map(str, codes))}"
            if codes <= RETRYABLE_RECORD_ERRORS:
                raise TransientDeliveryError(detail, status=response.status_code)
            raise PermanentDeliveryError(detail, status=response.status_code)
        return super().interpret(response, operation, items)

    def classify(self, response: httpx.Response) -> None:
        classify_status(self.name, response)

    @classmethod
    def conformance_harness(cls):
        from connectors.fakes.salesforce import FakeSalesforce
        from connectors.sdk.conformance import Harness

        return Harness(
            fake=lambda: FakeSalesforce(client_id="3MVG9-test", client_secret="s3cret"),
            config=lambda fake: {"login_url": fake.base_url, "client_id": "3MVG9-test",
                                 "client_secret": "s3cret"},
            bad_config=lambda fake: {"client_secret": "wrong"})
