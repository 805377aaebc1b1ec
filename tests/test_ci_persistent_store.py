"""The integration files with a persistent store, the chain head they report, and what they say
when only the job folder (an artifact that expires) keeps the evidence."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("cryptography")
from fake_servers import FakeAPI, github_env, gitlab_env
from test_evidence_git import REF, TOKEN, git, keys, remote, url_of  # noqa: F401 - fixtures
from test_provider_github import MERGE, reviewed_world
from test_provider_gitlab import SQUASH, approved_mr
from test_provider_integration_files import run_action, run_template

from policyengine.evidence.stores.git import GitArchive

# These tests are about where the evidence goes. Without a trusted key the change range, and so
# the changed files, are unknown and every when.paths rule applies (fail closed); judge with a
# policy that has none, so the runs allow.
RANGE_FREE = """version: 1
name: persistent-store
rules:
  - id: peer-review
    type: approvals
    min_approvals: 2
    exclude: [author, committers, deployer]
"""


@pytest.fixture
def range_free(tmp_path: Path) -> Path:
    path = tmp_path / "range-free.yml"
    path.write_text(RANGE_FREE, encoding="utf-8")
    return path

FIXTURES = Path(__file__).parent / "fixtures" / "acceptance"


def test_action_with_a_git_store_continues_the_chain_and_reports_its_head(
        tmp_path: Path, remote: Path, keys: tuple[Path, Path], range_free: Path) -> None:
    url = url_of(remote)
    store_env = {"POLICYENGINE_EVIDENCE_STORE": url, "PE_SIGNING_KEY_PEM": keys[0].read_text(),
                 "POLICYENGINE_EVIDENCE_TOKEN": TOKEN, "POLICYENGINE_CACHE_DIR": str(tmp_path / "cache")}
    heads = []
    for run_no in range(2):
        with FakeAPI("/api/v3") as api:
            reviewed_world(api)
            res, outputs, summary = run_action(tmp_path / f"run{run_no}", {**github_env(api, MERGE), **store_env},
                                               policy=range_free)
        assert res.returncode == 0, res.stdout + res.stderr
        heads.append(outputs["chain-head"])
        assert "::warning title=policyengine evidence::" not in res.stdout  # a persistent store: nothing expires
        assert "expires with the artifact" not in summary
        assert f"Chain head of `acme/payments` / `production` #{run_no + 1}: `{outputs['chain-head']}`" in summary
        assert TOKEN not in res.stdout + res.stderr + summary
        assert outputs["bundle-path"].startswith(url + " bundles/")
    records = GitArchive(url, env={**os.environ, "POLICYENGINE_CACHE_DIR": str(tmp_path / "c2")}).read_index()[0]
    assert [r["sha256"] for r in records] == heads  # the second run continued the chain of the first
    assert records[1]["previous_sha256"] == records[0]["sha256"]


def test_action_without_a_store_says_when_the_evidence_expires(tmp_path: Path, range_free: Path) -> None:
    with FakeAPI("/api/v3") as api:
        reviewed_world(api)
        res, outputs, summary = run_action(tmp_path, github_env(api, MERGE), policy=range_free)
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"\*\*This evidence expires with the artifact of this run\*\*: GitHub deletes the artifact "
                     r"after the repository retention: 90 days by default, by \d{4}-\d\d-\d\d; 400 days at most, by "
                     r"\d{4}-\d\d-\d\d\. Set the input evidence-store", summary), summary
    assert re.fullmatch(r"[0-9a-f]{64}", outputs["chain-head"])
    assert f"`{outputs['chain-head']}`" in summary


def test_template_with_a_git_store_writes_the_head_to_the_log_and_dotenv(
        tmp_path: Path, remote: Path, keys: tuple[Path, Path], range_free: Path) -> None:
    url = url_of(remote)
    with FakeAPI("/api/v4") as api:
        approved_mr(api)
        env = {**gitlab_env(api, SQUASH), "POLICYENGINE_POLICY": str(range_free),
               "POLICYENGINE_NOW": "2026-11-24T15:00:00Z", "POLICYENGINE_EVIDENCE_STORE": url,
               "POLICYENGINE_SIGNING_KEY": "env:PE_KEY",
               "PE_KEY": keys[0].read_text(), "POLICYENGINE_EVIDENCE_TOKEN": TOKEN,
               "POLICYENGINE_CACHE_DIR": str(tmp_path / "cache")}
        res = run_template(tmp_path, env)
    assert res.returncode == 0, res.stdout + res.stderr
    dotenv = dict(line.split("=", 1) for line in (tmp_path / "project" / "policyengine.env").read_text().splitlines())
    (record,) = GitArchive(url, env={**os.environ, "POLICYENGINE_CACHE_DIR": str(tmp_path / "c2")}).read_index()[0]
    assert dotenv["POLICYENGINE_CHAIN_HEAD"] == record["sha256"]
    assert f"policyengine: chain head of acme/payments / production #1: sha256 {record['sha256']}" in res.stdout
    assert "expires with the job's artifacts" not in res.stdout
    assert TOKEN not in res.stdout + res.stderr


def test_template_without_a_store_says_when_the_evidence_expires(tmp_path: Path, range_free: Path) -> None:
    with FakeAPI("/api/v4") as api:
        approved_mr(api)
        env = {**gitlab_env(api, SQUASH), "POLICYENGINE_POLICY": str(range_free),
               "POLICYENGINE_NOW": "2026-11-24T15:00:00Z"}
        res = run_template(tmp_path, env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"policyengine: this evidence is kept only in the job folder and expires with the job's "
                     r"artifacts: the artifact expires after 400 days \(expire_in\), on \d{4}-\d\d-\d\d", res.stdout)


def test_the_decision_says_a_job_folder_expires_under_ci(tmp_path: Path) -> None:
    """Under CI, with only the job folder, the console and the decision JSON say when the evidence expires."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLICYENGINE_", "GITHUB_", "GITLAB_", "CI"))}
    env.update({"CI": "true", "POLICYENGINE_EVIDENCE_EXPIRES": "with the job's artifacts, on 2027-12-29"})
    cmd = [sys.executable, "-m", "policyengine", "check", "--policy", str(FIXTURES / "policy.yml"),
           "--change", str(FIXTURES / "change.yml"), "--workspace", str(FIXTURES / "workspace"),
           "--evidence-dir", str(tmp_path / "evidence"), "--json", str(tmp_path / "d.json")]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    doc = json.loads((tmp_path / "d.json").read_text())
    note = ("this evidence is kept only in the job folder " + str(tmp_path / "evidence") + ": it expires with the CI "
            "artifact (with the job's artifacts, on 2027-12-29)")
    assert any(n.startswith(note) for n in doc["evidence"]["notes"]), doc["evidence"]
    assert "evidence: note: " + note in run.stdout
    # Outside CI a folder is the user's own: nothing expires.
    env.pop("CI")
    subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert "notes" not in json.loads((tmp_path / "d.json").read_text())["evidence"]


def test_the_documented_store_examples_validate(tmp_path: Path) -> None:
    from test_provider_integration_files import ACTION, REPO, load, run, tool

    text = (REPO / "docs" / "ci-integration.md").read_text(encoding="utf-8")
    workflow_text, gitlab_text = re.findall(r"```yml\n(.*?)```", text, flags=re.S)
    workflow, gitlab = tmp_path / "deploy.yml", tmp_path / ".gitlab-ci.yml"
    workflow.write_text(workflow_text)
    gitlab.write_text(gitlab_text)
    res = run(tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(workflow))
    assert res.returncode == 0, res.stdout + res.stderr
    res = run(tool("check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci", str(gitlab))
    assert res.returncode == 0, res.stdout + res.stderr
    gate = next(s for s in load(workflow)["jobs"]["deploy"]["steps"] if s.get("id") == "gate")
    assert {"evidence-store", "evidence-token", "signing-key"} <= set(gate["with"]) <= set(load(ACTION)["inputs"])
    variables = load(gitlab)["deploy-gate"]["variables"]
    assert variables["POLICYENGINE_EVIDENCE_STORE"].startswith("git+https://")
    assert "POLICYENGINE_EVIDENCE_TOKEN" not in variables  # a masked variable, never in the file
