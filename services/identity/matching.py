"""Probabilistic matching: Fellegi-Sunter weights over name, birth date and address.

Each comparison sorts a pair of values into a level (exact, close, far...); a level's
weight is log2(m/u), with m the chance of that level between two records of one person
and u between two records of different people. The weights are estimated from the
records themselves without labels, as Splink does: u from random pairs, m by
expectation-maximisation over blocked pairs, one session per blocking key with that key's
own comparison left out. Blocking keys keep the comparisons of one record to a few.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from jellyfish import damerau_levenshtein_distance, jaro_winkler_similarity

from services.identity.normalise import (
    canonical_given_name,
    normalise_date,
    normalise_name,
    normalise_postcode,
)
from services.identity.policy import IdentityPolicy

# A bucket holding more records than this says nothing about who is who (a postcode of a
# whole town): it is skipped, as a generic identifier is.
MAX_BUCKET = 200


# ---- cleaning -------------------------------------------------------------------------
def clean_attributes(raw: dict[str, Any], policy: IdentityPolicy) -> dict[str, str]:
    """The attributes matching compares, normalised; missing or invalid ones left out."""
    cleaned = {
        "given_name": normalise_name(raw.get("given_name")),
        # Bill and William are one name: compared as close, and blocked together.
        "given_formal": canonical_given_name(raw.get("given_name")),
        "surname": normalise_name(raw.get("surname")),
        "birth_date": normalise_date(raw.get("birth_date"), day_first=policy.dates_day_first),
        "ssn": _digits(raw.get("ssn")),
        "street_number": _token(raw.get("street_number")),
        "address": normalise_name(raw.get("address")),
        "postcode": normalise_postcode(raw.get("postcode")),
        "city": normalise_name(raw.get("city")),
    }
    return {key: value for key, value in cleaned.items() if value}


def _digits(raw: Any) -> str | None:
    if raw is None:
        return None
    digits = "".join(c for c in str(raw) if c.isdigit())
    return digits if len(digits) >= 4 and set(digits) != {"0"} else None


def _token(raw: Any) -> str | None:
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return None
    text = str(raw).strip().lower()
    return text or None


_EVENT_TRAITS = {"firstName": "given_name", "first_name": "given_name",
                 "lastName": "surname", "last_name": "surname", "birthday": "birth_date",
                 "birth_date": "birth_date"}
_ADDRESS_TRAITS = {"street": "address", "postalCode": "postcode", "city": "city"}


def attributes_of_event(event: dict[str, Any], policy: IdentityPolicy) -> dict[str, str]:
    """Matching attributes from an event's traits (Segment's reserved trait names)."""
    traits = event.get("traits") or (event.get("context") or {}).get("traits") or {}
    if not isinstance(traits, dict):
        return {}
    raw = {ours: traits.get(theirs) for theirs, ours in _EVENT_TRAITS.items()
           if traits.get(theirs)}
    address = traits.get("address")
    if isinstance(address, dict):
        raw |= {ours: address.get(theirs) for theirs, ours in _ADDRESS_TRAITS.items()
                if address.get(theirs)}
    cleaned = clean_attributes(raw, policy)
    # Enough to tell people apart: a name and something else about them.
    if "surname" in cleaned and len(cleaned) >= 3:
        return cleaned
    return {}


# ---- comparisons ----------------------------------------------------------------------
def _name_level(a: str, b: str, other_a: str | None, other_b: str | None,
                formal_a: str | None = None, formal_b: str | None = None) -> int:
    """`other_*`: the other name of each record, to recognise given name and surname
    swapped (with a typo or two); `formal_*`: given names with nicknames resolved."""
    if a == b:
        return 4
    similarity = jaro_winkler_similarity(a, b)
    if similarity >= 0.92 or (formal_a is not None and formal_a == formal_b):
        return 3
    if other_a is not None and other_b is not None and (
            (a == other_b and b == other_a)
            or (jaro_winkler_similarity(a, other_b) >= 0.92
                and jaro_winkler_similarity(b, other_a) >= 0.92)):
        return 2
    return 1 if similarity >= 0.80 else 0


def _typo_level(a: str, b: str) -> int:
    if a == b:
        return 3
    distance = damerau_levenshtein_distance(a, b)
    return 2 if distance <= 1 else 1 if distance <= 2 else 0


def _date_level(a: str, b: str) -> int:
    if a == b:
        return 3
    swapped = a[:4] == b[:4] and a[5:7] == b[8:10] and a[8:10] == b[5:7]
    if swapped or damerau_levenshtein_distance(a, b) <= 1:
        return 2
    return 1 if a[:4] == b[:4] else 0


def _address(a: dict[str, str], b: dict[str, str]) -> int | None:
    """Street and number as one comparison: they are one fact (counting them apart made a
    shared home count twice, and households merge)."""
    street_a, street_b = a.get("address"), b.get("address")
    number_a, number_b = a.get("street_number"), b.get("street_number")
    if street_a is None or street_b is None:
        if number_a is None or number_b is None:
            return None
        return 1 if number_a == number_b else 0
    same_street = street_a == street_b or jaro_winkler_similarity(street_a, street_b) >= 0.90
    if not same_street:
        return 0
    if number_a is None or number_b is None or number_a != number_b:
        return 1
    return 3 if street_a == street_b else 2


@dataclass(frozen=True)
class Comparison:
    name: str
    levels: tuple[str, ...]  # lowest (disagree) first
    level_of: Callable[[dict[str, str], dict[str, str]], int | None]


def _on(attribute: str, level: Callable[[str, str], int]):
    def compare(a: dict[str, str], b: dict[str, str]) -> int | None:
        left, right = a.get(attribute), b.get(attribute)
        return None if left is None or right is None else level(left, right)
    return compare


def _names(attribute: str, other: str, formal: str | None = None):
    def compare(a: dict[str, str], b: dict[str, str]) -> int | None:
        left, right = a.get(attribute), b.get(attribute)
        if left is None or right is None:
            return None
        formals = (a.get(formal), b.get(formal)) if formal else (None, None)
        return _name_level(left, right, a.get(other), b.get(other), *formals)
    return compare


COMPARISONS = (
    Comparison("given_name", ("different", "similar", "swapped", "close", "exact"),
               _names("given_name", "surname", "given_formal")),
    Comparison("surname", ("different", "similar", "swapped", "close", "exact"),
               _names("surname", "given_name")),
    Comparison("birth_date", ("different", "same year", "one typo", "exact"),
               _on("birth_date", _date_level)),
    Comparison("ssn", ("different", "two typos", "one typo", "exact"), _on("ssn", _typo_level)),
    Comparison("address", ("different", "same street or number", "close", "exact"), _address),
    Comparison("postcode", ("different", "two typos", "one typo", "exact"),
               _on("postcode", _typo_level)),
)


def compare(a: dict[str, str], b: dict[str, str]) -> tuple[int | None, ...]:
    """The level of each of COMPARISONS, in their order: what `c.level_of(a, b)` gives for
    each, written out because it runs for every candidate of every record."""
    given_a, given_b = a.get("given_name"), b.get("given_name")
    surname_a, surname_b = a.get("surname"), b.get("surname")
    birth_a, birth_b = a.get("birth_date"), b.get("birth_date")
    ssn_a, ssn_b = a.get("ssn"), b.get("ssn")
    postcode_a, postcode_b = a.get("postcode"), b.get("postcode")
    return (
        None if given_a is None or given_b is None
        else _name_level(given_a, given_b, surname_a, surname_b, a.get("given_formal"),
                         b.get("given_formal")),
        None if surname_a is None or surname_b is None
        else _name_level(surname_a, surname_b, given_a, given_b),
        None if birth_a is None or birth_b is None else _date_level(birth_a, birth_b),
        None if ssn_a is None or ssn_b is None else _typo_level(ssn_a, ssn_b),
        _address(a, b),
        None if postcode_a is None or postcode_b is None else _typo_level(postcode_a, postcode_b),
    )


def combined_levels(a: dict[str, str], others: list[dict[str, str]]) -> tuple[int | None, ...]:
    """Per comparison, the best level `a` reaches against any of `others`."""
    best: list[int | None] = [None] * len(COMPARISONS)
    for other in others:
        for index, level in enumerate(compare(a, other)):
            if level is not None and (best[index] is None or level > best[index]):
                best[index] = level
    return tuple(best)


# ---- the model ------------------------------------------------------------------------
@dataclass
class MatchModel:
    """m and u per comparison level, and the chance that two random records match."""

    m: dict[str, list[float]]
    u: dict[str, list[float]]
    prior: float
    trained_on: int = 0
    weights: dict[str, list[float]] = field(init=False)

    def __post_init__(self):
        self.weights = {
            c.name: [math.log2(max(m, 1e-6) / max(u, 1e-6))
                     for m, u in zip(self.m[c.name], self.u[c.name], strict=True)]
            for c in COMPARISONS
        }
        self._prior_weight = math.log2(self.prior / (1 - self.prior))
        self._weight_rows = [self.weights[c.name] for c in COMPARISONS]

    def weight(self, levels: tuple[int | None, ...]) -> float:
        total = self._prior_weight
        for row, level in zip(self._weight_rows, levels, strict=True):
            if level is not None:
                total += row[level]
        return total

    @staticmethod
    def probability(weight: float) -> float:
        return 1.0 / (1.0 + 2.0 ** -weight)

    @staticmethod
    def weight_of(probability: float) -> float:
        return math.log2(probability / (1.0 - probability))

    def lazy_explanation(self, levels: tuple[int | None, ...]) -> _Lazy:
        return _Lazy(self, levels)

    def explain(self, levels: tuple[int | None, ...]) -> dict[str, Any]:
        """Each comparison's level and the weight it added, for the review queue and explain."""
        return {c.name: None if level is None else {"level": c.levels[level],
                                                    "weight": round(self.weights[c.name][level], 2)}
                for c, level in zip(COMPARISONS, levels, strict=True)}

    def to_dict(self) -> dict[str, Any]:
        return {"m": self.m, "u": self.u, "prior": self.prior, "trained_on": self.trained_on}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> MatchModel:
        return cls(m=raw["m"], u=raw["u"], prior=raw["prior"],
                   trained_on=raw.get("trained_on", 0))

    @classmethod
    def default(cls) -> MatchModel:
        """Cautious weights for before any estimation: exact agreement on several
        attributes is needed to merge."""
        m, u = {}, {}
        for comparison in COMPARISONS:
            count = len(comparison.levels)
            m[comparison.name] = [0.05] + [0.95 * (2**i) / (2**count - 2)
                                           for i in range(1, count)]
            u[comparison.name] = [0.90] + [0.10 / (count - 1)] * (count - 2) + [0.001]
        return cls(m=m, u=u, prior=1e-4)


