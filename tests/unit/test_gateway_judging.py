"""How the gateway judges what clients post: parsing, authentication, event by event.

Payloads are shaped like segment-analytics-python 2.4.0's (the first tests capture what
that client really sends, through `responses`; the others write it out by hand).
"""

import base64
import gzip
import json
import uuid
from datetime import UTC, datetime

import pytest
import responses
from segment.analytics.client import Client

from services.gateway.domain import (
    MASK,
    BadRequest,
    PayloadTooLarge,
    Rejection,
    Unauthorized,
    judge_batch,
    parse_body,
    partition_key,
    write_key_from,
)

WRITE_KEY = "wk_tessera_demo"
GATEWAY = "https://gateway.tessera.test"
LIBRARY = {"name": "analytics-python", "version": "2.4.0"}
RECEIVED_AT = datetime(2026, 11, 29, 10, 0, 2, 500000, tzinfo=UTC)


def event(type_="track", **fields) -> dict:
    """One event as segment-analytics-python 2.4.0 writes it (nulls included)."""
    base = {
        "integrations": {},
        "anonymousId": None,
        "timestamp": "2026-11-29T10:00:00.123000+00:00",
        "context": {"library": dict(LIBRARY)},
        "type": type_,
        "userId": "user-42",
        "messageId": "0b9c3e0a-5c1e-4f3a-9d0e-2f6a1c7b8e91",
    }
    base.update(
        {
            "identify": {"traits": {"email": "ada@example.com", "name": "Ada Lovelace"}},
            "track": {"event": "Order Completed", "properties": {"revenue": 42.5}},
            "page": {"name": "Pricing", "properties": {"path": "/pricing"}},
            "screen": {"name": "Home", "properties": {}},
            "group": {"groupId": "acme", "traits": {"name": "Acme"}},
            "alias": {"previousId": "anon-7"},
        }[type_]
    )
    base.update(fields)
    return base


def batch(*events: dict, **envelope) -> dict:
    return {
        "batch": list(events),
        "sentAt": "2026-11-29T10:00:01.000000+00:00",
        "writeKey": WRITE_KEY,
        **envelope,
    }


def judge(body: dict, **kwargs) -> tuple[list[dict], list[Rejection]]:
    return judge_batch(body, received_at=RECEIVED_AT, **kwargs)


def accepted_one(body: dict, **kwargs) -> dict:
    accepted, rejected = judge(body, **kwargs)
    assert rejected == []
    assert len(accepted) == 1
    return accepted[0]


def rejected_one(body: dict, **kwargs) -> Rejection:
    accepted, rejected = judge(body, **kwargs)
    assert accepted == []
    assert len(rejected) == 1
    return rejected[0]


def basic(user: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _as_bytes(body: str | bytes) -> bytes:
    return body.encode() if isinstance(body, str) else body


@pytest.fixture
def wire():
    """What segment-analytics-python 2.4.0 puts on the wire: (headers, raw body) of each
    request, captured without a network."""
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, f"{GATEWAY}/v1/batch", json={}, status=200)

        def requests_sent() -> list[tuple[dict, bytes]]:
            # requests keeps a str body as str; on the wire it is UTF-8.
            return [(call.request.headers, _as_bytes(call.request.body)) for call in mock.calls]

        yield requests_sent


# ---------------------------------------------------------------- what the real client sends


def test_a_batch_from_segment_analytics_python_is_accepted_with_its_write_key(wire):
    client = Client(WRITE_KEY, host=GATEWAY, sync_mode=True)
    client.track(user_id="user-42", event="Order Completed", properties={"revenue": 42.5})
    [(headers, raw)] = wire()

    body = parse_body(raw, headers.get("Content-Encoding"))
    assert write_key_from(headers["Authorization"], body) == WRITE_KEY
    stored = accepted_one(body)

    assert stored["userId"] == "user-42"
    assert "anonymousId" not in stored  # the client sent "anonymousId": null
    assert stored["context"]["library"] == LIBRARY
    assert stored["properties"] == {"revenue": 42.5}
    assert stored["receivedAt"] == "2026-11-29T10:00:02.500Z"


