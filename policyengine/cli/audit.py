"""`policyengine audit export`: hand an auditor a period's population, a sample and its bundles."""

from __future__ import annotations

import contextlib
import secrets
import sys
from typing import Any

import click

from policyengine.cli.common import CONTEXT
from policyengine.cli.evidence import archive_option, open_archive, parse_bound
from policyengine.errors import EXIT_ALLOW, UsageError


@click.group(context_settings=CONTEXT)
def audit() -> None:
    """Prepare evidence for an audit."""


@audit.command("export", context_settings=CONTEXT)
@archive_option
@click.option("--since", required=True, metavar="DATE|TIME", help="Start of the period (inclusive).")
@click.option("--until", required=True, metavar="DATE|TIME", help="End of the period (a date includes the day).")
@click.option("--environment", metavar="NAME", help="Only this environment.")
@click.option("--sample", type=click.IntRange(min=1), metavar="N", help="Draw a random sample of N bundles.")
@click.option("--seed", type=int, metavar="S",
              help="Seed of the sample (recorded in the export; a random one is chosen and recorded when omitted).")
@click.option("-o", "--output", required=True, metavar="FILE.zip", help="The export to write.")
def audit_export(archive: str, since: str, until: str, environment: str | None, sample: int | None,
                 seed: int | None, output: str) -> int:
    """Export every evaluation of a period (allowed and denied) with a reproducible sample.

    The zip holds population.csv, export.json (period, counts, seed, sample ids, digests),
    bundles/<id>.zip and bundles/<id>/report.html for each sampled bundle, and index.html.

    \b
    Examples:
      policyengine audit export --archive evidence --since 2026-01-01 --until 2026-12-31 \\
          --environment production --sample 25 --seed 2026 -o audit-2026.zip
    """
    from policyengine.evidence.audit import export

    if seed is not None and not sample:
        raise UsageError("--seed needs --sample N")
    if sample and seed is None:
        seed = secrets.randbelow(2**31)
    store = open_archive(archive)
    start = parse_bound(since, "--since", end=False)
    end = parse_bound(until, "--until", end=True)
    assert start is not None and end is not None  # noqa: S101 - both options are required
    with contextlib.ExitStack() as stack:
        bars: list[Any] = []

        def on_start(n: int) -> None:
            if n:
                progressbar: Any = click.progressbar  # its overloads confuse mypy
                bars.append(stack.enter_context(progressbar(
                    length=n, label="copying sampled bundles", file=sys.stderr)))

        def progress(n: int) -> None:
            if bars:
                bars[0].update(n)

        result = export(store, since=start, until=end, environment=environment, sample=sample, seed=seed,
                        out=output, progress=progress, on_start=on_start)
    for note in getattr(store, "notes", []):
        click.echo(f"warning: {note}", err=True)
    click.echo(f"wrote {result.path}: {result.population} evaluation(s) from {start} to {end}"
               + (f", sample of {len(result.sample_ids)} with seed {result.seed}" if sample else ""))
    return EXIT_ALLOW
