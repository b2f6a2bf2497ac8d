"""Soak: the whole platform (one process per service, RabbitMQ + PostgreSQL) under a steady
moderate load for a long time, watching each service's memory.

The load is the pipeline benchmark's (bench/pipeline.py: its generator process, its
warm-up, its two loopback webhook destinations). Every SAMPLE_S seconds the resident set
size (VmRSS) of each service process is sampled. At the end, the growth of each service
over the last 30 minutes (or the last half of a shorter run) is the slope of a least-squares
line through its samples, in MB per hour; the bound is 20 MB/h per service.

It ends with one line::

    soak: <N> events over <M> min; worst memory growth <X> MB/h (<service>)

Usage::

    python bench/soak.py [--minutes 60] [--rate 100] [--profiles 5000] [--private]

``--private`` runs on a RabbitMQ node and a PostgreSQL cluster of its own
(tessera.testing.faults), not on this machine's shared ones. Exit code 1 if a service
grew faster than the bound or the pipeline lost a delivery.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pipeline as bench

from tessera.testing.platform import Platform
from tessera.testing.webhook_receiver import spawn_receiver

SAMPLE_S = 10.0
WINDOW_S = 30 * 60
BOUND_MB_PER_H = 20.0


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def slope_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) points, in MB per hour."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_m = sum(m for _, m in samples) / n
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    if spread == 0:
        return 0.0
    return 3600 * sum((t - mean_t) * (m - mean_m) for t, m in samples) / spread


def growth(samples: dict[str, list[tuple[float, float]]], duration_s: float
           ) -> dict[str, float]:
    window = WINDOW_S if duration_s >= 2 * WINDOW_S else duration_s / 2
    return {service: slope_per_hour([(t, m) for t, m in points if t >= duration_s - window])
            for service, points in samples.items()}


def sample_forever(platform: Platform, samples: dict, started: float,
                   stop: threading.Event) -> None:
    while not stop.wait(SAMPLE_S if samples[platform.services[0]] else 0):
        now = time.monotonic() - started
        for service, process in zip(platform.services, platform.processes, strict=True):
            mb = rss_mb(process.pid)
            if mb is not None:
                samples[service].append((now, mb))


def run(args: argparse.Namespace) -> int:
    secret = secrets.token_hex(16)
    receiver, receiver_url = spawn_receiver(secret)
    destinations = [{"name": name, "kind": "webhook",
                     "config": {"url": f"{receiver_url}/hooks/{{destination}}"},
                     "secret_env": bench.SECRET_ENV, "segments": [bench.SEGMENT],
                     "purposes": [purpose]} for name, purpose in bench.DESTINATIONS]
    private = contextlib.ExitStack()
    where = {}
    if args.private:
        from tessera.testing.faults import PrivatePostgres, PrivateRabbit
        rabbit = private.enter_context(PrivateRabbit())
        postgres = private.enter_context(PrivatePostgres())
        where = {"amqp_base": rabbit.amqp_base, "rabbit_node": rabbit.node,
                 "postgres_port": postgres.port}
    platform = Platform(mode="real", write_keys={"web": bench.WRITE_KEY},
                        destinations=destinations,
                        destination_secrets={bench.SECRET_ENV: secret},
                        extra_env={"TESSERA_RATE_LIMIT": "0"}, **where)
    workdir = Path(tempfile.mkdtemp(prefix="tessera-soak-"))
    stop = threading.Event()
    try:
        platform.start(timeout=180)
        platform.define_segment(bench.SEGMENT, bench.SEGMENT_RULE)
        bench.warm_up(platform, args.profiles, 100)
        order = list(range(args.profiles))
        spec = {"base_url": platform.base_url, "rate": args.rate, "batch": 50,
                "seconds": args.minutes * 60, "profiles": args.profiles,
                "identify_share": 0.25, "senders": 4, "seed": secrets.randbits(32),
                "tiers": ["silver"] * args.profiles, "order": order, "cursor": 0}
        (workdir / "spec.json").write_text(json.dumps(spec))
        httpx_delete = __import__("httpx").delete
        httpx_delete(f"{receiver_url}/_received", timeout=30).raise_for_status()
        samples: dict[str, list[tuple[float, float]]] = {s: [] for s in platform.services}
        started = time.monotonic()
        sampler = threading.Thread(target=sample_forever,
                                   args=(platform, samples, started, stop), daemon=True)
        sampler.start()
        print(f"soak: {args.minutes:g} min at {args.rate:g} events/s, "
              f"RSS sampled every {SAMPLE_S:g} s", flush=True)
        generator = subprocess.run(
            [sys.executable, str(Path(bench.__file__).resolve()), "--generate",
             str(workdir / "spec.json"), str(workdir / "result.json")],
            stdout=subprocess.DEVNULL, timeout=args.minutes * 60 + 600)
        duration = time.monotonic() - started
        stop.set()
        sampler.join()
        if generator.returncode != 0:
            print(f"soak: the generator failed (exit code {generator.returncode})")
            return 1
        result = json.loads((workdir / "result.json").read_text())
        platform.wait_drained(timeout=600)
        received = __import__("httpx").get(f"{receiver_url}/_received", timeout=120).json()
        return report(samples, duration, result, received)
    finally:
        stop.set()
        platform.stop()
        platform.cleanup()
        receiver.terminate()
        receiver.wait()
        private.close()


def report(samples, duration: float, result: dict, received: dict) -> int:
    rates = growth(samples, duration)
    for service, points in samples.items():
        if not points:
            continue
        print(f"  {service:<11} RSS {points[0][1]:7.1f} -> {points[-1][1]:7.1f} MB; "
              f"growth over the window {rates[service]:+7.1f} MB/h "
              f"({len(points)} samples)")
    delivered, expected = len(received["items"]), result["expected_deliveries"]
    print(f"  requests failed {result['failed']}, deliveries {delivered}/{expected}, "
          f"raw duplicates {received['duplicates']}")
    worst = max(rates, key=rates.get)
    window_min = (WINDOW_S if duration >= 2 * WINDOW_S else duration / 2) / 60
    print(f"soak: {result['ok'] * 50} events over {duration / 60:.0f} min; worst memory "
          f"growth {rates[worst]:.1f} MB/h ({worst}) over the last {window_min:.1f} min")
    healthy = (rates[worst] <= BOUND_MB_PER_H and delivered == expected
               and result["failed"] == 0)
    return 0 if healthy else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--rate", type=float, default=100, help="events/s")
    parser.add_argument("--profiles", type=int, default=5000)
    parser.add_argument("--private", action="store_true",
                        help="a RabbitMQ node and PostgreSQL cluster of its own")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
