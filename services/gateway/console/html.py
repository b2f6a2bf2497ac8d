"""The console's HTML: a layout, tables, inline SVG charts (stdlib only, every value escaped).

Pages are plain functions of the data the gateway already gathers for its JSON API; they
know nothing of nameko or of HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from services.gateway.access import Permission

# (path, label, the permission that shows it in the navigation)
NAVIGATION = (
    ("/console", "Overview", Permission.OPERATIONS_READ),
    ("/console/profiles", "Profiles", Permission.PROFILES_READ),
    ("/console/segments", "Segments", Permission.SEGMENTS_READ),
    ("/console/destinations", "Destinations", Permission.DESTINATIONS_READ),
    ("/console/compliance", "Compliance", Permission.DSR_READ),
)


def esc(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


class Viewer:
    """Who looks at a page: their name, role, what the role grants, their CSRF token."""

    def __init__(self, name: str, role: str, granted: frozenset[Permission], csrf: str):
        self.name, self.role, self.granted, self.csrf = name, role, granted, csrf

    def may(self, permission: Permission) -> bool:
        return permission in self.granted


def page(title: str, body: str, viewer: Viewer | None, active: str = "") -> str:
    nav = ""
    if viewer is not None:
        links = "".join(
            f'<a href="{path}"{" class=active" if path == active else ""}>{label}</a>'
            for path, label, permission in NAVIGATION if viewer.may(permission))
        nav = (f'<nav>{links}<span class="who">{esc(viewer.name)} · {esc(viewer.role)}</span>'
               f'<form method="post" action="/console/sign-out">{csrf_field(viewer)}'
               '<button>Sign out</button></form></nav>')
    csrf_meta = f'<meta name="csrf-token" content="{esc(viewer.csrf)}">' if viewer else ""
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<title>{esc(title)} · Tessera</title>{csrf_meta}'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            '<link rel="stylesheet" href="/console/static/console.css">'
            '<script defer src="/console/static/console.js"></script></head>'
            f'<body><header><b>Tessera</b> console</header>{nav}'
            f'<main><h1>{esc(title)}</h1>{body}</main></body></html>')


def csrf_field(viewer: Viewer) -> str:
    return f'<input type="hidden" name="csrf" value="{esc(viewer.csrf)}">'


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, raw: int = 0,
          empty: str = "nothing yet") -> str:
    """The last `raw` columns are trusted HTML (links, buttons); the others are escaped."""
    body = []
    for row in rows:
        cells = [c if i >= len(row) - raw else esc(c) for i, c in enumerate(row)]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    if not body:
        return f'<p class="empty">{esc(empty)}</p>'
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def bar_chart(values: Sequence[tuple[str, float]], *, unit: str = "", width: int = 420) -> str:
    """Horizontal bars, one per label: small enough to inline, readable without JS."""
    if not values:
        return '<p class="empty">no data yet</p>'
    top = max((v for _, v in values), default=0) or 1
    row, label_w = 22, 150
    bars = []
    for i, (label, value) in enumerate(values):
        length = (width - label_w - 60) * value / top
        y = i * row
        bars.append(f'<text x="0" y="{y + 15}">{esc(label)[:24]}</text>'
                    f'<rect x="{label_w}" y="{y + 4}" width="{length:.1f}" height="14"/>'
                    f'<text x="{label_w + length + 4:.1f}" y="{y + 15}">'
                    f'{value:g}{esc(unit)}</text>')
    height = row * len(values)
    return (f'<svg class="chart" role="img" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">{"".join(bars)}</svg>')


def column_chart(series: Sequence[tuple[str, float]], *, width: int = 480,
                 height: int = 90, caption: str = "") -> str:
    """Columns over time (e.g. per minute); the first and last labels under the axis."""
    if not series:
        return '<p class="empty">no data yet</p>'
    top = max((v for _, v in series), default=0) or 1
    step = width / len(series)
    columns = "".join(
        f'<rect x="{i * step:.1f}" y="{height - height * v / top:.1f}" '
        f'width="{max(step - 1, 1):.1f}" height="{height * v / top:.1f}">'
        f'<title>{esc(label)}: {v:g}</title></rect>'
        for i, (label, v) in enumerate(series))
    axis = (f'<text x="0" y="{height + 14}">{esc(series[0][0])}</text>'
            f'<text x="{width}" y="{height + 14}" text-anchor="end">{esc(series[-1][0])}</text>'
            f'<text x="{width}" y="10" text-anchor="end">max {top:g}</text>')
    return (f'<figure><svg class="chart" role="img" width="{width}" height="{height + 18}" '
            f'viewBox="0 0 {width} {height + 18}">{columns}{axis}</svg>'
            f'<figcaption>{esc(caption)}</figcaption></figure>')


def pretty(value: Any) -> str:
    return f"<pre>{esc(json.dumps(value, indent=1, default=str, ensure_ascii=False))}</pre>"


def pairs(mapping: dict[str, Any]) -> str:
    if not mapping:
        return '<p class="empty">none</p>'
    return "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(_short(v))}</dd>"
                            for k, v in sorted(mapping.items())) + "</dl>"


def _short(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, default=str, ensure_ascii=False)[:300]
    return str(value)


def link(href: str, text: Any) -> str:
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def post_button(viewer: Viewer, action: str, label: str, **fields: str) -> str:
    hidden = "".join(f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">'
                     for k, v in fields.items())
    return (f'<form method="post" action="{esc(action)}" class="inline">{csrf_field(viewer)}'
            f'{hidden}<button>{esc(label)}</button></form>')


def notice(text: str, kind: str = "info") -> str:
    return f'<p class="notice {kind}" role="status">{esc(text)}</p>'
