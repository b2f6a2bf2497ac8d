"""A seeded, realistic demo data set for Tessera that knows its own truth.

``generate()`` builds the calls three sources would make with segment-analytics-python
2.4.0, and the figures the platform must arrive at after ingesting them:

* ``web``: the shop's website, events keyed by a browser ``anonymousId`` (a uuid4).
  About 72% of web visitors log in once: an identify with their ``anonymousId`` and
  either their ``userId`` (people who also use the app; half of these logins also carry
  the email) or ``traits.email``; a few log
  in by SMS code (``anonymousId`` + ``traits.phone``, only when that phone is also sent
  by the CRM or the app). The others never identify and stay anonymous profiles.
  About 30% of web logins carry ``context.consent.categoryPreferences``.
* ``crm``: a CRM export, one identify per contact: no ``userId``, ``anonymousId`` =
  ``"crm-" + CRM id``, traits email, firstName, lastName, country, plan, lifecycleStage,
  sometimes phone; about 55% carry consent (all true, advertising only, or all false).
* ``app``: the mobile app, events keyed by ``userId``; one identify per user with
  ``userId`` + ``traits.email`` (+ sometimes country and phone).

Phase 1 holds every identify (identity links and consent), phase 2 the behaviour
(page, screen, track "Product Viewed" / "Added to Cart" / "Order Completed"). No alias
calls are generated. Some emails are sent with capitals or surrounding spaces to
exercise normalisation; the truth normalises them (strip + lowercase).

The truth is computed from the calls alone, with the platform's rules re-implemented
here (not imported): identifiers on one call (userId, anonymousId, normalised
``traits.email``, ``traits.phone``) are linked and profiles are the connected
components; consent records apply to the whole component, a purpose with no record is
denied and any ``false`` record for a purpose denies it; the segment rules of
``SEGMENTS`` are evaluated on each component against ``now``; a destination gets one
"entered" delivery per (member profile, followed segment) when all of its purposes are
allowed, else one suppression.

Notes:
* ``Truth.member_emails`` only covers profiles holding an email: anonymous web profiles
  (visitors who never logged in) can be members (of ``frequent_buyers``; they never have
  a country) and are counted in ``segment_members`` but have no email to list.
* People only in the CRM have no behaviour, just their CRM identify.
* ``events`` is the target total number of calls; it is met exactly unless it is smaller
  than the identify calls plus one behaviour event per web/app person.
* Timestamps are whole seconds, UTC, within ``[now - 25 days + 1 h, now - 40 min]``, so
  every order stays inside the 30- and 90-day windows for days: nobody exits during a
  demo. ``now`` defaults to the current time: pass it to get identical timestamps.
* ``message_id`` is a seeded uuid4, so re-sending the same data set is idempotent on a
  platform that deduplicates on messageId.
"""

from __future__ import annotations

import random
import unicodedata
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

SOURCES = ("web", "crm", "app")
PURPOSES = ("advertising", "marketing", "analytics")
IDENTITY_METHODS = frozenset({"identify", "alias"})
BEHAVIOUR_METHODS = frozenset({"track", "page", "screen"})
ORDER_EVENT = "Order Completed"
WINDOW = timedelta(days=25)

WRITE_KEYS = {"web": "wk_demo_web", "crm": "wk_demo_crm", "app": "wk_demo_app"}

SEGMENTS: dict[str, dict] = {
    "frequent_buyers": {
        "event": ORDER_EVENT,
        "count": {"op": "at_least", "value": 3},
        "within_days": 90,
    },
    "fr_recent_buyers": {
        "and": [
            {"trait": "country", "op": "eq", "value": "FR"},
            {"event": ORDER_EVENT, "count": {"op": "at_least", "value": 1}, "within_days": 30},
        ]
    },
}

DESTINATIONS: dict[str, dict] = {
    "ads": {"segments": ["frequent_buyers"], "purposes": ["advertising"]},
    "crm_sync": {
        "segments": ["frequent_buyers", "fr_recent_buyers"],
        "purposes": ["marketing", "analytics"],
    },
}


# --------------------------------------------------------------------------- output


@dataclass
class Call:
    """One call as the segment-analytics-python client makes it."""

    source: str  # "web" | "crm" | "app"
    method: str  # "identify" | "track" | "page" | "screen" | "group" | "alias"
    kwargs: dict  # keyword arguments for analytics.Client.<method>(...)

    def send(self, client: Any) -> Any:
        """Make this call on an ``analytics.Client`` built with this source's write key.

        The context is copied first: the client writes ``context.library`` into it.
        """
        kwargs = dict(self.kwargs)
        if kwargs.get("context") is not None:
            kwargs["context"] = dict(kwargs["context"])
        return getattr(client, self.method)(**kwargs)


