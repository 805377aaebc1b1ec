"""``tests_passed`` with ``provenance: same_run`` (issue 17): a report counts only when a job of
this workflow run (GitHub: an artifact of the run holds the very file) or of this pipeline
(GitLab: the pipeline's test report holds its test cases, naming the jobs) produced it.

Run end to end through ``check`` against the loopback stand-ins of tests/fake_servers.py; the
GitHub artifact download is redirected, as GitHub does, to a second loopback "blob storage"
server that must never see the token.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from fake_servers import FakeAPI, Reply, github_env, gitlab_env, sha_of

from policyengine import cli
from policyengine.providers import http

SHA = sha_of("provenance-deploy")
RUN_ID = "1658821493"  # github_env's GITHUB_RUN_ID
ARTIFACTS = f"/repos/acme/payments/actions/runs/{RUN_ID}/artifacts"
TEST_REPORT = "/projects/278964/pipelines/61/test_report"  # gitlab_env's project and pipeline

PASSING = b"""<?xml version="1.0"?>
<testsuite name="unit" tests="2">
  <testcase classname="t.refunds" name="test_refund"/>
  <testcase classname="t.refunds" name="test_partial"/>
</testsuite>
"""
# The same tests as this run really ran them: one failed. A stale copy of PASSING (from another
# run) committed to the workspace must not stand in for it.
THIS_RUN = b"""<?xml version="1.0"?>
<testsuite name="unit" tests="2">
  <testcase classname="t.refunds" name="test_refund"/>
  <testcase classname="t.refunds" name="test_partial"><failure message="boom"/></testcase>
</testsuite>
"""


@pytest.fixture(autouse=True)
def _no_real_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "SLEEP", lambda s: None)


def _policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yml"
    path.write_text("version: 1\nname: provenance\nrules:\n"
                    "  - id: tests\n    type: tests_passed\n    reports: [\"reports/*.xml\"]\n"
                    "    provenance: same_run\n", encoding="utf-8")
    return path


def _check(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
           env: dict[str, str], provider: str, report: bytes = PASSING) -> tuple[int, dict[str, Any], str]:
    ws = tmp_path / "ws"
    (ws / "reports").mkdir(parents=True)
    (ws / "reports" / "junit.xml").write_bytes(report)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "decision.json"
    args = ["check", "--policy", str(_policy(tmp_path)), "--provider", provider, "--json", str(out),
            "--evidence-dir", str(tmp_path / "evidence"), "--workspace", str(ws),
            "--now", "2026-11-24T15:00:00Z", "--color", "never"]
    with pytest.raises(SystemExit) as exc:
        cli.main(args)
    cap = capsys.readouterr()
    assert out.exists(), cap.out + cap.err
    doc = json.loads(out.read_text())
    rule = next(r for r in doc["rules"] if r["id"] == "tests")
    return int(exc.value.code or 0), rule, cap.out + cap.err


def _replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Replay this run's bundle: the recorded producers are read back, no platform is asked."""
    doc = json.loads((tmp_path / "decision.json").read_text())
    with pytest.raises(SystemExit) as exc:
        cli.main(["evidence", "replay", "--archive", str(tmp_path / "evidence"), doc["evidence"]["bundle_id"]])
    cap = capsys.readouterr()
    return int(exc.value.code or 0), cap.out + cap.err


def _bundle_names(tmp_path: Path) -> list[str]:
    (bundle,) = sorted((tmp_path / "evidence").rglob("*.zip"))
    with zipfile.ZipFile(bundle) as z:
        return z.namelist()


# -- GitHub: an artifact of this workflow run holds the report -----------------------------------


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _artifact(api: FakeAPI, artifact_id: int, zipped: bytes, run_id: str = RUN_ID) -> dict[str, Any]:
    return {"id": artifact_id, "node_id": "x", "name": f"test-results-{artifact_id}", "size_in_bytes": len(zipped),
            "url": f"{api.url}/repos/acme/payments/actions/artifacts/{artifact_id}",
            "archive_download_url": f"{api.url}/repos/acme/payments/actions/artifacts/{artifact_id}/zip",
            "expired": False, "digest": "sha256:" + hashlib.sha256(zipped).hexdigest(),
            "created_at": "2026-11-24T14:50:00Z", "expires_at": "2027-02-22T14:50:00Z",
            "workflow_run": {"id": int(run_id), "head_sha": SHA}}


