"""IAB TCF v2.2/2.3 TC strings: decoded by hand, refused loudly when anything is off.

The layout follows the TCF "Consent string and vendor list formats v2" (fields, bit
widths and offsets in /work/shared/reference/tracking-and-consent.md §3). A string that
cannot be decoded, or that the rules of `problems` find invalid, grants nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_BASE64URL_ONLY = re.compile(r"^[A-Za-z0-9_-]+$")
_VALUE = {char: index for index, char in enumerate(BASE64URL)}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

DISCLOSED_VENDORS, ALLOWED_VENDORS, PUBLISHER_TC = 1, 2, 3
# TCF 2.3 made DisclosedVendors mandatory; it is enforced from this day (reference §3.4).
DISCLOSED_VENDORS_REQUIRED_FROM = datetime(2026, 2, 28, tzinfo=UTC)
RESTRICTION_NOT_ALLOWED = 0


class TCStringError(ValueError):
    """The string is not a decodable TCF v2 TC string; the message says why."""


class _Bits:
    def __init__(self, segment: str):
        if not _BASE64URL_ONLY.match(segment):
            raise TCStringError("invalidly encoded Base64URL segment (only A-Z a-z 0-9 - _, "
                                "no padding)")
        self.bits = "".join(format(_VALUE[c], "06b") for c in segment)
        self.at = 0

    def int(self, width: int, name: str) -> int:
        if self.at + width > len(self.bits):
            raise TCStringError(f"truncated: {name} needs {width} bits at offset {self.at}, "
                                f"the segment has {len(self.bits)}")
        value = int(self.bits[self.at:self.at + width], 2) if width else 0
        self.at += width
        return value

    def bool(self, name: str) -> bool:
        return self.int(1, name) == 1

    def flags(self, width: int, name: str) -> set[int]:
        value = self.int(width, name)
        return {i + 1 for i in range(width) if value >> (width - 1 - i) & 1}

    def letters(self, name: str) -> str:
        return "".join(chr(ord("A") + self.int(6, name)) for _ in range(2))

    def when(self, name: str) -> datetime:
        return EPOCH + timedelta(milliseconds=self.int(36, name) * 100)

    def ranges(self, name: str) -> set[int]:
        ids: set[int] = set()
        for _ in range(self.int(12, f"{name} NumEntries")):
            is_range = self.bool(f"{name} IsARange")
            start = self.int(16, f"{name} StartOrOnlyVendorId")
            end = self.int(16, f"{name} EndVendorId") if is_range else start
            if end < start:
                raise TCStringError(f"{name}: range {start}-{end} ends before it starts")
            ids.update(range(start, end + 1))
        return ids

    def vendors(self, name: str) -> tuple[int, set[int]]:
        max_id = self.int(16, f"{name} MaxVendorId")
        if self.bool(f"{name} IsRangeEncoding"):
            ids = self.ranges(name)
            if ids and max(ids) > max_id:
                raise TCStringError(f"{name}: vendor {max(ids)} above MaxVendorId {max_id}")
            return max_id, ids
        if self.at + max_id > len(self.bits):
            raise TCStringError(f"{name}: bitfield encoding length mismatch (MaxVendorId "
                                f"{max_id}, {len(self.bits) - self.at} bits left)")
        return max_id, self.flags(max_id, name)


@dataclass
class TCString:
    version: int
    created: datetime
    last_updated: datetime
    cmp_id: int
    cmp_version: int
    consent_screen: int
    consent_language: str
    vendor_list_version: int
    policy_version: int
    is_service_specific: bool
    use_non_standard_texts: bool
    special_feature_opt_ins: set[int]
    purposes_consent: set[int]
    purposes_li: set[int]
    purpose_one_treatment: bool
    publisher_cc: str
    max_vendor_consent: int
    vendor_consents: set[int]
    max_vendor_li: int
    vendor_li: set[int]
    # (purpose, restriction type, vendors)
    restrictions: list[tuple[int, int, set[int]]] = field(default_factory=list)
    disclosed_vendors: set[int] | None = None
    allowed_vendors: set[int] | None = None
    publisher_consent: set[int] | None = None
    publisher_li: set[int] | None = None
    custom_consent: set[int] | None = None
    custom_li: set[int] | None = None

    def restricted(self, purpose: int, vendor: int) -> bool:
        """The publisher does not allow this vendor this purpose at all."""
        return any(p == purpose and kind == RESTRICTION_NOT_ALLOWED and vendor in vendors
                   for p, kind, vendors in self.restrictions)

    def grants(self, purposes: tuple[int, ...], vendor: int) -> bool:
        """Consent to every one of the TCF purposes, for this vendor (0: none of ours)."""
        return (vendor > 0 and vendor in self.vendor_consents
                and all(p in self.purposes_consent and not self.restricted(p, vendor)
                        for p in purposes))


def decode(tc_string: str) -> TCString:
    if not isinstance(tc_string, str) or not tc_string.strip():
        raise TCStringError("empty TC string")
    segments = tc_string.strip().split(".")
    if any(not s for s in segments):
        raise TCStringError("empty segment (two dots in a row, or a dot at an end)")
    tc = _core(_Bits(segments[0]))
    seen: set[int] = set()
    for segment in segments[1:]:
        bits = _Bits(segment)
        kind = bits.int(3, "SegmentType")
        if kind in seen:
            raise TCStringError(f"segment type {kind} appears twice")
        seen.add(kind)
        if kind == DISCLOSED_VENDORS:
            tc.disclosed_vendors = bits.vendors("DisclosedVendors")[1]
        elif kind == ALLOWED_VENDORS:
            tc.allowed_vendors = bits.vendors("AllowedVendors")[1]
        elif kind == PUBLISHER_TC:
            tc.publisher_consent = bits.flags(24, "PubPurposesConsent")
            tc.publisher_li = bits.flags(24, "PubPurposesLITransparency")
            custom = bits.int(6, "NumCustomPurposes")
            tc.custom_consent = bits.flags(custom, "CustomPurposesConsent")
            tc.custom_li = bits.flags(custom, "CustomPurposesLITransparency")
        else:
            raise TCStringError(f"unknown segment type {kind}")
    return tc


def _core(bits: _Bits) -> TCString:
    version = bits.int(6, "Version")
    if version != 2:
        raise TCStringError(f"unsupported version {version} (only TCF v2 strings)")
    tc = TCString(
        version=version,
        created=bits.when("Created"),
        last_updated=bits.when("LastUpdated"),
        cmp_id=bits.int(12, "CmpId"),
        cmp_version=bits.int(12, "CmpVersion"),
        consent_screen=bits.int(6, "ConsentScreen"),
        consent_language=bits.letters("ConsentLanguage"),
        vendor_list_version=bits.int(12, "VendorListVersion"),
        policy_version=bits.int(6, "TcfPolicyVersion"),
        is_service_specific=bits.bool("IsServiceSpecific"),
        use_non_standard_texts=bits.bool("UseNonStandardTexts"),
        special_feature_opt_ins=bits.flags(12, "SpecialFeatureOptIns"),
        purposes_consent=bits.flags(24, "PurposesConsent"),
        purposes_li=bits.flags(24, "PurposesLITransparency"),
        purpose_one_treatment=bits.bool("PurposeOneTreatment"),
        publisher_cc=bits.letters("PublisherCC"),
        max_vendor_consent=0, vendor_consents=set(), max_vendor_li=0, vendor_li=set(),
    )
    tc.max_vendor_consent, tc.vendor_consents = bits.vendors("VendorConsents")
    tc.max_vendor_li, tc.vendor_li = bits.vendors("VendorLegitimateInterests")
    for _ in range(bits.int(12, "NumPubRestrictions")):
        purpose = bits.int(6, "PurposeId")
        kind = bits.int(2, "RestrictionType")
        tc.restrictions.append((purpose, kind, bits.ranges("PubRestrictionEntry")))
    if tc.cmp_id < 2:
        raise TCStringError(f"invalid value {tc.cmp_id} for CmpId (CMP ids start at 2)")
    if not tc.is_service_specific:
        raise TCStringError("IsServiceSpecific is 0: global-scope strings are no longer valid")
    return tc


def problems(tc: TCString, *, min_policy_version: int) -> list[str]:
    """Why a decoded string must not count, by the rules we enforce (empty: it counts)."""
    found = []
    if tc.policy_version < min_policy_version:
        found.append(f"TcfPolicyVersion {tc.policy_version} is older than the configured "
                     f"{min_policy_version}")
    if tc.disclosed_vendors is None and tc.created >= DISCLOSED_VENDORS_REQUIRED_FROM:
        found.append("no DisclosedVendors segment (mandatory since TCF 2.3, enforced from "
                     "2026-02-28)")
    return found
