#!/usr/bin/env python3
"""Write docs/cli.md, the command-line reference, from the click commands themselves.

Usage: .venv/bin/python scripts/cli_reference.py          # rewrite docs/cli.md
       .venv/bin/python scripts/cli_reference.py --check  # exit 1 when docs/cli.md is stale

tests/test_cli_reference.py fails when docs/cli.md differs from what this writes, so the
reference cannot drift from the `--help` a user sees.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "docs" / "cli.md"
WIDTH = 100

HEADER = """# Command-line reference

Generated from the commands' own `--help` by `scripts/cli_reference.py`; do not edit by hand
(`tests/test_cli_reference.py` fails when this page is stale). Every command also answers
`--help`, and every option can be set from the environment where its help names a
`POLICYENGINE_*` variable. Exit codes are the same for every command: see the end of
`policyengine --help` below.

"""


def _walk(command: click.Command, path: tuple[str, ...], parent: click.Context | None
          ) -> Iterator[tuple[tuple[str, ...], click.Context, click.Command]]:
    # As click makes a command's context (``make_context``): with the command's own settings, so the
    # help option is spelled as the real CLI spells it (click caches it on the command when first asked).
    settings = {**command.context_settings, "terminal_width": WIDTH, "max_content_width": WIDTH}
    ctx = click.Context(command, info_name=path[-1], parent=parent, **settings)
    yield path, ctx, command
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not getattr(sub, "hidden", False):
                yield from _walk(sub, (*path, name), ctx)


def render() -> str:
    """The whole reference page, as docs/cli.md holds it."""
    from policyengine.cli import cli

    out = [HEADER]
    entries = list(_walk(cli, ("policyengine",), None))
    out.append("## Contents\n\n")
    for path, _ctx, command in entries[1:]:
        anchor = "-".join(path).lower()
        summary = command.get_short_help_str(limit=80)
        out.append(f"- [`{' '.join(path)}`](#{anchor}): {summary}\n")
    out.append("\n")
    for path, ctx, command in entries:
        level = "#" * min(2 + len(path) - 1, 4)
        out.append(f"{level} {' '.join(path)}\n\n```text\n{command.get_help(ctx).rstrip()}\n```\n\n")
    return "".join(out).rstrip("\n") + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not TARGET.is_file() or TARGET.read_text("utf-8") != text:
            print(f"{TARGET.relative_to(REPO)} is stale: run .venv/bin/python scripts/cli_reference.py",
                  file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
