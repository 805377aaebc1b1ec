"""`policyengine audit export` and `audit summary`: hand an auditor a period's population, a sample
and its bundles; give the control owner the period on one page."""

from __future__ import annotations

import contextlib
import json
import secrets
import sys
from datetime import datetime, timezone
from typing import Any

import click

from policyengine.cli.common import CONTEXT
from policyengine.cli.evidence import archive_option, open_archive, parse_bound
from policyengine.errors import EXIT_ALLOW, UsageError


SINCE_HELP = "Start of the period (inclusive): bundles created (recorded) at or after this, not their evaluation time."
UNTIL_HELP = "End of the period: bundles created (recorded) before this; a date includes the day."


@click.group(context_settings=CONTEXT)
def audit() -> None:
    """Prepare evidence for an audit: export a period, summarize it on one page (summary), or reconcile it
    with what the platform recorded (reconcile)."""


RECONCILE_WITH_HELP = ("Also reconcile the period with what the platform recorded (repeatable; as `audit reconcile "
                       "--source`: github, gitlab, kubectl:FILE, log:FILE); a source that cannot be read "
                       "completely stops the command (exit 3).")


def _reconcile_with(store: Any, sources: tuple[str, ...], env_map: tuple[str, ...], *, since: str, until: str,
                    repository: str | None, environment: str | None, public_key: Any = None) -> Any:
    """The period's reconciliation for ``--reconcile-with`` (None without sources)."""
    if not sources:
        if env_map:
            raise UsageError("--environment-map needs --reconcile-with")
        return None
    import os

    from policyengine.cli.common import parse_now
    from policyengine.evidence.audit.reconcile import ReconcileRequest, parse_source, reconcile
    from policyengine.models import iso_utc
    from policyengine.providers.deployments import parse_environment_map

    for s in sources:
        parse_source(s)
    return reconcile(store, ReconcileRequest(
        since=since, until=until, now=iso_utc(parse_now(None).replace(microsecond=0)), sources=sources,
        env=dict(os.environ), repository=repository, environment=environment,
        env_map=parse_environment_map(env_map), public_key=public_key))


def reconcile_options(fn: Any) -> Any:
    fn = click.option("--environment-map", "env_map", multiple=True, metavar="PLATFORM=POLICY",
                      help="With --reconcile-with: the platform's name of an environment whose policy name "
                           "differs (repeatable).")(fn)
    return click.option("--reconcile-with", "reconcile_with", multiple=True, metavar="SOURCE",
                        help=RECONCILE_WITH_HELP)(fn)


@audit.command("export", context_settings=CONTEXT)
@archive_option
@click.option("--since", required=True, metavar="DATE|TIME", help=SINCE_HELP)
@click.option("--until", required=True, metavar="DATE|TIME", help=UNTIL_HELP)
@click.option("--environment", metavar="NAME", help="Only this environment.")
@click.option("--repository", metavar="OWNER/NAME", help="Only this repository.")
@click.option("--decision", type=click.Choice(["allow", "deny", "not_applicable"]),
              help="List only evaluations with this decision: deny includes advisory denials (they did not "
              "block the deploy: the advisory column flags them; --deployments-only leaves them in).")
@click.option("--deployments-only", is_flag=True,
              help="List only the evaluations counted as deployments (see the deployment column).")
@click.option("--sample", type=click.IntRange(min=1), metavar="N", help="Draw a random sample of N bundles.")
@click.option("--seed", type=int, metavar="S",
              help="Seed of the sample (recorded in the export; a random one is chosen and recorded when omitted).")
@click.option("--public-key", metavar="FILE",
              help="Require every bundle of the period to be signed by this Ed25519 public key (PEM).")
@click.option("--signing-key", metavar="FILE|env:VAR",
              help="Sign the export's listing (population.csv, export.json, the bundles' digests) with this "
                   "Ed25519 private key (PEM), so that `evidence verify --archive EXPORT --public-key` proves it.")