def test_a_gzipped_batch_from_the_client_is_decompressed(wire):
    client = Client(WRITE_KEY, host=GATEWAY, sync_mode=True, gzip=True)
    client.identify(user_id="user-42", traits={"email": "ada@example.com"})
    [(headers, raw)] = wire()
    assert headers["Content-Encoding"] == "gzip"

    stored = accepted_one(parse_body(raw, headers["Content-Encoding"]))

    assert stored["traits"] == {"email": "ada@example.com"}


def test_a_gzipped_body_is_recognised_by_its_magic_bytes_even_without_the_header():
    raw = gzip.compress(json.dumps(batch(event())).encode())

    assert parse_body(raw, None)["batch"][0]["event"] == "Order Completed"


def test_json_posted_as_text_plain_is_parsed_like_any_json():
    # analytics.js posts JSON with Content-Type: text/plain; parse_body ignores the type.
    raw = json.dumps(
        {**event("page", userId=None, anonymousId="anon-7"), "writeKey": WRITE_KEY}
    ).encode()

    stored = accepted_one(parse_body(raw, None), path_type="page")

    assert stored["anonymousId"] == "anon-7"


# ---------------------------------------------------------------- one batch, many verdicts


def test_a_batch_keeps_valid_events_and_rejects_each_invalid_one_with_its_reason():
    body = batch(
        event("track"),
        event("track", event=None),
        event("identify"),
        event("group", groupId=None),
        "not an event",
        event("alias", previousId=""),
        event("page"),
    )

    accepted, rejected = judge(body)

    assert [e["type"] for e in accepted] == ["track", "identify", "page"]
    assert [(r.index, r.field, r.rule) for r in rejected] == [
        (1, "event", "required"),
        (3, "groupId", "required"),
        (4, "", "not_object"),
        (5, "previousId", "required"),
    ]


def test_an_item_that_is_not_a_json_object_is_rejected_as_not_object():
    rejection = rejected_one(batch(["track", "user-42"]))

    assert (rejection.field, rejection.rule, rejection.redacted) == ("", "not_object", {})


def test_unknown_fields_are_kept_as_they_came():
    sent = event(
        _metadata={"bundled": ["Segment.io"]},
        channel="server",
        writeKey=WRITE_KEY,
        context={"library": LIBRARY, "tenant": {"plan": "gold"}},
    )

    stored = accepted_one(batch(sent))

    assert stored["_metadata"] == {"bundled": ["Segment.io"]}
    assert stored["channel"] == "server"
    assert stored["writeKey"] == WRITE_KEY
    assert stored["context"]["tenant"] == {"plan": "gold"}


def test_batch_level_context_and_integrations_are_merged_into_each_event_whose_own_keys_win():
    body = batch(
        event(context={"library": LIBRARY}),
        event(context={"library": LIBRARY, "locale": "fr-FR"}, integrations={"All": False}),
        context={"locale": "en-US", "ip": "203.0.113.7"},
        integrations={"All": True, "Salesforce": False},
    )

    first, second = judge(body)[0]

    assert first["context"] == {"locale": "en-US", "ip": "203.0.113.7", "library": LIBRARY}
    assert second["context"]["locale"] == "fr-FR"
    assert first["integrations"] == {"All": True, "Salesforce": False}
    assert second["integrations"] == {"All": False, "Salesforce": False}


def test_a_batch_whose_context_is_not_an_object_is_a_bad_request():
    with pytest.raises(BadRequest) as refused:
        judge(batch(event(), context="en-US"))

    assert refused.value.code == "invalid_batch"


def test_judging_leaves_the_request_untouched():
    body = batch(event(userId=" 42 "), event(event=""), context={"ip": "203.0.113.7"})
    before = json.dumps(body, sort_keys=True)

    judge(body)

    assert json.dumps(body, sort_keys=True) == before


