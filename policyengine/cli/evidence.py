"""`policyengine evidence`: list and verify bundles."""

from __future__ import annotations

from pathlib import Path

import click

from policyengine.cli.common import CONTEXT
from policyengine.errors import EXIT_ALLOW, EXIT_DENY, UsageError


@click.group(context_settings=CONTEXT)
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


