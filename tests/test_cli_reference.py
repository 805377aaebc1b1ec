"""docs/cli.md is the click commands' own help: regenerated here, it must be byte-identical."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("cli_reference", REPO / "scripts" / "cli_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cli_reference_is_current() -> None:
    want = _generator().render()
    got = (REPO / "docs" / "cli.md").read_text("utf-8")
    assert got == want, "docs/cli.md is stale: run .venv/bin/python scripts/cli_reference.py"


def test_the_reference_has_a_section_for_every_command() -> None:
    import click

    from policyengine.cli import cli

    text = (REPO / "docs" / "cli.md").read_text("utf-8")
    ctx = click.Context(cli, info_name="policyengine")
    names = []
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        names.append(name)
        if isinstance(command, click.Group):
            names += [f"{name} {sub}" for sub in command.list_commands(click.Context(command, parent=ctx))]
    assert len(names) >= 20
    missing = [n for n in names if f"# policyengine {n}\n" not in text]
    assert missing == []
