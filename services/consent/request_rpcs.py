"""consent's RPCs for data subject requests (mixed into ConsentService): thin, load the
command with its schema, call the application, answer {"result"} or {"error"}."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError
from nameko.rpc import rpc

from services.consent.requests import RequestError
from services.consent.schemas import (
    CompleteSchema,
    ExtendSchema,
    FileRequestSchema,
    RejectSchema,
    VerifySchema,
)

_file, _verify, _extend = FileRequestSchema(), VerifySchema(), ExtendSchema()
_complete, _reject = CompleteSchema(), RejectSchema()


class SubjectRequestRpcs:
    """Needs the service's `app` (a ConsentApplication)."""

    @rpc
    def file_request(self, command: dict):
        return _answer(_file, command, lambda data: self.app.file_request(**data))

    @rpc
    def verify_request(self, command: dict):
        return _answer(_verify, command, lambda data: self.app.verify_request(**data))

    @rpc
    def extend_request(self, command: dict):
        return _answer(_extend, command, lambda data: self.app.extend_request(**data))

    @rpc
    def complete_request(self, command: dict):
        return _answer(_complete, command, lambda data: self.app.complete_request(**data))

    @rpc
    def reject_request(self, command: dict):
        return _answer(_reject, command, lambda data: self.app.reject_request(**data))

    @rpc
    def ready_to_carry_out(self, request_id: str):
        return _answer(None, request_id, self.app.ready_to_carry_out)

    @rpc
    def request(self, request_id: str):
        return _answer(None, request_id, self.app.request)

    @rpc
    def list_requests(self, status: str | None = None, kind: str | None = None):
        return self.app.list_requests(status, kind)

    @rpc
    def overdue_requests(self):
        return self.app.overdue_requests()

    @rpc
    def export_subject(self, profile_ids: list[str], identifiers: list[list[str]]):
        return self.app.export_subject(profile_ids, identifiers)


def _answer(schema: Schema | None, payload: Any, call) -> dict[str, Any]:
    try:
        return {"result": call(schema.load(payload) if schema is not None else payload)}
    except ValidationError as error:
        field, problems = next(iter(error.normalized_messages().items()))
        problem = problems[0] if isinstance(problems, list) else problems
        return {"error": {"code": "invalid_request", "field": field,
                          "message": f"{field}: {problem}"}}
    except RequestError as refused:
        code = "not_found" if refused.field == "request_id" else "invalid_request"
        return {"error": {"code": code, "field": refused.field, "message": refused.message}}
