"""A change is judged by the policy before it, never by its own (issue 15, class 1).

Under CI the policy, the waivers and every base a policy extends are never read from a commit
inside the change range (after the trusted base, up to and including the deployed commit).
The trusted base is the trusted previous deploy; without a trust key, the default branch as the
platform recorded it before this change (a push's before, a merge commit's first parent, a
pull or merge request's target head); manual and scheduled runs have none and deny.

Every run builds real repositories (``ci_git.deploy_world``) and runs the CLI with the
variables GitHub or GitLab set.
"""

from __future__ import annotations

import pytest
from ci_git import STRICT, WEAK, ci_env, deploy_world, git, run_check
from fake_servers import trusted_history
from test_waivers_source import WAIVERS_CHANGE, WAIVERS_MAIN  # current on any date the suite runs


PREVIOUS = "git:@previous-deploy:policies/prod.yml"
FALLBACK_HOW = {
    ("github", "push"): "the push's before commit (GitHub event before)",
    ("gitlab", "push"): "the push's before commit (GitLab CI_COMMIT_BEFORE_SHA)",
    ("github", "merge"): "the first parent of the merge commit being deployed",
    ("gitlab", "merge"): "the first parent of the merge commit being deployed",
    ("github", "request"): "the target branch head of the pull request (GitHub pull_request.base.sha)",
    ("gitlab", "request"): "the target branch head of the merge request (GitLab CI_MERGE_REQUEST_TARGET_BRANCH_SHA)",
}
SHAPES = sorted(FALLBACK_HOW)


def test_the_weakened_policy_would_allow(tmp_path) -> None:
    """The control: judged by its own file, the weakening commit is allowed (1 of 1)."""
    world = deploy_world(tmp_path, "push")
    code, doc, out = run_check(world, str(world["work"] / "policies" / "prod.yml"))
    assert (code, doc["decision"]) == (0, "allow"), out


@pytest.mark.parametrize(("platform", "shape"), SHAPES)
def test_a_policy_weakening_deploy_is_judged_by_the_policy_before_it_without_a_trust_key(
        tmp_path, platform: str, shape: str) -> None:
    world = deploy_world(tmp_path, shape)
    code, doc, out = run_check(world, PREVIOUS, env=ci_env(world, platform))
    assert (code, doc.get("decision")) == (1, "deny"), out
    source = doc["policy"]["source"]
    assert source["commit"] == world["strict"]
    assert source["blob"] == git(world["origin"], "rev-parse", f"{world['strict']}:policies/prod.yml")
    how = FALLBACK_HOW[(platform, shape)]
    assert source["ref"] == f"@previous-deploy ({how})"
    assert source["trusted_base"] == {"commit": world["strict"], "how": how}
    # The limit is said in every run that uses the fallback, and recorded.
    assert "may never have been gated" in source["note"] and "only a trust key" in source["note"]
    assert "only a trust key" in out and how in out
    owners = next(r for r in doc["rules"] if r["id"] == "policy-owners")
    assert owners["status"] == "fail"  # the strict policy's owners guard the edit


@pytest.mark.parametrize(("platform", "shape"), SHAPES)
def test_a_policy_weakening_deploy_is_judged_by_the_trusted_previous_deploy(tmp_path, platform: str,
                                                                           shape: str) -> None:
    world = deploy_world(tmp_path, shape)
    env = trusted_history(tmp_path, world["strict"], store=tmp_path / "evidence")
    code, doc, out = run_check(world, PREVIOUS, "--trust-key", env["POLICYENGINE_TRUST_KEY"],
                               env=ci_env(world, platform))
    assert (code, doc.get("decision")) == (1, "deny"), out
    source = doc["policy"]["source"]
    assert source["commit"] == world["strict"]
    assert source["ref"] == "@previous-deploy (the trusted previous deploy)"
    assert "note" not in source and "only a trust key" not in out


@pytest.mark.parametrize(("platform", "event"), [("github", "workflow_dispatch"), ("github", "schedule"),
                                                 ("github", "repository_dispatch"), ("gitlab", "web"),
                                                 ("gitlab", "schedule"), ("gitlab", "api"), ("gitlab", "trigger")])
@pytest.mark.parametrize("shape", ["push", "merge"])
def test_manual_and_scheduled_runs_without_a_trust_key_deny(tmp_path, platform: str, event: str,
                                                            shape: str) -> None:
    world = deploy_world(tmp_path, shape)
    code, doc, out = run_check(world, PREVIOUS, env=ci_env(world, platform, event=event))
    assert code == 3 and doc == {}, out
    assert "no trusted previous deploy is known" in out and "configure a trust key" in out
    assert "Traceback" not in out


@pytest.mark.parametrize("platform", ["github", "gitlab"])
def test_a_squash_pushed_with_no_before_denies_without_a_trust_key(tmp_path, platform: str) -> None:
    world = deploy_world(tmp_path, "main-squash")
    code, doc, out = run_check(world, PREVIOUS, env=ci_env(world, platform))
    assert code == 3 and doc == {}, out
    assert "configure a trust key" in out