# ---- blocking -------------------------------------------------------------------------
def blocking_keys(a: dict[str, str]) -> Iterator[str]:
    given, surname = a.get("given_name"), a.get("surname")
    birth, postcode = a.get("birth_date"), a.get("postcode")
    if a.get("ssn"):
        yield "ssn:" + a["ssn"]
    if birth:
        yield "dob:" + birth
    if given and surname:
        yield "names:" + "|".join(sorted((given, surname)))
        formal = a.get("given_formal")
        if formal and formal != given:
            yield "names:" + "|".join(sorted((formal, surname)))
    if postcode and given:
        yield f"pc-given:{postcode}|{given[:2]}"
    if postcode and surname:
        yield f"pc-surname:{postcode}|{surname[:2]}"
    if a.get("street_number") and a.get("address"):
        yield f"street:{a['street_number']}|{a['address']}"
    if surname and birth:
        yield f"surname-year:{surname}|{birth[:4]}"


class MatchIndex:
    """Records by blocking key, so that a new record meets only the few that share one."""

    def __init__(self, model: MatchModel):
        self.model = model
        self.buckets: dict[str, list[str]] = defaultdict(list)
        self.records: dict[str, tuple[str, dict[str, str]]] = {}  # id -> (profile, attrs)
        self.compared = 0  # candidate comparisons made, for the benchmark

    @staticmethod
    def clean(raw: dict[str, Any], policy: IdentityPolicy) -> dict[str, str]:
        return clean_attributes(raw, policy)

    def add(self, record_id: str, profile_id: str, attributes: dict[str, str]) -> None:
        if record_id not in self.records:
            for key in blocking_keys(attributes):
                self.buckets[key].append(record_id)
        self.records[record_id] = (profile_id, attributes)

    def remove(self, record_id: str) -> None:
        _, attributes = self.records.pop(record_id)
        for key in blocking_keys(attributes):
            self.buckets[key].remove(record_id)

    def move(self, record_id: str, profile_id: str) -> None:
        if record_id in self.records:
            self.records[record_id] = (profile_id, self.records[record_id][1])

    def candidates(self, attributes: dict[str, str]) -> set[str]:
        found: set[str] = set()
        for key in blocking_keys(attributes):
            bucket = self.buckets.get(key)
            if bucket and len(bucket) <= MAX_BUCKET:
                found.update(bucket)
        return found

    def scored_candidates(self, attributes: dict[str, str]
                          ) -> Iterator[tuple[str, str, float, dict[str, Any]]]:
        """(record id, profile id, match weight, comparison) of each blocked candidate."""
        candidates = self.candidates(attributes)
        self.compared += len(candidates)
        for record_id in candidates:
            profile_id, theirs = self.records[record_id]
            levels = compare(attributes, theirs)
            weight = self.model.weight(levels)
            yield record_id, profile_id, weight, _Lazy(self.model, levels)


