"""The outbox relay: the only way a service's decisions reach the broker.

A service never publishes inside a request; it saves. The relay reads the service's
notification log from the last position it recorded, turns domain events into
integration items (the service's translation), groups them into one envelope per
(stream, partition), publishes with confirms, and records the new position only after
the broker confirmed. Broker down: writes go on and the relay catches up later.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from eventsourcing.persistence import Tracking

from shared.envelope import Envelope, position_of
from shared.leadership import Leadership, SoleProcess
from shared.partitions import partition_of
from shared.privacy import is_erased
from shared.store import ServiceApplication

log = logging.getLogger(__name__)

OUTBOX_TRACKING_KEY = "outbox"
READ_LIMIT = 500
POSITION_RECORD_SECONDS = 0.25

# (stream, partition, item) triples a domain event turns into; an item has no position yet.
Translation = Callable[[Any], Iterable[tuple[str, str, dict[str, Any]]]]


def items_by_profile(batch_event: type, stream: str) -> Callable[[int], Translation]:
    """The usual translation: a batch event's items, each to its profile's partition."""

    def translator(partitions: int) -> Translation:
        def translate(domain_event: Any) -> Iterable[tuple[str, str, dict[str, Any]]]:
            if isinstance(domain_event, batch_event):
                for item in domain_event.items:
                    yield stream, partition_of(item["profile_id"], partitions), dict(item)

        return translate

    return translator


class EnvelopePublisher(Protocol):
    def publish(self, envelopes: list[Envelope]) -> None: ...


class OutboxRelay:
    def __init__(
        self,
        app: ServiceApplication,
        translate: Translation,
        publisher: EnvelopePublisher,
        *,
        linger_seconds: float = 0.02,
        batch_max: int = 500,
        leadership: Leadership | None = None,
    ):
        self.app = app
        self.leadership = leadership or SoleProcess()
        self.translate = translate
        self.publisher = publisher
        self.linger_seconds = linger_seconds
        self.batch_max = batch_max
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._idle = threading.Event()  # set while run() is not relaying
        self._idle.set()
        self._position: int | None = None
        self._recorded: int | None = None
        self._recorded_at = float("-inf")
        self.published_envelopes = 0
        app.on_saved(self._wake.set)

    @property
    def position(self) -> int:
        if self._position is None:
            recorder = self.app.process_recorder
            self._position = recorder.max_tracking_id(OUTBOX_TRACKING_KEY) or 0
            self._recorded = self._position
        return self._position

    def backlog(self) -> int:
        newest = self.app.process_recorder.max_notification_id() or 0
        return max(0, newest - self.position)

    def relay_once(self) -> int:
        """Publish what was saved since the last position; returns notifications relayed."""
        notifications = self.app.process_recorder.select_notifications(
            start=self.position, limit=READ_LIMIT, inclusive_of_start=False
        )
        if not notifications:
            return 0
        envelopes = self._envelopes(notifications)
        if envelopes:
            self.publisher.publish(envelopes)
            self.published_envelopes += len(envelopes)
        self._position = notifications[-1].id
        self._record_position()
        return len(notifications)

    def _record_position(self, force: bool = False) -> None:
        """Write the position now and then, not after every publish: after a crash the
        relay publishes again what it published since (consumers skip it)."""
        now = time.monotonic()
        if self._position is None or self._position == self._recorded:
            return
        if not force and now - self._recorded_at < POSITION_RECORD_SECONDS:
            return
        self.app.process_recorder.insert_tracking(Tracking(OUTBOX_TRACKING_KEY, self._position))
        self._recorded, self._recorded_at = self._position, now

    def _envelopes(self, notifications) -> list[Envelope]:
        grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for notification in notifications:
            domain_event = self.app.recorded_event(notification)
            for index, (stream, partition, item) in enumerate(self.translate(domain_event)):
                if is_erased(item):  # its person was erased before it was published
                    continue
                item["position"] = position_of(notification.id, index)
                grouped.setdefault((stream, partition), []).append(item)
        envelopes = []
        for (stream, partition), items in grouped.items():
            for start in range(0, len(items), self.batch_max):
                chunk = items[start : start + self.batch_max]
                envelopes.append(
                    Envelope(type=stream, producer=self.app.service_name, partition=partition,
                             items=chunk)
                )
        return envelopes

    def run(self, sleep: Callable[[float], None] = time.sleep) -> None:
        """Relay until stopped; a failure is logged and retried with backoff, never fatal."""
        self._idle.clear()
        try:
            self._run(sleep)
        finally:
            self._idle.set()

    def _run(self, sleep: Callable[[float], None]) -> None:
        failures = 0
        while not self._stopping.is_set():
            if not self.leadership.held():
                # Another replica relays; should it go away, pick up where it recorded.
                self._position = None
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            try:
                relayed = self.relay_once()
                failures = 0
            except Exception:
                failures += 1
                self._position = None  # re-read: the failed publish recorded nothing
                log.exception("outbox relay of %s failed (attempt %d)",
                              self.app.service_name, failures)
                sleep(min(5.0, 0.1 * 2**failures))
                continue
            if relayed >= READ_LIMIT:
                continue
            with contextlib.suppress(Exception):  # a failure here is retried on the next turn
                self._record_position(force=True)
            idle_since = time.monotonic()
            self._wake.wait(timeout=0.5)
            if self._wake.is_set():
                self._wake.clear()
                # Busy (saves come quicker than the linger): let a few more land so one
                # envelope carries them all. Quiet: publish at once, latency matters more.
                if time.monotonic() - idle_since < self.linger_seconds:
                    sleep(self.linger_seconds)

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def finish(self, turns: int = 20) -> None:
        """On shutdown, after the consumers stopped: if this replica relays, publish what
        is left and record the position, then let another replica lead."""
        self._idle.wait(timeout=10)  # the relaying thread finishes its turn first
        try:
            if self.leadership.held():
                for _ in range(turns):
                    if self.relay_once() < READ_LIMIT:
                        break
                self._record_position(force=True)
        finally:
            self.leadership.release()
