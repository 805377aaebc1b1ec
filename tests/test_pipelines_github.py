"""The complete GitHub workflow (examples/pipelines/github-deploy.yml, the README's), run as a user runs it.

There is no GitHub runner here, so ``github_harness`` runs the workflow's ``deploy`` job step by
step: ``actions/checkout`` and ``actions/upload-artifact`` are declared stand-ins, the
``your-org/policyengine`` step runs this repository's ``action.yml`` (its pip install is the
declared stand-in ``fake_toolchain``: it installs this checkout's policyengine, not PyPI's), the
code host is a local API stand-in and the repository a real git repository reached over
``file://``. The only change to the workflow's text is the evidence store's URL (asserted as an
exact diff): a bare repository here instead of github.com.

Adoption: ``policyengine evidence baseline`` records the commit in production (deploy #1); the
workflow's run is the second deploy. An ordinary approved change to ``src/`` is allowed (the
path-scoped ``security-review`` is skipped: the range is trusted); a change approved by one
peer is denied; a change that weakens the policy to one approval is judged by the policy before
it, and denied.
"""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from ci_git import GIT_ENV, git
from fake_servers import FakeAPI, GitHubWorld, Reply, new_signing_key, public_pem
from github_harness import Runner, checkout_from, upload_artifact
from test_provider_integration_files import REAL_POLICYENGINE, REPO, fake_toolchain

from policyengine.evidence.stores.factory import open_store

pytest.importorskip("cryptography")
from cryptography.hazmat.primitives import serialization  # noqa: E402

WORKFLOW = REPO / "examples" / "pipelines" / "github-deploy.yml"
STORE_IN_FILE = "git+https://github.com/acme/policyengine-evidence.git#refs/heads/policyengine-evidence"
POLICY = """version: 1
name: production
rules:
  - id: peer-review
    type: approvals
    min_approvals: 2
    exclude: [author, committers, deployer]
    cover_range: true
  - id: security-review
    type: approvals
    min_approvals: 1
    from_teams: [security]
    exclude: [author, committers]
    when:
      paths: ["infra/**", "src/auth/**"]
"""
WEAKENED = POLICY.replace("min_approvals: 2", "min_approvals: 1")
DEPLOY_SH = '#!/bin/sh\nset -eu\necho "$EVIDENCE_BUNDLE" >> "$RUNNER_TEMP/deployed"\n'
WITNESS_TOKEN = "ghs_" + "V" * 36
TOKEN = "ghs_" + "W" * 36


def platform_world(tmp: Path, case: str) -> dict[str, Any]:
    """main at ``prod`` (in production when the gate was adopted); alice's ``change`` pushed on top."""
    seed = tmp / "seed"
    for rel, text in (("policies/soc2-production.yml", POLICY), ("src/app.py", "VERSION = 1\n"),
                      ("scripts/deploy.sh", DEPLOY_SH),
                      (".github/workflows/deploy.yml", WORKFLOW.read_text(encoding="utf-8"))):
        (seed / rel).parent.mkdir(parents=True, exist_ok=True)
        (seed / rel).write_text(text, encoding="utf-8")
    (seed / "scripts/deploy.sh").chmod(0o755)
    git(seed, "init", "-q", "-b", "main")
    git(seed, "add", ".")
    git(seed, "commit", "-q", "-m", "in production today")
    prod = git(seed, "rev-parse", "HEAD")
    if case == "weakening":
        (seed / "policies/soc2-production.yml").write_text(WEAKENED, encoding="utf-8")
        files = ["policies/soc2-production.yml"]
    else:
        (seed / "src/app.py").write_text("VERSION = 2\n", encoding="utf-8")
        files = ["src/app.py"]
    git(seed, "commit", "-q", "-am", "the change")
    change = git(seed, "rev-parse", "HEAD")
    origin = tmp / "platform" / "acme" / "payments.git"
    origin.parent.mkdir(parents=True)
    git(tmp, "clone", "-q", "--bare", str(seed), str(origin))
    evidence = tmp / "evidence.git"
    git(tmp, "init", "-q", "--bare", str(evidence))
    return {"prod": prod, "change": change, "files": files, "origin": origin,
            "store": f"git+file://{evidence}#refs/heads/policyengine-evidence"}


def code_host(api: FakeAPI, world: dict[str, Any], case: str) -> None:
    w = GitHubWorld(api)
    change = world["change"]
    approvers = ["bob"] if case in ("deny", "weakening") else ["bob", "carol"]
    commits = [w.commit(change, "alice")]
    w.pull(42, author="alice", head=change, merge_commit=change, merged_by="dana", commits=commits,
           reviews=[w.review(who, "APPROVED", change) for who in approvers], files=world["files"])
    w.checks(change)
    w.deployments("production", [])
    w.compare(world["prod"], change, commits, files=world["files"])
    w.team("acme", "security", ["frank"])


