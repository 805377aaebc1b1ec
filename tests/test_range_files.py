"""The files of the whole range: a docs-only request that also ships an earlier, never-deployed
code merge must not escape ``when.paths``.

When the change range is known, ``files_changed`` holds the files of every commit since the
previous verified deploy (GitHub's compare ``files``, GitLab's compare ``diffs``) together with the
deployed request's own. When the range is unknown, or its file list may be cut short,
``files_changed`` is unavailable and rules with ``when.paths`` apply (fail closed).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_servers import (
    FakeAPI,
    GitHubWorld,
    GitLabWorld,
    StaticHistory,
    github_env,
    gitlab_env,
    sha_of,
)
from test_provider_github import run_check

from policyengine.providers import http
from policyengine.providers.github import gather_github
from policyengine.providers.gitlab import gather_gitlab

PREV = sha_of("files-prev")
C41, M41 = sha_of("files-c41"), sha_of("files-m41")
C42, M42 = sha_of("files-c42"), sha_of("files-m42")

POLICY = """version: 1
name: range-files
rules:
  - id: code-review
    type: approvals
    min_approvals: 2
    exclude: [author]
    when:
      paths: ["src/**"]
"""


@pytest.fixture(autouse=True)
def _no_real_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "SLEEP", lambda s: None)


def github_two_prs(api: FakeAPI, range_files: list[str] | None = None) -> GitHubWorld:
    """#41 (src/pay.py, merged, never deployed) then #42 (docs only, deployed, one approval)."""
    w = GitHubWorld(api)
    w.pull(41, author="mallory", head=C41, merge_commit=M41, merged_by="mallory", commits=[w.commit(C41, "mallory")],
           files=["src/pay.py"])
    w.pull(42, author="alice", head=C42, merge_commit=M42, merged_by="dana", commits=[w.commit(C42, "alice")],
           reviews=[w.review("bob", "APPROVED", C42)], files=["docs/readme.md"])
    w.checks(M42)
    w.deployments("production", [(8, PREV, ["success"])])
    w.compare(PREV, M42, [w.commit(C41, "mallory"), w.commit(M41, "mallory", "web-flow"), w.commit(C42, "alice"),
                          w.commit(M42, "alice", "web-flow")],
              files=["src/pay.py", "docs/readme.md"] if range_files is None else range_files)
    return w


def test_github_files_changed_are_those_of_the_whole_range() -> None:
    with FakeAPI("/api/v3") as api:
        github_two_prs(api)
        change = gather_github(github_env(api, M42), environment="production",
                               previous_deploys=StaticHistory(PREV)).change
    assert sorted(change["files_changed"]) == ["docs/readme.md", "src/pay.py"]
    assert "files_changed" not in change.get("unavailable", {})


@pytest.mark.parametrize("history", ["trusted", "unknown"])
def test_github_when_paths_rule_applies_to_an_earlier_code_merge(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, history: str) -> None:
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY)
    with FakeAPI("/api/v3") as api:
        github_two_prs(api)
        run = run_check(monkeypatch, capsys, tmp_path, github_env(api, M42), policy=policy,
                        previous=PREV if history == "trusted" else None)
    assert run.code == 1, run.out
    assert run.rule("code-review")["status"] == "fail"  # applied (not skipped), and #42 has 1 of 2


def test_github_compare_file_list_at_the_api_cap_is_unavailable() -> None:
    with FakeAPI("/api/v3") as api:
        github_two_prs(api, range_files=[f"docs/{i}.md" for i in range(300)])
        change = gather_github(github_env(api, M42), environment="production",
                               previous_deploys=StaticHistory(PREV)).change
    assert "files_changed" not in change and "300" in change["unavailable"]["files_changed"]


def test_github_compare_failure_makes_files_unavailable() -> None:
    with FakeAPI("/api/v3") as api:
        github_two_prs(api)
        api.json(f"/repos/acme/payments/compare/{PREV}...{M42}", {"message": "boom"}, status=422)
        change = gather_github(github_env(api, M42), environment="production",
                               previous_deploys=StaticHistory(PREV)).change
    assert "files_changed" not in change and "files_changed" in change["unavailable"]
    assert "range" in change["unavailable"]


def gitlab_two_mrs(api: FakeAPI, *, timeout: bool = False) -> GitLabWorld:
    w = GitLabWorld(api)
    w.merge_request(41, author="mallory", head=C41, squash_commit=M41, merged_by="mallory",
                    commits=[w.commit(C41, "mallory")], files=["src/pay.py"])
    w.merge_request(42, author="alice", head=C42, squash_commit=M42, merged_by="dana",
                    commits=[w.commit(C42, "alice")], approvers=["bob"], files=["docs/readme.md"])
    w.project_approvals(True)
    w.jobs(61, M42, [("build", "success")])
    w.test_summary(61)
    w.deployments([(12, PREV)])
    w.compare([w.commit(M41, "mallory"), w.commit(M42, "alice")], files=["src/pay.py", "docs/readme.md"])
    if timeout:
        body = {"commit": None, "commits": [w.commit(M41, "mallory"), w.commit(M42, "alice")],
                "diffs": [], "compare_timeout": True, "compare_same_ref": False}
        api.json(f"{w.base}/repository/compare", body)
    return w


def test_gitlab_files_changed_are_those_of_the_whole_range() -> None:
    with FakeAPI("/api/v4") as api:
        gitlab_two_mrs(api)
        change = gather_gitlab(gitlab_env(api, M42), previous_deploys=StaticHistory(PREV)).change
        assert sorted(change["files_changed"]) == ["docs/readme.md", "src/pay.py"]
        gitlab_two_mrs(api, timeout=True)
        change = gather_gitlab(gitlab_env(api, M42), previous_deploys=StaticHistory(PREV)).change
        assert "compare_timeout" in change["unavailable"]["files_changed"]


@pytest.mark.parametrize("history", ["trusted", "unknown"])
def test_gitlab_when_paths_rule_applies_to_an_earlier_code_merge(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, history: str) -> None:
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY)
    with FakeAPI("/api/v4") as api:
        gitlab_two_mrs(api)
        run = run_check(monkeypatch, capsys, tmp_path, gitlab_env(api, M42), provider="gitlab", policy=policy,
                        previous=PREV if history == "trusted" else None)
    assert run.code == 1, run.out
    assert run.rule("code-review")["status"] == "fail"