def _github_run(api: FakeAPI, storage: FakeAPI, zips: dict[int, bytes]) -> None:
    """The run's artifacts: each download answers 302 to the storage server, as GitHub does."""
    api.pages(ARTIFACTS, [_artifact(api, i, z) for i, z in zips.items()], key="artifacts",
              wrap={"total_count": len(zips)})
    for i, z in zips.items():
        api.json(f"/repos/acme/payments/actions/artifacts/{i}/zip", {}, status=302,
                 headers={"Location": f"{storage.url}/blob/{i}?sig=abc"})
        storage.handler(f"/blob/{i}", lambda req, s, z=z: Reply(200, z))


@pytest.fixture
def github() -> Any:
    with FakeAPI("/api/v3") as api, FakeAPI() as storage:
        yield api, storage


def test_github_a_report_from_this_run_passes_and_names_its_artifact(
        github: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    api, storage = github
    _github_run(api, storage, {11: _zip({"lint.txt": b"ok"}), 12: _zip({"junit.xml": PASSING})})
    code, rule, out = _check(monkeypatch, capsys, tmp_path, github_env(api, SHA), "github")
    assert rule["status"] == "pass", out
    producer = rule["details"]["files"][0]["producer"]
    assert producer["artifact_id"] == 12 and producer["member"] == "junit.xml"
    assert producer["url"] == f"https://github.com/acme/payments/actions/runs/{RUN_ID}/artifacts/12"
    # The storage host never receives the API token.
    assert storage.requests and all("Authorization" not in r.headers for r in storage.requests)
    names = _bundle_names(tmp_path)
    assert "raw/provenance.json" in names
    assert f"raw/github/runs_{RUN_ID}_artifacts_p1.json" in names
    # No ID token verified: the run is the job's environment, and the evidence says so.
    assert rule["details"]["provenance"] == {"platform": "github", "run": RUN_ID, "run_from": "GITHUB_RUN_ID"}
    requests = len(api.requests)
    code, out = _replay(tmp_path, capsys)
    assert code == 0, out  # the recorded run_from is judged again the same
    assert len(api.requests) == requests  # replay asked nobody


def test_github_a_report_from_another_run_fails_same_run(
        github: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    api, storage = github
    _github_run(api, storage, {12: _zip({"junit.xml": THIS_RUN})})
    code, rule, out = _check(monkeypatch, capsys, tmp_path, github_env(api, SHA), "github", report=PASSING)
    assert rule["status"] == "fail", out
    assert "reports/junit.xml was not produced by this workflow run" in rule["message"]
    assert code == 1


def test_github_an_artifact_whose_bytes_differ_from_its_listed_digest_is_not_trusted(
        github: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    api, storage = github
    _github_run(api, storage, {12: _zip({"junit.xml": THIS_RUN})})
    storage.handler("/blob/12", lambda req, s: Reply(200, _zip({"junit.xml": PASSING})))
    code, rule, out = _check(monkeypatch, capsys, tmp_path, github_env(api, SHA), "github")
    assert rule["status"] == "error", out
    assert "digest" in rule["message"]


def test_github_api_failure_is_an_error_naming_the_endpoint(
        github: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    api, storage = github
    api.json(ARTIFACTS, {"message": "Resource not accessible by integration"}, status=403)
    code, rule, out = _check(monkeypatch, capsys, tmp_path, github_env(api, SHA), "github")
    assert rule["status"] == "error", out
    assert f"GET /repos/acme/payments/actions/runs/{RUN_ID}/artifacts" in rule["message"]
    assert code == 3


def test_github_a_list_beyond_the_page_cap_is_an_error(
        github: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    api, storage = github
    zipped = _zip({"junit.xml": PASSING})
    many = [{**_artifact(api, i, zipped), "expired": True} for i in range(1, 151)]
    api.pages(ARTIFACTS, many, key="artifacts", wrap={"total_count": len(many)})
    env = github_env(api, SHA, POLICYENGINE_HTTP_MAX_PAGES="1")
    code, rule, out = _check(monkeypatch, capsys, tmp_path, env, "github")
    assert rule["status"] == "error", out
    assert "more than 1 pages" in rule["message"]


def test_github_a_partial_list_is_an_error(
        github: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    api, storage = github
    _github_run(api, storage, {12: _zip({"junit.xml": THIS_RUN})})
    listed = [_artifact(api, 12, _zip({"junit.xml": THIS_RUN}))]
    api.pages(ARTIFACTS, listed, key="artifacts", wrap={"total_count": 3})  # says 3, lists 1
    code, rule, out = _check(monkeypatch, capsys, tmp_path, github_env(api, SHA), "github")
    assert rule["status"] == "error", out
    assert "lists 1 of 3 artifacts" in rule["message"]


# -- GitLab: the pipeline's test report holds the report's test cases ------------------------------


def _suite(cases: list[tuple[str, str, str]], build_ids: list[int], **extra: Any) -> dict[str, Any]:
    counts = {s: sum(1 for c in cases if c[2] == s) for s in ("success", "failed", "skipped", "error")}
    return {"name": "unit", "total_time": 1.0, "total_count": len(cases), "success_count": counts["success"],
            "failed_count": counts["failed"], "skipped_count": counts["skipped"], "error_count": counts["error"],
            "suite_error": None, "build_ids": build_ids,
            "test_cases": [{"status": s, "name": n, "classname": c, "execution_time": 0.1, "system_output": None}
                           for c, n, s in cases], **extra}


def _report(*suites: dict[str, Any]) -> dict[str, Any]:
    return {"total_time": 1.0, "total_count": sum(s["total_count"] for s in suites), "success_count": 0,
            "failed_count": 0, "skipped_count": 0, "error_count": 0, "test_suites": list(suites)}


PASSED_CASES = [("t.refunds", "test_refund", "success"), ("t.refunds", "test_partial", "success")]
FAILED_CASES = [("t.refunds", "test_refund", "success"), ("t.refunds", "test_partial", "failed")]


@pytest.fixture
def gitlab() -> Any:
    with FakeAPI("/api/v4") as api:
        yield api


def test_gitlab_a_report_from_this_pipeline_passes_and_names_its_job(
        gitlab: FakeAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    gitlab.json(TEST_REPORT, _report(_suite(PASSED_CASES, [4711])))
    code, rule, out = _check(monkeypatch, capsys, tmp_path, gitlab_env(gitlab, SHA), "gitlab")
    assert rule["status"] == "pass", out
    producer = rule["details"]["files"][0]["producer"]
    assert producer["job_ids"] == [4711] and producer["pipeline_id"] == "61"
    assert producer["url"] == "https://gitlab.example.com/acme/payments/-/jobs/4711"
    assert "raw/gitlab/pipelines_61_test_report.json" in _bundle_names(tmp_path)
    # Self-asserted: CI_PIPELINE_ID is the job's environment (an earlier job's dotenv can set it).
    assert rule["details"]["provenance"]["run_from"] == "CI_PIPELINE_ID"


def test_gitlab_the_id_tokens_pipeline_is_asked_not_a_forged_ci_pipeline_id(
        gitlab: FakeAPI, tmp_path: Path) -> None:
    """With a verified ID token the pipeline is the token's claim, whatever CI_PIPELINE_ID says
    (a dotenv report of an earlier job takes precedence over predefined variables), and the
    evidence names the token as its source."""
    from policyengine.facts import ReportFact
    from policyengine.providers.provenance import LiveProvenance
    from policyengine.workspace.files import Workspace

    gitlab.json(TEST_REPORT, _report(_suite(PASSED_CASES, [4711])))  # pipeline 61's
    gitlab.json("/projects/278964/pipelines/99/test_report", _report(_suite(PASSED_CASES, [9999])))
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "junit.xml").write_bytes(PASSING)
    env = {**gitlab_env(gitlab, SHA), "CI_PIPELINE_ID": "99"}  # forged to a pipeline whose tests passed
    change = {"repository": "acme/payments", "environment": "production", "commit": SHA}
    reports = [ReportFact("reports/junit.xml", None)]
    verified = LiveProvenance("gitlab", env, change, {"pipeline_id": 61}).produced(reports, Workspace(tmp_path))
    assert verified.error is None and verified.run == "61" and verified.run_from == "id_token"
    assert verified.producers[0][2]["job_ids"] == [4711]
    assert json.loads(verified.record)["run_from"] == "id_token"
    unverified = LiveProvenance("gitlab", env, change).produced(reports, Workspace(tmp_path))
    assert unverified.run == "99" and unverified.run_from == "CI_PIPELINE_ID"


def test_gitlab_a_report_from_another_pipeline_fails_same_run(
        gitlab: FakeAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    gitlab.json(TEST_REPORT, _report(_suite(FAILED_CASES, [4711])))
    code, rule, out = _check(monkeypatch, capsys, tmp_path, gitlab_env(gitlab, SHA), "gitlab", report=PASSING)
    assert rule["status"] == "fail", out
    assert "reports/junit.xml was not produced by this pipeline" in rule["message"]
    assert code == 1
    code, out = _replay(tmp_path, capsys)
    assert code == 0, out


def test_gitlab_api_failure_is_an_error(
        gitlab: FakeAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    gitlab.fail(TEST_REPORT, *[Reply(500, {"message": "boom"})] * 4)
    code, rule, out = _check(monkeypatch, capsys, tmp_path, gitlab_env(gitlab, SHA), "gitlab")
    assert rule["status"] == "error", out
    assert f"GET {TEST_REPORT}: HTTP 500" in rule["message"]


def test_gitlab_a_partial_test_report_is_an_error(
        gitlab: FakeAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    suite = _suite(FAILED_CASES, [4711])
    suite["total_count"] = 500  # GitLab counted 500 test cases but listed 2
    gitlab.json(TEST_REPORT, _report(suite))
    code, rule, out = _check(monkeypatch, capsys, tmp_path, gitlab_env(gitlab, SHA), "gitlab")
    assert rule["status"] == "error", out
    assert "lists 2 of its 500 test cases" in rule["message"]


# -- outside the platforms ------------------------------------------------------------------------


def test_same_run_without_a_ci_platform_is_an_error_naming_the_need(tmp_path: Path) -> None:
    from datetime import datetime, timezone

    from policyengine.gate import judge
    from policyengine.language.policy import load_policy

    policy = load_policy(_policy(tmp_path))
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "junit.xml").write_bytes(PASSING)
    decision = judge(policy, {"repository": "acme/payments", "environment": "production", "commit": SHA},
                     tmp_path, datetime(2026, 11, 24, 15, tzinfo=timezone.utc))
    (rule,) = [r for r in decision.rules if r.id == "tests"]
    assert rule.status.value == "error"
    assert "GitHub Actions or GitLab CI" in rule.message


# -- the judge alone, from facts built in memory ----------------------------------------------------


def _judge(provenance: Any, digest: str = "ab" * 32) -> Any:
    from helpers import change, run_rule

    from policyengine.facts import ProvenanceRequest, ReportFact, ReportsFact, ReportsRequest, ReportSummary, Totals
    from policyengine.models import FileRead
    from policyengine.rules.tests_passed import TestsPassedRule

    globs = ("reports/*.xml",)
    report = ReportFact("reports/a.xml", FileRead("reports/a.xml", "/nowhere/a.xml", digest, 10),
                        ReportSummary(Totals(2, 2, 0, 0, 0), 1, (), (), ()))
    answers: dict[Any, Any] = {ReportsRequest(globs): ReportsFact(globs, (report,))}
    if provenance is not None:
        answers[ProvenanceRequest(globs)] = provenance
    return run_rule(TestsPassedRule, {"reports": list(globs), "provenance": "same_run"}, change(), answers=answers)


def test_judge_a_producer_of_other_bytes_does_not_prove_the_report() -> None:
    from policyengine.facts import ProvenanceFact

    producer = {"artifact_id": 1, "url": "u"}
    ok = _judge(ProvenanceFact("github", "1", (("reports/a.xml", "ab" * 32, producer),)))
    assert ok.status.value == "pass" and ok.details["files"][0]["producer"] == producer
    # The platform vouched for other bytes at that path (the file changed between reads): fail.
    other = _judge(ProvenanceFact("github", "1", (("reports/a.xml", "cd" * 32, producer),)))
    assert other.status.value == "fail" and "not produced by this workflow run" in other.message


def test_a_recorded_run_from_is_read_back_and_a_malformed_one_is_not_trusted() -> None:
    from policyengine.providers.provenance import MEMBER, RecordedProvenance

    def recorded(doc: dict[str, Any]) -> Any:
        return RecordedProvenance({f"raw/{MEMBER}": json.dumps(doc).encode()}).produced([], None)  # type: ignore[arg-type]

    base = {"platform": "gitlab", "run": "61", "error": None, "reports": []}
    assert recorded({**base, "run_from": "id_token"}).run_from == "id_token"
    assert recorded(base).run_from is None and recorded(base).error is None  # written before it was kept
    assert recorded({**base, "run_from": ["id_token"]}).error == f"raw/{MEMBER} in the bundle cannot be read"


def test_judge_without_the_provenance_fact_or_with_its_error_is_an_error() -> None:
    from policyengine.facts import ProvenanceFact

    assert _judge(None).status.value == "error"
    failed = _judge(ProvenanceFact("gitlab", "61", error="GET /x: HTTP 500"))
    assert failed.status.value == "error" and "GET /x: HTTP 500" in failed.message
