"""The Destination base: what a connector declares and the one method it implements.

A destination connector is a small class::

    class Acme(Destination):
        name = "acme"
        config_schema = AcmeConfig            # marshmallow; secrets marked in metadata
        capabilities = {Capability.ADD_TO_AUDIENCE, Capability.REMOVE_FROM_AUDIENCE}
        batch_size = 500                      # most items per request
        rate_limit = 10.0                     # requests per second, at most

        def deliver(self, operation, destination, items) -> SendResult: ...

The platform (``connectors.sdk.delivery``) does the rest: it turns segment entries and
exits into operations by the destination's sync modes, cuts batches of ``batch_size``,
keeps to ``rate_limit``, retries what the connector says is retryable (honouring
``retry_after``), and dead-letters what still fails. A connector only has to say which
failures are worth retrying: raise :class:`TransientDeliveryError` (with the vendor's
``Retry-After``) or :class:`PermanentDeliveryError`, never retry by itself.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

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
    "Capability",
    "CredentialStore",
    "Destination",
    "DestinationConfigSchema",
    "HttpDestination",
    "OutboundRequest",
    "classify_status",
]


class Capability(enum.StrEnum):
    """What a destination can be asked to do; each is one operation of the platform."""

    UPSERT_PROFILE = "upsert_profile"
    ADD_TO_AUDIENCE = "add_to_audience"
    REMOVE_FROM_AUDIENCE = "remove_from_audience"
    SEND_MESSAGE = "send_message"
    DELETE_SUBJECT = "delete_subject"
    # Follow identity: a merge folds the absorbed profiles' records into the survivor's;
    # a split upserts each part with its own recomputed traits, clearing what it lost.
    MERGE_PROFILES = "merge_profiles"
    # Receive the tracked events themselves (identify, track, page, …), identity-resolved:
    # only for destinations configured with ``events: true`` (there are many more events
    # than membership changes), each event decided on consent at send time like the rest.
    TRACK_EVENTS = "track_events"


class CredentialStore(Protocol):
    def get(self, name: str) -> str | None: ...

    def put(self, name: str, value: str) -> None: ...


class InMemoryCredentials:
    """The config's values, replaced in memory only: what a connector has outside the
    platform (tests, ``tessera connector test``). Activation gives it a lasting store."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._values = {k: v for k, v in config.items() if isinstance(v, str)}

    def get(self, name: str) -> str | None:
        return self._values.get(name)

    def put(self, name: str, value: str) -> None:
        self._values[name] = value


class DestinationConfigSchema(Schema):
    """Fields every destination accepts; a connector's schema extends this one."""

    mapping = fields.Dict(
        keys=fields.String(), values=fields.String(), load_default=dict,
        metadata={"description": "Trait name -> the destination's field name; traits not "
                  "named keep their own name."})
    rate_limit = fields.Float(
        load_default=None, allow_none=True, validate=validate.Range(min=0, min_inclusive=False),
        metadata={"description": "Requests per second at most (default: the connector's)."})
    batch_size = fields.Integer(
        load_default=None, allow_none=True, validate=validate.Range(min=1),
        metadata={"description": "Items per request at most (never above the connector's)."})


