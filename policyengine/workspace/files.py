"""The only door through which rules read files: everything stays inside the workspace."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from policyengine.errors import WorkspaceError
from policyengine.globs import compile_glob, glob_literal_prefix, relative_path_problem
from policyengine.models import FileRead

HASH_CHUNK = 1 << 20


class Workspace:
    """A folder whose files rules may read. Symlinks are followed only while they stay inside."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    def resolve(self, relpath: str) -> Path:
        """Return the real path of ``relpath``; raise ``WorkspaceError(outside=True)`` if it leaves the workspace."""
        problem = relative_path_problem(relpath)
        if problem:
            raise WorkspaceError(problem, outside=True)
        candidate = self.root / relpath
        real = Path(os.path.realpath(candidate))
        if real != self.root and self.root not in real.parents:
            raise WorkspaceError(
                f"{relpath} leads outside the workspace (it resolves to {real}); "
                "a symlink out of the workspace is not followed",
                outside=True,
            )
        return real

    def glob(self, pattern: str) -> tuple[list[str], list[str]]:
        """Return ``(matches, escapes)``: workspace-relative files matching the glob, sorted,
        and matches that are symlinks leading outside the workspace (never read).

        The walk never leaves the workspace: a symlinked folder on the glob's literal prefix
        that leads outside is reported by its own (inside) name and never entered, and
        symlinked folders met while walking are not descended into.
        """
        regex = compile_glob(pattern)
        start_rel = glob_literal_prefix(pattern)
        matches: list[str] = []
        escapes: list[str] = []
        walked = ""
        for part in (p for p in start_rel.split("/") if p not in ("", ".")) if start_rel else ():
            walked = f"{walked}/{part}" if walked else part
            if (self.root / walked).is_symlink():
                try:
                    self.resolve(walked)
                except WorkspaceError:
                    return matches, [walked]
        start = self.root / start_rel if start_rel else self.root
        if not start.is_dir():
            return matches, escapes
        for rel in self._walk(start):
            if regex.match(rel):
                try:
                    real = self.resolve(rel)
                except WorkspaceError:
                    escapes.append(rel)
                    continue
                if real.is_file():
                    matches.append(rel)
        return sorted(matches), sorted(escapes)

    def _walk(self, start: Path) -> Iterator[str]:
        for dirpath, dirnames, filenames in os.walk(start, followlinks=False):
            dirnames.sort()
            base = Path(dirpath)
            for name in filenames + [d for d in dirnames if (base / d).is_symlink()]:
                yield (base / name).relative_to(self.root).as_posix()

    def read_bytes(self, relpath: str, max_bytes: int) -> tuple[bytes, FileRead]:
        """Read a small workspace file once, returning its bytes and the record of what was read."""
        real = self.resolve(relpath)
        try:
            with open(real, "rb") as fh:
                data = fh.read(max_bytes + 1)
        except OSError as exc:
            raise WorkspaceError(f"cannot read {relpath}: {exc.strerror or exc}") from exc
        if len(data) > max_bytes:
            raise WorkspaceError(f"{relpath} is larger than {max_bytes} bytes")
        info = FileRead(relpath=relpath, abspath=str(real), sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        return data, info

    def describe(self, relpath: str) -> FileRead:
        """Hash a workspace file (streaming) so the evidence can prove what was read."""
        real = self.resolve(relpath)
        try:
            st = real.stat()
            if not stat.S_ISREG(st.st_mode):
                raise WorkspaceError(f"{relpath} is not a regular file")
            digest = hashlib.sha256()
            size = 0
            with open(real, "rb") as fh:
                while chunk := fh.read(HASH_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
        except OSError as exc:
            raise WorkspaceError(f"cannot read {relpath}: {exc.strerror or exc}") from exc
        return FileRead(relpath=relpath, abspath=str(real), sha256=digest.hexdigest(), size=size)
