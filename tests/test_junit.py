"""JUnit reader: hand-counted totals for every corpus file, one fixture per quirk, hostile input, memory.

The expected numbers below were counted by reading the files (testcase elements and their
result children), not produced by the reader. For the few files too long to read line by
line (jenkins 1472, junit2html complex_suites, xunit-viewer lots-of-results, jest-test-results,
pulsar-test-report, the horovod pytest runs, mocha latex-utensils) the counts were taken with
grep over ``<testcase``/``<failure``/``<error``/``<skipped`` after reading their structure.
"""

from __future__ import annotations

import sys
import tracemalloc
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import FIXTURES

from policyengine.errors import ReportError
from policyengine.workspace.junit import MAX_LISTED, MAX_NOTES, ReportSummary, Totals, read_junit

JUNIT_FIXTURES = FIXTURES / "junit"


def T(tests: int, passed: int, failures: int = 0, errors: int = 0, skipped: int = 0, flaky: int = 0) -> Totals:
    return Totals(tests, passed, failures, errors, skipped, flaky)


class Err:
    """The file must be refused with a ReportError whose message contains ``word``."""

    def __init__(self, word: str) -> None:
        self.word = word

    def __repr__(self) -> str:
        return f"Err({self.word!r})"


Expected = Any  # Totals | Err

