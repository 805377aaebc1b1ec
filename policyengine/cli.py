"""The command line: the only module that imports click, prints, or exits.

Gather (load the policy and the change), judge (``engine.evaluate``), record (outputs and
evidence), then choose the exit code. Heavy modules are imported inside the commands so a
bare ``--help`` stays fast.
"""

from __future__ import annotations

import os
import sys

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from policyengine import __version__
from policyengine.errors import (
    EXIT_ALLOW,
    EXIT_DENY,
    EXIT_FACTS,
    EXIT_INTERNAL,
    EXIT_USAGE,
    InvalidInputError,
    PolicyEngineError,
    UsageError,
)

EXIT_CODES_HELP = """\b
Exit codes:
  0  allowed (or --advisory and denied by a rule)
  1  denied: a rule was not met
  2  could not evaluate: bad invocation, unreadable or invalid policy or change file
  3  denied because facts could not be read or the evidence could not be recorded
     (rules in error, none in fail: retrying may help)
  4  internal error (a bug: please report it; --debug shows the traceback)
"""

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _err(message: str) -> None:
    click.echo(message, err=True)


def _use_color(choice: str, stream: Any) -> bool:
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


def _parse_now(value: str | None) -> datetime:
    if not value:
        return datetime.now(timezone.utc)
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(f"--now: {value!r} is not an ISO 8601 time", hint="write e.g. 2026-11-24T15:00:00Z") from None
    if moment.tzinfo is None:
        raise UsageError(f"--now: {value!r} has no time zone", hint="add Z or an offset, e.g. 2026-11-24T10:00:00-05:00")
    return moment


def _write_atomic(path: str, text: str, what: str) -> None:
    """Write an output file whole or not at all ('-' writes to standard output)."""
    if path == "-":
        click.echo(text, nl=not text.endswith("\n"))
        return
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    except OSError as exc:
        raise UsageError(f"cannot write the {what} to {path}: {exc.strerror or exc}") from None


@click.group(context_settings=CONTEXT, epilog=EXIT_CODES_HELP)
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


@cli.command(context_settings=CONTEXT, epilog=EXIT_CODES_HELP)
@click.option("--policy", "policy_path", required=True, envvar="POLICYENGINE_POLICY", show_envvar=True,
              metavar="FILE", help="The policy (YAML) to evaluate.")
@click.option("--change", "change_path", envvar="POLICYENGINE_CHANGE", show_envvar=True, metavar="FILE",
              help="The change to judge (YAML or JSON, schemas/change.schema.json).")
@click.option("--workspace", default=".", show_default=True, envvar="POLICYENGINE_WORKSPACE", show_envvar=True,
              metavar="DIR", help="Where the policy's relative paths resolve; nothing outside it is read.")
@click.option("--now", envvar="POLICYENGINE_NOW", show_envvar=True, metavar="ISO8601",
              help="Evaluate at this time instead of the clock (replays, tests), e.g. 2026-11-24T15:00:00Z.")
@click.option("--json", "json_path", envvar="POLICYENGINE_JSON", show_envvar=True, metavar="PATH",
              help="Write the decision as JSON ('-' for standard output).")
@click.option("--junit", "junit_path", envvar="POLICYENGINE_JUNIT", show_envvar=True, metavar="PATH",
              help="Write JUnit XML, one testcase per rule, for CI test widgets.")
@click.option("--evidence-dir", default="evidence", show_default=True, envvar="POLICYENGINE_EVIDENCE_DIR",
              show_envvar=True, metavar="DIR", help="The evidence archive that receives this evaluation's bundle.")
@click.option("--advisory", is_flag=True, envvar="POLICYENGINE_ADVISORY", show_envvar=True,
              help="Evaluate and record everything, but exit 0 when a rule denies (for rollouts).")
@click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True,
              help="Colour the console verdict (auto: only on a terminal; NO_COLOR is honoured).")
