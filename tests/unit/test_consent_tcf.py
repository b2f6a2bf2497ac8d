"""TC strings decode to exactly what the reference's test vectors say, and bad ones are
refused with a reason (reference: /work/shared/reference/tracking-and-consent.md §3.5)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.consent.tcf import TCStringError, decode, problems

V1 = ("CPTtLAAPTtLAAAKAAAENAAFgALwAAEAAAAAAAOgAgABgAAAA.IAoAAgABgAAEAQAAEAAA."
      "d4AACEAAAAAA")
V2 = "CQSbk4AQSbk4ANwAAAENAwCgAAAAAAAAAAYgACPAAAAA.IDKQA4AAgAKAGQAygAAA.YAAAAAAAAAAA"
V3 = ("COv_eg6Ov_eg6AOADBENAaCgAP_AAH_AACiQAVEUQQoAIQAqIoghAAQgAA.YAAAAAAAAAAAAAAAAAA."
      "IGLtV_T9fb2vj-_Z99_tkeYwf95y3p-wzhheMs-8NyZeH_B4Wv2MyvBX4JiQKGRgksjLBAQdtHGlcTQgBwIl"
      "ViTLMYk2MjzNKJrJEilsbO2dYGD9Pn8HT3ZCY70-vv__7v3ff_3g")
V4 = ("CO4VGswO4VGswAfZCBDEAzCsAP_AAH_AAAigGUNf_X9fb2vj-_599_t0eY1f9_63t-wzjheMs-8NyZ-X_J4W"
      "v2MyvB34JqQKGRgkunLBAQdtHGncTQgBwIlViTLMY02MjzNKJrJEilsbe2dYGH9vn8XT_ZKZ70-_v__7v3__"
      "_33_5Ayhr_6_r7e18f3_Pvv9ujzGr_v_W9v2GccLxln3huTPy_5PC1-xmV4O_BNSBQyMEl05YICDto407iaE"
      "AOBEqsSZZjGmxkeZpRNZIkUtjb2zrAw_t8_i6f7JTPen39___d-___--__ICgKAOAAcAA4AFAAjgB6AEYALc"
      "GACAW0AtoJAHAAOAAcACgARwA9ACMAFuFABALaAW0GgDgAHAAOABQAI4AegBGAC3DgAgFtALaEQBwADgAHAA"
      "oAEcAPQAjABbiQAQC2gFtCoA4ABwADgAUACOAHoARgAtxYAIBbQC2hkAcAA4ABwAKABHAD0AIwAW40AEAtoB"
      "bQ6AOAAcAA4AFAAjgB6AEYALceACAW0AtohAHAAOAAcACgARwA9ACMAFuRABALaAW0SgDgAHAAOABQAI4Aeg"
      "BGAC3JgAgFtALaKQBwADgAHAAoAEcAPQAjABblQAQC2gFtA")
V5 = ("CPi8wgAPi8wgAAOACBENCuCoAP_AAEfAACiQJHNd_H__bX9n-f7_6ft0eY1f9_r37uQzDhfNk-8F3L_W_LwX_"
      "2E7NF36tq4KmR4ku1LBIUNtHMnUDUmxaokVrzHsak2cpzNKJ_BkknsZe2dYGF9vm5tj-QKZ7_5_d3f52T_9_9"
      "v-39z33913v3d93-_13LjdV5_9H_v9fR_b8_Kf9_5-_4v8_____3_e______8AEEggCTDVuIAuxLHAm0DCKBEC"
      "MKwkKoFABBQDC0QGADg4KdlYBPrCBAAgFAEYEQIcAUYEAgAAAgCQiACQIsEAAAIgEAAIAEQiEABAwCCgAsDAIA"
      "AQDQMUQoABAkIMiAiKUwICIEggJbKhBKC6Q0wgCrLACgkRsFAAiAAAUgACAsHAMESAlYsECTFG-QAjBCgFEqFa"
      "AGGgAwABBI4RABgACCRwqADAAEEjgA")


def day(y, m, d):
    return datetime(y, m, d, tzinfo=UTC)


def test_v1_decodes_core_disclosed_vendors_and_publisher_tc():
    tc = decode(V1)
    assert (tc.version, tc.cmp_id, tc.cmp_version, tc.consent_screen) == (2, 10, 0, 0)
    assert tc.created == tc.last_updated == day(2022, 2, 1)
    assert (tc.consent_language, tc.vendor_list_version, tc.policy_version) == ("EN", 0, 5)
    assert tc.is_service_specific and not tc.use_non_standard_texts
    assert tc.special_feature_opt_ins == set()
    assert tc.purposes_consent == {1, 3, 4, 5, 6}
    assert tc.purposes_li == {2}
    assert not tc.purpose_one_treatment and tc.publisher_cc == "AA"
    assert (tc.max_vendor_consent, tc.vendor_consents) == (29, {11, 28, 29})
    assert tc.vendor_li == set() and tc.restrictions == []
    assert tc.disclosed_vendors == {11, 28, 29, 50, 60, 80}
    assert tc.publisher_consent == {1, 3, 4, 5, 6} and tc.publisher_li == {2, 7}
    assert tc.custom_consent == set() and tc.custom_li == set()
    assert problems(tc, min_policy_version=4) == []


def test_v2_the_spec_example_has_range_encoded_disclosed_vendors_and_a_too_old_policy():
    tc = decode(V2)
    assert tc.created == tc.last_updated == day(2025, 6, 3)
    assert (tc.cmp_id, tc.consent_language, tc.vendor_list_version) == (880, "EN", 48)
    assert tc.policy_version == 2 and tc.publisher_cc == "DE"
    assert tc.purposes_consent == set() and tc.purposes_li == set()
    assert (tc.max_vendor_consent, tc.vendor_consents) == (4, {1, 2, 3, 4})
    assert tc.disclosed_vendors == {1, 2, 3, 4, 5, 100, 404}
    assert tc.publisher_consent == set() and tc.publisher_li == set()
    assert problems(tc, min_policy_version=4) == [
        "TcfPolicyVersion 2 is older than the configured 4"]


def test_v3_publisher_tc_may_come_before_disclosed_vendors():
    tc = decode(V3)
    assert tc.created == tc.last_updated == datetime(2020, 3, 9, 12, 4, 34, 600000, tzinfo=UTC)
    assert (tc.cmp_id, tc.cmp_version, tc.consent_screen) == (14, 3, 1)
    assert (tc.vendor_list_version, tc.policy_version, tc.publisher_cc) == (26, 2, "US")
    assert tc.purposes_consent == set(range(1, 11))
    assert tc.purposes_li == set(range(2, 11))
    assert tc.vendor_consents == {2, 6, 8, 12, 18, 23, 25, 37, 42}
    assert tc.vendor_li == {2, 6, 8, 12, 18, 23, 37, 42}
    assert tc.publisher_consent == set()
    assert len(tc.disclosed_vendors) == 434
    assert {1, 2, 4, 6, 8, 10, 11, 12, 13, 14} < tc.disclosed_vendors
    assert {782, 783, 784, 785, 786, 788, 789, 790, 791} < tc.disclosed_vendors
    assert 787 not in tc.disclosed_vendors and max(tc.disclosed_vendors) == 791


def test_v4_twenty_publisher_restrictions_decode():
    tc = decode(V4)
    assert tc.created == datetime(2020, 8, 18, 9, 50, 9, 600000, tzinfo=UTC)
    assert (tc.cmp_id, tc.cmp_version, tc.consent_language) == (31, 1602, "DE")
    assert (tc.vendor_list_version, tc.policy_version, tc.publisher_cc) == (51, 2, "EU")
    assert tc.special_feature_opt_ins == {1, 2}
    assert tc.purposes_consent == set(range(1, 11))
    assert tc.max_vendor_consent == 808 and len(tc.vendor_consents) == 479
    assert 755 in tc.vendor_consents and tc.vendor_li == tc.vendor_consents
    assert len(tc.restrictions) == 20
    for purpose in range(1, 11):
        assert (purpose, 1, {7, 20, 71, 122, 140, 183}) in tc.restrictions
        assert (purpose, 2, {730}) in tc.restrictions
    assert tc.disclosed_vendors is None and tc.publisher_consent is None


def test_v5_big_bitfields_and_range_restrictions():
    tc = decode(V5)
    assert tc.created == tc.last_updated == day(2022, 11, 24)
    assert (tc.cmp_id, tc.cmp_version, tc.consent_screen) == (14, 2, 1)
    assert (tc.vendor_list_version, tc.policy_version) == (174, 2)
    assert tc.special_feature_opt_ins == {1}
    assert tc.purposes_consent == set(range(1, 11))
    assert tc.purposes_li == {2, 6, 7, 8, 9, 10}
    assert tc.max_vendor_consent == 1166 and len(tc.vendor_consents) == 772
    assert 755 in tc.vendor_consents
    assert tc.max_vendor_li == 1154 and len(tc.vendor_li) == 280
    assert [(p, kind) for p, kind, _ in tc.restrictions] == [(3, 1), (4, 1), (5, 1)]
    assert all(vendors == set(range(1, 1167)) for _, _, vendors in tc.restrictions)


@pytest.mark.parametrize(("tc_string", "reason"), [
    ("CPTtLAAPTtLAAAAAAAENAAFgALwAAEAAAAAAAOgAgABgAAAA.IAoAAgABgAAEAQAAEAAA.d4AACEAAAAAA",
     "invalid value 0 for CmpId"),
    ("D" + V2.split(".")[0][1:], "unsupported version 3"),
    ("B" + V2.split(".")[0][1:], "unsupported version 1"),
    (V2.split(".")[0] + "==", "Base64URL"),
    (V2.split(".")[0][:10] + "+" + V2.split(".")[0][11:], "Base64URL"),
    (V2.split(".")[0][:10] + "/" + V2.split(".")[0][11:], "Base64URL"),
    (V2.split(".")[0][:28], "truncated"),
    (V2.split(".")[0] + ".4AAA", "unknown segment type 7"),
    ("", "empty"),
    (V1 + ".", "empty segment"),
])
def test_a_bad_string_is_refused_with_its_reason(tc_string, reason):
    with pytest.raises(TCStringError, match=reason):
        decode(tc_string)


def test_a_bitfield_shorter_than_max_vendor_id_is_a_length_mismatch():
    # The core of V1 with MaxVendorId raised from 29 to 4000: far more bits than are left.
    bits = "".join(format("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                          .index(c), "06b") for c in V1.split(".")[0])
    longer = bits[:213] + format(4000, "016b") + bits[229:]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    core = "".join(alphabet[int(longer[i:i + 6], 2)] for i in range(0, len(longer), 6))
    with pytest.raises(TCStringError, match="bitfield encoding length mismatch"):
        decode(core)


def test_a_string_grants_a_purpose_only_with_our_vendor_and_every_tcf_purpose():
    tc = decode(V1)
    assert tc.grants((1, 3, 4), vendor=11)
    assert not tc.grants((1, 2), vendor=11)  # purpose 2 has LI only, no consent
    assert not tc.grants((1,), vendor=12)  # not our vendor
    assert not tc.grants((1,), vendor=0)  # no vendor id configured


def test_a_publisher_restriction_of_type_not_allowed_takes_the_purpose_away():
    tc = decode(V1)
    tc.restrictions.append((3, 0, {11}))
    assert not tc.grants((1, 3), vendor=11)
    assert tc.grants((1, 4), vendor=11)


def test_strings_without_disclosed_vendors_created_after_the_2_3_deadline_do_not_count():
    tc = decode(V1)
    tc.disclosed_vendors = None
    assert problems(tc, min_policy_version=4) == []  # created 2022
    tc.created = day(2026, 3, 1)
    assert "DisclosedVendors" in problems(tc, min_policy_version=4)[0]


def test_a_newer_configured_policy_version_invalidates_older_strings():
    assert problems(decode(V1), min_policy_version=6) == [
        "TcfPolicyVersion 5 is older than the configured 6"]