# corpus/junit/<path> -> what read_junit must return. T(tests, passed, failures, errors, skipped, flaky).
CORPUS_EXPECTED: dict[str, Expected] = {
    "ant-junit/jenkins-junit__junit-report-20090516.xml": T(8, 5, 0, 3, 0),
    "ant-junit/launchable__TEST-com.launchable.HelloWorldTest.xml": T(2, 1, 1),
    "bazel/launchable__mylib_test1__test.xml": T(1, 1),
    "c-unit-generic/mikepenz__report.xml": T(4, 3, 1),
    "cargo-nextest/mikepenz__basic.xml": T(3, 2, 1),
    "ctest/codecov__ctest.xml": T(1, 0, 1),  # status="fail" plus <failure>
    "cucumber/launchable__TEST-features-is_it_friday_yet.xml": T(6, 5, 1),
    "cypress/launchable__empty.xml": T(0, 0),
    "cypress/launchable__test-result.xml": T(3, 3),  # root declares tests="6"
    "edge-cases/codecov__empty_failure.junit.xml": T(2, 1, 1),
    "edge-cases/codecov__junit-no-testcase-timestamp.xml": T(2, 1, 1),
    "edge-cases/codecov__no-time.xml": T(2, 2),
    "edge-cases/codecov__testsuites.xml": T(0, 0),
    "edge-cases/codecov__windows.junit.xml": Err("not XML"),  # a jest message, plain text
    "edge-cases/enricomi__empty-system-out-err.xml": T(1, 1),
    "edge-cases/enricomi__empty.xml": Err("empty"),  # zero bytes
    "edge-cases/enricomi__minimal-attributes.xml": T(4, 1, 1, 1, 1),
    "edge-cases/enricomi__no-attributes.xml": T(4, 1, 1, 1, 1),  # nameless testcases are never grouped
    "edge-cases/enricomi__non-junit.xml": Err("<suites>"),
    "edge-cases/enricomi__non-xml.xml": Err("not XML"),
    "edge-cases/enricomi__testsuite-in-testsuite.xml": T(5, 5),
    "edge-cases/enricomi__unsupported-unicode.xml": T(7, 1, 2, 2, 2),
    "edge-cases/enricomi__with-xml-entities.xml": T(4, 0, 1, 1, 2),
    "edge-cases/jenkins-junit__junit-report-1472.xml": T(2653, 2652, 1),
    "edge-cases/jenkins-junit__junit-report-494.xml": T(2, 1, 1),
    "edge-cases/jenkins-junit__junit-report-6700.xml": T(1, 0, 0, 1),  # suite-level <error>, no testcase
    "edge-cases/jenkins-junit__junit-report-bad-duration.xml": T(2, 2),  # two passing runs of one name: 2 tests
    "edge-cases/jenkins-junit__junit-report-errror-details.xml": T(1, 0, 0, 1),
    "edge-cases/jenkins-junit__junit-report-testsuite-various-timestamps.xml": T(12, 12),
    "edge-cases/jenkins-junit__junit-report-time-aggregation.xml": T(3, 3),
    "edge-cases/jenkins-junit__junit-report-with-properties.xml": T(2, 1, 1),
    "edge-cases/jenkins-junit__skippedTestResult.xml": T(1, 0, 0, 0, 1),
    "edge-cases/junit2html__junit-axis-linux.xml": T(3, 2, 1),
    "edge-cases/junit2html__junit-complex_suites.xml": T(685, 685),  # same-named passing assertions: each counts
    "edge-cases/junit2html__junit-jenkins-stdout.xml": T(1, 0, 1),
    "edge-cases/junit2html__junit-simple_suite.xml": T(1, 0, 1),  # declares tests=3 skipped=1
    "edge-cases/junit2html__junit-unicode.xml": T(2, 1, 1),
    "edge-cases/launchable__broken.xml": Err("not XML"),
    "edge-cases/mikepenz__flaky_all_failures.xml": T(1, 0, 0, 1),  # 3 attempts F, F, E: one test, its worst
    # P, F, E (read in the file: a pass, then a <failure>, then an <error>, one name): attempts of one
    # test that failed after it passed are not a retry that passed, so one errored test (it was
    # T(1, 1, 0, 0, 0, 1), a flaky pass, before only failures followed by a final pass counted as retries)
    "edge-cases/mikepenz__flaky_success_first.xml": T(1, 0, 0, 1),
    "edge-cases/mikepenz__multi-level.xml": T(3, 3),  # declares tests="57"
    "edge-cases/mikepenz__testFailedDisabled.xml": T(1, 0, 1),  # status="disabled" with <failure>
    "edge-cases/mikepenz__test_multiple_failures.xml": T(4, 1, 2, 0, 1),  # 3 <failure> in one testcase = 1
    "edge-cases/xunit-viewer__duplicate_name_unique_classanme.xml": T(12, 11, 0, 1),
    "edge-cases/xunit-viewer__lots-of-results.xml": T(2069, 2043, 0, 0, 26),  # declares tests="34776"
    "edge-cases/xunit-viewer__properties_in_test_meta.xml": T(8, 7, 1),
    "edge-cases/xunit-viewer__russian-unicode.xml": T(1, 1),
    "edge-cases/xunit-viewer__semi-colon.xml": T(6, 2, 0, 0, 4),  # two names skipped twice each: 4 skipped
    "edge-cases/xunit-viewer__special_chars_suite.xml": T(3, 3),
    "go-junit-report/go-junit-report__001-report.xml": T(5, 2, 1, 0, 2),
    "go-junit-report/go-junit-report__005-report.xml": T(2, 2),
    "go-junit-report/go-junit-report__008-report.xml": T(3, 0, 3),
    "go-junit-report/go-junit-report__012-report.xml": T(11, 6, 4, 0, 1),
    "go-junit-report/go-junit-report__030-report.xml": T(17, 8, 9),
    "go-junit-report/go-junit-report__036-report.xml": T(3, 0, 2, 0, 1),
    "go-junit-report/go-junit-report__101-report.xml": T(2, 1, 1),
    "go-junit-report/go-junit-report__103-report.xml": T(4, 2, 2),
    "go-junit-report/go-junit-report__108-report.xml": T(2, 1, 0, 1),
    "go-junit-report/launchable__reportv2.xml": T(9, 9),
    "googletest/launchable__output_b.xml": T(3, 3),  # status="run" result="completed"
    "gotestsum/gotestsum__junitxml-report-tc-with-attributes.golden": T(1, 1),
    "gotestsum/gotestsum__junitxml-report.golden": T(60, 42, 13, 0, 5),  # 1 + 18 + 12 + 29 testcases
    "gradle/launchable__1.xml": T(4, 4),
    "jest-junit/codecov__jest-junit.xml": T(4, 4),
    "jest-junit/dorny__empty__jest-junit.xml": T(0, 0),
    "jest-junit/dorny__jest-junit-eslint.xml": T(1, 1),
    "jest-junit/dorny__jest-junit.xml": T(6, 1, 4, 0, 1),
    "jest-junit/dorny__jest-test-results.xml": T(4239, 4207, 2, 0, 30),
    "jest-junit/enricomi__jest-junit.xml": T(2, 2),
    "junit-generic/dorny__junit4-basic.xml": T(6, 5, 1),  # a commented-out suite holds 3 more
    "junitparser-fixtures/junitparser__jenkins.xml": T(3, 1, 1, 0, 1),
    "junitparser-fixtures/junitparser__no_fails.xml": T(3, 2, 0, 0, 1),
    "junitparser-fixtures/junitparser__no_suites_tag.xml": T(3, 1, 1, 0, 1),
    "junitparser-fixtures/junitparser__normal.xml": T(3, 1, 1, 0, 1),
    "marathon/mikepenz__marathon_junit_report.xml": T(1, 1, 0, 0, 0, 1),  # <flakyFailure>
    # TestNG: testVersionStrings skipped then failed (a retry that never passed): one failure
    "maven-surefire/dorny__TEST-org.apache.pulsar.AddMissingPatchVersionTest.xml": T(1, 0, 1),
    # 808 testcases, 1 failure, 14 skipped; the AddMissingPatchVersionTest pair above is one test
    "maven-surefire/dorny__pulsar-test-report.xml": T(807, 793, 1, 0, 13),
    "maven-surefire/jenkins-junit__TEST-io.olamy.FlakyTest.xml": T(1, 1, 0, 0, 0, 1),
    "maven-surefire/launchable__TEST-1.xml": T(1, 1),
    "maven-surefire/launchable__TEST-nested.xml": T(1, 1),
    "maven-surefire/mikepenz__TEST-action.surefire.report.calc.AllOkTest.xml": T(1, 1),
    "maven-surefire/mikepenz__TEST-action.surefire.report.calc.CalcUtilsTest.xml": T(2, 0, 2),
    "maven-surefire/mikepenz__TEST-action.surefire.report.calc.StringUtilsTest.xml": T(5, 2, 2, 0, 1),
    "maven-surefire/mikepenz__TEST-test.CorruptTest.xml": Err("unclosed CDATA section"),
    "maven-surefire/mikepenz__surefire-report.xml": T(1, 1, 0, 0, 0, 1),
    "mocha-junit-reporter/enricomi__latex-utensils.xml": T(109, 109),
    "nette-tester/dorny__tester-v1.7-report.xml": T(65, 61, 1, 0, 3),
    "not-junit/dorny__dotnet-nunit.xml": Err("NUnit 3"),
    "not-junit/dorny__dotnet-trx.trx": Err("TRX"),
    "not-junit/enricomi__fixie.xml": Err("xUnit.net"),
    "not-junit/launchable__output.xml": Err("Robot Framework"),
    "perl/mikepenz__result.xml": T(1, 1),
    "phpunit/codecov__phpunit.junit.xml": T(2, 2),
    "phpunit/dorny__phpunit-empty.xml": T(0, 0),
    "phpunit/dorny__phpunit-paths.xml": T(6, 0, 6),
    "phpunit/dorny__phpunit.xml": T(12, 10, 2),
    "pytest/dorny__python-xunit-pytest.xml": T(10, 6, 2, 0, 2),  # declares tests="15"
    "pytest/enricomi__corrupt-xml.xml": Err("truncated"),
    "pytest/enricomi__junit.fail.xml": T(5, 3, 1, 0, 1),
    "pytest/enricomi__junit.gloo.elastic.spark.tf.xml": T(22, 20, 0, 0, 2),
    "pytest/enricomi__junit.mpi.standalone.xml": T(97, 96, 0, 0, 1),
    "pytest/junitparser__pytest_error.xml": T(1, 0, 1),
    "pytest/junitparser__pytest_success.xml": T(1, 1),
    "pytest/mikepenz__report.xml": T(3, 1, 2),
    "pytest/xunit-viewer__pytest_testcase_properties.xml": T(1, 1),
    "python-unittest/dorny__python-xunit-unittest.xml": T(8, 4, 1, 1, 2),
    "rspec/launchable__rspec.xml": T(16, 16),
    "sbt/unitcover__ApplicationSpec.xml": T(7, 7),
    "scalatest/enricomi__TEST-uk.co.gresearch.spark.diff.DiffOptionsSuite.xml": T(5, 5),
    "security/jenkins-junit__testXxe-oob.xml": Err("DTD"),  # a bare DTD fragment
    "security/jenkins-junit__testXxe-xxe.xml": Err("XXE"),
    "spec-examples/testmo__conventions.xml": T(1, 1),
    "spec-examples/testmo__junit-basic.xml": T(9, 8, 1),
    "spec-examples/testmo__junit-complete.xml": T(8, 5, 1, 1, 1),  # a commented-out testcase is not counted
    "spec-examples/testmo__testcase-output.xml": T(1, 1),
    "spec-examples/testmo__testcase-properties.xml": T(1, 1),
    "swift/dorny__swift-xunit.xml": T(3, 2, 1),  # test_always_skip has no <skipped>: reads as passed
    "tst/enricomi__disabled.xml": T(31, 6, 19, 1, 5),  # status='disabled'/'errored' without children
    "vitest/launchable__report.xml": T(5, 3, 2),
}

