"""HTTP limits: a total deadline per attempt and a body size cap enforced while streaming.

The servers here misbehave at the socket level (on 127.0.0.1 only, bounded in time): one
dribbles a byte every 0.2 s, one streams an endless body, one announces a huge Content-Length.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from policyengine.providers.http import ApiError, HttpSession, HttpSettings, TokenInfo
from policyengine.redact import Redactor

TOKEN = "ghs_" + "L" * 36


class RawServer:
    """Accepts connections on 127.0.0.1 and runs ``serve(conn)`` for each, in a thread; stops itself."""

    def __init__(self, serve: Callable[[socket.socket], None]) -> None:
        self.serve = serve
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.sent = 0
        self.thread = threading.Thread(target=self._loop, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _loop(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(2)
            conn.recv(65536)  # the request
            self.serve(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def __enter__(self) -> RawServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


def session(url: str, **settings: float) -> HttpSession:
    return HttpSession(url, token=TokenInfo("Authorization", f"Bearer {TOKEN}", "GITHUB_TOKEN"), provider="github",
                       settings=HttpSettings(**{"timeout": 5.0, "retries": 0, "max_wait": 1.0, **settings}),
                       redactor=Redactor([TOKEN]), sleep=lambda s: None)


@pytest.fixture
def dribbler() -> Iterator[RawServer]:
    def serve(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n[")
        for _ in range(150):  # at most 30 s, then the server gives up by itself
            time.sleep(0.2)
            conn.sendall(b" ")

    with RawServer(serve) as server:
        yield server


def test_a_dribbling_server_cannot_hold_the_gate_past_the_deadline(dribbler: RawServer) -> None:
    started = time.monotonic()
    with pytest.raises(ApiError) as exc:
        session(dribbler.url, deadline=1.0).get_json("/slow")
    elapsed = time.monotonic() - started
    assert elapsed < 10, elapsed  # each read is 0.2 s, far below the 5 s timeout: only the deadline stops it
    assert "took longer than the 1 s deadline" in str(exc.value)
    assert TOKEN not in str(exc.value)


def test_retries_of_a_dribbling_server_are_each_bounded(dribbler: RawServer) -> None:
    started = time.monotonic()
    with pytest.raises(ApiError) as exc:
        session(dribbler.url, deadline=0.5, retries=2).get_json("/slow")
    assert time.monotonic() - started < 10
    assert str(exc.value) == "GET /slow: the answer took longer than the 0.5 s deadline (3 attempts)"


def test_the_deadline_makes_the_fact_unavailable_in_a_gathering(dribbler: RawServer) -> None:
    """Through a provider: the endpoint's fact is unavailable, with the deadline as its cause."""
    from policyengine.providers.github import gather_github

    env = {"GITHUB_REPOSITORY": "acme/payments", "GITHUB_SHA": "a" * 40, "GITHUB_TOKEN": TOKEN,
           "GITHUB_API_URL": dribbler.url, "POLICYENGINE_HTTP_DEADLINE": "0.6", "POLICYENGINE_HTTP_RETRIES": "0"}
    started = time.monotonic()
    change = gather_github(env, environment="production").change
    assert time.monotonic() - started < 20
    assert "deadline" in change["unavailable"]["pull_request"]
    assert "deadline" in change["unavailable"]["checks"]


def test_an_endless_body_stops_at_the_cap() -> None:
    def serve(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 65536
        frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # endless for the client; bounded for the test
            conn.sendall(frame)
            server.sent += len(chunk)

    with RawServer(serve) as server:
        started = time.monotonic()
        with pytest.raises(ApiError) as exc:
            session(server.url, max_bytes=1024 * 1024).get_json("/big")
        assert time.monotonic() - started < 10
    assert str(exc.value).startswith("GET /big: HTTP 200: the body is larger than the 1 MiB policyengine reads "
                                     "(more than 1048576 bytes arrived); refused")


def test_a_large_content_length_is_refused_before_the_body_is_read() -> None:
    def serve(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 734003200\r\n\r\n[")
        time.sleep(3)  # nothing more: a client reading the body would wait here

    with RawServer(serve) as server:
        started = time.monotonic()
        with pytest.raises(ApiError) as exc:
            session(server.url).get_json("/huge")
        assert time.monotonic() - started < 2
    assert "announces 734003200 bytes" in str(exc.value) and "32 MiB" in str(exc.value)


def test_settings_read_the_deadline_and_the_cap() -> None:
    s = HttpSettings.from_env({"POLICYENGINE_HTTP_DEADLINE": "2.5", "POLICYENGINE_HTTP_MAX_BYTES": "1000"})
    assert (s.deadline, s.max_bytes) == (2.5, 1000)
    from policyengine.errors import UsageError

    with pytest.raises(UsageError):
        HttpSettings.from_env({"POLICYENGINE_HTTP_DEADLINE": "0"})
