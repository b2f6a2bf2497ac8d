"""The identity graph: guards against over-merging, probabilistic matches, splits, explain."""

from __future__ import annotations

import pytest

from services.identity.application import IdentityApplication, IdentityError
from services.identity.domain import GraphChange
from services.identity.matching import MatchModel, clean_attributes, estimate_model
from services.identity.policy import IdentifierType, IdentityPolicy, PolicyError
from shared.config import Settings

KEY = "gateway/ingest.received/0"


def make_app(tmp_path, **policy) -> IdentityApplication:
    return IdentityApplication(Settings(data_dir=tmp_path), policy=IdentityPolicy(**policy))


@pytest.fixture
def app(tmp_path):
    made = make_app(tmp_path)
    yield made
    made.close()


def item(position: int, at: str = "2026-01-01T00:00:00.000Z", **event) -> dict:
    return {"position": position, "source": "web",
            "event": {"type": "identify", "timestamp": at, "messageId": f"m-{position}",
                      **event}}


def splits(app: IdentityApplication) -> list[dict]:
    found = []
    for notification in app.process_recorder.select_notifications(start=1, limit=10_000):
        domain_event = app.mapper.to_domain_event(notification)
        if isinstance(domain_event, GraphChange.ProfileSplit):
            found.extend(domain_event.items)
    return found


# ---- policy ----------------------------------------------------------------------------------
def test_a_policy_file_sets_types_limits_and_thresholds():
    policy = IdentityPolicy.from_mapping({
        "types": [{"name": "user_id", "limit": 1}, {"name": "email", "limit": 2},
                  {"name": "anonymous_id"}],
        "generic_after": 5, "phone_region": "gb", "merge_at": 0.95, "review_at": 0.5})
    assert policy.type_names == ("user_id", "email", "anonymous_id")
    assert policy.limit("email") == 2 and policy.limit("anonymous_id") is None
    assert (policy.generic_after, policy.phone_region, policy.merge_at) == (5, "GB", 0.95)


@pytest.mark.parametrize("raw, message", [
    ({"types": []}, "types: must be a non-empty list"),
    ({"types": [{"name": "email", "limit": 0}]}, "types[0].limit: must be a whole number"),
    ({"generic_after": "3"}, "generic_after: must be a whole number"),
    ({"merge_at": 1.5}, "merge_at: must be a probability"),
    ({"merge_at": 0.6, "review_at": 0.9}, "review_at: must not be above merge_at"),
    ({"blocked_patterns": ["("]}, "blocked_patterns[0]: not a regular expression"),
    ({"phone_region": "France"}, "phone_region: must be a two-letter"),
    ({"colour": "blue"}, "colour: unknown field"),
])
def test_a_bad_policy_is_refused_naming_the_field_and_the_rule(raw, message):
    with pytest.raises(PolicyError, match=message.replace("[", r"\[").replace("]", r"\]")):
        IdentityPolicy.from_mapping(raw)


def test_the_policy_comes_from_the_file_the_environment_names(tmp_path, monkeypatch):
    path = tmp_path / "policy.json"
    path.write_text('{"generic_after": 7, "one_record_per_profile": ["crm"]}')
    monkeypatch.setenv("TESSERA_IDENTITY_POLICY_FILE", str(path))
    monkeypatch.setenv("TESSERA_PHONE_REGION", "gb")
    policy = IdentityPolicy.from_env()
    assert (policy.generic_after, policy.one_record_per_profile, policy.phone_region) == (
        7, frozenset({"crm"}), "GB")


def test_a_policy_file_that_is_not_json_is_refused_naming_the_variable(tmp_path, monkeypatch):
    path = tmp_path / "policy.json"
    path.write_text("generic_after: 7")
    monkeypatch.setenv("TESSERA_IDENTITY_POLICY_FILE", str(path))
    with pytest.raises(PolicyError, match=r"TESSERA_IDENTITY_POLICY_FILE: .* is not valid JSON"):
        IdentityPolicy.from_env()


