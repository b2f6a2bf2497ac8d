"""Webhook connector: one signed JSON POST per batch.

Wire format::

    POST <url>                      ("{destination}" in the url is replaced by the name)
    Content-Type: application/json
    X-Tessera-Timestamp: <unix seconds>
    X-Tessera-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>
    Idempotency-Key: <hex sha256 of the batch's item keys, sorted, joined by "\\n">
    webhook-id: msg_<the Idempotency-Key>            (Standard Webhooks v1.0.0)
    webhook-timestamp: <unix seconds>
    webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>

    {"destination": "...", "operation": "add_to_audience", "sent_at": "<ISO-8601 UTC>",
     "items": [{...DeliveryItem}]}

Both signatures cover the raw body, which carries ``sent_at``; receivers verify one of them
(:func:`verify_signature`, or :func:`verify_standard_signature` as any Standard Webhooks
library does) before parsing. For the Standard Webhooks signature a ``whsec_<base64>``
secret is keyed with its decoded bytes, as the spec says; any other secret with its UTF-8
bytes. 2xx delivers the batch; 408, 429 and 5xx
(but 501 and 505) and network errors are transient; any other answer is permanent.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
from marshmallow import Schema, fields, validate

from connectors.base import DeliveryItem, SendResult
from connectors.sdk.destination import (
    Capability,
    DestinationConfigSchema,
    HttpDestination,
    OutboundRequest,
)

__all__ = [
    "IDEMPOTENCY_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookConfigSchema",
    "WebhookConnector",
    "batch_idempotency_key",
    "sign",
    "standard_signature",
    "verify_signature",
    "verify_standard_signature",
]

SIGNATURE_HEADER = "X-Tessera-Signature"
TIMESTAMP_HEADER = "X-Tessera-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
_SIGNATURE_PREFIX = "sha256="

STANDARD_TOLERANCE_SECONDS = 5 * 60
DELIVERY_ITEM_FIELDS = tuple(f.name for f in dataclass_fields(DeliveryItem))


def _key_bytes(secret: str | bytes) -> bytes:
    return secret if isinstance(secret, bytes) else secret.encode("utf-8")


def sign(secret: str | bytes, body: bytes) -> str:
    """The ``X-Tessera-Signature`` value for ``body``: ``sha256=<hex hmac>``."""
    digest = hmac.new(_key_bytes(secret), body, hashlib.sha256).hexdigest()
    return _SIGNATURE_PREFIX + digest


def verify_signature(secret: str | bytes, body: bytes, header: str | None) -> bool:
    """True if ``header`` is the HMAC-SHA256 signature of ``body`` (constant-time)."""
    if not header or not header.startswith(_SIGNATURE_PREFIX):
        return False
    given = header[len(_SIGNATURE_PREFIX) :].strip().lower().encode("ascii", "replace")
    expected = hmac.new(_key_bytes(secret), body, hashlib.sha256).hexdigest().encode("ascii")
    return hmac.compare_digest(expected, given)


def batch_idempotency_key(keys: list[str]) -> str:
    """The ``Idempotency-Key`` of a batch: sha256 over its item keys, order-independent."""
    return hashlib.sha256("\n".join(sorted(keys)).encode("utf-8")).hexdigest()


def standard_key(secret: str | bytes) -> bytes:
    """The HMAC key of a Standard Webhooks secret: ``whsec_`` secrets are base64."""
    if isinstance(secret, str) and secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_"):])
    return _key_bytes(secret)


def standard_signature(secret: str | bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC of "{id}.{ts}.{body}">``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(standard_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def verify_standard_signature(secret: str | bytes, headers: Mapping[str, str], body: bytes,
                              *, now: float | None = None) -> bool:
    """True if one ``v1`` entry of ``webhook-signature`` matches and the timestamp is
    within five minutes (constant-time compare; other versions are skipped)."""
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    given = headers.get("webhook-signature")
    if not (msg_id and stamp and given):
        return False
    try:
        timestamp = int(stamp)
        expected = standard_signature(secret, msg_id, timestamp, body).encode()
    except (ValueError, binascii.Error):
        return False
    if abs((time.time() if now is None else now) - timestamp) > STANDARD_TOLERANCE_SECONDS:
        return False
    return any(hmac.compare_digest(expected, entry.encode())
               for entry in given.split() if entry.startswith("v1,"))


class WebhookConfigSchema(DestinationConfigSchema):
    url = fields.Url(
        required=True,
        require_tld=False,
        schemes={"http", "https"},
        metadata={
            "description": "Endpoint that receives the POSTs; '{destination}' in it is "
            "replaced by the destination name.",
        },
    )
    secret = fields.String(
        required=True,
        validate=validate.Length(min=1),
        metadata={"secret": True, "description": "Shared key of the HMAC-SHA256 signature."},
    )
    timeout = fields.Float(
        load_default=5.0,
        validate=validate.Range(min=0, min_inclusive=False),
        metadata={"description": "Seconds to wait for connecting and for each read."},
    )
    headers = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        load_default=None,
        allow_none=True,
        metadata={"description": "Extra request headers (e.g. an API gateway key)."},
    )


class WebhookConnector(HttpDestination):
    """POSTs each batch as signed JSON. One keep-alive httpx client per connector."""

    name: ClassVar[str] = "webhook"
    config_schema: ClassVar[type[Schema]] = WebhookConfigSchema
    # Merges and splits are not sent: receivers built before them would take a merge for
    # a change of one profile (a webhook that wants them can subclass and add the capability).
    capabilities = frozenset(Capability) - {Capability.MERGE_PROFILES}
    batch_size = 100
    secret_headers = frozenset({SIGNATURE_HEADER.lower(), "webhook-signature"})

    def __init__(
        self,
        url: str,
        secret: str | bytes,
        timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
        **common: Any,
    ) -> None:
        if not secret:
            raise ValueError("webhook connector needs a non-empty secret")
        super().__init__(transport=transport, timeout=timeout, **common)
        self.url = url
        self._secret = secret
        self._extra_headers = dict(headers or {})
        self._clock = clock

    def __repr__(self) -> str:
        return f"WebhookConnector(url={self.url!r})"

    def url_for(self, destination: str) -> str:
        if "{destination}" in self.url:
            return self.url.replace("{destination}", quote(destination, safe=""))
        return self.url

    def build_request(self, destination: str, items: list[DeliveryItem],
                      operation: Capability | None = None) -> tuple[bytes, dict]:
        """The body and the headers of one batch (exposed for tests and for replay)."""
        now = self._clock()
        payload: dict[str, Any] = {"destination": destination}
        if operation is not None:
            payload["operation"] = str(operation)
        payload["sent_at"] = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
        payload["items"] = [self._item_json(item) for item in items]
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str)
        raw = body.encode("utf-8")
        batch_key = batch_idempotency_key([i.idempotency_key for i in items])
        msg_id = "msg_" + batch_key
        headers = {
            **self._extra_headers,
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(int(now)),
            SIGNATURE_HEADER: sign(self._secret, raw),
            IDEMPOTENCY_HEADER: batch_key,
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now)),
            "webhook-signature": standard_signature(self._secret, msg_id, int(now), raw),
        }
        return raw, headers

    def _item_json(self, item: DeliveryItem) -> dict[str, Any]:
        # Field by field rather than dataclasses.asdict: its deep copy of every value was
        # an eighth of a delivery's CPU, and json.dumps copies nothing it is given.
        body = {name: getattr(item, name) for name in DELIVERY_ITEM_FIELDS}
        body["traits"] = self.fields_of(item)
        if item.event is None:  # only a followed event carries one: keep the rest as it was
            del body["event"]
        return body

    def requests_for(self, operation, destination, items):
        raw, headers = self.build_request(destination, items, operation)
        return [OutboundRequest("POST", self.url_for(destination), headers, content=raw)]

    def interpret(self, response, operation, items):
        keys = [item.idempotency_key for item in items]
        return SendResult(delivered=keys, status=response.status_code,
                          duplicate_keys=_duplicates(response, keys))

    def check(self) -> None:
        """POST a signed empty batch: a receiver that refuses our signature fails it."""
        raw, headers = self.build_request("tessera-check", [])
        self.request(OutboundRequest("POST", self.url_for("tessera-check"), headers,
                                     content=raw))

    @classmethod
    def conformance_harness(cls):
        from connectors.fakes.webhook import FakeStandardWebhookReceiver
        from connectors.sdk.conformance import Harness

        secret = "whsec_Y2RwLXRlc3Qtc2VjcmV0LTAxMjM0NTY3ODlhYg=="
        return Harness(
            fake=lambda: FakeStandardWebhookReceiver(secret),
            config=lambda fake: {"url": fake.base_url + "/hooks/{destination}",
                                 "secret": secret},
            bad_config=lambda fake: {"secret": "whsec_" + "d3JvbmctMTIzNDU2Nzg5MDEyMzQ1Njc4"})

    def send(self, destination: str, items: list[DeliveryItem]) -> SendResult:
        """One POST of ``items`` with no operation named (the pre-SDK wire format)."""
        if not items:
            return SendResult(delivered=[], status=0)
        raw, headers = self.build_request(destination, items)
        response = self.request(OutboundRequest("POST", self.url_for(destination), headers,
                                                content=raw))
        return self.interpret(response, None, items)


def _duplicates(response: httpx.Response, keys: list[str]) -> list[str]:
    """Keys the receiver says it had already seen, if it says so (``duplicate_keys``)."""
    if "json" not in response.headers.get("Content-Type", ""):
        return []
    try:
        reported: Any = response.json().get("duplicate_keys")
    except (ValueError, AttributeError):
        return []
    if not isinstance(reported, list):
        return []
    ours = set(keys)
    return [key for key in reported if isinstance(key, str) and key in ours]