# tests/fixtures/junit/<file> -> expected. Our own files: every quirk stays covered without the corpus.
FIXTURE_EXPECTED: dict[str, Expected] = {
    "bare_testsuite_root.xml": T(3, 1, 1, 0, 1),
    "nested_suites.xml": T(6, 4, 0, 1, 1),
    "wrong_declared_totals.xml": T(3, 2, 1),
    "missing_attributes.xml": T(5, 1, 2, 1, 1),
    "suite_level_error.xml": T(1, 0, 0, 1),
    "suite_level_failure_with_cases.xml": T(4, 3, 0, 1),
    "flaky_failure.xml": T(3, 3, 0, 0, 0, 2),
    "rerun_failure.xml": T(3, 0, 2, 1),
    # test_success_first passes, then fails and errors: one errored test, not a flaky pass
    "repeated_retries.xml": T(4, 2, 0, 2, 0, 1),
    "duplicated_names.xml": T(10, 6, 1, 1, 2),
    "status_attributes.xml": T(17, 4, 4, 2, 7),
    "utf8_bom.xml": T(2, 1, 1),
    "entities_and_unicode.xml": T(5, 2, 1, 1, 1),
    "single_quoted.xml": T(3, 2, 1),
    "multiple_failures.xml": T(3, 1, 1, 1),
    "odd_times.xml": T(4, 4),
    "swift_skip_without_element.xml": T(3, 2, 1),
    "empty_testsuites.xml": T(0, 0),
    "empty_testsuites_self_closing.xml": T(0, 0),
    "truncated.xml": Err("not well-formed XML at line"),
    "truncated_cdata.xml": Err("unclosed CDATA section"),
    "junk_after_root.xml": Err("junk after document element"),
    "empty.xml": Err("empty (0 bytes)"),
    "whitespace_only.xml": Err("empty (only whitespace)"),
    "plain_text.junit.xml": Err("not XML"),
    "not_junit_nunit3.xml": Err("<test-run> looks like NUnit 3"),
    "not_junit_xunit.xml": Err("<assemblies> looks like xUnit.net"),
    "not_junit_trx.trx": Err("<TestRun> looks like Visual Studio TRX"),
    "not_junit_robot.xml": Err("<robot> looks like Robot Framework"),
    "not_junit_arbitrary.xml": Err("root element is <suites>"),
    "billion_laughs.xml": Err("XML bomb"),
    "xxe_external_entity.xml": Err("XXE"),
    "xxe_parameter_entity.xml": Err("XXE"),
    "doctype_internal_subset.xml": Err("DTD"),
    "doctype_external_only.xml": Err("DTD"),
    "dtd_fragment.xml": Err("DTD"),
}
FIXTURE_DATA = {"xxe-secret.txt"}  # read by nothing: the XXE fixtures point at it


