"""Normalising and hashing identifiers the way each ad network documents it.

Worked examples (``/work/shared/reference/destinations.md`` §0) are checked by the
conformance kit: ``"  Alex.Smith@Example.COM "`` hashes to ``7504…9f0b`` everywhere; a
phone is ``+16505551234`` before hashing for Google, ``16505551234`` (no ``+``) for Meta.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import phonenumbers

__all__ = [
    "WORKED_EXAMPLES",
    "e164_phone",
    "meta_phone",
    "normalise_email",
    "normalise_name",
    "sha256_hex",
]

# The reference's test vectors: what goes in, what each network must receive.
WORKED_EXAMPLES = {
    "traits": {"email": "  Alex.Smith@Example.COM ", "phone": "+1 (650) 555-1234",
               "first_name": "Alex", "last_name": "Smith"},
    "email_sha256": "7504105398dfcd904800426b5a89459d9e1a78d803d75c414f665de232339f0b",
    "phone_sha256": {
        "google": "a2996076d3ad4af5dc818b908b3d8e354f26ededf7df0e0aa6ac354143805ee0",
        "meta": "6069d14bf122fdfd931dc7beb58e5dfbba395b1faf05bdcd42d12358d63d8599",
    },
    "first_name_sha256": "4135aa9dc1b842a653dea846903ddb95bfb8c5a10c504a7fa16e10bc31d1fdf0",
    "last_name_sha256": "6627835f988e2c5e50533d491163072d3f4f41f5c8b04630150debb3722ca2dd",
}

_PUNCTUATION = re.compile(r"[^\w]|_", re.UNICODE)


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def normalise_email(value: str) -> str:
    """Trim and lowercase; no gmail dot or +tag rewriting (neither network asks for it)."""
    return value.strip().lower()


def normalise_name(value: str) -> str:
    """Lowercase, no punctuation or spaces (Google: 'lower case only and no punctuation')."""
    text = unicodedata.normalize("NFC", value.strip().lower())
    return _PUNCTUATION.sub("", text)


def e164_phone(value: str, default_region: str | None = None) -> str | None:
    """``+16505551234`` from any written form; None when it is no phone number."""
    try:
        number = phonenumbers.parse(value, default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def meta_phone(value: str, default_region: str | None = None) -> str | None:
    """Meta wants digits with the country code and no ``+`` (a ``+`` never matches)."""
    e164 = e164_phone(value, default_region)
    return e164[1:] if e164 else None
