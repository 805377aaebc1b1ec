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
