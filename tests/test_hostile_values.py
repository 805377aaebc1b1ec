"""Values that once passed `policy validate` and then crashed `check` are refused up front."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

HEAD = "version: 1\nname: t\nrules:\n"
CASES = {
    "nul-in-report-glob": ('  - id: tests\n    type: tests_passed\n    reports: ["reports/a\\0b.xml"]\n',
                           "rules[0].reports[0]: path 'reports/a\\x00b.xml' contains the control character U+0000"),
    "nul-in-plan-path": ('  - id: plan\n    type: rollback_plan\n    path: "ROLLBACK\\0.md"\n',
                         "rules[0].path: path 'ROLLBACK\\x00.md' contains the control character U+0000"),
    "newline-in-when-path": ('  - id: plan\n    type: rollback_plan\n    path: ROLLBACK.md\n'
                             '    when: {paths: ["src/\\n**"]}\n', "contains the control character U+000A"),
    "until-year-9999-with-offset": ('  - id: w\n    type: deploy_window\n    timezone: UTC\n    deny:\n'
                                    '      - {name: far, from: "2026-01-01T00:00", until: "9999-12-31T23:59+05:00"}\n',
                                    "rules[0].deny[0].until: expected a date-time between 1970 and 9000"),
    "naive-until-year-9999-east": ('  - id: w\n    type: deploy_window\n    timezone: Pacific/Kiritimati\n    deny:\n'
                                   '      - {name: far, from: "2026-01-01T00:00", until: "9999-12-31T23:59"}\n',
                                   "rules[0].deny[0].until: expected a date-time between 1970 and 9000"),
    "from-year-1": ('  - id: w\n    type: deploy_window\n    timezone: Asia/Tokyo\n    deny:\n'
                    '      - {name: old, from: "0001-01-01T00:00", until: "2026-01-01T00:00"}\n',
                    "rules[0].deny[0].from: expected a date-time between 1970 and 9000"),
    "ten-billion-days": ('  - id: w\n    type: deploy_window\n    timezone: UTC\n    deny:\n'
                         '      - {name: long, cron: "0 12 * * wed", duration: 10000000000d}\n',
                         "rules[0].deny[0].duration: expected a positive duration of at most 366d"),
    "huge-seconds": ('  - id: w\n    type: deploy_window\n    timezone: UTC\n    deny:\n'
                     '      - {name: long, cron: "0 12 * * wed", duration: 99999999999999999999s}\n',
                     "rules[0].deny[0].duration: expected a positive duration"),
}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policyengine", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.parametrize("name", sorted(CASES))
def test_validate_and_check_refuse_the_value_with_exit_2(tmp_path: Path, name: str) -> None:
    body, message = CASES[name]
    (tmp_path / "p.yml").write_text(HEAD + body, encoding="utf-8")
    validated = _cli("policy", "validate", "p.yml", cwd=tmp_path)
    assert validated.returncode == 2, validated.stdout + validated.stderr
    assert message in validated.stdout + validated.stderr
    checked = _cli("check", "--policy", "p.yml", "--change", str(REPO / "examples" / "change-allowed.yml"),
                   "--workspace", str(REPO / "examples" / "workspace"), "--now", "2026-11-24T15:00:00Z",
                   "--evidence-dir", str(tmp_path / "ev"), cwd=tmp_path)
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert "Traceback" not in checked.stderr and "internal error" not in checked.stderr


@pytest.mark.parametrize("report_name", ["un\nit.xml", "tab\there.xml", "100%25.xml", "back\\slash.xml",
                                         "zero\u200bwidth.xml", "line\u2028sep.xml"])
def test_odd_file_names_are_recorded_reversibly_and_replay(tmp_path: Path, report_name: str) -> None:
    """A report or policy whose name holds a newline or control character is judged, recorded,
    verified and replayed; the member name encodes it and decodes back to the same path."""
    import json
    import shutil
    import zipfile

    from policyengine.evidence.format.bundle import member_path, member_source

    assert member_source(member_path(report_name)) == report_name
    ws = tmp_path / "ws"
    (ws / "reports").mkdir(parents=True)
    shutil.copy(REPO / "examples" / "workspace" / "ROLLBACK.md", ws / "ROLLBACK.md")
    shutil.copy(REPO / "examples" / "workspace" / "reports" / "unit.xml", ws / "reports" / report_name)
    policy = tmp_path / "pol\x01icy.yml"
    shutil.copy(REPO / "policies" / "soc2-production.yml", policy)
    run = _cli("check", "--policy", str(policy), "--change", str(REPO / "examples" / "change-allowed.yml"),
               "--workspace", str(ws), "--now", "2026-11-24T15:00:00Z", "--evidence-dir", str(tmp_path / "ev"),
               "--json", str(tmp_path / "d.json"), cwd=tmp_path)
    assert "Traceback" not in run.stderr and "internal error" not in run.stderr
    doc = json.loads((tmp_path / "d.json").read_text("utf-8"))
    tests = next(r for r in doc["rules"] if r["id"] == "tests")
    assert tests["status"] == "pass", tests["message"]
    bundle = next((tmp_path / "ev").glob("bundles/*/*/*.zip"))
    with zipfile.ZipFile(bundle) as zf:
        names = zf.namelist()
    assert f"files/reports/{member_path(report_name)}" in names
    assert "policy/pol%01icy.yml" in names
    for command in (("evidence", "verify", "--archive", str(tmp_path / "ev")),
                    ("evidence", "replay", "--archive", str(tmp_path / "ev"), doc["evidence"]["bundle_id"])):
        result = _cli(*command, cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
