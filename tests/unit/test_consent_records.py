"""Consent records per regulation, across deterministic links only, with the jurisdiction
of each profile; objections, restrictions, TC strings; the purpose catalogue."""

from __future__ import annotations

import json
import uuid

import pytest
from test_consent_tcf import V3

from services.activation.application import ActivationApplication
from services.activation.destinations import Destination
from services.consent.application import ConsentApplication, ConsentError
from services.gateway.application import stamp_gpc
from shared.config import Settings
from shared.purposes import DEFAULT_PURPOSES, load_catalogue

ADA, BOB = str(uuid.uuid4()), str(uuid.uuid4())
KEY = "identity/identity.resolved/0"


class Identity:
    def __init__(self, app: ConsentApplication):
        self.app, self.position = app, 0

    def resolve(self, profile_id, identifiers, *, source="web", traits=None, merges=()):
        self.position += 10_000
        event = {"type": "identify", "traits": traits or {},
                 "timestamp": "2026-01-01T00:00:00.000Z"}
        self.app.apply_resolved(KEY, [{
            "position": self.position, "profile_id": profile_id, "source": source,
            "event": event, "identifiers": identifiers,
            "merged_from": [m["absorbed"] for m in merges], "merges": list(merges)}])


def make(tmp_path, **settings) -> tuple[ConsentApplication, Identity]:
    app = ConsentApplication(Settings(data_dir=tmp_path, **settings))
    return app, Identity(app)


@pytest.fixture
def app(tmp_path):
    made, _ = make(tmp_path)
    yield made
    made.close()


@pytest.fixture
def identity(app):
    return Identity(app)


def allowed(app, profile_id, *purposes, **extra) -> bool:
    (decision,) = app.decide_many([{"profile_id": profile_id, "destination": "ads",
                                    "purposes": list(purposes), **extra}])
    return decision["allowed"]


def merge(survivor, absorbed, rule):
    return {"survivor": survivor, "absorbed": absorbed, "rule": rule}


def test_a_probabilistic_match_never_carries_one_persons_consent_to_another(app, identity):
    identity.resolve(ADA, [["email", "ada@example.com"]])
    identity.resolve(BOB, [["email", "bob@example.com"]])
    app.record_consent([("email", "ada@example.com")], {"advertising": True}, source="cmp")
    identity.resolve(ADA, [["email", "ada@example.com"]], merges=[merge(ADA, BOB, "match")])
    assert not allowed(app, ADA, "advertising")  # Bob, now inside, never consented
    app.record_consent([("email", "bob@example.com")], {"advertising": True}, source="cmp")
    assert allowed(app, ADA, "advertising")  # each person consented on their own


def test_a_deterministic_merge_joins_records_and_deny_wins_between_them(app, identity):
    identity.resolve(ADA, [["anonymous_id", "a-1"]])
    identity.resolve(BOB, [["anonymous_id", "a-2"]])
    app.record_consent([("anonymous_id", "a-1")], {"advertising": True}, source="cmp")
    app.record_consent([("anonymous_id", "a-2")], {"advertising": False}, source="cmp")
    identity.resolve(ADA, [["anonymous_id", "a-2"], ["email", "ada@example.com"]],
                     merges=[merge(ADA, BOB, "seen_together")])
    assert not allowed(app, ADA, "advertising")
    assert not allowed(app, BOB, "advertising")  # the absorbed id answers as its survivor
    app.record_consent([("anonymous_id", "a-2")], {"advertising": True}, source="cmp")
    assert allowed(app, ADA, "advertising")


def test_new_identifiers_of_a_matched_person_stay_with_that_person(app, identity):
    identity.resolve(ADA, [["email", "ada@example.com"]])
    identity.resolve(BOB, [["email", "bob@example.com"]])
    identity.resolve(ADA, [["email", "ada@example.com"]], merges=[merge(ADA, BOB, "match")])
    identity.resolve(ADA, [["email", "bob@example.com"], ["anonymous_id", "bob-phone"]])
    app.record_consent([("email", "ada@example.com")], {"advertising": True}, source="cmp")
    app.record_consent([("anonymous_id", "bob-phone")], {"advertising": True}, source="cmp")
    assert allowed(app, ADA, "advertising")  # Bob's phone speaks for Bob, not for Ada
    app.record_consent([("anonymous_id", "bob-phone")], {"advertising": False}, source="cmp")
    assert not allowed(app, ADA, "advertising")


def test_an_explicit_jurisdiction_trait_decides_which_records_count(app, identity):
    identity.resolve(ADA, [["email", "ada@example.com"]], traits={"jurisdiction": "ccpa"})
    app.record_consent([("email", "ada@example.com")], {"sale_sharing": True}, source="cmp",
                       jurisdiction="GDPR")
    assert not allowed(app, ADA, "sale_sharing")
    app.record_consent([("email", "ada@example.com")], {"sale_sharing": True}, source="cmp")
    assert allowed(app, ADA, "sale_sharing")  # recorded under the profile's CCPA
    record = app.consent_of(ADA)["records"][0]
    assert set(record["regulations"]) == {"GDPR", "CCPA"}  # kept apart, neither replaced


