"""Pipeline benchmark: sustained events/s from the gateway to two loopback webhooks.

For each mode (``embedded``: one ``tessera up`` process on kombu ``memory://`` + SQLite;
``real``: one process per service on RabbitMQ + PostgreSQL) this script

1. measures raw kombu publish+consume on the same broker (``memory://`` or RabbitMQ),
   persistent messages to a durable queue it declares and deletes: the ceiling;
2. starts a loopback webhook receiver and the platform with two webhook destinations
   (``audience_a`` needs "advertising", ``audience_b`` "marketing"), both following the
   segment ``gold_tier`` (trait ``tier`` eq "gold");
3. warms up (not measured): one identify per profile with email, anonymousId and
   ``tier: silver``; 85% of them carry consent for both purposes, the rest none (so
   their deliveries are suppressed, fail-closed); then waits for the pipeline to drain;
4. climbs the rates: per step a generator *process* (this file, ``--generate``) sends
   open-loop ``batch``-event requests to ``POST /v1/batch`` at a fixed rate for
   ``step-seconds`` — batch k is due at t0 + k·batch/rate whatever the earlier answers;
   a quarter of the events (``--identify-share``) are identifies flipping a profile's
   ``tier`` gold <-> silver (each one changes ``gold_tier`` membership, so a consenting
   profile yields one delivery per destination), the rest track/page events of random
   profiles. After the last send it polls ``/v1/status`` until drained (backlog) and
   reads what the receiver got (latency = arrival at the receiver - gateway receipt).
   A step passes when backlog < 1 s, p99 < 2 s, no request failed and no request was
   sent more than 1 s behind its schedule. Climbing stops at the first failing step.

It ends with one line per mode::

    pipeline: <mode> <N> events/s sustained, p50 <ms> ms, p99 <ms> ms, <R> of raw broker

Usage::

    python bench/pipeline.py [--modes embedded,real] [--rates 250,500,1000,1500,2000]
                             [--step-seconds 120] [--profiles 10000] [--batch 100] [--quick]

``--quick``: 10 s steps at 200 and 400 events/s with 2,000 profiles (smoke run).
See bench/README.md for how to read the output.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import os
import queue
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

# ---- the workload ---------------------------------------------------------------------
WRITE_KEY = "wk_bench_web"
SEGMENT = "gold_tier"
SEGMENT_RULE = {"trait": "tier", "op": "eq", "value": "gold"}
DESTINATIONS = (("audience_a", "advertising"), ("audience_b", "marketing"))
SECRET_ENV = "TESSERA_BENCH_WEBHOOK_SECRET"
TRACK_EVENTS = ("Product Viewed", "Added to Cart", "Order Completed", "Checkout Started")
PAGES = (("Home", "/"), ("Catalog", "/catalog"), ("Product", "/p/42"), ("Cart", "/cart"))

# ---- pass criteria and bounds -----------------------------------------------------------
MAX_BACKLOG_S = 1.0
MAX_P99_S = 2.0
MAX_LATENESS_S = 1.0  # a request sent later than this behind its schedule fails the step
LATE_S = 0.1  # ... and one later than this is counted as "late"
DRAIN_CAP_S = 60.0
STATUS_POLL_S = 0.05
DRAINED_OBSERVATIONS = 3  # consecutive drained answers before we believe it
HTTP_TIMEOUT_S = 30.0
WARMUP_DRAIN_TIMEOUT_S = 900.0
RAW_TIMEOUT_S = 120.0
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
LOG_NOISE = ("Eventlet is deprecated", "EventletDeprecationWarning", "import eventlet",
             "we strongly recommend", "framework.", "eventlet.readthedocs.io",
             "If you are already using Eventlet")
LOG_SIGNAL = re.compile(r"Traceback|Error|ERROR|Exception|CRITICAL|WARNING|Warning")


def user_id(index: int) -> str:
    return f"bench-u{index:06d}"


def consents(index: int) -> bool:
    """85% of profiles consent to both purposes (deterministic: 17 of every 20)."""
    return index % 20 < 17


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _auth_header() -> str:
    return "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (nan when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


# =======================================================================================
# The load generator (its own process: ``pipeline.py --generate spec.json result.json``)
# =======================================================================================
def _identify(index: int, tier: str, when: str) -> dict[str, Any]:
    return {"type": "identify", "userId": user_id(index), "messageId": str(uuid.uuid4()),
            "timestamp": when, "traits": {"tier": tier}}


def _behaviour(rng: random.Random, index: int, when: str) -> dict[str, Any]:
    # Most events carry the userId; some only the anonymousId the warm-up linked to it.
    ids = ({"anonymousId": f"bench-a{index:06d}"} if rng.random() < 0.2
           else {"userId": user_id(index)})
    if rng.random() < 0.3:
        name, path = rng.choice(PAGES)
        return {"type": "page", **ids, "messageId": str(uuid.uuid4()), "timestamp": when,
                "name": name, "properties": {"path": path}}
    return {"type": "track", **ids, "messageId": str(uuid.uuid4()), "timestamp": when,
            "event": rng.choice(TRACK_EVENTS),
            "properties": {"sku": f"sku-{rng.randrange(500)}",
                           "price": round(rng.uniform(5, 200), 2)}}


def run_generator(spec: dict[str, Any]) -> dict[str, Any]:
    """Send open-loop for ``spec['seconds']`` at ``spec['rate']`` events/s; report."""
    rate, batch, seconds = float(spec["rate"]), int(spec["batch"]), float(spec["seconds"])
    profiles, tiers, order = int(spec["profiles"]), list(spec["tiers"]), spec["order"]
    cursor = int(spec["cursor"])
    identifies_per_batch = max(1, round(batch * float(spec["identify_share"])))
    total_batches = max(1, round(rate * seconds / batch))
    interval = batch / rate
    rng = random.Random(spec["seed"])
    url = f"{spec['base_url']}/v1/batch"
    headers = {"Authorization": _auth_header(), "Content-Type": "application/json"}

    jobs: queue.Queue = queue.Queue()
    lock = threading.Lock()
    outcome = {"ok": 0, "failed": 0, "late": 0, "max_lateness": 0.0, "errors": [],
               "last_send": 0.0, "last_done": 0.0}
    response_times: list[float] = []

    def sender() -> None:
        with httpx.Client(timeout=HTTP_TIMEOUT_S,
                          limits=httpx.Limits(max_keepalive_connections=1)) as client:
            while True:
                job = jobs.get()
                if job is None:
                    return
                due_mono, body = job
                start = time.monotonic()
                lateness = start - due_mono
                error = None
                try:
                    response = client.post(url, content=body, headers=headers)
                    if response.status_code != 200:
                        error = f"HTTP {response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as failure:
                    error = f"{type(failure).__name__}: {failure}"
                done = time.monotonic()
                with lock:
                    outcome["late"] += lateness > LATE_S
                    outcome["max_lateness"] = max(outcome["max_lateness"], lateness)
                    outcome["last_send"] = max(outcome["last_send"], start)
                    outcome["last_done"] = max(outcome["last_done"], done)
                    response_times.append(done - start)
                    if error is None:
                        outcome["ok"] += 1
                    else:
                        outcome["failed"] += 1
                        if len(outcome["errors"]) < 5:
                            outcome["errors"].append(error)

    threads = [threading.Thread(target=sender, daemon=True, name=f"sender-{n}")
               for n in range(int(spec["senders"]))]
    for thread in threads:
        thread.start()
    time.sleep(0.2)  # let the threads reach jobs.get()

    consenting_flips = refusing_flips = 0
    cpu0 = time.process_time()
    mono0 = time.monotonic() + 0.05
    wall0 = time.time() + (mono0 - time.monotonic())
    for k in range(total_batches):
        due_mono = mono0 + k * interval
        when = _iso(wall0 + k * interval)
        events = []
        for _ in range(identifies_per_batch):
            index = order[cursor % profiles]
            cursor += 1
            tiers[index] = "gold" if tiers[index] != "gold" else "silver"
            events.append(_identify(index, tiers[index], when))
            if consents(index):
                consenting_flips += 1
            else:
                refusing_flips += 1
        events += [_behaviour(rng, rng.randrange(profiles), when)
                   for _ in range(batch - identifies_per_batch)]
        rng.shuffle(events)
        body = json.dumps({"batch": events, "sentAt": when}, separators=(",", ":")).encode()
        delay = due_mono - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        jobs.put((due_mono, body))
    for _ in threads:
        jobs.put(None)
    join_deadline = time.monotonic() + HTTP_TIMEOUT_S + 30
    for thread in threads:
        thread.join(timeout=max(0.1, join_deadline - time.monotonic()))
    stuck = sum(thread.is_alive() for thread in threads)
    cpu = time.process_time() - cpu0
    now_mono, now_wall = time.monotonic(), time.time()

    def to_wall(mono: float) -> float:
        return now_wall - (now_mono - mono) if mono else 0.0

    response_times.sort()
    return {
        "t0": wall0,
        "last_due": wall0 + (total_batches - 1) * interval,
        "scheduled_end": wall0 + total_batches * interval,
        "last_send": to_wall(outcome["last_send"]),
        "last_done": to_wall(outcome["last_done"]),
        "requests": total_batches,
        "ok": outcome["ok"],
        "failed": outcome["failed"] + stuck,
        "late": outcome["late"],
        "max_lateness": outcome["max_lateness"],
        "errors": outcome["errors"] + ([f"{stuck} sender(s) still waiting"] if stuck else []),
        "events": total_batches * batch,
        "identifies": total_batches * identifies_per_batch,
        "expected_deliveries": consenting_flips * len(DESTINATIONS),
        "expected_suppressions": refusing_flips * len(DESTINATIONS),
        "cpu_seconds": cpu,
        "wall_seconds": max(1e-9, to_wall(outcome["last_done"]) - wall0),
        "response_p50": percentile(response_times, 0.50),
        "response_p99": percentile(response_times, 0.99),
        "tiers": tiers,
        "cursor": cursor,
    }


def generator_main(spec_path: str, result_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    result = run_generator(spec)
    Path(result_path).write_text(json.dumps(result))
    return 0


# =======================================================================================
# Raw broker baseline
# =======================================================================================
def raw_broker(broker_url: str, messages: int) -> dict[str, float]:
    """Publish ``messages`` small persistent JSON messages to a durable queue from one
    thread while another consumes and acks them (two connections, one process, no
    publisher confirms); msg/s = messages / (first publish -> last ack)."""
    from kombu import Connection, Consumer, Exchange, Producer, Queue

    if broker_url.startswith("memory://"):
        # The transport configured exactly as the embedded platform configures it.
        from shared.messaging.broker import apply_embedded_transport_fixes

        apply_embedded_transport_fixes()
    name = f"tessera-bench-raw-{secrets.token_hex(4)}"
    target = Queue(name, exchange=Exchange("", type="direct"), routing_key=name,
                   durable=True)
    received = 0
    done = threading.Event()
    published: dict[str, float] = {}
    failure: list[BaseException] = []

    with Connection(broker_url) as consumer_conn, Connection(broker_url) as producer_conn:
        channel = consumer_conn.channel()
        target(channel).declare()
        try:
            def on_message(body, message) -> None:
                nonlocal received
                message.ack()
                received += 1
                if received >= messages:
                    done.set()

            def produce() -> None:
                try:
                    producer = Producer(producer_conn.channel(), serializer="json")
                    start = time.perf_counter()
                    for n in range(messages):
                        producer.publish({"n": n, "type": "bench.raw", "payload": "x" * 64},
                                         routing_key=name, delivery_mode=2)
                    published["seconds"] = time.perf_counter() - start
                except BaseException as error:  # reported by the consuming thread
                    failure.append(error)
                    done.set()

            with Consumer(channel, [target], callbacks=[on_message], prefetch_count=1000):
                start = time.perf_counter()
                thread = threading.Thread(target=produce, daemon=True)
                thread.start()
                deadline = time.monotonic() + RAW_TIMEOUT_S
                while not done.is_set() and time.monotonic() < deadline:
                    with contextlib.suppress(TimeoutError, OSError):
                        consumer_conn.drain_events(timeout=0.5)
                elapsed = time.perf_counter() - start
                thread.join(timeout=10)
        finally:
            with contextlib.suppress(Exception):
                target(consumer_conn.channel()).delete()
    if failure:
        raise RuntimeError(f"raw broker publish failed: {failure[0]!r}")
    if received < messages:
        raise RuntimeError(f"raw broker: {received} of {messages} consumed in {RAW_TIMEOUT_S}s")
    return {"msg_per_s": messages / elapsed,
            "publish_per_s": messages / published.get("seconds", elapsed)}


# =======================================================================================
# Driving one mode
# =======================================================================================
@dataclass
class Step:
    rate: int
    sent: int = 0
    achieved: float = 0.0
    late: int = 0
    failed: int = 0
    max_lateness: float = 0.0
    backlog: float = math.inf
    p50: float = math.nan
    p99: float = math.nan
    deliveries: int = 0
    expected: int = 0
    gen_cpu: float = 0.0
    response_p99: float = math.nan
    errors: list[str] = field(default_factory=list)
    log_lines: list[str] = field(default_factory=list)
    cpu: str = ""
    timeline: str = ""
    envelopes: str = ""

    @property
    def passed(self) -> bool:
        return (self.backlog < MAX_BACKLOG_S and self.p99 < MAX_P99_S and self.failed == 0
                and self.max_lateness < MAX_LATENESS_S)

    def why(self) -> str:
        reasons = []
        if not self.backlog < MAX_BACKLOG_S:
            reasons.append("backlog")
        if not self.p99 < MAX_P99_S:
            reasons.append("p99")
        if self.failed:
            reasons.append("failed requests")
        if self.max_lateness >= MAX_LATENESS_S:
            reasons.append("sends >1 s late")
        return "pass" if not reasons else "FAIL (" + ", ".join(reasons) + ")"


@dataclass
class ModeResult:
    mode: str
    raw_msg_per_s: float = math.nan
    raw_publish_per_s: float = math.nan
    steps: list[Step] = field(default_factory=list)
    error: str | None = None

    @property
    def best(self) -> Step | None:
        passed = [s for s in self.steps if s.passed]
        return max(passed, key=lambda s: s.rate) if passed else None


class LogWatch:
    """New noteworthy lines of the platform's process logs since the last call: log records
    at WARNING and above and the last line of each traceback (the exception itself)."""

    def __init__(self, platform) -> None:
        self.platform = platform
        self.offsets: dict[Path, int] = {}
        self.seen_any = False

    def new_lines(self) -> list[str]:
        counts: dict[str, int] = {}
        if self.platform.workdir is None:
            return []
        for path in sorted(self.platform.workdir.glob("process-*.log")):
            with path.open("rb") as handle:
                handle.seek(self.offsets.get(path, 0))
                chunk = handle.read()
                self.offsets[path] = handle.tell()
            for line in chunk.decode(errors="replace").splitlines():
                if (not LOG_SIGNAL.search(line) or line[:1].isspace()
                        or line.startswith("Traceback") or any(n in line for n in LOG_NOISE)):
                    continue
                key = f"{path.name}: {line.strip()[:300]}"
                counts[key] = counts.get(key, 0) + 1
        self.seen_any = self.seen_any or bool(counts)
        return [f"{line}" + (f"  (x{n})" if n > 1 else "") for line, n in counts.items()]

    def keep(self) -> Path | None:
        """Copy the process logs somewhere that outlives the platform's cleanup."""
        if self.platform.workdir is None:
            return None
        kept = Path(tempfile.mkdtemp(prefix=f"tessera-bench-logs-{self.platform.mode}-"))
        for path in self.platform.workdir.glob("process-*.log"):
            shutil.copy(path, kept / path.name)
        return kept


