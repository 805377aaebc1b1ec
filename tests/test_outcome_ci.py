"""The GitLab template's outcome job: after the deploy, `when: always`, it appends the outcome."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from fake_servers import FakeAPI, gitlab_env, trusted_history
from test_provider_github import POLICY
from test_provider_gitlab import PREV as GL_PREV
from test_provider_gitlab import SQUASH, approved_mr
from test_provider_integration_files import GITLAB, load, run_template

from policyengine.evidence.stores.folder import LocalArchive


def _gate(tmp_path: Path) -> tuple[str, dict[str, str | bytes]]:
    with FakeAPI("/api/v4") as api:
        approved_mr(api)
        # Trusted history: without it the range, and so the changed files, are unknown and the
        # policy's when.paths rule applies (fail closed).
        history = trusted_history(tmp_path, GL_PREV, store=tmp_path / "gate" / "project" / "policyengine-evidence")
        env = {**gitlab_env(api, SQUASH), **history, "POLICYENGINE_POLICY": str(POLICY)}
        res = run_template(tmp_path / "gate", env)
    assert res.returncode == 0, res.stdout + res.stderr
    project = tmp_path / "gate" / "project"
    dotenv = dict(line.split("=", 1) for line in (project / "policyengine.env").read_text().splitlines())
    folder = project / "policyengine-evidence"
    files: dict[str, str | bytes] = {p.relative_to(project).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
             and p.name != "index.sqlite"}
    return dotenv["POLICYENGINE_BUNDLE_ID"], files


@pytest.mark.parametrize(("deploy_status", "expected"), [("success", "deployed"), ("failed", "failed"),
                                                          (None, "not_deployed"), ("canceled", "not_deployed")])
def test_the_outcome_job_records_the_deploy_jobs_status(tmp_path: Path, deploy_status: str | None,
                                                        expected: str) -> None:
    assert load(GITLAB)[".policyengine-outcome"]["when"] == "always"
    bundle_id, files = _gate(tmp_path)
    env = {"POLICYENGINE_BUNDLE_ID": bundle_id, "CI": "true", "GITLAB_CI": "true", "GITLAB_USER_LOGIN": "dana",
           "CI_PIPELINE_URL": "https://gitlab.example.com/acme/payments/-/pipelines/7"}
    if deploy_status is not None:
        env["POLICYENGINE_DEPLOY_STATUS"] = deploy_status
    res = run_template(tmp_path / "outcome", env, files=files, job_name=".policyengine-outcome")
    assert res.returncode == 0, res.stdout + res.stderr
    archive = LocalArchive(tmp_path / "outcome" / "project" / "policyengine-evidence")
    records, _ = archive.read_index()
    assert [r.get("kind") for r in records] == [None, None, "outcome"]  # the trusted previous deploy, then this one
    outcome = records[2]
    assert outcome["about_id"] == bundle_id and outcome["decision"] == expected
    with zipfile.ZipFile(archive.root / outcome["path"]) as zf:
        doc = json.loads(zf.read("record.json"))
    # No CI ID token here (POLICYENGINE_ID_TOKEN unset): GITLAB_USER_LOGIN alone is anyone's word, so
    # the record is self-asserted (issue 17); tests/test_identity.py covers the verified case.
    assert (doc["by"], doc["by_verified"]) == ("dana", False)
    assert archive.verify().ok


def test_the_outcome_job_fails_without_a_bundle_id(tmp_path: Path) -> None:
    res = run_template(tmp_path, {"CI": "true", "GITLAB_CI": "true", "GITLAB_USER_LOGIN": "dana"},
                       job_name=".policyengine-outcome")
    assert res.returncode == 1 and "no POLICYENGINE_BUNDLE_ID" in res.stderr
