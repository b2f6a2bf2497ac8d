"""The broker, whichever it is: RabbitMQ in real mode, kombu's in-process `memory://` embedded.

Topology: one topic exchange; one durable queue per (consuming service, stream, partition),
bound with routing key `<stream>.<partition>` and marked single-active-consumer, so that
replicas share partitions instead of competing for one queue (order per person holds).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import orjson
from kombu import Connection, Exchange, Queue
from kombu.transport import memory

from shared.contracts import CONSUMERS
from shared.envelope import Envelope

EXCHANGE = Exchange("tessera.events", type="topic", durable=True)
EMBEDDED_POLL_SECONDS = 0.005
ENVELOPE_CONTENT_TYPE = "application/data"


def apply_embedded_transport_fixes() -> None:
    """Make kombu's memory transport fit for an in-process platform (DESIGN §8).

    Its default 1 s polling interval would add a second per hop; and nameko's RPC
    responder reads `properties['content_type']`, which that transport keeps elsewhere.
    """
    memory.Transport.polling_interval = EMBEDDED_POLL_SECONDS
    if getattr(memory.Channel, "_tessera_patched", False):
        return
    original = memory.Channel.prepare_message

    def prepare_message(self, body, *args, **kwargs):
        message = original(self, body, *args, **kwargs)
        properties = message.setdefault("properties", {})
        properties.setdefault("content_type", message.get("content-type"))
        properties.setdefault("content_encoding", message.get("content-encoding"))
        return message

    memory.Channel.prepare_message = prepare_message
    memory.Channel._tessera_patched = True


def connect(broker_url: str) -> Connection:
    if broker_url.startswith("memory://"):
        apply_embedded_transport_fixes()
        return Connection(broker_url)
    # Publisher confirms: publish() returns only once the broker has the message.
    return Connection(broker_url, transport_options={"confirm_publish": True}, heartbeat=30)


def broker_answers(broker_url: str, timeout: float = 2.0) -> None:
    """Opens and closes one connection; raises if the broker refuses or is unreachable."""
    if broker_url.startswith("memory://"):
        return
    with Connection(broker_url, connect_timeout=timeout) as connection:
        connection.connect()


def queue_name(consumer: str, stream: str, partition: str) -> str:
    return f"{consumer}.{stream}.{partition}"


def partition_queue(consumer: str, stream: str, partition: str) -> Queue:
    return Queue(
        queue_name(consumer, stream, partition),
        exchange=EXCHANGE,
        routing_key=f"{stream}.{partition}",
        durable=True,
        queue_arguments={"x-single-active-consumer": True},
    )


def queues_for(stream: str, partitions: Iterable[str]) -> list[Queue]:
    return [
        partition_queue(consumer, stream, partition)
        for consumer in CONSUMERS.get(stream, ())
        for partition in partitions
    ]


class Publisher:
    """Publishes envelopes as persistent messages; declares their queues first.

    An event published before its consumer's queue exists would be dropped by the
    exchange, so every (stream, partition) is declared before its first publish.
    """

    def __init__(self, broker_url: str):
        self._broker_url = broker_url
        self._connection: Connection | None = None
        self._producer = None
        self._declared: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def _ensure_producer(self):
        if self._producer is None:
            self._connection = connect(self._broker_url)
            self._producer = self._connection.Producer(serializer="json")
            EXCHANGE(self._producer.channel).declare()
            self._declared.clear()
        return self._producer

    def declare(self, stream: str, partitions: Iterable[str]) -> None:
        with self._lock:
            producer = self._ensure_producer()
            for partition in partitions:
                if (stream, partition) in self._declared:
                    continue
                for queue in queues_for(stream, [partition]):
                    queue(producer.channel).declare()
                self._declared.add((stream, partition))

    def publish(self, envelopes: list[Envelope]) -> None:
        """Returns once the broker confirmed every envelope; raises if it could not."""
        for envelope in envelopes:
            self.declare(envelope.type, [envelope.partition])
        with self._lock:
            producer = self._ensure_producer()
            try:
                for envelope in envelopes:
                    producer.publish(
                        orjson.dumps(envelope.to_message()),
                        exchange=EXCHANGE,
                        routing_key=envelope.routing_key,
                        # JSON all the same; declared as raw data so that kombu hands the
                        # bytes over and the consumer parses them with orjson, 5x faster.
                        content_type=ENVELOPE_CONTENT_TYPE,
                        content_encoding="binary",
                        delivery_mode=2,
                        message_id=envelope.event_id,
                    )
            except Exception:
                self._reset()
                raise

    def _reset(self) -> None:
        try:
            if self._connection is not None:
                self._connection.release()
        finally:
            self._connection = None
            self._producer = None

    def close(self) -> None:
        with self._lock:
            self._reset()


def queue_depths(broker_url: str, queues: Iterable[Queue]) -> dict[str, int]:
    """Messages ready in each queue (a passive declare: it creates nothing)."""
    depths: dict[str, int] = {}
    with connect(broker_url) as connection:
        channel = connection.channel()
        try:
            for queue in queues:
                try:
                    _, count, _ = channel.queue_declare(queue=queue.name, passive=True)
                except Exception:
                    channel = connection.channel()
                    count = 0
                depths[queue.name] = count
        finally:
            channel.close()
    return depths


def consumer_count(connection: Connection, queue: Queue) -> int:
    """Consumers subscribed to a queue: with single active consumer, one per replica."""
    channel = connection.channel()
    try:
        _, _, consumers = channel.queue_declare(queue=queue.name, passive=True)
    finally:
        channel.close()
    return consumers
