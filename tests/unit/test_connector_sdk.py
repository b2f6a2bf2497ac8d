"""The connector SDK's platform half: operations by sync mode, batches, rate limits,
retries per batch, discovery through entry points, and the dry run."""

from __future__ import annotations

import pytest

from connectors.base import (
    DeliveryItem,
    PermanentDeliveryError,
    SendResult,
    TransientDeliveryError,
)
from connectors.sdk import Capability, Destination, known_connectors
from connectors.sdk.delivery import (
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


def test_a_failing_destination_pauses_longer_each_time_until_it_succeeds():
    from connectors.sdk.delivery import CircuitBreaker

    now = [100.0]
    waits: list[float] = []
    breaker = CircuitBreaker(first=2.0, longest=5.0, clock=lambda: now[0], sleep=waits.append)
    breaker.wait()
    breaker.failed()
    breaker.wait()
    breaker.failed()
    breaker.failed()
    breaker.wait()
    breaker.succeeded()
    breaker.wait()
    assert waits == [2.0, 5.0]  # none before a failure, 2 s, then doubled up to the cap