def _check(path: Path, expected: Expected) -> ReportSummary | None:
    if isinstance(expected, Err):
        with pytest.raises(ReportError) as info:
            read_junit(path)
        assert expected.word.lower() in str(info.value).lower(), str(info.value)
        return None
    summary = read_junit(path)
    assert summary.totals == expected
    _assert_invariants(summary)
    return summary


def _assert_invariants(summary: ReportSummary) -> None:
    t = summary.totals
    assert t.tests == t.passed + t.failures + t.errors + t.skipped
    assert 0 <= t.flaky <= t.passed
    assert min(t.tests, t.passed, t.failures, t.errors, t.skipped) >= 0
    assert len(summary.failed_tests) == min(t.failures + t.errors, MAX_LISTED)
    assert len(summary.flaky_tests) == min(t.flaky, MAX_LISTED)
    assert len(summary.notes) <= MAX_NOTES + 1


# -- the public corpus ------------------------------------------------------------------------


def test_every_corpus_junit_file_has_an_expectation(corpus: Path) -> None:
    root = corpus / "junit"
    found = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and "_schemas" not in p.parts}
    assert found, f"no JUnit files under {root}"
    assert sorted(found - CORPUS_EXPECTED.keys()) == [], "new corpus files: count them by hand and add them"
    assert sorted(CORPUS_EXPECTED.keys() - found) == [], "table entries for files that are gone"