@click.option("-o", "--output", required=True, metavar="FILE.zip", help="The export to write.")
@reconcile_options
def audit_export(archive: str, since: str, until: str, environment: str | None, repository: str | None,
                 decision: str | None, deployments_only: bool, sample: int | None,
                 seed: int | None, public_key: str | None, signing_key: str | None, output: str,
                 reconcile_with: tuple[str, ...] = (), env_map: tuple[str, ...] = ()) -> int:
    """Verify a period's bundles, then export every evaluation (allowed and denied) with a reproducible sample.

    First every bundle of the period is verified (digests, statements, chains; signatures with
    --public-key), and the first bundle after it in each chain: when any check fails nothing is
    written and each problem is named (exit 1).

    The zip holds population.csv, export.json (period, counts, seed, sample ids, digests),
    bundles/<id>.zip and bundles/<id>/report.html for each sampled bundle, index.html, and
    export.intoto.json, a statement of the listing's digests (signed with --signing-key). With
    --reconcile-with, reconciliation.csv (every exception and class of `audit reconcile`) and a
    section of index.html.
    Verify it, with only the zip: policyengine evidence verify --archive FILE.zip --public-key KEY.

    \b
    Examples:
      policyengine audit export --archive evidence --since 2026-01-01 --until 2026-12-31 \\
          --environment production --sample 25 --seed 2026 --public-key signing.pub \\
          --signing-key signing.pem -o audit-2026.zip
    """
    from policyengine.cli.evidence import load_key
    from policyengine.evidence.audit.export import ExportRefused, check_bounds, export
    from policyengine.language.policyfacts import POLICY_FACTS
    from policyengine.evidence.audit.emergencies import period_states
    from policyengine.evidence.audit.reconcile import export_parts

    if seed is not None and not sample:
        raise UsageError("--seed needs --sample N")
    start = parse_bound(since, "--since", end=False)
    end = parse_bound(until, "--until", end=True)
    assert start is not None and end is not None
    check_bounds(start, end)
    if sample and seed is None:
        seed = secrets.randbelow(2**31)
    key = load_key(public_key)
    signer = None
    if signing_key:
        from policyengine.evidence.format.signing import load_signing_key

        signer = load_signing_key(signing_key)
    store = open_archive(archive)
    reconciled = _reconcile_with(store, reconcile_with, env_map, since=start, until=end, repository=repository,
                                 environment=environment, public_key=key)
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

        try:
            result = export(store, since=start, until=end, environment=environment, sample=sample, seed=seed,
                            out=output, progress=progress, on_start=on_start, public_key=key, signing_key=signer,
                            repository=repository, decision=decision, deployments_only=deployments_only,
                            emergency_states=lambda rows, records: period_states(
                                store, rows, records, datetime.now(timezone.utc), public_key=key),
                            reconciliation=export_parts(reconciled) if reconciled is not None else None,
                            policy_facts=POLICY_FACTS)
        except ExportRefused as exc:
            for p in exc.problems:
                where = f"bundle {p.bundle_id or '?'}" + (f" member {p.member}" if p.member else "")
                click.echo(f"FAIL  {p.check:13} {where}: {p.message}")
            raise
    for note in getattr(store, "notes", []):
        click.echo(f"warning: {note}", err=True)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    if reconciled is not None:
        counts = reconciled.counts()
        click.echo(f"reconciliation: {len(reconciled.exceptions)} exception(s)"
                   + "".join(f", {k} {v}" for k, v in counts.items() if v) + " (reconciliation.csv)")
    click.echo(f"wrote {result.path}: {result.population} evaluation(s), {result.deployments} deployment(s), "
               f"from {start} to {end}"
               + (f", sample of {len(result.sample_ids)} with seed {result.seed}" if sample else "")
               + (f"; listing signed by key {result.signed_by}" if result.signed_by else "; listing unsigned"))
    from policyengine.errors import command

    # A hint that runs as printed: the public key given here, else PUBLIC_KEY for the one that signed it.
    key_words = ["--public-key", public_key or "PUBLIC_KEY"] if result.signed_by else []
    click.echo(f"verify it: {command('policyengine', 'evidence', 'verify', '--archive', output, *key_words)}"
               + ("  (PUBLIC_KEY: the public key of the signing key)" if result.signed_by and not public_key else ""))
    return EXIT_ALLOW


