"""The artifacts a deploy ships reach the signed statement from the action's `subjects` input and
the template's POLICYENGINE_SUBJECTS, so that `audit reconcile` can match images to bundles."""

from __future__ import annotations

import base64
import json
import zipfile
from pathlib import Path

from tests.fake_servers import FakeAPI, github_env
from tests.test_provider_integration_files import (
    GL_PREV,
    MERGE,
    POLICY,
    PREV,
    SQUASH,
    approved_mr,
    gitlab_env,
    reviewed_world,
    run_action_gate,
    run_template,
    trusted_history,
)

IMAGE = "sha256:" + "ab" * 32
TARBALL = "sha256:" + "cd" * 32


def subjects_of(bundle: Path) -> dict[str, str]:
    with zipfile.ZipFile(bundle) as zf:
        envelope = json.loads(zf.read("attestation.intoto.json"))
    statement = json.loads(base64.b64decode(envelope["payload"]))
    return {s["name"]: "sha256:" + s["digest"]["sha256"] for s in statement["subject"] if "sha256" in s["digest"]}


def test_the_action_names_the_subjects_input_in_the_statement(tmp_path: Path) -> None:
    with FakeAPI("/api/v3") as api:
        reviewed_world(api)
        env = github_env(api, MERGE, **trusted_history(tmp_path, PREV))
        # What `POLICYENGINE_SUBJECTS: ${{ inputs.subjects }}` evaluates to: the input, as text.
        env["POLICYENGINE_SUBJECTS"] = f"app={IMAGE}\napp.tar.gz={TARBALL}\n"
        res, outputs, _ = run_action_gate(tmp_path, env)
    assert res.returncode == 0, res.stdout + res.stderr
    named = subjects_of(Path(outputs["bundle-path"]))
    assert named["app"] == IMAGE and named["app.tar.gz"] == TARBALL


def test_the_template_names_POLICYENGINE_SUBJECTS_in_the_statement(tmp_path: Path) -> None:
    with FakeAPI("/api/v4") as api:
        approved_mr(api)
        env = {**gitlab_env(api, SQUASH),
               **trusted_history(tmp_path, GL_PREV, store=tmp_path / "project" / "policyengine-evidence"),
               "POLICYENGINE_POLICY": str(POLICY), "POLICYENGINE_NOW": "2026-11-24T15:00:00Z",
               "POLICYENGINE_SUBJECTS": f"app={IMAGE}"}
        res = run_template(tmp_path, env)
    assert res.returncode == 0, res.stdout + res.stderr
    project = tmp_path / "project"
    dotenv = dict(line.split("=", 1) for line in (project / "policyengine.env").read_text().splitlines())
    bundle = next((project / "policyengine-evidence").rglob(f"{dotenv['POLICYENGINE_BUNDLE_ID']}.zip"))
    assert subjects_of(bundle)["app"] == IMAGE


def test_a_malformed_subject_in_the_variable_is_a_usage_error(tmp_path: Path) -> None:
    with FakeAPI("/api/v3") as api:
        reviewed_world(api)
        env = github_env(api, MERGE, **trusted_history(tmp_path, PREV))
        env["POLICYENGINE_SUBJECTS"] = "app=latest"
        res, _, _ = run_action_gate(tmp_path, env)
    assert res.returncode == 2 and "is not NAME=sha256:HEX" in res.stdout + res.stderr
