"""action.yml and .gitlab-ci-template.yml: validated by the tools named in the issue, and their scripts run."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_servers import (
    FakeAPI,
    GitHubWorld,
    GitLabWorld,
    github_env,
    gitlab_env,
    trusted_history,
)
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
                                     "fail-on-deny", "version", "evidence-store", "evidence-token", "signing-key",
                                     "policy-source", "trust-key", "waivers", "subjects", "attest", "witness-token"}
    assert action["inputs"]["policy-source"]["default"] == "previous-deploy"
    assert action["inputs"]["trust-key"]["default"] == action["inputs"]["waivers"]["default"] == ""
    assert action["inputs"]["github-token"]["default"] == "${{ github.token }}"
    assert set(action["outputs"]) == {"decision", "bundle-id", "bundle-path", "junit-path", "chain-head", "store-head"}
    steps = action["runs"]["steps"]
    assert action["runs"]["using"] == "composite"
    for step in steps:
        assert "${{" not in step.get("run", ""), f"{step['name']}: an expression inside run:"
    gate = next(s for s in steps if s.get("id") == "gate")
    assert gate["env"]["POLICYENGINE_POLICY"] == "${{ inputs.policy }}"
    assert gate["env"]["GITHUB_TOKEN"] == "${{ inputs.github-token }}"
    assert gate["env"]["PE_TRUST_KEY_PEM"] == "${{ inputs.trust-key }}"
    assert gate["env"]["PE_WAIVERS"] == "${{ inputs.waivers }}"
    assert gate["env"]["POLICYENGINE_ADVISORY"] == "${{ inputs.fail-on-deny == 'false' }}"
    assert gate["env"]["POLICYENGINE_SUBJECTS"] == "${{ inputs.subjects }}"
    # The witness token reaches only the witness step, never the gate (which reads statuses).
    assert all("inputs.witness-token" not in json.dumps(s) for s in steps if s.get("id") != "witness")
    witness = next(s for s in steps if s.get("id") == "witness")
    assert witness["env"]["POLICYENGINE_WITNESS_TOKEN"] == "${{ inputs.witness-token }}"
    assert witness["if"] == "always() && steps.gate.outputs.bundle-id != ''"
    upload = next(s for s in steps if "uses" in s)
    assert re.fullmatch(r"actions/upload-artifact@[0-9a-f]{40}", upload["uses"])
    assert upload["if"] == "always()"


def test_gitlab_template_shape_and_quoting() -> None:
    doc = load(GITLAB)
    assert list(doc) == [".policyengine-gate", ".policyengine-outcome", ".policyengine-witness"]
    outcome = doc[".policyengine-outcome"]
    assert outcome["when"] == "always" and outcome["script"][0] == doc[".policyengine-gate"]["script"][0]
    witness = doc[".policyengine-witness"]
    assert witness["script"][0] == doc[".policyengine-gate"]["script"][0]
    assert witness["environment"] == {"name": "policyengine-witness", "action": "access"}
    for item in (*outcome["script"], *witness["script"]):
        assert "$" not in re.sub(r'"[^"]*"', '""', item), f"unquoted variable in: {item!r}"
    job = doc[".policyengine-gate"]
    assert job["artifacts"]["when"] == "always"
    assert job["artifacts"]["reports"] == {"junit": "policyengine-junit.xml", "dotenv": "policyengine.env"}
    assert job["variables"]["POLICYENGINE_JUNIT"] == "policyengine-junit.xml"
    assert "policyengine-evidence/" in job["artifacts"]["paths"]
    for item in job["script"]:
        shell = re.sub(r"<<'PY'\n.*?\nPY\n", "<<'PY'\n", item, flags=re.S)  # the Python body is not shell
        unquoted = re.sub(r'"[^"]*"', '""', shell)
        assert "$" not in unquoted, f"unquoted variable in: {item!r}"


# -- the scripts, run against fake APIs -----------------------------------------------------------


REAL_PYTHON = sys.executable
REAL_POLICYENGINE = f'#!/bin/sh\nexec "{BIN / "policyengine"}" "$@"\n'


def fake_toolchain(root: Path, installed: str) -> Path:
    """A folder for PATH whose `python3 -m venv DIR` makes a stand-in virtual environment.

    Its `bin/python -m pip install ...` logs the call (to root/pip.log) and installs `installed`
    (a script's text) as `bin/policyengine`, unless one is there already ("Requirement already
    satisfied", as pip says when a reused venv has the package). Anything else runs this interpreter.
    """
    root.mkdir(parents=True, exist_ok=True)
    fakebin = root / "fakebin"
    fakebin.mkdir()
    (root / "installed-policyengine").write_text(installed)
    venv_python = root / "venv-python"
    venv_python.write_text(f"""#!/bin/bash
here="$(cd "$(dirname "$0")" && pwd)"
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
  shift 2
  echo "pip $* PIP_NO_CACHE_DIR=${{PIP_NO_CACHE_DIR:-}}" >> "{root / 'pip.log'}"
  if [ -e "$here/policyengine" ]; then echo "Requirement already satisfied"; exit 0; fi
  cp "{root / 'installed-policyengine'}" "$here/policyengine" && chmod +x "$here/policyengine"
  exit 0
fi
exec "{REAL_PYTHON}" "$@"
""")
    (fakebin / "python3").write_text(f"""#!/bin/bash
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  dir="${{@: -1}}"
  mkdir -p "$dir/bin"
  [ -e "$dir/bin/python" ] || cp "{venv_python}" "$dir/bin/python"
  exit 0
fi
exec "{REAL_PYTHON}" "$@"
""")
    for path in (venv_python, fakebin / "python3"):
        path.chmod(0o755)
    return fakebin


def plant_venv(venv: Path) -> None:
    """What an earlier job on a shell runner could leave: a venv whose policyengine says ALLOW.

    It even writes a well-formed allow decision and bundle, so only a fresh venv stops it.
    """
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text(f'#!/bin/bash\n[ "$2" = pip ] && exit 0\nexec "{REAL_PYTHON}" "$@"\n')
    planted = FAKE_POLICYENGINE.replace("fake policyengine ran", "ALLOW (PLANTED)")
    (venv / "bin" / "policyengine").write_text(planted.replace('os.environ.get("FAKE_RUN")', "None"))  # always allow
    for name in ("python", "policyengine"):
        (venv / "bin" / name).chmod(0o755)


# A stand-in for policyengine: FAKE_RUN (JSON) says what its `check` leaves behind.
FAKE_POLICYENGINE = f"""#!{REAL_PYTHON}
import hashlib, json, os, sys
args = sys.argv[1:]
if args[:1] == ["--version"]:
    print("policyengine, version 0.1.0 (fake)")
    sys.exit(0)
run = json.loads(os.environ.get("FAKE_RUN") or '{{"decision": "allow"}}')
print("fake policyengine ran")
json_path = args[args.index("--json") + 1] if "--json" in args else os.environ["POLICYENGINE_JSON"]
bundle_id = "20261124T150000Z-0123456789ab"
rel = f"bundles/2026/11/{{bundle_id}}.zip"
data = b"PK a bundle"
if run.get("bundle", "present") != "missing":
    full = os.path.join(os.environ["POLICYENGINE_EVIDENCE_DIR"], rel)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as fh:
        fh.write(data)
digest = "0" * 64 if run.get("bundle") == "wrong-hash" else hashlib.sha256(data).hexdigest()
doc = {{"decision": run.get("decision", "allow"), "advisory": run.get("advisory", False), "policy": {{"name": "p"}},
       "change": {{}}, "rules": [], "evidence": {{"bundle_id": bundle_id, "path": rel, "sha256": digest, "signed": False}}}}
text = {{"valid": json.dumps(doc), "garbage": '{{"decision": "allow", ', "list": "[]", "missing": None}}[run.get("json", "valid")]
if text is not None:
    with open(json_path, "w", encoding="utf-8") as fh:
        fh.write(text)
sys.exit(run.get("exit", 0))
"""


def action_step(step_id: str) -> dict[str, Any]:
    return next(s for s in load(ACTION)["runs"]["steps"] if s.get("id") == step_id)


def run_action(tmp_path: Path, env: dict[str, str], fail_on_deny: str = "true", installed: str = REAL_POLICYENGINE,
               version: str = "", plant: bool = False, policy: Path = POLICY, now: str | None = "2026-11-24T15:00:00Z"
               ) -> tuple[subprocess.CompletedProcess[str], dict[str, str], str]:
    """Run the action's install step, then its gate step, as GitHub would (bash, env only)."""
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir(parents=True)
    if plant:  # where the action kept its venv before: a self-hosted runner may leave it
        plant_venv(runner_temp / "policyengine-venv")
    fakebin = fake_toolchain(tmp_path / "toolchain", installed)
    base = {"PATH": f"{fakebin}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": str(tmp_path),
            "RUNNER_TEMP": str(runner_temp)}
    # GitHub runs `shell: bash` steps as `bash --noprofile --norc -eo pipefail {0}`.
    install_out = tmp_path / "install-output.txt"
    install_out.touch()
    install = next(s for s in load(ACTION)["runs"]["steps"] if s["name"] == "Install policyengine")
    (tmp_path / "install.sh").write_text(install["run"])
    res = run("bash", "--noprofile", "--norc", "-eo", "pipefail", str(tmp_path / "install.sh"), cwd=tmp_path,
              env={**base, "GITHUB_OUTPUT": str(install_out), "PE_ACTION_PATH": str(REPO), "PE_VERSION": version})
    if res.returncode != 0:
        return res, {}, ""
    installed_outputs = dict(line.split("=", 1) for line in install_out.read_text().splitlines() if line)
    outputs, summary = tmp_path / "output.txt", tmp_path / "summary.md"
    outputs.touch()
    summary.touch()
    step = action_step("gate")
    step_env = {k: v for k, v in step["env"].items() if not str(v).startswith("${{")}
    full = {
        **base,
        "GITHUB_OUTPUT": str(outputs),
        "GITHUB_STEP_SUMMARY": str(summary),
        **env,
        **step_env,
        # What the `${{ }}` expressions of the step's env: evaluate to.
        "PE_DIR": installed_outputs.get("dir", ""),
        "POLICYENGINE_POLICY": str(policy),
        "PE_POLICY_SOURCE": env.get("PE_POLICY_SOURCE", "checkout"),  # the tests' workspaces are not git checkouts
        "POLICYENGINE_ENVIRONMENT": "production",
        "POLICYENGINE_EVIDENCE_DIR": str(tmp_path / "evidence"),
        "POLICYENGINE_JUNIT": str(tmp_path / "junit.xml"),
        "POLICYENGINE_ADVISORY": "true" if fail_on_deny == "false" else "false",
        **({"POLICYENGINE_NOW": now} if now else {}),  # None: the clock, as a CI run must
    }
    script = tmp_path / "gate.sh"
    script.write_text(step["run"])
    res = run("bash", "--noprofile", "--norc", "-eo", "pipefail", str(script), env=full, cwd=tmp_path)
    values = dict(line.split("=", 1) for line in outputs.read_text().splitlines() if line)
    return res, values, summary.read_text()


def run_action_gate(tmp_path: Path, env: dict[str, str], fail_on_deny: str = "true") -> tuple[
        subprocess.CompletedProcess[str], dict[str, str], str]:
    return run_action(tmp_path, env, fail_on_deny)


def run_template(tmp_path: Path, env: dict[str, str], installed: str = REAL_POLICYENGINE, plant: bool = False,
                 shell: str = "bash", lock: str | None = "policyengine-gate==0.1.0 \\\n    --hash=sha256:" + "0" * 64,
                 files: dict[str, str | bytes] | None = None,
                 job_name: str = ".policyengine-gate") -> subprocess.CompletedProcess[str]:
    """Run the template's whole script as GitLab would: one shell, `set -e` (bash: and pipefail)."""
    job = load(GITLAB)[job_name]
    project, tmp = tmp_path / "project", tmp_path / "tmp"
    project.mkdir(parents=True, exist_ok=True)  # a test may have recorded trusted history in it
    tmp.mkdir()
    if lock is not None:
        (project / "policyengine-gate.lock").write_text(lock + "\n")
    for rel, content in (files or {}).items():  # committed in the change: the workspace is the change's
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_bytes(content.encode() if isinstance(content, str) else content)
    if plant:  # a venv an earlier job on the same shell runner left where the template used to put it
        plant_venv(tmp / "policyengine-venv")
    fakebin = fake_toolchain(tmp_path / "toolchain", installed)
    script = "\n".join(job["script"]).replace("/tmp/", f"{tmp}/")  # this test's /tmp
    (tmp_path / "gate.sh").write_text(script)
    full = {
        "PATH": f"{fakebin}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": str(tmp_path), "TMPDIR": str(tmp),
        "CI_PROJECT_DIR": str(project),
        **{k: str(v) for k, v in job["variables"].items() if "$" not in str(v)},
        "POLICYENGINE_POLICY_SOURCE": "checkout",  # the tests' projects are not git checkouts
        **env,
    }
    args = ["bash", "-eo", "pipefail"] if shell == "bash" else [shell, "-e"]
    return run(*args, str(tmp_path / "gate.sh"), env=full, cwd=project)


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
    # Artifact-only evidence expires long before the policy's retention: the job says so.
    assert ("::warning title=policyengine evidence::the evidence bundle is kept only as an artifact of this run, "
            "which GitHub deletes after the repository's artifact retention (90 days by default, 400 at most): "
            "copy the bundle (the output bundle-path) to a long-term store too") in res.stdout
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
    with FakeAPI("/api/v4") as api:
        approved_mr(api)
        env = {**gitlab_env(api, SQUASH),
               **trusted_history(tmp_path, GL_PREV, store=tmp_path / "project" / "policyengine-evidence"),
               "POLICYENGINE_POLICY": str(POLICY), "POLICYENGINE_NOW": "2026-11-24T15:00:00Z"}
        res = run_template(tmp_path, env)
    assert res.returncode == 0, res.stdout + res.stderr
    project = tmp_path / "project"
    dotenv = dict(line.split("=", 1) for line in (project / "policyengine.env").read_text().splitlines())
    assert dotenv["POLICYENGINE_DECISION"] == "allow" and dotenv["POLICYENGINE_EXIT_CODE"] == "0"
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{12}", dotenv["POLICYENGINE_BUNDLE_ID"])
    assert (project / "policyengine-junit.xml").is_file() and (project / "policyengine-evidence").is_dir()
    assert json.loads((project / "policyengine-decision.json").read_text())["decision"] == "allow"
    # Installed from the hash lock, every hash required; the shared cache is allowed then.
    pip = (tmp_path / "toolchain" / "pip.log").read_text()
    assert "install --quiet --require-hashes --only-binary=:all: -r policyengine-gate.lock PIP_NO_CACHE_DIR=\n" in pip


def test_gitlab_template_script_fails_the_job_on_deny(tmp_path: Path) -> None:
    with FakeAPI("/api/v4") as api:
        approved_mr(api, approvers=("bob",))
        GitLabWorld(api)
        res = run_template(tmp_path, {**gitlab_env(api, SQUASH), "POLICYENGINE_POLICY": str(POLICY)})
    assert res.returncode == 1
    dotenv = (tmp_path / "project" / "policyengine.env").read_text()
    assert "POLICYENGINE_DECISION=deny" in dotenv and re.search(r"POLICYENGINE_BUNDLE_ID=\d{8}T", dotenv)


# -- supply chain: a fresh venv per job, a pinned install, and the decision JSON trusted ----------

# (what `policyengine check` leaves behind, advisory mode, whether the job must pass)
OUTCOMES = {
    "allow with its bundle": ({"decision": "allow"}, False, True),
    "advisory deny": ({"decision": "deny", "advisory": True}, True, True),
    "exit 0, no decision JSON": ({"json": "missing"}, False, False),
    "exit 0, unparsable decision JSON": ({"json": "garbage"}, False, False),
    "exit 0, decision JSON not an object": ({"json": "list"}, False, False),
    "exit 0, decision neither allow nor deny": ({"decision": "maybe"}, False, False),
    "exit 0, deny without advisory": ({"decision": "deny"}, False, False),
    "exit 0, deny marked advisory outside advisory mode": ({"decision": "deny", "advisory": True}, False, False),
    "exit 0, deny not marked advisory in advisory mode": ({"decision": "deny"}, True, False),
    "exit 0, allow but the bundle is missing": ({"bundle": "missing"}, False, False),
    "exit 0, allow but the bundle's sha256 differs": ({"bundle": "wrong-hash"}, False, False),
    "exit 1, deny": ({"decision": "deny", "exit": 1}, False, False),
}


@pytest.mark.parametrize("outcome", list(OUTCOMES))
def test_template_job_passes_only_on_a_trustworthy_allow(tmp_path: Path, outcome: str) -> None:
    fake_run, advisory, passes = OUTCOMES[outcome]
    res = run_template(tmp_path, {"FAKE_RUN": json.dumps(fake_run), "POLICYENGINE_ADVISORY": str(advisory).lower()},
                       installed=FAKE_POLICYENGINE)
    assert "fake policyengine ran" in res.stdout, res.stdout + res.stderr
    assert (res.returncode == 0) is passes, res.stdout + res.stderr
    dotenv = dict(line.split("=", 1) for line in (tmp_path / "project" / "policyengine.env").read_text().splitlines())
    assert dotenv["POLICYENGINE_EXIT_CODE"] == str(res.returncode)
    assert dotenv["POLICYENGINE_DECISION"] == ("allow" if passes and fake_run.get("decision") == "allow" else "deny")
    if not passes and fake_run.get("exit", 0) == 0:
        assert "policyengine: the gate exited 0 but" in res.stderr


@pytest.mark.parametrize("outcome", list(OUTCOMES))
def test_action_step_passes_only_on_a_trustworthy_allow(tmp_path: Path, outcome: str) -> None:
    fake_run, advisory, passes = OUTCOMES[outcome]
    res, outputs, summary = run_action(tmp_path, {"FAKE_RUN": json.dumps(fake_run)},
                                       fail_on_deny="false" if advisory else "true", installed=FAKE_POLICYENGINE)
    assert "fake policyengine ran" in res.stdout, res.stdout + res.stderr
    assert (res.returncode == 0) is passes, res.stdout + res.stderr
    assert outputs["decision"] == ("allow" if passes and fake_run.get("decision") == "allow" else "deny")
    if not passes and fake_run.get("exit", 0) == 0:
        assert "::error title=policyengine::the gate exited 0 but" in res.stdout


def test_action_warns_that_artifact_only_evidence_expires_before_the_policys_retention(tmp_path: Path) -> None:
    res, outputs, _ = run_action(tmp_path / "dir", {}, installed=FAKE_POLICYENGINE,
                                 policy=REPO / "policies" / "soc2-production.yml")
    assert res.returncode == 0 and outputs["decision"] == "allow", res.stdout + res.stderr
    assert ("(90 days by default, 400 at most), shorter than the policy's evidence.retention (400d): copy the "
            "bundle (the output bundle-path) to a long-term store too") in res.stdout
    res, outputs, _ = run_action(tmp_path / "store", {"POLICYENGINE_EVIDENCE_STORE": "s3://bucket/evidence"},
                                 installed=FAKE_POLICYENGINE, policy=REPO / "policies" / "soc2-production.yml")
    assert res.returncode == 0 and "::warning title=policyengine evidence::" not in res.stdout


def test_template_job_refuses_a_decision_json_and_bundle_committed_in_the_checkout(tmp_path: Path) -> None:
    data = b"PK a bundle"
    rel = "bundles/2026/11/20261124T150000Z-0123456789ab.zip"
    stale = {"decision": "allow", "advisory": False,
             "evidence": {"bundle_id": "20261124T150000Z-0123456789ab", "path": rel,
                          "sha256": hashlib.sha256(data).hexdigest()}}
    res = run_template(tmp_path, {"FAKE_RUN": json.dumps({"json": "missing", "bundle": "missing"})},
                       installed=FAKE_POLICYENGINE,
                       files={"policyengine-decision.json": json.dumps(stale), f"policyengine-evidence/{rel}": data})
    assert "fake policyengine ran" in res.stdout, res.stdout + res.stderr
    assert res.returncode == 3, res.stdout + res.stderr
    assert "this run wrote no decision JSON (policyengine-decision.json)" in res.stderr


@pytest.mark.parametrize("shell", ["bash", "sh"])
def test_template_job_does_not_run_a_planted_policyengine(tmp_path: Path, shell: str) -> None:
    if not shutil.which(shell):
        pytest.skip(f"no {shell} here")
    res = run_template(tmp_path, {"FAKE_RUN": json.dumps({"decision": "deny", "exit": 1})},
                       installed=FAKE_POLICYENGINE, plant=True, shell=shell)
    assert "PLANTED" not in res.stdout, res.stdout
    assert "fake policyengine ran" in res.stdout, res.stdout + res.stderr
    assert res.returncode == 1
    # A new venv, in a new folder under TMPDIR, each job: the planted one is untouched and unused.
    venvs = [p for p in (tmp_path / "tmp").iterdir() if p.name != "policyengine-venv"]
    assert venvs == [], venvs  # removed at the end of the job
    assert (tmp_path / "tmp" / "policyengine-venv" / "bin" / "policyengine").is_file()


def test_action_does_not_run_a_planted_policyengine(tmp_path: Path) -> None:
    res, outputs, _ = run_action(tmp_path, {"FAKE_RUN": json.dumps({"decision": "deny", "exit": 1})},
                                 installed=FAKE_POLICYENGINE, plant=True)
    assert "PLANTED" not in res.stdout, res.stdout
    assert "fake policyengine ran" in res.stdout, res.stdout + res.stderr
    assert res.returncode == 1 and outputs["decision"] == "deny"


def test_template_installs_a_git_url_only_at_a_pinned_commit_and_then_without_the_cache(tmp_path: Path) -> None:
    url = "git+https://gitlab.example.com/acme/policyengine.git@" + "0123456789abcdef" * 2 + "01234567"
    res = run_template(tmp_path / "git", {"POLICYENGINE_INSTALL": url}, installed=FAKE_POLICYENGINE, lock=None)
    assert res.returncode == 0, res.stdout + res.stderr
    pip = (tmp_path / "git" / "toolchain" / "pip.log").read_text()
    assert pip == f"pip install --quiet -- {url} PIP_NO_CACHE_DIR=1\n"
    for i, bad in enumerate(["policyengine-gate==0.1.0", "git+https://gitlab.example.com/acme/policyengine.git@main",
                             "git+https://gitlab.example.com/acme/policyengine.git@" + "0" * 39,
                             "git+https://gitlab.example.com/acme/policyengine.git@" + "A" * 40,
                             "git+http://gitlab.example.com/acme/policyengine.git@" + "0" * 40,
                             "git+https://x/y.git@" + "0" * 40 + " --index-url=https://evil.example",
                             "https://evil.example/x.whl"]):
        res = run_template(tmp_path / f"bad{i}", {"POLICYENGINE_INSTALL": bad}, installed=FAKE_POLICYENGINE, lock=None)
        assert res.returncode == 2, (bad, res.stdout, res.stderr)
        assert res.stderr.strip().splitlines() == [
            "policyengine: POLICYENGINE_INSTALL must be git+https://HOST/PATH.git@<40-hex commit>, "
            "or empty to install from the hash lock POLICYENGINE_REQUIREMENTS"], bad
        assert not (tmp_path / f"bad{i}" / "toolchain" / "pip.log").exists()


def test_template_needs_a_hash_lock_pinning_policyengine_gate(tmp_path: Path) -> None:
    res = run_template(tmp_path / "none", {}, installed=FAKE_POLICYENGINE, lock=None)
    assert res.returncode == 2
    assert res.stderr.startswith("policyengine: POLICYENGINE_REQUIREMENTS: no file policyengine-gate.lock in the "
                                 "checkout; vendor the hash lock")
    res = run_template(tmp_path / "deps", {}, installed=FAKE_POLICYENGINE,
                       lock=(REPO / "requirements" / "gate.lock").read_text())
    assert res.returncode == 2
    assert "does not pin policyengine-gate==<version> with its hash" in res.stderr
    assert not (tmp_path / "deps" / "toolchain" / "pip.log").exists()


def test_action_version_input_installs_policyengine_gate_and_refuses_anything_else(tmp_path: Path) -> None:
    res, outputs, _ = run_action(tmp_path / "ok", {}, installed=FAKE_POLICYENGINE, version="0.1.0")
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "ok" / "toolchain" / "pip.log").read_text() == (
        "pip install --disable-pip-version-check --quiet -- policyengine-gate==0.1.0 PIP_NO_CACHE_DIR=1\n")
    res, _, _ = run_action(tmp_path / "own", {}, installed=FAKE_POLICYENGINE)
    assert (tmp_path / "own" / "toolchain" / "pip.log").read_text() == (
        f"pip install --disable-pip-version-check --quiet -- {REPO} PIP_NO_CACHE_DIR=1\n")
    for i, bad in enumerate(["0.1.0 --index-url https://evil.example", "latest", "0.1.0\n::add-mask::x", ">=0.1"]):
        res, outputs, _ = run_action(tmp_path / f"bad{i}", {}, installed=FAKE_POLICYENGINE, version=bad)
        assert res.returncode == 2 and outputs == {}
        assert res.stdout == "::error title=policyengine::the version input is not a version number such as 0.1.0\n"


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


