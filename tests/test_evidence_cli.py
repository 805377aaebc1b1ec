"""The auditor's commands on a local archive: list (SQLite index), show, get, replay, audit export."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import pytest
from test_evidence import CHANGE, write

from policyengine.evidence.stores.folder import LocalArchive
from policyengine.evidence.audit.export import draw_sample
from policyengine.language.policy import load_change

FIXTURES = Path(__file__).parent / "fixtures" / "acceptance"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLICYENGINE_")}
    return subprocess.run([sys.executable, "-m", "policyengine", *args], capture_output=True, text=True,
                          timeout=300, check=False, env=env)


@pytest.fixture
def populated(tmp_path: Path) -> LocalArchive:
    """Twelve bundles over three months, two environments, both decisions."""
    archive = LocalArchive(tmp_path / "archive")
    for month in (9, 10, 11):
        for i in range(4):
            env = "production" if i % 2 == 0 else "staging"
            write(archive, change={**CHANGE, "environment": env},
                  decision={"decision": "allow" if i < 3 else "deny", "rules": []},
                  created_at=datetime(2026, month, 10 + i, 12, 0, tzinfo=timezone.utc))
    return archive


def test_list_filters_and_formats(populated: LocalArchive) -> None:
    root = str(populated.root)
    result = cli("evidence", "list", "--archive", root, "--since", "2026-10-01", "--until", "2026-10-31", "--json")
    rows = json.loads(result.stdout)
    assert [r["created_at"][:10] for r in rows] == ["2026-10-10", "2026-10-11", "2026-10-12", "2026-10-13"]
    result = cli("evidence", "list", "--archive", root, "--environment", "production", "--decision", "allow",
                 "--csv")
    table = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(table) == 6 and {r["environment"] for r in table} == {"production"}
    assert {r["decision"] for r in table} == {"allow"}
    result = cli("evidence", "list", "--archive", root, "--repository", "acme/shop", "--until",
                 "2026-09-11T12:00:00Z")
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "CREATED_AT", "ENVIRONMENT", "REPOSITORY", "COMMIT", "KIND", "DECISION", "SIGNED"]
    assert len(lines) == 2  # until is exclusive for a time
    assert cli("evidence", "list", "--archive", root, "--since", "yesterday").returncode == 2


def test_the_sqlite_index_is_rebuilt_when_missing_or_stale(populated: LocalArchive) -> None:
    root = populated.root
    assert len(json.loads(cli("evidence", "list", "--archive", str(root), "--json").stdout)) == 12
    db = root / "index.sqlite"
    assert db.exists()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM bundles").fetchone()[0] == 12
    # Appended lines are picked up incrementally.
    write(populated, created_at=datetime(2026, 12, 1, tzinfo=timezone.utc))
    assert len(json.loads(cli("evidence", "list", "--archive", str(root), "--json").stdout)) == 13
    # A rewritten index.jsonl (same length, other content) is noticed and the cache rebuilt.
    lines = populated.index_path.read_text().splitlines()
    populated.index_path.write_text("\n".join(lines[:-2] + [lines[-1], lines[-2]]) + "\n")
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM bundles WHERE decision = 'deny'")
    rows = json.loads(cli("evidence", "list", "--archive", str(root), "--json").stdout)
    assert len(rows) == 13
    db.unlink()
    assert len(json.loads(cli("evidence", "list", "--archive", str(root), "--json").stdout)) == 13
    # A torn last line is skipped with a warning, not listed.
    with open(populated.index_path, "ab") as f:
        f.write(b'{"id": "2026')
    result = cli("evidence", "list", "--archive", str(root), "--json")
    assert len(json.loads(result.stdout)) == 13 and "1 index record(s) cannot be read" in result.stderr


def _real_check(root: Path) -> str:
    result = cli("check", "--policy", str(FIXTURES / "policy.yml"), "--change", str(FIXTURES / "change.yml"),
                 "--workspace", str(FIXTURES / "workspace"), "--now", "2026-11-24T15:00:00Z",
                 "--evidence-dir", str(root))
    assert result.returncode == 0, result.stdout + result.stderr
    return LocalArchive(root).list()[-1].id


def test_show_get_and_replay_a_real_bundle(tmp_path: Path) -> None:
    root = tmp_path / "ev"
    bundle_id = _real_check(root)
    shown = cli("evidence", "show", "--archive", str(root), bundle_id)
    assert shown.returncode == 0
    for text in ("decision    ALLOW", "PASS    peer-review [CC8.1]", "bob at 2026-11-23T15:02:00Z",
                 "signature   unsigned", "integrity   NOT PROVEN", "the bundle is unsigned", "#1, previous (none: first bundle)",
                 "subject     git+acme/payments@9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6 (gitCommit:9f1c2d3e"):
        assert text in shown.stdout
    got = cli("evidence", "get", "--archive", str(root), bundle_id, "-o", str(tmp_path / "copy.zip"))
    assert got.returncode == 0
    assert (tmp_path / "copy.zip").read_bytes() == (root / LocalArchive(root).list()[0].path).read_bytes()
    with zipfile.ZipFile(tmp_path / "copy.zip") as zf:
        assert "report.html" in zf.namelist()
    replayed = cli("evidence", "replay", "--archive", str(root), bundle_id, "--json")
    assert replayed.returncode == 0, replayed.stdout
    doc = json.loads(replayed.stdout)
    assert doc["match"] and doc["recorded"] == doc["replayed"] == "allow"
    assert {r["id"]: r["replayed"] for r in doc["rules"]}["security-review"] == "skipped"
    assert cli("evidence", "show", "--archive", str(root), "20990101T000000Z-000000000000").returncode == 2


def test_replay_names_every_difference(tmp_path: Path) -> None:
    archive = LocalArchive(tmp_path / "ev")
    policy = (FIXTURES / "policy.yml").read_bytes()
    from policyengine.workspace.files import Workspace

    ws = Workspace(FIXTURES / "workspace")
    files = [ws.describe(p) for p in ("ROLLBACK.md", "reports/unit.xml", "reports/integration/api.xml")]
    ref = archive.write_bundle(
        decision={"decision": "deny", "evaluated_at": "2026-11-24T15:00:00Z",
                  "rules": [{"id": "peer-review", "status": "fail"}, {"id": "tests", "status": "pass"}]},
        change=load_change(FIXTURES / "change.yml"), policy_filename="policy.yml", policy_bytes=policy,
        files=files)
    result = cli("evidence", "replay", "--archive", str(archive.root), ref.id)
    assert result.returncode == 1
    assert "DIFFERENCE  decision: recorded deny, replayed allow" in result.stdout
    assert "DIFFERENCE  rule peer-review: recorded fail, replayed pass" in result.stdout
    assert "DIFFERENCE  rule rollback-plan: not in the recorded decision, replayed pass" in result.stdout
    assert "same    tests: recorded pass, replayed pass" in result.stdout


def test_audit_export_population_sample_and_index(populated: LocalArchive, tmp_path: Path) -> None:
    out = tmp_path / "audit.zip"
    args = ["audit", "export", "--archive", str(populated.root), "--since", "2026-10-01", "--until", "2026-11-30",
            "--sample", "3", "--seed", "42", "-o", str(out)]
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    assert "8 evaluation(s)" in result.stdout and "seed 42" in result.stdout
    assert "copying sampled bundles" in result.stderr  # the progress bar
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
        population = list(csv.DictReader(io.StringIO(zf.read("population.csv").decode())))
        doc = json.loads(zf.read("export.json"))
        index_html = zf.read("index.html").decode()
        bundles = {n for n in names if n.endswith(".zip")}
    assert len(population) == 8
    assert {r["decision"] for r in population} == {"allow", "deny"}
    expected = draw_sample([r["id"] for r in population], 3, 42)
    assert doc["sample"]["ids"] == expected and doc["sample"]["seed"] == 42
    assert [r["id"] for r in population if r["sampled"] == "yes"] == sorted(expected)
    assert bundles == {f"bundles/{i}.zip" for i in expected}
    assert {f"bundles/{i}/report.html" for i in expected} <= names
    for i in expected:
        assert f"bundles/{i}/report.html" in index_html
    # The same seed draws the same sample; the sampled bundles are byte-identical to the archive's.
    again = tmp_path / "again.zip"
    assert cli(*args[:-1], str(again)).returncode == 0
    with zipfile.ZipFile(again) as zf:
        assert json.loads(zf.read("export.json"))["sample"]["ids"] == expected
        for record in populated.list():
            if record.id in expected:
                assert zf.read(f"bundles/{record.id}.zip") == (populated.root / record.path).read_bytes()
    # Production only, no sample.
    result = cli("audit", "export", "--archive", str(populated.root), "--since", "2026-09-01", "--until",
                 "2026-09-30", "--environment", "production", "-o", str(tmp_path / "p.zip"))
    assert result.returncode == 0 and "2 evaluation(s)" in result.stdout
    assert cli("audit", "export", "--archive", str(populated.root), "--since", "2026-09-01", "--until",
               "2026-09-30", "--seed", "1", "-o", str(tmp_path / "x.zip")).returncode == 2


def test_draw_sample_is_reproducible_and_order_independent() -> None:
    ids = [f"20260101T0000{i:02d}Z-{i:012x}" for i in range(50)]
    assert draw_sample(ids, 5, 7) == draw_sample(list(reversed(ids)), 5, 7)
    assert draw_sample(ids, 5, 7) != draw_sample(ids, 5, 8)
    assert draw_sample(ids[:3], 5, 7) == sorted(ids[:3])


def test_every_bundle_holds_a_report_listing_the_other_members_digests(tmp_path: Path) -> None:
    root = tmp_path / "ev"
    bundle_id = _real_check(root)
    second = _real_check(root)
    archive = LocalArchive(root)
    refs = {r.id: r for r in archive.list()}
    with zipfile.ZipFile(root / refs[second].path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        html = zf.read("report.html").decode()
    listed = [e["path"] for e in manifest["members"]]
    assert listed[-1] == "report.html"  # listed (its digest is checked), written after the others
    for entry in manifest["members"][:-1]:
        assert entry["sha256"] in html, entry["path"]
    assert second in html and refs[bundle_id].sha256 in html  # its id and the previous bundle's digest
    assert "unsigned" in html
    assert "<script" not in html.lower()


def test_list_without_index_jsonl_lists_from_the_bundles_and_says_so(populated: LocalArchive) -> None:
    expected = [r.id for r in populated.list()]
    populated.index_path.unlink()
    (populated.root / "index.sqlite").unlink(missing_ok=True)
    result = cli("evidence", "list", "--archive", str(populated.root), "--json")
    assert result.returncode == 0
    assert [r["id"] for r in json.loads(result.stdout)] == expected
    assert "index.jsonl is missing" in result.stderr
    verified = cli("evidence", "verify", "--archive", str(populated.root), "--all")
    assert verified.returncode == 1 and "unindexed" in verified.stdout