@dataclass
class Truth:
    people: int
    records_in: int  # total calls
    expected_profiles: int  # connected components after resolution
    segment_members: dict[str, int]  # segment -> number of profiles in it
    expected_deliveries: dict[str, int]  # destination -> entered deliveries expected
    expected_suppressions: dict[str, int]  # destination -> suppressions expected
    consented: dict[str, int]  # destination -> member profiles with all purposes allowed
    member_emails: dict[str, set[str]]  # segment -> normalised emails of members having one


@dataclass
class Dataset:
    phases: list[list[Call]]  # [identity-linking calls, behavioural calls]
    truth: Truth
    write_keys: dict[str, str] = field(default_factory=lambda: dict(WRITE_KEYS))
    segments: dict[str, dict] = field(default_factory=dict)
    destinations: dict[str, dict] = field(default_factory=dict)

    @property
    def calls(self) -> list[Call]:
        return [call for phase in self.phases for call in phase]


# ------------------------------------------------------------------ reference data

# country -> (weight, first names, last names, email domains, locale, currency, dial code)
COUNTRIES: dict[str, tuple] = {
    "FR": (
        25,
        ["Camille", "Léa", "Manon", "Chloé", "Élodie", "Julie", "Sarah", "Inès", "Louise",
         "Lucas", "Hugo", "Louis", "Théo", "Nathan", "Mathis", "Antoine", "Julien", "Jérôme",
         "Nicolas", "Thomas", "Pierre", "Marie", "Sophie", "Émile"],
        ["Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand",
         "Leroy", "Moreau", "Simon", "Laurent", "Lefèvre", "Michel", "Garcia", "David",
         "Bertrand", "Roux", "Vincent", "Fournier", "Morel", "Girard", "André", "Mercier"],
        ["gmail.com", "orange.fr", "free.fr", "laposte.net", "yahoo.fr", "hotmail.fr",
         "sfr.fr", "outlook.fr"],
        "fr-FR", "EUR", "+33",
    ),
    "DE": (
        18,
        ["Anna", "Lena", "Lea", "Hannah", "Johanna", "Katharina", "Jürgen", "Lukas", "Jonas",
         "Leon", "Felix", "Maximilian", "Paul", "Sebastian", "Tobias", "Sabine", "Stefan",
         "Ursula", "Wolfgang", "Birgit"],
        ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker",
         "Schulz", "Hoffmann", "Schäfer", "Koch", "Bauer", "Richter", "Klein", "Wolf",
         "Schröder", "Neumann", "Braun", "Zimmermann"],
        ["gmail.com", "gmx.de", "web.de", "t-online.de", "posteo.de", "outlook.de"],
        "de-DE", "EUR", "+49",
    ),
    "GB": (
        17,
        ["Oliver", "George", "Harry", "Jack", "Charlie", "Amelia", "Olivia", "Isla", "Emily",
         "Poppy", "Sophie", "James", "William", "Grace", "Lily", "Thomas", "Eleanor", "Alfie"],
        ["Smith", "Jones", "Williams", "Taylor", "Brown", "Davies", "Evans", "Wilson",
         "Thomas", "Johnson", "Roberts", "Robinson", "Thompson", "Wright", "Walker", "White",
         "Hughes", "Edwards"],
        ["gmail.com", "hotmail.co.uk", "btinternet.com", "outlook.com", "yahoo.co.uk",
         "icloud.com"],
        "en-GB", "GBP", "+44",
    ),
    "US": (
        17,
        ["Liam", "Noah", "Emma", "Ava", "Sophia", "Mia", "Ethan", "Mason", "Logan", "Madison",
         "Abigail", "Michael", "Jessica", "Ashley", "Tyler", "Brandon", "Megan", "Kayla"],
        ["Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson",
         "Anderson", "Taylor", "Moore", "Jackson", "Harris", "Clark", "Lewis", "Walker",
         "Young", "King"],
        ["gmail.com", "yahoo.com", "outlook.com", "icloud.com", "aol.com", "hotmail.com"],
        "en-US", "USD", "+1",
    ),
    "ES": (
        10,
        ["Lucía", "María", "Paula", "Sofía", "Martina", "Hugo", "Pablo", "Álvaro", "Javier",
         "Sergio", "Carmen", "José", "Alejandro", "Elena", "Raúl", "Nuria"],
        ["García", "Fernández", "González", "Rodríguez", "López", "Martínez", "Sánchez",
         "Pérez", "Gómez", "Martín", "Jiménez", "Ruiz", "Hernández", "Díaz", "Moreno",
         "Muñoz"],
        ["gmail.com", "hotmail.es", "yahoo.es", "telefonica.net", "outlook.es"],
        "es-ES", "EUR", "+34",
    ),
    "IT": (
        8,
        ["Giulia", "Francesca", "Chiara", "Sara", "Alessandro", "Lorenzo", "Matteo", "Marco",
         "Andrea", "Federica", "Luca", "Giovanni", "Elisa", "Davide"],
        ["Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci",
         "Marino", "Greco", "Bruno", "Gallo", "Conti", "De Luca"],
        ["gmail.com", "libero.it", "virgilio.it", "alice.it", "hotmail.it"],
        "it-IT", "EUR", "+39",
    ),
    "NL": (
        5,
        ["Daan", "Sem", "Lotte", "Emma", "Bram", "Femke", "Sanne", "Ruben", "Thijs", "Noor"],
        ["de Jong", "Jansen", "de Vries", "van den Berg", "van Dijk", "Bakker", "Janssen",
         "Visser", "Smit", "Meijer"],
        ["gmail.com", "ziggo.nl", "kpnmail.nl", "hotmail.nl", "outlook.com"],
        "nl-NL", "EUR", "+31",
    ),
}
COUNTRY_CODES = list(COUNTRIES)
COUNTRY_WEIGHTS = [COUNTRIES[c][0] for c in COUNTRY_CODES]
FX = {"EUR": 1.0, "GBP": 0.86, "USD": 1.08}

