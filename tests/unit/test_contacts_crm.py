"""Contacts as a CRM-grade store: survivorship, lifecycle stages, accounts, deals, tickets,
notes and the searchable directory, in both modes (SQLite file; PostgreSQL, a fresh
database per test)."""

from __future__ import annotations

import json
import uuid

import pytest

from services.contacts.application import ContactError, ContactsApplication
from services.contacts.domain import ChangeBatch
from services.contacts.policy import ContactsPolicy, PolicyError
from shared.config import Settings
from tessera.testing.platform import drop_database

KEY = "identity/identity.resolved/0"
ADA, BOB, CYD = (str(uuid.uuid4()) for _ in range(3))

POLICY = ContactsPolicy.from_mapping({
    "survivorship": {"title": ["hubspot", "salesforce"], "plan": ["app"]},
    "stage_rules": [
        {"event": "Signed Up", "to": "lead"},
        {"event": "Demo Requested", "to": "salesqualifiedlead"},
        {"event": "Deal Updated", "where": {"won": True}, "to": "customer"},
        {"event": "Churned", "to": "lead", "backwards": True},
        {"trait": "lifecyclestage", "to": "$value"},
    ],
})


@pytest.fixture(params=["sqlite", "postgres"])
def app(request, tmp_path):
    if request.param == "sqlite":
        settings = Settings(data_dir=tmp_path)
    else:
        settings = Settings(database="postgres", postgres_dbname=f"contacts_{uuid.uuid4().hex}")
    made = ContactsApplication(settings, policy=POLICY)
    yield made
    made.close()
    if request.param == "postgres":
        drop_database(settings.postgres_dbname)


class Feed:
    def __init__(self, app: ContactsApplication):
        self.app, self.position = app, 0

    def send(self, profile_id: str, source: str, second: int, identifiers=(), **event) -> None:
        self.position += 1
        event.setdefault("timestamp", f"2026-03-01T10:00:{second:02d}.000Z")
        self.app.apply_batch(KEY, "0", [{
            "position": self.position, "profile_id": profile_id, "source": source,
            "event": event, "identifiers": [list(i) for i in identifiers], "merged_from": []}])

    def identify(self, profile_id: str, source: str, second: int, **traits) -> None:
        self.send(profile_id, source, second, type="identify", traits=traits,
                  identifiers=[("email", traits["email"])] if "email" in traits else ())

    def track(self, profile_id: str, name: str, second: int, source: str = "app",
              **properties) -> None:
        self.send(profile_id, source, second, type="track", event=name, properties=properties,
                  messageId=f"m-{self.position + 1}")


@pytest.fixture
def feed(app):
    return Feed(app)


def announced(app: ContactsApplication) -> list[dict]:
    return [item for event in app.scan(ChangeBatch.ProfilesChanged) for item in event.items]


# ---- survivorship ----------------------------------------------------------------------
def test_the_crm_wins_the_title_even_when_the_app_said_otherwise_later(app, feed):
    feed.identify(ADA, "hubspot", 1, title="CTO")
    feed.identify(ADA, "app", 5, title="Engineer")
    profile = app.profile(ADA)
    assert profile["traits"]["title"] == "CTO"
    assert [(e["source"], e["value"]) for e in profile["trait_sources"]["title"]] == [
        ("hubspot", "CTO"), ("app", "Engineer")]
    assert announced(app)[-1]["traits"]["title"] == "CTO"


def test_the_app_wins_the_plan_over_the_crm(app, feed):
    feed.identify(ADA, "app", 1, plan="pro")
    feed.identify(ADA, "salesforce", 9, plan="free")
    assert app.profile(ADA)["traits"]["plan"] == "pro"


def test_a_trait_without_a_priority_takes_the_most_recent_value_whatever_its_source(app, feed):
    feed.identify(ADA, "hubspot", 1, city="Paris")
    feed.identify(ADA, "app", 2, city="Lyon")
    assert app.profile(ADA)["traits"]["city"] == "Lyon"
    # An older value arriving late does not overwrite a newer one.
    feed.identify(ADA, "salesforce", 0, city="Nice")
    profile = app.profile(ADA)
    assert profile["traits"]["city"] == "Lyon"
    assert [e["value"] for e in profile["trait_sources"]["city"]] == ["Lyon", "Paris", "Nice"]


