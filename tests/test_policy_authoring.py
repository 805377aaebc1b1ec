"""Authoring: policy init, the bundled policies inside the package, pre-commit hooks, schema."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policyengine", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.parametrize("template", ["soc2-production", "soc2-small-team"])
def test_init_writes_a_valid_policy_and_its_schema_beside_it(tmp_path: Path, template: str) -> None:
    run = _cli("policy", "init", "--template", template, "-o", "policies/prod.yml", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    text = (tmp_path / "policies" / "prod.yml").read_text("utf-8")
    assert text.splitlines()[0] == "# yaml-language-server: $schema=policy.schema.json"
    # The bundled policy, but for the comments that name a file: they name the one written (test_newcomer.py).
    bundled = (REPO / "policies" / f"{template}.yml").read_text("utf-8").splitlines()
    written = text.splitlines()[1:]
    assert len(written) == len(bundled)
    assert [a for a, b in zip(written, bundled) if a != b and not a.lstrip().startswith("#") and "#" not in a] == []
    assert "ADAPT" in text
    schema = (tmp_path / "policies" / "policy.schema.json").read_text("utf-8")
    assert schema == _cli("policy", "schema", cwd=tmp_path).stdout == (REPO / "schemas" / "policy.schema.json").read_text("utf-8")
    assert _cli("policy", "validate", "policies/prod.yml", cwd=tmp_path).returncode == 0


def test_init_never_overwrites_without_force(tmp_path: Path) -> None:
    (tmp_path / "policy.yml").write_text("mine\n", encoding="utf-8")
    run = _cli("policy", "init", cwd=tmp_path)
    assert run.returncode == 2 and "exists; not overwritten" in run.stderr
    assert (tmp_path / "policy.yml").read_text("utf-8") == "mine\n"
    assert _cli("policy", "init", "--force", cwd=tmp_path).returncode == 0
    assert "soc2-production" in (tmp_path / "policy.yml").read_text("utf-8")


def test_init_to_standard_output(tmp_path: Path) -> None:
    run = _cli("policy", "init", "--template", "soc2-small-team", "-o", "-", cwd=tmp_path)
    assert run.returncode == 0 and "name: soc2-small-team" in run.stdout
    assert list(tmp_path.iterdir()) == []


def test_the_wheel_carries_the_bundled_policies_and_schemas(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                          str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300, check=False)
    if run.returncode != 0 and "hatchling" in run.stderr:
        run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
                             capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    [wheel] = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("soc2-production", "soc2-small-team"):
        assert f"policyengine/policies/{name}.yml" in names
    assert "policyengine/schemas/policy.schema.json" in names


def test_pre_commit_hooks_name_real_commands() -> None:
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text("utf-8"))
    assert {h["id"] for h in hooks} == {"policyengine-validate", "policyengine-test"}
    for hook in hooks:
        assert hook["language"] == "python"
        words = hook["entry"].split()
        assert words[0] == "policyengine"
        run = _cli(*words[1:], "--help", cwd=REPO)
        assert run.returncode == 0, f"{hook['entry']}: {run.stderr}"
