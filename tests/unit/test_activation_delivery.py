"""Activation: planning, consent at send time, retries, dead letters and replay.

Deliveries go to a real loopback WebhookReceiver (it verifies the HMAC signature); consent
is a fake `decide_many` we control, the seam activation is given in production too.
"""

from __future__ import annotations

import uuid

import pytest
from marshmallow import Schema

from connectors.base import DeliveryError, SendResult, register_connector
from connectors.sdk.delivery import DestinationPaused
from services.activation.application import ActivationApplication
from services.activation.destinations import Destination
from services.activation.domain import DestinationLedger, idempotency_key
from services.activation.translation import translator
from shared.config import Settings
from shared.contracts import DELIVERY_PLANNED, SCHEMAS
from shared.envelope import Envelope
from shared.outbox import OutboxRelay
from tessera.testing.webhook_receiver import WebhookReceiver

SECRET = "s3cret"
ATTEMPTS = 3
KEY = "segments/segments.membership_changed/0"
ADA, BOB, CAT = (str(uuid.uuid4()) for _ in range(3))


@pytest.fixture
def receiver():
    with WebhookReceiver(SECRET) as running:
        yield running


def webhook(name: str, receiver: WebhookReceiver, segments: tuple[str, ...],
            purposes: tuple[str, ...] = ("advertising",)) -> Destination:
    return Destination(name, "webhook", segments, purposes,
                       {"url": receiver.base_url + "/hooks/{destination}", "secret": SECRET})


@pytest.fixture
def app(tmp_path, receiver):
    made = ActivationApplication(
        Settings(data_dir=tmp_path, delivery_attempts=ATTEMPTS),
        destinations=[webhook("ads", receiver, ("frequent_buyers",)),
                      webhook("crm", receiver, ("frequent_buyers", "french"), ("marketing",))],
        sleep=lambda seconds: None,
    )
    yield made
    made.close()


class Consent:
    """A fake `consent.decide_many`: allows the profiles in `allowed`, records each call."""

    def __init__(self, *allowed: str):
        self.allowed = set(allowed)
        self.calls: list[list[dict]] = []

    def __call__(self, requests: list[dict]) -> list[dict]:
        self.calls.append(requests)
        return [{"decision_id": f"d{len(self.calls)}-{i}", "allowed": r["profile_id"] in
                 self.allowed, "reason": "ok" if r["profile_id"] in self.allowed
                 else "no consent record for purpose 'advertising'"}
                for i, r in enumerate(requests)]


class Publisher:
    def __init__(self):
        self.envelopes: list[Envelope] = []

    def publish(self, envelopes: list[Envelope]) -> None:
        self.envelopes.extend(envelopes)


def change(position: int, profile_id: str, segment: str = "frequent_buyers",
           kind: str = "entered") -> dict:
    return {"position": position, "profile_id": profile_id, "segment": segment, "change": kind,
            "at": "2026-01-03T00:00:00.000Z", "reason": "because",
            "traits": {"email": f"{profile_id[:4]}@example.com"},
            "cause": {"partition": "0", "position": position * 10},
            "received_at": "2026-01-03T00:00:00.000Z"}


def planned(app: ActivationApplication, *changes: dict) -> dict[str, Envelope]:
    """Plan the changes and relay the plan: one envelope per destination, as on the broker."""
    app.plan(KEY, list(changes))
    publisher = Publisher()
    OutboxRelay(app, translator(8), publisher).relay_once()
    by_destination = {}
    for envelope in publisher.envelopes:
        assert envelope.type == DELIVERY_PLANNED
        assert envelope.partition not in by_destination
        by_destination[envelope.partition] = envelope
    return by_destination


def deliver(app: ActivationApplication, envelope: Envelope, consent) -> dict[str, int]:
    return app.deliver(envelope.tracking_key, envelope.partition, envelope.items, consent)


def ledger_events(app: ActivationApplication, name: str) -> list:
    return [type(e).__name__ for e in app.events.get(DestinationLedger.create_id(name))]


# ---- planning ------------------------------------------------------------------------------
def test_planning_creates_one_delivery_per_change_and_destination_following_its_segment(app):
    envelopes = planned(app, change(1, ADA), change(2, BOB, "french"), change(3, CAT, "other"))

    assert set(envelopes) == {"ads", "crm"}
    ads = [(i["profile_id"], i["segment"]) for i in envelopes["ads"].items]
    crm = [(i["profile_id"], i["segment"]) for i in envelopes["crm"].items]
    assert ads == [(ADA, "frequent_buyers")]
    assert crm == [(ADA, "frequent_buyers"), (BOB, "french")]
    for item in envelopes["ads"].items + envelopes["crm"].items:
        SCHEMAS[(DELIVERY_PLANNED, 1)]().load(item)


