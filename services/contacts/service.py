"""contacts' nameko entrypoints."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError
from nameko.rpc import rpc

from services.contacts.application import ContactError, ContactsApplication
from services.contacts.schemas import (
    BulkUpdateSchema,
    LinkAccountSchema,
    NoteSchema,
    SearchSchema,
    SetStageSchema,
    UpdateAccountSchema,
    UpdateContactSchema,
)
from services.contacts.translation import translator
from shared.contracts import IDENTITY_PROFILE_SPLIT, IDENTITY_RESOLVED
from shared.messaging.nameko_ext import ServiceApp, partitioned_handler, service_status

_search = SearchSchema()
_update = UpdateContactSchema()
_stage = SetStageSchema()
_note = NoteSchema()
_link = LinkAccountSchema()
_bulk = BulkUpdateSchema()
_account = UpdateAccountSchema()


class ContactsService:
    name = "contacts"
    app = ServiceApp(ContactsApplication, translator)

    @partitioned_handler(IDENTITY_RESOLVED, "contacts")
    def on_identity_resolved(self, envelope):
        return self.app.apply_batch(envelope.tracking_key, envelope.partition, envelope.items)

    @partitioned_handler(IDENTITY_PROFILE_SPLIT, "contacts")
    def on_profile_split(self, envelope):
        return self.app.apply_splits(envelope.tracking_key, envelope.partition, envelope.items)

    @rpc
    def get_profile(self, profile_id: str):
        return self.app.profile(profile_id)

    @rpc
    def timeline(self, profile_id: str, limit: int = 100):
        return self.app.timeline(profile_id, limit)

    @rpc
    def export_subject(self, profile_ids: list[str], identifiers: list[list[str]]):
        return self.app.export_subject(profile_ids, identifiers)

    @rpc
    def rectify(self, profile_id: str, traits: dict, request_id: str):
        return self.app.rectify(profile_id, traits, request_id)

    @rpc
    def erase_subject(self, profile_ids: list[str], identifiers: list[list[str]], **hashes):
        """Erasure of one person in this service (services/consent/erasure.py)."""
        return self.app.erase_subject(profile_ids, identifiers, **hashes)

    @rpc
    def status(self):
        return service_status(self.name, self.app)

    # ---- the contact directory (API and CLI) -------------------------------------------
    @rpc
    def search_contacts(self, criteria: dict):
        return _checked(_search, criteria, "invalid_search",
                        lambda data: {"contacts": self.app.search(**data)})

    @rpc
    def update_contact(self, command: dict):
        return _checked(_update, command, "invalid_contact", lambda data: _found(
            self.app.update_contact(str(data["profile_id"]), data["traits"], data["author"])))

    @rpc
    def set_stage(self, command: dict):
        return _checked(_stage, command, "invalid_stage", lambda data: _found(
            self.app.set_stage(str(data["profile_id"]), data["stage"], data["author"])))

    @rpc
    def add_note(self, command: dict):
        return _checked(_note, command, "invalid_note", lambda data: _found(
            self.app.add_note(str(data["profile_id"]), data["text"], data["author"])))

    @rpc
    def link_account(self, command: dict):
        return _checked(_link, command, "invalid_link", lambda data: _found(
            self.app.link_account(str(data["profile_id"]), data["account_id"], data["role"],
                                  data["author"])))

    @rpc
    def bulk_update(self, command: dict):
        return _checked(_bulk, command, "invalid_bulk_update", lambda data: self.app.bulk_update(
            [{**update, "profile_id": str(update["profile_id"])} for update in data["updates"]],
            data["author"]))

    @rpc
    def update_account(self, command: dict):
        return _checked(_account, command, "invalid_account", lambda data: {
            "account": self.app.update_account(data["account_id"], data["traits"],
                                               data["author"])})

    @rpc
    def get_account(self, account_id: str):
        return self.app.account(account_id)

    @rpc
    def search_accounts(self, name: str):
        return _checked(_search, {"name": name}, "invalid_search",
                        lambda data: {"accounts": self.app.search_accounts(data["name"])})

    @rpc
    def account_timeline(self, account_id: str, limit: int = 100):
        return self.app.account_timeline(account_id, limit)


def _found(view: dict | None) -> dict[str, Any]:
    if view is None:
        return {"error": {"code": "not_found", "field": "profile_id",
                          "message": "profile_id: no such contact"}}
    return {"contact": view}


def _checked(schema: Schema, payload: Any, code: str, call):
    """Load with the schema, call the application; errors name the field and the rule."""
    if not isinstance(payload, dict):
        return {"error": {"code": code, "field": "body", "message": "body: must be an object"}}
    try:
        return call(schema.load(payload))
    except ValidationError as error:
        return {"error": {"code": code, **_first_error(error)}}
    except ContactError as error:
        return {"error": {"code": code, "field": error.field, "message": error.message}}


def _first_error(error: ValidationError) -> dict:
    field, problems = next(iter(error.normalized_messages().items()))
    while isinstance(problems, dict):  # nested: updates -> 1 -> stage
        inner, problems = next(iter(problems.items()))
        field = f"{field}[{inner}]" if isinstance(inner, int) else f"{field}.{inner}"
    problem = str(problems[0] if isinstance(problems, list) else problems)
    return {"field": field, "message": f"{field}: {problem}"}