@pytest.mark.corpus
@pytest.mark.parametrize("relpath", sorted(CORPUS_EXPECTED))
def test_corpus_file(corpus: Path, relpath: str) -> None:
    _check(corpus / "junit" / relpath, CORPUS_EXPECTED[relpath])


@pytest.mark.corpus
def test_corpus_details(corpus: Path) -> None:
    junit = corpus / "junit"
    cypress = read_junit(junit / "cypress/launchable__test-result.xml")
    assert "declared tests=6 but the file holds 3 testcases" in cypress.notes
    assert cypress.suites == 2

    no_tests = read_junit(junit / "edge-cases/jenkins-junit__junit-report-6700.xml")
    assert no_tests.failed_tests == ("gda.device.detector.XHDetectorTest",)

    success_first = read_junit(junit / "edge-cases/mikepenz__flaky_success_first.xml")
    assert success_first.flaky_tests == ()
    assert success_first.failed_tests == ("test_order.TestOrder.test_success_first",)

    duplicate = read_junit(junit / "edge-cases/xunit-viewer__duplicate_name_unique_classanme.xml")
    assert duplicate.failed_tests == ("Obi.Backend.Tests.CuentaTest.DeberiaInvocarASoaYDevolverHttpOk",)

    assert read_junit(junit / "edge-cases/enricomi__testsuite-in-testsuite.xml").suites == 4
    assert read_junit(junit / "junitparser-fixtures/junitparser__jenkins.xml").suites == 4
    assert read_junit(junit / "edge-cases/jenkins-junit__junit-report-1472.xml").suites == 108
    entities = read_junit(junit / "edge-cases/enricomi__with-xml-entities.xml")
    assert entities.failed_tests == ("Test with 'apostrophe' in the test name", "Test with & in the test name")


# -- our own fixtures -------------------------------------------------------------------------


def test_every_fixture_has_an_expectation() -> None:
    found = {p.name for p in JUNIT_FIXTURES.iterdir() if p.is_file()}
    assert sorted(found - FIXTURE_EXPECTED.keys() - FIXTURE_DATA) == []
    assert sorted(FIXTURE_EXPECTED.keys() - found) == []


@pytest.mark.parametrize("name", sorted(FIXTURE_EXPECTED))
def test_fixture(name: str) -> None:
    _check(JUNIT_FIXTURES / name, FIXTURE_EXPECTED[name])


def _read(name: str) -> ReportSummary:
    return read_junit(JUNIT_FIXTURES / name)


