"""What crosses consent's boundary for data subject requests (gateway → consent)."""

from __future__ import annotations

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates

from services.consent.requests import KINDS, REGULATIONS, VERIFICATION_METHODS

_WHO = fields.String(required=True, validate=validate.Length(min=1, max=200))
_WHEN = fields.String(load_default=None, allow_none=True)


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class FileRequestSchema(_Strict):
    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    regulation = fields.String(required=True, validate=validate.OneOf(sorted(REGULATIONS)))
    identifiers = fields.List(fields.List(fields.String(), validate=validate.Length(equal=2)),
                              required=True, validate=validate.Length(min=1))
    filed_by = _WHO
    received_at = _WHEN
    details = fields.Dict(load_default=dict)
    note = fields.String(load_default="")

    @validates("identifiers")
    def _typed(self, value, **kwargs):
        for identifier_type, identifier in value:
            if not identifier_type or not identifier:
                raise ValidationError("each identifier is [type, value], both non-empty")


class VerifySchema(_Strict):
    request_id = fields.String(required=True)
    method = fields.String(required=True, validate=validate.OneOf(VERIFICATION_METHODS))
    verified_by = _WHO
    at = _WHEN
    evidence = fields.String(load_default="")


class ExtendSchema(_Strict):
    request_id = fields.String(required=True)
    notice = fields.String(required=True, validate=validate.Length(min=1))
    extended_by = _WHO
    at = _WHEN


class CompleteSchema(_Strict):
    request_id = fields.String(required=True)
    completed_by = _WHO
    outcome = fields.Dict(load_default=dict)
    at = _WHEN


class RejectSchema(_Strict):
    request_id = fields.String(required=True)
    rejected_by = _WHO
    reason = fields.String(required=True, validate=validate.Length(min=1))
    at = _WHEN
