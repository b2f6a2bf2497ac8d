"""Identity resolution: normalising identifiers, linking them, merging profiles, idempotence."""

from __future__ import annotations

import pytest

from services.identity.application import IdentityApplication
from services.identity.domain import (
    Identifier,
    ResolutionBatch,
    identifiers_of,
    is_blocked,
    normalise_email,
    normalise_phone,
)
from shared.config import Settings

KEY = "gateway/ingest.received/0"


@pytest.fixture
def app(tmp_path):
    made = IdentityApplication(Settings(data_dir=tmp_path))
    yield made
    made.close()


def item(position: int, at: str = "2026-01-01T00:00:00.000Z", **event) -> dict:
    return {"position": position, "source": "web",
            "event": {"type": "identify", "timestamp": at, **event}}


def notifications(app: IdentityApplication) -> int:
    return app.process_recorder.max_notification_id() or 0


def resolved_items(app: IdentityApplication) -> list[dict]:
    found = []
    for notification in app.process_recorder.select_notifications(start=1, limit=10_000):
        domain_event = app.mapper.to_domain_event(notification)
        if isinstance(domain_event, ResolutionBatch.Resolved):
            found.extend(domain_event.items)
    return found


# ---- normalisation -------------------------------------------------------------------------
@pytest.mark.parametrize("raw, expected", [
    ("Ada@Example.COM", "ada@example.com"),
    ("  ada.lovelace@example.co.uk \n", "ada.lovelace@example.co.uk"),
])
def test_an_email_is_trimmed_and_lowercased(raw, expected):
    assert normalise_email(raw) == expected


@pytest.mark.parametrize("raw", ["not-an-email", "ada@", "@example.com", "ada@localhost", "",
                                 None, 42, ["ada@example.com"]])
def test_something_that_is_not_an_email_normalises_to_none(raw):
    assert normalise_email(raw) is None


@pytest.mark.parametrize("raw, expected", [
    ("06 12 34 56 78", "+33612345678"),          # French national format, FR by default
    ("+33 6 12 34 56 78", "+33612345678"),
    ("+44 20 7946 0958", "+442079460958"),
    ("+1 650-253-0000", "+16502530000"),
    (612345678, "+33612345678"),
])
def test_a_valid_phone_number_is_written_in_e164(raw, expected):
    assert normalise_phone(raw) == expected


@pytest.mark.parametrize("raw", ["12345", "abc", "0000", "+33 6 12", "", None, 1.5])
def test_an_invalid_phone_number_is_rejected(raw):
    assert normalise_phone(raw) is None


@pytest.mark.parametrize("value", ["0000", "0", "-", "00-00", "null", "NULL", "anonymous",
                                   "test@test.com", "undefined"])
def test_blocked_values_are_recognised(value):
    assert is_blocked(value)


def test_an_ordinary_value_is_not_blocked():
    assert not is_blocked("u-42")
    assert not is_blocked("ada@example.com")


def test_an_event_carries_its_identifiers_normalised_and_strongest_first():
    event = {"userId": "u-1", "anonymousId": "a-1",
             "traits": {"email": " Ada@Example.com ", "phone": "06 12 34 56 78"}}
    assert identifiers_of(event) == [
        Identifier("user_id", "u-1"), Identifier("email", "ada@example.com"),
        Identifier("phone", "+33612345678"), Identifier("anonymous_id", "a-1"),
    ]


def test_an_event_carrying_only_blocked_values_has_no_identifiers():
    event = {"userId": "0000", "anonymousId": "anonymous",
             "traits": {"email": "TEST@test.com", "phone": "0000"}}
    assert identifiers_of(event) == []


def test_identify_traits_in_the_context_are_read_too():
    event = {"type": "track", "anonymousId": "a-1", "context": {"traits": {"email": "a@b.io"}}}
    assert Identifier("email", "a@b.io") in identifiers_of(event)


# ---- resolution ----------------------------------------------------------------------------
def test_a_new_identifier_creates_a_profile(app):
    assert app.profile_id_for("anonymous_id", "a-1") is None
    assert app.resolve_batch(KEY, [item(1, anonymousId="a-1")]) == 1
    profile_id = app.profile_id_for("anonymous_id", "a-1")
    assert profile_id is not None
    assert app.identifiers_of_profile(profile_id) == {"anonymous_id": ["a-1"]}
    assert resolved_items(app)[0]["profile_id"] == profile_id


