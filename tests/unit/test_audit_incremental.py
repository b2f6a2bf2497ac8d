"""Incremental audit verification (the console's audit page): a run goes on from a signed
checkpoint verified before and hashes only what came after it; what it cannot see, tampering
with history it had verified, a full run still finds. Embedded and PostgreSQL, on the
sealed stores of test_audit_tampering."""

from __future__ import annotations

import dataclasses
import json

import pytest
from test_audit_tampering import SIGNING_KEY, history, sealed_template  # noqa: F401

from services.gateway.audit_runs import AuditRuns
from shared.audit import (
    SERVICES,
    key_id,
    open_audit_store,
    verify_service,
)
from shared.readmodel import ReadModel
from shared.store import ServiceApplication
from tessera.testing.tampering import Tampering

SERVICE = "contacts"
TRUSTED = {key_id(SIGNING_KEY.public_key()): SIGNING_KEY.public_key()}


def checkpoints(settings, service=SERVICE):
    store = open_audit_store(settings, service)
    try:
        return list(store.checkpoints())
    finally:
        store.close()


def middle_checkpoint(settings):
    found = checkpoints(settings)
    assert len(found) >= 3  # sealed in batches of 3 events
    return found[len(found) // 2]


def events_after(settings, checkpoint):
    attacker = Tampering(settings, SERVICE)
    try:
        return [r for r in attacker.rows() if r.notification_id > checkpoint.notification_id]
    finally:
        attacker.close()


def test_an_incremental_run_hashes_only_what_was_stored_after_the_checkpoint_it_goes_on_from(
        history):  # noqa: F811
    full = verify_service(history, SERVICE, TRUSTED)
    start = middle_checkpoint(history)

    incremental = verify_service(history, SERVICE, TRUSTED, start=start)

    assert full.ok and incremental.ok
    assert incremental.started_from == start
    assert incremental.hashed == len(events_after(history, start)) < full.hashed
    assert incremental.events == full.events
    assert incremental.verified_to == full.verified_to == checkpoints(history)[-1]


def test_tampering_after_that_checkpoint_is_found_by_the_incremental_run(
        history):  # noqa: F811
    start = middle_checkpoint(history)
    victim = events_after(history, start)[0]
    attacker = Tampering(history, SERVICE)
    attacker.alter(victim.notification_id)
    attacker.close()

    report = verify_service(history, SERVICE, TRUSTED, start=start)

    assert not report.ok
    assert report.findings[0].kind == "altered"
    assert report.findings[0].notification_id == victim.notification_id


def test_tampering_before_that_checkpoint_is_left_to_the_full_run(history):  # noqa: F811
    start = middle_checkpoint(history)
    attacker = Tampering(history, SERVICE)
    victim = attacker.rows()[1]
    assert victim.notification_id <= start.notification_id
    attacker.alter(victim.notification_id)
    attacker.close()

    incremental = verify_service(history, SERVICE, TRUSTED, start=start)
    full = verify_service(history, SERVICE, TRUSTED)

    assert incremental.ok  # what the incremental run does not claim to check
    assert not full.ok
    assert full.findings[0].kind == "altered"


def test_a_start_whose_signature_does_not_hold_is_not_gone_on_from(history):  # noqa: F811
    start = middle_checkpoint(history)
    forged = dataclasses.replace(start, chain_head=bytes(32))

    report = verify_service(history, SERVICE, TRUSTED, start=forged)

    assert report.started_from is None
    assert report.ok
    assert report.hashed == report.events


@pytest.fixture
def runs(history):  # noqa: F811
    """The console's runs, remembered in a gateway store beside the audited ones."""
    class Gateway(ServiceApplication):
        service_name = "gateway"

    gateway = Gateway(history)
    schema = "gateway" if history.database == "postgres" else None
    yield AuditRuns(ReadModel(gateway.process_recorder, schema))
    gateway.close()


def test_the_console_runs_in_full_first_then_goes_on_from_where_it_verified(
        history, runs):  # noqa: F811

    first = {r["service"]: r for r in runs.verify(history, TRUSTED)}
    second = {r["service"]: r for r in runs.verify(history, TRUSTED)}

    assert all(first[s]["ok"] and first[s]["full"] for s in SERVICES)
    assert all(second[s]["ok"] and not second[s]["full"] for s in SERVICES)
    assert second[SERVICE]["hashed"] == first[SERVICE]["unsealed"]  # only what is unsealed
    assert second[SERVICE]["last_full_at"] == first[SERVICE]["last_full_at"]
    assert second[SERVICE]["last_full_ok"] is True


def test_a_run_that_finds_tampering_forgets_its_point_so_the_next_one_is_full(
        history, runs):  # noqa: F811
    runs.verify(history, TRUSTED)
    start = middle_checkpoint(history)  # as if the last run had verified up to here
    runs.rm.execute(f"UPDATE {runs.table} SET checkpoint = %s WHERE service = %s",
                    [json.dumps(start.to_json()), SERVICE])
    victim = events_after(history, start)[0]
    attacker = Tampering(history, SERVICE)
    attacker.alter(victim.notification_id)
    attacker.close()

    broken = {r["service"]: r for r in runs.verify(history, TRUSTED)}[SERVICE]
    forgotten = runs.remembered(SERVICE).point
    after = {r["service"]: r for r in runs.verify(history, TRUSTED)}[SERVICE]

    assert not broken["ok"] and not broken["full"]
    assert broken["from_notification"] == start.notification_id
    assert forgotten is None
    assert after["full"] and not after["ok"]
    assert after["last_full_ok"] is False


@pytest.mark.parametrize("service", [SERVICE])
def test_a_full_run_on_request_checks_every_event_again(history, runs, service):  # noqa: F811
    runs.verify(history, TRUSTED)
    attacker = Tampering(history, service)
    attacker.alter(attacker.rows()[1].notification_id)
    attacker.close()

    incremental = {r["service"]: r for r in runs.verify(history, TRUSTED)}[service]
    full = {r["service"]: r for r in runs.verify(history, TRUSTED, full=True)}[service]

    assert incremental["ok"] and not incremental["full"]
    assert full["full"] and not full["ok"]
    assert full["first_problem"].startswith("altered event")
    assert full["last_full_ok"] is False