# ---- guards ----------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["000-000", "aaaaaaa", "N/A", "noemail@noemail.com"])
def test_blocked_values_and_patterns_link_nobody(app, value):
    app.resolve_batch(KEY, [item(1, userId="u-1", context={"externalIds": [
        {"type": "crm_id", "id": value}]}), item(2, userId="u-2", context={"externalIds": [
            {"type": "crm_id", "id": value}]})])
    assert app.profile_id_for("crm_id", value) is None
    assert app.profile_id_for("user_id", "u-1") != app.profile_id_for("user_id", "u-2")


def test_identifiers_are_ordered_by_the_configured_priority(tmp_path):
    policy_app = make_app(tmp_path, types=(IdentifierType("email"), IdentifierType("user_id")))
    from services.identity.domain import identifiers_of
    found = identifiers_of({"userId": "u-1", "traits": {"email": "a@b.io"}}, policy_app.policy)
    assert [i.type for i in found] == ["email", "user_id"]
    policy_app.close()


def test_a_profile_takes_no_more_emails_than_its_limit(tmp_path):
    app = make_app(tmp_path, types=(IdentifierType("user_id", 1), IdentifierType("email", 2)))
    for position, email in enumerate(["a@x.io", "b@x.io", "c@x.io"], start=1):
        app.resolve_batch(KEY, [item(position, userId="u-1", traits={"email": email})])
    profile = app.profile_id_for("user_id", "u-1")
    assert app.identifiers_of_profile(profile)["email"] == ["a@x.io", "b@x.io"]
    assert app.profile_id_for("email", "c@x.io") is None
    app.close()


def test_two_profiles_whose_union_would_break_a_limit_do_not_merge(tmp_path):
    app = make_app(tmp_path, types=(IdentifierType("email", 1), IdentifierType("anonymous_id")))
    app.resolve_batch(KEY, [item(1, anonymousId="a-1", traits={"email": "a@x.io"}),
                            item(2, anonymousId="a-2", traits={"email": "b@x.io"}),
                            item(3, anonymousId="a-1", traits={"email": "b@x.io"})])
    assert app.profile_id_for("email", "a@x.io") != app.profile_id_for("email", "b@x.io")
    app.close()


def test_a_profile_holds_no_more_identifiers_than_the_cap(tmp_path):
    app = make_app(tmp_path, max_identifiers=3)
    app.resolve_batch(KEY, [item(p, userId="u-1", anonymousId=f"a-{p}") for p in range(1, 6)])
    profile = app.profile_id_for("user_id", "u-1")
    assert sum(len(v) for v in app.identifiers_of_profile(profile).values()) == 3
    app.close()


def test_a_value_seen_with_too_many_profiles_it_cannot_join_stops_linking_and_is_reported(
        tmp_path):
    app = make_app(tmp_path, generic_after=2)
    shared_phone = "+33612345678"
    for position in range(1, 5):
        app.resolve_batch(KEY, [item(position, userId=f"u-{position}",
                                     traits={"phone": shared_phone})])
    reported = app.generic_identifiers()
    assert [(g["type"], g["value"]) for g in reported] == [("phone", shared_phone)]
    assert reported[0]["profile_id"] == app.profile_id_for("user_id", "u-1")
    # From now on the phone merges nobody: a new person with it gets a profile of their own.
    app.resolve_batch(KEY, [item(9, anonymousId="a-new", traits={"phone": shared_phone})])
    assert app.profile_id_for("anonymous_id", "a-new") != app.profile_id_for("user_id", "u-1")
    app.close()


def test_a_value_found_generic_undoes_the_merges_it_had_made(tmp_path):
    app = make_app(tmp_path, generic_after=2)
    call_centre = "+33612345678"
    app.resolve_batch(KEY, [item(1, "2026-01-01T00:00:00Z", anonymousId="a-1",
                                 traits={"phone": call_centre}),
                            item(2, "2026-01-02T00:00:00Z", anonymousId="a-2",
                                 traits={"phone": call_centre})])
    assert app.profile_id_for("anonymous_id", "a-1") == app.profile_id_for("anonymous_id",
                                                                           "a-2")
    # Two people with user ids of their own turn up with it: it is nobody's in particular.
    app.resolve_batch(KEY, [item(3, userId="u-1", traits={"phone": call_centre}),
                            item(4, userId="u-2", traits={"phone": call_centre}),
                            item(5, userId="u-3", traits={"phone": call_centre})])

    assert app.profile_id_for("phone", call_centre) is None
    assert app.profile_id_for("anonymous_id", "a-1") != app.profile_id_for("anonymous_id",
                                                                           "a-2")
    assert splits(app)[0]["reason"]["rule"] == "generic"