class CpuWatch:
    """CPU used by each platform process, and by the whole machine, between two calls
    (from /proc; Linux only — elsewhere the figures are left out)."""

    def __init__(self, platform) -> None:
        self.platform = platform
        self.last: tuple[float, dict[str, float], tuple[float, float]] | None = None

    @staticmethod
    def _process_seconds(pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return math.nan

    @staticmethod
    def _machine() -> tuple[float, float]:
        try:
            values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        except (OSError, ValueError):
            return math.nan, math.nan
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values) - idle, sum(values)

    def sample(self) -> tuple[float, dict[str, float], tuple[float, float]]:
        names = (["tessera up"] if self.platform.mode == "embedded"
                 else ["gateway", "identity", "contacts", "segments", "consent", "activation"])
        seconds = {name: self._process_seconds(process.pid)
                   for name, process in zip(names, self.platform.processes, strict=False)}
        return time.monotonic(), seconds, self._machine()

    def start(self) -> None:
        self.last = self.sample()

    def report(self, generator_percent: float) -> str:
        if self.last is None:
            return ""
        (t0, before, (busy0, total0)), (t1, after, (busy1, total1)) = self.last, self.sample()
        wall = max(1e-9, t1 - t0)
        parts = [f"{name} {100 * (after[name] - before[name]) / wall:.0f}%"
                 for name in after if name in before
                 and math.isfinite(after[name] - before[name])]
        machine = (100 * (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1)
                   if total1 > total0 else math.nan)
        total = sum(after[n] - before[n] for n in after if n in before) / wall * 100
        rest = machine - total - generator_percent
        return (f"CPU while sending (% of one core): {', '.join(parts)}"
                + (f" = platform {total:.0f}%" if len(parts) > 1 else "")
                + f"; whole machine {machine:.0f}% of {(os.cpu_count() or 1) * 100}%, "
                f"of which {rest:.0f}% neither platform nor generator (broker, database, "
                f"receiver, anything else running)")


