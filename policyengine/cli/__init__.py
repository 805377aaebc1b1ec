"""The command line: the only module that imports click, prints, or exits.

Gather (load the policy and the change), judge (``engine.evaluate``), record (outputs and
evidence), then choose the exit code. Heavy modules are imported inside the commands so a
bare ``--help`` stays fast.
"""

from __future__ import annotations

import os
import sys

import click

from policyengine import __version__
from policyengine.cli.common import CONTEXT, EXIT_CODES_HELP
from policyengine.cli.common import err as _err
from policyengine.errors import (
    EXIT_FACTS,
    EXIT_INTERNAL,
    EXIT_USAGE,
    InvalidInputError,
    PolicyEngineError,
)


class LazyGroup(click.Group):
    """A group whose commands are imported only when one is run (or asked for help).

    The top-level ``--help`` lists the commands from their short descriptions here, so a bare
    ``--help`` or ``--version`` imports none of the command modules.
    """

    COMMANDS: dict[str, tuple[str, str]] = {
        "check": ("policyengine.cli.check:check", "Decide whether one change may be deployed, and record the evidence."),
        "policy": ("policyengine.cli.policy:policy", "Write (init), validate, test, explain and diff policies; print their schema."),
        "evidence": ("policyengine.cli.evidence:evidence",
                     "List, show, get, verify, replay and migrate bundles; record-outcome, review, baseline, witness."),
        "audit": ("policyengine.cli.audit:audit", "Export an audit period (export), summarize it on one page (summary), or reconcile it with the platform (reconcile)."),
        "emergency": ("policyengine.cli.emergency:emergency",
                      "List emergency deployments awaiting approval (pending), and approve them."),
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.COMMANDS.get(cmd_name)
        if target is None:
            return None
        import importlib

        module, attr = target[0].split(":")
        command: click.Command = getattr(importlib.import_module(module), attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_text) for name, (_, help_text) in self.COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings=CONTEXT, epilog=EXIT_CODES_HELP)
@click.version_option(__version__, "-V", "--version", prog_name="policyengine")
@click.option("--debug", is_flag=True, envvar="POLICYENGINE_DEBUG", help="Show tracebacks of internal errors.")
def cli(debug: bool) -> None:
    """Gate production deploys on a change-management policy, and leave proof.

    \b
    Examples:
      policyengine check --policy policies/soc2-production.yml --change change.yml
      policyengine check --policy prod.yml --change change.yml --junit policy.xml --json -
      policyengine policy validate policies/*.yml
      policyengine evidence list --archive evidence
      policyengine evidence verify --archive evidence
    """


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and turn every outcome into a documented exit code."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or bool(os.environ.get("POLICYENGINE_DEBUG"))
    try:
        code = cli.main(args=args, prog_name="policyengine", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.Abort:
        _err("aborted")
        code = 130
    except click.ClickException as exc:
        exc.show()
        code = EXIT_USAGE
    except InvalidInputError as exc:
        for problem in exc.problems:
            _err(str(problem))
        _err(f"error: {exc.message}")
        if exc.hint:
            _err(f"hint: {exc.hint}")
        code = exc.exit_code
    except PolicyEngineError as exc:
        _err(f"error: {exc.message}")
        if exc.hint:
            _err(f"hint: {exc.hint}")
        code = exc.exit_code
    except KeyboardInterrupt:
        _err("interrupted")
        code = 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns a bug into exit 4
        if debug:
            import traceback

            traceback.print_exc()
        _err(f"internal error: {type(exc).__name__}: {exc}")
        _err("hint: this is a bug in policyengine; please report it with the output of --debug")
        code = EXIT_INTERNAL
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["EXIT_FACTS", "cli", "main"]
