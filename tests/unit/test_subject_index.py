"""The subject index (shared.subject_index): a person's export reads their events only,
embedded (SQLite) and on PostgreSQL."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from services.gateway.application import GatewayApplication, IngestRequest
from shared import subject_index
from shared.privacy import subject_of_identifier
from shared.subject_index import BUILT, PENDING, TABLE

ADA = {"type": "identify", "userId": "ada", "traits": {"email": "Ada@Example.com"}}
BYRON = {"type": "identify", "userId": "byron", "traits": {"email": "byron@example.org"}}


@pytest.fixture
def settings(store_settings):
    return store_settings


def ingest(gateway: GatewayApplication, *events: dict) -> None:
    gateway.ingest("web", {"batch": [dict(e, messageId=str(uuid.uuid4())) for e in events]},
                   received_at=datetime.now(UTC))


def batches_found(gateway: GatewayApplication, kind: str, value: str) -> list:
    return list(gateway.events_of_subjects([subject_of_identifier(kind, value)],
                                           IngestRequest.Received))


def index_rows(gateway: GatewayApplication) -> int:
    rm = gateway.read_model()
    return rm.query(f"SELECT count(*) AS n FROM {rm.table(TABLE)}")[0]["n"]


def test_a_person_is_found_in_the_batches_that_hold_them_and_in_no_other(settings):
    gateway = GatewayApplication(settings)
    ingest(gateway, ADA)
    ingest(gateway, BYRON)
    ingest(gateway, BYRON, ADA)

    found = batches_found(gateway, "user_id", "ada")

    assert [[e["userId"] for e in batch.accepted] for batch in found] == [
        ["ada"], ["byron", "ada"]]
    assert len(batches_found(gateway, "email", "ada@example.com")) == 2
    assert batches_found(gateway, "user_id", "nobody") == []
    assert [r["event"]["userId"] for r in gateway.export_subject(
        [], [["user_id", "ada"]])["received"]] == ["ada", "ada"]


def test_the_index_names_nobody(settings):
    gateway = GatewayApplication(settings)
    ingest(gateway, ADA)
    rm = gateway.read_model()
    expected = sorted(gateway.privacy.hashed(subject_of_identifier(*i))
                      for i in (("user_id", "ada"), ("email", "ada@example.com")))

    (pending,) = rm.query(f"SELECT terms FROM {rm.table(PENDING)}")
    gateway.subject_index.fold()
    terms = [r["term"] for r in rm.query(f"SELECT term FROM {rm.table(TABLE)}")]

    # the user id and the email, as keyed hashes (HMAC under the privacy secret), both
    # while the save's row waits to be folded in and once it is
    assert json.loads(pending["terms"]) == expected
    assert sorted(terms) == expected
    assert rm.query(f"SELECT terms FROM {rm.table(PENDING)}") == []


def test_pending_rows_are_folded_in_bulk_and_before_any_lookup(settings):
    gateway = GatewayApplication(settings)
    rm = gateway.read_model()
    for _ in range(3):
        ingest(gateway, ADA)
    assert len(rm.query(f"SELECT terms FROM {rm.table(PENDING)}")) == 3
    assert rm.query(f"SELECT term FROM {rm.table(TABLE)}") == []

    assert len(batches_found(gateway, "user_id", "ada")) == 3  # the lookup folded them in

    assert rm.query(f"SELECT terms FROM {rm.table(PENDING)}") == []


def test_a_process_folds_once_enough_indexed_events_have_gathered(settings, monkeypatch):
    monkeypatch.setattr(subject_index, "FOLD_EVERY", 2)
    gateway = GatewayApplication(settings)
    rm = gateway.read_model()

    ingest(gateway, ADA)
    ingest(gateway, BYRON)

    assert rm.query(f"SELECT terms FROM {rm.table(PENDING)}") == []
    assert len(rm.query(f"SELECT term FROM {rm.table(TABLE)}")) == 4


def test_a_store_written_before_the_index_is_indexed_when_the_service_starts(settings):
    gateway = GatewayApplication(settings)
    ingest(gateway, ADA)
    ingest(gateway, BYRON)
    rm = gateway.read_model()
    rm.execute(f"DROP TABLE {rm.table(TABLE)}")
    rm.execute(f"DROP TABLE {rm.table(BUILT)}")
    gateway.close()

    restarted = GatewayApplication(settings)

    assert len(batches_found(restarted, "user_id", "ada")) == 1
    assert index_rows(restarted) == 4
    restarted.close()
    assert index_rows(GatewayApplication(settings)) == 4  # built once, not again


def test_an_erasure_deletes_the_persons_rows_with_their_key(settings):
    gateway = GatewayApplication(settings)
    ingest(gateway, ADA, BYRON)

    gateway.erase_subject([], [["user_id", "ada"], ["email", "ada@example.com"]])

    assert batches_found(gateway, "user_id", "ada") == []
    assert batches_found(gateway, "email", "ada@example.com") == []
    assert len(batches_found(gateway, "user_id", "byron")) == 1


def test_a_reader_may_open_only_the_items_of_a_batch_it_wants(settings):
    gateway = GatewayApplication(settings)
    gateway.ingest("web", {"batch": [dict(ADA, messageId="m-1"),
                                     dict(BYRON, messageId="m-2")]},
                   received_at=datetime.now(UTC))

    [batch] = gateway.events_of_subjects([subject_of_identifier("user_id", "ada")],
                                         IngestRequest.Received,
                                         open_item=lambda item: item["messageId"] == "m-1")

    ada, byron = batch.accepted
    assert ada["userId"] == "ada"
    assert "userId" not in byron and "byron" not in repr(byron)
