"""A loopback webhook receiver for the notification tests: records every POST, answers as told.

``with Webhook() as hook:`` listens on 127.0.0.1 (a free port); ``hook.url`` is a webhook URL
whose path holds a random secret (as a Slack incoming webhook's does), ``hook.received`` the
requests it got (path, headers, body), ``hook.statuses`` a queue of answers to give before the
default 200 ``ok``. ``closed_port()`` is a port nothing listens on (connection refused).
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class Webhook:
    """A local incoming-webhook endpoint."""

    statuses: list[int] = field(default_factory=list)
    default_status: int = 200
    delay: float = 0.0
    """Seconds to wait before answering (a slow or hanging receiver)."""
    received: list[Received] = field(default_factory=list)
    secret: str = field(default_factory=lambda: "T0NOTIFY/B0TEST/" + secrets.token_hex(12))

    def __enter__(self) -> Self:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                hook.received.append(Received("POST", self.path, dict(self.headers.items()), body))
                if hook.delay:
                    time.sleep(hook.delay)
                status = hook.statuses.pop(0) if hook.statuses else hook.default_status
                payload = b"ok" if status < 300 else b"internal_error"
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                hook.received.append(Received("GET", self.path, dict(self.headers.items()), b""))
                self.send_response(405)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/services/{self.secret}"

    @property
    def posts(self) -> list[Received]:
        return [r for r in self.received if r.method == "POST"]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