@audit.command("summary", context_settings=CONTEXT)
@archive_option
@click.option("--since", required=True, metavar="DATE|TIME", help=SINCE_HELP)
@click.option("--until", required=True, metavar="DATE|TIME", help=UNTIL_HELP)
@click.option("--environment", metavar="NAME", help="Only this environment.")
@click.option("--repository", metavar="OWNER/NAME", help="Only this repository.")
@click.option("--format", "fmt", type=click.Choice(["md", "html", "json"]), default="md", show_default=True,
              help="Markdown, a self-contained HTML page, or JSON.")
@click.option("--public-key", metavar="FILE",
              help="Require every bundle of the period to be signed by this Ed25519 public key (PEM).")
@click.option("-o", "--output", metavar="FILE", help="Write the summary to FILE instead of standard output.")
@reconcile_options
def audit_summary(archive: str, since: str, until: str, environment: str | None, repository: str | None,
                  fmt: str, public_key: str | None, output: str | None, reconcile_with: tuple[str, ...] = (),
                  env_map: tuple[str, ...] = ()) -> int:
    """The period on one page for the control owner: deployments, denials, overrides, policy changes,
    chain status, missing outcomes and reviews, the four DORA figures, emergencies.

    The period is verified as `audit export` verifies it; a summary is still written when it does
    not verify, with the problems in its chain status, and the exit code is then 1. With
    --reconcile-with, it counts each kind of reconciliation exception and class too (any
    exception: exit 1).

    \b
    Examples:
      policyengine audit summary --archive evidence --since 2026-01-01 --until 2026-12-31
      policyengine audit summary --archive evidence --since 2026-01-01 --until 2026-12-31 \\
          --format html --public-key signing.pub -o summary-2026.html
    """
    from policyengine.cli.evidence import load_key
    from policyengine.errors import EXIT_DENY
    from policyengine.evidence.audit.export import check_bounds
    from policyengine.evidence.audit.summary import render, summarize

    start = parse_bound(since, "--since", end=False)
    end = parse_bound(until, "--until", end=True)
    assert start is not None and end is not None
    check_bounds(start, end)
    key = load_key(public_key)
    store = open_archive(archive)
    reconciled = _reconcile_with(store, reconcile_with, env_map, since=start, until=end, repository=repository,
                                 environment=environment, public_key=key)
    from policyengine.language.policyfacts import POLICY_FACTS

    result = summarize(store, since=start, until=end, environment=environment, repository=repository,
                       public_key=key, policy_facts=POLICY_FACTS)
    if reconciled is not None:
        from policyengine.evidence.audit.reconcile import summary_of

        result["reconciliation"] = summary_of(reconciled)
    text = render(result, fmt)
    if output:
        from policyengine.evidence.audit.summary import write_atomically

        write_atomically(output, text)
        click.echo(f"wrote {output}: {result['deployments']['total']} deployment(s) from {start} to {end}; "
                   f"chain {result['chain']['status']}")
    else:
        click.echo(text, nl=False)
    for note in getattr(store, "notes", []):
        click.echo(f"warning: {note}", err=True)
    clean = result["chain"]["status"] == "ok" and not (reconciled is not None and reconciled.exceptions)
    return EXIT_ALLOW if clean else EXIT_DENY


@audit.command("reconcile", context_settings=CONTEXT)
@archive_option
@click.option("--since", required=True, metavar="DATE|TIME", help="Start of the period (inclusive): platform "
              "deployments at or after this; allowed bundles created at or after it for phantoms.")
@click.option("--until", required=True, metavar="DATE|TIME", help="End of the period: platform deployments, and "
              "allowed bundles created (recorded), before this; a date includes the day.")
