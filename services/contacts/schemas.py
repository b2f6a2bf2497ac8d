"""What crosses contacts' boundary: the commands and searches people send (API, CLI)."""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

_NAME = validate.Length(min=1, max=200)
_AUTHOR = fields.String(load_default="admin", validate=_NAME)


class _Strict(Schema):
    class Meta:
        unknown = "raise"


class SearchSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    identifier = fields.String(validate=_NAME)
    email = fields.String(validate=_NAME)
    name = fields.String(validate=_NAME)
    account = fields.String(validate=_NAME)
    owner = fields.String(validate=_NAME)
    stage = fields.String(validate=_NAME)
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))

    @validates_schema
    def some_criterion(self, data, **kwargs):
        if not set(data) - {"limit"}:
            raise ValidationError("give at least one of identifier, email, name, account, "
                                  "owner or stage", field_name="search")


class UpdateContactSchema(_Strict):
    profile_id = fields.UUID(required=True)
    traits = fields.Dict(keys=fields.String(validate=_NAME), required=True,
                         validate=validate.Length(min=1, error="must set at least one trait"))
    author = _AUTHOR


class SetStageSchema(_Strict):
    profile_id = fields.UUID(required=True)
    stage = fields.String(required=True, validate=_NAME)
    author = _AUTHOR


class NoteSchema(_Strict):
    profile_id = fields.UUID(required=True)
    text = fields.String(required=True, validate=validate.Length(min=1, max=10_000))
    author = fields.String(required=True, validate=_NAME)


class LinkAccountSchema(_Strict):
    profile_id = fields.UUID(required=True)
    account_id = fields.String(required=True, validate=_NAME)
    role = fields.String(load_default="member", validate=_NAME)
    author = _AUTHOR


class BulkItemSchema(_Strict):
    profile_id = fields.UUID(required=True)
    traits = fields.Dict(keys=fields.String(validate=_NAME))
    stage = fields.String(validate=_NAME)

    @validates_schema
    def changes_something(self, data, **kwargs):
        if not data.get("traits") and not data.get("stage"):
            raise ValidationError("must set traits or a stage", field_name="traits")


class BulkUpdateSchema(_Strict):
    updates = fields.List(fields.Nested(BulkItemSchema), required=True,
                          validate=validate.Length(min=1, max=1000))
    author = _AUTHOR


class UpdateAccountSchema(_Strict):
    account_id = fields.String(required=True, validate=_NAME)
    traits = fields.Dict(keys=fields.String(validate=_NAME), required=True,
                         validate=validate.Length(min=1, error="must set at least one trait"))
    author = _AUTHOR
