"""The complete GitLab pipeline (examples/pipelines/gitlab-ci.yml, the README's), run as a user runs it.

Under gitlab-ci-local (installed by scripts/setup.sh test: pinned, with Node 22 from npm), shell
executor, the host's Python. The pipeline's text changes only where a local run must, each change
asserted as an exact diff: ``include: local:`` for ``project:`` (the template is this
repository's .gitlab-ci-template.yml, copied into the project), and the evidence store's URL (a
bare repository here instead of gitlab.example.com). The lock (policyengine-gate.lock, the
project's file) pins this checkout's wheel, built here, and its dependencies, and
``PIP_FIND_LINKS`` (a CI/CD variable) points pip at them: the wheel is not published. Everything
else a GitLab project sets in its settings is given as variables: the File-type keys, the tokens,
and the predefined variables a local run cannot know (the API stand-in's URL, the platform's git
repository, the push's before commit, CI=true).

Adoption: ``policyengine evidence baseline`` records the commit in production (deploy #1); the
pipeline is the second deploy. Cases: an ordinary approved change is allowed (the deploy job
runs), one approval is denied, a policy-weakening change is denied by the policy before it.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ci_git import git
from fake_servers import FakeAPI, GitLabWorld
from reconcile_world import GitLabStatuses
from test_pipelines_github import POLICY, WEAKENED, adopt, clean_env, keys
from test_provider_integration_files import GITLAB, REPO

from policyengine.evidence.stores.factory import open_store

PIPELINE = REPO / "examples" / "pipelines" / "gitlab-ci.yml"
BIN = REPO / ".venv" / "gitlab-ci-local" / "node_modules" / ".bin"
STORE_IN_FILE = "git+https://gitlab.example.com/acme/policyengine-evidence.git#refs/heads/policyengine-evidence"
INCLUDE_IN_FILE = ["  - project: acme/policyengine",
                   "    ref: 0123456789abcdef0123456789abcdef01234567 # the release you vetted",
                   "    file: .gitlab-ci-template.yml"]
PROJECT_ID = "278964"
WITNESS_TOKEN = "glpat-" + "W" * 20
DEPLOY_SH = '#!/bin/sh\nset -eu\necho "deploying with evidence bundle ${POLICYENGINE_BUNDLE_ID}"\n'


def tools() -> Path:
    """gitlab-ci-local's folder, or fail (CI=true) / skip, saying why."""
    missing = [what for what, ok in (("gitlab-ci-local (scripts/setup.sh test installs it with npm)",
                                      (BIN / "gitlab-ci-local").exists() and (BIN / "node").exists()),
                                     ("rsync (gitlab-ci-local copies the project with it)", shutil.which("rsync")))
               if not ok]
    if missing:
        why = "cannot run the GitLab pipeline: missing " + "; ".join(missing)
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(why)
        pytest.skip(why)
    return BIN


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """This checkout's wheel and its dependencies' (with the sign extra), and the lock pinning them."""
    tools()
    folder = tmp_path_factory.mktemp("wheelhouse")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--only-binary=:all:", "-w", str(folder),
                          f"{REPO}[sign]"], capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = []
    for wheel in sorted(folder.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        name = name.replace("_", "-").lower()
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        pin = "policyengine-gate[sign]" if name == "policyengine-gate" else name
        lines.append(f"{pin}=={version} \\\n    --hash=sha256:{digest}")
    return folder, "".join(line + "\n" for line in lines)


def local_pipeline(store: str) -> str:
    """The pipeline's text with the substitutions a local run needs, each asserted as an exact diff."""
    text = PIPELINE.read_text(encoding="utf-8")
    local = text.replace("\n".join(INCLUDE_IN_FILE), "  - local: .gitlab-ci-template.yml").replace(STORE_IN_FILE, store)
    diff = [line for line in difflib.unified_diff(text.splitlines(), local.splitlines(), lineterm="", n=0)
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    # The store is named twice: by the gate and by the witness job.
    assert diff == [*(f"-{line}" for line in INCLUDE_IN_FILE), "+  - local: .gitlab-ci-template.yml",
                    *[f"-    POLICYENGINE_EVIDENCE_STORE: {STORE_IN_FILE}", f"+    POLICYENGINE_EVIDENCE_STORE: {store}"] * 2]
    return local


def project_world(tmp: Path, case: str, lock: str) -> dict[str, Any]:
    """The project (main at ``prod``, then alice's change on top), the platform's bare copy, the store."""
    project = tmp / "project"
    project.mkdir(parents=True)
    evidence = tmp / "evidence.git"
    git(tmp, "init", "-q", "--bare", str(evidence))
    store = f"git+file://{evidence}#refs/heads/policyengine-evidence"
    files = {"policies/soc2-production.yml": POLICY, "src/app.py": "VERSION = 1\n", "scripts/deploy.sh": DEPLOY_SH,
             ".gitlab-ci.yml": local_pipeline(store), ".gitlab-ci-template.yml": GITLAB.read_text(encoding="utf-8"),
             "policyengine-gate.lock": lock, ".gitignore": ".gitlab-ci-local/\n"}
    for rel, text in files.items():
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(text, encoding="utf-8")
    (project / "scripts/deploy.sh").chmod(0o755)
    git(project, "init", "-q", "-b", "main")
    git(project, "add", ".")
    git(project, "commit", "-q", "-m", "in production today")
    prod = git(project, "rev-parse", "HEAD")
    if case == "weakening":
        (project / "policies/soc2-production.yml").write_text(WEAKENED, encoding="utf-8")
        changed = ["policies/soc2-production.yml"]
    else:
        (project / "src/app.py").write_text("VERSION = 2\n", encoding="utf-8")
        changed = ["src/app.py"]
    git(project, "commit", "-q", "-am", "the change")
    change = git(project, "rev-parse", "HEAD")
    origin = tmp / "platform" / "acme" / "payments.git"
    origin.parent.mkdir(parents=True)
    git(tmp, "clone", "-q", "--bare", str(project), str(origin))
    git(project, "remote", "add", "origin", "https://gitlab.example.com/acme/payments.git")
    return {"project": project, "origin": origin, "store": store, "prod": prod, "change": change, "files": changed}


def code_host(api: FakeAPI, world: dict[str, Any], case: str) -> None:
    w = GitLabWorld(api)
    change = world["change"]
    approvers = ("bob",) if case in ("deny", "weakening") else ("bob", "carol")
    commits = [w.commit(change, "alice")]
    w.merge_request(7, author="alice", head=change, merged_by="dana", commits=commits, approvers=approvers,
                    files=tuple(world["files"]), state="merged")
    w.project_approvals(True)
    w.jobs(61, change, [("build", "success")])
    w.deployments([])
    w.compare(commits, files=world["files"])


def run_pipeline(tmp: Path, case: str, wheelhouse: tuple[Path, str], *, witness: bool = False) -> dict[str, Any]:
    bin_dir = tools()
    folder, lock = wheelhouse
    world = project_world(tmp / "git", case, lock)
    k = keys(tmp)
    adopt(tmp, {"origin": world["origin"], "store": world["store"], "prod": world["prod"]}, k)
    gate_sha = re.search(r"policyengine-gate\[sign\]==\S+ \\\n    --hash=sha256:([0-9a-f]{64})", lock)
    assert gate_sha
    with FakeAPI("/api/v4") as api:
        code_host(api, world, case)
        statuses = GitLabStatuses(api)
        statuses.logins = {WITNESS_TOKEN: "witness-bot"}
        statuses.accept("acme/payments", world["change"])
        variables = {
            # What the project's CI/CD settings hold (File-type keys are paths; tokens masked).
            "POLICYENGINE_SIGNING_KEY": str(k["pem"]), "POLICYENGINE_TRUST_KEY": str(k["pub"]),
            "POLICYENGINE_EVIDENCE_TOKEN": "glpat-" + "E" * 20, "GITLAB_TOKEN": "glpat-" + "T" * 20,
            "POLICYENGINE_GATE_SHA256": gate_sha[1],
            # The unpublished wheel.
            "PIP_FIND_LINKS": str(folder),
            # Predefined variables GitLab sets and a local run cannot know.
            "CI": "true", "GITLAB_CI": "true", "CI_API_V4_URL": api.url, "CI_PROJECT_ID": PROJECT_ID,
            "CI_REPOSITORY_URL": f"file://{world['origin']}", "CI_JOB_TOKEN": "glcbt-" + "J" * 20,
            "CI_COMMIT_BEFORE_SHA": world["prod"], "GITLAB_USER_LOGIN": "dana",
            "POLICYENGINE_CACHE_DIR": str(tmp / "cache-runner"),
        }
        if witness:  # environment-scoped to the witness job in GitLab's settings
            variables["POLICYENGINE_WITNESS_TOKEN"] = WITNESS_TOKEN
        args = [str(bin_dir / "gitlab-ci-local"), "--force-shell-executor", "--no-color"]
        for name, value in variables.items():
            args += ["--variable", f"{name}={value}"]
        env = clean_env(PATH=f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}", HOME=str(tmp),
                        GCL_IGNORE_PREDEFINED_VARS="CI,GITLAB_CI,CI_API_V4_URL,CI_PROJECT_ID,CI_REPOSITORY_URL,"
                                                   "CI_JOB_TOKEN,CI_COMMIT_BEFORE_SHA,GITLAB_USER_LOGIN")
        res = subprocess.run(args, cwd=world["project"], capture_output=True, text=True, timeout=600, check=False,
                             env=env)
    records, _ = open_store(world["store"]).read_index()
    return {"res": res, "out": res.stdout + res.stderr, "records": records, "world": world,
            "statuses": statuses.by_commit.get(("acme/payments", world["change"]), [])}


def test_the_gitlab_pipeline_allows_the_second_deploy_of_an_ordinary_approved_change(
        tmp_path: Path, wheelhouse: tuple[Path, str]) -> None:
    run = run_pipeline(tmp_path, "allow", wheelhouse, witness=True)
    out = run["out"]
    assert run["res"].returncode == 0, out[-6000:]
    assert re.search(r"PASS\s+deploy-gate", out) and re.search(r"PASS\s+deploy\b", out), out[-3000:]
    # The witness job published the decision as a commit status, with its own token.
    assert re.search(r"PASS\s+deploy-witness", out), out[-3000:]
    [status] = run["statuses"]
    bundle = run["records"][1]
    assert status["name"] == "policyengine/production" and status["status"] == "success"
    assert status["description"].startswith(f"allow {bundle['id']} sha256:{bundle['sha256'][:16]} head:")
    assert WITNESS_TOKEN not in out
    assert "POLICYENGINE_DECISION=allow" in out
    assert re.search(r"SKIP\w*\s+security-review", out), out[-6000:]  # the range is trusted
    assert [(r.get("kind"), r["sequence"], r["commit"]) for r in run["records"]] == [
        ("baseline", 1, run["world"]["prod"]), (None, 2, run["world"]["change"])]
    assert run["records"][1]["signed_by"] == run["records"][0]["signed_by"] is not None
    # The deploy job ran with the gate's dotenv (the bundle of this deploy).
    assert f"deploying with evidence bundle {run['records'][1]['id']}" in out
    assert "glpat-" + "T" * 20 not in out


def test_the_gitlab_pipeline_denies_a_change_one_peer_approved(tmp_path: Path, wheelhouse: tuple[Path, str]) -> None:
    run = run_pipeline(tmp_path, "deny", wheelhouse)
    out = run["out"]
    assert run["res"].returncode != 0 and re.search(r"FAIL\s+deploy-gate", out), out[-6000:]
    assert "POLICYENGINE_DECISION=deny" in out
    assert "1 of 2 required approvals" in out
    assert not re.search(r"PASS\s+deploy\b", out)
    assert [r["decision"] for r in run["records"]] == ["adopted", "deny"]


def test_the_gitlab_pipeline_judges_a_policy_weakening_change_by_the_policy_before_it(
        tmp_path: Path, wheelhouse: tuple[Path, str]) -> None:
    run = run_pipeline(tmp_path, "weakening", wheelhouse)
    out = run["out"]
    assert run["res"].returncode != 0 and "POLICYENGINE_DECISION=deny" in out, out[-6000:]
    assert "1 of 2 required approvals" in out  # the checkout says 1 is enough; the trusted policy says 2
    assert not re.search(r"PASS\s+deploy\b", out)


def test_the_template_reads_waivers_like_the_policy(tmp_path: Path) -> None:
    """POLICYENGINE_WAIVERS as a path is read from git at the trusted previous deploy (never the
    checkout); a path outside the repository is refused before the gate runs."""
    from test_provider_integration_files import run_template

    spy = '#!/bin/sh\n[ "$1" = --version ] && exit 0\necho "WAIVERS=${POLICYENGINE_WAIVERS:-}" >&2\nexit 3\n'
    base = {"POLICYENGINE_POLICY_SOURCE": "previous-deploy", "POLICYENGINE_POLICY": "policies/p.yml",
            "POLICYENGINE_WORKSPACE": str(REPO)}
    res = run_template(tmp_path / "a", {**base, "POLICYENGINE_WAIVERS": "./policies/waivers.yml"}, installed=spy)
    assert "WAIVERS=git:@previous-deploy:policies/waivers.yml" in res.stderr, res.stdout + res.stderr
    res = run_template(tmp_path / "b", {**base, "POLICYENGINE_WAIVERS": "git+https://x.example/w.git#main:w.yml"},
                       installed=spy)
    assert "WAIVERS=git+https://x.example/w.git#main:w.yml" in res.stderr
    res = run_template(tmp_path / "c", {**base, "POLICYENGINE_WAIVERS": "/etc/w.yml"}, installed=spy)
    assert res.returncode == 2 and "needs POLICYENGINE_WAIVERS as a path relative" in res.stderr