@click.option("--source", "sources", multiple=True, required=True, metavar="SOURCE",
              help="What the platform recorded (repeatable): github (GraphQL deployments, GITHUB_TOKEN), gitlab "
                   "(project deployments, GITLAB_TOKEN), kubectl:FILE (`kubectl get pods -A -o json`), "
                   "log:FILE (JSON Lines {time, commit|subject, environment, id, url}).")
@click.option("--repository", metavar="OWNER/NAME", help="Only this repository (default: every chain in the store).")
@click.option("--environment", metavar="NAME", help="Only this environment (policy name).")
@click.option("--environment-map", "env_map", multiple=True, metavar="PLATFORM=POLICY",
              help="The platform's name of an environment whose policy name differs (repeatable).")
@click.option("--namespace", "namespaces", multiple=True, metavar="NS",
              help="kubectl source: only these namespaces (repeatable; default: all but kube-*).")
@click.option("--include-kube-namespaces", is_flag=True, help="kubectl source: keep the kube-* namespaces.")
@click.option("--org", metavar="ORG|GROUP",
              help="With --environment: list the organisation's (GitHub) or group's (GitLab, subgroups included) "
                   "repositories that have the environment, from the github or gitlab source; each without a chain "
                   "in the store is an ungated repository, and its deployments are reconciled too.")
@click.option("--org-repository", "org_repositories", multiple=True, metavar="OWNER/NAME",
              help="With --environment: a repository of the organisation or group that has the environment "
                   "(repeatable, e.g. from the platform's listing); one without a chain is an ungated repository.")
@click.option("--redeploy-after", type=click.IntRange(min=1), default=24, show_default=True, metavar="HOURS",
              help="A deploy released by an approval older than this is a redeploy of an earlier approval.")