def _say(text: str = "") -> None:
    print(text, flush=True)


def _post_batch(client: httpx.Client, base_url: str, events: list[dict]) -> None:
    response = client.post(f"{base_url}/v1/batch",
                           json={"batch": events, "sentAt": _iso(time.time())},
                           headers={"Authorization": _auth_header()})
    if response.status_code != 200:
        raise RuntimeError(f"warm-up batch answered {response.status_code}: {response.text}")


def warm_up(platform, profiles: int, batch: int) -> None:
    """One identify per profile (email, anonymousId, tier silver; consent for 85%)."""
    started = time.monotonic()
    calls = []
    for index in range(profiles):
        event = {"type": "identify", "userId": user_id(index),
                 "anonymousId": f"bench-a{index:06d}", "messageId": str(uuid.uuid4()),
                 "timestamp": _iso(time.time()),
                 "traits": {"email": f"{user_id(index)}@example.com", "tier": "silver",
                            "firstName": f"Bench{index}"}}
        if consents(index):
            event["context"] = {"consent": {"categoryPreferences": {
                "advertising": True, "marketing": True}}}
        calls.append(event)
    batches = [calls[i:i + batch] for i in range(0, len(calls), batch)]
    with httpx.Client(timeout=HTTP_TIMEOUT_S) as client:
        for events in batches:
            _post_batch(client, platform.base_url, events)
    sent = time.monotonic() - started
    platform.wait_drained(timeout=WARMUP_DRAIN_TIMEOUT_S)
    rejections = platform.admin("GET", "/v1/rejections?limit=5").json().get("rejections", [])
    _say(f"  warm-up: {profiles} identifies sent in {sent:.1f} s, drained after "
         f"{time.monotonic() - started:.1f} s"
         + (f"; REJECTED events, e.g. {rejections[:2]}" if rejections else ""))


