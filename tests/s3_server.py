"""A local S3-compatible server for the tests: moto's server on 127.0.0.1, in a thread.

moto (``moto[server]``, in the ``test`` extra) answers the S3 API on a loopback port; the tests
and the ``policyengine`` subprocesses they start reach it through ``AWS_ENDPOINT_URL``, like any
S3-compatible endpoint. What this moto version supports and what it does not:

* ``If-None-Match: *`` and ``If-Match`` on PutObject: supported (412 PreconditionFailed). moto
  checks the condition and then writes, and its threaded server runs requests side by side, so
  two writers could both pass the check; S3 itself decides a conditional write atomically. The
  stand-in (``_AtomicMotoServer``) therefore serves writes one at a time, as S3 decides them;
* Object Lock: buckets created with it enabled report it, PutObject with COMPLIANCE retention
  is stored and shown by HeadObject, deleting a locked version is refused;
  GetObjectRetention answers 500 in moto 5.2.5, so the tests read the retention with HeadObject.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

LOCKED_BUCKET = "evidence-locked"
PLAIN_BUCKET = "evidence-plain"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",  # noqa: S105 - moto's fake credentials
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class S3Server:
    endpoint: str
    client: Any

    @property
    def env(self) -> dict[str, str]:
        """The variables a subprocess needs to reach this server."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}


def _atomic_server(server_mod: Any) -> Any:
    """moto's threaded server, with every write (PUT, POST, DELETE) served one at a time: a
    conditional write is then checked and made atomically, as S3 does. Reads stay concurrent."""
    import threading

    from moto.moto_server import threaded_moto_server as tms

    class _AtomicMotoServer(server_mod.ThreadedMotoServer):  # type: ignore[misc,name-defined]
        def _server_entry(self) -> None:
            inner = tms.DomainDispatcherApplication(tms.create_backend_app)
            lock = threading.Lock()

            def app(environ: dict[str, Any], start_response: Any) -> Any:
                if environ.get("REQUEST_METHOD") in ("PUT", "POST", "DELETE"):
                    with lock:
                        return list(inner(environ, start_response))
                return inner(environ, start_response)

            self._server = tms.make_server(self._ip_address, self._port, app, True,
                                           request_handler=tms.MotoRequestHandler)
            self._server_ready_event.set()
            self._server.serve_forever()

    return _AtomicMotoServer(ip_address="127.0.0.1", port=0, verbose=False)


def start() -> tuple[Any, S3Server]:
    """Start the server and create a bucket with Object Lock and one without."""
    boto3 = pytest.importorskip("boto3")
    server_mod = pytest.importorskip("moto.server")
    server = _atomic_server(server_mod)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")  # noqa: S106
    client.create_bucket(Bucket=LOCKED_BUCKET, ObjectLockEnabledForBucket=True)
    client.create_bucket(Bucket=PLAIN_BUCKET)
    return server, S3Server(endpoint, client)


@pytest.fixture(scope="session")
def s3_session() -> Iterator[S3Server]:
    server, s3 = start()
    try:
        yield s3
    finally:
        server.stop()


@pytest.fixture
def s3(s3_session: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> S3Server:
    """The server, with this process's AWS variables pointing at it and a private list cache."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in s3_session.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("POLICYENGINE_CACHE_DIR", str(tmp_path / "cache"))
    return s3_session
