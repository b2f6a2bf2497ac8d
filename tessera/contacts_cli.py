"""`tessera contacts …` and `tessera accounts …`: the contact directory through the admin
API of a running Tessera (TESSERA_URL and TESSERA_ADMIN_TOKEN, as `tessera segments`).

    tessera contacts search [--identifier X] [--email PREFIX] [--name PREFIX]
                            [--account ID] [--owner O] [--stage S] [--limit N]
    tessera contacts show PROFILE_ID             winning traits, their sources, stage history
    tessera contacts update PROFILE_ID key=value …
    tessera contacts stage PROFILE_ID STAGE      a person moves the stage (backwards too)
    tessera contacts note PROFILE_ID "text"      a note on the timeline, with --author
    tessera contacts bulk FILE.json              {"updates": [{profile_id, traits?, stage?}]}
    tessera accounts show ACCOUNT_ID | search NAME_PREFIX | update ACCOUNT_ID key=value …
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import Any

from tessera.segments_cli import AdminApi, with_api

SEARCH_OPTIONS = ("identifier", "email", "name", "account", "owner", "stage")


def add_commands(commands) -> None:
    contacts = commands.add_parser("contacts", help="search and change contacts (admin API)")
    contacts.add_argument("action", choices=["search", "show", "update", "stage", "note",
                                             "bulk"])
    contacts.add_argument("target", nargs="?", help="a profile id or a JSON file")
    contacts.add_argument("values", nargs="*", help="key=value traits, a stage or a note")
    for option in SEARCH_OPTIONS:
        contacts.add_argument(f"--{option}")
    contacts.add_argument("--limit", type=int, default=50)
    contacts.add_argument("--author", default=getpass.getuser())
    contacts.set_defaults(func=with_api(run_contacts))
    accounts = commands.add_parser("accounts", help="show, search, update accounts")
    accounts.add_argument("action", choices=["show", "search", "update"])
    accounts.add_argument("target", help="an account id or a name prefix")
    accounts.add_argument("values", nargs="*", help="key=value traits")
    accounts.add_argument("--author", default=getpass.getuser())
    accounts.set_defaults(func=with_api(run_accounts))


def run_contacts(args, api: AdminApi, out=sys.stdout) -> int:
    if args.action == "search":
        criteria = {o: getattr(args, o) for o in SEARCH_OPTIONS if getattr(args, o)}
        found = api.call("GET", "/v1/contacts", limit=args.limit, **criteria)["contacts"]
        for contact in found:
            print(_contact_line(contact), file=out)
        print(f"{len(found)} contacts", file=out)
        return 0
    if not args.target:
        raise ValueError(f"contacts {args.action} needs a profile id or a file")
    if args.action == "show":
        _show(api.call("GET", f"/v1/profiles/{args.target}"), out)
    elif args.action == "update":
        _show(api.call("PATCH", f"/v1/contacts/{args.target}",
                       {"traits": _pairs(args.values), "author": args.author}), out)
    elif args.action == "stage":
        _show(api.call("PUT", f"/v1/contacts/{args.target}/stage",
                       {"stage": _one(args.values, "a stage"), "author": args.author}), out)
    elif args.action == "note":
        api.call("POST", f"/v1/contacts/{args.target}/notes",
                 {"text": _one(args.values, "the note's text"), "author": args.author})
        print(f"note added to {args.target} by {args.author}", file=out)
    elif args.action == "bulk":
        body = json.loads(Path(args.target).read_text())
        result = api.call("POST", "/v1/contacts/bulk", {**body, "author": args.author})
        print(f"{result['updated']} updated, {len(result['missing'])} not found"
              + "".join(f"\n  missing {m}" for m in result["missing"]), file=out)
    return 0


def run_accounts(args, api: AdminApi, out=sys.stdout) -> int:
    if args.action == "search":
        for account in api.call("GET", "/v1/accounts", name=args.target)["accounts"]:
            print(f"{account['account_id']}  {account['traits'].get('name') or ''}", file=out)
        return 0
    if args.action == "update":
        account = api.call("PATCH", f"/v1/accounts/{args.target}",
                           {"traits": _pairs(args.values), "author": args.author})
    else:
        account = api.call("GET", f"/v1/accounts/{args.target}")
    print(f"account {account['account_id']}: {json.dumps(account['traits'])}", file=out)
    for member in account["contacts"]:
        print(f"  {member['profile_id']}  {member['role']}", file=out)
    return 0


def _contact_line(contact: dict[str, Any]) -> str:
    return "  ".join(str(contact.get(k) or "-") for k in (
        "profile_id", "name", "email", "owner", "lifecycle_stage"))


def _show(profile: dict[str, Any], out) -> None:
    print(f"contact {profile['profile_id']}  stage: {profile.get('lifecycle_stage') or '-'}",
          file=out)
    for trait, entries in sorted(profile.get("trait_sources", {}).items()):
        winner, *others = entries
        behind = "".join(f"; {e['source']}: {e['value']!r}" for e in others)
        print(f"  {trait} = {winner['value']!r} ({winner['source']}{behind})", file=out)
    for change in profile.get("stage_history", []):
        cause = change["cause"]
        why = cause.get("rule") or cause.get("author") or cause.get("from") or ""
        print(f"  stage {change['previous'] or '-'} -> {change['stage']} "
              f"({cause['kind']}: {why})", file=out)


def _pairs(values: list[str]) -> dict[str, Any]:
    traits = {}
    for pair in values:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"'{pair}' is not of the form key=value")
        try:
            traits[key] = json.loads(value)
        except json.JSONDecodeError:
            traits[key] = value
    if not traits:
        raise ValueError("give at least one key=value")
    return traits


def _one(values: list[str], what: str) -> str:
    if len(values) != 1:
        raise ValueError(f"give {what} (quoted if it has spaces)")
    return values[0]


