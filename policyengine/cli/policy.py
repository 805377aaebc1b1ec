"""`policyengine policy`: write, validate, test, explain and diff policies; print the schema."""

from __future__ import annotations

import click

from policyengine.cli.common import CONTEXT
from policyengine.errors import (
    EXIT_ALLOW,
    EXIT_DENY,
    EXIT_USAGE,
    InvalidInputError,
    UsageError,
)


@click.group(context_settings=CONTEXT)
def policy() -> None:
    """Write (init), validate, test, explain and diff policies; print their schema."""


@policy.command("validate", context_settings=CONTEXT)
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--waivers", "waivers_path", metavar="FILE", help="Also check this waivers file against each policy "
              "(a file, git:REF:PATH or git+URL#REF:PATH): its rule ids, approvers and waiver_max_days.")
def policy_validate(files: tuple[str, ...], waivers_path: str | None) -> int:
    """Check policy files and list every problem (exit 0 valid, 2 invalid).

    The waivers a policy holds are checked with it; a waivers file with --waivers.

    \b
    Examples:
      policyengine policy validate policies/*.yml
      policyengine policy validate policies/prod.yml --waivers policies/waivers.yml
    """
    import os

    from policyengine.language.policysource import load

    bad = 0
    for path in files:
        try:
            loaded = load(path)
            if waivers_path:
                from policyengine.language.policysource import CI_VARIABLES, load_waivers

                # Validating is no deploy: the CI refusal of a workspace file does not apply here.
                env = {k: v for k, v in os.environ.items() if k not in CI_VARIABLES}
                loaded, _ = load_waivers(loaded, waivers_path, workspace=".", env=env)
        except InvalidInputError as exc:
            bad += 1
            for problem in exc.problems:
                click.echo(str(problem))
            continue
        except UsageError as exc:
            bad += 1
            click.echo(f"{path}: {exc.message}")
            continue
        waived = f", {len(loaded.waivers)} waivers" if loaded.waivers else ""
        click.echo(f"{path}: ok ({loaded.name}, {len(loaded.rules)} rules{waived})")
    return EXIT_USAGE if bad else EXIT_ALLOW


@policy.command("init", context_settings=CONTEXT)
@click.option("--template", type=click.Choice(["soc2-production", "soc2-small-team"]), default="soc2-production",
              show_default=True, help="soc2-production: two independent approvers, security review, freezes. "
              "soc2-small-team: one independent approver with compensating controls, for teams of two or three.")
@click.option("-o", "--output", default="policy.yml", show_default=True, metavar="FILE",
              help="Where to write the policy ('-' for standard output). The JSON Schema is written beside it "
              "as policy.schema.json, for editors.")
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
def policy_init(template: str, output: str, force: bool) -> int:
    """Write a starter policy with comments, ready to adapt (values marked ADAPT).

    The first line points editors that speak the YAML language server (VS Code, JetBrains,
    Neovim) at policy.schema.json beside the policy, so keys complete and are checked as
    you type; nothing is fetched from the network.

    \b
    Examples:
      policyengine policy init -o policies/production.yml
      policyengine policy init --template soc2-small-team -o policies/production.yml
      policyengine policy init --template soc2-small-team -o - | less
    """
    from pathlib import Path

    from policyengine.language.loader import bundled_policy_text, schema_text

    text = f"# yaml-language-server: $schema=policy.schema.json\n{_starter(bundled_policy_text(template), output)}"
    if output == "-":
        click.echo(text, nl=False)
        return EXIT_ALLOW
    target = Path(output)
    if target.exists() and not force:
        raise UsageError(f"{output} exists; not overwritten", hint="give another -o FILE, or --force to replace it")
    from policyengine.cli.common import write_atomic

    write_atomic(str(target), text, "policy")
    schema = target.parent / "policy.schema.json"
    write_atomic(str(schema), schema_text("policy.schema.json"), "policy schema")
    click.echo(f"wrote {target} (template {template}) and {schema}")
    click.echo(f"next: adapt the values marked ADAPT, then: policyengine policy validate {target}")
    return EXIT_ALLOW


def _starter(text: str, output: str) -> str:
    """The bundled policy's text with its comments pointing at the file written, not at the bundled one."""
    import re

    target = "FILE (the file you saved this as)" if output == "-" else output
    if not re.fullmatch(r"[\w./@+,:=-]+", target) and output != "-":
        import shlex

        target = shlex.quote(target)
    text = re.sub(r"^(# Validate after editing: +policyengine policy validate ).*$", lambda m: m.group(1) + target,
                  text, count=1, flags=re.M)
    return text.replace("see soc2-small-team.yml", "see `policy init --template soc2-small-team`")


