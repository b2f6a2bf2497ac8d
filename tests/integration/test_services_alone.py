"""Each service alone on the real RabbitMQ and PostgreSQL: fed envelopes, watched by a probe."""

from __future__ import annotations

import uuid

import pytest
from broker_support import publish

from shared.contracts import (
    IDENTITY_RESOLVED,
    INGEST_RECEIVED,
    MEMBERSHIP_CHANGED,
    PROFILE_CHANGED,
)
from shared.partitions import partition_of
from tessera.testing.platform import Platform
from tessera.testing.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration


@pytest.fixture
def running():
    started = []

    def start(*services: str, **kwargs) -> Platform:
        platform = Platform(mode="real", services=services, partitions=4, **kwargs)
        started.append(platform)
        return platform.start()

    yield start
    for platform in started:
        platform.stop()
        platform.cleanup()


def ingest_item(position: int, **event) -> dict:
    return {"position": position, "source": "web",
            "event": {"type": "identify", "messageId": str(uuid.uuid4()),
                      "timestamp": "2026-11-29T10:00:00.000Z", **event}}


def test_identity_links_identifiers_seen_together_and_ignores_a_redelivery(
        running, probe_of):
    platform = running("identity")
    resolved = probe_of(platform, IDENTITY_RESOLVED)
    batch = [ingest_item(1, anonymousId="anon-1"),
             ingest_item(2, anonymousId="anon-1", traits={"email": "Ada@Example.com"})]

    publish(platform, INGEST_RECEIVED, partition_of("anon-1", 4), batch, producer="gateway")
    first, second = resolved.items(2)
    publish(platform, INGEST_RECEIVED, partition_of("anon-1", 4), batch, producer="gateway")

    assert first["profile_id"] == second["profile_id"]
    assert ["email", "ada@example.com"] in second["identifiers"]
    assert resolved.nothing_more()


def test_contacts_folds_traits_into_the_profile_and_announces_the_change(
        running, probe_of):
    platform = running("contacts")
    changed = probe_of(platform, PROFILE_CHANGED)
    profile_id = str(uuid.uuid4())
    item = {"position": 7, "profile_id": profile_id, "source": "crm", "identifiers": [],
            "event": {"type": "identify", "traits": {"country": "FR", "plan": "pro"}}}

    publish(platform, IDENTITY_RESOLVED, partition_of(profile_id, 4), [item], producer="identity")
    [change] = changed.items(1)

    assert change["traits"] == {"country": "FR", "plan": "pro"}
    assert change["cause"]["position"] == 7
    with platform.rpc() as rpc:
        assert rpc.contacts.get_profile(profile_id)["traits"]["country"] == "FR"


def test_segments_announce_an_entry_when_a_rule_becomes_true(running, probe_of):
    platform = running("segments")
    with platform.rpc() as rpc:
        rpc.segments.define_segment(
            {"name": "french", "rule": {"trait": "country", "op": "eq", "value": "FR"}})
    memberships = probe_of(platform, MEMBERSHIP_CHANGED)
    profile_id = str(uuid.uuid4())
    item = {"position": 3, "profile_id": profile_id, "traits": {"country": "FR"},
            "event": None, "cause": {"partition": "1", "position": 3}}

    publish(platform, PROFILE_CHANGED, partition_of(profile_id, 4), [item], producer="contacts")
    [entered] = memberships.items(1)

    assert (entered["segment"], entered["change"]) == ("french", "entered")


def test_consent_follows_preferences_on_events_and_denies_everyone_else(running):
    platform = running("consent")
    consenting, silent = str(uuid.uuid4()), str(uuid.uuid4())
    partition = partition_of(consenting, 4)
    item = {"position": 5, "profile_id": consenting, "source": "web",
            "identifiers": [["user_id", "u-ok"]],
            "event": {"type": "identify", "userId": "u-ok", "context": {
                "consent": {"categoryPreferences": {"advertising": True}}}}}

    publish(platform, IDENTITY_RESOLVED, partition, [item], producer="identity")
    asked = [{"profile_id": p, "destination": "ads", "purposes": ["advertising"],
              "after": {"partition": partition, "position": 5}} for p in (consenting, silent)]
    with platform.rpc() as rpc:
        answer = rpc.consent.decide_many(asked)
        while "pending" in answer:
            answer = rpc.consent.decide_many(asked)

    allowed = {d["profile_id"]: d["allowed"] for d in answer["decisions"]}
    assert allowed == {consenting: True, silent: False}


def test_activation_delivers_an_entry_only_after_asking_consent(running):
    receiver = WebhookReceiver("integration-secret")
    receiver.start()
    try:
        platform = running("consent", "activation", destinations=[{
            "name": "ads", "kind": "webhook", "config": {"url": receiver.url_for("ads")},
            "secret_env": "TESSERA_IT_SECRET", "segments": ["buyers"],
            "purposes": ["advertising"]}],
            destination_secrets={"TESSERA_IT_SECRET": "integration-secret"})
        profile_id = str(uuid.uuid4())
        with platform.rpc() as rpc:
            rpc.consent.record_consent([["user_id", "u-buyer"]], {"advertising": True},
                                       source="api:test")
        resolved = {"position": 1, "profile_id": profile_id, "source": "web",
                    "identifiers": [["user_id", "u-buyer"]], "event": {"type": "identify"}}
        partition = partition_of(profile_id, 4)
        publish(platform, IDENTITY_RESOLVED, partition, [resolved], producer="identity")
        change = {"position": 9, "profile_id": profile_id, "segment": "buyers",
                  "change": "entered", "at": "2026-11-29T10:00:00.000Z", "reason": "test",
                  "traits": {"email": "b@example.com"},
                  "cause": {"partition": partition_of(profile_id, 4), "position": 1}}
        publish(platform, MEMBERSHIP_CHANGED, partition, [change], producer="segments")

        [delivered] = receiver.wait_for(1, timeout=30)
        assert (delivered["profile_id"], delivered["action"]) == (profile_id, "entered")
        assert delivered["traits"] == {"email": "b@example.com"}
    finally:
        receiver.stop()
