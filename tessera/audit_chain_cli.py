"""`tessera audit …`: check that no service's history was tampered with (docs/audit.md).

    tessera audit verify [--service S …] [--anchors FILE] [--strict]
    tessera audit seal [--service S …]       seal what is stored now (the services do it
                                             every TESSERA_AUDIT_SEAL_SECONDS)
    tessera audit export [--output FILE]     the newest signed checkpoint of each service,
                                             to keep elsewhere and pass to --anchors later
    tessera audit keygen --output FILE       a new signing key (and its public key, printed)

They read the stores directly (TESSERA_DATABASE, TESSERA_DATA_DIR, TESSERA_POSTGRES_*):
no service needs to be running.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from shared.config import Settings


def audit_subcommands(commands) -> argparse._SubParsersAction:
    """The subcommands of `tessera audit`, whoever created it: other modules (the data
    subject requests' `audit subject`, `views`, …) add theirs to the same parser, and
    argparse refuses a second parser of one name."""
    audit = commands.choices.get("audit")
    if audit is None:
        audit = commands.add_parser(
            "audit", help="verify every service's tamper-evident history, and more",
            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        audit.add_subparsers(dest="audit_command", required=True)
    return next(action for action in audit._actions
                if isinstance(action, argparse._SubParsersAction))


def add_commands(commands) -> None:
    audit = audit_subcommands(commands)
    verify = audit.add_parser("verify", help="recompute every service's chain from its "
                              "store and check every signed checkpoint")
    verify.add_argument("--service", action="append", dest="services",
                        help="only this service (repeatable; default: all six)")
    verify.add_argument("--anchors", type=Path,
                        help="checkpoints exported earlier (`tessera audit export`), kept "
                             "outside: proves that no tail was cut since")
    verify.add_argument("--strict", action="store_true",
                        help="also fail if events stored after the latest checkpoint exist")
    verify.set_defaults(func=cmd_verify)
    seal = audit.add_parser("seal", help="chain and sign what is stored now")
    seal.add_argument("--service", action="append", dest="services")
    seal.set_defaults(func=cmd_seal)
    export = audit.add_parser("export", help="print the newest signed checkpoints (JSON)")
    export.add_argument("--output", type=Path, help="write them here instead of stdout")
    export.set_defaults(func=cmd_export)
    keygen = audit.add_parser("keygen", help="a new Ed25519 signing key")
    keygen.add_argument("--output", type=Path, required=True,
                        help="where to write the private key (PEM, mode 0600); it must not exist")
    keygen.set_defaults(func=cmd_keygen)


def _services(chosen: list[str] | None) -> list[str]:
    from shared.audit import SERVICES

    unknown = sorted(set(chosen or ()) - set(SERVICES))
    if unknown:
        raise SystemExit(f"--service: unknown service(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(SERVICES)}")
    return list(chosen or SERVICES)


def _where(settings: Settings) -> str:
    if settings.database == "postgres":
        return f"PostgreSQL database {settings.postgres_dbname} on {settings.postgres_host}"
    return f"SQLite files in {settings.data_dir}"


def cmd_verify(args) -> int:
    from shared.audit import (
        Checkpoint,
        ServiceReport,
        trusted_public_keys,
        verify_service,
    )

    settings = Settings.from_env()
    try:
        trusted, source = trusted_public_keys(settings)
        anchors = ([Checkpoint.from_json(a) for a in json.loads(args.anchors.read_text())]
                   if args.anchors else [])
    except (ValueError, OSError, KeyError) as error:
        print(f"tessera audit verify: {error}", file=sys.stderr)
        return 2
    print(f"tessera audit verify: {_where(settings)}; trusted keys "
          f"{', '.join(sorted(trusted))} from {source}")
    started, total, failed = time.perf_counter(), 0, []
    for service in _services(args.services):
        try:
            report = verify_service(settings, service, trusted, anchors)
        except Exception as error:  # unreadable (unreachable, corrupt): not verified
            report = ServiceReport(service, missing=f"could not be read: {error}")
        total += report.events
        ok = report.ok and not (args.strict and report.unsealed)
        if not ok:
            failed.append(service)
        print(_summary(report, ok))
        for finding in report.findings:
            print(f"    {finding.kind}: {finding.message}")
        if report.unlisted:
            print(f"    … and {report.unlisted} more finding(s) after these")
        if args.strict and report.unsealed:
            print(f"    unsealed: {report.unsealed} events stored after the latest checkpoint")
    elapsed = time.perf_counter() - started
    rate = f"{total / elapsed:,.0f} events/s" if elapsed > 0 else "-"
    verdict = f"FAILED: {', '.join(failed)}" if failed else "OK"
    print(f"{total} events verified in {elapsed:.2f}s ({rate}): {verdict}")
    return 1 if failed else 0


def _summary(report, ok: bool) -> str:
    if report.missing:
        return f"  {report.service:<11} FAIL  {report.missing}"
    unsealed = f", {report.unsealed} newer than the latest checkpoint" if report.unsealed else ""
    return (f"  {report.service:<11} {'OK  ' if ok else 'FAIL'}  {report.events} events, "
            f"{report.checkpoints} signed checkpoints{unsealed}")


def cmd_seal(args) -> int:
    from shared.audit import Sealer, configured_signing_key, open_audit_store

    settings = Settings.from_env()
    key = configured_signing_key(settings)
    if key is None:
        print("tessera audit seal: set TESSERA_AUDIT_SIGNING_KEY (or ..._FILE)",
              file=sys.stderr)
        return 2
    for service in _services(args.services):
        store = open_audit_store(settings, service, create=True)
        try:
            print(f"  {service:<11} {Sealer(store, key).seal()} events sealed")
        finally:
            store.close()
    return 0


def cmd_export(args) -> int:
    from shared.audit import latest_checkpoints

    anchors = json.dumps([c.to_json() for c in latest_checkpoints(Settings.from_env())],
                         indent=2)
    if args.output:
        args.output.write_text(anchors + "\n")
    else:
        print(anchors)
    return 0


def cmd_keygen(args) -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from shared.audit import key_id, public_key_text, signing_key_pem

    key = Ed25519PrivateKey.generate()
    try:
        descriptor = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"tessera audit keygen: {args.output} exists; not overwriting a key",
              file=sys.stderr)
        return 2
    with os.fdopen(descriptor, "wb") as file:
        file.write(signing_key_pem(key))
    print(f"signing key written to {args.output} (key id {key_id(key.public_key())})")
    print(f"public key, for TESSERA_AUDIT_PUBLIC_KEYS: {public_key_text(key.public_key())}")
    return 0
