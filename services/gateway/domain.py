"""Judging what clients post to the gateway: pure functions, no I/O (stdlib + marshmallow).

A request is parsed (``parse_body``), authenticated (``write_key_from``), then judged
event by event (``judge_batch``): valid events come back normalised, each invalid one
becomes a ``Rejection`` naming its field and rule, with a redacted copy for the rejection
log. One bad event never sinks the others (DESIGN §1).

Time on an accepted event — one rule, Segment's clock-skew formula:

    originalTimestamp = the client's ``timestamp``, else its ``originalTimestamp``
    timestamp         = receivedAt - (sentAt - originalTimestamp)   if sentAt and originalTimestamp
                      = originalTimestamp                           if there is no sentAt
                      = receivedAt                                  if the client sent no time
    sentAt            = the event's own, else the batch's
    receivedAt        = when the gateway got the request

A client clock that is off shifts sentAt and originalTimestamp alike, so their difference
(how long the event waited on the client) is trustworthy, and receivedAt is the only clock
we trust. All four are written as UTC ISO-8601 with milliseconds and ``Z``
("2026-11-29T10:00:00.123Z"), so they sort as text; sub-millisecond digits are dropped.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from marshmallow import ValidationError

from services.gateway.schemas import (
    EVENT_TYPES,
    MAX_MESSAGE_ID_CHARS,
    RULE_OF_MESSAGE,
    schema_for,
)

MAX_EVENT_BYTES = 32 * 1024
MAX_REQUEST_BYTES = 4 * 1024 * 1024
# Objects and lists within objects and lists: real events nest a few levels. The bound
# keeps every hop able to encode what was accepted (orjson stops at 254 levels: an event
# deeper than that, once accepted, could never be published and would block its outbox).
MAX_EVENT_DEPTH = 64
MASK = "***"

# What a rejection log may show as is: none of them names a person.
_SHOWN_AS_IS = ("type", "event", "messageId")
_SHOWN_CHARS = 200
_REDACTED_DEPTH = 4
# Known optional fields where null means "not sent": dropped from accepted events.
_NULL_MEANS_ABSENT = ("userId", "anonymousId", "context", "integrations", "traits", "properties")
_GZIP_MAGIC = b"\x1f\x8b"
# Compact and UTF-8, as the client serialises: the size limit is on what was sent.
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Rejection:
    """One event refused, with the reason and a copy that holds no personal data."""

    index: int
    message_id: str | None
    field: str
    rule: str
    message: str
    redacted: dict


class BadRequest(Exception):
    """The whole request is refused (answered 4xx with ``{code, message}``)."""

    status = 400

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class PayloadTooLarge(BadRequest):
    status = 413

    def __init__(self, message: str) -> None:
        super().__init__("payload_too_large", message)


class Unauthorized(BadRequest):
    status = 401

    def __init__(self, message: str) -> None:
        super().__init__("unauthorized", message)


# ---------------------------------------------------------------- parsing the request


def parse_body(
    raw: bytes, content_encoding: str | None, *, max_request_bytes: int = MAX_REQUEST_BYTES
) -> dict:
    """The request body as a JSON object, whatever its Content-Type (analytics.js posts
    JSON as text/plain). Gzip is undone when declared or recognised by its magic bytes
    (rudder-sdk-python gzips by default); the size limit applies to the decompressed body."""
    if _is_gzip(raw, content_encoding):
        raw = _gunzip(raw, max_request_bytes)
    elif len(raw) > max_request_bytes:
        raise PayloadTooLarge(f"The body is larger than {max_request_bytes} bytes.")
    body = _json_object(raw)
    if "batch" in body:
        _check_batch_list(body)
    return body


def _is_gzip(raw: bytes, content_encoding: str | None) -> bool:
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return True
    if encoding not in ("", "identity"):
        raise BadRequest("unsupported_encoding", f"Content-Encoding {encoding!r} is not supported.")
    return raw.startswith(_GZIP_MAGIC)


def _gunzip(raw: bytes, limit: int) -> bytes:
    """Decompress at most limit + 1 bytes, so a gzip bomb costs us nothing."""
    out = bytearray()
    rest = raw
    while rest:  # a gzip stream may hold several members
        member = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            out += member.decompress(rest, limit + 1 - len(out))
        except zlib.error as error:
            raise BadRequest("invalid_encoding", f"The body is not valid gzip: {error}") from None
        if len(out) > limit:
            raise PayloadTooLarge(f"The decompressed body is larger than {limit} bytes.")
        if not member.eof:
            raise BadRequest("invalid_encoding", "The gzip body is truncated.")
        rest = member.unused_data.lstrip(b"\x00")  # gzip tolerates zero padding
    return bytes(out)


def _json_object(raw: bytes) -> dict:
    try:
        body = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise BadRequest("invalid_json", f"The body is not valid JSON: {error}") from None
    if not isinstance(body, dict):
        raise BadRequest("invalid_body", "The body must be a JSON object.")
    return body


def _refuse_constant(name: str) -> None:
    # Python's json accepts NaN and Infinity; JSON does not, nor will our consumers.
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # "1e999" overflows to inf, which we could not re-emit
        raise ValueError(f"{text} is out of range")
    return number


def _check_batch_list(body: dict) -> list:
    items = body.get("batch")
    if not isinstance(items, list) or not items:
        raise BadRequest("invalid_batch", "batch must be a non-empty list of events.")
    return items


# ---------------------------------------------------------------- authentication


def write_key_from(authorization_header: str | None, body: dict) -> str | None:
    """The source's write key: the Basic-auth user, or the body's ``writeKey``.

    Segment's clients send both; rudder-sdk-python only the header, analytics.js only the
    body. Both present and different means someone is mixing sources: refuse. A Bearer
    header (Segment's OAuth) carries no write key, so the body's is used."""
    from_header = _basic_auth_user(authorization_header)
    from_body = _body_write_key(body)
    if from_header and from_body and from_header != from_body:
        raise Unauthorized("The Authorization header and writeKey name different sources.")
    return from_header or from_body


def _basic_auth_user(header: str | None) -> str | None:
    if header is None or not header.strip():
        return None
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() == "bearer":
        return None
    if scheme.lower() != "basic":
        raise Unauthorized("The Authorization header must use the Basic scheme.")
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("The Basic credentials are not valid base64.") from None
    user, colon, _password = decoded.partition(":")
    if not colon or not user:
        raise Unauthorized("The Basic credentials must be 'writeKey:'.")
    return user


def _body_write_key(body: dict) -> str | None:
    key = body.get("writeKey")
    if key is None or key == "":
        return None
    if not isinstance(key, str):
        raise Unauthorized("writeKey must be a string.")
    return key


# ---------------------------------------------------------------- judging events


@dataclass(frozen=True)
class _BatchDefaults:
    """What a batch envelope lends to each of its events (the event's own keys win)."""

    context: dict | None = None
    integrations: dict | None = None
    sent_at: Any = None


_NO_DEFAULTS = _BatchDefaults()


def judge_batch(
    body: dict,
    *,
    received_at: datetime,
    path_type: str | None = None,
    max_event_bytes: int = MAX_EVENT_BYTES,
) -> tuple[list[dict], list[Rejection]]:
    """Judge each event of a request alone: (accepted events normalised, rejections).

    ``path_type`` None means ``body`` is a batch envelope; otherwise it is one event posted
    to ``/v1/<path_type>``. Raises BadRequest only when the envelope itself is unusable."""
    if path_type is None:
        items = _check_batch_list(body)
        defaults = _batch_defaults(body)
    elif path_type in EVENT_TYPES:
        items, defaults = [body], _NO_DEFAULTS
    else:
        raise ValueError(f"unknown event type in path: {path_type!r}")
    received = _utc(received_at)
    accepted: list[dict] = []
    rejected: list[Rejection] = []
    for index, item in enumerate(items):
        verdict = _judge_event(item, index, defaults, received, path_type, max_event_bytes)
        if isinstance(verdict, Rejection):
            rejected.append(verdict)
        else:
            accepted.append(verdict)
    return accepted, rejected


def _field_nested_too_deep(event: dict) -> str | None:
    """The first top-level field whose value nests deeper than MAX_EVENT_DEPTH (iterative:
    a deep value must not exhaust our own stack either)."""
    for name, value in event.items():
        pending = [(value, 1)]
        while pending:
            node, depth = pending.pop()
            if depth > MAX_EVENT_DEPTH:
                return name
            children = (node.values() if isinstance(node, dict)
                        else node if isinstance(node, list) else ())
            pending.extend((child, depth + 1) for child in children
                           if isinstance(child, dict | list))
    return None


def _batch_defaults(body: dict) -> _BatchDefaults:
    context, integrations = body.get("context"), body.get("integrations")
    for name, value in (("context", context), ("integrations", integrations)):
        if value is not None and not isinstance(value, dict):
            raise BadRequest("invalid_batch", f"The batch's {name} must be a JSON object.")
    return _BatchDefaults(context, integrations, body.get("sentAt"))


def _judge_event(
    item: Any,
    index: int,
    defaults: _BatchDefaults,
    received: datetime,
    path_type: str | None,
    max_event_bytes: int,
) -> dict | Rejection:
    if not isinstance(item, dict):
        return Rejection(index, None, "", "not_object", "An event must be a JSON object.", {})
    size = _json_size(item)
    if size > max_event_bytes:
        message = f"The event is {size} bytes; the limit is {max_event_bytes}."
        return _reject(item, index, "", "too_large", message, _shown_as_is(item))
    if path_type is not None and item.get("type") not in (None, path_type):
        # The client's value is not echoed: messages reach the rejection log unredacted.
        message = f"type contradicts the path /v1/{path_type}."
        return _reject(item, index, "type", "type_mismatch", message, redact(item))
    event = _with_defaults(item, defaults, path_type)
    deep = _field_nested_too_deep(event)
    if deep is not None:
        message = f"{deep}: nested deeper than {MAX_EVENT_DEPTH} levels."
        return _reject(item, index, deep, "too_deep", message, _shown_as_is(item))
    try:
        loaded = schema_for(event.get("type")).load(event)
    except ValidationError as error:
        return _rejection_from(error, item, index)
    return _normalised(loaded, received, item, index)


def _json_size(item: dict) -> int:
    text = _COMPACT_JSON.encode(item)
    return len(text) if text.isascii() else len(text.encode())


def _with_defaults(item: dict, defaults: _BatchDefaults, path_type: str | None) -> dict:
    event = dict(item)  # never write into the caller's data
    if path_type is not None:
        event["type"] = path_type
    if defaults.context is not None:
        event["context"] = _merged(defaults.context, item.get("context"))
    if defaults.integrations is not None:
        event["integrations"] = _merged(defaults.integrations, item.get("integrations"))
    if defaults.sent_at is not None and item.get("sentAt") is None:
        event["sentAt"] = defaults.sent_at
    return event


def _merged(shared: dict, own: Any) -> Any:
    if own is None:
        return shared  # the schema copies it: events never share one dict
    if isinstance(own, dict):
        return {**shared, **own}
    return own  # not an object: left for the schema to report


def _normalised(event: dict, received: datetime, item: dict, index: int) -> dict | Rejection:
    """The loaded event with ids settled and the four timestamps written (module docstring)."""
    for key in _NULL_MEANS_ABSENT:
        if key in event and event[key] is None:
            del event[key]
    if event.get("messageId") is None:
        event["messageId"] = str(uuid4())
    given, original = event.pop("timestamp", None), event.pop("originalTimestamp", None)
    client_time = given or original  # a timestamp passed in replaces the original one
    sent_at = event.pop("sentAt", None)
    try:
        event["timestamp"] = _iso(_corrected(client_time, sent_at, received))
    except OverflowError:
        message = "sentAt and timestamp are too far apart to correct the client's clock."
        return _reject(item, index, "sentAt", "out_of_range", message, redact(item))
    if client_time is not None:
        event["originalTimestamp"] = _iso(client_time)
    if sent_at is not None:
        event["sentAt"] = _iso(sent_at)
    event["receivedAt"] = _iso(received)
    return event


def _corrected(
    client_time: datetime | None, sent_at: datetime | None, received: datetime
) -> datetime:
    if client_time is None:
        return received
    if sent_at is None:
        return client_time  # nothing to measure the client's clock against
    return received - (sent_at - client_time)


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    # moment is UTC, so isoformat ends in "+00:00": swap it for the shorter "Z".
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"


def partition_key(event: dict) -> str:
    """The strongest identifier of an accepted event: userId, else anonymousId.

    An alias always has a userId (required), so it lands with the user it names."""
    key = event.get("userId") or event.get("anonymousId")
    if not key:
        raise ValueError("event has neither userId nor anonymousId")
    return key


# ---------------------------------------------------------------- rejections


def _rejection_from(error: ValidationError, item: dict, index: int) -> Rejection:
    # Report the first failure in declaration order (type, ids, times, ...): one reason
    # is enough to fix, and the order keeps the answer stable.
    field, texts = next(iter(error.messages_dict.items()))
    text = texts[0] if isinstance(texts, list) and texts else str(texts)
    field = "" if field == "_schema" else field
    rule = RULE_OF_MESSAGE.get(text, "invalid")
    message = f"{field}: {text}" if field else text
    return _reject(item, index, field, rule, message, redact(item))


def _reject(
    item: dict, index: int, field: str, rule: str, message: str, redacted: dict
) -> Rejection:
    return Rejection(index, _message_id_of(item), field, rule, message, redacted)


def _message_id_of(item: dict) -> str | None:
    value = item.get("messageId")
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and 0 < len(value.strip()) <= MAX_MESSAGE_ID_CHARS:
        return value.strip()
    return None


def redact(event: dict, *, depth: int = _REDACTED_DEPTH) -> dict:
    """A copy of the event's shape with every value masked but type, event and messageId:
    the rejection log then shows which keys were sent, and nothing about the person."""
    return {
        key: _shown(value) if key in _SHOWN_AS_IS else _masked(value, depth - 1)
        for key, value in event.items()
    }


def _masked(value: Any, depth: int) -> Any:
    # Depth-limited: an event nested a thousand levels deep must not blow the stack here.
    if isinstance(value, dict) and depth > 0:
        return {key: _masked(inner, depth - 1) for key, inner in value.items()}
    return MASK


def _shown(value: Any) -> Any:
    if isinstance(value, str):
        return value[:_SHOWN_CHARS]
    return MASK


def _shown_as_is(item: dict) -> dict:
    # An oversized event keeps only what identifies it: its shape could be huge too.
    return {key: _shown(item[key]) for key in _SHOWN_AS_IS if key in item}
