"""Google Ads Customer Match through Google's Data Manager API.

The Google Ads API's offline user data jobs refuse new Customer Match integrations since
1 April 2026; the Data Manager API is the route Google points to::

    POST {base}/v1/audienceMembers:ingest      add members to the audience
    POST {base}/v1/audienceMembers:remove      remove them
    Authorization: Bearer <OAuth token, scope https://www.googleapis.com/auth/datamanager>
                   (fetched with the refresh token and renewed before it expires)

    {"destinations": [{"operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": "…"},
                       "loginAccount": {…}?, "productDestinationId": "<user list id>"}],
     "audienceMembers": [{"userData": {"userIdentifiers": [{"emailAddress": "<sha256>"},
                            {"phoneNumber": "<sha256 of +E.164>"},
                            {"address": {"givenName": "<sha256>", "familyName": "<sha256>",
                                         "regionCode": "US", "postalCode": "94045"}}]},
                          "consent": {"adUserData": "CONSENT_GRANTED",
                                      "adPersonalization": "CONSENT_GRANTED"}}],
     "encoding": "HEX", "termsOfService": {"customerMatchTermsOfServiceStatus": "ACCEPTED"}}

Identifiers are trimmed, lowercased (names without punctuation, phones as E.164) and
SHA-256 hashed, hex. A member reaches this connector only when Tessera's consent decision
allowed every purpose of the destination, so both consent fields are sent as granted;
removals carry none (Google needs none to remove). At most 10,000 members per request.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import httpx
from marshmallow import ValidationError, fields, validate, validates_schema

from connectors.base import DeliveryItem, TransientDeliveryError
from connectors.sdk.destination import (
    Capability,
    DestinationConfigSchema,
    HttpDestination,
    OutboundRequest,
    classify_status,
)
from connectors.sdk.hashing import (
    e164_phone,
    normalise_email,
    normalise_name,
    sha256_hex,
)

__all__ = ["GoogleCustomerMatch", "member_of"]

GRANTED = {"adUserData": "CONSENT_GRANTED", "adPersonalization": "CONSENT_GRANTED"}


class GoogleCustomerMatchConfig(DestinationConfigSchema):
    base_url = fields.Url(
        load_default="https://datamanager.googleapis.com", require_tld=False,
        metadata={"description": "Data Manager API endpoint (a fake's, in tests)."})
    access_token = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(min=1),
        metadata={"secret": True, "description": "OAuth 2.0 access token with the "
                  "https://www.googleapis.com/auth/datamanager scope (short-lived: prefer "
                  "the refresh token below)."})
    refresh_token = fields.String(
        load_default=None, allow_none=True,
        metadata={"secret": True, "description": "OAuth 2.0 refresh token; with client_id "
                  "and client_secret, access tokens are fetched and renewed as they expire."})
    client_id = fields.String(load_default=None, allow_none=True,
                              metadata={"description": "OAuth client id."})
    client_secret = fields.String(load_default=None, allow_none=True,
                                  metadata={"secret": True, "description": "OAuth client "
                                            "secret."})
    token_url = fields.Url(load_default="https://oauth2.googleapis.com/token", require_tld=False,
                           metadata={"description": "OAuth token endpoint."})

    @validates_schema
    def _credentials(self, data, **kwargs):
        refresh = [data.get(k) for k in ("refresh_token", "client_id", "client_secret")]
        if not data.get("access_token") and not all(refresh):
            raise ValidationError("give access_token, or refresh_token with client_id and "
                                  "client_secret", field_name="access_token")
    operating_account_id = fields.String(
        required=True, validate=validate.Regexp(r"^[0-9-]+$", error="digits (and hyphens)"),
        metadata={"description": "Google Ads customer id of the account owning the list."})
    login_account_id = fields.String(
        load_default=None, allow_none=True,
        validate=validate.Regexp(r"^[0-9-]+$", error="digits (and hyphens)"),
        metadata={"description": "Manager account acting for it, if any."})
    audience_id = fields.String(
        required=True, validate=validate.Regexp(r"^[0-9]+$", error="digits"),
        metadata={"description": "The Customer Match user list id (productDestinationId)."})
    default_region = fields.String(
        load_default="US", validate=validate.Regexp(r"^[A-Z]{2}$", error="ISO 3166 alpha-2"),
        metadata={"description": "Region assumed for phones written without +country."})


def member_of(traits: dict[str, Any], default_region: str = "US") -> dict[str, Any]:
    """One AudienceMember's userData: each identifier its own entry (a oneof)."""
    identifiers: list[dict[str, Any]] = []
    if traits.get("email"):
        identifiers.append({"emailAddress": sha256_hex(normalise_email(str(traits["email"])))})
    phone = e164_phone(str(traits["phone"]), default_region) if traits.get("phone") else None
    if phone:
        identifiers.append({"phoneNumber": sha256_hex(phone)})
    address = {"first_name", "last_name", "country", "postal_code"}
    if address <= {k for k, v in traits.items() if v}:  # Google's sample: all four or none
        identifiers.append({"address": {
            "givenName": sha256_hex(normalise_name(str(traits["first_name"]))),
            "familyName": sha256_hex(normalise_name(str(traits["last_name"]))),
            "regionCode": str(traits["country"]).strip().upper(),
            "postalCode": str(traits["postal_code"]).strip()}})
    return {"userData": {"userIdentifiers": identifiers}}


