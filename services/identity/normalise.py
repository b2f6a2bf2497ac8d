"""Normalising what people type: emails, phones, names, postcodes and dates.

Everything here is pure and offline (phonenumbers ships its metadata). A value that cannot
be normalised gives None: an invalid phone or email never becomes an identifier.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import phonenumbers

# Gmail ignores dots in the local part and everything after '+'; googlemail.com is the
# same mailbox. Other providers treat dots as significant, so we leave theirs alone.
_GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
_EMAIL_LOCAL = re.compile(r"^[^\s@]+$")
_EMAIL_DOMAIN = re.compile(r"^[a-z0-9-]+(\.[a-z0-9-]+)+$")


@dataclass(frozen=True)
class EmailForms:
    """The address as given (trimmed, domain lowercased) and the mailbox it reaches."""

    raw: str
    canonical: str


def email_forms(raw: Any) -> EmailForms | None:
    if not isinstance(raw, str):
        return None
    local, at, domain = raw.strip().rpartition("@")
    domain = domain.lower()
    if not at or not _EMAIL_LOCAL.match(local) or not _EMAIL_DOMAIN.match(domain):
        return None
    given = f"{local}@{domain}"
    canonical_local = local.lower()
    if domain in _GMAIL_DOMAINS:
        canonical_local = canonical_local.split("+", 1)[0].replace(".", "")
        domain = "gmail.com"
        if not canonical_local:
            return None
    return EmailForms(raw=given, canonical=f"{canonical_local}@{domain}")


def normalise_email(raw: Any) -> str | None:
    """The canonical form of an email: the identifier two spellings of one mailbox share."""
    forms = email_forms(raw)
    return None if forms is None else forms.canonical


def normalise_phone(raw: Any, default_region: str = "FR") -> str | None:
    """E.164 (`+33612345678`), or None when the number is not a valid one."""
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        return None
    try:
        number = phonenumbers.parse(str(raw), default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# A small table of common English given-name diminutives: enough to catch the frequent
# cases (bill/william); a deployment with other languages extends it by configuration.
NICKNAMES: dict[str, str] = {
    "bill": "william", "billy": "william", "will": "william", "willy": "william",
    "liam": "william", "bob": "robert", "bobby": "robert", "rob": "robert",
    "robbie": "robert", "dick": "richard", "rick": "richard", "ricky": "richard",
    "jim": "james", "jimmy": "james", "jamie": "james", "mike": "michael",
    "mick": "michael", "mikey": "michael", "tom": "thomas", "tommy": "thomas",
    "tony": "anthony", "dave": "david", "davy": "david", "dan": "daniel", "danny": "daniel",
    "joe": "joseph", "joey": "joseph", "jack": "john", "johnny": "john", "jon": "john",
    "chris": "christopher", "kit": "christopher", "steve": "stephen", "stevie": "stephen",
    "ed": "edward", "eddie": "edward", "ted": "edward", "ned": "edward",
    "andy": "andrew", "drew": "andrew", "matt": "matthew", "pete": "peter",
    "sam": "samuel", "ben": "benjamin", "benny": "benjamin", "alex": "alexander",
    "nick": "nicholas", "greg": "gregory", "larry": "lawrence", "harry": "henry",
    "hank": "henry", "charlie": "charles", "chuck": "charles", "fred": "frederick",
    "freddie": "frederick", "jeff": "jeffrey", "ken": "kenneth", "kenny": "kenneth",
    "ron": "ronald", "ronnie": "ronald", "don": "donald", "doug": "douglas",
    "gerry": "gerald", "jerry": "gerald", "phil": "philip", "ray": "raymond",
    "tim": "timothy", "wally": "walter", "walt": "walter", "frank": "francis",
    "liz": "elizabeth", "beth": "elizabeth", "betty": "elizabeth", "lisa": "elizabeth",
    "eliza": "elizabeth", "libby": "elizabeth", "lizzie": "elizabeth", "lizzy": "elizabeth",
    "betsy": "elizabeth", "bess": "elizabeth", "kate": "katherine", "katie": "katherine",
    "kathy": "katherine", "cathy": "katherine", "kat": "katherine", "maggie": "margaret",
    "meg": "margaret", "peggy": "margaret", "jenny": "jennifer", "jen": "jennifer",
    "sue": "susan", "suzy": "susan", "patty": "patricia", "pat": "patricia",
    "trish": "patricia", "becky": "rebecca", "debbie": "deborah", "deb": "deborah",
    "abby": "abigail", "mandy": "amanda", "sandy": "sandra", "vicky": "victoria",
    "tori": "victoria", "jess": "jessica", "jessie": "jessica", "annie": "anne",
    "nancy": "anne", "molly": "mary", "polly": "mary", "ally": "alexandra",
    "sasha": "alexandra", "cindy": "cynthia", "dot": "dorothy", "dottie": "dorothy",
    "ellie": "eleanor", "nell": "eleanor", "fran": "frances", "gina": "regina",
    "val": "valerie", "terry": "theresa", "tess": "theresa",
}

# Apostrophes vanish (O'Brien = OBrien); hyphens and spaces separate (Jean-Luc = Jean Luc).
_NOT_LETTERS = re.compile(r"[^a-z\s-]+")
_SEPARATORS = re.compile(r"[\s-]+")


def fold_accents(text: str) -> str:
    """'Zoë Ñúñez' -> 'Zoe Nunez': decomposed, combining marks dropped."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def normalise_name(raw: Any) -> str | None:
    """Lowercase, accents folded, punctuation dropped, hyphens and spaces as one space."""
    if not isinstance(raw, str):
        return None
    folded = _NOT_LETTERS.sub("", fold_accents(raw).lower().replace("ß", "ss"))
    name = _SEPARATORS.sub(" ", folded).strip()
    return name or None


