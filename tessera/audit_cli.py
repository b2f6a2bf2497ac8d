"""`tessera audit …`: what a compliance officer reads (admin API: TESSERA_URL,
TESSERA_ADMIN_TOKEN).

    tessera audit subject TYPE:VALUE [--json]   one person's history across every service,
                                                oldest first, and the recipients of their data
    tessera audit views [--profile ID] [--viewer WHO] [--limit N]
                                                who looked at whose data, newest first
    tessera audit processing [--json]           records of processing (GDPR Art. 30)
"""

from __future__ import annotations

import json
import sys
from typing import Any

from tessera.dsr_cli import ActorApi, with_actor


def add_commands(commands) -> None:
    audit = commands.add_parser(
        "audit", help="verify the hash chains, a person's history, the view log, Art. 30")
    actions = audit.add_subparsers(dest="audit_command", required=True)
    subject = actions.add_parser("subject", help="one person's cross-service history")
    subject.add_argument("identifier", help="type:value, e.g. email:ada@example.com")
    subject.add_argument("--json", action="store_true")
    subject.set_defaults(func=with_actor(run_subject))
    views = actions.add_parser("views", help="who viewed whose data, newest first")
    views.add_argument("--profile")
    views.add_argument("--viewer")
    views.add_argument("--limit", type=int, default=100)
    views.set_defaults(func=with_actor(run_views))
    processing = actions.add_parser("processing",
                                    help="records of processing activities (Art. 30)")
    processing.add_argument("--json", action="store_true")
    processing.set_defaults(func=with_actor(run_processing))
    for parser in (subject, views, processing):
        parser.add_argument("--as", dest="actor", default=ActorApi.actor,
                            help="who is looking (recorded); default: your login")


def run_subject(args, api: ActorApi, out=sys.stdout) -> int:
    answer = api.call("GET", "/v1/audit/subject", identifier=args.identifier)
    if args.json:
        print(json.dumps(answer, indent=2, default=str), file=out)
        return 0
    subject = answer["subject"]
    print(f"subject {', '.join(f'{t}:{v}' for t, v in subject['identifiers'])}", file=out)
    print(f"  profiles: {', '.join(subject['profile_ids'])}", file=out)
    recipients = ", ".join(r["destination"] for r in answer["recipients"]) or "none"
    print(f"  recipients of their data: {recipients}", file=out)
    for entry in answer["history"]:
        print(f"{entry['at']}  {entry['service']:<10} {entry['what']}{_detail(entry)}",
              file=out)
    return 0


def _detail(entry: dict[str, Any]) -> str:
    shown = ", ".join(f"{k}={v}" for k, v in entry["detail"].items()
                      if not isinstance(v, dict | list))
    return f"  ({shown})" if shown else ""


def run_views(args, api: ActorApi, out=sys.stdout) -> int:
    params = {k: v for k, v in (("profile_id", args.profile), ("viewer", args.viewer)) if v}
    views = api.call("GET", "/v1/audit/views", limit=args.limit, **params)["views"]
    for view in views:
        print(f"{view['at']}  {view['viewer']} ({view['role']})  {view['what']}  "
              f"{', '.join(view['profile_ids'])}", file=out)
    print(f"{len(views)} views", file=out)
    return 0


def run_processing(args, api: ActorApi, out=sys.stdout) -> int:
    if args.json:
        print(json.dumps(api.call("GET", "/v1/processing-records"), indent=2), file=out)
    else:
        out.write(api.call("GET", "/v1/processing-records", format="markdown"))
    return 0
