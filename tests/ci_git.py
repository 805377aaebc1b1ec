"""Real git repositories shaped like CI deploys, and the variables GitHub and GitLab set for them.

``deploy_world`` builds a platform repository (a bare repository at
``platform/acme/payments.git``, reached over ``file://`` as the platform's URL) whose default
branch held a strict policy at commit ``strict``; a feature commit ``weak`` lowers
``min_approvals`` and deletes ``policy_owners``; then one of these deploys happens:

* ``push``: a fast-forward push of ``weak`` to main (deployed: ``weak``; before: ``strict``);
* ``merge``: a merge commit of ``weak`` into main (deployed: the merge; its first parent: ``strict``);
* ``request``: a pull or merge request pipeline (deployed: ``weak``, the branch head; main stays
  at ``strict``, which is the request's target branch head);
* ``main-squash``: the weakening committed straight on main with no ``before`` (a squash or
  rebase merge the platform recorded no earlier state for).

``ci_env`` gives the variables of the matching GitHub or GitLab run; the CI checkout is a clone
at the deployed commit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
STRICT = """version: 1
name: prod
policy_owners: {users: [carol]}
rules:
  - id: peer-review
    type: approvals
    min_approvals: 2
    exclude: [author]
"""
WEAK = """version: 1
name: prod
rules:
  - id: peer-review
    type: approvals
    min_approvals: 1
    exclude: [author]
"""
HEAD = "9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6"
CHANGE = f"""repository: acme/payments
environment: production
commit: {HEAD}
deployer: dana
files_changed: [policies/prod.yml]
pull_request: {{number: 42, author: alice, head_commit: {HEAD}}}
commits:
  - {{sha: {HEAD}, author: alice, committer: alice}}
reviews:
  - {{user: bob, state: approved, commit: {HEAD}, submitted_at: "2026-11-23T15:00:00Z"}}
