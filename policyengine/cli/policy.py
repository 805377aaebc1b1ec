"""`policyengine policy`: validate policies, print the schema."""

from __future__ import annotations

import click

from policyengine.cli.common import CONTEXT
from policyengine.errors import EXIT_ALLOW, EXIT_DENY, EXIT_USAGE, InvalidInputError, UsageError


@click.group(context_settings=CONTEXT)
def policy() -> None:
    """Validate, compare and print policies and their schema."""


@policy.command("validate", context_settings=CONTEXT)
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
def policy_validate(files: tuple[str, ...]) -> int:
    """Check policy files and list every problem (exit 0 valid, 2 invalid).

    \b
    Example:
      policyengine policy validate policies/*.yml
    """
    from policyengine.policy import load_policy

    bad = 0
    for path in files:
        try:
            loaded = load_policy(path)
        except InvalidInputError as exc:
            bad += 1
            for problem in exc.problems:
                click.echo(str(problem))
            continue
        except UsageError as exc:
            bad += 1
            click.echo(f"{path}: {exc.message}")
            continue
        click.echo(f"{path}: ok ({loaded.name}, {len(loaded.rules)} rules)")
    return EXIT_USAGE if bad else EXIT_ALLOW


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

    from policyengine.policy import load_policy
    from policyengine.policydiff import diff, render_text, weakened

    before, after = load_policy(old), load_policy(new)
    findings = diff(before.document, after.document)
    if fmt == "json":
        click.echo(json.dumps({"weaker": weakened(findings), "findings": [f.to_json() for f in findings]}, indent=2))
    else:
        click.echo(f"policy diff {old} -> {new}")
        click.echo(render_text(findings), nl=False)
    return EXIT_DENY if weakened(findings) else EXIT_ALLOW


@policy.command("schema", context_settings=CONTEXT)
def policy_schema() -> int:
    """Print the policy JSON Schema (draft 2020-12), for editors and linters.

    \b
    Example:
      policyengine policy schema > policy.schema.json
    """
    import json

    from policyengine.loader import load_schema

    click.echo(json.dumps(load_schema("policy.schema.json"), indent=2))
    return EXIT_ALLOW


