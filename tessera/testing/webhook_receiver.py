"""A loopback webhook receiver for tests, the demo and the benchmark.

It speaks the webhook connector's wire format (see ``connectors.webhook``):

- ``POST /hooks/<destination>``: verifies ``X-Tessera-Signature`` (bad or missing → 401,
  nothing recorded), records each item with ``arrived_at`` (time.time(); its own ``received_at``
  is the gateway's) and
  ``destination``, de-duplicated by ``(destination, idempotency_key)``; an item seen
  before is not recorded again but counted in ``duplicates``. Answers 200
  ``{"received": <new>, "duplicates": <n>, "duplicate_keys": [...]}``.
- ``POST /_control {"fail_next": N, "status": 503, "retry_after": 1}``: the next N hook
  requests answer ``status`` (with ``Retry-After`` if given; a number or an HTTP-date
  string) before any signature check, and record nothing.
- ``GET /_received[?since=<float>]``: ``{"items": [...], "duplicates": n, "requests": n,
  "unauthorized": n, "failed": n}``; ``since`` keeps items with ``arrived_at >= since``
  (the counters are always totals). ``requests`` counts every hook request, whatever
  its answer.
- ``DELETE /_received``: forgets items, seen keys and counters (not a pending failure plan).

In-process::

    receiver = WebhookReceiver("s3cret")
    base_url = receiver.start()              # port 0: any free port
    ...  receiver.url_for("crm") -> f"{base_url}/hooks/crm"
    receiver.stop()

As a process (e.g. next to an eventlet-patched platform)::

    python -m tessera.testing.webhook_receiver --port 0 --secret s3cret
    # first stdout line: "listening on http://127.0.0.1:<port>"; serves until SIGTERM

or ``process, base_url = spawn_receiver("s3cret")``.

Only the standard library (and ``connectors.webhook.verify_signature``) is used.
"""

from __future__ import annotations

import argparse
import json
import selectors
import signal
import subprocess
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from connectors.webhook import SIGNATURE_HEADER, verify_signature

__all__ = ["WebhookReceiver", "main", "spawn_receiver"]

MAX_BODY_BYTES = 32 * 1024 * 1024
HOOKS_PREFIX = "/hooks/"


