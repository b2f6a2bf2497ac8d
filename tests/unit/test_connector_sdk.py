"""The connector SDK's platform half: operations by sync mode, batches, rate limits,
retries per batch, discovery through entry points, and the dry run."""

from __future__ import annotations

import pytest

from connectors.base import (
    DeliveryError,
    DeliveryItem,
    PermanentDeliveryError,
    SendResult,
    TransientDeliveryError,
)
from connectors.sdk import Capability, Destination, known_connectors
from connectors.sdk.delivery import (
    Batch,
    CircuitBreaker,
    CircuitOpenError,
    DestinationPaused,
    RateLimiter,
    default_sync,
    deliver_batches,
    plan_batches,
    validate_sync,
)
from connectors.sdk.registry import connector_class
from connectors.webhook import WebhookConnector

AUDIENCE = frozenset({Capability.ADD_TO_AUDIENCE, Capability.REMOVE_FROM_AUDIENCE})


def item(key: str, action: str = "entered") -> DeliveryItem:
    return DeliveryItem(idempotency_key=key, profile_id=f"p-{key}", action=action,
                        segment="buyers", traits={"email": f"{key}@example.com"},
                        identifiers={}, occurred_at="2026-01-01T00:00:00Z", decision_id="d")


class Recorder(Destination):
    """A destination that records each call and fails as told (per call, in order)."""

    name = "recorder"
    capabilities = AUDIENCE | {Capability.UPSERT_PROFILE}
    batch_size = 2

    def __init__(self, failures=(), **config):
        super().__init__(**config)
        self.calls: list[tuple[str, list[str]]] = []
        self.failures = list(failures)

    def deliver(self, operation, destination, items):
        self.calls.append((str(operation), [i.idempotency_key for i in items]))
        if self.failures:
            failure = self.failures.pop(0)
            if failure is not None:
                raise failure
        return SendResult(delivered=[i.idempotency_key for i in items], status=200)


def test_a_mirrored_segment_adds_on_entry_and_removes_on_exit():
    batches = plan_batches([item("a"), item("b", "exited"), item("c")],
                           validate_sync({"mirror"}), AUDIENCE, 10)
    assert [(str(b.operation), b.keys) for b in batches] == [
        ("add_to_audience", ["a", "c"]), ("remove_from_audience", ["b"])]


def test_upsert_traits_alone_ignores_exits():
    batches = plan_batches([item("a"), item("b", "exited")], validate_sync({"upsert_traits"}),
                           Recorder.capabilities, 10)
    assert [(str(b.operation), b.keys) for b in batches] == [("upsert_profile", ["a"])]


def test_an_operation_the_connector_does_not_declare_sends_nothing():
    assert plan_batches([item("a")], validate_sync({"upsert_traits"}), AUDIENCE, 10) == []


def test_batches_never_exceed_the_batch_size():
    batches = plan_batches([item(str(n)) for n in range(5)], validate_sync({"mirror"}),
                           AUDIENCE, 2)
    assert [b.keys for b in batches] == [["0", "1"], ["2", "3"], ["4"]]


def test_an_unknown_sync_mode_is_refused_by_name():
    with pytest.raises(ValueError, match=r"sync: unknown mode.*add_on_exit"):
        validate_sync({"add_on_exit"})


def test_audiences_mirror_by_default_and_crms_upsert():
    assert default_sync(AUDIENCE) == {"add_on_entry", "remove_on_exit"}
    assert default_sync(frozenset({Capability.UPSERT_PROFILE})) == {"upsert_traits"}


def test_a_batch_that_fails_for_good_is_reported_and_the_others_still_go():
    recorder = Recorder(failures=[None, PermanentDeliveryError("HTTP 400", status=400)])
    batches = plan_batches([item(str(n)) for n in range(4)], validate_sync({"mirror"}),
                           recorder.capabilities, 2)
    report = deliver_batches(recorder, "ads", batches, attempts=3, sleep=lambda s: None)
    assert report.delivered == ["0", "1"]
    assert [(b.keys, e.status) for b, e in report.failed] == [(["2", "3"], 400)]
    assert len(recorder.calls) == 2  # a 400 is never retried


def test_a_transient_failure_is_retried_after_at_least_its_retry_after():
    waits: list[float] = []
    recorder = Recorder(failures=[TransientDeliveryError("429", retry_after=7.0, status=429)])
    batches = plan_batches([item("a")], validate_sync({"mirror"}), recorder.capabilities, 2)
    report = deliver_batches(recorder, "ads", batches, attempts=3, sleep=waits.append)
    assert report.delivered == ["a"]
    assert waits and waits[0] >= 7.0
    assert report.requests == 2


