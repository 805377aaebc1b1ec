"""A real RFC 3161 timestamp authority on loopback: ``openssl ts -reply`` behind a small HTTP server.

``make_tsa(folder)`` makes a test root CA and a TSA certificate (critical EKU timeStamping)
signed by it, with openssl; ``TsaServer`` answers each POSTed ``TimeStampReq`` by piping it to
``openssl ts -reply`` (with ``-token_out`` off: a full ``TimeStampResp``, the TSA's certificate
included when the request asks for it). Nothing here mocks the library under test.
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path


@dataclass(frozen=True)
class Tsa:
    folder: Path
    root: Path
    """The root certificate (PEM) the TSA chains to: what ``--tsa-cert`` names."""
    config: Path


def _clock() -> list[str]:
    """A prefix that runs ``openssl ts -reply`` on the test run's clock: a run shifted to another
    date (``PE_TEST_DATE``, tests/clockshift) moves Python's clock only, so the TSA's own clock (a
    C program) is moved the same whole number of days with libfaketime; nothing otherwise."""
    import datetime
    import os
    import shutil
    import sys

    date = os.environ.get("PE_TEST_DATE")
    if date is None:
        try:
            with open(os.path.join(sys.prefix, "pe-test-date"), encoding="utf-8") as fh:
                date = fh.read().strip()
        except OSError:
            date = ""
    if not date:
        return []
    import time

    # The real date: clock_gettime is not moved by the shift (time.time and date.today are).
    real = datetime.datetime.fromtimestamp(time.clock_gettime(time.CLOCK_REALTIME), datetime.timezone.utc).date()
    days = (datetime.date.fromisoformat(date) - real).days
    faketime = shutil.which("faketime")
    if faketime is None:
        raise RuntimeError("a run shifted to another date needs libfaketime for the TSA (apt-get install faketime)")
    return [faketime, "-f", f"{days:+d}d"] if days else []


def _openssl(*args: str, cwd: Path) -> None:
    # On the real clock: ten years of validity from today cover a shifted run's token times, and
    # the verifying library (rfc3161-client, native code) checks validity on the real clock too.
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_tsa(folder: Path, name: str = "Test TSA") -> Tsa:
    """Make a root CA and a TSA certificate under ``folder``; return where they are."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ext.cnf").write_text(
        "[root]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
        "subjectKeyIdentifier=hash\n"
        "[tsa]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=critical,timeStamping\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
        encoding="utf-8")
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", "root.key", "-out", "root.pem", "-days", "3650", "-subj", f"/CN={name} Root",
             "-extensions", "root", "-config", "ext.cnf", "-set_serial", "1", cwd=folder)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "tsa.key",
             "-out", "tsa.csr", "-subj", f"/CN={name}", "-config", "ext.cnf", cwd=folder)
    _openssl("x509", "-req", "-in", "tsa.csr", "-CA", "root.pem", "-CAkey", "root.key", "-set_serial", "2",
             "-days", "3650", "-extfile", "ext.cnf", "-extensions", "tsa", "-out", "tsa.pem", cwd=folder)
    (folder / "serial").write_text("01\n", encoding="utf-8")
    config = folder / "tsa.cnf"
    config.write_text(
        "[ tsa ]\ndefault_tsa = tsa_config\n"
        "[ tsa_config ]\n"
        f"dir = {folder}\n"
        "serial = $dir/serial\n"
        "crypto_device = builtin\n"
        "signer_cert = $dir/tsa.pem\n"
        "certs = $dir/tsa.pem\n"
        "signer_key = $dir/tsa.key\n"
        "signer_digest = sha256\n"
        "default_policy = 1.3.6.1.4.1.4146.2.3\n"
        "digests = sha256, sha384, sha512\n"
        "accuracy = secs:1\n"
        "ordering = no\n"
        "tsa_name = no\n"
        "ess_cert_id_chain = no\n"
        "ess_cert_id_alg = sha256\n",
        encoding="utf-8")
    return Tsa(folder=folder, root=folder / "root.pem", config=config)


class TsaServer:
    """Serve ``tsa`` on ``http://127.0.0.1:<port>/`` (port 0: any free port) until ``stop``."""

    def __init__(self, tsa: Tsa, *, status: int = 200) -> None:
        self.tsa = tsa
        self.requests = 0
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    server.requests += 1
                    with tempfile.TemporaryDirectory() as tmp:
                        query = Path(tmp) / "q.tsq"
                        reply = Path(tmp) / "r.tsr"
                        query.write_bytes(body)
                        done = subprocess.run(
                            [*_clock(), "openssl", "ts", "-reply", "-config", str(tsa.config), "-queryfile", str(query),
                             "-out", str(reply)], capture_output=True, timeout=60, check=False)
                        data = reply.read_bytes() if done.returncode == 0 and reply.exists() else b""
                code = status if data else 500
                self.send_response(code)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: object) -> None:
                pass

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/tsr"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()

    def __enter__(self) -> TsaServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
