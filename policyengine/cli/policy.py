"""`policyengine policy`: validate policies, print the schema."""

from __future__ import annotations

import click

from policyengine.cli.common import CONTEXT
from policyengine.errors import EXIT_ALLOW, EXIT_USAGE, InvalidInputError, UsageError


@click.group(context_settings=CONTEXT)
def policy() -> None:
    """Validate policies and print the policy schema."""


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


