"""The platform's half of a delivery: operations, batches, rate limits, retries.

Activation hands this module the items consent allowed; it turns each into the
operations the destination's sync modes call for, cuts them into batches of the
connector's ``batch_size``, keeps to the destination's rate limit, retries each batch
with backoff and jitter (``Retry-After`` honoured, only what the connector marks
retryable), and reports what was delivered and which batches failed for good (to be
dead-lettered by the caller).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from connectors.base import DeliveryError, DeliveryItem, SendResult
from connectors.retry import call_with_retries
from connectors.sdk.destination import Capability
from shared.errors import RetryLater

__all__ = [
    "SYNC_MODES",
    "Batch",
    "CircuitBreaker",
    "CircuitOpenError",
    "DeliveryReport",
    "DestinationPaused",
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
    if action == "event":  # a destination following events gets each, whatever the sync
        operations.append(Capability.TRACK_EVENTS)
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


class DestinationPaused(RetryLater):
    """A destination's circuit is open: nothing was decided, sent or written for this
    batch. It stays in the destination's queue and is handed back ``retry_after`` seconds
    later; no worker waits for it meanwhile."""

    def __init__(self, destination: str, retry_after: float, cause: str) -> None:
        super().__init__(f"{destination}: paused {retry_after:.1f}s after repeated failures "
                         f"(last: {cause})", retry_after)
        self.destination = destination


class CircuitOpenError(DeliveryError):
    """A batch not retried further because its destination's circuit opened: the
    destination keeps failing, so more attempts now would only cost time and CPU."""

    retryable = False


class CircuitBreaker:
    """One destination's circuit: closed, open after repeated failures, then half-open.

    Closed, every batch gets its full retry budget. ``threshold`` failed attempts in a
    row (5xx, 429, timeouts, lost connections: the destination's health, not a 4xx about
    one batch's data), or a single wait asked for longer than ``longest_inline_wait``
    (a ``Retry-After`` of minutes), open it: retries stop and, for ``pause`` seconds,
    batches are not even started — activation raises :class:`DestinationPaused` before
    deciding consent, so a dead destination costs no consent decisions, no requests and
    no dead letters, and holds no worker while it waits. The pause doubles with each
    opening, from ``first`` up to ``longest`` seconds, and is never shorter than the
    destination's own ``Retry-After``. After it, the circuit is half-open: the next batch
    is a probe with a single attempt; its success closes the circuit, its failure opens
    it again for twice as long.
    """

    def __init__(self, threshold: int = 5, first: float = 2.0, longest: float = 60.0,
                 longest_inline_wait: float = 10.0, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self.threshold, self.first, self.longest = threshold, first, longest
        self.longest_inline_wait = longest_inline_wait
        self._clock = clock
        self.consecutive_failures = 0
        self.pause = 0.0  # the length of the current (or last) opening; 0 when closed
        self.open_until = 0.0
        self.last_error = ""

    @property
    def closed(self) -> bool:
        return self.pause == 0.0

    @property
    def half_open(self) -> bool:
        return not self.closed and self._clock() >= self.open_until

    def remaining(self) -> float:
        """Seconds until a probe may go; 0 when closed or half-open."""
        return 0.0 if self.closed else max(0.0, self.open_until - self._clock())

    def admit(self, destination: str) -> None:
        """Raise :class:`DestinationPaused` while open; otherwise a batch may go."""
        remaining = self.remaining()
        if remaining > 0:
            raise DestinationPaused(destination, remaining, self.last_error)

    def attempts(self, budget: int) -> int:
        """A probe (half-open) gets one attempt; otherwise the whole budget."""
        return 1 if self.half_open else budget

    def failed(self, error: DeliveryError) -> None:
        """Record a failed attempt; opens the circuit when the destination looks down."""
        self.last_error = str(error)
        self.consecutive_failures += 1
        asked = error.retry_after or 0.0
        if (self.half_open or self.consecutive_failures >= self.threshold
                or asked > self.longest_inline_wait):
            self.pause = min(self.longest, self.pause * 2 if self.pause else self.first)
            self.open_until = self._clock() + max(self.pause, asked)

    def succeeded(self) -> None:
        self.consecutive_failures = 0
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
                    sleep: Callable[[float], None] | None = None,
                    circuit: CircuitBreaker | None = None) -> DeliveryReport:
    """Send each batch with retries; a batch that still fails is reported, not raised.

    With a ``circuit``, each attempt's outcome is recorded on it. When it opens before a
    batch has spent its budget: if nothing of this call has been delivered or failed yet,
    :class:`DestinationPaused` is raised (the caller's whole batch waits and comes back,
    nothing of it lost or written); otherwise that batch and the ones after it are
    reported failed with :class:`CircuitOpenError` (dead letters: nothing lost).
    """
    report = DeliveryReport()
    failed_keys: set[str] = set()
    succeeded: dict[str, None] = {}
    skipped: dict[str, None] = {}

    def attempt(batch: Batch, budget: int, tries: list[int]) -> SendResult:
        if limiter is not None:
            limiter.acquire()
        report.requests += 1
        tries[0] += 1
        # Anything but a DeliveryError (a bug, a lost database) propagates: the caller's
        # batch is then retried whole rather than dead-lettered for a fault not the vendor's.
        try:
            result = connector.deliver(batch.operation, destination, list(batch.items))
        except DeliveryError as error:
            if circuit is not None and error.retryable:
                circuit.failed(error)
                if not circuit.closed and tries[0] < budget:
                    raise CircuitOpenError(f"{error} (circuit opened after "
                                           f"{circuit.consecutive_failures} failed attempts "
                                           "in a row)", status=error.status) from error
            raise
        if circuit is not None:
            circuit.succeeded()
        return result

    for batch in batches:
        if circuit is not None and circuit.remaining() > 0:
            error = CircuitOpenError(f"not attempted: circuit open ({circuit.last_error})")
            report.failed.append((batch, error))
            failed_keys.update(batch.keys)
            continue
        budget = circuit.attempts(attempts) if circuit is not None else attempts
        tries = [0]  # attempts spent on this batch, partial retries included
        pending: Batch | None = batch
        while pending is not None:
            try:
                result = call_with_retries(lambda b=pending, n=budget, t=tries: attempt(b, n, t),
                                           destination, attempts=budget - tries[0],
                                           sleep=sleep)
            except CircuitOpenError as error:
                if not succeeded and not skipped and not report.failed:
                    raise DestinationPaused(destination, circuit.remaining(), str(error)) \
                        from error
                report.failed.append((pending, error))
                failed_keys.update(pending.keys)
                break
            except DeliveryError as error:
                report.failed.append((pending, error))
                failed_keys.update(pending.keys)
                break
            report.status = result.status
            report.duplicate_keys.extend(result.duplicate_keys)
            acknowledged = set(result.delivered)
            succeeded.update(dict.fromkeys(k for k in pending.keys if k in acknowledged))
            skipped.update(dict.fromkeys(k for k in pending.keys
                                         if k not in acknowledged and k not in result.failed))
            pending = _partly_failed(pending, result.failed, report, failed_keys,
                                     spent=tries[0], budget=budget, sleep=sleep)
    report.delivered = [key for key in succeeded if key not in failed_keys]
    report.skipped = [key for key in skipped if key not in failed_keys and key not in succeeded]
    return report


def _partly_failed(batch: Batch, failures: dict[str, DeliveryError], report: DeliveryReport,
                   failed_keys: set[str], *, spent: int, budget: int,
                   sleep: Callable[[float], None] | None) -> Batch | None:
    """Items a destination refused one by one: the retryable ones, as a batch of their
    own to send again after a backoff while the budget lasts; the rest reported failed
    (dead letters), grouped by error."""
    if not failures:
        return None
    retry: list[DeliveryItem] = []
    refused: dict[str, tuple[DeliveryError, list[DeliveryItem]]] = {}
    for item in batch.items:
        error = failures.get(item.idempotency_key)
        if error is None:
            continue
        if error.retryable and spent < budget:
            retry.append(item)
        else:
            refused.setdefault(str(error), (error, []))[1].append(item)
    for error, items in refused.values():
        report.failed.append((Batch(batch.operation, tuple(items)), error))
        failed_keys.update(item.idempotency_key for item in items)
    if not retry:
        return None
    asked = max((failures[i.idempotency_key].retry_after or 0.0 for i in retry), default=0.0)
    (sleep or time.sleep)(max(asked, random.uniform(0, min(30.0, 0.2 * 2 ** (spent - 1)))))
    return Batch(batch.operation, tuple(retry))


class _SendOnly:
    """A pre-SDK connector (only ``send``) seen as a Destination that does everything."""

    capabilities = frozenset(Capability) - {Capability.MERGE_PROFILES,
                                            Capability.TRACK_EVENTS}
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
