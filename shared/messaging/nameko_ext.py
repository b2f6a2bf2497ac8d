"""nameko glue: the seam between services and the broker/event store.

- `ServiceApp`: a DependencyProvider that builds the service's application once per
  container and runs its outbox relay in a managed thread.
- `partitioned_handler`: an entrypoint that consumes one queue per partition of a stream,
  one batch at a time per partition (order per person holds), requeueing on failure.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections import deque
from collections.abc import Callable
from functools import partial

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import eventlet  # noqa: E402
import orjson  # noqa: E402
from kombu import Consumer as KombuConsumer  # noqa: E402
from marshmallow import ValidationError  # noqa: E402
from nameko.extensions import DependencyProvider, Entrypoint, register_entrypoint  # noqa: E402
from nameko.messaging import QueueConsumer  # noqa: E402

from shared import logs, ops  # noqa: E402
from shared.audit import SealingTimer  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.envelope import Envelope, load_envelope  # noqa: E402
from shared.errors import RetryLater  # noqa: E402
from shared.leadership import relay_leadership  # noqa: E402
from shared.messaging.broker import (  # noqa: E402
    Publisher,
    connect,
    consumer_count,
    partition_queue,
)
from shared.outbox import OutboxRelay, Translation  # noqa: E402

log = logging.getLogger(__name__)

SETTINGS_CONFIG_KEY = "TESSERA_SETTINGS"
REQUEUE_DELAY_SECONDS = 0.5
TRACKING_FLUSH_SECONDS = 0.5
LANE_PREFETCH = 20
MERGE_MAX_ITEMS = 5000
SHARE_CHECK_SECONDS = 2.0
ACTIVE_WINDOW_SECONDS = 15.0
RESUBSCRIBE_DELAY_SECONDS = 3.0
HANDED_OVER = object()  # the channel of a lane that was handed over to another replica

# Batches being worked on per service in this process: part of "is the pipeline drained?".
IN_FLIGHT: dict[str, int] = {}
# Partitions of each service whose current batch failed and is being retried: one that
# stays here is stuck (a failing database, or a batch that cannot succeed).
RETRYING: dict[str, set[str]] = {}


def settings_of(container) -> Settings:
    settings = container.config.get(SETTINGS_CONFIG_KEY)
    return settings if isinstance(settings, Settings) else Settings.from_env()


def numbered_partitions(settings: Settings) -> list[str]:
    return [str(p) for p in range(settings.partitions)]


class ServiceApp(DependencyProvider):
    """Gives workers the service's application; publishes its outbox in the background."""

    def __init__(self, factory: Callable[[Settings], object],
                 translator: Callable[[int], Translation] | None = None):
        self.factory = factory
        self.translator = translator
        self.app = None
        self.relay: OutboxRelay | None = None
        self.sealing: SealingTimer | None = None

    def setup(self):
        settings = settings_of(self.container)
        self.app = self.factory(settings)
        self.sealing = SealingTimer(settings, self.container.service_name)
        self.app.relay = None
        if self.translator is not None:
            self.relay = OutboxRelay(
                self.app,
                self.translator(settings.partitions),
                Publisher(settings.broker_url),
                linger_seconds=settings.linger_ms / 1000,
                batch_max=settings.batch_max,
                leadership=relay_leadership(settings, self.container.service_name),
            )
            self.app.relay = self.relay
        app = self.app
        ops.register_service(ops.ServiceProbe(
            name=self.container.service_name,
            store_answers=lambda: app.process_recorder.max_notification_id(),
            outbox_backlog=self.relay.backlog if self.relay is not None else None,
        ))

    def worker_setup(self, worker_ctx):
        """Every log line of this worker carries the correlation id of what it handles."""
        logs.CORRELATION_ID.set(_correlation_id(worker_ctx))

    def start(self):
        self._stopping = False
        if self.relay is not None:
            self.container.spawn_managed_thread(self.relay.run, identifier="outbox-relay")
        self.container.spawn_managed_thread(self._flush_tracking, identifier="tracking-flush")
        self.container.spawn_managed_thread(self.sealing.run, identifier="audit-sealing")

    def _flush_tracking(self):
        while not self._stopping:
            eventlet.sleep(TRACKING_FLUSH_SECONDS)
            try:
                self.app.flush_tracking()
            except Exception:
                log.exception("could not write tracking positions; will try again")

    def stop(self):
        self._stopping = True
        if self.relay is not None:
            self.relay.stop()
            # Consumers have stopped and workers finished: publish what they saved, so
            # that a replica going away leaves no backlog behind for its successor.
            with contextlib.suppress(Exception):
                self.relay.finish()
        with contextlib.suppress(Exception):
            self.app.flush_tracking()
        if self.sealing is not None:
            self.sealing.stop()  # seals what this replica's last work stored
        with contextlib.suppress(Exception):
            self.app.close()

    def kill(self):
        self.stop()

    def get_dependency(self, worker_ctx):
        return self.app