# ---- merges and splits -----------------------------------------------------------------------
def test_a_merge_names_the_rule_and_the_event_that_caused_it(app):
    app.resolve_batch(KEY, [item(1, "2026-01-01T00:00:00Z", anonymousId="a-1"),
                            item(2, "2026-01-02T00:00:00Z", traits={"email": "e@x.io"}),
                            item(3, "2026-01-03T00:00:00Z", anonymousId="a-1",
                                 traits={"email": "e@x.io"})])
    survivor = app.profile_id_for("anonymous_id", "a-1")
    explained = app.explain(survivor)
    merged = [h for h in explained["history"] if h["what"] == "merged"]
    assert merged[0]["reason"]["rule"] == "seen_together"
    assert merged[0]["reason"]["evidence"] == "m-3"


def test_retracting_the_edge_that_joined_two_people_splits_them_and_keeps_history(app):
    app.resolve_batch(KEY, [item(1, "2026-01-01T00:00:00Z", anonymousId="a-1",
                                 traits={"email": "ada@x.io"}),
                            item(2, "2026-01-02T00:00:00Z", anonymousId="a-2",
                                 traits={"email": "bob@x.io"}),
                            item(3, "2026-01-03T00:00:00Z", anonymousId="a-1",
                                 traits={"email": "bob@x.io"})])
    ada = app.profile_id_for("email", "ada@x.io")
    bob_before = app.profile_id_for("email", "bob@x.io")
    assert ada == bob_before

    app.retract_edge(ada, "anonymous_id:a-1", "email:bob@x.io", by="admin")

    bob = app.profile_id_for("email", "bob@x.io")
    assert bob != ada
    assert app.profile_id_for("anonymous_id", "a-2") == bob
    assert app.identifiers_of_profile(ada) == {"anonymous_id": ["a-1"], "email": ["ada@x.io"]}
    [split] = splits(app)
    assert split["profile_id"] == ada and split["reason"]["rule"] == "edge_retracted"
    assert split["parts"][0]["restored"] is True  # bob's profile got its own id back
    assert [h["what"] for h in app.explain(ada)["history"]] == [
        "merged", "edge retracted", "split"]


def test_retracting_an_edge_that_other_edges_back_up_splits_nothing(app):
    app.resolve_batch(KEY, [item(1, userId="u-1", anonymousId="a-1", traits={"email": "e@x.io"}),
                            item(2, anonymousId="a-1", traits={"email": "e@x.io"})])
    profile = app.profile_id_for("user_id", "u-1")
    outcome = app.retract_edge(profile, "user_id:u-1", "email:e@x.io", by="admin")
    # The second event saw a-1 and the email together: that edge still holds them.
    assert outcome["split_into"] == []
    assert app.profile_id_for("email", "e@x.io") == profile


def test_rejecting_a_past_merge_gives_the_absorbed_profile_back(app):
    app.resolve_batch(KEY, [item(1, "2026-01-01T00:00:00Z", anonymousId="a-1"),
                            item(2, "2026-01-02T00:00:00Z", anonymousId="a-2"),
                            item(3, "2026-01-03T00:00:00Z", anonymousId="a-1",
                                 traits={"email": "e@x.io"}),
                            item(4, "2026-01-04T00:00:00Z", anonymousId="a-2",
                                 traits={"email": "e@x.io"})])
    survivor = app.profile_id_for("anonymous_id", "a-1")
    absorbed = app.explain(survivor)["merged"][0]

    app.reject_merge(absorbed, by="admin")

    assert app.profile_id_for("anonymous_id", "a-2") == absorbed
    assert app.profile_id_for("anonymous_id", "a-1") == survivor