@policy.command("test", context_settings=CONTEXT)
@click.argument("directory", metavar="DIR")
@click.option("--policy", "policy_path", metavar="FILE", help="Judge every case with this policy (default: each "
              "case's own `policy:`).")
@click.option("--junit", "junit_path", metavar="PATH", help="Also write JUnit XML, one testcase per case.")
def policy_test(directory: str, policy_path: str | None, junit_path: str | None) -> int:
    """Run a policy's test cases: sample changes with the decision and rule statuses they expect.

    DIR holds one folder per case, each with a case.yml (or DIR is one such folder). Cases are
    judged in memory: no evidence is written and nothing touches the network. Exit 0 when
    every case matches, 1 when any differs (each difference is listed), 2 when a case is
    invalid. The layout is in docs/policy.md ("Writing, testing and reviewing a policy").

    \b
    case.yml:
      policy: ../../policies/production.yml   # or --policy
      now: 2026-11-27T22:00:00-05:00
      change: change.yml                      # or the change inline
      workspace: ../shared-workspace          # optional (default: workspace/ beside case.yml)
      expect:
        decision: deny
        rules: {deploy-window: fail}

    \b
    Examples:
      policyengine policy test policy-tests/
      policyengine policy test policy-tests/ --policy policies/production.yml --junit policy-tests.xml
    """
    from policyengine.cli.common import write_atomic
    from policyengine.language.policytest import render_junit, render_text, run_suite

    result = run_suite(directory, policy_path=policy_path)
    click.echo(render_text(result), nl=False)
    if junit_path:
        write_atomic(junit_path, render_junit(result), "JUnit report")
    return EXIT_DENY if result.failed else EXIT_ALLOW


@policy.command("explain", context_settings=CONTEXT)
@click.argument("policy_file", metavar="POLICY")
@click.option("--format", "fmt", type=click.Choice(["md", "html", "json"]), default="md", show_default=True,
              help="Markdown, a standalone HTML page, or JSON.")
@click.option("-o", "--output", default="-", show_default=True, metavar="FILE", help="Where to write it.")
def policy_explain(policy_file: str, fmt: str, output: str) -> int:
    """Explain a policy as a control matrix for auditors.

    For each rule: what it requires in plain language, which SOC 2 CC8.1 points of focus it
    evidences, what makes it fail or error, and what the evidence bundle keeps for it.

    \b
    Examples:
      policyengine policy explain policies/production.yml
      policyengine policy explain policies/production.yml --format html -o controls.html
    """
    from policyengine.cli.common import write_atomic
    from policyengine.language.explain import render
    from policyengine.language.policysource import load

    write_atomic(output, render(load(policy_file), fmt), "control matrix")
    return EXIT_ALLOW


@policy.command("diff", context_settings=CONTEXT)
@click.argument("old", metavar="OLD")
@click.argument("new", metavar="NEW")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text: one line per edit; json: the findings as a list.")
def policy_diff(old: str, new: str, fmt: str) -> int:
    """Name every edit from OLD to NEW that weakens, strengthens or leaves a control.

    Exit 1 when NEW is weaker anywhere (an edit whose direction cannot be decided, such as two
    different globs, counts as weaker and says so), 0 otherwise, 2 when a file is invalid.

    \b
    Examples:
      policyengine policy diff policies/prod.yml new-prod.yml
      git show origin/main:policies/prod.yml > /tmp/old.yml && \\
        policyengine policy diff /tmp/old.yml policies/prod.yml
    """
    import json

    from policyengine.language.policydiff import diff, render_text, weakened
    from policyengine.language.policysource import load

    before, after = load(old), load(new)
    findings = diff(before.document, after.document)
    if fmt == "json":
        click.echo(json.dumps({"weaker": weakened(findings), "findings": [f.to_json() for f in findings]}, indent=2))
    else:
        click.echo(f"policy diff {old} -> {new}")
        click.echo(render_text(findings), nl=False)
    return EXIT_DENY if weakened(findings) else EXIT_ALLOW


@policy.command("schema", context_settings=CONTEXT)
@click.option("--waivers", "waivers", is_flag=True, help="Print the schema of waivers files instead.")
def policy_schema(waivers: bool) -> int:
    """Print the policy JSON Schema (draft 2020-12), for editors and linters.

    \b
    Examples:
      policyengine policy schema > policy.schema.json
      policyengine policy schema --waivers > waivers.schema.json
    """
    from policyengine.language.loader import schema_text

    click.echo(schema_text("waivers.schema.json" if waivers else "policy.schema.json"), nl=False)
    return EXIT_ALLOW