def test_nested_suites_count_testcases_once_and_every_suite() -> None:
    summary = _read("nested_suites.xml")
    assert summary.suites == 4
    assert summary.failed_tests == ("math.two",)
    # Declared totals repeat at every level; only the root's is compared, and it is wrong too.
    assert summary.notes == ("declared tests=10 but the file holds 6 testcases",)
    assert _read("bare_testsuite_root.xml").suites == 1


def test_declared_totals_are_ignored_but_noted() -> None:
    summary = _read("wrong_declared_totals.xml")
    assert summary.notes == ("declared tests=6 but the file holds 3 testcases",)
    assert summary.failed_tests == ("window.gets the document",)


def test_testcases_without_names_are_counted_and_listed() -> None:
    summary = _read("missing_attributes.xml")
    assert summary.failed_tests == (
        "(unnamed testcase in (unnamed testsuite))",
        "(unnamed testcase in (unnamed testsuite))",
        "empty failure, neither message nor body",
    )


def test_suite_level_error_is_one_errored_test_named_after_the_suite() -> None:
    summary = _read("suite_level_error.xml")
    assert summary.failed_tests == ("gda.device.DetectorTest",)
    assert any("outside any testcase" in n for n in summary.notes)
    assert _read("suite_level_failure_with_cases.xml").failed_tests == ("setup.fails.after.cases",)


def test_surefire_flaky_and_rerun_elements() -> None:
    flaky = _read("flaky_failure.xml")
    assert flaky.flaky_tests == ("io.example.FlakyTest.passesOnSecondRun", "io.example.FlakyTest.passesOnThirdRun")
    assert flaky.failed_tests == ()
    rerun = _read("rerun_failure.xml")
    assert rerun.failed_tests == (
        "io.example.RerunTest.failsEveryRun",
        "io.example.RerunTest.errorsEveryRun",
        "io.example.RerunTest.rerunWithoutVerdict",
    )
    assert rerun.flaky_tests == ()


def test_repeated_testcases_are_read_as_retries() -> None:
    summary = _read("repeated_retries.xml")
    assert summary.flaky_tests == ("tests.test_net.test_download",)
    assert summary.failed_tests == ("tests.test_order.test_success_first", "tests.test_always.test_always_fails")
    assert summary.notes == (
        "tests.test_net.test_download appears 3 times in retries: read as retries of one test, "
        "which passed on retry (flaky)",
        "tests.test_order.test_success_first appears 3 times in retries: read as attempts of one test, "
        "which errored: its last attempt did not pass",
        "tests.test_always.test_always_fails appears 2 times in retries: read as retries of one test, "
        "which errored every attempt",
    )


def test_duplicated_names_that_are_not_retries_count_each_time() -> None:
    summary = _read("duplicated_names.xml")
    assert summary.failed_tests == ("Backend.Tests.CuentaTest.ShouldCallSoaAndReturnOk", "params.test_value")
    assert summary.flaky_tests == ()
    assert "DummyTest.testDummyMethod appears 2 times in DummyTest: counted as 2 tests (not a retry pattern)" in (
        summary.notes
    )
    assert "params.test_value appears 3 times in params: counted as 3 tests (not a retry pattern)" in summary.notes


def test_status_attributes() -> None:
    summary = _read("status_attributes.xml")
    assert summary.failed_tests == (
        "fails.fails",
        "errored_case",
        "disabled_but_failed",
        "Gtest.RunsAndFails",
        "other.unknown_verdict",
        "other.result_false",
    )
    assert any("'inconclusive'" in n and "'wip'" in n and "fail closed" in n for n in summary.notes), summary.notes


def test_entities_and_unicode_are_decoded() -> None:
    summary = _read("entities_and_unicode.xml")
    assert summary.failed_tests == ("ops.Tom & Jerry <3 \"quotes\" 'apos'", "ops.char refs AB\U0001f600")


