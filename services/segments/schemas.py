"""Validation of segment definitions: an invalid rule gets an error naming its path."""

from __future__ import annotations

from typing import Any

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates_schema,
)

from services.segments.rules import AGGREGATES, RELATIVE_OPS, _number, parse_time

VALUE_OPS = ("eq", "ne", "in", "not_in", "contains", "exists", "not_exists", "gt", "gte",
             "lt", "lte", "between", "before", "after")
TRAIT_OPS = VALUE_OPS + RELATIVE_OPS
COUNT_OPS = ("at_least", "at_most", "exactly")
NAME = validate.Regexp(r"^[a-z0-9][a-z0-9_\-]{0,63}$",
                       error="must be 1-64 chars of a-z, 0-9, '_' or '-'")


class CountSchema(Schema):
    class Meta:
        unknown = RAISE

    op = fields.String(required=True, validate=validate.OneOf(COUNT_OPS))
    value = fields.Integer(required=True, strict=True, validate=validate.Range(min=0))


class RuleField(fields.Field):
    """A rule node; nested nodes are validated recursively with their path in the error."""

    def _deserialize(self, value: Any, attr, data, **kwargs):
        return validate_rule(value)


KINDS = ("and", "or", "not", "trait", "event", "segment")


def validate_rule(node: Any, path: str = "rule") -> dict:
    if not isinstance(node, dict):
        raise ValidationError(f"{path}: must be an object")
    kinds = [k for k in KINDS if k in node]
    if len(kinds) != 1:
        raise ValidationError(f"{path}: must have exactly one of {', '.join(KINDS)}")
    kind = kinds[0]
    if kind in ("and", "or", "not") and len(node) > 1:
        extra = sorted(str(k) for k in node if k != kind)[0]
        raise ValidationError(f"{path}.{extra}: Unknown field.")
    if kind in ("and", "or"):
        parts = node[kind]
        if not isinstance(parts, list) or not parts:
            raise ValidationError(f"{path}.{kind}: must be a non-empty list of rules")
        return {kind: [validate_rule(p, f"{path}.{kind}[{i}]") for i, p in enumerate(parts)]}
    if kind == "not":
        return {"not": validate_rule(node["not"], f"{path}.not")}
    schema = {"trait": TraitConditionSchema, "event": EventConditionSchema,
              "segment": SegmentConditionSchema}[kind]()
    try:
        return schema.load(node)
    except ValidationError as error:
        raise ValidationError(_first(error.normalized_messages(), path)) from error


def _first(problems: Any, path: str) -> str:
    """The first problem, with the full path of the field it is about (`rule.count.op`)."""
    if isinstance(problems, dict):
        key, inner = next(iter(problems.items()))
        if key == "_schema":
            return _first(inner, path)
        step = f"[{key}]" if isinstance(key, int) else key if str(key).startswith("[") \
            else f".{key}"
        return _first(inner, f"{path}{step}")
    if isinstance(problems, list):
        return _first(problems[0], path)
    return f"{path}: {problems}"


def _value_fits_op(op: str, value: Any) -> None:
    if op in RELATIVE_OPS:
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValidationError(f"must be a positive number of days for op '{op}'", "value")
        return
    if op in ("in", "not_in") and not isinstance(value, list):
        raise ValidationError(f"must be a list for op '{op}'", "value")
    if op == "between" and not (isinstance(value, list) and len(value) == 2):
        raise ValidationError("must be a [low, high] list for op 'between'", "value")
    if op not in ("exists", "not_exists") and value is None:
        raise ValidationError(f"is required for op '{op}'", "value")
    if op in ("gt", "gte", "lt", "lte") and _number(value) is None:
        raise ValidationError(f"must be a number for op '{op}'", "value")
    if op == "between" and any(_number(bound) is None for bound in value):
        raise ValidationError("must be numeric bounds for op 'between'", "value")
    if op in ("before", "after") and parse_time(value) is None:
        raise ValidationError(f"must be an ISO 8601 date for op '{op}'", "value")


class _ComparisonSchema(Schema):
    """`op` and `value` of a comparison; subclasses name what is compared."""

    class Meta:
        unknown = RAISE

    value = fields.Raw(load_default=None, allow_none=True)

    @validates_schema
    def value_fits_op(self, data, **kwargs):
        _value_fits_op(data["op"], data.get("value"))