PLANS = ["free", "basic", "plus", "premium"]
PLAN_WEIGHTS = [40, 30, 20, 10]

# (product_id, name, category, price in EUR)
PRODUCTS = [
    ("sku_1001", "Merino Wool Sweater", "Apparel", 89.0),
    ("sku_1002", "Organic Cotton T-Shirt", "Apparel", 25.0),
    ("sku_1003", "Rain Jacket", "Apparel", 129.0),
    ("sku_1004", "Linen Shirt", "Apparel", 59.0),
    ("sku_1005", "Slim Chinos", "Apparel", 69.0),
    ("sku_2001", "Trail Running Shoes", "Footwear", 119.0),
    ("sku_2002", "Leather Sneakers", "Footwear", 139.0),
    ("sku_2003", "Wool Socks (3-pack)", "Footwear", 19.0),
    ("sku_3001", "Canvas Backpack", "Bags", 79.0),
    ("sku_3002", "Leather Wallet", "Bags", 45.0),
    ("sku_3003", "Weekender Duffel", "Bags", 149.0),
    ("sku_4001", "Ceramic Pour-Over Set", "Home", 39.0),
    ("sku_4002", "Linen Bed Sheets", "Home", 119.0),
    ("sku_4003", "Scented Candle", "Home", 22.0),
    ("sku_4004", "Cast Iron Skillet", "Home", 49.0),
    ("sku_5001", "Wireless Earbuds", "Electronics", 99.0),
    ("sku_5002", "Portable Charger", "Electronics", 35.0),
    ("sku_5003", "Smart Water Bottle", "Electronics", 55.0),
    ("sku_6001", "Yoga Mat", "Sport", 45.0),
    ("sku_6002", "Insulated Flask", "Sport", 29.0),
]

WEB_PAGES = [
    ("Home", "/", "Home | Tessera Shop"),
    ("Category", "/c/{cat}", "{cat} | Tessera Shop"),
    ("Search", "/search", "Search | Tessera Shop"),
    ("Journal", "/journal", "Journal | Tessera Shop"),
    ("Stores", "/stores", "Our stores | Tessera Shop"),
]
APP_SCREENS = ["Home", "Browse", "Search", "Wishlist", "Account", "Order History"]
REFERRERS = ["", "", "https://www.google.com/", "https://www.instagram.com/",
             "https://www.facebook.com/", "https://duckduckgo.com/", "https://www.bing.com/"]
USER_AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36",
]
DEVICES = [
    ("Apple", "iPhone15,2", "ios", "iOS", "18.1"),
    ("Apple", "iPhone14,5", "ios", "iOS", "17.6"),
    ("samsung", "SM-S918B", "android", "Android", "14"),
    ("Google", "Pixel 8", "android", "Android", "15"),
    ("Xiaomi", "2201117TG", "android", "Android", "13"),
]
APP_INFO = {"name": "Tessera Shop", "version": "4.2.0", "build": "4200",
            "namespace": "com.tessera.shop"}
SITE = "https://shop.tessera.example"