def test_utf16_with_bom(tmp_path: Path) -> None:
    report = tmp_path / "utf16.xml"
    text = '<?xml version="1.0" encoding="UTF-16"?><testsuite name="ü"><testcase name="é"><failure/></testcase>'
    report.write_bytes((text + "</testsuite>").encode("utf-16"))
    assert read_junit(report).totals == T(1, 0, 1)
    assert read_junit(str(report)).failed_tests == ("é",)


def test_namespace_prefixed_elements(tmp_path: Path) -> None:
    report = tmp_path / "ns.xml"
    report.write_text(
        '<j:testsuites xmlns:j="urn:example"><j:testsuite name="s"><j:testcase name="a"><j:failure/></j:testcase>'
        '<j:testcase name="b"/></j:testsuite></j:testsuites>',
        encoding="utf-8",
    )
    summary = read_junit(report)
    assert (summary.totals, summary.suites) == (T(2, 1, 1), 1)


def test_truncated_report_says_where() -> None:
    with pytest.raises(ReportError) as info:
        _read("truncated.xml")
    assert str(info.value) == (
        "not well-formed XML at line 9, column 1 (no element found): the report is truncated or corrupt"
    )


def test_unreadable_paths(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="cannot read the report"):
        read_junit(tmp_path / "missing.xml")
    with pytest.raises(ReportError, match="cannot read the report"):
        read_junit(tmp_path)


def test_lists_and_names_are_capped(tmp_path: Path) -> None:
    long = "x" * 5000
    cases = "".join(f'<testcase classname="c" name="t{i}{long}"><failure/></testcase>' for i in range(30))
    cases += "".join(f'<testcase classname="r" name="twice{i}"/>' * 2 for i in range(30))
    report = tmp_path / "many.xml"
    report.write_text(f'<testsuite name="s">{cases}</testsuite>', encoding="utf-8")
    summary = read_junit(report)
    assert summary.totals == T(90, 60, 30)
    assert len(summary.failed_tests) == MAX_LISTED
    assert all(len(name) <= 200 for name in summary.failed_tests)
    assert len(summary.notes) == MAX_NOTES + 1
    assert summary.notes[-1] == "10 more notes not shown"


# -- hostile input ------------------------------------------------------------------------------


class _OpenAudit:
    """Record every path opened while active (sys.addaudithook cannot be removed, so it is switched)."""

    active: ClassVar[bool] = False
    opened: ClassVar[list[str]] = []
    installed: ClassVar[bool] = False

    @classmethod
    def hook(cls, event: str, args: tuple[Any, ...]) -> None:
        if cls.active and event == "open" and args and isinstance(args[0], (str, bytes, Path)):
            cls.opened.append(str(args[0]))

    def __enter__(self) -> list[str]:
        if not _OpenAudit.installed:
            sys.addaudithook(_OpenAudit.hook)
            _OpenAudit.installed = True
        _OpenAudit.opened = []
        _OpenAudit.active = True
        return _OpenAudit.opened

    def __exit__(self, *exc: object) -> None:
        _OpenAudit.active = False


@pytest.mark.parametrize(
    "name", ["billion_laughs.xml", "xxe_external_entity.xml", "xxe_parameter_entity.xml", "doctype_external_only.xml"]
)
def test_hostile_documents_are_refused_fast_without_reading_anything_else(name: str) -> None:
    tracemalloc.start()
    with _OpenAudit() as opened, pytest.raises(ReportError) as info:
        _read(name)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert str(info.value) == "DTDs and entity declarations are not allowed in test reports (possible XML bomb or XXE)"
    # Refused at the DOCTYPE: nothing is expanded (an expanded bomb needs gigabytes). Allocation is
    # counted, not timed: wall-clock speed belongs to benchmarks/, not to a test.
    assert peak < 2 * 2**20
    assert [p for p in opened if "xxe-secret" in p] == []
    assert opened == [str(JUNIT_FIXTURES / name)]


