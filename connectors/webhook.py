"""Webhook connector: one signed JSON POST per batch.

Wire format::

    POST <url>                      ("{destination}" in the url is replaced by the name)
    Content-Type: application/json
    X-Tessera-Timestamp: <unix seconds>
    X-Tessera-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>
    Idempotency-Key: <hex sha256 of the batch's item keys, sorted, joined by "\\n">

    {"destination": "...", "sent_at": "<ISO-8601 UTC>", "items": [{...DeliveryItem}]}

The signature covers the raw body, which carries ``sent_at``; receivers should verify it
with :func:`verify_signature` before parsing. 2xx delivers the batch; 408, 429 and 5xx
(but 501 and 505) and network errors are transient; any other answer is permanent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
from marshmallow import Schema, fields, validate

from connectors.base import (
    DeliveryItem,
    PermanentDeliveryError,
    SendResult,
    TransientDeliveryError,
    parse_retry_after,
)

__all__ = [
    "IDEMPOTENCY_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookConfigSchema",
    "WebhookConnector",
    "batch_idempotency_key",
    "sign",
    "verify_signature",
]

SIGNATURE_HEADER = "X-Tessera-Signature"
TIMESTAMP_HEADER = "X-Tessera-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
_SIGNATURE_PREFIX = "sha256="

# 501 Not Implemented and 505 HTTP Version Not Supported will not change on a retry.
_NOT_RETRYABLE_5XX = frozenset({501, 505})


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


class WebhookConfigSchema(Schema):
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


class WebhookConnector:
    """POSTs each batch as signed JSON. One keep-alive httpx client per connector."""

    name: ClassVar[str] = "webhook"
    config_schema: ClassVar[type[Schema]] = WebhookConfigSchema

    def __init__(
        self,
        url: str,
        secret: str | bytes,
        timeout: float = 5.0,
        headers: Mapping[str, str] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not secret:
            raise ValueError("webhook connector needs a non-empty secret")
        self.url = url
        self._secret = _key_bytes(secret)
        self._clock = clock
        self._client = httpx.Client(
            timeout=timeout,
            headers=dict(headers or {}),
            follow_redirects=False,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"WebhookConnector(url={self.url!r})"

    def __enter__(self) -> WebhookConnector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def url_for(self, destination: str) -> str:
        if "{destination}" in self.url:
            return self.url.replace("{destination}", quote(destination, safe=""))
        return self.url

    def build_request(self, destination: str, items: list[DeliveryItem]) -> tuple[bytes, dict]:
        """The body and the headers of one batch (exposed for tests and for replay)."""
        now = self._clock()
        payload = {
            "destination": destination,
            "sent_at": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
            "items": [asdict(item) for item in items],
        }
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str)
        raw = body.encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(int(now)),
            SIGNATURE_HEADER: sign(self._secret, raw),
            IDEMPOTENCY_HEADER: batch_idempotency_key([i.idempotency_key for i in items]),
        }
        return raw, headers

    def send(self, destination: str, items: list[DeliveryItem]) -> SendResult:
        if not items:
            return SendResult(delivered=[], status=0)
        raw, headers = self.build_request(destination, items)
        url = self.url_for(destination)
        where = f"webhook {destination!r}"
        try:
            response = self._client.post(url, content=raw, headers=headers)
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL) as exc:
            raise PermanentDeliveryError(f"{where}: {type(exc).__name__}: {exc}") from exc
        except httpx.TransportError as exc:  # connect/read/write errors and timeouts
            raise TransientDeliveryError(f"{where}: {type(exc).__name__}: {exc}") from exc

        status = response.status_code
        keys = [item.idempotency_key for item in items]
        if 200 <= status < 300:
            return SendResult(
                delivered=keys, status=status, duplicate_keys=_duplicates(response, keys)
            )

        detail = f"{where}: HTTP {status}"
        snippet = response.text[:200].strip()
        if snippet:
            detail += f": {snippet}"
        if status in (408, 429) or (500 <= status < 600 and status not in _NOT_RETRYABLE_5XX):
            retry_after = parse_retry_after(response.headers.get("Retry-After"), now=time.time())
            raise TransientDeliveryError(detail, retry_after=retry_after, status=status)
        raise PermanentDeliveryError(detail, status=status)


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