class GoogleCustomerMatch(HttpDestination):
    name: ClassVar[str] = "google_customer_match"
    config_schema = GoogleCustomerMatchConfig
    capabilities = frozenset({Capability.ADD_TO_AUDIENCE, Capability.REMOVE_FROM_AUDIENCE})
    batch_size = 10_000
    rate_limit = 10.0
    hashing = "google"

    def sendable(self, operation, item: DeliveryItem) -> bool:
        member = member_of(self.fields_of(item), self.config["default_region"])
        return bool(member["userData"]["userIdentifiers"])

    def _destination(self) -> dict[str, Any]:
        destination: dict[str, Any] = {
            "operatingAccount": {"accountType": "GOOGLE_ADS",
                                 "accountId": self.config["operating_account_id"].replace("-", "")},
            "productDestinationId": self.config["audience_id"]}
        if self.config.get("login_account_id"):
            destination["loginAccount"] = {
                "accountType": "GOOGLE_ADS",
                "accountId": self.config["login_account_id"].replace("-", "")}
        return destination

    def __init__(self, *, clock=time.monotonic, **config: Any) -> None:
        super().__init__(**config)
        self._clock = clock
        self._access_token = config.get("access_token")
        self._expires_at = float("inf") if self._access_token else 0.0

    def _bearer(self) -> str:
        """The access token, renewed from the refresh token a minute before it expires."""
        if self._clock() < self._expires_at - 60:
            return self._access_token
        response = self.request(OutboundRequest(
            "POST", self.config["token_url"], {}, data={
                "grant_type": "refresh_token", "refresh_token": self.config["refresh_token"],
                "client_id": self.config["client_id"],
                "client_secret": self.config["client_secret"]}))
        token = response.json()
        self._access_token = token["access_token"]
        self._expires_at = self._clock() + float(token.get("expires_in", 3600))
        return self._access_token

    def _request(self, method: str, body: dict[str, Any], *, preview: bool = False
                 ) -> OutboundRequest:
        bearer = "<access token>" if preview and not self._access_token else self._bearer()
        return OutboundRequest(
            "POST", f"{self.config['base_url']}/v1/audienceMembers:{method}",
            {"Authorization": f"Bearer {bearer}"}, json=body)

    def _body(self, operation: Capability, items: list[DeliveryItem]) -> dict[str, Any]:
        members = []
        for item in items:
            member = member_of(self.fields_of(item), self.config["default_region"])
            if not member["userData"]["userIdentifiers"]:
                continue  # nothing Google could match on
            if operation == Capability.ADD_TO_AUDIENCE:
                member["consent"] = dict(GRANTED)
            members.append(member)
        body: dict[str, Any] = {"destinations": [self._destination()],
                                "audienceMembers": members, "encoding": "HEX"}
        if operation == Capability.ADD_TO_AUDIENCE:
            body["termsOfService"] = {"customerMatchTermsOfServiceStatus": "ACCEPTED"}
        return body

    def requests_for(self, operation, destination, items, *, preview: bool = False):
        method = "ingest" if operation == Capability.ADD_TO_AUDIENCE else "remove"
        body = self._body(operation, items)
        return [self._request(method, body, preview=preview)] if body["audienceMembers"] else []

    def preview(self, operation, destination, items):
        return [request.redacted(self.secret_headers)
                for request in self.requests_for(operation, destination, items, preview=True)]

    def check(self) -> None:
        """A validateOnly ingest: checks the token and the destination, changes nothing."""
        probe = DeliveryItem("check", "check", "entered", None,
                             {"email": "check@example.com"}, {}, "", "")
        body = dict(self._body(Capability.ADD_TO_AUDIENCE, [probe]), validateOnly=True)
        self.request(self._request("ingest", body))

    def classify(self, response: httpx.Response) -> None:
        # Google says to retry a CONCURRENT_MODIFICATION although it comes as a 400.
        if response.status_code == 400 and "CONCURRENT_MODIFICATION" in response.text:
            raise TransientDeliveryError(f"{self.name}: HTTP 400 CONCURRENT_MODIFICATION",
                                         status=400)
        classify_status(self.name, response)

    @classmethod
    def conformance_harness(cls):
        from connectors.fakes.google import FakeDataManager
        from connectors.sdk.conformance import Harness

        return Harness(
            fake=lambda: FakeDataManager(token="ya29.test-token", refresh_token="1//refresh",
                                         client=("client-id", "client-secret")),
            config=lambda fake: {"base_url": fake.base_url, "token_url": fake.base_url +
                                 "/token", "refresh_token": "1//refresh",
                                 "client_id": "client-id", "client_secret": "client-secret",
                                 "operating_account_id": "123-456-7890",
                                 "audience_id": "4567"},
            bad_config=lambda fake: {"refresh_token": "1//revoked"})
