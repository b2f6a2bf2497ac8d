"""`tessera keys …` and `tessera tokens …`: write keys and API tokens through the admin API
of a running Tessera (TESSERA_URL, and TESSERA_ADMIN_TOKEN: an admin's token).

    tessera keys list                      every write key: id, source, origin, revoked
    tessera keys issue SOURCE              a new write key for SOURCE (its secret shown once)
    tessera keys revoke KEY_ID             refused (401) from the next request on
    tessera tokens list
    tessera tokens issue NAME --role ROLE  admin, marketer or compliance
    tessera tokens revoke TOKEN_ID
"""

from __future__ import annotations

import sys

from tessera.segments_cli import AdminApi, with_api

ROLES = ("admin", "marketer", "compliance")


def add_commands(commands) -> None:
    keys = commands.add_parser("keys", help="list, issue, revoke write keys (admin API)")
    keys.add_argument("action", choices=["list", "issue", "revoke"])
    keys.add_argument("target", nargs="?", help="a source (issue) or a key id (revoke)")
    keys.set_defaults(func=with_api(run_keys, needs_target=True))
    tokens = commands.add_parser("tokens", help="list, issue, revoke API tokens (admin API)")
    tokens.add_argument("action", choices=["list", "issue", "revoke"])
    tokens.add_argument("target", nargs="?", help="a holder's name (issue) or a token id")
    tokens.add_argument("--role", choices=ROLES, default="marketer")
    tokens.set_defaults(func=with_api(run_tokens, needs_target=True))


def run_keys(args, api: AdminApi, out=sys.stdout) -> int:
    if args.action == "list":
        for key in api.call("GET", "/v1/write-keys")["write_keys"]:
            print(_line(key, key["source"]), file=out)
    elif args.action == "issue":
        issued = api.call("POST", "/v1/write-keys", {"source": args.target})
        print(f"write key {issued['id']} for source {issued['source']}: {issued['write_key']}\n"
              "(shown once: only its digest is kept)", file=out)
    else:
        revoked = api.call("DELETE", f"/v1/write-keys/{args.target}")
        print(f"write key {revoked['id']} of {revoked['source']} revoked at "
              f"{revoked['revoked_at']}", file=out)
    return 0


def run_tokens(args, api: AdminApi, out=sys.stdout) -> int:
    if args.action == "list":
        for token in api.call("GET", "/v1/tokens")["tokens"]:
            print(_line(token, f"{token['name']} ({token['role']})"), file=out)
    elif args.action == "issue":
        issued = api.call("POST", "/v1/tokens", {"name": args.target, "role": args.role})
        print(f"token {issued['id']} for {issued['name']} ({issued['role']}): "
              f"{issued['token']}\n(shown once: only its digest is kept)", file=out)
    else:
        revoked = api.call("DELETE", f"/v1/tokens/{args.target}")
        print(f"token {revoked['id']} of {revoked['name']} revoked at {revoked['revoked_at']}",
              file=out)
    return 0


def _line(credential: dict, holder: str) -> str:
    state = f"revoked {credential['revoked_at']}" if credential["revoked"] else "active"
    return f"{credential['id']}  {holder}  from {credential['origin']}  {state}"
