"""Globs and the workspace boundary."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from policyengine.errors import WorkspaceError
from policyengine.globs import glob_match, static_path_problem
from policyengine.workspace.files import Workspace


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("infra/**", "infra/main.tf", True),
        ("infra/**", "infra/modules/vpc/main.tf", True),
        ("infra/**", "infrastructure/x", False),
        ("reports/*.xml", "reports/unit.xml", True),
        ("reports/*.xml", "reports/integration/api.xml", False),
        ("reports/**/*.xml", "reports/unit.xml", True),
        ("reports/**/*.xml", "reports/a/b/c.xml", True),
        ("**/*.tf", "main.tf", True),
        ("**/*.tf", "a/b/main.tf", True),
        ("src/?.py", "src/a.py", True),
        ("src/?.py", "src/ab.py", False),
        ("src/[ab].py", "src/b.py", True),
        ("src/[!ab].py", "src/b.py", False),
        ("*.md", "docs/x.md", False),
        ("a+b(c).txt", "a+b(c).txt", True),
    ],
)
def test_glob_semantics(pattern: str, path: str, expected: bool) -> None:
    assert glob_match(pattern, path) is expected


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x", "a/../../x", "C:/x", "a\\b", ""])
def test_static_path_problems(bad: str) -> None:
    assert static_path_problem(bad)


@pytest.mark.parametrize("good", ["ROLLBACK.md", "a/../b.md", "reports/**/*.xml", "./x"])
def test_static_paths_ok(good: str) -> None:
    assert static_path_problem(good) is None


def test_glob_skips_symlinks_out_and_reports_them(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "reports").mkdir(parents=True)
    (ws / "reports" / "a.xml").write_text("<testsuite/>")
    (tmp_path / "evil.xml").write_text("<testsuite/>")
    os.symlink(tmp_path / "evil.xml", ws / "reports" / "b.xml")
    os.symlink(tmp_path, ws / "reports" / "dir")  # a folder link out is not walked
    matches, escapes = Workspace(ws).glob("reports/**/*.xml")
    assert matches == ["reports/a.xml"]
    assert escapes == ["reports/b.xml"]


def test_resolve_refuses_escape(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError) as info:
        Workspace(tmp_path).resolve("../x")
    assert info.value.outside


@pytest.mark.parametrize("pattern", ["reports/**/*.xml", "reports/*.xml", "reports/etc/*", "reports/**",
                                     "reports/deep/**/*.xml", "**/*.xml"])
def test_a_glob_never_descends_through_a_symlink_out_of_the_workspace(tmp_path: Path, pattern: str) -> None:
    """``reports -> /`` (or any folder outside) is never walked, and no outside name is listed."""
    outside = tmp_path / "outside"
    (outside / "etc").mkdir(parents=True)
    (outside / "deep" / "x").mkdir(parents=True)
    for rel in ("top.xml", "etc/passwd", "etc/x.xml", "deep/x/y.xml"):
        (outside / rel).write_text("<testsuite/>")
    ws = tmp_path / "ws"
    ws.mkdir()
    os.symlink(outside, ws / "reports")
    (ws / "real.xml").write_text("<testsuite/>")
    matches, escapes = Workspace(ws).glob(pattern)
    assert all(not m.startswith("reports/") for m in matches), matches
    # The only name that may be reported is the link itself, which is inside the workspace.
    assert set(escapes) <= {"reports"}, escapes
    if pattern.startswith("reports/"):
        assert escapes == ["reports"]


def test_a_glob_through_a_symlinked_folder_inside_the_workspace_still_works(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "build" / "reports").mkdir(parents=True)
    (ws / "build" / "reports" / "a.xml").write_text("<testsuite/>")
    os.symlink(ws / "build" / "reports", ws / "reports")
    matches, escapes = Workspace(ws).glob("reports/*.xml")
    assert (matches, escapes) == (["reports/a.xml"], [])


def test_a_glob_with_a_parent_symlink_to_root_lists_nothing_outside(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    os.symlink("/", ws / "root")
    matches, escapes = Workspace(ws).glob("root/etc/*")
    assert matches == [] and escapes == ["root"]
