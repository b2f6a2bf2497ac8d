"""Activation benchmark: webhook deliveries per second, and isolation between destinations.

What runs is activation's own delivery path, in one process, as a destination lane runs
it: ``ActivationApplication.deliver`` takes a planned batch of at most 100 deliveries,
asks consent (a real ``ConsentApplication``, 10,000 profiles, 85% of them consenting)
with ``decide_many`` right before sending, sends the allowed through the webhook
connector (HMAC + Standard Webhooks signatures) to a loopback receiver in its own
process, and records the outcome on the destination's ledger (SQLite event store).

1. Throughput: one destination, batches of 100, for ``--seconds``; the figure counts
   deliveries the webhook acknowledged (the 15% that consent suppresses are decided and
   recorded too, but not counted). One lane by default; ``--lanes N`` gives each
   destination N lanes (a worker each, the people split between them as the service
   splits them), and ``--vendor-latency-ms`` makes the healthy webhook answer later, as a
   distant vendor does: what lanes are for.
2. Isolation: the healthy destination's rate alone and beside each bad one in turn,
   in alternating windows (``--rounds`` pairs of ``--seconds``) — stalled
   (every call takes 10 s), failing fast with 500, answering 429 with ``Retry-After: 1``.
   Each destination has its own worker (the platform gives each its own queue and
   lane); all share the application, its store and consent, as in the service.

Ends with: ``activation: <N> deliveries/s; healthy destination keeps <P>% of its
throughput beside a stalled one`` where P is the worst of the three bad neighbours.
"""

from __future__ import annotations

import argparse
import http.server
import multiprocessing
import random
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.sdk.delivery import DestinationPaused
from services.activation.application import ActivationApplication
from services.activation.destinations import Destination, lane_of
from services.consent.application import ConsentApplication
from shared.config import Settings
from shared.contracts import lane_partition
from tessera.testing.webhook_receiver import spawn_receiver

SECRET = "bench-secret"
PROFILES = 10_000
CONSENTING = 0.85
BATCH = 100
SEGMENT = "gold_tier"
BEHAVIOURS = ("stalled", "500-fast", "429-retry-after")
LANES = 1


class BadDestination(http.server.BaseHTTPRequestHandler):
    """A misbehaving endpoint: stalls, fails fast with 500, or throttles with 429."""

    protocol_version = "HTTP/1.1"
    behaviour = "stalled"
    released: Any  # a multiprocessing Event, set when its window is over: stop stalling

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, headers = {"stalled": (200, {}), "500-fast": (500, {}),
                           "429-retry-after": (429, {"Retry-After": "1"})}[self.behaviour]
        if self.behaviour == "stalled":
            self.released.wait(10)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()


def serve_bad(behaviour: str, released, ready) -> None:
    """Runs in its own process, as a vendor would: its threads never take our GIL."""
    handler = type(f"Bad_{behaviour}", (BadDestination,),
                   {"behaviour": behaviour, "released": released})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    ready.send(server.server_address[1])
    server.serve_forever()


