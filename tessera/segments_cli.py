"""`tessera segments …` and `tessera traits …`: segments and computed traits through the
admin API of a running Tessera (TESSERA_URL, default http://127.0.0.1:8000, and
TESSERA_ADMIN_TOKEN).

    tessera segments list
    tessera segments show NAME
    tessera segments define FILE.json [--no-wait]   create or change; follows the backfill
    tessera segments preview FILE.json              size and a sample, nothing saved
    tessera segments members NAME [--limit N]
    tessera segments delete NAME
    tessera segments history PROFILE_ID             entries and exits, when and why
    tessera traits list | define FILE.json | delete NAME
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

BAR_WIDTH = 30


class AdminApi:
    def __init__(self, url: str | None = None, token: str | None = None):
        self.url = (url or os.environ.get("TESSERA_URL") or "http://127.0.0.1:8000").rstrip("/")
        self.token = token if token is not None else os.environ.get("TESSERA_ADMIN_TOKEN", "")

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        response = httpx.request(method, f"{self.url}{path}", json=body, params=params or None,
                                 headers={"Authorization": f"Bearer {self.token}"}, timeout=30)
        answer = response.json() if response.content else {}
        if response.status_code >= 400:
            raise ApiError(answer.get("message") or f"HTTP {response.status_code}")
        return answer


class ApiError(Exception):
    pass


def progress_bar(backfill: dict[str, Any]) -> str:
    filled = int(BAR_WIDTH * backfill["percent"] / 100)
    return (f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {backfill['percent']:5.1f}% "
            f"{backfill['done']:,}/{backfill['total']:,} profiles, "
            f"{backfill['entered']:,} entered, {backfill['exited']:,} exited")


def follow_backfill(api: AdminApi, name: str, path: str, out=sys.stdout,
                    poll_seconds: float = 0.5) -> dict[str, Any]:
    """Redraws the progress bar until the backfill of `name` is done."""
    while True:
        backfill = next((b for b in api.call("GET", "/v1/backfills")["backfills"]
                         if b["name"] == name), None)
        if backfill is None:
            return {}
        out.write(f"\r{path} {name}: {progress_bar(backfill)}")
        out.flush()
        if backfill["status"] == "done":
            out.write("\n")
            return backfill
        time.sleep(poll_seconds)


def _load(file: str) -> dict[str, Any]:
    return json.loads(Path(file).read_text())


def _print(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def run_segments(args, api: AdminApi) -> int:
    if args.action == "list":
        for segment in api.call("GET", "/v1/segments")["segments"]:
            backfill = segment.get("backfill") or {}
            state = f" (backfill {backfill['percent']:.0f}%)" if backfill.get(
                "status") == "running" else ""
            print(f"{segment['name']:<32} {segment['size']:>9,} members  v{segment['version']}"
                  f"{state}  {segment.get('description') or ''}")
    elif args.action == "show":
        _print(api.call("GET", f"/v1/segments/{args.target}"))
    elif args.action == "define":
        saved = api.call("POST", "/v1/segments", _load(args.target))
        print(f"segment {saved['name']} saved as version {saved['version']}")
        if not args.no_wait:
            follow_backfill(api, saved["name"], "backfill")
    elif args.action == "preview":
        definition = _load(args.target)
        preview = api.call("POST", "/v1/segments/preview",
                           {"rule": definition.get("rule", definition), "sample": args.limit})
        print(f"{preview['size']:,} of {preview['profiles_scanned']:,} profiles match")
        for profile in preview["sample"]:
            print(f"  {profile['profile_id']}  {json.dumps(profile['traits'])}")
    elif args.action == "members":
        page = api.call("GET", f"/v1/segments/{args.target}/members", limit=args.limit)
        for member in page["members"]:
            print(f"{member['profile_id']}  since {member['entered_at']}")
    elif args.action == "delete":
        api.call("DELETE", f"/v1/segments/{args.target}")
        print(f"segment {args.target} removed; its members exit")
    elif args.action == "history":
        for change in api.call("GET", f"/v1/profiles/{args.target}/segments")["history"]:
            print(f"{change['at']}  {change['change']:<8} {change['segment']:<24} "
                  f"{change['reason']}")
    return 0


def run_traits(args, api: AdminApi) -> int:
    if args.action == "list":
        for trait in api.call("GET", "/v1/computed-traits")["computed_traits"]:
            window = f" over {trait['within_days']} days" if trait.get("within_days") else ""
            print(f"{trait['name']:<32} {trait['aggregate']} of {trait['event']}"
                  f"{'.' + trait['property'] if trait.get('property') else ''}{window}")
    elif args.action == "define":
        saved = api.call("POST", "/v1/computed-traits", _load(args.target))
        print(f"computed trait {saved['name']} saved as version {saved['version']}")
        if not args.no_wait:
            follow_backfill(api, saved["name"], "backfill")
    elif args.action == "delete":
        api.call("DELETE", f"/v1/computed-traits/{args.target}")
        print(f"computed trait {args.target} removed")
    return 0


def add_commands(commands) -> None:
    segments = commands.add_parser("segments", help="list, define, preview segments (admin API)")
    segments.add_argument("action", choices=["list", "show", "define", "preview", "members",
                                             "delete", "history"])
    segments.add_argument("target", nargs="?", help="a name, a JSON file or a profile id")
    segments.add_argument("--limit", type=int, default=20)
    segments.add_argument("--no-wait", action="store_true",
                          help="return once saved, without following the backfill")
    segments.set_defaults(func=with_api(run_segments, needs_target=True))
    traits = commands.add_parser("traits", help="list, define, delete computed traits")
    traits.add_argument("action", choices=["list", "define", "delete"])
    traits.add_argument("target", nargs="?")
    traits.add_argument("--no-wait", action="store_true")
    traits.set_defaults(func=with_api(run_traits, needs_target=True))


def with_api(run, needs_target: bool = False):
    """A command that talks to the admin API: its errors are one line, exit code 1."""
    def command(args) -> int:
        if needs_target and args.action != "list" and not args.target:
            print(f"tessera: {args.action} needs a name or a file", file=sys.stderr)
            return 2
        try:
            return run(args, AdminApi())
        except (ApiError, httpx.HTTPError, OSError, ValueError) as error:
            print(f"tessera: {error}", file=sys.stderr)
            return 1
    return command
