"""Hand-made bad input, beside the fuzzer's: each gets a clear answer (a 4xx naming the
problem, or 200 with each bad event in the rejection log) and leaves nothing in any store
but its rejection record. Checked in both modes, in the stores themselves.

(Also covered elsewhere: malformed bodies, wrong types and missing ids one by one in
test_tracking_to_destination.py; every judging rule in tests/unit/test_gateway_judging.py.)
"""

from __future__ import annotations

import gzip
import json
import uuid

import httpx
from e2e_support import WRITE_KEY, stored_event_counts


def post(platform, body: bytes, **headers) -> httpx.Response:
    return httpx.post(f"{platform.base_url}/v1/batch", auth=(WRITE_KEY, ""), content=body,
                      headers={"Content-Type": "application/json", **headers}, timeout=60)


def accepted_total(platform) -> int:
    return platform.admin("GET", "/v1/stats").json()["events"]["accepted"]


def rejections_of(platform, message_id: str) -> list[dict]:
    return [r for r in platform.admin("GET", "/v1/rejections", params={"limit": 1000}
                                      ).json()["rejections"] if r["message_id"] == message_id]


def nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth):
        value = {"n": value}
    return value


REFUSED_WHOLE = {
    "invalid JSON": (b'{"batch": [', {}),
    "invalid UTF-8": (b'{"batch": [{"type": "track", "userId": "\xff\xfe", "event": "E"}]}', {}),
    "nesting deeper than the parser goes": (b'{"batch": ' + b"[" * 100_000 + b"]" * 100_000
                                            + b"}", {}),
    "a gzip bomb (1 GB of zeros in 1 MB)": (
        gzip.compress(b"0" * (1024 * 1024 * 1024), compresslevel=9),
        {"Content-Encoding": "gzip"}),
    "a body over 4 MB": (json.dumps({"batch": [
        {"type": "track", "userId": f"u{i}", "event": "E", "properties": {"pad": "x" * 1000}}
        for i in range(5000)]}).encode(), {}),
    "a batch that is not a list": (b'{"batch": {"type": "track"}}', {}),
    "a body that is a list": (b'[{"type": "track", "userId": "u", "event": "E"}]', {}),
}


def test_requests_refused_whole_get_a_4xx_naming_the_problem_and_store_nothing(platform):
    platform.wait_drained()
    before = stored_event_counts(platform)
    for what, (body, headers) in REFUSED_WHOLE.items():
        answer = post(platform, body, **headers)
        assert 400 <= answer.status_code < 500, (what, answer.status_code, answer.text[:200])
        assert set(answer.json()) == {"code", "message"}, what
        assert answer.json()["message"], what
    platform.wait_drained()
    assert stored_event_counts(platform) == before


def test_an_event_nested_too_deep_to_pass_on_is_rejected_by_name_and_nothing_gets_stuck(
        platform):
    message_id = str(uuid.uuid4())
    answer = httpx.post(f"{platform.base_url}/v1/track", auth=(WRITE_KEY, ""), timeout=60,
                        json={"userId": f"u-{uuid.uuid4()}", "event": "Deep",
                              "messageId": message_id, "properties": nested(300)})
    assert answer.status_code == 400
    assert "properties" in answer.json()["message"]
    [rejection] = rejections_of(platform, message_id)
    assert rejection["field"] == "properties"
    platform.wait_drained(timeout=60)


def test_a_batch_mixing_good_and_bad_events_keeps_the_good_and_logs_each_bad_one(platform):
    platform.wait_drained()
    before, accepted_before = stored_event_counts(platform), accepted_total(platform)
    user_id = f"u-{uuid.uuid4()}"
    bad = {f"bad-{n}-{uuid.uuid4()}": event for n, event in enumerate([
        {"type": "track", "userId": user_id},  # no event name
        {"type": "identify", "traits": {"plan": "pro"}},  # no id at all
        {"type": "track", "userId": user_id, "event": "E", "timestamp": "yesterday"},
        {"type": "track", "userId": ["a"], "event": "E"},  # wrong type
        {"type": "track", "userId": user_id, "event": "E", "properties": nested(300)},
    ])}
    batch = [{"type": "identify", "userId": user_id, "traits": {"plan": "pro"},
              "messageId": str(uuid.uuid4())}]
    batch += [{**event, "messageId": message_id} for message_id, event in bad.items()]
    answer = post(platform, json.dumps({"batch": batch}).encode())
    assert answer.status_code == 200
    platform.wait_drained()

    assert accepted_total(platform) == accepted_before + 1
    for message_id in bad:
        [rejection] = rejections_of(platform, message_id)
        assert rejection["field"] and rejection["rule"], rejection
    after = stored_event_counts(platform)
    assert after["gateway"] == before["gateway"] + 1  # one request record: good + rejections
    profile = platform.admin("GET", "/v1/profiles", params={"userId": user_id}).json()
    assert profile["traits"] == {"plan": "pro"}


def test_a_message_id_repeated_in_a_batch_and_across_requests_is_stored_once(platform):
    platform.wait_drained()
    accepted_before = accepted_total(platform)
    user_id, message_id = f"u-{uuid.uuid4()}", str(uuid.uuid4())
    event = {"type": "track", "userId": user_id, "event": "Paid", "messageId": message_id}
    for _ in range(3):
        assert post(platform, json.dumps({"batch": [event, event]}).encode()).status_code == 200
    platform.wait_drained()
    assert accepted_total(platform) == accepted_before + 1
    profile = platform.admin("GET", "/v1/profiles", params={"userId": user_id}).json()
    assert profile["events_total"] == 1


def test_a_limit_written_with_digits_int_refuses_is_a_400_not_a_500(platform):
    # '³' and '٣' are digits to str.isdigit() but not to int() (found by the fuzzer)
    for path in ("/v1/segments/buyers/members", "/v1/rejections", "/v1/profiles/x/events"):
        for limit in ("³", "٣", "-1", "0", "1001"):
            answer = platform.admin("GET", path, params={"limit": limit})
            assert answer.status_code == 400, (path, limit, answer.status_code)
            assert answer.json()["code"] == "invalid_limit"
