"""marshmallow 4 schemas of the events that cross the gateway (Segment Tracking API v1).

What they accept and why:

- Unknown keys are kept (``unknown=INCLUDE``): clients add ``_metadata``, ``channel``,
  per-event ``writeKey`` and custom context, and Segment never 400s on them.
- ``null`` means absent for optional fields and for ids (segment-analytics-python sends
  ``"userId": null``); on a required field it reads as "missing".
- Ids (``userId``, ``anonymousId``, ``groupId``, ``previousId``, ``messageId``) may be numbers:
  they are stringified and stripped, and an empty result counts as absent.
- Timestamps are ISO-8601, with ``Z`` or an offset, any fraction of a second; they load
  as aware UTC datetimes. A naive one is taken as UTC (the spec says all timestamps are
  UTC), and the non-zero-padded form of the Segment docs ("2015-2-02T00:30:08.276Z") is
  padded before parsing.

Every error text below maps to exactly one machine rule (``RULE_OF_MESSAGE``) so that the
domain can report ``rule`` without parsing prose.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from marshmallow import (
    EXCLUDE,
    INCLUDE,
    Schema,
    ValidationError,
    fields,
    pre_load,
    validate,
    validates_schema,
)

EVENT_TYPES = ("identify", "track", "page", "screen", "group", "alias")
MAX_MESSAGE_ID_CHARS = 100

MISSING = "Missing data for required field."
EMPTY = "Must not be empty."
NOT_A_STRING = "Not a string."
NOT_AN_ID = "Not an id: expected a string or a number."
NOT_AN_OBJECT = "Not a JSON object."
NOT_A_TIMESTAMP = "Not an ISO-8601 date-time."
TOO_LONG = f"Longer than {MAX_MESSAGE_ID_CHARS} characters."
UNKNOWN_TYPE = f"Not one of {', '.join(EVENT_TYPES)}."
NO_USER_OR_ANONYMOUS_ID = "Either userId or anonymousId is required."

RULE_OF_MESSAGE = {
    MISSING: "required",
    EMPTY: "required",
    NOT_A_STRING: "type",
    NOT_AN_ID: "type",
    NOT_AN_OBJECT: "type",
    NOT_A_TIMESTAMP: "format",
    TOO_LONG: "max_length",
    UNKNOWN_TYPE: "one_of",
    NO_USER_OR_ANONYMOUS_ID: "no_user_anon_id",
}

# Only used when the fast path (datetime.fromisoformat) fails: pads "2015-2-02T0:30:08"
# into "2015-02-02T00:30:08" and keeps whatever follows the minutes as it was.
_UNPADDED = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})[T ](\d{1,2}):(\d{1,2})(.*)", re.ASCII)


def parse_timestamp(text: str) -> datetime:
    """Parse an ISO-8601 date-time into an aware UTC datetime; ValueError if it isn't one."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = datetime.fromisoformat(_padded(text.upper()))
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _padded(text: str) -> str:
    match = _UNPADDED.fullmatch(text)
    if match is None:
        raise ValueError(text)
    year, month, day, hour, minute, rest = match.groups()
    return f"{year}-{month:0>2}-{day:0>2}T{hour:0>2}:{minute:0>2}{rest}"


class Text(fields.String):
    """A string that is not blank (the value itself is kept as sent)."""

    default_error_messages = {"required": MISSING, "null": MISSING, "invalid": NOT_A_STRING}

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if not text.strip():
            raise ValidationError(EMPTY)
        return text


class Identifier(fields.Field):
    """An id: a string or a number, stringified and stripped; empty means absent (None)."""

    default_error_messages = {"required": MISSING, "null": MISSING, "invalid": NOT_AN_ID}

    def __init__(self, **kwargs: Any) -> None:
        # Optional ids accept null; required ones report null as missing.
        kwargs.setdefault("allow_none", not kwargs.get("required", False))
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            text = value.strip()
        elif isinstance(value, int | float) and not isinstance(value, bool):
            text = str(value)
        else:
            raise self.make_error("invalid")
        if text:
            return text
        if self.required:
            raise self.make_error("required")
        return None

    def _validate(self, value):
        # Validators (max length) only make sense on a present id.
        if value is not None:
            super()._validate(value)