def test_identifiers_seen_together_are_linked_to_one_profile(app):
    app.resolve_batch(KEY, [item(1, anonymousId="a-1", traits={"email": "Ada@Example.com"})])
    by_anonymous_id = app.profile_id_for("anonymous_id", "a-1")
    assert by_anonymous_id == app.profile_id_for("email", "ada@example.com")
    assert app.profile_id_for("email", "Ada@Example.com") is None  # only normalised values


def test_an_email_seen_with_a_user_id_joins_the_anonymous_profile_that_had_it(app):
    app.resolve_batch(KEY, [item(1, anonymousId="a-1", traits={"email": "ada@example.com"})])
    anonymous_profile = app.profile_id_for("anonymous_id", "a-1")
    app.resolve_batch(KEY, [item(2, userId="u-1", traits={"email": "ada@example.com"})])
    assert app.profile_id_for("user_id", "u-1") == anonymous_profile
    assert app.identifiers_of_profile(anonymous_profile) == {
        "anonymous_id": ["a-1"], "email": ["ada@example.com"], "user_id": ["u-1"]}


def test_blocked_values_never_link_two_people(app):
    app.resolve_batch(KEY, [
        item(1, userId="0000", anonymousId="a-1", traits={"email": "test@test.com"}),
        item(2, userId="0000", anonymousId="a-2", traits={"email": "test@test.com"}),
        item(3, anonymousId="null", traits={"email": "c@example.com"}),
        item(4, anonymousId="anonymous", traits={"email": "d@example.com"}),
    ])
    first, second = app.profile_id_for("anonymous_id", "a-1"), app.profile_id_for(
        "anonymous_id", "a-2")
    assert first != second
    assert app.profile_id_for("email", "c@example.com") != app.profile_id_for(
        "email", "d@example.com")
    for kind, value in [("user_id", "0000"), ("email", "test@test.com"),
                        ("anonymous_id", "null"), ("anonymous_id", "anonymous")]:
        assert app.profile_id_for(kind, value) is None


def test_events_with_only_blocked_identifiers_each_get_a_profile_of_their_own(app):
    app.resolve_batch(KEY, [item(1, userId="0000"), item(2, userId="0000")])
    first, second = (i["profile_id"] for i in resolved_items(app))
    assert first != second


def test_two_profiles_joined_by_a_later_event_merge_into_the_oldest(app):
    app.resolve_batch(KEY, [
        item(1, "2026-01-01T00:00:00.000Z", anonymousId="a-1"),
        item(2, "2026-01-02T00:00:00.000Z", traits={"email": "ada@example.com"}),
    ])
    oldest = app.profile_id_for("anonymous_id", "a-1")
    newer = app.profile_id_for("email", "ada@example.com")
    assert oldest != newer

    app.resolve_batch(KEY, [item(3, "2026-01-03T00:00:00.000Z", anonymousId="a-1",
                                 traits={"email": "ada@example.com"})])

    assert app.profile_id_for("email", "ada@example.com") == oldest
    assert app.profile_id_for("anonymous_id", "a-1") == oldest
    # The absorbed profile stays resolvable: it points at its survivor.
    assert app.identifiers_of_profile(newer) == app.identifiers_of_profile(oldest) == {
        "anonymous_id": ["a-1"], "email": ["ada@example.com"]}
    merge = resolved_items(app)[-1]
    assert merge["profile_id"] == oldest
    assert merge["merged_from"] == [newer]


def test_the_oldest_profile_survives_even_when_it_is_not_the_strongest_identifiers(app):
    app.resolve_batch(KEY, [
        item(1, "2026-01-01T00:00:00.000Z", anonymousId="a-1"),
        item(2, "2026-02-01T00:00:00.000Z", userId="u-1"),
    ])
    oldest = app.profile_id_for("anonymous_id", "a-1")
    app.resolve_batch(KEY, [item(3, "2026-03-01T00:00:00.000Z", userId="u-1",
                                 anonymousId="a-1")])
    assert app.profile_id_for("user_id", "u-1") == oldest


