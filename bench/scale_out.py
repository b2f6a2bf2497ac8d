"""How contacts' throughput changes from one replica to two, on RabbitMQ + PostgreSQL.

Sends the scale-out workload (people x events each, merges across partitions halfway; see
tessera/testing/scale_workload.py) to `tessera run contacts` with one replica, then with
two, each time in a fresh RabbitMQ vhost and PostgreSQL database, and times it from the
first publish until contacts has drained (queues empty, nothing in flight, outbox
published). Ends with:

    scale_out: contacts 1 replica N events/s, 2 replicas M events/s, speed-up Rx, ...

(`--replicas 3` compares one replica with three.)

On a 2-core machine that also runs RabbitMQ, PostgreSQL and this script, a second replica
mostly shows that sharing costs nothing; the speed-up needs cores to spread onto.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

# The RPC proxy imports nameko, which imports eventlet, which announces its deprecation.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import httpx  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from shared.contracts import IDENTITY_RESOLVED  # noqa: E402
from shared.messaging.broker import partition_queue, queue_depths  # noqa: E402
from tessera.testing.platform import Platform  # noqa: E402
from tessera.testing.scale_workload import people_and_merges, send_everything  # noqa: E402


def drained(platform: Platform, partitions: int) -> bool:
    queues = [partition_queue("contacts", IDENTITY_RESOLVED, str(p)) for p in range(partitions)]
    if any(queue_depths(platform.broker_url, queues).values()):
        return False
    with platform.rpc() as rpc:
        status = rpc.contacts.status()
    return status["in_flight"] == 0 and not status["retrying"] and status["outbox_backlog"] == 0


def processed(platform: Platform) -> list[float]:
    figures = []
    for port in platform.ops_ports:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        figures.append(sum(s.value for f in text_string_to_metric_families(text)
                           for s in f.samples if s.name == "tessera_events_processed_total"))
    return figures


def run(replicas: int, args) -> tuple[float, list[float]]:
    people, absorbed_by = people_and_merges(args.people, args.merges, args.partitions)
    platform = Platform(mode="real", services=("contacts",) * replicas,
                        partitions=args.partitions).start()
    try:
        started = time.monotonic()
        sent = send_everything(platform.broker_url, people, absorbed_by, args.events_each,
                               args.partitions)
        while not drained(platform, args.partitions):
            time.sleep(0.25)
        elapsed = time.monotonic() - started
        shares = processed(platform)
    finally:
        platform.stop()
        platform.cleanup()
    rate = sent / elapsed
    print(f"  {replicas} replica(s): {sent} events in {elapsed:.1f} s = {rate:,.0f} events/s; "
          f"processed per replica {[int(s) for s in shares]}", flush=True)
    return rate, shares


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--events-each", type=int, default=50)
    parser.add_argument("--merges", type=int, default=10)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--replicas", type=int, default=2, help="compared with one")
    args = parser.parse_args()
    one, _ = run(1, args)
    many, shares = run(args.replicas, args)
    total = sum(shares) or 1
    split = "/".join(f"{100 * s / total:.0f}%" for s in shares)
    print(f"scale_out: contacts 1 replica {one:,.0f} events/s, {args.replicas} replicas "
          f"{many:,.0f} events/s, speed-up {many / one:.2f}x, work split {split} "
          f"({args.people * args.events_each:,} events, {args.partitions} partitions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
