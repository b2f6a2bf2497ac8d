"""A person's data from every service, and nobody else's: two members of one household
(same surname and address, their own emails), both seen by every service, in process."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from test_pipeline_in_process import platform  # noqa: F401 (the in-process pipeline)

from services.gateway.subject_data import SubjectData, subject_history

HOME = {"lastName": "Lovelace", "address": {"street": "12 St James's Square",
                                            "city": "London", "postalCode": "SW1Y 4JH"}}
ADA = {"userId": "ada-1815", "email": "ada.lovelace@example.com", "firstName": "Augusta"}
BYRON = {"userId": "byron-1816", "email": "byron.lovelace@example.org", "firstName": "Noel"}


class ConsentGate:
    """Consent's application plus the erase/objection/restriction RPCs that the crypto
    and consent-gate work provide (recorded here: their behaviour is theirs to test)."""

    def __init__(self, app):
        self.app, self.calls = app, []

    def export_subject(self, profile_ids, identifiers):
        return self.app.export_subject(profile_ids, identifiers)

    def erase(self, identifier, requested_by, request_id):
        self.calls.append(("erase", identifier, requested_by, request_id))
        return {"erased": [identifier]}

    def record_objection(self, identifiers, purposes, source):
        self.calls.append(("record_objection", identifiers, purposes, source))
        return {"objected": purposes}

    def set_restriction(self, identifiers, restricted, reason):
        self.calls.append(("set_restriction", identifiers, restricted, reason))
        return {"restricted": restricted}


def _identify(person):
    return {"type": "identify", "userId": person["userId"],
            "traits": {"email": person["email"], "firstName": person["firstName"], **HOME},
            "context": {"consent": {"categoryPreferences": {"advertising": True}}}}


def _order(person):
    return {"type": "track", "userId": person["userId"], "event": "Order Completed",
            "properties": {"total": 42, "email": person["email"]}}


@pytest.fixture
def household(platform):  # noqa: F811
    apps = platform.apps
    apps["segments"].define_segment("buyers", {
        "event": "Order Completed", "count": {"op": "at_least", "value": 2},
        "within_days": 30})
    now = datetime.now(UTC)
    # One batch each time: the gateway, consent's decisions and activation's ledger all
    # hold both people in the same stored events; the export must pick one out.
    apps["gateway"].ingest("web", {"batch": [_identify(ADA), _identify(BYRON)]},
                           received_at=now)
    platform.drain()
    gift = {"type": "track", "userId": BYRON["userId"], "event": "Gift Sent",
            "properties": {"email": ADA["email"]}}  # his event, naming her: his, not hers
    apps["gateway"].ingest("web", {"batch": [_order(ADA), _order(BYRON), _order(ADA),
                                             _order(BYRON), gift]}, received_at=now)
    platform.drain()
    ids = {name: apps["identity"].profile_id_for("user_id", person["userId"])
           for name, person in (("ada", ADA), ("byron", BYRON))}
    apps["contacts"].add_note(ids["ada"], "asked about her data", "officer")
    apps["contacts"].add_note(ids["byron"], "prefers post", "officer")
    apps["gateway"].record_view("officer", "admin", [ids["byron"]], "GET /v1/profiles/x")
    apps["gateway"].record_view("officer", "admin", [ids["ada"], ids["byron"]],
                                "GET /v1/contacts")
    gate = ConsentGate(apps["consent"])
    services = {**apps, "consent": gate}
    return platform, SubjectData(services), ids, gate


def test_the_export_of_one_household_member_holds_all_of_her_data_and_none_of_his(household):
    pipeline, subjects, ids, _ = household
    export = subjects.export([["email", ADA["email"]]])
    s = export["services"]

    assert export["subject"]["profile_ids"] == [ids["ada"]]
    assert ["user_id", ADA["userId"]] in export["subject"]["identifiers"]
    assert len(s["gateway"]["received"]) == 3  # her identify and two orders
    assert [p["profile_id"] for p in s["identity"]["profiles"]] == [ids["ada"]]
    [contact] = s["contacts"]["profiles"]
    assert contact["traits"]["firstName"] == "Augusta"
    assert contact["trait_sources"]["email"][0]["source"] == "web"
    assert [e["text"] for e in contact["timeline"] if e["type"] == "note"] == [
        "asked about her data"]
    [segments] = s["segments"]["profiles"]
    assert segments["segments"].keys() == {"buyers"}
    assert [h["change"] for h in segments["history"]] == ["entered"]
    [record] = s["consent"]["records"]
    assert record["history"][0]["purpose"] == "advertising"
    assert [d["allowed"] for d in s["consent"]["decisions"]] == [True]
    assert [o["outcome"] for o in s["activation"]["outcomes"]["ads"]] == ["delivered"]
    assert [r["destination"] for r in export["recipients"]] == ["ads"]
    assert all(item["profile_id"] == ids["ada"] for item in s["activation"]["planned"])
    assert [v["profile_ids"] for v in s["gateway"]["views"]] == [[ids["ada"]]]

    text = json.dumps(export)
    for his in (*_his_own_tokens(subjects.export([["email", BYRON["email"]]])),
                BYRON["firstName"], "prefers post"):
        assert his not in text
    # ...while both of them really are in every service's store.
    assert len(pipeline.receiver.items()) == 2


def _his_own_tokens(export) -> set[str]:
    """What only he has: identifiers, profile ids, message ids, decisions, deliveries."""
    s = export["services"]
    tokens = {value for _, value in export["subject"]["identifiers"]}
    tokens |= set(export["subject"]["profile_ids"])
    tokens |= {item["event"]["messageId"] for item in s["gateway"]["received"]}
    tokens |= {d["decision_id"] for d in s["consent"]["decisions"]}
    tokens |= {o["idempotency_key"] for seen in s["activation"]["outcomes"].values()
               for o in seen}
    assert len(tokens) >= 9  # 2 identifiers, a profile, 4 events, a decision, a delivery
    return tokens


def test_the_history_of_a_person_runs_in_time_order_across_services(household):
    _, subjects, _, _ = household
    history = subject_history(subjects.export([["user_id", ADA["userId"]]]))
    whats = [(e["service"], e["what"]) for e in history]
    assert whats.index(("gateway", "received")) < whats.index(("segments", "segment entered"))
    assert whats.index(("consent", "consent granted")) < whats.index(
        ("consent", "decision: allow"))
    assert whats.index(("consent", "decision: allow")) < whats.index(
        ("activation", "delivered"))
    assert ("gateway", "viewed") in whats
    assert len(history) >= 8


def test_a_carried_out_erasure_shows_in_the_persons_history(household):
    platform_, subjects, ids, _ = household
    consent = platform_.apps["consent"]
    request = consent.file_request("erasure", "GDPR", [["email", ADA["email"]]], "officer")
    consent.verify_request(request["request_id"], "identity_document", "officer")
    consent.complete_request(request["request_id"], "officer",
                             {"erasure": [{"recipients": {"ads": "delete requested"}}]})
    # Found by profile id too: after erasure, identifiers no longer lead to the person.
    history = subject_history(subjects.export([["profile_id", ids["ada"]]]))
    [erased] = [e for e in history if e["what"] == "erased"]
    assert erased["detail"]["ledger"] == [{"recipients": {"ads": "delete requested"}}]
    assert [e["what"] for e in history if e["service"] == "consent"][-4:] == [
        "erasure request received", "erasure request verified",
        "erasure request completed", "erased"]


def test_a_rectification_corrects_the_profile_and_is_sent_again_to_its_destinations(
        household):
    pipeline, subjects, ids, _ = household
    pipeline.receiver.clear()
    outcome = subjects.rectify([["email", ADA["email"]]], {"firstName": "Ada"}, "req-1")
    pipeline.drain()

    assert outcome == {"rectified_profiles": [ids["ada"]], "traits": ["firstName"],
                       "deliveries_planned": 1}
    profile = pipeline.apps["contacts"].profile(ids["ada"])
    assert profile["traits"]["firstName"] == "Ada"
    assert profile["trait_sources"]["firstName"][0]["source"] == "dsr"
    [sent] = pipeline.receiver.items()
    assert sent["traits"]["firstName"] == "Ada" and sent["profile_id"] == ids["ada"]
    # A later event from the app repeating the old value does not undo the correction.
    pipeline.apps["gateway"].ingest("web", {"batch": [_identify(ADA)]},
                                    received_at=datetime.now(UTC))
    pipeline.drain()
    assert pipeline.apps["contacts"].profile(ids["ada"])["traits"]["firstName"] == "Ada"


@pytest.mark.parametrize("kind, details, expected", [
    ("erasure", {}, ("erase", ["email", ADA["email"]], "officer", "req-9")),
    ("objection", {"purposes": ["advertising"]},
     ("record_objection", [["email", ADA["email"]]], ["advertising"], "dsr:req-9")),
    ("restriction", {"restricted": True, "reason": "accuracy contested"},
     ("set_restriction", [["email", ADA["email"]]], True, "accuracy contested")),
])
def test_erasure_objection_and_restriction_are_handed_to_consent(household, kind, details,
                                                                 expected):
    _, subjects, _, gate = household
    request = {"kind": kind, "request_id": "req-9", "identifiers": [["email", ADA["email"]]],
               "details": details}
    recorded, _ = subjects.carry_out(request, "officer")
    assert gate.calls == [expected]
    assert kind in recorded


def test_an_access_request_records_the_exports_digest_not_its_data(household):
    _, subjects, ids, _ = household
    request = {"kind": "access", "request_id": "req-3", "details": {},
               "identifiers": [["user_id", ADA["userId"]]]}
    recorded, export = subjects.carry_out(request, "officer")
    assert recorded["profile_ids"] == [ids["ada"]] and recorded["recipients"] == ["ads"]
    assert len(recorded["export_sha256"]) == 64
    assert ADA["email"] not in json.dumps(recorded)
    assert export["services"]["contacts"]["profiles"][0]["profile_id"] == ids["ada"]
