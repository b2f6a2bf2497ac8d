"""A batch the vendor accepts in part (HubSpot's 207 Multi-Status): activation records the
written items as delivered and dead-letters only the refused ones, which a replay then
sends alone — against the loopback HubSpot fake."""

from __future__ import annotations

import pytest

from connectors.fakes.hubspot import FakeHubSpot
from services.activation.application import ActivationApplication
from services.activation.destinations import Destination
from shared.config import Settings


def allow_all(requests: list[dict]) -> list[dict]:
    return [{"decision_id": f"d{i}", "allowed": True, "reason": "ok"}
            for i, _ in enumerate(requests)]


def item(position: int) -> dict:
    return {"position": position, "idempotency_key": f"crm:p{position}:buyers:{position}",
            "destination": "crm", "profile_id": f"p{position}", "segment": "buyers",
            "action": "entered", "traits": {"email": f"p{position}@example.com"},
            "occurred_at": "2026-11-29T10:00:00.000Z", "cause": None, "received_at": None}


@pytest.fixture
def hubspot():
    with FakeHubSpot(token="t") as fake:
        yield fake


@pytest.fixture
def app(tmp_path, hubspot):
    made = ActivationApplication(
        Settings(data_dir=tmp_path, delivery_attempts=3),
        destinations=[Destination("crm", "hubspot", ("buyers",), ("marketing",),
                                  {"base_url": hubspot.base_url, "access_token": "t"})],
        sleep=lambda seconds: None)
    yield made
    made.close()


def test_the_written_items_are_delivered_and_only_the_refused_one_is_dead_lettered(
        app, hubspot):
    hubspot.refuse("p2@example.com", "VALIDATION_ERROR")

    outcome = app.deliver("k", "crm", [item(1), item(2), item(3)], allow_all)

    assert outcome == {"delivered": 2, "suppressed": 0, "dead_lettered": 1}
    (letter,) = app.dead_letters("crm")
    assert [i["profile_id"] for i in letter["items"]] == ["p2"]
    assert "VALIDATION_ERROR" in letter["error"]
    assert app.stats()["crm"]["delivered"] == 2
    assert sorted(hubspot.subjects()) == ["p1@example.com", "p3@example.com"]


def test_a_refused_item_once_fixed_is_replayed_alone(app, hubspot):
    hubspot.refuse("p2@example.com", "VALIDATION_ERROR", times=1)
    app.deliver("k", "crm", [item(1), item(2)], allow_all)
    (letter,) = app.dead_letters("crm")

    assert app.replay("crm", letter["id"], allow_all) == {"delivered": 1, "suppressed": 0}

    assert [len(r.json()["inputs"]) for r in hubspot.data_requests()] == [2, 1]
    assert app.dead_letters("crm") == []
    assert sorted(hubspot.subjects()) == ["p1@example.com", "p2@example.com"]
