"""Erasure, end to end, on the running platform (embedded, and RabbitMQ + PostgreSQL).

A person is tracked and imported (email, phone, name, address) through every service to
a webhook and to HubSpot (a loopback fake speaking HubSpot's HTTP); a member of their
household shares their address. After `tessera privacy erase`, every store — every
PostgreSQL table of the run's database, every file of the platform's directory (SQLite
files, their WAL, logs), every RabbitMQ queue once drained — is scanned for the person's
plaintext and for the unsalted SHA-256 hashes ad networks receive, and none is found;
HubSpot was asked to delete them; importing their CSV row again does not bring them back;
the household member is untouched.
"""

from __future__ import annotations

import csv
import secrets
import subprocess
import sys

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from e2e_support import WRITE_KEY, tessera

from connectors.fakes.hubspot import FakeHubSpot
from shared.audit import public_key_text, signing_key_pem
from tessera.cli import main
from tessera.testing.platform import Platform
from tessera.testing.privacy_scan import (
    Person,
    queue_depths,
    scan_files,
    scan_postgres,
    scan_rabbitmq,
)
from tessera.testing.webhook_receiver import WebhookReceiver

SIGNING_KEY = Ed25519PrivateKey.generate()
BUYERS = {"event": "Order Completed", "count": {"op": "at_least", "value": 2},
          "within_days": 30}
ADDRESS = "12 rue des Zinnias"


@pytest.fixture(scope="module")
def vendors():
    receiver = WebhookReceiver(secrets.token_hex(8))
    receiver.start()
    hubspot = FakeHubSpot("pat-na1-e2e")
    url = hubspot.start()
    yield receiver, hubspot, url
    receiver.stop()
    hubspot.stop()


@pytest.fixture(scope="module", params=["embedded", pytest.param("real", marks=pytest.mark.e2e)])
def platform(request, vendors):
    receiver, _, hubspot_url = vendors
    destinations = [
        {"name": "ads", "kind": "webhook", "config": {"url": receiver.url_for("{destination}")},
         "secret_env": "TESSERA_E2E_SECRET", "segments": ["buyers"],
         "purposes": ["advertising"]},
        {"name": "crm", "kind": "hubspot", "config": {"base_url": hubspot_url},
         "secrets_env": {"access_token": "TESSERA_E2E_HUBSPOT"}, "segments": ["buyers"],
         "purposes": ["advertising"]},
    ]
    audit = {"TESSERA_AUDIT_SEAL_SECONDS": "0.5"}
    if request.param == "real":  # embedded mode makes its own signing key
        audit["TESSERA_AUDIT_SIGNING_KEY"] = signing_key_pem(SIGNING_KEY).decode()
    platform = Platform(mode=request.param, write_keys={"web": WRITE_KEY},
                        destinations=destinations, extra_env=audit,
                        destination_secrets={"TESSERA_E2E_SECRET": receiver.secret.decode(),
                                             "TESSERA_E2E_HUBSPOT": "pat-na1-e2e"})
    platform.start()
    platform.define_segment("buyers", BUYERS)
    yield platform
    platform.stop()
    platform.cleanup()


def audit_verify(platform: Platform) -> subprocess.CompletedProcess:
    """`tessera audit verify` as an auditor runs it: with the public key only."""
    env = {k: v for k, v in platform.env().items() if k != "TESSERA_AUDIT_SIGNING_KEY"}
    if platform.mode == "real":
        env["TESSERA_AUDIT_PUBLIC_KEYS"] = public_key_text(SIGNING_KEY.public_key())
    return subprocess.run([sys.executable, "-m", "tessera.cli", "audit", "verify"], env=env,
                          capture_output=True, text=True, timeout=120)


def person(run: str) -> Person:
    return Person(email=f"Annabelle.Q{run}@Example.org", phone="06 71 84 29 53",
                  phone_e164="+33671842953", first_name=f"Annabelle{run}",
                  last_name=f"Qorvath{run}")


def send(platform: Platform, events: list[dict]) -> None:
    answer = httpx.post(f"{platform.base_url}/v1/batch", json={"batch": events},
                        auth=(WRITE_KEY, ""), timeout=30)
    assert answer.status_code == 200, answer.text


def identify(user_id: str, email: str, first: str, last: str, phone: str | None = None) -> dict:
    traits = {"email": email, "first_name": first, "last_name": last, "street": ADDRESS,
              "postal_code": "75011", "city": "Paris"}
    if phone:
        traits["phone"] = phone
    return {"type": "identify", "userId": user_id, "traits": traits,
            "context": {"consent": {"categoryPreferences": {"advertising": True}}}}


