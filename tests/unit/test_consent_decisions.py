"""Consent decides fail-closed, follows identity's links and records every decision."""

from __future__ import annotations

import uuid

import pytest

from services.consent.application import ConsentApplication, NotCaughtUp
from services.consent.domain import DecisionBatch
from shared.config import Settings

ADA = str(uuid.uuid4())
BOB = str(uuid.uuid4())
PARTITION = "3"
KEY = f"identity/identity.resolved/{PARTITION}"


@pytest.fixture
def app(tmp_path):
    made = ConsentApplication(Settings(data_dir=tmp_path))
    yield made
    made.close()


class Identity:
    """identity.resolved items for one partition, with increasing positions."""

    def __init__(self, app: ConsentApplication):
        self.app, self.position = app, 0

    def resolve(self, profile_id: str, identifiers: list[list[str]],
                merged_from: tuple[str, ...] = (), preferences: dict | None = None) -> int:
        self.position += 10_000
        event = {"type": "track", "event": "Page Viewed",
                 "timestamp": "2026-01-01T00:00:00.000Z"}
        if preferences is not None:
            event["context"] = {"consent": {"categoryPreferences": preferences}}
        self.app.apply_resolved(KEY, [{
            "position": self.position, "profile_id": profile_id, "source": "web",
            "event": event, "identifiers": identifiers, "merged_from": list(merged_from)}])
        return self.position


@pytest.fixture
def identity(app):
    return Identity(app)


def ask(app, profile_id: str, *purposes: str, destination: str = "ads", **extra) -> dict:
    (decision,) = app.decide_many([{"profile_id": profile_id, "destination": destination,
                                    "purposes": list(purposes), **extra}])
    return decision


# ---- fail-closed ---------------------------------------------------------------------------
def test_without_any_record_the_answer_is_deny_naming_the_purpose(app, identity):
    identity.resolve(ADA, [["email", "ada@example.com"]])
    decision = ask(app, ADA, "advertising")
    assert decision["allowed"] is False
    assert "advertising" in decision["reason"]
    assert decision["relied_on"] == []


def test_an_unknown_profile_is_denied(app):
    assert ask(app, str(uuid.uuid4()), "analytics")["allowed"] is False
    assert ask(app, "not-a-uuid", "analytics")["allowed"] is False


def test_when_every_purpose_is_granted_the_answer_is_allow(app, identity):
    identity.resolve(ADA, [["email", "ada@example.com"]])
    app.record_consent([("email", "ada@example.com")], {"advertising": True, "analytics": True},
                       source="cmp")
    decision = ask(app, ADA, "advertising", "analytics")
    assert decision["allowed"] is True
    assert {r["purpose"] for r in decision["relied_on"]} == {"advertising", "analytics"}


def test_one_purpose_without_consent_denies_the_whole_destination(app, identity):
    identity.resolve(ADA, [["email", "ada@example.com"]])
    app.record_consent([("email", "ada@example.com")], {"advertising": True}, source="cmp")
    decision = ask(app, ADA, "advertising", "analytics")
    assert decision["allowed"] is False
    assert "analytics" in decision["reason"]


def test_an_unknown_purpose_is_denied_even_if_a_record_grants_it(app, identity):
    identity.resolve(ADA, [["email", "ada@example.com"]])
    app.record_consent([("email", "ada@example.com")], {"telepathy": True}, source="cmp")
    decision = ask(app, ADA, "telepathy")
    assert decision["allowed"] is False
    assert "unknown purpose 'telepathy'" in decision["reason"]


def test_an_unknown_jurisdiction_is_denied(app, identity):
    identity.resolve(ADA, [["email", "ada@example.com"]])
    app.record_consent([("email", "ada@example.com")], {"advertising": True}, source="cmp")
    decision = ask(app, ADA, "advertising", jurisdiction="ATLANTIS")
    assert decision["allowed"] is False
    assert "ATLANTIS" in decision["reason"]


def test_records_of_another_jurisdiction_do_not_count(app, identity):
    identity.resolve(ADA, [["email", "ada@example.com"]])
    app.record_consent([("email", "ada@example.com")], {"sale_sharing": True}, source="cmp",
                       jurisdiction="CCPA")
    assert ask(app, ADA, "sale_sharing", jurisdiction="CCPA")["allowed"] is True
    assert ask(app, ADA, "sale_sharing")["allowed"] is False  # default GDPR


