"""Activation benchmark: webhook deliveries per second, and isolation between destinations.

What runs is activation's own delivery path, in one process, as a destination lane runs
it: ``ActivationApplication.deliver`` takes a planned batch of at most 100 deliveries,
asks consent (a real ``ConsentApplication``, 10,000 profiles, 85% of them consenting)
with ``decide_many`` right before sending, sends the allowed through the webhook
connector (HMAC + Standard Webhooks signatures) to a loopback receiver in its own
process, and records the outcome on the destination's ledger (SQLite event store).

1. Throughput: one destination, batches of 100, for ``--seconds``; the figure counts
   deliveries the webhook acknowledged (the 15% that consent suppresses are decided and
   recorded too, but not counted).
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
import random
import socketserver
import tempfile
import threading
import time
import uuid
from pathlib import Path

from services.activation.application import ActivationApplication
from services.activation.destinations import Destination
from services.consent.application import ConsentApplication
from shared.config import Settings
from tessera.testing.webhook_receiver import spawn_receiver

SECRET = "bench-secret"
PROFILES = 10_000
CONSENTING = 0.85
BATCH = 100
SEGMENT = "gold_tier"


class BadDestination(http.server.BaseHTTPRequestHandler):
    """A misbehaving endpoint: stalls, fails fast with 500, or throttles with 429."""

    protocol_version = "HTTP/1.1"
    behaviour = "stalled"
    released: threading.Event  # set when its measurement is over: stop stalling

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


def serve_bad(behaviour: str) -> tuple[socketserver.TCPServer, str]:
    handler = type(f"Bad_{behaviour}", (BadDestination,),
                   {"behaviour": behaviour, "released": threading.Event()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/hooks/{{destination}}"


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
    """One destination's worker: planned batches of 100, delivered one after another."""

    def __init__(self, app: ActivationApplication, consent: ConsentApplication,
                 destination: str, profiles: list[str]) -> None:
        self.app, self.consent, self.destination = app, consent, destination
        self.profiles = profiles
        self.position = 0
        self.deliveries = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def batch(self) -> list[dict]:
        items = []
        for _ in range(BATCH):
            self.position += 1
            profile = self.profiles[self.position % len(self.profiles)]
            action = "entered" if (self.position // len(self.profiles)) % 2 == 0 else "exited"
            items.append({
                "position": self.position, "destination": self.destination,
                "idempotency_key": f"{self.destination}:{profile}:{SEGMENT}:{self.position}",
                "profile_id": profile, "segment": SEGMENT, "action": action,
                "traits": {"email": f"{profile[:8]}@example.com", "tier": "gold"},
                "occurred_at": "2026-11-29T10:00:00.000Z",
                "cause": {"partition": "0", "position": 0}, "received_at": None})
        return items

    def run(self) -> None:
        key = f"bench/{self.destination}/{uuid.uuid4()}"
        while not self.stop.is_set():
            outcome = self.app.deliver(key, self.destination, self.batch(),
                                       self.consent.decide_many)
            self.deliveries += outcome["delivered"]  # sent and acknowledged; not suppressed

    def start(self) -> Lane:
        self.thread.start()
        return self


def sample(lane: Lane, seconds: float) -> float:
    """The lane's deliveries per second over the next ``seconds``."""
    before, started = lane.deliveries, time.perf_counter()
    time.sleep(seconds)
    return (lane.deliveries - before) / (time.perf_counter() - started)


def beside(app, consent, profiles, healthy: Lane, bad: str, seconds: float, release) -> float:
    """The healthy lane's rate while a bad destination's lane runs beside it."""
    app._breakers.pop(bad, None)  # every window starts the bad lane afresh, pause and all
    neighbour = Lane(app, consent, bad, profiles).start()
    rate = sample(healthy, seconds)
    neighbour.stop.set()
    release.set()  # a stalled call returns at once, so the lane can end
    neighbour.thread.join()
    release.clear()
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per window")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alone/beside window pairs per bad destination")
    args = parser.parse_args()

    receiver, base_url = spawn_receiver(SECRET)
    bad_servers = {name: serve_bad(name) for name in ("stalled", "500-fast", "429-retry-after")}
    data_dir = Path(tempfile.mkdtemp(prefix="tessera-bench-activation-"))
    settings = Settings(data_dir=data_dir, delivery_attempts=5)
    profiles = [str(uuid.UUID(int=random.Random(n).getrandbits(128))) for n in range(PROFILES)]

    def webhook(name: str, url: str, timeout: float = 5.0) -> Destination:
        return Destination(name, "webhook", (SEGMENT,), ("advertising",),
                           {"url": url, "secret": SECRET, "timeout": timeout})

    destinations = [webhook("healthy", base_url + "/hooks/{destination}")] + [
        webhook(name, url, timeout=30.0) for name, (_, url) in bad_servers.items()]
    consent = ConsentApplication(settings)
    app = ActivationApplication(settings, destinations=destinations)
    try:
        seed_consent(consent, profiles)
        healthy = Lane(app, consent, "healthy", profiles).start()
        time.sleep(2.0)  # warm up: connections open, caches filled
        throughput = sample(healthy, args.seconds)
        print(f"throughput: {throughput:,.0f} deliveries/s (batches of {BATCH}, consent "
              "decided per batch at send time)", flush=True)
        kept = []
        for bad, (server, _) in bad_servers.items():
            # Alone and beside alternate in short windows: the load other engineers put
            # on the shared cores drifts, and alternating cancels most of that drift.
            alone = side = 0.0
            for _ in range(args.rounds):
                alone += sample(healthy, args.seconds)
                side += beside(app, consent, profiles, healthy, bad, args.seconds,
                               server.RequestHandlerClass.released)
            kept.append(100 * side / alone)
            print(f"healthy alone {alone / args.rounds:,.0f} deliveries/s, beside {bad} "
                  f"{side / args.rounds:,.0f} deliveries/s ({kept[-1]:.0f}%)", flush=True)
        healthy.stop.set()
        healthy.thread.join()
        print(f"activation: {throughput:,.0f} deliveries/s; healthy destination keeps "
              f"{min(kept):.0f}% of its throughput beside a stalled one", flush=True)
    finally:
        receiver.terminate()
        receiver.wait()
        for server, _ in bad_servers.values():
            server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
