"""docs/report-example.png shows the report.html the gate writes now (issue 18).

scripts/report-example.py renders the allowed example's report with the real gate and renderer
and screenshots it; the PNG carries the report's SHA-256. This test renders the report again:
when the report changed and the PNG was not remade, it fails and says how to remake it.
"""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
PNG = REPO / "docs" / "report-example.png"
REMAKE = "run .venv/bin/python scripts/report-example.py (needs chromium) and commit docs/report-example.png"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("report_example", REPO / "scripts" / "report-example.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stale(script: ModuleType, png: bytes, html: str) -> str | None:
    """Why the PNG does not show ``html`` (None: it does)."""
    recorded = script.png_text(png).get(script.TEXT_KEY)
    if recorded is None:
        return "the PNG records no report digest: it was not made by scripts/report-example.py"
    if recorded.decode("ascii") != script.report_digest(html):
        return f"the PNG shows a report with sha256 {recorded.decode()}, the gate now writes {script.report_digest(html)}"
    return None


def test_the_example_png_shows_the_report_the_gate_writes_now() -> None:
    script = _script()
    html = script.example_report()
    assert html == script.example_report(), "the example report is not the same on every run"
    assert "<span class=\"word\">ALLOW</span>" in html and "acme/payments" in html
    why = _stale(script, PNG.read_bytes(), html)
    assert why is None, f"docs/report-example.png is stale: {why}; {REMAKE}"


def test_a_changed_report_makes_the_png_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check can fail: a report rendered differently no longer matches the committed PNG."""
    script = _script()
    import policyengine.evidence.format.report as report

    real = report.render_report
    monkeypatch.setattr(report, "render_report", lambda *a, **k: real(*a, **k).replace("The change", "The chnage"))
    why = _stale(script, PNG.read_bytes(), script.example_report())
    assert why is not None and "the gate now writes" in why


def test_the_png_is_a_small_screenshot() -> None:
    data = PNG.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    script = _script()
    assert (width, height) == (script.WIDTH, script.HEIGHT)
    assert len(data) < 400 * 1024, f"{len(data)} bytes: keep the example small"
