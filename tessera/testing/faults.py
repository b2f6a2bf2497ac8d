"""A private RabbitMQ node and a private PostgreSQL cluster for fault tests.

Fault tests stop and restart the broker and the database. The machine's own RabbitMQ
(5672) and PostgreSQL (5432) serve other people's tests, so the fault tests never touch
them: each run starts its own node and cluster on free ports, in a temporary directory,
and removes them at the end.

    with PrivateRabbit() as rabbit, PrivatePostgres() as postgres:
        rabbit.amqp_base       # amqp://guest:guest@127.0.0.1:<port>
        rabbit.restart_app()   # rabbitmqctl -n <node> stop_app; start_app
        postgres.port
        postgres.restart()     # pg_ctl stop -m fast; start

RabbitMQ runs as the `rabbitmq` user and PostgreSQL as `postgres` when we are root (as
the packages expect); otherwise as ourselves.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tessera.testing.platform import _free_port as free_port

POSTGRES_BIN = Path(os.environ.get("TESSERA_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
RABBITMQ_SERVER = os.environ.get("TESSERA_RABBITMQ_SERVER",
                                  "/usr/lib/rabbitmq/bin/rabbitmq-server")


def _as_user(name: str) -> list[str]:
    """Run as `name` if we are root and it exists (RabbitMQ and PostgreSQL refuse root)."""
    if os.getuid() != 0:
        return []
    try:
        pwd.getpwnam(name)
    except KeyError:
        return []
    return ["runuser", "-u", name, "--"]


def _chown(path: Path, user: str) -> None:
    if os.getuid() == 0:
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(user)
            for root, dirs, files in os.walk(path):
                for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                    os.chown(name, entry.pw_uid, entry.pw_gid)


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.3)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class PrivateRabbit:
    def __init__(self) -> None:
        self.node = f"tessera-faults-{secrets.token_hex(4)}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.home = Path(tempfile.mkdtemp(prefix="tessera-rabbit-"))
        self.process: subprocess.Popen | None = None

    @property
    def amqp_base(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> PrivateRabbit:
        (self.home / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        (self.home / "enabled_plugins").write_text("[].\n")  # no management port to clash
        for directory in ("mnesia", "log"):
            (self.home / directory).mkdir()
        os.chmod(self.home, 0o755)
        _chown(self.home, "rabbitmq")
        env = {**os.environ, "RABBITMQ_NODENAME": self.node,
               "RABBITMQ_NODE_PORT": str(self.port),
               "RABBITMQ_DIST_PORT": str(self.dist_port),
               "RABBITMQ_MNESIA_BASE": str(self.home / "mnesia"),
               "RABBITMQ_LOG_BASE": str(self.home / "log"),
               "RABBITMQ_CONFIG_FILE": str(self.home / "rabbitmq"),
               "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.home / "enabled_plugins"),
               "RABBITMQ_PID_FILE": str(self.home / "pid")}
        if os.getuid() == 0:
            env["HOME"] = "/var/lib/rabbitmq"  # the Erlang cookie rabbitmqctl uses too
        log = open(self.home / "server.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen([*_as_user("rabbitmq"), RABBITMQ_SERVER], env=env,
                                        stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        _wait(lambda: _port_open(self.port) or self.process.poll() is not None, timeout,
              f"private RabbitMQ {self.node} did not listen within {timeout}s")
        if self.process.poll() is not None:
            raise RuntimeError(f"private RabbitMQ exited:\n{self.log_tail()}")
        return self

    def ctl(self, *args: str, timeout: float = 120) -> None:
        subprocess.run(["rabbitmqctl", "-q", "-n", self.node, *args], check=True,
                       capture_output=True, timeout=timeout)

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        _wait(lambda: _port_open(self.port), 60, "private RabbitMQ did not listen again")

    def log_tail(self, lines: int = 30) -> str:
        path = self.home / "server.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) \
            if path.exists() else ""

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.ctl("stop", timeout=60)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()
        self.process = None
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> PrivateRabbit:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class PrivatePostgres:
    def __init__(self) -> None:
        self.port = free_port()
        self.home = Path(tempfile.mkdtemp(prefix="tessera-postgres-"))
        self.data = self.home / "data"

    def _run(self, tool: str, *args: str, timeout: float = 120) -> None:
        subprocess.run([*_as_user("postgres"), str(POSTGRES_BIN / tool), *args], check=True,
                       capture_output=True, timeout=timeout)

    def start(self) -> PrivatePostgres:
        os.chmod(self.home, 0o755)
        _chown(self.home, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--no-sync", "-E", "UTF8")
        self._start()
        return self

    def _start(self) -> None:
        options = (f"-p {self.port} -k {self.home} -c listen_addresses=127.0.0.1 "
                   "-c max_connections=200 -c fsync=off")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.home / "server.log"),
                  "-o", options, "-w", "start")

    def stop_server(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, down_seconds: float = 0.0) -> None:
        self.stop_server()
        time.sleep(down_seconds)
        self._start()

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.stop_server("immediate")
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
