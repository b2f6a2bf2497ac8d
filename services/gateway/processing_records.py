"""Records of processing activities (GDPR Art. 30(1)), generated from the configuration.

One activity per purpose that a destination serves: its recipients are those destinations,
its data the categories that purpose processes, its time limit the retention configured.
Configured in TESSERA_PROCESSING_RECORDS (inline JSON, or @path to a JSON file); anything
not configured falls back to the defaults below, which say so ("default: review"), so a
report built on defaults alone is visibly unreviewed.

    {"controller": {"name": "Example Ltd", "contact": "privacy@example.com"},
     "dpo": {"name": "…", "contact": "…"},
     "purposes": {"advertising": {"description": "…", "lawful_basis": "consent",
                                  "data_categories": ["identifiers", "segment membership"],
                                  "data_subjects": ["customers", "website visitors"],
                                  "retention": "13 months after the last interaction"}},
     "destinations": {"ads": {"recipient": "Google Ireland Ltd (processor)",
                              "transfer": "USA", "safeguards": "EU-US DPF"}},
     "security": ["per-subject encryption of PII at rest", "…"]}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

UNREVIEWED = "default: review"
STORED_CATEGORIES = {
    "identifiers": "user id, anonymous id, email address, phone number, CRM ids",
    "contact and profile traits": "name, address, title, and other traits sources send",
    "behavioural events": "tracked events with their properties, timestamps and context",
    "segment membership": "which audiences the person entered or left, and when",
    "consent records": "purposes granted or denied, with source, notice version, time",
    "sales records": "deals, tickets, accounts, notes (contacts)",
}
DEFAULT_PURPOSES: dict[str, dict[str, Any]] = {
    "advertising": {"description": "targeted advertising on ad networks (audiences)",
                    "lawful_basis": "consent",
                    "data_categories": ["identifiers", "segment membership"],
                    "retention": "until consent is withdrawn or the person is erased"},
    "marketing": {"description": "email and direct marketing",
                  "lawful_basis": "consent",
                  "data_categories": ["identifiers", "contact and profile traits",
                                      "segment membership"],
                  "retention": "until consent is withdrawn or the person is erased"},
    "analytics": {"description": "measuring and understanding product use",
                  "lawful_basis": "legitimate interests",
                  "data_categories": ["identifiers", "behavioural events"],
                  "retention": "25 months after collection"},
    "personalization": {"description": "personalised content and offers",
                        "lawful_basis": "consent",
                        "data_categories": ["identifiers", "contact and profile traits",
                                            "behavioural events", "segment membership"],
                        "retention": "until consent is withdrawn or the person is erased"},
    "functional": {"description": "providing the service the person asked for",
                   "lawful_basis": "contract",
                   "data_categories": ["identifiers", "contact and profile traits"],
                   "retention": "for the contract, then as the law on records requires"},
    "sale_sharing": {"description": "sale or sharing of personal information (CCPA/CPRA)",
                     "lawful_basis": "consent (opt-out honoured, incl. GPC)",
                     "data_categories": ["identifiers", "segment membership"],
                     "retention": "until the person opts out or is erased"},
}
DEFAULT_SECURITY = [
    "admin API behind a bearer token; every view of a person's data is logged",
    "event stores per service; consent decided fail-closed at send time",
    "per-subject encryption of PII at rest, shredded on erasure (when enabled)",
]
DEFAULT_SUBJECTS = ["customers", "prospects", "website and app visitors"]


class ProcessingConfigError(ValueError):
    pass


def load_processing_config(raw: str | None = None) -> dict[str, Any]:
    raw = os.environ.get("TESSERA_PROCESSING_RECORDS", "") if raw is None else raw
    if not raw:
        return {}
    text = Path(raw[1:]).read_text() if raw.startswith("@") else raw
    try:
        config = json.loads(text)
    except ValueError as bad:
        raise ProcessingConfigError(f"TESSERA_PROCESSING_RECORDS: not JSON ({bad})") from bad
    if not isinstance(config, dict):
        raise ProcessingConfigError("TESSERA_PROCESSING_RECORDS: must be a JSON object")
    for key in ("purposes", "destinations"):
        if not isinstance(config.get(key, {}), dict):
            raise ProcessingConfigError(f"TESSERA_PROCESSING_RECORDS: {key} must be an object")
    return config


def _purpose(name: str, config: dict[str, Any]) -> dict[str, Any]:
    given = (config.get("purposes") or {}).get(name, {})
    default = DEFAULT_PURPOSES.get(name, {})
    shown = {}
    for key in ("description", "lawful_basis", "data_categories", "retention"):
        if key in given:
            shown[key] = given[key]
        elif key in default:
            shown[key] = default[key]
            shown.setdefault("unreviewed", []).append(key)
        else:
            shown[key] = [] if key == "data_categories" else UNREVIEWED
            shown.setdefault("unreviewed", []).append(key)
    shown["data_subjects"] = given.get("data_subjects", DEFAULT_SUBJECTS)
    return shown


def records_of_processing(destinations: list[dict[str, Any]], config: dict[str, Any],
                          generated_at: str) -> dict[str, Any]:
    """Art. 30(1) (a)-(g), one activity per purpose served by at least one destination."""
    by_purpose: dict[str, list[dict[str, Any]]] = {}
    for destination in destinations:
        for purpose in destination["purposes"]:
            by_purpose.setdefault(purpose, []).append(destination)
    overrides = config.get("destinations") or {}
    activities = []
    for purpose in sorted(by_purpose):
        detail = _purpose(purpose, config)
        recipients = []
        for destination in sorted(by_purpose[purpose], key=lambda d: d["name"]):
            extra = overrides.get(destination["name"], {})
            recipients.append({
                "destination": destination["name"], "kind": destination["kind"],
                "recipient": extra.get("recipient", f"{destination['kind']} ({UNREVIEWED})"),
                "segments": destination.get("segments", []),
                "third_country_transfer": extra.get("transfer", UNREVIEWED),
                "safeguards": extra.get("safeguards", UNREVIEWED)})
        activities.append({"purpose": purpose, **detail, "recipients": recipients})
    return {"controller": config.get("controller", {"name": UNREVIEWED,
                                                    "contact": UNREVIEWED}),
            "dpo": config.get("dpo", {"name": UNREVIEWED, "contact": UNREVIEWED}),
            "generated_at": generated_at,
            "data_categories": STORED_CATEGORIES,
            "activities": activities,
            "security_measures": config.get("security", DEFAULT_SECURITY)}


def render_markdown(report: dict[str, Any]) -> str:
    lines = ["# Records of processing activities (GDPR Art. 30)", "",
             f"Generated {report['generated_at']} from Tessera's destinations and purposes.",
             "", f"- Controller: {report['controller'].get('name')} "
             f"({report['controller'].get('contact')})",
             f"- Data protection officer: {report['dpo'].get('name')} "
             f"({report['dpo'].get('contact')})", ""]
    for activity in report["activities"]:
        lines += [f"## Purpose: {activity['purpose']}", "",
                  f"- Description: {activity['description']}",
                  f"- Lawful basis: {activity['lawful_basis']}",
                  f"- Data subjects: {', '.join(activity['data_subjects'])}",
                  f"- Personal data: {', '.join(activity['data_categories']) or UNREVIEWED}",
                  f"- Erasure time limit: {activity['retention']}"]
        if activity.get("unreviewed"):
            lines.append(f"- Defaults not yet reviewed: {', '.join(activity['unreviewed'])}")
        lines += ["", "| destination | recipient | segments | third-country transfer | "
                  "safeguards |", "|---|---|---|---|---|"]
        for r in activity["recipients"]:
            lines.append(f"| {r['destination']} | {r['recipient']} | "
                         f"{', '.join(r['segments'])} | {r['third_country_transfer']} | "
                         f"{r['safeguards']} |")
        lines.append("")
    lines += ["## Categories of personal data held", ""]
    lines += [f"- **{name}**: {what}" for name, what in report["data_categories"].items()]
    lines += ["", "## Security measures (Art. 32)", ""]
    lines += [f"- {measure}" for measure in report["security_measures"]]
    return "\n".join(lines) + "\n"
