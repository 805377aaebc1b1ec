"""Every rule type judged from facts built in memory: no folder, no file, no clock.

The workspace-level tests (test_checks_rollback.py, test_junit.py, test_cli_acceptance.py)
stay as integration tests of gathering; these pin the judging alone, including what a rule
does when a fact it needs was not gathered (fail closed).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from helpers import HEAD, NOW, change, review, run_rule

from policyengine.facts import (
    DocumentFact,
    DocumentRequest,
    ReportFact,
    ReportsFact,
    ReportsRequest,
    ReportSummary,
    Section,
    Totals,
)
from policyengine.models import FileRead, Status
from policyengine.rules import RULE_TYPES
from policyengine.rules.approvals import ApprovalsRule
from policyengine.rules.base import RuleSpec
from policyengine.rules.checks_passed import ChecksPassedRule
from policyengine.rules.deploy_window import DeployWindowRule
from policyengine.rules.rollback_plan import MAX_PLAN_BYTES, RollbackPlanRule
from policyengine.rules.tests_passed import TestsPassedRule

COVERED = {"approvals", "checks_passed", "deploy_window", "rollback_plan", "tests_passed",
           "ticket"}  # ticket: tests/test_ticket_rule.py


def test_every_rule_type_has_in_memory_tests() -> None:
    assert set(RULE_TYPES) == COVERED, "add in-memory tests for the new rule type here"


def _file(path: str, digest: str = "ab" * 32, size: int = 10) -> FileRead:
    return FileRead(relpath=path, abspath=f"/nowhere/{path}", sha256=digest, size=size)


def _summary(tests: int, passed: int, failures: int = 0, errors: int = 0, skipped: int = 0, flaky: int = 0,
             failed: tuple[str, ...] = (), flaky_names: tuple[str, ...] = ()) -> ReportSummary:
    return ReportSummary(Totals(tests, passed, failures, errors, skipped, flaky), 1, failed, flaky_names, ())


GLOBS = ("reports/*.xml",)
REQ = ReportsRequest(GLOBS)


def _tests(fact: ReportsFact | None, **params: Any) -> Any:
    answers = {} if fact is None else {REQ: fact}
    return run_rule(TestsPassedRule, {"reports": list(GLOBS), **params}, change(), answers=answers)


class TestTestsPassed:
    def test_passing_reports_pass_and_keep_their_digests(self) -> None:
        fact = ReportsFact(GLOBS, (ReportFact("reports/a.xml", _file("reports/a.xml"), _summary(3, 3)),
                                   ReportFact("reports/b.xml", _file("reports/b.xml", "cd" * 32), _summary(2, 1, skipped=1))))
        out = _tests(fact)
        assert out.status is Status.PASS
        assert out.message == "5 tests in 2 reports: 4 passed, 0 failed, 0 errored, 1 skipped"
        assert [f.sha256 for f in out.files] == ["ab" * 32, "cd" * 32]
        assert out.details["totals"]["tests"] == 5

    def test_a_failure_fails_and_names_the_test(self) -> None:
        fact = ReportsFact(GLOBS, (ReportFact("reports/a.xml", _file("reports/a.xml"),
                                              _summary(2, 1, failures=1, failed=("pkg.test_x",))),))
        out = _tests(fact)
        assert out.status is Status.FAIL
        assert "reports/a.xml: pkg.test_x" in out.message

    def test_an_unreadable_report_is_an_error_unless_a_failure_is_known(self) -> None:
        bad = ReportFact("reports/b.xml", _file("reports/b.xml"), None, error="not JUnit XML")
        out = _tests(ReportsFact(GLOBS, (ReportFact("reports/a.xml", _file("reports/a.xml"), _summary(1, 1)), bad)))
        assert out.status is Status.ERROR
        assert "unreadable report: reports/b.xml: not JUnit XML" in out.message
        assert out.details["files"][1] == {"path": "reports/b.xml", "sha256": "ab" * 32, "error": "not JUnit XML"}
        failing = ReportFact("reports/a.xml", _file("reports/a.xml"), _summary(1, 0, failures=1, failed=("t",)))
        assert _tests(ReportsFact(GLOBS, (failing, bad))).status is Status.FAIL

    def test_a_report_that_could_not_even_be_hashed_is_an_error_without_a_digest(self) -> None:
        out = _tests(ReportsFact(GLOBS, (ReportFact("reports/a.xml", None, None, error="permission denied"),)))
        assert out.status is Status.ERROR
        assert out.details["files"] == [{"path": "reports/a.xml", "error": "permission denied"}]
        assert out.files == ()

    def test_no_match_and_outside_paths_fail(self) -> None:
        assert _tests(ReportsFact(GLOBS)).status is Status.FAIL
        out = _tests(ReportsFact(GLOBS, outside=("reports/evil.xml",)))
        assert out.status is Status.FAIL
        assert out.details["outside_workspace"] == ["reports/evil.xml"]

    def test_listing_failed_is_an_error(self) -> None:
        out = _tests(ReportsFact(GLOBS, list_error="cannot list reports/*.xml: Permission denied"))
        assert out.status is Status.ERROR
        assert out.message == "cannot list reports/*.xml: Permission denied"

    def test_facts_not_gathered_are_an_error_never_a_pass(self) -> None:
        out = _tests(None)
        assert out.status is Status.ERROR
        assert "not gathered" in out.message

    def test_min_tests_and_skipped(self) -> None:
        fact = ReportsFact(GLOBS, (ReportFact("reports/a.xml", _file("reports/a.xml"), _summary(3, 2, skipped=1)),))
        assert _tests(fact, min_tests=3).status is Status.FAIL
        assert _tests(fact, min_tests=2).status is Status.PASS
        assert _tests(fact, allow_skipped=False).status is Status.FAIL

    def test_flaky_tests_are_counted_and_listed(self) -> None:
        fact = ReportsFact(GLOBS, (ReportFact("reports/a.xml", _file("reports/a.xml"),
                                              _summary(2, 2, flaky=1, flaky_names=("t_retry",))),))
        out = _tests(fact)
        assert out.status is Status.PASS
        assert "(1 flaky: passed on retry)" in out.message
        assert out.details["flaky_tests"] == ["t_retry"]


PLAN = DocumentRequest("ROLLBACK.md", MAX_PLAN_BYTES)
PARAMS = {"path": "ROLLBACK.md", "required_sections": ["Rollback steps", "Verification"]}


def _plan(fact: DocumentFact | None, **params: Any) -> Any:
    return run_rule(RollbackPlanRule, {**PARAMS, **params}, change(), answers={} if fact is None else {PLAN: fact})


def _doc(*sections: tuple[str, str]) -> DocumentFact:
    text = "\n".join(f"## {t}\n{c}" for t, c in sections)
    return DocumentFact("ROLLBACK.md", _file("ROLLBACK.md"), text,
                        tuple(Section(2, t, c) for t, c in sections))


class TestRollbackPlan:
    def test_present_with_sections_passes(self) -> None:
        out = _plan(_doc(("Rollback steps", "revert the deploy"), ("Verification:", "check /health")))
        assert out.status is Status.PASS
        assert out.files[0].relpath == "ROLLBACK.md"
        assert out.details["sections_found"] == ["Rollback steps", "Verification:"]

    def test_missing_and_comment_only_sections_fail(self) -> None:
        out = _plan(_doc(("Rollback steps", "<!-- TODO -->")))
        assert out.status is Status.FAIL
        assert out.details["missing_sections"] == ["Verification"]
        assert out.details["empty_sections"] == ["Rollback steps"]

    @pytest.mark.parametrize(("problem", "status"), [
        ("outside", Status.FAIL), ("missing", Status.FAIL), ("not_file", Status.FAIL),
        ("unreadable", Status.ERROR), ("not_utf8", Status.ERROR),
    ])
    def test_each_problem_has_its_status(self, problem: str, status: Status) -> None:
        out = _plan(DocumentFact("ROLLBACK.md", problem=problem, message="ROLLBACK.md: the reason"))
        assert out.status is status
        assert "the reason" in out.message

    def test_not_gathered_is_an_error(self) -> None:
        assert _plan(None).status is Status.ERROR

    def test_min_length(self) -> None:
        fact = _doc(("Rollback steps", "x"), ("Verification", "y"))
        assert _plan(fact, min_length=1000).status is Status.FAIL


class TestChangeOnlyRules:
    """Rules that read only the change: the same in-memory shape, no facts needed."""

    def test_approvals(self) -> None:
        params = {"min_approvals": 1, "exclude": ["author"]}
        assert run_rule(ApprovalsRule, params, change(reviews=[review("bob")])).status is Status.PASS
        assert run_rule(ApprovalsRule, params, change(reviews=[review("alice")])).status is Status.FAIL
        assert ApprovalsRule(RuleSpec(id="r", type="approvals", params=params)).needs() == []

    def test_checks_passed(self) -> None:
        ok = change(checks=[{"name": "build", "commit": HEAD, "status": "success"}])
        assert run_rule(ChecksPassedRule, {"checks": ["build"]}, ok).status is Status.PASS
        assert run_rule(ChecksPassedRule, {"checks": ["build", "lint"]}, ok).status is Status.FAIL

    def test_deploy_window(self) -> None:
        params = {"timezone": "UTC", "allow": [{"name": "day", "days": ["tue"], "between": ["09:00", "17:00"]}]}
        assert run_rule(DeployWindowRule, params, change(), now=NOW).status is Status.PASS  # Tuesday 15:00
        night = datetime(2026, 11, 24, 22, 0, tzinfo=timezone.utc)
        assert run_rule(DeployWindowRule, params, change(), now=night).status is Status.FAIL
