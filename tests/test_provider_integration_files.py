"""action.yml and .gitlab-ci-template.yml: validated by the tools named in the issue, and their scripts run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from fake_servers import FakeAPI, GitHubWorld, GitLabWorld, github_env, gitlab_env, trusted_history
from test_provider_github import MERGE, POLICY, PREV, reviewed_world
from test_provider_gitlab import PREV as GL_PREV
from test_provider_gitlab import SQUASH, approved_mr

REPO = Path(__file__).resolve().parents[1]
ACTION = REPO / "action.yml"
GITLAB = REPO / ".gitlab-ci-template.yml"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """A tool from the test extra (in the interpreter's bin folder, or on PATH)."""
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is not installed: install the test extra (pip install -e '.[test]')"
    return found


def run(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, **kwargs)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# -- the validators ---------------------------------------------------------------------------


def test_action_passes_check_jsonschema() -> None:
    res = run(tool("check-jsonschema"), "--builtin-schema", "vendor.github-actions", str(ACTION))
    assert res.returncode == 0, res.stdout + res.stderr


def test_action_passes_zizmor_with_no_findings() -> None:
    res = run(tool("zizmor"), "--offline", "--persona", "auditor", str(ACTION))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "No findings to report" in res.stdout + res.stderr


def test_gitlab_template_passes_check_jsonschema() -> None:
    res = run(tool("check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci", str(GITLAB))
    assert res.returncode == 0, res.stdout + res.stderr


def test_validators_would_catch_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "action.yml"
    broken.write_text(ACTION.read_text().replace("using: composite", "using: compost"))
    assert run(tool("check-jsonschema"), "--builtin-schema", "vendor.github-actions", str(broken)).returncode != 0
    injected = tmp_path / "injected" / "action.yml"
    injected.parent.mkdir()
    injected.write_text(ACTION.read_text().replace('rm -f "$decision_json"', 'echo "${{ inputs.policy }}"'))
    assert run(tool("zizmor"), "--offline", str(injected)).returncode != 0


# -- the action's shape -------------------------------------------------------------------------


def test_action_inputs_outputs_and_env_only_inputs() -> None:
    action = load(ACTION)
    assert set(action["inputs"]) == {"policy", "environment", "github-token", "evidence-dir", "junit-path",
                                     "fail-on-deny", "version"}
    assert action["inputs"]["github-token"]["default"] == "${{ github.token }}"
    assert set(action["outputs"]) == {"decision", "bundle-id", "bundle-path", "junit-path"}
    steps = action["runs"]["steps"]
    assert action["runs"]["using"] == "composite"
    for step in steps:
        assert "${{" not in step.get("run", ""), f"{step['name']}: an expression inside run:"
    gate = next(s for s in steps if s.get("id") == "gate")
    assert gate["env"]["POLICYENGINE_POLICY"] == "${{ inputs.policy }}"
    assert gate["env"]["GITHUB_TOKEN"] == "${{ inputs.github-token }}"
    assert gate["env"]["POLICYENGINE_ADVISORY"] == "${{ inputs.fail-on-deny == 'false' }}"
    upload = next(s for s in steps if "uses" in s)
    assert re.fullmatch(r"actions/upload-artifact@[0-9a-f]{40}", upload["uses"])
    assert upload["if"] == "always()"


def test_gitlab_template_shape_and_quoting() -> None:
    doc = load(GITLAB)
    assert list(doc) == [".policyengine-gate"]
    job = doc[".policyengine-gate"]
    assert job["artifacts"]["when"] == "always" and job["artifacts"]["expire_in"] == "1 year"
    assert job["artifacts"]["reports"] == {"junit": "policyengine-junit.xml", "dotenv": "policyengine.env"}
    assert job["variables"]["POLICYENGINE_JUNIT"] == "policyengine-junit.xml"
    assert "policyengine-evidence/" in job["artifacts"]["paths"]
    for item in job["script"]:
        shell = re.sub(r"<<'PY'\n.*?\nPY\n", "<<'PY'\n", item, flags=re.S)  # the Python body is not shell
        unquoted = re.sub(r'"[^"]*"', '""', shell)
        assert "$" not in unquoted, f"unquoted variable in: {item!r}"


# -- the scripts, run against fake APIs -----------------------------------------------------------


def fake_venv(root: Path, name: str) -> Path:
    """A folder where the scripts expect their virtual environment: this interpreter's."""
    venv = root / name
    venv.parent.mkdir(parents=True, exist_ok=True)
    venv.symlink_to(Path(sys.prefix), target_is_directory=True)
    assert (venv / "bin" / "policyengine").exists()
    return venv


def action_step(step_id: str) -> dict[str, Any]:
    return next(s for s in load(ACTION)["runs"]["steps"] if s.get("id") == step_id)


def run_action_gate(tmp_path: Path, env: dict[str, str], fail_on_deny: str = "true") -> tuple[
        subprocess.CompletedProcess[str], dict[str, str], str]:
    runner_temp = tmp_path / "runner-temp"
    fake_venv(runner_temp, "policyengine-venv")
    outputs, summary = tmp_path / "output.txt", tmp_path / "summary.md"
    outputs.touch()
    summary.touch()
    step = action_step("gate")
    step_env = {k: v for k, v in step["env"].items() if not str(v).startswith("${{")}
    full = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "RUNNER_TEMP": str(runner_temp),
        "GITHUB_OUTPUT": str(outputs),
        "GITHUB_STEP_SUMMARY": str(summary),
        **env,
        **step_env,
        # What the `${{ }}` expressions of the step's env: evaluate to.
        "PE_ACTION_PATH": str(REPO),
        "POLICYENGINE_POLICY": str(POLICY),
        "POLICYENGINE_ENVIRONMENT": "production",
        "POLICYENGINE_EVIDENCE_DIR": str(tmp_path / "evidence"),
        "POLICYENGINE_JUNIT": str(tmp_path / "junit.xml"),
        "POLICYENGINE_ADVISORY": "true" if fail_on_deny == "false" else "false",
        "POLICYENGINE_NOW": "2026-11-24T15:00:00Z",
    }
    # GitHub runs `shell: bash` steps as `bash --noprofile --norc -eo pipefail {0}`.
    script = tmp_path / "gate.sh"
    script.write_text(step["run"])
    res = run("bash", "--noprofile", "--norc", "-eo", "pipefail", str(script), env=full, cwd=tmp_path)
    values = dict(line.split("=", 1) for line in outputs.read_text().splitlines() if line)
    return res, values, summary.read_text()


def test_action_gate_step_allows_and_reports(tmp_path: Path) -> None:
    with FakeAPI("/api/v3") as api:
        reviewed_world(api)
        # The signed record of the previous deploy, and the key that makes it trusted history.
        res, outputs, summary = run_action_gate(tmp_path, github_env(api, MERGE, **trusted_history(tmp_path, PREV)))
    assert res.returncode == 0, res.stdout + res.stderr
    assert outputs["decision"] == "allow"
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{12}", outputs["bundle-id"]), outputs
    assert Path(outputs["bundle-path"]).is_file() and outputs["bundle-path"].endswith(".zip")
    assert outputs["junit-path"] == str(tmp_path / "junit.xml") and (tmp_path / "junit.xml").is_file()
    assert summary.startswith("## policyengine: ALLOW\n")
    assert "| PASS | peer-review | 2 of 2 required approvals (bob, carol); not counted: erin (co-author" in summary
    assert "::error" not in res.stdout


def test_action_gate_step_denies_with_annotations_and_fails(tmp_path: Path) -> None:
    with FakeAPI("/api/v3") as api:
        w = GitHubWorld(api)
        reviewed_world(api, reviews=[w.review("bob", "APPROVED", MERGE)])
        res, outputs, summary = run_action_gate(tmp_path, github_env(api, MERGE))
    assert res.returncode == 1
    assert outputs["decision"] == "deny" and outputs["bundle-id"]
    assert "::error title=policyengine peer-review::1 of 2 required approvals" not in res.stdout  # 0 counted: stale
    assert re.search(r"^::error title=policyengine peer-review::0 of 2 required approvals", res.stdout, re.M)
    assert "| FAIL | peer-review |" in summary


def test_action_gate_step_advisory_does_not_fail(tmp_path: Path) -> None:
    with FakeAPI("/api/v3") as api:
        w = GitHubWorld(api)
        reviewed_world(api, reviews=[w.review("bob", "APPROVED", MERGE)])
        res, outputs, summary = run_action_gate(tmp_path, github_env(api, MERGE), fail_on_deny="false")
    assert res.returncode == 0, res.stdout + res.stderr
    assert outputs["decision"] == "deny"
    assert summary.startswith("## policyengine: DENY (advisory: the step did not fail)")


def test_action_gate_step_usage_error_still_writes_outputs(tmp_path: Path) -> None:
    with FakeAPI("/api/v3") as api:
        env = github_env(api, MERGE)
        env.pop("GITHUB_TOKEN")
        res, outputs, summary = run_action_gate(tmp_path, env)
    assert res.returncode == 2
    assert outputs["decision"] == "deny" and outputs["bundle-id"] == ""
    assert "GITHUB_TOKEN is not set" in res.stderr
    assert "::error title=policyengine::the gate could not evaluate (exit code 2)" in res.stdout
    assert summary.startswith("## policyengine: could not evaluate (exit code 2)")


def test_workflow_commands_cannot_be_injected(tmp_path: Path) -> None:
    with FakeAPI("/api/v3") as api:
        w = GitHubWorld(api)
        reviewed_world(api, reviews=[w.review("bob\n::add-mask::x", "APPROVED", MERGE)])
        res, _, summary = run_action_gate(tmp_path, github_env(api, MERGE))
    assert res.returncode == 1
    lines = res.stdout.splitlines()
    # The provider keeps every fact on one line...
    assert not any(line.startswith("::add-mask::") for line in lines)
    assert ("::error title=policyengine peer-review::0 of 2 required approvals (nobody); not counted: "
            "bob ::add-mask::x") in res.stdout
    # ...and the console verdict runs between ::stop-commands::<token> and ::<token>:: anyway.
    start = next(i for i, line in enumerate(lines) if line.startswith("::stop-commands::"))
    token = lines[start].split("::")[2]
    assert len(token) == 32 and lines.index(f"::{token}::") > start + 3
    assert any(line.startswith("DENY") for line in lines[start:lines.index(f"::{token}::")])


def test_annotations_escape_newlines_in_messages() -> None:
    script = action_step("gate")["run"]
    body = script[script.index("<<'PY'") + 7: script.index("\nPY\n")]
    namespace: dict[str, Any] = {}
    exec(compile(body.split("code = int(")[0], "action.yml", "exec"), namespace)  # noqa: S102 - our own script
    esc = namespace["esc"]
    assert esc("a\n::add-mask::b\r%") == "a%0A::add-mask::b%0D%25"
    assert esc("policyengine a:b,c", prop=True) == "policyengine a%3Ab%2Cc"
    assert namespace["cell"]("x|y\n<b>") == "x\\|y &lt;b&gt;"


def test_gitlab_template_script_writes_the_dotenv_report(tmp_path: Path) -> None:
    job = load(GITLAB)[".policyengine-gate"]
    venv = fake_venv(tmp_path, "venv")
    script = "\n".join(job["script"][2:]).replace("/tmp/policyengine-venv", str(venv))
    with FakeAPI("/api/v4") as api:
        approved_mr(api)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
            **{k: str(v) for k, v in job["variables"].items() if "$" not in str(v)},
            **gitlab_env(api, SQUASH),
            **trusted_history(tmp_path, GL_PREV, store=tmp_path / "policyengine-evidence"),
            "POLICYENGINE_POLICY": str(POLICY), "POLICYENGINE_NOW": "2026-11-24T15:00:00Z",
        }
        (tmp_path / "gate.sh").write_text(script)
        res = run("bash", "-eo", "pipefail", str(tmp_path / "gate.sh"), env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    dotenv = dict(line.split("=", 1) for line in (tmp_path / "policyengine.env").read_text().splitlines())
    assert dotenv["POLICYENGINE_DECISION"] == "allow" and dotenv["POLICYENGINE_EXIT_CODE"] == "0"
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{12}", dotenv["POLICYENGINE_BUNDLE_ID"])
    assert (tmp_path / "policyengine-junit.xml").is_file() and (tmp_path / "policyengine-evidence").is_dir()
    assert json.loads((tmp_path / "policyengine-decision.json").read_text())["decision"] == "allow"


def test_gitlab_template_script_fails_the_job_on_deny(tmp_path: Path) -> None:
    job = load(GITLAB)[".policyengine-gate"]
    venv = fake_venv(tmp_path, "venv")
    script = "\n".join(job["script"][2:]).replace("/tmp/policyengine-venv", str(venv))
    with FakeAPI("/api/v4") as api:
        approved_mr(api, approvers=("bob",))
        GitLabWorld(api)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
               **{k: str(v) for k, v in job["variables"].items() if "$" not in str(v)},
               **gitlab_env(api, SQUASH), "POLICYENGINE_POLICY": str(POLICY)}
        (tmp_path / "gate.sh").write_text(script)
        res = run("bash", "-eo", "pipefail", str(tmp_path / "gate.sh"), env=env, cwd=tmp_path)
    assert res.returncode == 1
    assert "POLICYENGINE_DECISION=deny" in (tmp_path / "policyengine.env").read_text()


def test_documented_examples_validate(tmp_path: Path) -> None:
    text = (REPO / "docs" / "ci-integration.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 2
    workflow, gitlab = tmp_path / "deploy.yml", tmp_path / ".gitlab-ci.yml"
    workflow.write_text(blocks[0])
    gitlab.write_text(blocks[1])
    res = run(tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(workflow))
    assert res.returncode == 0, res.stdout + res.stderr
    res = run(tool("check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci", str(gitlab))
    assert res.returncode == 0, res.stdout + res.stderr
    deploy = load(workflow)["jobs"]["deploy"]
    assert deploy["permissions"] == {"contents": "read", "pull-requests": "read", "checks": "read",
                                     "statuses": "read", "deployments": "read"}
    assert deploy["environment"] == "production"
    gate = next(s for s in deploy["steps"] if s.get("id") == "gate")
    assert set(gate["with"]) <= set(load(ACTION)["inputs"])
    assert load(gitlab)["deploy-gate"]["extends"] == ".policyengine-gate"