# consent patterns: (weight, categoryPreferences)
CRM_CONSENT = [
    (50, {"advertising": True, "marketing": True, "analytics": True}),
    (25, {"advertising": True, "marketing": False, "analytics": False}),
    (25, {"advertising": False, "marketing": False, "analytics": False}),
]
WEB_CONSENT = [
    (40, {"advertising": True, "marketing": True, "analytics": True}),
    (25, {"advertising": False, "marketing": True, "analytics": True}),
    (15, {"analytics": True}),  # no record for advertising / marketing = denied
    (20, {"advertising": False, "marketing": False, "analytics": False}),
]

# Drawn independently, redrawn until a person has a source: these raw odds give about
# 60% web, 70% CRM and 50% app among the people generated.
P_WEB, P_CRM, P_APP = 0.565, 0.66, 0.47
P_WEB_LOGIN = 0.72
P_PHONE_LOGIN = 0.08
P_WEB_CONSENT = 0.30
P_CRM_CONSENT = 0.55
FUNNEL_LEN = 5  # product page/screen, Product Viewed, Added to Cart, checkout, Order Completed


# ------------------------------------------------------------------------- helpers


def normalise_email(value: str) -> str:
    return value.strip().lower()


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def _uuid4(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _pick(rng: random.Random, weighted: list[tuple[int, Any]]) -> Any:
    return rng.choices([v for _, v in weighted], weights=[w for w, _ in weighted])[0]


@dataclass
class _Person:
    idx: int
    first: str
    last: str
    email: str  # normalised
    phone: str | None
    country: str
    plan: str
    web: bool
    crm: bool
    app: bool
    activity: float
    orders: int = 0
    anon_id: str | None = None
    user_id: str | None = None
    crm_id: str | None = None
    crm_phone: bool = False  # the CRM export carries the phone
    app_phone: bool = False  # the app identify carries the phone
    app_country: bool = False
    web_login: str | None = None  # None | "user" | "email" | "phone"
    user_agent: str = ""
    device: tuple = ()

    @property
    def locale(self) -> str:
        return COUNTRIES[self.country][4]

    @property
    def currency(self) -> str:
        return COUNTRIES[self.country][5]

    def channels(self) -> list[str]:
        return [s for s in ("web", "app") if getattr(self, s)]


class _Gen:
    def __init__(self, people: int, events: int, seed: int, now: datetime) -> None:
        self.rng = random.Random(seed)
        self.people_n = people
        self.events = events
        self.now = now
        self.lo = now - WINDOW + timedelta(hours=1)  # earliest session start
        self.hi = now - timedelta(hours=1)  # latest session start (sessions last < 20 min)
        self.span = int((self.hi - self.lo).total_seconds())
        self.emails: set[str] = set()
        self.phones: set[str] = set()
        self.ids: set[str] = set()
        self.order_seq = 0

    # ----------------------------------------------------------------- people

    def _unique(self, make) -> str:
        while True:
            value = make()
            if value not in self.ids:
                self.ids.add(value)
                return value

    def _email(self, first: str, last: str, country: str) -> str:
        rng = self.rng
        f, lname = _ascii(first), _ascii(last)
        domains = COUNTRIES[country][3]
        while True:
            style = rng.randrange(6)
            local = {
                0: f"{f}.{lname}",
                1: f"{f}{lname}",
                2: f"{f[0]}.{lname}",
                3: f"{f}.{lname}{rng.randint(1, 99)}",
                4: f"{f}_{lname}",
                5: f"{f}{rng.randint(70, 99)}",
            }[style]
            email = f"{local}@{rng.choice(domains)}"
            if email not in self.emails:
                self.emails.add(email)
                return email

    def _phone(self, country: str) -> str:
        rng = self.rng
        while True:
            if country == "FR":
                number = f"+33{rng.choice('67')}{rng.randrange(10**8):08d}"
            elif country == "DE":
                number = f"+4915{rng.randrange(10**9):09d}"
            elif country == "GB":
                number = f"+447{rng.randrange(10**9):09d}"
            elif country == "US":
                area, exchange = rng.randint(201, 989), rng.randint(200, 999)
                number = f"+1{area}{exchange}{rng.randrange(10**4):04d}"
            elif country == "ES":
                number = f"+346{rng.randrange(10**8):08d}"
            elif country == "IT":
                number = f"+393{rng.randrange(10**9):09d}"
            else:
                number = f"+316{rng.randrange(10**8):08d}"
            # Only numbers libphonenumber calls valid: the platform rejects the others as
            # identifiers, as it should, and the truth would disagree with it.
            if number not in self.phones and _valid_phone(number):
                self.phones.add(number)
                return number

    def make_people(self) -> list[_Person]:
        rng = self.rng
        people = []
        for idx in range(self.people_n):
            country = rng.choices(COUNTRY_CODES, weights=COUNTRY_WEIGHTS)[0]
            _, firsts, lasts, *_ = COUNTRIES[country]
            first, last = rng.choice(firsts), rng.choice(lasts)
            while True:
                web, crm, app = (rng.random() < p for p in (P_WEB, P_CRM, P_APP))
                if web or crm or app:
                    break
            p = _Person(
                idx=idx,
                first=first,
                last=last,
                email=self._email(first, last, country),
                phone=self._phone(country) if rng.random() < 0.45 else None,
                country=country,
                plan=rng.choices(PLANS, weights=PLAN_WEIGHTS)[0],
                web=web,
                crm=crm,
                app=app,
                activity=rng.lognormvariate(0.0, 0.7),
            )
            if web:
                p.anon_id = self._unique(lambda: _uuid4(rng))
                p.user_agent = rng.choice(USER_AGENTS)
            if app:
                p.user_id = self._unique(lambda: f"usr_{rng.getrandbits(48):012x}")
                p.device = rng.choice(DEVICES)
                p.app_phone = p.phone is not None and rng.random() < 0.5
                p.app_country = rng.random() < 0.6
            if crm:
                p.crm_id = self._unique(lambda: f"crm-{rng.randrange(10**7, 10**8)}")
                p.crm_phone = p.phone is not None and rng.random() < 0.75
            if web and rng.random() < P_WEB_LOGIN:
                if (p.crm_phone or p.app_phone) and rng.random() < P_PHONE_LOGIN:
                    p.web_login = "phone"
                else:
                    p.web_login = "user" if app else "email"
            if web or app:
                r = rng.random()
                if r < 0.36:
                    p.orders = rng.randint(3, 8)
                elif r < 0.62:
                    p.orders = rng.choice((1, 1, 2))
            people.append(p)
        return people

    # ------------------------------------------------------------------ calls

    def _ts(self, offset_s: int = 0) -> datetime:
        return self.lo + timedelta(seconds=offset_s)

    def _start(self) -> int:
        return self.rng.randrange(self.span)

    def _email_variant(self, email: str, weights: tuple[int, int, int, int]) -> str:
        kind = self.rng.choices(("plain", "title", "upper", "padded"), weights=weights)[0]
        local, domain = email.split("@")
        if kind == "title":
            return f"{local.title()}@{domain.capitalize()}"
        if kind == "upper":
            return email.upper()
        if kind == "padded":
            return f"  {email} "
        return email

    def _web_context(self, p: _Person, name: str, path: str, title: str, **extra) -> dict:
        url = SITE + path
        ctx = {
            "page": {"path": path, "url": url, "title": title,
                     "referrer": self.rng.choice(REFERRERS)},
            "userAgent": p.user_agent,
            "locale": p.locale,
        }
        ctx.update(extra)
        return ctx

    def _app_context(self, p: _Person, **extra) -> dict:
        manufacturer, model, dtype, os_name, os_version = p.device
        ctx = {
            "app": dict(APP_INFO),
            "device": {"manufacturer": manufacturer, "model": model, "type": dtype},
            "os": {"name": os_name, "version": os_version},
            "locale": p.locale,
        }
        ctx.update(extra)
        return ctx

    def _call(self, source: str, method: str, **kwargs) -> Call:
        kwargs["message_id"] = _uuid4(self.rng)
        return Call(source=source, method=method, kwargs=kwargs)

    def identity_calls(self, people: list[_Person]) -> list[tuple[datetime, Call]]:
        rng = self.rng
        out: list[tuple[datetime, Call]] = []
        for p in people:
            if p.crm:
                traits = {
                    "email": self._email_variant(p.email, (70, 20, 5, 5)),
                    "firstName": p.first,
                    "lastName": p.last,
                    "country": p.country,
                    "plan": p.plan,
                    "lifecycleStage": rng.choice(("lead", "customer", "customer")),
                }
                if p.crm_phone:
                    traits["phone"] = p.phone
                context: dict = {}
                if rng.random() < P_CRM_CONSENT:
                    prefs = dict(_pick(rng, CRM_CONSENT))
                    context["consent"] = {"categoryPreferences": prefs}
                ts = self._ts(self._start())
                out.append((ts, self._call("crm", "identify", anonymous_id=p.crm_id,
                                           traits=traits, context=context, timestamp=ts)))
            if p.app:
                traits = {"email": self._email_variant(p.email, (90, 10, 0, 0)),
                          "firstName": p.first, "lastName": p.last}
                if p.app_country:
                    traits["country"] = p.country
                if p.app_phone:
                    traits["phone"] = p.phone
                ts = self._ts(self._start())
                out.append((ts, self._call("app", "identify", user_id=p.user_id, traits=traits,
                                           context=self._app_context(p), timestamp=ts)))
            if p.web_login:
                kwargs: dict = {"anonymous_id": p.anon_id}
                if p.web_login == "phone":
                    traits = {"phone": p.phone}
                else:
                    traits = {"email": self._email_variant(p.email, (80, 10, 0, 10))}
                    if p.web_login == "user":
                        kwargs["user_id"] = p.user_id
                        if rng.random() < 0.5:
                            traits = {}
                context = self._web_context(p, "Login", "/account/login", "Sign in")
                if rng.random() < P_WEB_CONSENT:
                    context["consent"] = {"categoryPreferences": dict(_pick(rng, WEB_CONSENT))}
                ts = self._ts(self._start())
                if traits:
                    kwargs["traits"] = traits
                out.append((ts, self._call("web", "identify", context=context, timestamp=ts,
                                           **kwargs)))
        return out

    def _allocate(self, people: list[_Person], budget: int) -> dict[int, int]:
        """Trim orders to fit the budget; return person idx -> browse events."""
        active = [p for p in people if p.web or p.app]
        if not active:
            return {}
        mandatory = len(active) + FUNNEL_LEN * sum(p.orders for p in active)
        if mandatory > budget:
            heavy = sorted((p for p in active if p.orders), key=lambda p: (-p.orders, p.idx))
            while mandatory > budget and heavy:
                heavy.sort(key=lambda p: (-p.orders, p.idx))
                heavy[0].orders -= 1
                mandatory -= FUNNEL_LEN
                if heavy[0].orders == 0:
                    heavy.pop(0)
        browse = {p.idx: 1 for p in active}
        extra = max(0, budget - mandatory)
        if extra:
            for p in self.rng.choices(active, weights=[p.activity for p in active], k=extra):
                browse[p.idx] += 1
        return browse

    def _product(self) -> tuple[str, str, str, float]:
        return self.rng.choice(PRODUCTS)

    def _price(self, p: _Person, eur: float) -> float:
        return round(eur * FX[p.currency] - 0.01, 2)

    def _product_props(self, p: _Person, product: tuple) -> dict:
        pid, name, category, eur = product
        return {"product_id": pid, "name": name, "category": category,
                "price": self._price(p, eur), "currency": p.currency}

    def _view(self, p: _Person, channel: str, ts: datetime, name: str, path: str,
              title: str, props: dict | None = None) -> Call:
        if channel == "web":
            return self._call("web", "page", anonymous_id=p.anon_id, name=name,
                              properties={"path": path, "url": SITE + path, "title": title,
                                          **(props or {})},
                              context=self._web_context(p, name, path, title), timestamp=ts)
        return self._call("app", "screen", user_id=p.user_id, name=name,
                          properties=dict(props or {}), context=self._app_context(p),
                          timestamp=ts)

    def _track(self, p: _Person, channel: str, ts: datetime, event: str, props: dict) -> Call:
        if channel == "web":
            path = "/checkout" if event == ORDER_EVENT else "/"
            return self._call("web", "track", anonymous_id=p.anon_id, event=event,
                              properties=props,
                              context=self._web_context(p, event, path, "Tessera Shop"),
                              timestamp=ts)
        return self._call("app", "track", user_id=p.user_id, event=event, properties=props,
                          context=self._app_context(p), timestamp=ts)

    def _funnel(self, p: _Person, channel: str) -> list[tuple[datetime, Call]]:
        rng = self.rng
        t = self._start()
        product = self._product()
        pid, name, _category, _ = product
        props = self._product_props(p, product)
        qty = rng.choice((1, 1, 1, 2, 3))
        steps: list[tuple[datetime, Call]] = []

        def nxt() -> datetime:
            nonlocal t
            t += rng.randint(15, 180)
            return self._ts(t)

        ts = nxt()
        steps.append((ts, self._view(p, channel, ts, "Product", f"/p/{pid}", name,
                                     {"product_id": pid} if channel == "web" else props)))
        ts = nxt()
        steps.append((ts, self._track(p, channel, ts, "Product Viewed", props)))
        ts = nxt()
        steps.append((ts, self._track(p, channel, ts, "Added to Cart",
                                      {**props, "quantity": qty})))
        ts = nxt()
        steps.append((ts, self._view(p, channel, ts, "Checkout", "/checkout", "Checkout")))
        ts = nxt()
        self.order_seq += 1
        order = {"order_id": f"ord_{self.order_seq:06d}",
                 "revenue": round(props["price"] * qty, 2), "currency": p.currency}
        steps.append((ts, self._track(p, channel, ts, ORDER_EVENT, order)))
        return steps

    def _browse(self, p: _Person, n: int) -> list[tuple[datetime, Call]]:
        rng = self.rng
        out: list[tuple[datetime, Call]] = []
        channels = p.channels()
        while n > 0:
            size = min(n, rng.randint(1, 6))
            n -= size
            channel = rng.choice(channels)
            t = self._start()
            for i in range(size):
                t += rng.randint(5, 150) if i else 0
                ts = self._ts(t)
                r = rng.random() if i else 0.0
                if r < 0.5:
                    if channel == "web":
                        name, path, title = rng.choice(WEB_PAGES)
                        cat = rng.choice(PRODUCTS)[2]
                        call = self._view(p, "web", ts, name, path.format(cat=cat.lower()),
                                          title.format(cat=cat))
                    else:
                        call = self._view(p, "app", ts, rng.choice(APP_SCREENS), "", "")
                elif r < 0.85:
                    call = self._track(p, channel, ts, "Product Viewed",
                                       self._product_props(p, self._product()))
                else:
                    call = self._track(p, channel, ts, "Added to Cart",
                                       {**self._product_props(p, self._product()),
                                        "quantity": 1})
                out.append((ts, call))
        return out

    def behaviour_calls(self, people: list[_Person], budget: int) -> list[tuple[datetime, Call]]:
        browse = self._allocate(people, budget)
        out: list[tuple[datetime, Call]] = []
        for p in people:
            if not (p.web or p.app):
                continue
            for _ in range(p.orders):
                out.extend(self._funnel(p, self.rng.choice(p.channels())))
            out.extend(self._browse(p, browse[p.idx]))
        return out


def _ordered(stamped: list[tuple[datetime, Call]]) -> list[Call]:
    order = sorted(range(len(stamped)), key=lambda i: (stamped[i][0], i))
    return [stamped[i][1] for i in order]


# --------------------------------------------------------------------------- truth


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        parent = self.parent
        parent.setdefault(x, x)
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def call_identifiers(call: Call) -> list[str]:
    """The identifiers a call links, as ``kind:value`` strings (email normalised)."""
    kw = call.kwargs
    if call.method == "alias":
        raise ValueError("alias calls are outside the identity model of this data set")
    ids = []
    if kw.get("user_id") is not None:
        ids.append(f"userId:{kw['user_id']}")
    if kw.get("anonymous_id") is not None:
        ids.append(f"anonymousId:{kw['anonymous_id']}")
    traits = (kw.get("traits") or {}) if call.method == "identify" else {}
    if traits.get("email"):
        ids.append(f"email:{normalise_email(traits['email'])}")
    if traits.get("phone"):
        ids.append(f"phone:{traits['phone'].strip()}")
    return ids


def _matches(rule: dict, traits: dict[str, set], events: dict[str, list[datetime]],
             now: datetime) -> bool:
    if "and" in rule:
        return all(_matches(r, traits, events, now) for r in rule["and"])
    if "or" in rule:
        return any(_matches(r, traits, events, now) for r in rule["or"])
    if "trait" in rule:
        if rule["op"] != "eq":
            raise ValueError(f"unsupported trait op {rule['op']!r}")
        return rule["value"] in traits.get(rule["trait"], set())
    if "event" in rule:
        since = now - timedelta(days=rule["within_days"])
        n = sum(1 for ts in events.get(rule["event"], ()) if since < ts <= now)
        if rule["count"]["op"] != "at_least":
            raise ValueError(f"unsupported count op {rule['count']['op']!r}")
        return n >= rule["count"]["value"]
    raise ValueError(f"unsupported rule {rule!r}")


def compute_truth(phases: list[list[Call]], people: int, now: datetime,
                  segments: dict[str, dict] = SEGMENTS,
                  destinations: dict[str, dict] = DESTINATIONS) -> Truth:
    """Resolve identities, consent, segments and deliveries from the calls alone."""
    calls = [c for phase in phases for c in phase]
    uf = _UnionFind()
    per_call = []
    for call in calls:
        ids = call_identifiers(call)
        if not ids:
            raise ValueError(f"call without identifier: {call}")
        uf.find(ids[0])  # registers a lone identifier too
        for other in ids[1:]:
            uf.union(ids[0], other)
        per_call.append(ids)

    roots = {uf.find(x) for x in uf.parent}
    members: dict[str, set[str]] = defaultdict(set)
    for x in uf.parent:
        members[uf.find(x)].add(x)
    for root, ids in members.items():
        user_ids = [i for i in ids if i.startswith("userId:")]
        if len(user_ids) > 1:
            raise AssertionError(f"profile {root} would hold two userIds: {user_ids}")

    traits: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    events: dict[str, dict[str, list[datetime]]] = defaultdict(lambda: defaultdict(list))
    consent: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for call, ids in zip(calls, per_call, strict=True):
        root = uf.find(ids[0])
        kw = call.kwargs
        if call.method == "identify":
            for key, value in (kw.get("traits") or {}).items():
                traits[root][key].add(value)
        elif call.method == "track":
            events[root][kw["event"]].append(kw["timestamp"])
        prefs = ((kw.get("context") or {}).get("consent") or {}).get("categoryPreferences")
        for purpose, allowed in (prefs or {}).items():
            consent[root][purpose].append(bool(allowed))
    for root, t in traits.items():
        if len(t.get("country", ())) > 1:
            raise AssertionError(f"profile {root} has conflicting countries {t['country']}")

    def allowed(root: str, purpose: str) -> bool:
        records = consent[root].get(purpose, [])
        return bool(records) and all(records)

    in_segment = {
        name: {r for r in roots if _matches(rule, traits[r], events[r], now)}
        for name, rule in segments.items()
    }
    deliveries, suppressions, consented = {}, {}, {}
    for dest, spec in destinations.items():
        ok = {r for r in roots if all(allowed(r, p) for p in spec["purposes"])}
        followed = [in_segment[s] for s in spec["segments"]]
        deliveries[dest] = sum(len(m & ok) for m in followed)
        suppressions[dest] = sum(len(m - ok) for m in followed)
        consented[dest] = len(set().union(*followed) & ok)
    member_emails = {
        name: {i.split(":", 1)[1] for r in rs for i in members[r] if i.startswith("email:")}
        for name, rs in in_segment.items()
    }
    return Truth(
        people=people,
        records_in=len(calls),
        expected_profiles=len(roots),
        segment_members={name: len(rs) for name, rs in in_segment.items()},
        expected_deliveries=deliveries,
        expected_suppressions=suppressions,
        consented=consented,
        member_emails=member_emails,
    )


# ----------------------------------------------------------------------------- API


def generate(people: int = 1000, events: int = 20000, seed: int = 7,
             now: datetime | None = None) -> Dataset:
    """Build the demo data set; ``events`` is the target total number of calls."""
    if people < 1:
        raise ValueError("people must be >= 1")
    if now is None:
        now = datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(UTC).replace(microsecond=0)

    gen = _Gen(people, events, seed, now)
    persons = gen.make_people()
    phase1 = gen.identity_calls(persons)
    phase2 = gen.behaviour_calls(persons, max(0, events - len(phase1)))
    phases = [_ordered(phase1), _ordered(phase2)]
    truth = compute_truth(phases, people, now)
    return Dataset(
        phases=phases,
        truth=truth,
        write_keys=dict(WRITE_KEYS),
        segments={k: _deep_copy(v) for k, v in SEGMENTS.items()},
        destinations={k: _deep_copy(v) for k, v in DESTINATIONS.items()},
    )


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def summary(data: Dataset | Truth) -> dict:
    """The truth as a JSON-friendly dict (emails as counts); calls broken down if given a
    Dataset."""
    truth = data.truth if isinstance(data, Dataset) else data
    out: dict[str, Any] = {
        "people": truth.people,
        "records_in": truth.records_in,
        "expected_profiles": truth.expected_profiles,
        "segment_members": dict(truth.segment_members),
        "expected_deliveries": dict(truth.expected_deliveries),
        "expected_suppressions": dict(truth.expected_suppressions),
        "consented": dict(truth.consented),
        "member_emails": {k: len(v) for k, v in truth.member_emails.items()},
    }
    if isinstance(data, Dataset):
        by_source: dict[str, int] = defaultdict(int)
        by_method: dict[str, int] = defaultdict(int)
        for call in data.calls:
            by_source[call.source] += 1
            key = call.method
            if call.method == "track":
                key = f"track:{call.kwargs['event']}"
            by_method[key] += 1
        out["calls_per_phase"] = [len(p) for p in data.phases]
        out["calls_per_source"] = dict(sorted(by_source.items()))
        out["calls_per_type"] = dict(sorted(by_method.items()))
    return out


if __name__ == "__main__":
    import json
    import sys

    args = [int(a) for a in sys.argv[1:4]]
    print(json.dumps(summary(generate(*args)), indent=2))


def _valid_phone(number: str) -> bool:
    import phonenumbers

    return phonenumbers.is_valid_number(phonenumbers.parse(number, None))