def test_two_sources_disagreeing_means_deny(app, identity):
    identity.resolve(ADA, [["email", "ada@example.com"]])
    app.record_consent([("email", "ada@example.com")], {"advertising": True}, source="cmp")
    app.record_consent([("email", "ada@example.com")], {"advertising": False}, source="crm")
    decision = ask(app, ADA, "advertising")
    assert decision["allowed"] is False
    assert sorted((r["source"], r["granted"]) for r in decision["relied_on"]) == [
        ("cmp", True), ("crm", False)]


def test_linked_records_disagreeing_means_deny(app, identity):
    identity.resolve(ADA, [["email", "ada@example.com"], ["anonymous_id", "a-1"]])
    app.record_consent([("email", "ada@example.com")], {"advertising": True}, source="cmp")
    app.record_consent([("anonymous_id", "a-1")], {"advertising": False}, source="cmp")
    assert ask(app, ADA, "advertising")["allowed"] is False


def test_the_same_source_changing_its_mind_latest_wins(app, identity):
    identity.resolve(ADA, [["email", "ada@example.com"]])
    app.record_consent([("email", "ada@example.com")], {"advertising": True}, source="cmp")
    app.record_consent([("email", "ada@example.com")], {"advertising": False}, source="cmp")
    assert ask(app, ADA, "advertising")["allowed"] is False
    app.record_consent([("email", "ada@example.com")], {"advertising": True}, source="cmp")
    decision = ask(app, ADA, "advertising")
    assert decision["allowed"] is True
    assert len(decision["relied_on"]) == 1


def test_repeating_the_same_answer_records_nothing_new(app):
    app.record_consent([("email", "ada@example.com")], {"advertising": True}, source="cmp")
    before = app.process_recorder.max_notification_id()
    app.record_consent([("email", "ada@example.com")], {"Advertising": True}, source="cmp")
    assert app.process_recorder.max_notification_id() == before


def test_consent_kept_against_an_identifier_nobody_resolved_to_applies_to_no_profile(app,
                                                                                 identity):
    identity.resolve(ADA, [["email", "ada@example.com"]])
    app.record_consent([("email", "someone@else.com")], {"advertising": True}, source="cmp")
    assert ask(app, ADA, "advertising")["allowed"] is False


# ---- categoryPreferences on resolved events ------------------------------------------------
def test_category_preferences_on_a_resolved_event_record_consent_for_its_profile(app, identity):
    identity.resolve(ADA, [["user_id", "u-1"], ["anonymous_id", "a-1"]],
                     preferences={"Advertising": True, "analytics": False})
    assert ask(app, ADA, "advertising")["allowed"] is True
    assert ask(app, ADA, "analytics")["allowed"] is False
    (record,) = app.consent_of(ADA)["records"]
    assert record["identifier_type"] == "user_id"  # kept against the strongest identifier
    entry = record["regulations"]["GDPR"]["advertising"]["event:web"]
    assert entry["granted"] is True
    assert entry["method"] == "context.consent.categoryPreferences"


def test_preferences_apply_to_the_profile_the_identifier_links_to_later(app, identity):
    identity.resolve(ADA, [["anonymous_id", "a-1"]], preferences={"marketing": True})
    identity.resolve(ADA, [["email", "ada@example.com"]])
    assert ask(app, ADA, "marketing")["allowed"] is True


def test_consent_follows_a_merge_to_the_survivor_and_from_the_absorbed_id(app, identity):
    identity.resolve(ADA, [["email", "ada@example.com"]])
    identity.resolve(BOB, [["anonymous_id", "a-2"]], preferences={"advertising": True})
    assert ask(app, ADA, "advertising")["allowed"] is False

    identity.resolve(ADA, [["email", "ada@example.com"], ["anonymous_id", "a-2"]],
                     merged_from=(BOB,))

    assert ask(app, ADA, "advertising")["allowed"] is True
    assert ask(app, BOB, "advertising")["allowed"] is True


def test_after_a_merge_a_denial_from_either_side_denies(app, identity):
    identity.resolve(ADA, [["email", "ada@example.com"]], preferences={"advertising": True})
    identity.resolve(BOB, [["anonymous_id", "a-2"]], preferences={"advertising": False})
    identity.resolve(ADA, [["email", "ada@example.com"]], merged_from=(BOB,))
    assert ask(app, ADA, "advertising")["allowed"] is False


def test_an_absorbed_ids_event_arriving_after_the_merge_links_to_the_survivor(app, identity):
    # identity.resolved is partitioned by profile: an event of the absorbed id can reach
    # consent after the merge. A denial it carries must reach the survivor too.
    identity.resolve(ADA, [["email", "ada@example.com"]], preferences={"advertising": True})
    identity.resolve(ADA, [["email", "ada@example.com"]], merged_from=(BOB,))
    identity.resolve(BOB, [["anonymous_id", "a-2"]], preferences={"advertising": False})
    assert ask(app, ADA, "advertising")["allowed"] is False
    assert ask(app, BOB, "advertising")["allowed"] is False


