"""Activation with SDK connectors: sync modes pick the operations, each operation is its
own batch, and a dead letter remembers which operation failed so a replay repeats it alone."""

from __future__ import annotations

import uuid

import pytest

from connectors.base import PermanentDeliveryError, SendResult
from connectors.sdk import Capability, Destination, register_connector
from services.activation.application import ActivationApplication
from services.activation.destinations import Destination as Configured
from shared.config import Settings

ADA, BOB = (str(uuid.uuid4()) for _ in range(2))


class CrmWithAudiences(Destination):
    """A vendor that upserts contacts and keeps an audience; told which operation to fail."""

    name = "crm_with_audiences"
    capabilities = frozenset({Capability.ADD_TO_AUDIENCE, Capability.REMOVE_FROM_AUDIENCE,
                              Capability.UPSERT_PROFILE})
    batch_size = 10
    calls: list[tuple[str, list[str]]] = []
    failing: set[str] = set()

    def deliver(self, operation, destination, items):
        CrmWithAudiences.calls.append((str(operation), [i.profile_id for i in items]))
        if str(operation) in CrmWithAudiences.failing:
            raise PermanentDeliveryError(f"{operation} refused", status=400)
        return SendResult(delivered=[i.idempotency_key for i in items], status=200)


@pytest.fixture
def app(tmp_path):
    register_connector("crm_with_audiences", CrmWithAudiences)
    CrmWithAudiences.calls, CrmWithAudiences.failing = [], set()
    made = ActivationApplication(
        Settings(data_dir=tmp_path, delivery_attempts=2),
        destinations=[Configured("crm", "crm_with_audiences", ("vip",), ("marketing",),
                                 sync=("add_on_entry", "upsert_traits"))],
        sleep=lambda seconds: None)
    yield made
    made.close()


def allow_all(requests):
    return [{"decision_id": f"d{i}", "allowed": True, "reason": "ok"}
            for i, _ in enumerate(requests)]


def item(position: int, profile_id: str, action: str) -> dict:
    return {"position": position, "idempotency_key": f"crm:{profile_id}:{position}",
            "destination": "crm", "profile_id": profile_id, "segment": "vip",
            "action": action, "traits": {"email": "x@example.com"},
            "occurred_at": "2026-01-01T00:00:00Z", "cause": {"partition": "0", "position": 0}}


def test_an_entry_is_added_and_upserted_and_an_exit_sends_nothing_without_remove_on_exit(app):
    outcome = app.deliver("k", "crm", [item(1, ADA, "entered"), item(2, BOB, "exited")],
                          allow_all)
    assert CrmWithAudiences.calls == [("add_to_audience", [ADA]), ("upsert_profile", [ADA])]
    assert outcome["delivered"] == 1


def test_a_failed_operation_is_dead_lettered_alone_and_replayed_alone(app):
    CrmWithAudiences.failing = {"upsert_profile"}
    outcome = app.deliver("k", "crm", [item(1, ADA, "entered")], allow_all)
    assert outcome == {"delivered": 0, "suppressed": 0, "dead_lettered": 1}
    (letter,) = app.dead_letters("crm")
    assert [i["operation"] for i in letter["items"]] == ["upsert_profile"]

    CrmWithAudiences.failing, CrmWithAudiences.calls = set(), []
    assert app.replay("crm", letter["id"], allow_all) == {"delivered": 1, "suppressed": 0}
    assert CrmWithAudiences.calls == [("upsert_profile", [ADA])]  # the add is not repeated
    assert app.dead_letters("crm") == []


def test_a_dry_run_lists_each_operation_without_sending(app):
    class Previewing(CrmWithAudiences):
        def preview(self, operation, destination, items):
            return [{"operation": str(operation), "profiles": [i.profile_id for i in items]}]

    register_connector("crm_with_audiences", Previewing)
    planned = app.dry_run("crm", [item(1, ADA, "entered")])
    assert [p["operation"] for p in planned] == ["add_to_audience", "upsert_profile"]
    assert CrmWithAudiences.calls == []


def test_a_person_the_vendor_cannot_match_is_recorded_as_skipped_not_delivered(tmp_path):
    from connectors.fakes.google import FakeDataManager

    with FakeDataManager(token="t") as fake:
        app = ActivationApplication(Settings(data_dir=tmp_path), destinations=[Configured(
            "ads", "google_customer_match", ("vip",), ("advertising",),
            {"base_url": fake.base_url, "access_token": "t", "operating_account_id": "1",
             "audience_id": "2"})], sleep=lambda seconds: None)
        try:
            no_identifier = dict(item(1, ADA, "entered"), traits={"plan": "pro"})
            outcome = app.deliver("k", "ads", [no_identifier, item(2, BOB, "entered")],
                                  allow_all)
            assert outcome["delivered"] == 1
            assert fake.data_requests() and len(fake.subjects()) == 1
            outcome = app.deliver("k2", "ads", [dict(no_identifier, position=3)], allow_all)
            assert outcome["delivered"] == 0
            assert app.outcomes("ads")[0]["outcome"] == "skipped"
            assert app.stats()["ads"]["delivered"] == 1
        finally:
            app.close()
