"""`tessera identity explain`: the identity of a profile, read through the admin API."""

from __future__ import annotations

import sys
from typing import Any

import httpx

from shared.config import Settings


def explain(profile_id: str, *, url: str | None, token: str, out=sys.stdout) -> int:
    settings = Settings.from_env()
    base = url or f"http://{settings.http_host}:{settings.http_port}"
    if not token:
        print("tessera identity explain: TESSERA_ADMIN_TOKEN is empty; the admin API "
              "needs it", file=sys.stderr)
        return 2
    try:
        answer = httpx.get(f"{base}/v1/profiles/{profile_id}/identity",
                           headers={"Authorization": f"Bearer {token}"}, timeout=30)
    except httpx.HTTPError as failed:
        print(f"tessera identity explain: {base} did not answer ({failed})", file=sys.stderr)
        return 1
    if answer.status_code != 200:
        print(f"tessera identity explain: {answer.status_code} {answer.text}", file=sys.stderr)
        return 1
    out.write(render(answer.json()))
    return 0


def render(explained: dict[str, Any]) -> str:
    """The explanation as text: each member, then the edges that tie it to the first one."""
    lines = [f"profile {explained['profile_id']}"]
    if explained["asked_for"] != explained["profile_id"]:
        lines[0] += f" (you asked for {explained['asked_for']}, merged into it)"
    lines.append(f"  first identifier: {explained['origin']}")
    for member in explained["members"]:
        lines.append(f"  {member['node']}")
        for edge in member["because"]:
            lines.append(f"      {edge['from']} -- {edge['to']}: {_why(edge)}")
    if explained["merged"]:
        lines.append(f"  merged into it: {', '.join(explained['merged'])}")
    for entry in explained["history"]:
        reason = entry.get("reason") or {}
        detail = ", ".join(f"{k}={v}" for k, v in reason.items() if v is not None)
        lines.append(f"  {entry['at']} {entry['what']} {entry.get('profile_id', '')} {detail}"
                     .rstrip())
    return "\n".join(lines) + "\n"


def _why(edge: dict[str, Any]) -> str:
    if edge["rule"] == "match":
        return f"matched with probability {edge['score']:.4f} ({edge.get('evidence')})"
    return f"seen together on {edge.get('evidence')} at {edge['at']}"
