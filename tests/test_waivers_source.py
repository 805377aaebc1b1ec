"""A change must not waive its own rules: the waivers come from the trusted policy source.

Temporary git repositories as in test_policy_source.py: a bare "origin" whose main holds the
policy and the waivers file, and a clone (the CI checkout) on a branch whose change adds a
waiver of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

HEAD = "9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6"
POLICY = """version: 1
name: prod
policy_owners: {users: [carol]}
rules:
  - id: peer-review
    type: approvals
    min_approvals: 2
    exclude: [author]
"""
# Approved ten days ago, expiring in two months: the waiver is current on any date the suite runs
# (these runs are under CI, where the gate reads the wall clock and refuses --now).
_TODAY = datetime.now(timezone.utc).date()
WAIVERS_MAIN = f"""waivers:
  - rule: peer-review
    scope: {{repository: acme/other}}
    reason: "the other team is two people for a while"
    approved_by: carol
    approved_at: {_TODAY - timedelta(days=10)}
    expires: {_TODAY + timedelta(days=60)}
"""
# What the change under judgement writes into its own checkout.
WAIVERS_CHANGE = WAIVERS_MAIN.replace("acme/other", "acme/payments")
CHANGE = f"""repository: acme/payments
environment: production
commit: {HEAD}
deployer: dana
files_changed: [src/app.py]
pull_request: {{number: 42, author: alice, head_commit: {HEAD}}}
commits:
  - {{sha: {HEAD}, author: alice, committer: alice}}
reviews:
  - {{user: bob, state: approved, commit: {HEAD}, submitted_at: "2026-11-23T15:00:00Z"}}
"""
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=60,
                          env={**os.environ, **GIT_ENV})
    return proc.stdout.strip()


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    seed = tmp_path / "seed"
    (seed / "policies").mkdir(parents=True)
    git(seed, "init", "-q", "-b", "main")
    (seed / "policies" / "prod.yml").write_text(POLICY, encoding="utf-8")
    (seed / "policies" / "waivers.yml").write_text(WAIVERS_MAIN, encoding="utf-8")
    git(seed, "add", ".")
    git(seed, "commit", "-q", "-m", "policy and waivers")
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(origin))
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(origin), str(work))
    git(work, "checkout", "-q", "-b", "self-waiver")
    (work / "policies" / "waivers.yml").write_text(WAIVERS_CHANGE, encoding="utf-8")
    git(work, "commit", "-q", "-am", "waive my own review")
    git(work, "push", "-q", "origin", "self-waiver")  # a merge request pipeline deploys the pushed branch
    (tmp_path / "change.yml").write_text(CHANGE, encoding="utf-8")
    return {"tmp": tmp_path, "origin": origin, "work": work, "change": tmp_path / "change.yml"}


def request_pipeline(world: dict[str, Path]) -> dict[str, str]:
    """What the platform says of a merge request pipeline: its repository, the deployed commit
    (the branch head) and the target branch's head (main before the change)."""
    return {"CI_REPOSITORY_URL": f"file://{world['origin']}", "CI_COMMIT_SHA": git(world["work"], "rev-parse", "HEAD"),
            "CI_PIPELINE_SOURCE": "merge_request_event",
            "CI_MERGE_REQUEST_TARGET_BRANCH_SHA": git(world["origin"], "rev-parse", "main")}


def check(world: dict[str, Path], policy: str, waivers: str, ci: dict[str, str] | None = None,
          change: str | None = None) -> tuple[int, dict, str]:
    out = world["tmp"] / "decision.json"
    if out.exists():
        out.unlink()
    if change is not None:
        world["change"].write_text(change, encoding="utf-8")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("POLICYENGINE_", "GITHUB_", "GITLAB_", "CI_")) and k != "CI"}
    proc = subprocess.run(
        [sys.executable, "-m", "policyengine", "check", "--policy", policy, "--waivers", waivers,
         "--change", str(world["change"]), "--workspace", str(world["work"]),
         "--evidence-dir", str(world["tmp"] / "evidence"), "--json", str(out)],
        cwd=world["work"], capture_output=True, text=True, timeout=120, check=False,
        env={**env, **GIT_ENV, **({**request_pipeline(world), **ci} if ci else {})})
    doc = json.loads(out.read_text("utf-8")) if out.exists() else {}
    return proc.returncode, doc, proc.stdout + proc.stderr


