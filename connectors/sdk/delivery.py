"""The platform's half of a delivery: operations, batches, rate limits, retries.

Activation hands this module the items consent allowed; it turns each into the
operations the destination's sync modes call for, cuts them into batches of the
connector's ``batch_size``, keeps to the destination's rate limit, retries each batch
with backoff and jitter (``Retry-After`` honoured, only what the connector marks
retryable), and reports what was delivered and which batches failed for good (to be
dead-lettered by the caller).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from connectors.base import DeliveryError, DeliveryItem, SendResult
from connectors.retry import call_with_retries
from connectors.sdk.destination import Capability

__all__ = [
    "SYNC_MODES",
    "Batch",
    "CircuitBreaker",
    "DeliveryReport",
    "RateLimiter",
    "as_destination",
    "default_sync",
    "deliver_batches",
    "operation_of",
    "plan_batches",
    "validate_sync",
]

ADD_ON_ENTRY = "add_on_entry"
REMOVE_ON_EXIT = "remove_on_exit"
UPSERT_TRAITS = "upsert_traits"
MESSAGE_ON_ENTRY = "message_on_entry"
MIRROR = "mirror"  # the audience follows the segment: add on entry and remove on exit
SYNC_MODES = frozenset({ADD_ON_ENTRY, REMOVE_ON_EXIT, UPSERT_TRAITS, MESSAGE_ON_ENTRY, MIRROR})


def validate_sync(modes: Iterable[str]) -> frozenset[str]:
    modes = frozenset(modes)
    unknown = sorted(modes - SYNC_MODES)
    if unknown:
        raise ValueError(f"sync: unknown mode(s) {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(SYNC_MODES))})")
    return frozenset({ADD_ON_ENTRY, REMOVE_ON_EXIT} | (modes - {MIRROR})) if MIRROR in modes \
        else modes


def default_sync(capabilities: frozenset[Capability]) -> frozenset[str]:
    """Audiences mirror the segment; a CRM gets the traits upserted; a mailer sends."""
    if Capability.ADD_TO_AUDIENCE in capabilities:
        return validate_sync({MIRROR})
    if Capability.UPSERT_PROFILE in capabilities:
        return frozenset({UPSERT_TRAITS})
    if Capability.SEND_MESSAGE in capabilities:
        return frozenset({MESSAGE_ON_ENTRY})
    return frozenset()


def operations_for(action: str, sync: frozenset[str]) -> list[Capability]:
    """What one membership change asks of a destination under its sync modes."""
    operations = []
    if action == "entered" and ADD_ON_ENTRY in sync:
        operations.append(Capability.ADD_TO_AUDIENCE)
    if action in ("entered", "profile") and UPSERT_TRAITS in sync:
        operations.append(Capability.UPSERT_PROFILE)
    if action == "exited" and REMOVE_ON_EXIT in sync:
        operations.append(Capability.REMOVE_FROM_AUDIENCE)
    if action == "erased":
        operations.append(Capability.DELETE_SUBJECT)
    if action in ("merged", "split"):  # identity changed who this is: whatever the sync
        operations.append(Capability.MERGE_PROFILES)
    if action in ("entered", "message") and MESSAGE_ON_ENTRY in sync:
        operations.append(Capability.SEND_MESSAGE)
    return operations


def operation_of(action: str, capabilities: frozenset[Capability]) -> Capability:
    """The one operation an action means when no sync mode is configured."""
    sync = default_sync(capabilities) or validate_sync({MIRROR})
    found = [op for op in operations_for(action, sync) if op in capabilities]
    return found[0] if found else Capability.UPSERT_PROFILE


@dataclass(frozen=True)
class Batch:
    operation: Capability
    items: tuple[DeliveryItem, ...]

    @property
    def keys(self) -> list[str]:
        return [item.idempotency_key for item in self.items]


def plan_batches(items: list[DeliveryItem], sync: frozenset[str],
                 capabilities: frozenset[Capability], batch_size: int,
                 operations: dict[str, Capability] | None = None) -> list[Batch]:
    """Group items by operation (first seen first, order kept), then cut batches.

    ``operations`` pins the operation of some items by key (a dead letter's replay
    repeats exactly the operation that failed). Operations the connector does not
    declare are skipped: there is nothing to send for them.
    """
    grouped: dict[Capability, list[DeliveryItem]] = {}
    for item in items:
        pinned = (operations or {}).get(item.idempotency_key)
        for operation in [pinned] if pinned else operations_for(item.action, sync):
            if operation in capabilities:
                grouped.setdefault(operation, []).append(item)
    return [Batch(operation, tuple(group[start:start + batch_size]))
            for operation, group in grouped.items()
            for start in range(0, len(group), batch_size)]


class RateLimiter:
    """At most ``rate`` requests per second, with a burst of one second's worth."""

    def __init__(self, rate: float | None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._tokens = max(rate or 0.0, 1.0)
        self._updated = clock()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if not self.rate:
            return
        with self._lock:
            now = self._clock()
            self._tokens = min(max(self.rate, 1.0),
                               self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            self._tokens -= 1.0
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            (self._sleep or time.sleep)(wait)


class CircuitBreaker:
    """After a batch fails for good, a destination's lane waits before its next batch.

    A vendor that is down gets a pause instead of a retry storm, and a lane that can
    only fail stops spending the process's CPU (consent decisions, dead letters) that
    healthy destinations need. The pause doubles with each failure, from ``first`` up
    to ``longest`` seconds, and ends at the first success. Nothing is lost while it
    waits: the batches stay in the destination's queue.
    """

    def __init__(self, first: float = 2.0, longest: float = 60.0, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.first, self.longest = first, longest
        self._clock = clock
        self._sleep = sleep
        self.pause = 0.0
        self.open_until = 0.0

    def wait(self) -> None:
        remaining = self.open_until - self._clock()
        if remaining > 0:
            (self._sleep or time.sleep)(remaining)

    def failed(self) -> None:
        self.pause = min(self.longest, self.pause * 2 if self.pause else self.first)
        self.open_until = self._clock() + self.pause

    def succeeded(self) -> None:
        self.pause = 0.0
        self.open_until = 0.0


@dataclass
class DeliveryReport:
    delivered: list[str] = field(default_factory=list)  # keys whose every batch succeeded
    # Keys a connector had nothing to send for (no identifier its vendor can match on).
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[Batch, DeliveryError]] = field(default_factory=list)
    duplicate_keys: list[str] = field(default_factory=list)
    status: int = 0
    requests: int = 0


def deliver_batches(connector, destination: str, batches: list[Batch], *, attempts: int,
                    limiter: RateLimiter | None = None,
                    sleep: Callable[[float], None] | None = None) -> DeliveryReport:
    """Send each batch with retries; a batch that still fails is reported, not raised."""
    report = DeliveryReport()
    failed_keys: set[str] = set()
    succeeded: dict[str, None] = {}
    skipped: dict[str, None] = {}

    def attempt(batch: Batch) -> SendResult:
        if limiter is not None:
            limiter.acquire()
        report.requests += 1
        # Anything but a DeliveryError (a bug, a lost database) propagates: the caller's
        # batch is then retried whole rather than dead-lettered for a fault not the vendor's.
        return connector.deliver(batch.operation, destination, list(batch.items))

    for batch in batches:
        try:
            result = call_with_retries(lambda b=batch: attempt(b), destination,
                                       attempts=attempts, sleep=sleep)
        except DeliveryError as error:
            report.failed.append((batch, error))
            failed_keys.update(batch.keys)
            continue
        report.status = result.status
        report.duplicate_keys.extend(result.duplicate_keys)
        acknowledged = set(result.delivered)
        succeeded.update(dict.fromkeys(k for k in batch.keys if k in acknowledged))
        skipped.update(dict.fromkeys(k for k in batch.keys if k not in acknowledged))
    report.delivered = [key for key in succeeded if key not in failed_keys]
    report.skipped = [key for key in skipped if key not in failed_keys and key not in succeeded]
    return report


class _SendOnly:
    """A pre-SDK connector (only ``send``) seen as a Destination that does everything."""

    capabilities = frozenset(Capability) - {Capability.MERGE_PROFILES}
    batch_size = 1000
    rate_limit = None

    def __init__(self, connector) -> None:
        self.connector = connector

    def deliver(self, operation, destination, items):
        return self.connector.send(destination, items)

    def close(self) -> None:
        self.connector.close()


def as_destination(connector):
    return connector if hasattr(connector, "deliver") else _SendOnly(connector)