# ---------------------------------------------------------------- identities


def test_a_null_user_id_counts_as_absent_when_there_is_an_anonymous_id():
    stored = accepted_one(batch(event(userId=None, anonymousId="anon-7")))

    assert "userId" not in stored
    assert stored["anonymousId"] == "anon-7"
    assert partition_key(stored) == "anon-7"


def test_numeric_ids_are_stringified_and_stripped():
    stored = accepted_one(batch(event("group", userId=42, anonymousId="  anon-7 ", groupId=1001)))

    assert (stored["userId"], stored["anonymousId"], stored["groupId"]) == ("42", "anon-7", "1001")


@pytest.mark.parametrize(
    "ids",
    [{"userId": None, "anonymousId": None}, {"userId": "   ", "anonymousId": ""}, {"userId": None}],
    ids=["both null", "both blank", "anonymousId missing"],
)
def test_an_event_without_user_or_anonymous_id_is_rejected_with_no_user_anon_id(ids):
    sent = {key: value for key, value in event("identify").items() if key != "anonymousId"}

    rejection = rejected_one(batch({**sent, **ids}))

    assert (rejection.field, rejection.rule) == ("userId", "no_user_anon_id")


def test_an_id_that_is_neither_a_string_nor_a_number_is_a_type_error():
    rejection = rejected_one(batch(event(userId={"id": 42})))

    assert (rejection.field, rejection.rule) == ("userId", "type")


def test_the_partition_key_is_the_user_id_before_the_anonymous_id():
    stored = accepted_one(batch(event(anonymousId="anon-7")))

    assert partition_key(stored) == "user-42"


def test_an_alias_is_partitioned_by_the_user_it_names():
    stored = accepted_one(batch(event("alias", userId="user-42", previousId="anon-7")))

    assert partition_key(stored) == "user-42"


# ---------------------------------------------------------------- per-call required fields


@pytest.mark.parametrize("name", [None, "", "   "], ids=["null", "empty", "blank"])
def test_a_track_without_an_event_name_is_rejected(name):
    rejection = rejected_one(batch(event("track", event=name)))

    assert (rejection.field, rejection.rule) == ("event", "required")


def test_a_track_missing_the_event_key_is_rejected():
    sent = {key: value for key, value in event("track").items() if key != "event"}

    rejection = rejected_one(batch(sent))

    assert (rejection.field, rejection.rule, rejection.message) == (
        "event",
        "required",
        "event: Missing data for required field.",
    )


def test_a_group_without_a_group_id_is_rejected():
    sent = {key: value for key, value in event("group").items() if key != "groupId"}

    rejection = rejected_one(batch(sent))

    assert (rejection.field, rejection.rule) == ("groupId", "required")


def test_an_alias_without_a_previous_id_is_rejected():
    sent = {key: value for key, value in event("alias").items() if key != "previousId"}

    rejection = rejected_one(batch(sent))

    assert (rejection.field, rejection.rule) == ("previousId", "required")


def test_an_alias_needs_a_user_id_even_with_an_anonymous_id():
    rejection = rejected_one(batch(event("alias", userId=None, anonymousId="anon-7")))

    assert (rejection.field, rejection.rule) == ("userId", "required")


@pytest.mark.parametrize(
    ("type_", "field"), [("identify", "traits"), ("track", "properties"), ("group", "traits")]
)
def test_traits_and_properties_must_be_objects(type_, field):
    rejection = rejected_one(batch(event(type_, **{field: ["email", "ada@example.com"]})))

    assert (rejection.field, rejection.rule) == (field, "type")


@pytest.mark.parametrize(
    ("type_", "rule"), [("purchase", "one_of"), (7, "type"), (None, "required")]
)
def test_an_event_of_unknown_type_is_rejected(type_, rule):
    rejection = rejected_one(batch(event(type=type_)))

    assert (rejection.field, rejection.rule) == ("type", rule)


