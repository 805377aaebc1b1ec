"""The auditor's pages: a bundle's report.html and an export's index.html.

Content and escaping are checked on the HTML text and with ``html.parser``; the page is also
rendered by a real headless browser (Debian's chromium), whose screenshot is decoded here and
must show the verdict's colour, not a blank page.
"""

from __future__ import annotations

import copy
import html
import re
import shutil
import struct
import subprocess
import zlib
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES

from policyengine.engine import decision_to_json, evaluate
from policyengine.evidence.format.report import render_export_index, render_report
from policyengine.gather import gather_facts
from policyengine.language.policy import load_change, load_policy
from policyengine.workspace.files import Workspace

ACC = FIXTURES / "acceptance"
HOSTILE_SCRIPT = "<script>alert(1)</script>"
HOSTILE_ATTR = '"><img src=x onerror=alert(document.domain)>'
HOSTILE = f"{HOSTILE_SCRIPT} {HOSTILE_ATTR}"
MEMBERS = [
    {"path": "decision.json", "size": 5234, "sha256": "a3" * 32},
    {"path": "change.json", "size": 1299, "sha256": "b4" * 32},
    {"path": "files/reports/unit.xml", "size": 811, "sha256": "7c05c9667d69b13444d79d5b947caf2c729ef5a7e9e4bf39ddd179c9189f063a"},
]
BUNDLE_ID = "20261124T150000Z-7f3a9c"
CREATED = "2026-11-24T15:00:01Z"
PREVIOUS = "c5" * 32
ALLOW_GREEN = (0x1A, 0x7F, 0x37)  # the verdict border of an allow
DENY_RED = (0xCF, 0x22, 0x2E)  # the verdict border of a deny


def decide(now: str) -> dict[str, Any]:
    """Evaluate the acceptance policy and change at ``now`` and return the decision as JSON."""
    policy = load_policy(ACC / "policy.yml")
    change = load_change(ACC / "change.yml")
    moment = datetime.fromisoformat(now.replace("Z", "+00:00")).astimezone(timezone.utc)
    return decision_to_json(evaluate(policy, gather_facts(policy, change, Workspace(ACC / "workspace")), moment))


@pytest.fixture(scope="module")
def allowed() -> dict[str, Any]:
    return decide("2026-11-24T15:00:00Z")  # Tuesday 10:00 New York


@pytest.fixture(scope="module")
def denied() -> dict[str, Any]:
    return decide("2026-11-27T15:00:00Z")  # Friday: outside the window


def report(decision: dict[str, Any], *, signed: bool = False, previous: str | None = PREVIOUS) -> str:
    return render_report(decision, MEMBERS, BUNDLE_ID, CREATED, previous, signed)


def text_of(page: str) -> str:
    """The visible text of a page, entities decoded and whitespace collapsed."""
    body = re.sub(r"<style>.*?</style>", " ", page, flags=re.DOTALL)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


