"""Console benchmark: each page's server time with at least 100,000 profiles loaded.

1. **Load.** ``--profiles`` generated people (fixed seed: a user id, an email, a country,
   a plan; one in five consents to advertising) are sent through the public tracking API
   (``POST /v1/batch``, 500 events a batch, 4 senders) to a platform started as the demo
   starts it (embedded by default, ``--mode real`` for RabbitMQ + PostgreSQL), with one
   segment and one webhook destination; the pipeline is drained before anything is timed,
   so every page reads the services' read models as they stand (no replay). The load is
   not timed as a page.
2. **Pages.** Signed in as the admin (the console's cookie), each page is requested
   ``--requests`` times one after another, each timed from request to the whole answer
   (httpx against the running gateway), for people picked at random from the load.
   Two pages used to read every service's whole store: a person's full history (the
   services' subject exports, now through each service's subject index) and the audit
   verification (now incremental, from the last checkpoint verified; the first view on a
   store never verified runs in full); they are timed ``--heavy-requests`` times
   (default 5), so that a run of the old code ends too.

3. **Keeping the load.** ``--data-dir DIR`` keeps the platform's files (and, real mode,
   its database) in DIR after the run, with what was loaded in ``DIR/bench.json``;
   ``--reuse`` starts the platform again on them and skips the load, so 100,000 profiles
   are loaded once and timed as often as needed (the same ``--profiles``, ``--seed`` and
   ``--mode`` as the load; the platform's code may have changed in between, which is the
   point: a before/after on the same data).

It prints p50/p95/max per page and ends with one line::

    console: worst page p95 <ms> ms at <N> profiles

Usage::

    python bench/console.py [--profiles 100000] [--requests 50] [--mode embedded|real]
                            [--data-dir DIR [--reuse]] [--pages overview,audit verification]
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from shared.audit import SERVICES as AUDITED
from shared.audit import MissingStore, open_audit_store, signing_key_pem
from shared.config import Settings
from tessera.testing.platform import Platform
from tessera.testing.webhook_receiver import WebhookReceiver

WRITE_KEY = "wk_bench_console"
BATCH = 500
SENDERS = 4
PLANS = ("free", "basic", "pro", "enterprise")
COUNTRIES = ("FR", "DE", "GB", "US", "ES")


def people(n: int, seed: int):
    rng = random.Random(seed)
    for i in range(n):
        consent = {"consent": {"categoryPreferences": {"advertising": True}}} \
            if rng.random() < 0.2 else {}
        yield {"type": "identify", "userId": f"u-{i:07d}", "messageId": str(uuid.uuid4()),
               "context": consent,
               "traits": {"email": f"person{i}@bench.example", "plan": rng.choice(PLANS),
                          "country": rng.choice(COUNTRIES)}}


def load(platform: Platform, n: int, seed: int, on_sent=None) -> None:
    started = time.perf_counter()
    batches, batch = [], []
    for event in people(n, seed):
        batch.append(event)
        if len(batch) == BATCH:
            batches.append(batch)
            batch = []
    if batch:
        batches.append(batch)

    def send(events):
        answer = httpx.post(f"{platform.base_url}/v1/batch", auth=(WRITE_KEY, ""),
                            json={"batch": events}, timeout=300)
        answer.raise_for_status()

    with ThreadPoolExecutor(SENDERS) as pool:
        for done, _ in enumerate(pool.map(send, batches), 1):
            if done % 40 == 0:
                print(f"  sent {done * BATCH:>7} events ({time.perf_counter() - started:.0f} s)",
                      flush=True)
    print(f"  sent {n} in {time.perf_counter() - started:.0f} s; draining", flush=True)
    if on_sent is not None:
        on_sent()
    drain(platform)
    print(f"  drained after {time.perf_counter() - started:.0f} s", flush=True)


def drain(platform: Platform, seconds: float = 3600) -> None:
    """A platform busy draining may not answer one status call in time (a timeout, or a
    503 when a service did not answer the gateway within its RPC timeout): ask again."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            platform.wait_drained(timeout=max(1.0, deadline - time.monotonic()))
            return
        except (httpx.TimeoutException, RuntimeError):
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def audit_signing_env(mode: str, data_dir: Path | None) -> dict[str, str]:
    """Real mode signs nothing without a configured key, and then the audit page has
    nothing to verify: the benchmark gives it one (kept with the load, for --reuse)."""
    if mode != "real":
        return {}  # embedded mode generates its own into the data directory
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = signing_key_pem(Ed25519PrivateKey.generate())
    if data_dir is not None:
        kept = data_dir / "bench-audit-signing-key.pem"
        if not kept.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            kept.write_bytes(pem)
        pem = kept.read_bytes()
    return {"TESSERA_AUDIT_SIGNING_KEY": pem.decode()}


def wait_sealed(platform: Platform, seconds: float = 900) -> None:
    """Until every service's sealer has sealed what is stored: the audit page then times
    its verification, not a store half sealed."""
    settings = Settings(data_dir=platform.workdir / "data",
                        database="postgres" if platform.mode == "real" else "sqlite",
                        postgres_dbname=platform.database or "tessera",
                        postgres_port=platform.postgres_port)
    deadline = time.monotonic() + seconds
    for service in AUDITED:
        while time.monotonic() < deadline:
            try:
                store = open_audit_store(settings, service)
            except MissingStore:
                break
            try:
                if store.has_audit_tables() and next(
                        store.events(after=store.sealed_to(), limit=1), None) is None:
                    break
            finally:
                store.close()
            time.sleep(2)
    print(f"  sealed ({time.monotonic() - deadline + seconds:.0f} s)", flush=True)