# ---------------------------------------------------------------- single-event endpoints


def test_a_single_event_takes_its_type_from_the_path():
    sent = {key: value for key, value in event("identify").items() if key != "type"}

    stored = accepted_one(sent, path_type="identify")

    assert stored["type"] == "identify"


def test_a_single_event_whose_type_contradicts_the_path_is_rejected():
    rejection = rejected_one(event("track"), path_type="identify")

    assert (rejection.field, rejection.rule) == ("type", "type_mismatch")


# ---------------------------------------------------------------- messageId


def test_a_missing_message_id_is_generated_as_a_uuid4():
    sent = {key: value for key, value in event().items() if key != "messageId"}

    stored = accepted_one(batch(sent))

    assert uuid.UUID(stored["messageId"]).version == 4


def test_a_message_id_longer_than_100_characters_is_rejected_and_100_is_fine():
    accepted, rejected = judge(batch(event(messageId="m" * 100), event(messageId="m" * 101)))

    assert [e["messageId"] for e in accepted] == ["m" * 100]
    assert [(r.index, r.field, r.rule) for r in rejected] == [(1, "messageId", "max_length")]


def test_a_node_style_message_id_is_not_required_to_be_a_uuid():
    stored = accepted_one(batch(event(messageId="node-next-1764410400123-6b7f0a4c")))

    assert stored["messageId"] == "node-next-1764410400123-6b7f0a4c"


# ---------------------------------------------------------------- sizes


def test_an_event_over_32_kb_is_rejected_as_too_large_and_its_neighbours_are_kept():
    big = event(properties={"blob": "x" * (32 * 1024)})

    accepted, rejected = judge(batch(event(), big))

    assert len(accepted) == 1
    [rejection] = rejected
    assert (rejection.index, rejection.rule) == (1, "too_large")
    assert rejection.redacted == {
        "type": "track",
        "event": "Order Completed",
        "messageId": big["messageId"],
    }


def test_the_32_kb_limit_counts_utf8_bytes_not_characters():
    # 11,000 three-byte characters: 11 K characters, 33 KB on the wire.
    rejection = rejected_one(batch(event(properties={"note": "€" * 11_000})))

    assert rejection.rule == "too_large"


def test_a_request_over_4_mb_raises_payload_too_large():
    raw = json.dumps(batch(*[event(properties={"pad": "x" * 30_000})] * 140)).encode()
    assert len(raw) > 4 * 1024 * 1024

    with pytest.raises(PayloadTooLarge) as refused:
        parse_body(raw, None)

    assert refused.value.code == "payload_too_large"


def test_the_request_limit_applies_after_decompression():
    bomb = gzip.compress(b'{"batch": ["' + b"x" * (5 * 1024 * 1024) + b'"]}')
    assert len(bomb) < 10_000

    with pytest.raises(PayloadTooLarge):
        parse_body(bomb, "gzip")


# ---------------------------------------------------------------- time


def test_clock_skew_is_corrected_with_segments_formula():
    # The client's clock is one hour behind: it stamped the event at 09:00:00.123 and sent
    # it 2 s later at 09:00:02.123 (its time); we received it at 10:00:02.500 (ours).
    body = batch(
        event(timestamp="2026-11-29T09:00:00.123000+00:00"),
        sentAt="2026-11-29T09:00:02.123000+00:00",
    )

    stored = accepted_one(body)

    # timestamp = receivedAt - (sentAt - originalTimestamp) = 10:00:02.500 - 2 s
    assert stored["timestamp"] == "2026-11-29T10:00:00.500Z"
    assert stored["originalTimestamp"] == "2026-11-29T09:00:00.123Z"
    assert stored["sentAt"] == "2026-11-29T09:00:02.123Z"
    assert stored["receivedAt"] == "2026-11-29T10:00:02.500Z"


