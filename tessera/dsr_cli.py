"""`tessera dsr …`: data subject requests through the admin API (TESSERA_URL,
TESSERA_ADMIN_TOKEN), as a compliance officer works them.

    tessera dsr file KIND --regulation GDPR|CCPA --identifier email:ada@example.com …
                     [--received-at ISO] [--trait key=value …] [--purpose P …]
                     [--lift] [--reason TEXT] [--note TEXT]
    tessera dsr list [--status S] [--kind K]       every request, with its due date
    tessera dsr overdue                            open requests, overdue first, by due date
    tessera dsr show ID                            the request and each step on it
    tessera dsr verify ID --method M [--evidence TEXT]
    tessera dsr extend ID --notice "what the requester was told, and why"
    tessera dsr reject ID --reason TEXT
    tessera dsr complete ID [--out FILE]           carry it out (an access export to FILE)

KIND: access, portability, rectification, erasure, objection, restriction.
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import Any

import httpx

from tessera.contacts_cli import _pairs
from tessera.segments_cli import AdminApi, ApiError, with_api

KINDS = ("access", "portability", "rectification", "erasure", "objection", "restriction")
METHODS = ("account_login", "email_confirmation", "identity_document", "knowledge_questions",
           "authorised_agent", "in_person")


class ActorApi(AdminApi):
    """The admin API, naming the person at the keyboard (recorded on requests and views)."""

    actor = getpass.getuser()

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        response = httpx.request(method, f"{self.url}{path}", json=body, params=params or None,
                                 headers={"Authorization": f"Bearer {self.token}",
                                          "X-Tessera-Actor": self.actor}, timeout=120)
        answer = response.json() if response.content and response.headers.get(
            "content-type", "").startswith("application/json") else response.text
        if response.status_code >= 400:
            message = answer.get("message") if isinstance(answer, dict) else answer
            raise ApiError(message or f"HTTP {response.status_code}")
        return answer


def with_actor(run):
    """`with_api`, with the API naming the --as person."""
    def command(args) -> int:
        ActorApi.actor = args.actor
        return with_api(lambda a, _api: run(a, ActorApi()))(args)
    return command


def add_commands(commands) -> None:
    dsr = commands.add_parser("dsr", help="data subject requests (admin API)")
    dsr.add_argument("action", choices=["file", "list", "overdue", "show", "verify", "extend",
                                        "reject", "complete"])
    dsr.add_argument("target", nargs="?", help="a request kind (file) or a request id")
    dsr.add_argument("--regulation", choices=["GDPR", "CCPA"])
    dsr.add_argument("--identifier", action="append", default=[], help="type:value")
    dsr.add_argument("--received-at")
    dsr.add_argument("--trait", action="append", default=[], help="key=value (rectification)")
    dsr.add_argument("--purpose", action="append", default=[], help="objection's purposes")
    dsr.add_argument("--lift", action="store_true", help="restriction: lift it instead")
    dsr.add_argument("--reason", default="")
    dsr.add_argument("--note", default="")
    dsr.add_argument("--method", choices=METHODS)
    dsr.add_argument("--evidence", default="")
    dsr.add_argument("--notice", default="")
    dsr.add_argument("--status")
    dsr.add_argument("--kind", choices=KINDS)
    dsr.add_argument("--out", help="where an access export goes (default: stdout)")
    dsr.add_argument("--as", dest="actor", default=getpass.getuser(),
                     help="who is acting (recorded); default: your login")
    dsr.set_defaults(func=with_actor(run_dsr))


def run_dsr(args, api: AdminApi, out=sys.stdout) -> int:
    if args.action in ("list", "overdue"):
        path = "/v1/dsr/overdue" if args.action == "overdue" else "/v1/dsr"
        params = {k: v for k, v in (("status", args.status), ("kind", args.kind)) if v}
        requests = api.call("GET", path, **params)["requests"]
        for request in requests:
            print(request_line(request), file=out)
        print(f"{len(requests)} requests", file=out)
        return 0
    if not args.target:
        wanted = "a kind" if args.action == "file" else "a request id"
        raise ValueError(f"dsr {args.action} needs {wanted}")
    if args.action == "file":
        show(api.call("POST", "/v1/dsr", _filing(args)), out)
    elif args.action == "show":
        show(api.call("GET", f"/v1/dsr/{args.target}"), out)
    elif args.action == "verify":
        if not args.method:
            raise ValueError(f"dsr verify needs --method, one of {list(METHODS)}")
        show(api.call("POST", f"/v1/dsr/{args.target}/verify",
                      {"method": args.method, "evidence": args.evidence}), out)
    elif args.action == "extend":
        show(api.call("POST", f"/v1/dsr/{args.target}/extend", {"notice": args.notice}), out)
    elif args.action == "reject":
        show(api.call("POST", f"/v1/dsr/{args.target}/reject", {"reason": args.reason}), out)
    elif args.action == "complete":
        answer = api.call("POST", f"/v1/dsr/{args.target}/complete")
        show(answer["request"], out)
        if answer["request"]["kind"] in ("access", "portability"):
            text = json.dumps(answer["result"], indent=2, sort_keys=True, default=str)
            if args.out:
                Path(args.out).write_text(text + "\n")
                print(f"export written to {args.out}", file=out)
            else:
                print(text, file=out)
    return 0


def _filing(args) -> dict[str, Any]:
    if args.target not in KINDS:
        raise ValueError(f"kind: must be one of {list(KINDS)}")
    if not args.regulation:
        raise ValueError("dsr file needs --regulation GDPR or CCPA")
    details: dict[str, Any] = {}
    if args.target == "rectification":
        details["traits"] = _pairs(args.trait)
    elif args.target == "objection" and args.purpose:
        details["purposes"] = args.purpose
    elif args.target == "restriction":
        details = {"restricted": not args.lift, "reason": args.reason}
    body = {"kind": args.target, "regulation": args.regulation,
            "identifiers": args.identifier, "details": details, "note": args.note}
    if args.received_at:
        body["received_at"] = args.received_at
    return body


def request_line(request: dict[str, Any]) -> str:
    late = " OVERDUE" if request.get("overdue") else ""
    left = f" ({request['days_left']} days left)" if "days_left" in request else ""
    who = ", ".join(f"{t}:{v}" for t, v in request["identifiers"])
    return (f"{request['request_id']}  {request['kind']:<13} {request['regulation']:<4} "
            f"{request['status']:<9} due {request['due_at']}{left}{late}  {who}")


def show(request: dict[str, Any], out) -> None:
    print(request_line(request), file=out)
    for step in request["steps"]:
        extra = "".join(f" {k}={v}" for k, v in step.items() if k not in ("step", "by", "at"))
        print(f"  {step['at']}  {step['step']} by {step['by']}{extra}", file=out)
    if request.get("verification"):
        v = request["verification"]
        print(f"  identity verified: {v['method']} by {v['by']} at {v['at']}"
              + (f" ({v['evidence']})" if v.get("evidence") else ""), file=out)
    if request.get("extension"):
        print(f"  extended: {request['extension']['notice']}", file=out)
    if request.get("outcome"):
        print(f"  outcome: {json.dumps(request['outcome'], default=str)}", file=out)
