"""Repeated test names in JUnit reports: only failures followed by one final pass are a retry.

Each case is a sequence of attempts of one test (same suite, classname and name), in file
order, written as letters:

    P passed      F <failure>   E <error>   S <skipped>
    K Surefire <flakyFailure> alone (passed on a rerun)   R Surefire <rerunFailure> alone

Other tests sit between the attempts, as pytest-rerunfailures and Gradle's test-retry leave
them, so grouping cannot rely on attempts being adjacent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from policyengine.workspace.junit import ReportSummary, Totals, read_junit

REPO = Path(__file__).resolve().parents[1]
NAME = "tests.test_net.test_download"

_BODIES = {
    "P": "",
    "F": '<failure message="boom">trace</failure>',
    "E": '<error message="reset">trace</error>',
    "S": "<skipped/>",
    "K": '<flakyFailure message="boom" type="java.lang.AssertionError"><stackTrace>t</stackTrace></flakyFailure>',
    "R": '<rerunFailure message="boom" type="java.lang.AssertionError"/>',
}


def _case(letter: str, classname: str = "tests.test_net", name: str = "test_download") -> str:
    return f'<testcase classname="{classname}" name="{name}" time="0.1">{_BODIES[letter]}</testcase>'


def report(tmp_path: Path, attempts: str) -> ReportSummary:
    """Write a report holding ``attempts`` of one test, with a passing neighbour after each."""
    cases = []
    for i, letter in enumerate(attempts):
        cases.append(_case(letter))
        cases.append(_case("P", name=f"test_other_{i}"))
    path = tmp_path / "report.xml"
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<testsuites><testsuite name="net">'
        + "".join(cases)
        + "</testsuite></testsuites>\n",
        encoding="utf-8",
    )
    return read_junit(path)


def ours(summary: ReportSummary, attempts: str) -> Totals:
    """The totals without the passing neighbours."""
    t = summary.totals
    n = len(attempts)
    return Totals(t.tests - n, t.passed - n, t.failures, t.errors, t.skipped, t.flaky)


def T(tests: int, passed: int, failures: int = 0, errors: int = 0, skipped: int = 0, flaky: int = 0) -> Totals:
    return Totals(tests, passed, failures, errors, skipped, flaky)


FLAKY_PASS = T(1, 1, flaky=1)
FAILED = T(1, 0, 1)
ERRORED = T(1, 0, 0, 1)


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [
        # A retry loop: one or more failed or errored attempts, then one pass, last.
        ("FP", FLAKY_PASS),
        ("FFP", FLAKY_PASS),
        ("EP", FLAKY_PASS),
        ("FEFP", FLAKY_PASS),
        ("FK", FLAKY_PASS),  # the final attempt itself passed on a Surefire rerun
        ("RP", FLAKY_PASS),
        # A failure after a pass is not a retry that passed: the test failed.
        ("PF", FAILED),
        ("PE", ERRORED),
        ("FPF", FAILED),
        ("PFE", ERRORED),  # mikepenz flaky_success_first
        ("KF", FAILED),
        # A skipped attempt is not a failed one: no retry loop skips and then passes.
        ("FSP", FAILED),
        ("SFP", FAILED),
        # Never passed: one test, its worst attempt (unchanged).
        ("FF", FAILED),
        ("FE", ERRORED),
        ("SF", FAILED),  # TestNG marks a retried attempt skipped
        ("R", FAILED),
        # Two passes under one name are two tests (parametrised cases that lost their ids,
        # jenkins junit-report-bad-duration.xml), so each attempt counts on its own (unchanged):
        # a retry and then a rerun, or a pass, a failure and a pass, still show the failure.
        ("FPP", T(3, 2, 1)),
        ("PFP", T(3, 2, 1)),
        ("PP", T(2, 2)),
        ("SS", T(2, 0, 0, 0, 2)),
        # One attempt.
        ("P", T(1, 1)),
        ("K", FLAKY_PASS),
        ("F", FAILED),
    ],
)
def test_attempt_sequences(tmp_path: Path, attempts: str, expected: Totals) -> None:
    summary = report(tmp_path, attempts)
    assert ours(summary, attempts) == expected
    failed = expected.failures + expected.errors > 0
    assert summary.failed_tests == ((NAME,) if failed else ())
    assert summary.flaky_tests == ((NAME,) if expected.flaky else ())
    t = summary.totals
    assert t.tests == t.passed + t.failures + t.errors + t.skipped


@pytest.mark.parametrize(
    ("attempts", "note"),
    [
        ("FFP", "appears 3 times in net: read as retries of one test, which passed on retry (flaky)"),
        ("FE", "appears 2 times in net: read as retries of one test, which errored every attempt"),
        ("PF", "appears 2 times in net: read as attempts of one test, which failed: its last attempt did not pass"),
        ("PFE", "appears 3 times in net: read as attempts of one test, which errored: its last attempt did not pass"),
        ("FSP", "appears 3 times in net: read as attempts of one test, which failed: an attempt was skipped, "
                "so this is not a retry that passed"),
        ("FPP", "appears 3 times in net: counted as 3 tests (not a retry pattern)"),
    ],
)
def test_notes_say_how_a_repeated_name_was_read(tmp_path: Path, attempts: str, note: str) -> None:
    assert report(tmp_path, attempts).notes == (f"{NAME} {note}",)


def test_groups_are_per_suite_and_per_classname(tmp_path: Path) -> None:
    # A pass in one suite and a failure of the same name in another are two tests.
    path = tmp_path / "report.xml"
    path.write_text(
        "<testsuites>"
        f'<testsuite name="a">{_case("F")}{_case("P")}{_case("P", "other.cls")}</testsuite>'
        f'<testsuite name="b">{_case("P")}</testsuite>'
        f'<testsuite name="c">{_case("P")}{_case("F")}</testsuite>'
        "</testsuites>",
        encoding="utf-8",
    )
    summary = read_junit(path)
    assert summary.totals == T(4, 3, 1, flaky=1)
    assert summary.flaky_tests == (NAME,)
    assert summary.failed_tests == (NAME,)


def test_surefire_rerun_elements_in_one_testcase_still_work(tmp_path: Path) -> None:
    # rerunFailingTestsCount: a test that passed on a rerun carries <flakyFailure> children and no
    # <failure>; one that never passed carries <failure> (or <error>) and <rerunFailure> children.
    path = tmp_path / "TEST-io.example.FlakyTest.xml"
    path.write_text(
        '<testsuite name="io.example.FlakyTest" tests="3">'
        f'<testcase classname="io.example.FlakyTest" name="secondRun">{_BODIES["K"]}</testcase>'
        f'<testcase classname="io.example.FlakyTest" name="thirdRun">{_BODIES["K"]}{_BODIES["K"]}</testcase>'
        '<testcase classname="io.example.FlakyTest" name="never">'
        f'<failure message="boom"/>{_BODIES["R"]}{_BODIES["R"]}</testcase>'
        "</testsuite>",
        encoding="utf-8",
    )
    summary = read_junit(path)
    assert summary.totals == T(3, 2, 1, flaky=2)
    assert summary.flaky_tests == ("io.example.FlakyTest.secondRun", "io.example.FlakyTest.thirdRun")
    assert summary.failed_tests == ("io.example.FlakyTest.never",)


# -- the policy option: tests_passed allow_flaky ---------------------------------------------------

POLICY = """\
version: 1
name: flaky
rules:
  - id: tests
    type: tests_passed
    reports: ["reports/*.xml"]
{extra}"""


def _validate(tmp_path: Path, extra: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "policy.yml"
    path.write_text(POLICY.format(extra=extra), encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "policyengine", "policy", "validate", str(path)],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("value", ["true", "false"])
def test_allow_flaky_is_a_policy_option(tmp_path: Path, value: str) -> None:
    res = _validate(tmp_path, f"    allow_flaky: {value}\n")
    assert res.returncode == 0, res.stdout + res.stderr


def test_allow_flaky_must_be_true_or_false(tmp_path: Path) -> None:
    res = _validate(tmp_path, '    allow_flaky: "no"\n')
    assert res.returncode == 2
    assert res.stdout.splitlines() == [f'{tmp_path / "policy.yml"}:7:18: rules[0].allow_flaky: expected true or false, got "no"']


def _check(tmp_path: Path, extra: str, attempts: str) -> tuple[int, dict[str, object]]:
    (tmp_path / "ws" / "reports").mkdir(parents=True)
    (tmp_path / "ws" / "reports" / "r.xml").write_text(
        "<testsuite name='net'>" + "".join(_case(a) for a in attempts) + "</testsuite>", encoding="utf-8"
    )
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY.format(extra=extra), encoding="utf-8")
    res = subprocess.run(
        [sys.executable, "-m", "policyengine", "check", "--policy", str(policy),
         "--change", str(REPO / "examples" / "change-allowed.yml"), "--workspace", str(tmp_path / "ws"),
         "--now", "2026-11-24T15:00:00Z", "--json", str(tmp_path / "d.json")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert res.returncode in (0, 1), res.stdout + res.stderr
    rule: dict[str, object] = json.loads((tmp_path / "d.json").read_text(encoding="utf-8"))["rules"][0]
    return res.returncode, rule


def test_flaky_tests_pass_the_rule_by_default(tmp_path: Path) -> None:
    code, rule = _check(tmp_path, "", "FP")
    assert (code, rule["status"]) == (0, "pass")
    assert "1 flaky" in str(rule["message"])


def test_pass_then_fail_fails_the_rule(tmp_path: Path) -> None:
    code, rule = _check(tmp_path, "", "PF")
    assert (code, rule["status"]) == (1, "fail")
    assert NAME in str(rule["message"])


def test_allow_flaky_false_fails_the_rule_naming_the_flaky_tests(tmp_path: Path) -> None:
    code, rule = _check(tmp_path, "    allow_flaky: false\n", "FP")
    assert (code, rule["status"]) == (1, "fail")
    assert f"1 flaky test and the policy does not allow flaky tests ({NAME})" in str(rule["message"])


def test_allow_flaky_false_names_at_most_five_flaky_tests(tmp_path: Path) -> None:
    (tmp_path / "ws" / "reports").mkdir(parents=True)
    cases = "".join(_case(a, name=f"t{i}") for i in range(7) for a in "FP")
    (tmp_path / "ws" / "reports" / "r.xml").write_text(f"<testsuite name='net'>{cases}</testsuite>", encoding="utf-8")
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY.format(extra="    allow_flaky: false\n"), encoding="utf-8")
    res = subprocess.run(
        [sys.executable, "-m", "policyengine", "check", "--policy", str(policy),
         "--change", str(REPO / "examples" / "change-allowed.yml"), "--workspace", str(tmp_path / "ws"),
         "--now", "2026-11-24T15:00:00Z", "--json", str(tmp_path / "d.json")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert res.returncode == 1, res.stdout + res.stderr
    rule = json.loads((tmp_path / "d.json").read_text(encoding="utf-8"))["rules"][0]
    named = "; ".join(f"tests.test_net.t{i}" for i in range(5))
    assert f"7 flaky tests and the policy does not allow flaky tests ({named}; and 2 more)" in rule["message"]
