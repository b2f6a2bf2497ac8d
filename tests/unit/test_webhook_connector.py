"""The webhook connector against the real loopback receiver (no mocks of our own code)."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest

from connectors.base import (
    DeliveryItem,
    PermanentDeliveryError,
    TransientDeliveryError,
    load_connector,
    parse_retry_after,
    redact_config,
)
from connectors.retry import send_with_retries
from connectors.webhook import WebhookConnector, verify_signature
from tessera.testing.webhook_receiver import WebhookReceiver, spawn_receiver

SECRET = "s3cret"


def make_items(n: int = 3, prefix: str = "k") -> list[DeliveryItem]:
    return [
        DeliveryItem(
            idempotency_key=f"{prefix}-{i}",
            profile_id=f"p-{i}",
            action="entered",
            segment="vip",
            traits={"plan": "pro", "score": i},
            identifiers={"email": f"user{i}@example.com"},
            occurred_at="2026-01-01T00:00:00+00:00",
            decision_id=f"d-{i}",
        )
        for i in range(n)
    ]


class RecordingSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def receiver():
    with WebhookReceiver(SECRET) as running:
        yield running


@pytest.fixture
def connector(receiver):
    with WebhookConnector(receiver.base_url + "/hooks/{destination}", SECRET) as made:
        yield made


def keys_of(items) -> list[str]:
    return [item["idempotency_key"] for item in items]


def test_a_batch_is_delivered_once_with_a_valid_signature(receiver, connector):
    items = make_items(3)

    result = connector.send("crm", items)

    assert result.status == 200
    assert result.delivered == ["k-0", "k-1", "k-2"]
    assert result.duplicate_keys == []
    received = receiver.items()
    assert keys_of(received) == ["k-0", "k-1", "k-2"]
    assert {item["destination"] for item in received} == {"crm"}
    assert received[0]["traits"] == {"plan": "pro", "score": 0}
    assert received[0]["decision_id"] == "d-0"
    assert receiver.requests == 1
    assert receiver.unauthorized == 0


def test_the_signature_covers_the_exact_body_and_nothing_else(connector):
    body, headers = connector.build_request("crm", make_items(2))

    assert verify_signature(SECRET, body, headers["X-Tessera-Signature"])
    assert not verify_signature(SECRET, body + b" ", headers["X-Tessera-Signature"])
    assert not verify_signature("other", body, headers["X-Tessera-Signature"])
    assert not verify_signature(SECRET, body, None)
    assert not verify_signature(SECRET, body, "sha256=zz\u00e9")
    payload = json.loads(body)
    assert payload["destination"] == "crm"
    assert payload["sent_at"]
    assert [item["idempotency_key"] for item in payload["items"]] == ["k-0", "k-1"]
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Tessera-Timestamp"].isdigit()


def test_the_batch_idempotency_key_does_not_depend_on_item_order(connector):
    items = make_items(3)

    _, forward = connector.build_request("crm", items)
    _, backward = connector.build_request("crm", list(reversed(items)))

    assert forward["Idempotency-Key"] == backward["Idempotency-Key"]
    assert len(forward["Idempotency-Key"]) == 64


def test_a_bad_secret_is_refused_by_the_receiver(receiver):
    with (
        WebhookConnector(receiver.url_for("crm"), "wrong-secret") as impostor,
        pytest.raises(PermanentDeliveryError) as raised,
    ):
        impostor.send("crm", make_items(2))

    assert raised.value.status == 401
    assert raised.value.retryable is False
    assert receiver.items() == []
    assert receiver.unauthorized == 1


def test_a_503_then_success_is_retried_and_delivered_once(receiver, connector):
    receiver.fail_next(1, status=503)
    sleep = RecordingSleep()

    result = send_with_retries(connector, "crm", make_items(2), sleep=sleep)

    assert result.delivered == ["k-0", "k-1"]
    assert keys_of(receiver.items()) == ["k-0", "k-1"]
    assert receiver.requests == 2
    assert receiver.duplicates == 0
    assert len(sleep.calls) == 1


def test_a_429_with_retry_after_waits_at_least_that_long(receiver, connector):
    receiver.fail_next(1, status=429, retry_after=2)
    sleep = RecordingSleep()

    result = send_with_retries(connector, "crm", make_items(1), base=0.01, sleep=sleep)

    assert result.delivered == ["k-0"]
    assert len(sleep.calls) == 1
    assert sleep.calls[0] >= 2


def test_failures_can_be_injected_over_http_with_an_http_date_retry_after(receiver, connector):
    later = format_datetime(datetime.fromtimestamp(4102444800, UTC), usegmt=True)  # 2100
    answer = httpx.post(
        f"{receiver.base_url}/_control",
        json={"fail_next": 1, "status": 503, "retry_after": later},
    )
    assert answer.status_code == 200

    with pytest.raises(TransientDeliveryError) as raised:
        connector.send("crm", make_items(1))

    assert raised.value.status == 503
    assert raised.value.retry_after is not None
    assert raised.value.retry_after > 3600


def test_retry_after_is_read_as_seconds_or_as_an_http_date():
    now = datetime(2026, 1, 1, tzinfo=UTC).timestamp()

    assert parse_retry_after("120", now=now) == 120
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now=now) == 30
    assert parse_retry_after("Wed, 31 Dec 2025 23:00:00 GMT", now=now) == 0
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None) is None


def test_a_400_is_permanent_and_not_retried(receiver, connector):
    receiver.fail_next(1, status=400)
    sleep = RecordingSleep()

    with pytest.raises(PermanentDeliveryError) as raised:
        send_with_retries(connector, "crm", make_items(1), sleep=sleep)

    assert raised.value.status == 400
    assert sleep.calls == []
    assert receiver.requests == 1
    assert receiver.items() == []


def test_the_retry_budget_ends_in_the_last_error_being_raised(receiver, connector):
    receiver.fail_next(10, status=503)
    sleep = RecordingSleep()

    with pytest.raises(TransientDeliveryError) as raised:
        send_with_retries(connector, "crm", make_items(1), attempts=3, sleep=sleep)

    assert raised.value.status == 503
    assert receiver.requests == 3
    assert len(sleep.calls) == 2
    assert all(0 <= s <= 30.0 for s in sleep.calls)
    assert receiver.items() == []


def test_an_unreachable_destination_is_a_transient_error():
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with (
        WebhookConnector(f"http://127.0.0.1:{port}/hooks/x", SECRET, timeout=1.0) as nowhere,
        pytest.raises(TransientDeliveryError) as raised,
    ):
        nowhere.send("x", make_items(1))

    assert raised.value.retryable is True
    assert raised.value.status is None


def test_a_duplicate_send_is_recorded_as_a_raw_duplicate_but_the_item_appears_once(
    receiver, connector
):
    items = make_items(2)

    connector.send("crm", items)
    again = connector.send("crm", items)

    assert keys_of(receiver.items()) == ["k-0", "k-1"]
    assert receiver.duplicates == 2
    assert receiver.requests == 2
    assert again.duplicate_keys == ["k-0", "k-1"]


def test_the_received_list_can_be_filtered_by_time_and_cleared(receiver, connector):
    connector.send("crm", make_items(1, prefix="old"))
    cutoff = receiver.items()[0]["arrived_at"] + 1e-6
    connector.send("crm", make_items(1, prefix="new"))

    recent = httpx.get(f"{receiver.base_url}/_received", params={"since": cutoff}).json()
    assert keys_of(recent["items"]) == ["new-0"]
    assert recent["requests"] == 2

    assert httpx.delete(f"{receiver.base_url}/_received").status_code == 200
    assert httpx.get(f"{receiver.base_url}/_received").json() == {
        "items": [],
        "duplicates": 0,
        "requests": 0,
        "unauthorized": 0,
        "failed": 0,
    }


def test_load_connector_builds_a_webhook_connector_from_a_valid_config(receiver):
    made = load_connector("webhook", {"url": receiver.url_for("crm"), "secret": SECRET})
    try:
        assert isinstance(made, WebhookConnector)
        assert made.send("crm", make_items(1)).delivered == ["k-0"]
    finally:
        made.close()


def test_load_connector_rejects_a_config_missing_url_naming_the_field():
    with pytest.raises(ValueError, match=r"url: Missing data for required field") as raised:
        load_connector("webhook", {"secret": SECRET})

    assert SECRET not in str(raised.value)


def test_load_connector_rejects_a_bad_timeout_and_an_unknown_kind():
    with pytest.raises(ValueError, match=r"timeout: Must be greater than 0"):
        load_connector("webhook", {"url": "http://x.test/h", "secret": SECRET, "timeout": 0})
    with pytest.raises(ValueError, match=r"unknown connector kind 'carrier-pigeon'"):
        load_connector("carrier-pigeon", {})


def test_config_schema_marks_secret_as_a_secret():
    schema_fields = WebhookConnector.config_schema().fields

    assert schema_fields["secret"].metadata["secret"] is True
    assert schema_fields["secret"].required
    assert schema_fields["url"].required
    assert not schema_fields["url"].metadata.get("secret")
    assert all(field.metadata.get("description") for field in schema_fields.values())
    assert redact_config("webhook", {"url": "http://x", "secret": SECRET}) == {
        "url": "http://x",
        "secret": "***",
    }


def test_the_receiver_runs_as_a_subprocess():
    process, base_url = spawn_receiver(SECRET)
    try:
        assert base_url.startswith("http://127.0.0.1:")
        with WebhookConnector(f"{base_url}/hooks/crm", SECRET) as to_child:
            assert to_child.send("crm", make_items(2)).status == 200

        received = httpx.get(f"{base_url}/_received").json()

        assert keys_of(received["items"]) == ["k-0", "k-1"]
        assert received["requests"] == 1
        assert all(isinstance(item["arrived_at"], float) for item in received["items"])
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


# ---- Standard Webhooks v1.0.0 -------------------------------------------------------------
def test_the_standard_webhooks_signature_reproduces_the_libraries_vector():
    from connectors.webhook import standard_signature

    assert standard_signature("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                              "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                              b'{"test": 2432232314}') == \
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_a_whsec_secret_is_keyed_with_its_decoded_bytes_not_its_text():
    from connectors.webhook import standard_signature

    body = (b'{"type":"contact.updated","timestamp":"2025-01-01T00:00:00Z",'
            b'"data":{"id":"c_123"}}')
    signed = standard_signature("whsec_Y2RwLXRlc3Qtc2VjcmV0LTAxMjM0NTY3ODlhYg==",
                                "msg_01J9Z3K7Q2XW", 1735689600, body)
    assert signed == "v1,r379hOPQMs/ulxOXeIrU+tFX3K92orIFSz6p+L2BV5k="
    assert signed != "v1,WWwrIcqyQJw9pWItwGhVoe4mP5TVikNLjR+Ll5NmT70="


def test_a_sent_batch_verifies_as_standard_webhooks_within_five_minutes_only():
    from connectors.webhook import verify_standard_signature

    secret = "whsec_Y2RwLXRlc3Qtc2VjcmV0LTAxMjM0NTY3ODlhYg=="
    connector = WebhookConnector("http://127.0.0.1:9/h", secret, clock=lambda: 1735689600.0)
    body, headers = connector.build_request("crm", make_items(2))
    lowered = {k.lower(): v for k, v in headers.items()}
    assert lowered["webhook-id"].startswith("msg_")
    assert verify_standard_signature(secret, lowered, body, now=1735689600 + 299)
    assert not verify_standard_signature(secret, lowered, body, now=1735689600 + 301)
    assert not verify_standard_signature(secret, lowered, body + b" ", now=1735689600)
    connector.close()
