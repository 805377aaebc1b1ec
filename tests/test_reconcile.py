"""`audit reconcile`: the evidence population against what the platform recorded.

Each case writes evidence as `check` does (a LocalArchive, signed) and serves the platform's
records from a local stand-in (GitHub GraphQL, GitLab REST) or a file (kubectl pods, a deploy
log), then runs the command as a user would and reads its JSON.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from policyengine.evidence.audit import reconcile as reconcile_module
from tests.fake_servers import FakeAPI, Reply, sha_of
from tests.reconcile_world import (
    T0,
    Evidence,
    GitHubDeployments,
    GitLabDeployments,
    gitlab_deployment,
    graphql_node,
    iso,
)

REPO, ENV = "acme/payments", "production"
TOKEN = "ghp_" + "S" * 36
DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64
PERIOD = ("--since", "2026-03-01", "--until", "2026-03-31")


def run(archive: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any] | str, str]:
    from policyengine.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["audit", "reconcile", "--archive", str(archive), *PERIOD, "--now", "2026-04-01T00:00:00Z", *args])
    out = capsys.readouterr()
    try:
        parsed: dict[str, Any] | str = json.loads(out.out)
    except ValueError:
        parsed = out.out
    return int(exc.value.code or 0), parsed, out.err


def kinds(report: Any, key: str = "exceptions") -> list[str]:
    return [f["kind"] for f in report[key]]


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> Any:
    with FakeAPI("/api/v3") as api:
        gh = GitHubDeployments(api)
        # The GraphQL endpoint of GitHub Enterprise Server: /api/graphql beside /api/v3.
        api.prefix = "/api"
        monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
        monkeypatch.setenv("GITHUB_API_URL", api.origin + "/api/v3")
        monkeypatch.setenv("POLICYENGINE_HTTP_RETRIES", "0")
        yield gh


@pytest.fixture
def evidence(tmp_path: Path) -> Evidence:
    return Evidence(tmp_path / "archive")


# -- the must-show cases, GitHub source ------------------------------------------------------------


def test_a_deployment_the_gate_never_saw_is_unauthorized(evidence: Evidence, github: GitHubDeployments,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    evidence.evaluation(REPO, ENV, sha_of("a"), T0)
    github.add(REPO, ENV, sha_of("a"), T0 + timedelta(minutes=3), ident=11)
    github.add(REPO, ENV, sha_of("sneaky"), T0 + timedelta(days=1), ident=12, creator="mallory", creator_type="User")
    code, report, _ = run(evidence.archive.root, "--source", "github", "--format", "json", capsys=capsys)
    assert code == 1
    assert isinstance(report, dict)
    assert kinds(report) == ["unauthorized"]
    found = report["exceptions"][0]
    assert (found["platform_id"], found["commit"], found["creator"], found["time"]) == (
        "12", sha_of("sneaky"), "mallory", iso(T0 + timedelta(days=1)))
    assert found["url"] and found["source"] == "github"
    assert "platform's own audit trail" in report["limit"]


def test_a_gate_allowed_deploy_is_no_exception(evidence: Evidence, github: GitHubDeployments,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    evidence.evaluation(REPO, ENV, sha_of("a"), T0)
    github.add(REPO, ENV, sha_of("a"), T0 + timedelta(minutes=3), ident=11)
    code, report, _ = run(evidence.archive.root, "--source", "github", "--format", "json", capsys=capsys)
    assert code == 0, report
    assert isinstance(report, dict)
    assert report["exceptions"] == [] and report["classes"] == [] and report["matched"] == 1
    # The token went in a header to the API host, never into the output.
    q = github.api.requests[-1]
    assert q.method == "POST" and q.path == "/api/graphql" and q.headers["Authorization"] == f"Bearer {TOKEN}"


def test_a_bundle_written_after_the_deploy_beyond_the_tolerance_does_not_release_it(
        evidence: Evidence, github: GitHubDeployments, capsys: pytest.CaptureFixture[str]) -> None:
    evidence.evaluation(REPO, ENV, sha_of("first"), T0 - timedelta(days=1), outcome=None)
    evidence.evaluation(REPO, ENV, sha_of("a"), T0 + timedelta(minutes=11), outcome=None)  # 1 minute too late
    evidence.evaluation(REPO, ENV, sha_of("b"), T0 + timedelta(hours=1, minutes=9))
    github.add(REPO, ENV, sha_of("a"), T0, ident=11)
    github.add(REPO, ENV, sha_of("b"), T0 + timedelta(hours=1), ident=12)
    code, report, _ = run(evidence.archive.root, "--source", "github", "--format", "json", capsys=capsys)
    assert isinstance(report, dict)
    assert [(f["kind"], f["platform_id"]) for f in report["exceptions"]] == [("unauthorized", "11")]
    assert code == 1


def test_a_rerun_of_the_same_pipeline_is_one_deployment(evidence: Evidence, github: GitHubDeployments,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    evidence.evaluation(REPO, ENV, sha_of("a"), T0, pipeline="run-7", outcome=None)
    evidence.evaluation(REPO, ENV, sha_of("a"), T0 + timedelta(minutes=4), pipeline="run-7")
    github.add(REPO, ENV, sha_of("a"), T0 + timedelta(minutes=1), ident=11)
    github.add(REPO, ENV, sha_of("a"), T0 + timedelta(minutes=5), ident=12)
    code, report, _ = run(evidence.archive.root, "--source", "github", "--format", "json", capsys=capsys)
    assert isinstance(report, dict)
    assert code == 0 and report["platform_deployments"] == 1 and report["matched"] == 1


def test_a_rollback_to_an_earlier_allowed_commit_is_no_exception(evidence: Evidence, github: GitHubDeployments,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    evidence.evaluation(REPO, ENV, sha_of("v1"), T0)
    evidence.evaluation(REPO, ENV, sha_of("v2"), T0 + timedelta(hours=2))
    github.add(REPO, ENV, sha_of("v1"), T0 + timedelta(minutes=2), ident=11)
    github.add(REPO, ENV, sha_of("v2"), T0 + timedelta(hours=2, minutes=2), ident=12)
    github.add(REPO, ENV, sha_of("v1"), T0 + timedelta(hours=3), ident=13)  # rolled back, same day
    github.add(REPO, ENV, sha_of("v1"), T0 + timedelta(days=3), ident=14)   # and again, days later
    code, report, _ = run(evidence.archive.root, "--source", "github", "--format", "json", capsys=capsys)
    assert isinstance(report, dict)
    assert code == 0 and report["exceptions"] == []
    # The rollback days later is reported in a class of its own, not hidden as "no exception".
    assert [(f["kind"], f["platform_id"]) for f in report["classes"]] == [("redeploy", "14")]


def test_a_deployment_of_a_denied_commit_is_unauthorized(evidence: Evidence, github: GitHubDeployments,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    evidence.evaluation(REPO, ENV, sha_of("ok"), T0 - timedelta(hours=1), outcome=None)
    evidence.evaluation(REPO, ENV, sha_of("bad"), T0, verdict="deny", outcome=None)
    evidence.evaluation(REPO, ENV, sha_of("sim"), T0, simulated=True, outcome=None)
    github.add(REPO, ENV, sha_of("bad"), T0 + timedelta(minutes=2), ident=21)
    github.add(REPO, ENV, sha_of("sim"), T0 + timedelta(minutes=3), ident=22)
    code, report, _ = run(evidence.archive.root, "--source", "github", "--format", "json", capsys=capsys)
    assert isinstance(report, dict)
    assert code == 1
    assert [(f["kind"], f["platform_id"]) for f in report["exceptions"]] == [
        ("unauthorized", "21"), ("unauthorized", "22")]
    assert "denied" in report["exceptions"][0]["detail"]


def test_the_classes_advisory_emergency_before_adoption_and_denied_since(
        evidence: Evidence, github: GitHubDeployments, capsys: pytest.CaptureFixture[str]) -> None:
    evidence.evaluation(REPO, ENV, sha_of("adv"), T0, verdict="deny", advisory=True)
    evidence.evaluation(REPO, ENV, sha_of("sos"), T0 + timedelta(hours=1), emergency=True)
    evidence.evaluation(REPO, ENV, sha_of("old"), T0 + timedelta(hours=2))
    evidence.evaluation(REPO, ENV, sha_of("old"), T0 + timedelta(hours=3), verdict="deny", outcome=None)  # a freeze
    github.add(REPO, ENV, sha_of("pre"), T0 - timedelta(hours=5), ident=1)  # before the chain's first record
    github.add(REPO, ENV, sha_of("adv"), T0 + timedelta(minutes=1), ident=2)
    github.add(REPO, ENV, sha_of("sos"), T0 + timedelta(hours=1, minutes=1), ident=3)
    github.add(REPO, ENV, sha_of("old"), T0 + timedelta(hours=4), ident=4)
    code, report, _ = run(evidence.archive.root, "--source", "github", "--format", "json", capsys=capsys)
    assert isinstance(report, dict)
    assert code == 0 and report["exceptions"] == []
    assert [(f["kind"], f["platform_id"]) for f in report["classes"]] == [
        ("redeploy", "4"), ("advisory-ship", "2"), ("emergency-awaiting-approval", "3"), ("before-adoption", "1")]
    assert "denied since" in report["classes"][0]["detail"]


def test_an_emergency_is_released_plainly_only_by_an_approval_that_counts(
        evidence: Evidence, github: GitHubDeployments, capsys: pytest.CaptureFixture[str]) -> None:
    from policyengine.evidence.format.records import EMERGENCY_APPROVAL

    def approve(rec: dict[str, Any], by: str, verified: bool) -> None:
        evidence.archive.append_record(EMERGENCY_APPROVAL, rec, {
            "approval": "approved", "by": by, "by_verified": verified, "by_source": "GITHUB_ACTOR" if verified
            else "--by", "due_at": iso(T0 + timedelta(hours=4))},
            signing_key=evidence.key, created_at=T0 + timedelta(hours=1))

    ok = evidence.evaluation(REPO, ENV, sha_of("sos"), T0, emergency=True)
    approve(ok, "cto", True)
    self_asserted = evidence.evaluation(REPO, ENV, sha_of("sos2"), T0, emergency=True)
    approve(self_asserted, "cto", False)
    by_declarer = evidence.evaluation(REPO, ENV, sha_of("sos3"), T0, emergency=True)
    approve(by_declarer, "erin", True)
    for i, name in enumerate(("sos", "sos2", "sos3")):
        github.add(REPO, ENV, sha_of(name), T0 + timedelta(minutes=1 + i * 30), ident=3 + i)
    code, report, _ = run(evidence.archive.root, "--source", "github", "--format", "json", capsys=capsys)
    assert isinstance(report, dict)
    assert code == 0 and report["matched"] == 1
    assert [(f["kind"], f["platform_id"]) for f in report["classes"]] == [
        ("emergency-awaiting-approval", "4"), ("emergency-awaiting-approval", "5")]


def test_phantom_an_allowed_deployed_bundle_the_platform_never_deployed(
        evidence: Evidence, github: GitHubDeployments, capsys: pytest.CaptureFixture[str]) -> None:
    ghost = evidence.evaluation(REPO, ENV, sha_of("ghost"), T0)
    evidence.evaluation(REPO, ENV, sha_of("never"), T0, outcome="not_deployed")
    evidence.evaluation(REPO, ENV, sha_of("failed"), T0, outcome="failed")
    evidence.evaluation(REPO, ENV, sha_of("real"), T0 + timedelta(hours=1))
    github.add(REPO, ENV, sha_of("real"), T0 + timedelta(hours=1, minutes=1), ident=5)
    code, report, _ = run(evidence.archive.root, "--source", "github", "--format", "json", capsys=capsys)
    assert isinstance(report, dict)
    assert [(f["kind"], f["bundle_id"]) for f in report["exceptions"]] == [("phantom", ghost["id"])]
    assert code == 1


def test_deployments_that_never_reached_the_environment_are_not_deployments(
        evidence: Evidence, github: GitHubDeployments, capsys: pytest.CaptureFixture[str]) -> None:
    evidence.evaluation(REPO, ENV, sha_of("a"), T0)
    github.add(REPO, ENV, sha_of("a"), T0 + timedelta(minutes=1), ident=1)
    github.add(REPO, ENV, sha_of("x"), T0 + timedelta(hours=1), ident=2, state="failure")
    github.add(REPO, ENV, sha_of("y"), T0 + timedelta(hours=2), ident=3, state=None)   # zero statuses
    github.add(REPO, ENV, sha_of("z"), T0 + timedelta(hours=3), ident=4, state="queued")
    github.add(REPO, ENV, sha_of("w"), T0 + timedelta(hours=4), ident=5, state="inactive")  # superseded: it ran
    code, report, _ = run(evidence.archive.root, "--source", "github", "--format", "json", capsys=capsys)
    assert isinstance(report, dict)
    assert [(f["kind"], f["platform_id"]) for f in report["exceptions"]] == [("unauthorized", "5")]
    assert report["not_deployed_on_platform"] == 3 and code == 1


def test_environment_map_and_the_table(evidence: Evidence, github: GitHubDeployments,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    evidence.evaluation(REPO, ENV, sha_of("a"), T0)
    github.add(REPO, "prod", sha_of("a"), T0 + timedelta(minutes=1), ident=1)
    github.add(REPO, "prod", sha_of("b"), T0 + timedelta(minutes=30), ident=2)
    code, report, _ = run(evidence.archive.root, "--source", "github", "--environment-map", "prod=production",
                          capsys=capsys)
    assert code == 1 and isinstance(report, str)
    assert "unauthorized" in report and "github:2" in report and sha_of("b") in report
    assert "platform's own audit trail" in report and TOKEN not in report


def test_github_pages_are_followed_and_the_chains_batched(evidence: Evidence, github: GitHubDeployments,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    for env in ("production", "staging"):
        for i in range(250):
            when = T0 + timedelta(minutes=30 * i)
            evidence.archive  # noqa: B018 - keep the archive
            github.add(REPO, env, sha_of(f"{env}{i}"), when, ident=1000 * len(env) + i)
        evidence.evaluation(REPO, env, sha_of(f"{env}0"), T0 - timedelta(minutes=1))
    code, report, _ = run(evidence.archive.root, "--source", "github", "--format", "json", capsys=capsys)
    assert isinstance(report, dict)
    assert report["platform_deployments"] == 500 and report["counts"]["unauthorized"] == 498
    assert github.api.count("/graphql") == 3 == report["requests"]  # both chains in each request


def test_a_page_cap_reached_is_an_error_never_fewer_deployments(
        evidence: Evidence, github: GitHubDeployments, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    evidence.evaluation(REPO, ENV, sha_of("a"), T0 - timedelta(days=1))
    for i in range(150):
        github.add(REPO, ENV, sha_of(f"{i}"), T0 + timedelta(minutes=i), ident=i + 1)
    monkeypatch.setenv("POLICYENGINE_HTTP_MAX_PAGES", "1")
    code, _, err = run(evidence.archive.root, "--source", "github", "--format", "json", capsys=capsys)
    assert code == 3 and "more than 1 pages" in err and "partial" in err


@pytest.mark.parametrize("answer", [
    {"errors": [{"message": "Resource not accessible by integration"}]},
    {"data": {"c0": {"deployments": {"nodes": "no"}}}},
    {"data": {"c0": None}},
    {"data": {"c0": {"deployments": {"pageInfo": {"hasNextPage": False}, "nodes": [{"databaseId": 1}]}}}},
    {"data": {"c0": {"deployments": {"pageInfo": {"hasNextPage": True, "endCursor": None}, "nodes": []}}}},
    [1, 2],
])
def test_a_malformed_or_refused_github_answer_is_exit_3(evidence: Evidence, github: GitHubDeployments,
                                                        capsys: pytest.CaptureFixture[str], answer: Any) -> None:
    evidence.evaluation(REPO, ENV, sha_of("a"), T0)
    github.api.fail("/graphql", Reply(200, answer))
    code, _, err = run(evidence.archive.root, "--source", "github", "--repository", REPO, "--environment", ENV,
                       capsys=capsys)
    assert code == 3 and err.startswith("error:") and "Traceback" not in err and TOKEN not in err


def test_a_graphql_url_on_another_host_never_gets_the_token(evidence: Evidence, github: GitHubDeployments,
                                                            capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    evidence.evaluation(REPO, ENV, sha_of("a"), T0)
    monkeypatch.setenv("GITHUB_GRAPHQL_URL", "http://127.0.0.2:9/graphql")
    code, _, err = run(evidence.archive.root, "--source", "github", capsys=capsys)
    assert code == 2 and "GITHUB_GRAPHQL_URL" in err and "origin" in err
    assert github.api.count() == 0


def test_github_corpus_deployments_through_the_graphql_stand_in(
        corpus: Path, evidence: Evidence, github: GitHubDeployments, capsys: pytest.CaptureFixture[str]) -> None:
    """Real REST deployments (three API ages) as GraphQL nodes: ref is a branch or a SHA (the sha
    decides), payload a string or an object, optional fields absent, zero or several statuses."""
    base = corpus / "github" / "rest-responses"
    deps = json.loads((base / "deployments" / "pygithub__Repository.testGetDeployments__0.json").read_text())
    deps += json.loads((base / "deployments" / "github3py__Repository_deployments__1.json").read_text())
    statuses = json.loads((base / "deployment-statuses" / "github3py__Deployment_statuses__2.json").read_text())
    for d in deps:
        d.setdefault("original_environment", d["environment"])
        # Lists are newest first: the latest status decides (github3py: several successes years apart).
        mine = statuses if f"/deployments/{d['id']}/" in statuses[0]["url"] else []
        github.add_node(REPO, d["environment"], graphql_node(d, mine or [
            {"state": "success", "created_at": d["created_at"], "log_url": ""}]))
        evidence.evaluation(REPO, d["environment"], "0" * 40, datetime(2010, 1, 1, tzinfo=timezone.utc),
                            outcome=None)
    from policyengine.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["audit", "reconcile", "--archive", str(evidence.archive.root), "--since", "2010-01-01", "--until",
              "2030-01-01", "--now", "2030-01-01T00:00:00Z", "--source", "github", "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert exc.value.code == 1
    found = {f["platform_id"]: f for f in report["exceptions"] if f["kind"] == "unauthorized"}
    assert set(found) == {str(d["id"]) for d in deps}
    for d in deps:
        assert found[str(d["id"])]["commit"] == d["sha"] and found[str(d["id"])]["creator"] == d["creator"]["login"]


# -- GitLab ----------------------------------------------------------------------------------------


@pytest.fixture
def gitlab(monkeypatch: pytest.MonkeyPatch) -> Any:
    with FakeAPI("/api/v4") as api:
        gl = GitLabDeployments(api)
        monkeypatch.setenv("GITLAB_TOKEN", "glpat-" + "G" * 20)
        monkeypatch.setenv("CI_API_V4_URL", api.url)
        monkeypatch.setenv("POLICYENGINE_HTTP_RETRIES", "0")
        yield gl


def test_gitlab_unauthorized_allowed_rerun_and_status(evidence: Evidence, gitlab: GitLabDeployments,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    evidence.evaluation(REPO, ENV, sha_of("a"), T0)
    gitlab.add(REPO, gitlab_deployment(1, ENV, sha_of("a"), T0 + timedelta(minutes=1)))
    gitlab.add(REPO, gitlab_deployment(2, ENV, sha_of("a"), T0 + timedelta(minutes=3)))       # a re-run
    gitlab.add(REPO, gitlab_deployment(3, ENV, sha_of("b"), T0 + timedelta(hours=1), user="mallory"))
    gitlab.add(REPO, gitlab_deployment(4, ENV, sha_of("c"), T0 + timedelta(hours=2), status="created"))
    gitlab.add(REPO, gitlab_deployment(5, "staging", sha_of("d"), T0 + timedelta(hours=2)))
    gitlab.add(REPO, gitlab_deployment(6, ENV, sha_of("e"), T0 + timedelta(hours=3), deployable=False))
    code, report, _ = run(evidence.archive.root, "--source", "gitlab", "--format", "json", capsys=capsys)
    assert isinstance(report, dict)
    assert [(f["kind"], f["platform_id"], f["creator"]) for f in report["exceptions"]] == [
        ("unauthorized", "3", "mallory"), ("unauthorized", "6", "root")]
    assert report["platform_deployments"] == 3 and code == 1
    req = gitlab.api.requests[0]
    assert req.query["environment"] == [ENV] and req.query["status"] == ["success"]
    assert req.headers["PRIVATE-TOKEN"].startswith("glpat-")


def test_gitlab_corpus_deployment_lists(corpus: Path, evidence: Evidence, gitlab: GitLabDeployments,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The docs list (status created while deployable.status is success: not deployed) and the 8.x
    fixture (no status, no updated_at: chosen by the status filter)."""
    base = corpus / "gitlab" / "api-responses"
    docs = json.loads((base / "docs__deployments_list.json").read_text())
    old = json.loads((base / "narkoz-gitlab__deployments.json").read_text())
    for item in docs + old:
        gitlab.items.setdefault("x", [])
        gitlab.add(REPO, item)
    evidence.evaluation(REPO, "production", "0" * 40, datetime(2010, 1, 1, tzinfo=timezone.utc), outcome=None)
    from policyengine.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["audit", "reconcile", "--archive", str(evidence.archive.root), "--since", "2010-01-01", "--until",
              "2030-01-01", "--now", "2030-01-01T00:00:00Z", "--source", "gitlab", "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    want = {str(i["id"]) for i in docs + old if i.get("status", "success") == "success"
            and i["environment"]["name"] == "production"}
    assert {f["platform_id"] for f in report["exceptions"]} == want and want
    assert exc.value.code == 1


