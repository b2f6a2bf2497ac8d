"""A real local SMTP server (aiosmtpd) in its own process, with a small HTTP control port.

aiosmtpd runs on asyncio, which eventlet's monkey-patching breaks, so the server always
lives in a child process. It requires AUTH (LOGIN/PLAIN, over the loopback without TLS),
and refuses with ``550 5.7.1`` a message lacking From, To, Subject, Date, Message-ID or
MIME-Version, or carrying ``List-Unsubscribe`` without exactly one https URI and without
``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058). Messages are kept in
memory, grouped by SMTP session.

Control (JSON over HTTP on its second port): ``GET /messages`` → ``{"sessions": [[msg…]],
"transactions": n}``; ``POST /fail_next {"count", "code"}`` → the next DATA commands answer
``code`` (e.g. 421 or 451 transient, 550 permanent).

Parent side: :class:`FakeSmtpServer` starts it and speaks to it (the FakeVendor interface
the conformance kit uses).
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import logging
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

REQUIRED = ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version")
STATUS_TO_SMTP = {429: 421, 503: 451, 500: 451, 400: 550}


def _problem(message: email.message.EmailMessage) -> str | None:
    missing = [h for h in REQUIRED if not message.get(h)]
    if missing:
        return f"550 5.7.1 missing header(s): {', '.join(missing)}"
    unsubscribe = message.get("List-Unsubscribe")
    if unsubscribe is not None:
        https = re.findall(r"<(https://[^>]+)>", unsubscribe)
        if len(https) != 1:
            return "550 5.7.1 List-Unsubscribe must hold exactly one https URI (RFC 8058)"
        if message.get("List-Unsubscribe-Post") != "List-Unsubscribe=One-Click":
            return "550 5.7.1 List-Unsubscribe-Post: List-Unsubscribe=One-Click is required"
    return None


def serve(username: str, password: str) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    lock = threading.Lock()
    logging.getLogger("mail.log").setLevel(logging.ERROR)  # "AUTH without TLS": on purpose
    state: dict[str, Any] = {"sessions": {}, "order": [], "transactions": 0, "fail": [],
                             "attempts": set()}

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            with lock:
                state["transactions"] += 1
                state["attempts"].add(id(session))
                if state["fail"]:
                    return state["fail"].pop(0)
            message = email.message_from_bytes(envelope.content, policy=email.policy.SMTP)
            problem = _problem(message)
            if problem:
                return problem
            key = id(session)
            with lock:
                if key not in state["sessions"]:
                    state["sessions"][key] = []
                    state["order"].append(key)
                body = message.get_body(("plain",))
                state["sessions"][key].append({
                    "headers": {k: str(v) for k, v in message.items()},
                    "rcpt": list(envelope.rcpt_tos),
                    "text": body.get_content() if body is not None else ""})
            return "250 2.0.0 OK queued"

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == username \
            and auth_data.password.decode() == password
        return AuthResult(success=ok, handled=False)  # handled=False: answer 535 on failure

    # aiosmtpd connects to its own port to see it started, so it cannot take port 0:
    # ask the OS for a free port first.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        smtp_port = probe.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=smtp_port,
                            auth_required=True, auth_require_tls=False,
                            authenticator=authenticator)
    controller.start()

    class Control(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _reply(self, payload):
            raw = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self):
            with lock:
                self._reply({"sessions": [state["sessions"][k] for k in state["order"]],
                             "transactions": state["transactions"],
                             "attempts": len(state["attempts"])})

        def do_POST(self):
            command = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            code = int(command.get("code", 451))
            text = f"{code} {'4.3.0 try again later' if code < 500 else '5.7.1 refused'}"
            with lock:
                state["fail"].extend([text] * int(command.get("count", 1)))
            self._reply({"ok": True})

    control = ThreadingHTTPServer(("127.0.0.1", 0), Control)
    print(f"listening smtp={smtp_port} control={control.server_address[1]}", flush=True)
    try:
        control.serve_forever()
    finally:
        controller.stop()


class FakeSmtpServer:
    """The server as a child process, driven from the parent (tests, the kit)."""

    def __init__(self, username: str = "tessera", password: str = "smtp-pass") -> None:
        self.username, self.password = username, password
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.control = ""

    def __enter__(self) -> FakeSmtpServer:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "connectors.fakes.smtp", "--username", self.username,
             "--password", self.password], stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline().strip()
        match = re.match(r"listening smtp=(\d+) control=(\d+)", line)
        if match is None:
            self.process.kill()
            raise RuntimeError(f"SMTP fake did not start: {line!r}")
        self.port = int(match.group(1))
        self.control = f"http://127.0.0.1:{match.group(2)}"
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def _state(self) -> dict[str, Any]:
        return httpx.get(self.control + "/messages", timeout=10).json()

    def sessions(self) -> list[list[dict[str, Any]]]:
        return self._state()["sessions"]

    def messages(self) -> list[dict[str, Any]]:
        return [m for session in self.sessions() for m in session]

    def fail_next(self, count: int = 1, status: int = 503, retry_after: float | None = None,
                  body: Any = None) -> None:
        code = STATUS_TO_SMTP.get(status, 451 if status >= 500 or status == 429 else 550)
        httpx.post(self.control + "/fail_next", json={"count": count, "code": code},
                   timeout=10)

    def data_requests(self) -> list[int]:
        """One per SMTP session that sent mail: what one delivery attempt is over SMTP."""
        return list(range(self._state()["attempts"]))

    def batch_sizes(self) -> list[int]:
        return [len(session) for session in self.sessions()]

    def subjects(self) -> list[str]:
        return [m["headers"]["Message-ID"] for m in self.messages()]

    def received_identifiers(self) -> list[dict[str, str]]:
        return []


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    options = parser.parse_args()
    serve(options.username, options.password)
