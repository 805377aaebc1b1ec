"""`policyengine check`: parse the options, run the gate (``policyengine.gate``), print, exit."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from policyengine.cli.common import (
    CONTEXT,
    EXIT_CODES_HELP,
    parse_now,
    use_color,
    write_atomic,
)
from policyengine.errors import EXIT_DENY, UsageError


@click.command(context_settings=CONTEXT, epilog=EXIT_CODES_HELP)
@click.option("--policy", "policy_path", required=True, envvar="POLICYENGINE_POLICY", show_envvar=True,
              metavar="FILE", help="The policy (YAML) to evaluate.")
@click.option("--waivers", "waivers_path", envvar="POLICYENGINE_WAIVERS", show_envvar=True, metavar="FILE",
              help="Waivers (time-boxed exceptions to single rules, schemas/waivers.schema.json), read like "
              "--policy: a file, git:REF:PATH or git+URL#REF:PATH. Under CI, with a policy from git, the waivers "
              "must come from git too.")
@click.option("--change", "change_path", envvar="POLICYENGINE_CHANGE", show_envvar=True, metavar="FILE",
              help="The change to judge (YAML or JSON, schemas/change.schema.json): the local provider.")
@click.option("--provider", type=click.Choice(["local", "github", "gitlab"]), envvar="POLICYENGINE_PROVIDER",
              show_envvar=True, help="Where the facts come from (default: detected from GITHUB_ACTIONS / "
              "GITLAB_CI; local with --change).")
@click.option("--environment", envvar="POLICYENGINE_ENVIRONMENT", show_envvar=True, metavar="NAME",
              help="The environment deployed to (default: from the CI, e.g. CI_ENVIRONMENT_NAME).")
@click.option("--workspace", default=".", show_default=True, envvar="POLICYENGINE_WORKSPACE", show_envvar=True,
              metavar="DIR", help="Where the policy's relative paths resolve; nothing outside it is read.")
@click.option("--now", envvar="POLICYENGINE_NOW", show_envvar=True, metavar="ISO8601",
              help="Evaluate at this time instead of the clock (tests, what-if runs), e.g. 2026-11-24T15:00:00Z. "
              "Refused under CI unless --simulate is given.")
@click.option("--simulate", is_flag=True,
              help="A what-if evaluation: marked simulated in every output and in the evidence, never counted "
              "as a deployment; under CI it exits 1 whatever the verdict. No environment variable sets it.")
@click.option("--emergency", is_flag=True, envvar="POLICYENGINE_EMERGENCY", show_envvar=True,
              help="Ask for the policy's emergency procedure (break-glass). The declarer is the deployer as the "
              "provider verified it (the CI actor), never a name given here; it must be allowed by the policy's "
              "emergency.declared_by. An allowed emergency exits 0 with a loud EMERGENCY verdict and needs "
              "post-facto approval (policyengine emergency approve).")
@click.option("--reason", envvar="POLICYENGINE_EMERGENCY_REASON", show_envvar=True, metavar="TEXT",
              help="Why the emergency (default: 'Reason: ...' in the request's description).")
@click.option("--incident", envvar="POLICYENGINE_EMERGENCY_INCIDENT", show_envvar=True, metavar="ID",
              help="The incident the emergency answers (default: a request label incident:ID, or 'Incident: ID' "
              "in the request's description).")
@click.option("--json", "json_path", envvar="POLICYENGINE_JSON", show_envvar=True, metavar="PATH",
              help="Write the decision as JSON ('-' for standard output).")
@click.option("--junit", "junit_path", envvar="POLICYENGINE_JUNIT", show_envvar=True, metavar="PATH",
              help="Write JUnit XML, one testcase per rule, for CI test widgets.")
@click.option("--evidence-dir", default="evidence", show_default=True, envvar="POLICYENGINE_EVIDENCE_DIR",
              show_envvar=True, metavar="DIR", help="The evidence archive that receives this evaluation's bundle.")
@click.option("--evidence-store", envvar="POLICYENGINE_EVIDENCE_STORE", show_envvar=True, metavar="URL",
              help="Keep the bundle in this store instead of --evidence-dir: s3://bucket/prefix "
              "(needs policyengine-gate[s3]; endpoint and credentials from the standard AWS variables), "
              "git:REF (a ref of this repository's origin) or git+URL#REF (another repository; token in "
              "POLICYENGINE_EVIDENCE_TOKEN); a git store needs --signing-key.")
@click.option("--signing-key", envvar="POLICYENGINE_SIGNING_KEY", show_envvar=True, metavar="FILE|env:VAR",
              help="Sign the bundle's statement with this Ed25519 private key (PEM, PKCS#8), read from a file "
              "or from an environment variable (env:NAME). Needs policyengine-gate[sign]. Never logged.")
@click.option("--timestamp-url", "timestamp_urls", multiple=True, metavar="URL",
              help="Have the signed statement timestamped by this RFC 3161 timestamp authority (repeatable: the "
              "first that answers is used; plain http is fine, replies are signed). Replaces the policy's "
              "evidence.timestamp.url. Needs --tsa-cert (or evidence.timestamp.cert) and "
              "policyengine-gate[timestamp].")
@click.option("--tsa-cert", metavar="FILE",
              help="The root certificate (PEM) every timestamp reply must chain to, checked when the bundle "
              "is written. Replaces the policy's evidence.timestamp.cert. No environment variable sets it: "
              "a step before the gate could point it at a root of its own.")
@click.option("--trust-key", envvar="POLICYENGINE_TRUST_KEY", show_envvar=True, metavar="FILE|env:VAR",
              help="The Ed25519 public key (PEM) whose signed bundles in the evidence store count as deploy "
              "history: the previous deploy (where the change range starts) is the latest allowed evaluation "
              "signed by it. Without it the change range is unknown (cover_range fails, when.paths rules apply).")
@click.option("--subject", "subjects", multiple=True, metavar="NAME=sha256:HEX", envvar="POLICYENGINE_SUBJECTS",
              show_envvar=True,
              help="An artifact this deploy ships, named in the signed statement (repeatable; in the variable, "
              "separated by spaces or new lines), e.g. a container image's digest: `audit reconcile` matches "
              "deploys and running images to bundles by it.")
@click.option("--notify", "notify", multiple=True, metavar="env:NAME|URL",
              help="Also post the decision to this webhook (repeatable), beside the policy's notify: targets. "
              "env:NAME reads the URL from a variable (recommended: a webhook URL is a secret); a URL given here "
              "is allowed but discouraged. Redacted everywhere; a failure is recorded, never blocking.")
@click.option("--advisory", is_flag=True, envvar="POLICYENGINE_ADVISORY", show_envvar=True,
              help="Evaluate and record everything, but exit 0 when a rule denies (for rollouts).")
@click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True,
              help="Colour the console verdict (auto: only on a terminal; NO_COLOR is honoured).")
def check(policy_path: str, waivers_path: str | None, change_path: str | None, provider: str | None, environment: str | None, workspace: str,
          now: str | None, simulate: bool, emergency: bool, reason: str | None, incident: str | None,
          json_path: str | None,
          junit_path: str | None, evidence_dir: str, evidence_store: str | None, signing_key: str | None,
          timestamp_urls: tuple[str, ...], tsa_cert: str | None,
          trust_key: str | None, subjects: tuple[str, ...], notify: tuple[str, ...], advisory: bool,
          color: str) -> int:
    """Decide whether one change may be deployed, and record the evidence.

    \b
    Examples:
      policyengine check --policy policies/soc2-production.yml --change change.yml
      policyengine check --policy prod.yml --change change.yml --workspace build/ \\
          --junit policy-junit.xml --json decision.json --evidence-dir evidence
      policyengine check --policy prod.yml --change change.yml --now 2026-11-24T15:00:00Z --advisory
      policyengine check --policy prod.yml --emergency --reason "payments down" --incident INC-4711
    """
    from policyengine.lifecycle.emergency import EmergencyRequest
    from policyengine.gate import CheckRequest
    from policyengine.gate import check as run_check
    from policyengine.outputs import junit as junit_out
    from policyengine.outputs import text as text_out

    wall = datetime.now(timezone.utc)  # the one read of the wall clock
    moment = parse_now(now) if now else wall
    source = click.get_current_context().get_parameter_source("environment")
    env_source = "POLICYENGINE_ENVIRONMENT" if source is ParameterSource.ENVIRONMENT else "--environment"
    advisory_source = None
    if advisory:  # who chose the exception is evidence too: the option, the variable or the action input
        advisory_source = "--advisory"
        if click.get_current_context().get_parameter_source("advisory") is ParameterSource.ENVIRONMENT:
            advisory_source = ("POLICYENGINE_ADVISORY (the action input fail-on-deny: false)"
                               if os.environ.get("GITHUB_ACTION_PATH") and os.environ.get("POLICYENGINE_PROVIDER")
                               == "github" else "POLICYENGINE_ADVISORY")
    subject_digests = [_parse_subject(s) for s in subjects]
    key = None
    if signing_key:
        from policyengine.evidence.format.signing import load_signing_key

        key = load_signing_key(signing_key)
    trusted = None
    if trust_key:
        from policyengine.evidence.stores.history import load_trust_key

        trusted = load_trust_key(trust_key, os.environ)
    result = run_check(CheckRequest(
        policy_path=policy_path, now=moment, env=os.environ, change_path=change_path, provider=provider,
        environment=environment, workspace=workspace, evidence_dir=evidence_dir, evidence_store=evidence_store,
        signing_key=key, trust_key=trusted, subjects=subject_digests, advisory=advisory,
        advisory_source=advisory_source,
        environment_source=env_source, wall_time=wall, clock_override=bool(now), simulate=simulate,
        waivers_path=waivers_path or None, notify=notify, timestamp_urls=timestamp_urls, tsa_cert=tsa_cert or None,
        emergency=EmergencyRequest(flag=emergency, reason=reason or None, incident=incident or None),
    ))
    # Every output goes through the one redactor: the decision is redacted, and so is each text.
    decision, bundle, code, shown = result.decision, result.evidence, result.verdict_code, result.redact
    if junit_path:
        write_atomic(junit_path, shown(junit_out.render(decision)), "JUnit report")
    if json_path:
        write_atomic(json_path, shown(json.dumps(result.document, indent=2, sort_keys=False) + "\n"), "decision JSON")
    stream = sys.stderr if json_path == "-" else sys.stdout
    click.echo(shown(text_out.render(decision, color=use_color(color, stream),
                                     advisory=advisory and code == EXIT_DENY, exit_code=code,
                                     simulated_under_ci=result.simulated_under_ci,
                                     approve_command=_approve_command(result.store_url, bundle)
                                     if decision.is_emergency else None)),
               nl=False, file=stream)
    if bundle.get("bundle_id"):
        store_url = result.store_url
        if store_url.startswith(("git:", "git+")):
            where = f"{store_url} {bundle['path']}"
        else:
            where = bundle["path"] if store_url.startswith("s3://") else str(Path(store_url) / bundle["path"])
        # One line, with the chain's new head: anchored outside the store (another repository, the
        # change ticket), `evidence verify --head` detects deleted newest bundles or a rewritten history.
        chain = bundle.get("chain") or {}
        head = (f"; chain head of {chain.get('repository')} / {chain.get('environment')} #{chain.get('sequence')}: "
                f"sha256 {chain['head_sha256']}") if chain.get("head_sha256") else ""
        if bundle.get("store_head"):
            head += f"; store head sha256 {bundle['store_head']}"
        click.echo(shown(f"evidence: {where} (bundle {bundle['bundle_id']}){head}"), file=stream)
        for note in result.notes:
            click.echo(shown(f"evidence: note: {note}"), file=stream)
    for line in result.notifications:
        click.echo(shown(line), file=stream)
    for line in result.sources:
        click.echo(shown(line), file=stream)
    for line in result.warnings:
        click.echo(shown(f"warning: {line}"), file=sys.stderr)
    return result.exit_code


def _approve_command(store_url: str, bundle: Mapping[str, Any]) -> str | None:
    """The `emergency approve` hint of an emergency allow, runnable as printed but for LOGIN (the approver)."""
    if not bundle.get("bundle_id"):
        return None
    from policyengine.errors import command

    words = ["policyengine", "emergency", "approve", "--archive", store_url, str(bundle["bundle_id"]), "--by", "LOGIN"]
    explained = "LOGIN: the approver's login, the CI actor inside CI"
    if store_url.startswith(("git:", "git+")) and not os.environ.get("POLICYENGINE_SIGNING_KEY"):
        words += ["--signing-key", "KEY"]  # a git store keeps signed records only; the key is never echoed
        explained += "; KEY: the signing key, a file or env:VAR"
    return f"{command(*words)}  ({explained})"


_SUBJECT_RE = re.compile(r"^(?P<name>[^=\s][^=]*)=sha256:(?P<hex>[0-9a-fA-F]{64})$")


def _parse_subject(value: str) -> tuple[str, str]:
    """``NAME=sha256:HEX`` -> (NAME, hex digest in lower case)."""
    match = _SUBJECT_RE.match(value.strip())
    if not match:
        raise UsageError(f"--subject: {value!r} is not NAME=sha256:HEX",
                         hint="e.g. --subject app.tar.gz=sha256:$(sha256sum app.tar.gz | cut -d' ' -f1)")
    return match["name"], match["hex"].lower()
