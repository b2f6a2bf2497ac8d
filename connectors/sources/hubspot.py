"""HubSpot contacts, deals and tickets as a source: incremental pulls on the last-modified
date of each.

    POST {base}/crm/v3/objects/contacts/search
      {"filterGroups": [{"filters": [{"propertyName": "lastmodifieddate", "operator": "GTE",
                                      "value": "<cursor, ms>"}]}],
       "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
       "properties": [...], "limit": 200, "after": "<paging>"}

The cursor is the newest ``lastmodifieddate`` read. Search pages stop at 10,000 results,
so past that the pull starts a new search from the newest timestamp seen; contacts read
twice carry the same messageId (contact id + its lastmodifieddate) and the gateway keeps
them once. A contact whose properties still match the stamp our HubSpot destination
wrote with them (``tessera_sync_stamp``) is our own write coming back: it is skipped, so
two-way sync does not loop.

Deals and tickets (``objects``) come the same way, each on its own cursor:

    POST {base}/crm/v3/objects/{deals,tickets}/search   (filter hs_lastmodifieddate GTE)
    POST {base}/crm/v4/associations/{deals,tickets}/{contacts,companies}/batch/read
         {"inputs": [{"id": "<deal id>"}, …]}      -> who each is about, which company
    POST {base}/crm/v3/objects/contacts/batch/read  {"inputs": [{"id"}], "properties":
         ["email"]}                                 -> those contacts' emails

Each deal or ticket becomes one ``track`` per associated contact, carrying its whole
current state in the contract of docs/contacts.md: ``Deal Updated`` {deal_id, amount,
stage, closed, won, account_id, name} from dealstage, hs_is_closed, hs_is_closed_won and
the first associated company; ``Ticket Updated`` {ticket_id, status, created_at, closed,
account_id, subject} from hs_pipeline_stage (labelled by ``ticket_stages``), createdate
and closed_date. The call names the contact as the contact pull does
(``anonymousId: hubspot:<contact id>``) and by email (``context.traits.email``), so it
lands on the right person even when the contact itself was our own write and was never
pulled. A deal or ticket with no associated contact has no one to land on: it is skipped
(and counted). Tessera writes no deals or tickets, so none can loop back.

The cursor is a JSON object, one last-modified date per object (a plain string, as older
pulls left, is the contacts' cursor).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
from marshmallow import Schema, fields, validate

from connectors.hubspot import is_own_write
from connectors.sdk.source import Page, Source

__all__ = ["HubSpotContactsSource"]

_NAMESPACE = uuid.UUID("0c6b7d8e-4f5a-4b3c-9d2e-1f0a9b8c7d6e")
DEFAULT_TRAITS = {"email": "email", "firstname": "first_name", "lastname": "last_name",
                  "phone": "phone", "company": "company"}
OBJECTS = ("contacts", "deals", "tickets")
# HubSpot's default ticket pipeline: stage id -> label ("4" is its closed stage).
DEFAULT_TICKET_STAGES = {"1": "new", "2": "waiting on contact", "3": "waiting on us",
                         "4": "closed"}
DEAL_PROPERTIES = ["amount", "dealname", "dealstage", "hs_is_closed", "hs_is_closed_won"]
TICKET_PROPERTIES = ["closed_date", "createdate", "hs_pipeline_stage", "subject"]
ASSOCIATION_BATCH = 100


class HubSpotSourceConfig(Schema):
    base_url = fields.Url(load_default="https://api.hubapi.com", require_tld=False,
                          metadata={"description": "HubSpot API endpoint (a fake's, in tests)."})
    access_token = fields.String(required=True, validate=validate.Length(min=1),
                                 metadata={"secret": True,
                                           "description": "Private app access token."})
    traits = fields.Dict(keys=fields.String(), values=fields.String(), load_default=None,
                         allow_none=True,
                         metadata={"description": "HubSpot property -> trait."})
    sync_stamp_property = fields.String(load_default="tessera_sync_stamp", allow_none=True,
                                        metadata={"description": "Where our writes are "
                                                  "stamped (see the destination)."})
    page_size = fields.Integer(load_default=200, validate=validate.Range(min=1, max=200),
                               metadata={"description": "Contacts per search page."})
    results_cap = fields.Integer(load_default=10_000, validate=validate.Range(min=1),
                                 metadata={"description": "Results one search can page "
                                           "through (HubSpot: 10,000)."})
    objects = fields.List(fields.String(validate=validate.OneOf(OBJECTS)),
                          load_default=lambda: list(OBJECTS),
                          metadata={"description": "What to pull: contacts, deals, tickets "
                                    "(deals and tickets need the crm.objects.deals.read and "
                                    "tickets scopes)."})
    ticket_stages = fields.Dict(keys=fields.String(), values=fields.String(),
                                load_default=lambda: dict(DEFAULT_TICKET_STAGES),
                                metadata={"description": "Ticket pipeline stage id -> the "
                                          "status sent (default: HubSpot's default pipeline)."})


class HubSpotContactsSource(Source):
    name = "hubspot"
    config_schema = HubSpotSourceConfig

    def __init__(self, *, transport: httpx.BaseTransport | None = None, **config: Any) -> None:
        super().__init__(**config)
        self.traits = config.get("traits") or DEFAULT_TRAITS
        self.skipped_own_writes = 0
        self.skipped_without_contact = 0
        self.http = httpx.Client(base_url=config.get("base_url") or "https://api.hubapi.com",
                                 headers={"Authorization": f"Bearer {config['access_token']}"},
                                 timeout=30, transport=transport)

    def close(self) -> None:
        self.http.close()

    def check(self) -> None:
        answer = self.http.get("/crm/v3/objects/contacts", params={"limit": 1})
        if answer.status_code != 200:
            raise ValueError(f"access_token: HubSpot answered {answer.status_code}: "
                             f"{answer.text[:200]}")

    def _search(self, since: str, after: int, kind: str = "contacts",
                properties: list[str] | None = None) -> dict[str, Any]:
        stamp = "lastmodifieddate" if kind == "contacts" else "hs_lastmodifieddate"
        if properties is None:
            properties = sorted({*self.traits, "lastmodifieddate",
                                 *filter(None, [self.config.get("sync_stamp_property")])})
        answer = self.http.post(f"/crm/v3/objects/{kind}/search", json={
            "filterGroups": [{"filters": [{"propertyName": stamp, "operator": "GTE",
                                           "value": since}]}],
            "sorts": [{"propertyName": stamp, "direction": "ASCENDING"}],
            "properties": properties, "limit": self.config.get("page_size", 200),
            "after": str(after)})
        answer.raise_for_status()
        return answer.json()

    def pull(self, cursor: str | None) -> Iterator[Page]:
        state = _cursors(cursor)
        for kind in self.config.get("objects") or OBJECTS:
            pages = self._pull_contacts(state.get(kind)) if kind == "contacts" else \
                self._pull_objects(kind, state.get(kind))
            for calls, newest in pages:
                state[kind] = newest
                yield Page(calls, json.dumps(state, sort_keys=True))

    def _pages(self, kind: str, since: str, properties: list[str] | None
               ) -> Iterator[list[dict[str, Any]]]:
        """Search pages from ``since`` (epoch ms), past the 10,000-result cap."""
        after, size = 0, self.config.get("page_size", 200)
        cap = self.config.get("results_cap", 10_000)
        while True:
            answer = self._search(since, after, kind, properties)
            results = answer.get("results", [])
            yield results
            following = (answer.get("paging") or {}).get("next")
            if not following:
                return
            after = int(following["after"])
            if after + size > cap:  # search stops at 10,000: start again from here
                newest = max((_modified_ms(r, kind) for r in results), default=int(since))
                if str(newest) == since:
                    raise RuntimeError(f"more than 10,000 {kind} share one modified date")
                since, after = str(newest), 0

    def _pull_contacts(self, since: str | None) -> Iterator[tuple[list, str]]:
        newest = since or "0"
        for results in self._pages("contacts", newest, None):
            calls = [call for call in map(self.call_of, results) if call is not None]
            newest = max([newest, *(r["properties"]["lastmodifieddate"] for r in results)],
                         key=int)
            yield calls, newest

    def _pull_objects(self, kind: str, since: str | None) -> Iterator[tuple[list, str]]:
        newest = since or "0"
        properties = DEAL_PROPERTIES if kind == "deals" else TICKET_PROPERTIES
        for results in self._pages(kind, newest, [*properties, "hs_lastmodifieddate"]):
            contacts = self._associated(kind, "contacts", results)
            companies = self._associated(kind, "companies", results)
            emails = self._emails({c for ids in contacts.values() for c in ids})
            calls = []
            for record in results:
                if not contacts.get(record["id"]):
                    self.skipped_without_contact += 1
                    continue
                account = (companies.get(record["id"]) or [None])[0]
                calls += [self.object_call(kind, record, contact, emails.get(contact), account)
                          for contact in contacts[record["id"]]]
            newest = str(max([int(newest), *(_modified_ms(r, kind) for r in results)]))
            yield calls, newest

    def _associated(self, kind: str, to: str, records: list[dict[str, Any]]
                    ) -> dict[str, list[str]]:
        """Object id -> ids of its associated ``to`` records (207: some have none)."""
        found: dict[str, list[str]] = {}
        ids = [r["id"] for r in records]
        for start in range(0, len(ids), ASSOCIATION_BATCH):
            answer = self.http.post(f"/crm/v4/associations/{kind}/{to}/batch/read", json={
                "inputs": [{"id": i} for i in ids[start:start + ASSOCIATION_BATCH]]})
            answer.raise_for_status()
            for result in answer.json().get("results", []):
                found[str(result["from"]["id"])] = [str(t["toObjectId"]) for t in result["to"]]
        return found

    def _emails(self, contact_ids: set[str]) -> dict[str, str]:
        emails: dict[str, str] = {}
        ordered = sorted(contact_ids)
        for start in range(0, len(ordered), ASSOCIATION_BATCH):
            answer = self.http.post("/crm/v3/objects/contacts/batch/read", json={
                "inputs": [{"id": i} for i in ordered[start:start + ASSOCIATION_BATCH]],
                "properties": ["email"]})
            answer.raise_for_status()
            for record in answer.json().get("results", []):
                if record["properties"].get("email"):
                    emails[str(record["id"])] = record["properties"]["email"]
        return emails

    def object_call(self, kind: str, record: dict[str, Any], contact_id: str,
                    email: str | None, account_id: str | None) -> dict[str, Any]:
        """One deal or ticket, as a ``track`` on one of its contacts (docs/contacts.md)."""
        properties = record["properties"]
        modified = properties["hs_lastmodifieddate"]
        if kind == "deals":
            event, described = "Deal Updated", {
                "deal_id": record["id"], "name": properties.get("dealname"),
                "amount": _number(properties.get("amount")),
                "stage": properties.get("dealstage"),
                "closed": _flag(properties.get("hs_is_closed")),
                "won": _flag(properties.get("hs_is_closed_won")), "account_id": account_id}
        else:
            stage = properties.get("hs_pipeline_stage")
            status = self.config.get("ticket_stages", DEFAULT_TICKET_STAGES).get(stage, stage)
            event, described = "Ticket Updated", {
                "ticket_id": record["id"], "subject": properties.get("subject"),
                "status": status, "created_at": properties.get("createdate"),
                "closed": bool(properties.get("closed_date")) or status == "closed",
                "account_id": account_id}
        version = f"hubspot:{kind}:{record['id']}:{modified}:{contact_id}"
        context: dict[str, Any] = {
            "library": {"name": "tessera-hubspot-source", "version": "1"},
            "externalIds": [{"id": contact_id, "type": "hubspot_contact_id",
                             "collection": "contacts"}]}
        if email:
            context["traits"] = {"email": email}
        return {"type": "track", "event": event, "anonymousId": f"hubspot:{contact_id}",
                "properties": described, "timestamp": modified,
                "messageId": str(uuid.uuid5(_NAMESPACE, version)), "context": context}

    def call_of(self, record: dict[str, Any]) -> dict[str, Any] | None:
        properties = record["properties"]
        stamp_property = self.config.get("sync_stamp_property")
        if stamp_property and is_own_write(properties, stamp_property):
            self.skipped_own_writes += 1
            return None
        traits = {trait: properties[name] for name, trait in self.traits.items()
                  if properties.get(name) not in (None, "")}
        version = f"hubspot:{record['id']}:{properties['lastmodifieddate']}"
        return {"type": "identify", "anonymousId": f"hubspot:{record['id']}",
                "traits": traits, "messageId": str(uuid.uuid5(_NAMESPACE, version)),
                "context": {"library": {"name": "tessera-hubspot-source", "version": "1"},
                            "externalIds": [{"id": record["id"], "type": "hubspot_contact_id",
                                             "collection": "contacts"}]}}


def _cursors(cursor: str | None) -> dict[str, str]:
    if not cursor:
        return {}
    if cursor.startswith("{"):
        return json.loads(cursor)
    return {"contacts": cursor}  # a cursor from before deals and tickets


def _modified_ms(record: dict[str, Any], kind: str) -> int:
    if kind == "contacts":
        return int(record["properties"]["lastmodifieddate"])
    stamp = record["properties"]["hs_lastmodifieddate"]
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)


def _flag(value: Any) -> bool:
    return str(value).lower() == "true"


def _number(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _harness():
    from connectors.fakes.hubspot import FakeHubSpot
    from connectors.sdk.source_conformance import SourceHarness

    def echo(fake, emails):
        from connectors.base import DeliveryItem, load_connector
        from connectors.sdk import Capability

        destination = load_connector("hubspot", {"base_url": fake.base_url,
                                                 "access_token": "pat-test"})
        items = [DeliveryItem(f"echo:{e}", f"p:{e}", "entered", "s", {"email": e,
                              "first_name": "Echo"}, {}, "", "") for e in emails]
        destination.deliver(Capability.UPSERT_PROFILE, "crm", items)
        destination.close()

    return SourceHarness(
        fake=lambda: FakeHubSpot(token="pat-test", results_cap=40),
        config=lambda fake: {"base_url": fake.base_url, "access_token": "pat-test",
                             "page_size": 15, "results_cap": 40},
        bad_config=lambda fake: {"access_token": "pat-revoked"},
        seed=lambda fake, n: [fake.edit(f"c{i}@example.com", firstname=f"C{i}")
                              for i in range(n)],
        change=lambda fake, n: fake.edit(f"c{n}@example.com", firstname="Changed"),
        echo=echo)


HubSpotContactsSource.conformance_harness = staticmethod(_harness)
