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
    text = (REPO / "docs" / "commands.md").read_text("utf-8")  # moved out of the README (issue 18)
    section = text.split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `policyengine")]


def test_the_commands_table_lists_every_command() -> None:
    rows = _readme_commands_table()
    commands = _commands(cli)
    assert len(commands) >= 17
    missing = [" ".join(c) for c in commands
               if not any(re.match(rf"\| `policyengine {re.escape(' '.join(c))}( |`)", row) for row in rows)]
    assert missing == [], f"docs/commands.md's ## Commands table lacks: {missing}"


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


def _options(command: click.Command, path: tuple[str, ...]) -> list[tuple[str, click.Option]]:
    return [(" ".join(path), p) for p in command.params if isinstance(p, click.Option)]


def _all_options() -> list[tuple[str, click.Option]]:
    out: list[tuple[str, click.Option]] = []
    for words in _commands(cli):
        group: click.Command = cli
        for word in words:
            assert isinstance(group, click.Group)
            nxt = group.get_command(click.Context(group), word)
            assert nxt is not None
            group = nxt
        out += _options(group, words)
    return out


def test_every_period_option_says_it_selects_by_creation_time() -> None:
    periods = [(cmd, o) for cmd, o in _all_options() if {"--since", "--until"} & set(o.opts)]
    assert {cmd for cmd, _ in periods} >= {"evidence list", "audit export", "audit summary"}
    for cmd, option in periods:
        assert "created" in (option.help or ""), f"{cmd} {option.opts[0]}: {option.help}"


def test_every_decision_filter_says_what_deny_holds() -> None:
    filters = [(cmd, o) for cmd, o in _all_options() if "--decision" in o.opts]
    assert {cmd for cmd, _ in filters} >= {"evidence list", "audit export"}
    for cmd, option in filters:
        assert "advisory" in (option.help or ""), f"{cmd} --decision: {option.help}"


def test_evidence_list_shows_an_advisory_deny_as_such(tmp_path: Path) -> None:
    archive = tmp_path / "ev"
    for change, extra in (("change-denied.yml", ["--advisory"]), ("change-denied.yml", []),
                          ("change-allowed.yml", [])):
        run = _cli("check", "--policy", str(REPO / "policies" / "soc2-production.yml"), "--change",
                   str(REPO / "examples" / change), "--workspace", str(REPO / "examples" / "workspace"),
                   "--now", "2026-11-24T15:00:00Z", "--evidence-dir", str(archive), *extra, cwd=tmp_path)
        assert run.returncode in (0, 1), run.stderr
    table = _cli("evidence", "list", "--archive", str(archive), cwd=tmp_path).stdout.splitlines()
    decisions = [re.split(r"\s{2,}", line)[6] for line in table[1:]]
    assert decisions == ["deny (advisory)", "deny", "allow"], table
    denied = _cli("evidence", "list", "--archive", str(archive), "--decision", "deny", "--json", cwd=tmp_path)
    import json

    rows = json.loads(denied.stdout)
    assert [(r["decision"], r["advisory"]) for r in rows] == [("deny", True), ("deny", False)]
    csv_text = _cli("evidence", "list", "--archive", str(archive), "--csv", cwd=tmp_path).stdout
    import csv
    import io

    assert [r["advisory"] for r in csv.DictReader(io.StringIO(csv_text))] == ["true", "false", "false"]


def test_evidence_show_says_which_approvals_did_not_count(tmp_path: Path) -> None:
    archive = tmp_path / "ev"
    run = _cli("check", "--policy", str(REPO / "policies" / "soc2-production.yml"), "--change",
               str(REPO / "examples" / "change-denied.yml"), "--workspace", str(REPO / "examples" / "workspace"),
               "--now", "2026-11-24T15:00:00Z", "--evidence-dir", str(archive), cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    bundle = re.search(r"\(bundle (\S+)\)", run.stdout)
    assert bundle
    shown = _cli("evidence", "show", "--archive", str(archive), bundle[1], cwd=tmp_path).stdout
    approvals = shown.split("\napprovals:\n", 1)[1].split("\nsubject", 1)[0].splitlines()
    assert len(approvals) == 2
    bob = next(line for line in approvals if line.strip().startswith("bob "))
    assert "NOT COUNTED by peer-review: approved 1b2c3d4, not the current commit 7a6b5c4 (stale)" in bob
    assert "NOT COUNTED by security-review: not in team security" in bob
    mallory = next(line for line in approvals if line.strip().startswith("Mallory "))
    assert "NOT COUNTED by peer-review: deployer, author of the pull request" in mallory


def test_full_day_name_ranges_are_documented_and_work(tmp_path: Path) -> None:
    for doc in ("docs/policy.md", "docs/deploy-windows.md"):
        assert "Monday-Friday" in (REPO / doc).read_text("utf-8"), doc
    from policyengine.rules.deploy_window import DAY_HELP, _compile

    assert "Monday-Friday" in DAY_HELP
    plan, problems = _compile({"timezone": "UTC", "allow": [{"days": ["Monday-Friday"], "between": ["09:00", "17:00"]}]})
    assert problems == [] and plan is not None
    assert plan.allow[0].days == frozenset(range(5))
    _, problems = _compile({"timezone": "UTC", "allow": [{"days": ["Monday-Fryday"]}]})
    assert problems and "Fryday".lower() in problems[0][1]