"""
ZERO = "0" * 40
TOKEN = "ghs_" + "S" * 36


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=60,
                          env={**os.environ, **GIT_ENV})
    return proc.stdout.strip()


def deploy_world(tmp: Path, shape: str, files: dict[str, tuple[str, str]] | None = None) -> dict[str, Any]:
    """The repositories of one deploy (see the module docstring). ``files``: more paths with
    their (main's, the change's) contents, e.g. a waivers file the change adds a waiver to."""
    seed = tmp / "seed"
    (seed / "policies").mkdir(parents=True)
    git(seed, "init", "-q", "-b", "main")
    (seed / "policies" / "prod.yml").write_text(STRICT, encoding="utf-8")
    for rel, (before, _) in (files or {}).items():
        (seed / rel).parent.mkdir(parents=True, exist_ok=True)
        (seed / rel).write_text(before, encoding="utf-8")
    git(seed, "add", ".")
    git(seed, "commit", "-q", "-m", "strict policy")
    strict = git(seed, "rev-parse", "HEAD")
    git(seed, "checkout", "-q", "-b", "weaken")
    (seed / "policies" / "prod.yml").write_text(WEAK, encoding="utf-8")
    for rel, (_, after) in (files or {}).items():
        (seed / rel).write_text(after, encoding="utf-8")
    git(seed, "commit", "-q", "-am", "one approval is enough")
    weak = git(seed, "rev-parse", "HEAD")
    git(seed, "checkout", "-q", "main")
    if shape == "push":
        git(seed, "merge", "-q", "--ff-only", "weaken")
        deployed = weak
    elif shape == "merge":
        (seed / "README").write_text("main moved on\n", encoding="utf-8")  # a true merge, not a fast-forward
        git(seed, "add", "README")
        git(seed, "commit", "-q", "-m", "unrelated")
        strict = git(seed, "rev-parse", "HEAD")
        git(seed, "merge", "-q", "--no-ff", "-m", "Merge weaken", "weaken")
        deployed = git(seed, "rev-parse", "HEAD")
    elif shape == "main-squash":
        git(seed, "merge", "-q", "--squash", "weaken")
        git(seed, "commit", "-q", "-m", "Squashed weaken")
        deployed = git(seed, "rev-parse", "HEAD")
    elif shape == "request":
        deployed = weak
    else:
        raise ValueError(shape)
    origin = tmp / "platform" / "acme" / "payments.git"
    origin.parent.mkdir(parents=True)
    git(tmp, "clone", "-q", "--bare", str(seed), str(origin))
    work = tmp / "work"
    git(tmp, "clone", "-q", f"file://{origin}", str(work))
    git(work, "checkout", "-q", deployed)
    (tmp / "change.yml").write_text(CHANGE, encoding="utf-8")
    return {"tmp": tmp, "origin": origin, "work": work, "change": tmp / "change.yml", "strict": strict,
            "weak": weak, "deployed": deployed, "shape": shape}


def ci_env(world: dict[str, Any], platform: str, event: str | None = None, **extra: str) -> dict[str, str]:
    """The variables of the GitHub or GitLab run deploying ``world`` (``event``: another event or
    pipeline source than the deploy's own, e.g. ``workflow_dispatch``, ``schedule``, ``web``)."""
    tmp, shape, deployed, strict = world["tmp"], world["shape"], world["deployed"], world["strict"]
    if platform == "github":
        name = event or ("pull_request" if shape == "request" else "push")
        payload: dict[str, Any] = {"repository": {"default_branch": "main", "full_name": "acme/payments"}}
        if name == "push" and shape == "push":
            payload["before"] = strict
        elif name == "push" and shape == "main-squash":
            payload["before"] = ZERO  # pushed with no earlier state recorded
        # merge: no before recorded, so the merge commit's first parent is the fallback
        if name == "pull_request":
            payload["pull_request"] = {"number": 42, "base": {"sha": strict, "ref": "main"},
                                       "head": {"sha": world["weak"], "ref": "weaken"}}
        path = tmp / f"event-{name}.json"
        path.write_text(json.dumps(payload), encoding="utf-8")
        env = {"GITHUB_ACTIONS": "true", "CI": "true", "GITHUB_SERVER_URL": f"file://{tmp}/platform",
               "GITHUB_REPOSITORY": "acme/payments", "GITHUB_SHA": deployed, "GITHUB_EVENT_NAME": name,
               "GITHUB_EVENT_PATH": str(path), "GITHUB_REF": "refs/heads/main", "GITHUB_TOKEN": TOKEN}
    else:
        source = event or ("merge_request_event" if shape == "request" else "push")
        env = {"GITLAB_CI": "true", "CI": "true", "CI_REPOSITORY_URL": f"file://{world['origin']}",
               "CI_COMMIT_SHA": deployed, "CI_PIPELINE_SOURCE": source, "CI_DEFAULT_BRANCH": "main",
               "CI_PROJECT_PATH": "acme/payments", "CI_JOB_TOKEN": "glcbt-" + "J" * 20,
               "CI_COMMIT_BEFORE_SHA": strict if source == "push" and shape == "push" else ZERO}
        if source == "merge_request_event":
            env["CI_MERGE_REQUEST_TARGET_BRANCH_SHA"] = strict
    return {**env, **extra}


def clean_env(**extra: str) -> dict[str, str]:
    """The test process's variables without any CI, GitHub, GitLab or policyengine variable."""
    drop = ("POLICYENGINE_", "GITHUB_", "GITLAB_", "CI_", "RUNNER_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop) and k not in ("CI", *_MARKERS)}
    return {**env, **GIT_ENV, **extra}


_MARKERS = ("JENKINS_URL", "TF_BUILD", "BUILDKITE", "CIRCLECI", "TEAMCITY_VERSION", "BITBUCKET_BUILD_NUMBER",
            "CODEBUILD_BUILD_ID", "DRONE", "TRAVIS")


def run_check(world: dict[str, Any], policy: str, *extra: str, env: dict[str, str] | None = None
              ) -> tuple[int, dict[str, Any], str]:
    """``policyengine check`` in the CI checkout, with ``env`` (a CI's variables) and the change file."""
    out = world["tmp"] / "decision.json"
    if out.exists():
        out.unlink()
    proc = subprocess.run(
        [sys.executable, "-m", "policyengine", "check", "--policy", policy, "--change", str(world["change"]),
         "--workspace", str(world["work"]), "--evidence-dir", str(world["tmp"] / "evidence"), "--json", str(out),
         *extra],
        cwd=world["work"], capture_output=True, text=True, timeout=180, check=False, env=clean_env(**(env or {})))
    doc = json.loads(out.read_text("utf-8")) if out.exists() else {}
    return proc.returncode, doc, proc.stdout + proc.stderr
