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


# -- issue 15: time limits a person expects ------------------------------------------------------


@pytest.fixture
def slow_drip() -> Iterator[RawServer]:
    """One byte every 0.5 s (well inside any read timeout), for at most 15 s per connection."""
    def serve(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n[")
        for _ in range(30):
            time.sleep(0.5)
            conn.sendall(b" ")

    with RawServer(serve) as server:
        yield server


def _env_session(url: str, env: dict[str, str]) -> HttpSession:
    return HttpSession(url, token=TokenInfo("Authorization", f"Bearer {TOKEN}", "GITHUB_TOKEN"), provider="github",
                       settings=HttpSettings.from_env(env), redactor=Redactor([TOKEN]), sleep=lambda s: None)


def test_the_per_attempt_deadline_defaults_to_a_small_multiple_of_the_timeout(slow_drip: RawServer) -> None:
    """POLICYENGINE_HTTP_TIMEOUT=1 with one retry: a server sending one byte every 0.5 s (never
    a read timeout) holds each attempt 2 s (twice the timeout), not the fixed 60 s it used to."""
    started = time.monotonic()
    with pytest.raises(ApiError) as exc:
        _env_session(slow_drip.url, {"POLICYENGINE_HTTP_TIMEOUT": "1", "POLICYENGINE_HTTP_RETRIES": "1"}).get_json("/s")
    elapsed = time.monotonic() - started
    assert elapsed < 12, elapsed  # 2 attempts of 2 s; generous for a loaded machine
    assert str(exc.value) == "GET /s: the answer took longer than the 2 s deadline (2 attempts)"


@pytest.mark.parametrize(("env", "deadline"), [
    ({}, 60.0), ({"POLICYENGINE_HTTP_TIMEOUT": "2"}, 4.0), ({"POLICYENGINE_HTTP_TIMEOUT": "0.5"}, 1.0),
    ({"POLICYENGINE_HTTP_TIMEOUT": "2", "POLICYENGINE_HTTP_DEADLINE": "30"}, 30.0),
    ({"POLICYENGINE_HTTP_TIMEOUT": "10", "POLICYENGINE_HTTP_DEADLINE": "3"}, 3.0),
    ({"POLICYENGINE_HTTP_TIMEOUT": " ", "POLICYENGINE_HTTP_DEADLINE": ""}, 60.0),
])
def test_the_deadline_setting_follows_the_timeout_unless_given(env: dict[str, str], deadline: float) -> None:
    assert HttpSettings.from_env(env).deadline == deadline
    assert HttpSettings(timeout=float(env.get("POLICYENGINE_HTTP_TIMEOUT", "").strip() or 30)).deadline == (
        2 * float(env.get("POLICYENGINE_HTTP_TIMEOUT", "").strip() or 30))


def test_the_run_deadline_bounds_every_attempt_and_retry(slow_drip: RawServer) -> None:
    """Default timeouts (30 s, 60 s per attempt, 3 retries: minutes) inside a 3 s run: the request
    ends when the run's gathering time ends (3 s less the reserve), naming the endpoint."""
    from policyengine import deadline

    run = deadline.RunDeadline(3.0)
    started = time.monotonic()
    with deadline.running(run), pytest.raises(ApiError) as exc:
        _env_session(slow_drip.url, {}).get_json("/repos/acme/payments/pulls/42")
    elapsed = time.monotonic() - started
    assert elapsed < 8, elapsed
    host = slow_drip.url.split("//", 1)[1]
    assert str(exc.value) == ("GET /repos/acme/payments/pulls/42: the run deadline (POLICYENGINE_RUN_DEADLINE=3 s) "
                              f"passed while waiting for the github API at {host} (GET /repos/acme/payments/pulls/42)")
    assert run.passed_while == f"the github API at {host} (GET /repos/acme/payments/pulls/42)"
    # Once passed, nothing more is asked: the next request fails at once.
    started = time.monotonic()
    with deadline.running(run), pytest.raises(ApiError, match="run deadline"):
        _env_session(slow_drip.url, {}).get_json("/other")
    assert time.monotonic() - started < 1
    assert deadline.active() is None


def test_the_run_deadline_cuts_backoff_and_rate_limit_waits() -> None:
    """A server that answers 503 with Retry-After: 50 (under POLICYENGINE_HTTP_MAX_WAIT=60): the
    wait is cut to the run's time left, and the request fails naming the run deadline."""
    from policyengine import deadline

    def serve(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 50\r\nContent-Length: 0\r\n\r\n")

    slept: list[float] = []
    with RawServer(serve) as server:
        s = HttpSession(server.url, token=TokenInfo("Authorization", f"Bearer {TOKEN}", "GITHUB_TOKEN"),
                        provider="github", settings=HttpSettings(retries=3, max_wait=60.0), redactor=Redactor([TOKEN]),
                        sleep=lambda seconds: (slept.append(seconds), time.sleep(seconds)))
        started = time.monotonic()
        with deadline.running(deadline.RunDeadline(3.0)), pytest.raises(ApiError, match="run deadline"):
            s.get_json("/busy")
    assert time.monotonic() - started < 8
    assert slept and max(slept) <= 2.0
