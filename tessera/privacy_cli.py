"""`tessera privacy …`: erasure through the admin API of a running Tessera (TESSERA_URL,
default http://127.0.0.1:8000, and TESSERA_ADMIN_TOKEN). See docs/privacy.md.

    tessera privacy erase TYPE:VALUE [--by WHO] [--request-id ID]
        erase the person behind an identifier (email:ann@example.com, user_id:42, ...)
        everywhere; prints what was erased and the per-recipient ledger. Run again with
        the same --request-id to retry recipients that failed.
    tessera privacy reapply-erasures
        after restoring the event stores from a backup: shred again every key the
        erasure log names, purge again, suppress again.
"""

from __future__ import annotations

import getpass
import json
import sys

import httpx

from tessera.segments_cli import AdminApi, ApiError

ERASURE_TIMEOUT = 300.0


def _post(api: AdminApi, path: str, body: dict | None = None) -> dict:
    response = httpx.post(f"{api.url}{path}", json=body or {}, timeout=ERASURE_TIMEOUT,
                          headers={"Authorization": f"Bearer {api.token}"})
    answer = response.json() if response.content else {}
    if response.status_code >= 400:
        raise ApiError(answer.get("message") or f"HTTP {response.status_code}")
    return answer


def run_erase(args, api: AdminApi, out=sys.stdout) -> int:
    kind, sep, value = args.identifier.partition(":")
    if not sep or not value:
        print("tessera privacy erase: the identifier must be TYPE:VALUE, "
              "e.g. email:ann@example.com", file=sys.stderr)
        return 2
    body = {"identifier": [kind, value], "requested_by": args.by or getpass.getuser()}
    if args.request_id:
        body["request_id"] = args.request_id
    outcome = _post(api, "/v1/privacy/erasures", body)
    out.write(f"erasure {outcome['request_id']}: {outcome['status']}, "
              f"{len(outcome['profile_ids'])} profile(s), {outcome['identifiers']} "
              "identifier(s)\n")
    for service, done in outcome["services"].items():
        detail = (f"{done['keys_shredded']} key(s) shredded" if done["status"] == "erased"
                  else done.get("error", ""))
        out.write(f"  {service:<11} {done['status']:<10} {detail}\n")
    for destination, entry in sorted(outcome["recipients"].items()):
        out.write(f"  -> {destination:<8} {entry['status']:<11} attempts {entry['attempts']}"
                  f"{'  ' + entry['last_error'] if entry.get('last_error') else ''}\n")
    return 0 if outcome["status"] == "erased" else 1


def run_reapply(args, api: AdminApi, out=sys.stdout) -> int:
    outcome = _post(api, "/v1/privacy/erasures/reapply")
    out.write(json.dumps(outcome) + "\n")
    return 0 if not outcome["failed"] else 1


def add_commands(commands) -> None:
    privacy = commands.add_parser("privacy", help="erase a person; re-apply erasures after "
                                  "a restore (admin API)")
    actions = privacy.add_subparsers(dest="privacy_command", required=True)
    erase = actions.add_parser("erase", help="erase the person behind TYPE:VALUE everywhere")
    erase.add_argument("identifier", help="TYPE:VALUE, e.g. email:ann@example.com")
    erase.add_argument("--by", help="who asked (default: your login name)")
    erase.add_argument("--request-id", help="the data subject request this carries out")
    erase.set_defaults(func=_command(run_erase))
    reapply = actions.add_parser("reapply-erasures",
                                 help="after a restore: shred again what the log names")
    reapply.set_defaults(func=_command(run_reapply))


def _command(run):
    def command(args) -> int:
        try:
            return run(args, AdminApi())
        except (ApiError, httpx.HTTPError, OSError, ValueError) as error:
            print(f"tessera privacy: {error}", file=sys.stderr)
            return 1
    return command
