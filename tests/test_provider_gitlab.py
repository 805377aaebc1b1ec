"""The GitLab provider against a local fake API v4: merge requests, approvals, jobs, ranges, tokens."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fake_servers import (
    FakeAPI,
    GitLabWorld,
    Reply,
    StaticHistory,
    gitlab_env,
    schema_errors,
    sha_of,
)
from test_provider_github import Run, run_check

from policyengine.errors import UsageError
from policyengine.providers import http
from policyengine.providers.gitlab import gather_gitlab, map_job, pick_merge_request

HEAD = sha_of("mr7-head")
FIRST = sha_of("mr7-first")
SQUASH = sha_of("mr7-squash")
PREV = sha_of("gl-previous")
P = "/projects/278964"


@pytest.fixture(autouse=True)
def _no_real_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "SLEEP", lambda s: None)


@pytest.fixture
def api() -> FakeAPI:
    with FakeAPI("/api/v4") as server:
        yield server


def approved_mr(api: FakeAPI, *, approvers: tuple[str, ...] = ("bob", "carol"), reset_on_push: bool = True,
                files: tuple[str, ...] = ("src/refunds.py",)) -> GitLabWorld:
    """!7 by alice, squash-merged by dana as SQUASH; approved by bob and carol."""
    w = GitLabWorld(api)
    commits = [w.commit(HEAD, "alice", "Add refunds\n\nCo-authored-by: Erin <42-erin@users.noreply.gitlab.com>"),
               w.commit(FIRST, "alice")]
    w.merge_request(7, author="alice", head=HEAD, squash_commit=SQUASH, merged_by="dana", commits=commits,
                    approvers=approvers, files=files, labels=["payments"])
    w.project_approvals(reset_on_push)
    w.jobs(61, SQUASH, [("build", "success"), ("lint", "success"), ("deploy", "running")])
    w.test_summary(61)
    w.deployments([(12, PREV)])
    w.compare([w.commit(FIRST, "alice"), w.commit(HEAD, "alice"), w.commit(SQUASH, "alice", "Add refunds")])
    w.group("acme/security", ["frank", "gina"])
    return w


def gl_run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
           env: dict[str, str], policy: Path | None = None, previous: str | None = None) -> Run:
    kwargs: dict[str, Any] = {"policy": policy} if policy else {}
    return run_check(monkeypatch, capsys, tmp_path, env, provider="gitlab", previous=previous, **kwargs)


def test_merge_request_approvals_allow_end_to_end(api: FakeAPI, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    approved_mr(api)
    run = gl_run(monkeypatch, capsys, tmp_path, gitlab_env(api, SQUASH), previous=PREV)
    assert run.code == 0, run.out + run.err
    assert run.decision is not None and run.decision["decision"] == "allow"
    assert run.rule("peer-review")["message"] == "2 of 2 required approvals (bob, carol)"
    change = run.decision["change"]
    assert change["pull_request"] == {
        "number": 7, "title": "MR 7", "author": "alice", "head_commit": HEAD, "merge_commit": None,
        "squash_commit": SQUASH,
        "url": "https://gitlab.example.com/acme/payments/-/merge_requests/7", "state": "merged", "merged_by": "dana",
        "base_ref": "main", "head_ref": "test1", "description": "fixed login page css paddings",
        "labels": ["payments"]}
    assert change["reviews"] == [
        {"user": "bob", "state": "approved", "commit": HEAD, "submitted_at": None, "permission": "write",
         "role": "Developer"},
        {"user": "carol", "state": "approved", "commit": HEAD, "submitted_at": None, "permission": "write",
         "role": "Developer"}]
    assert change["facts_source"] == "gitlab"
    assert change["commits"][0]["co_authors"] == ["erin"]
    assert [(c["name"], c["status"]) for c in change["checks"]] == [
        ("build", "success"), ("lint", "success"), ("deploy", "pending")]
    # The pipeline's own jobs (the jobs API lists no external commit status): GitLab reported them.
    assert {(c["kind"], c["creator"]) for c in change["checks"]} == {("job", "gitlab")}
    assert (change["deployer"], change["deployer_source"]) == ("dana", "GITLAB_USER_LOGIN")
    assert change["pipeline"] == {"provider": "gitlab", "id": "61", "attempt": None,
                                  "url": "https://gitlab.example.com/acme/payments/-/pipelines/61",
                                  "job_url": "https://gitlab.example.com/acme/payments/-/jobs/7", "event": "push"}
    assert ("pipeline test report (GitLab, for information; rules read JUnit files): 3363 tests, 3351 passed, "
            "0 failed, 0 errors, 12 skipped") in change["notes"]
    assert change["range"]["previous_commit"] == PREV
    assert [c["pull_request"] for c in change["range"]["commits"]] == [7, 7, 7]
    assert schema_errors(change) == []
    assert all(r.headers.get("PRIVATE-TOKEN") == "glpat-" + "T" * 20 for r in api.requests)
    with run.bundle() as z:
        assert "raw/gitlab/merge_requests_7_approvals.json" in z.namelist()


def test_approvals_without_reset_on_push_are_stale_when_the_current_commit_is_required(
        api: FakeAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    approved_mr(api, reset_on_push=False)
    run = gl_run(monkeypatch, capsys, tmp_path, gitlab_env(api, SQUASH), previous=PREV)
    assert run.code == 1
    assert run.rule("peer-review")["message"] == (
        f"0 of 2 required approvals (nobody); not counted: bob (approved ?, not the current commit {HEAD[:7]} "
        f"(stale)); carol (approved ?, not the current commit {HEAD[:7]} (stale))")
    assert any("approvals are recorded without a commit" in n for n in run.decision["change"]["notes"])  # type: ignore[index]


def test_unreadable_approval_settings_fail_closed(api: FakeAPI) -> None:
    approved_mr(api)
    api.json(f"{P}/approvals", {"message": "403 Forbidden"}, status=403)
    change = gather_gitlab(gitlab_env(api, SQUASH), previous_deploys=StaticHistory(PREV)).change
    assert [r["commit"] for r in change["reviews"]] == [None, None]
    assert "reviews" not in change.get("unavailable", {})


def test_job_token_cannot_read_merge_requests_and_says_what_to_use(
        api: FakeAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    approved_mr(api)
    api.json(f"{P}/repository/commits/{SQUASH}/merge_requests", {"message": "401 Unauthorized"}, status=401)
    env = gitlab_env(api, SQUASH, CI_JOB_TOKEN="glcbt-64_" + "J" * 20)
    del env["GITLAB_TOKEN"]
    run = gl_run(monkeypatch, capsys, tmp_path, env)
    assert run.code == 3
    assert run.rule("peer-review")["message"].startswith(
        f"approvals could not be read: pull_request: GET {P}/repository/commits/{SQUASH}/merge_requests?per_page=100: "
        "HTTP 401 Unauthorized: CI_JOB_TOKEN was rejected (missing, expired or revoked); CI_JOB_TOKEN cannot read "
        "merge requests or their approvals: set GITLAB_TOKEN to a project access token with the `read_api` scope "
        "[API said: 401 Unauthorized]; reviews: ")
    # The job token is not blocked by one refusal: the endpoints it may read were still read.
    assert run.rule("required-checks")["status"] == "pass"
    assert all(r.headers.get("JOB-TOKEN") == "glcbt-64_" + "J" * 20 and "PRIVATE-TOKEN" not in r.headers
               for r in api.requests)


def test_direct_push_without_merge_request_is_denied(api: FakeAPI, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pushed = sha_of("gl-direct")
    w = GitLabWorld(api)
    api.pages(f"{P}/repository/commits/{pushed}/merge_requests", [])
    api.json(f"{P}/repository/commits/{pushed}", w.commit(pushed, "mallory"))
    api.pages(f"{P}/repository/commits/{pushed}/diff", [{"new_path": "src/pay.py", "old_path": "src/pay.py"}])
    w.jobs(61, pushed, [("build", "success"), ("lint", "success")])
    w.deployments([])
    run = gl_run(monkeypatch, capsys, tmp_path, gitlab_env(api, pushed, GITLAB_USER_LOGIN="mallory"))
    assert run.code == 1
    assert run.rule("peer-review")["message"].startswith(f"no pull request: commit {pushed[:7]} was deployed")
    change = run.decision["change"]  # type: ignore[index]
    # No verified previous deploy: the range is unknown, so the files it ships are too (fail closed).
    assert change["pull_request"] is None and "files_changed" in change["unavailable"]
    assert change["commits"][0]["author"] == "mallory@example.com"
    assert schema_errors(change) == []


def test_change_range_across_three_merge_requests_one_unapproved(api: FakeAPI) -> None:
    w = approved_mr(api)
    c5, s5, c6, s6 = sha_of("gl-c5"), sha_of("gl-s5"), sha_of("gl-c6"), sha_of("gl-s6")
    w.merge_request(5, author="alice", head=c5, squash_commit=s5, merged_by="bob", commits=[w.commit(c5, "alice")],
                    approvers=["bob", "carol"])
    w.merge_request(6, author="mallory", head=c6, squash_commit=s6, merged_by="mallory",
                    commits=[w.commit(c6, "mallory")], approvers=[])
    w.compare([w.commit(s5, "alice"), w.commit(s6, "mallory"), w.commit(SQUASH, "alice")])
    change = gather_gitlab(gitlab_env(api, SQUASH), previous_deploys=StaticHistory(PREV)).change
    rng = change["range"]
    assert [(c["sha"], c["pull_request"]) for c in rng["commits"]] == [(s5, 5), (s6, 6), (SQUASH, 7)]
    prs = {p["number"]: p for p in rng["pull_requests"]}
    assert sorted(prs) == [5, 6, 7]
    assert [r["user"] for r in prs[5]["reviews"]] == ["bob", "carol"] and prs[6]["reviews"] == []
    assert prs[6]["committers"] == ["mallory@example.com"]
    assert all(r["commit"] == c5 for r in prs[5]["reviews"])
    assert rng["previous_deployment"]["source"] == "evidence-archive"
    assert (f"previous deploy {PREV[:7]} from verified evidence, corroborated by GitLab deployments names "
            f"{PREV[:7]} (deployment 12)") in change["notes"]
    assert schema_errors(change) == []


def test_groups_as_teams(api: FakeAPI) -> None:
    approved_mr(api)
    change = gather_gitlab(gitlab_env(api, SQUASH, POLICYENGINE_TEAMS="acme/security")).change
    assert change["teams"] == {"acme/security": ["frank", "gina"]}
    assert "/groups/acme%2Fsecurity/members" in api.paths()


def test_project_bot_user_is_not_the_deployer(api: FakeAPI) -> None:
    approved_mr(api)
    change = gather_gitlab(gitlab_env(api, SQUASH, GITLAB_USER_LOGIN="project_278964_bot_3f2a")).change
    assert (change["deployer"], change["deployer_source"]) == ("dana", "merge_request.merged_by")


def test_pipeline_source_merge_request_iid_skips_the_lookup(api: FakeAPI) -> None:
    approved_mr(api)
    change = gather_gitlab(gitlab_env(api, HEAD, CI_MERGE_REQUEST_IID="7", CI_PIPELINE_SOURCE="merge_request_event"),
                           environment="review").change
    assert change["pull_request"]["number"] == 7
    assert not any(p.endswith(f"/commits/{HEAD}/merge_requests") for p in api.paths())


def test_diffs_fall_back_to_changes_on_old_gitlab(api: FakeAPI) -> None:
    approved_mr(api)
    api.json(f"{P}/merge_requests/7/diffs", {"message": "404 Not Found"}, status=404)
    api.json(f"{P}/merge_requests/7/changes",
             {"changes": [{"new_path": "b.py", "old_path": "a.py"}], "overflow": False})
    assert gather_gitlab(gitlab_env(api, SQUASH), previous_deploys=StaticHistory(PREV)).change["files_changed"] == ["b.py", "a.py"]
    api.json(f"{P}/merge_requests/7/changes", {"changes": [], "overflow": True})
    change = gather_gitlab(gitlab_env(api, SQUASH), previous_deploys=StaticHistory(PREV)).change
    assert "overflow" in change["unavailable"]["files_changed"]


def test_jobs_failure_makes_checks_unavailable(api: FakeAPI) -> None:
    approved_mr(api)
    api.fail(f"{P}/pipelines/61/jobs", *[Reply(503, {})] * 4)
    change = gather_gitlab(gitlab_env(api, SQUASH), previous_deploys=StaticHistory(PREV)).change
    assert change["unavailable"] == {
        "checks": f"GET {P}/pipelines/61/jobs?per_page=100: HTTP 503 Service Unavailable (4 attempts)"}


def test_250_approvals_and_250_commits_take_pages(api: FakeAPI) -> None:
    w = GitLabWorld(api)
    commits = [w.commit(sha_of(f"gl{i}"), "alice") for i in range(249)] + [w.commit(HEAD, "alice")]
    w.merge_request(7, author="alice", head=HEAD, squash_commit=SQUASH, merged_by="dana", commits=commits,
                    approvers=[f"reviewer{i}" for i in range(250)])
    w.project_approvals(True)
    w.jobs(61, SQUASH, [("build", "success"), ("lint", "success")])
    w.test_summary(61)
    w.deployments([(12, PREV)])
    w.compare([*commits, w.commit(SQUASH, "alice")])
    api.latency = 0.02
    change = gather_gitlab(gitlab_env(api, SQUASH), previous_deploys=StaticHistory(PREV)).change
    assert len(change["reviews"]) == 250 and len(change["commits"]) == 250 and "unavailable" not in change
    counts = {p: api.paths().count(p) for p in set(api.paths())}
    # Each distinct approver's membership is looked up exactly once.
    lookups = {p: n for p, n in counts.items() if p.startswith(f"{P}/members/all/")}
    assert len(lookups) == 250 and set(lookups.values()) == {1}
    counts = {p: n for p, n in counts.items() if p not in lookups}
    assert counts == {
        f"{P}/repository/commits/{SQUASH}/merge_requests": 1, f"{P}/merge_requests/7": 1,
        f"{P}/approvals": 1, f"{P}/merge_requests/7/approvals": 1, f"{P}/merge_requests/7/commits": 3,
        f"{P}/merge_requests/7/diffs": 1, f"{P}/pipelines/61/jobs": 1, f"{P}/pipelines/61/test_report_summary": 1,
        f"{P}/deployments": 1, f"{P}/repository/compare": 1}
    assert api.count() == 12 + 250 and api.max_in_flight >= 3
    print(f"\nGitLab, 250 approvals + 250 commits: {api.count()} requests ({len(counts)} endpoints), "
          f"at most {api.max_in_flight} at once")  # docs/performance.md quotes this line


@pytest.mark.parametrize("missing, expected", [
    ("CI_PROJECT_PATH", "CI_PROJECT_PATH is not set"),
    ("CI_COMMIT_SHA", "CI_COMMIT_SHA is not set"),
    ("CI_ENVIRONMENT_NAME", "no environment: CI_ENVIRONMENT_NAME is not set"),
    ("CI_API_V4_URL", "CI_API_V4_URL is not set"),
    ("GITLAB_TOKEN", "GITLAB_TOKEN is not set (nor CI_JOB_TOKEN)"),
])
def test_missing_mandatory_variables(api: FakeAPI, missing: str, expected: str) -> None:
    env = gitlab_env(api, SQUASH)
    del env[missing]
    with pytest.raises(UsageError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        gather_gitlab(env)


def test_job_statuses_map_to_check_statuses() -> None:
    def status(s: str) -> str:
        return map_job({"name": "x", "status": s, "commit": {"id": "A" * 40}}, "b" * 40)["status"]

    assert [status(s) for s in ("success", "failed", "canceled", "skipped", "manual", "running", "created")] == [
        "success", "failure", "cancelled", "skipped", "manual", "pending", "pending"]


@pytest.mark.corpus
def test_corpus_responses_map_to_the_change(corpus: Path, api: FakeAPI) -> None:
    docs = corpus / "gitlab" / "api-responses"

    def load(name: str) -> Any:
        return json.loads((docs / name).read_text(encoding="utf-8"))

    mrs = load("docs__commit_merge_requests.json")
    sha = mrs[0]["sha"]
    assert pick_merge_request(mrs, sha)["iid"] == 1  # an open MR headed by the commit
    api.json(f"{P}/repository/commits/{sha}/merge_requests", mrs)
    api.json(f"{P}/merge_requests/1", mrs[0])
    api.json(f"{P}/merge_requests/1/approvals", load("docs__merge_request_approvals.json"))
    api.json(f"{P}/merge_requests/1/commits", [load("go-gitlab__get_commit.json")])
    api.json(f"{P}/merge_requests/1/diffs", [])
    api.json(f"{P}/pipelines/61/jobs", [])
    api.json(f"{P}/pipelines/61/test_report_summary", load("docs__pipeline_test_report_summary.json"))
    api.json(f"{P}/deployments", [])
    change = gather_gitlab(gitlab_env(api, sha), previous_deploys=StaticHistory(sha)).change
    assert change["pull_request"]["author"] == "thedude" and change["pull_request"]["state"] == "opened"
    # root is no member of the fake project (404): permission none, so the approval would not count.
    assert change["reviews"] == [{"user": "root", "state": "approved", "commit": None, "submitted_at": None,
                                  "permission": "none", "role": None}]
    assert change["commits"][0]["author"] == "dmitriy.zaporozhets@gmail.com"
    assert any("3363 tests" in n for n in change["notes"])
    assert change["checks"] == []
    assert "unavailable" not in change


@pytest.mark.corpus
def test_corpus_merge_request_shape(corpus: Path, api: FakeAPI) -> None:
    mr = json.loads((corpus / "gitlab" / "api-responses" / "go-gitlab__get_merge_request.json").read_text())
    from policyengine.providers.gitlab import map_merge_request

    mapped = map_merge_request(mr)
    assert mapped["number"] == 14656 and mapped["author"] == "alexkalderimis"
    assert mapped["head_commit"] == "8e0b45049b6253b8984cde9241830d2851168142"
    assert "database::reviewed" in mapped["labels"]


def test_canary_token_appears_in_no_output(api: FakeAPI, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import zipfile

    canary = "gl-canary-55e0b1d2c3"  # matches no token pattern: only the literal redaction can catch it
    w = approved_mr(api)
    mr = w.commit_mrs[HEAD][0]

    def echo(req: Any, _api: FakeAPI) -> Any:
        from fake_servers import Reply as R

        return R(200, {**mr, "title": f"token {req.headers.get('PRIVATE-TOKEN')}"})

    api.handler(f"{P}/merge_requests/7", echo)
    api.json(f"{P}/pipelines/61/test_report_summary", {"message": f"bad token {canary}"}, status=403)
    caplog.set_level(logging.DEBUG)
    run = gl_run(monkeypatch, capsys, tmp_path, gitlab_env(api, SQUASH, token=canary, CI_JOB_TOKEN="job-" + canary),
                 previous=PREV)
    assert run.code == 0, run.out + run.err
    assert run.decision is not None and run.decision["change"]["pull_request"]["title"] == "token [REDACTED]"
    seen = {"stdout": run.out, "stderr": run.err, "logs": caplog.text}
    for path in tmp_path.rglob("*"):
        if path.is_file():
            seen[str(path)] = path.read_bytes().decode("utf-8", "replace")
            if path.suffix == ".zip":
                with zipfile.ZipFile(path) as z:
                    seen.update({f"{path}!{m}": z.read(m).decode("utf-8", "replace") for m in z.namelist()})
    assert any(k.endswith("!raw/gitlab/merge_requests_7.json") for k in seen)
    assert [where for where, text in seen.items() if canary in text] == []


# -- who may approve: Developer or above; no bots, no deleted users --------------------------------


def test_approval_by_a_reporter_or_non_member_is_not_counted(api: FakeAPI, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str],
                                                             tmp_path: Path) -> None:
    w = GitLabWorld(api)
    w.member("carol", 20)  # Reporter
    w.member("frank", 30, status=404)  # not a member of the project
    w.member("gina", 40, state="blocked")
    approved_mr(api, approvers=("bob", "carol", "frank", "gina"))
    run = gl_run(monkeypatch, capsys, tmp_path, gitlab_env(api, SQUASH))
    assert run.code == 1
    assert run.rule("peer-review")["message"] == (
        "1 of 2 required approvals (bob); not counted: carol (no write access (read)); frank (no write access "
        "(none)); gina (no write access (none))")
    roles = {r["user"]: (r["permission"], r["role"]) for r in run.decision["change"]["reviews"]}  # type: ignore[index]
    assert roles["bob"] == ("write", "Developer") and roles["carol"] == ("read", "Reporter")
    assert "user_id" not in str(run.decision["change"]["reviews"])  # type: ignore[index]


@pytest.mark.parametrize("level, permission", [(50, "admin"), (40, "maintain"), (30, "write"), (10, "read")])
def test_access_levels_map_to_permissions(api: FakeAPI, level: int, permission: str) -> None:
    w = GitLabWorld(api)
    w.member("bob", level)
    approved_mr(api, approvers=("bob",))
    [bob] = gather_gitlab(gitlab_env(api, SQUASH)).change["reviews"]
    assert bob["permission"] == permission


@pytest.mark.parametrize("status", [403, 500])
def test_failed_member_lookup_is_an_error_never_a_pass(api: FakeAPI, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                       status: int) -> None:
    w = GitLabWorld(api)
    w.member("carol", 30, status=status)
    approved_mr(api)
    run = gl_run(monkeypatch, capsys, tmp_path, gitlab_env(api, SQUASH), previous=PREV)
    assert run.code == 3
    peer = run.rule("peer-review")
    assert peer["status"] == "error"
    assert peer["message"].startswith("approvals cannot be judged: the write access of carol could not be looked up")
    assert f"{P}/members/all/" in peer["message"] and f"HTTP {status}" in peer["message"]


def test_bot_and_deleted_approvers_are_not_counted(api: FakeAPI, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    approved_mr(api, approvers=("bob", "project_278964_bot_3f2a", "ghost"))
    body = template_approvals(api)
    body["approved_by"].append({"user": None})
    body["approved_by"].append({"user": {"id": 77, "username": "deploy-helper", "bot": True}})
    api.json(f"{P}/merge_requests/7/approvals", body)
    run = gl_run(monkeypatch, capsys, tmp_path, gitlab_env(api, SQUASH), previous=PREV)
    assert run.code == 1, run.out
    assert run.rule("peer-review")["message"] == (
        "1 of 2 required approvals (bob); not counted: deploy-helper (bot not allowed by the policy); ghost "
        "(deleted user); project_278964_bot_3f2a (bot not allowed by the policy)")
    deleted = [r for r in run.decision["change"]["reviews"] if r.get("deleted")]  # type: ignore[index]
    assert len(deleted) == 2 and all("permission" not in r for r in deleted)
    assert not any(p.endswith("/members/all/77") for p in api.paths())


def template_approvals(api: FakeAPI) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(f"{api.url}{P}/merge_requests/7/approvals") as r:  # noqa: S310 - loopback
        data: dict[str, Any] = json.loads(r.read())
    return data


# -- the deployed commit must be the approved one ------------------------------------------------


def test_deploying_a_commit_the_merge_request_did_not_merge_is_denied(
        api: FakeAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    w = approved_mr(api)
    w.jobs(61, FIRST, [("build", "success"), ("lint", "success")])
    run = gl_run(monkeypatch, capsys, tmp_path, gitlab_env(api, FIRST, CI_PIPELINE_SOURCE="web"))
    assert run.code == 1
    assert run.rule("peer-review")["message"].startswith(
        f"deployed commit {FIRST[:7]} is not the approved head ({HEAD[:7]}) of pull request #7 nor the commit that "
        f"merged it (squash commit {SQUASH[:7]})")


@pytest.mark.parametrize("how", ["merge-commit", "squash-with-merge-commit", "fast-forward"])
def test_merge_squash_and_fast_forward_deploys_are_the_approved_change(api: FakeAPI, how: str) -> None:
    merge = sha_of("mr8-merge")
    w = GitLabWorld(api)
    w.merge_request(8, author="alice", head=HEAD, merged_by="dana", commits=[w.commit(HEAD, "alice")],
                    approvers=("bob", "carol"), state="merged",
                    merge_commit=merge if how != "fast-forward" else None,
                    squash_commit=SQUASH if how == "squash-with-merge-commit" else None)
    w.project_approvals(True)
    deployed = {"merge-commit": merge, "squash-with-merge-commit": SQUASH, "fast-forward": HEAD}[how]
    w.jobs(61, deployed, [("build", "success")])
    w.deployments([])
    change = gather_gitlab(gitlab_env(api, deployed)).change
    from policyengine.rules.approvals import _deployed_matches

    assert change["pull_request"]["number"] == 8
    assert _deployed_matches(change, change["pull_request"]) is None
    assert schema_errors(change) == []