class Tags(HTMLParser):
    """Record every start tag with its attributes and check that non-void elements are balanced."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link", "wbr", "col", "area", "base", "source"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.starts: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.stack: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.starts.append((tag, attrs))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.starts.append((tag, attrs))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def parse(page: str) -> Tags:
    tags = Tags()
    tags.feed(page)
    tags.close()
    assert tags.problems == [], tags.problems
    assert tags.stack == [], f"unclosed: {tags.stack}"
    return tags


def assert_inert(page: str, *, allowed_hrefs: re.Pattern[str] | None = None) -> Tags:
    """Assert the page has no live script, handler, embedded resource or remote reference."""
    assert "<script" not in page.lower()
    assert "<img" not in page.lower()
    tags = parse(page)
    names = [t for t, _ in tags.starts]
    for banned in ("script", "img", "iframe", "object", "embed", "link", "base", "form", "svg", "video", "audio"):
        assert banned not in names, banned
    for tag, attrs in tags.starts:
        for name, value in attrs:
            assert not name.startswith("on"), (tag, name, value)
            assert name not in ("src", "srcset", "action", "formaction", "background", "style"), (tag, name)
            if name == "href":
                assert allowed_hrefs is not None and allowed_hrefs.fullmatch(value or ""), (tag, value)
    # No remote reference in an attribute; URLs the data holds appear only as escaped text.
    for _, attrs in tags.starts:
        for name, value in attrs:
            if name != "content":
                assert "http://" not in (value or "") and "https://" not in (value or ""), (name, value)
    # The stylesheet fetches nothing either (no url(), no @import).
    style = "".join(re.findall(r"<style>(.*?)</style>", page, flags=re.DOTALL))
    assert "url(" not in style and "@import" not in style
    return tags


def poison(value: Any) -> Any:
    """Return ``value`` with the hostile payload appended to every string in it."""
    if isinstance(value, str):
        return value + HOSTILE
    if isinstance(value, list):
        return [poison(v) for v in value]
    if isinstance(value, dict):
        return {k: poison(v) for k, v in value.items()}
    return value


# --- report.html: content ---------------------------------------------------------------------


def test_page_is_self_contained_with_csp_and_charset(allowed: dict[str, Any]) -> None:
    page = report(allowed)
    assert page.startswith("<!DOCTYPE html>")
    assert '<meta charset="utf-8">' in page
    assert (
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'">'
        in html.unescape(page)
    )
    tags = assert_inert(page)
    assert [t for t, _ in tags.starts][:2] == ["html", "head"]
    assert "@media print" in page and "break-inside:avoid" in page


def test_change_and_verdict(allowed: dict[str, Any]) -> None:
    text = text_of(report(allowed))
    assert "ALLOW" in text and "DENY" not in text
    for fact in ("acme/payments", "production", "9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6", "dana", "alice",
                 "#42 PAY-101: add refund endpoint", "2026-11-24T15:00:00Z"):
        assert fact in text, fact
    assert 'class="verdict allow"' in report(allowed)


def test_deny_names_the_blocking_rule(denied: dict[str, Any]) -> None:
    page = report(denied)
    text = text_of(page)
    assert 'class="verdict deny"' in page
    assert "DENY" in text and "denied by: deploy-window" in text


def test_every_rule_with_status_message_and_controls(allowed: dict[str, Any]) -> None:
    page = report(allowed)
    body = page.split("<h2>Rules</h2>")[1].split("<tbody>")[1].split("</tbody>")[0]
    rows = re.findall(r"<tr>(.*?)</tr>", body, flags=re.DOTALL)
    assert len(rows) == len(allowed["rules"]) == 7
    for rule, row in zip(allowed["rules"], rows):
        row_text = text_of(row)
        assert row_text.startswith(rule["id"]), row_text
        assert rule["status"].lower() in row_text.lower()
        assert rule["message"] in row_text
        for control in rule["controls"] or ["\u2014"]:
            assert control in row_text
    assert "SOC 2 controls" in page


def test_approvals_show_time_commit_and_what_counted(allowed: dict[str, Any]) -> None:
    section = text_of(report(allowed).split("<h2>Approvals</h2>")[1].split("<h2>")[0])
    erin = section.split("erin", 1)[1].split("bob", 1)[0]
    assert "2026-11-23T14:10:00Z" in erin and "5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b" in erin
    assert "not the deployed commit" in erin
    assert "NOT COUNTED".lower() in erin.lower() and "stale" in erin
    bob = section.split("bob", 1)[1].split("carol", 1)[0]
    assert "2026-11-23T15:02:00Z" in bob and "counted" in bob.lower() and "not counted" not in bob.lower()
    assert "2 of 2 required approvals counted (bob, carol)" in section
    # The skipped security review judged nobody, so it gets no column.
    assert "security-review" not in section


def test_test_totals_and_report_files(allowed: dict[str, Any]) -> None:
    page = report(allowed)
    section = page.split("<h2>Test results</h2>")[1].split("<h2>")[0]
    rows = [text_of(r) for r in re.findall(r"<tr>(.*?)</tr>", section, flags=re.DOTALL)]
    assert "tests pass 5 4 0 0 1 0" in rows
    assert "integration-tests warn 2 1 1 0 0 0" in rows
    assert "7c05c9667d69b13444d79d5b947caf2c729ef5a7e9e4bf39ddd179c9189f063a" in section


def test_deploy_time_against_the_windows(allowed: dict[str, Any], denied: dict[str, Any]) -> None:
    section = text_of(report(allowed).split("<h2>Deploy time and windows</h2>")[1].split("<h2>")[0])
    assert "2026-11-24T10:00:00-05:00" in section and "America/New_York" in section
    assert "Inside allowed window mon-thu 09:00-16:00" in section
    window = next(r for r in denied["rules"] if r["id"] == "deploy-window")
    section = text_of(report(denied).split("<h2>Deploy time and windows</h2>")[1].split("<h2>")[0])
    assert "Inside allowed window no" in section
    assert window["details"]["next_allowed"] and window["details"]["next_allowed"] in section
    assert "2026-11-27T15:00:00Z" in section


def test_digests_bundle_chain_and_members(allowed: dict[str, Any]) -> None:
    text = text_of(report(allowed))
    for fact in (allowed["policy"]["sha256"], BUNDLE_ID, CREATED, PREVIOUS, "unsigned", "Bundle members (3)"):
        assert fact in text, fact
    for member in MEMBERS:
        assert f"{member['path']} {member['size']} {member['sha256']}" in text
    assert "It is listed in manifest.json" in text  # the page is a manifest member...
    assert not any(m["path"] == "report.html" for m in MEMBERS)  # ...but cannot list its own digest
    first = text_of(report(allowed, signed=True, previous=None))
    assert "signed the bundle carries a signed" in first and "unsigned" not in first
    assert "none (first bundle of this repository and environment)" in first


def test_output_is_deterministic(allowed: dict[str, Any]) -> None:
    assert report(copy.deepcopy(allowed)) == report(allowed)


# --- report.html: hostile input -----------------------------------------------------------------


def test_hostile_pr_title_and_rule_message_are_text(allowed: dict[str, Any]) -> None:
    decision = copy.deepcopy(allowed)
    decision["change"]["pull_request"]["title"] = HOSTILE
    decision["rules"][0]["message"] = HOSTILE
    page = report(decision)
    assert_inert(page)
    assert html.escape(HOSTILE_SCRIPT) in page and html.escape(HOSTILE_ATTR, quote=True) in page
    assert text_of(page).count(HOSTILE) == 2  # shown to the reader, verbatim


def test_every_string_of_the_decision_is_escaped(allowed: dict[str, Any]) -> None:
    decision = poison(allowed)
    members = poison(MEMBERS)
    page = render_report(decision, members, BUNDLE_ID + HOSTILE, CREATED + HOSTILE, PREVIOUS + HOSTILE, False)
    assert_inert(page)
    # The pipeline URL is data: escaped text, never a link.
    assert "https://ci.example.com/acme/payments/pipelines/1042" in text_of(page)
    assert "href" not in page


def test_malformed_decision_still_renders(allowed: dict[str, Any]) -> None:
    decision: dict[str, Any] = {"decision": "maybe", "rules": [{"id": 3, "details": "x", "controls": None}],
                                "change": {"reviews": ["nope"], "pull_request": None}}
    page = render_report(decision, [], BUNDLE_ID, CREATED, None, False)
    assert_inert(page)
    assert "UNKNOWN" in text_of(page)


# --- index.html of an export --------------------------------------------------------------------


def rows(n: int = 5) -> list[dict[str, Any]]:
    return [
        {"id": f"2026112{i}T150000Z-{i:04x}", "created_at": f"2026-11-2{i}T15:00:00Z", "environment": "production",
         "repository": "acme/payments", "commit": f"{i}" * 40, "decision": "deny" if i == 3 else "allow",
         "path": f"bundles/2026/11/2026112{i}T150000Z-{i:04x}.zip"}
        for i in range(1, n + 1)
    ]


def test_export_index_counts_and_links_only_the_sample() -> None:
    population = rows()
    sample = [population[1]["id"], population[2]["id"]]
    page = render_export_index(population, since="2026-11-01", until="2026-11-30", seed=42, sample_ids=sample)
    tags = assert_inert(page, allowed_hrefs=re.compile(r"bundles/[A-Za-z0-9%._~-]+(\.zip|/report\.html)"))
    text = text_of(page)
    for fact in ("Period 2026-11-01 to 2026-11-30", "Population 5 evaluations", "Allowed 4", "Denied 1",
                 "Sample seed 42", "Sample size 2"):
        assert fact in text, fact
    hrefs = sorted(v or "" for _, attrs in tags.starts for k, v in attrs if k == "href")
    expected = sorted(f"bundles/{s}{suffix}" for s in sample for suffix in (".zip", "/report.html")) * 2
    assert hrefs == sorted(expected)  # once in the sample table, once in the population table
    pop_rows = [text_of(r) for r in re.findall(r"<tr>(.*?)</tr>", page.split("<h2>Population")[1], flags=re.DOTALL)]
    assert len(pop_rows) == 6  # header + 5
    assert pop_rows[2].startswith(population[1]["id"]) and " yes " in pop_rows[2] + " "
    assert pop_rows[1].endswith("no") and "1" * 40 in pop_rows[1] and "production" in pop_rows[1]


def test_export_index_without_sample_and_with_hostile_rows() -> None:
    population = poison(rows(2))
    page = render_export_index(population, since="2026-11-01" + HOSTILE, until="x", seed=None,
                               sample_ids=[population[0]["id"]])
    tags = assert_inert(page, allowed_hrefs=re.compile(r"bundles/[A-Za-z0-9%._~-]+(\.zip|/report\.html)"))
    hrefs = [v or "" for _, attrs in tags.starts for k, v in attrs if k == "href"]
    assert hrefs and all("/" not in h[len("bundles/"):].removesuffix("/report.html") for h in hrefs)
    assert "none (no sample drawn)" in text_of(page)


# --- a real browser -------------------------------------------------------------------------------


CHROMIUM_INSTALL = "apt-get update && apt-get install -y chromium (or run scripts/test.sh as root with CI=1)"


def chromium() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if not found:
        pytest.skip(f"chromium not installed, so report.html is not rendered in a browser; install it: {CHROMIUM_INSTALL}")
    return found


def run_chromium(binary: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA non-interlaced PNG into rows of RGB bytes (enough for screenshots)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        assert zlib.crc32(kind + body) == struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    assert len(raw) == height * (stride + 1)
    rows_out: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        ftype, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
            else:
                assert ftype == 0, ftype
        prev = line
        rgb = bytes(line) if channels == 3 else bytes(v for i, v in enumerate(line) if i % 4 != 3)
        rows_out.append(rgb)
    return width, height, rows_out


def colour_near(pixels: list[bytes], target: tuple[int, int, int], tolerance: int = 6) -> int:
    """Count pixels within ``tolerance`` of ``target`` in every channel."""
    hits = 0
    for row in pixels:
        for x in range(0, len(row), 3):
            if all(abs(row[x + k] - target[k]) <= tolerance for k in range(3)):
                hits += 1
    return hits


@pytest.mark.parametrize(("when", "word", "colour"), [
    ("2026-11-24T15:00:00Z", "ALLOW", ALLOW_GREEN),
    ("2026-11-27T15:00:00Z", "DENY", DENY_RED),
])
def test_report_renders_in_headless_chromium(tmp_path: Path, when: str, word: str, colour: tuple[int, int, int]) -> None:
    binary = chromium()
    decision = decide(when)
    decision["change"]["pull_request"]["title"] = HOSTILE
    page = tmp_path / "report.html"
    page.write_text(report(decision), encoding="utf-8")
    url = page.as_uri()

    shot = tmp_path / "report.png"
    done = run_chromium(binary, tmp_path, f"--screenshot={shot}", "--window-size=1200,2000", url)
    assert shot.is_file(), done.stderr[-2000:]
    width, height, pixels = decode_png(shot.read_bytes())
    assert (width, height) == (1200, 2000)
    white = sum(1 for row in pixels for x in range(0, len(row), 3) if row[x:x + 3] == b"\xff\xff\xff")
    assert white < 0.97 * width * height, "the page rendered (nearly) blank"
    colours = {row[x:x + 3] for row in pixels[::4] for x in range(0, len(row), 12)}
    assert len(colours) > 20, f"only {len(colours)} colours: styles or text did not render"
    # The verdict box is drawn in its colour: the CSS applied (the CSP allowed the inline style).
    assert colour_near(pixels[:400], colour) > 500, f"no {word} verdict colour near the top"

    dom = run_chromium(binary, tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert f'<span class="word">{word}</span>' in dom.stdout
    assert "<script" not in dom.stdout.lower() and "<img" not in dom.stdout.lower()
    assert html.escape(HOSTILE_SCRIPT, quote=False) in dom.stdout

    pdf = tmp_path / "report.pdf"
    done = run_chromium(binary, tmp_path, f"--print-to-pdf={pdf}", "--no-pdf-header-footer", url)
    assert pdf.is_file(), done.stderr[-2000:]
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-") and len(data) > 10_000
    pages = len(re.findall(rb"/Type\s*/Page[^s]", data))
    assert 1 <= pages <= 6, pages


def test_export_index_renders_in_headless_chromium(tmp_path: Path) -> None:
    binary = chromium()
    population = rows()
    page = tmp_path / "index.html"
    page.write_text(render_export_index(population, since="2026-11-01", until="2026-11-30", seed=7,
                                        sample_ids=[population[0]["id"]]), encoding="utf-8")
    dom = run_chromium(binary, tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert f'href="bundles/{population[0]["id"]}/report.html"' in dom.stdout
    assert "Population (5)" in dom.stdout
