"""`tessera demo`: the embedded platform, a realistic data set, every figure checked.

The generator knows the truth (who is who, who consented, who belongs where); the demo
sends the data through the real HTTP API with Segment's own Python client, waits until
the pipeline is drained, and checks what the platform says and what the loopback webhook
actually received against that truth. Any mismatch exits non-zero.
"""

from __future__ import annotations

import secrets
import sys
import time
from pathlib import Path

import segment.analytics as analytics

from tessera.demo.dataset import Dataset, generate
from tessera.testing.platform import Platform
from tessera.testing.webhook_receiver import WebhookReceiver

GUARANTEES = """\
What each mode guarantees (DESIGN §3):
  | guarantee                                 | embedded (this demo) | real (RabbitMQ + PG) |
  |-------------------------------------------|----------------------|----------------------|
  | an event answered 200 is saved first      | yes (SQLite)         | yes (PostgreSQL)     |
  | messages in flight survive a crash        | no (in-memory queue) | yes (durable)        |
  | publisher confirms                        | no                   | yes                  |
  | partitions spread over processes/replicas | no (one process)     | yes (single active)  |
  | idempotent consumers, consent fail-closed | yes                  | yes                  |"""


def _destinations(data: Dataset, receiver_url: str) -> tuple[list[dict], dict[str, str]]:
    configs, secrets_env = [], {}
    for name, spec in data.destinations.items():
        env_name = f"TESSERA_DEMO_SECRET_{name.upper()}"
        configs.append({"name": name, "kind": "webhook",
                        "config": {"url": f"{receiver_url}/hooks/{{destination}}"},
                        "secret_env": env_name, **spec})
        secrets_env[env_name] = ""
    return configs, secrets_env


def _send_phase(platform: Platform, data: Dataset, calls) -> int:
    errors: list[Exception] = []
    clients = {
        source: analytics.Client(key, host=platform.base_url, upload_size=100,
                                 max_queue_size=len(calls) + 1,
                                 on_error=lambda error, batch: errors.append(error))
        for source, key in data.write_keys.items()
    }
    for call in calls:
        call.send(clients[call.source])
    for client in clients.values():
        client.flush()
        client.shutdown()
    if errors:
        raise RuntimeError(f"{len(errors)} batches refused, first: {errors[0]}")
    return len(calls)


def _check(label: str, got, expected, mismatches: list[str]) -> str:
    mark = "ok" if got == expected else "MISMATCH"
    if got != expected:
        mismatches.append(f"{label}: got {got}, expected {expected}")
    return f"  {label:<44} {got!s:>8}   expected {expected!s:>8}   {mark}"


def _spot_check_members(platform: Platform, data: Dataset, mismatches: list[str]) -> int:
    checked = 0
    for segment, emails in data.truth.member_emails.items():
        for email in sorted(emails)[:5]:
            found = platform.admin("GET", "/v1/profiles", params={"email": email})
            if found.status_code != 200:
                mismatches.append(f"member {email} of {segment}: profile not found")
                continue
            profile_id = found.json()["profile_id"]
            memberships = platform.admin("GET", f"/v1/profiles/{profile_id}/segments").json()
            if segment not in memberships["segments"]:
                mismatches.append(f"{email} should be in {segment}")
            checked += 1
    return checked


def run_demo(people: int = 1000, events: int = 20000, seed: int = 7,
             data_dir: Path | None = None, serve: bool = False) -> int:
    started = time.monotonic()
    data = generate(people=people, events=events, seed=seed)
    secret = secrets.token_hex(16)
    receiver = WebhookReceiver(secret)
    receiver_url = receiver.start()
    configs, secrets_env = _destinations(data, receiver_url)
    platform = Platform(mode="embedded", write_keys=data.write_keys, destinations=configs,
                        destination_secrets={k: secret for k in secrets_env})
    print(f"Tessera demo: {people} people, {data.truth.records_in} records from "
          f"{', '.join(data.write_keys)}; embedded platform starting…", flush=True)
    try:
        platform.start()
        for name, rule in data.segments.items():
            platform.define_segment(name, rule)
        for number, calls in enumerate(data.phases, start=1):
            sent = _send_phase(platform, data, calls)
            platform.wait_drained(timeout=600)
            print(f"  phase {number}: {sent} calls sent and processed "
                  f"({time.monotonic() - started:.1f} s)", flush=True)
        outcome = _report(platform, data, receiver, started)
        if serve:
            _serve_console(platform)
        return outcome
    except Exception as failure:
        print(f"demo failed: {failure}\n--- platform log ---\n{platform.logs()}",
              file=sys.stderr)
        return 2
    finally:
        platform.stop()
        platform.cleanup()
        receiver.stop()


def _serve_console(platform: Platform) -> None:
    """Keep the demo's platform up for the web console until Ctrl-C (docs/console.md)."""
    print(f"\nConsole: {platform.base_url}/console\n"
          f"  sign in with the admin token: {platform.admin_token}\n"
          "  (a random token of this run only; Ctrl-C stops the platform)", flush=True)
    try:
        while all(process.poll() is None for process in platform.processes):
            time.sleep(1)
    except KeyboardInterrupt:
        pass


def _report(platform: Platform, data: Dataset, receiver: WebhookReceiver, started) -> int:
    truth = data.truth
    stats = platform.admin("GET", "/v1/stats").json()
    received = receiver.received()
    per_destination: dict[str, int] = {}
    for item in received["items"]:
        per_destination[item["destination"]] = per_destination.get(item["destination"], 0) + 1
    mismatches: list[str] = []
    lines = [
        _check("records in (accepted by the API)", stats["events"]["accepted"],
               truth.records_in, mismatches),
        _check("records rejected", stats["events"]["rejected"], 0, mismatches),
        _check("profiles after identity resolution", stats["profiles"],
               truth.expected_profiles, mismatches),
    ]
    for segment, size in sorted(truth.segment_members.items()):
        lines.append(_check(f"segment {segment} size", stats["segments"].get(segment),
                            size, mismatches))
    for name in sorted(truth.expected_deliveries):
        ledger = stats["deliveries"][name]
        lines.append(_check(f"deliveries to {name} (platform ledger)", ledger["delivered"],
                            truth.expected_deliveries[name], mismatches))
        lines.append(_check(f"deliveries to {name} (webhook received)",
                            per_destination.get(name, 0), truth.expected_deliveries[name],
                            mismatches))
        lines.append(_check(f"suppressed for {name} (no consent)", ledger["suppressed"],
                            truth.expected_suppressions[name], mismatches))
    lines.append(_check("raw duplicate deliveries", received["duplicates"], 0, mismatches))
    checked = _spot_check_members(platform, data, mismatches)
    elapsed = time.monotonic() - started
    print("\nSummary (platform figures checked against the generator's truth):")
    print("\n".join(lines))
    print(f"  spot-checked {checked} members through the profile API")
    print(f"  time taken: {elapsed:.1f} s "
          f"({truth.records_in / elapsed:.0f} records/s end to end, incl. start-up)\n")
    print(GUARANTEES)
    if mismatches:
        print(f"\nDEMO FAILED: {len(mismatches)} mismatch(es):", file=sys.stderr)
        for mismatch in mismatches:
            print(f"  - {mismatch}", file=sys.stderr)
        return 1
    print("\nEvery figure matches the truth.")
    return 0