@pytest.mark.parametrize("platform", ["github", "gitlab"])
def test_a_manual_run_with_a_trust_key_reads_the_previous_deploy(tmp_path, platform: str) -> None:
    world = deploy_world(tmp_path, "push")
    env = trusted_history(tmp_path, world["strict"], store=tmp_path / "evidence")
    event = "workflow_dispatch" if platform == "github" else "web"
    code, doc, out = run_check(world, PREVIOUS, "--trust-key", env["POLICYENGINE_TRUST_KEY"],
                               env=ci_env(world, platform, event=event))
    assert (code, doc.get("decision")) == (1, "deny"), out
    assert doc["policy"]["source"]["commit"] == world["strict"]


def test_a_redeploy_reads_the_trusted_previous_deploy(tmp_path) -> None:
    """An empty range (the previous deploy deployed again) reads from the previous deploy."""
    world = deploy_world(tmp_path, "push")
    env = trusted_history(tmp_path, world["deployed"], store=tmp_path / "evidence")
    code, doc, out = run_check(world, PREVIOUS, "--trust-key", env["POLICYENGINE_TRUST_KEY"],
                               env=ci_env(world, "github"))
    assert doc["policy"]["source"]["commit"] == world["deployed"], out
    assert (code, doc["decision"]) == (0, "allow")


@pytest.mark.parametrize("ref", ["origin/main", "main", "refs/heads/main", "refs/remotes/origin/main", "HEAD",
                                 "DEPLOYED", "WEAK"])
@pytest.mark.parametrize(("platform", "shape"), [("github", "push"), ("gitlab", "merge"), ("gitlab", "request")])
@pytest.mark.parametrize("trusted", [False, True])
def test_a_git_ref_inside_the_change_range_is_refused(tmp_path, ref: str, platform: str, shape: str,
                                                     trusted: bool) -> None:
    world = deploy_world(tmp_path, shape)
    if shape == "request" and ref in ("origin/main", "main", "refs/heads/main", "refs/remotes/origin/main"):
        ref = "weaken"  # main is the target here, not inside the range: the request's branch is
    ref = {"DEPLOYED": world["deployed"], "WEAK": world["weak"]}.get(ref, ref)
    extra: tuple[str, ...] = ()
    if trusted:
        extra = ("--trust-key", trusted_history(tmp_path, world["strict"],
                                                store=tmp_path / "evidence")["POLICYENGINE_TRUST_KEY"])
    code, doc, out = run_check(world, f"git:{ref}:policies/prod.yml", *extra, env=ci_env(world, platform))
    assert code == 3 and doc == {}, out
    assert "inside the change being deployed" in out and "@previous-deploy" in out and "git+URL#REF:PATH" in out


@pytest.mark.parametrize("platform", ["github", "gitlab"])
def test_a_git_ref_at_or_before_the_trusted_base_is_read(tmp_path, platform: str) -> None:
    world = deploy_world(tmp_path, "merge")
    git(world["origin"], "tag", "policy-v1", world["strict"])
    for ref in (world["strict"], "policy-v1", f"refs/tags/policy-v1"):
        code, doc, out = run_check(world, f"git:{ref}:policies/prod.yml", env=ci_env(world, platform))
        assert (code, doc.get("decision")) == (1, "deny"), out
        assert doc["policy"]["source"]["commit"] == world["strict"]
        assert doc["policy"]["source"]["trusted_base"]["commit"] == world["strict"]


def test_the_workspace_refs_do_not_name_the_commit_read(tmp_path) -> None:
    """An earlier step moving the checkout's refs changes nothing: refs are the platform's."""
    world = deploy_world(tmp_path, "request")
    git(world["work"], "update-ref", "refs/remotes/origin/main", world["weak"])
    git(world["work"], "update-ref", "refs/heads/main", world["weak"])
    code, doc, out = run_check(world, "git:origin/main:policies/prod.yml", env=ci_env(world, "github"))
    assert (code, doc.get("decision")) == (1, "deny"), out
    assert doc["policy"]["source"]["commit"] == world["strict"]


# -- waivers and bases obey the same rule ------------------------------------------------------

NO_OWNERS = STRICT.replace("policy_owners: {users: [carol]}\n", "")


@pytest.mark.parametrize(("platform", "shape"), [("github", "push"), ("gitlab", "push"), ("github", "merge"),
                                                 ("gitlab", "request")])