def ledger_totals(platform) -> dict[str, int]:
    """Activation's own counts, summed over the destinations."""
    try:
        stats = platform.admin("GET", "/v1/destinations").json()["deliveries"]
    except (httpx.HTTPError, ValueError, KeyError):
        return {}
    totals: dict[str, int] = {}
    for ledger in stats.values():
        for key in ("delivered", "suppressed", "duplicates", "dead_letters"):
            totals[key] = totals.get(key, 0) + int(ledger.get(key) or 0)
    return totals


def envelopes(platform) -> dict[str, int]:
    """Envelopes (batches) each service's outbox relay has published so far."""
    try:
        return {s["service"]: int(s.get("published_envelopes") or 0)
                for s in platform.status()["services"]}
    except (httpx.HTTPError, RuntimeError, KeyError, TypeError, ValueError):
        return {}


def wait_backlog(platform, last_due: float) -> float:
    """Seconds from the last scheduled send until /v1/status said drained (and kept saying
    it for DRAINED_OBSERVATIONS answers in a row); inf past DRAIN_CAP_S."""
    deadline = time.monotonic() + DRAIN_CAP_S
    first_drained = None
    calm = 0
    while time.monotonic() < deadline:
        try:
            drained = bool(platform.status().get("drained"))
        except (httpx.HTTPError, RuntimeError):
            drained = False
        answered = time.time()
        if drained:
            first_drained = first_drained or answered
            calm += 1
            if calm >= DRAINED_OBSERVATIONS:
                return max(0.0, first_drained - last_due)
        else:
            first_drained, calm = None, 0
        time.sleep(STATUS_POLL_S)
    return math.inf


