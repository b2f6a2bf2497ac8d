"""The console's audit verification: incremental by default, full on demand.

Recomputing every chain on each page view reads every service's whole store (seconds at
100,000 profiles). Each run here remembers, per service, the last signed checkpoint up to
which the chain was found intact (`ServiceReport.verified_to`); the next run takes the
chain up again from that checkpoint's head and hashes only what was stored after it
(shared.audit.verify_store's `start`). The point is kept in the gateway's read model, not
in the store it vouches for (verification opens that read-only), and is used only if its
signature still holds under a trusted key.

What an incremental run cannot see is tampering with history verified before: only a full
run (every event from the first, as `tessera audit verify`) finds that. So each service's
row also says when the last full run was and what it found, and the page says both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.audit import SERVICES, Checkpoint, ServiceReport, verify_service
from shared.config import Settings
from shared.readmodel import ReadModel

TABLE = "audit_verified"


@dataclass(frozen=True)
class Remembered:
    point: Checkpoint | None  # verified up to here (None: never, or a run found problems)
    full_at: str | None  # when the last full run ended
    full_ok: bool | None
    full_problem: str | None


class AuditRuns:
    def __init__(self, read_model: ReadModel):
        self.rm = read_model
        self.table = read_model.table(TABLE)
        read_model.create(
            f"CREATE TABLE IF NOT EXISTS {self.table} (service TEXT PRIMARY KEY, "
            "checkpoint TEXT, verified_at TEXT, full_at TEXT, full_ok INTEGER, "
            "full_problem TEXT)")

    def remembered(self, service: str) -> Remembered:
        rows = self.rm.query(f"SELECT checkpoint, full_at, full_ok, full_problem FROM "
                             f"{self.table} WHERE service = %s", [service])
        if not rows:
            return Remembered(None, None, None, None)
        row = rows[0]
        point = Checkpoint.from_json(json.loads(row["checkpoint"])) if row["checkpoint"] \
            else None
        return Remembered(point, row["full_at"],
                          None if row["full_ok"] is None else bool(row["full_ok"]),
                          row["full_problem"])

    def verify(self, settings: Settings, trusted: dict, full: bool = False
               ) -> list[dict[str, Any]]:
        """Each service's chain: from its remembered point, or from the first event if
        `full` or nothing is remembered. Returns one summary per service."""
        summaries = []
        for service in SERVICES:
            before = self.remembered(service)
            start = None if full else before.point
            report = verify_service(settings, service, trusted, start=start)
            self._record(service, before, report, full=report.started_from is None)
            summaries.append(_summary(report, self.remembered(service)))
        return summaries

    def _record(self, service: str, before: Remembered, report: ServiceReport,
                full: bool) -> None:
        """A run that found nothing wrong moves the point on (or keeps it, if no new
        checkpoint came); one that found a problem forgets it: the next run is full."""
        kept = None if full else before.point
        point = (report.verified_to or kept) if report.ok else None
        now = datetime.now(UTC).isoformat(timespec="seconds")
        full_at, full_ok, full_problem = before.full_at, before.full_ok, before.full_problem
        if full and report.missing is None:
            full_at, full_ok, full_problem = now, report.ok, _first_problem(report)
        self.rm.execute(
            f"INSERT INTO {self.table} (service, checkpoint, verified_at, full_at, full_ok, "
            "full_problem) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (service) DO UPDATE "
            "SET checkpoint = excluded.checkpoint, verified_at = excluded.verified_at, "
            "full_at = excluded.full_at, full_ok = excluded.full_ok, "
            "full_problem = excluded.full_problem",
            [service, json.dumps(point.to_json()) if point else None, now, full_at,
             None if full_ok is None else int(full_ok), full_problem])


def _first_problem(report: ServiceReport) -> str | None:
    return report.findings[0].message if report.findings else None


def _summary(report: ServiceReport, now: Remembered) -> dict[str, Any]:
    started = report.started_from
    return {"service": report.service, "ok": report.ok, "events": report.events,
            "hashed": report.hashed, "missing": report.missing,
            "first_problem": _first_problem(report),
            "full": started is None,
            "from_notification": started.notification_id if started else None,
            "from_sealed_at": started.created_at if started else None,
            "unsealed": report.unsealed,
            "last_full_at": now.full_at, "last_full_ok": now.full_ok,
            "last_full_problem": now.full_problem}
