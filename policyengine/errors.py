"""Typed errors. Each carries the exit code the CLI uses and an optional hint.

The core raises these; only the CLI renders them and exits.
"""

from __future__ import annotations

from typing import NamedTuple

EXIT_ALLOW = 0
EXIT_DENY = 1
EXIT_USAGE = 2
EXIT_FACTS = 3
EXIT_INTERNAL = 4


class Problem(NamedTuple):
    """One problem in a user's file, rendered as ``file:line:column: path: message``.

    (A NamedTuple rather than a dataclass: this module is imported by a bare ``--help``.)
    """

    file: str
    line: int | None
    column: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class PolicyEngineError(Exception):
    """Root of every error the CLI renders without a traceback."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(PolicyEngineError):
    """A bad invocation: a missing file, a bad option value."""


class InvalidInputError(PolicyEngineError):
    """A policy or change file with one or more problems; every problem is listed."""

    def __init__(self, problems: list[Problem], *, what: str = "input", hint: str | None = None) -> None:
        self.problems = list(problems)
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(f"invalid {what}: {len(self.problems)} {noun}", hint=hint)


class EvidenceError(PolicyEngineError):
    """The evidence could not be recorded or read; a retry may help."""

    exit_code = EXIT_FACTS


class HistoryUnavailable(PolicyEngineError):
    """The record of previous deploys could not be read at all (the change range is unavailable).

    Raised by the evidence side (``evidence.history``) and caught by the providers and the gate:
    it lives here so that both import it downward."""

    exit_code = EXIT_FACTS


class PolicySourceError(PolicyEngineError):
    """The trusted policy could not be read from git: the gate denies, and never falls back to
    the checkout's copy (which the change being judged controls)."""

    exit_code = EXIT_FACTS


class ReportError(Exception):
    """A test report could not be read (malformed, hostile, not JUnit). Becomes a rule ``error``."""


class WorkspaceError(Exception):
    """A path the policy names cannot be used: outside the workspace, or unreadable.

    ``outside`` is true when the path leads out of the workspace (the rule then fails);
    otherwise the file exists but cannot be read (the rule errors).
    """

    def __init__(self, message: str, *, outside: bool = False) -> None:
        super().__init__(message)
        self.outside = outside


_GIT_EXPLAINING = ("remote: error:", "remote: fatal:", "ERROR:", "fatal:", "! [", "error:", "remote:")
"""Where git and the servers behind it put the reason, most telling first."""
_GIT_NOISE = ("hint:", "To ", "From ", "Done", "warning: redirecting", "Cloning into", "remote: Enumerating",
              "remote: Counting", "remote: Compressing", "remote: Total", "Please make sure you have",
              "and the repository exists")
_GIT_ONLY_CONSEQUENCE = "fatal: could not read from remote repository"


def explain_git_error(stderr: bytes | str, *, limit: int = 300) -> str:
    """The line of git's standard error that explains a failure, not merely its last line.

    git often ends with lines that only make sense after the one before them (``fatal: Could
    not read from remote repository.``, ``Please make sure you have the correct access rights``,
    ``and the repository exists.``): the first ``fatal:`` / ``error:`` line is the explanation,
    a server's ``remote: error:`` line before it, and the line before ``Could not read from
    remote repository`` (ssh's ``Permission denied (publickey)``) is kept with it. Progress and
    ``hint:`` lines are skipped. Not redacted: the caller redacts.
    """
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    meaningful = [ln for ln in lines if not ln.startswith(_GIT_NOISE)]
    if not meaningful:
        return (lines[0] if lines else "no message")[:limit]
    for prefix in _GIT_EXPLAINING:
        index = next((i for i, ln in enumerate(meaningful) if ln.startswith(prefix)), None)
        if index is None:
            continue
        hit = meaningful[index]
        if hit.lower().startswith(_GIT_ONLY_CONSEQUENCE) and index > 0:
            hit = f"{meaningful[index - 1]}; {hit}"
        return hit[:limit]
    return meaningful[0][:limit]


def command(*words: str) -> str:
    """A command line a person can paste into a POSIX shell: each word quoted when it needs it.

    Hints name real ids and the real store; a word only a person can choose is an upper-case
    placeholder (``LOGIN``), which needs no quoting and is documented where it appears.
    """
    import shlex

    return " ".join(shlex.quote(str(w)) for w in words)
