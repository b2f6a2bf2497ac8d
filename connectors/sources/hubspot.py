"""HubSpot contacts as a source: incremental pulls on ``lastmodifieddate``.

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
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
from marshmallow import Schema, fields, validate

from connectors.hubspot import is_own_write
from connectors.sdk.source import Page, Source

__all__ = ["HubSpotContactsSource"]

_NAMESPACE = uuid.UUID("0c6b7d8e-4f5a-4b3c-9d2e-1f0a9b8c7d6e")
DEFAULT_TRAITS = {"email": "email", "firstname": "first_name", "lastname": "last_name",
                  "phone": "phone", "company": "company"}


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


class HubSpotContactsSource(Source):
    name = "hubspot"
    config_schema = HubSpotSourceConfig

    def __init__(self, *, transport: httpx.BaseTransport | None = None, **config: Any) -> None:
        super().__init__(**config)
        self.traits = config.get("traits") or DEFAULT_TRAITS
        self.skipped_own_writes = 0
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

    def _search(self, since: str, after: int) -> dict[str, Any]:
        properties = sorted({*self.traits, "lastmodifieddate",
                             *filter(None, [self.config.get("sync_stamp_property")])})
        answer = self.http.post("/crm/v3/objects/contacts/search", json={
            "filterGroups": [{"filters": [{"propertyName": "lastmodifieddate",
                                           "operator": "GTE", "value": since}]}],
            "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
            "properties": properties, "limit": self.config.get("page_size", 200),
            "after": str(after)})
        answer.raise_for_status()
        return answer.json()

    def pull(self, cursor: str | None) -> Iterator[Page]:
        since, after, size = cursor or "0", 0, self.config.get("page_size", 200)
        cap = self.config.get("results_cap", 10_000)
        while True:
            answer = self._search(since, after)
            results = answer.get("results", [])
            calls = [call for call in map(self.call_of, results) if call is not None]
            newest = max((r["properties"]["lastmodifieddate"] for r in results),
                         key=int, default=since)
            yield Page(calls, newest)
            following = (answer.get("paging") or {}).get("next")
            if not following:
                return
            after = int(following["after"])
            if after + size > cap:  # search stops at 10,000: start again from here
                if newest == since:
                    raise RuntimeError("more than 10,000 contacts share one lastmodifieddate")
                since, after = newest, 0

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
