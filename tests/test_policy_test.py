"""`policy test`: the bundled suites pass, mismatches are shown, invalid cases exit 2, and
weakening a bundled policy is caught by its suite or by `policy diff`."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from policyengine.errors import InvalidInputError
from policyengine.language.policydiff import diff, weakened
from policyengine.language.policytest import run_suite

REPO = Path(__file__).resolve().parents[1]
SUITES = REPO / "policies" / "tests"
POLICIES = ("soc2-production", "soc2-small-team")


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policyengine", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.parametrize("policy", POLICIES)
def test_the_bundled_suites_pass_and_write_nothing(policy: str, tmp_path: Path) -> None:
    run = _cli("policy", "test", str(SUITES / policy), "--junit", str(tmp_path / "junit.xml"), cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines()[-1].endswith("passed, 0 failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junit.xml"]  # no evidence, nothing else
    assert 'failures="0"' in (tmp_path / "junit.xml").read_text("utf-8")


def _case(folder: Path, **doc: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    base: dict[str, Any] = {"policy": str(REPO / "policies" / "soc2-production.yml"),
                            "now": "2026-11-24T10:00:00-05:00", "change": str(SUITES / "changes" / "approved.yml"),
                            "workspace": str(SUITES / "workspaces" / "full"),
                            "expect": {"decision": "allow"}}
    base.update(doc)
    (folder / "case.yml").write_text(yaml.safe_dump(base, sort_keys=False), encoding="utf-8")
    return folder


def test_a_mismatch_exits_1_and_shows_expected_against_actual(tmp_path: Path) -> None:
    _case(tmp_path / "suite" / "friday", now="2026-12-04T10:00:00-05:00",
          expect={"decision": "allow", "rules": {"deploy-window": "pass", "tests": "pass"}})
    _case(tmp_path / "suite" / "fine")
    run = _cli("policy", "test", str(tmp_path / "suite"), "--junit", str(tmp_path / "j.xml"))
    assert run.returncode == 1, run.stdout + run.stderr
    assert "  FAIL  friday" in run.stdout and "  PASS  fine" in run.stdout
    assert "decision: expected allow, got deny (rules not met: deploy-window)" in run.stdout
    assert "rule deploy-window: expected pass, got fail: Friday 2026-12-04 10:00 EST" in run.stdout
    assert "rule tests:" not in run.stdout  # rules that match are not listed
    junit = (tmp_path / "j.xml").read_text("utf-8")
    assert 'failures="1"' in junit and "<failure message=" in junit


@pytest.mark.parametrize(("edit", "message"), [
    ({"expect": {"decision": "maybe"}}, "expect.decision"),
    ({"nwo": "x"}, 'unknown key "nwo"'),
    ({"now": "2026-11-24T10:00:00"}, "now: '2026-11-24T10:00:00' has no time zone"),
    ({"now": "tuesday"}, "now: 'tuesday' is not an ISO 8601 time"),
    ({"expect": {"decision": "allow", "rules": {"peer-reveiw": "pass"}}}, "no rule 'peer-reveiw' in policy"),
    ({"expect": {"decision": "allow", "rules": {"peer-review": "passed"}}}, "expect.rules.peer-review"),
    ({"change": {"repository": "acme/payments"}}, "change"),
    ({"workspace": "nowhere"}, "workspace: nowhere is not a folder"),
])
def test_an_invalid_case_exits_2_naming_file_line_and_field(tmp_path: Path, edit: dict[str, Any], message: str) -> None:
    _case(tmp_path / "suite" / "bad", **edit)
    run = _cli("policy", "test", str(tmp_path / "suite"))
    assert run.returncode == 2, run.stdout + run.stderr
    out = run.stdout + run.stderr
    assert f"{tmp_path / 'suite' / 'bad' / 'case.yml'}:" in out
    assert message in out
    assert "Traceback" not in out


def test_an_empty_folder_is_a_usage_error(tmp_path: Path) -> None:
    run = _cli("policy", "test", str(tmp_path))
    assert run.returncode == 2 and "no test cases" in run.stderr


# -- mutation: every weakening of a bundled policy is caught ------------------------------------


def _mutations(doc: dict[str, Any]) -> Iterator[tuple[str, Callable[[dict[str, Any]], None]]]:
    """Each way to weaken each rule of a policy document."""
    for rule in doc["rules"]:
        rid, kind = rule["id"], rule["type"]

        def of(d: dict[str, Any], rid: str = rid) -> dict[str, Any]:
            return next(r for r in d["rules"] if r["id"] == rid)

        yield f"{rid}: removed", lambda d, rid=rid: d["rules"].remove(of(d, rid))
        if rule.get("enforcement", "deny") == "deny":
            yield f"{rid}: deny -> warn", lambda d, of=of: of(d).update(enforcement="warn")
        if kind == "approvals":
            if rule["min_approvals"] > 1:
                yield f"{rid}: fewer approvals", lambda d, of=of: of(d).update(min_approvals=of(d)["min_approvals"] - 1)
            for who in rule.get("exclude", []):
                yield f"{rid}: {who} no longer excluded", lambda d, of=of, who=who: of(d)["exclude"].remove(who)
            if rule.get("require_current_commit"):
                yield f"{rid}: stale approvals count", lambda d, of=of: of(d).update(require_current_commit=False)
            if rule.get("from_teams"):
                yield f"{rid}: any team", lambda d, of=of: of(d).pop("from_teams")
            if rule.get("when"):
                yield f"{rid}: when narrowed", lambda d, of=of: of(d).update(when={"paths": ["nothing/**"]})
        if kind == "tests_passed":
            yield f"{rid}: no report needed", lambda d, of=of: of(d).update(reports=["nothing/*.xml"])
            if rule.get("min_tests", 1) > 1:
                yield f"{rid}: lower min_tests", lambda d, of=of: of(d).update(min_tests=1)
            if rule.get("allow_skipped") is False:
                yield f"{rid}: skipped allowed", lambda d, of=of: of(d).update(allow_skipped=True)
        if kind == "checks_passed":
            for name in rule["checks"]:
                yield f"{rid}: {name} not required", lambda d, of=of, name=name: of(d)["checks"].remove(name)
        if kind == "rollback_plan":
            for section in rule.get("required_sections", []):
                yield (f"{rid}: {section} not required",
                       lambda d, of=of, section=section: of(d)["required_sections"].remove(section))
            if rule.get("min_length"):
                yield f"{rid}: min_length dropped", lambda d, of=of: of(d).pop("min_length")
        if kind == "deploy_window":
            yield f"{rid}: any time", lambda d, of=of: of(d).pop("allow")
            yield f"{rid}: holidays dropped", lambda d, of=of: of(d).pop("holidays")
            yield f"{rid}: every day", lambda d, of=of: of(d)["allow"][0].update(days=["mon-sun"])
            yield f"{rid}: earlier start", lambda d, of=of: of(d)["allow"][0].update(between=["07:00", "16:00"])
            yield f"{rid}: later end", lambda d, of=of: of(d)["allow"][0].update(between=["09:30", "18:00"])
            for i, _ in enumerate(rule.get("deny", [])):
                yield f"{rid}: freeze {i} removed", lambda d, of=of, i=i: of(d)["deny"].pop(i)
    if "emergency" in doc:
        yield "emergency: tests waivable", lambda d: d["emergency"]["may_waive"].append("tests")
        yield "emergency: an outsider declares", lambda d: d["emergency"]["declared_by"].setdefault(
            "users", []).extend(["mallory", "dana"])
        yield "emergency: no incident needed", lambda d: d["emergency"].update(requires=["reason"])
        yield "emergency: no reason needed", lambda d: d["emergency"].update(requires=["incident"])
        # What follows the deploy (the post-facto approval) is not judged by a case: left to diff.
        yield "emergency: longer to approve", lambda d: d["emergency"].update(approve_within="30d")
        yield "emergency: exclusions dropped", lambda d: d["emergency"]["approvers"].update(exclude=[])
        if doc["emergency"]["approvers"].get("min_approvals", 1) > 1:
            yield "emergency: fewer approvers", lambda d: d["emergency"]["approvers"].update(min_approvals=1)
        if doc["emergency"]["approvers"].get("from_teams"):
            yield "emergency: any approver team", lambda d: d["emergency"]["approvers"].pop("from_teams")
    yield "retention lowered", lambda d: d["evidence"].update(retention="1d")
    yield "applies_to narrowed", lambda d: d["applies_to"].update(environments=["prod-eu"])


@pytest.mark.parametrize("policy", POLICIES)
def test_weakening_a_bundled_policy_is_caught(policy: str, tmp_path: Path) -> None:
    doc = yaml.safe_load((REPO / "policies" / f"{policy}.yml").read_text("utf-8"))
    missed_by_both: list[str] = []
    missed_by_suite: list[str] = []
    for name, mutate in _mutations(doc):
        weaker = copy.deepcopy(doc)
        mutate(weaker)
        path = tmp_path / f"{len(missed_by_suite)}-{abs(hash(name))}.yml"
        path.write_text(yaml.safe_dump(weaker, sort_keys=False), encoding="utf-8")
        try:
            caught_by_suite = bool(run_suite(SUITES / policy, policy_path=str(path)).failed)
        except InvalidInputError:  # a case names a rule the weaker policy lost: the suite does not pass
            caught_by_suite = True
        if not caught_by_suite:
            missed_by_suite.append(name)
            if not weakened(diff(doc, weaker)):
                missed_by_both.append(name)
    assert missed_by_both == []
    # The suite itself sees every weakening of a rule's behaviour; what it cannot see from a
    # change's outcome (how long evidence is kept, where a warn-only rule points) is left to diff.
    # Nor the post-facto approval of an emergency, which follows the deploy.
    assert set(missed_by_suite) <= {"retention lowered", "second-review: removed", "integration-tests: removed",
                                    "integration-tests: no report needed", "emergency: longer to approve",
                                    "emergency: exclusions dropped", "emergency: fewer approvers",
                                    "emergency: any approver team"}, missed_by_suite