def test_the_checkout_copy_of_the_waivers_lets_a_change_waive_its_own_rule(world: dict[str, Path]) -> None:
    # Outside CI a plain file is read as given: the hole a trusted source closes.
    code, doc, out = check(world, "policies/prod.yml", "policies/waivers.yml")
    assert (code, doc["decision"]) == (0, "allow"), out
    assert doc["rules"][0]["status"] == "waived"


def test_waivers_from_git_ignore_the_changes_own_waiver(world: dict[str, Path]) -> None:
    code, doc, out = check(world, "git:origin/main:policies/prod.yml", "git:origin/main:policies/waivers.yml",
                           ci={"CI": "true"})
    assert (code, doc["decision"]) == (1, "deny"), out
    assert doc["rules"][0]["status"] == "fail"
    assert doc["waivers_considered"][0]["status"] == "out_of_scope"
    source = doc["policy"]["waivers_file"]["source"]
    assert source["commit"] == git(world["origin"], "rev-parse", "main")
    assert source["blob"] == git(world["origin"], "rev-parse", "main:policies/waivers.yml")


def test_waivers_from_another_repository_by_url(world: dict[str, Path]) -> None:
    code, doc, out = check(world, f"git+file://{world['origin']}#main:policies/prod.yml",
                           f"git+file://{world['origin']}#main:policies/waivers.yml", ci={"GITLAB_CI": "true"})
    assert (code, doc["decision"]) == (1, "deny"), out
    assert doc["policy"]["waivers_file"]["source"]["url"] == f"file://{world['origin']}"


@pytest.mark.parametrize("ci", [{"CI": "true"}, {"GITHUB_ACTIONS": "true"}, {"GITLAB_CI": "true"}])
@pytest.mark.parametrize("waivers", ["policies/waivers.yml", "./policies/../policies/waivers.yml", "ABSOLUTE"])
def test_under_ci_a_trusted_policy_refuses_waivers_from_the_workspace(world: dict[str, Path], ci: dict[str, str],
                                                                     waivers: str) -> None:
    spec = str(world["work"] / "policies" / "waivers.yml") if waivers == "ABSOLUTE" else waivers
    code, doc, out = check(world, "git:origin/main:policies/prod.yml", spec, ci=ci)
    assert code == 2, out
    assert doc == {}
    assert "--waivers" in out and "trusted source" in out and "git:REF:PATH" in out
    assert "Traceback" not in out


def test_a_missing_waivers_object_in_git_denies_and_never_falls_back(world: dict[str, Path]) -> None:
    code, doc, out = check(world, "git:origin/main:policies/prod.yml", "git:origin/main:policies/nope.yml",
                           ci={"CI": "true"})
    assert code == 3 and doc == {}
    assert "policies/nope.yml does not exist at origin/main" in out


def test_a_change_that_edits_the_trusted_waivers_file_needs_an_owner(world: dict[str, Path]) -> None:
    edits = CHANGE.replace("files_changed: [src/app.py]", "files_changed: [policies/waivers.yml]")
    code, doc, out = check(world, "git:origin/main:policies/prod.yml", "git:origin/main:policies/waivers.yml",
                           ci={"CI": "true"}, change=edits)
    owners = next(r for r in doc["rules"] if r["id"] == "policy-owners")
    assert owners["status"] == "fail" and "policies/waivers.yml" in owners["message"], out
    assert "policies/waivers.yml" in owners["details"]["guarded"]
    assert code == 1


@pytest.mark.parametrize("ref", ["HEAD", "HEAD~0", "@", "HEAD^{commit}", "FETCH_HEAD"])
def test_under_ci_waivers_from_the_checked_out_commit_are_refused(world: dict[str, Path], ref: str) -> None:
    # git:HEAD:... is the change's own commit: the self-waiver again, through git.
    code, doc, out = check(world, "git:origin/main:policies/prod.yml", f"git:{ref}:policies/waivers.yml",
                           ci={"CI": "true"})
    assert code == 2 and doc == {}, out
    assert "commit being deployed" in out and "Traceback" not in out