def reused_database(data_dir: Path, loaded: dict) -> str | None:
    """The database of a kept load, after checking it was loaded as this run asks."""
    record = data_dir / "bench.json"
    if not record.exists():
        raise SystemExit(f"{data_dir} holds no finished load ({record.name} missing)")
    kept = json.loads(record.read_text())
    if {key: kept[key] for key in loaded} != loaded:
        raise SystemExit(f"{data_dir} was loaded with {kept}, not {loaded}")
    return kept["database"]


def timed(client: httpx.Client, paths: list[str]) -> list[float]:
    latencies = []
    for path in paths:
        started = time.perf_counter()
        answer = client.get(path)
        latencies.append((time.perf_counter() - started) * 1000)
        if answer.status_code not in (200, 303):
            raise RuntimeError(f"{path}: {answer.status_code} {answer.text[:200]}")
    return latencies


def p95(latencies: list[float]) -> float:
    if len(latencies) < 2:
        return latencies[0]
    return statistics.quantiles(latencies, n=20, method="inclusive")[18]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--heavy-requests", type=int, default=5)
    parser.add_argument("--mode", choices=("embedded", "real"), default="embedded")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data-dir", type=Path, help="keep the loaded platform's data here")
    parser.add_argument("--reuse", action="store_true",
                        help="start on --data-dir's data as loaded before; do not load")
    parser.add_argument("--pages", help="comma-separated page names to time (default: all)")
    args = parser.parse_args()
    if args.reuse and args.data_dir is None:
        parser.error("--reuse needs --data-dir")

    receiver = WebhookReceiver(secrets.token_hex(8))
    receiver.start()
    platform = Platform(
        mode=args.mode, write_keys={"bench": WRITE_KEY},
        destinations=[{"name": "ads", "kind": "webhook", "segments": ["enterprise"],
                       "purposes": ["advertising"], "secret_env": "TESSERA_BENCH_SECRET",
                       "config": {"url": receiver.url_for("{destination}")}}],
        destination_secrets={"TESSERA_BENCH_SECRET": receiver.secret.decode()},
        kept_dir=args.data_dir, extra_env=audit_signing_env(args.mode, args.data_dir))
    loaded = {"profiles": args.profiles, "seed": args.seed, "mode": args.mode}
    if args.reuse:
        platform.database = reused_database(args.data_dir, loaded)
    print(f"console bench: {args.profiles} profiles, {args.mode} platform"
          f"{', reusing ' + str(args.data_dir) if args.reuse else ''}", flush=True)
    try:
        platform.start(timeout=600)  # a reused 100k store may take a while to open
        if args.reuse:  # what a stopped run left undrained is drained first
            drain(platform)
        else:
            platform.define_segment("enterprise", {"trait": "plan", "op": "eq",
                                                   "value": "enterprise"})

            def keep_load():
                if args.data_dir is not None:  # all sent: reusable, if drained on reuse
                    (args.data_dir / "bench.json").write_text(
                        json.dumps(loaded | {"database": platform.database}))

            load(platform, args.profiles, args.seed, on_sent=keep_load)
        wait_sealed(platform)
        client = httpx.Client(base_url=platform.base_url, timeout=900,
                              headers={"Accept": "text/html"})
        client.post("/console/sign-in", data={"token": platform.admin_token})
        rng = random.Random(args.seed + 1)
        picks = [rng.randrange(args.profiles) for _ in range(args.requests)]
        profile_ids = [platform.admin("GET", "/v1/profiles", params={"userId": f"u-{i:07d}"}
                                      ).json()["profile_id"] for i in picks]
        pages = {
            "overview": ["/console"] * args.requests,
            "profile search": [f"/console/profiles?kind=email&q=person{i}%40bench.example"
                               for i in picks],
            "profile 360": [f"/console/profiles/{p}" for p in profile_ids],
            "segments": ["/console/segments"] * args.requests,
            "segment": ["/console/segments/enterprise"] * args.requests,
            "destinations": ["/console/destinations"] * args.requests,
            "destination": ["/console/destinations/ads"] * args.requests,
            "compliance": ["/console/compliance"] * args.requests,
            "person's history": [f"/console/compliance/subject?identifier="
                                 f"{quote(f'user_id:u-{i:07d}')}"
                                 for i in picks[:args.heavy_requests]],
            "processing records": ["/console/compliance/processing-records"] * args.requests,
            "audit verification": ["/console/compliance/audit"] * args.heavy_requests,
        }
        if args.pages:
            wanted = {name.strip() for name in args.pages.split(",")}
            if unknown := wanted - pages.keys():
                raise SystemExit(f"unknown pages: {sorted(unknown)}; known: {sorted(pages)}")
            pages = {name: paths for name, paths in pages.items() if name in wanted}
        timed(client, ["/console", "/console/segments"] * 3)  # warm up
        print(f"\n  {'page':<20} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        worst, worst_page = 0.0, ""
        for name, paths in pages.items():
            latencies = timed(client, paths)
            if p95(latencies) > worst:
                worst, worst_page = p95(latencies), name
            print(f"  {name:<20} {len(latencies):4d} {statistics.median(latencies):8.1f} "
                  f"{p95(latencies):8.1f} "
                  f"{max(latencies):8.1f}", flush=True)
        print(f"  (worst: {worst_page})")
    finally:
        platform.stop()
        platform.cleanup()
        receiver.stop()
    print(f"console: worst page p95 {worst:.0f} ms at {args.profiles} profiles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
