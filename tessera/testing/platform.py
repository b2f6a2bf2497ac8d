"""Start and drive a whole Tessera platform from outside, as a user would.

Used by the end-to-end tests, the demo and the benchmark: the platform runs in child
processes (one for embedded mode, one per service in real mode) and is only ever talked
to through its public HTTP API.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

SERVICES = ("gateway", "identity", "contacts", "segments", "consent", "activation")


@dataclass
class Platform:
    mode: str = "embedded"  # "embedded" | "real"
    write_keys: dict[str, str] = field(default_factory=lambda: {"web": "wk_test_web"})
    destinations: list[dict[str, Any]] = field(default_factory=list)
    destination_secrets: dict[str, str] = field(default_factory=dict)  # env var -> secret
    port: int = 0
    admin_token: str = field(default_factory=lambda: secrets.token_hex(16))
    partitions: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)
    services: tuple[str, ...] = SERVICES  # real mode: which services to run, one process each
    processes: list[subprocess.Popen] = field(default_factory=list)
    workdir: Path | None = None
    database: str | None = None
    vhost: str | None = None
    ops_ports: list[int] = field(default_factory=list)  # each process's operations port
    # Real mode: which RabbitMQ node and PostgreSQL server (the fault tests use their own).
    amqp_base: str = "amqp://guest:guest@127.0.0.1:5672"
    rabbit_node: str | None = None  # for rabbitmqctl -n; None: the default node
    postgres_port: int = 5432
    commands: list[list[str]] = field(default_factory=list)
    # A directory (and, real mode, a database) of one's own that outlives the platform:
    # a benchmark loads once and times again on the same data (bench/console.py --reuse).
    kept_dir: Path | None = None

    @property
    def broker_url(self) -> str:
        """Real mode runs in a RabbitMQ virtual host of its own: runs never see each other."""
        return f"{self.amqp_base}/{self.vhost}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
        env |= {
            "TESSERA_HTTP_PORT": str(self.port),
            "TESSERA_WRITE_KEYS": ",".join(f"{s}={k}" for s, k in self.write_keys.items()),
            "TESSERA_ADMIN_TOKEN": self.admin_token,
            "TESSERA_DESTINATIONS_FILE": str(self.workdir / "destinations.json"),
            "TESSERA_DATA_DIR": str(self.workdir / "data"),
            "TESSERA_PARTITIONS": str(self.partitions),
            "PYTHONUNBUFFERED": "1",
        }
        if self.mode == "real":
            env |= {"TESSERA_BROKER_URL": self.broker_url, "TESSERA_DATABASE": "postgres",
                    "TESSERA_POSTGRES_DBNAME": self.database,
                    "TESSERA_POSTGRES_PORT": str(self.postgres_port)}
        return env | self.destination_secrets | self.extra_env

    def start(self, timeout: float = 60.0) -> Platform:
        if self.kept_dir is not None:
            self.kept_dir.mkdir(parents=True, exist_ok=True)
            self.workdir = self.kept_dir
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"tessera-{self.mode}-"))
        self.port = self.port or _free_port()
        (self.workdir / "destinations.json").write_text(
            json.dumps({"destinations": self.destinations}))
        command = [sys.executable, "-m", "tessera.cli"]
        if self.mode == "real":
            self.database = self.database or f"tessera_test_{secrets.token_hex(4)}"
            self.vhost = self.vhost or f"tessera-test-{secrets.token_hex(4)}"
            create_vhost(self.vhost, self.rabbit_node)
            self.commands = [[*command, "run", name] for name in self.services]
        else:
            self.commands = [[*command, "up"]]
        for index in range(len(self.commands)):
            self.ops_ports.append(_free_port())
            self.processes.append(self._spawn(index))
        self._wait_ready(timeout)
        return self

    def _spawn(self, index: int) -> subprocess.Popen:
        log = open(self.workdir / f"process-{index}.log", "ab")  # noqa: SIM115
        env = self.env() | {"TESSERA_OPS_PORT": str(self.ops_ports[index])}
        return subprocess.Popen(self.commands[index], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_die_with_parent)

    def kill(self, service: str, sig: int = signal.SIGKILL) -> int:
        """Signal the process running `service` (real mode) and wait for it to end."""
        process = self.processes[self.services.index(service)]
        os.killpg(process.pid, sig)
        return process.wait(timeout=60)

    def restart(self, service: str) -> None:
        """Start `service` again, with the same command, environment and ports."""
        index = self.services.index(service)
        if self.processes[index].poll() is None:
            raise RuntimeError(f"{service} is still running")
        self.processes[index] = self._spawn(index)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"a platform process exited early:\n{self.logs()}")
            if "gateway" not in self.services:
                if self._services_answer():
                    return
                continue
            try:
                healthy = httpx.get(f"{self.base_url}/health", timeout=1).status_code == 200
                # Every service answers RPC, so every queue is declared and consumed.
                if healthy and self.status().get("services"):
                    return
            except (httpx.HTTPError, RuntimeError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"platform not ready after {timeout}s:\n{self.logs()}")

    def _services_answer(self) -> bool:
        """Without a gateway, ask each service over RPC (real mode only)."""
        from nameko.standalone.rpc import ClusterRpcProxy

        try:
            with ClusterRpcProxy({"AMQP_URI": self.broker_url}, timeout=1) as rpc:
                for name in self.services:
                    getattr(rpc, name).status()
        except Exception:
            time.sleep(0.3)
            return False
        return True

    def rpc(self):
        """A nameko RPC proxy onto the running services (real mode)."""
        from nameko.standalone.rpc import ClusterRpcProxy

        return ClusterRpcProxy({"AMQP_URI": self.broker_url}, timeout=20)

    def logs(self, tail: int = 60) -> str:
        if self.workdir is None:
            return ""
        lines = []
        for path in sorted(self.workdir.glob("process-*.log")):
            lines += path.read_text(errors="replace").splitlines()[-tail:]
        return "\n".join(lines)

    def ops_url(self, service: str | None = None) -> str:
        """The operations port of the process running `service` (the only one if embedded)."""
        index = 0 if service is None or self.mode != "real" else self.services.index(service)
        return f"http://127.0.0.1:{self.ops_ports[index]}"

    # ---- API --------------------------------------------------------------------------
    def admin(self, method: str, path: str, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        return httpx.request(method, f"{self.base_url}{path}", headers=headers, timeout=30,
                             **kwargs)

    def status(self) -> dict[str, Any]:
        response = self.admin("GET", "/v1/status")
        if response.status_code != 200:
            raise RuntimeError(f"status answered {response.status_code}: {response.text}")
        return response.json()

    def wait_drained(self, timeout: float = 120.0, settle: float = 0.5) -> dict[str, Any]:
        """Wait until no service has work queued, in flight or unpublished — twice in a row."""
        deadline = time.monotonic() + timeout
        calm = 0
        while time.monotonic() < deadline:
            status = self.status()
            calm = calm + 1 if status["drained"] else 0
            if calm >= 3:
                return status
            time.sleep(settle)
        raise TimeoutError(f"pipeline not drained after {timeout}s: {self.status()}")

    def define_segment(self, name: str, rule: dict) -> dict:
        response = self.admin("POST", "/v1/segments", json={"name": name, "rule": rule})
        response.raise_for_status()
        return response.json()

    # ---- stopping ---------------------------------------------------------------------
    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()
        self.ops_ports.clear()
        if self.mode == "real" and self.database:
            if self.kept_dir is None:
                drop_database(self.database, self.postgres_port)
            delete_vhost(self.vhost, self.rabbit_node)

    def cleanup(self) -> None:
        if self.workdir is not None and self.kept_dir is None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Platform:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        self.cleanup()


def _die_with_parent() -> None:
    """A platform started by a test or benchmark never outlives it (Linux only)."""
    import ctypes

    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_handed_out: set[int] = set()


def _free_port() -> int:
    """A port nobody listens on, never the same twice in this process: two servers started
    one after the other (a broker, then a gateway) must not be handed one port, which the
    kernel does when asked twice for "any free port" before either binds."""
    import random
    import socket

    while True:
        port = random.randrange(20_000, 32_000)  # below Linux's ephemeral range
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


def _rabbitmqctl(*args: str, node: str | None = None) -> None:
    subprocess.run(["rabbitmqctl", "-q", *(("-n", node) if node else ()), *args], check=True,
                   capture_output=True, timeout=60)


def create_vhost(name: str, node: str | None = None) -> None:
    _rabbitmqctl("add_vhost", name, node=node)
    _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*", node=node)


def delete_vhost(name: str | None, node: str | None = None) -> None:
    if name:
        _rabbitmqctl("delete_vhost", name, node=node)


def drop_database(name: str, port: int = 5432) -> None:
    import psycopg

    with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres",
                         autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