def test_erasing_the_only_identifier_two_people_shared_splits_them(app):
    app.resolve_batch(KEY, [item(1, anonymousId="a-1", traits={"email": "shared@x.io"}),
                            item(2, anonymousId="a-2", traits={"email": "shared@x.io"})])
    assert app.profile_id_for("anonymous_id", "a-1") == app.profile_id_for("anonymous_id",
                                                                           "a-2")
    app.erase_identifier("email", "shared@x.io", by="dpo")

    assert app.profile_id_for("email", "shared@x.io") is None
    assert app.profile_id_for("anonymous_id", "a-1") != app.profile_id_for("anonymous_id",
                                                                           "a-2")
    assert splits(app)[0]["reason"]["rule"] == "erased"


def test_erasing_an_unknown_identifier_is_refused_naming_it(app):
    with pytest.raises(IdentityError, match="identifier: no profile holds email"):
        app.erase_identifier("email", "nobody@x.io", by="dpo")


# ---- explain ---------------------------------------------------------------------------------
def test_explain_gives_the_chain_of_edges_from_the_first_identifier(app):
    app.resolve_batch(KEY, [item(1, anonymousId="a-1", traits={"email": "e@x.io"}),
                            item(2, userId="u-1", traits={"email": "e@x.io"})])
    explained = app.explain(app.profile_id_for("user_id", "u-1"))
    by_node = {m["node"]: m["because"] for m in explained["members"]}
    assert explained["origin"] == "email:e@x.io"
    assert [(e["rule"], e["evidence"]) for e in by_node["user_id:u-1"]] == [
        ("seen_together", "m-2")]
    assert by_node["email:e@x.io"] == []


def test_explain_of_an_unknown_profile_is_none(app):
    assert app.explain("0b6f7d0e-9c55-4f57-a1c6-1f2d3e4f5a6b") is None


# ---- probabilistic matching ------------------------------------------------------------------
PEOPLE = [
    {"given_name": "Ada", "surname": "Lovelace", "birth_date": "1815-12-10",
     "postcode": "W1 2AB", "street_number": "12", "address": "St James Square"},
    {"given_name": "Alan", "surname": "Turing", "birth_date": "1912-06-23",
     "postcode": "SK9 1AA", "street_number": "43", "address": "Adlington Road"},
    {"given_name": "Grace", "surname": "Hopper", "birth_date": "1906-12-09",
     "postcode": "10001", "street_number": "7", "address": "Fifth Avenue"},
]


def confident_model() -> MatchModel:
    model = MatchModel.default()
    return MatchModel(m=model.m, u=model.u, prior=1e-3)


def test_a_record_close_to_a_known_one_joins_its_profile_with_the_score_on_the_edge(app):
    app.use_match_model(confident_model())
    first = app.resolve_records([{"source": "crm", "id": "1", "attributes": PEOPLE[0]}])[0]
    typo = PEOPLE[0] | {"surname": "Lovelase", "given_name": "ADA"}
    again = app.resolve_records([{"source": "shop", "id": "9", "attributes": typo}])[0]
    assert again == first
    edge = next(e for m in app.explain(first)["members"] for e in m["because"])
    assert edge["rule"] == "match" and edge["score"] >= app.policy.merge_at


def test_a_record_of_someone_else_gets_a_profile_of_its_own(app):
    app.use_match_model(confident_model())
    ids = app.resolve_records([{"source": "crm", "id": str(i), "attributes": p}
                               for i, p in enumerate(PEOPLE)])
    assert len(set(ids)) == 3


def test_a_source_of_distinct_people_never_puts_two_of_its_records_in_one_profile(tmp_path):
    app = make_app(tmp_path, one_record_per_profile=frozenset({"census"}))
    app.use_match_model(confident_model())
    twins = [{"source": "census", "id": str(i), "attributes": PEOPLE[0]} for i in (1, 2)]
    first, second = app.resolve_records(twins)
    assert first != second
    app.close()