def run_step(platform, receiver_url: str, state: dict[str, Any], rate: int,
             args: argparse.Namespace, workdir: Path, logs: LogWatch) -> Step:
    step = Step(rate=rate)
    httpx.delete(f"{receiver_url}/_received", timeout=30).raise_for_status()
    spec = {"base_url": platform.base_url, "rate": rate, "batch": args.batch,
            "seconds": args.step_seconds, "profiles": args.profiles,
            "identify_share": args.identify_share, "senders": args.senders,
            "seed": secrets.randbits(32), **state}
    spec_path, result_path = workdir / f"spec-{rate}.json", workdir / f"result-{rate}.json"
    spec_path.write_text(json.dumps(spec))
    ledger_before = ledger_totals(platform)
    envelopes_before = envelopes(platform)
    cpu = CpuWatch(platform)
    cpu.start()
    generator = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--generate",
                                  str(spec_path), str(result_path)],
                                 stdout=subprocess.DEVNULL)
    try:
        deadline = args.step_seconds + HTTP_TIMEOUT_S + 90
        try:
            generator.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            generator.kill()
            generator.wait()
            raise RuntimeError(f"the generator did not finish within {deadline:.0f}s") from None
        if generator.returncode != 0 or not result_path.exists():
            raise RuntimeError(f"the generator failed (exit code {generator.returncode})")
    finally:
        if generator.poll() is None:
            generator.kill()
            generator.wait()
    result = json.loads(result_path.read_text())
    step.gen_cpu = 100.0 * result["cpu_seconds"] / result["wall_seconds"]
    step.cpu = cpu.report(step.gen_cpu)  # over the sending only, not the draining
    step.backlog = wait_backlog(platform, result["last_due"])
    # Drained (or past the cap): what arrived by now is what this step delivered.
    received = httpx.get(f"{receiver_url}/_received", timeout=120).json()
    items = [i for i in received["items"] if i.get("received_at")]
    latencies = sorted(i["arrived_at"] - _epoch(i["received_at"]) for i in items
                       if _epoch(i["received_at"]) >= result["t0"] - 0.5)
    step.deliveries = len(latencies)
    step.expected = result["expected_deliveries"]
    missing = max(0, step.expected - step.deliveries)
    if math.isfinite(step.backlog) and items:
        # Belt and braces: the last arrival also bounds the backlog from below.
        step.backlog = max(step.backlog, max(i["arrived_at"] for i in items) - result["last_due"])
    if latencies:
        # p50 latency per tenth of the step, by gateway receipt: a steady climb means the
        # pipeline is short of throughput, a bump a stall.
        tenths: list[list[float]] = [[] for _ in range(10)]
        span = max(1e-9, result["scheduled_end"] - result["t0"])
        for item in items:
            received_at = _epoch(item["received_at"])
            slot = min(9, max(0, int(10 * (received_at - result["t0"]) / span)))
            tenths[slot].append(item["arrived_at"] - received_at)
        step.timeline = " ".join(f"{percentile(sorted(t), 0.5):.2f}" if t else "-"
                                 for t in tenths)
    # A delivery that never arrived counts as an infinitely late one.
    ranked = latencies + [math.inf] * missing
    step.p50, step.p99 = percentile(ranked, 0.50), percentile(ranked, 0.99)
    step.sent = result["events"]
    window = max(1e-9, result["last_send"] - result["t0"] + args.batch / rate)
    step.achieved = result["ok"] * args.batch / window
    step.late, step.failed = result["late"], result["failed"]
    step.max_lateness = result["max_lateness"]
    step.response_p99 = result["response_p99"]
    step.errors = result["errors"]
    if received.get("duplicates"):
        step.errors.append(f"receiver saw {received['duplicates']} duplicate deliveries")
    if step.deliveries > step.expected:
        step.errors.append(f"{step.deliveries - step.expected} deliveries more than expected")
    envelopes_after = envelopes(platform)
    published = {name: n - envelopes_before.get(name, 0) for name, n in envelopes_after.items()
                 if n - envelopes_before.get(name, 0) > 0}
    if published:
        # Few events per envelope = per-message costs (commit, publish, confirm) dominate.
        step.envelopes = ("envelopes published over the step: "
                          + ", ".join(f"{name} {n}" for name, n in published.items())
                          + (f" ({step.sent / published['gateway']:.1f} events per gateway "
                             "envelope)" if published.get("gateway") else ""))
    ledger_after = ledger_totals(platform)
    ledger = {k: ledger_after.get(k, 0) - ledger_before.get(k, 0) for k in ledger_after}
    if ledger and (ledger.get("delivered") != step.expected
                   or ledger.get("suppressed") != result["expected_suppressions"]
                   or ledger.get("dead_letters") or ledger.get("duplicates")):
        step.errors.append(
            f"activation's ledger over the step: {ledger} (expected delivered "
            f"{step.expected}, suppressed {result['expected_suppressions']})")
    step.log_lines = logs.new_lines()
    state["tiers"], state["cursor"] = result["tiers"], result["cursor"]
    return step


