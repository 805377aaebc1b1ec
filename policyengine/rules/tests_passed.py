"""``tests_passed``: JUnit XML reports show that tests ran and none failed.

- ``reports``: globs relative to the workspace (``*`` stays in one folder, ``**`` crosses
  folders). No matching file fails the rule; a match that is a symlink leading outside the
  workspace fails it and is never read.
- Counts come from the testcase elements, never from declared suite totals.
- ``min_tests`` (default 1): at least this many tests ran (passed, failed or errored;
  skipped tests do not count as run).
- ``allow_skipped`` (default true): when false, any skipped test fails the rule.
- ``allow_flaky`` (default true): when false, any flaky test (one that passed only on retry,
  see ``policyengine.workspace.junit``) fails the rule.
- A report that cannot be trusted (malformed, truncated, hostile, not JUnit) makes the rule
  ``error`` (fail closed), unless the readable reports already show a failure: a known
  failure is a ``fail`` whatever the unreadable file holds.
- ``provenance`` (default ``any``): ``same_run`` counts a report only when a job of this
  workflow run or pipeline produced it (``providers.provenance`` says how that is decided); each
  report's details then carry its ``producer``. A report no job of the run produced fails the
  rule; a platform that could not say (API failure, partial answer, no CI platform) is ``error``.
"""

from __future__ import annotations

from typing import Any

from policyengine.facts import FactRequest, ProvenanceRequest, ReportsRequest, Totals
from policyengine.models import FileRead, Outcome, Status
from policyengine.rules.base import Context, RuleType


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class TestsPassedRule(RuleType):
    """Test reports show enough tests ran and none failed."""

    type_name = "tests_passed"
    __test__ = False  # not a pytest test class, despite its name

    def paths(self) -> list[str]:
        return list(self.params["reports"])

    def needs(self) -> list[FactRequest]:
        wanted: list[FactRequest] = [ReportsRequest(tuple(self.params["reports"]))]
        if self.params.get("provenance", "any") == "same_run":
            wanted.append(ProvenanceRequest(tuple(self.params["reports"])))
        return wanted

    def evaluate(self, ctx: Context) -> Outcome:
        globs = list(self.params["reports"])
        min_tests = int(self.params.get("min_tests", 1))
        allow_skipped = bool(self.params.get("allow_skipped", True))
        allow_flaky = bool(self.params.get("allow_flaky", True))
        same_run = self.params.get("provenance", "any") == "same_run"

        fact = ctx.facts.reports(ReportsRequest(tuple(globs)))
        if fact is None:  # fail closed: a judge without the facts it needs cannot pass
            return Outcome(Status.ERROR, "the test reports were not gathered", {"reports": globs})
        if fact.list_error:
            return Outcome(Status.ERROR, fact.list_error, {"reports": globs})
        details: dict[str, Any] = {"reports": globs, "files": [], "totals": Totals(0, 0, 0, 0, 0).to_json()}
        if fact.outside:
            details["outside_workspace"] = list(fact.outside)
            return Outcome(
                Status.FAIL,
                "report path leads outside the workspace (symlink not followed): " + ", ".join(fact.outside),
                details,
            )
        if not fact.reports:
            return Outcome(Status.FAIL, "no test report matched " + ", ".join(globs), details)

        provenance = ctx.facts.provenance(ProvenanceRequest(tuple(globs))) if same_run else None
        unproven: list[str] = []
        totals = Totals(0, 0, 0, 0, 0)
        files: list[FileRead] = []
        unreadable: list[str] = []
        failing: list[str] = []
        flaky: list[str] = []
        for report in fact.reports:
            rel = report.path
            if report.summary is None:
                unreadable.append(f"{rel}: {report.error}")
                if report.file is None:
                    details["files"].append({"path": rel, "error": report.error})
                else:
                    files.append(report.file)
                    details["files"].append({"path": rel, "sha256": report.file.sha256, "error": report.error})
                continue
            assert report.file is not None  # a parsed report was read  # noqa: S101
            summary = report.summary
            files.append(report.file)
            totals = totals + summary.totals
            details["files"].append({"path": rel, "sha256": report.file.sha256, **summary.totals.to_json(),
                                     **({"notes": list(summary.notes)} if summary.notes else {})})
            failing += [f"{rel}: {name}" for name in summary.failed_tests]
            flaky += list(summary.flaky_tests)
        if provenance is not None and provenance.error is None:
            for entry in details["files"]:
                if "sha256" not in entry:
                    continue  # a file that could not even be hashed is already unreadable: error
                entry["producer"] = provenance.producer(entry["path"], entry["sha256"])
                if entry["producer"] is None:
                    unproven.append(entry["path"])

        matched = fact.reports
        details["totals"] = totals.to_json()
        if flaky:
            details["flaky_tests"] = flaky[:20]
        ran = totals.tests - totals.skipped
        bad = totals.failures + totals.errors
        counts = (f"{_plural(totals.tests, 'test')} in {_plural(len(matched), 'report')}: "
                  f"{totals.passed} passed, {totals.failures} failed, {totals.errors} errored, "
                  f"{totals.skipped} skipped")
        if totals.flaky:
            counts += f" ({totals.flaky} flaky: passed on retry)"
        problems: list[str] = []
        if bad:
            shown = "; ".join(failing[:5]) + (f"; and {len(failing) - 5} more" if len(failing) > 5 else "")
            problems.append(f"{_plural(bad, 'test')} did not pass" + (f" ({shown})" if shown else ""))
        if unreadable:
            problems.append("unreadable report" + ("s" if len(unreadable) > 1 else "") + ": " + "; ".join(unreadable))
        lost = None
        if same_run and provenance is None:  # fail closed: not gathered is not proven
            lost = "the provenance of the reports was not gathered"
        elif provenance is not None and provenance.error is not None:
            lost = f"provenance: same_run cannot be checked: {provenance.error}"
        if lost:
            problems.append(lost)
            details["provenance"] = {"error": lost}
        elif provenance is not None:
            details["provenance"] = {"platform": provenance.platform, "run": provenance.run}
            if provenance.run_from is not None:  # id_token, or the variable: self-asserted
                details["provenance"]["run_from"] = provenance.run_from
        if unproven:
            where = "this pipeline" if provenance is not None and provenance.platform == "gitlab" else \
                "this workflow run"
            shown = ", ".join(unproven[:5]) + (f" and {len(unproven) - 5} more" if len(unproven) > 5 else "")
            problems.append(f"report {shown} {'was' if len(unproven) == 1 else 'were'} not produced by {where} "
                            "(provenance: same_run)")
        if not unreadable and ran < min_tests:
            problems.append(f"{ran} tests ran, fewer than the {min_tests} required")
        if totals.skipped and not allow_skipped:
            problems.append(f"{_plural(totals.skipped, 'test')} skipped and the policy does not allow skipped tests")
        if totals.flaky and not allow_flaky:
            named = flaky[:5]
            more = totals.flaky - len(named)
            shown = "; ".join(named) + (f"; and {more} more" if more > 0 else "")
            problems.append(f"{_plural(totals.flaky, 'flaky test')} and the policy does not allow flaky tests ({shown})")
        if not problems:
            return Outcome(Status.PASS, counts, details, tuple(files))
        known_failure = (bad or (totals.skipped and not allow_skipped) or (totals.flaky and not allow_flaky)
                         or unproven)
        status = Status.ERROR if (unreadable or lost) and not known_failure else Status.FAIL
        return Outcome(status, counts + "; " + "; ".join(problems), details, tuple(files))
