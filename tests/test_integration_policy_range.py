"""Both integration files' defaults judge a policy-weakening commit's own deploy by the policy
before it (issue 15, class 1): action.yml (``policy-source: previous-deploy``) and
.gitlab-ci-template.yml (``POLICYENGINE_POLICY_SOURCE: previous-deploy``), run as the code
hosts run them, against real git repositories and a fake code host answering for the same
commits; with and without a trust key, for push, merge-commit and merge-request pipelines.
Manual and scheduled runs without a trust key deny with the documented error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ci_git import ci_env, deploy_world
from fake_servers import FakeAPI, GitHubWorld, GitLabWorld, trusted_history
from test_provider_integration_files import ACTION, GITLAB, load, run_action, run_template

ACTION_DEFAULT = load(ACTION)["inputs"]["policy-source"]["default"]
TEMPLATE_DEFAULT = load(GITLAB)[".policyengine-gate"]["variables"]["POLICYENGINE_POLICY_SOURCE"]


def github_world(api: FakeAPI, world: dict[str, Any]) -> None:
    """PR #42 by alice (head: the weakening commit), merged by dana; only bob approved."""
    w = GitHubWorld(api)
    weak, deployed = world["weak"], world["deployed"]
    w.pull(42, author="alice", head=weak, merge_commit=deployed, merged_by="dana",
           commits=[w.commit(weak, "alice")], reviews=[w.review("bob", "APPROVED", weak)],
           files=["policies/prod.yml"])
    w.checks(deployed)
    w.deployments("production", [])


def gitlab_world(api: FakeAPI, world: dict[str, Any]) -> None:
    """!7 by alice (head: the weakening commit), merged by dana; only bob approved."""
    w = GitLabWorld(api)
    weak, deployed = world["weak"], world["deployed"]
    merged = world["shape"] != "request"
    w.merge_request(7, author="alice", head=weak, merge_commit=deployed if merged and deployed != weak else None,
                    squash_commit=None, merged_by="dana" if merged else None, commits=[w.commit(weak, "alice")],
                    approvers=("bob",), files=("policies/prod.yml",), state="merged" if merged else "opened")
    w.project_approvals(True)
    w.jobs(61, deployed, [("build", "success")])
    w.deployments([])


def run_github(tmp_path: Path, shape: str, trusted: bool, event: str | None = None) -> tuple[Any, dict]:
    world = deploy_world(tmp_path / "git", shape)
    with FakeAPI("/api/v3") as api:
        github_world(api, world)
        env = {**ci_env(world, "github", event=event), "GITHUB_API_URL": api.url, "GITHUB_ACTOR": "dana",
               "GITHUB_TRIGGERING_ACTOR": "dana", "GITHUB_RUN_ID": "1", "GITHUB_RUN_ATTEMPT": "1",
               "PE_POLICY_SOURCE": ACTION_DEFAULT, "POLICYENGINE_WORKSPACE": str(world["work"])}
        if trusted:
            run = tmp_path / "run"
            env.update(trusted_history(tmp_path, world["strict"], store=run / "evidence"))
            env["POLICYENGINE_EVIDENCE_STORE"] = str(run / "evidence")
        res, _, _ = run_action(tmp_path / "run", env, policy=Path("policies/prod.yml"), now=None)
    found = list((tmp_path / "run" / "runner-temp").rglob("decision.json"))
    doc = json.loads(found[0].read_text()) if found else {}
    return res, doc | {"_world": world}


def run_gitlab(tmp_path: Path, shape: str, trusted: bool, event: str | None = None) -> tuple[Any, dict]:
    world = deploy_world(tmp_path / "git", shape)
    project = tmp_path / "project"
    with FakeAPI("/api/v4") as api:
        gitlab_world(api, world)
        env = {**ci_env(world, "gitlab", event=event), "CI_API_V4_URL": api.url, "CI_PROJECT_ID": "278964",
               "CI_PIPELINE_ID": "61", "GITLAB_USER_LOGIN": "dana", "CI_ENVIRONMENT_NAME": "production",
               "CI_SERVER_URL": "https://gitlab.example.com", "GITLAB_TOKEN": "glpat-" + "T" * 20,
               "CI_COMMIT_REF_NAME": "main", "POLICYENGINE_POLICY_SOURCE": TEMPLATE_DEFAULT,
               "POLICYENGINE_POLICY": "policies/prod.yml", "POLICYENGINE_WORKSPACE": str(world["work"])}
        if shape == "request":
            env["CI_MERGE_REQUEST_IID"] = "7"
        if trusted:
            env.update(trusted_history(tmp_path, world["strict"], store=project / "policyengine-evidence"))
        res = run_template(tmp_path, env)
    path = project / "policyengine-decision.json"
    doc = json.loads(path.read_text()) if path.exists() else {}
    return res, doc | {"_world": world}


RUNNERS = {"action.yml": run_github, ".gitlab-ci-template.yml": run_gitlab}


def test_both_integration_files_default_to_previous_deploy() -> None:
    assert ACTION_DEFAULT == TEMPLATE_DEFAULT == "previous-deploy"


@pytest.mark.parametrize("trusted", [False, True])
@pytest.mark.parametrize("shape", ["push", "merge", "request"])
@pytest.mark.parametrize("file", list(RUNNERS))
def test_both_integration_files_judge_a_weakening_deploy_by_the_policy_before_it(
        tmp_path: Path, file: str, shape: str, trusted: bool) -> None:
    res, doc = RUNNERS[file](tmp_path, shape, trusted)
    out = res.stdout + res.stderr
    world = doc.pop("_world")
    assert doc.get("decision") == "deny", out
    assert res.returncode == 1, out
    source = doc["policy"]["source"]
    assert source["commit"] == world["strict"]
    assert source["ref"].startswith("@previous-deploy (")
    assert ("trusted previous deploy" in source["ref"]) is trusted
    review = next(r for r in doc["rules"] if r["id"] == "peer-review")
    assert review["status"] == "fail" and "of 2" in review["message"]


@pytest.mark.parametrize("event", ["manual", "schedule"])
@pytest.mark.parametrize("file", list(RUNNERS))
def test_manual_and_scheduled_runs_of_the_integration_files_deny_without_a_trust_key(
        tmp_path: Path, file: str, event: str) -> None:
    name = {("action.yml", "manual"): "workflow_dispatch", ("action.yml", "schedule"): "schedule",
            (".gitlab-ci-template.yml", "manual"): "web",
            (".gitlab-ci-template.yml", "schedule"): "schedule"}[(file, event)]
    res, doc = RUNNERS[file](tmp_path, "merge", False, event=name)
    doc.pop("_world")
    out = res.stdout + res.stderr
    assert res.returncode == 3, out
    assert doc.get("decision") != "allow"
    assert "configure a trust key" in out