class _Lazy(dict):
    """The per-comparison explanation, computed only if someone keeps it."""

    def __init__(self, model: MatchModel, levels: tuple[int | None, ...]):
        super().__init__()
        self._model, self._levels = model, levels

    def materialise(self) -> dict[str, Any]:
        return self._model.explain(self._levels)


# ---- estimation without labels --------------------------------------------------------
# EM sessions, one per blocking attribute. Attributes that identify a person (birth date,
# SSN) rather than a household (surname, address) make pairs whose 'match' class is people:
# blocked on a surname, EM learns households instead and forgives different given names.
EM_SESSIONS = ("birth_date", "ssn", "postcode")


def estimate_model(records: list[dict[str, str]], *, seed: int = 0,
                   u_pairs: int = 300_000, em_pairs: int = 300_000,
                   iterations: int = 25, sessions: tuple[str, ...] = EM_SESSIONS
                   ) -> MatchModel:
    """m, u and the prior from unlabelled records (cleaned attributes), Splink's way."""
    rng = random.Random(seed)
    u = _estimate_u(records, rng, u_pairs)
    trained = []
    # Each session leaves its blocking attribute's own m to the others, so that data
    # missing one of them (no postcode, no SSN) still trains every comparison.
    for blocked in sessions:
        pairs = _blocked_pairs(records, blocked, rng, em_pairs)
        if pairs:
            trained.append((blocked, _em(records, pairs, u, blocked, iterations)))
    m: dict[str, list[float]] = {}
    for comparison in COMPARISONS:
        estimates = [s_m[comparison.name] for blocked, (s_m, _) in trained
                     if blocked != comparison.name]
        m[comparison.name] = ([sum(v) / len(estimates) for v in zip(*estimates, strict=True)]
                              if estimates else MatchModel.default().m[comparison.name])
    prior = _prior(records, trained, m)
    return MatchModel(m=m, u=u, prior=prior, trained_on=len(records))


