"""The acceptance fixtures of the gate issue, end to end through the CLI."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES

from policyengine.cli import main

ACC = FIXTURES / "acceptance"


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    target = tmp_path / "ws"
    shutil.copytree(ACC / "workspace", target)
    return target


def check(ws: Path, tmp_path: Path, now: str, *extra: str, policy: Path = ACC / "policy.yml",
          change: Path = ACC / "change.yml") -> list[str]:
    return ["check", "--policy", str(policy), "--change", str(change), "--workspace", str(ws), "--now", now,
            "--evidence-dir", str(tmp_path / "evidence"), "--json", str(tmp_path / "decision.json"),
            "--junit", str(tmp_path / "junit.xml"), *extra]


def statuses(tmp_path: Path) -> dict[str, str]:
    doc = json.loads((tmp_path / "decision.json").read_text())
    return {r["id"]: r["status"] for r in doc["rules"]}


def test_tuesday_allowed(ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(check(ws, tmp_path, "2026-11-24T15:00:00Z"), capsys)
    assert code == 0, out
    assert statuses(tmp_path) == {
        "peer-review": "pass", "security-review": "skipped", "tests": "pass", "required-checks": "pass",
        "rollback-plan": "pass", "deploy-window": "pass", "integration-tests": "warn",
    }
    doc = json.loads((tmp_path / "decision.json").read_text())
    assert doc["decision"] == "allow"
    peer = next(r for r in doc["rules"] if r["id"] == "peer-review")
    assert peer["details"]["counted"] == ["bob", "carol"]
    assert [d["user"] for d in peer["details"]["not_counted"]] == ["erin"]
    assert "stale" in peer["details"]["not_counted"][0]["reason"]
    tests = next(r for r in doc["rules"] if r["id"] == "tests")
    assert tests["details"]["totals"] == {"tests": 5, "passed": 4, "failures": 0, "errors": 0, "skipped": 1, "flaky": 0}
    assert tests["details"]["files"][0]["path"] == "reports/unit.xml"
    import hashlib

    assert tests["details"]["files"][0]["sha256"] == hashlib.sha256((ws / "reports/unit.xml").read_bytes()).hexdigest()
    assert "ALLOW" in out
    assert re.search(r"WARN\s+integration-tests", out)


def test_thanksgiving_denied_naming_the_holiday(ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(check(ws, tmp_path, "2026-11-26T15:00:00Z"), capsys)
    assert code == 1
    assert statuses(tmp_path)["deploy-window"] == "fail"
    assert re.search(r"FAIL\s+deploy-window\s+.*Thanksgiving", out)
    assert "DENY" in out and "deploy-window" in out.splitlines()[-2]


def test_friday_denied_with_next_window(ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(check(ws, tmp_path, "2026-11-27T15:00:00Z"), capsys)
    assert code == 1
    line = next(ln for ln in out.splitlines() if "deploy-window" in ln and "FAIL" in ln)
    assert "Monday 2026-11-30 09:00" in line


def test_min_approvals_two_is_exit_2_with_file_line_field(ws: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "policy.yml"
    bad.write_text((ACC / "policy.yml").read_text().replace("min_approvals: 2", 'min_approvals: "two"'))
    code, out, err = run(check(ws, tmp_path, "2026-11-24T15:00:00Z", policy=bad), capsys)
    assert code == 2
    assert f'{bad}:10:20: rules[0].min_approvals: expected an integer >= 1, got "two"' in err
    assert "Traceback" not in err
    assert not (tmp_path / "evidence").exists(), "nothing is recorded when the gate could not evaluate"


def test_every_problem_of_both_files_in_one_run(ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad_policy = tmp_path / "policy.yml"
    bad_policy.write_text((ACC / "policy.yml").read_text().replace("min_tests: 1\n    controls", "min_test: 1\n    controls"))
    bad_change = tmp_path / "change.yml"
    bad_change.write_text((ACC / "change.yml").read_text().replace("state: approved", "state: aproved", 1))
    code, _, err = run(check(ws, tmp_path, "2026-11-24T15:00:00Z", policy=bad_policy, change=bad_change), capsys)
    assert code == 2
    assert 'unknown key "min_test"; did you mean "min_tests"?' in err
    assert f"{bad_change}:" in err and "reviews[0].state" in err


def test_advisory_exits_zero_on_deny_but_says_so(ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(check(ws, tmp_path, "2026-11-27T15:00:00Z", "--advisory"), capsys)
    assert code == 0
    assert "WOULD HAVE BEEN DENIED" in out
    assert json.loads((tmp_path / "decision.json").read_text())["decision"] == "deny"


def test_unreadable_report_is_exit_3(ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (ws / "reports" / "unit.xml").write_text("<testsuites><testsuite name='x'><testcase name='a'>")
    code, out, _ = run(check(ws, tmp_path, "2026-11-24T15:00:00Z"), capsys)
    assert code == 3
    assert statuses(tmp_path)["tests"] == "error"
    assert "facts could not be read" in out


def test_missing_report_is_a_failure(ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (ws / "reports" / "unit.xml").unlink()
    code, _, _ = run(check(ws, tmp_path, "2026-11-24T15:00:00Z"), capsys)
    assert code == 1
    assert statuses(tmp_path)["tests"] == "fail"


def test_infra_change_needs_security_review(ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    change = tmp_path / "change.yml"
    change.write_text((ACC / "change.yml").read_text().replace("  - src/refunds.py", "  - infra/vpc/main.tf"))
    code, _, _ = run(check(ws, tmp_path, "2026-11-24T15:00:00Z", change=change), capsys)
    assert code == 1
    assert statuses(tmp_path)["security-review"] == "fail"


def test_evidence_written_listed_and_verified(ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(check(ws, tmp_path, "2026-11-24T15:00:00Z"), capsys)[0] == 0
    assert run(check(ws, tmp_path, "2026-11-27T15:00:00Z"), capsys)[0] == 1
    code, out, _ = run(["evidence", "list", "--archive", str(tmp_path / "evidence"), "--json"], capsys)
    assert code == 0
    rows = json.loads(out)
    assert [r["decision"] for r in rows] == ["allow", "deny"]
    assert {r["repository"] for r in rows} == {"acme/payments"}
    code, out, _ = run(["evidence", "verify", "--archive", str(tmp_path / "evidence")], capsys)
    assert code == 0, out


def test_evidence_failure_denies_with_exit_3(ws: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "evidence"
    blocker.write_text("a file where the archive should be")
    code, out, _ = run(check(ws, tmp_path, "2026-11-24T15:00:00Z"), capsys)
    assert code == 3
    assert statuses(tmp_path)["evidence"] == "error"
    assert "evidence could not be recorded" in out


def test_junit_validates_against_the_jenkins_xsd(ws: Path, tmp_path: Path, corpus: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import xmlschema

    run(check(ws, tmp_path, "2026-11-27T15:00:00Z"), capsys)
    schema = xmlschema.XMLSchema(str(corpus / "junit/_schemas/jenkins-xunit-plugin__junit-10.xsd"))
    schema.validate(str(tmp_path / "junit.xml"))
    text = (tmp_path / "junit.xml").read_text()
    assert 'classname="acceptance-production"' in text
    assert text.count("<testcase ") == 7
    assert "<failure" in text and 'type="warning"' in text and "disabled" not in text


def test_bad_now_and_missing_workspace_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(check(tmp_path, tmp_path, "2026-11-24T15:00:00"), capsys)
    assert code == 2 and "has no time zone" in err
    code, _, err = run(check(tmp_path / "nope", tmp_path, "2026-11-24T15:00:00Z"), capsys)
    assert code == 2 and "not a directory" in err


def test_version_and_module_entry_point() -> None:
    out = subprocess.run([sys.executable, "-m", "policyengine", "--version"], capture_output=True, text=True, check=True)
    assert re.match(r"policyengine, version \d+\.\d+\.\d+", out.stdout)


@pytest.mark.parametrize("now", ["2026-11-24T15:00:00Z", "2026-11-27T15:00:00Z"])
def test_decision_json_validates_against_its_schema(ws: Path, tmp_path: Path, now: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    from policyengine.language.loader import load_schema

    change, decision = load_schema("change.schema.json"), load_schema("decision.schema.json")
    registry = Registry().with_resources([(change["$id"], Resource.from_contents(change))])
    run(check(ws, tmp_path, now), capsys)
    doc = json.loads((tmp_path / "decision.json").read_text())
    errors = [e.message for e in Draft202012Validator(decision, registry=registry).iter_errors(doc)]
    assert errors == []
    doc["rules"][0]["status"] = "passed"
    assert list(Draft202012Validator(decision, registry=registry).iter_errors(doc))
