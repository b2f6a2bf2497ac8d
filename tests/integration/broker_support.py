"""Talking to RabbitMQ the way services do: publish envelopes, watch what comes out."""

from __future__ import annotations

import json
import queue
import secrets
import threading

from kombu import Connection, Queue

from shared.envelope import Envelope
from shared.messaging.broker import EXCHANGE, Publisher


class Probe:
    """Listens on the exchange like a consumer would, and collects what a service published."""

    def __init__(self, broker_url: str, stream: str):
        self.broker_url = broker_url
        self.name = f"probe-{stream}-{secrets.token_hex(4)}"
        self.queue = Queue(self.name, exchange=EXCHANGE, routing_key=f"{stream}.#",
                           exclusive=True, auto_delete=True)
        self.received: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self):
        with Connection(self.broker_url) as connection:
            def collect(body, message):
                self.received.put(json.loads(body) if isinstance(body, str | bytes) else body)
                message.ack()

            with connection.Consumer(self.queue, callbacks=[collect], accept=["json"]):
                self._ready.set()
                while not self._stop.is_set():
                    try:
                        connection.drain_events(timeout=0.2)
                    except TimeoutError:
                        continue

    def items(self, count: int, timeout: float = 20.0) -> list[dict]:
        items: list[dict] = []
        while len(items) < count:
            envelope = self.received.get(timeout=timeout)
            items += envelope["payload"]["items"]
        return items

    def nothing_more(self, wait: float = 2.0) -> bool:
        try:
            self.received.get(timeout=wait)
        except queue.Empty:
            return True
        return False

    def close(self):
        self._stop.set()
        self._thread.join(5)


def publish(platform, stream: str, partition: str, items: list[dict], producer: str) -> None:
    publisher = Publisher(platform.broker_url)
    try:
        publisher.publish([Envelope(type=stream, producer=producer, partition=partition,
                                    items=items)])
    finally:
        publisher.close()