def test_a_doubtful_match_goes_to_the_review_queue_and_approval_merges(tmp_path):
    app = make_app(tmp_path, merge_at=0.999999, review_at=0.5)
    app.use_match_model(confident_model())
    first = app.resolve_records([{"source": "crm", "id": "1", "attributes": PEOPLE[1]}])[0]
    doubtful = PEOPLE[1] | {"birth_date": "1912-06-24", "street_number": "44",
                            "postcode": "SK9 1AB"}
    second = app.resolve_records([{"source": "shop", "id": "2", "attributes": doubtful}])[0]
    assert second != first
    [case] = app.review_cases()
    assert (case["profile_id"], case["candidate_id"]) == (second, first)
    assert case["comparison"]["surname"]["level"] == "exact"

    decided = app.decide_case(case["case_id"], approve=True, by="reviewer")

    assert decided["status"] == "approved"
    assert decided["merges"][0]["rule"] == "match"
    assert app.explain(second)["profile_id"] == first
    assert app.review_cases() == []
    with pytest.raises(IdentityError, match="is already approved"):
        app.decide_case(case["case_id"], approve=False, by="reviewer")
    app.close()


def test_a_rejected_review_case_leaves_both_profiles_apart(tmp_path):
    app = make_app(tmp_path, merge_at=0.999999, review_at=0.5)
    app.use_match_model(confident_model())
    first = app.resolve_records([{"source": "crm", "id": "1", "attributes": PEOPLE[1]}])[0]
    doubtful = PEOPLE[1] | {"birth_date": "1912-06-24", "street_number": "44",
                            "postcode": "SK9 1AB"}
    second = app.resolve_records([{"source": "shop", "id": "2", "attributes": doubtful}])[0]
    [case] = app.review_cases()
    app.decide_case(case["case_id"], approve=False, by="reviewer")
    assert app.explain(second)["profile_id"] == second != first
    assert app.review_cases("rejected")[0]["decided_by"] == "reviewer"
    app.close()


def test_the_match_model_survives_a_restart(tmp_path):
    app = make_app(tmp_path)
    app.use_match_model(confident_model())
    app.close()
    again = make_app(tmp_path)
    assert again.match_model.prior == pytest.approx(1e-3)
    again.close()


def test_em_without_labels_learns_that_agreeing_names_are_evidence_of_a_match():
    policy = IdentityPolicy()
    people = [clean_attributes({"given_name": g, "surname": s, "birth_date": f"19{y:02d}-0{m}-1{d}",
                                "postcode": f"{p:04d}"}, policy)
              for g, s, y, m, d, p in (
                  (g, s, (i * 7) % 90, 1 + i % 9, i % 9, 1000 + i % 50)
                  for i, (g, s) in enumerate(
                      (g, s) for g in ("ann", "bea", "cid", "dan", "eve", "fay", "gus", "hal")
                      for s in ("ash", "birch", "cedar", "dogwood", "elm", "fir", "gum")))]
    duplicates = [dict(p) for p in people[:20]]
    model = estimate_model(people + duplicates, seed=1, u_pairs=20_000)
    exact, different = model.weights["surname"][-1], model.weights["surname"][0]
    assert exact > 0 > different


def test_a_tracked_event_matching_someone_probabilistically_goes_to_review_not_to_a_merge(app):
    app.use_match_model(confident_model())
    known = app.resolve_records([{"source": "crm", "id": "1", "attributes": PEOPLE[0]}])[0]
    traits = {"firstName": "Ada", "lastName": "Lovelace", "birthday": "1815-12-10",
              "address": {"postalCode": "W1 2AB", "street": "St James Square"}}
    app.resolve_batch(KEY, [item(1, anonymousId="a-visitor", traits=traits)])
    visitor = app.profile_id_for("anonymous_id", "a-visitor")
    assert visitor != known
    [case] = app.review_cases()
    assert (case["profile_id"], case["candidate_id"]) == (visitor, known)
    assert case["score"] >= app.policy.merge_at


