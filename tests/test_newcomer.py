"""Day one (issue 18): what a newcomer reads first says what the tool does, and every command is listed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from policyengine.cli import LazyGroup, cli

REPO = Path(__file__).resolve().parents[1]


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every leaf command of the click tree, as its words after `policyengine`."""
    ctx = click.Context(group)
    out: list[tuple[str, ...]] = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        if isinstance(command, click.Group):
            out += _commands(command, (*prefix, name))
        else:
            out.append((*prefix, name))
    return out


def _readme_commands_table() -> list[str]:
    text = (REPO / "README.md").read_text("utf-8")
    section = text.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `policyengine")]


def test_the_commands_table_lists_every_command() -> None:
    rows = _readme_commands_table()
    commands = _commands(cli)
    assert len(commands) >= 17
    missing = [" ".join(c) for c in commands
               if not any(re.match(rf"\| `policyengine {re.escape(' '.join(c))}( |`)", row) for row in rows)]
    assert missing == [], f"README's ## Commands table lacks: {missing}"


@pytest.mark.parametrize("group", ["policy", "evidence", "audit", "emergency"])
def test_a_groups_help_names_every_command_in_it(group: str) -> None:
    ctx = click.Context(cli)
    command = cli.get_command(ctx, group)
    assert isinstance(command, click.Group)
    names = command.list_commands(click.Context(command))
    short = LazyGroup.COMMANDS[group][1]
    doc = (command.help or "").split("\n\n")[0]
    for name in names:
        assert re.search(rf"\b{re.escape(name)}\b", short, re.I), f"`policyengine --help` on {group} omits {name}: {short}"
        assert re.search(rf"\b{re.escape(name)}\b", doc, re.I), f"`policyengine {group} --help` omits {name}: {doc}"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policyengine", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.parametrize("template", ["soc2-production", "soc2-small-team"])
def test_policy_init_comments_name_the_file_it_wrote(tmp_path: Path, template: str) -> None:
    run = _cli("policy", "init", "--template", template, "-o", "conf/prod.yml", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    text = (tmp_path / "conf" / "prod.yml").read_text("utf-8")
    validate = [ln for ln in text.splitlines() if "policyengine policy validate" in ln]
    assert validate == ["# Validate after editing:  policyengine policy validate conf/prod.yml"]
    # No comment sends the reader to a bundled file that is not beside the policy written.
    assert not re.search(r"soc2-(production|small-team)\.yml", text)
    assert _cli("policy", "validate", "conf/prod.yml", cwd=tmp_path).returncode == 0
    piped = _cli("policy", "init", "--template", template, "-o", "-", cwd=tmp_path).stdout
    assert not re.search(r"soc2-(production|small-team)\.yml", piped)
