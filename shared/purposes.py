"""The purpose catalogue: every purpose consent can be asked for, and what kind it is.

Consent decides on purposes of this catalogue only (an unknown purpose is denied), and
every destination must declare purposes from it. The defaults are the 11 IAB TCF v2.2
purposes, email marketing, CCPA sale/sharing, and the short names Tessera used before the
catalogue (advertising, marketing, analytics, personalization, functional, sale_sharing).

A file (``TESSERA_PURPOSES_FILE``) replaces the defaults:

    {"purposes": [{"id": "newsletter", "name": "Our weekly newsletter",
                   "direct_marketing": true},
                  {"id": "ads", "name": "Targeted ads", "tcf_purposes": [1, 3, 4],
                   "direct_marketing": true, "gpc_opt_out": true}]}

- ``direct_marketing``: an objection without named purposes (GDPR Art. 21(2)) covers it.
- ``gpc_opt_out``: a Global Privacy Control signal opts the person out of it (CCPA
  sale/sharing and cross-context behavioural advertising, 11 CCR §7025).
- ``tcf_purposes``: a TC string grants it when every listed TCF purpose and our vendor id
  have consent in the string, and denies it otherwise.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PURPOSE_ID = re.compile(r"^[a-z0-9_]{1,64}$")

# TCF v2.2 purposes (Global Vendor List v3 names).
TCF_PURPOSE_NAMES = {
    1: "Store and/or access information on a device",
    2: "Use limited data to select advertising",
    3: "Create profiles for personalised advertising",
    4: "Use profiles to select personalised advertising",
    5: "Create profiles to personalise content",
    6: "Use profiles to select personalised content",
    7: "Measure advertising performance",
    8: "Measure content performance",
    9: "Understand audiences through statistics or combinations of data from different "
       "sources",
    10: "Develop and improve services",
    11: "Use limited data to select content",
}


@dataclass(frozen=True)
class Purpose:
    id: str
    name: str
    direct_marketing: bool = False
    gpc_opt_out: bool = False
    tcf_purposes: tuple[int, ...] = ()


def _tcf(number: int) -> Purpose:
    return Purpose(f"tcf_{number}", TCF_PURPOSE_NAMES[number],
                   direct_marketing=number in (2, 3, 4), gpc_opt_out=number in (3, 4),
                   tcf_purposes=(number,))


DEFAULT_PURPOSES: tuple[Purpose, ...] = (
    *(_tcf(n) for n in TCF_PURPOSE_NAMES),
    Purpose("email_marketing", "Email marketing", direct_marketing=True),
    Purpose("sale_sharing", "Sale or sharing of personal information (CCPA/CPRA)",
            direct_marketing=True, gpc_opt_out=True),
    Purpose("advertising", "Targeted advertising", direct_marketing=True, gpc_opt_out=True,
            tcf_purposes=(1, 3, 4)),
    Purpose("marketing", "Marketing communications", direct_marketing=True),
    Purpose("analytics", "Analytics and measurement", tcf_purposes=(1, 8, 9)),
    Purpose("personalization", "Personalised content", tcf_purposes=(1, 5, 6)),
    Purpose("functional", "Functional (service delivery)"),
)


class PurposeCatalogue:
    def __init__(self, purposes: tuple[Purpose, ...] | list[Purpose] = DEFAULT_PURPOSES):
        self.purposes = {p.id: p for p in purposes}
        self._ids = frozenset(self.purposes)

    def __contains__(self, purpose_id: object) -> bool:
        return purpose_id in self.purposes

    def ids(self) -> frozenset[str]:
        return self._ids

    def direct_marketing(self) -> list[str]:
        return sorted(p.id for p in self.purposes.values() if p.direct_marketing)

    def gpc_opt_outs(self) -> list[str]:
        return sorted(p.id for p in self.purposes.values() if p.gpc_opt_out)

    def from_tcf(self) -> list[Purpose]:
        return [p for p in self.purposes.values() if p.tcf_purposes]

    def unknown(self, purpose_ids) -> list[str]:
        return [p for p in purpose_ids if p not in self.purposes]

    def public(self) -> list[dict[str, Any]]:
        return [{"id": p.id, "name": p.name, "direct_marketing": p.direct_marketing,
                 "gpc_opt_out": p.gpc_opt_out, "tcf_purposes": list(p.tcf_purposes)}
                for p in self.purposes.values()]


def load_catalogue(path: Path | None) -> PurposeCatalogue:
    """The defaults, or the file's purposes; a bad file is refused naming entry and field."""
    if path is None:
        return PurposeCatalogue()
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read the purpose catalogue: {error}") from error
    entries = data.get("purposes") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path}: purposes: must be a non-empty list")
    purposes = []
    for index, entry in enumerate(entries):
        purposes.append(_purpose(f"{path}: purposes[{index}]", entry))
    ids = [p.id for p in purposes]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise ValueError(f"{path}: purposes: id {duplicated[0]!r} appears twice")
    return PurposeCatalogue(purposes)


def _purpose(where: str, entry: Any) -> Purpose:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: must be an object")
    unknown = set(entry) - {"id", "name", "direct_marketing", "gpc_opt_out", "tcf_purposes"}
    if unknown:
        raise ValueError(f"{where}.{sorted(unknown)[0]}: unknown field")
    purpose_id = entry.get("id")
    if not isinstance(purpose_id, str) or not PURPOSE_ID.match(purpose_id):
        raise ValueError(f"{where}.id: required, lower-case letters, digits and _ (1-64)")
    name = entry.get("name", purpose_id)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}.name: must be a non-empty string")
    for flag in ("direct_marketing", "gpc_opt_out"):
        if not isinstance(entry.get(flag, False), bool):
            raise ValueError(f"{where}.{flag}: must be true or false")
    tcf = entry.get("tcf_purposes", [])
    if not isinstance(tcf, list) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n in TCF_PURPOSE_NAMES
            for n in tcf):
        raise ValueError(f"{where}.tcf_purposes: must list TCF purpose numbers 1-11")
    return Purpose(purpose_id, name, entry.get("direct_marketing", False),
                   entry.get("gpc_opt_out", False), tuple(tcf))


def check_destination_purposes(destinations, catalogue: PurposeCatalogue) -> None:
    """Every destination serves purposes of the catalogue, or the configuration is refused."""
    for destination in destinations:
        unknown = catalogue.unknown(destination.purposes)
        if unknown:
            raise ValueError(
                f"destination {destination.name}: purposes: {unknown[0]!r} is not in the "
                f"purpose catalogue (known: {', '.join(sorted(catalogue.ids()))})")
