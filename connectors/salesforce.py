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

A merge of Tessera profiles (``merge_profiles``) merges their Contacts. Salesforce's REST
API has no merge of standard objects; its SOAP API's ``merge()`` (partner WSDL) is the
documented way, and unlike "upsert the survivor, delete the others" it re-parents the
victims' related records (activities, cases, opportunity roles):

    GET   …/sobjects/Contact/{external_id_field}/{profile id}      each profile's record
    PATCH …/sobjects/Contact/{Id}  {external_id_field: survivor}   only if the survivor
                                                                   had no record yet
    POST  {instance_url}/services/Soap/u/66.0   merge(masterRecord=<Id>,
          recordToMergeIds=[<Id>, <Id>?])   (3 records per request at most; external
                                             ids cannot be used, so Ids are looked up)
    then the usual upsert writes the merged traits onto the master.

A split upserts each part by its own profile id, and sends ``null`` for the fields a part
no longer has, so the survivor's Contact keeps nothing of the part that left. Sources:
developer.salesforce.com SOAP API ``sforce_api_calls_merge`` (limits: 200 merge requests
per call, 3 records per request, no external ids), REST ``dome-upsert`` / retrieve by
external id, REST update (``null`` clears a field).

The token is fetched on first use and fetched again once when Salesforce answers 401
INVALID_SESSION_ID. Records are keyed by the profile id in the external id field, so a
repeated upsert changes nothing. A record failing with UNABLE_TO_LOCK_ROW makes the batch
retryable; any other record error is permanent. Salesforce requires ``LastName`` on a
Contact: a profile without one gets ``"[not provided]"``.
"""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from typing import Any, ClassVar
from urllib.parse import quote
from xml.sax.saxutils import escape

import httpx
from marshmallow import fields, validate

from connectors.base import (
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

__all__ = ["DEFAULT_FIELDS", "SalesforceContacts", "is_own_write", "sync_stamp"]

DEFAULT_FIELDS = {"email": "Email", "first_name": "FirstName", "last_name": "LastName",
                  "phone": "Phone", "title": "Title", "company": "Department"}
RETRYABLE_RECORD_ERRORS = frozenset({"UNABLE_TO_LOCK_ROW"})
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
PARTNER = "urn:partner.soap.sforce.com"
SOBJECT = "urn:sobject.partner.soap.sforce.com"
MAX_VICTIMS_PER_MERGE = 2  # three records per merge request, the master included


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
    capabilities = frozenset({Capability.UPSERT_PROFILE, Capability.MERGE_PROFILES})
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
        if item.action == "split":  # what the part no longer has is cleared
            for trait in {*DEFAULT_FIELDS, *self.mapping}:
                name = self.mapping.get(trait) or DEFAULT_FIELDS.get(trait)
                if name and name not in record and name != "LastName":
                    record[name] = None
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
            return self._deliver(operation, items, token)
        except PermanentDeliveryError as error:
            if error.status != 401:
                raise
            # The session expired: one new token, one more try (merges repeat harmlessly:
            # what was merged already is not found again).
            return self._deliver(operation, items, self._authenticate())

    def _deliver(self, operation, items, token) -> SendResult:
        if operation != Capability.MERGE_PROFILES:
            return self.interpret(self.request(self._upsert(items, token)), operation, items)
        delivered = [i.idempotency_key for i in items
                     if i.action == "merged" and self._merge(i, token)]
        # A split of someone Salesforce never held creates nothing there: the split
        # profile keeps its id, so its record (if any) is keyed by it.
        parts = [i for i in items if i.action == "split"
                 and self._record_id(i.split_from or i.profile_id, token)]
        if parts:
            self.interpret(self.request(self._upsert(parts, token)), operation, parts)
            delivered += [i.idempotency_key for i in parts]
        return SendResult(delivered=delivered, status=200 if items else 0)

    # ---- merges --------------------------------------------------------------------
    def _data_url(self, token: dict[str, str], path: str) -> str:
        return f"{token['instance_url']}/services/data/{self.config['api_version']}{path}"

    def _record_id(self, profile_id: str, token: dict[str, str]) -> str | None:
        """The Id of the Contact keyed by this profile id, or None when there is none."""
        url = self._data_url(token, f"/sobjects/Contact/{self.config['external_id_field']}/"
                                    f"{quote(profile_id, safe='')}")
        try:
            answer = self.request(OutboundRequest(
                "GET", url, {"Authorization": f"Bearer {token['access_token']}"}))
        except PermanentDeliveryError as error:
            if error.status == 404:
                return None
            raise
        return answer.json()["Id"]

    def _merge(self, item: DeliveryItem, token: dict[str, str]) -> bool:
        """Merge the Contacts of every merged profile into one, keyed by the survivor;
        False when Salesforce held none of them (nothing to do)."""
        profiles = list(dict.fromkeys([item.profile_id, *(
            p["profile_id"] for p in item.merged_profiles)]))
        found = {p: self._record_id(p, token) for p in profiles}
        ids = [found[p] for p in profiles if found[p]]
        if not ids:
            return False
        master, victims = ids[0], ids[1:]
        auth = {"Authorization": f"Bearer {token['access_token']}"}
        if found[item.profile_id] is None:  # the survivor's record is an absorbed one's
            self.request(OutboundRequest(
                "PATCH", self._data_url(token, f"/sobjects/Contact/{master}"), auth,
                json={self.config["external_id_field"]: item.profile_id}))
        if victims:
            self._soap_merge(master, victims, token)
        self.interpret(self.request(self._upsert([item], token)), Capability.MERGE_PROFILES,
                       [item])
        return True

    def _soap_merge(self, master: str, victims: list[str], token: dict[str, str]) -> None:
        requests = "".join(
            f"<urn:request><urn:masterRecord><sf:type>Contact</sf:type>"
            f"<sf:Id>{escape(master)}</sf:Id></urn:masterRecord>"
            + "".join(f"<urn:recordToMergeIds>{escape(v)}</urn:recordToMergeIds>"
                      for v in victims[start:start + MAX_VICTIMS_PER_MERGE])
            + "</urn:request>"
            for start in range(0, len(victims), MAX_VICTIMS_PER_MERGE))
        envelope = (
            f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv='
            f'"{SOAP_ENV}" xmlns:urn="{PARTNER}" xmlns:sf="{SOBJECT}"><soapenv:Header>'
            f"<urn:SessionHeader><urn:sessionId>{escape(token['access_token'])}"
            f"</urn:sessionId></urn:SessionHeader></soapenv:Header><soapenv:Body>"
            f"<urn:merge>{requests}</urn:merge></soapenv:Body></soapenv:Envelope>")
        version = self.config["api_version"].removeprefix("v")
        response = self.request(OutboundRequest(
            "POST", f"{token['instance_url']}/services/Soap/u/{version}",
            {"Content-Type": "text/xml; charset=UTF-8", "SOAPAction": '""'},
            content=envelope.encode()))
        results = ET.fromstring(response.content).iter(f"{{{PARTNER}}}result")
        codes = {e.findtext(f"{{{PARTNER}}}statusCode") for r in results
                 if r.findtext(f"{{{PARTNER}}}success") != "true"
                 for e in r.iter(f"{{{PARTNER}}}errors")}
        if codes:
            detail = f"{self.name}: merge failed: {sorted(map(str, codes))}"
            if codes <= RETRYABLE_RECORD_ERRORS:
                raise TransientDeliveryError(detail, status=response.status_code)
            raise PermanentDeliveryError(detail, status=response.status_code)

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
        if response.status_code == 500 and "INVALID_SESSION_ID" in response.text:
            # The SOAP API's way of saying 401: fetch a new token, as for REST.
            raise PermanentDeliveryError(f"{self.name}: SOAP INVALID_SESSION_ID", status=401)
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