def keys(tmp: Path) -> dict[str, Any]:
    key = new_signing_key()
    private = key.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())
    (tmp / "signing.pem").write_bytes(private)
    (tmp / "trust.pub").write_bytes(public_pem(key))
    return {"private": private.decode(), "public": public_pem(key).decode(), "pem": tmp / "signing.pem",
            "pub": tmp / "trust.pub"}


def local_workflow(store: str) -> dict[str, Any]:
    """The workflow's text with the one substitution a local run needs, asserted as an exact diff."""
    text = WORKFLOW.read_text(encoding="utf-8")
    local = text.replace(STORE_IN_FILE, store)
    diff = [line for line in difflib.unified_diff(text.splitlines(), local.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert diff == [f"-          evidence-store: {STORE_IN_FILE}", f"+          evidence-store: {store}"]
    return yaml.safe_load(local)


def clean_env(**extra: str) -> dict[str, str]:
    drop = ("POLICYENGINE_", "GITHUB_", "GITLAB_", "CI_", "RUNNER_")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(drop) and k != "CI"}, **GIT_ENV, **extra}


def adopt(tmp: Path, world: dict[str, Any], k: dict[str, Any]) -> None:
    """Deploy #1: the baseline, recorded once by the person adopting the gate (outside CI)."""
    clone = tmp / "adopter-clone"
    git(tmp, "clone", "-q", f"file://{world['origin']}", str(clone))
    res = subprocess.run(
        [sys.executable, "-m", "policyengine", "evidence", "baseline", "--archive", world["store"],
         "--environment", "production", "--commit", world["prod"], "--by", "alice", "--repository", "acme/payments",
         "--signing-key", str(k["pem"]), "--trust-key", str(k["pub"]), "--workspace", str(clone)],
        capture_output=True, text=True, timeout=120, check=False,
        env=clean_env(POLICYENGINE_CACHE_DIR=str(tmp / "cache-adopter")))
    assert res.returncode == 0, res.stdout + res.stderr


def run_pipeline(tmp: Path, case: str) -> dict[str, Any]:
    world = platform_world(tmp / "git", case)
    k = keys(tmp)
    adopt(tmp, world, k)
    event = tmp / "event.json"
    event.write_text(json.dumps({"before": world["prod"], "after": world["change"],
                                 "repository": {"default_branch": "main", "full_name": "acme/payments"}}))
    fakebin = fake_toolchain(tmp / "toolchain", REAL_POLICYENGINE)  # stand-in for pip install from PyPI
    with FakeAPI("/api/v3") as api:
        code_host(api, world, case)
        posted: list[dict[str, Any]] = []

        def statuses(req: Any, api: FakeAPI) -> Reply:  # the platform keeps the witness status
            if req.method != "POST" or req.headers.get("Authorization") != f"Bearer {WITNESS_TOKEN}":
                return Reply(401, {"message": "Bad credentials"})
            posted.append(req.json())
            return Reply(201, {"id": len(posted), **req.json()})

        api.handler(f"/repos/acme/payments/statuses/{world['change']}", statuses)
        env = clean_env(
            PATH=f"{fakebin}:{os.environ.get('PATH', '/usr/bin:/bin')}", HOME=str(tmp),
            POLICYENGINE_CACHE_DIR=str(tmp / "cache-runner"),
            GITHUB_REPOSITORY="acme/payments", GITHUB_SHA=world["change"], GITHUB_REF="refs/heads/main",
            GITHUB_EVENT_NAME="push", GITHUB_EVENT_PATH=str(event), GITHUB_SERVER_URL=f"file://{tmp / 'git' / 'platform'}",
            GITHUB_API_URL=api.url, GITHUB_ACTOR="dana", GITHUB_TRIGGERING_ACTOR="dana", GITHUB_RUN_ID="7",
            GITHUB_RUN_ATTEMPT="1", GITHUB_JOB="deploy", GITHUB_WORKFLOW="deploy")
        contexts = {
            "github": {"token": TOKEN, "job": "deploy", "run_attempt": "1", "sha": world["change"],
                       "repository": "acme/payments", "event_name": "push"},
            "secrets": {"POLICYENGINE_SIGNING_KEY": k["private"], "POLICYENGINE_TRUST_KEY": k["public"],
                        "POLICYENGINE_EVIDENCE_TOKEN": "ghs_" + "E" * 36,
                        "POLICYENGINE_WITNESS_TOKEN": WITNESS_TOKEN},
            "vars": {},
        }
        runner = Runner(tmp / "runner", env, contexts,
                        standins={"actions/checkout": checkout_from(f"file://{world['origin']}"),
                                  "actions/upload-artifact": upload_artifact},
                        actions={"your-org/policyengine": REPO})
        results = runner.run_job(local_workflow(world["store"]), "deploy")
    by_name = {r.id if not r.id.startswith("__") else r.name: r for r in results}
    records, _ = open_store(world["store"]).read_index()
    deployed = runner.temp / "deployed"
    return {"world": world, "results": by_name, "records": records, "summary": runner.summary.read_text(),
            "deployed": deployed.read_text().split() if deployed.exists() else [],
            "pip": (tmp / "toolchain" / "pip.log").read_text(), "log": runner.log, "statuses": posted}


