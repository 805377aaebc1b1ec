"""Nothing is ever written through a symbolic link inside an evidence archive.

A hostile repository can commit ``evidence/index.jsonl -> ~/.bashrc`` (or link the lock, the
cache, ``bundles/`` or a year folder somewhere else): `check` must refuse (exit 3, naming the
path) and leave the link's target exactly as it was.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from test_evidence import write

from policyengine.errors import EvidenceError
from policyengine.evidence.stores.folder import LocalArchive

FIXTURES = Path(__file__).parent / "fixtures" / "acceptance"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("POLICYENGINE_", "GITHUB_", "GITLAB_", "CI"))}


def check(archive: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "policyengine", "check", "--policy", str(FIXTURES / "policy.yml"),
         "--change", str(FIXTURES / "change.yml"), "--workspace", str(FIXTURES / "workspace"),
         "--now", "2026-11-24T15:00:00Z", "--evidence-dir", str(archive)],
        capture_output=True, text=True, timeout=300, check=False, env=_env())


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policyengine", *args], capture_output=True, text=True,
                          timeout=300, check=False, env=_env())


def snapshot(path: Path) -> Any:
    """Bytes and modification times of a file, or of everything under a folder."""
    if path.is_file():
        st = path.stat()
        return (path.read_bytes(), st.st_mtime_ns)
    return sorted((str(p.relative_to(path)), p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
                  for p in [path, *path.rglob("*")])


@pytest.fixture
def populated(tmp_path: Path) -> Path:
    root = tmp_path / "evidence"
    result = check(root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert cli("evidence", "list", "--archive", str(root)).returncode == 0  # makes index.sqlite
    return root


def _link_file(root: Path, name: str, outside: Path) -> Path:
    """Move ``root/name`` (when it exists) to ``outside`` and put a symlink in its place."""
    target = outside / name.replace("/", "_")
    if (root / name).exists():
        shutil.move(str(root / name), str(target))
    else:
        target.write_bytes(b"outside file\n")
    (root / name).symlink_to(target)
    return target


@pytest.mark.parametrize("name", ["index.jsonl", ".lock", "index.sqlite", "index.sqlite-journal", ".pending.json"])
def test_check_refuses_a_symlinked_file_in_the_archive_and_leaves_its_target_alone(
        populated: Path, tmp_path: Path, name: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = _link_file(populated, name, outside)
    before = snapshot(target)
    result = check(populated)
    assert result.returncode == 3, result.stdout + result.stderr
    assert str(populated / name) in result.stderr + result.stdout and "symbolic link" in result.stderr + result.stdout
    assert snapshot(target) == before


def test_check_does_not_create_the_target_of_a_dangling_index_link(tmp_path: Path) -> None:
    root = tmp_path / "evidence"
    root.mkdir()
    target = tmp_path / "outside-index.jsonl"
    (root / "index.jsonl").symlink_to(target)
    result = check(root)
    assert result.returncode == 3 and "symbolic link" in result.stdout + result.stderr
    assert not target.exists() and not os.path.lexists(target)


@pytest.mark.parametrize("which", ["bundles", "year", "month"])
def test_check_refuses_a_symlinked_bundles_folder_and_leaves_its_target_alone(
        populated: Path, tmp_path: Path, which: str) -> None:
    now = datetime.now(timezone.utc)
    rel = {"bundles": "bundles", "year": f"bundles/{now:%Y}", "month": f"bundles/{now:%Y}/{now:%m}"}[which]
    outside = tmp_path / "outside"
    if (populated / rel).exists():
        shutil.move(str(populated / rel), str(outside))
    else:
        outside.mkdir()
    (populated / rel).parent.mkdir(parents=True, exist_ok=True)
    (populated / rel).symlink_to(outside, target_is_directory=True)
    before = snapshot(outside)
    result = check(populated)
    assert result.returncode == 3, result.stdout + result.stderr
    said = result.stdout + result.stderr
    assert str(populated / rel) in said and "symbolic link" in said
    assert snapshot(outside) == before


def test_list_refuses_a_symlinked_cache(populated: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = _link_file(populated, "index.sqlite", outside)
    before = snapshot(target)
    result = cli("evidence", "list", "--archive", str(populated))
    assert result.returncode == 3 and "symbolic link" in result.stderr
    assert snapshot(target) == before


def test_the_store_refuses_in_process_too(tmp_path: Path) -> None:
    archive = LocalArchive(tmp_path / "a")
    write(archive)
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(archive.index_path.read_bytes())
    archive.index_path.unlink()
    archive.index_path.symlink_to(outside)
    before = snapshot(outside)
    with pytest.raises(EvidenceError, match="symbolic link"):
        write(archive)
    assert snapshot(outside) == before
    # The archive root itself may be a link: where the archive lives is the user's choice.
    linked_root = tmp_path / "root-link"
    linked_root.symlink_to(tmp_path / "b", target_is_directory=True)
    (tmp_path / "b").mkdir()
    write(LocalArchive(linked_root))
    assert LocalArchive(tmp_path / "b").verify().ok