class BadServer:
    """A bad destination's endpoint in a child process; ``released`` ends its stalls."""

    def __init__(self, behaviour: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.released = context.Event()
        receiving, sending = context.Pipe(duplex=False)
        self.process = context.Process(target=serve_bad, args=(behaviour, self.released,
                                                               sending), daemon=True)
        self.process.start()
        self.url = f"http://127.0.0.1:{receiving.recv()}/hooks/{{destination}}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.join()


def seed_consent(consent: ConsentApplication, profiles: list[str]) -> None:
    """Identity's links for every profile; a consent record for 85% of them."""
    rng = random.Random(7)
    for start in range(0, len(profiles), 500):
        items = []
        for offset, profile in enumerate(profiles[start:start + 500]):
            event = {"type": "identify", "timestamp": "2026-11-29T10:00:00Z"}
            if rng.random() < CONSENTING:
                event["context"] = {"consent": {"categoryPreferences": {"advertising": True}}}
            items.append({"position": start + offset + 1, "profile_id": profile,
                          "source": "bench", "event": event,
                          "identifiers": [["email", f"{profile[:8]}@example.com"]],
                          "merged_from": []})
        consent.apply_resolved("identity/identity.resolved/0", items)


class Lane:
    """One lane of a destination: planned batches of 100 for the people whose deliveries
    take this lane, delivered one after another, as the lane's queue consumer does."""

    def __init__(self, app: ActivationApplication, consent: ConsentApplication,
                 destination: str, profiles: list[str], lane: int = 0, lanes: int = 1) -> None:
        self.app, self.consent, self.destination = app, consent, destination
        self.lane, self.partition = lane, lane_partition(destination, lane)
        self.profiles = [p for p in profiles if lane_of(p, lanes) == lane]
        self.position = 0
        self.deliveries = 0
        self.final_cpu = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def batch(self) -> list[dict]:
        items = []
        for _ in range(BATCH):
            self.position += 1
            profile = self.profiles[self.position % len(self.profiles)]
            action = "entered" if (self.position // len(self.profiles)) % 2 == 0 else "exited"
            items.append({
                "position": self.position, "destination": self.destination, "lane": self.lane,
                "idempotency_key": f"{self.destination}:{profile}:{SEGMENT}:{self.position}",
                "profile_id": profile, "segment": SEGMENT, "action": action,
                "traits": {"email": f"{profile[:8]}@example.com", "tier": "gold"},
                "occurred_at": "2026-11-29T10:00:00.000Z",
                "cause": {"partition": "0", "position": 0}, "received_at": None})
        return items

    def run(self) -> None:
        key = f"bench/{self.partition}/{uuid.uuid4()}"
        batch = self.batch()
        while not self.stop.is_set():
            try:
                outcome = self.app.deliver(key, self.partition, batch,
                                           self.consent.decide_many)
            except DestinationPaused as paused:
                # As the service's lane does: the same batch again once the pause is over,
                # and nothing done meanwhile.
                self.stop.wait(paused.retry_after)
                continue
            self.deliveries += outcome["delivered"]  # sent and acknowledged; not suppressed
            batch = self.batch()
        self.final_cpu = time.thread_time()

    def start(self) -> Lane:
        self.thread.start()
        return self


class Lanes:
    """A destination's lanes, each its own worker thread (the service: each its own queue
    consumer), counted together."""

    def __init__(self, app: ActivationApplication, consent: ConsentApplication,
                 destination: str, profiles: list[str], lanes: int) -> None:
        self.lanes = [Lane(app, consent, destination, profiles, lane, lanes)
                      for lane in range(lanes)]

    @property
    def deliveries(self) -> int:
        return sum(lane.deliveries for lane in self.lanes)

    def start(self) -> Lanes:
        for lane in self.lanes:
            lane.start()
        return self

    def stop(self) -> None:
        for lane in self.lanes:
            lane.stop.set()

    def join(self) -> None:
        for lane in self.lanes:
            lane.thread.join()


def thread_cpu(lanes: Lanes | None) -> float:
    """CPU seconds the lanes' threads have used so far (0 for none)."""
    return sum(_lane_cpu(lane) for lane in lanes.lanes) if lanes is not None else 0.0


def _lane_cpu(lane: Lane) -> float:
    if lane.thread.ident is None:
        return 0.0
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(lane.thread.ident))
    except OSError:  # the thread has ended
        return lane.final_cpu


@dataclass
class Window:
    """What one measuring window saw. CPU times are load-independent where wall-clock
    rates are not: on a shared machine they say what a neighbour costs even when the
    rates drift with other people's work."""

    deliveries: int = 0
    seconds: float = 0.0
    healthy_cpu: float = 0.0  # CPU seconds of the healthy lane's thread
    neighbour_cpu: float = 0.0  # ... and of the bad neighbour's (0 alone)

    def __iadd__(self, other: Window) -> Window:
        self.deliveries += other.deliveries
        self.seconds += other.seconds
        self.healthy_cpu += other.healthy_cpu
        self.neighbour_cpu += other.neighbour_cpu
        return self

    @property
    def rate(self) -> float:
        return self.deliveries / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_1000(self) -> float:
        """The healthy lane's own CPU milliseconds per 1,000 deliveries."""
        return 1e6 * self.healthy_cpu / self.deliveries if self.deliveries else 0.0

    @property
    def neighbour_share(self) -> float:
        """The neighbour's CPU as a share of one core over the window, in %."""
        return 100 * self.neighbour_cpu / self.seconds if self.seconds else 0.0


def sample(lane: Lanes, seconds: float, neighbour: Lanes | None = None) -> Window:
    """The lane's deliveries over the next ``seconds``, and the CPU both lanes used."""
    before, started = lane.deliveries, time.perf_counter()
    cpu, neighbour_cpu = thread_cpu(lane), thread_cpu(neighbour)
    time.sleep(seconds)
    return Window(lane.deliveries - before, time.perf_counter() - started,
                  thread_cpu(lane) - cpu, thread_cpu(neighbour) - neighbour_cpu)


def beside(app, consent, profiles, healthy: Lanes, bad: str, seconds: float,
           server: BadServer | None, lanes: int) -> Window:
    """The healthy lanes' window while a bad destination's lanes run beside them."""
    app._circuits.pop(bad, None)  # every window starts the bad lanes afresh, circuit closed
    neighbour = Lanes(app, consent, bad, profiles, lanes)
    if server is not None:
        neighbour.start()
    window = sample(healthy, seconds, neighbour if server is not None else None)
    neighbour.stop()
    if server is not None:
        server.released.set()  # a stalled call returns at once, so the lanes can end
        neighbour.join()
        server.released.clear()
    return window


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per window")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alone/beside window pairs per bad destination")
    parser.add_argument("--bad", nargs="+", choices=BEHAVIOURS, default=list(BEHAVIOURS),
                        help="which bad neighbours to measure beside (default: all three)")
    parser.add_argument("--lanes", type=int, default=LANES,
                        help=f"delivery lanes per destination (default {LANES})")
    parser.add_argument("--vendor-latency-ms", type=float, default=0.0,
                        help="the healthy webhook answers this much later (default: at once)")
    parser.add_argument("--control", action="store_true",
                        help="first measure beside an idle neighbour: the noise floor")
    args = parser.parse_args()

    receiver, base_url = spawn_receiver(SECRET, latency_ms=args.vendor_latency_ms)
    bad_servers = {name: BadServer(name) for name in args.bad}
    data_dir = Path(tempfile.mkdtemp(prefix="tessera-bench-activation-"))
    settings = Settings(data_dir=data_dir, delivery_attempts=5)
    profiles = [str(uuid.UUID(int=random.Random(n).getrandbits(128))) for n in range(PROFILES)]

    def webhook(name: str, url: str, timeout: float = 5.0) -> Destination:
        return Destination(name, "webhook", (SEGMENT,), ("advertising",),
                           {"url": url, "secret": SECRET, "timeout": timeout},
                           lanes=args.lanes)

    destinations = [webhook("healthy", base_url + "/hooks/{destination}")] + [
        webhook(name, server.url, timeout=30.0) for name, server in bad_servers.items()]
    consent = ConsentApplication(settings)
    app = ActivationApplication(settings, destinations=destinations)
    neighbours: dict[str, BadServer | None] = {"idle": None} if args.control else {}
    neighbours.update(bad_servers)
    try:
        seed_consent(consent, profiles)
        healthy = Lanes(app, consent, "healthy", profiles, args.lanes).start()
        time.sleep(2.0)  # warm up: connections open, caches filled
        throughput = sample(healthy, args.seconds).rate
        print(f"throughput: {throughput:,.0f} deliveries/s (batches of {BATCH}, consent "
              f"decided per batch at send time, {args.lanes} lanes)", flush=True)
        kept = []
        for bad, server in neighbours.items():
            # Alone and beside alternate in short windows, in turn first and second: the
            # load other engineers put on the shared cores drifts, and this cancels most of
            # that drift (not bursts).
            alone, side = Window(), Window()
            for round_ in range(args.rounds):
                if round_ % 2:
                    side += beside(app, consent, profiles, healthy, bad, args.seconds, server,
                                   args.lanes)
                alone += sample(healthy, args.seconds)
                if not round_ % 2:
                    side += beside(app, consent, profiles, healthy, bad, args.seconds, server,
                                   args.lanes)
            wall = 100 * side.rate / alone.rate
            if server is not None:
                kept.append(wall)
            print(f"healthy alone {alone.rate:,.0f} deliveries/s, beside {bad} "
                  f"{side.rate:,.0f} deliveries/s ({wall:.0f}%); healthy lane CPU per 1,000 "
                  f"deliveries {alone.cpu_per_1000:.0f} ms alone, {side.cpu_per_1000:.0f} ms "
                  f"beside; the {bad} lane used {side.neighbour_share:.1f}% of a core",
                  flush=True)
        healthy.stop()
        healthy.join()
        print(f"activation: {throughput:,.0f} deliveries/s; healthy destination keeps "
              f"{min(kept):.0f}% of its throughput beside a stalled one", flush=True)
    finally:
        receiver.terminate()
        receiver.wait()
        for server in bad_servers.values():
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
