""".github/workflows/release.yml: what can be checked of a release without GitHub and PyPI.

Only three things run here (docs/install.md says so): actionlint and zizmor (offline) on the
workflow, and `twine check` on the sdist and wheel built from this checkout. The OIDC exchange,
the upload and the attestation run only on GitHub; their shape is checked below: every action
pinned by commit, `id-token: write` on the publish job alone.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from test_platform_controls import actionlint
from test_provider_integration_files import run, tool

REPO = Path(__file__).resolve().parents[1]
RELEASE = REPO / ".github" / "workflows" / "release.yml"


def _workflow() -> Any:
    return yaml.safe_load(RELEASE.read_text(encoding="utf-8"))


def _lint(folder: Path) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    files = sorted(folder.glob("*.yml"))
    linted = run(actionlint(), *map(str, files), cwd=folder.parents[1])
    audited = run(tool("zizmor"), "--offline", str(folder))
    return linted, audited


def test_actionlint_and_zizmor_pass_the_release_workflow() -> None:
    linted, audited = _lint(RELEASE.parent)
    assert linted.returncode == 0 and "passed lint checks" in linted.stdout, linted.stdout + linted.stderr
    assert audited.returncode == 0 and "No findings to report" in audited.stdout + audited.stderr, (
        audited.stdout + audited.stderr)


BROKEN = {
    "pinned-by-tag": lambda t: re.sub(r"gh-action-pypi-publish@[0-9a-f]{40}", "gh-action-pypi-publish@release/v1", t),
    "tag-as-shell": lambda t: t.replace("python -m build --sdist", 'echo "${{ github.ref_name }}"; python -m build --sdist'),
    "missing-job": lambda t: t.replace("needs: build", "needs: [build, attest]"),
}


def test_the_linters_would_catch_a_broken_release_workflow(tmp_path: Path) -> None:
    """One run of each linter over three broken copies (each tool starts slowly); each copy is named."""
    folder = tmp_path / ".github" / "workflows"
    folder.mkdir(parents=True)
    good = RELEASE.read_text(encoding="utf-8")
    for name, edit in BROKEN.items():
        assert edit(good) != good, name
        (folder / f"{name}.yml").write_text(edit(good), encoding="utf-8")
    linted, audited = _lint(folder)
    assert linted.returncode != 0 and audited.returncode != 0
    said = {"actionlint": linted.stdout + linted.stderr, "zizmor": audited.stdout + audited.stderr}
    assert "missing-job.yml" in said["actionlint"], said
    assert "tag-as-shell.yml" in said["zizmor"] and "pinned-by-tag.yml" in said["zizmor"], said


def test_every_action_is_pinned_by_commit_and_only_the_publish_job_can_mint_a_token() -> None:
    workflow = _workflow()
    assert workflow["permissions"] == {}
    assert workflow[True] == {"push": {"tags": ["v*"]}}  # PyYAML reads `on` as True
    jobs = workflow["jobs"]
    uses = [step["uses"] for job in jobs.values() for step in job["steps"] if "uses" in step]
    assert uses and all(re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", u) for u in uses), uses
    actions = {u.split("@")[0] for u in uses}
    assert {"pypa/gh-action-pypi-publish", "actions/attest-build-provenance"} <= actions
    minting = [name for name, job in jobs.items() if job.get("permissions", {}).get("id-token") == "write"]
    assert minting == ["publish"]
    publish = jobs["publish"]
    assert publish["permissions"] == {"id-token": "write", "attestations": "write"}
    assert publish["environment"]["name"] == "pypi"
    steps = [s.get("uses", "").split("@")[0] for s in publish["steps"]]
    # the files attested are the files published: attested first, then uploaded, with no build between
    assert steps == ["actions/download-artifact", "actions/attest-build-provenance", "pypa/gh-action-pypi-publish"]
    assert not any("password" in s.get("with", {}) for s in publish["steps"])  # trusted publishing, no token


def test_twine_check_passes_the_sdist_and_wheel_of_this_checkout(tmp_path: Path) -> None:
    # Built without isolation (the test extra has hatchling): no package index is needed here.
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "*-evidence",
                                                                "evidence", "dist", "build"))
    built = run(sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir",
                str(tmp_path / "dist"), str(source))
    assert built.returncode == 0, built.stdout + built.stderr
    dists = sorted(p.name for p in (tmp_path / "dist").iterdir())
    assert [d.split("-")[0] for d in dists] == ["policyengine_gate", "policyengine_gate"], dists
    checked = run(tool("twine"), "check", "--strict", *(str(p) for p in sorted((tmp_path / "dist").iterdir())))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("PASSED") == 2, checked.stdout