def test_the_crm_taking_back_its_title_brings_its_new_value_forward(app, feed):
    feed.identify(ADA, "app", 1, title="Engineer")
    assert app.profile(ADA)["traits"]["title"] == "Engineer"
    feed.identify(ADA, "salesforce", 2, title="VP Engineering")
    feed.identify(ADA, "hubspot", 3, title="CTO")
    assert app.profile(ADA)["traits"]["title"] == "CTO"


def test_a_source_repeating_itself_records_nothing_new(app, feed):
    feed.identify(ADA, "app", 1, plan="pro")
    before = len(list(app.events.get(uuid.UUID(ADA))))
    feed.identify(ADA, "app", 2, plan="pro")
    assert len(list(app.events.get(uuid.UUID(ADA)))) == before


def test_survivorship_can_come_from_a_mounted_file(tmp_path, monkeypatch):
    config = tmp_path / "contacts.json"
    config.write_text('{"survivorship": {"phone": ["salesforce"]}}')
    monkeypatch.setenv("TESSERA_CONTACTS_CONFIG_FILE", str(config))
    assert ContactsPolicy.from_env().survivorship == {"phone": ("salesforce",)}


@pytest.mark.parametrize("config, message", [
    ({"survivorship": {"title": "hubspot"}}, "survivorship.title: must be a list"),
    ({"stage_rules": [{"event": "X", "to": "vip"}]}, "stage_rules[0].to: 'vip' is not one of"),
    ({"stage_rules": [{"event": "X", "trait": "y", "to": "lead"}]},
     "stage_rules[0]: needs exactly one of 'event' or 'trait'"),
    ({"stages": ["lead", "lead"]}, "stages: each stage may appear only once"),
    ({"priority": {}}, "priority: unknown setting"),
])
def test_a_bad_configuration_is_refused_naming_the_field_and_the_rule(config, message):
    with pytest.raises(PolicyError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ContactsPolicy.from_mapping(config)


# ---- lifecycle stages ------------------------------------------------------------------
def test_a_demo_request_makes_a_sales_qualified_lead_with_the_rule_on_record(app, feed):
    feed.track(ADA, "Signed Up", 1)
    feed.track(ADA, "Demo Requested", 2)
    profile = app.profile(ADA)
    assert profile["lifecycle_stage"] == "salesqualifiedlead"
    assert [(h["previous"], h["stage"]) for h in profile["stage_history"]] == [
        (None, "lead"), ("lead", "salesqualifiedlead")]
    assert profile["stage_history"][1]["cause"] == {
        "kind": "rule", "rule": "event 'Demo Requested' -> salesqualifiedlead",
        "at": "2026-03-01T10:00:02.000Z"}
    assert announced(app)[-1]["traits"]["lifecycle_stage"] == "salesqualifiedlead"


def test_a_stage_never_moves_backwards_by_an_ordinary_rule(app, feed):
    feed.track(ADA, "Demo Requested", 1)
    feed.track(ADA, "Signed Up", 2)
    assert app.profile(ADA)["lifecycle_stage"] == "salesqualifiedlead"


def test_a_rule_that_says_so_moves_a_stage_backwards(app, feed):
    feed.track(ADA, "Deal Updated", 1, deal_id="d-1", amount=100, closed=True, won=True)
    feed.track(ADA, "Churned", 2)
    assert app.profile(ADA)["lifecycle_stage"] == "lead"


def test_a_trait_rule_copies_the_crms_stage_but_ignores_an_unknown_one(app, feed):
    feed.identify(ADA, "hubspot", 1, lifecyclestage="opportunity")
    assert app.profile(ADA)["lifecycle_stage"] == "opportunity"
    feed.identify(ADA, "hubspot", 2, lifecyclestage="vip")
    assert app.profile(ADA)["lifecycle_stage"] == "opportunity"


def test_a_person_may_set_any_stage_and_is_named_as_its_cause(app, feed):
    feed.track(ADA, "Demo Requested", 1)
    view = app.set_stage(ADA, "subscriber", author="maria@sales")
    assert view["lifecycle_stage"] == "subscriber"
    assert view["stage_history"][-1]["cause"]["kind"] == "person"
    assert view["stage_history"][-1]["cause"]["author"] == "maria@sales"
    assert app.profile(ADA)["stage_history"][-1]["previous"] == "salesqualifiedlead"


def test_setting_a_stage_that_is_not_configured_is_refused(app, feed):
    feed.track(ADA, "Signed Up", 1)
    with pytest.raises(ContactError, match="stage: 'vip' is not one of"):
        app.set_stage(ADA, "vip", author="maria")


def test_the_default_rules_follow_hubspots_stage_names():
    policy = ContactsPolicy.default()
    assert policy.stages[0] == "subscriber" and policy.stages[-1] == "evangelist"
    assert policy.stage_index("salesqualifiedlead") > policy.stage_index("lead")


# ---- accounts, deals, tickets ----------------------------------------------------------
def test_group_calls_make_accounts_with_their_contacts_and_roles(app, feed):
    feed.send(ADA, "hubspot", 1, type="group", groupId="acme",
              traits={"name": "ACME", "industry": "Rockets"}, context={"role": "Decision Maker"})
    feed.send(BOB, "app", 2, type="group", groupId="acme", traits={"plan": "enterprise"})
    account = app.account("acme")
    assert account["traits"] == {"name": "ACME", "industry": "Rockets", "plan": "enterprise"}
    assert {(c["profile_id"], c["role"]) for c in account["contacts"]} == {
        (ADA, "Decision Maker"), (BOB, "member")}
    assert {c["profile_id"] for c in app.search(account="acme")} == {ADA, BOB}
    assert app.search_accounts("ac")[0]["account_id"] == "acme"
    assert announced(app)[-1]["traits"]["account_ids"] == ["acme"]


def test_deals_and_tickets_become_traits_and_land_on_the_account_timeline(app, feed):
    feed.send(ADA, "hubspot", 1, type="group", groupId="acme", traits={"name": "ACME"})
    feed.track(ADA, "Deal Updated", 2, source="hubspot", deal_id="d-1", amount=5000,
               stage="contractsent", closed=False, won=False)
    feed.track(ADA, "Deal Updated", 3, source="hubspot", deal_id="d-2", amount=700,
               stage="closedlost", closed=True, won=False)
    feed.track(ADA, "Ticket Updated", 4, source="hubspot", ticket_id="t-1", status="open",
               created_at="2026-02-27T09:00:00Z")
    feed.track(ADA, "Ticket Updated", 5, source="hubspot", ticket_id="t-0", status="closed",
               created_at="2026-01-02T09:00:00Z")
    traits = announced(app)[-1]["traits"]
    assert traits["open_deal_value"] == 5000
    assert traits["open_deals"] == 1
    assert traits["latest_deal_stage"] == "closedlost"
    assert traits["open_tickets"] == 1
    assert traits["last_ticket_at"] == "2026-02-27T09:00:00Z"
    # The deal moving on replaces what was known of it.
    feed.track(ADA, "Deal Updated", 6, source="hubspot", deal_id="d-1", amount=5000,
               stage="closedwon", closed=True, won=True)
    assert announced(app)[-1]["traits"]["open_deal_value"] == 0
    assert app.profile(ADA)["lifecycle_stage"] == "customer"
    timeline = app.account_timeline("acme")
    assert [e["event"] for e in timeline] == ["Deal Updated", "Ticket Updated",
                                             "Ticket Updated", "Deal Updated", "Deal Updated"]
    assert {e["profile_id"] for e in timeline} == {ADA}
    assert [e["event"] for e in app.timeline(ADA)][:1] == ["Deal Updated"]


def test_a_deal_naming_its_account_goes_to_that_accounts_timeline(app, feed):
    feed.track(ADA, "Deal Updated", 1, deal_id="d-9", amount=10, account_id="globex")
    assert [e["properties"]["deal_id"] for e in app.account_timeline("globex")] == ["d-9"]
    assert app.account_timeline("acme") == []


def test_a_merge_brings_deals_accounts_and_the_further_stage_to_the_survivor(app, feed):
    feed.identify(ADA, "app", 1, email="ada@example.com", firstName="Ada")
    feed.send(BOB, "hubspot", 2, type="group", groupId="acme", traits={"name": "ACME"})
    feed.track(BOB, "Deal Updated", 3, deal_id="d-1", amount=50, closed=True, won=True)
    feed.position += 1
    app.apply_batch(KEY, "0", [{
        "position": feed.position, "profile_id": ADA, "source": "app",
        "event": {"type": "track", "event": "Visit", "timestamp": "2026-03-01T10:00:09Z"},
        "identifiers": [], "merged_from": [BOB]}])
    survivor = app.profile(ADA)
    assert survivor["lifecycle_stage"] == "customer"
    assert survivor["stage_history"][-1]["cause"] == {"kind": "merge", "from": BOB}
    assert list(survivor["deals"]) == ["d-1"] and survivor["accounts"] == {"acme": "member"}
    assert [c["profile_id"] for c in app.search(account="acme")] == [ADA]
    assert [e["profile_id"] for e in app.account_timeline("acme")] == [ADA]


# ---- the directory: search ---------------------------------------------------------------
def test_contacts_are_found_exactly_by_any_identifier_and_by_prefix_on_name_and_email(app, feed):
    feed.send(ADA, "app", 1, type="identify",
              traits={"email": "Ada@Example.com", "firstName": "Ada", "lastName": "Lovelace"},
              identifiers=[("email", "ada@example.com"), ("user_id", "u-1")])
    feed.identify(BOB, "app", 2, email="bob@example.org", name="Bob Lovelock")
    feed.identify(CYD, "app", 3, email="cyd@other.net", name="Cyd Charisse")
    assert [c["profile_id"] for c in app.search(identifier="u-1")] == [ADA]
    assert [c["profile_id"] for c in app.search(identifier="ADA@example.com")] == [ADA]
    assert [c["profile_id"] for c in app.search(identifier=CYD)] == [CYD]
    assert app.search(identifier="u-") == []
    assert [c["name"] for c in app.search(name="love")] == ["Ada Lovelace", "Bob Lovelock"]
    assert [c["name"] for c in app.search(name="Ada")] == ["Ada Lovelace"]
    assert [c["email"] for c in app.search(email="bob@")] == ["bob@example.org"]
    assert app.search(email="example") == []


def test_contacts_are_listed_by_owner_and_by_stage(app, feed):
    feed.identify(ADA, "hubspot", 1, email="ada@example.com", name="Ada", owner="maria")
    feed.identify(BOB, "hubspot", 2, email="bob@example.com", name="Bob", owner="omar")
    feed.track(BOB, "Demo Requested", 3)
    assert [c["profile_id"] for c in app.search(owner="maria")] == [ADA]
    assert [c["profile_id"] for c in app.search(stage="salesqualifiedlead")] == [BOB]
    assert app.search(owner="maria", stage="salesqualifiedlead") == []


def test_a_search_without_criteria_is_refused(app):
    with pytest.raises(ContactError, match="search: give at least one of"):
        app.search()


def test_a_merged_away_contact_leaves_the_directory(app, feed):
    feed.identify(ADA, "app", 1, email="ada@example.com", name="Ada")
    feed.identify(BOB, "app", 2, email="ada.work@example.com", name="Ada Work")
    feed.position += 1
    app.apply_batch(KEY, "0", [{
        "position": feed.position, "profile_id": ADA, "source": "app",
        "event": {"type": "identify", "traits": {}, "timestamp": "2026-03-01T10:00:09Z"},
        "identifiers": [], "merged_from": [BOB]}])
    assert [c["profile_id"] for c in app.search(name="ada")] == [ADA]
    assert [c["profile_id"] for c in app.search(identifier="ada.work@example.com")] == [ADA]


# ---- people's changes: updates, bulk updates, notes --------------------------------------
def test_a_persons_update_is_one_more_source_ranked_by_the_policy(app, feed):
    feed.identify(ADA, "hubspot", 1, email="ada@example.com", title="CTO")
    view = app.update_contact(ADA, {"title": "Chief", "phone": "+33600000000"}, author="maria")
    assert view["traits"]["title"] == "CTO"  # the CRM still wins the title
    assert view["traits"]["phone"] == "+33600000000"
    assert announced(app)[-1]["traits"]["phone"] == "+33600000000"
    assert app.update_contact(str(uuid.uuid4()), {"x": 1}, author="maria") is None


def test_a_bulk_update_changes_each_contact_found_and_names_the_missing(app, feed):
    feed.identify(ADA, "app", 1, email="ada@example.com")
    feed.identify(BOB, "app", 2, email="bob@example.com")
    ghost = str(uuid.uuid4())
    result = app.bulk_update([{"profile_id": ADA, "traits": {"owner": "omar"}},
                              {"profile_id": BOB, "stage": "customer"},
                              {"profile_id": ghost, "traits": {"owner": "omar"}}],
                             author="maria")
    assert result == {"updated": 2, "missing": [ghost]}
    assert [c["profile_id"] for c in app.search(owner="omar")] == [ADA]
    assert [c["profile_id"] for c in app.search(stage="customer")] == [BOB]


def test_a_bulk_update_with_a_bad_stage_changes_nothing(app, feed):
    feed.identify(ADA, "app", 1, email="ada@example.com")
    with pytest.raises(ContactError, match=r"updates\[1\].stage"):
        app.bulk_update([{"profile_id": ADA, "traits": {"owner": "omar"}},
                         {"profile_id": ADA, "stage": "vip"}], author="maria")
    assert app.search(owner="omar") == []


def test_notes_go_on_the_timeline_with_their_author(app, feed):
    feed.track(ADA, "Signed Up", 1)
    app.add_note(ADA, "Called, wants a demo next week", author="maria@sales")
    note = app.timeline(ADA)[0]
    assert (note["type"], note["text"], note["author"]) == (
        "note", "Called, wants a demo next week", "maria@sales")
    assert note["timestamp"] > "2026-03-01T10:00:01.000Z"
    assert app.profile(ADA)["notes_total"] == 1


def test_an_account_updated_by_a_person_keeps_what_group_calls_said(app, feed):
    feed.send(ADA, "hubspot", 1, type="group", groupId="acme", traits={"name": "ACME"})
    account = app.update_account("acme", {"owner": "maria"}, author="maria")
    assert account["traits"] == {"name": "ACME", "owner": "maria"}
    assert [c["profile_id"] for c in account["contacts"]] == [ADA]


def test_a_batch_of_many_contacts_is_searchable_as_soon_as_it_is_saved(app):
    people = [(str(uuid.uuid4()), f"Person{i:02d} Sample", f"p{i:02d}@example.com")
              for i in range(12)]
    app.apply_batch(KEY, "0", [
        {"position": i + 1, "profile_id": pid, "source": "app",
         "event": {"type": "identify", "traits": {"name": name, "email": email},
                   "timestamp": "2026-03-01T10:00:00Z"},
         "identifiers": [["email", email], ["user_id", f"u-{i}"]], "merged_from": []}
        for i, (pid, name, email) in enumerate(people)])
    assert len(app.search(name="person")) == 12
    assert len(app.search(name="sample")) == 12
    assert [c["profile_id"] for c in app.search(name="person", limit=3)] == [
        pid for pid, _, _ in people[:3]]
    assert [c["profile_id"] for c in app.search(identifier="u-7")] == [people[7][0]]


def test_events_that_change_no_directory_entry_write_none(app, feed):
    feed.identify(ADA, "app", 1, email="ada@example.com", name="Ada")
    rm = app.directory.rm
    marked = json.dumps({"profile_id": ADA, "name": "marked"})
    rm.execute(f"UPDATE {rm.table('contacts')} SET doc = %s WHERE profile_id = %s",
               [marked, ADA])
    feed.track(ADA, "Page Viewed", 2)  # the timeline grows, the entry does not change
    feed.track(ADA, "Page Viewed", 3)
    assert app.search(identifier=ADA)[0]["name"] == "marked"
    feed.identify(ADA, "app", 4, name="Ada King")
    assert app.search(identifier=ADA)[0]["name"] == "Ada King"


def test_an_entry_changed_by_another_replica_is_written_again_when_it_changes_back(tmp_path):
    first = ContactsApplication(Settings(data_dir=tmp_path), policy=POLICY)
    second = ContactsApplication(Settings(data_dir=tmp_path), policy=POLICY)
    try:
        Feed(first).identify(ADA, "app", 1, email="ada@example.com", owner="maria")
        second.update_contact(ADA, {"owner": "omar"}, author="omar")
        first.forget_cached_state()  # its copy of the profile aged out of the cache
        first.update_contact(ADA, {"owner": "maria"}, author="maria")
        assert [c["profile_id"] for c in first.search(owner="maria")] == [ADA]
    finally:
        first.close()
        second.close()