def _estimate_u(records: list[dict[str, str]], rng: random.Random, pairs: int
                ) -> dict[str, list[float]]:
    counts = {c.name: [1.0] * len(c.levels) for c in COMPARISONS}  # +1 smoothing
    n = len(records)
    for _ in range(min(pairs, n * (n - 1) // 2)):
        i, j = rng.randrange(n), rng.randrange(n)
        if i == j:
            continue
        for comparison, level in zip(COMPARISONS, compare(records[i], records[j]), strict=True):
            if level is not None:
                counts[comparison.name][level] += 1
    return {name: [c / sum(row) for c in row] for name, row in counts.items()}


def _blocked_pairs(records: list[dict[str, str]], attribute: str, rng: random.Random,
                   limit: int) -> list[tuple[int, int]]:
    """Pairs agreeing on one attribute; a large bucket contributes a sample of its pairs."""
    buckets: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        if record.get(attribute):
            buckets[record[attribute]].append(index)
    pairs: set[tuple[int, int]] = set()
    for members in buckets.values():
        if len(members) <= MAX_BUCKET:
            pairs.update((a, b) for i, a in enumerate(members) for b in members[i + 1:])
            continue
        for _ in range(len(members) * 5):
            a, b = rng.sample(members, 2)
            pairs.add((min(a, b), max(a, b)))
    ordered = sorted(pairs)
    return rng.sample(ordered, limit) if len(ordered) > limit else ordered


def _em(records: list[dict[str, str]], pairs: list[tuple[int, int]],
        u: dict[str, list[float]], blocked: str, iterations: int
        ) -> tuple[dict[str, list[float]], float]:
    """EM with u fixed at its random-pair estimate; the blocked comparison is left out."""
    patterns = Counter(compare(records[a], records[b]) for a, b in pairs)
    active = [(i, c) for i, c in enumerate(COMPARISONS) if c.name != blocked]
    m = {c.name: [0.1 / (len(c.levels) - 1)] * (len(c.levels) - 1) + [0.9]
         for c in COMPARISONS}
    share = 0.1
    for _ in range(iterations):
        sums = {c.name: [1e-9] * len(c.levels) for _, c in active}
        matched = 0.0
        for levels, count in patterns.items():
            p_m, p_u = share, 1 - share
            for i, c in active:
                level = levels[i]
                if level is not None:
                    p_m *= m[c.name][level]
                    p_u *= u[c.name][level]
            posterior = p_m / (p_m + p_u) if p_m + p_u > 0 else 0.0
            matched += posterior * count
            for i, c in active:
                if levels[i] is not None:
                    sums[c.name][levels[i]] += posterior * count
        for _, c in active:
            total = sum(sums[c.name])
            m[c.name] = [s / total for s in sums[c.name]]
        share = min(max(matched / sum(patterns.values()), 1e-6), 1 - 1e-6)
    return m, share * len(pairs)


def _prior(records: list[dict[str, str]], sessions: list, m: dict[str, list[float]]) -> float:
    """P(two random records match) = matches found by a blocking key / that key's recall
    (its comparison's m at 'exact', from the other session) / all pairs."""
    total_pairs = len(records) * (len(records) - 1) / 2
    estimates = []
    for blocked, (_, matches) in sessions:
        recall = m[blocked][-1]
        if recall > 0 and total_pairs:
            estimates.append(min(matches / recall / total_pairs, 0.5))
    return sum(estimates) / len(estimates) if estimates else 1e-4


def estimate_from(raw_records: Iterable[dict[str, Any]], policy: IdentityPolicy,
                  **options: Any) -> MatchModel:
    return estimate_model([clean_attributes(r, policy) for r in raw_records], **options)