def _gate(run: dict[str, Any]) -> Any:
    return run["results"]["gate"]


def test_the_pipeline_allows_the_second_deploy_of_an_ordinary_approved_change(tmp_path: Path) -> None:
    run = run_pipeline(tmp_path, "allow")
    gate = _gate(run)
    assert gate.outcome == "success", gate.stdout + gate.stderr
    assert gate.outputs["decision"] == "allow"
    assert "| PASS | peer-review |" in run["summary"]
    assert "| SKIPPED | security-review |" in run["summary"], run["summary"]  # the range is trusted
    # The store: the baseline (#1), then this deploy (#2), signed; the deploy step ran with its bundle.
    assert [(r.get("kind"), r["sequence"], r["commit"]) for r in run["records"]] == [
        ("baseline", 1, run["world"]["prod"]), (None, 2, run["world"]["change"])]
    assert run["records"][1]["signed_by"] == run["records"][0]["signed_by"] is not None
    assert run["deployed"] == [gate.outputs["bundle-id"]]
    # The action installed the sign extra for the signing key (and no s3 for a git store).
    assert "[sign]" in run["pip"] and "s3" not in run["pip"]
    assert TOKEN not in run["summary"] and TOKEN not in gate.stdout + gate.stderr
    # The witness step published the decision with its own token, after the gate.
    [status] = run["statuses"]
    bundle = run["records"][1]
    assert status["context"] == "policyengine/production" and status["state"] == "success"
    assert status["description"].startswith(f"allow {bundle['id']} sha256:{bundle['sha256'][:16]} head:")
    assert "witness: published policyengine/production" in gate.stdout, gate.stdout[-2000:]
    assert WITNESS_TOKEN not in gate.stdout + gate.stderr + run["summary"]


def test_the_pipeline_denies_a_change_one_peer_approved(tmp_path: Path) -> None:
    run = run_pipeline(tmp_path, "deny")
    gate = _gate(run)
    assert gate.outcome == "failure" and gate.outputs["decision"] == "deny"
    assert "| FAIL | peer-review | 1 of 2 required approvals" in run["summary"], run["summary"]
    assert run["results"]["Deploy"].outcome == "skipped" and run["deployed"] == []
    assert [r["decision"] for r in run["records"]] == ["adopted", "deny"]


def test_the_pipeline_judges_a_policy_weakening_change_by_the_policy_before_it(tmp_path: Path) -> None:
    run = run_pipeline(tmp_path, "weakening")
    gate = _gate(run)
    assert gate.outcome == "failure" and gate.outputs["decision"] == "deny", gate.stdout + gate.stderr
    # The checkout says one approval is enough; the trusted policy (at the baseline) says two.
    assert "| FAIL | peer-review | 1 of 2 required approvals" in run["summary"], run["summary"]
    assert run["deployed"] == []


def test_the_action_hands_trust_key_and_waivers_to_the_gate_through_the_environment(tmp_path: Path) -> None:
    """The PEM stays in the environment (the gate reads env:PE_TRUST_KEY_PEM); waivers are read like
    the policy: from git at the trusted previous deploy by default, as given with a checkout policy."""
    from test_provider_integration_files import run_action

    spy = '#!/bin/sh\n[ "$1" = --version ] && exit 0\necho "WAIVERS=${POLICYENGINE_WAIVERS:-} TRUST=${POLICYENGINE_TRUST_KEY:-}" >&2\nexit 3\n'
    pem = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n"
    base = {"PE_TRUST_KEY_PEM": pem, "POLICYENGINE_WORKSPACE": str(REPO)}
    cases = [("previous-deploy", "./policies/waivers.yml", "WAIVERS=git:@previous-deploy:policies/waivers.yml"),
             ("previous-deploy", "git:refs/heads/main:w.yml", "WAIVERS=git:refs/heads/main:w.yml"),
             ("checkout", "w.yml", "WAIVERS=w.yml")]
    for n, (source, waivers, shown) in enumerate(cases):
        res, _, _ = run_action(tmp_path / str(n), {**base, "PE_POLICY_SOURCE": source, "PE_WAIVERS": waivers},
                               installed=spy, policy=Path("policies/p.yml"))
        assert f"{shown} TRUST=env:PE_TRUST_KEY_PEM" in res.stderr, res.stdout + res.stderr
        assert "BEGIN PUBLIC KEY" not in res.stdout + res.stderr
    res, _, _ = run_action(tmp_path / "outside", {**base, "PE_POLICY_SOURCE": "previous-deploy",
                                                   "PE_WAIVERS": "../elsewhere.yml"}, installed=spy,
                           policy=Path("policies/p.yml"))
    assert res.returncode == 2 and "needs the waivers input as a path relative to the repository root" in res.stdout
