"""Team lookups: only through the documented mapping, and one failed team fails only its rules.

``POLICYENGINE_TEAMS`` entries are ``name=group/path`` (GitLab) or ``name=org/team`` (GitHub), or a
bare path standing for itself. On GitLab a bare policy team name with no mapping is never looked
up as a top-level group (on a shared instance ``/groups/security`` may be a stranger's). A team
that cannot be read is left out of ``teams`` and recorded as ``unavailable["teams/<name>"]``: the
rule whose ``from_teams`` names it is ``error`` (naming the cause), every other rule is unaffected.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_servers import (
    FakeAPI,
    GitHubWorld,
    StaticHistory,
    github_env,
    gitlab_env,
    schema_errors,
)
from test_provider_github import HEAD, MERGE, PREV, reviewed_world, run_check
from test_provider_gitlab import PREV as GL_PREV
from test_provider_gitlab import SQUASH, approved_mr

from policyengine.providers import http
from policyengine.providers.github import gather_github
from policyengine.providers.gitlab import gather_gitlab

TWO_TEAMS = """version: 1
name: teams
rules:
  - id: security-review
    type: approvals
    min_approvals: 1
    from_teams: [security]
  - id: dba-review
    type: approvals
    min_approvals: 1
    from_teams: [dba]
"""


@pytest.fixture(autouse=True)
def _no_real_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "SLEEP", lambda s: None)


def test_gitlab_bare_team_name_is_never_looked_up_as_a_top_level_group() -> None:
    with FakeAPI("/api/v4") as api:
        w = approved_mr(api)
        w.group("security", ["mallory"])  # a stranger's top-level group on a shared instance
        change = gather_gitlab(gitlab_env(api, SQUASH), teams=["security"],
                               previous_deploys=StaticHistory(GL_PREV)).change
        assert "/groups/security/members" not in api.paths()
    assert change["teams"] == {}
    assert "not mapped to a GitLab group" in change["unavailable"]["teams/security"]
    assert schema_errors(change) == []


def test_gitlab_mapping_resolves_the_policy_name_and_a_404_fails_only_that_team() -> None:
    with FakeAPI("/api/v4") as api:
        w = approved_mr(api)
        w.group("acme/db-admins", ["dora"])
        # `dba` maps to a group that does not exist; `security` maps to acme/security.
        env = gitlab_env(api, SQUASH, POLICYENGINE_TEAMS="security=acme/security, dba=acme/dba")
        change = gather_gitlab(env, teams=["security", "dba"], previous_deploys=StaticHistory(GL_PREV)).change
    assert change["teams"] == {"security": ["frank", "gina"]}
    assert "HTTP 404" in change["unavailable"]["teams/dba"]
    assert "teams" not in change["unavailable"]


def test_gitlab_one_failed_team_fails_only_the_rule_that_needs_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    policy = tmp_path / "teams.yml"
    policy.write_text(TWO_TEAMS)
    with FakeAPI("/api/v4") as api:
        approved_mr(api, approvers=("frank", "bob"))
        api.json("/groups/acme%2Fdba/members", {"message": "404 Group Not Found"}, status=404)
        run = run_check(monkeypatch, capsys, tmp_path,
                        gitlab_env(api, SQUASH, POLICYENGINE_TEAMS="security=acme/security,dba=acme/dba"),
                        provider="gitlab", policy=policy, previous=GL_PREV)
    assert run.rule("security-review")["status"] == "pass", run.out
    dba = run.rule("dba-review")
    assert dba["status"] == "error" and "HTTP 404" in dba["message"] and "dba" in dba["message"]
    assert run.code == 3


def test_github_one_failed_team_fails_only_the_rule_that_needs_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    policy = tmp_path / "teams.yml"
    policy.write_text(TWO_TEAMS)
    with FakeAPI("/api/v3") as api:
        w = GitHubWorld(api)
        reviewed_world(api, reviews=[w.review("frank", "APPROVED", HEAD), w.review("bob", "APPROVED", HEAD)])
        api.json("/orgs/acme/teams/dba/members", {"message": "Not Found"}, status=404)
        run = run_check(monkeypatch, capsys, tmp_path,
                        github_env(api, MERGE, POLICYENGINE_TEAMS="security=acme/security"),
                        policy=policy, previous=PREV)
    assert run.rule("security-review")["status"] == "pass", run.out
    dba = run.rule("dba-review")
    assert dba["status"] == "error" and "/orgs/acme/teams/dba/members" in dba["message"]
    assert run.code == 3


def test_github_mapping_names_another_team_slug() -> None:
    with FakeAPI("/api/v3") as api:
        w = reviewed_world(api)
        w.team("acme", "sec-engineers", ["sam"])
        change = gather_github(github_env(api, MERGE, POLICYENGINE_TEAMS="security=acme/sec-engineers"),
                               environment="production", teams=["security"],
                               previous_deploys=StaticHistory(PREV)).change
    assert change["teams"] == {"security": ["sam"]}


def test_gitlab_world_groups_need_no_mapping_under_the_projects_namespace() -> None:
    with FakeAPI("/api/v4") as api:
        approved_mr(api)
        change = gather_gitlab(gitlab_env(api, SQUASH), teams=["acme/security"],
                               previous_deploys=StaticHistory(GL_PREV)).change
    assert change["teams"] == {"acme/security": ["frank", "gina"]}