def test_a_redelivered_batch_records_nothing_twice(app, identity):
    identity.resolve(ADA, [["anonymous_id", "a-1"]], preferences={"advertising": True})
    before = app.process_recorder.max_notification_id()
    item = {"position": identity.position, "profile_id": ADA, "source": "web",
            "event": {"context": {"consent": {"categoryPreferences": {"advertising": False}}}},
            "identifiers": [["anonymous_id", "a-1"]], "merged_from": []}
    assert app.apply_resolved(KEY, [item]) == 0
    assert app.process_recorder.max_notification_id() == before
    assert ask(app, ADA, "advertising")["allowed"] is True


# ---- decisions are recorded ----------------------------------------------------------------
def test_every_decision_is_recorded_with_the_record_versions_it_relied_on(app, identity):
    identity.resolve(ADA, [["email", "ada@example.com"]])
    identity.resolve(BOB, [["email", "bob@example.com"]])
    app.record_consent([("email", "ada@example.com")], {"advertising": True}, source="cmp")
    app.record_consent([("email", "ada@example.com")], {"advertising": False}, source="cmp")
    app.record_consent([("email", "ada@example.com")], {"advertising": True}, source="cmp")

    decisions = app.decide_many([
        {"profile_id": ADA, "destination": "ads", "purposes": ["advertising"]},
        {"profile_id": BOB, "destination": "ads", "purposes": ["advertising"]},
    ])

    assert [d["allowed"] for d in decisions] == [True, False]
    ada, bob = decisions
    assert ada["decision_id"] != bob["decision_id"]
    (relied,) = ada["relied_on"]
    assert relied["version"] == 4  # opened (1), granted (2), withdrawn (3), granted (4)
    # That version of the record is the grant the decision relied on.
    as_relied = app.repository.get(uuid.UUID(relied["record"]), version=relied["version"])
    assert as_relied.says("advertising", "cmp", "GDPR") is True
    assert app.decision(ada["decision_id"]) == ada
    assert app.decision(bob["decision_id"]) == bob

    batches = [app.mapper.to_domain_event(n)
               for n in app.process_recorder.select_notifications(start=1, limit=1000)]
    decided = [e for e in batches if isinstance(e, DecisionBatch.Decided)]
    assert len(decided) == 1
    assert decided[0].decisions == decisions


def test_an_unknown_decision_id_finds_nothing(app):
    assert app.decision(f"{uuid.uuid4()}:0") is None
    assert app.decision("garbage") is None
    (made,) = app.decide_many([{"profile_id": ADA, "destination": "ads",
                                "purposes": ["analytics"]}])
    batch_id = made["decision_id"].split(":")[0]
    assert app.decision(f"{batch_id}:7") is None


# ---- waiting for identity ------------------------------------------------------------------
def test_deciding_after_a_position_consent_has_not_read_yet_raises_not_caught_up(app, identity):
    identity.resolve(ADA, [["email", "ada@example.com"]])
    ahead = {"partition": PARTITION, "position": identity.position + 10_000}
    before = app.process_recorder.max_notification_id()

    with pytest.raises(NotCaughtUp):
        ask(app, ADA, "advertising", after=ahead)
    assert app.process_recorder.max_notification_id() == before  # nothing decided

    identity.resolve(ADA, [["email", "ada@example.com"]], preferences={"advertising": True})
    assert ask(app, ADA, "advertising", after=ahead)["allowed"] is True


def test_a_position_of_another_partition_is_waited_for_separately(app, identity):
    identity.resolve(ADA, [["email", "ada@example.com"]])
    with pytest.raises(NotCaughtUp):
        ask(app, ADA, "advertising", after={"partition": "5", "position": 10_000})
    assert ask(app, ADA, "advertising",
               after={"partition": PARTITION, "position": identity.position})["allowed"] is False


def test_a_progress_recorded_by_another_replica_is_seen(tmp_path, app, identity):
    other = ConsentApplication(Settings(data_dir=tmp_path))
    try:
        assert ask(other, ADA, "advertising",
                   after={"partition": PARTITION, "position": 0})["allowed"] is False
        with pytest.raises(NotCaughtUp):
            ask(other, ADA, "advertising", after={"partition": PARTITION, "position": 10_000})
        identity.resolve(ADA, [["email", "ada@example.com"]])  # processed by `app`
        ask(other, ADA, "advertising", after={"partition": PARTITION, "position": 10_000})
    finally:
        other.close()
