"""scripts/demo.sh, the README's first command: it passes when the demo works and fails when it does not."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _copy_demo(tmp: Path, policyengine: str) -> Path:
    """The demo's files in a folder of their own, with ``.venv`` stand-ins: a python that installs
    nothing and a ``policyengine`` command given as shell text."""
    root = tmp / "repo"
    for name in ("scripts", "policies", "examples"):
        shutil.copytree(REPO / name, root / name)
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    fake_python = bin_dir / "python"
    fake_python.write_text('#!/bin/sh\n[ "$3" = "show" ] && exit 1\nexit 0\n')  # pip install: ok; pip show: absent
    command = bin_dir / "policyengine"
    command.write_text(f"#!/bin/sh\n{policyengine}\n")
    for path in (fake_python, command):
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return root


def _demo(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "scripts/demo.sh"], cwd=root, capture_output=True, text=True, timeout=300,
                          check=False)


def test_the_demo_passes_with_the_real_command(tmp_path: Path) -> None:
    real = f'exec "{sys.executable}" -m policyengine "$@"'
    root = _copy_demo(tmp_path, real)
    proc = _demo(root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "(exit code 1)" in proc.stdout  # the denied change really was denied
    assert "demo ok" in proc.stdout
    assert (root / "demo-evidence" / "index.jsonl").is_file()


def test_the_demo_fails_when_a_step_exits_otherwise_than_expected(tmp_path: Path) -> None:
    # A gate that allows everything: the denied change's step exits 0 instead of 1.
    root = _copy_demo(tmp_path, "echo ALLOW; exit 0")
    proc = _demo(root)
    assert proc.returncode == 1
    assert "demo: expected exit code 1 here, got 0" in proc.stderr
    assert "demo ok" not in proc.stdout


def test_the_demo_fails_when_the_gate_crashes(tmp_path: Path) -> None:
    root = _copy_demo(tmp_path, "echo internal error >&2; exit 4")
    proc = _demo(root)
    assert proc.returncode == 1
    assert "expected exit code 0 here, got 4" in proc.stderr
    assert "demo failed" in proc.stderr