def test_the_idempotency_key_is_stable_for_a_change_and_a_destination(app, tmp_path, receiver):
    envelopes = planned(app, change(1, ADA))
    key = envelopes["ads"].items[0]["idempotency_key"]
    assert key == idempotency_key("ads", change(1, ADA))
    assert key != envelopes["crm"].items[0]["idempotency_key"]
    assert key != idempotency_key("ads", change(1, ADA, kind="exited"))
    assert key != idempotency_key("ads", change(2, ADA))

    elsewhere = ActivationApplication(Settings(data_dir=tmp_path / "other"),
                                      destinations=list(app.destinations.values()))
    try:
        assert planned(elsewhere, change(1, ADA))["ads"].items[0]["idempotency_key"] == key
    finally:
        elsewhere.close()


def test_a_redelivered_membership_batch_is_not_planned_twice(app):
    assert app.plan(KEY, [change(1, ADA)]) == 2
    before = app.process_recorder.max_notification_id()
    assert app.plan(KEY, [change(1, ADA)]) == 0
    assert app.process_recorder.max_notification_id() == before


# ---- delivering ----------------------------------------------------------------------------
def test_only_the_allowed_are_sent_and_the_denied_are_suppressed_with_their_decision(
        app, receiver):
    envelope = planned(app, change(1, ADA), change(2, BOB), change(3, CAT))["ads"]
    consent = Consent(ADA, CAT)

    outcome = deliver(app, envelope, consent)

    assert outcome == {"delivered": 2, "suppressed": 1, "dead_lettered": 0}
    (requests,) = consent.calls
    assert [(r["profile_id"], r["destination"], r["purposes"], r["after"]) for r in requests] == [
        (ADA, "ads", ["advertising"], {"partition": "0", "position": 10}),
        (BOB, "ads", ["advertising"], {"partition": "0", "position": 20}),
        (CAT, "ads", ["advertising"], {"partition": "0", "position": 30}),
    ]
    arrived = receiver.items()
    assert receiver.unauthorized == 0  # the receiver verified every signature
    assert [(i["destination"], i["profile_id"], i["decision_id"]) for i in arrived] == [
        ("ads", ADA, "d1-0"), ("ads", CAT, "d1-2")]
    assert arrived[0]["idempotency_key"] == envelope.items[0]["idempotency_key"]
    assert arrived[0]["traits"] == envelope.items[0]["traits"]

    assert app.stats()["ads"] == {"destination": "ads", "delivered": 2, "suppressed": 1,
                                  "duplicates": 0, "dead_letters": 0}
    suppressed = [e for e in app.events.get(DestinationLedger.create_id("ads"))
                  if isinstance(e, DestinationLedger.Suppressed)]
    (event,) = suppressed
    assert [(i["profile_id"], i["decision_id"]) for i in event.items] == [(BOB, "d1-1")]
    assert "advertising" in event.items[0]["reason"]


def test_when_everyone_is_denied_nothing_is_sent(app, receiver):
    envelope = planned(app, change(1, ADA), change(2, BOB))["ads"]
    assert deliver(app, envelope, Consent()) == {"delivered": 0, "suppressed": 2,
                                                 "dead_lettered": 0}
    assert receiver.requests == 0


def test_a_redelivered_batch_sends_nothing_twice(app, receiver):
    envelope = planned(app, change(1, ADA), change(2, BOB))["ads"]
    consent = Consent(ADA, BOB)
    deliver(app, envelope, consent)
    requests = receiver.requests

    assert deliver(app, envelope, consent) == {"delivered": 0, "suppressed": 0,
                                               "dead_lettered": 0}
    assert receiver.requests == requests
    assert len(consent.calls) == 1
    assert receiver.duplicates == 0
    assert app.stats()["ads"]["delivered"] == 2


def test_a_batch_is_delivered_once_the_receiver_recovers_within_the_retry_budget(app, receiver):
    envelope = planned(app, change(1, ADA))["ads"]
    receiver.fail_next(ATTEMPTS - 1, status=503)
    assert deliver(app, envelope, Consent(ADA))["delivered"] == 1
    assert receiver.requests == ATTEMPTS
    assert [i["profile_id"] for i in receiver.items()] == [ADA]


def test_consent_that_cannot_be_decided_yet_leaves_the_batch_to_be_retried(app, receiver):
    envelope = planned(app, change(1, ADA))["ads"]

    def lagging(requests):
        raise TimeoutError("consent did not answer")

    with pytest.raises(TimeoutError):
        deliver(app, envelope, lagging)
    assert receiver.requests == 0
    assert deliver(app, envelope, Consent(ADA))["delivered"] == 1


