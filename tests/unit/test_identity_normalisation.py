"""Normalising identifiers and attributes: what two spellings of one value have in common."""

from __future__ import annotations

import datetime as dt

import pytest

from services.identity.normalise import (
    EmailForms,
    canonical_given_name,
    email_forms,
    fold_accents,
    normalise_date,
    normalise_email,
    normalise_name,
    normalise_phone,
    normalise_postcode,
)


# ---- emails --------------------------------------------------------------------------------
def test_an_email_keeps_its_raw_form_beside_the_canonical_one():
    assert email_forms("  Ada.Lovelace@Example.COM ") == EmailForms(
        raw="Ada.Lovelace@example.com", canonical="ada.lovelace@example.com")


@pytest.mark.parametrize("raw", ["a.d.a+news@gmail.com", "ADA@gmail.com", "ada+x+y@GoogleMail.com",
                                 "A.DA@googlemail.com"])
def test_gmail_ignores_dots_and_plus_tags_so_the_canonical_form_does_too(raw):
    assert normalise_email(raw) == "ada@gmail.com"


def test_other_providers_keep_dots_and_plus_tags_as_they_may_be_different_mailboxes():
    assert normalise_email("a.da+news@example.com") == "a.da+news@example.com"


@pytest.mark.parametrize("raw", ["not-an-email", "ada@", "@example.com", "ada@localhost",
                                 "a b@example.com", "+tag@gmail.com", "", None, 42])
def test_something_that_is_not_an_email_has_no_canonical_form(raw):
    assert normalise_email(raw) is None


# ---- phones --------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, region, expected", [
    ("06 12 34 56 78", "FR", "+33612345678"),
    ("020 7946 0958", "GB", "+442079460958"),
    ("(650) 253-0000", "US", "+16502530000"),
    ("+33 6 12 34 56 78", "US", "+33612345678"),  # an explicit country code wins
])
def test_a_phone_is_read_in_the_configured_default_region_and_written_in_e164(
        raw, region, expected):
    assert normalise_phone(raw, region) == expected


@pytest.mark.parametrize("raw", ["12345", "0000000000", "+33 6 12", "phone", True, None])
def test_an_invalid_phone_is_rejected(raw):
    assert normalise_phone(raw, "FR") is None


# ---- names ---------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, expected", [
    ("  ZOË  Ñúñez ", "zoe nunez"),
    ("O'Brien-Smith", "obrien smith"),
    ("Jean-Luc", "jean luc"),
    ("Weiß", "weiss"),
])
def test_a_name_loses_case_accents_and_punctuation(raw, expected):
    assert normalise_name(raw) == expected


def test_a_name_made_only_of_punctuation_is_no_name():
    assert normalise_name(" -- ") is None
    assert normalise_name(None) is None


@pytest.mark.parametrize("raw, expected", [("Bill", "william"), ("Liz", "elizabeth"),
                                           ("Bob Jr", "robert jr"), ("Ada", "ada")])
def test_common_nicknames_become_the_formal_given_name(raw, expected):
    assert canonical_given_name(raw) == expected


def test_the_nickname_table_can_be_replaced_by_configuration():
    assert canonical_given_name("Paco", {"paco": "francisco"}) == "francisco"
    assert canonical_given_name("Bill", {"paco": "francisco"}) == "bill"


def test_accents_are_folded_without_touching_plain_letters():
    assert fold_accents("Ångström café") == "Angstrom cafe"


# ---- postcodes -----------------------------------------------------------------------------
@pytest.mark.parametrize("raw, expected", [
    ("sw1a 1aa", "SW1A1AA"), ("75 001", "75001"), ("12345-6789", "12345"), (2600, "2600"),
    ("1012-AB", "1012AB"),
])
def test_a_postcode_is_uppercased_without_spaces(raw, expected):
    assert normalise_postcode(raw) == expected


@pytest.mark.parametrize("raw", ["", "?", "this is not a postcode", None, 1.5])
def test_something_that_is_not_a_postcode_is_rejected(raw):
    assert normalise_postcode(raw) is None


# ---- dates ---------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, expected", [
    ("19840702", "1984-07-02"), ("1984-07-02", "1984-07-02"), ("02/07/1984", "1984-07-02"),
    ("1984-07-02T10:00:00Z", "1984-07-02"), (dt.date(1984, 7, 2), "1984-07-02"),
])
def test_a_date_is_written_in_iso_form(raw, expected):
    assert normalise_date(raw) == expected


def test_a_us_style_date_is_read_month_first_when_configured():
    assert normalise_date("02/07/1984", day_first=False) == "1984-02-07"


@pytest.mark.parametrize("raw", ["19841302", "31/02/1984", "yesterday", "", None, 19840702])
def test_something_that_is_not_a_calendar_date_is_rejected(raw):
    assert normalise_date(raw) is None