class Timestamp(fields.Field):
    """An ISO-8601 date-time string, loaded as an aware UTC datetime; null = absent."""

    default_error_messages = {"invalid": NOT_A_TIMESTAMP, "type": NOT_A_STRING}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_none=True, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise self.make_error("type")
        try:
            return parse_timestamp(value)
        except (ValueError, OverflowError) as error:
            raise self.make_error("invalid") from error


class Object(fields.Dict):
    """A JSON object (shallow-copied); null = absent."""

    default_error_messages = {"invalid": NOT_AN_OBJECT}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_none=True, **kwargs)


class EventSchema(Schema):
    """Fields common to every call. Also the schema of an event whose type is unknown,
    so that a missing or wrong ``type`` is reported like any other field."""

    class Meta:
        unknown = INCLUDE

    type = Text(required=True, validate=validate.OneOf(EVENT_TYPES, error=UNKNOWN_TYPE))
    userId = Identifier()
    anonymousId = Identifier()
    messageId = Identifier(validate=validate.Length(max=MAX_MESSAGE_ID_CHARS, error=TOO_LONG))
    timestamp = Timestamp()
    originalTimestamp = Timestamp()
    sentAt = Timestamp()
    context = Object()
    integrations = Object()

    @validates_schema
    def has_a_user_or_anonymous_id(self, data: dict, **kwargs: Any) -> None:
        # Runs only when every field is valid (skip_on_field_errors), so an invalid id is
        # reported as such rather than as a missing one.
        if data.get("userId") is None and data.get("anonymousId") is None:
            raise ValidationError(NO_USER_OR_ANONYMOUS_ID, field_name="userId")


class IdentifySchema(EventSchema):
    traits = Object()


class TrackSchema(EventSchema):
    event = Text(required=True)
    properties = Object()


class PageSchema(EventSchema):
    # name/category stay unchecked: rudder-sdk-python sends "category": null.
    properties = Object()


class ScreenSchema(EventSchema):
    properties = Object()


class GroupSchema(EventSchema):
    groupId = Identifier(required=True)
    traits = Object()


class AliasSchema(EventSchema):
    previousId = Identifier(required=True)
    userId = Identifier(required=True)


# Built once at import: a Schema instance is stateless across load() calls, and building
# one costs far more than loading an event with it.
ANY_EVENT = EventSchema()
SCHEMA_OF_TYPE: dict[str, Schema] = {
    "identify": IdentifySchema(),
    "track": TrackSchema(),
    "page": PageSchema(),
    "screen": ScreenSchema(),
    "group": GroupSchema(),
    "alias": AliasSchema(),
}


def schema_for(event_type: Any) -> Schema:
    """The schema of this type of call; the common one when the type is missing or unknown."""
    if isinstance(event_type, str):
        return SCHEMA_OF_TYPE.get(event_type, ANY_EVENT)
    return ANY_EVENT


class ConsentRequestSchema(Schema):
    """`POST /v1/consent`: who consented (one identifier at least) to which purposes."""

    class Meta:
        unknown = EXCLUDE

    userId = Identifier(load_default=None)
    email = fields.Email(load_default=None)
    anonymousId = Identifier(load_default=None)
    purposes = fields.Dict(keys=fields.String(validate=validate.Length(min=1)),
                           values=fields.Boolean(truthy={True}, falsy={False}),
                           validate=validate.Length(min=1))
    # An IAB TCF v2 TC string from the person's CMP (docs/consent.md).
    tcString = fields.String(validate=validate.Length(min=1))
    jurisdiction = fields.String(validate=validate.OneOf(["GDPR", "CCPA"]))
    policyVersion = fields.String()
    language = fields.String()
    method = fields.String()
    lawfulBasis = fields.String()
    collectedAt = Timestamp()

    @pre_load
    def trim_email(self, data, **kwargs):
        # Emails come from forms with stray spaces; identity trims them the same way.
        if isinstance(data, dict) and isinstance(data.get("email"), str):
            data = dict(data, email=data["email"].strip())
        return data

    @validates_schema
    def someone_consented(self, data, **kwargs):
        if not any(data.get(name) for name in ("userId", "email", "anonymousId")):
            raise ValidationError("one of userId, email or anonymousId is required", "userId")