# ---- dead letters and replay ---------------------------------------------------------------
def dead_letter_one(app, receiver, *profiles: str) -> tuple[dict, Envelope]:
    envelope = planned(app, *(change(i + 1, p) for i, p in enumerate(profiles)))["ads"]
    receiver.fail_next(ATTEMPTS + 2, status=503)
    outcome = deliver(app, envelope, Consent(*profiles))
    assert outcome == {"delivered": 0, "suppressed": 0, "dead_lettered": len(profiles)}
    (letter,) = app.dead_letters("ads")
    return letter, envelope


def test_a_destination_failing_beyond_the_retry_budget_ends_in_a_dead_letter(app, receiver):
    letter, envelope = dead_letter_one(app, receiver, ADA, BOB)

    assert receiver.requests == ATTEMPTS
    assert receiver.items() == []
    assert [i["idempotency_key"] for i in letter["items"]] == [
        i["idempotency_key"] for i in envelope.items]
    assert "503" in letter["error"]
    assert app.stats()["ads"]["dead_letters"] == 1
    # The batch counts as consumed: a redelivery does not hammer the destination again.
    assert deliver(app, envelope, Consent(ADA, BOB))["dead_lettered"] == 0
    assert receiver.requests == ATTEMPTS


def test_a_dead_letter_is_replayed_after_the_receiver_recovers_deciding_consent_again(
        app, receiver):
    letter, _ = dead_letter_one(app, receiver, ADA, BOB)
    receiver.fail_next(0)  # recovered
    consent = Consent(ADA, BOB)

    assert app.replay("ads", letter["id"], consent) == {"delivered": 2, "suppressed": 0}

    assert len(consent.calls) == 1  # decided again, at replay time
    arrived = receiver.items()
    assert [(i["profile_id"], i["decision_id"]) for i in arrived] == [(ADA, "d1-0"),
                                                                      (BOB, "d1-1")]
    assert app.dead_letters("ads") == []
    assert app.stats()["ads"]["delivered"] == 2


def test_a_replay_where_consent_is_now_denied_suppresses_instead(app, receiver):
    letter, _ = dead_letter_one(app, receiver, ADA, BOB)
    receiver.fail_next(0)

    assert app.replay("ads", letter["id"], Consent(BOB)) == {"delivered": 1, "suppressed": 1}

    assert [i["profile_id"] for i in receiver.items()] == [BOB]
    assert app.dead_letters("ads") == []
    assert app.stats()["ads"] == {"destination": "ads", "delivered": 1, "suppressed": 1,
                                  "duplicates": 0, "dead_letters": 0}


def test_a_replay_that_fails_again_keeps_the_letter_and_counts_nothing(app, receiver):
    letter, _ = dead_letter_one(app, receiver, ADA, BOB)
    receiver.fail_next(ATTEMPTS, status=503)

    with pytest.raises(DeliveryError):
        app.replay("ads", letter["id"], Consent(BOB))

    assert [d["id"] for d in app.dead_letters("ads")] == [letter["id"]]
    assert app.stats()["ads"]["suppressed"] == 0
    receiver.fail_next(0)
    assert app.replay("ads", letter["id"], Consent(BOB)) == {"delivered": 1, "suppressed": 1}
    assert app.stats()["ads"]["suppressed"] == 1
    assert ledger_events(app, "ads").count("Suppressed") == 1


def test_replaying_an_unknown_letter_is_an_error(app):
    with pytest.raises(KeyError):
        app.replay("ads", "nope", Consent())


def test_destinations_fail_independently(app, receiver):
    envelopes = planned(app, change(1, ADA))
    receiver.fail_next(ATTEMPTS, status=503)
    assert deliver(app, envelopes["ads"], Consent(ADA))["dead_lettered"] == 1
    assert deliver(app, envelopes["crm"], Consent(ADA))["delivered"] == 1
    assert [i["destination"] for i in receiver.items()] == ["crm"]
    assert app.dead_letters("crm") == []


class FlakyConnector:
    """A connector that fails with an unexpected error (a bug, not a DeliveryError)."""

    name = "flaky"
    config_schema = Schema
    broken = True
    sent: list = []

    def send(self, destination, items):
        if FlakyConnector.broken:
            raise RuntimeError("connector bug")
        FlakyConnector.sent.extend(i.profile_id for i in items)
        return SendResult(delivered=[i.idempotency_key for i in items], status=200)

    def close(self):
        pass