@pytest.mark.parametrize("doc", ["README.md", "docs/ci-integration.md"])
def test_the_documented_gitlab_example_installs_as_written(tmp_path: Path, doc: str) -> None:
    text = (REPO / doc).read_text(encoding="utf-8")
    example = next(b for b in re.findall(r"```yaml\n(.*?)```", text, flags=re.S) if ".policyengine-gate" in b)
    (tmp_path / ".gitlab-ci.yml").write_text(example)
    res = run(tool("check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci", str(tmp_path / ".gitlab-ci.yml"))
    assert res.returncode == 0, res.stdout + res.stderr
    gate = load(tmp_path / ".gitlab-ci.yml")["deploy-gate"]
    assert gate["extends"] == ".policyengine-gate" and not gate["variables"].get("POLICYENGINE_INSTALL")
    # The template's default lock name, unless the example names another.
    lock_name = gate["variables"].get("POLICYENGINE_REQUIREMENTS", "policyengine-gate.lock")
    version = re.search(r'__version__ = "([^"]+)"', (REPO / "policyengine" / "__init__.py").read_text())[1]
    # The page (for the README: docs/install.md, which it links) tells how to make that lock, for this
    # version, with every hash...
    if doc == "README.md":
        assert "(docs/install.md#a-hash-lock)" in text
        text = (REPO / "docs" / "install.md").read_text(encoding="utf-8")
    assert f"echo 'policyengine-gate=={version}' > policyengine-gate.in" in text
    assert f"pip-compile --generate-hashes -o {lock_name} policyengine-gate.in" in text
    # ...and with such a lock committed, the job runs as written.
    lock = f"policyengine-gate=={version} \\\n    --hash=sha256:" + "1" * 64
    variables = {k: str(v) for k, v in gate["variables"].items() if "$" not in str(v)}
    res = run_template(tmp_path / "job", {**variables, "POLICYENGINE_POLICY": str(POLICY)},
                       installed=FAKE_POLICYENGINE, lock=lock)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"-r {lock_name} " in (tmp_path / "job" / "toolchain" / "pip.log").read_text()


# -- the action reads the policy from git by default ---------------------------------------------


@pytest.mark.parametrize(("source", "policy", "code", "message"), [
    ("previous-deploy", "policy.yml", 3, "the workspace is not a git checkout"),
    ("previous-deploy", "/etc/policy.yml", 2, "needs the policy input as a path relative to the repository root"),
    ("from-the-moon", "policy.yml", 2, "policy-source must be previous-deploy, checkout"),
])
def test_the_action_refuses_a_policy_source_it_cannot_trust(tmp_path: Path, source: str, policy: str, code: int,
                                                            message: str) -> None:
    res, _, _ = run_action(tmp_path, {"PE_POLICY_SOURCE": source}, policy=Path(policy))
    assert res.returncode == code, res.stdout + res.stderr
    assert message in res.stdout
    assert not (tmp_path / "evidence").exists()  # nothing judged, nothing recorded


def test_the_action_reads_the_policy_as_of_the_merge_base_by_default(tmp_path: Path) -> None:
    import shutil

    git_env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
               "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_GLOBAL": "/dev/null"}

    def git(*args: str, cwd: Path = tmp_path) -> str:
        return subprocess.run(["git", *args], cwd=cwd, env=git_env, capture_output=True, text=True,
                              check=True).stdout.strip()

    seed = tmp_path / "seed"
    seed.mkdir()
    git("init", "-q", "-b", "main", cwd=seed)
    shutil.copy(POLICY, seed / "policy.yml")
    git("add", ".", cwd=seed)
    git("commit", "-q", "-m", "policy", cwd=seed)
    git("clone", "-q", "--bare", str(seed), str(tmp_path / "origin.git"))
    work = tmp_path / "work"
    git("clone", "-q", str(tmp_path / "origin.git"), str(work))
    (work / "policy.yml").write_text("version: 1\nname: weakened\nrules:\n  - id: x\n    type: checks_passed\n"
                                     "    checks: []\n", encoding="utf-8")  # the checkout's copy: never read
    with FakeAPI("/api/v3") as api:
        reviewed_world(api)
        env = {**github_env(api, MERGE), "PE_POLICY_SOURCE": "previous-deploy",
               "POLICYENGINE_DEFAULT_BRANCH": "main", "POLICYENGINE_WORKSPACE": str(work), **{
                   k: git_env[k] for k in ("GIT_CONFIG_GLOBAL",)}}
        res, _, _ = run_action(tmp_path / "run", env, policy=Path("policy.yml"))
    found = list((tmp_path / "run" / "runner-temp").rglob("decision.json"))
    assert found, res.stdout + res.stderr
    doc = json.loads(found[0].read_text())
    assert doc["policy"]["name"] == "provider-e2e"  # origin/main's policy, not the checkout's
    assert doc["policy"]["source"]["ref"].startswith("@previous-deploy (the merge-base with origin/main)")


@pytest.mark.parametrize(("source", "code", "message"), [
    ("previous-deploy", 3, "reads the policy from git, but git or the checkout is missing"),
    ("somewhere", 2, "POLICYENGINE_POLICY_SOURCE must be previous-deploy, checkout"),
])
def test_the_template_refuses_a_policy_source_it_cannot_trust(tmp_path: Path, source: str, code: int,
                                                              message: str) -> None:
    env = {"POLICYENGINE_POLICY_SOURCE": source, "POLICYENGINE_POLICY": "policy.yml",
           "GIT_CEILING_DIRECTORIES": str(tmp_path)}
    res = run_template(tmp_path, env)
    assert res.returncode == code, res.stdout + res.stderr
    assert message in res.stderr
    assert not (tmp_path / "project" / "policyengine-evidence").exists()


def test_both_integration_files_default_to_the_policy_as_of_the_previous_deploy() -> None:
    assert load(ACTION)["inputs"]["policy-source"]["default"] == "previous-deploy"
    job = load(GITLAB)[".policyengine-gate"]
    assert job["variables"]["POLICYENGINE_POLICY_SOURCE"] == "previous-deploy"
    assert not str(job["image"]).endswith("-slim")  # the default reads git: the image must have it
