"""The operations port of a service process: /livez, /readyz and /metrics.

Not part of the public API and not a nameko `@http` entrypoint (nameko gives every `@http`
service of a process its own listener on one port, and they split requests at random):
a plain WSGI app on eventlet's server, one per process, whatever services it runs.

- /livez: the process is alive and its eventlet loop turns (a heartbeat green thread).
  A broker or database outage never fails it: that must make a pod unready, not restart it.
- /readyz: the broker and every service's event store answer, and the process is not
  shutting down. 503 with the failing checks otherwise.
- /metrics: Prometheus text format (the figures are described in deploy/README.md).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import eventlet  # noqa: E402
import eventlet.wsgi  # noqa: E402
import orjson  # noqa: E402
from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily  # noqa: E402

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 1.0
LIVENESS_STALE_SECONDS = 10.0
CHECK_TIMEOUT_SECONDS = 2.0

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_PROCESSED = Counter(
    "tessera_events_processed", "Items of consumed envelopes handled, per service and stream",
    ["service", "stream"], registry=REGISTRY)
BATCHES_FAILED = Counter(
    "tessera_batches_failed", "Consumed batches whose handling failed and is retried",
    ["service", "stream"], registry=REGISTRY)
BATCH_OUTCOMES = Counter(
    "tessera_batch_outcomes",
    "Outcomes handlers report per batch (activation: delivered, suppressed, dead_lettered)",
    ["service", "stream", "outcome"], registry=REGISTRY)
REQUEST_LATENCY = Histogram(
    "tessera_http_request_duration_seconds", "Public API request latency (gateway)",
    ["method", "route", "status"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))


@dataclass
class ServiceProbe:
    """What the operations port asks of one service running in this process."""

    name: str
    store_answers: Callable[[], object]  # raises if the event store does not answer
    outbox_backlog: Callable[[], int] | None = None


# Services of this process, registered by their nameko DependencyProvider at setup.
SERVICES: dict[str, ServiceProbe] = {}
# Partition queues (kombu Queues) each service of this process consumes.
CONSUMED_QUEUES: dict[str, list] = {}


def register_service(probe: ServiceProbe) -> None:
    SERVICES[probe.name] = probe


def register_consumed_queues(service: str, queues: Iterable) -> None:
    known = CONSUMED_QUEUES.setdefault(service, [])
    known.extend(queue for queue in queues if queue.name not in {q.name for q in known})


class PipelineCollector:
    """Figures read at scrape time: queue depths (consumer lag) and outbox backlogs."""

    def __init__(self, broker_url: str, queue_depths: Callable[[str, list], dict[str, int]]):
        self.broker_url = broker_url
        self.queue_depths = queue_depths

    def describe(self):
        return []

    def collect(self):
        backlog = GaugeMetricFamily(
            "tessera_outbox_backlog", "Saved notifications the outbox relay has not published",
            labels=["service"])
        depth = GaugeMetricFamily(
            "tessera_queue_messages_ready",
            "Messages waiting in a partition queue this process consumes (consumer lag)",
            labels=["service", "queue"])
        for name, probe in sorted(SERVICES.items()):
            if probe.outbox_backlog is not None:
                backlog.add_metric([name], _or_nan(probe.outbox_backlog))
            queues = CONSUMED_QUEUES.get(name)
            if queues:
                for queue_name, ready in self._depths(queues).items():
                    depth.add_metric([name, queue_name], ready)
        yield backlog
        yield depth

    def _depths(self, queues: list) -> dict[str, float]:
        try:
            with eventlet.Timeout(CHECK_TIMEOUT_SECONDS):
                return self.queue_depths(self.broker_url, queues)
        except (Exception, eventlet.Timeout):
            return {queue.name: float("nan") for queue in queues}


def _or_nan(figure: Callable[[], int]) -> float:
    try:
        with eventlet.Timeout(CHECK_TIMEOUT_SECONDS):
            return float(figure())
    except (Exception, eventlet.Timeout):
        return float("nan")


class OpsServer:
    def __init__(self, broker_answers: Callable[[], object], *, host: str, port: int,
                 collector: PipelineCollector | None = None):
        self.broker_answers = broker_answers
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.shutting_down = False
        self._last_beat = time.monotonic()
        self._threads: list = []
        self._socket = None
        if collector is not None:
            REGISTRY.register(collector)
        self._collector = collector

    # ---- lifecycle --------------------------------------------------------------------
    def start(self) -> OpsServer:
        self._socket = eventlet.listen((self.host, self.requested_port))
        self.port = self._socket.getsockname()[1]
        self._threads.append(eventlet.spawn(self._beat))
        self._threads.append(eventlet.spawn(
            eventlet.wsgi.server, self._socket, self.wsgi, log_output=False,
            log=logging.getLogger("tessera.ops.access")))
        return self

    def begin_shutdown(self) -> None:
        """From now on /readyz answers 503: the Service stops routing here while we drain."""
        self.shutting_down = True

    def stop(self) -> None:
        for thread in self._threads:
            thread.kill()
        if self._socket is not None:
            self._socket.close()
        if self._collector is not None:
            REGISTRY.unregister(self._collector)
            self._collector = None

    def _beat(self) -> None:
        while True:
            self._last_beat = time.monotonic()
            eventlet.sleep(HEARTBEAT_SECONDS)

    # ---- checks -----------------------------------------------------------------------
    def liveness(self) -> tuple[bool, dict]:
        silent_for = time.monotonic() - self._last_beat
        return silent_for < LIVENESS_STALE_SECONDS, {"loop_silent_seconds": round(silent_for, 3)}

    def readiness(self) -> tuple[bool, dict]:
        checks = {"broker": _check(self.broker_answers)}
        for name, probe in sorted(SERVICES.items()):
            checks[f"{name}.event_store"] = _check(probe.store_answers)
        if self.shutting_down:
            checks["process"] = "shutting down"
        return all(result == "ok" for result in checks.values()), checks

    # ---- HTTP -------------------------------------------------------------------------
    def wsgi(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _answer(start_response, 405, {"error": "only GET"})
        if path == "/livez":
            alive, detail = self.liveness()
            return _answer(start_response, 200 if alive else 503, detail)
        if path == "/readyz":
            ready, checks = self.readiness()
            return _answer(start_response, 200 if ready else 503, {"checks": checks})
        if path == "/metrics":
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return [generate_latest(REGISTRY)]
        return _answer(start_response, 404, {"error": f"no {path}; try /livez /readyz /metrics"})


def _check(answers: Callable[[], object]) -> str:
    try:
        with eventlet.Timeout(CHECK_TIMEOUT_SECONDS):
            answers()
    except eventlet.Timeout:
        return f"no answer within {CHECK_TIMEOUT_SECONDS}s"
    except Exception as error:
        return f"{type(error).__name__}: {error}"[:300]
    return "ok"


def _answer(start_response, status: int, body: dict) -> list[bytes]:
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed",
              503: "Service Unavailable"}[status]
    start_response(f"{status} {reason}", [("Content-Type", "application/json")])
    return [orjson.dumps(body)]