def test_a_sources_configured_jurisdiction_applies_unless_a_trait_says_otherwise(tmp_path):
    app, identity = make(tmp_path, source_jurisdictions={"shop_us": "CCPA"})
    identity.resolve(ADA, [["email", "ada@example.com"]], source="shop_us")
    identity.resolve(BOB, [["email", "bob@example.com"]], source="shop_us",
                     traits={"jurisdiction": "GDPR"})
    assert app.consent_of(ADA)["jurisdiction"] == "CCPA"
    assert app.consent_of(BOB)["jurisdiction"] == "GDPR"
    app.close()


def test_an_unknown_jurisdiction_trait_means_deny(app, identity):
    identity.resolve(ADA, [["email", "ada@example.com"]], traits={"jurisdiction": "Atlantis"})
    app.record_consent([("email", "ada@example.com")], {"advertising": True}, source="cmp",
                       jurisdiction="GDPR")
    (decision,) = app.decide_many([{"profile_id": ADA, "destination": "ads",
                                    "purposes": ["advertising"]}])
    assert (decision["allowed"], decision["reason"]) == (False,
                                                         "unknown jurisdiction 'ATLANTIS'")


def test_an_objection_is_recorded_under_every_regulation_with_its_receipt(app, identity):
    identity.resolve(ADA, [["email", "ada@example.com"], ["user_id", "u-1"]])
    answer = app.record_objection([["email", "ada@example.com"], ["user_id", "u-1"]],
                                  ["advertising"], "dsr:42")
    assert (answer["purposes"], answer["jurisdictions"]) == (["advertising"], ["CCPA", "GDPR"])
    assert len(answer["records"]) == 2
    for record in app.consent_of(ADA)["records"]:
        for regulation in ("GDPR", "CCPA"):
            entry = record["regulations"][regulation]["advertising"]["dsr:42"]
            assert (entry["granted"], entry["kind"], entry["lawful_basis"]) == (
                False, "objection", "objection")


@pytest.mark.parametrize(("identifiers", "purposes", "message"), [
    ([], None, "identifiers: one at least"),
    ([["email"]], None, "identifiers: one at least"),
    ([["email", "ada@example.com"]], ["telepathy"], "purposes: 'telepathy' is not"),
])
def test_a_bad_objection_is_refused_naming_the_field_and_nothing_is_written(
        app, identifiers, purposes, message):
    before = app.process_recorder.max_notification_id()
    with pytest.raises(ConsentError, match=message):
        app.record_objection(identifiers, purposes, "dsr")
    assert app.process_recorder.max_notification_id() == before


def test_a_restriction_denies_every_purpose_and_names_the_article(app, identity):
    identity.resolve(ADA, [["email", "ada@example.com"]])
    app.record_consent([("email", "ada@example.com")], {"functional": True}, source="cmp")
    app.set_restriction([["email", "ada@example.com"]], True, "unlawful processing")
    (decision,) = app.decide_many([{"profile_id": ADA, "destination": "x",
                                    "purposes": ["functional"]}])
    assert not decision["allowed"]
    assert "Art. 18" in decision["reason"] and decision["relied_on"][0]["restriction"]
    app.set_restriction([["email", "ada@example.com"]], False, "")
    assert allowed(app, ADA, "functional")


def test_consent_changes_are_announced_for_the_profile_only_under_its_regulation(app, identity):
    identity.resolve(ADA, [["email", "ada@example.com"]])
    app.record_consent([("email", "ada@example.com")], {"advertising": True}, source="cmp")
    app.record_consent([("email", "ada@example.com")], {"advertising": False}, source="cmp",
                       jurisdiction="CCPA")  # not Ada's regulation: nothing to act on
    app.record_consent([("email", "nobody@example.com")], {"advertising": True}, source="cmp")
    from services.consent.domain import ConsentChanges
    items = [i for e in app.scan(ConsentChanges.Changed) for i in e.items]
    assert [(i["profile_id"], i["change"], i["purposes"]) for i in items] == [
        (ADA, "granted", ["advertising"])]


def test_a_tc_string_older_than_the_configured_policy_grants_nothing(tmp_path):
    app, identity = make(tmp_path, tcf_vendor_id=2)  # V3 consents vendor 2, purposes 1-10
    identity.resolve(ADA, [["email", "ada@example.com"]])
    outcome = app.record_tc_string([["email", "ada@example.com"]], V3, "cmp")
    assert not outcome["valid"] and "TcfPolicyVersion 2" in outcome["problems"][0]
    assert not allowed(app, ADA, "advertising")
    app.close()
    app, _ = make(tmp_path / "lenient", tcf_vendor_id=2, tcf_min_policy_version=2)
    Identity(app).resolve(ADA, [["email", "ada@example.com"]])
    assert app.record_tc_string([["email", "ada@example.com"]], V3, "cmp")["valid"]
    assert allowed(app, ADA, "advertising") and allowed(app, ADA, "analytics")
    app.close()


