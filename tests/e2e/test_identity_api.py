"""Identity through the public API: explain a profile, take a merge back, the review queue.

Runs on the embedded platform and on RabbitMQ + PostgreSQL (the `platform` fixture).
"""

from __future__ import annotations

import io
import uuid

import httpx
from e2e_support import WRITE_KEY

from tessera.identity_cli import explain


def identify(platform, **event) -> None:
    body = {"batch": [{"type": "identify", "messageId": str(uuid.uuid4()), **event}]}
    answer = httpx.post(f"{platform.base_url}/v1/batch", auth=(WRITE_KEY, ""), json=body)
    assert answer.status_code == 200, answer.text


def profile_of(platform, **query) -> dict:
    return platform.admin("GET", "/v1/profiles", params=query).json()


def test_a_merge_is_explained_and_rejecting_it_gives_each_person_their_profile_back(platform):
    tag = uuid.uuid4().hex[:8]
    ada, bob = f"ada-{tag}@example.com", f"bob-{tag}@example.com"
    identify(platform, anonymousId=f"a-{tag}", traits={"email": ada},
             timestamp="2026-01-01T00:00:00Z")
    identify(platform, anonymousId=f"b-{tag}", traits={"email": bob},
             timestamp="2026-01-02T00:00:00Z")
    platform.wait_drained()
    bob_profile = profile_of(platform, email=bob)["profile_id"]
    # A shared device: bob's email turns up with ada's anonymous id.
    identify(platform, anonymousId=f"a-{tag}", traits={"email": bob},
             timestamp="2026-01-03T00:00:00Z")
    platform.wait_drained()
    ada_profile = profile_of(platform, email=ada)["profile_id"]
    assert profile_of(platform, email=bob)["profile_id"] == ada_profile

    explained = platform.admin("GET", f"/v1/profiles/{bob_profile}/identity").json()
    assert explained["profile_id"] == ada_profile
    assert explained["merged"] == [bob_profile]
    members = {m["node"]: m["because"] for m in explained["members"]}
    assert members[f"email:{bob}"][-1]["rule"] == "seen_together"

    printed = io.StringIO()
    assert explain(ada_profile, url=platform.base_url, token=platform.admin_token,
                   out=printed) == 0
    assert f"email:{bob}" in printed.getvalue()
    assert "seen together on" in printed.getvalue()

    rejected = platform.admin("POST", f"/v1/profiles/{bob_profile}/identity/reject-merge")
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["split_into"][0]["profile_id"] == bob_profile
    platform.wait_drained()
    assert profile_of(platform, email=bob)["profile_id"] == bob_profile
    assert profile_of(platform, email=ada)["profile_id"] == ada_profile
    assert bob_profile not in platform.admin("GET", f"/v1/profiles/{ada_profile}").json()[
        "absorbed"]


def test_identity_requests_that_make_no_sense_are_refused_naming_the_field(platform):
    unknown = str(uuid.uuid4())
    assert platform.admin("GET", f"/v1/profiles/{unknown}/identity").status_code == 404
    refused = platform.admin("POST", f"/v1/profiles/{unknown}/identity/reject-merge")
    assert refused.status_code == 400
    assert refused.json()["message"].startswith("profile_id:")
    bad_edge = platform.admin("POST", f"/v1/profiles/{unknown}/identity/retract",
                              json={"from": "nope"})
    assert bad_edge.status_code == 400 and "from, to" in bad_edge.json()["message"]
    bad_status = platform.admin("GET", "/v1/identity/review", params={"status": "maybe"})
    assert bad_status.status_code == 400 and bad_status.json()["message"].startswith("status:")
    assert platform.admin("GET", "/v1/identity/review").json() == {"cases": []}
    bad_decision = platform.admin("POST", f"/v1/identity/review/{unknown}",
                                  json={"decision": "perhaps"})
    assert bad_decision.status_code == 400
    assert platform.admin("GET", "/v1/identity/generic").json() == {"generic": []}
    model = platform.admin("GET", "/v1/identity/model").json()
    assert set(model["weights"]) >= {"given_name", "surname", "birth_date"}
    too_few = platform.admin("POST", "/v1/identity/model/estimate")
    assert too_few.status_code == 400 and too_few.json()["message"].startswith("records:")