@pytest.mark.parametrize("waivers_ref", ["main", "origin/main", "HEAD"])
def test_waivers_the_change_added_are_never_read(tmp_path, platform: str, shape: str, waivers_ref: str) -> None:
    world = deploy_world(tmp_path, shape, files={"policies/waivers.yml": (WAIVERS_MAIN, WAIVERS_CHANGE),
                                                 "policies/base.yml": (NO_OWNERS, NO_OWNERS)})
    if shape == "request" and waivers_ref != "HEAD":
        waivers_ref = "weaken"
    env = ci_env(world, platform)
    policy = f"git:{world['strict']}:policies/base.yml"  # a trusted policy without owners
    code, doc, out = run_check(world, policy, "--waivers", f"git:{waivers_ref}:policies/waivers.yml", env=env)
    assert code in (2, 3) and doc == {}, out
    assert "waive" in out.lower() and ("inside the change being deployed" in out or "commit being deployed" in out)
    # Through @previous-deploy, the waivers are main's before the change: the self-waiver is not there.
    code, doc, out = run_check(world, policy, "--waivers", "git:@previous-deploy:policies/waivers.yml", env=env)
    assert (code, doc.get("decision")) == (1, "deny"), out
    assert doc["waivers_considered"][0]["status"] == "out_of_scope"
    assert doc["policy"]["waivers_file"]["source"]["commit"] == world["strict"]


@pytest.mark.parametrize(("platform", "shape"), [("github", "push"), ("gitlab", "merge")])
def test_a_base_from_inside_the_change_range_is_refused(tmp_path, platform: str, shape: str) -> None:
    world = deploy_world(tmp_path, shape)
    extension = tmp_path / "extension.yml"
    extension.write_text("version: 1\nname: ext\nextends: git:origin/main:policies/prod.yml\nrules: []\n",
                         encoding="utf-8")
    code, doc, out = run_check(world, str(extension), env=ci_env(world, platform))
    assert code == 3 and doc == {}, out
    assert "inside the change being deployed" in out
    extension.write_text("version: 1\nname: ext\nextends: git:@previous-deploy:policies/prod.yml\nrules: []\n",
                         encoding="utf-8")
    code, doc, out = run_check(world, str(extension), env=ci_env(world, platform))
    assert (code, doc.get("decision")) == (1, "deny"), out


def test_outside_ci_a_git_source_is_read_as_given_and_said_untrusted(tmp_path) -> None:
    world = deploy_world(tmp_path, "push")
    code, doc, out = run_check(world, "git:origin/main:policies/prod.yml")
    assert (code, doc["decision"]) == (0, "allow"), out  # the local user's own repository, as given
    assert "not a trusted source" in doc["policy"]["source"]["note"]
    assert "policy: note: not a trusted source" in out


def test_the_ci_token_never_reaches_a_url_or_the_output(tmp_path) -> None:
    world = deploy_world(tmp_path, "push")
    env = ci_env(world, "gitlab", CI_REPOSITORY_URL=f"file://{world['origin']}")
    code, doc, out = run_check(world, PREVIOUS, env=env)
    assert code == 1, out
    assert env["CI_JOB_TOKEN"] not in out and env["CI_JOB_TOKEN"] not in str(doc)
    assert WEAK not in str(doc)


@pytest.mark.parametrize("platform", ["github", "gitlab"])
def test_the_limit_without_a_trust_key_is_stated_and_a_trust_key_closes_it(tmp_path, platform: str) -> None:
    """Commit A weakens the policy (denied: judged by the policy before it); commit B, pushed next,
    is judged by A's policy without a trust key (the stated limit), and by the last allowed deploy
    with one."""
    world = deploy_world(tmp_path, "push")  # A = world["weak"], pushed onto main after `strict`
    code, doc, out = run_check(world, PREVIOUS, env=ci_env(world, platform))
    assert (code, doc["decision"]) == (1, "deny"), out  # A is denied
    seed = tmp_path / "seed"
    (seed / "app.py").write_text("print('b')\n", encoding="utf-8")
    git(seed, "add", "app.py")
    git(seed, "commit", "-q", "-m", "B")
    b = git(seed, "rev-parse", "HEAD")
    git(seed, "push", "-q", str(world["origin"]), "main")
    git(world["work"], "fetch", "-q", "origin")
    git(world["work"], "checkout", "-q", b)
    after = {**world, "strict": world["weak"], "deployed": b}  # B's push: before = A
    code, doc, out = run_check(after, PREVIOUS, env=ci_env(after, platform))
    assert (code, doc["decision"]) == (0, "allow"), out  # judged by A's weakened policy ...
    assert doc["policy"]["source"]["commit"] == world["weak"]
    assert "may never have been gated" in out and "only a trust key" in out  # ... and the run says so
    key = trusted_history(tmp_path, world["strict"], store=tmp_path / "evidence")["POLICYENGINE_TRUST_KEY"]
    code, doc, out = run_check(after, PREVIOUS, "--trust-key", key, env=ci_env(after, platform))
    assert (code, doc["decision"]) == (1, "deny"), out  # the last allowed deploy's policy
    assert doc["policy"]["source"]["commit"] == world["strict"]