def _correlation_id(worker_ctx) -> str:
    for arg in worker_ctx.args:
        if isinstance(arg, Envelope):
            return arg.correlation_id or arg.event_id
    request = worker_ctx.args[0] if worker_ctx.args else None
    headers = getattr(request, "headers", None)
    given = headers.get("X-Correlation-Id") if headers is not None else None
    return given or worker_ctx.origin_call_id or worker_ctx.call_id


class RequestLatency(DependencyProvider):
    """Times each `@http` worker of the service into the request latency histogram."""

    def setup(self):
        # Kept here, not in worker_ctx.data: that travels on with every RPC the worker makes.
        self.started: dict[int, float] = {}

    def worker_setup(self, worker_ctx):
        self.started[id(worker_ctx)] = time.perf_counter()

    def worker_result(self, worker_ctx, result=None, exc_info=None):
        started = self.started.pop(id(worker_ctx), None)
        if started is None:
            return
        entrypoint = worker_ctx.entrypoint
        status = getattr(result, "status_code", 500 if exc_info else 200)
        ops.REQUEST_LATENCY.labels(
            method=getattr(entrypoint, "method", "?"),
            route=getattr(entrypoint, "url", entrypoint.method_name),
            status=str(status),
        ).observe(time.perf_counter() - started)

    def worker_teardown(self, worker_ctx):
        self.started.pop(id(worker_ctx), None)

    def get_dependency(self, worker_ctx):
        return None


def service_status(service: str, app) -> dict:
    relay = getattr(app, "relay", None)
    return {
        "service": service,
        "outbox_backlog": relay.backlog() if relay is not None else 0,
        "published_envelopes": relay.published_envelopes if relay is not None else 0,
        "in_flight": IN_FLIGHT.get(service, 0),
        "retrying": sorted(RETRYING.get(service, ())),
    }


class _Lane:
    """One partition's queue: its batches are handled strictly one after another.

    Batches that arrive while the previous one is being handled wait here and are then
    handled together, merged into one envelope: under load a hop saves and publishes in
    larger batches (fewer transactions, fewer messages); idle, a batch goes alone at once.
    """

    def __init__(self, entrypoint: PartitionedConsumer, queue):
        self.entrypoint = entrypoint
        self.queue = queue
        self.waiting: deque = deque()  # (envelope, message), in arrival order
        self.busy = False
        self.last_delivery = float("-inf")  # monotonic time of the last message received
        self.hand_over = False  # asked to let another replica take this partition
        self.resubscribe_at: float | None = None  # handed over: when to queue up again
        self.channel = None  # its own channel on RabbitMQ (None: the shared one, embedded)

    @property
    def active(self) -> bool:
        """This replica is the partition's active consumer (as far as we can tell: SAC
        says nothing, but only the active consumer receives messages)."""
        return (self.resubscribe_at is None
                and time.monotonic() - self.last_delivery < ACTIVE_WINDOW_SECONDS)

    def handle_message(self, body, message):
        self.entrypoint.handle_lane_message(self, body, message)

    def next_group(self) -> tuple[Envelope, list] | None:
        if not self.waiting:
            return None
        envelopes, messages = [], []
        producer = self.waiting[0][0].producer
        size = 0
        while self.waiting and self.waiting[0][0].producer == producer and size < MERGE_MAX_ITEMS:
            envelope, message = self.waiting.popleft()
            envelopes.append(envelope)
            messages.append(message)
            size += len(envelope.items)
        return merge(envelopes), messages


