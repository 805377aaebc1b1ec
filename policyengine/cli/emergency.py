"""`policyengine emergency`: list the emergency deployments awaiting approval, and approve them."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone

import click

from policyengine.cli.common import CONTEXT
from policyengine.cli.evidence import archive_option, load_key, oidc_issuer_option, open_archive, timestamp_options
from policyengine.errors import EXIT_ALLOW, EXIT_DENY, UsageError


@click.group(context_settings=CONTEXT)
def emergency() -> None:
    """Emergency (break-glass) deployments: which await post-facto approval (pending), and approve them.

    \b
    `emergency reconcile` is deliberately absent: an emergency fix is often a direct push with
    no request to approve, GitLab does not accept approvals on a merged request, and GitHub's
    reviews of a merged pull request are not tied to a deploy. The approval is recorded here, by
    the approver, in a manually started pipeline or workflow run on a protected ref.
    """


@emergency.command("pending", context_settings=CONTEXT)
@archive_option
@click.option("--all", "show_all", is_flag=True, help="List every emergency, approved ones included.")
@click.option("--public-key", metavar="FILE",
              help="Count only approvals signed by this Ed25519 public key (PEM).")
@click.option("--now", metavar="ISO8601", help="Judge deadlines at this time (tests); refused under CI.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def emergency_pending(archive: str, show_all: bool, public_key: str | None, now: str | None, as_json: bool) -> int:
    """List the emergency deployments still awaiting approval, with their due times.

    Exit 0 when none is overdue, 1 when any is (so that a scheduled pipeline can page), 2 on bad
    input. Only approvals recorded by the CI actor (verified) by someone the policy allows,
    that verify, count; a self-asserted approval never closes an emergency.

    \b
    Examples:
      policyengine emergency pending --archive evidence
      policyengine emergency pending --archive s3://acme-evidence/prod --public-key signing.pub --json
    """
    from policyengine.evidence.audit.emergencies import any_overdue, pending
    from policyengine.language.policysource import in_any_ci
    from policyengine.models import iso_utc, parse_instant

    if now and in_any_ci(os.environ):
        raise UsageError("--now: refusing to judge deadlines at a given time under CI: the deadline is now",
                         hint="remove --now")
    moment = parse_instant(now, option="--now") if now else datetime.now(timezone.utc)
    store = open_archive(archive)
    states = pending(store, moment, public_key=load_key(public_key), include_closed=show_all)
    overdue = any_overdue(states)
    if as_json:
        click.echo(json.dumps({"now": iso_utc(moment), "overdue": overdue,
                               "emergencies": [s.to_json() for s in states]}, indent=2))
    elif not states:
        click.echo("no emergency deployment awaits approval" if not show_all else "no emergency deployment recorded")
    else:
        for s in states:
            counted = sum(a.counts for a in s.approvals)
            click.echo(f"{s.status.upper():17} {s.bundle_id}  {s.repository} {str(s.commit or '')[:12]} -> "
                       f"{s.environment}")
            click.echo(f"{'':17} declared by {s.declarer} ({'verified' if s.declarer_verified else 'NOT verified'}) "
                       f"at {s.declared_at}; incident {s.incident or 'none'}: {s.reason or 'no reason given'}")
            click.echo(f"{'':17} waived: {', '.join(s.waived) or 'nothing'}; due {s.due_at}; approvals "
                       f"{counted}/{s.min_approvals}")
            for a in s.approvals:
                state = "counts" if a.counts else f"does not count: {a.why_not}"
                click.echo(f"{'':17} approval {a.record_id} by {a.by} "
                           f"({'the CI actor' if a.verified else 'SELF-ASSERTED'}) at {a.recorded_at}: {state}")
            if not s.closed:  # a hint that runs as printed, but for LOGIN: the approver
                key = (["--signing-key", "KEY"] if getattr(store, "requires_signatures", False)
                       and not os.environ.get("POLICYENGINE_SIGNING_KEY") else [])
                hint = store.command("emergency", "approve", s.bundle_id, "--by", "LOGIN", *key)
                click.echo(f"{'':17} approve: {hint}")
        if overdue:
            click.echo(f"OVERDUE: {sum(s.status == 'overdue' for s in states)} emergency deployment(s) passed their "
                       "approval deadline")
    return EXIT_DENY if overdue else EXIT_ALLOW


@emergency.command("approve", context_settings=CONTEXT)
@archive_option
@click.option("--by", required=True, metavar="LOGIN", help="The approver. Inside CI it must be the CI actor; "
              "outside CI the approval is self-asserted and never closes the emergency.")
@click.option("--note", metavar="TEXT", help="What was checked.")
@click.option("--signing-key", envvar="POLICYENGINE_SIGNING_KEY", show_envvar=True, metavar="FILE|env:VAR",
              help="Sign the approval record with this Ed25519 private key (as `check` signs bundles).")
@timestamp_options
@oidc_issuer_option
@click.argument("bundle_id", metavar="BUNDLE_ID")
def emergency_approve(archive: str, by: str, note: str | None, signing_key: str | None,
                      timestamp_urls: tuple[str, ...], tsa_cert: str | None, oidc_issuers: tuple[str, ...],
                      bundle_id: str) -> int:
    """Approve an emergency deployment after the fact: append a signed approval record linked to its bundle.

    The bundle is never edited. The approver may not be the declarer, nor anyone in the roles
    the policy's emergency.approvers.exclude names (author, deployer, committers); with
    from_teams they must be a member of one of those teams as recorded with the change.
    Run it in a manually started pipeline or workflow run by the approver, on a protected ref:
    inside CI, --by must be the CI actor. Exit 0 recorded, 2 refused, 3 not recorded.

    \b
    Examples:
      policyengine emergency approve --archive evidence 20261124T150000Z-0a1b2c3d4e5f --by frank \\
          --note "checked the hotfix diff and the incident timeline"
    """
    from policyengine.cli.evidence import _actor, _recorded_by, _signing_key, stamper
    from policyengine.evidence.audit.emergencies import approve
    from policyengine.evidence.format.timestamp import stamping

    store = open_archive(archive)
    actor = _actor(by, fallback_user=False, oidc_issuers=oidc_issuers)
    key = _signing_key(signing_key)
    with stamping(stamper(timestamp_urls, tsa_cert)):
        ref = approve(store, bundle_id, actor=actor, note=note, signing_key=key, env=os.environ,
                      now=datetime.now(timezone.utc))
    click.echo(f"recorded emergency approval of bundle {bundle_id} as record {ref.id} by {_recorded_by(actor)}"
               f"{'' if key else '; unsigned'}")
    if not actor.verified:
        click.echo("warning: a self-asserted approval (no verified CI ID token) is recorded but never closes the "
                   "emergency; approve from a CI run started by the approver, with `permissions: id-token: write` "
                   "(GitHub) or `id_tokens: POLICYENGINE_ID_TOKEN` (GitLab)", err=True)
    return EXIT_ALLOW
