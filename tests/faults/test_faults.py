"""Faults under a steady load, on a private RabbitMQ node and a private PostgreSQL cluster
(tessera.testing.faults: the machine's shared ones are never stopped).

One platform (one process per service) runs through the faults in turn. During each, the
pipeline benchmark's workload (bench/pipeline.py: identifies flipping the `gold_tier`
segment, track and page events) is sent at a steady rate by a client that, like the SDKs,
retries a failed request with the same body (same messageIds) until it is answered 200.
Two loopback webhook destinations count the distinct idempotency keys they receive and the
raw duplicate requests.

After each fault, once the pipeline has drained: every event the gateway acknowledged was
accepted once; each membership change of a consenting person reached each destination
exactly once (distinct keys == expected) and each of a refusing person was suppressed;
no dead letter is left; every process is alive; duplicates are counted and reported.

Time budget (see the Makefile's test-faults): about 12 minutes with the defaults
(TESSERA_FAULT_LOAD_S=20 s of load per fault at TESSERA_FAULT_RATE=50 events/s, and the
destination down for TESSERA_FAULT_DESTINATION_DOWN_S=120 s).
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import random
import secrets
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tessera.testing.faults import PrivatePostgres, PrivateRabbit
from tessera.testing.platform import SERVICES, Platform
from tessera.testing.webhook_receiver import WebhookReceiver

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_pipeline", ROOT / "bench" / "pipeline.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_pipeline"] = bench  # its dataclasses look their module up
_spec.loader.exec_module(bench)

LOAD_S = float(os.environ.get("TESSERA_FAULT_LOAD_S", "20"))
RATE = float(os.environ.get("TESSERA_FAULT_RATE", "50"))  # events/s
DESTINATION_DOWN_S = float(os.environ.get("TESSERA_FAULT_DESTINATION_DOWN_S", "120"))
BATCH = 10
PROFILES = 1000
IDENTIFY_SHARE = 0.25
FAULT_AT_S = 5.0  # into the load
GIVE_UP_S = 300.0  # a client retrying one request longer than this records it unacknowledged
DRAIN_TIMEOUT_S = 600.0
REPORT = os.environ.get("TESSERA_FAULT_REPORT")  # a file to append each fault's figures to


# ---- the load: the benchmark's events, sent steadily, retried until acknowledged -------
@dataclass
class Sent:
    events: int = 0
    requests: int = 0
    failed_attempts: int = 0  # attempts that got no 200 (and were retried)
    unacknowledged: int = 0  # requests given up after GIVE_UP_S
    longest_retry_s: float = 0.0
    consenting_flips: int = 0
    refusing_flips: int = 0
    errors: list[str] = field(default_factory=list)


class SteadyLoad:
    def __init__(self, base_url: str, state: dict):
        self.base_url, self.state = base_url, state
        self.sent = Sent()
        self._jobs: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._rng = random.Random(secrets.randbits(32))

    def _batch(self) -> bytes:
        when = bench._iso(time.time())
        events = []
        for _ in range(max(1, round(BATCH * IDENTIFY_SHARE))):
            index = self.state["order"][self.state["cursor"] % PROFILES]
            self.state["cursor"] += 1
            tiers = self.state["tiers"]
            tiers[index] = "gold" if tiers[index] != "gold" else "silver"
            events.append(bench._identify(index, tiers[index], when))
            if bench.consents(index):
                self.sent.consenting_flips += 1
            else:
                self.sent.refusing_flips += 1
        while len(events) < BATCH:
            events.append(bench._behaviour(self._rng, self._rng.randrange(PROFILES), when))
        return json.dumps({"batch": events, "sentAt": when}).encode()

    def _send_until_acknowledged(self, client: httpx.Client, body: bytes) -> None:
        started = time.monotonic()
        while True:
            try:
                answer = client.post(f"{self.base_url}/v1/batch", content=body, headers={
                    "Authorization": bench._auth_header(), "Content-Type": "application/json"})
                if answer.status_code == 200:
                    break
                error = f"HTTP {answer.status_code}"
            except httpx.HTTPError as failure:
                error = type(failure).__name__
            with self._lock:
                self.sent.failed_attempts += 1
                if len(self.sent.errors) < 5:
                    self.sent.errors.append(error)
                if time.monotonic() - started > GIVE_UP_S:
                    self.sent.unacknowledged += 1
                    return
            time.sleep(0.5)
        with self._lock:
            self.sent.requests += 1
            self.sent.events += BATCH
            self.sent.longest_retry_s = max(self.sent.longest_retry_s,
                                            time.monotonic() - started)

    def _sender(self) -> None:
        with httpx.Client(timeout=15) as client:
            while (body := self._jobs.get()) is not None:
                self._send_until_acknowledged(client, body)

    def run(self, seconds: float, during=None) -> Sent:
        """Sends for `seconds` at RATE and calls `during()` FAULT_AT_S in, from this (the
        main) thread: a service restarted by `during` must be started by a thread that
        outlives it (Linux's parent-death signal follows the thread that forked). Returns
        once every batch was acknowledged."""
        senders = [threading.Thread(target=self._sender, daemon=True) for _ in range(8)]
        for sender in senders:
            sender.start()

        def produce() -> None:
            interval, start = BATCH / RATE, time.monotonic()
            for k in range(round(seconds * RATE / BATCH)):
                time.sleep(max(0.0, start + k * interval - time.monotonic()))
                self._jobs.put(self._batch())

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        try:
            time.sleep(FAULT_AT_S)
            if during:
                during()
        finally:
            producer.join()
            for _ in senders:
                self._jobs.put(None)
            for sender in senders:
                sender.join()
        return self.sent


# ---- the environment: private broker and database, platform, destinations -------------
@pytest.fixture(scope="module")
def rabbit():
    with PrivateRabbit() as node:
        yield node


@pytest.fixture(scope="module")
def postgres():
    with PrivatePostgres() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def receiver():
    receiver = WebhookReceiver(secrets.token_hex(8))
    receiver.start()
    yield receiver
    receiver.stop()


class Supervisor:
    """Starts again any service process that exits, 2 s later, as Kubernetes would
    (restartPolicy: Always). It is the only one that starts processes once the platform
    is up, from its own thread, which lives as long as the platform does (a child dies
    with the thread that started it)."""

    def __init__(self, platform: Platform):
        self.platform = platform
        self.restarts: list[tuple[str, int]] = []  # (service, exit code)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.3):
            for service, process in zip(self.platform.services, self.platform.processes,
                                        strict=True):
                if process.poll() is not None and not self._stop.is_set():
                    self.restarts.append((service, process.returncode))
                    say(f"supervisor: {service} exited with {process.returncode}; "
                        "starting it again in 2 s")
                    time.sleep(2)
                    self.platform.restart(service)

    def start(self) -> Supervisor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def platform(rabbit, postgres, receiver):
    destinations = [{"name": name, "kind": "webhook",
                     "config": {"url": receiver.url_for("{destination}")},
                     "secret_env": bench.SECRET_ENV, "segments": [bench.SEGMENT],
                     "purposes": [purpose]} for name, purpose in bench.DESTINATIONS]
    platform = Platform(mode="real", write_keys={"web": bench.WRITE_KEY},
                        destinations=destinations,
                        destination_secrets={bench.SECRET_ENV: receiver.secret.decode()},
                        amqp_base=rabbit.amqp_base, rabbit_node=rabbit.node,
                        postgres_port=postgres.port,
                        extra_env={"TESSERA_RATE_LIMIT": "0"})
    platform.start(timeout=180)
    try:
        platform.define_segment(bench.SEGMENT, bench.SEGMENT_RULE)
        bench.warm_up(platform, PROFILES, 100)
        supervisor = Supervisor(platform).start()
        platform.supervisor = supervisor
        yield platform
        supervisor.stop()
    finally:
        platform.stop()
        platform.cleanup()


@pytest.fixture(scope="module")
def load_state():
    order = list(range(PROFILES))
    random.Random(7).shuffle(order)
    return {"tiers": ["silver"] * PROFILES, "order": order, "cursor": 0}


def say(text: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {text}", flush=True)


# ---- what is checked after each fault ----------------------------------------------------
def ledger(platform: Platform) -> dict[str, int]:
    totals: dict[str, int] = {}
    for figures in platform.admin("GET", "/v1/destinations").json()["deliveries"].values():
        for key in ("delivered", "suppressed", "dead_letters"):
            totals[key] = totals.get(key, 0) + int(figures.get(key) or 0)
    return totals


def accepted(platform: Platform) -> int:
    return platform.admin("GET", "/v1/stats").json()["events"]["accepted"]


def dead_letters(platform: Platform) -> dict[str, list[dict]]:
    return {name: platform.admin("GET", f"/v1/destinations/{name}/dead-letters"
                                 ).json()["dead_letters"] for name, _ in bench.DESTINATIONS}


def replay_dead_letters(platform: Platform) -> int:
    replayed = 0
    for name, letters in dead_letters(platform).items():
        for letter in letters:
            answer = platform.admin(
                "POST", f"/v1/destinations/{name}/dead-letters/{letter['id']}/replay")
            assert answer.status_code == 200, answer.text
            replayed += 1
    return replayed


def wait_drained(platform: Platform) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while True:
        try:
            platform.wait_drained(timeout=60)
            return
        except (TimeoutError, RuntimeError, httpx.HTTPError):
            if time.monotonic() > deadline:
                raise


def run_fault(name: str, platform: Platform, receiver: WebhookReceiver, load_state: dict,
              inject, after=None) -> dict:
    wait_drained(platform)
    time.sleep(1)  # a process the supervisor just started again: let it be seen first
    before_ledger, before_accepted = ledger(platform), accepted(platform)
    before_keys, before_duplicates = len(receiver.items()), receiver.duplicates
    started, restarts_before = time.monotonic(), len(platform.supervisor.restarts)
    sent = SteadyLoad(platform.base_url, load_state).run(LOAD_S, during=inject)
    replayed = after() if after else 0
    wait_drained(platform)
    replayed += replay_dead_letters(platform)  # none expected unless the destination was down
    wait_drained(platform)

    after_ledger = ledger(platform)
    figures = {
        "fault": name,
        "events_acknowledged": sent.events,
        "events_accepted": accepted(platform) - before_accepted,
        "failed_attempts_retried": sent.failed_attempts,
        "longest_client_retry_s": round(sent.longest_retry_s, 1),
        "expected_keys": sent.consenting_flips * len(bench.DESTINATIONS),
        "distinct_keys_received": len(receiver.items()) - before_keys,
        "raw_duplicates": receiver.duplicates - before_duplicates,
        "delivered": after_ledger["delivered"] - before_ledger.get("delivered", 0),
        "suppressed": after_ledger["suppressed"] - before_ledger.get("suppressed", 0),
        "expected_suppressed": sent.refusing_flips * len(bench.DESTINATIONS),
        "dead_letters_replayed": replayed,
        "dead_letters_left": sum(len(v) for v in dead_letters(platform).values()),
        "processes_alive": sum(p.poll() is None for p in platform.processes),
        "restarts": [f"{service} (exit {code})" for service, code
                     in platform.supervisor.restarts[restarts_before:]],
        "seconds": round(time.monotonic() - started, 1),
    }
    if REPORT:
        with Path(REPORT).open("a") as report:
            report.write(json.dumps(figures) + "\n")
    print(f"\nfault: {json.dumps(figures)}")
    assert sent.unacknowledged == 0, (sent.unacknowledged, sent.errors)
    assert figures["events_accepted"] == figures["events_acknowledged"], figures
    assert figures["distinct_keys_received"] == figures["expected_keys"], figures
    assert figures["delivered"] == figures["expected_keys"], figures
    # Every refused change was suppressed; a suppression counted twice (activation killed
    # between recording a batch and acknowledging it) is reported, not hidden.
    assert figures["suppressed"] >= figures["expected_suppressed"], figures
    assert figures["dead_letters_left"] == 0, figures
    assert figures["processes_alive"] == len(SERVICES), figures
    return figures


# ---- the faults ----------------------------------------------------------------------------
@pytest.mark.parametrize("service", SERVICES)
def test_a_service_killed_with_sigkill_and_restarted_loses_nothing(
        service, platform, receiver, load_state):
    def kill():
        say(f"SIGKILL {service} (the supervisor starts it again)")
        assert platform.kill(service, signal.SIGKILL) == -signal.SIGKILL

    run_fault(f"SIGKILL {service}", platform, receiver, load_state, kill)


def test_a_broker_restart_loses_nothing(platform, receiver, load_state, rabbit):
    def restart_broker():
        rabbit.stop_app()
        time.sleep(5)
        rabbit.start_app()

    run_fault("broker restart (stop_app, start_app)", platform, receiver, load_state,
              restart_broker)


def test_a_database_restart_loses_nothing(platform, receiver, load_state, postgres):
    run_fault("PostgreSQL restart", platform, receiver, load_state,
              lambda: postgres.restart(down_seconds=5))


def test_a_destination_down_for_minutes_loses_nothing_once_back(platform, receiver,
                                                                  load_state):
    def back_up_later():
        time.sleep(max(0.0, DESTINATION_DOWN_S - LOAD_S + FAULT_AT_S))
        receiver.fail_next(0)
        return 0

    run_fault(f"destination down {DESTINATION_DOWN_S:.0f} s", platform, receiver, load_state,
              lambda: receiver.fail_next(10**9, status=503), after=back_up_later)