def lanes_to_hand_over(lanes: list[_Lane], replicas: int) -> list[_Lane]:
    """The active lanes beyond this replica's share of the partitions, if any."""
    if replicas <= 1:
        return []
    share = -(-len(lanes) // replicas)  # ceil: every partition has a home
    active = [lane for lane in lanes if lane.active and not lane.hand_over]
    return active[share:] if len(active) > share else []


def merge(envelopes: list[Envelope]) -> Envelope:
    if len(envelopes) == 1:
        return envelopes[0]
    first = envelopes[0]
    items = [item for envelope in envelopes for item in envelope.items]
    return Envelope(type=first.type, producer=first.producer, partition=first.partition,
                    items=items, version=first.version, correlation_id=first.correlation_id)


class PartitionQueueConsumer(QueueConsumer):
    """Partition lanes get a connection of their own, and on RabbitMQ a channel each.

    Sharing nameko's consumer (one channel, prefetch = max_workers) lets batches that wait
    for their lane's turn use up the prefetch, and RPC requests then wait behind them.

    A channel per lane is what lets replicas share partitions. With single active consumer
    the first replica to subscribe gets every partition; a replica holding more than its
    share hands some over by closing their channels: RabbitMQ then requeues what that
    channel held, in order, and makes the next replica in line the active consumer, the
    same hand-over as when a replica dies. It queues up again behind, as a standby.
    """

    @property
    def per_lane_channels(self) -> bool:
        return not self.amqp_uri.startswith("memory://")

    @property
    def prefetch_count(self):
        if self.per_lane_channels:
            return LANE_PREFETCH
        return LANE_PREFETCH * max(1, len(self._providers))

    def get_consumers(self, consumer_cls, channel):
        if not self.per_lane_channels:
            return super().get_consumers(consumer_cls, channel)
        self._amqp_connection = channel.connection
        for lane in self._providers:
            lane.resubscribe_at = None
            lane.hand_over = False
            self._consumers[lane] = self._lane_consumer(lane)
        return self._consumers.values()

    def _lane_consumer(self, lane):
        lane.channel = self._amqp_connection.channel()
        consumer = KombuConsumer(lane.channel, queues=[lane.queue], accept=self.accept,
                                 callbacks=[partial(self.handle_message, lane)])
        consumer.qos(prefetch_count=LANE_PREFETCH)
        return consumer

    def on_iteration(self):
        if self.per_lane_channels:
            for lane in list(self._consumers):
                if lane.hand_over and not lane.busy:
                    self._hand_over(lane)
                elif lane.resubscribe_at is not None and time.monotonic() >= lane.resubscribe_at:
                    self._resubscribe(lane)
        super().on_iteration()

    def _hand_over(self, lane) -> None:
        consumer = self._consumers[lane]
        lane.channel = HANDED_OVER  # deliveries of the old channel still on their way: drop
        try:
            consumer.channel.close()  # the broker requeues what it held, in order
        except Exception:
            log.exception("closing the channel of %s failed", lane.queue.name)
        consumer._active_tags.clear()  # nothing left to cancel on a closed channel
        lane.entrypoint.drop_waiting(lane)
        lane.hand_over = False
        lane.resubscribe_at = time.monotonic() + RESUBSCRIBE_DELAY_SECONDS
        log.info("handed partition queue %s over to another replica", lane.queue.name)

    def _resubscribe(self, lane) -> None:
        consumer = self._lane_consumer(lane)
        consumer.consume()
        self._consumers[lane] = consumer
        lane.resubscribe_at = None


class PartitionedConsumer(Entrypoint):
    queue_consumer = PartitionQueueConsumer()

    def __init__(self, stream: str, consumer: str, partitions=numbered_partitions, **kwargs):
        self.stream = stream
        self.consumer = consumer
        self.partitions = partitions
        self.lanes: list[_Lane] = []
        super().__init__(**kwargs)

    def setup(self):
        settings = settings_of(self.container)
        self.broker_url = settings.broker_url
        for partition in self.partitions(settings):
            lane = _Lane(self, partition_queue(self.consumer, self.stream, partition))
            self.lanes.append(lane)
            self.queue_consumer.register_provider(lane)
        ops.register_consumed_queues(self.consumer, [lane.queue for lane in self.lanes])

    def start(self):
        if not self.broker_url.startswith("memory://"):
            self.container.spawn_managed_thread(self._share_partitions,
                                                identifier=f"share-{self.consumer}")

    def stop(self):
        for lane in self.lanes:
            self.queue_consumer.unregister_provider(lane)

    def _share_partitions(self):
        """Now and then: hand over the partitions this replica holds beyond its share."""
        connection = None
        while True:
            eventlet.sleep(SHARE_CHECK_SECONDS)
            try:
                connection = connection or connect(self.broker_url)
                replicas = consumer_count(connection, self.lanes[0].queue)
            except Exception:
                with contextlib.suppress(Exception):
                    connection.release()
                connection = None
                continue
            for lane in lanes_to_hand_over(self.lanes, replicas):
                lane.hand_over = True

    def drop_waiting(self, lane: _Lane) -> None:
        """Messages of a closed channel come back to the next consumer: forget them here."""
        IN_FLIGHT[self.consumer] -= len(lane.waiting)
        lane.waiting.clear()

    def handle_lane_message(self, lane: _Lane, body, message):
        if lane.channel is not None and message.channel is not lane.channel:
            return  # delivered on a channel since closed: the broker gave it to another
        try:
            envelope = load_envelope(body if isinstance(body, dict) else _json(body))
        except (ValidationError, ValueError) as error:
            # A malformed envelope can never succeed: park it in the log, don't loop on it.
            log.error("dropping malformed envelope on %s: %s", lane.queue.name, error)
            self.queue_consumer.ack_message(message)
            return
        IN_FLIGHT[self.consumer] = IN_FLIGHT.get(self.consumer, 0) + 1
        lane.last_delivery = time.monotonic()
        lane.waiting.append((envelope, message))
        if not lane.busy:
            self._handle_next(lane)

    def _handle_next(self, lane: _Lane) -> None:
        if lane.hand_over:  # finish nothing more: the channel closes once idle
            lane.busy = False
            return
        group = lane.next_group()
        lane.busy = group is not None
        if group is not None:
            self._spawn(lane, *group)

    def _spawn(self, lane: _Lane, envelope: Envelope, messages: list):
        try:
            self.container.spawn_worker(
                self, (envelope,), {},
                handle_result=partial(self._handled, lane, envelope, messages),
            )
        except Exception:
            # The container is going away: unacked messages come back, in order, to the
            # next consumer of this partition.
            for message in messages:
                IN_FLIGHT[self.consumer] -= 1
                self.queue_consumer.requeue_message(message)

    def _handled(self, lane: _Lane, envelope, messages, worker_ctx, result=None, exc_info=None):
        retrying = RETRYING.setdefault(self.consumer, set())
        if exc_info is None and isinstance(result, RetryLater):
            # Not a failure: the handler chose to wait (e.g. its destination is paused).
            # The batch keeps its place and no worker is held while it waits.
            log.info("batch %s on %s waits %.1fs: %s", envelope.event_id, lane.queue.name,
                     result.retry_after, result)
            eventlet.spawn_after(result.retry_after, self._spawn, lane, envelope, messages)
            return result, exc_info
        if exc_info is None:
            _count_handled(self.consumer, envelope, result)
            for message in messages:
                self.queue_consumer.ack_message(message)
                IN_FLIGHT[self.consumer] -= 1
            retrying.discard(lane.queue.name)
            self._handle_next(lane)
            return result, exc_info
        retrying.add(lane.queue.name)
        ops.BATCHES_FAILED.labels(self.consumer, envelope.type).inc()
        # Transient failure (database, RPC). Retry this very batch before any later one:
        # requeueing would let the batches already prefetched behind it overtake it.
        log.warning("retrying batch %s on %s: %s", envelope.event_id, lane.queue.name, exc_info[1])
        eventlet.spawn_after(REQUEUE_DELAY_SECONDS, self._spawn, lane, envelope, messages)
        return result, exc_info


def _count_handled(service: str, envelope: Envelope, result) -> None:
    ops.EVENTS_PROCESSED.labels(service, envelope.type).inc(len(envelope.items))
    if isinstance(result, dict):
        for outcome, count in result.items():
            if isinstance(count, int) and count:
                ops.BATCH_OUTCOMES.labels(service, envelope.type, outcome).inc(count)


def _json(body):
    return orjson.loads(body)


def partitioned_handler(stream: str, consumer: str, partitions=numbered_partitions):
    def decorate(fn):
        register_entrypoint(fn, PartitionedConsumer(stream, consumer, partitions))
        return fn

    return decorate