@dataclass(frozen=True)
class OutboundRequest:
    """One HTTP request a connector would send: what a dry run shows."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None
    content: bytes | None = None
    data: dict[str, str] | None = None

    def redacted(self, secret_headers: frozenset[str]) -> dict[str, Any]:
        headers = {k: ("***" if k.lower() in secret_headers else v)
                   for k, v in self.headers.items()}
        body = self.json if self.json is not None else (
            self.content.decode("utf-8", "replace") if self.content is not None else self.data)
        return {"method": self.method, "url": self.url, "headers": headers, "body": body}


class Destination:
    """Base of every destination connector (see the module docstring)."""

    name: ClassVar[str]
    config_schema: ClassVar[type[Schema]] = DestinationConfigSchema
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    batch_size: ClassVar[int] = 100
    rate_limit: ClassVar[float | None] = None  # requests per second
    # Which worked hashing examples of the conformance kit apply ("google", "meta", None).
    hashing: ClassVar[str | None] = None
    # Config fields whose value the vendor may replace at run time (a rotated OAuth
    # refresh token). The platform then gives the connector ``credentials``: ``get(name)``
    # answers the latest value (the config's, seeded from the environment, until one is
    # ``put``); ``put(name, value)`` keeps the new one, encrypted, in the platform's store.
    runtime_credentials: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.credentials: CredentialStore = InMemoryCredentials(config)
        self.mapping: Mapping[str, str] = config.get("mapping") or {}
        if config.get("batch_size"):
            self.batch_size = min(int(config["batch_size"]), type(self).batch_size)
        if config.get("rate_limit"):
            self.rate_limit = float(config["rate_limit"])

    def __enter__(self):
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- what a connector implements ------------------------------------------------
    def deliver(self, operation: Capability, destination: str,
                items: list[DeliveryItem]) -> SendResult:
        """Carry out ``operation`` for ``items`` (at most ``batch_size``) in one request."""
        raise NotImplementedError

    def sendable(self, operation: Capability, item: DeliveryItem) -> bool:
        """Whether the vendor can do anything with this item (e.g. it has an identifier
        the vendor matches on). Items that are not are skipped, and recorded as such."""
        return True

    def check(self) -> None:
        """Raise PermanentDeliveryError if the config cannot work (e.g. credentials refused).

        The default asks nothing of the vendor; connectors with an auth step override it.
        """

    def preview(self, operation: Capability, destination: str,
                items: list[DeliveryItem]) -> list[dict[str, Any]]:
        """The requests ``deliver`` would make, secrets hidden: the dry run."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""

    # ---- helpers for connectors -----------------------------------------------------
    def fields_of(self, item: DeliveryItem) -> dict[str, Any]:
        """The item's traits renamed by the destination's trait-to-field mapping."""
        return {self.mapping.get(trait, trait): value for trait, value in item.traits.items()}

    def send(self, destination: str, items: list[DeliveryItem]) -> SendResult:
        """One request for ``items`` as their own actions say (the pre-SDK entry point)."""
        from connectors.sdk.delivery import operation_of

        if not items:
            return SendResult(delivered=[], status=0)
        return self.deliver(operation_of(items[0].action, self.capabilities), destination,
                            items)


def classify_status(where: str, response: httpx.Response) -> None:
    """Raise the DeliveryError an HTTP answer deserves; return on 2xx.

    408, 429 and 5xx (but 501/505) are transient, with the answer's ``Retry-After``;
    every other 4xx and 3xx is permanent: the same request would fail again.
    """
    status = response.status_code
    if 200 <= status < 300:
        return
    detail = f"{where}: HTTP {status}"
    snippet = response.text[:200].strip()
    if snippet:
        detail += f": {snippet}"
    if status in (408, 429) or (500 <= status < 600 and status not in (501, 505)):
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        raise TransientDeliveryError(detail, retry_after=retry_after, status=status)
    raise PermanentDeliveryError(detail, status=status)


class HttpDestination(Destination):
    """A destination reached over HTTP: build requests, send them with httpx, classify.

    Subclasses implement :meth:`requests_for` (and :meth:`interpret` when a 2xx can still
    carry failures); ``preview`` and ``deliver`` then come for free.
    """

    # Headers whose values a dry run hides.
    secret_headers: ClassVar[frozenset[str]] = frozenset({"authorization"})
    timeout: ClassVar[float] = 10.0

    def __init__(self, *, transport: httpx.BaseTransport | None = None, **config: Any) -> None:
        super().__init__(**config)
        self.http = httpx.Client(timeout=config.get("timeout") or self.timeout,
                                 follow_redirects=False, transport=transport)

    def close(self) -> None:
        self.http.close()

    def requests_for(self, operation: Capability, destination: str,
                     items: list[DeliveryItem]) -> list[OutboundRequest]:
        raise NotImplementedError

    def interpret(self, response: httpx.Response, operation: Capability,
                  items: list[DeliveryItem]) -> SendResult:
        """A 2xx answer -> what was delivered. Default: every item."""
        return SendResult(delivered=[i.idempotency_key for i in items],
                          status=response.status_code)

    def classify(self, response: httpx.Response) -> None:
        """Raise for a failed answer. Override for vendors whose 400 can mean 'retry'."""
        classify_status(f"{self.name}", response)

    def preview(self, operation, destination, items):
        return [request.redacted(self.secret_headers)
                for request in self.requests_for(operation, destination, items)]

    def deliver(self, operation, destination, items):
        items = [item for item in items if self.sendable(operation, item)]
        result = SendResult(delivered=[], status=0)
        if not items:
            return result
        for request in self.requests_for(operation, destination, items):
            response = self.request(request)
            result = self.interpret(response, operation, items)
        return result

    def request(self, request: OutboundRequest) -> httpx.Response:
        """Send one request; transport failures become DeliveryErrors; non-2xx raise."""
        try:
            response = self.http.request(
                request.method, request.url, headers=request.headers, json=request.json,
                content=request.content, data=request.data)
        except (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL) as exc:
            raise PermanentDeliveryError(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        except httpx.TransportError as exc:  # connect/read/write errors and timeouts
            raise TransientDeliveryError(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        self.classify(response)
        return response