def test_an_unexpected_connector_failure_leaves_the_batch_to_be_retried_and_counts_nothing(
        tmp_path):
    register_connector("flaky", FlakyConnector)
    FlakyConnector.broken, FlakyConnector.sent = False, []
    flaky = Destination("flaky", "flaky", ("frequent_buyers",), ("advertising",))
    app = ActivationApplication(Settings(data_dir=tmp_path), destinations=[flaky])
    try:
        deliver(app, planned(app, change(1, CAT))["flaky"], Consent(CAT))  # the ledger exists
        envelope = planned(app, change(2, ADA), change(3, BOB))["flaky"]
        FlakyConnector.broken = True
        for _ in range(2):
            with pytest.raises(RuntimeError):
                deliver(app, envelope, Consent(ADA))
            assert app.stats()["flaky"]["suppressed"] == 0
        FlakyConnector.broken = False
        assert deliver(app, envelope, Consent(ADA)) == {"delivered": 1, "suppressed": 1,
                                                        "dead_lettered": 0}
        assert FlakyConnector.sent == [CAT, ADA]
        assert app.stats()["flaky"]["suppressed"] == 1
        assert ledger_events(app, "flaky").count("Suppressed") == 1
    finally:
        app.close()


# ---- the circuit -----------------------------------------------------------------------------
@pytest.fixture
def clock():
    return [1000.0]


@pytest.fixture
def tripping_app(tmp_path, receiver, clock):
    """Its circuit opens after as many failed attempts in a row as one batch's budget."""
    made = ActivationApplication(
        Settings(data_dir=tmp_path, delivery_attempts=ATTEMPTS, circuit_failures=ATTEMPTS),
        destinations=[webhook("ads", receiver, ("frequent_buyers",)),
                      webhook("crm", receiver, ("frequent_buyers",), ("marketing",))],
        sleep=lambda seconds: None, clock=lambda: clock[0])
    yield made
    made.close()


def test_while_its_circuit_is_open_a_batch_waits_without_consent_requests_or_records(
        tripping_app, receiver):
    app = tripping_app
    dead_letter_one(app, receiver, ADA)  # three failed attempts in a row: the circuit opens
    envelope = planned(app, change(2, BOB))["ads"]
    consent = Consent(BOB)
    requests, events = receiver.requests, ledger_events(app, "ads")

    with pytest.raises(DestinationPaused) as paused:
        deliver(app, envelope, consent)

    assert paused.value.retry_after == 2.0 and "503" in str(paused.value)
    assert consent.calls == [] and receiver.requests == requests
    assert ledger_events(app, "ads") == events  # nothing written: the batch is not consumed
    assert deliver(app, planned(app, change(3, CAT))["crm"], Consent(CAT))["delivered"] == 1


def test_after_the_pause_a_single_attempt_probes_and_a_failed_probe_pauses_twice_as_long(
        tripping_app, receiver, clock):
    app = tripping_app
    dead_letter_one(app, receiver, ADA)
    envelope = planned(app, change(2, BOB))["ads"]
    clock[0] += 2.0
    receiver.fail_next(10, status=503)
    requests = receiver.requests

    assert deliver(app, envelope, Consent(BOB))["dead_lettered"] == 1

    assert receiver.requests == requests + 1  # one attempt, not the whole budget
    later = planned(app, change(3, CAT))["ads"]
    with pytest.raises(DestinationPaused) as paused:
        deliver(app, later, Consent(CAT))
    assert paused.value.retry_after == 4.0


def test_a_successful_probe_closes_the_circuit_and_the_waiting_batch_goes_through(
        tripping_app, receiver, clock):
    app = tripping_app
    dead_letter_one(app, receiver, ADA)
    envelope = planned(app, change(2, BOB))["ads"]
    with pytest.raises(DestinationPaused):
        deliver(app, envelope, Consent(BOB))
    clock[0] += 2.0
    receiver.fail_next(0)

    assert deliver(app, envelope, Consent(BOB))["delivered"] == 1
    assert deliver(app, planned(app, change(3, CAT))["ads"], Consent(CAT))["delivered"] == 1
    assert [i["profile_id"] for i in receiver.items()] == [BOB, CAT]


def test_a_replay_goes_even_while_the_circuit_is_open_and_its_success_closes_it(
        tripping_app, receiver):
    app = tripping_app
    letter, _ = dead_letter_one(app, receiver, ADA)
    receiver.fail_next(0)

    assert app.replay("ads", letter["id"], Consent(ADA))["delivered"] == 1
    assert deliver(app, planned(app, change(2, BOB))["ads"], Consent(BOB))["delivered"] == 1
