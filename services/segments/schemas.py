"""Validation of segment definitions: an invalid rule gets an error naming its path."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from services.segments.rules import _number

TRAIT_OPS = ("eq", "ne", "in", "not_in", "contains", "exists", "not_exists", "gt", "gte",
             "lt", "lte", "between", "before", "after")
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


def validate_rule(node: Any, path: str = "rule") -> dict:
    if not isinstance(node, dict):
        raise ValidationError(f"{path}: must be an object")
    kinds = [k for k in ("and", "or", "not", "trait", "event") if k in node]
    if len(kinds) != 1:
        raise ValidationError(f"{path}: must have exactly one of and, or, not, trait, event")
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
    schema = TraitConditionSchema() if kind == "trait" else EventConditionSchema()
    try:
        return schema.load(node)
    except ValidationError as error:
        raise ValidationError(_first(error.normalized_messages(), path)) from error


def _first(problems: Any, path: str) -> str:
    """The first problem, with the full path of the field it is about (`rule.count.op`)."""
    if isinstance(problems, dict):
        key, inner = next(iter(problems.items()))
        return _first(inner, f"{path}.{key}")
    if isinstance(problems, list):
        return _first(problems[0], path)
    return f"{path}: {problems}"


class TraitConditionSchema(Schema):
    class Meta:
        unknown = RAISE

    trait = fields.String(required=True, validate=validate.Length(min=1))
    op = fields.String(required=True, validate=validate.OneOf(TRAIT_OPS))
    value = fields.Raw(load_default=None, allow_none=True)

    @validates_schema
    def value_fits_op(self, data, **kwargs):
        op, value = data["op"], data.get("value")
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


class EventConditionSchema(Schema):
    class Meta:
        unknown = RAISE

    event = fields.String(required=True, validate=validate.Length(min=1))
    count = fields.Nested(CountSchema, load_default=lambda: {"op": "at_least", "value": 1})
    within_days = fields.Integer(strict=True, validate=validate.Range(min=1, max=3650),
                                 load_default=None)
    where = fields.Dict(keys=fields.String(), load_default=dict)


class SegmentSchema(Schema):
    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=NAME)
    rule = RuleField(required=True)
    description = fields.String(load_default="")