def check(policy_path: str, change_path: str | None, workspace: str, now: str | None, json_path: str | None,
          junit_path: str | None, evidence_dir: str, advisory: bool, color: str) -> int:
    """Decide whether one change may be deployed, and record the evidence.

    \b
    Examples:
      policyengine check --policy policies/soc2-production.yml --change change.yml
      policyengine check --policy prod.yml --change change.yml --workspace build/ \\
          --junit policy-junit.xml --json decision.json --evidence-dir evidence
      policyengine check --policy prod.yml --change change.yml --now 2026-11-24T15:00:00Z --advisory
    """
    from policyengine.engine import decision_to_json, evaluate, exit_code_for
    from policyengine.evidence import LocalArchive
    from policyengine.models import Enforcement, RuleResult, Status
    from policyengine.outputs import junit as junit_out
    from policyengine.outputs import text as text_out
    from policyengine.policy import load_change, load_policy
    from policyengine.workspace import Workspace

    moment = _parse_now(now)
    ws = Path(workspace)
    if not ws.is_dir():
        raise UsageError(f"--workspace: {workspace} is not a directory")
    if not change_path:
        raise UsageError("no change to judge: give --change FILE (or set POLICYENGINE_CHANGE)",
                         hint="see examples/change.yml for the format")

    problems: list[Any] = []
    policy = change = None
    for loader, path in ((load_policy, policy_path), (load_change, change_path)):
        try:
            if loader is load_policy:
                policy = loader(path)
            else:
                change = loader(path)
        except InvalidInputError as exc:
            problems.extend(exc.problems)
    if problems:
        raise InvalidInputError(problems, what="input", hint="fix every line above, then run again")
    assert policy is not None and change is not None

    decision = evaluate(policy, change, Workspace(ws), moment)

    # Record: a denied attempt is evidence too. If it cannot be recorded, the gate denies (exit 3).
    bundle: dict[str, Any] = {}
    try:
        archive = LocalArchive(evidence_dir)
        ref = archive.write_bundle(
            decision=decision_to_json(decision, advisory=advisory),
            change=change,
            policy_filename=Path(policy_path).name,
            policy_bytes=policy.raw,
            files=decision.files,
        )
        bundle = {"bundle_id": ref.id, "path": ref.path, "sha256": ref.sha256}
    except PolicyEngineError as exc:
        failed = RuleResult(id="evidence", type="evidence", status=Status.ERROR, enforcement=Enforcement.DENY,
                            message=f"the evidence could not be recorded: {exc.message}", controls=("CC8.1",),
                            description="The evaluation is archived as tamper-evident evidence.",
                            details={"archive": evidence_dir})
        decision = type(decision)(decision="deny", evaluated_at=decision.evaluated_at, policy=decision.policy,
                                  change=decision.change, rules=decision.rules + (failed,),
                                  applies=decision.applies, note=decision.note)
        bundle = {"error": exc.message}

    code = exit_code_for(decision)
    doc = decision_to_json(decision, advisory=advisory)
    doc["evidence"] = bundle
    if junit_path:
        _write_atomic(junit_path, junit_out.render(decision), "JUnit report")
    if json_path:
        import json

        _write_atomic(json_path, json.dumps(doc, indent=2, sort_keys=False) + "\n", "decision JSON")
    stream = sys.stderr if json_path == "-" else sys.stdout
    click.echo(text_out.render(decision, color=_use_color(color, stream), advisory=advisory and code == EXIT_DENY,
                               exit_code=code), nl=False, file=stream)
    if bundle.get("bundle_id"):
        click.echo(f"evidence: {bundle['path']} (bundle {bundle['bundle_id']})", file=stream)
    if advisory and code == EXIT_DENY:
        return EXIT_ALLOW
    return code


@cli.group(context_settings=CONTEXT)
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


@cli.group(context_settings=CONTEXT)
def evidence() -> None:
    """List and verify evidence bundles."""


@evidence.command("list", context_settings=CONTEXT)
@click.option("--archive", default="evidence", show_default=True, envvar="POLICYENGINE_EVIDENCE_DIR",
              show_envvar=True, metavar="DIR", help="The evidence archive.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def evidence_list(archive: str, as_json: bool) -> int:
    """List the bundles of an archive, oldest first.

    \b
    Examples:
      policyengine evidence list --archive evidence
      policyengine evidence list --archive evidence --json
    """
    import json

    from policyengine.evidence import LocalArchive

    if not Path(archive).is_dir():
        raise UsageError(f"--archive: {archive} is not a directory")
    refs = LocalArchive(archive).list()
    rows = [
        {"id": r.id, "created_at": r.created_at, "environment": r.environment, "repository": r.repository,
         "commit": r.commit, "decision": r.decision, "path": r.path}
        for r in refs
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return EXIT_ALLOW
    if not rows:
        click.echo(f"no bundles in {archive}")
        return EXIT_ALLOW
    cols = ["id", "created_at", "environment", "repository", "commit", "decision", "path"]
    cells = [[str(r[c] if c != "commit" else (r[c] or "")[:12]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths)).rstrip())
    for row in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    return EXIT_ALLOW


@evidence.command("verify", context_settings=CONTEXT)
@click.option("--archive", default="evidence", show_default=True, envvar="POLICYENGINE_EVIDENCE_DIR",
              show_envvar=True, metavar="DIR", help="The evidence archive.")
@click.argument("ids", nargs=-1, metavar="[ID...]")
def evidence_verify(archive: str, ids: tuple[str, ...]) -> int:
    """Verify bundles against their manifests and the archive index (all when no ID is given).

    Exit 0 when every bundle is intact, 1 naming each bundle and member that changed.

    \b
    Examples:
      policyengine evidence verify --archive evidence
      policyengine evidence verify --archive evidence 20261124T150000Z-0a1b2c3d4e5f
    """
    from policyengine.evidence import LocalArchive

    if not Path(archive).is_dir():
        raise UsageError(f"--archive: {archive} is not a directory")
    report = LocalArchive(archive).verify(ids)
    for p in report.problems:
        where = f"bundle {p.bundle_id}" + (f", member {p.member}" if p.member else "")
        click.echo(f"FAIL  {where}: {p.check}: {p.message}")
    n = len(report.checked)
    if report.ok:
        click.echo(f"ok: {n} bundle{'s' if n != 1 else ''} verified, all intact")
        return EXIT_ALLOW
    click.echo(f"verification failed: {len(report.problems)} problem(s) in {n} bundle(s) checked")
    return EXIT_DENY


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