class TraitConditionSchema(_ComparisonSchema):
    trait = fields.String(required=True, validate=validate.Length(min=1))
    op = fields.String(required=True, validate=validate.OneOf(TRAIT_OPS))


class PropertyConditionSchema(_ComparisonSchema):
    property = fields.String(required=True, validate=validate.Length(min=1))
    op = fields.String(required=True, validate=validate.OneOf(VALUE_OPS))


class WhereField(fields.Field):
    """{property: value} for equality, or a list of {property, op, value} conditions."""

    def _deserialize(self, value: Any, attr, data, **kwargs):
        if isinstance(value, dict):
            if not all(isinstance(k, str) and k for k in value):
                raise ValidationError("property names must be non-empty strings")
            return value
        if isinstance(value, list):
            for i, condition in enumerate(value):
                if not isinstance(condition, dict):
                    raise ValidationError({f"[{i}]": ["must be an object {property, op, value}"]})
            return PropertyConditionSchema(many=True).load(value)
        raise ValidationError("must be an object of property: value, or a list of conditions")


class DateRangeField(fields.Field):
    def _deserialize(self, value: Any, attr, data, **kwargs):
        if not (isinstance(value, list) and len(value) == 2):
            raise ValidationError("must be a [from, to] list of ISO 8601 dates")
        start, end = parse_time(value[0]), parse_time(value[1])
        if start is None or end is None or isinstance(value[0], int | float):
            raise ValidationError("must be a [from, to] list of ISO 8601 dates")
        if start > end:
            raise ValidationError("'from' must not be after 'to'")
        return value


class _BehaviourSchema(Schema):
    """What events count: the name, property filters and a window (days, dates, or ever)."""

    class Meta:
        unknown = RAISE

    event = fields.String(required=True, validate=validate.Length(min=1))
    within_days = fields.Integer(strict=True, validate=validate.Range(min=1, max=3650),
                                 load_default=None)
    between = DateRangeField(load_default=None)
    where = WhereField(load_default=dict)

    @validates_schema
    def one_window(self, data, **kwargs):
        if data.get("within_days") is not None and data.get("between") is not None:
            raise ValidationError("use either within_days or between, not both", "between")


class EventConditionSchema(_BehaviourSchema):
    count = fields.Nested(CountSchema, load_default=None)
    occurrence = fields.String(validate=validate.OneOf(("first", "last")), load_default=None)

    @validates_schema
    def count_or_occurrence(self, data, **kwargs):
        if data.get("count") is not None and data.get("occurrence") is not None:
            raise ValidationError("a first/last occurrence takes no count", "count")

    @post_load
    def default_count(self, data, **kwargs):
        if data["count"] is None and data["occurrence"] is None:
            data["count"] = {"op": "at_least", "value": 1}
        return {k: v for k, v in data.items() if v is not None}


class SegmentConditionSchema(Schema):
    class Meta:
        unknown = RAISE

    segment = fields.String(required=True, validate=NAME)


class SegmentSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=NAME)
    rule = RuleField(required=True)
    description = fields.String(load_default="")


class ComputedTraitSchema(_BehaviourSchema):
    """`{"name": "orders_90d", "event": "Order Completed", "aggregate": "sum",
    "property": "total", "within_days": 90}`: shown on the profile, usable as a trait."""

    name = fields.String(required=True, validate=NAME)
    aggregate = fields.String(required=True, validate=validate.OneOf(tuple(AGGREGATES)))
    property = fields.String(load_default=None, validate=validate.Length(min=1))
    description = fields.String(load_default="")

    @validates_schema
    def property_when_needed(self, data, **kwargs):
        if data["aggregate"] != "count" and not data.get("property"):
            raise ValidationError(f"is required for aggregate '{data['aggregate']}'",
                                  "property")


class RuleOnlySchema(Schema):
    """A rule to preview before it is saved."""

    class Meta:
        unknown = RAISE

    rule = RuleField(required=True)
    sample = fields.Integer(load_default=10, validate=validate.Range(min=0, max=100))