def test_a_record_that_surely_matches_two_profiles_joins_them_naming_the_match(tmp_path):
    app = make_app(tmp_path, merge_at=0.9999, review_at=0.99)
    app.use_match_model(confident_model())
    name = {"given_name": "Grace", "surname": "Hopper"}
    by_birth = app.resolve_records([{"source": "census", "id": "1",
                                     "attributes": name | {"birth_date": "1906-12-09"}}])[0]
    by_ssn = app.resolve_records([{"source": "taxes", "id": "2",
                                   "attributes": name | {"ssn": "123-45-6789"}}])[0]
    assert by_birth != by_ssn  # a name alone is not enough

    both = app.resolve_records([{"source": "ssa", "id": "3", "attributes": name | {
        "birth_date": "1906-12-09", "ssn": "123-45-6789"}}])[0]

    assert {app.current_profile_id(p) for p in (by_birth, by_ssn, both)} == {by_birth}
    merged = [h for h in app.explain(by_birth)["history"] if h["what"] == "merged"]
    assert merged[0]["reason"]["rule"] == "match"
    assert merged[0]["reason"]["score"] >= 0.9999


def test_records_resolved_before_a_restart_are_still_found_by_matching(tmp_path):
    app = make_app(tmp_path)
    app.use_match_model(confident_model())
    first = app.resolve_records([{"source": "crm", "id": "1", "attributes": PEOPLE[2]}])[0]
    app.close()
    again = make_app(tmp_path)
    typo = PEOPLE[2] | {"given_name": "Grase"}
    assert again.resolve_records([{"source": "shop", "id": "2", "attributes": typo}])[0] == first
    again.close()


def test_a_replica_sees_the_records_another_replica_saved(tmp_path):
    one, other = make_app(tmp_path), make_app(tmp_path)
    one.use_match_model(confident_model())
    other.use_match_model(confident_model())
    first = one.resolve_records([{"source": "crm", "id": "1", "attributes": PEOPLE[1]}])[0]
    typo = PEOPLE[1] | {"surname": "Turring"}
    assert other.resolve_records([{"source": "shop", "id": "2", "attributes": typo}])[0] == first
    one.close()
    other.close()


def test_erasing_the_record_that_held_two_records_together_splits_them(tmp_path):
    app = make_app(tmp_path, merge_at=0.9999, review_at=0.99)
    app.use_match_model(confident_model())
    name = {"given_name": "Grace", "surname": "Hopper"}
    by_birth, by_ssn, _bridging = app.resolve_records([
        {"source": "census", "id": "1", "attributes": name | {"birth_date": "1906-12-09"}},
        {"source": "taxes", "id": "2", "attributes": name | {"ssn": "123-45-6789"}},
        {"source": "ssa", "id": "3", "attributes": name | {"birth_date": "1906-12-09",
                                                           "ssn": "123-45-6789"}}])
    assert app.current_profile_id(by_ssn) == by_birth

    app.erase_record("ssa/3", by="dpo")

    assert app.current_profile_id(by_ssn) != app.current_profile_id(by_birth)
    assert "record:ssa/3" not in {m["node"] for m in app.explain(by_birth)["members"]}
    app.close()
    # After a restart the erased record is not matched against any more.
    again = make_app(tmp_path)
    assert "ssa/3" not in again.match_index.records
    again.close()


def test_erasing_an_unknown_record_is_refused_naming_it(app):
    with pytest.raises(IdentityError, match="record_id: no record 'crm/404'"):
        app.erase_record("crm/404", by="dpo")


def test_a_record_is_scored_against_everything_a_profile_knows_not_one_record_at_a_time(
        tmp_path):
    app = make_app(tmp_path, merge_at=0.9999, review_at=0.99)
    app.use_match_model(confident_model())
    name = {"given_name": "Grace", "surname": "Hopper"}
    known = app.resolve_records([
        {"source": "census", "id": "1", "identifiers": [["crm_id", "c-1"]],
         "attributes": name | {"birth_date": "1906-12-09"}},
        {"source": "taxes", "id": "2", "identifiers": [["crm_id", "c-1"]],
         "attributes": name | {"ssn": "123-45-6789"}}])
    assert known[0] == known[1]
    # Against either record alone, a misspelt given name leaves too little; against both
    # (birth date from one, SSN from the other) it is sure.
    newcomer = {"given_name": "Gracie", "surname": "Hopper", "birth_date": "1906-12-09",
                "ssn": "123-45-6789"}
    assert app.resolve_records([{"source": "ssa", "id": "3",
                                 "attributes": newcomer}])[0] == known[0]