def test_xxe_to_an_absolute_file_url_is_not_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-5c7e", encoding="utf-8")
    report = tmp_path / "xxe.xml"
    report.write_text(
        f'<?xml version="1.0"?>\n<!DOCTYPE testsuite [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>\n'
        '<testsuite name="&xxe;"><testcase classname="x" name="&xxe;"><failure message="&xxe;"/></testcase>'
        "</testsuite>\n",
        encoding="utf-8",
    )
    with _OpenAudit() as opened, pytest.raises(ReportError) as info:
        read_junit(report)
    assert "TOP-SECRET" not in str(info.value)
    assert opened == [str(report)]


def test_foreign_root_is_refused_before_the_rest_is_read(tmp_path: Path) -> None:
    report = tmp_path / "big-nunit.xml"
    with open(report, "w", encoding="utf-8") as out:
        out.write("<test-run>")
        out.write('<test-case name="x" result="Passed"/>' * 200_000)
        out.write("</test-run")  # not even well-formed: the root alone decides
    with pytest.raises(ReportError, match="NUnit 3"):
        read_junit(report)


# -- memory -------------------------------------------------------------------------------------

MEMORY_BOUND = 8 * 2**20


def _write_large_report(path: Path, testcases: int, per_suite: int = 500) -> None:
    output = "line of captured output that a streaming reader must not keep\n" * 8
    with open(path, "w", encoding="utf-8") as out:
        out.write('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites>\n')
        for start in range(0, testcases, per_suite):
            out.write(f'<testsuite name="suite{start}">\n')
            for i in range(start, min(start + per_suite, testcases)):
                if i % 20 == 0:
                    out.write(
                        f'<testcase classname="pkg.Class{start}" name="test_{i}" time="0.1">'
                        f'<failure message="boom {i}">{output}</failure></testcase>\n'
                    )
                elif i % 7 == 0:
                    out.write(
                        f'<testcase classname="pkg.Class{start}" name="test_{i}" time="0.1">'
                        f"<system-out><![CDATA[{output}]]></system-out></testcase>\n"
                    )
                else:
                    out.write(f'<testcase classname="pkg.Class{start}" name="test_{i}" time="0.1"/>\n')
            out.write("</testsuite>\n")
        out.write("</testsuites>\n")


def _peak(func: Any, *args: Any) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        result = func(*args)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_on_a_large_report(tmp_path: Path) -> None:
    report = tmp_path / "large.xml"
    _write_large_report(report, 50_000)
    summary, peak = _peak(read_junit, report)
    assert summary.totals == T(50_000, 47_500, 2_500)
    assert peak < MEMORY_BOUND, f"read_junit peaked at {peak / 2**20:.1f} MiB"
    # The bound means something: keeping the tree (even without its text) needs far more.
    _tree, tree_peak = _peak(ET.parse, report)
    assert tree_peak > 2 * MEMORY_BOUND


def test_huge_text_is_never_kept(tmp_path: Path) -> None:
    report = tmp_path / "huge-output.xml"
    chunk = "0123456789abcdef" * 4096  # 64 KiB
    with open(report, "w", encoding="utf-8") as out:
        out.write('<testsuite name="s"><testcase classname="c" name="noisy"><system-out><![CDATA[')
        for _ in range(256):  # 16 MiB of output
            out.write(chunk)
        out.write(']]></system-out><failure message="m">')
        for _ in range(256):  # and a 16 MiB failure body
            out.write(chunk)
        out.write("</failure></testcase></testsuite>")
    summary, peak = _peak(read_junit, report)
    assert summary.totals == T(1, 0, 1)
    assert peak < MEMORY_BOUND, f"read_junit peaked at {peak / 2**20:.1f} MiB"


# -- the value objects ----------------------------------------------------------------------------


def test_totals_api() -> None:
    a = Totals(3, 1, 1, 0, 1)
    b = Totals(2, 2, 0, 0, 0, flaky=1)
    assert a.flaky == 0
    assert a + b == Totals(5, 3, 1, 0, 1, 1)
    assert list((a + b).to_json().items()) == [
        ("tests", 5), ("passed", 3), ("failures", 1), ("errors", 0), ("skipped", 1), ("flaky", 1),
    ]
    with pytest.raises(TypeError):
        a + 1
    with pytest.raises(AttributeError):
        a.tests = 4  # type: ignore[misc]
