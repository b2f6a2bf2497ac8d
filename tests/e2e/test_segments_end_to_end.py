"""Segments and computed traits through the public API and the `tessera` command, on the
embedded platform and on RabbitMQ + PostgreSQL."""

from __future__ import annotations

import json
import uuid

import segment.analytics as analytics
from e2e_support import WRITE_KEY, profile_of, tessera
from tenacity import retry, stop_after_delay, wait_fixed


def client_for(platform) -> analytics.Client:
    return analytics.Client(WRITE_KEY, host=platform.base_url, sync_mode=True)


def test_a_segment_defined_later_is_backfilled_with_progress_shown_by_the_cli(
        platform, tmp_path):
    client = client_for(platform)
    tag = uuid.uuid4().hex[:8]
    hikers = [f"hiker-{tag}-{i}" for i in range(6)]
    for user_id in hikers:
        client.identify(user_id=user_id, traits={"hobby": f"hiking-{tag}"})
    client.identify(user_id=f"reader-{tag}", traits={"hobby": f"reading-{tag}"})
    platform.wait_drained()

    name = f"hikers_{tag}"
    rule = {"trait": "hobby", "op": "eq", "value": f"hiking-{tag}"}
    preview = platform.admin("POST", "/v1/segments/preview", json={"rule": rule}).json()
    assert preview["size"] == 6
    assert platform.admin("GET", f"/v1/segments/{name}").status_code == 404

    definition = tmp_path / "hikers.json"
    definition.write_text(json.dumps({"name": name, "rule": rule}))
    done = tessera(platform, "segments", "define", str(definition))
    assert done.returncode == 0, done.stderr
    assert f"segment {name} saved as version 1" in done.stdout
    assert "100.0%" in done.stdout and "6 entered" in done.stdout

    segment = platform.admin("GET", f"/v1/segments/{name}").json()
    assert (segment["size"], segment["backfill"]["status"]) == (6, "done")
    members = platform.admin("GET", f"/v1/segments/{name}/members").json()["members"]
    expected = {profile_of(platform, user_id)["profile_id"] for user_id in hikers}
    assert {m["profile_id"] for m in members} == expected

    listed = tessera(platform, "segments", "list")
    assert name in listed.stdout and "6 members" in listed.stdout


def test_a_computed_trait_shows_on_the_profile_and_moves_a_segment(platform):
    client = client_for(platform)
    tag = uuid.uuid4().hex[:8]
    trait, segment = f"spend_{tag}", f"spenders_{tag}"
    answer = platform.admin("POST", "/v1/computed-traits", json={
        "name": trait, "event": f"Order {tag}", "aggregate": "sum", "property": "total",
        "within_days": 90})
    assert answer.status_code == 200, answer.text
    platform.admin("POST", "/v1/segments", json={
        "name": segment, "rule": {"trait": trait, "op": "gte", "value": 100}}).raise_for_status()

    user_id = f"buyer-{tag}"
    for total in (40, 70):
        client.track(user_id=user_id, event=f"Order {tag}", properties={"total": total})
    platform.wait_drained()

    @retry(stop=stop_after_delay(30), wait=wait_fixed(0.3), reraise=True)
    def computed_on_profile():
        profile = profile_of(platform, user_id)
        assert profile["computed_traits"] == {trait: 110.0}
        return profile

    profile = computed_on_profile()
    history = platform.admin("GET", f"/v1/profiles/{profile['profile_id']}/segments").json()
    assert [(h["segment"], h["change"]) for h in history["history"]] == [(segment, "entered")]
    assert history["history"][0]["reason"] == f"{trait} gte 100"


def test_an_invalid_computed_trait_is_refused_naming_the_field(platform):
    answer = platform.admin("POST", "/v1/computed-traits", json={
        "name": "broken", "event": "Order Completed", "aggregate": "median"})
    assert answer.status_code == 400
    assert answer.json()["field"] == "aggregate"
    names = [t["name"] for t in
             platform.admin("GET", "/v1/computed-traits").json()["computed_traits"]]
    assert "broken" not in names


def test_a_segment_read_by_another_cannot_be_deleted(platform):
    tag = uuid.uuid4().hex[:8]
    platform.define_segment(f"base_{tag}", {"trait": "plan", "op": "eq", "value": "pro"})
    platform.define_segment(f"nested_{tag}", {"segment": f"base_{tag}"})
    answer = platform.admin("DELETE", f"/v1/segments/base_{tag}")
    assert answer.status_code == 409
    assert f"used by nested_{tag}" in answer.json()["message"]
