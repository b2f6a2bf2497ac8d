"""Merges and splits reach a CRM: a running platform (embedded, and RabbitMQ + PostgreSQL)
delivering to the loopback HubSpot fake, through the public tracking and identity APIs."""

from __future__ import annotations

import uuid

import httpx
import pytest
from e2e_support import WRITE_KEY
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from connectors.fakes.hubspot import FakeHubSpot
from tessera.testing.platform import Platform

TOKEN = "pat-na1-e2e"
CONSENTED = {"consent": {"categoryPreferences": {"marketing": True}}}


@pytest.fixture(scope="module")
def hubspot():
    with FakeHubSpot(token=TOKEN) as fake:
        yield fake


@pytest.fixture(scope="module",
                params=["embedded", pytest.param("real", marks=pytest.mark.e2e)])
def crm_platform(request, hubspot):
    platform = Platform(
        mode=request.param, write_keys={"web": WRITE_KEY},
        destinations=[{"name": "hubspot", "kind": "hubspot",
                       "config": {"base_url": hubspot.base_url},
                       "secrets_env": {"access_token": "TESSERA_E2E_HUBSPOT_TOKEN"},
                       "segments": ["people"], "purposes": ["marketing"]}],
        destination_secrets={"TESSERA_E2E_HUBSPOT_TOKEN": TOKEN})
    platform.start()
    platform.define_segment("people", {"trait": "email", "op": "exists"})
    yield platform
    platform.stop()
    platform.cleanup()


def identify(platform, **event) -> None:
    body = {"batch": [{"type": "identify", "messageId": str(uuid.uuid4()), **event}]}
    answer = httpx.post(f"{platform.base_url}/v1/batch", auth=(WRITE_KEY, ""), json=body)
    assert answer.status_code == 200, answer.text


def eventually(check) -> None:
    for attempt in Retrying(stop=stop_after_delay(30), wait=wait_fixed(0.2), reraise=True,
                            retry=retry_if_exception_type(AssertionError)):
        with attempt:
            check()


def test_a_merge_folds_the_crm_contacts_and_a_rejected_merge_parts_them_again(
        crm_platform, hubspot):
    tag = uuid.uuid4().hex[:8]
    ada, home = f"ada-{tag}@example.com", f"ada.home-{tag}@example.org"
    identify(crm_platform, userId=f"u-{tag}", context=CONSENTED,
             traits={"email": ada, "first_name": "Ada"}, timestamp="2026-01-01T00:00:00Z")
    identify(crm_platform, anonymousId=f"a-{tag}", context=CONSENTED,
             traits={"email": home, "phone": "+33612345678"}, timestamp="2026-01-02T00:00:00Z")
    eventually(lambda: assertion(ada in hubspot.contacts and home in hubspot.contacts))
    absorbed = crm_platform.admin("GET", "/v1/profiles", params={"email": home}).json()[
        "profile_id"]

    identify(crm_platform, userId=f"u-{tag}", anonymousId=f"a-{tag}",
             timestamp="2026-01-03T00:00:00Z")
    eventually(lambda: assertion(home not in hubspot.contacts))
    merged = hubspot.contacts[ada]["properties"]
    assert merged["phone"] == "+33612345678" and home in merged["hs_additional_emails"]

    rejected = crm_platform.admin("POST", f"/v1/profiles/{absorbed}/identity/reject-merge")
    assert rejected.status_code == 200, rejected.text
    eventually(lambda: assertion(home in hubspot.contacts
                                 and "phone" not in hubspot.contacts[ada]["properties"]))
    assert hubspot.contacts[home]["properties"]["phone"] == "+33612345678"


def assertion(condition: bool) -> None:
    assert condition