def test_an_events_own_sent_at_wins_over_the_batchs():
    body = batch(
        event(timestamp="2026-11-29T10:00:00.000Z", sentAt="2026-11-29T10:00:01.000Z"),
        sentAt="2026-11-29T10:00:02.000Z",
    )

    assert accepted_one(body)["timestamp"] == "2026-11-29T10:00:01.500Z"


def test_without_sent_at_the_client_timestamp_is_kept():
    body = {"batch": [event(timestamp="2026-11-29T09:59:58.250+00:00")]}

    stored = accepted_one(body)

    assert stored["timestamp"] == stored["originalTimestamp"] == "2026-11-29T09:59:58.250Z"
    assert "sentAt" not in stored


def test_without_any_client_time_the_timestamp_is_the_time_of_receipt():
    sent = {key: value for key, value in event().items() if key != "timestamp"}

    stored = accepted_one(batch(sent))

    assert stored["timestamp"] == stored["receivedAt"] == "2026-11-29T10:00:02.500Z"
    assert "originalTimestamp" not in stored


def test_an_original_timestamp_stands_in_for_a_missing_timestamp():
    sent = {key: value for key, value in event().items() if key != "timestamp"}
    sent["originalTimestamp"] = "2026-11-29T10:00:00.000Z"

    stored = accepted_one(batch(sent))

    assert stored["timestamp"] == "2026-11-29T10:00:01.500Z"


@pytest.mark.parametrize(
    ("sent", "written"),
    [
        ("2026-11-29T10:00:00.123Z", "2026-11-29T10:00:00.123Z"),
        ("2026-11-29T10:00:00.123456+00:00", "2026-11-29T10:00:00.123Z"),
        ("2026-11-29T11:00:00.123+01:00", "2026-11-29T10:00:00.123Z"),
        ("2026-11-29T10:00:00", "2026-11-29T10:00:00.000Z"),
        ("2015-2-02T00:30:08.276Z", "2015-02-02T00:30:08.276Z"),
    ],
    ids=["Z with ms", "offset with µs", "other offset", "naive is UTC", "not zero-padded"],
)
def test_timestamps_are_read_leniently_and_written_as_utc_with_milliseconds(sent, written):
    stored = accepted_one({"batch": [event(timestamp=sent)]})

    assert stored["originalTimestamp"] == written


@pytest.mark.parametrize(
    "garbage", ["yesterday", "", "2026-13-01T00:00:00Z", "2026-11-29T25:00:00Z", 1764410400123]
)
def test_a_timestamp_that_is_not_iso_8601_is_rejected_naming_the_timestamp_field(garbage):
    rejection = rejected_one(batch(event(timestamp=garbage)))

    assert rejection.field == "timestamp"
    assert rejection.rule in ("format", "type")


def test_a_bad_batch_level_sent_at_rejects_the_events_naming_sent_at():
    rejection = rejected_one(batch(event(), sentAt="soon"))

    assert (rejection.field, rejection.rule) == ("sentAt", "format")


def test_a_sent_at_too_far_from_the_timestamp_to_correct_is_rejected_not_crashed():
    body = batch(event(timestamp="0001-01-01T00:00:00Z"), sentAt="9999-12-31T00:00:00Z")

    rejection = rejected_one(body)

    assert (rejection.field, rejection.rule) == ("sentAt", "out_of_range")


# ---------------------------------------------------------------- the rejection log


def test_the_redacted_copy_hides_trait_values_but_keeps_type_event_and_message_id():
    sent = event(
        "identify",
        userId=None,
        anonymousId=None,
        traits={"email": "ada@example.com", "address": {"city": "London"}},
        context={"ip": "203.0.113.7", "library": LIBRARY},
    )

    rejection = rejected_one(batch(sent))

    assert rejection.rule == "no_user_anon_id"
    assert rejection.message_id == sent["messageId"]
    assert rejection.redacted["type"] == "identify"
    assert rejection.redacted["messageId"] == sent["messageId"]
    assert rejection.redacted["traits"] == {"email": MASK, "address": {"city": MASK}}
    assert rejection.redacted["context"]["ip"] == MASK
    assert "ada@example.com" not in json.dumps(rejection.redacted)
    assert "203.0.113.7" not in json.dumps(rejection.redacted)


