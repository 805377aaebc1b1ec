"""`policy diff`: every weakening named, strengthenings listed, reorderings ignored."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from policyengine.language.loader import load_schema
from policyengine.language.policydiff import (
    _COMMON,
    _RULE_KEYS,
    STRONGER,
    UNDECIDED,
    WEAKER,
    diff,
    weakened,
)

REPO = Path(__file__).resolve().parents[1]
BASE: dict[str, Any] = yaml.safe_load((REPO / "policies" / "soc2-production.yml").read_text("utf-8"))


def _rule(doc: dict[str, Any], rid: str) -> dict[str, Any]:
    return next(r for r in doc["rules"] if r["id"] == rid)


def _edit(fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    fn(doc)
    return doc


WEAKENINGS: dict[str, Callable[[dict[str, Any]], None]] = {
    "fewer approvals": lambda d: _rule(d, "peer-review").update(min_approvals=1),
    "exclusion removed": lambda d: _rule(d, "peer-review").update(exclude=["author"]),
    "team widened": lambda d: _rule(d, "security-review").update(from_teams=["security", "everyone"]),
    "team restriction dropped": lambda d: _rule(d, "security-review").pop("from_teams"),
    "require_current_commit off": lambda d: _rule(d, "peer-review").update(require_current_commit=False),
    "cover_range off": lambda d: _rule(d, "peer-review").update(cover_range=False),
    "lower min_tests": lambda d: _rule(d, "tests").update(min_tests=0),
    "fewer report globs": lambda d: _rule(d, "integration-tests").update(reports=[]),
    "a window widened": lambda d: _rule(d, "deploy-window")["allow"][0].update(between=["08:00", "16:00"]),
    "a window gains a day": lambda d: _rule(d, "deploy-window")["allow"][0].update(days=["mon", "tue", "wed", "thu",
                                                                                        "fri"]),
    "a freeze removed": lambda d: _rule(d, "deploy-window")["deny"].pop(0),
    "a freeze shortened": lambda d: _rule(d, "deploy-window")["deny"][0].update(until="2026-12-25T00:00"),
    "holiday calendar removed": lambda d: _rule(d, "deploy-window").pop("holidays"),
    "deny to warn": lambda d: _rule(d, "tests").update(enforcement="warn"),
    "a rule removed": lambda d: d["rules"].remove(_rule(d, "rollback-plan")),
    "when narrowed": lambda d: _rule(d, "security-review")["when"].update(paths=["src/payments/**"]),
    "when added": lambda d: _rule(d, "tests").update(when={"paths": ["src/**"]}),
    "applies_to narrowed": lambda d: d["applies_to"].update(environments=["production-eu"]),
    "a required check removed": lambda d: _rule(d, "required-checks").update(checks=["build"]),
    "retention lowered": lambda d: d["evidence"].update(retention="30d"),
    "skipped tests allowed": lambda d: _rule(d, "tests").update(allow_skipped=True),
    "flaky tests allowed": lambda d: _rule(d, "tests").update(allow_flaky=True),
    "a required section removed": lambda d: _rule(d, "rollback-plan").update(required_sections=["Rollback steps"]),
    "not-applicable opt-in added": lambda d: d.update(not_applicable="pass"),
    "policy owners reduced": lambda d: d.update(policy_owners={"users": ["carol"]}),
    "policy owners removed": lambda d: d.pop("policy_owners"),
    "min_length lowered": lambda d: _rule(d, "rollback-plan").update(min_length=10),
}


@pytest.fixture(autouse=True)
def _base_is_strict() -> None:
    # Make the base explicit where the bundled policy relies on a default, so each edit is a change.
    _rule(BASE, "tests").update(allow_skipped=False, allow_flaky=False)
    _rule(BASE, "peer-review").update(cover_range=True)
    BASE["policy_owners"] = {"users": ["carol", "dave"]}


@pytest.mark.parametrize("kind", sorted(WEAKENINGS))
def test_each_weakening_is_named(kind: str) -> None:
    findings = diff(BASE, _edit(WEAKENINGS[kind]))
    assert weakened(findings), kind
    assert [f for f in findings if f.direction in (WEAKER, UNDECIDED)], findings


STRENGTHENINGS: dict[str, Callable[[dict[str, Any]], None]] = {
    "more approvals": lambda d: _rule(d, "peer-review").update(min_approvals=3),
    "team narrowed": lambda d: _rule(d, "security-review").update(from_teams=[]),
    "higher min_tests": lambda d: _rule(d, "tests").update(min_tests=50),
    "a freeze added": lambda d: _rule(d, "deploy-window")["deny"].append(
        {"name": "launch", "from": "2027-03-01T00:00", "until": "2027-03-02T00:00"}),
    "a freeze lengthened": lambda d: _rule(d, "deploy-window")["deny"][0].update(until="2027-01-10T00:00"),
    "a window narrowed": lambda d: _rule(d, "deploy-window")["allow"][0].update(between=["10:00", "15:00"]),
    "warn to deny": lambda d: _rule(d, "integration-tests").update(enforcement="deny"),
    "a rule added": lambda d: d["rules"].append({"id": "extra", "type": "checks_passed", "checks": ["sast"]}),
    "retention raised": lambda d: d["evidence"].update(retention="2y"),
    "a check added": lambda d: _rule(d, "required-checks").update(checks=["build", "lint", "sast"]),
    "when widened": lambda d: _rule(d, "security-review").pop("when"),
}


@pytest.mark.parametrize("kind", sorted(STRENGTHENINGS))
def test_each_strengthening_is_listed_and_not_weaker(kind: str) -> None:
    findings = diff(BASE, _edit(STRENGTHENINGS[kind]))
    assert findings and not weakened(findings), findings
    assert any(f.direction == STRONGER for f in findings)


def test_reorderings_and_unchanged_policies_report_nothing() -> None:
    def reorder(d: dict[str, Any]) -> None:
        d["rules"].reverse()
        _rule(d, "peer-review")["exclude"].reverse()
        _rule(d, "required-checks")["checks"].reverse()
        _rule(d, "deploy-window")["deny"].reverse()
        _rule(d, "deploy-window")["allow"][0]["days"].reverse()
        d["applies_to"]["environments"].reverse()
    assert diff(BASE, BASE) == []
    assert diff(BASE, _edit(reorder)) == []


def test_neutral_edits_are_listed_but_not_weaker() -> None:
    findings = diff(BASE, _edit(lambda d: _rule(d, "tests").update(description="new words", controls=["CC8.1", "CC7.1"])))
    assert findings and not weakened(findings)


def test_undecidable_edits_count_as_weaker_and_say_so() -> None:
    findings = diff(BASE, _edit(lambda d: _rule(d, "tests").update(reports=["build/**/*.xml"])))
    assert [f.direction for f in findings] == [UNDECIDED]
    assert "cannot tell" in findings[0].message
    cron = diff(BASE, _edit(lambda d: _rule(d, "deploy-window")["deny"][1].update(cron="0 13 * * thu")))
    assert weakened(cron)


def test_every_rule_parameter_in_the_schema_has_a_direction() -> None:
    schema = load_schema("policy.schema.json")
    for rule_type, compares in _RULE_KEYS.items():
        props = set(schema["$defs"][rule_type]["properties"])
        known = set(compares) | set(_COMMON) | {"id", "type"}
        if rule_type == "deploy_window":
            known |= {"allow", "deny"}
        assert props <= known, f"{rule_type}: no direction for {sorted(props - known)}"


def test_cli_exits_1_when_weaker_0_otherwise(tmp_path: Path) -> None:
    old = tmp_path / "old.yml"
    new = tmp_path / "new.yml"
    old.write_text(yaml.safe_dump(BASE), encoding="utf-8")
    new.write_text(yaml.safe_dump(_edit(WEAKENINGS["fewer approvals"])), encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "policyengine", "policy", "diff", str(old), str(new)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "WEAKER    rules[peer-review].min_approvals: required approvals lowered (2 -> 1)" in run.stdout
    same = subprocess.run([sys.executable, "-m", "policyengine", "policy", "diff", str(old), str(old)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert same.returncode == 0 and "no change to any control" in same.stdout
