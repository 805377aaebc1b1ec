"""A policy no change can weaken: --policy git:REF:PATH and git+URL#REF:PATH, in temporary
git repositories (a bare "remote" and a clone as the CI checkout)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from policyengine.language.policysource import UNTRUSTED_OUTSIDE_CI, _public_url, parse_spec

REPO = Path(__file__).resolve().parents[1]
POLICY = """version: 1
name: prod
rules:
  - id: peer-review
    type: approvals
    min_approvals: {n}
    exclude: [author]
"""
CHANGE = """repository: acme/payments
environment: production
commit: 9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6
deployer: dana
pull_request: {number: 42, author: alice, head_commit: 9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6}
reviews:
  - {user: bob, state: approved, commit: 9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6, submitted_at: "2026-11-23T15:00:00Z"}
"""
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=60,
                          env={**os.environ, **GIT_ENV})
    return proc.stdout.strip()


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    """origin (bare) whose main holds the strict policy; a clone on a branch that weakens it."""
    seed = tmp_path / "seed"
    (seed / "policies").mkdir(parents=True)
    git(seed, "init", "-q", "-b", "main")
    (seed / "policies" / "prod.yml").write_text(POLICY.format(n=2), encoding="utf-8")
    git(seed, "add", ".")
    git(seed, "commit", "-q", "-m", "strict policy")
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(origin))
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(origin), str(work))
    git(work, "checkout", "-q", "-b", "weaken")
    (work / "policies" / "prod.yml").write_text(POLICY.format(n=1), encoding="utf-8")
    git(work, "commit", "-q", "-am", "one approval is enough")
    (tmp_path / "change.yml").write_text(CHANGE, encoding="utf-8")
    return {"tmp": tmp_path, "origin": origin, "work": work, "change": tmp_path / "change.yml"}


def check(world: dict[str, Path], policy: str, *extra: str, env: dict[str, str] | None = None) -> tuple[int, dict, str]:
    out = world["tmp"] / "decision.json"
    if out.exists():
        out.unlink()
    proc = subprocess.run(
        [sys.executable, "-m", "policyengine", "check", "--policy", policy, "--change", str(world["change"]),
         "--workspace", str(world["work"]), "--now", "2026-11-24T15:00:00Z",
         "--evidence-dir", str(world["tmp"] / "evidence"), "--json", str(out), *extra],
        cwd=world["work"], capture_output=True, text=True, timeout=120, check=False,
        env={**{k: v for k, v in os.environ.items() if not k.startswith(("POLICYENGINE_", "GITHUB_", "GITLAB_"))},
             **GIT_ENV, **(env or {})})
    doc = json.loads(out.read_text("utf-8")) if out.exists() else {}
    return proc.returncode, doc, proc.stdout + proc.stderr


def test_the_checkout_copy_is_weakened_by_the_change(world: dict[str, Path]) -> None:
    code, doc, _ = check(world, "policies/prod.yml")
    assert (code, doc["decision"]) == (0, "allow")  # the hole a trusted source closes


def test_a_change_that_edits_its_own_policy_is_judged_by_the_target_branch(world: dict[str, Path]) -> None:
    code, doc, out = check(world, "git:origin/main:policies/prod.yml")
    assert (code, doc["decision"]) == (1, "deny"), out
    assert "0 of 2" in doc["rules"][0]["message"] or "1 of 2" in doc["rules"][0]["message"]
    blob = git(world["origin"], "rev-parse", "main:policies/prod.yml")
    source = doc["policy"]["source"]
    assert source == {"kind": "git", "path": "policies/prod.yml", "ref": "origin/main",
                      "commit": git(world["origin"], "rev-parse", "main"), "blob": blob,
                      "note": UNTRUSTED_OUTSIDE_CI}  # outside CI: read as given, and said so
    assert "policy: note: not a trusted source" in out
    bundle = next((world["tmp"] / "evidence").glob("bundles/*/*/*.zip"))
    import zipfile

    with zipfile.ZipFile(bundle) as zf:
        assert json.loads(zf.read("decision.json"))["policy"]["source"]["blob"] == blob
        assert zf.read("policy/prod.yml").decode() == POLICY.format(n=2)


def test_a_rewritten_local_remote_tracking_ref_is_fetched_fresh(world: dict[str, Path]) -> None:
    # An earlier step of the job points origin/main at the weakening commit.
    git(world["work"], "update-ref", "refs/remotes/origin/main", "weaken")
    code, doc, out = check(world, "git:origin/main:policies/prod.yml")
    assert (code, doc["decision"]) == (1, "deny"), out
    assert doc["policy"]["source"]["commit"] == git(world["origin"], "rev-parse", "main")


@pytest.mark.parametrize(("spec", "message"), [
    ("git:origin/main:policies/missing.yml", "policies/missing.yml does not exist at origin/main"),
    ("git:origin/nope:policies/prod.yml", "could not fetch origin/nope fresh from origin"),
    ("git:v9.9:policies/prod.yml", "git ref 'v9.9' does not name a commit"),
    ("git:origin/main:policies", "is a tree, not a file"),
])
def test_a_missing_object_denies_and_never_falls_back(world: dict[str, Path], spec: str, message: str) -> None:
    code, doc, out = check(world, spec)
    assert code == 3, out
    assert message in out and "Traceback" not in out
    assert doc == {}  # nothing was judged with the checkout's copy


def test_outside_a_git_repository_the_source_cannot_be_read(world: dict[str, Path], tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    proc = subprocess.run([sys.executable, "-m", "policyengine", "check", "--policy", "git:main:p.yml",
                           "--change", str(world["change"]), "--workspace", str(plain),
                           "--evidence-dir", str(tmp_path / "ev")],
                          capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "GIT_CEILING_DIRECTORIES": str(tmp_path)})
    assert proc.returncode == 3 and "is not in a git repository" in proc.stderr


def test_another_repository_by_url(world: dict[str, Path]) -> None:
    code, doc, out = check(world, f"git+file://{world['origin']}#main:policies/prod.yml")
    assert (code, doc["decision"]) == (1, "deny"), out
    assert doc["policy"]["source"]["url"] == f"file://{world['origin']}"
    assert doc["policy"]["source"]["blob"] == git(world["origin"], "rev-parse", "main:policies/prod.yml")


def test_a_shallow_clone_fetches_the_commit_it_needs(world: dict[str, Path], tmp_path: Path) -> None:
    first = git(world["origin"], "rev-parse", "main")
    seed = tmp_path / "seed"
    (seed / "policies" / "prod.yml").write_text(POLICY.format(n=3), encoding="utf-8")
    git(seed, "commit", "-q", "-am", "three")
    git(seed, "push", "-q", str(world["origin"]), "main")
    shallow = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth=1", f"file://{world['origin']}", str(shallow))
    world = {**world, "work": shallow}
    code, doc, out = check(world, f"git:{first}:policies/prod.yml")
    assert (code, doc["decision"]) == (1, "deny"), out
    assert doc["policy"]["source"]["commit"] == first


@pytest.mark.parametrize("spec", ["git:main", "git::p.yml", "git:main:/etc/passwd", "git:main:../x.yml",
                                  "git:-c:p.yml", "git+https://h/x.git", "git:ma in:p.yml"])
def test_malformed_sources_are_usage_errors(spec: str) -> None:
    from policyengine.errors import UsageError

    with pytest.raises(UsageError):
        parse_spec(spec)


def test_credentials_never_reach_the_recorded_url() -> None:
    assert _public_url("https://oauth2:glpat-secret@gitlab.example.com/acme/p.git") == \
        "https://gitlab.example.com/acme/p.git"
    assert _public_url("https://user:pw@h:8443/p.git") == "https://h:8443/p.git"


OWNED = POLICY.format(n=1).replace("rules:\n", "policy_owners: {users: [carol]}\nrules:\n")


@pytest.mark.parametrize(("reviewers", "decision"), [(["bob"], "deny"), (["bob", "carol"], "allow")])
def test_a_change_to_its_own_policy_needs_an_owner_of_the_trusted_policy(
        world: dict[str, Path], reviewers: list[str], decision: str) -> None:
    seed = world["tmp"] / "seed"
    (seed / "policies" / "prod.yml").write_text(OWNED, encoding="utf-8")
    git(seed, "commit", "-q", "-am", "owners")
    git(seed, "push", "-q", str(world["origin"]), "main")
    # The change edits the policy (dropping its owners) and is judged by origin/main's copy.
    change = CHANGE.replace("reviews:\n", "files_changed: [policies/prod.yml, src/app.py]\ncommits:\n"
                            "  - {sha: 9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6, author: alice, committer: alice}\n"
                            "reviews:\n")
    change += "".join(f"  - {{user: {r}, state: approved, commit: 9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6, "
                      f"submitted_at: \"2026-11-23T16:00:00Z\"}}\n" for r in reviewers[1:])
    world["change"].write_text(change, encoding="utf-8")
    code, doc, out = check(world, "git:origin/main:policies/prod.yml")
    assert doc["decision"] == decision, out
    owners = next(r for r in doc["rules"] if r["id"] == "policy-owners")
    assert owners["status"] == ("fail" if decision == "deny" else "pass")
    assert doc["policy"]["source"]["blob"] == git(world["origin"], "rev-parse", "main:policies/prod.yml")


def test_previous_deploy_reads_the_policy_at_the_trusted_previous_deploy(world: dict[str, Path]) -> None:
    from fake_servers import trusted_history

    strict = git(world["origin"], "rev-parse", "main")
    env = trusted_history(world["tmp"], strict, store=world["tmp"] / "evidence")
    code, doc, out = check(world, "git:@previous-deploy:policies/prod.yml", "--trust-key", env["POLICYENGINE_TRUST_KEY"])
    assert (code, doc["decision"]) == (1, "deny"), out
    assert doc["policy"]["source"]["commit"] == strict
    assert doc["policy"]["source"]["ref"] == "@previous-deploy (the trusted previous deploy)"


def test_previous_deploy_falls_back_to_the_merge_base_with_the_default_branch(world: dict[str, Path]) -> None:
    code, doc, out = check(world, "git:@previous-deploy:policies/prod.yml", env={"POLICYENGINE_DEFAULT_BRANCH": "main"})
    assert (code, doc["decision"]) == (1, "deny"), out
    assert doc["policy"]["source"]["commit"] == git(world["origin"], "rev-parse", "main")
    assert "merge-base with origin/main" in doc["policy"]["source"]["ref"]


def test_previous_deploy_without_history_or_default_branch_denies(world: dict[str, Path]) -> None:
    code, doc, out = check(world, "git:@previous-deploy:policies/prod.yml")
    assert code == 3 and doc == {}, out
    assert "no trusted previous deploy is known and the default branch is not known" in out


def test_the_platforms_default_branch_wins_over_a_variable(world: dict[str, Path]) -> None:
    """A pipeline variable must not move the trusted base onto a branch the change controls:
    CI_DEFAULT_BRANCH (set by GitLab) wins over POLICYENGINE_DEFAULT_BRANCH."""
    git(world["work"], "push", "-q", "origin", "weaken")
    code, doc, out = check(world, "git:@previous-deploy:policies/prod.yml",
                           env={"CI_DEFAULT_BRANCH": "main", "POLICYENGINE_DEFAULT_BRANCH": "weaken"})
    assert (code, doc["decision"]) == (1, "deny"), out
    assert "merge-base with origin/main" in doc["policy"]["source"]["ref"]