def test_the_rate_limiter_spaces_requests_beyond_its_burst():
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds):
        waits.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(2.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        limiter.acquire()
    assert waits == [0.5, 0.5]  # a burst of 2, then one every half second


def test_the_built_in_webhook_is_found_through_the_entry_point_group():
    assert "webhook" in known_connectors()
    assert connector_class("webhook") is WebhookConnector


def test_a_dry_run_shows_the_request_with_its_signatures_hidden():
    connector = WebhookConnector("http://127.0.0.1:9/hooks/{destination}", "s3cret")
    (request,) = connector.preview(Capability.ADD_TO_AUDIENCE, "ads", [item("a")])
    assert request["url"] == "http://127.0.0.1:9/hooks/ads"
    assert request["headers"]["X-Tessera-Signature"] == "***"
    assert '"operation":"add_to_audience"' in request["body"]
    connector.close()


def test_the_trait_mapping_renames_fields_per_destination():
    recorder = Recorder(mapping={"email": "Email__c"})
    assert recorder.fields_of(item("a")) == {"Email__c": "a@example.com"}


def transient(retry_after: float | None = None) -> DeliveryError:
    return DeliveryError("HTTP 503", retryable=True, retry_after=retry_after, status=503)


def test_a_circuit_opens_after_the_threshold_of_failed_attempts_in_a_row():
    now = [100.0]
    circuit = CircuitBreaker(threshold=3, first=2.0, longest=5.0, clock=lambda: now[0])
    circuit.failed(transient())
    circuit.failed(transient())
    circuit.admit("ads")  # two in a row: still closed
    circuit.failed(transient())
    with pytest.raises(DestinationPaused) as paused:
        circuit.admit("ads")
    assert paused.value.retry_after == 2.0 and "HTTP 503" in str(paused.value)


def test_a_success_between_failures_keeps_the_circuit_closed():
    circuit = CircuitBreaker(threshold=2)
    for _ in range(5):
        circuit.failed(transient())
        circuit.succeeded()
    assert circuit.closed and circuit.remaining() == 0


def test_after_the_pause_one_probe_with_a_single_attempt_goes_and_its_outcome_decides():
    now = [100.0]
    circuit = CircuitBreaker(threshold=1, first=2.0, longest=5.0, clock=lambda: now[0])
    circuit.failed(transient())
    assert circuit.remaining() == 2.0
    now[0] += 2.0
    assert circuit.half_open and circuit.remaining() == 0 and circuit.attempts(5) == 1
    circuit.failed(transient())  # the probe failed: open again, twice as long
    assert circuit.remaining() == 4.0
    now[0] += 4.0
    circuit.failed(transient())
    assert circuit.remaining() == 5.0  # capped
    now[0] += 5.0
    circuit.succeeded()  # the probe went through
    assert circuit.closed and circuit.attempts(5) == 5


def test_a_retry_after_longer_than_a_worker_should_wait_opens_the_circuit_at_once():
    now = [0.0]
    circuit = CircuitBreaker(threshold=5, first=2.0, longest_inline_wait=10.0,
                             clock=lambda: now[0])
    circuit.failed(transient(retry_after=1.0))
    assert circuit.closed  # a short Retry-After is waited for within the batch's retries
    circuit.failed(transient(retry_after=120.0))
    assert circuit.remaining() == 120.0  # the destination's own wish, not our 2 s


class Outage:
    """Answers the first ``healthy`` calls, then 503 for ever; counts the calls."""

    def __init__(self, healthy: int = 0) -> None:
        self.healthy, self.calls = healthy, 0

    def deliver(self, operation, destination, items):
        self.calls += 1
        if self.calls > self.healthy:
            raise transient()
        return SendResult(delivered=[i.idempotency_key for i in items], status=200)


def batches_of(*keys: str) -> list[Batch]:
    return [Batch(Capability.UPSERT_PROFILE, (item(key),)) for key in keys]


def test_a_circuit_opening_before_anything_was_sent_pauses_the_whole_call():
    down = Outage()
    with pytest.raises(DestinationPaused) as paused:
        deliver_batches(down, "ads", batches_of("a", "b"), attempts=5, sleep=lambda s: None,
                        circuit=CircuitBreaker(threshold=2, first=2.0))
    assert down.calls == 2  # not the 5 attempts of the budget, and nothing for b
    assert paused.value.retry_after == pytest.approx(2.0, abs=0.1)


def test_a_circuit_opening_mid_call_dead_letters_the_rest_and_keeps_what_was_delivered():
    down = Outage(healthy=1)
    report = deliver_batches(down, "ads", batches_of("a", "b", "c"), attempts=5,
                             sleep=lambda s: None, circuit=CircuitBreaker(threshold=2))
    assert down.calls == 3  # a, then b twice; c is not attempted
    assert report.delivered == ["a"]
    assert [batch.keys for batch, _ in report.failed] == [["b"], ["c"]]
    assert all(isinstance(error, CircuitOpenError) for _, error in report.failed)
    assert report.failed[0][1].status == 503


def test_a_batch_that_spends_its_whole_budget_is_dead_lettered_even_as_the_circuit_opens():
    down = Outage()
    circuit = CircuitBreaker(threshold=3)
    report = deliver_batches(down, "ads", batches_of("a"), attempts=3, sleep=lambda s: None,
                             circuit=circuit)
    assert down.calls == 3 and [batch.keys for batch, _ in report.failed] == [["a"]]
    assert circuit.remaining() > 0


def test_a_rejected_batch_says_nothing_about_the_destinations_health():
    class Picky:
        def deliver(self, operation, destination, items):
            raise DeliveryError("HTTP 400", retryable=False, status=400)

    circuit = CircuitBreaker(threshold=1)
    deliver_batches(Picky(), "ads", [Batch(Capability.UPSERT_PROFILE, (item("a"),))],
                    attempts=3, sleep=lambda s: None, circuit=circuit)
    assert circuit.closed