HEADER = (f"{'rate':>6} {'sent':>8} {'achieved':>9} {'late':>5} {'failed':>6} "
          f"{'backlog s':>9} {'p50 ms':>7} {'p99 ms':>7} {'deliveries':>15} "
          f"{'resp p99':>8} {'gen CPU':>7}  result")


def _ms(value: float) -> str:
    return "inf" if math.isinf(value) else ("n/a" if math.isnan(value) else f"{value * 1000:.0f}")


def format_step(step: Step) -> str:
    backlog = f">{DRAIN_CAP_S:.0f}" if math.isinf(step.backlog) else f"{step.backlog:.2f}"
    return (f"{step.rate:>6} {step.sent:>8} {step.achieved:>9.0f} {step.late:>5} "
            f"{step.failed:>6} {backlog:>9} {_ms(step.p50):>7} {_ms(step.p99):>7} "
            f"{f'{step.deliveries}/{step.expected}':>15} {_ms(step.response_p99):>8} "
            f"{step.gen_cpu:>6.1f}%  {step.why()}")


@contextlib.contextmanager
def _signals_deferred():
    """Hold SIGINT/SIGTERM while cleaning up; act on them (once) afterwards."""
    pending: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: pending.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pending:
            raise KeyboardInterrupt(f"signal {pending[0]}")


