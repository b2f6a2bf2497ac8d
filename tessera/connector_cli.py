"""``tessera connector …`` and ``tessera dlq …``: the connector kit and the dead-letter store.

    tessera connector list                        installed connectors and what they do
    tessera connector test NAME [--source]        the conformance kit, against NAME's fake
    tessera connector new NAME [--dir DIR]        a package whose conformance tests pass
    tessera connector dry-run DEST --trait k=v …  what DEST would be sent (nothing is sent)
    tessera dlq list [DEST] | show DEST ID | replay DEST (ID | --all)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import httpx


def _print_json(value) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False, default=str))


# ---- connector -------------------------------------------------------------------------
def cmd_connector_list(args) -> int:
    from connectors.sdk.registry import connector_class, known_connectors

    for kind in known_connectors():
        cls = connector_class(kind)
        capabilities = ", ".join(sorted(str(c) for c in getattr(cls, "capabilities", ())))
        print(f"{kind:24} batch {getattr(cls, 'batch_size', '-'):>6}  {capabilities}")
    return 0


def _source_class(name: str) -> type:
    from importlib.metadata import entry_points

    found = {ep.name: ep for ep in entry_points(group="tessera.sources")}
    if name not in found:
        raise SystemExit(f"name: unknown source {name!r} (known: {', '.join(sorted(found))})")
    return found[name].load()


def cmd_connector_test(args) -> int:
    from connectors.sdk.conformance import run_checks
    from connectors.sdk.source_conformance import run_source_checks

    results = run_source_checks(_source_class(args.name)) if args.source \
        else run_checks(args.name)
    for name, outcome, detail in results:
        print(f"{outcome.upper():5} {name}" + (f": {detail}" if detail else ""))
    failed = sum(outcome == "fail" for _, outcome, _ in results)
    passed = sum(outcome == "pass" for _, outcome, _ in results)
    print(f"{args.name}: {passed} passed, {failed} failed, "
          f"{len(results) - passed - failed} skipped")
    return 1 if failed else 0


def cmd_connector_new(args) -> int:
    from connectors.sdk.scaffold import new_connector

    root = new_connector(args.name, Path(args.dir))
    print(f"created {root}\n  cd {root} && pip install -e . && pytest   "
          f"(or: tessera connector test {args.name})")
    return 0


def _traits(pairs: list[str]) -> dict[str, str]:
    traits = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--trait: {pair!r} is not of the form name=value")
        traits[key] = value
    return traits


def cmd_connector_dry_run(args) -> int:
    from services.activation.application import ActivationApplication
    from shared.config import Settings

    settings = Settings.from_env()
    app = ActivationApplication(settings)
    try:
        if args.destination not in app.destinations:
            raise SystemExit(f"destination: {args.destination!r} is not in "
                             f"{settings.destinations_file} "
                             f"(known: {', '.join(sorted(app.destinations)) or 'none'})")
        item = {"idempotency_key": "dry-run", "profile_id": args.profile,
                "segment": args.segment, "action": args.action,
                "traits": _traits(args.trait), "occurred_at": "dry-run"}
        _print_json(app.dry_run(args.destination, [item]))
    finally:
        app.close()
    return 0


# ---- dlq -------------------------------------------------------------------------------
def _admin() -> httpx.Client:
    token = os.environ.get("TESSERA_ADMIN_TOKEN")
    if not token:
        raise SystemExit("TESSERA_ADMIN_TOKEN is not set: the admin API needs it")
    base = os.environ.get("TESSERA_API_URL") or "http://{}:{}".format(
        os.environ.get("TESSERA_HTTP_HOST", "127.0.0.1"),
        os.environ.get("TESSERA_HTTP_PORT", "8000"))
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"},
                        timeout=60)


def _answer(response: httpx.Response):
    if response.status_code >= 400:
        raise SystemExit(f"{response.request.method} {response.request.url.path}: "
                         f"HTTP {response.status_code}: {response.text[:300]}")
    return response.json()


def _letters(client: httpx.Client, destination: str) -> list[dict]:
    return _answer(client.get(f"/v1/destinations/{destination}/dead-letters"))["dead_letters"]


def cmd_dlq_list(args) -> int:
    with _admin() as client:
        names = [args.destination] if args.destination else [
            d["name"] for d in _answer(client.get("/v1/destinations"))["destinations"]]
        for name in names:
            for letter in _letters(client, name):
                print(f"{name}\t{letter['id']}\t{letter['at']}\t{len(letter['items'])} items"
                      f"\t{letter['error'][:120]}")
    return 0


def cmd_dlq_show(args) -> int:
    with _admin() as client:
        for letter in _letters(client, args.destination):
            if letter["id"] == args.letter:
                _print_json(letter)
                return 0
    raise SystemExit(f"no dead letter {args.letter!r} for {args.destination!r}")


def cmd_dlq_replay(args) -> int:
    with _admin() as client:
        ids = [letter["id"] for letter in _letters(client, args.destination)] if args.all \
            else [args.letter]
        for letter_id in ids:
            outcome = _answer(client.post(
                f"/v1/destinations/{args.destination}/dead-letters/{letter_id}/replay"))
            print(f"{letter_id}: {outcome}")
    return 0


def add_commands(commands) -> None:
    """Add ``connector`` and ``dlq`` to the ``tessera`` command's subparsers."""
    connector = commands.add_parser("connector", help="the connector SDK's tools")
    sub = connector.add_subparsers(dest="connector_command", required=True)
    sub.add_parser("list", help="installed connectors").set_defaults(func=cmd_connector_list)
    test = sub.add_parser("test", help="run the conformance kit against a connector")
    test.add_argument("name")
    test.add_argument("--source", action="store_true",
                      help="test the source of that name (tessera.sources) with the source kit")
    test.set_defaults(func=cmd_connector_test)
    new = sub.add_parser("new", help="generate a connector package")
    new.add_argument("name")
    new.add_argument("--dir", default=".")
    new.set_defaults(func=cmd_connector_new)
    dry = sub.add_parser("dry-run", help="show what a destination would be sent")
    dry.add_argument("destination")
    dry.add_argument("--trait", action="append", default=[], metavar="NAME=VALUE")
    dry.add_argument("--action", default="entered",
                     choices=["entered", "exited", "profile", "erased"])
    dry.add_argument("--segment", default="dry_run")
    dry.add_argument("--profile", default="00000000-0000-0000-0000-000000000000")
    dry.set_defaults(func=cmd_connector_dry_run)

    dlq = commands.add_parser("dlq", help="the dead-letter store (through the admin API)")
    sub = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = sub.add_parser("list", help="dead letters, of one destination or all")
    listing.add_argument("destination", nargs="?")
    listing.set_defaults(func=cmd_dlq_list)
    show = sub.add_parser("show", help="one dead letter, with its items")
    show.add_argument("destination")
    show.add_argument("letter")
    show.set_defaults(func=cmd_dlq_show)
    replay = sub.add_parser("replay", help="send again, deciding consent again")
    replay.add_argument("destination")
    target = replay.add_mutually_exclusive_group(required=True)
    target.add_argument("letter", nargs="?")
    target.add_argument("--all", action="store_true")
    replay.set_defaults(func=cmd_dlq_replay)


if __name__ == "__main__":
    sys.exit("use the tessera command")
