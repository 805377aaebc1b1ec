"""The GitHub provider against a local fake API: API responses in, change out; and `check` end to end."""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fake_servers import (
    FIXTURES,
    FakeAPI,
    GitHubWorld,
    Reply,
    StaticHistory,
    decision_errors,
    gh_user,
    github_env,
    schema_errors,
    sha_of,
    trusted_history,
)

from policyengine import cli
from policyengine.errors import UsageError
from policyengine.providers import http
from policyengine.providers.github import co_authors, gather_github, pick_pull

POLICY = FIXTURES / "github" / "policy.yml"
HEAD = sha_of("pr42-head")
OLD = sha_of("pr42-first")
MERGE = sha_of("pr42-merge")
PREV = sha_of("previous-deploy")


@pytest.fixture(autouse=True)
def _no_real_waiting(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waits: list[float] = []
    monkeypatch.setattr(http, "SLEEP", waits.append)
    return waits


@pytest.fixture
def api() -> FakeAPI:
    with FakeAPI("/api/v3") as server:
        yield server


def reviewed_world(api: FakeAPI, *, reviews: list[dict[str, Any]] | None = None,
                   files: tuple[str, ...] = ("src/refunds.py", "tests/test_refunds.py")) -> GitHubWorld:
    """PR #42 by alice, merged by dana as MERGE; bob and carol approved the head, erin an older commit."""
    w = GitHubWorld(api)
    commits = [w.commit(OLD, "alice"),
               w.commit(HEAD, "alice", message="Add refunds\n\nCo-authored-by: Erin <9+erin@users.noreply.github.com>")]
    if reviews is None:
        reviews = [w.review("erin", "APPROVED", OLD, "2026-11-23T14:10:00Z"),
                   w.review("bob", "APPROVED", HEAD, "2026-11-23T15:02:00Z"),
                   w.review("carol", "COMMENTED", HEAD, "2026-11-23T16:00:00Z"),
                   w.review("carol", "APPROVED", HEAD, "2026-11-23T16:45:00Z")]
    w.pull(42, author="alice", head=HEAD, merge_commit=MERGE, merged_by="dana", commits=commits, reviews=reviews,
           files=files, labels=["payments"], title="PAY-101: add refund endpoint")
    w.checks(MERGE, statuses=[("ci/security-scan", "success")])
    w.deployments("production", [(9, MERGE, ["in_progress"]), (8, PREV, ["inactive", "success", "in_progress"])])
    w.compare(PREV, MERGE, [*commits, w.commit(MERGE, "alice", "web-flow", "Merge pull request #42")])
    w.team("acme", "security", ["frank", "gina"])
    return w


@dataclass
class Run:
    code: int
    decision: dict[str, Any] | None
    out: str
    err: str
    tmp: Path

    def rule(self, rule_id: str) -> dict[str, Any]:
        assert self.decision is not None
        return next(r for r in self.decision["rules"] if r["id"] == rule_id)

    def bundle(self) -> zipfile.ZipFile:
        # The newest bundle: this run's (an older one may be the signed history a test recorded).
        zips = sorted((self.tmp / "evidence").rglob("*.zip"), key=lambda z: z.name)
        assert 1 <= len(zips) <= 2, zips
        return zipfile.ZipFile(zips[-1])


def run_check(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
              env: dict[str, str], provider: str = "github", policy: Path = POLICY,
              previous: str | None = None) -> Run:
    """Run ``check`` in ``env``; ``previous``: a commit recorded as a signed allowed deploy (trusted history)."""
    if previous is not None:
        env = {**env, **trusted_history(tmp_path, previous)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "decision.json"
    args = ["check", "--policy", str(policy), "--provider", provider, "--json", str(out),
            "--junit", str(tmp_path / "junit.xml"), "--evidence-dir", str(tmp_path / "evidence"),
            "--workspace", str(tmp_path), "--now", "2026-11-24T15:00:00Z", "--color", "never"]
    with pytest.raises(SystemExit) as exc:
        cli.main(args)
    cap = capsys.readouterr()
    decision = json.loads(out.read_text()) if out.exists() else None
    return Run(int(exc.value.code or 0), decision, cap.out, cap.err, tmp_path)


# -- end to end -----------------------------------------------------------------------------


def test_reviewed_pull_request_is_allowed_end_to_end(api: FakeAPI, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    reviewed_world(api)
    run = run_check(monkeypatch, capsys, tmp_path, github_env(api, MERGE), previous=PREV)
    assert run.code == 0, run.out + run.err
    assert run.decision is not None and run.decision["decision"] == "allow"
    assert run.rule("peer-review")["status"] == "pass"
    assert run.rule("peer-review")["message"] == (
        "2 of 2 required approvals (bob, carol); not counted: erin (co-author of commit "
        f"{HEAD[:7]})")
    assert run.rule("security-review")["status"] == "skipped"
    assert run.rule("required-checks")["status"] == "pass"
    change = run.decision["change"]
    assert change["deployer"] == "dana" and change["deployer_source"] == "GITHUB_TRIGGERING_ACTOR"
    assert change["pull_request"]["number"] == 42 and change["pull_request"]["labels"] == ["payments"]
    assert [c["name"] for c in change["checks"]] == ["build", "lint", "ci/security-scan"]
    assert schema_errors(change) == []
    assert decision_errors(run.decision) == []
    with run.bundle() as z:
        names = z.namelist()
        assert "raw/github/graphql_1.json" in names  # the pull request, its reviews, commits, files
        assert f"raw/github/commits_{MERGE[:7]}_check-runs_p1.json" in names
        answer = json.loads(z.read("raw/github/graphql_1.json"))
        pull = answer["data"]["repository"]["object"]["associatedPullRequests"]["nodes"][0]
        assert [r["author"]["login"] for r in pull["reviewsFirst"]["nodes"]] == ["erin", "bob", "carol", "carol"]


def test_direct_push_is_denied(api: FakeAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                               tmp_path: Path) -> None:
    pushed = sha_of("direct-push")
    w = GitHubWorld(api)
    w.no_pulls(pushed)
    w.single_commit(pushed, "mallory", files=["src/payments.py"])
    w.checks(pushed)
    w.deployments("production", [])
    run = run_check(monkeypatch, capsys, tmp_path, github_env(api, pushed, GITHUB_ACTOR="mallory",
                                                              GITHUB_TRIGGERING_ACTOR="mallory"))
    assert run.code == 1
    assert run.decision is not None and run.decision["decision"] == "deny"
    peer = run.rule("peer-review")
    assert peer["status"] == "fail"
    assert peer["message"].startswith(f"no pull request: commit {pushed[:7]} was deployed without a reviewed pull "
                                      "request, so nobody approved it")
    change = run.decision["change"]
    assert change["pull_request"] is None and change["reviews"] == []
    assert change["commits"] == [{"sha": pushed, "author": "mallory", "committer": "mallory", "co_authors": [],
                                  "message": "change", "pull_request": None,
                                  "committed_at": change["commits"][0]["committed_at"]}]
    # No verified previous deploy: the range is unknown, so the files it ships are too (fail closed).
    assert "files_changed" not in change and "files_changed" in change["unavailable"]
    assert any("pushed without one" in n for n in change["notes"])
    assert any("no previous successful deploy to production is known" in n for n in change["notes"])
    assert change["range"]["previous_commit"] is None
    assert schema_errors(change) == []


def test_stale_approvals_are_not_counted(api: FakeAPI, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    w = GitHubWorld(api)
    reviewed_world(api, reviews=[w.review("bob", "APPROVED", OLD, "2026-11-23T15:00:00Z"),
                                 w.review("carol", "APPROVED", OLD, "2026-11-23T15:30:00Z"),
                                 w.review("gina", "APPROVED", HEAD, "2026-11-23T16:00:00Z"),
                                 w.review("gina", "CHANGES_REQUESTED", HEAD, "2026-11-23T16:30:00Z")])
    run = run_check(monkeypatch, capsys, tmp_path, github_env(api, MERGE))
    assert run.code == 1
    peer = run.rule("peer-review")
    assert peer["status"] == "fail"
    assert peer["message"] == (
        f"0 of 2 required approvals (nobody); not counted: bob (approved {OLD[:7]}, not the current commit "
        f"{HEAD[:7]} (stale)); carol (approved {OLD[:7]}, not the current commit {HEAD[:7]} (stale)); "
        "gina (latest review is changes requested)")


def test_infra_change_needs_a_security_team_approval(api: FakeAPI, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    w = GitHubWorld(api)
    reviewed_world(api, files=("infra/main.tf",), reviews=[
        w.review("bob", "APPROVED", HEAD), w.review("frank", "APPROVED", HEAD)])
    run = run_check(monkeypatch, capsys, tmp_path, github_env(api, MERGE, POLICYENGINE_TEAMS="acme/security"),
                    previous=PREV)
    assert run.code == 0, run.out
    assert run.rule("security-review")["message"] == (
        "1 of 1 required approvals (frank); not counted: bob (not in team acme/security)")
    assert run.decision is not None and run.decision["change"]["teams"] == {"acme/security": ["frank", "gina"]}
    assert api.count("/orgs/acme/teams/security/members") == 1


def test_unreadable_team_makes_the_team_rule_error(api: FakeAPI, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    w = GitHubWorld(api)
    reviewed_world(api, files=("infra/main.tf",), reviews=[
        w.review("bob", "APPROVED", HEAD), w.review("frank", "APPROVED", HEAD), w.review("carol", "APPROVED", HEAD)])
    api.json("/orgs/acme/teams/security/members", {"message": "Resource not accessible by integration"}, status=403)
    run = run_check(monkeypatch, capsys, tmp_path, github_env(api, MERGE, POLICYENGINE_TEAMS="acme/security"),
                    previous=PREV)
    assert run.code == 3
    sec = run.rule("security-review")
    assert sec["status"] == "error"
    assert sec["message"] == (
        "team membership unknown for acme/security: the change does not list these teams, so eligible approvers "
        "cannot be determined (teams/acme/security: GET /orgs/acme/teams/security/members?per_page=100: HTTP 403 "
        "Forbidden: "
        "GITHUB_TOKEN lacks the organization permission `members: read` (GITHUB_TOKEN never has it: pass a GitHub "
        "App or fine-grained token as github-token) [API said: Resource not accessible by integration])")
    assert run.rule("peer-review")["status"] == "pass"


def test_team_without_org_uses_the_repository_owner(api: FakeAPI) -> None:
    reviewed_world(api)
    change = gather_github(github_env(api, MERGE, POLICYENGINE_TEAMS=" security , acme/security,"),
                           environment="production").change
    assert change["teams"] == {"security": ["frank", "gina"], "acme/security": ["frank", "gina"]}


# -- pagination and request counts ----------------------------------------------------------


def test_250_reviews_and_250_commits_take_pages_not_one_request_each(api: FakeAPI) -> None:
    w = GitHubWorld(api)
    w.pull_250_250(250, head=HEAD, merge=MERGE, prev=PREV)
    api.latency = 0.02
    # REST only (POLICYENGINE_GITHUB_API=rest): the figure before GraphQL, and 250 distinct approvers.
    # test_provider_github_graphql.py counts the default (GraphQL) path.
    g = gather_github(github_env(api, MERGE, POLICYENGINE_GITHUB_API="rest"), environment="production",
                           previous_deploys=StaticHistory(PREV))
    change = g.change
    assert len(change["reviews"]) == 250 and len(change["commits"]) == 250
    assert len(change["range"]["commits"]) == 251
    assert [p["number"] for p in change["range"]["pull_requests"]] == [42]
    assert "unavailable" not in change
    counts = {p: api.paths().count(p) for p in set(api.paths())}
    base = w.base
    # Each distinct approver's permission is looked up exactly once.
    lookups = {p: n for p, n in counts.items() if p.startswith(f"{base}/collaborators/")}
    assert lookups == {f"{base}/collaborators/reviewer{i}/permission": 1 for i in range(250)}
    counts = {p: n for p, n in counts.items() if p not in lookups}
    assert counts == {
        f"{base}/commits/{MERGE}/pulls": 1,
        f"{base}/pulls/42": 1,
        f"{base}/pulls/42/reviews": 3,
        f"{base}/pulls/42/commits": 3,
        f"{base}/pulls/42/files": 1,
        f"{base}/commits/{MERGE}/check-runs": 1,
        f"{base}/commits/{MERGE}/statuses": 1,
        f"{base}/deployments": 1,
        f"{base}/deployments/9/statuses": 1,
        f"{base}/deployments/8/statuses": 1,
        f"{base}/compare/{PREV}...{MERGE}": 3,
    }
    assert api.count() == 17 + 250
    # Independent endpoints are fetched at once, not one after the other.
    assert api.max_in_flight >= 3
    print(f"\nGitHub, 250 reviews + 250 commits: {api.count()} requests ({len(counts)} endpoints), "
          f"at most {api.max_in_flight} at once")  # docs/performance.md quotes this line
    assert len([n for n in g.raw if n.startswith("github/pulls_42_reviews_p")]) == 3


# -- the change range -------------------------------------------------------------------------


def three_merged_prs(api: FakeAPI) -> GitHubWorld:
    """Since the last deploy: #40 approved, #41 merged without approval, a direct push, then #42 (deployed)."""
    w = GitHubWorld(api)
    c40, m40 = sha_of("c40"), sha_of("m40")
    c41, m41 = sha_of("c41"), sha_of("m41")
    direct = sha_of("direct")
    w.pull(40, author="alice", head=c40, merge_commit=m40, merged_by="bob", commits=[w.commit(c40, "alice")],
           reviews=[w.review("bob", "APPROVED", c40), w.review("carol", "APPROVED", c40)])
    w.pull(41, author="mallory", head=c41, merge_commit=m41, merged_by="mallory",
           commits=[w.commit(c41, "mallory", message="sneak\n\nCo-authored-by: Trent <trent@example.com>")],
           reviews=[w.review("mallory", "COMMENTED", c41)])
    w.no_pulls(direct)
    world = reviewed_world(api)
    world.compare(PREV, MERGE, [
        w.commit(c40, "alice"), w.commit(m40, "bob", "web-flow", "Merge pull request #40"),
        w.commit(c41, "mallory", message="sneak\n\nCo-authored-by: Trent <trent@example.com>"),
        w.commit(m41, "mallory", "web-flow", "Merge pull request #41"),
        w.commit(direct, "mallory", "mallory", "hotfix"),
        w.commit(OLD, "alice"), w.commit(HEAD, "alice"), w.commit(MERGE, "alice", "web-flow", "Merge pull request #42"),
    ])
    return world


def test_change_range_across_three_merged_prs_one_unapproved(api: FakeAPI) -> None:
    three_merged_prs(api)
    change = gather_github(github_env(api, MERGE), environment="production",
                           previous_deploys=StaticHistory(PREV)).change
    rng = change["range"]
    assert rng["previous_commit"] == PREV and rng["status"] == "ahead"
    assert rng["previous_deployment"] == {"id": "20261120T200000Z-000000000000", "url": None,
                                          "created_at": "2026-11-20T20:00:00Z", "source": "evidence-archive"}
    assert (f"previous deploy {PREV[:7]} from verified evidence, corroborated by GitHub deployments names "
            f"{PREV[:7]} (deployment 8)") in change["notes"]
    assert [(c["sha"], c["pull_request"]) for c in rng["commits"]] == [
        (sha_of("c40"), 40), (sha_of("m40"), 40), (sha_of("c41"), 41), (sha_of("m41"), 41),
        (sha_of("direct"), None), (OLD, 42), (HEAD, 42), (MERGE, 42)]
    prs = {p["number"]: p for p in rng["pull_requests"]}
    assert sorted(prs) == [40, 41, 42]
    assert [(r["user"], r["state"]) for r in prs[40]["reviews"]] == [("bob", "approved"), ("carol", "approved")]
    assert [(r["user"], r["state"]) for r in prs[41]["reviews"]] == [("mallory", "commented")]
    assert prs[41]["author"] == "mallory" and prs[41]["committers"] == ["mallory", "web-flow", "trent@example.com"]
    assert prs[42]["reviews"] == change["reviews"]
    note = next(n for n in change["notes"] if n.startswith("change range"))
    assert note == (f"change range: 8 commits since the previous successful deploy to production ({PREV[:7]}, from "
                    f"evidence-archive), from pull requests #40, #41, #42; without a pull request: "
                    f"{sha_of('direct')[:7]}")
    assert schema_errors(change) == []


def test_range_starts_at_the_verified_evidence_when_the_api_has_none(api: FakeAPI, tmp_path: Path) -> None:
    w = reviewed_world(api)
    w.deployments("production", [])
    from policyengine.evidence.stores.history import VerifiedHistory, load_trust_key

    env = trusted_history(tmp_path, PREV)
    history = VerifiedHistory(str(tmp_path / "evidence"), load_trust_key(env["POLICYENGINE_TRUST_KEY"]))
    change = gather_github(github_env(api, MERGE), environment="production", previous_deploys=history).change
    assert change["range"]["previous_commit"] == PREV
    assert change["range"]["previous_deployment"]["source"] == "evidence-archive"
    assert len(change["range"]["commits"]) == 3
    assert f"previous deploy {PREV[:7]} from verified evidence; GitHub deployments records no successful deployment" \
        in change["notes"]


@pytest.mark.skipif(
    "cover_range" not in (Path(__file__).resolve().parents[1] / "schemas" / "policy.schema.json").read_text(),
    reason="approvals cover_range is proposed to the lead (see docs/ci-integration.md); not merged yet")
def test_cover_range_denies_when_one_pr_in_the_range_was_not_approved(
        api: FakeAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    three_merged_prs(api)
    policy = tmp_path / "range.yml"
    policy.write_text("version: 1\nname: range\nrules:\n  - id: every-change-reviewed\n    type: approvals\n"
                      "    min_approvals: 2\n    exclude: [author, committers, deployer]\n    cover_range: true\n")
    run = run_check(monkeypatch, capsys, tmp_path, github_env(api, MERGE), policy=policy, previous=PREV)
    assert run.code == 1
    msg = run.rule("every-change-reviewed")["message"]
    assert "#41" in msg and sha_of("direct")[:7] in msg and "#40" not in msg


# -- the deployer and the deployed commit -------------------------------------------------------


def test_bot_actor_makes_the_merger_the_deployer(api: FakeAPI) -> None:
    reviewed_world(api)
    env = github_env(api, MERGE, GITHUB_ACTOR="github-merge-queue[bot]",
                     GITHUB_TRIGGERING_ACTOR="github-actions[bot]")
    change = gather_github(env, environment="production").change
    assert (change["deployer"], change["deployer_source"]) == ("dana", "pull_request.merged_by")
    assert ("GITHUB_TRIGGERING_ACTOR github-actions[bot] and GITHUB_ACTOR github-merge-queue[bot] are bots; the "
            "deployer is dana (pull_request.merged_by)") in change["notes"]


def test_rerun_by_another_person_makes_them_the_deployer(api: FakeAPI) -> None:
    reviewed_world(api)
    change = gather_github(github_env(api, MERGE, GITHUB_ACTOR="dana", GITHUB_TRIGGERING_ACTOR="erin"),
                           environment="production").change
    assert (change["deployer"], change["deployer_source"]) == ("erin", "GITHUB_TRIGGERING_ACTOR")


def test_deployed_commit_that_is_neither_merge_nor_head_is_reported(api: FakeAPI) -> None:
    w = reviewed_world(api)
    api.pages(f"/repos/acme/payments/commits/{OLD}/pulls", [{**w.pulls[42], "merged_at": None}])
    w.checks(OLD)
    change = gather_github(github_env(api, OLD), environment="production").change
    assert change["pull_request"]["number"] == 42
    assert (f"deployed commit {OLD[:7]} is neither the merge commit ({MERGE[:7]}) nor the head ({HEAD[:7]}) of pull "
            "request #42: the review facts are those of #42") in change["notes"]
    assert len(change["reviews"]) == 4


def test_workflow_run_deploys_the_triggering_runs_head(api: FakeAPI, tmp_path: Path) -> None:
    reviewed_world(api)
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"workflow_run": {"head_sha": MERGE, "event": "push"}}))
    env = github_env(api, sha_of("default-branch-tip"), GITHUB_EVENT_NAME="workflow_run", GITHUB_EVENT_PATH=str(event))
    g = gather_github(env, environment="production")
    assert g.change["commit"] == MERGE
    assert g.raw["github/event.json"] == event.read_bytes()


@pytest.mark.parametrize("missing, expected", [
    ("GITHUB_REPOSITORY", "GITHUB_REPOSITORY is not set"),
    ("GITHUB_SHA", "GITHUB_SHA is not set"),
    ("GITHUB_TOKEN", "GITHUB_TOKEN is not set"),
    ("POLICYENGINE_ENVIRONMENT", "no environment: set POLICYENGINE_ENVIRONMENT"),
])
def test_missing_mandatory_variables_are_usage_errors(api: FakeAPI, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                      missing: str, expected: str) -> None:
    env = github_env(api, MERGE)
    del env[missing]
    run = run_check(monkeypatch, capsys, tmp_path, env)
    assert run.code == 2
    assert f"error: {expected}" in run.err
    assert run.decision is None and api.count() == 0


def test_bad_variables_are_usage_errors(api: FakeAPI) -> None:
    with pytest.raises(UsageError, match="GITHUB_REPOSITORY: 'payments' is not owner/name"):
        gather_github(github_env(api, MERGE, GITHUB_REPOSITORY="payments"), environment="production")
    with pytest.raises(UsageError, match="GITHUB_SHA: 'main' is not a commit SHA"):
        gather_github(github_env(api, "main"), environment="production")


# -- API failures: fail closed ------------------------------------------------------------------


def test_api_failure_makes_exactly_the_needed_facts_unavailable(api: FakeAPI) -> None:
    reviewed_world(api)
    path = f"/repos/acme/payments/commits/{MERGE}/check-runs"
    api.fail(path, *[Reply(500, {"message": "Server Error"})] * 4)
    change = gather_github(github_env(api, MERGE), environment="production",
                           previous_deploys=StaticHistory(PREV)).change
    assert change["unavailable"] == {"checks": f"GET {path}?per_page=100: HTTP 500 Internal Server Error (4 attempts)"}
    assert "checks" not in change and len(change["reviews"]) == 4


def test_unexpected_answer_shape_is_unavailable_not_a_crash(api: FakeAPI) -> None:
    reviewed_world(api)
    api.pages("/repos/acme/payments/pulls/42/reviews", [{"user": {"login": "bob"}}])  # no state
    change = gather_github(github_env(api, MERGE, POLICYENGINE_GITHUB_API="rest"), environment="production",
                           previous_deploys=StaticHistory(PREV)).change
    assert change["unavailable"]["reviews"].startswith(
        "GET /repos/acme/payments/pulls/42/reviews: HTTP 200 but the answer has an unexpected shape: [0].state is missing")


REVIEWS = "/repos/acme/payments/pulls/42/reviews"
FAULTS = {
    "500-then-success": ([Reply(500, {"message": "Server Error"})], {}, 0, None),
    "429-retry-after": ([Reply(429, {"message": "slow"}, {"Retry-After": "3"})], {}, 0, None),
    "rate-limit-exhausted": ([Reply(403, {"message": "API rate limit exceeded"},
                                    {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "4102444800"})], {}, 3,
                             f"approvals could not be read: reviews: GET {REVIEWS}?per_page=100: HTTP 403 Forbidden: "
                             "the API rate limit of GITHUB_TOKEN is exhausted until 2100-01-01T00:00:00Z"),
    "timeout": ([Reply(200, [], delay=0.5)] * 2, {"POLICYENGINE_HTTP_TIMEOUT": "0.1", "POLICYENGINE_HTTP_RETRIES": "1"},
                3, f"approvals could not be read: reviews: GET {REVIEWS}?per_page=100: timed out after 0.1 s "
                "(2 attempts)"),
    "truncated-json": ([Reply(200, b'[{"id": 1, "user": {"lo')], {}, 3,
                       f"approvals could not be read: reviews: GET {REVIEWS}?per_page=100: HTTP 200 but the body is "
                       "not valid JSON (truncated or not an API answer)"),
    "401": ([Reply(401, {"message": "Bad credentials"})], {}, 3,
            f"approvals could not be read: reviews: GET {REVIEWS}?per_page=100: HTTP 401 Unauthorized: GITHUB_TOKEN "
            "was rejected (missing, expired or revoked) [API said: Bad credentials]"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_faults_end_in_the_documented_status_and_never_allow_unless_recovered(
        fault: str, api: FakeAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path, _no_real_waiting: list[float]) -> None:
    replies, extra_env, code, message = FAULTS[fault]
    reviewed_world(api)
    api.fail(REVIEWS, *replies)  # the REST endpoint: test_provider_github_graphql.py has the GraphQL faults
    run = run_check(monkeypatch, capsys, tmp_path, github_env(api, MERGE, POLICYENGINE_GITHUB_API="rest", **extra_env),
                    previous=PREV)
    assert run.code == code, run.out + run.err
    assert run.decision is not None
    peer = run.rule("peer-review")
    if code == 0:  # recovered by retrying: the same facts as without the fault
        assert run.decision["decision"] == "allow" and peer["status"] == "pass"
        assert api.count(REVIEWS) == 2
        if fault == "429-retry-after":
            assert 3.0 in _no_real_waiting
    else:
        assert run.decision["decision"] == "deny" and peer["status"] == "error"
        assert peer["message"].startswith(message), peer["message"]
        assert "DENY: facts could not be read: peer-review" in run.out


def test_401_everywhere_denies_with_exit_3_and_asks_once(api: FakeAPI, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    reviewed_world(api)
    api.always = Reply(401, {"message": "Bad credentials"})
    run = run_check(monkeypatch, capsys, tmp_path, github_env(api, MERGE))
    assert run.code == 3
    assert run.decision is not None and run.decision["decision"] == "deny"
    # Every rule errors: even the path-triggered one, since the changed files are unknown (fail closed).
    assert {r["id"]: r["status"] for r in run.decision["rules"]} == {
        "peer-review": "error", "security-review": "error", "required-checks": "error"}
    assert "GITHUB_TOKEN was rejected" in run.rule("peer-review")["message"]
    # After the first 401, the session stops asking (a handful of requests raced it, no retries).
    assert api.count() <= 6


# -- secrets never leave ------------------------------------------------------------------------


def test_canary_token_appears_in_no_output(api: FakeAPI, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    canary = "pe-canary-7d1f0c9a2b"  # matches no token pattern: only the literal redaction can catch it
    w = reviewed_world(api)
    pr = w.pulls[42]

    def echo(req: Any, _api: FakeAPI) -> Reply:
        # A misbehaving server echoes the credential it received into the facts.
        auth = req.headers.get("Authorization", "")
        return Reply(200, {**pr, "title": f"deploy {auth}", "body": auth.split()[-1]})

    api.handler("/repos/acme/payments/pulls/42", echo)
    api.json("/orgs/acme/teams/security/members", {"message": f"token {canary} lacks members:read"}, status=403)
    api.pages("/repos/acme/payments/pulls/42/reviews", [
        {**w.review("bob", "APPROVED", HEAD), "body": f"LGTM {canary}"}, w.review("carol", "APPROVED", HEAD)])
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"ref": "refs/heads/main", "leak": canary}))
    caplog.set_level(logging.DEBUG)
    run = run_check(monkeypatch, capsys, tmp_path, github_env(
        api, MERGE, token=canary, POLICYENGINE_TEAMS="acme/security", GITHUB_EVENT_PATH=str(event)))
    assert run.decision is not None
    assert run.decision["change"]["pull_request"]["title"] == "deploy Bearer [REDACTED]"
    assert "[REDACTED]" in run.decision["change"]["unavailable"]["teams/acme/security"]
    seen = {"stdout": run.out, "stderr": run.err, "logs": caplog.text}
    for path in tmp_path.rglob("*"):
        if path.is_file() and path != event:
            seen[str(path)] = path.read_bytes().decode("utf-8", "replace")
            if path.suffix == ".zip":
                with zipfile.ZipFile(path) as z:
                    for member in z.namelist():
                        seen[f"{path}!{member}"] = z.read(member).decode("utf-8", "replace")
    assert any("raw/github/event.json" in k for k in seen) and any(k.endswith("junit.xml") for k in seen)
    leaks = [where for where, text in seen.items() if canary in text]
    assert leaks == []
    # The token did reach the API, in the header and nowhere else.
    assert all(r.headers.get("Authorization") == f"Bearer {canary}" for r in api.requests)


# -- shapes from the shared corpus (recordings of the real API) --------------------------------


@pytest.mark.corpus
def test_corpus_responses_map_to_the_change(corpus: Path, api: FakeAPI) -> None:
    rest = corpus / "github" / "rest-responses"

    def load(rel: str) -> Any:
        return json.loads((rest / rel).read_text(encoding="utf-8"))

    sha = "eddb53155d9bc4db70a0669627e3154e250b2b9a"  # the commit of the recorded commit-pulls call
    pulls = load("list-pulls-for-commit/octokit-rb__commit_pulls__returns_a_list_of_all_pull_requests_"
                 "associated_with_a_commit.json")
    pr = load("get-pull-request/octokit-rb__pull_request__returns_a_pull_request.json")
    base = "/repos/acme/payments"
    api.json(f"{base}/commits/{sha}/pulls", pulls)
    api.json(f"{base}/pulls/3207", pr)
    n = pr["number"]
    reviews = load("list-pull-request-reviews/octokit-rb__pull_request_reviews__returns_a_"
                   "list_of_all_pull_request_reviews.json")
    for r in reviews:  # the recording anonymised part of a timestamp: a real API sends a whole one
        if isinstance(r.get("submitted_at"), str) and "<" in r["submitted_at"]:
            r["submitted_at"] = r["submitted_at"].split("<")[0][:17] + "00Z"
    api.json(f"{base}/pulls/{n}/reviews", reviews)
    api.json(f"{base}/pulls/{n}/commits", load("list-pull-request-commits/octokit-rb__pull_request_commits__returns_"
                                               "the_commits_for_a_pull_request.json"))
    api.json(f"{base}/pulls/{n}/files", [])  # the recording says 1 changed file: a short list is not trusted
    api.json(f"{base}/commits/{sha}/check-runs", load("list-check-runs-for-ref/octokit-rb__check_runs_for_ref__"
                                                      "returns_check_runs_for_a_commit.json"))
    # flake8's 15 statuses of one commit, newest first, each with its creator (the combined status has none)
    api.json(f"{base}/commits/{sha}/statuses", load("commit-statuses/github3py__Repository_statuses__1.json"))
    api.json(f"{base}/deployments", [])
    # REST recordings: the REST path maps them (the GraphQL path turns its nodes into these objects).
    change = gather_github(github_env(api, sha, POLICYENGINE_GITHUB_API="rest"), environment="production").change

    def statuses_url(i: int) -> Any:
        return load("commit-statuses/github3py__Repository_statuses__1.json")[i]["target_url"]

    assert pick_pull(pulls, sha)["number"] == 3207  # the recorded commit is that pull request's head
    assert change["pull_request"]["number"] == n and change["pull_request"]["state"] == "open"
    # The recording replaced the review commit ids with placeholders: not a SHA, so no commit (stale).
    assert [(r["user"], r["state"], r["commit"]) for r in change["reviews"]] == [
        ("<GITHUB_LOGIN>", "approved", None), ("LizzHale", "commented", None)]
    assert [(c["author"], c["committer"]) for c in change["commits"]] == [("koichiro", "koichiro")]
    # The recording's app has no slug (anonymised): the check run's creator is unknown, so it never counts.
    assert change["checks"] == [
        {"name": "octokit-test-check", "status": "pending", "commit": "e1db7418a77db065d1900e579c82ef0aad1da2b1",
         "completed_at": None, "url": "https://github.com/<GITHUB_LOGIN>/<GITHUB_TEST_REPOSITORY>/runs/51295429",
         "kind": "check_run", "creator": None},
        # the latest status per context and creator, oldest first: the 12 earlier `pending` are not kept
        {"name": "continuous-integration/appveyor/branch", "status": "success", "commit": sha,
         "completed_at": "2018-01-01T01:11:09Z", "url": statuses_url(2), "kind": "status", "creator": "sigmavirus24"},
        {"name": "continuous-integration/travis-ci/push", "status": "success", "commit": sha,
         "completed_at": "2018-01-01T01:58:59Z", "url": statuses_url(0), "kind": "status", "creator": "sigmavirus24"}]
    assert change["unavailable"] == {"files_changed": f"GET {base}/pulls/2/files: the pull request changes 1 files "
                                                      "but the API listed 0 (it lists at most 3000)"}


@pytest.mark.corpus
def test_corpus_pull_request_event_gives_the_number_without_a_lookup(corpus: Path, api: FakeAPI) -> None:
    payload = corpus / "github" / "webhook-payloads" / "pull_request" / "opened.payload.json"
    event = json.loads(payload.read_text(encoding="utf-8"))
    head = event["pull_request"]["head"]["sha"]
    w = reviewed_world(api)
    w.pull(event["number"], author="Codertocat", head=head, merge_commit=None, register_commit_pulls=False)
    w.checks(head)
    env = github_env(api, head, GITHUB_EVENT_NAME="pull_request", GITHUB_EVENT_PATH=str(payload))
    change = gather_github(env, environment="preview").change
    assert change["pull_request"]["number"] == event["number"] == 2
    assert change["pull_request"]["head_commit"] == head
    assert not any(p.endswith(f"/commits/{head}/pulls") for p in api.paths())


def test_checks_record_who_reported_them(api: FakeAPI) -> None:
    """Check runs carry their app's slug, statuses their creator's login (issue 16)."""
    reviewed_world(api)
    GitHubWorld(api).checks(MERGE, runs=[("build", "success"), ("build", "success", "evil-app"), ("lint", None)],
                            statuses=[("ci/scan", "pending", "scanner[bot]"), ("ci/scan", "success", "scanner[bot]"),
                                      ("ci/scan", "failure", "mallory"), ("policyengine/production", "success", None)])
    change = gather_github(github_env(api, MERGE), environment="production",
                           previous_deploys=StaticHistory(PREV)).change
    assert [(c["name"], c["status"], c["kind"], c["creator"], c["completed_at"]) for c in change["checks"]] == [
        ("build", "success", "check_run", "github-actions", "2026-11-23T16:00:00Z"),
        ("build", "success", "check_run", "evil-app", "2026-11-23T16:00:00Z"),
        ("lint", "pending", "check_run", "github-actions", None),
        ("ci/scan", "success", "status", "scanner[bot]", "2026-11-23T16:11:00Z"),
        ("ci/scan", "failure", "status", "mallory", "2026-11-23T16:12:00Z"),
        ("policyengine/production", "success", "status", None, "2026-11-23T16:13:00Z")]
    assert schema_errors(change) == []


def test_a_check_run_from_another_app_does_not_satisfy_the_policy(
        api: FakeAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """An app installed on the repository reports `build`; a token with statuses: write posts `lint`."""
    reviewed_world(api)
    GitHubWorld(api).checks(MERGE, runs=[("build", "success", "evil-app"), ("lint", "failure")],
                            statuses=[("lint", "success", "github-actions[bot]")])
    run = run_check(monkeypatch, capsys, tmp_path, github_env(api, MERGE), previous=PREV)
    assert run.code == 1
    assert run.rule("required-checks")["message"] == (
        f"checks not successful on {MERGE[:7]}: build: reported only by an unexpected creator (check run by app "
        "evil-app); to count it, list that creator in the rule's creators: (the list replaces the default set); "
        "lint: failure")
    assert run.rule("required-checks")["details"]["checks"]["build"]["not_counted"] == [
        {"kind": "check_run", "creator": "evil-app", "status": "success", "reason": "unexpected creator"}]
    assert decision_errors(run.decision) == []


def test_co_authored_by_trailers() -> None:
    msg = ("Fix\n\nCo-authored-by: Erin <123+erin@users.noreply.github.com>\nco-authored-by: Bob <Bob@Example.com>\n"
           "Co-Authored-By: Erin again <erin@users.noreply.github.com>\nCo-authored-by: no email\n")
    assert co_authors(msg) == ["erin", "bob@example.com"]
    assert co_authors(None) == []


def test_a_pool_of_one_worker_does_not_deadlock(api: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import policyengine.providers.github as gh

    three_merged_prs(api)
    monkeypatch.setattr(gh, "WORKERS", 1)
    result: list[dict[str, Any]] = []
    t = threading.Thread(target=lambda: result.append(
        gather_github(github_env(api, MERGE), environment="production",
                           previous_deploys=StaticHistory(PREV)).change), daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "gathering deadlocked: a pool task waits on another pool task"
    assert [p["number"] for p in result[0]["range"]["pull_requests"]] == [40, 41, 42]
    assert api.max_in_flight == 1


# -- who may approve: write access, bots, deleted users ----------------------------------------


def _policy(tmp_path: Path, extra: str = "") -> Path:
    policy = tmp_path / "eligible.yml"
    policy.write_text("version: 1\nname: eligible\nrules:\n  - id: peer-review\n    type: approvals\n"
                      "    min_approvals: 2\n    exclude: [author, committers, deployer]\n"
                      f"    require_current_commit: true\n{extra}")
    return policy


def test_approval_by_a_read_only_collaborator_is_not_counted(api: FakeAPI, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str],
                                                             tmp_path: Path) -> None:
    w = GitHubWorld(api)
    w.permission("carol", "read")  # a MEMBER of the organization, but only read access to this repository
    w.permission("gina", "triage")
    reviewed_world(api, reviews=[w.review("bob", "APPROVED", HEAD), w.review("carol", "APPROVED", HEAD),
                                 w.review("gina", "APPROVED", HEAD, association="COLLABORATOR")])
    run = run_check(monkeypatch, capsys, tmp_path, github_env(api, MERGE))
    assert run.code == 1
    peer = run.rule("peer-review")
    assert peer["status"] == "fail"
    assert peer["message"] == ("1 of 2 required approvals (bob); not counted: carol (no write access (read)); "
                               "gina (no write access (triage))")
    reviews = {r["user"]: r for r in run.decision["change"]["reviews"]}  # type: ignore[index]
    assert (reviews["carol"]["permission"], reviews["carol"]["role"]) == ("read", "read")
    assert run.decision["change"]["facts_source"] == "github"  # type: ignore[index]
    assert decision_errors(run.decision) == []  # type: ignore[arg-type]


@pytest.mark.parametrize("role, legacy, counted", [
    ("maintain", "write", True), ("admin", "admin", True), ("write", "write", True),
    ("triage", "read", False), ("security-auditor", "read", False), ("release-manager", "write", True),
    ("write", "read", False),  # disagreeing answers: the lower one is kept
])
def test_role_name_and_legacy_permission_decide(api: FakeAPI, role: str, legacy: str, counted: bool) -> None:
    w = reviewed_world(api, reviews=[])
    api.pages(f"{w.base}/pulls/42/reviews", [w.review("bob", "APPROVED", HEAD)])
    api.json(f"{w.base}/collaborators/bob/permission", {"permission": legacy, "role_name": role,
                                                         "user": gh_user("bob")})
    from policyengine.rules.approvals import eligibility

    change = gather_github(github_env(api, MERGE), environment="production").change
    [bob] = change["reviews"]
    why, doubt = eligibility(bob, set(), change["facts_source"])
    assert doubt is None and (why is None) is counted, (bob, why)


@pytest.mark.parametrize("association", ["NONE", "FIRST_TIMER", "FIRST_TIME_CONTRIBUTOR", "MANNEQUIN"])
def test_approval_by_an_outsider_is_not_counted_and_not_looked_up(api: FakeAPI, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str],
                                                                  tmp_path: Path, association: str) -> None:
    w = GitHubWorld(api)
    reviewed_world(api, reviews=[w.review("bob", "APPROVED", HEAD),
                                 w.review("stranger", "APPROVED", HEAD, association=association)])
    run = run_check(monkeypatch, capsys, tmp_path, github_env(api, MERGE))
    assert run.code == 1
    assert "stranger (" in run.rule("peer-review")["message"]
    assert api.count("/repos/acme/payments/collaborators/stranger/permission") == 0


def test_bot_approvals_count_only_when_the_policy_names_the_bot(api: FakeAPI, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str],
                                                                tmp_path: Path) -> None:
    w = GitHubWorld(api)
    reviewed_world(api, reviews=[w.review("bob", "APPROVED", HEAD),
                                 w.review("github-actions[bot]", "APPROVED", HEAD, association="NONE"),
                                 w.review("renovate[bot]", "APPROVED", HEAD, association="CONTRIBUTOR")])
    run = run_check(monkeypatch, capsys, tmp_path, github_env(api, MERGE), policy=_policy(tmp_path))
    assert run.code == 1
    assert run.rule("peer-review")["message"] == (
        "1 of 2 required approvals (bob); not counted: github-actions[bot] (bot not allowed by the policy); "
        "renovate[bot] (bot not allowed by the policy)")
    assert not any("/collaborators/" in p and "bot" in p for p in api.paths())
    allowed = _policy(tmp_path, "    allow_bots: [\"renovate[bot]\"]\n")
    (tmp_path / "evidence").rename(tmp_path / "evidence-1")
    run = run_check(monkeypatch, capsys, tmp_path, github_env(api, MERGE), policy=allowed)
    assert run.code == 0, run.out
    assert run.rule("peer-review")["message"].startswith("2 of 2 required approvals (bob, renovate[bot])")


def test_approval_by_a_deleted_user_is_not_counted(api: FakeAPI, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    w = GitHubWorld(api)
    reviewed_world(api, reviews=[w.review("bob", "APPROVED", HEAD), w.review(None, "APPROVED", HEAD)])
    run = run_check(monkeypatch, capsys, tmp_path, github_env(api, MERGE))
    assert run.code == 1
    assert run.rule("peer-review")["message"] == "1 of 2 required approvals (bob); not counted: ghost (deleted user)"
    ghost = next(r for r in run.decision["change"]["reviews"] if r["user"] == "ghost")  # type: ignore[index]
    assert ghost["deleted"] is True and "permission" not in ghost


@pytest.mark.parametrize("status", [403, 404, 500])
def test_failed_permission_lookup_is_an_error_never_a_pass(api: FakeAPI, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                           status: int) -> None:
    w = GitHubWorld(api)
    w.permission("carol", "write", status=status)
    reviewed_world(api)
    run = run_check(monkeypatch, capsys, tmp_path, github_env(api, MERGE), previous=PREV)
    assert run.code == 3, run.out
    peer = run.rule("peer-review")
    assert peer["status"] == "error"
    assert peer["message"].startswith("approvals cannot be judged: the write access of carol could not be looked up")
    assert f"GET /repos/acme/payments/collaborators/carol/permission: HTTP {status}" in peer["message"]
    if status == 403:
        assert "`metadata: read`" in peer["message"]
    carol = next(r for r in run.decision["change"]["reviews"]  # type: ignore[index]
                 if r["user"] == "carol" and r["state"] == "approved")
    assert carol["permission"] is None and carol["permission_error"].startswith("GET ")
    assert api.count("/repos/acme/payments/collaborators/carol/permission") >= 1
    assert api.count("/repos/acme/payments/collaborators/bob/permission") == 1  # once per person


def test_range_approvers_are_looked_up_too(api: FakeAPI) -> None:
    w = three_merged_prs(api)
    w.permission("carol", "read")
    change = gather_github(github_env(api, MERGE), environment="production",
                           previous_deploys=StaticHistory(PREV)).change
    pr40 = next(p for p in change["range"]["pull_requests"] if p["number"] == 40)
    assert [(r["user"], r.get("permission")) for r in pr40["reviews"]] == [("bob", "write"), ("carol", "read")]
    assert api.count("/repos/acme/payments/collaborators/carol/permission") == 1


# -- the deployed commit must be the approved one ------------------------------------------------


@pytest.mark.parametrize("rcc", [True, False])
def test_dispatch_of_an_older_commit_of_the_request_is_denied(api: FakeAPI, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                               rcc: bool) -> None:
    w = reviewed_world(api)
    api.pages(f"/repos/acme/payments/commits/{OLD}/pulls", [{**w.pulls[42], "merged_at": None}])
    w.checks(OLD)
    policy = tmp_path / "p.yml"
    policy.write_text("version: 1\nname: p\nrules:\n  - id: peer-review\n    type: approvals\n    min_approvals: 2\n"
                      f"    require_current_commit: {'true' if rcc else 'false'}\n")
    run = run_check(monkeypatch, capsys, tmp_path, github_env(api, OLD, GITHUB_EVENT_NAME="workflow_dispatch"),
                    policy=policy)
    assert run.code == 1, run.out
    peer = run.rule("peer-review")
    assert peer["status"] == "fail"
    assert peer["message"].startswith(
        f"deployed commit {OLD[:7]} is not the approved head ({HEAD[:7]}) of pull request #42 nor the commit that "
        f"merged it (merge commit {MERGE[:7]})")


def test_open_requests_test_merge_commit_is_not_a_merge(api: FakeAPI, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    test_merge = sha_of("refs/pull/42/merge")
    w = GitHubWorld(api)
    commits = [w.commit(HEAD, "alice")]
    w.pull(42, author="alice", head=HEAD, merge_commit=None, commits=commits,
           reviews=[w.review("bob", "APPROVED", HEAD), w.review("carol", "APPROVED", HEAD)])
    w.pulls[42]["merge_commit_sha"] = test_merge  # GitHub fills it for an open request: a test merge
    api.json(f"{w.base}/pulls/42", w.pulls[42])
    api.pages(f"{w.base}/commits/{test_merge}/pulls", [w.pulls[42]])
    w.checks(test_merge)
    w.deployments("production", [])
    run = run_check(monkeypatch, capsys, tmp_path, github_env(api, test_merge))
    assert run.code == 1
    assert run.decision["change"]["pull_request"]["merge_commit"] is None  # type: ignore[index]
    assert run.rule("peer-review")["message"].startswith(f"deployed commit {test_merge[:7]} is not the approved head")


def test_rebase_merge_deploys_the_last_rebased_commit(api: FakeAPI) -> None:
    rebased = sha_of("pr42-rebased-last")
    w = reviewed_world(api)
    w.pull(42, author="alice", head=HEAD, merge_commit=rebased, merged_by="dana",
           commits=[w.commit(HEAD, "alice")], reviews=[w.review("bob", "APPROVED", HEAD),
                                                       w.review("carol", "APPROVED", HEAD)])
    w.checks(rebased)
    change = gather_github(github_env(api, rebased), environment="production").change
    from policyengine.rules.approvals import _deployed_matches

    assert change["pull_request"]["merge_commit"] == rebased
    assert _deployed_matches(change, change["pull_request"]) is None
