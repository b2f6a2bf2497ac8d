"""HubSpot CRM contacts: batch upsert by email, GDPR delete, merges and splits.

    POST {base}/crm/v3/objects/contacts/batch/upsert     (at most 100 inputs)
      {"inputs": [{"idProperty": "email", "id": "<email>", "properties": {…}}]}
    POST {base}/crm/v3/objects/contacts/gdpr-delete      (one contact per call)
      {"objectId": "<email>", "idProperty": "email"}
    Authorization: Bearer <private app token>

A merge of Tessera profiles (``merge_profiles``) merges their HubSpot contacts:

    POST {base}/crm/v3/objects/contacts/batch/read   {"idProperty": "email",
         "inputs": [{"id": "<email>"}, …], "properties": ["email"]}   (207: some missing)
    POST {base}/crm/v3/objects/contacts/merge   {"primaryObjectId", "objectIdToMerge"}
    PATCH {base}/crm/v3/objects/contacts/{id}   {"properties": {…}}   (the merged traits)

The contacts are found by the emails each profile had before the merge; the primary is
the one holding the survivor's email now (else its email before), and the merged traits
are written onto it by id. Profiles HubSpot never held leave nothing to do. A split
upserts each part by its own email with its recomputed traits, and clears (empty string,
as HubSpot's update documents) the properties a part no longer has, so the survivor's
contact keeps nothing of the part that left. Sources: developers.hubspot.com
api-reference crm-contacts-v3 ``post-crm-v3-objects-contacts-merge``, contacts
``batch/read`` (``idProperty``) and ``batch/update-contacts`` (clearing with "").

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
    capabilities = frozenset({Capability.UPSERT_PROFILE, Capability.DELETE_SUBJECT,
                              Capability.MERGE_PROFILES})
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

    def cleared_properties(self, item: DeliveryItem) -> dict[str, str]:
        """The properties Tessera writes that this profile no longer has, as "" (cleared)."""
        written = {self.mapping.get(t) or DEFAULT_PROPERTIES.get(t, t)
                   for t in {*DEFAULT_PROPERTIES, *self.mapping}}
        present = {self.mapping.get(t) or DEFAULT_PROPERTIES.get(t, t) for t in item.traits}
        return dict.fromkeys(sorted(written - present - {"email"}), "")

    def sendable(self, operation, item: DeliveryItem) -> bool:
        return bool(item.traits.get("email"))  # contacts are keyed by email

    def requests_for(self, operation, destination, items):
        with_email = [i for i in items if i.traits.get("email")]
        if operation == Capability.DELETE_SUBJECT:
            return [OutboundRequest("POST", self._url("/gdpr-delete"), self._auth(), json={
                "objectId": normalise_email(i.traits["email"]), "idProperty": "email"})
                for i in with_email]
        if operation == Capability.MERGE_PROFILES:
            merges = [i for i in with_email if i.action == "merged"]
            splits = [i for i in with_email if i.action != "merged"]
            return [self._lookup(_emails_of(i)) for i in merges] + self._upserts(splits)
        return self._upserts(with_email)

    def _upserts(self, items: list[DeliveryItem]) -> list[OutboundRequest]:
        # objectWriteTraceId turns on HubSpot's multi-status answers: a 207 then says which
        # inputs were written and which not, each by its trace id (our idempotency key).
        inputs = [{"idProperty": "email", "id": normalise_email(i.traits["email"]),
                   "properties": dict(self.cleared_properties(i) if i.action == "split"
                                      else {}, **self.properties_of(i)),
                   "objectWriteTraceId": i.idempotency_key} for i in items]
        return [OutboundRequest("POST", self._url("/batch/upsert"), self._auth(),
                                json={"inputs": inputs})] if inputs else []

    def _lookup(self, emails: list[str]) -> OutboundRequest:
        return OutboundRequest("POST", self._url("/batch/read"), self._auth(), json={
            "idProperty": "email", "inputs": [{"id": e} for e in emails],
            "properties": ["email"]})

    def deliver(self, operation, destination, items):
        if operation != Capability.MERGE_PROFILES:
            return super().deliver(operation, destination, items)
        items = [item for item in items if self.sendable(operation, item)]
        delivered = [i.idempotency_key for i in items if i.action == "merged" and self._merge(i)]
        splits = [i for i in _split_groups(items) if self._holds_any(i)]
        parts = [i for group in splits for i in group]
        for request in self._upserts(parts):
            self.interpret(self.request(request), operation, parts)
        delivered += [i.idempotency_key for i in parts]
        return SendResult(delivered=delivered, status=200 if items else 0)

    def _holds_any(self, parts: list[DeliveryItem]) -> bool:
        """Whether HubSpot holds a contact of this split (by any part's email): a split of
        someone HubSpot never held creates nothing there."""
        emails = list(dict.fromkeys(normalise_email(i.traits["email"]) for i in parts))
        return bool(_json(self.request(self._lookup(emails))).get("results"))

    def _merge(self, item: DeliveryItem) -> bool:
        """Fold the HubSpot contacts of every merged profile into one; False when HubSpot
        held none of them (nothing to do). Repeating it finds one contact and only
        writes the traits again."""
        emails = _emails_of(item)
        found = _json(self.request(self._lookup(emails))).get("results") or []
        ids_by_email = {r["properties"].get("email"): r["id"] for r in found}
        ids = list(dict.fromkeys(ids_by_email[e] for e in emails if e in ids_by_email))
        if not ids:
            return False
        primary, others = ids[0], ids[1:]
        for other in others:
            merged = self.request(OutboundRequest("POST", self._url("/merge"), self._auth(),
                                                  json={"primaryObjectId": primary,
                                                        "objectIdToMerge": other}))
            primary = str(_json(merged).get("id") or primary)  # HubSpot may give a new id
        self.request(OutboundRequest("PATCH", self._url(f"/{primary}"), self._auth(),
                                     json={"properties": self.properties_of(item)}))
        return True

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


def _emails_of(item: DeliveryItem) -> list[str]:
    """The survivor's email now, then each merged profile's from before the merge."""
    emails = [item.traits.get("email"),
              *((p.get("traits") or {}).get("email") for p in item.merged_profiles)]
    return list(dict.fromkeys(normalise_email(e) for e in emails if e))


def _split_groups(items: list[DeliveryItem]) -> list[list[DeliveryItem]]:
    """The parts of each split in the batch, grouped by the profile that was split."""
    groups: dict[str, list[DeliveryItem]] = {}
    for item in items:
        if item.action == "split":
            groups.setdefault(item.split_from or item.profile_id, []).append(item)
    return list(groups.values())
