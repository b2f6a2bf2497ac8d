"""How contacts decides: which source wins each trait, and how lifecycle stages advance.

Configured from the environment (`TESSERA_CONTACTS_CONFIG`, inline JSON) or a mounted
file (`TESSERA_CONTACTS_CONFIG_FILE`); with neither, the defaults below apply:

    {"survivorship": {"title": ["hubspot", "salesforce"], "plan": ["app"]},
     "stages": ["subscriber", "lead", ...],
     "stage_rules": [{"event": "Demo Requested", "to": "salesqualifiedlead"},
                     {"trait": "plan", "equals": "enterprise", "to": "customer"},
                     {"trait": "lifecyclestage", "to": "$value", "backwards": true}]}

A trait's sources are ranked in the order listed; sources not listed come after, and
among equals the most recent value wins. A trait with no entry: the most recent wins.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# HubSpot's internal names of its default lifecycle stages, in order.
DEFAULT_STAGES = ("subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead",
                  "opportunity", "customer", "evangelist")

DEFAULT_STAGE_RULES: tuple[dict[str, Any], ...] = (
    {"trait": "email", "to": "subscriber"},
    {"event": "Signed Up", "to": "lead"},
    {"event": "Demo Requested", "to": "salesqualifiedlead"},
    {"event": "Deal Updated", "where": {"closed": False}, "to": "opportunity"},
    {"event": "Deal Updated", "where": {"won": True}, "to": "customer"},
    {"event": "Order Completed", "to": "customer"},
)

COPY_VALUE = "$value"
# A data subject's rectification (GDPR Art. 16) outranks every source, ranked or not.
RECTIFICATION_SOURCE = "dsr"


class PolicyError(ValueError):
    """A configuration that cannot be used; the message names the field and the rule."""


@dataclass(frozen=True)
class StageRule:
    to: str
    event: str | None = None
    trait: str | None = None
    equals: Any = None
    has_equals: bool = False
    where: Mapping[str, Any] = field(default_factory=dict)
    backwards: bool = False

    def describe(self) -> str:
        if self.event is not None:
            where = f" where {dict(self.where)}" if self.where else ""
            return f"event '{self.event}'{where} -> {self.to}"
        equals = f" = {self.equals!r}" if self.has_equals else ""
        return f"trait '{self.trait}'{equals} -> {self.to}"

    def target_for_event(self, name: str | None, properties: Mapping[str, Any]) -> str | None:
        if self.event is None or name != self.event:
            return None
        if any(properties.get(key) != value for key, value in self.where.items()):
            return None
        return self.to

    def target_for_traits(self, traits: Mapping[str, Any]) -> str | None:
        if self.trait is None or self.trait not in traits:
            return None
        value = traits[self.trait]
        if self.has_equals and value != self.equals:
            return None
        if not self.has_equals and value in (None, "", False):
            return None
        if self.to == COPY_VALUE:
            return str(value).lower() if isinstance(value, str) else None
        return self.to


@dataclass(frozen=True)
class ContactsPolicy:
    survivorship: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    stages: tuple[str, ...] = DEFAULT_STAGES
    stage_rules: tuple[StageRule, ...] = ()

    # ---- survivorship -----------------------------------------------------------------
    def winner(self, trait: str, candidates: Mapping[str, Mapping[str, Any]]) -> str:
        """The source whose value of `trait` survives, among {source: {value, at}}."""
        ranking = self.survivorship.get(trait, ())

        def place(source: str) -> int:
            if source == RECTIFICATION_SOURCE:
                return -1
            return ranking.index(source) if source in ranking else len(ranking)

        best = min(place(source) for source in candidates)
        # ISO 8601 times in UTC sort as strings; a tie goes to the source named last.
        return max((source for source in candidates if place(source) == best),
                   key=lambda source: (candidates[source].get("at") or "", source))

    # ---- lifecycle --------------------------------------------------------------------
    def stage_index(self, stage: str | None) -> int:
        return self.stages.index(stage) if stage in self.stages else -1

    def is_stage(self, stage: Any) -> bool:
        return isinstance(stage, str) and stage in self.stages

    @classmethod
    def default(cls) -> ContactsPolicy:
        return cls.from_mapping({})

    @classmethod
    def from_env(cls) -> ContactsPolicy:
        inline = os.environ.get("TESSERA_CONTACTS_CONFIG")
        path = os.environ.get("TESSERA_CONTACTS_CONFIG_FILE")
        if inline:
            return cls.from_json(inline, origin="TESSERA_CONTACTS_CONFIG")
        if path:
            return cls.from_json(Path(path).read_text(), origin=path)
        return cls.default()

    @classmethod
    def from_json(cls, text: str, origin: str) -> ContactsPolicy:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as error:
            raise PolicyError(f"{origin}: not valid JSON ({error})") from None
        if not isinstance(raw, dict):
            raise PolicyError(f"{origin}: must be a JSON object")
        return cls.from_mapping(raw)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> ContactsPolicy:
        unknown = set(raw) - {"survivorship", "stages", "stage_rules"}
        if unknown:
            raise PolicyError(f"{sorted(unknown)[0]}: unknown setting (expected survivorship, "
                              "stages or stage_rules)")
        stages = tuple(raw.get("stages", DEFAULT_STAGES))
        if not stages or not all(isinstance(s, str) and s for s in stages):
            raise PolicyError("stages: must be a non-empty list of stage names")
        if len(set(stages)) != len(stages):
            raise PolicyError("stages: each stage may appear only once")
        return cls(survivorship=_survivorship(raw.get("survivorship", {})), stages=stages,
                   stage_rules=tuple(_stage_rule(rule, i, stages) for i, rule in
                                     enumerate(raw.get("stage_rules", DEFAULT_STAGE_RULES))))


def _survivorship(raw: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, dict):
        raise PolicyError("survivorship: must map a trait to its sources in order")
    ranked = {}
    for trait, sources in raw.items():
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise PolicyError(f"survivorship.{trait}: must be a list of source names")
        ranked[trait] = tuple(sources)
    return ranked


def _stage_rule(raw: Any, index: int, stages: tuple[str, ...]) -> StageRule:
    where = f"stage_rules[{index}]"
    if not isinstance(raw, dict):
        raise PolicyError(f"{where}: must be an object")
    if ("event" in raw) == ("trait" in raw):
        raise PolicyError(f"{where}: needs exactly one of 'event' or 'trait'")
    target = raw.get("to")
    if target != COPY_VALUE and target not in stages:
        raise PolicyError(f"{where}.to: '{target}' is not one of the stages {list(stages)}")
    if target == COPY_VALUE and "trait" not in raw:
        raise PolicyError(f"{where}.to: '$value' only applies to a trait rule")
    conditions = raw.get("where", {})
    if not isinstance(conditions, dict):
        raise PolicyError(f"{where}.where: must map event properties to values")
    unknown = set(raw) - {"event", "trait", "equals", "where", "to", "backwards"}
    if unknown:
        raise PolicyError(f"{where}.{sorted(unknown)[0]}: unknown field")
    return StageRule(to=target, event=raw.get("event"), trait=raw.get("trait"),
                     equals=raw.get("equals"), has_equals="equals" in raw, where=conditions,
                     backwards=bool(raw.get("backwards", False)))
