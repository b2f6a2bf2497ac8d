"""The running platform seals its own history: after events went through it, `tessera
audit verify` (an auditor's command, holding only the public key) passes with every event
sealed, and fails naming the service and the place once a stored event is altered."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.audit import public_key_text, signing_key_pem
from shared.config import Settings
from tessera.testing.platform import Platform
from tessera.testing.tampering import Tampering

WRITE_KEY = "wk_audit_web"
SIGNING_KEY = Ed25519PrivateKey.generate()


@pytest.fixture(scope="module", params=["embedded", pytest.param("real", marks=pytest.mark.e2e)])
def platform(request):
    # Embedded mode generates its own key into the data directory; real mode is given one.
    extra = {"TESSERA_AUDIT_SEAL_SECONDS": "0.5"}
    if request.param == "real":
        extra["TESSERA_AUDIT_SIGNING_KEY"] = signing_key_pem(SIGNING_KEY).decode()
    platform = Platform(mode=request.param, write_keys={"web": WRITE_KEY}, extra_env=extra)
    platform.start()
    yield platform
    platform.stop()
    platform.cleanup()


def auditor_env(platform: Platform) -> dict[str, str]:
    env = {k: v for k, v in platform.env().items() if k != "TESSERA_AUDIT_SIGNING_KEY"}
    if platform.mode == "real":
        env["TESSERA_AUDIT_PUBLIC_KEYS"] = public_key_text(SIGNING_KEY.public_key())
    return env


def audit_verify(platform: Platform, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tessera.cli", "audit", "verify", *args],
                          env=auditor_env(platform), capture_output=True, text=True,
                          timeout=120)


def store_settings(platform: Platform) -> Settings:
    if platform.mode == "real":
        return Settings(database="postgres", postgres_dbname=platform.database)
    return Settings(data_dir=platform.workdir / "data")


def send_events(platform: Platform) -> None:
    events = []
    for person in range(3):
        user = f"user-{uuid.uuid4()}"
        events += [{"type": "identify", "userId": user, "messageId": str(uuid.uuid4()),
                    "traits": {"email": f"{user}@example.com"}},
                   {"type": "track", "userId": user, "event": "Order Completed",
                    "messageId": str(uuid.uuid4()), "properties": {"total": person}}]
    answer = httpx.post(f"{platform.base_url}/v1/batch", json={"batch": events},
                        auth=(WRITE_KEY, ""), timeout=10)
    assert answer.status_code == 200, answer.text


def test_the_platform_seals_its_history_and_verify_catches_an_altered_event(platform):
    send_events(platform)
    platform.wait_drained(timeout=90)
    deadline = time.monotonic() + 60
    while True:  # the services seal every half second: soon every event is vouched for
        verified = audit_verify(platform, "--strict")
        if verified.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "FAIL" not in verified.stdout

    attacker = Tampering(store_settings(platform), "gateway")
    victim = attacker.rows()[0]
    attacker.alter(victim.notification_id)
    attacker.close()
    tampered = audit_verify(platform)

    assert tampered.returncode == 1
    assert (f"altered event: the stored bytes of notification {victim.notification_id} "
            f"(originator {victim.originator_id} version {victim.version})") in tampered.stdout
    assert tampered.stdout.rstrip().endswith("FAILED: gateway")
