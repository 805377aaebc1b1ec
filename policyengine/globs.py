"""Path globs with the semantics users expect from CI tools: ``*`` stays in one folder, ``**`` crosses folders."""

from __future__ import annotations

import functools
import posixpath
import re


@functools.lru_cache(maxsize=512)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """Translate a glob to a regular expression over ``/``-separated relative paths.

    ``**`` matches any number of folders (including none), ``*`` any run of characters
    except ``/``, ``?`` one character except ``/``, ``[abc]``/``[!abc]`` a character class.
    """
    i, n = 0, len(pattern)
    out: list[str] = []
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                j = i + 2
                at_start = i == 0 or pattern[i - 1] == "/"
                if at_start and j < n and pattern[j] == "/":
                    out.append("(?:[^/]*/)*")  # "**/" : zero or more folders
                    i = j + 1
                    continue
                out.append(".*")
                i = j
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "]") else i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def glob_match(pattern: str, path: str) -> bool:
    """True when a relative ``/``-separated path matches the glob."""
    return compile_glob(pattern).match(path.lstrip("./") if path.startswith("./") else path) is not None


def glob_literal_prefix(pattern: str) -> str:
    """The folder part of a glob before its first wildcard (where a directory walk can start)."""
    parts = pattern.split("/")
    prefix: list[str] = []
    for part in parts[:-1]:
        if any(ch in part for ch in "*?["):
            break
        prefix.append(part)
    return "/".join(prefix)


def static_path_problem(path: str) -> str | None:
    """Say what is wrong with a path written in a policy, before any workspace exists.

    Policy paths must be relative, ``/``-separated, free of control characters and stay inside
    the workspace.
    """
    if not isinstance(path, str) or not path.strip():
        return "expected a relative path inside the workspace, got an empty path"
    bad = next((c for c in path if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c in "\u2028\u2029"), None)
    if bad is not None:
        return f"path {path!r} contains the control character U+{ord(bad):04X}; remove it"
    if "\\" in path and not path.startswith("\\"):
        return f"use '/' to separate folders, got {path!r}"
    return relative_path_problem(path)


def relative_path_problem(path: str) -> str | None:
    """Say why ``path`` is not a relative path that stays inside its root, or None.

    Files found in a workspace may have any name a file system allows (a newline included);
    only their shape is checked here.
    """
    if not isinstance(path, str) or not path or "\0" in path:
        return "expected a relative path inside the workspace, got an empty path or a NUL"
    if path.startswith(("/", "\\")) or (len(path) > 1 and path[1] == ":" and path[0].isalpha()):
        return f"expected a relative path inside the workspace, got the absolute path {path!r}"
    norm = posixpath.normpath(path)
    if norm == ".." or norm.startswith("../"):
        return f"path {path!r} leads outside the workspace; write it relative to the workspace, without '..'"
    return None