def _stop_everything(platform, logs: LogWatch, result: ModeResult,
                     receiver: subprocess.Popen, workdir: Path) -> None:
    """Stop the platform and the receiver and remove our files, whatever fails on the way."""
    def attempt(what: str, action) -> None:
        try:
            action()
        except Exception as error:
            _say(f"  could not {what}: {type(error).__name__}: {error}")

    def stop_receiver() -> None:
        receiver.terminate()
        try:
            receiver.wait(timeout=10)
        except subprocess.TimeoutExpired:
            receiver.kill()
            receiver.wait()

    attempt("stop the platform", platform.stop)
    if logs.seen_any or result.error:
        attempt("keep the platform logs",
                lambda: _say(f"  platform logs kept in {logs.keep()}"))
    attempt("remove the platform's work directory", platform.cleanup)
    attempt("stop the receiver", stop_receiver)
    attempt("remove the benchmark's files", lambda: shutil.rmtree(workdir))


def run_mode(mode: str, args: argparse.Namespace) -> ModeResult:
    from tessera.testing.platform import Platform
    from tessera.testing.webhook_receiver import spawn_receiver

    result = ModeResult(mode)
    _say(f"\n== {mode}: "
         + ("one `tessera up` process, kombu memory:// + SQLite" if mode == "embedded"
            else "one process per service, RabbitMQ + PostgreSQL"))
    broker_url = "memory://" if mode == "embedded" else RABBITMQ_URL
    raw = raw_broker(broker_url, args.raw_messages)
    result.raw_msg_per_s, result.raw_publish_per_s = raw["msg_per_s"], raw["publish_per_s"]
    _say(f"  raw kombu on {broker_url.split('@')[-1]}: {result.raw_msg_per_s:,.0f} msg/s "
         f"publish+consume ({result.raw_publish_per_s:,.0f} msg/s publish alone), "
         f"{args.raw_messages:,} persistent messages, no confirms")

    secret = secrets.token_hex(16)
    receiver, receiver_url = spawn_receiver(secret)
    destinations = [{"name": name, "kind": "webhook",
                     "config": {"url": f"{receiver_url}/hooks/{{destination}}"},
                     "secret_env": SECRET_ENV, "segments": [SEGMENT], "purposes": [purpose]}
                    for name, purpose in DESTINATIONS]
    platform = Platform(mode=mode, write_keys={"web": WRITE_KEY}, destinations=destinations,
                        destination_secrets={SECRET_ENV: secret})
    workdir = Path(tempfile.mkdtemp(prefix=f"tessera-bench-{mode}-"))
    logs = LogWatch(platform)
    try:
        started = time.monotonic()
        platform.start(timeout=120)
        _say(f"  platform up in {time.monotonic() - started:.1f} s "
             f"({len(platform.processes)} process(es), logs in {platform.workdir})")
        platform.define_segment(SEGMENT, SEGMENT_RULE)
        warm_up(platform, args.profiles, args.batch)
        for line in logs.new_lines()[:10]:
            _say(f"  log: {line}")
        order = list(range(args.profiles))
        random.Random(7).shuffle(order)
        state = {"tiers": ["silver"] * args.profiles, "order": order, "cursor": 0}
        _say(f"  steps of {args.step_seconds:g} s, {args.batch}-event batches, "
             f"{args.identify_share:.0%} identifies flipping {SEGMENT}")
        _say("  " + HEADER)
        for rate in args.rates:
            step = run_step(platform, receiver_url, state, rate, args, workdir, logs)
            result.steps.append(step)
            _say("  " + format_step(step))
            if step.cpu:
                _say(f"         {step.cpu}")
            if step.envelopes:
                _say(f"         {step.envelopes}")
            if step.timeline:
                _say(f"         p50 latency per tenth of the step, s: {step.timeline}")
            for error in step.errors:
                _say(f"         ! {error}")
            for line in step.log_lines[:8]:
                _say(f"         log: {line}")
            if len(step.log_lines) > 8:
                _say(f"         log: ... {len(step.log_lines) - 8} more such lines")
            if not step.passed:
                break
            with contextlib.suppress(TimeoutError, RuntimeError, httpx.HTTPError):
                platform.wait_drained(timeout=DRAIN_CAP_S)
    except Exception as error:
        result.error = f"{type(error).__name__}: {error}"
        _say(f"  ERROR: {result.error}")
        tail = platform.logs(tail=20)
        if tail:
            _say("  platform log tail:\n    " + tail.replace("\n", "\n    "))
    finally:
        # A second Ctrl-C (or SIGTERM) must not cut the clean-up short.
        with _signals_deferred():
            _stop_everything(platform, logs, result, receiver, workdir)
    return result