def order(user_id: str) -> dict:
    return {"type": "track", "userId": user_id, "event": "Order Completed"}


def write_csv(path, rows: list[list[str]]) -> None:
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([["Id", "Email", "First", "Last", "Phone"], *rows])


def import_csv(path) -> int:
    return main(["import", str(path), "--source", "web", "--user-id-column", "Id",
                 "--map", "Email=email", "--map", "First=first_name",
                 "--map", "Last=last_name", "--map", "Phone=phone"])


def scan_everything(platform: Platform, ann: Person) -> list[str]:
    needles = ann.needles()
    found = scan_files(platform.workdir, needles)  # SQLite files, WAL, process logs
    if platform.mode == "real":
        found += scan_postgres(platform.database, needles)
        found += scan_rabbitmq(platform.vhost, needles)
    return found


def test_an_erased_person_is_nowhere_and_does_not_come_back(platform, vendors, tmp_path,
                                                            monkeypatch):
    receiver, hubspot, _ = vendors
    monkeypatch.setenv("TESSERA_API_URL", platform.base_url)
    monkeypatch.setenv("TESSERA_WRITE_KEY", WRITE_KEY)
    run = secrets.token_hex(3)
    ann = person(run)
    ann_id, leo_id = f"ann-{run}", f"leo-{run}"
    leo_email = f"leopold.{run}@example.org"
    send(platform, [identify(ann_id, ann.email, ann.first_name, ann.last_name, ann.phone),
                    {"type": "page", "anonymousId": f"device-{run}", "name": "Home",
                     "context": {"traits": {"email": ann.email}}},
                    identify(leo_id, leo_email, "Leopold", f"Brandewijn{run}")])
    crm_export = tmp_path / "crm.csv"
    write_csv(crm_export, [[f"crm-{run}", ann.email, ann.first_name, ann.last_name, ann.phone]])
    assert import_csv(crm_export) == 0
    send(platform, [order(ann_id), order(ann_id), order(leo_id), order(leo_id)])
    platform.wait_drained()
    assert ann.email.lower() in hubspot.contacts
    assert any(i["traits"].get("email") == ann.email for i in receiver.items())
    profile = platform.admin("GET", "/v1/profiles", params={"userId": ann_id}).json()
    assert profile["traits"]["phone"]
    assert scan_everything(platform, ann) != []  # the scan sees the read models' copies

    erased = tessera(platform, "privacy", "erase", f"email:{ann.email}", "--by", "dpo")
    assert erased.returncode == 0, erased.stderr + erased.stdout
    assert "crm" in erased.stdout and "confirmed" in erased.stdout
    platform.wait_drained()

    assert ann.email.lower() not in hubspot.contacts
    if platform.mode == "real":
        assert sum(queue_depths(platform.vhost).values()) == 0
    found = scan_everything(platform, ann)
    assert found == [], "\n".join(found)
    verified = audit_verify(platform)  # shredding keys changed no stored event
    assert verified.returncode == 0, verified.stdout + verified.stderr
    for params in ({"userId": ann_id}, {"email": ann.email}, {"anonymousId": f"device-{run}"}):
        assert platform.admin("GET", "/v1/profiles", params=params).status_code == 404
    leo = platform.admin("GET", "/v1/profiles", params={"userId": leo_id}).json()
    assert leo["traits"]["email"] == leo_email and leo["traits"]["street"] == ADDRESS

    # The same export again, and a later one holding the person among others.
    assert import_csv(crm_export) == 0
    later_export = tmp_path / "crm-later.csv"
    write_csv(later_export, [[f"crm-{run}-b", f" {ann.email.upper()}", ann.first_name,
                              ann.last_name, ""],
                             [f"crm-{run}-c", f"cleo.{run}@example.org", "Cleo", "X", ""]])
    assert import_csv(later_export) == 0
    platform.wait_drained()
    assert platform.admin("GET", "/v1/profiles", params={"email": ann.email}).status_code == 404
    assert platform.admin("GET", "/v1/profiles",
                          params={"email": f"cleo.{run}@example.org"}).status_code == 200
    found = scan_everything(platform, ann)
    assert found == [], "\n".join(found)
    rejections = platform.admin("GET", "/v1/rejections", params={"source": "web"}).json()
    assert any(r["rule"] == "erased" for r in rejections["rejections"])
