"""The connector SDK: what a destination connector receives, returns and raises.

A connector turns a batch of :class:`DeliveryItem` into one request to a vendor. It
knows nothing about queues, consent or retries: the activation worker decides what to
send (consent is asked just before), :func:`connectors.retry.send_with_retries` retries
what is retryable, and whatever still fails goes to the dead-letter store.

This module imports only the standard library and marshmallow, so connectors work in a
plain process and inside an eventlet-monkey-patched nameko worker alike.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

from marshmallow import Schema, ValidationError

__all__ = [
    "Connector",
    "DeliveryError",
    "DeliveryItem",
    "PermanentDeliveryError",
    "SendResult",
    "TransientDeliveryError",
    "known_connectors",
    "load_connector",
    "parse_retry_after",
    "redact_config",
    "register_connector",
]


@dataclass(frozen=True)
class DeliveryItem:
    """One thing to tell one destination about one profile.

    ``idempotency_key`` is stable across retries and replays: the destination (or our
    record of what it acknowledged) applies each key's effect once.
    """

    idempotency_key: str
    profile_id: str
    action: str  # "entered" | "exited" | "profile" | "erased" | "merged" | "split" | "event"
    segment: str | None
    traits: dict
    identifiers: dict
    occurred_at: str
    decision_id: str  # the consent decision this send relied on
    received_at: str | None = None  # when the gateway received the event behind this change
    # A merge ("merged"): every profile it joined, the survivor first, each as
    # ``{"profile_id", "traits"}`` with its traits from before the merge, so a CRM can find
    # the records it holds for each. Empty otherwise.
    merged_profiles: tuple = ()
    # A split ("split"): the profile that was split. A CRM that never held it has nothing
    # to part (and must not create records for people it was never sent).
    split_from: str | None = None
    # A tracked event ("event"): the event as identity resolved it (messageId, type,
    # event/name, properties, traits, context, timestamp, receivedAt). None otherwise.
    event: dict | None = None


@dataclass(frozen=True)
class SendResult:
    """What a destination acknowledged for one batch.

    ``duplicate_keys`` lists the keys the destination reported as already seen (a raw
    duplicate, e.g. after a crash between its 2xx and our commit): counted and
    reported, never hidden.
    """

    delivered: list[str]  # idempotency keys
    status: int  # HTTP status of the answer; 0 when nothing had to be sent
    duplicate_keys: list[str] = field(default_factory=list)
    # Items the destination refused one by one while accepting the rest (e.g. HubSpot's
    # 207 Multi-Status): key -> why. Retryable ones are sent again, alone; the others
    # are dead-lettered.
    failed: dict[str, DeliveryError] = field(default_factory=dict)


class DeliveryError(Exception):
    """A batch was not delivered.

    ``retryable`` says whether the same request may succeed later; ``retry_after`` is
    the destination's own wish (seconds), when it gave one; ``status`` is the HTTP status
    when there was an answer at all.
    """

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        retryable: bool | None = None,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable
        self.retry_after = retry_after
        self.status = status

    def __reduce__(self):  # keep the attributes when pickled (dead letters, processes)
        return (
            _rebuild_error,
            (type(self), str(self), self.retryable, self.retry_after, self.status),
        )


def _rebuild_error(cls, message, retryable, retry_after, status):
    return cls(message, retryable=retryable, retry_after=retry_after, status=status)


class PermanentDeliveryError(DeliveryError):
    """The same request will fail again (bad config, bad credentials, invalid data)."""

    retryable = False


class TransientDeliveryError(DeliveryError):
    """Try again later (throttled, overloaded, timed out, connection lost)."""

    retryable = True


@runtime_checkable
class Connector(Protocol):
    """What every destination connector offers.

    ``config_schema`` is a marshmallow Schema class describing the connector's config:
    required keys are ``required=True``; secrets and help text live in the field's
    ``metadata={"secret": True, "description": "..."}``.
    """

    name: ClassVar[str]
    config_schema: ClassVar[type[Schema]]

    def send(self, destination: str, items: list[DeliveryItem]) -> SendResult:
        """Deliver one batch in one request; raise a DeliveryError subclass on failure."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def register_connector(kind: str, connector: str | type) -> None:
    """Make ``load_connector(kind, ...)`` build ``connector`` (a class or "module:Class")."""
    from connectors.sdk.registry import register_connector as register

    register(kind, connector)


def known_connectors() -> list[str]:
    from connectors.sdk.registry import known_connectors as known

    return known()


def _connector_class(kind: str) -> type:
    # Built-ins and plugins alike come from the `tessera.connectors` entry points.
    from connectors.sdk.registry import connector_class

    return connector_class(kind)


def _flatten(messages: Any, prefix: str = "") -> list[str]:
    if isinstance(messages, Mapping):
        out: list[str] = []
        for key, value in messages.items():
            name = "(config)" if key == "_schema" else str(key)
            out.extend(_flatten(value, f"{prefix}.{name}" if prefix else name))
        return out
    if isinstance(messages, list | tuple):
        if all(isinstance(m, str) for m in messages):
            return [f"{prefix}: {' '.join(messages)}"]
        out = []
        for message in messages:
            out.extend(_flatten(message, prefix))
        return out
    return [f"{prefix}: {messages}"]


def load_connector(kind: str, config: Mapping[str, Any]) -> Connector:
    """Build a connector of ``kind`` from its config, validated by its ``config_schema``.

    Raises ValueError naming each bad field and the rule it broke, e.g.
    ``invalid webhook connector config: url: Missing data for required field.``
    Secret values never appear in the message.
    """
    cls = _connector_class(kind)
    try:
        loaded = cls.config_schema().load(config)
    except ValidationError as exc:
        details = "; ".join(_flatten(exc.messages))
        raise ValueError(f"invalid {kind} connector config: {details}") from None
    return cls(**loaded)


def redact_config(kind: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` safe to log: values of fields marked secret become "***"."""
    fields_ = _connector_class(kind).config_schema().fields
    return {
        key: "***" if key in fields_ and fields_[key].metadata.get("secret") else value
        for key, value in config.items()
    }


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or HTTP-date).

    Returns None when absent or unparseable; never negative.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    reference = time.time() if now is None else now
    return max(when.timestamp() - reference, 0.0)