class _State:
    """What the receiver has seen; every access holds the lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        self.items: list[dict[str, Any]] = []
        self.seen: set[tuple[str, str]] = set()
        self.duplicates = 0
        self.requests = 0
        self.unauthorized = 0
        self.failed = 0
        self.fail_next = 0
        self.fail_status = 503
        self.fail_retry_after: str | None = None
        self.latency = 0.0  # seconds each hook call takes, as a distant vendor's would

    def clear(self) -> None:
        with self.lock:
            self.items = []
            self.seen = set()
            self.duplicates = self.requests = self.unauthorized = self.failed = 0

    def snapshot(self, since: float | None = None) -> dict[str, Any]:
        with self.lock:
            items = (
                self.items
                if since is None
                else [item for item in self.items if item["arrived_at"] >= since]
            )
            return {
                "items": [dict(item) for item in items],
                "duplicates": self.duplicates,
                "requests": self.requests,
                "unauthorized": self.unauthorized,
                "failed": self.failed,
            }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], secret: bytes, state: _State) -> None:
        self.secret = secret
        self.state = state
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can
        # take seconds on a badly configured machine; we know our name.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the connector reuses its connection
    disable_nagle_algorithm = True
    timeout = 60  # idle keep-alive connections are dropped after this
    server: _Server
    server_version = "TesseraWebhookReceiver/1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no per-request logging: the benchmark pushes thousands of items a second

    # ---- plumbing -------------------------------------------------------------------
    def _read_body(self) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            self._reply(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "bad Content-Length"})
            return None
        return self.rfile.read(length) if length else b""

    def _reply(
        self, status: int, payload: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        body = b"" if payload is None else json.dumps(payload).encode("utf-8")
        self.send_response(status)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(body)

    # ---- routes ---------------------------------------------------------------------
    def do_POST(self) -> None:
        body = self._read_body()
        if body is None:
            return
        path = urlsplit(self.path).path
        if path == "/_control":
            self._control(body)
        elif path.startswith(HOOKS_PREFIX) and len(path) > len(HOOKS_PREFIX):
            self._hook(unquote(path[len(HOOKS_PREFIX) :]), body)
        else:
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"no route for POST {path}"})

    def do_GET(self) -> None:
        split = urlsplit(self.path)
        if split.path != "/_received":
            self._reply(HTTPStatus.NOT_FOUND, {"error": f"no route for GET {split.path}"})
            return
        since_values = parse_qs(split.query).get("since")
        try:
            since = float(since_values[0]) if since_values else None
        except ValueError:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": "since must be a number"})
            return
        self._reply(HTTPStatus.OK, self.server.state.snapshot(since))

    def do_DELETE(self) -> None:
        if self._read_body() is None:
            return
        if urlsplit(self.path).path != "/_received":
            self._reply(HTTPStatus.NOT_FOUND, {"error": "no route"})
            return
        self.server.state.clear()
        self._reply(HTTPStatus.OK, {"cleared": True})

    def _control(self, body: bytes) -> None:
        try:
            command = json.loads(body or b"{}")
            count = int(command.get("fail_next", 0))
            status = int(command.get("status", 503))
            retry_after = command.get("retry_after")
            if retry_after is not None and not isinstance(retry_after, str):
                number = float(retry_after)
                retry_after = str(int(number)) if number.is_integer() else str(number)
        except (ValueError, TypeError, AttributeError, OverflowError):
            self._reply(HTTPStatus.BAD_REQUEST, {"error": "expected {fail_next, status}"})
            return
        if count < 0 or not 100 <= status <= 599:
            self._reply(HTTPStatus.BAD_REQUEST, {"error": "fail_next >= 0, 100 <= status < 600"})
            return
        state = self.server.state
        with state.lock:
            state.fail_next, state.fail_status, state.fail_retry_after = (
                count,
                status,
                retry_after,
            )
        self._reply(HTTPStatus.OK, {"fail_next": count, "status": status})

    def _hook(self, destination: str, body: bytes) -> None:
        state = self.server.state
        if state.latency:
            time.sleep(state.latency)
        with state.lock:
            state.requests += 1
            failing = state.fail_next > 0
            if failing:
                state.fail_next -= 1
                state.failed += 1
                status, retry_after = state.fail_status, state.fail_retry_after
        if failing:
            headers = {"Retry-After": retry_after} if retry_after is not None else None
            self._reply(status, {"error": "failure injected by /_control"}, headers)
            return

        if not verify_signature(self.server.secret, body, self.headers.get(SIGNATURE_HEADER)):
            with state.lock:
                state.unauthorized += 1
            self._reply(HTTPStatus.UNAUTHORIZED, {"error": "bad or missing signature"})
            return

        try:
            items = json.loads(body)["items"]
            if not isinstance(items, list) or not all(
                isinstance(item, dict) and isinstance(item.get("idempotency_key"), str)
                for item in items
            ):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            self._reply(
                HTTPStatus.BAD_REQUEST,
                {"error": "expected {items: [{idempotency_key, ...}]}"},
            )
            return

        arrived_at = time.time()
        duplicate_keys: list[str] = []
        new = 0
        with state.lock:
            for item in items:
                key = (destination, item["idempotency_key"])
                if key in state.seen:
                    state.duplicates += 1
                    duplicate_keys.append(item["idempotency_key"])
                    continue
                state.seen.add(key)
                state.items.append({**item, "destination": destination, "arrived_at": arrived_at})
                new += 1
            if new:
                state.arrived.notify_all()
        self._reply(
            HTTPStatus.OK,
            {"received": new, "duplicates": len(duplicate_keys), "duplicate_keys": duplicate_keys},
        )


class WebhookReceiver:
    """The receiver, served from a background thread of this process."""

    def __init__(self, secret: str | bytes, latency: float = 0.0) -> None:
        if not secret:
            raise ValueError("the receiver needs a secret")
        self.secret = secret if isinstance(secret, bytes) else secret.encode("utf-8")
        self._state = _State()
        self._state.latency = latency
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url: str | None = None

    def start(self, port: int = 0, host: str = "127.0.0.1") -> str:
        """Listen on ``host:port`` (0: a free port) and return ``http://host:port``."""
        if self._server is not None:
            raise RuntimeError("receiver already started")
        self._server = _Server((host, port), self.secret, self._state)
        bound_host, bound_port = self._server.server_address[:2]
        self.base_url = f"http://{bound_host}:{bound_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"webhook-receiver:{bound_port}",
            daemon=True,
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> WebhookReceiver:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def url_for(self, destination: str) -> str:
        if self.base_url is None:
            raise RuntimeError("receiver not started")
        return f"{self.base_url}{HOOKS_PREFIX}{destination}"

    # ---- what arrived ---------------------------------------------------------------
    def received(self, since: float | None = None) -> dict[str, Any]:
        """The same document as ``GET /_received``."""
        return self._state.snapshot(since)

    def items(self, since: float | None = None) -> list[dict[str, Any]]:
        return self._state.snapshot(since)["items"]

    @property
    def duplicates(self) -> int:
        with self._state.lock:
            return self._state.duplicates

    @property
    def requests(self) -> int:
        with self._state.lock:
            return self._state.requests

    @property
    def unauthorized(self) -> int:
        with self._state.lock:
            return self._state.unauthorized

    def clear(self) -> None:
        self._state.clear()

    def fail_next(self, count: int, status: int = 503, retry_after: float | str | None = None):
        """The next ``count`` hook requests answer ``status`` (and ``Retry-After``)."""
        if retry_after is not None and not isinstance(retry_after, str):
            retry_after = (
                str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
            )
        with self._state.lock:
            self._state.fail_next = count
            self._state.fail_status = status
            self._state.fail_retry_after = retry_after

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Block until at least ``count`` distinct items arrived; return them.

        Raises TimeoutError with what did arrive otherwise.
        """
        deadline = time.monotonic() + timeout
        with self._state.arrived:
            while len(self._state.items) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"{len(self._state.items)} of {count} items arrived in {timeout}s"
                    )
                self._state.arrived.wait(remaining)
            return [dict(item) for item in self._state.items]


# ---- as a process -----------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tessera.testing.webhook_receiver",
        description="Loopback webhook receiver (test, demo and benchmark tool).",
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--secret", required=True, help="HMAC key shared with the connector")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="answer each hook call this much later, as a distant vendor")
    args = parser.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    receiver = WebhookReceiver(args.secret, latency=args.latency_ms / 1000)
    base_url = receiver.start(port=args.port, host=args.host)
    print(f"listening on {base_url}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        receiver.stop()
    return 0


def spawn_receiver(
    secret: str,
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    timeout: float = 15.0,
    latency_ms: float = 0.0,
) -> tuple[subprocess.Popen, str]:
    """Start the receiver as a child process; return it and its base url.

    Stop it with ``process.terminate(); process.wait()``.
    """
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tessera.testing.webhook_receiver",
            "--port",
            str(port),
            "--host",
            host,
            "--secret",
            secret,
            "--latency-ms",
            str(latency_ms),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = ""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if selector.select(timeout):
            line = process.stdout.readline().strip()
    prefix = "listening on "
    if not line.startswith(prefix):
        process.kill()
        process.wait()
        raise RuntimeError(
            f"webhook receiver did not start within {timeout}s "
            f"(exit code {process.returncode}, first line {line!r})"
        )
    return process, line[len(prefix) :]


if __name__ == "__main__":
    sys.exit(main())