def canonical_given_name(raw: Any, nicknames: dict[str, str] | None = None) -> str | None:
    """A given name with common diminutives replaced by the formal name (bill -> william)."""
    name = normalise_name(raw)
    if name is None:
        return None
    table = NICKNAMES if nicknames is None else nicknames
    return " ".join(table.get(part, part) for part in name.split(" "))


_POSTCODE_JUNK = re.compile(r"[\s-]+")
_POSTCODE = re.compile(r"^[A-Z0-9]{2,10}$")


def normalise_postcode(raw: Any) -> str | None:
    """Uppercase without spaces or dashes; a US ZIP+4 keeps its five-digit ZIP."""
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        return None
    text = str(raw).strip().upper()
    if re.fullmatch(r"\d{5}-\d{4}", text):
        text = text[:5]
    code = _POSTCODE_JUNK.sub("", text)
    return code if _POSTCODE.match(code) else None


_DATE_FORMATS_DAY_FIRST = ("%Y-%m-%d", "%Y%m%d", "%Y/%m/%d", "%d/%m/%Y", "%d.%m.%Y",
                           "%d-%m-%Y")
_DATE_FORMATS_MONTH_FIRST = ("%Y-%m-%d", "%Y%m%d", "%Y/%m/%d", "%m/%d/%Y", "%m-%d-%Y")


_ISO_OR_COMPACT = re.compile(r"^(\d{4})(-?)(\d{2})\2(\d{2})$")


def normalise_date(raw: Any, *, day_first: bool = True) -> str | None:
    """ISO 8601 (`1984-07-02`), or None when the text is not a real calendar date.

    `day_first` decides what `02/07/1984` means: 2 July (Europe) or 7 February (US).
    """
    if isinstance(raw, dt.datetime):
        return raw.date().isoformat()
    if isinstance(raw, dt.date):
        return raw.isoformat()
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    if "T" in text:
        text = text.split("T", 1)[0]
    unambiguous = _ISO_OR_COMPACT.match(text)  # 1984-07-02 or 19840702, without strptime
    if unambiguous:
        year, _, month, day = unambiguous.groups()
        try:
            return dt.date(int(year), int(month), int(day)).isoformat()
        except ValueError:
            return None
    for pattern in _DATE_FORMATS_DAY_FIRST if day_first else _DATE_FORMATS_MONTH_FIRST:
        try:
            return dt.datetime.strptime(text, pattern).date().isoformat()
        except ValueError:
            continue
    return None
