"""The console's pages: each a function of plain data (what the /v1 handlers gather)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any
from urllib.parse import quote

from services.gateway.access import Permission
from services.gateway.console.html import (
    Viewer,
    bar_chart,
    column_chart,
    csrf_field,
    esc,
    link,
    notice,
    page,
    pairs,
    post_button,
    pretty,
    table,
)

TIMELINE_LIMIT = 50
MEMBERS_SHOWN = 50


def sign_in(problem: str = "", next_path: str = "/console") -> str:
    body = (notice(problem, "error") if problem else "") + (
        '<form method="post" action="/console/sign-in" class="card">'
        f'<input type="hidden" name="next" value="{esc(next_path)}">'
        '<label>API token <input type="password" name="token" autocomplete="off" '
        'required autofocus></label><button>Sign in</button></form>'
        "<p>Use the token of your role (admin, marketer or compliance), as for the API.</p>")
    return page("Sign in", body, None)


def refused(viewer: Viewer | None, status: int, message: str) -> str:
    title = {401: "Sign-in needed", 403: "Not for your role", 404: "Not found"}.get(
        status, "Something went wrong")
    body = notice(message, "error") + '<p><a href="/console">Back to the overview</a></p>'
    return page(title, body, viewer)


# ---- overview -----------------------------------------------------------------------------
def overview(viewer: Viewer, per_minute: list[tuple[str, int]], counted_since: str | None,
             status: dict[str, Any], deliveries: dict[str, dict[str, Any]]) -> str:
    lag = [(s["service"], s.get("outbox_backlog", 0) + s.get("in_flight", 0))
           for s in status["services"]]
    sent = [(name, d.get("delivered", 0)) for name, d in sorted(deliveries.items())]
    suppressed = [(name, d.get("suppressed", 0)) for name, d in sorted(deliveries.items())]
    dead = [(name, d.get("dead_letters", 0)) for name, d in sorted(deliveries.items())]
    body = (
        '<section><h2>Events in per minute</h2>'
        + column_chart(per_minute, caption=f"accepted events, last {len(per_minute)} minutes")
        + f'<p>{sum(v for _, v in per_minute)} events in the last {len(per_minute)} minutes'
        + (f" (counted since {esc(counted_since)} UTC: earlier ones are not in the chart)"
           if counted_since else "") + '</p></section>'
        '<section><h2>Pipeline lag per service</h2>'
        '<p>Events saved but not yet published, plus batches being handled. '
        f'{"Drained." if status["drained"] else "Work in progress."} '
        f'{status["queued"]} messages queued.</p>' + bar_chart(lag, unit=" waiting")
        + '</section><section><h2>Deliveries per destination</h2>' + bar_chart(sent)
        + '<h2>Suppressions per destination</h2>' + bar_chart(suppressed)
        + '<h2>Dead letters</h2>' + bar_chart(dead) + '</section>')
    return page("Overview", body, viewer, "/console")


# ---- profiles -----------------------------------------------------------------------------
SEARCH_KINDS = (("email", "email"), ("user_id", "user id"), ("anonymous_id", "anonymous id"),
                ("phone", "phone"), ("profile_id", "profile id"))


def profile_search(viewer: Viewer, kind: str = "email", value: str = "",
                   problem: str = "") -> str:
    options = "".join(f'<option value="{k}"{" selected" if k == kind else ""}>{label}</option>'
                      for k, label in SEARCH_KINDS)
    body = ('<form method="get" action="/console/profiles" class="card" id="profile-search">'
            f'<select name="kind" aria-label="identifier kind">{options}</select>'
            f'<input name="q" value="{esc(value)}" placeholder="an identifier" required>'
            '<button>Find</button></form>' + (notice(problem, "error") if problem else ""))
    return page("Profiles", body, viewer, "/console/profiles")


def profile(viewer: Viewer, profile: dict[str, Any], parts: dict[str, Any]) -> str:
    pid = profile["profile_id"]
    sections = [
        "<section><h2>Traits</h2>" + pairs(profile.get("traits", {}))
        + "<h2>Computed traits</h2>" + pairs(profile.get("computed_traits", {})) + "</section>",
        "<section><h2>Identifiers</h2>" + pairs(
            {k: ", ".join(v) for k, v in profile.get("identifiers", {}).items()}) + "</section>",
        _identity_section(parts.get("identity")),
        _timeline_section(parts.get("events")),
        _memberships_section(parts["segments"]),
        _consent_section(parts.get("consent")),
        _outcomes_section(parts["outcomes"]),
    ]
    if viewer.may(Permission.AUDIT_READ):
        first = next((f"{k}:{v[0]}" for k, v in profile.get("identifiers", {}).items() if v),
                     None)
        if first:
            sections.append("<p>" + link(f"/console/compliance/subject?identifier="
                                         f"{quote(first)}", "This person's full history")
                            + "</p>")
    body = f'<p class="muted">profile {esc(pid)} · stage {esc(profile.get("lifecycle_stage"))}' \
           f' · {esc(profile.get("events_total", 0))} events</p>' + "".join(sections)
    return page("Profile", body, viewer, "/console/profiles")


def _not_granted(title: str, permission: Permission) -> str:
    return (f"<section><h2>{esc(title)}</h2><p class='muted'>Not shown: your role does not "
            f"grant {esc(permission)}.</p></section>")


def _identity_section(identity: dict[str, Any] | None) -> str:
    if identity is None:
        return _not_granted("Identities and links", Permission.IDENTITY_READ)
    members = table(("identifier", "linked because"), (
        (m["node"], "; ".join(f"{b['rule']} ({b['from']} → {b['to']}"
                              f"{', score ' + format(b['score'], '.2f') if b.get('score') else ''}"
                              f", {b['at']})" for b in m["because"]) or "origin")
        for m in identity.get("members", [])))
    history = table(("when", "what"), ((h.get("at"), _short_event(h))
                                       for h in identity.get("history", [])),
                    empty="no merge or split")
    merged = ", ".join(identity.get("merged", [])) or "none"
    return (f"<section><h2>Identities and links</h2>{members}"
            f"<h2>Merge and split history</h2><p>Absorbed profiles: {esc(merged)}</p>{history}"
            "</section>")


def _short_event(entry: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in entry.items() if k != "at")[:300]


def _timeline_section(events: list[dict[str, Any]] | None) -> str:
    if events is None:
        return _not_granted("Timeline", Permission.HISTORY_READ)
    rows = ((e.get("timestamp"), e.get("type"), e.get("event") or e.get("name") or "",
             json.dumps(e.get("properties") or {}, ensure_ascii=False)[:160]) for e in events)
    return (f"<section><h2>Timeline (latest {TIMELINE_LIMIT})</h2>"
            + table(("when", "type", "event", "properties"), rows) + "</section>")


def _memberships_section(segments: dict[str, Any]) -> str:
    current = ", ".join(sorted(segments.get("segments", {}))) or "none"
    rows = ((h["at"], h["segment"], h["change"], h.get("reason", ""))
            for h in reversed(segments.get("history", [])))
    return (f"<section><h2>Segment memberships</h2><p>Now in: {esc(current)}</p>"
            + table(("when", "segment", "change", "why"), rows) + "</section>")


def _consent_section(consent: dict[str, Any] | None) -> str:
    if consent is None:
        return _not_granted("Consent", Permission.CONSENT_READ)
    rows = []
    for record in consent.get("records", []):
        for regulation, purposes in record.get("regulations", {}).items():
            for purpose, by_source in purposes.items():
                for source, state in by_source.items():
                    rows.append((regulation, purpose, "granted" if state.get("granted")
                                 else "denied", state.get("kind"), source,
                                 record.get("identifier_type"), state.get("collected_at")))
    return (f"<section><h2>Consent per purpose and regulation</h2>"
            f"<p>Jurisdiction: {esc(consent.get('jurisdiction'))}</p>"
            + table(("regulation", "purpose", "state", "kind", "source", "kept against",
                     "collected"), sorted(rows, key=lambda r: tuple(map(str, r))),
                    empty="no consent record: every destination is denied")
            + "</section>")


def _outcomes_section(outcomes: list[dict[str, Any]]) -> str:
    rows = ((o["destination"], o.get("segment"), o.get("action"), o.get("outcome"),
             o.get("reason") or "", o.get("decision_id") or "") for o in outcomes)
    return ("<section><h2>Deliveries and suppressions (recent)</h2>"
            + table(("destination", "segment", "action", "outcome", "reason",
                     "consent decision"), rows) + "</section>")


# ---- segments -----------------------------------------------------------------------------
def segments(viewer: Viewer, listed: list[dict[str, Any]], problem: str = "",
             saved: str = "", draft: dict[str, str] | None = None) -> str:
    rows = ((link(f"/console/segments/{quote(s['name'])}", s["name"]), esc(s["size"]),
             esc(s.get("description", "")), esc((s.get("backfill") or {}).get("status", "")))
            for s in sorted(listed, key=lambda s: s["name"]))
    sizes = bar_chart([(s["name"], s["size"]) for s in sorted(listed, key=lambda s: s["name"])])
    draft = draft or {}
    builder = (
        '<section><h2>Build a segment</h2>'
        '<p>Write a rule in the rule language '
        '(docs/segments.md), or add a trait condition with the helper; the size and a '
        'sample update as you type.</p>'
        '<div class="helper"><input id="helper-trait" placeholder="trait, e.g. plan">'
        '<select id="helper-op"><option>eq</option><option>ne</option><option>exists'
        '</option><option>gt</option><option>gte</option><option>lt</option><option>lte'
        '</option><option>contains</option></select>'
        '<input id="helper-value" placeholder="value"><button type="button" id="helper-add">'
        'Add condition</button></div>'
        '<form method="post" action="/console/segments" id="segment-builder" class="card">'
        f'{csrf_field(viewer)}<label>Name <input name="name" id="segment-name" '
        f'value="{esc(draft.get("name", ""))}" required pattern="[A-Za-z0-9._-]{{1,64}}">'
        '</label><label>Description <input name="description" '
        f'value="{esc(draft.get("description", ""))}"></label>'
        '<label>Rule (JSON)<textarea name="rule" id="segment-rule" rows="6" required>'
        f'{esc(draft.get("rule", ""))}</textarea></label>'
        '<output id="segment-preview" aria-live="polite"></output>'
        + ('<button id="segment-save">Save segment</button>' if viewer.may(
            Permission.SEGMENTS_WRITE) else
           '<p class="muted">Your role previews segments but does not save them.</p>')
        + '</form></section>')
    body = ((notice(problem, "error") if problem else "")
            + (notice(f"Segment {saved} saved; its backfill has started.") if saved else "")
            + "<section><h2>Segments and sizes</h2>"
            + table(("segment", "size", "description", "backfill"), rows, raw=4)
            + sizes + "</section>" + builder)
    return page("Segments", body, viewer, "/console/segments")


def segment(viewer: Viewer, definition: dict[str, Any], members: dict[str, Any]) -> str:
    per_day = Counter(m["entered_at"][:10] for m in members.get("members", []))
    series = sorted(per_day.items())
    rows = ((link(f"/console/profiles/{quote(m['profile_id'])}", m["profile_id"]),
             esc(m["entered_at"])) for m in members.get("members", [])[:MEMBERS_SHOWN])
    body = (f"<p>Size now: <b>{esc(definition['size'])}</b> · version "
            f"{esc(definition.get('version'))} · updated {esc(definition.get('updated_at'))}"
            f"</p><h2>Rule</h2>{pretty(definition['rule'])}"
            "<h2>Entries over time (current members, by day they entered)</h2>"
            + column_chart(series, caption=f"from the newest {len(members.get('members', []))}"
                           " members read")
            + f"<h2>Members (first {MEMBERS_SHOWN})</h2>"
            + table(("profile", "entered"), rows, raw=2))
    return page(f"Segment {definition['name']}", body, viewer, "/console/segments")


# ---- destinations -------------------------------------------------------------------------
def destinations(viewer: Viewer, listed: list[dict[str, Any]],
                 stats: dict[str, dict[str, Any]], health: dict[str, Any]) -> str:
    rows = []
    for d in listed:
        s = stats.get(d["name"], {})
        rows.append((link(f"/console/destinations/{quote(d['name'])}", d["name"]),
                     esc(d["kind"]), esc(", ".join(d.get("purposes", []))),
                     esc(", ".join(d.get("segments", []))),
                     esc(health.get(d["name"], "unknown")), esc(s.get("delivered", 0)),
                     esc(s.get("suppressed", 0)), esc(s.get("dead_letters", 0))))
    body = (table(("destination", "kind", "purposes", "segments", "health", "delivered",
                   "suppressed", "dead letters"), rows, raw=8)
            + "<h2>Throughput (deliveries so far)</h2>"
            + bar_chart([(d["name"], stats.get(d["name"], {}).get("delivered", 0))
                         for d in listed]))
    return page("Destinations", body, viewer, "/console/destinations")


def destination(viewer: Viewer, name: str, config: dict[str, Any], stats: dict[str, Any],
                outcomes: list[dict[str, Any]], letters: list[dict[str, Any]],
                message: str = "") -> str:
    errors = [o for o in outcomes if o.get("outcome") not in ("delivered", "suppressed")]
    may_replay = viewer.may(Permission.DESTINATIONS_WRITE)
    letter_rows = ((esc(letter.get("letter_id") or letter.get("id")),
                    esc(letter.get("failed_at") or letter.get("at") or ""),
                    esc(letter.get("error") or letter.get("reason") or ""),
                    esc(len(letter.get("items", []))),
                    post_button(viewer, f"/console/destinations/{quote(name)}/dead-letters/"
                                f"{quote(str(letter.get('letter_id') or letter.get('id')))}"
                                "/replay", "Replay") if may_replay else "")
                   for letter in letters)
    outcome_rows = ((o.get("segment"), o.get("action"), o.get("outcome"),
                     o.get("reason") or "", o.get("decision_id") or "") for o in outcomes[:50])
    body = ((notice(message) if message else "")
            + "<h2>Configuration</h2>" + pairs(config)
            + '<p class="muted">Secrets are kept in the environment and never shown.</p>'
            + "<h2>Throughput</h2>" + pairs(stats)
            + f"<h2>Errors (recent, {len(errors)})</h2>"
            + table(("segment", "action", "outcome", "reason"),
                    ((e.get("segment"), e.get("action"), e.get("outcome"), e.get("reason"))
                     for e in errors[:50]), empty="no errors")
            + f"<h2>Dead letters ({len(letters)})</h2>"
            + table(("letter", "failed", "error", "items", ""), letter_rows, raw=5,
                    empty="no dead letters")
            + "<h2>Recent outcomes</h2>"
            + table(("segment", "action", "outcome", "reason", "consent decision"),
                    outcome_rows))
    return page(f"Destination {name}", body, viewer, "/console/destinations")


# ---- compliance ---------------------------------------------------------------------------
def compliance(viewer: Viewer, open_requests: list[dict[str, Any]],
               checkpoints: list[dict[str, Any]], message: str = "") -> str:
    rows = ((esc(r["due_at"]), esc("OVERDUE" if r.get("overdue") else f"{r['days_left']} d"),
             esc(r["kind"]), esc(r["regulation"]), esc(r["status"]),
             esc(", ".join(":".join(i) for i in r.get("identifiers", []))),
             _request_actions(viewer, r)) for r in open_requests)
    seals = ((c["service"], c["notification_id"], c["event_count"], c.get("created_at", ""))
             for c in checkpoints)
    lookup = ('<form method="get" action="/console/compliance/subject" class="card" '
              'id="subject-lookup"><input name="identifier" placeholder="type:value, e.g. '
              'email:ana@example.com" required><button>Open history</button></form>')
    filing = ""
    if viewer.may(Permission.DSR_HANDLE):
        kinds = "".join(f"<option>{k}</option>" for k in (
            "access", "portability", "erasure", "objection", "restriction"))
        filing = ('<h2>File a request</h2><form method="post" class="card" '
                  f'action="/console/compliance/requests">{csrf_field(viewer)}'
                  f'<select name="kind">{kinds}</select><input name="identifier" '
                  'placeholder="type:value" required><select name="regulation">'
                  '<option>GDPR</option><option>CCPA</option></select>'
                  '<button>File</button></form>')
    body = ((notice(message) if message else "")
            + "<h2>Open data subject requests (overdue first)</h2>"
            + table(("due", "left", "kind", "regulation", "status", "identifiers", ""), rows,
                    raw=1, empty="no open request") + filing
            + "<h2>A person's history</h2>" + lookup
            + '<h2>Audit</h2><p><a href="/console/compliance/audit">Verify every service\'s '
              'history</a> (what is new since the last check; a full run on request) · '
              '<a href="/console/compliance/processing-records">Records of '
              'processing (Art. 30)</a></p><h3>Latest signed checkpoints</h3>'
            + table(("service", "sealed up to", "events", "sealed at"), seals,
                    empty="nothing sealed yet"))
    return page("Compliance", body, viewer, "/console/compliance")


def _request_actions(viewer: Viewer, request: dict[str, Any]) -> str:
    if not viewer.may(Permission.DSR_HANDLE):
        return ""
    base = f"/console/compliance/requests/{quote(request['request_id'])}"
    if request["status"] == "received":
        return post_button(viewer, f"{base}/verify", "Mark verified")
    return post_button(viewer, f"{base}/complete", "Carry out")


def subject(viewer: Viewer, identifier: str, export: dict[str, Any],
            history: list[dict[str, Any]]) -> str:
    rows = ((h.get("at"), h.get("service"), h.get("what"),
             json.dumps(h.get("detail", {}), ensure_ascii=False, default=str)[:200])
            for h in history)
    recipients = table(("destination", "kind", "purposes", "deliveries", "last"), (
        (r["destination"], r["kind"], ", ".join(r.get("purposes", [])), r.get("deliveries"),
         r.get("last_delivery")) for r in export.get("recipients", [])), empty="nobody")
    export_link = ""
    if viewer.may(Permission.DSR_HANDLE):
        export_link = ("<p>" + link(f"/console/compliance/export?identifier="
                                    f"{quote(identifier)}", "Download the export (JSON)")
                       + "</p>")
    ids = ", ".join(":".join(i) for i in export.get("subject", {}).get("identifiers", []))
    body = (f"<p>Identifiers: {esc(ids)}</p>{export_link}<h2>Recipients</h2>{recipients}"
            f"<h2>Everything that happened ({len(history)})</h2>"
            + table(("when", "service", "what", "detail"), rows))
    return page("A person's history", body, viewer, "/console/compliance")


def audit(viewer: Viewer, reports: list[dict[str, Any]], keys: str, full: bool = False
          ) -> str:
    """What was checked is said as it was: a full run recomputed every chain from its first
    event; an incremental one went on from the last checkpoint found intact before and
    hashed only what came after it, so it cannot see tampering with what it had already
    verified: that is what the last full run (its time and result shown) is for."""
    rows = ((r["service"], "intact" if r["ok"] else "BROKEN", r.get("events", ""),
             _checked(r), _last_full(r), r.get("first_problem") or r.get("missing") or "")
            for r in reports)
    if full:
        what = ("<p>Full verification: every service's chain recomputed from its first "
                "stored event now, and every signed checkpoint checked.</p>")
    else:
        what = ("<p>Incremental verification: each chain is taken up again from the last "
                "signed checkpoint an earlier run found intact, and only the events stored "
                "after it are hashed and checked now. Tampering with history verified "
                "before is found only by a full run: see when each service's last one ran."
                "</p>")
    button = ('<p><a href="/console/compliance/audit?full=1" id="full-verification">Run a '
              'full verification now</a> (reads every service\'s whole store: this takes '
              'a while)</p>')
    body = (what + notice(keys) + table(
        ("service", "result", "events in chain", "checked now", "last full verification",
         "first problem"), rows) + button)
    return page("Audit verification", body, viewer, "/console/compliance")


def _checked(report: dict[str, Any]) -> str:
    if report.get("missing"):
        return ""
    if report.get("full"):
        return f"all {report.get('hashed', 0)} (full)"
    return (f"{report.get('hashed', 0)} new, after notification "
            f"{report.get('from_notification')} (sealed {report.get('from_sealed_at')})")


def _last_full(report: dict[str, Any]) -> str:
    if report.get("last_full_at") is None:
        return "never"
    result = "intact" if report.get("last_full_ok") else \
        f"BROKEN: {report.get('last_full_problem')}"
    return f"{report['last_full_at']}: {result}"


def processing_records(viewer: Viewer, report: dict[str, Any]) -> str:
    rows = ((a["purpose"], a.get("description"), a.get("lawful_basis"),
             ", ".join(a.get("data_categories", [])), a.get("retention"),
             ", ".join(r["destination"] for r in a.get("recipients", [])))
            for a in report.get("activities", []))
    body = (f"<p>Generated {esc(report.get('generated_at'))}. Controller: "
            f"{esc(report.get('controller', {}).get('name'))}; DPO: "
            f"{esc(report.get('dpo', {}).get('name'))}.</p>"
            + table(("purpose", "description", "lawful basis", "data", "retention",
                     "recipients"), rows)
            + "<h2>Security measures</h2><ul>"
            + "".join(f"<li>{esc(m)}</li>" for m in report.get("security_measures", []))
            + "</ul>")
    return page("Records of processing", body, viewer, "/console/compliance")
