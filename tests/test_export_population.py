"""`audit export` lists a population of deployments: what counts, the filters, the columns
export verify checks, CSV cells that cannot run as formulas, and the period's bounds."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from policyengine.evidence.stores.folder import LocalArchive

POLICY = b"name: prod\nrules:\n  - id: peer-review\n    type: approvals\n    min_approvals: 2\n"
T0 = datetime(2026, 10, 5, 12, 0, tzinfo=timezone.utc)
PERIOD = ("--since", "2026-10-01", "--until", "2026-10-31")
# (the title's carriage return would end the row for a spreadsheet, were the cell not quoted)
HOSTILE = {"deployer": "=cmd|' /C calc'!A0", "title": "+SUM(A1:A9)\r20261010T120000Z-00000000 forged allow",
           "author": "@evil", "url": "-2+3"}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLICYENGINE_")}
    return subprocess.run([sys.executable, "-m", "policyengine", *args], capture_output=True, text=True,
                          timeout=300, check=False, env=env)


def write(archive: LocalArchive, minutes: int, verdict: str = "allow", *, pipeline: str | None = None,
          commit: str = "a" * 40, repo: str = "acme/shop", **decision: Any) -> dict[str, Any]:
    when = T0 + timedelta(minutes=minutes)
    change: dict[str, Any] = {
        "repository": repo, "environment": "production", "commit": commit, "deployer": HOSTILE["deployer"],
        "facts_source": "self-declared",
        "pull_request": {"number": 7, "author": HOSTILE["author"], "title": HOSTILE["title"], "url": HOSTILE["url"]},
    }
    if pipeline:
        change["pipeline"] = {"provider": "github", "id": pipeline}
    doc = {"decision": verdict, "evaluated_at": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "rules": [
        {"id": "peer-review", "type": "approvals", "status": "pass" if verdict == "allow" else "fail",
         "enforcement": "deny", "details": {"counted": ["bob", "carol"]}}], **decision}
    ref = archive.write_bundle(decision=doc, change=change, policy_filename="policy.yml", policy_bytes=POLICY,
                               files=[], created_at=when)
    return archive.find(ref.id)


def outcome(archive: LocalArchive, about: dict[str, Any], status: str, note: str | None = None) -> None:
    when = datetime.fromisoformat(about["created_at"].replace("Z", "+00:00")) + timedelta(minutes=1)
    archive.append_record("outcome", about, {"status": status, "by": "dana", "by_verified": False,
                                             "by_source": "--by", "note": note}, created_at=when)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalArchive, dict[str, str]]:
    """Eight evaluations, three deployments."""
    archive = LocalArchive(tmp_path_factory.mktemp("mixed") / "archive")
    ids = {}
    ids["allow"] = write(archive, 0, pipeline="100")["id"]
    ids["first-attempt"] = write(archive, 10, pipeline="200", commit="b" * 40)["id"]
    ids["re-run"] = write(archive, 12, pipeline="200", commit="b" * 40)["id"]
    ids["deny"] = write(archive, 20, "deny", pipeline="300")["id"]
    ids["advisory"] = write(archive, 30, "deny", pipeline="400", advisory=True)["id"]
    ids["simulated"] = write(archive, 40, pipeline="500", simulated=True)["id"]
    ids["not_applicable"] = write(archive, 50, "not_applicable", pipeline="600")["id"]
    nd = write(archive, 60, pipeline="700", repo="acme/other")
    ids["not_deployed"] = nd["id"]
    outcome(archive, nd, "not_deployed", note="=HYPERLINK(\"http://x\")")
    return archive, ids


def export(archive: LocalArchive, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli("audit", "export", "--archive", str(archive.root), *PERIOD, "-o", str(out), *extra)


def table(zip_path: Path, name: str = "population.csv") -> list[dict[str, str]]:
    with zipfile.ZipFile(zip_path) as zf:
        return list(csv.DictReader(io.StringIO(zf.read(name).decode())))


def test_the_export_counts_deployments_not_evaluations(mixed: tuple[LocalArchive, dict[str, str]],
                                                       tmp_path: Path) -> None:
    archive, ids = mixed
    out = tmp_path / "e.zip"
    result = export(archive, out, "--sample", "3", "--seed", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {r["id"]: r for r in table(out)}
    assert len(rows) == 8
    deployed = {name for name, i in ids.items() if rows[i]["deployment"] == "yes"}
    assert deployed == {"allow", "re-run", "advisory"}
    assert rows[ids["first-attempt"]]["deployment_note"] == f"superseded by {ids['re-run']}"
    assert {rows[ids[n]]["deployment_note"] for n in ("deny", "simulated", "not_applicable", "not_deployed")} == {
        "denied", "simulated", "not_applicable", "outcome not_deployed"}
    assert rows[ids["not_deployed"]]["outcome"] == "not_deployed"
    assert rows[ids["advisory"]]["advisory"] == "yes" and rows[ids["simulated"]]["simulated"] == "yes"
    assert rows[ids["allow"]]["approvers_counted"] == "bob carol"
    assert rows[ids["allow"]]["pipeline"] == "github:100"
    with zipfile.ZipFile(out) as zf:
        assert json.loads(zf.read("export.json"))["deployments"] == 3
    assert "3 deployment(s)" in result.stdout
    verified = cli("evidence", "verify", "--archive", str(out))
    assert verified.returncode == 0, verified.stdout


@pytest.mark.parametrize(("args", "expected"), [
    (("--deployments-only",), {"allow", "re-run", "advisory"}),
    (("--decision", "deny"), {"deny", "advisory"}),
    (("--decision", "allow"), {"allow", "first-attempt", "re-run", "simulated", "not_deployed"}),
    (("--repository", "acme/other"), {"not_deployed"}),
    (("--decision", "allow", "--deployments-only"), {"allow", "re-run"}),
])
def test_filters(mixed: tuple[LocalArchive, dict[str, str]], tmp_path: Path, args: tuple[str, ...],
                 expected: set[str]) -> None:
    archive, ids = mixed
    out = tmp_path / "e.zip"
    result = export(archive, out, "--sample", "2", "--seed", "3", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    names = {name for name, i in ids.items() if i in {r["id"] for r in table(out)}}
    assert names == expected
    verified = cli("evidence", "verify", "--archive", str(out))
    assert verified.returncode == 0, verified.stdout


def test_csv_cells_never_run_as_formulas(mixed: tuple[LocalArchive, dict[str, str]], tmp_path: Path) -> None:
    archive, ids = mixed
    out = tmp_path / "e.zip"
    assert export(archive, out, "--sample", "8", "--seed", "1").returncode == 0
    row = next(r for r in table(out) if r["id"] == ids["allow"])
    assert row["deployer"] == "'" + HOSTILE["deployer"]
    assert row["request_title"] == "'" + HOSTILE["title"]
    assert row["author"] == "'" + HOSTILE["author"]
    assert row["request_url"] == "'" + HOSTILE["url"]
    note = next(r for r in table(out, "records.csv") if r["about_id"] == ids["not_deployed"])["note"]
    assert note.startswith("'=HYPERLINK")
    with zipfile.ZipFile(out) as zf:
        for name in ("population.csv", "records.csv"):
            for cells in csv.reader(io.StringIO(zf.read(name).decode())):
                assert not any(c.startswith(("=", "+", "-", "@", "\t", "\r")) for c in cells), (name, cells)
    # Every sampled row's neutralised cells still compare equal to its bundle.
    verified = cli("evidence", "verify", "--archive", str(out))
    assert verified.returncode == 0, verified.stdout


def test_since_after_until_is_an_error(mixed: tuple[LocalArchive, dict[str, str]], tmp_path: Path) -> None:
    archive, _ = mixed
    out = tmp_path / "e.zip"
    result = cli("audit", "export", "--archive", str(archive.root), "--since", "2026-10-31", "--until",
                 "2026-10-01", "-o", str(out))
    assert result.returncode == 2
    assert "--since 2026-10-31T00:00:00Z is later than --until 2026-10-02T00:00:00Z" in result.stderr
    assert not out.exists()


def test_a_sample_larger_than_the_population_says_so(mixed: tuple[LocalArchive, dict[str, str]],
                                                     tmp_path: Path) -> None:
    archive, _ = mixed
    out = tmp_path / "e.zip"
    result = export(archive, out, "--sample", "50", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert "the sample of 50 asked for is larger than the population of 8" in result.stderr
    with zipfile.ZipFile(out) as zf:
        assert "larger than the population of 8" in zf.read("index.html").decode()
        assert json.loads(zf.read("export.json"))["sample"]["size"] == 8


# -- export verify checks the new columns ------------------------------------------------------------


def _refresh(folder: Path) -> None:
    doc = json.loads((folder / "export.json").read_text())
    for name in doc["files"]:
        if (folder / name).exists():
            doc["files"][name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    (folder / "export.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def _exported_folder(archive: LocalArchive, tmp_path: Path, *args: str) -> Path:
    """An export of ``archive`` (with ``args``), unzipped into a folder to edit."""
    out = tmp_path / "e.zip"
    assert export(archive, out, *args).returncode == 0
    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(out) as zf:
        zf.extractall(folder)
    return folder


def _restate(folder: Path) -> None:
    """Make the (unsigned) statement name the files' digests as they are now."""
    import base64

    env = json.loads((folder / "export.intoto.json").read_text())
    assert not env.get("signatures")
    statement = json.loads(base64.b64decode(env["payload"]))
    for subject in statement["subject"]:
        if (folder / subject["name"]).exists():
            subject["digest"]["sha256"] = hashlib.sha256((folder / subject["name"]).read_bytes()).hexdigest()
    env["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    (folder / "export.intoto.json").write_text(json.dumps(env, indent=2, sort_keys=True) + "\n")


def _read_population(folder: Path) -> list[list[str]]:
    with open(folder / "population.csv", encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def _write_population(folder: Path, rows: list[list[str]]) -> None:
    """Write population.csv back as the export writes it, and update export.json's digests (the
    statement still names the old ones: only an unsigned export's own consistency is at stake)."""
    from policyengine.evidence.format.tabular import csv_text

    (folder / "population.csv").write_bytes(csv_text(rows).encode("utf-8"))
    _refresh(folder)


def _edit(folder: Path, bundle_id: str, column: str, value: str) -> None:
    rows = _read_population(folder)
    header = rows[0]
    for row in rows[1:]:
        if row[0] == bundle_id:
            row[header.index(column)] = value
    _write_population(folder, rows)


@pytest.mark.parametrize(("who", "column", "value", "says"), [
    ("allow", "deployer", "mallory", "has deployer"),
    ("allow", "approvers_counted", "bob carol dave", "has approvers_counted"),
    ("advisory", "advisory", "no", "has advisory"),
    ("allow", "policy_name", "lenient", "has policy_name"),
    ("deny", "deployment", "yes", "makes it no deployment"),
    ("first-attempt", "deployment", "yes", "is a later run of the same pipeline"),
    ("re-run", "deployment", "no", "not a later run of the same pipeline"),
    ("not_deployed", "outcome", "deployed", "the latest outcome record"),
    ("allow", "review", "ok", "the latest review record"),
])
def test_export_verify_checks_every_new_column(mixed: tuple[LocalArchive, dict[str, str]], tmp_path: Path,
                                               who: str, column: str, value: str, says: str) -> None:
    archive, ids = mixed
    folder = _exported_folder(archive, tmp_path, "--sample", "8", "--seed", "1")
    if column == "deployment" and who == "re-run":
        _edit(folder, ids[who], "deployment_note", f"superseded by {ids['first-attempt']}")
    _edit(folder, ids[who], column, value)
    result = cli("evidence", "verify", "--archive", str(folder))
    assert result.returncode == 1
    assert any(ids[who] in line and says in line for line in result.stdout.splitlines() if line.startswith("FAIL")), \
        result.stdout


def test_evidence_list_csv_neutralises_cells_and_refuses_an_inverted_period(tmp_path: Path) -> None:
    archive = LocalArchive(tmp_path / "archive")
    write(archive, 0, repo="=evil/x")
    listed = cli("evidence", "list", "--archive", str(archive.root), "--csv")
    assert listed.returncode == 0, listed.stderr
    row = next(csv.DictReader(io.StringIO(listed.stdout)))
    assert row["repository"] == "'=evil/x"
    inverted = cli("evidence", "list", "--archive", str(archive.root), "--since", "2026-11-01", "--until",
                   "2026-10-01")
    assert inverted.returncode == 2 and "later than --until" in inverted.stderr


def test_evidence_csv_reads_back_cell_for_cell_and_runs_no_formula() -> None:
    """``csv_table``/``csv_text`` (listing, population.csv, records.csv): every cell reads back as written,
    a carriage return inside a cell cannot split a row, and without one the text is what csv.writer writes."""
    import random

    from policyengine.evidence.format.tabular import csv_cell, csv_table

    rng = random.Random(7)
    alphabet = ["a", "Z", "0", ",", '"', "\n", "\r", "=", "+", "-", "@", "\t", " ", "é", "'"]
    columns = ("id", "note", "sequence", "kind")
    for _ in range(600):
        records = []
        for _ in range(rng.randrange(4)):
            records.append({c: rng.choice([None, rng.randrange(-5, 50), True,
                                           "".join(rng.choice(alphabet) for _ in range(rng.randrange(5)))])
                            for c in columns if rng.random() < 0.9})
        cells = [list(columns)] + [[str(v) if type(v) is int else csv_cell(v) for v in map(r.get, columns)]
                                   for r in records]
        text = csv_table(columns, records)
        assert list(csv.reader(io.StringIO(text, newline=""))) == cells
        assert not any(c.startswith(("=", "+", "@", "\t", "\r")) for row in cells[1:] for c in row)
        if "\r" not in text:
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerows(cells)
            assert text == buf.getvalue()
    from policyengine.evidence.format.tabular import csv_text

    assert csv_text([["a"], [""], ["b"]]) == 'a\n""\nb\n'
    assert list(csv.reader(io.StringIO(csv_text([["x\ry", "z"]]), newline=""))) == [["x\ry", "z"]]


def test_an_export_written_before_the_emergency_status_column_still_verifies(
        mixed: tuple[LocalArchive, dict[str, str]], tmp_path: Path) -> None:
    archive, ids = mixed
    folder = _exported_folder(archive, tmp_path, "--sample", "3", "--seed", "1")
    rows = _read_population(folder)
    drop = rows[0].index("emergency_status")
    assert all(row[drop] == "" for row in rows[1:])  # no emergency in this archive
    _write_population(folder, [row[:drop] + row[drop + 1:] for row in rows])
    _restate(folder)
    result = cli("evidence", "verify", "--archive", str(folder))
    assert result.returncode == 0, result.stdout
    _edit(folder, ids["deny"], "deployment", "yes")  # the columns it has are still checked
    assert cli("evidence", "verify", "--archive", str(folder)).returncode == 1