def test_an_undecodable_tc_string_withdraws_what_an_earlier_one_granted(tmp_path):
    app, identity = make(tmp_path, tcf_vendor_id=2, tcf_min_policy_version=2)
    identity.resolve(ADA, [["email", "ada@example.com"]])
    app.record_tc_string([["email", "ada@example.com"]], V3, "cmp")
    outcome = app.record_tc_string([["email", "ada@example.com"]], V3 + "==", "cmp")
    assert "Base64URL" in outcome["problems"][0]
    assert not allowed(app, ADA, "advertising")
    app.close()


def test_the_default_catalogue_holds_the_tcf_purposes_and_the_old_names():
    catalogue = load_catalogue(None)
    assert {f"tcf_{n}" for n in range(1, 12)} | {
        "email_marketing", "sale_sharing", "advertising", "marketing", "analytics",
        "personalization", "functional"} == catalogue.ids()
    assert catalogue.purposes["tcf_1"].name == "Store and/or access information on a device"
    assert len(DEFAULT_PURPOSES) == 18


def test_a_catalogue_file_replaces_the_defaults(tmp_path):
    path = tmp_path / "purposes.json"
    path.write_text(json.dumps({"purposes": [
        {"id": "newsletter", "name": "Weekly newsletter", "direct_marketing": True}]}))
    app, identity = make(tmp_path, purposes_file=path)
    identity.resolve(ADA, [["email", "ada@example.com"]])
    app.record_consent([("email", "ada@example.com")], {"newsletter": True,
                                                        "advertising": True}, source="cmp")
    assert allowed(app, ADA, "newsletter")
    assert not allowed(app, ADA, "advertising")  # no longer a purpose at all
    assert app.record_objection([["email", "ada@example.com"]], None, "dsr")["purposes"] == [
        "newsletter"]
    app.close()


@pytest.mark.parametrize(("content", "message"), [
    ({"purposes": []}, "purposes: must be a non-empty list"),
    ({"purposes": [{"id": "Bad Id"}]}, r"purposes\[0\].id"),
    ({"purposes": [{"id": "a", "tcf_purposes": [12]}]}, r"purposes\[0\].tcf_purposes"),
    ({"purposes": [{"id": "a", "colour": "red"}]}, r"purposes\[0\].colour: unknown field"),
    ({"purposes": [{"id": "a"}, {"id": "a"}]}, "id 'a' appears twice"),
])
def test_a_bad_catalogue_file_is_refused_naming_the_entry_and_field(tmp_path, content,
                                                                    message):
    path = tmp_path / "purposes.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message):
        load_catalogue(path)


def test_a_destination_serving_a_purpose_outside_the_catalogue_is_refused(tmp_path):
    odd = Destination("ads", "webhook", ("buyers",), ("advertising", "telepathy"),
                      {"url": "http://127.0.0.1:9/x", "secret": "s"})
    with pytest.raises(ValueError, match="destination ads: purposes: 'telepathy' is not in "
                                         "the purpose catalogue"):
        ActivationApplication(Settings(data_dir=tmp_path), destinations=[odd])


def test_the_gpc_header_is_stamped_into_the_event_under_context_privacy():
    event = {"type": "page", "context": {"privacy": {"other": 1}, "ip": "1.2.3.4"}}
    stamp_gpc(event)
    assert event["context"] == {"privacy": {"other": 1, "gpc": True}, "ip": "1.2.3.4"}
    bare = {"type": "page"}
    stamp_gpc(bare)
    assert bare["context"] == {"privacy": {"gpc": True}}


def test_after_identity_splits_a_profile_its_consent_no_longer_speaks_for_the_part(
        app, identity):
    identity.resolve(ADA, [["anonymous_id", "a-1"]])
    identity.resolve(BOB, [["anonymous_id", "a-2"]])
    app.record_consent([("anonymous_id", "a-1")], {"advertising": True}, source="cmp")
    identity.resolve(ADA, [["anonymous_id", "a-1"], ["anonymous_id", "a-2"]],
                     merges=[merge(ADA, BOB, "seen_together")])
    assert allowed(app, BOB, "advertising")  # one person, as far as anyone knew
    app.apply_splits("identity/identity.profile_split/0", [{
        "position": 1, "profile_id": ADA, "reason": {"rule": "merge_rejected"},
        "parts": [{"profile_id": BOB, "restored": True, "identifiers": ["anonymous_id:a-2"]}]}])
    assert not allowed(app, BOB, "advertising")  # Bob never consented
    assert allowed(app, ADA, "advertising")
    app.record_consent([("anonymous_id", "a-2")], {"advertising": False}, source="cmp")
    assert allowed(app, ADA, "advertising")  # Bob's answer is his own again
    from services.consent.domain import ConsentChanges
    [bobs] = [i for e in app.scan(ConsentChanges.Changed) for i in e.items
              if i["change"] == "withdrawn"]
    assert bobs["profile_id"] == BOB
