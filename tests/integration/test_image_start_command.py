"""The image's start command, run directly (no container engine here), for every service:
each answers its probes on the image's environment and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from dockerfile_parse import DockerfileParser
from tenacity import retry, stop_after_delay, wait_fixed

from tessera.testing.platform import (
    SERVICES,
    _free_port,
    create_vhost,
    delete_vhost,
    drop_database,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def image_start_command(service: str) -> tuple[list[str], dict[str, str]]:
    """ENTRYPOINT + `run <service>` with the image's ENV, the executable from our venv."""
    dockerfile = DockerfileParser(path=str(ROOT / "Dockerfile"))
    structure = dockerfile.structure
    entrypoint = json.loads([i["value"] for i in structure if i["instruction"] == "ENTRYPOINT"][-1])
    executable = Path(sys.executable).with_name(entrypoint[0])
    env = {k: v for k, v in dockerfile.envs.items() if k != "PATH"}
    return [str(executable), *entrypoint[1:], "run", service], env


@pytest.fixture
def throwaway_broker_and_database():
    suffix = secrets.token_hex(4)
    vhost, database = f"tessera-image-{suffix}", f"tessera_image_{suffix}"
    create_vhost(vhost)
    yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}", database
    drop_database(database)
    delete_vhost(vhost)


def test_every_service_started_as_the_image_starts_it_answers_its_probes(
        throwaway_broker_and_database, tmp_path):
    broker_url, database = throwaway_broker_and_database
    processes = {}
    for service in SERVICES:
        argv, image_env = image_start_command(service)
        ops_port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
        env |= image_env | {
            # What the chart's ConfigMap and Secret add; ports free on this shared machine.
            "TESSERA_BROKER_URL": broker_url, "TESSERA_DATABASE": "postgres",
            "TESSERA_POSTGRES_DBNAME": database, "TESSERA_OPS_PORT": str(ops_port),
            "TESSERA_HTTP_PORT": str(_free_port()), "TESSERA_DATA_DIR": str(tmp_path),
        }
        log = open(tmp_path / f"{service}.log", "wb")  # noqa: SIM115
        processes[service] = (subprocess.Popen(argv, env=env, stdout=log,
                                               stderr=subprocess.STDOUT), ops_port)
    try:
        @retry(stop=stop_after_delay(90), wait=wait_fixed(0.5), reraise=True)
        def probes_answer(service: str, ops_port: int) -> None:
            process, _ = processes[service]
            assert process.poll() is None, (tmp_path / f"{service}.log").read_text()
            base = f"http://127.0.0.1:{ops_port}"
            assert httpx.get(f"{base}/livez", timeout=5).status_code == 200
            assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200
            assert b"tessera_outbox_backlog" in httpx.get(f"{base}/metrics", timeout=5).content

        for service, (_, ops_port) in processes.items():
            probes_answer(service, ops_port)
    finally:
        for process, _ in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        exit_codes = {service: _wait(process) for service, (process, _) in processes.items()}

    assert exit_codes == dict.fromkeys(SERVICES, 0)
    lines = [json.loads(line) for line in (tmp_path / "contacts.log").read_text().splitlines()]
    assert any("operations on http://0.0.0.0:" in line["message"] for line in lines)


def _wait(process: subprocess.Popen) -> int | None:
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None