def test_the_fast_comparison_gives_what_each_comparison_says_on_its_own():
    from services.identity.matching import COMPARISONS, compare
    policy = IdentityPolicy()
    variants = [clean_attributes(p, policy) for p in PEOPLE] + [
        clean_attributes(PEOPLE[0] | {"given_name": "Lovelace", "surname": "Ada"}, policy),
        clean_attributes({"surname": "Turing", "street_number": "43"}, policy),
        clean_attributes({"given_name": "Alan", "birth_date": "1913-06-23"}, policy),
        clean_attributes(PEOPLE[1] | {"birth_date": "1913-06-23", "postcode": "SK9 1AB",
                                      "ssn": "123-45-6789"}, policy)]
    for a in variants:
        for b in variants:
            assert compare(a, b) == tuple(c.level_of(a, b) for c in COMPARISONS)


@pytest.mark.parametrize("theirs, level", [
    ({"given_name": "Robbie", "surname": "Lowe"}, "exact"),
    ({"given_name": "Lowe", "surname": "Robbie"}, "swapped"),
    ({"given_name": "Lowee", "surname": "Robie"}, "swapped"),
    ({"given_name": "Robert", "surname": "Lowe"}, "close"),  # a nickname of the same name
    ({"given_name": "Ronnie", "surname": "Lowe"}, "similar"),
    ({"given_name": "Zachary", "surname": "Lowe"}, "different"),
])
def test_given_names_are_compared_with_swaps_typos_and_nicknames_in_mind(theirs, level):
    from services.identity.matching import COMPARISONS, compare
    policy = IdentityPolicy()
    mine = clean_attributes({"given_name": "Robbie", "surname": "Lowe"}, policy)
    found = compare(mine, clean_attributes(theirs, policy))[0]
    assert COMPARISONS[0].levels[found] == level


def test_weights_are_estimated_from_the_records_identity_holds_and_kept(tmp_path):
    app = make_app(tmp_path)
    given = ("ann", "bea", "cid", "dan", "eve", "fay", "gus", "hal", "ivy", "jon", "kai")
    surnames = ("ash", "birch", "cedar", "dogwood", "elm", "fir", "gum", "hazel", "ilex",
                "juniper", "kauri", "larch", "maple", "nutmeg", "oak", "pine", "quince",
                "rowan", "spruce", "teak")
    people = [{"given_name": g, "surname": s, "postcode": f"{1000 + i % 40}",
               "birth_date": f"19{(i * 7) % 90:02d}-0{1 + i % 9}-1{i % 9}"}
              for i, (g, s) in enumerate((g, s) for g in given for s in surnames)]
    records = [{"source": "crm", "id": str(i), "attributes": p} for i, p in enumerate(people)]
    records += [{"source": "shop", "id": str(i), "attributes": p}
                for i, p in enumerate(people[:60])]
    app.resolve_records(records)

    estimated = app.estimate_match_weights()

    assert estimated["trained_on"] == 280
    assert estimated["weights"]["surname"]["exact"] > 0 > estimated["weights"]["surname"][
        "different"]
    app.close()
    assert make_app(tmp_path).match_weights() == estimated


def test_estimating_weights_from_too_few_records_is_refused_saying_how_many(app):
    app.resolve_records([{"source": "crm", "id": "1", "attributes": PEOPLE[0]}])
    with pytest.raises(IdentityError, match="records: estimating weights needs at least 200"):
        app.estimate_match_weights()


def test_a_record_s_identifiers_are_normalised_as_an_event_s_are(app):
    first = app.resolve_records([{"source": "crm", "id": "1", "identifiers": [
        ["email", " A.Da+crm@GMail.com"], ["phone", "06 12 34 56 78"]]}])[0]
    assert app.profile_id_for("email", "ada@gmail.com") == first
    assert app.profile_id_for("phone", "+33612345678") == first
    app.resolve_records([{"source": "crm", "id": "2", "identifiers": [["phone", "12"]]}])
    assert app.profile_id_for("phone", "12") is None


def test_a_record_with_an_unknown_identifier_type_is_refused_naming_it(app):
    with pytest.raises(IdentityError, match="identifiers: unknown identifier type 'fax'"):
        app.resolve_records([{"source": "crm", "id": "1", "identifiers": [["fax", "123"]]}])
