"""Loopback fake vendors: real HTTP servers that enforce a vendor's documented API.

A fake answers on ``127.0.0.1`` (a free port) from a background thread, records every
request, refuses what the vendor would refuse, and keeps the state the vendor would keep
(who is in an audience, which contacts exist), so tests assert on effects rather than on
calls. ``fail_next`` makes the next data requests answer an error (throttled, broken),
as the conformance kit needs.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["FakeRequest", "FakeResponse", "FakeVendor"]


@dataclass
class FakeRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lowercased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode("utf-8")).items()}

    @property
    def bearer(self) -> str | None:
        value = self.headers.get("authorization", "")
        return value[len("Bearer "):] if value.startswith("Bearer ") else None


@dataclass
class FakeResponse:
    status: int
    body: Any = None  # JSON-able, or bytes as is
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Fault:
    status: int
    retry_after: str | None
    body: Any


class FakeVendor:
    """Base of the fakes: plumbing, request log, fault injection."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.requests: list[FakeRequest] = []
        self._faults: deque[_Fault] = deque()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    # ---- what a vendor fake implements -----------------------------------------------
    def route(self, request: FakeRequest) -> FakeResponse:
        raise NotImplementedError

    def is_data_request(self, request: FakeRequest) -> bool:
        """Requests that carry deliveries (not token exchanges): the ones faults hit."""
        return True

    def error_body(self, status: int) -> Any:
        """The vendor's error document for an injected failure."""
        return {"error": {"code": status, "message": "failure injected by the test"}}

    def batch_sizes(self) -> list[int]:
        """Items carried by each accepted data request, in order."""
        raise NotImplementedError

    def subjects(self) -> set[str]:
        """Who the vendor holds now (audience members, contacts): idempotency and removal
        are judged on this."""
        raise NotImplementedError

    def received_identifiers(self) -> list[dict[str, str]]:
        """Hashed identifiers received, as ``{"email_sha256", "phone_sha256", ...}``."""
        return []

    # ---- fault injection and the request log -----------------------------------------
    def fail_next(self, count: int = 1, status: int = 503, retry_after: float | None = None,
                  body: Any = None) -> None:
        stamp = None if retry_after is None else f"{retry_after:g}"
        with self.lock:
            self._faults.extend(_Fault(status, stamp, body) for _ in range(count))

    def data_requests(self) -> list[FakeRequest]:
        with self.lock:
            return [r for r in self.requests if self.is_data_request(r)]

    def _answer(self, request: FakeRequest) -> FakeResponse:
        with self.lock:
            self.requests.append(request)
            fault = self._faults.popleft() if self._faults and self.is_data_request(
                request) else None
        if fault is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            body = fault.body if fault.body is not None else self.error_body(fault.status)
            return FakeResponse(fault.status, body, headers)
        try:
            return self.route(request)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            return FakeResponse(400, self.error_body(400) | {"detail": repr(error)})

    # ---- serving -------------------------------------------------------------------
    def start(self) -> str:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                request = FakeRequest(
                    self.command, split.path,
                    {k: v[0] for k, v in parse_qs(split.query).items()},
                    {k.lower(): v for k, v in self.headers.items()}, body)
                response = fake._answer(request)
                raw = response.body if isinstance(response.body, bytes) else (
                    b"" if response.body is None else json.dumps(response.body).encode())
                self.send_response(response.status)
                if response.body is not None and not isinstance(response.body, bytes):
                    self.send_header("Content-Type", "application/json")
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def server_bind(self) -> None:  # skip getfqdn(): a slow reverse lookup
                TCPServer.server_bind(self)
                self.server_name, self.server_port = self.server_address[:2]

        self._server = Server(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
