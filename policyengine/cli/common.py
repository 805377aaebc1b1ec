"""Helpers shared by the command modules."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import click

from policyengine.errors import UsageError

if TYPE_CHECKING:
    from datetime import datetime


def err(message: str) -> None:
    """Print a line to standard error, redacted (``redact.Redactor.from_env``): an error may
    quote a value that holds a token."""
    from policyengine.redact import Redactor

    click.echo(Redactor.from_env(os.environ).text(message), err=True)


EXIT_CODES_HELP = """\b
Exit codes:
  0  allowed, or not applicable where the policy says `not_applicable: pass`
     (or --advisory and denied by a rule)
  1  denied: a rule was not met (or a --simulate run under CI, whatever its verdict)
  2  could not evaluate: bad invocation, unreadable or invalid policy or change file,
     an invalid environment name, a policy that does not apply to the environment,
     a clock override under CI without --simulate
  3  denied because facts could not be read or the evidence could not be recorded
     (rules in error, none in fail: retrying may help)
  4  internal error (a bug: please report it; --debug shows the traceback)
"""

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


_err = err


def use_color(choice: str, stream: Any) -> bool:
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


def parse_now(value: str | None) -> datetime:
    """``--now``: the given instant, or the clock when none is given (the only clock read)."""
    from datetime import datetime, timezone

    from policyengine.models import parse_instant

    if not value:
        return datetime.now(timezone.utc)
    return parse_instant(value, option="--now")


def write_atomic(path: str, text: str, what: str) -> None:
    """Write an output file whole or not at all ('-' writes to standard output)."""
    if path == "-":
        click.echo(text, nl=not text.endswith("\n"))
        return
    from pathlib import Path

    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    except OSError as exc:
        raise UsageError(f"cannot write the {what} to {path}: {exc.strerror or exc}") from None


