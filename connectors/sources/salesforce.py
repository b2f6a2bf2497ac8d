"""Salesforce contacts, opportunities and cases as a source: incremental SOQL.

    GET {instance}/services/data/v66.0/query?q=SELECT Id, Email, … FROM Contact
        WHERE SystemModstamp >= 2026-01-01T00:00:00.000+0000 ORDER BY SystemModstamp, Id
    → {"totalSize", "done", "nextRecordsUrl"?, "records": [...]}   (≤ 2,000 per answer)

The cursor is the newest ``SystemModstamp`` read (datetime literals go unquoted). A
record read twice carries the same messageId (its Id and SystemModstamp), so the gateway
keeps it once. A contact whose fields still match the stamp our Salesforce destination
wrote (``Tessera_Sync_Stamp__c``) is our own write coming back, and is skipped.

Opportunities and cases (``objects``) come the same way, on ``LastModifiedDate``, each
on its own cursor:

    SELECT Id, Name, Amount, StageName, IsClosed, IsWon, AccountId, ContactId,
           Contact.Email, LastModifiedDate FROM Opportunity
     WHERE LastModifiedDate >= … ORDER BY LastModifiedDate, Id
    SELECT Id, Subject, Status, CreatedDate, IsClosed, AccountId, ContactId,
           Contact.Email, LastModifiedDate FROM Case WHERE … ORDER BY LastModifiedDate, Id

Each becomes a ``track`` on its contact (``ContactId``: an opportunity's primary contact,
API 46.0+; a case's contact) in the contract of docs/contacts.md: ``Deal Updated``
{deal_id, amount, stage, closed, won, account_id, name} and ``Ticket Updated`` {ticket_id,
status, created_at, closed, account_id, subject}. The call names the contact as the
contact pull does (``anonymousId: salesforce:<Contact Id>``) and by email
(``context.traits.email``, from ``Contact.Email``), so it finds the person even when the
contact was our own write. One without a contact is skipped (and counted). Tessera
writes no opportunities or cases, so none can loop back.

The cursor is a JSON object, one date per object (a plain string, as older pulls left,
is the contacts' cursor).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

from marshmallow import Schema, fields, validate

from connectors.salesforce import SalesforceContacts, is_own_write
from connectors.sdk.source import Page, Source

__all__ = ["SalesforceContactsSource"]

_NAMESPACE = uuid.UUID("3e9d1c2b-5a4f-4e6d-8c7b-2a1f0e9d8c7b")
DEFAULT_TRAITS = {"Email": "email", "FirstName": "first_name", "LastName": "last_name",
                  "Phone": "phone"}
OBJECTS = ("Contact", "Opportunity", "Case")
OBJECT_FIELDS = {
    "Opportunity": ["Id", "Name", "Amount", "StageName", "IsClosed", "IsWon", "AccountId",
                    "ContactId", "Contact.Email", "LastModifiedDate"],
    "Case": ["Id", "Subject", "Status", "CreatedDate", "IsClosed", "AccountId", "ContactId",
             "Contact.Email", "LastModifiedDate"],
}


class SalesforceSourceConfig(Schema):
    login_url = fields.Url(required=True, require_tld=False,
                           metadata={"description": "My Domain URL (token endpoint host)."})
    client_id = fields.String(required=True, metadata={"description": "Consumer key."})
    client_secret = fields.String(required=True, metadata={"secret": True,
                                                           "description": "Consumer secret."})
    refresh_token = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(min=1),
        metadata={"secret": True, "description": "A refresh token from the web-server flow: "
                  "then sessions come from the refresh_token grant. With refresh token "
                  "rotation each use returns a new one, which `tessera pull` keeps "
                  "encrypted in activation's store; this value only seeds it."})
    api_version = fields.String(load_default="v66.0",
                                validate=validate.Regexp(r"^v\d+\.\d$", error="like v66.0"),
                                metadata={"description": "REST API version."})
    traits = fields.Dict(keys=fields.String(), values=fields.String(), load_default=None,
                         allow_none=True, metadata={"description": "Contact field -> trait."})
    sync_stamp_field = fields.String(load_default="Tessera_Sync_Stamp__c", allow_none=True,
                                     metadata={"description": "Where our writes are stamped."})
    external_id_field = fields.String(load_default="Tessera_Profile_Id__c", metadata={
        "description": "External id field (holds the profile id of contacts we wrote)."})
    objects = fields.List(fields.String(validate=validate.OneOf(OBJECTS)),
                          load_default=lambda: list(OBJECTS),
                          metadata={"description": "What to pull: Contact, Opportunity "
                                    "(deals), Case (tickets)."})


class SalesforceContactsSource(Source):
    name = "salesforce"
    config_schema = SalesforceSourceConfig
    runtime_credentials = frozenset({"refresh_token"})

    def __init__(self, **config: Any) -> None:
        # The destination's OAuth and HTTP plumbing, reused for reading; made first, as
        # the base class hands it the credentials.
        self._api = SalesforceContacts(login_url=config["login_url"],
                                       client_id=config["client_id"],
                                       client_secret=config["client_secret"],
                                       refresh_token=config.get("refresh_token"),
                                       api_version=config.get("api_version", "v66.0"))
        super().__init__(**config)
        self.traits = config.get("traits") or DEFAULT_TRAITS
        self.skipped_own_writes = 0
        self.skipped_without_contact = 0

    @property
    def credentials(self):
        """The OAuth plumbing's: a rotated refresh token is put where the platform said."""
        return self._api.credentials

    @credentials.setter
    def credentials(self, store) -> None:
        self._api.credentials = store

    def close(self) -> None:
        self._api.close()

    def check(self) -> None:
        try:
            self._api.check()
        except Exception as error:
            raise ValueError(f"client_id/client_secret: {error}") from error

    def _soql(self, since: str | None) -> str:
        names = sorted({"Id", "SystemModstamp", *self.traits,
                        *filter(None, [self.config.get("sync_stamp_field"),
                                       self.config.get("external_id_field")])})
        where = f" WHERE SystemModstamp >= {since}" if since else ""
        return f"SELECT {', '.join(names)} FROM Contact{where} ORDER BY SystemModstamp, Id"

    def _object_soql(self, sobject: str, since: str | None) -> str:
        where = f" WHERE LastModifiedDate >= {since}" if since else ""
        return (f"SELECT {', '.join(OBJECT_FIELDS[sobject])} FROM {sobject}{where} "
                "ORDER BY LastModifiedDate, Id")

    def pull(self, cursor: str | None) -> Iterator[Page]:
        state = _cursors(cursor)
        for sobject in self.config.get("objects") or OBJECTS:
            if sobject == "Contact":
                soql, stamp, convert = self._soql(state.get(sobject)), "SystemModstamp", \
                    self.call_of
            else:
                soql, stamp = self._object_soql(sobject, state.get(sobject)), \
                    "LastModifiedDate"
                convert = self.object_call
            for records in self._query(soql):
                state[sobject] = max([state.get(sobject) or "",
                                      *(r[stamp] for r in records)]) or None
                yield Page([c for c in map(convert, records) if c is not None],
                           json.dumps(state, sort_keys=True))

    def _query(self, soql: str) -> Iterator[list[dict[str, Any]]]:
        token = self._api._token or self._api._authenticate()
        version = self.config.get("api_version", "v66.0")
        url = f"{token['instance_url']}/services/data/{version}/query"
        params: dict[str, str] | None = {"q": soql}
        while url:
            answer = self._api.http.get(url, params=params, headers={
                "Authorization": f"Bearer {token['access_token']}"})
            answer.raise_for_status()
            body = answer.json()
            yield body["records"]
            following = body.get("nextRecordsUrl")
            url, params = (f"{token['instance_url']}{following}", None) if following else ("", None)

    def object_call(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """An opportunity or a case, as a ``track`` on its contact (docs/contacts.md)."""
        contact_id = record.get("ContactId")
        if not contact_id:
            self.skipped_without_contact += 1
            return None
        sobject = record["attributes"]["type"]
        if sobject == "Opportunity":
            event, described = "Deal Updated", {
                "deal_id": record["Id"], "name": record.get("Name"),
                "amount": record.get("Amount"), "stage": record.get("StageName"),
                "closed": bool(record.get("IsClosed")), "won": bool(record.get("IsWon")),
                "account_id": record.get("AccountId")}
        else:
            event, described = "Ticket Updated", {
                "ticket_id": record["Id"], "subject": record.get("Subject"),
                "status": record.get("Status"), "created_at": _iso(record.get("CreatedDate")),
                "closed": bool(record.get("IsClosed")), "account_id": record.get("AccountId")}
        version = f"salesforce:{sobject}:{record['Id']}:{record['LastModifiedDate']}"
        context: dict[str, Any] = {
            "library": {"name": "tessera-salesforce-source", "version": "1"},
            "externalIds": [{"id": contact_id, "type": "salesforce_contact_id",
                             "collection": "contacts"}]}
        email = (record.get("Contact") or {}).get("Email")
        if email:
            context["traits"] = {"email": email}
        return {"type": "track", "event": event, "anonymousId": f"salesforce:{contact_id}",
                "properties": described, "timestamp": _iso(record["LastModifiedDate"]),
                "messageId": str(uuid.uuid5(_NAMESPACE, version)), "context": context}

    def call_of(self, record: dict[str, Any]) -> dict[str, Any] | None:
        stamp_field = self.config.get("sync_stamp_field")
        if stamp_field and is_own_write(record, stamp_field):
            self.skipped_own_writes += 1
            return None
        traits = {trait: record[name] for name, trait in self.traits.items()
                  if record.get(name) not in (None, "")}
        version = f"salesforce:{record['Id']}:{record['SystemModstamp']}"
        return {"type": "identify", "anonymousId": f"salesforce:{record['Id']}",
                "traits": traits, "messageId": str(uuid.uuid5(_NAMESPACE, version)),
                "context": {"library": {"name": "tessera-salesforce-source", "version": "1"},
                            "externalIds": [{"id": record["Id"], "type": "salesforce_contact_id",
                                             "collection": "contacts"}]}}

    @staticmethod
    def conformance_harness():
        from connectors.base import DeliveryItem, load_connector
        from connectors.fakes.salesforce import FakeSalesforce
        from connectors.sdk import Capability
        from connectors.sdk.source_conformance import SourceHarness

        def echo(fake, emails):
            destination = load_connector("salesforce", {
                "login_url": fake.base_url, "client_id": "id", "client_secret": "s"})
            destination.deliver(Capability.UPSERT_PROFILE, "crm", [
                DeliveryItem(f"echo:{e}", f"ext-{e}", "entered", "s",
                             {"email": e, "last_name": "Echo"}, {}, "", "") for e in emails])
            destination.close()

        return SourceHarness(
            fake=lambda: FakeSalesforce(client_id="id", client_secret="s", query_batch=30),
            config=lambda fake: {"login_url": fake.base_url, "client_id": "id",
                                 "client_secret": "s"},
            bad_config=lambda fake: {"client_secret": "wrong"},
            seed=lambda fake, n: [fake.edit(f"ext-c{i}@example.com",
                                            Email=f"c{i}@example.com", LastName=f"C{i}")
                                  for i in range(n)],
            change=lambda fake, n: fake.edit(f"ext-c{n}@example.com", LastName="Changed"),
            echo=lambda fake, emails: echo(fake, emails))


def _cursors(cursor: str | None) -> dict[str, str]:
    if not cursor:
        return {}
    if cursor.startswith("{"):
        return json.loads(cursor)
    return {"Contact": cursor}  # a cursor from before opportunities and cases


def _iso(stamp: str | None) -> str | None:
    """Salesforce's ``2026-01-01T00:00:01.000+0000`` as ISO 8601 in UTC (``…Z``)."""
    if not stamp:
        return None
    return stamp.replace("+0000", "Z") if stamp.endswith("+0000") else stamp
