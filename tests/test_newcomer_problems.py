"""Day one (issue 18): every problem is listed in one run, for policies and for `policy test` cases."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SUITES = REPO / "policies" / "tests"

POLICY = """version: 1
name: p
rules:
  - id: window
    type: deploy_window
    timezone: America/New_Yrok
    allow:
      - days: [mon, Tusday]
        between: ["25:00", "16:00"]
  - id: tests
    type: tests_passed
    reports: ["reports/*.xml"]
    min_tests: two
"""


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policyengine", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


def test_a_bad_time_zone_beside_a_bad_time_are_both_named(tmp_path: Path) -> None:
    (tmp_path / "p.yml").write_text(POLICY, encoding="utf-8")
    run = _cli("policy", "validate", "p.yml", cwd=tmp_path)
    assert run.returncode == 2
    lines = run.stdout.splitlines()
    assert any(ln.startswith("p.yml:6:15: rules[0].timezone: unknown time zone 'America/New_Yrok'") for ln in lines), lines
    assert any(ln.startswith("p.yml:9:19: rules[0].allow[0].between[0]:") and "25:00" in ln for ln in lines), lines
    assert any(ln.startswith("p.yml:8:21: rules[0].allow[0].days[1]:") and "Tusday" in ln for ln in lines), lines
    assert any(ln.startswith("p.yml:13:16: rules[1].min_tests:") for ln in lines), lines
    assert len([ln for ln in lines if "between[0]" in ln]) == 1  # the schema's word, not twice


def _case(folder: Path, **doc: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    base: dict[str, Any] = {"policy": str(REPO / "policies" / "soc2-production.yml"),
                            "now": "2026-11-24T10:00:00-05:00", "change": str(SUITES / "changes" / "approved.yml"),
                            "workspace": str(SUITES / "workspaces" / "full"), "expect": {"decision": "allow"}}
    base.update(doc)
    (folder / "case.yml").write_text(yaml.safe_dump(base, sort_keys=False), encoding="utf-8")


def test_policy_test_lists_every_problem_of_every_case(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    _case(suite / "one", now="tuesday", workspace="nowhere",
          expect={"decision": "allow", "rules": {"peer-reveiw": "pass"}})
    _case(suite / "two", now="2026-11-24T10:00:00", change={"repository": "acme/payments"})
    (tmp_path / "bad.yml").write_text(POLICY, encoding="utf-8")
    _case(suite / "three", policy=str(tmp_path / "bad.yml"), workspace="gone")
    _case(suite / "four", policy=str(tmp_path / "bad.yml"))
    _case(suite / "five", policy=str(tmp_path / "missing.yml"), change=str(tmp_path / "nochange.yml"))
    run = _cli("policy", "test", str(suite), cwd=tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode == 2, out
    one, two, three = (str(suite / n / "case.yml") for n in ("one", "two", "three"))
    for expected in (f"{one}:", "now: 'tuesday' is not an ISO 8601 time", "workspace: nowhere is not a folder",
                     "no rule 'peer-reveiw' in policy",
                     f"{two}:", "has no time zone", "change",
                     f"{three}:", "workspace: gone is not a folder", "unknown time zone 'America/New_Yrok'",
                     "rules[1].min_tests", "missing.yml", "nochange.yml"):
        assert expected in out, f"{expected!r} missing from:\n{out}"
    # The bad policy shared by two cases is listed once, and the second case says so.
    assert out.count("unknown time zone 'America/New_Yrok'") == 1
    assert "bad.yml is not a valid policy (its problems are listed above)" in out
    assert "Traceback" not in out
