#!/usr/bin/env python3
"""Make docs/report-example.png: the report.html of the bundled allowed example, as a browser shows it.

    .venv/bin/python scripts/report-example.py            # needs chromium (apt-get install chromium)

The report is the real one: `check` judges examples/change-allowed.yml with
policies/soc2-production.yml at a fixed time (Tuesday 2026-11-24 10:00 in New York) and writes a
bundle; only the bundle id's random part is fixed, so the page is the same on every run. Headless
chromium takes the screenshot, and the PNG carries the report's SHA-256 in a tEXt chunk
(``policyengine-report-sha256``). tests/test_report_example.py renders the report again and fails
when the PNG was made from another report: change the report, run this script, commit the PNG.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "docs" / "report-example.png"
TEXT_KEY = b"policyengine-report-sha256"
NOW = datetime(2026, 11, 24, 15, 0, 0, tzinfo=timezone.utc)
WALL = datetime(2026, 11, 24, 15, 0, 2, tzinfo=timezone.utc)
BUNDLE_SUFFIX = "0a1b2c3d4e5f"
WIDTH, HEIGHT = 1000, 1900


def example_report() -> str:
    """The report.html the gate writes for the allowed example, at the fixed time (the real gate and renderer)."""
    sys.path.insert(0, str(REPO))
    from policyengine.evidence.stores import base
    from policyengine.gate import CheckRequest, check

    real_id = base.new_bundle_id  # its random 12 hex digits fixed, so the picture does not change
    env = {k: v for k, v in os.environ.items()
           if k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ")}  # no CI variables: nothing of this machine
    with tempfile.TemporaryDirectory(prefix="policyengine-report-example-") as tmp, \
            mock.patch.object(base, "new_bundle_id", lambda created_at: real_id(created_at)[:-12] + BUNDLE_SUFFIX):
        cwd = os.getcwd()
        os.chdir(REPO)  # relative paths, as the README's quickstart runs it
        try:
            result = check(CheckRequest(
                policy_path="policies/soc2-production.yml", now=NOW, env=env,
                change_path="examples/change-allowed.yml", workspace="examples/workspace",
                evidence_dir=str(Path(tmp) / "evidence"), wall_time=WALL, clock_override=True))
        finally:
            os.chdir(cwd)
        path = Path(tmp) / "evidence" / result.evidence["path"]
        with zipfile.ZipFile(path) as zf:
            return zf.read("report.html").decode("utf-8")


def report_digest(html: str) -> str:
    return hashlib.sha256(html.encode("utf-8")).hexdigest()


def png_text(data: bytes) -> dict[bytes, bytes]:
    """The tEXt chunks of a PNG, keyword -> text."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    out: dict[bytes, bytes] = {}
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"tEXt":
            key, _, value = body.partition(b"\0")
            out[key] = value
        if kind == b"IEND":
            break
        pos += 12 + length
    return out


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _recompress(data: bytes, texts: dict[bytes, bytes]) -> bytes:
    """The same image, its pixel data deflated at level 9, with ``texts`` as tEXt chunks after IHDR."""
    pos, head, idat, tail = 8, b"", b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            head = _chunk(kind, body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            tail = _chunk(kind, b"")
        pos += 12 + length
    text = b"".join(_chunk(b"tEXt", k + b"\0" + v) for k, v in texts.items())
    return data[:8] + head + text + _chunk(b"IDAT", zlib.compress(zlib.decompress(idat), 9)) + tail


def screenshot(html: str, out: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        raise SystemExit("chromium is needed: apt-get install chromium")
    with tempfile.TemporaryDirectory(prefix="policyengine-report-shot-") as tmp:
        page, shot = Path(tmp) / "report.html", Path(tmp) / "shot.png"
        page.write_text(html, encoding="utf-8")
        done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                               "--no-first-run", "--disable-background-networking", "--disable-component-update",
                               "--disable-sync", f"--user-data-dir={Path(tmp) / 'profile'}",
                               f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}", page.as_uri()],
                              capture_output=True, text=True, timeout=180, check=False)
        if not shot.is_file():
            raise SystemExit(f"chromium made no screenshot: {done.stderr[-2000:]}")
        out.write_bytes(_recompress(shot.read_bytes(), {TEXT_KEY: report_digest(html).encode("ascii")}))


def main() -> int:
    html = example_report()
    screenshot(html, OUTPUT)
    print(f"wrote {OUTPUT.relative_to(REPO)} ({OUTPUT.stat().st_size // 1024} KiB) of the report with sha256 "
          f"{report_digest(html)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