def summary_lines(results: list[ModeResult]) -> list[str]:
    notes, lines = [], []
    for result in results:
        if not result.steps:
            notes.append(f"{result.mode}: no step ran ({result.error})")
            continue
        best = result.best
        shown = best or min(result.steps, key=lambda s: s.rate)
        sustained = best.rate if best else 0
        if best is None:
            notes.append(f"{result.mode}: no rate passed; p50/p99 below are from the lowest "
                         f"rate tried, {shown.rate} events/s")
        ratio = sustained / result.raw_msg_per_s if result.raw_msg_per_s else 0.0
        lines.append(f"pipeline: {result.mode} {sustained} events/s sustained, "
                     f"p50 {_ms(shown.p50)} ms, p99 {_ms(shown.p99)} ms, "
                     f"{ratio:.2f} of raw broker")
    return [f"note: {n}" for n in notes] + lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/pipeline.py",
        description="Sustained events/s, gateway -> two loopback webhooks, per mode.")
    parser.add_argument("--modes", default="embedded,real",
                        help="comma-separated: embedded, real (default: both)")
    parser.add_argument("--rates", help="events/s per step, ascending "
                        "(default 250,500,1000,1500,2000; --quick: 200,400)")
    parser.add_argument("--step-seconds", type=float, help="default 120 (--quick: 10)")
    parser.add_argument("--profiles", type=int, help="default 10000 (--quick: 2000)")
    parser.add_argument("--batch", type=int, default=100, help="events per request")
    parser.add_argument("--identify-share", type=float, default=0.25,
                        help="share of events that flip segment membership (>= 0.2)")
    parser.add_argument("--senders", type=int, default=32,
                        help="generator threads sending concurrently (keep-alive each)")
    parser.add_argument("--raw-messages", type=int, default=20_000,
                        help="messages for the raw kombu baseline")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 10 s steps, rates 200,400, 2,000 profiles")
    args = parser.parse_args(argv)
    quick = args.quick
    args.rates = [int(r) for r in (args.rates or ("200,400" if quick
                                                   else "250,500,1000,1500,2000")).split(",")]
    args.step_seconds = args.step_seconds or (10.0 if quick else 120.0)
    args.profiles = args.profiles or (2000 if quick else 10_000)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for mode in args.modes:
        if mode not in ("embedded", "real"):
            parser.error(f"unknown mode {mode!r}: embedded or real")
    if not 0.2 <= args.identify_share <= 1:
        parser.error("--identify-share must be between 0.2 and 1")
    if any(r <= 0 for r in args.rates) or args.rates != sorted(args.rates):
        parser.error("--rates must be positive and ascending")
    per_batch = max(1, round(args.batch * args.identify_share))
    if args.profiles < 4 * per_batch:
        parser.error("--profiles too small for the batch: a profile would flip twice at once")
    return args


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--generate"]:
        return generator_main(argv[1], argv[2])
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # stop the platform on SIGTERM too
    _say(f"pipeline benchmark: modes {', '.join(args.modes)}; rates {args.rates} events/s; "
         f"{args.step_seconds:g} s steps; {args.profiles:,} profiles; "
         f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.2f} at start")
    _say(f"pass: backlog < {MAX_BACKLOG_S:g} s after the last send, p99 gateway -> webhook "
         f"< {MAX_P99_S:g} s, no failed request, no send > {MAX_LATENESS_S:g} s late")
    results = []
    try:
        for mode in args.modes:
            results.append(run_mode(mode, args))
    except KeyboardInterrupt:
        _say("\ninterrupted: platform and receiver stopped")
        return 130
    _say("")
    for line in summary_lines(results):
        _say(line)
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
