"""The pipeline definitions are guarded: what a pipeline runs, at the trusted base and at the deployed commit.

Temporary git repositories: a base commit (the previous deploy) and the deployed commit. The
policy-owners rule must guard every file the pipeline runs: local actions, GitLab includes
(wildcards, nested, child pipelines, whatever their rules), a custom CI config path, the
install lock; a file included only by the old configuration too. What cannot be computed is
an error, never a pass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import NOW, change, review

from policyengine.engine import evaluate
from policyengine.facts import PipelineRequest
from policyengine.gather import gather_facts
from policyengine.language.loader import compose_all
from policyengine.models import Status
from policyengine.workspace.pipelines import gitlab_includes, include_glob, local_uses, read_pipeline
from policyengine.language.policy import parse_policy
from policyengine.workspace.files import Workspace

POLICY = b"""version: 1
name: prod
policy_owners: {users: [carol]}
rules:
  - id: peer-review
    type: approvals
    min_approvals: 1
    exclude: [author]
"""
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=60,
                          env={**os.environ, **GIT_ENV})
    return proc.stdout.strip()


def commit(repo: Path, files: dict[str, str | None], message: str = "c") -> str:
    for rel, text in files.items():
        path = repo / rel
        if text is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    return root


def owners(ch: dict[str, Any], root: Path, env: dict[str, str] | None = None,
           policy_file: str = "policies/prod.yml") -> Any:
    """Gather as `check` does (git, the CI variables), then judge the policy-owners rule."""
    from policyengine.gather import LivePipeline

    policy = parse_policy(POLICY, file=policy_file)
    facts = gather_facts(policy, ch, Workspace(root), pipeline=LivePipeline(env or {}, fetch=True))
    return next(r for r in evaluate(policy, facts, NOW).rules if r.id == "policy-owners")


def deploy(base: str | None, head: str, files: list[str], reviewers: tuple[str, ...] = ("bob",),
           platform: bool = True) -> dict[str, Any]:
    ch = change(commit=head, files_changed=files,
                reviews=[{**review(r, commit=head), "permission": "write"} for r in reviewers],
                pull_request={"number": 42, "author": "alice", "head_commit": head},
                commits=[{"sha": head, "author": "alice", "committer": "alice"}])
    if base is not None:
        ch["range"] = {"previous_commit": base, "commits": [{"sha": head, "pull_request": 42}], "pull_requests": []}
    ch["facts_source"] = "gitlab" if platform else "self-declared"
    return ch


# -- reading configurations -----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("include: ci/a.yml\n", ["ci/a.yml"]),
    ("include: [ci/a.yml, 'https://x.example/r.yml']\n", ["ci/a.yml"]),
    ("include:\n  - local: /ci/a.yml\n    rules: [{if: $X == '1'}]\n  - remote: https://x/y.yml\n"
     "  - template: Auto-DevOps.gitlab-ci.yml\n  - project: other/group\n    file: ci/o.yml\n", ["/ci/a.yml"]),
    ("include: {local: ci/a.yml}\n", ["ci/a.yml"]),
    ("job:\n  trigger:\n    include: ci/child.yml\n", ["ci/child.yml"]),
    ("job:\n  trigger:\n    include:\n      - local: ci/child.yml\n", ["ci/child.yml"]),
    (".l: &l {local: ci/merged.yml}\ninclude:\n  - <<: *l\n", ["ci/merged.yml"]),
    ("include:\n  - project: acme/payments\n    ref: main\n    file: [ci/self.yml]\n", ["ci/self.yml"]),
    ("spec:\n  inputs: {x: {default: y}}\n---\ninclude: ci/after-spec.yml\nb: !reference [a, script]\n",
     ["ci/after-spec.yml"]),
    ("include: ci/one.yml\ninclude: ci/two.yml\n", ["ci/one.yml", "ci/two.yml"]),  # a repeated key: both
])
def test_every_form_of_a_local_include_is_found(text: str, expected: list[str]) -> None:
    assert sorted(gitlab_includes(compose_all(text), frozenset({"acme/payments"}))) == sorted(expected)


def test_local_actions_are_found_in_workflows_and_composite_actions() -> None:
    text = ("jobs:\n  a:\n    steps:\n      - uses: actions/checkout@" + "0" * 40 + "\n      - uses: ./.github/actions/x\n"
            "  b:\n    uses: ./.github/workflows/reuse.yml\nruns:\n  using: composite\n  steps:\n"
            "    - uses: ./tools/y\n    - uses: docker://alpine\n")
    assert sorted(local_uses(compose_all(text))) == ["./.github/actions/x", "./.github/workflows/reuse.yml",
                                                      "./tools/y"]


@pytest.mark.parametrize(("written", "glob"), [
    ("/ci/a.yml", "ci/a.yml"), ("ci/./a.yml", "ci/a.yml"), ("ci/*.yml", "ci/*.yml"), ("ci/**.yml", "ci/**.yml"),
    ("ci/$CI_ENVIRONMENT_NAME.yml", "ci/*.yml"), ("ci/${STAGE}/x.yml", "ci/*/x.yml"), ("ci/[a].yml", "ci/?a?.yml"),
    ("../outside.yml", None),
])
def test_an_include_path_becomes_a_glob_that_guards_at_least_what_gitlab_reads(written: str, glob: str | None) -> None:
    assert include_glob(written) == glob


# -- the rule, on real repositories ---------------------------------------------------------------


def test_a_file_the_new_configuration_includes_is_guarded(repo: Path) -> None:
    base = commit(repo, {".gitlab-ci.yml": "deploy:\n  script: ./deploy.sh\n"})
    head = commit(repo, {".gitlab-ci.yml": "include: {local: ci/evil.yml}\n", "ci/evil.yml": "x:\n  script: ok\n"})
    out = owners(deploy(base, head, ["ci/evil.yml"]), repo)
    assert out.status is Status.FAIL and "ci/evil.yml" in out.message
    assert owners(deploy(base, head, ["ci/evil.yml"], ("carol",)), repo).status is Status.PASS


def test_a_file_only_the_old_configuration_included_is_still_guarded(repo: Path) -> None:
    base = commit(repo, {".gitlab-ci.yml": "include:\n  - local: ci/gate.yml\n", "ci/gate.yml": "g:\n  script: x\n"})
    head = commit(repo, {".gitlab-ci.yml": "deploy:\n  script: ./deploy.sh\n", "ci/gate.yml": "g:\n  script: y\n"})
    out = owners(deploy(base, head, ["ci/gate.yml"]), repo)
    assert out.status is Status.FAIL and "ci/gate.yml" in out.message


@pytest.mark.parametrize("include", ["ci/*.yml", "'/ci/**.yml'", "ci/$CI_ENVIRONMENT_NAME.yml"])
def test_wildcard_and_variable_includes_guard_every_file_they_could_read(repo: Path, include: str) -> None:
    base = commit(repo, {".gitlab-ci.yml": f"include:\n  - local: {include}\n", "ci/a.yml": "a:\n  script: x\n"})
    head = commit(repo, {"ci/new.yml": "n:\n  script: evil\n"})
    out = owners(deploy(base, head, ["ci/new.yml"]), repo)
    assert out.status is Status.FAIL and "ci/new.yml" in out.message


def test_nested_includes_and_child_pipelines_are_followed(repo: Path) -> None:
    base = commit(repo, {".gitlab-ci.yml": "include: ci/a.yml\n", "ci/a.yml": "include: [ci/b.yml]\n",
                         "ci/b.yml": "child:\n  trigger:\n    include: ci/child.yml\n",
                         "ci/child.yml": "include: {local: deploy/steps.yml}\n", "deploy/steps.yml": "s:\n  script: x\n"})
    head = commit(repo, {"deploy/steps.yml": "s:\n  script: evil\n"})
    out = owners(deploy(base, head, ["deploy/steps.yml"]), repo)
    assert out.status is Status.FAIL and "deploy/steps.yml" in out.message


def test_the_custom_ci_config_path_and_its_includes_are_guarded(repo: Path) -> None:
    base = commit(repo, {"ci/main.yml": "include: ci/jobs.yml\n", "ci/jobs.yml": "j:\n  script: x\n"})
    head = commit(repo, {"ci/main.yml": "include: ci/jobs.yml\nk:\n  script: y\n", "ci/jobs.yml": "j:\n  script: z\n"})
    assert owners(deploy(base, head, ["ci/main.yml", "ci/jobs.yml"]), repo).status is Status.PASS  # not known
    out = owners(deploy(base, head, ["ci/main.yml", "ci/jobs.yml"]), repo, env={"CI_CONFIG_PATH": "ci/main.yml"})
    assert out.status is Status.FAIL and "ci/main.yml" in out.message and "ci/jobs.yml" in out.message
    # Another project's file is that project's to guard: noted, not read.
    out = owners(deploy(base, head, ["src/a.py"]), repo, env={"CI_CONFIG_PATH": ".gitlab-ci.yml@acme/ci-configs"})
    assert out.status is Status.PASS and "another project" in " ".join(out.details["pipeline"]["notes"])


def test_a_local_action_a_workflow_uses_is_guarded_whole(repo: Path) -> None:
    wf = "on: push\njobs:\n  d:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: ./.github/actions/deploy\n"
    action = "runs:\n  using: composite\n  steps:\n    - uses: ./tools/sign\n"
    base = commit(repo, {".github/workflows/deploy.yml": wf, ".github/actions/deploy/action.yml": action,
                         ".github/actions/deploy/run.sh": "echo deploy\n", "tools/sign/action.yml": "runs: {}\n",
                         "tools/sign/sign.py": "print(1)\n"})
    head = commit(repo, {".github/actions/deploy/run.sh": "echo ALLOW\n", "tools/sign/sign.py": "print(2)\n"})
    out = owners(deploy(base, head, [".github/actions/deploy/run.sh", "tools/sign/sign.py"]), repo)
    assert out.status is Status.FAIL
    assert ".github/actions/deploy/run.sh" in out.message and "tools/sign/sign.py" in out.message
    assert owners(deploy(base, head, ["src/app.py"]), repo).status is Status.PASS


def test_a_workflow_using_the_repository_itself_as_an_action_guards_every_file(repo: Path) -> None:
    wf = "on: push\njobs:\n  d:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: ./\n"
    base = commit(repo, {".github/workflows/ci.yml": wf, "action.yml": "runs: {using: composite, steps: []}\n"})
    head = commit(repo, {"src/anything.py": "x = 1\n"})
    out = owners(deploy(base, head, ["src/anything.py"]), repo)
    assert out.status is Status.FAIL and "src/anything.py" in out.message


def test_the_install_lock_is_guarded_under_its_default_and_its_configured_name(repo: Path) -> None:
    base = commit(repo, {"README": "x\n"})
    head = commit(repo, {"policyengine-gate.lock": "x\n", "ci/gate.lock": "y\n"})
    assert owners(deploy(base, head, ["policyengine-gate.lock"]), repo).status is Status.FAIL
    out = owners(deploy(base, head, ["ci/gate.lock"]), repo, env={"POLICYENGINE_REQUIREMENTS": "ci/gate.lock"})
    assert out.status is Status.FAIL and "ci/gate.lock" in out.message


# -- fail closed -------------------------------------------------------------------------------------


def test_an_unparsable_configuration_is_an_error(repo: Path) -> None:
    base = commit(repo, {".gitlab-ci.yml": "include: ci/a.yml\n", "ci/a.yml": "a: [unclosed\n"})
    head = commit(repo, {"src/app.py": "x\n"})
    out = owners(deploy(base, head, ["src/app.py"], ("carol",)), repo)
    assert out.status is Status.ERROR
    assert "ci/a.yml" in out.message and "not valid YAML" in out.message


@pytest.mark.parametrize("base", [None, "1" * 40, "not-a-commit"])
def test_facts_from_the_code_host_without_a_readable_base_are_an_error(repo: Path, base: str | None) -> None:
    commit(repo, {".gitlab-ci.yml": "a:\n  script: x\n"})
    head = commit(repo, {"src/app.py": "x\n"})
    out = owners(deploy(base, head, ["src/app.py"], ("carol",)), repo)
    assert out.status is Status.ERROR and "base" in out.message


def test_a_deployed_commit_missing_from_the_repository_is_an_error(repo: Path, tmp_path: Path) -> None:
    base = commit(repo, {".gitlab-ci.yml": "a:\n  script: x\n"})
    out = owners(deploy(base, "2" * 40, ["src/app.py"], ("carol",)), repo)
    assert out.status is Status.ERROR and "deployed commit" in out.message
    plain = tmp_path / "plain"  # not a git checkout at all
    plain.mkdir()
    out = owners(deploy(base, base, ["src/app.py"], ("carol",)), plain)
    assert out.status is Status.ERROR and "not a git checkout" in out.message


def test_the_policy_git_commit_is_a_trusted_base(repo: Path) -> None:
    base = commit(repo, {".gitlab-ci.yml": "include: ci/old.yml\n", "ci/old.yml": "a:\n  script: x\n"})
    head = commit(repo, {".gitlab-ci.yml": "b:\n  script: y\n", "ci/old.yml": "a:\n  script: z\n"})
    from policyengine.gather import LivePipeline

    policy = parse_policy(POLICY, file=f"git:{base}:policies/prod.yml")
    import dataclasses

    policy = dataclasses.replace(policy, source={"kind": "git", "path": "policies/prod.yml", "commit": base})
    facts = gather_facts(policy, deploy(None, head, ["ci/old.yml"]), Workspace(repo), pipeline=LivePipeline({}))
    out = next(r for r in evaluate(policy, facts, NOW).rules if r.id == "policy-owners")
    assert out.status is Status.FAIL and "ci/old.yml" in out.message


def test_a_change_file_without_git_reads_the_workspace_and_notes_the_missing_base(tmp_path: Path) -> None:
    (tmp_path / "ci").mkdir()
    (tmp_path / ".gitlab-ci.yml").write_text("include: ci/x.yml\n")
    (tmp_path / "ci" / "x.yml").write_text("x:\n  script: y\n")
    ch = deploy(None, "3" * 40, ["ci/x.yml"], platform=False)
    out = owners(ch, tmp_path)
    assert out.status is Status.FAIL and "ci/x.yml" in out.message
    assert owners(deploy(None, "3" * 40, ["src/a.py"], platform=False), tmp_path).status is Status.PASS
    record = read_pipeline(Workspace(tmp_path), ch, None, {})
    assert record["source"] == "workspace" and any("was not read" in n for n in record["notes"])
    (tmp_path / "ci" / "x.yml").write_text("x: [broken\n")
    assert owners(ch, tmp_path).status is Status.ERROR  # unparsable is an error whatever the source


def test_a_judge_without_the_pipeline_fact_cannot_pass() -> None:
    from policyengine.facts import Facts
    from policyengine.language.policy import build_rules
    from policyengine.rules.base import Context

    rule = next(r for r in build_rules(parse_policy(POLICY, file="p.yml")) if r.spec.id == "policy-owners")
    assert PipelineRequest() in rule.needs()
    ch = change(files_changed=["src/a.py"])
    assert rule.evaluate(Context(change=ch, facts=Facts(change=ch), now=NOW)).status is Status.ERROR


# -- hostile repositories ------------------------------------------------------------------------------


def test_replacement_objects_and_git_variables_cannot_hide_an_include(repo: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    base = commit(repo, {".gitlab-ci.yml": "a:\n  script: x\n"})
    head = commit(repo, {".gitlab-ci.yml": "include: ci/evil.yml\n", "ci/evil.yml": "e:\n  script: x\n"})
    # refs/replace swaps the deployed .gitlab-ci.yml for an innocent blob, for every git command.
    innocent = subprocess.run(["git", "hash-object", "-w", "--stdin"], cwd=repo, input="a:\n  script: x\n",
                              capture_output=True, text=True, check=True).stdout.strip()
    real = git(repo, "rev-parse", f"{head}:.gitlab-ci.yml")
    git(repo, "replace", real, innocent)
    assert "evil" not in git(repo, "show", f"{head}:.gitlab-ci.yml")
    # GIT_DIR points at another repository whose commit does not include it.
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    out = owners(deploy(base, head, ["ci/evil.yml"]), repo)
    assert out.status is Status.FAIL and "ci/evil.yml" in out.message


def test_a_hook_or_fsmonitor_in_the_checkout_never_runs(repo: Path, tmp_path: Path) -> None:
    base = commit(repo, {".gitlab-ci.yml": "a:\n  script: x\n"})
    head = commit(repo, {"src/a.py": "x\n"})
    marker = tmp_path / "ran"
    script = tmp_path / "evil.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n")
    script.chmod(0o755)
    git(repo, "config", "core.fsmonitor", str(script))
    git(repo, "config", "core.hooksPath", str(tmp_path))
    (tmp_path / "post-checkout").write_text(script.read_text())
    assert owners(deploy(base, head, ["src/a.py"], ("carol",)), repo).status is Status.PASS
    assert not marker.exists()


def test_a_shallow_clone_fetches_the_base_by_id(repo: Path, tmp_path: Path) -> None:
    base = commit(repo, {".gitlab-ci.yml": "include: ci/old.yml\n", "ci/old.yml": "a:\n  script: x\n"})
    head = commit(repo, {".gitlab-ci.yml": "b:\n  script: y\n", "ci/old.yml": "a:\n  script: z\n"})
    git(repo, "config", "uploadpack.allowAnySHA1InWant", "true")
    shallow = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth=1", f"file://{repo}", str(shallow))
    assert subprocess.run(["git", "cat-file", "-e", base], cwd=shallow, capture_output=True).returncode != 0
    # The commit is fetched from the repository the platform names, never from the checkout's own
    # remote: an earlier step may point remote.origin.url elsewhere or give it an uploadpack command.
    marker = tmp_path / "PWNED"
    git(shallow, "config", "remote.origin.uploadpack", f"touch {marker}; git-upload-pack")
    out = owners(deploy(base, head, ["ci/old.yml"]), shallow, {"POLICYENGINE_REPOSITORY_URL": f"file://{repo}"})
    assert out.status is Status.FAIL and "ci/old.yml" in out.message
    assert not marker.exists(), "the checkout's uploadpack ran"
    # Judging without fetching (policy test, dry runs) never touches the network: the base is then missing.
    shallow2 = tmp_path / "shallow2"
    git(tmp_path, "clone", "-q", "--depth=1", f"file://{repo}", str(shallow2))
    record = read_pipeline(Workspace(shallow2), deploy(base, head, ["ci/old.yml"]), None, {})
    assert record["error"] and "not in the repository" in record["error"]


def test_without_a_platform_url_a_shallow_clone_does_not_fetch_from_its_own_remote(repo: Path, tmp_path: Path) -> None:
    base = commit(repo, {".gitlab-ci.yml": "include: ci/old.yml\n", "ci/old.yml": "a:\n  script: x\n"})
    head = commit(repo, {".gitlab-ci.yml": "b:\n  script: y\n", "ci/old.yml": "a:\n  script: z\n"})
    git(repo, "config", "uploadpack.allowAnySHA1InWant", "true")
    shallow = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth=1", f"file://{repo}", str(shallow))
    marker = tmp_path / "PWNED"
    git(shallow, "config", "remote.origin.uploadpack", f"touch {marker}; git-upload-pack")
    record = read_pipeline(Workspace(shallow), deploy(base, head, ["ci/old.yml"]), None, {}, fetch=True)
    assert record["error"] and "not in the repository" in record["error"]  # fails closed: an error, not a pass
    assert not marker.exists()


# -- check: recorded in the bundle, replayed from it -------------------------------------------------


def test_check_records_the_pipeline_files_and_replay_reads_them(repo: Path, tmp_path: Path) -> None:
    (repo / "policies").mkdir()
    (repo / "policies" / "prod.yml").write_bytes(POLICY)
    base = commit(repo, {".gitlab-ci.yml": "include: ci/gate.yml\n", "ci/gate.yml": "g:\n  script: x\n"})
    head = commit(repo, {"ci/gate.yml": "g:\n  script: echo ALLOW\n"})
    ch = deploy(base, head, ["ci/gate.yml"], platform=False)
    ch.pop("facts_source")
    (tmp_path / "change.json").write_text(json.dumps(ch))
    evidence = tmp_path / "evidence"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "GITLAB_", "CI_", "POLICYENGINE_"))
           and k != "CI"}
    proc = subprocess.run([sys.executable, "-m", "policyengine", "check", "--policy", str(repo / "policies/prod.yml"),
                           "--change", str(tmp_path / "change.json"), "--workspace", str(repo),
                           "--now", "2026-11-24T15:00:00Z", "--evidence-dir", str(evidence),
                           "--json", str(tmp_path / "d.json")], capture_output=True, text=True, env=env, timeout=120)
    doc = json.loads((tmp_path / "d.json").read_text())
    rule = next(r for r in doc["rules"] if r["id"] == "policy-owners")
    assert (proc.returncode, rule["status"]) == (1, "fail"), proc.stdout + proc.stderr
    assert "ci/gate.yml" in rule["message"]
    import zipfile

    [bundle] = evidence.rglob("*.zip")
    with zipfile.ZipFile(bundle) as zf:
        record = json.loads(zf.read("raw/pipeline.json"))
    assert record["base"] == base and record["deployed"] == head and "ci/gate.yml" in record["guard"]
    replay = subprocess.run([sys.executable, "-m", "policyengine", "evidence", "replay", doc["evidence"]["bundle_id"],
                             "--archive", str(evidence)], capture_output=True, text=True, env=env, timeout=120)
    assert replay.returncode == 0, replay.stdout + replay.stderr


def test_check_warns_on_every_run_that_a_policy_without_owners_guards_nothing(tmp_path: Path) -> None:
    repo_root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "GITLAB_", "CI_", "POLICYENGINE_"))
           and k != "CI"}
    unowned = tmp_path / "unowned.yml"
    unowned.write_bytes(POLICY.replace(b"policy_owners: {users: [carol]}\n", b""))

    def run(policy: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "policyengine", "check", "--policy", str(policy),
                               "--change", str(repo_root / "examples" / "change-allowed.yml"),
                               "--workspace", str(repo_root / "examples" / "workspace"), "--now", "2026-11-24T15:00:00Z",
                               "--evidence-dir", str(tmp_path / "evidence")], capture_output=True, text=True, env=env,
                              timeout=120)

    res = run(unowned)
    lines = [line for line in res.stderr.splitlines() if line.startswith("warning: the policy names no policy_owners")]
    assert len(lines) == 1, res.stdout + res.stderr
    assert "pipeline definitions" in lines[0] and "unguarded" in lines[0]
    owned = tmp_path / "owned.yml"
    owned.write_bytes(POLICY)
    res = run(owned)
    assert "policy_owners" not in res.stdout + res.stderr, res.stdout + res.stderr
    for bundled in ("soc2-production", "soc2-small-team"):
        res = run(repo_root / "policies" / f"{bundled}.yml")
        assert "PASS  policy-owners" in res.stdout, res.stdout + res.stderr
        assert "warning: the policy names no policy_owners" not in res.stderr, res.stderr


def test_check_reads_the_old_configuration_at_the_commit_of_the_trusted_policy(repo: Path, tmp_path: Path) -> None:
    """`--policy git:origin/main:...` names the trusted base: a dropped include still guards its file."""
    commit(repo, {"policies/prod.yml": POLICY.decode(), ".gitlab-ci.yml": "include: ci/old.yml\n",
                  "ci/old.yml": "gate:\n  script: policyengine check\n"})
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(origin))
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(origin), str(work))
    git(work, "checkout", "-q", "-b", "change")
    head = commit(work, {".gitlab-ci.yml": "deploy:\n  script: ./deploy.sh\n",
                         "ci/old.yml": "gate:\n  script: echo ALLOW\n"})
    ch = deploy(None, head, ["ci/old.yml", ".gitlab-ci.yml"], reviewers=("bob",), platform=False)
    ch.pop("facts_source")
    (tmp_path / "change.json").write_text(json.dumps(ch))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "GITLAB_", "CI_", "POLICYENGINE_"))
           and k != "CI"}
    env.update(GIT_ENV)
    proc = subprocess.run([sys.executable, "-m", "policyengine", "check", "--policy", "git:origin/main:policies/prod.yml",
                           "--change", str(tmp_path / "change.json"), "--workspace", str(work),
                           "--now", "2026-11-24T15:00:00Z", "--evidence-dir", str(tmp_path / "evidence"),
                           "--json", str(tmp_path / "d.json")], capture_output=True, text=True, env=env, timeout=120,
                          cwd=work)
    doc = json.loads((tmp_path / "d.json").read_text())
    rule = next(r for r in doc["rules"] if r["id"] == "policy-owners")
    assert rule["status"] == "fail", proc.stdout + proc.stderr
    assert "ci/old.yml" in rule["message"] and "ci/old.yml" in rule["details"]["guarded"]