def test_gitlab_refused_is_exit_3(evidence: Evidence, gitlab: GitLabDeployments,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    evidence.evaluation(REPO, ENV, sha_of("a"), T0)
    gitlab.add(REPO, gitlab_deployment(1, ENV, sha_of("a"), T0))
    gitlab.api.always = Reply(403, {"message": "403 Forbidden"})
    code, _, err = run(evidence.archive.root, "--source", "gitlab", capsys=capsys)
    assert code == 3 and "read_api" in err and "glpat-" not in err


# -- Kubernetes and a deploy log --------------------------------------------------------------------


def pods(*containers: tuple[str, str, str], kind: str = "List") -> dict[str, Any]:
    items = []
    for ns, name, image_id in containers:
        items.append({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
                      "status": {"containerStatuses": [{"name": "app", "image": "registry.test/app:1",
                                                        "imageID": image_id,
                                                        "state": {"running": {"startedAt": "2026-03-20T10:00:00Z"}}}]}})
    return {"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": ""}, "items": items}


def test_an_image_running_with_no_bundle_is_drift(evidence: Evidence, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    evidence.evaluation(REPO, ENV, sha_of("a"), T0, subjects=[DIGEST_A])
    evidence.evaluation(REPO, ENV, sha_of("d"), T0, verdict="deny", subjects=[DIGEST_B], outcome=None)
    f = tmp_path / "pods.json"
    f.write_text(json.dumps(pods(("payments", "ok", f"docker-pullable://registry.test/app@{DIGEST_A}"),
                                 ("payments", "rogue", f"registry.test/app@{DIGEST_B}"),
                                 ("kube-system", "dns", "registry.k8s.io/coredns@sha256:" + "c" * 64),
                                 ("other", "x", "registry.test/x@sha256:" + "d" * 64))))
    code, report, _ = run(evidence.archive.root, "--source", f"kubectl:{f}", "--format", "json", capsys=capsys)
    assert isinstance(report, dict)
    assert [(x["kind"], x["platform_id"]) for x in report["exceptions"]] == [
        ("drift", "other/x/app"), ("drift", "payments/rogue/app")]
    assert code == 1
    code, report, _ = run(evidence.archive.root, "--source", f"kubectl:{f}", "--namespace", "payments",
                          "--format", "json", capsys=capsys)
    assert isinstance(report, dict)
    assert [x["platform_id"] for x in report["exceptions"]] == ["payments/rogue/app"]
    code, report, _ = run(evidence.archive.root, "--source", f"kubectl:{f}", "--include-kube-namespaces",
                          "--format", "json", capsys=capsys)
    assert isinstance(report, dict)
    assert "kube-system/dns/app" in [x["platform_id"] for x in report["exceptions"]]


def test_kubectl_corpus_pods(corpus: Path, evidence: Evidence, capsys: pytest.CaptureFixture[str]) -> None:
    """A List (Docker runtime, docker-pullable://), bare Pods (containerd, no scheme), init
    containers (a finished one runs nothing; a native sidecar keeps running)."""
    base = corpus / "kubernetes" / "pods"
    names = ("gpdgpa-kuard__temp.sh.json", "k9s__p1.json", "k9s__po_init.json", "k9s__po_sidecar.json")
    evidence.evaluation(REPO, ENV, sha_of("a"), T0, subjects=[DIGEST_A])
    expected: dict[str, set[str]] = {}
    for name in names:
        doc = json.loads((base / name).read_text())
        items = doc["items"] if doc.get("kind") == "List" else [doc]
        digests = set()
        for pod in items:
            st = pod["status"]
            for c in st.get("containerStatuses", []):
                digests.add("sha256:" + c["imageID"].rsplit("@sha256:", 1)[1])
            for c in st.get("initContainerStatuses", []):
                if "running" in c.get("state", {}):
                    digests.add("sha256:" + c["imageID"].rsplit("@sha256:", 1)[1])
        expected[name] = digests
        code, report, _ = run(evidence.archive.root, "--source", f"kubectl:{base / name}", "--format", "json",
                              capsys=capsys)
        assert isinstance(report, dict)
        assert {x["subject"] for x in report["exceptions"] if x["kind"] == "drift"} == digests, name
        assert code == (1 if digests else 0)
    # Allowed by a bundle naming the digest: no drift.
    some = sorted(expected["k9s__po_sidecar.json"])
    evidence.evaluation(REPO, ENV, sha_of("mesh"), T0, subjects=some)
    code, report, _ = run(evidence.archive.root, "--source", f"kubectl:{base / 'k9s__po_sidecar.json'}",
                          "--format", "json", capsys=capsys)
    assert code == 0, report


@pytest.mark.parametrize("content,message", [
    ("not json", "not JSON"),
    ('{"kind": "Deployment"}', "not a pod listing"),
    ('{"kind": "List", "items": [{"metadata": {}}]}', "metadata.name"),
    ('{"kind": "Pod", "metadata": {"name": "p"}, "status": {"containerStatuses": [{"name": "a", '
     '"imageID": "registry/app:latest"}]}}', "no sha256 digest"),
])
def test_a_bad_pods_file_is_exit_3(evidence: Evidence, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   content: str, message: str) -> None:
    evidence.evaluation(REPO, ENV, sha_of("a"), T0)
    f = tmp_path / "pods.json"
    f.write_text(content)
    code, _, err = run(evidence.archive.root, "--source", f"kubectl:{f}", capsys=capsys)
    assert code == 3 and message in err and "Traceback" not in err


def test_a_deploy_log_by_commit_and_by_subject(evidence: Evidence, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    evidence.evaluation(REPO, ENV, sha_of("a"), T0, subjects=[DIGEST_A])
    log = tmp_path / "deploys.jsonl"
    lines = [
        {"time": iso(T0 + timedelta(minutes=2)), "commit": sha_of("a"), "environment": "prod", "id": "argo-1",
         "url": "https://argo.test/1", "repository": REPO},
        {"time": iso(T0 + timedelta(minutes=40)), "subject": DIGEST_A, "environment": "prod", "id": "argo-2",
         "url": "https://argo.test/2"},
        {"time": "2026-03-02T10:30:00+01:00", "subject": DIGEST_B, "environment": "prod", "id": 3,
         "url": "https://argo.test/3", "creator": "spinnaker"},
    ]
    log.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    code, report, _ = run(evidence.archive.root, "--source", f"log:{log}", "--environment-map", "prod=production",
                          "--format", "json", capsys=capsys)
    assert isinstance(report, dict)
    assert [(f["kind"], f["platform_id"], f["creator"], f["time"]) for f in report["exceptions"]] == [
        ("unauthorized", "3", "spinnaker", "2026-03-02T09:30:00Z")]
    assert code == 1 and report["matched"] == 2


@pytest.mark.parametrize("line,message", [
    ('{"time": "2026-03-02T10:00:00Z", "environment": "p", "id": 1}', "neither commit nor subject"),
    ('{"time": "2026-03-02T10:00:00", "commit": "' + "a" * 40 + '", "environment": "p", "id": 1}', "time zone"),
    ('{"time": "2026-03-02T10:00:00Z", "commit": "--upload-pack=x", "environment": "p", "id": 1}', "not a 40-hex"),
    ('{"time": "2026-03-02T10:00:00Z", "subject": "sha256:zz", "environment": "p", "id": 1}', "not sha256:HEX"),
    ('[1]', "not an object"),
])
def test_a_bad_deploy_log_line_names_file_and_line(evidence: Evidence, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str], line: str,
                                                   message: str) -> None:
    evidence.evaluation(REPO, ENV, sha_of("a"), T0)
    log = tmp_path / "d.jsonl"
    log.write_text('{"time": "2026-03-02T09:00:00Z", "commit": "' + "b" * 40 + '", "environment": "p", "id": 0}\n'
                   + line + "\n")
    code, _, err = run(evidence.archive.root, "--source", f"log:{log}", capsys=capsys)
    assert code == 3 and f"{log}:2" in err and message in err


# -- missing chains ------------------------------------------------------------------------------


def test_a_deleted_chain_is_a_missing_chain(evidence: Evidence, github: GitHubDeployments,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    evidence.evaluation(REPO, ENV, sha_of("a"), T0)
    evidence.evaluation("acme/web", ENV, sha_of("w"), T0)
    github.add(REPO, ENV, sha_of("a"), T0 + timedelta(minutes=1), ident=1)
    github.add("acme/web", ENV, sha_of("w"), T0 + timedelta(minutes=1), ident=2)
    catalogue = reconcile_module.known_chains(evidence.archive)
    assert catalogue == {(REPO, ENV): 2, ("acme/web", ENV): 2}
    # Delete the chain acme/web: its index lines and its bundles.
    index = evidence.archive.index_path
    kept = []
    for line in index.read_bytes().splitlines(keepends=True):
        record = json.loads(line)
        if record["repository"] == "acme/web":
            os.remove(evidence.archive.root / record["path"])
        else:
            kept.append(line)
    index.write_bytes(b"".join(kept))
    # The store's own catalogue still knows the chain: no stand-in needed.
    assert reconcile_module.known_chains(evidence.archive) == catalogue
    code, report, _ = run(evidence.archive.root, "--source", "github", "--format", "json", capsys=capsys)
    assert isinstance(report, dict)
    assert [(f["kind"], f["repository"]) for f in report["exceptions"]] == [("missing-chain", "acme/web")]
    assert report["exceptions"][0]["also"] == ["2"] and code == 1


def test_a_chain_with_records_missing_from_its_middle_is_shorter(evidence: Evidence,
                                                                 capsys: pytest.CaptureFixture[str],
                                                                 tmp_path: Path) -> None:
    for i in range(3):
        evidence.evaluation(REPO, ENV, sha_of(f"{i}"), T0 + timedelta(hours=i), outcome=None)
    index = evidence.archive.index_path
    lines = index.read_bytes().splitlines(keepends=True)
    index.write_bytes(lines[0] + lines[2])
    log = tmp_path / "empty.jsonl"
    log.write_text("")
    code, report, _ = run(evidence.archive.root, "--source", f"log:{log}", "--format", "json", capsys=capsys)
    assert isinstance(report, dict)
    assert [(f["kind"], f["detail"]) for f in report["exceptions"]] == [
        ("missing-chain", "the catalogue knows this chain; it holds 2 of its 3 records")]


def test_ungated_repository(evidence: Evidence, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evidence.evaluation(REPO, ENV, sha_of("a"), T0, outcome=None)
    log = tmp_path / "empty.jsonl"
    log.write_text("")
    code, report, _ = run(evidence.archive.root, "--source", f"log:{log}", "--environment", ENV,
                          "--org-repository", REPO, "--org-repository", "acme/shadow", "--format", "json",
                          capsys=capsys)
    assert isinstance(report, dict)
    assert [(f["kind"], f["repository"]) for f in report["exceptions"]] == [("ungated-repository", "acme/shadow")]
    assert code == 1


def test_bad_usage(evidence: Evidence, capsys: pytest.CaptureFixture[str]) -> None:
    evidence.evaluation(REPO, ENV, sha_of("a"), T0)
    assert run(evidence.archive.root, "--source", "jenkins", capsys=capsys)[0] == 2
    assert run(evidence.archive.root, "--source", "log:x", "--environment-map", "prod", capsys=capsys)[0] == 2
    code, _, err = run(evidence.archive.root, "--source", "github", capsys=capsys)
    assert code == 2 and "GITHUB_TOKEN is not set" in err


# -- where the results go: the export and the summary -------------------------------------------------


def deploy_log(tmp_path: Path) -> Path:
    log = tmp_path / "deploys.jsonl"
    log.write_text("\n".join(json.dumps(x) for x in [
        {"time": iso(T0 + timedelta(minutes=2)), "commit": sha_of("a"), "environment": ENV, "id": "d-1",
         "url": "https://deploy.test/1", "repository": REPO},
        {"time": iso(T0 + timedelta(hours=2)), "commit": sha_of("bypass"), "environment": ENV, "id": "d-2",
         "url": "https://deploy.test/<2>", "repository": REPO, "creator": "mallory"},
    ]) + "\n")
    return log


def test_the_export_carries_the_reconciliation_and_still_verifies(
        evidence: Evidence, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import csv
    import io
    import zipfile

    from policyengine.cli import main

    evidence.evaluation(REPO, ENV, sha_of("a"), T0)
    out = tmp_path / "export.zip"
    with pytest.raises(SystemExit) as exc:
        main(["audit", "export", "--archive", str(evidence.archive.root), *PERIOD, "-o", str(out),
              "--reconcile-with", f"log:{deploy_log(tmp_path)}"])
    printed = capsys.readouterr().out
    assert exc.value.code == 0 and "reconciliation: 1 exception(s), unauthorized 1" in printed
    with zipfile.ZipFile(out) as zf:
        rows = list(csv.DictReader(io.StringIO(zf.read("reconciliation.csv").decode())))
        doc = json.loads(zf.read("export.json"))
        index = zf.read("index.html").decode()
    assert [(r["finding"], r["kind"], r["platform_id"], r["creator"]) for r in rows] == [
        ("exception", "unauthorized", "d-2", "mallory")]
    assert doc["reconciliation"]["counts"]["unauthorized"] == 1 and "reconciliation.csv" in doc["files"]
    assert "Reconciliation with the platform" in index and "https://deploy.test/&lt;2&gt;" in index
    with pytest.raises(SystemExit) as exc:
        main(["evidence", "verify", "--archive", str(out)])
    assert exc.value.code == 0, capsys.readouterr()


def test_the_export_stops_when_a_source_cannot_be_read(evidence: Evidence, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from policyengine.cli import main

    evidence.evaluation(REPO, ENV, sha_of("a"), T0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    out = tmp_path / "export.zip"
    with pytest.raises(SystemExit) as exc:
        main(["audit", "export", "--archive", str(evidence.archive.root), *PERIOD, "-o", str(out),
              "--reconcile-with", f"log:{bad}"])
    assert exc.value.code == 3 and not out.exists() and f"{bad}:1" in capsys.readouterr().err


def test_the_summary_counts_each_kind_of_exception(evidence: Evidence, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from policyengine.cli import main

    evidence.evaluation(REPO, ENV, sha_of("a"), T0)
    log = deploy_log(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["audit", "summary", "--archive", str(evidence.archive.root), *PERIOD, "--format", "json",
              "--reconcile-with", f"log:{log}"])
    doc = json.loads(capsys.readouterr().out)
    assert exc.value.code == 1
    assert doc["reconciliation"]["counts"]["unauthorized"] == 1 and doc["reconciliation"]["exceptions"] == 1
    for fmt, marker in (("md", "| unauthorized | 1 |"), ("html", "Reconciliation with the platform")):
        with pytest.raises(SystemExit):
            main(["audit", "summary", "--archive", str(evidence.archive.root), *PERIOD, "--format", fmt,
                  "--reconcile-with", f"log:{log}"])
        assert marker in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["audit", "summary", "--archive", str(evidence.archive.root), *PERIOD, "--format", "json"])
    assert exc.value.code == 0 and "reconciliation" not in json.loads(capsys.readouterr().out)


# -- --record: the client's scheduled job keeps a signed record -------------------------------------


def test_record_appends_a_signed_reconciliation_record_that_verifies(
        evidence: Evidence, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import zipfile

    from cryptography.hazmat.primitives import serialization

    from policyengine.cli import main

    evidence.evaluation(REPO, ENV, sha_of("a"), T0)
    pem = tmp_path / "signing.pem"
    pem.write_bytes(evidence.key.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    log = deploy_log(tmp_path)
    code, _, err = run(evidence.archive.root, "--source", f"log:{log}", "--record", capsys=capsys)
    assert code == 2 and "--record needs --signing-key" in err
    code, report, err = run(evidence.archive.root, "--source", f"log:{log}", "--record", "--signing-key", str(pem),
                            "--by", "auditor", "--format", "json", capsys=capsys)
    assert code == 1 and "recorded reconciliation" in err
    records, bad = evidence.archive.read_index()
    assert not bad
    rec = records[-1]
    assert rec["kind"] == "reconciliation" and rec["decision"] == "exceptions" and rec["signed_by"]
    with evidence.archive.open_bundle(rec) as fh, zipfile.ZipFile(fh) as zf:
        doc = json.loads(zf.read("record.json"))
    assert doc["summary"]["counts"]["unauthorized"] == 1 and doc["by"] == "auditor"
    # It names the store head it reconciled: the newest catalogue before the record was written.
    import hashlib

    names = sorted(p.name for p in (evidence.archive.root / "catalogue").iterdir())
    assert doc["summary"]["store_head"] == hashlib.sha256(
        (evidence.archive.root / "catalogue" / names[-2]).read_bytes()).hexdigest()
    assert doc["summary"]["findings"][0]["platform_id"] == "d-2"
    assert isinstance(report, dict) and doc["summary"]["period"] == report["period"]
    with pytest.raises(SystemExit) as exc:
        main(["evidence", "verify", "--archive", str(evidence.archive.root), "--all"])
    verified = capsys.readouterr()
    assert exc.value.code == 0, verified
    # The record is not a deployment and not an evaluation: the next reconciliation is unchanged.
    code, again, _ = run(evidence.archive.root, "--source", f"log:{log}", "--format", "json", capsys=capsys)
    assert isinstance(again, dict) and again["counts"] == report["counts"]


def test_org_lists_the_repositories_with_the_environment(evidence: Evidence, github: GitHubDeployments,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from tests.fake_servers import Request

    evidence.evaluation(REPO, ENV, sha_of("a"), T0)
    github.add(REPO, ENV, sha_of("a"), T0 + timedelta(minutes=1), ident=1)
    github.add("acme/shadow", ENV, sha_of("s"), T0 + timedelta(minutes=5), ident=2, creator="mallory")
    serve_deployments = github.serve
    repos = [{"nameWithOwner": REPO, "isArchived": False, "environments": {"totalCount": 1, "nodes": [{"name": ENV}]}},
             {"nameWithOwner": "acme/shadow", "isArchived": False,
              "environments": {"totalCount": 2, "nodes": [{"name": "staging"}, {"name": ENV}]}},
             {"nameWithOwner": "acme/docs", "isArchived": False, "environments": {"totalCount": 0, "nodes": []}}]

    def serve(req: Request, api: FakeAPI) -> Reply:
        doc = req.json()
        if "organization(login: $org)" in doc["query"]:
            assert doc["variables"]["org"] == "acme"
            after = int(doc["variables"]["after"] or 0)
            return Reply(200, {"data": {"organization": {"repositories": {
                "pageInfo": {"hasNextPage": after + 2 < len(repos), "endCursor": str(after + 2)},
                "nodes": repos[after:after + 2]}}}})
        return serve_deployments(req, api)

    github.api.handler("/graphql", serve)
    code, report, _ = run(evidence.archive.root, "--source", "github", "--org", "acme", "--environment", ENV,
                          "--format", "json", capsys=capsys)
    assert isinstance(report, dict)
    assert [(f["kind"], f["repository"], f["also"]) for f in report["exceptions"]] == [
        ("ungated-repository", "acme/shadow", ["2"])]
    assert code == 1 and report["matched"] == 1
    code, _, err = run(evidence.archive.root, "--source", "log:/dev/null", "--org", "acme", "--environment", ENV,
                       capsys=capsys)
    assert code == 2 and "--org needs a github or gitlab" in err


def test_gitlab_group_lists_the_projects_with_the_environment(evidence: Evidence, gitlab: GitLabDeployments,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    evidence.evaluation(REPO, ENV, sha_of("a"), T0)
    gitlab.add(REPO, gitlab_deployment(1, ENV, sha_of("a"), T0 + timedelta(minutes=1)))
    gitlab.add("acme/shadow", gitlab_deployment(2, ENV, sha_of("s"), T0 + timedelta(minutes=1)))
    gitlab.api.pages("/groups/acme/projects", [{"id": 1, "path_with_namespace": REPO},
                                               {"id": 2, "path_with_namespace": "acme/shadow"},
                                               {"id": 3, "path_with_namespace": "acme/docs"}])
    for pid, envs in ((1, [ENV]), (2, [ENV]), (3, [])):
        gitlab.api.json(f"/projects/{pid}/environments", [{"id": 9, "name": e} for e in envs])
    code, report, _ = run(evidence.archive.root, "--source", "gitlab", "--org", "acme", "--environment", ENV,
                          "--format", "json", capsys=capsys)
    assert isinstance(report, dict)
    assert [(f["kind"], f["repository"], f["also"]) for f in report["exceptions"]] == [
        ("ungated-repository", "acme/shadow", ["2"])]
    assert code == 1


# -- the evidence side is not taken on trust ----------------------------------------------------------


def _rewrite_index(evidence: Evidence, bundle_id: str, **fields: Any) -> None:
    index = evidence.archive.index_path
    lines = []
    for line in index.read_bytes().splitlines():
        record = json.loads(line)
        if record["id"] == bundle_id:
            record.update(fields)
        lines.append(json.dumps(record).encode())
    index.write_bytes(b"\n".join(lines) + b"\n")
    cache = evidence.archive.root / ".index.sqlite"
    if cache.exists():
        cache.unlink()


def test_an_index_line_edited_to_allow_releases_nothing(evidence: Evidence, github: GitHubDeployments,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    denied = evidence.evaluation(REPO, ENV, sha_of("bad"), T0, verdict="deny", outcome=None)
    github.add(REPO, ENV, sha_of("bad"), T0 + timedelta(minutes=2), ident=21)
    _rewrite_index(evidence, denied["id"], decision="allow")
    code, _, err = run(evidence.archive.root, "--source", "github", capsys=capsys)
    assert code == 3 and denied["id"] in err and "index line" in err


def test_with_a_public_key_every_release_must_verify(evidence: Evidence, github: GitHubDeployments,
                                                     tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cryptography.hazmat.primitives import serialization

    from tests.reconcile_world import signer

    evidence.evaluation(REPO, ENV, sha_of("a"), T0)
    github.add(REPO, ENV, sha_of("a"), T0 + timedelta(minutes=2), ident=1)
    good, other = tmp_path / "good.pub", tmp_path / "other.pub"
    for path, key in ((good, evidence.key), (other, signer())):
        path.write_bytes(key.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    code, report, _ = run(evidence.archive.root, "--source", "github", "--public-key", str(good), "--format",
                          "json", capsys=capsys)
    assert isinstance(report, dict) and code == 0 and report["signatures_checked"] is True
    code, _, err = run(evidence.archive.root, "--source", "github", "--public-key", str(other), capsys=capsys)
    assert code == 3 and "does not verify with the given public key" in err
    code, table, _ = run(evidence.archive.root, "--source", "github", capsys=capsys)
    assert code == 0 and "signatures: not checked" in str(table)


def test_github_deployments_out_of_order_are_refused(evidence: Evidence, github: GitHubDeployments,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Paging stops at the period's start because the list is newest first; an answer that is not
    could hide deployments past the point where reading stopped."""
    evidence.evaluation(REPO, ENV, sha_of("a"), T0)
    old = github.add(REPO, ENV, sha_of("a"), T0 - timedelta(days=40), ident=1)
    new = github.add(REPO, ENV, sha_of("b"), T0 + timedelta(days=1), ident=2)
    github.api.fail("/graphql", Reply(200, {"data": {"c0": {"deployments": {
        "pageInfo": {"hasNextPage": False, "endCursor": "2"}, "nodes": [old, new]}}}}))
    code, _, err = run(evidence.archive.root, "--source", "github", "--repository", REPO, "--environment", ENV,
                       capsys=capsys)
    assert code == 3 and "not newest first" in err


def test_the_table_shows_no_control_character_from_the_platform(evidence: Evidence, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    evidence.evaluation(REPO, ENV, sha_of("a"), T0, outcome=None)
    log = tmp_path / "d.jsonl"
    log.write_text(json.dumps({"time": iso(T0), "commit": sha_of("x"), "environment": ENV, "id": "1\x1b[2J",
                               "url": "https://x.test/\x1b]0;owned\x07", "creator": "eve\r\nFAKE LINE"}) + "\n")
    code, table, _ = run(evidence.archive.root, "--source", f"log:{log}", capsys=capsys)
    assert code == 1 and isinstance(table, str)
    assert "\x1b" not in table and "\x07" not in table and "\r" not in table and "\nFAKE LINE" not in table


def test_the_run_deadline_bounds_the_platform_requests(evidence: Evidence, github: GitHubDeployments,
                                                       capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    evidence.evaluation(REPO, ENV, sha_of("a"), T0)
    github.add(REPO, ENV, sha_of("a"), T0 + timedelta(minutes=2), ident=1)
    github.api.latency = 2.0
    monkeypatch.setenv("POLICYENGINE_RUN_DEADLINE", "1")
    code, _, err = run(evidence.archive.root, "--source", "github", capsys=capsys)
    assert code == 3 and "run deadline" in err


def test_containers_without_a_digest_yet_are_counted_not_judged(evidence: Evidence, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    evidence.evaluation(REPO, ENV, sha_of("a"), T0, subjects=[DIGEST_A])
    f = tmp_path / "pods.json"
    f.write_text(json.dumps(pods(("payments", "ok", f"registry.test/app@{DIGEST_A}"), ("payments", "pulling", ""))))
    code, report, _ = run(evidence.archive.root, "--source", f"kubectl:{f}", "--format", "json", capsys=capsys)
    assert isinstance(report, dict)
    assert code == 0 and report["running_without_digest"] == 1 and report["running_artifacts"] == 1


def test_a_logged_deploy_of_a_repository_without_any_chain_is_unauthorized(
        evidence: Evidence, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    evidence.evaluation(REPO, ENV, sha_of("a"), T0, outcome=None)
    log = tmp_path / "d.jsonl"
    log.write_text("\n".join(json.dumps(x) for x in [
        {"time": iso(T0), "commit": sha_of("s"), "environment": ENV, "id": "1", "repository": "acme/shadow"},
        {"time": iso(T0), "commit": sha_of("t"), "environment": "staging", "id": "2", "repository": "acme/shadow"},
        {"time": iso(T0), "commit": sha_of("u"), "environment": "staging", "id": "3"},
    ]) + "\n")
    code, report, _ = run(evidence.archive.root, "--source", f"log:{log}", "--format", "json", capsys=capsys)
    assert isinstance(report, dict)
    assert sorted(f["platform_id"] for f in report["exceptions"]) == ["1", "2", "3"] and code == 1
    code, report, _ = run(evidence.archive.root, "--source", f"log:{log}", "--environment", ENV, "--format", "json",
                          capsys=capsys)
    assert isinstance(report, dict)
    assert [f["platform_id"] for f in report["exceptions"]] == ["1"]
    code, report, _ = run(evidence.archive.root, "--source", f"log:{log}", "--repository", REPO, "--format", "json",
                          capsys=capsys)
    assert isinstance(report, dict)
    assert [f["platform_id"] for f in report["exceptions"]] == ["3"]


def test_phantom_and_rerun_on_gitlab(evidence: Evidence, gitlab: GitLabDeployments,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    ghost = evidence.evaluation(REPO, ENV, sha_of("ghost"), T0)
    evidence.evaluation(REPO, ENV, sha_of("real"), T0 + timedelta(hours=1), pipeline="p-9", outcome=None)
    evidence.evaluation(REPO, ENV, sha_of("real"), T0 + timedelta(hours=1, minutes=2), pipeline="p-9")
    gitlab.add(REPO, gitlab_deployment(7, ENV, sha_of("real"), T0 + timedelta(hours=1, minutes=1)))
    gitlab.add(REPO, gitlab_deployment(8, ENV, sha_of("real"), T0 + timedelta(hours=1, minutes=4)))
    code, report, _ = run(evidence.archive.root, "--source", "gitlab", "--format", "json", capsys=capsys)
    assert isinstance(report, dict)
    assert [(f["kind"], f["bundle_id"]) for f in report["exceptions"]] == [("phantom", ghost["id"])]
    assert report["platform_deployments"] == 1 and report["matched"] == 1 and code == 1


def test_phantom_and_classes_from_a_deploy_log(evidence: Evidence, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    ghost = evidence.evaluation(REPO, ENV, sha_of("ghost"), T0, subjects=[DIGEST_B])
    evidence.evaluation(REPO, ENV, sha_of("adv"), T0 + timedelta(hours=1), verdict="deny", advisory=True,
                        subjects=[DIGEST_A], outcome=None)
    log = tmp_path / "d.jsonl"
    log.write_text(json.dumps({"time": iso(T0 + timedelta(hours=1, minutes=3)), "subject": DIGEST_A,
                               "environment": ENV, "id": "argo-7", "url": "https://argo.test/7"}) + "\n")
    code, report, _ = run(evidence.archive.root, "--source", f"log:{log}", "--format", "json", capsys=capsys)
    assert isinstance(report, dict)
    assert [(f["kind"], f["bundle_id"]) for f in report["exceptions"]] == [("phantom", ghost["id"])]
    assert [(f["kind"], f["platform_id"], f["repository"]) for f in report["classes"]] == [
        ("advisory-ship", "argo-7", REPO)]
    assert code == 1