def test_a_merge_within_one_batch_is_followed_by_the_next_event_of_that_batch(app):
    app.resolve_batch(KEY, [
        item(1, "2026-01-01T00:00:00.000Z", anonymousId="a-1"),
        item(2, "2026-01-02T00:00:00.000Z", anonymousId="a-2"),
        item(3, "2026-01-03T00:00:00.000Z", anonymousId="a-2", traits={"email": "e@x.io"}),
        item(4, "2026-01-04T00:00:00.000Z", anonymousId="a-1", traits={"email": "e@x.io"}),
        item(5, "2026-01-05T00:00:00.000Z", anonymousId="a-2"),
    ])
    survivor = app.profile_id_for("anonymous_id", "a-1")
    assert app.profile_id_for("anonymous_id", "a-2") == survivor
    assert resolved_items(app)[-1]["profile_id"] == survivor


def test_two_different_user_ids_never_merge(app):
    app.resolve_batch(KEY, [item(1, userId="u-1", traits={"email": "shared@example.com"})])
    first = app.profile_id_for("user_id", "u-1")
    app.resolve_batch(KEY, [item(2, userId="u-2", traits={"email": "shared@example.com"})])

    second = app.profile_id_for("user_id", "u-2")
    assert second is not None and second != first
    # The event's user id wins, in a profile of its own; the shared email stays where it was.
    assert app.profile_id_for("email", "shared@example.com") == first
    assert app.identifiers_of_profile(second) == {"user_id": ["u-2"]}
    assert app.identifiers_of_profile(first) == {"user_id": ["u-1"],
                                                "email": ["shared@example.com"]}
    last = resolved_items(app)[-1]
    assert (last["profile_id"], last["merged_from"]) == (second, [])


def test_two_profiles_holding_different_user_ids_are_not_merged_by_a_shared_identifier(app):
    app.resolve_batch(KEY, [
        item(1, userId="u-1", anonymousId="a-1"),
        item(2, userId="u-2", traits={"email": "b@example.com"}),
    ])
    first, second = app.profile_id_for("user_id", "u-1"), app.profile_id_for("user_id", "u-2")
    app.resolve_batch(KEY, [item(3, anonymousId="a-1", traits={"email": "b@example.com"})])
    assert app.profile_id_for("user_id", "u-1") == first
    assert app.profile_id_for("user_id", "u-2") == second
    assert first != second
    assert resolved_items(app)[-1]["merged_from"] == []


# ---- idempotence ---------------------------------------------------------------------------
def test_a_redelivered_batch_resolves_nothing_new_and_saves_nothing(app):
    batch = [item(10, anonymousId="a-1"), item(11, anonymousId="a-2")]
    assert app.resolve_batch(KEY, batch) == 2
    before = notifications(app)

    assert app.resolve_batch(KEY, batch) == 0

    assert notifications(app) == before
    assert len(resolved_items(app)) == 2


def test_a_redelivery_is_recognised_by_a_new_application_over_the_same_store(tmp_path):
    settings = Settings(data_dir=tmp_path)
    first = IdentityApplication(settings)
    first.resolve_batch(KEY, [item(10, anonymousId="a-1")])
    first.close()
    again = IdentityApplication(settings)
    before = notifications(again)
    assert again.resolve_batch(KEY, [item(10, anonymousId="a-1")]) == 0
    assert notifications(again) == before
    again.close()


def test_a_rebatched_redelivery_only_processes_the_new_positions(app):
    app.resolve_batch(KEY, [item(10, anonymousId="a-1"), item(11, anonymousId="a-2")])
    assert app.resolve_batch(KEY, [item(11, anonymousId="a-2"), item(12, anonymousId="a-3")]) == 1
    items = resolved_items(app)
    assert [i["event"]["anonymousId"] for i in items] == ["a-1", "a-2", "a-3"]


def test_tracking_is_kept_per_key_so_another_partition_is_not_skipped(app):
    app.resolve_batch(KEY, [item(50, anonymousId="a-1")])
    other_partition = "gateway/ingest.received/1"
    assert app.resolve_batch(other_partition, [item(10, anonymousId="a-2")]) == 1
    assert app.profile_id_for("anonymous_id", "a-2") is not None
