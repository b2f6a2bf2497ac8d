"""``tessera import`` (a CSV file) and ``tessera pull`` (a CRM): records through the gateway.

``tessera import FILE --source NAME --map column=trait …``

Rows go to ``POST /v1/batch`` with the source's write key, exactly as tracked events
do, so identity, consent, contacts and segments treat them alike. The import streams
the file, shows its progress on stderr, writes rejected rows with their reason to
``FILE.rejected.csv``, and records after each acknowledged batch how far it got in
``FILE.import-state.json``: ``--resume`` continues from there (rows sent twice are
recognised by their messageId and kept once).

``tessera pull hubspot --source crm --secret-env access_token=TESSERA_HUBSPOT_TOKEN``
sends what changed since the last pull (its cursor is kept under
``TESSERA_DATA_DIR/pulls/``), skipping Tessera's own writes coming back. A credential
the vendor rotates (Salesforce's refresh token) is kept encrypted in activation's store,
seeded from ``--secret-env``, so the next pull uses the rotated one.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from connectors.base import parse_retry_after
from connectors.sources.csv_file import CsvSource, parse_mapping


class GatewayBusy(Exception):
    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class ImportReport:
    rows: int = 0
    sent: int = 0
    rejected: int = 0
    batches: int = 0


def _state_path(path: Path) -> Path:
    return path.with_name(path.name + ".import-state.json")


def _rejects_path(path: Path) -> Path:
    return path.with_name(path.name + ".rejected.csv")


def _fingerprint(path: Path) -> dict[str, float]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime": stat.st_mtime}


def _resume_cursor(path: Path) -> str | None:
    state_file = _state_path(path)
    if not state_file.exists():
        return None
    state = json.loads(state_file.read_text())
    if state.get("file") != _fingerprint(path):
        raise SystemExit(f"--resume: {path} changed since the interrupted import "
                         f"(delete {state_file} to start over)")
    return state["rows_done"]


def _save_cursor(path: Path, rows_done: str) -> None:
    state_file = _state_path(path)
    temporary = state_file.with_suffix(".tmp")
    temporary.write_text(json.dumps({"rows_done": rows_done, "file": _fingerprint(path)}))
    os.replace(temporary, state_file)  # atomic: a crash leaves the old state or the new


def _post(client: httpx.Client, calls: list[dict]) -> None:
    """One batch, retried while the gateway is busy or unreachable; a 4xx is final."""

    def attempt() -> None:
        try:
            answer = client.post("/v1/batch", json={
                "batch": calls, "sentAt": datetime.now(UTC).isoformat()})
        except httpx.TransportError as error:
            raise GatewayBusy(str(error), None) from error
        if answer.status_code == 429 or answer.status_code >= 500:
            raise GatewayBusy(f"HTTP {answer.status_code}",
                              parse_retry_after(answer.headers.get("Retry-After")))
        if answer.status_code != 200:
            raise SystemExit(f"the gateway refused a batch: HTTP {answer.status_code}: "
                             f"{answer.text[:300]}")

    jitter = wait_random_exponential(multiplier=0.5, max=30)

    def wait(state) -> float:
        exc = state.outcome.exception()
        return max(jitter(state), getattr(exc, "retry_after", None) or 0.0)

    Retrying(stop=stop_after_attempt(8), wait=wait, reraise=True,
             retry=retry_if_exception(lambda e: isinstance(e, GatewayBusy)))(attempt)


def run_import(source: CsvSource, client: httpx.Client, *, resume: bool,
               progress: Callable[[ImportReport, int], None] | None = None) -> ImportReport:
    path = Path(source.config["path"])
    source.check()
    cursor = _resume_cursor(path) if resume else None
    if not resume:
        _state_path(path).unlink(missing_ok=True)
    total = max(sum(1 for _ in path.open("rb")) - 1, 0)
    report = ImportReport(rows=int(cursor or 0))
    with _rejects_path(path).open("a" if resume else "w", newline="") as rejects_file:
        rejects = csv.writer(rejects_file)
        if not resume or rejects_file.tell() == 0:
            rejects.writerow(["row", "reason", "record"])
        for page in source.pull(cursor):
            if page.calls:
                _post(client, page.calls)
                report.batches += 1
            for rejected in page.rejected:
                rejects.writerow([rejected["row"], rejected["reason"],
                                  json.dumps(rejected["record"], ensure_ascii=False)])
            rejects_file.flush()
            _save_cursor(path, page.cursor)
            report.rows = int(page.cursor)
            report.sent += len(page.calls)
            report.rejected += len(page.rejected)
            if progress:
                progress(report, total)
    return report


def run_pull(source, client: httpx.Client, cursor_file: Path) -> ImportReport:
    """One incremental pull: every page through the gateway, the cursor saved after each."""
    cursor = json.loads(cursor_file.read_text())["cursor"] if cursor_file.exists() else None
    report = ImportReport()
    cursor_file.parent.mkdir(parents=True, exist_ok=True)
    for page in source.pull(cursor):
        if page.calls:
            _post(client, page.calls)
            report.batches += 1
        report.sent += len(page.calls)
        temporary = cursor_file.with_suffix(".tmp")
        temporary.write_text(json.dumps({"cursor": page.cursor}))
        os.replace(temporary, cursor_file)
    return report


@contextlib.contextmanager
def lasting_credentials(source, config: dict, owner: str) -> Iterator[None]:
    """Give a source whose vendor rotates credentials (``runtime_credentials``) the
    encrypted store of activation's (services.activation.credentials), seeded from the
    config (the environment): a token rotated during this pull is the one the next pull
    uses. Sources without such fields, or without a seed, need no store (nor key)."""
    from services.activation.credentials import credential_vault, runtime_seeds
    from shared.config import Settings

    seeds = runtime_seeds(source, config)
    with contextlib.ExitStack() as stack:
        if seeds:
            try:
                vault = stack.enter_context(credential_vault(Settings.from_env()))
            except ValueError as error:
                raise SystemExit(f"credentials: {error}") from None
            source.credentials = vault.for_destination(owner, seeds)
        yield


def cmd_pull(args) -> int:
    from importlib.metadata import entry_points

    found = {ep.name: ep for ep in entry_points(group="tessera.sources")}
    if args.kind not in found:
        raise SystemExit(f"kind: unknown source {args.kind!r} (known: {', '.join(sorted(found))})")
    cls = found[args.kind].load()
    config = json.loads(args.config)
    for pair in args.secret_env:
        field, _, variable = pair.partition("=")
        if not os.environ.get(variable):
            raise SystemExit(f"--secret-env: {variable} (for {field}) is not set")
        config[field] = os.environ[variable]
    try:
        config = cls.config_schema().load(config)
        source = cls(**config)
    except ValueError as error:
        raise SystemExit(str(getattr(error, "messages", error))) from None
    data_dir = Path(os.environ.get("TESSERA_DATA_DIR", "data"))
    cursor_file = data_dir / "pulls" / f"{args.kind}-{args.source}.json"
    # The store first: checking the credentials may already rotate a refresh token.
    with lasting_credentials(source, config, f"source:{args.kind}:{args.source}"):
        try:
            source.check()
        except ValueError as error:
            raise SystemExit(str(getattr(error, "messages", error))) from None
        with httpx.Client(base_url=_api_url(), auth=(_write_key(args.source), ""),
                          timeout=60) as client:
            report = run_pull(source, client, cursor_file)
    source.close()
    skipped = getattr(source, "skipped_own_writes", 0)
    print(f"pulled {report.sent:,} records in {report.batches} batches; skipped {skipped:,} "
          f"of our own writes; cursor in {cursor_file}")
    return 0


def _api_url() -> str:
    return os.environ.get("TESSERA_API_URL") or "http://{}:{}".format(
        os.environ.get("TESSERA_HTTP_HOST", "127.0.0.1"),
        os.environ.get("TESSERA_HTTP_PORT", "8000"))


def _write_key(source: str) -> str:
    if os.environ.get("TESSERA_WRITE_KEY"):
        return os.environ["TESSERA_WRITE_KEY"]
    for pair in filter(None, os.environ.get("TESSERA_WRITE_KEYS", "").split(",")):
        name, _, key = pair.partition("=")
        if name.strip() == source:
            return key.strip()
    raise SystemExit(f"--source: no write key for {source!r} (set TESSERA_WRITE_KEY, or "
                     f"TESSERA_WRITE_KEYS={source}=<key>)")


def cmd_import(args) -> int:
    try:
        mapping = parse_mapping(args.map)
        source = CsvSource(**CsvSource.config_schema().load({
            "path": args.file, "source": args.source, "mapping": mapping,
            "user_id_column": args.user_id_column, "page_size": args.batch}))
    except ValueError as error:
        raise SystemExit(str(error)) from None
    base = _api_url()
    started = time.monotonic()

    def progress(report: ImportReport, total: int) -> None:
        rate = report.rows / max(time.monotonic() - started, 1e-6)
        share = 100 * report.rows / total if total else 100
        print(f"\r{report.rows:,}/{total:,} rows ({share:.0f}%), {report.rejected:,} "
              f"rejected, {rate:,.0f} rows/s", end="", file=sys.stderr, flush=True)

    with httpx.Client(base_url=base, auth=(_write_key(args.source), ""), timeout=60) as client:
        try:
            report = run_import(source, client, resume=args.resume, progress=progress)
        except ValueError as error:
            raise SystemExit(str(error)) from None
    print(file=sys.stderr)
    print(f"imported {report.sent:,} rows in {report.batches} batches, rejected "
          f"{report.rejected:,} (see {_rejects_path(Path(args.file))}; the gateway's own "
          f"refusals: GET /v1/rejections?source={args.source})")
    return 0


def add_commands(commands) -> None:
    command = commands.add_parser("import", help="import a CSV file through the gateway")
    command.add_argument("file")
    command.add_argument("--source", required=True, help="tracking source (its write key)")
    command.add_argument("--map", action="append", required=True, metavar="COLUMN=TRAIT")
    command.add_argument("--user-id-column", help="column holding the userId")
    command.add_argument("--batch", type=int, default=500, help="rows per request")
    command.add_argument("--resume", action="store_true",
                         help="continue an interrupted import of the same file")
    command.set_defaults(func=cmd_import)

    pull = commands.add_parser("pull", help="pull what changed in a CRM since the last pull")
    pull.add_argument("kind", help="source connector (tessera.sources entry point)")
    pull.add_argument("--source", required=True, help="tracking source (its write key)")
    pull.add_argument("--config", default="{}", help="the source's config, as JSON")
    pull.add_argument("--secret-env", action="append", default=[], metavar="FIELD=VARIABLE",
                      help="take a secret config field from an environment variable")
    pull.set_defaults(func=cmd_pull)