def test_the_redacted_copy_of_a_track_keeps_its_event_name_and_hides_properties():
    rejection = rejected_one(batch(event(userId=None, properties={"email": "ada@example.com"})))

    assert rejection.redacted["event"] == "Order Completed"
    assert rejection.redacted["properties"] == {"email": MASK}
    assert rejection.redacted["userId"] == MASK


# ---------------------------------------------------------------- parsing the body


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"batch": [', "invalid_json"),
        (b'{"batch": [{"type": "track", "value": NaN}]}', "invalid_json"),
        (b'{"batch": [{"type": "track", "value": 1e999}]}', "invalid_json"),
        (b"\xff\xfe not utf-8", "invalid_json"),
        (b"[1, 2]", "invalid_body"),
        (b'{"batch": []}', "invalid_batch"),
        (b'{"batch": {"type": "track"}}', "invalid_batch"),
    ],
    ids=[
        "truncated",
        "NaN",
        "float overflow",
        "not utf-8",
        "array",
        "empty batch",
        "batch not a list",
    ],
)
def test_a_body_that_cannot_be_judged_is_a_bad_request(raw, code):
    with pytest.raises(BadRequest) as refused:
        parse_body(raw, None)

    assert refused.value.code == code


def test_a_batch_error_names_the_batch_field():
    with pytest.raises(BadRequest) as refused:
        parse_body(b'{"batch": null}', None)

    assert "batch" in refused.value.message


def test_a_body_declared_gzip_that_is_not_is_a_bad_request():
    with pytest.raises(BadRequest) as refused:
        parse_body(b'{"batch": []}', "gzip")

    assert refused.value.code == "invalid_encoding"


# ---------------------------------------------------------------- the write key


def test_the_write_key_comes_from_the_basic_auth_user():
    assert write_key_from(basic(WRITE_KEY), {"batch": [event()]}) == WRITE_KEY


def test_the_write_key_comes_from_the_body_without_a_header():
    assert write_key_from(None, batch(event())) == WRITE_KEY


def test_the_same_write_key_in_header_and_body_is_accepted():
    assert write_key_from(basic(WRITE_KEY), batch(event())) == WRITE_KEY


def test_conflicting_write_keys_in_header_and_body_are_unauthorized():
    with pytest.raises(Unauthorized) as refused:
        write_key_from(basic("wk_other_source"), batch(event()))

    assert refused.value.code == "unauthorized"


@pytest.mark.parametrize(
    "header", ["Basic not-base64!", "Basic " + base64.b64encode(b"no-colon").decode(), "Digest x"]
)
def test_a_malformed_authorization_header_is_unauthorized(header):
    with pytest.raises(Unauthorized):
        write_key_from(header, batch(event()))


def test_no_write_key_anywhere_gives_none():
    assert write_key_from(None, {"batch": [event()]}) is None


def test_an_oauth_bearer_header_leaves_the_write_key_to_the_body():
    assert write_key_from("Bearer eyJhbGciOi", batch(event())) == WRITE_KEY


def _nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


def test_an_event_nested_deeper_than_the_bound_is_rejected_naming_its_field():
    from services.gateway.domain import MAX_EVENT_DEPTH

    deep = event("track", messageId="deep", properties=_nested(MAX_EVENT_DEPTH + 1))
    fine = event("track", messageId="fine", properties=_nested(MAX_EVENT_DEPTH))
    accepted, [rejection] = judge_batch(batch(deep, fine), received_at=RECEIVED_AT)
    assert [a["messageId"] for a in accepted] == ["fine"]
    assert (rejection.field, rejection.rule) == ("properties", "too_deep")
    assert rejection.message == f"properties: nested deeper than {MAX_EVENT_DEPTH} levels."