@click.option("--now", metavar="ISO8601", help="The time of the reconciliation (tests); default: the clock.")
@click.option("--public-key", metavar="FILE",
              help="Every bundle that released a deploy must verify with this Ed25519 public key (PEM), and say "
                   "what its index line says; else exit 3. Without it, signatures are not checked (the output "
                   "says so): run `evidence verify` too.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="A table for a person, or JSON.")
@click.option("-o", "--output", metavar="FILE", help="Write the report to FILE instead of standard output.")
@click.option("--record", "record", is_flag=True,
              help="Append a signed store-level reconciliation record to the archive (needs --signing-key): the "
                   "client's scheduled job; an auditor without a key just reads the report.")
@click.option("--signing-key", envvar="POLICYENGINE_SIGNING_KEY", show_envvar=True, metavar="FILE|env:VAR",
              help="With --record: sign the record with this Ed25519 private key (PEM).")
@click.option("--by", metavar="LOGIN", help="With --record outside CI: who records it (self-asserted); in CI, the "
                                             "CI's actor.")
@click.option("--witness", "witness", is_flag=True,
              help="Also read the witness statuses (policyengine/<environment>, evidence witness) of the period's "
                   "commits back from the github or gitlab source (the token needs `statuses: read` / `read_api`): "
                   "each that disagrees with the store is a witness-mismatch.")
@click.option("--witness-creator", "witness_creators", multiple=True, metavar="LOGIN",
              help="With --witness: the login (user or app, e.g. acme-witness[bot]) that writes witness statuses "
                   "(repeatable); a witness by anyone else is a witness-mismatch. Default: any creator (said so).")
def audit_reconcile(archive: str, since: str, until: str, sources: tuple[str, ...], repository: str | None,
                    environment: str | None, env_map: tuple[str, ...], namespaces: tuple[str, ...],
                    include_kube_namespaces: bool, org: str | None, org_repositories: tuple[str, ...],
                    redeploy_after: int, now: str | None, fmt: str, output: str | None,
                    public_key: str | None = None, record: bool = False,
                    signing_key: str | None = None, by: str | None = None, witness: bool = False,
                    witness_creators: tuple[str, ...] = ()) -> int:
    """Is the population complete? Compare the period's evidence with what the platform recorded.

    Exceptions (exit 1): unauthorized (a platform deployment no bundle released, 10 minutes of
    tolerance), phantom (an allowed, deployed bundle the platform never deployed), drift (a running
    digest no allowed bundle names), missing-chain, ungated-repository, and with --witness
    witness-mismatch (a witness status whose bundle id, digest, store head, time or creator
    disagrees with the store). Reported in classes of their
    own: redeploy of an earlier approval, advisory ship, emergency awaiting approval, before adoption.
    Exit 0 when there is no exception, 3 when a source cannot be read completely.

    Reconcile is as strong as the platform's own audit trail: whoever can write deployments on the
    platform can add or remove the records it compares against.

    \b
    Examples:
      GITHUB_TOKEN=... policyengine audit reconcile --archive evidence --since 2026-01-01 \\
          --until 2026-03-31 --environment production --source github
      policyengine audit reconcile --archive evidence --since 2026-10-01 --until 2026-12-31 \\
          --source kubectl:pods.json --namespace payments --format json -o reconcile.json
      GITHUB_TOKEN=... policyengine audit reconcile --archive evidence --since 2026-10-01 \\
          --until 2026-12-31 --source github --witness --witness-creator acme-witness[bot]
    """
    import os
    from datetime import timedelta

    from policyengine.cli.common import parse_now, write_atomic
    from policyengine.cli.evidence import load_key
    from policyengine.errors import EXIT_DENY
    from policyengine.evidence.audit.export import check_bounds
    from policyengine.evidence.audit.reconcile import ReconcileRequest, parse_source, reconcile, render_table
    from policyengine.models import iso_utc
    from policyengine.providers.deployments import parse_environment_map

    start = parse_bound(since, "--since", end=False)
    end = parse_bound(until, "--until", end=True)
    assert start is not None and end is not None
    check_bounds(start, end)
    for s in sources:
        parse_source(s)
    if witness_creators and not witness:
        raise UsageError("--witness-creator needs --witness")
    if (org_repositories or org) and not environment:
        raise UsageError("--org and --org-repository need --environment (the environment every repository should "
                         "gate)")
    signer = actor = None
    if record:
        if not signing_key:
            raise UsageError("--record needs --signing-key: a reconciliation record is signed, like every record",
                             hint="an auditor without a key reads the report without --record")
        from policyengine.cli.evidence import _actor
        from policyengine.evidence.format.signing import load_signing_key

        signer = load_signing_key(signing_key)
        actor = _actor(by, fallback_user=True)
    request = ReconcileRequest(
        since=start, until=end, now=iso_utc(parse_now(now).replace(microsecond=0)), sources=sources,
        env=dict(os.environ), repository=repository, environment=environment,
        env_map=parse_environment_map(env_map), namespaces=namespaces, include_kube=include_kube_namespaces,
        redeploy_after=timedelta(hours=redeploy_after),
        org_repositories=tuple(org_repositories) if org_repositories else None, org=org,
        public_key=load_key(public_key), witness=witness, witness_creators=tuple(witness_creators))
    store = open_archive(archive)
    result = reconcile(store, request)
    report = json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n"
    text = report if fmt == "json" else render_table(result)
    if record:
        from policyengine.evidence.audit.reconcile import record_reconciliation

        ref = record_reconciliation(store, result, report.encode("utf-8"), signing_key=signer, by=actor,
                                    at=parse_now(now))
        click.echo(f"recorded reconciliation {ref.id} in {store.url}", err=True)
    if output:
        write_atomic(output, text, "reconciliation")
        counts = result.counts()
        click.echo(f"wrote {output}: {len(result.exceptions)} exception(s) "
                   f"({', '.join(f'{k} {v}' for k, v in counts.items() if v)})")
    else:
        click.echo(text, nl=False)
    for note in getattr(store, "notes", []):
        click.echo(f"warning: {note}", err=True)
    return EXIT_DENY if result.exceptions else EXIT_ALLOW
