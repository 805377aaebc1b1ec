"""`policyengine evidence`: list, show, get, verify and replay bundles (local folder or S3); record
what happened after the gate (`record-outcome`) and the post-implementation `review`."""

from __future__ import annotations

import contextlib
import gc
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import click

from policyengine.cli.common import CONTEXT
from policyengine.errors import EXIT_ALLOW, EXIT_DENY, UsageError

ARCHIVE_HELP = ("The evidence archive: a folder, s3://bucket/prefix (needs policyengine-gate[s3]; endpoint and "
                "credentials from the standard AWS variables), git:REF or git+URL#REF (a git store; token in "
                "POLICYENGINE_EVIDENCE_TOKEN).")


def archive_option(fn: Any) -> Any:
    return click.option("--archive", default="evidence", show_default=True,
                        envvar=["POLICYENGINE_EVIDENCE_STORE", "POLICYENGINE_EVIDENCE_DIR"], show_envvar=True,
                        metavar="DIR|s3://BUCKET/PREFIX|git+URL#REF", help=ARCHIVE_HELP)(fn)


def open_archive(url: str) -> Any:
    from pathlib import Path

    from policyengine.evidence.stores.factory import open_store

    if not url.startswith(("s3://", "git:", "git+")) and not Path(url).is_dir():
        raise UsageError(f"--archive: {url} is not a directory")
    return open_store(url)


def parse_bound(value: str | None, option: str, *, end: bool) -> str | None:
    """A date (whole day) or an ISO time -> ``YYYY-MM-DDTHH:MM:SSZ``; ``--until`` dates include the day."""
    if value is None:
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc)
            moment = day + timedelta(days=1) if end else day
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                raise ValueError("no time zone")
    except ValueError:
        raise UsageError(f"{option}: {value!r} is not a date (2026-11-01) or an ISO 8601 time with a zone",
                         hint="e.g. 2026-11-01 or 2026-11-01T00:00:00Z") from None
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_key(public_key: str | None) -> Any:
    if not public_key:
        return None
    from policyengine.evidence.format.signing import load_public_key

    return load_public_key(public_key)


@click.group(context_settings=CONTEXT)
def evidence() -> None:
    """List, show, get, verify, replay and migrate bundles; record-outcome, review, baseline and witness add records.

    witness publishes a decision as a commit status; migrate shards a folder archive's index by month.

    The archive is a folder, an S3 bucket or a git ref (--archive).
    """


_LIST_COLS = ("id", "created_at", "environment", "repository", "commit", "kind", "decision", "signed")


@evidence.command("list", context_settings=CONTEXT)
@archive_option
@click.option("--since", metavar="DATE|TIME",
              help="Only bundles created (recorded) at or after this (2026-11-01 or ISO time), whatever their "
              "evaluation time.")
@click.option("--until", metavar="DATE|TIME",
              help="Only bundles created (recorded) before this (a date includes the day).")
@click.option("--environment", metavar="NAME", help="Only this environment.")
@click.option("--repository", metavar="OWNER/NAME", help="Only this repository.")
@click.option("--decision", type=click.Choice(["allow", "deny"]),
              help="Only evaluations the gate decided so: deny includes advisory denials (listed as "
              "'deny (advisory)': they did not block the deploy); allow includes emergency allows.")
@click.option("--kind", type=click.Choice(["evaluation", "outcome", "review", "notification-failure",
                                           "emergency-approval", "baseline", "reconciliation"]),
              help="Only evaluations, or only linked records of this kind.")
@click.option("--json", "fmt", flag_value="json", help="Print JSON.")
@click.option("--csv", "fmt", flag_value="csv", help="Print CSV.")
def evidence_list(archive: str, since: str | None, until: str | None, environment: str | None,
                  repository: str | None, decision: str | None, kind: str | None, fmt: str | None) -> int:
    """List bundles, oldest first, as a table (default), JSON or CSV.

    Served from the archive's SQLite index (index.sqlite), rebuilt from index.jsonl when missing
    or stale.

    \b
    Examples:
      policyengine evidence list --archive evidence --since 2026-10-01 --until 2026-12-31
      policyengine evidence list --archive s3://acme-evidence/prod --environment production --csv
    """
    from policyengine.evidence.format.index import Query
    from policyengine.evidence.format.tabular import check_bounds

    start, end = parse_bound(since, "--since", end=False), parse_bound(until, "--until", end=True)
    if start is not None and end is not None:
        check_bounds(start, end)
    store = open_archive(archive)
    q = Query(since=start, until=end, environment=environment, repository=repository, decision=decision, kind=kind)
    with _no_cycle_collection():
        rows, bad = store.query(q)
        return _print_list(archive, q, rows, bad, fmt, getattr(store, "notes", []))


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Pause Python's cycle collector: a listing builds tens of thousands of small records and no
    cycles, and collecting them again and again costs ~8% of a quarter's listing."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _print_list(archive: str, q: Any, rows: Sequence[Mapping[str, Any]], bad: int, fmt: str | None,
                notes: Sequence[str]) -> int:
    from policyengine.cli.common import err
    from policyengine.evidence.format.index import COLUMNS
    from policyengine.evidence.format.tabular import csv_table

    for note in notes:
        err(f"warning: {note}")
    if bad:
        from policyengine.errors import command

        err(f"warning: {bad} index record(s) cannot be read and are not listed; "
            f"run `{command('policyengine', 'evidence', 'verify', '--archive', archive, '--all')}`")
    flags = ("advisory", "simulated")  # on the index line only when true: an advisory deny let the deploy go
    if fmt == "json":
        click.echo(json.dumps([{**{c: r.get(c) for c in COLUMNS}, **{f: r.get(f) is True for f in flags}}
                               for r in rows], indent=2))
        return EXIT_ALLOW
    if fmt == "csv":
        # Text a spreadsheet would run as a formula is neutralised, as in the audit export.
        click.echo(csv_table((*COLUMNS, *flags), [{**r, **{f: "true" if r.get(f) is True else "false" for f in flags}}
                                                  for r in rows]), nl=False)
        return EXIT_ALLOW
    if not rows:
        asked = any(getattr(q, name) for name in q.__struct_fields__)  # (a Struct has no __dict__ for vars())
        click.echo(f"no bundles in {archive}" + (" match" if asked else ""))
        return EXIT_ALLOW
    cells = [[str(r.get("id")), str(r.get("created_at")), str(r.get("environment") or ""),
              str(r.get("repository") or ""), str(r.get("commit") or "")[:12], str(r.get("kind") or "evaluation"),
              _decision_cell(r), "yes" if r.get("signed_by") else "no"] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(_LIST_COLS)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(_LIST_COLS, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    click.echo("\n".join(lines))
    return EXIT_ALLOW


def _decision_cell(record: Mapping[str, Any]) -> str:
    """The decision as a person must read it: an advisory deny did not stop the deploy."""
    flags = [f for f in ("advisory", "simulated") if record.get(f) is True]
    return f"{record.get('decision')}" + (f" ({', '.join(flags)})" if flags else "")


@evidence.command("show", context_settings=CONTEXT)
@archive_option
@click.option("--public-key", metavar="FILE", help="Check the signature with this Ed25519 public key (PEM).")
@click.argument("bundle_id", metavar="ID")
def evidence_show(archive: str, public_key: str | None, bundle_id: str) -> int:
    """Summarize one bundle for a person: the change, the verdict, each rule, the chain, integrity.

    \b
    Examples:
      policyengine evidence show --archive evidence 20261124T150000Z-0a1b2c3d4e5f
    """
    from policyengine.evidence.stores.base import read_bundle
    from policyengine.evidence.format.records import is_evaluation

    store = open_archive(archive)
    key = load_key(public_key)
    if not is_evaluation(store.find(bundle_id)):
        return _show_record(store, key, bundle_id)
    b = read_bundle(store, bundle_id)
    d, c, m, r = b.decision, b.change, b.manifest, b.record
    pr = c.get("pull_request") or {}
    chain = m.get("chain") or {}
    out = [
        f"bundle      {bundle_id}",
        f"stored at   {store.location(r)}",
        f"created     {m.get('created_at')}   (evaluated at {d.get('evaluated_at')})",
        f"change      {c.get('repository')} {c.get('commit')} -> {c.get('environment')}",
    ]
    if pr:
        out.append(f"            PR #{pr.get('number')}: {pr.get('title', '')} (author {pr.get('author')})")
    if c.get("deployer"):
        out.append(f"            deployed by {c.get('deployer')}")
    policy = d.get("policy") or {}
    out += [
        f"policy      {policy.get('name')} ({b.policy_name}, sha256 {policy.get('sha256')})",
        f"decision    {str(d.get('decision')).upper()}" + ("  (advisory)" if d.get("advisory") else ""),
        "rules:",
    ]
    for rule in d.get("rules", []):
        controls = ",".join(rule.get("controls") or [])
        out.append(f"  {str(rule.get('status')).upper():7} {rule.get('id')}"
                   + (f" [{controls}]" if controls else "") + f": {rule.get('message')}")
    approvals = [rv for rv in c.get("reviews") or [] if rv.get("state") == "approved"]
    if approvals:
        out.append("approvals:")
        out += [f"  {rv.get('user')} at {rv.get('submitted_at')} on {str(rv.get('commit'))[:12]}"
                + _counted_by(d.get("rules") or [], str(rv.get("user") or "")) for rv in approvals]
    statement = _statement(b.envelope)
    for subject in statement.get("subject", []) if isinstance(statement.get("subject"), list) else []:
        digest = ", ".join(f"{k}:{v}" for k, v in (subject.get("digest") or {}).items())
        out.append(f"subject     {subject.get('name')} ({digest})")
    out.append(f"chain       {chain.get('repository')} / {chain.get('environment')} #{chain.get('sequence')}, previous "
               f"{chain.get('previous_id') or '(none: first bundle)'}")
    redacted = [e["path"] for e in m.get("members", []) if e.get("redacted")]
    out.append(f"members     {len(m.get('members', []))} listed"
               + (f"; redacted: {', '.join(redacted)}" if redacted else ""))
    linked_ok = True
    linked = store.linked_records(bundle_id)
    from policyengine.evidence.audit.emergencies import judged_approvals

    judged = judged_approvals(store, r, d, linked, key)
    for kind in ("outcome", "review"):
        mine = [r for r in linked if r.get("kind") == kind]
        if not mine:
            out.append(f"{kind:11} none recorded")
        for r in mine:
            lines, ok = _linked_lines(store, key, r)
            out += lines
            linked_ok = linked_ok and ok
    for r in linked:
        if r.get("kind") not in ("outcome", "review"):
            lines, ok = _linked_lines(store, key, r)
            if r.get("kind") == "emergency-approval":
                verdict = judged.get(str(r.get("id")))
                why = verdict.why_not if verdict else "the evaluation is no allowed emergency awaiting approval"
                lines.insert(-1, "            counts toward the emergency's approval" if verdict and verdict.counts
                             else f"            NOT COUNTED: {why}")
            out += lines
            linked_ok = linked_ok and ok
    report = store.verify([bundle_id], key)
    out += _integrity_lines(report, bundle_id, key, "bundle")
    click.echo("\n".join(out))
    return EXIT_ALLOW if report.ok and linked_ok else EXIT_DENY


def _counted_by(rules: Sequence[Mapping[str, Any]], user: str) -> str:
    """What each approvals rule made of ``user``'s approval: counted, or not counted and why."""
    said: list[str] = []
    for rule in rules:
        details = rule.get("details") if isinstance(rule.get("details"), Mapping) else {}
        if not isinstance(details, Mapping) or rule.get("type") != "approvals":
            continue
        counted = [str(u).casefold() for u in details.get("counted") or [] if isinstance(u, str)]
        why = next((str(n.get("reason")) for n in details.get("not_counted") or []
                    if isinstance(n, Mapping) and str(n.get("user", "")).casefold() == user.casefold()), None)
        if user.casefold() in counted:
            said.append(f"counted by {rule.get('id')}")
        elif why is not None:
            said.append(f"NOT COUNTED by {rule.get('id')}: {why}")
    return f": {'; '.join(said)}" if said else ""


def _integrity_lines(report: Any, bundle_id: str, key: Any, what: str) -> list[str]:
    sig = report.signatures.get(bundle_id, "?")
    out = [f"signature   {_SIGNATURE_WORDS.get(sig, sig)}"]
    if not report.ok:
        out.append(f"integrity   FAILED: {len(report.problems)} problem(s)")
        out += [f"  {p.check}: {p.message}" for p in report.problems]
    elif key is not None and sig == "valid":
        out.append("integrity   ok: digests, statement, signature and chain link verified"
                   + ("; it names a real evaluation of its chain" if what == "record" else ""))
    elif sig == "unchecked":
        out.append("integrity   NOT PROVEN: digests and chain link consistent, but the signature was not "
                   "checked (give --public-key)")
    else:
        out.append(f"integrity   NOT PROVEN: digests and chain link consistent, but the {what} is unsigned: "
                   "anyone able to write the archive could have made it")
    out += [f"warning: {w.message}" for w in report.warnings]
    return out


def _who(doc: dict[str, Any]) -> str:
    """Who recorded a record, and whether the CI vouches for it."""
    if doc.get("by_verified") is True and doc.get("by_source") == "gate":
        return f"{doc.get('by')} (verified: written by the gate in the run that recorded the evaluation)"
    from policyengine.providers.oidc import LEGACY, recorder_label

    if doc.get("by_verified") is True and recorder_label(doc) == LEGACY:
        return f"{doc.get('by')} ({LEGACY}: {doc.get('by_source')}, recorded before CI ID tokens were checked)"
    if doc.get("by_verified") is True:
        return f"{doc.get('by')} (verified (CI actor): {doc.get('by_source')})"
    return f"{doc.get('by')} (SELF-ASSERTED: no verified CI ID token)"


def _linked_lines(store: Any, key: Any, record: dict[str, Any]) -> tuple[list[str], bool]:
    """What `show` of an evaluation says of one record linked to it, and whether that record verifies."""
    from policyengine.errors import EvidenceError
    from policyengine.evidence.stores.outcomes import read_record

    kind = str(record.get("kind"))
    report = store.verify([record["id"]], key)
    sig = report.signatures.get(record["id"], "?")
    if not report.ok:
        state = f"FAILS verification: {report.problems[0].check}: {report.problems[0].message}"
    elif key is not None and sig == "valid":
        state = "verified, signature valid"
    else:
        state = "NOT PROVEN: " + ("unsigned" if sig in ("unsigned", "absent") else "signature not checked")
    try:
        doc = read_record(store, record)
    except EvidenceError as exc:
        return [f"{kind:11} record {record['id']}: {exc.message}", f"            integrity: {state}"], False
    value = doc.get("status", doc.get("result", doc.get("notification", doc.get("approval"))))
    if doc.get("target"):  # a notification-failure: which target, and why
        value = f"{value} ({doc.get('target')}: {doc.get('cause')})"
    when = f" at {doc.get('claimed_at')} (claimed)" if doc.get("claimed_at") else ""
    lines = [f"{kind:11} {str(value).upper()}{when} by {_who(doc)}",
             f"            record {record['id']}, recorded {doc.get('recorded_at')}"]
    if doc.get("note"):
        lines.append(f"            note: {doc.get('note')}")
    lines.append(f"            integrity: {state}")
    return lines, report.ok


def _show_record(store: Any, key: Any, bundle_id: str) -> int:
    """`show` of a linked record: the record, the evaluation it is about, and its integrity."""
    from policyengine.errors import EvidenceError
    from policyengine.evidence.stores.outcomes import read_record

    record = store.find(bundle_id)
    doc = read_record(store, record)
    raw_about = doc.get("about")
    about: dict[str, Any] = raw_about if isinstance(raw_about, dict) else {}
    value = doc.get("status", doc.get("result", doc.get("approval", doc.get("baseline"))))
    out = [
        f"record      {bundle_id} ({record.get('kind')})",
        f"stored at   {store.location(record)}",
        f"created     {record.get('created_at')}",
    ]
    if record.get("kind") == "baseline":
        out += [f"baseline    {doc.get('repository')} {doc.get('commit')} in {doc.get('environment')} when the gate "
                "was adopted: the chain's first trusted previous deploy (an exception: recorded by a person, "
                "not decided by the gate)",
                f"reachable   {doc.get('reachable') or '(not recorded)'}"]
    else:
        out += [f"about       bundle {about.get('bundle_id')} (sha256 {about.get('sha256')})",
                f"change      {doc.get('repository')} {doc.get('commit')} -> {doc.get('environment')}"]
        try:
            evaluation = store.find(str(about.get("bundle_id")))
            out.append(f"            its decision: {str(evaluation.get('decision')).upper()}, "
                       f"created {evaluation.get('created_at')}")
        except (EvidenceError, UsageError):
            out.append("            its evaluation is NOT in the archive")
    label = {"outcome": "status", "emergency-approval": "approval", "baseline": "baseline"}.get(
        str(record.get("kind")), "result")
    out += [
        f"{label:11} {value}",
        f"claimed at  {doc.get('claimed_at') or '(no time claimed)'}",
        f"by          {_who(doc)}",
        f"note        {doc.get('note') or '(none)'}",
        f"chain       {record.get('repository')} / {record.get('environment')} #{record.get('sequence')}",
    ]
    report = store.verify([bundle_id], key)
    out += _integrity_lines(report, bundle_id, key, "record")
    click.echo("\n".join(out))
    return EXIT_ALLOW if report.ok else EXIT_DENY


def _statement(envelope: Any) -> dict[str, Any]:
    """The statement inside a DSSE envelope, or {} (show only displays it; verify checks it)."""
    import base64
    import binascii

    try:
        value = json.loads(base64.b64decode(envelope["payload"]))
    except (TypeError, KeyError, ValueError, binascii.Error):
        return {}
    return value if isinstance(value, dict) else {}


_SIGNATURE_WORDS = {
    "valid": "signed, signature valid",
    "unsigned": "unsigned",
    "unchecked": "signed, not checked (give --public-key)",
    "invalid": "INVALID signature",
    "wrong-key": "signed by another key",
    "absent": "none: no statement (the bundle claims schema 1, made before statements existed; unverified)",
}


_SIGNING_HELP = "Sign the record with this Ed25519 private key (as `check` signs bundles)."


def _signing_key(spec: str | None) -> Any:
    if not spec:
        return None
    from policyengine.evidence.format.signing import load_signing_key

    return load_signing_key(spec)


def timestamp_options(fn: Any) -> Any:
    """``--timestamp-url`` and ``--tsa-cert`` for the commands that append a signed record."""
    fn = click.option("--tsa-cert", metavar="FILE",
                      help="The root certificate (PEM) every timestamp reply must chain to.")(fn)
    return click.option("--timestamp-url", "timestamp_urls", multiple=True, metavar="URL",
                        help="Have the record's signed statement timestamped by this RFC 3161 authority "
                        "(repeatable: the first that answers is used). Needs --tsa-cert. When none answers, "
                        "the record says why it has no token.")(fn)


def stamper(timestamp_urls: Sequence[str], tsa_cert: str | None) -> Any:
    """The timestamper of a command's ``--timestamp-url``/``--tsa-cert`` (None: none asked for)."""
    if not timestamp_urls:
        return None
    from policyengine.evidence.format.timestamp import Timestamper, check_url, load_roots

    if not tsa_cert:
        raise UsageError("--timestamp-url needs the timestamp authority's root certificate, to check every reply",
                         hint="give --tsa-cert FILE")
    return Timestamper(urls=tuple(check_url(u) for u in timestamp_urls), roots=load_roots(tsa_cert, what="--tsa-cert"))


def _actor(by: str | None, *, fallback_user: bool) -> Any:
    import os


def oidc_issuer_option(fn: Any) -> Any:
    """``--oidc-issuer URL``: one more trusted issuer of CI ID tokens (repeatable). Deliberately
    no environment variable: a step before this one could set it and run its own issuer."""
    return click.option("--oidc-issuer", "oidc_issuers", multiple=True, metavar="URL",
                         help="Trust ID tokens of this issuer too (a GitHub Enterprise Server or self-managed "
                              "GitLab issuer), beside https://token.actions.githubusercontent.com and "
                              "https://gitlab.com. Repeatable; never read from the environment.")(fn)


def _actor(by: str | None, *, fallback_user: bool, oidc_issuers: tuple[str, ...] = ()) -> Any:
    """Who records this: inside CI, verified only by the CI's ID token (``providers.oidc``)."""
    import os
    from datetime import datetime, timezone

    from policyengine.errors import UsageError
    from policyengine.evidence.format.records import resolve_actor
    from policyengine.language.policysource import running_in_ci
    from policyengine.providers import oidc

    for url in oidc_issuers:
        problem = oidc.issuer_problem(url)
        if problem:
            raise UsageError(f"--oidc-issuer {url}: {problem}")
    in_ci = running_in_ci(os.environ)
    identity = None
    if in_ci:
        settings = oidc.IdentitySettings(issuers=(*oidc.DEFAULT_ISSUERS, *oidc_issuers))
        identity = oidc.establish(os.environ, settings, datetime.now(timezone.utc))
    return resolve_actor(os.environ, by, in_ci=in_ci, fallback_user=fallback_user, identity=identity)


def _recorded_by(actor: Any) -> str:
    if actor.verified:
        return f"{actor.login} (verified (CI actor): {actor.source})"
    return f"{actor.login} (self-asserted: {actor.source})"


@evidence.command("record-outcome", context_settings=CONTEXT)
@archive_option
@click.option("--status", required=True, type=click.Choice(["deployed", "failed", "rolled_back", "not_deployed"]),
              help="What happened to the change after the gate.")
@click.option("--note", metavar="TEXT", help="A note (e.g. the incident or the reason).")
@click.option("--at", "at", metavar="ISO8601", help="When it happened (a claimed time, with a zone); not in the "
              "future, not before the evaluation. Default: none claimed.")
@click.option("--by", metavar="LOGIN", help="Who records it. Inside CI it must be the CI actor (the default there); "
              "outside CI it is self-asserted (default: $USER).")
@click.option("--signing-key", envvar="POLICYENGINE_SIGNING_KEY", show_envvar=True, metavar="FILE|env:VAR",
              help=_SIGNING_HELP)
@timestamp_options
@oidc_issuer_option
@click.argument("bundle_id", metavar="BUNDLE_ID")
def evidence_record_outcome(archive: str, status: str, note: str | None, at: str | None, by: str | None,
                            signing_key: str | None, timestamp_urls: tuple[str, ...], tsa_cert: str | None,
                            oidc_issuers: tuple[str, ...], bundle_id: str) -> int:
    """Append what happened after the gate to the evaluation's chain: deployed, failed, rolled_back or not_deployed.

    The evaluation's bundle is never edited: a signed outcome record, linked to it by id and
    SHA-256, is appended to the same store and chain. Exit 0 recorded, 2 refused (unknown
    bundle, bad --at, --by not the CI actor), 3 not recorded.

    \b
    Examples:
      policyengine evidence record-outcome --archive evidence 20261124T150000Z-0a1b2c3d4e5f --status deployed
      policyengine evidence record-outcome --archive s3://acme-evidence/prod "$POLICYENGINE_BUNDLE_ID" \\
          --status rolled_back --note "INC-231" --at 2026-11-24T16:05:00Z --signing-key env:SIGNING_KEY
    """
    from datetime import datetime, timezone

    from policyengine.cli.common import err
    from policyengine.evidence.stores.outcomes import record_outcome
    from policyengine.models import parse_instant

    store = open_archive(archive)
    actor = _actor(by, fallback_user=True, oidc_issuers=oidc_issuers)
    claimed = parse_instant(at, option="--at") if at else None
    key = _signing_key(signing_key)
    import os

    about = store.find(bundle_id)
    if status == "deployed" and about.get("decision") != "allow" and about.get("advisory") is not True:
        err(f"warning: bundle {bundle_id} was not allowed ({about.get('decision')}): recording that it was "
            "deployed anyway")
    from policyengine.evidence.format.timestamp import stamping

    with stamping(stamper(timestamp_urls, tsa_cert)):
        ref = record_outcome(store, bundle_id, status=status, actor=actor, note=note, claimed_at=claimed,
                             signing_key=key, env=os.environ, now=datetime.now(timezone.utc))
    click.echo(f"recorded outcome {status} of bundle {bundle_id} as record {ref.id} by {_recorded_by(actor)}"
               f"{'' if key else '; unsigned'}")
    return EXIT_ALLOW


@evidence.command("witness", context_settings=CONTEXT)
@archive_option
@click.option("--provider", type=click.Choice(["github", "gitlab"]),
              help="The platform to publish on. Default: GitHub inside GitHub Actions, GitLab inside GitLab CI.")
@click.option("--store-head", "store_head", metavar="SHA256",
              help="The store head check printed (the action's store-head output). Default: the store's newest "
                   "catalogue now.")
@click.option("--signing-key", envvar="POLICYENGINE_SIGNING_KEY", show_envvar=True, metavar="FILE|env:VAR",
              help="Signs the notification-failure record (and not_deployed outcome) written when publishing fails.")
@timestamp_options
@click.argument("bundle_id", metavar="BUNDLE_ID")
def evidence_witness(archive: str, provider: str | None, store_head: str | None, signing_key: str | None,
                     timestamp_urls: tuple[str, ...], tsa_cert: str | None, bundle_id: str) -> int:
    """Publish a recorded decision as a commit status: the platform as witness.

    Run it in a step or job of its own, after check, with its own token in
    POLICYENGINE_WITNESS_TOKEN (GitHub: statuses: write; GitLab: the api scope), never the gate
    job's token. It posts the status policyengine/<environment> on the deployed commit, with the
    description "<decision> <bundle id> sha256:<16 hex> head:<16 hex>"; `audit reconcile
    --witness` reads it back. Without the token publishing is off, unless the policy says
    witness: {required: true}. A failure is recorded like a failed notification. Exit 0
    published (or off, or failed and not required), 2 refused (unknown bundle), 3 a required
    witness failed (a not_deployed outcome is recorded: the deploy must not proceed).

    \b
    Examples:
      POLICYENGINE_WITNESS_TOKEN=... policyengine evidence witness --archive evidence "$BUNDLE_ID"
      policyengine evidence witness --archive git+https://github.com/acme/evidence#refs/heads/main \\
          "$BUNDLE_ID" --store-head "$STORE_HEAD" --signing-key env:SIGNING_KEY
    """
    import os

    from policyengine.lifecycle.witness import publish

    if store_head is not None and not re.fullmatch(r"[0-9a-f]{64}", store_head.strip()):
        raise UsageError(f"--store-head {store_head!r} is not a SHA-256 (64 lowercase hex digits)")
    store = open_archive(archive)
    key = _signing_key(signing_key) if signing_key else None
    from policyengine.evidence.format.timestamp import stamping

    with stamping(stamper(timestamp_urls, tsa_cert)):  # a failure record is stamped like any record
        result = publish(store, bundle_id, env=os.environ, provider=provider,
                         store_head=store_head.strip() if store_head else None, signing_key=key)
    for line in result.lines:
        click.echo(line)
    return result.exit_code


@evidence.command("baseline", context_settings=CONTEXT)
@archive_option
@click.option("--environment", required=True, metavar="NAME", help="The environment the gate will protect.")
@click.option("--commit", required=True, metavar="SHA", help="The full id of the commit in that environment now; "
              "it must be reachable from the default branch.")
@click.option("--by", metavar="LOGIN", help="Who records it. Inside CI it must be the CI actor (the default there; "
              "recorded as not verified); outside CI it is self-asserted.")
@click.option("--repository", metavar="OWNER/NAME", help="The repository, as the gate names it. Inside CI the "
              "platform's (GITHUB_REPOSITORY, CI_PROJECT_PATH), which this must match when given.")
@click.option("--note", metavar="TEXT", help="A note (e.g. the release or ticket).")
@click.option("--signing-key", envvar="POLICYENGINE_SIGNING_KEY", show_envvar=True, metavar="FILE|env:VAR",
              required=True, help="The Ed25519 private key the gate signs bundles with.")
@click.option("--trust-key", envvar="POLICYENGINE_TRUST_KEY", show_envvar=True, metavar="FILE|env:VAR",
              required=True, help="The public key the gate trusts (check --trust-key): the signing key must be "
              "its private half.")
@click.option("--workspace", default=".", show_default=True, metavar="DIR",
              help="Outside CI: the git checkout whose default branch must reach --commit.")
def evidence_baseline(archive: str, environment: str, commit: str, by: str | None, repository: str | None,
                      note: str | None, signing_key: str, trust_key: str, workspace: str) -> int:
    """Record, signed, the commit in production when the gate is adopted (the first trusted previous deploy).

    A baseline counts as the trusted previous deploy (check --trust-key), so the first gated
    deploy already has a change range. It is accepted only as the first record of an empty
    chain, for a commit reachable from the default branch (under CI the platform's, fetched from
    the platform's repository), signed with the key the gate trusts. The export and the audit
    summary list it as an exception. Exit 0 recorded, 2 refused, 3 not recorded.

    \b
    Examples:
      policyengine evidence baseline --archive git+https://git.example.com/acme/evidence.git#refs/heads/policyengine-evidence \\
          --environment production --commit "$(git rev-parse origin/main)" --by alice \\
          --signing-key env:SIGNING_KEY --trust-key policyengine-trust.pub
    """
    import os

    from policyengine.errors import PolicySourceError
    from policyengine.evidence.stores.history import load_trust_key
    from policyengine.evidence.format.records import Actor, ci_actor
    from policyengine.language.policysource import check_reachable_from_default, in_any_ci

    env = os.environ
    sha = commit.strip()
    if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", sha):
        raise UsageError(f"--commit {commit[:80]!r} is not a full commit id (40 or 64 lowercase hex digits)",
                         hint="give the full id, e.g. $(git rev-parse origin/main)")
    in_ci = in_any_ci(env)
    platform_repo = (env.get("GITHUB_REPOSITORY") or env.get("CI_PROJECT_PATH") or "").strip()
    if in_ci:
        if not platform_repo:
            raise UsageError("running in CI, but the platform names no repository (GITHUB_REPOSITORY or "
                             "CI_PROJECT_PATH)")
        if repository is not None and repository.strip() != platform_repo:
            raise UsageError(f"--repository {repository} is not the repository this CI job runs for ({platform_repo})")
        repository = platform_repo
        found = ci_actor(env)
        if found is None:
            raise UsageError("--by: running in CI, but the CI names no actor (GITHUB_ACTOR, GITLAB_USER_LOGIN)")
        login, source = found
        if by is not None and by.strip().casefold() != login.casefold():
            raise UsageError(f"--by {by} is not the CI actor {login} ({source}): inside CI a baseline is recorded "
                             "by the person who ran the job", hint=f"drop --by, or give --by {login}")
        # The CI's word for who ran the job, not yet checked against the code host (identity work).
        actor = Actor(login=login, verified=False, source=source)
    else:
        if not repository or not repository.strip():
            raise UsageError("--repository is required outside CI (the repository as the gate names it, e.g. "
                             "acme/payments)")
        repository = repository.strip()
        if not by or not by.strip():
            raise UsageError("--by is required: who records the baseline")
        actor = Actor(login=by.strip(), verified=False, source="--by")
    key = _signing_key(signing_key)
    trusted = load_trust_key(trust_key, env)
    if key is None or key.keyid != trusted[1]:
        raise UsageError(f"--signing-key (key id {getattr(key, 'keyid', None)}) is not the private half of --trust-key "
                         f"(key id {trusted[1]}): a baseline signed with another key never counts as the previous "
                         "deploy", hint="use the key pair the gate signs and trusts bundles with")
    try:
        reach = check_reachable_from_default(sha, repo=workspace, env=env)
    except PolicySourceError as exc:
        raise UsageError(f"--commit: {exc.message}: a baseline must name a commit of the default branch",
                         hint=exc.hint) from None
    store = open_archive(archive)
    payload: dict[str, Any] = {"note": note or None, "by": actor.login, "by_verified": actor.verified,
                               "by_source": actor.source, "reachable": reach}
    from policyengine.redact import ci_variables

    ci = ci_variables(env)
    if ci:
        payload["ci"] = ci
    ref = store.append_baseline(repository=repository, environment=environment, commit=sha, payload=payload,
                                signing_key=key)
    click.echo(f"recorded baseline {ref.id}: {repository} / {environment} at {sha[:12]} ({reach}), by "
               f"{actor.login} ({actor.source}, not verified); the chain starts here")
    return EXIT_ALLOW


@evidence.command("review", context_settings=CONTEXT)
@archive_option
@click.option("--by", required=True, metavar="LOGIN", help="The reviewer. Inside CI it must be the CI actor; "
              "outside CI it is self-asserted. Not the change's author, deployer or a committer.")
@click.option("--result", required=True, type=click.Choice(["ok", "issues"]), help="What the review found.")
@click.option("--note", required=True, metavar="TEXT", help="What was reviewed and found.")
@click.option("--signing-key", envvar="POLICYENGINE_SIGNING_KEY", show_envvar=True, metavar="FILE|env:VAR",
              help=_SIGNING_HELP)
@timestamp_options
@oidc_issuer_option
@click.argument("bundle_id", metavar="BUNDLE_ID")
def evidence_review(archive: str, by: str, result: str, note: str, signing_key: str | None,
                    timestamp_urls: tuple[str, ...], tsa_cert: str | None, oidc_issuers: tuple[str, ...],
                    bundle_id: str) -> int:
    """Append the post-implementation review of a deployed change to its evaluation's chain.

    The reviewer must be someone other than the change's author, its deployer and its
    committers (logins compared case-insensitively): otherwise exit 2 naming the role.

    \b
    Examples:
      policyengine evidence review --archive evidence 20261124T150000Z-0a1b2c3d4e5f \\
          --by erin --result ok --note "checked the refunds dashboard for a week"
    """
    import os
    from datetime import datetime, timezone

    from policyengine.evidence.stores.outcomes import record_review

    store = open_archive(archive)
    actor = _actor(by, fallback_user=False, oidc_issuers=oidc_issuers)
    key = _signing_key(signing_key)
    from policyengine.evidence.format.timestamp import stamping

    with stamping(stamper(timestamp_urls, tsa_cert)):
        ref = record_review(store, bundle_id, result=result, actor=actor, note=note, signing_key=key,
                            env=os.environ, now=datetime.now(timezone.utc))
    click.echo(f"recorded review {result} of bundle {bundle_id} as record {ref.id} by {_recorded_by(actor)}"
               f"{'' if key else '; unsigned'}")
    return EXIT_ALLOW


@evidence.command("get", context_settings=CONTEXT)
@archive_option
@click.option("-o", "--output", required=True, metavar="FILE", help="Where to write the bundle zip.")
@click.argument("bundle_id", metavar="ID")
def evidence_get(archive: str, output: str, bundle_id: str) -> int:
    """Copy one bundle out of the archive, byte for byte.

    \b
    Examples:
      policyengine evidence get --archive s3://acme-evidence/prod 20261124T150000Z-0a1b2c3d4e5f -o bundle.zip
    """
    store = open_archive(archive)
    record = store.export_bundle(bundle_id, output)
    click.echo(f"wrote {output} (bundle {bundle_id}, sha256 {record['sha256']})")
    return EXIT_ALLOW


@evidence.command("migrate", context_settings=CONTEXT)
@click.option("--archive", required=True, metavar="DIR", envvar="POLICYENGINE_EVIDENCE_DIR",
              help="The evidence folder to shard.")
def evidence_migrate(archive: str) -> int:
    """Shard a folder archive's index.jsonl by month, so that `list` reads only the months asked for.

    Each line moves, byte for byte and in its order, to index/YYYY-MM.jsonl (the month of its
    bundle id), holding the archive's lock; index.jsonl then becomes a folder, which an older
    policyengine refuses to append to (its `check` fails, exit 3) instead of starting a second
    index. Upgrade every job that writes to the archive first. Run again, it moves into the
    shards any line an older version wrote to a file index.jsonl since.

    \b
    Examples:
      policyengine evidence migrate --archive evidence
    """
    from policyengine.evidence.stores.folder import LocalArchive

    if archive.startswith(("s3://", "git:", "git+")):
        raise UsageError("evidence migrate shards a folder archive; S3 and git stores need no migration")
    store = LocalArchive(archive)
    lines, shards, merged = store.migrate()
    click.echo(f"{archive}: index sharded by month ({lines} line(s) moved into {shards} shard(s) under "
               f"{archive.rstrip('/')}/index/" + (f"; {merged} line(s) written by an older version merged" if merged
                                                   else "") + ")")
    return EXIT_ALLOW


@evidence.command("verify", context_settings=CONTEXT)
@archive_option
@click.option("--all", "all_", is_flag=True, help="Verify every bundle (the default when no ID is given).")
@click.option("--public-key", metavar="FILE",
              help="Require every bundle to be signed by this Ed25519 public key (PEM) and check it.")
@click.option("--head", "heads", multiple=True, metavar="SHA256",
              help="A chain head or the store head recorded elsewhere (both printed by `check` after each "
              "write): the archive must still hold that bundle, intact, in its chain; or, for a store head, "
              "that catalogue, every catalogue after it, and every chain it lists at least as long. Repeatable.")
@click.option("--tsa-cert", metavar="FILE",
              help="Check every RFC 3161 timestamp token (timestamp.tsr) offline against this root certificate "
              "(PEM), fetched from the timestamp authority yourself: message imprint, TSA signature, chain. "
              "Without it a token's imprint and time are checked, its signature is not.")
@click.option("--require-timestamps", is_flag=True,
              help="A bundle without a timestamp token fails (a key holder could write a policy with "
              "required: false).")
@click.option("--oidc-jwks", "oidc_jwks", multiple=True, metavar="FILE",
              help="Re-check each bundle's CI ID token (identity.json) offline against this issuer key set, "
              "fetched by you from the issuer's jwks_uri (never the copy in the bundle). Repeatable: keys rotate. "
              "Without it identity shows as unchecked.")
@click.argument("ids", nargs=-1, metavar="[ID...]")
def evidence_verify(archive: str, all_: bool, public_key: str | None, heads: tuple[str, ...],
                    tsa_cert: str | None, require_timestamps: bool, oidc_jwks: tuple[str, ...],
                    ids: tuple[str, ...]) -> int:
    """Verify bundles: digests, members, statements, signatures and hash chains.

    Exit 0 only when every check holds; otherwise 1, with one line per problem naming the
    check and the bundle. --archive may also name an audit export (its zip, or the folder it
    was unzipped into): it is verified standalone (exit 2 when it is not one).

    \b
    Examples:
      policyengine evidence verify --archive evidence --all --public-key signing.pub
      policyengine evidence verify --archive evidence 20261124T150000Z-0a1b2c3d4e5f
      policyengine evidence verify --archive audit-2026.zip --public-key signing.pub
      policyengine evidence verify --archive evidence --public-key signing.pub --tsa-cert tsa-root.pem \\
          --require-timestamps
      policyengine evidence verify --archive evidence --oidc-jwks github-jwks.json
    """
    if all_ and ids:
        raise UsageError("give bundle IDs or --all, not both")
    import re

    from policyengine.evidence.audit.export_verify import is_export, verify_export
    from policyengine.evidence.format.timestamp import StampCheck, load_roots

    stamps = StampCheck(roots=load_roots(tsa_cert, what="--tsa-cert") if tsa_cert else (),
                        require=require_timestamps)

    heads = tuple(h.strip().lower().removeprefix("sha256:") for h in heads)
    for head in heads:
        if not re.fullmatch(r"[0-9a-f]{64}", head):
            raise UsageError(f"--head: {head!r} is not a SHA-256 hex digest",
                             hint="give the digest `policyengine check` printed as the chain head or store head")
    if not archive.startswith(("git:", "git+")) and is_export(archive):
        if ids:
            raise UsageError("an export is verified as a whole: give no bundle IDs")
        if heads:
            raise UsageError("--head checks an archive, not an export")
        result = verify_export(archive, load_key(public_key), stamps=stamps)
        click.echo("\n".join(result.lines()))
        from policyengine.evidence.audit.identity import check_export, load_jwks

        identity = check_export(archive, result.bundles, load_jwks(oidc_jwks) if oidc_jwks else None)
        _print_identity(identity)
        failed = [f for f in identity if f.state == "failed"]
        if failed:
            click.echo(f"identity verification failed: {len(failed)} bundle(s)")
        return EXIT_ALLOW if result.ok and not failed else EXIT_DENY
    jwks = None
    if oidc_jwks:
        from policyengine.evidence.audit.identity import load_jwks

        jwks = load_jwks(oidc_jwks)
    return verify_archive(open_archive(archive), () if all_ else ids, load_key(public_key), heads, stamps,
                          jwks=jwks)


def _print_identity(found: Any) -> None:
    """One line per bundle keeping a CI identity (``evidence.identity``)."""
    for f in found:
        if f.state == "failed":
            click.echo(f"FAIL  {'identity':13} bundle {f.bundle_id} member identity.json: {f.message}")
        elif f.state == "verified":
            click.echo(f"IDENTITY  bundle {f.bundle_id}: {f.message}")
        else:
            click.echo(f"NOTE  bundle {f.bundle_id}: identity {f.state}: {f.message}")


_STAMP_WORDS = {"valid": "checked against --tsa-cert", "unchecked": "not checked (give --tsa-cert)",
                "none": "without a token", "invalid": "invalid"}


def verify_archive(store: Any, ids: tuple[str, ...], key: Any, heads: tuple[str, ...] = (),
                   stamps: Any = None, *, jwks: Any = None) -> int:
    """Verify an opened store (every bundle when ``ids`` is empty), print the outcome, return the exit code.

    0 when every check holds, 1 with one ``FAIL`` line per problem; a store that is not an
    archive, or records nothing, raises ``NothingToVerifyError`` (exit 2). ``warning:`` lines
    never change the exit code.
    """
    report = store.verify(ids, key, heads=heads, stamps=stamps) if (heads or stamps) else store.verify(ids, key)
    for p in report.problems:
        where = f"bundle {p.bundle_id or '?'}" + (f" member {p.member}" if p.member else "")
        click.echo(f"FAIL  {p.check:13} {where}: {p.message}")
    for w in report.warnings:
        click.echo(f"warning: bundle {w.bundle_id}: {w.message}")
    for note in getattr(store, "notes", []):  # what the store repaired while it was read (the catalogue)
        click.echo(f"note: {note}")
    counts: dict[str, int] = {}
    for bundle_id, state in report.signatures.items():
        counts[state] = counts.get(state, 0) + 1
        if state in ("unsigned", "absent") and key is None:
            why = "it carries no signature" if state == "unsigned" else \
                "it claims schema 1 and carries no statement nor signature"
            click.echo(f"UNSIGNED  bundle {bundle_id}: digests and chain checked; {why}: who wrote it is not proven")
        elif state == "unchecked":
            click.echo(f"NOTE  bundle {bundle_id} is signed; its signature was not checked (give --public-key)")
    from policyengine.evidence.audit.identity import check_store

    bad = {p.bundle_id for p in report.problems}
    identity = check_store(store, [b for b in report.checked if b not in bad], jwks)
    failed_identity = [f for f in identity if f.state == "failed"]
    _print_identity(identity)
    n = len(report.checked)
    sig_summary = ", ".join(f"{v} {_SIGNATURE_WORDS.get(k, k)}" for k, v in sorted(counts.items()))
    stamped: dict[str, int] = {}
    for state in report.timestamps.values():
        stamped[state] = stamped.get(state, 0) + 1
    if any(state != "none" for state in stamped):
        # Only archives that hold tokens say so: an archive without any keeps its old summary.
        sig_summary += ("; " if sig_summary else "") + "timestamps: " + ", ".join(
            f"{v} {_STAMP_WORDS.get(k, k)}" for k, v in sorted(stamped.items()))
    if report.ok and not failed_identity:
        click.echo(f"ok: {n} bundle{'s' if n != 1 else ''} verified: digests, statements, chains"
                   + (f"; signatures: {sig_summary}" if sig_summary else "")
                   + (f"; {len(heads)} anchored head{'s' if len(heads) != 1 else ''} found" if heads else ""))
        return EXIT_ALLOW
    click.echo(f"verification failed: {len(report.problems) + len(failed_identity)} problem(s) in {n} bundle(s) "
               "checked")
    if any(p.check == "version" for p in report.problems):
        from policyengine.evidence.format.bundle import NEWER_VERSION

        click.echo(f"this archive holds evidence {NEWER_VERSION} policyengine to verify it "
                   "(pip install -U policyengine-gate)")
    return EXIT_DENY


@evidence.command("replay", context_settings=CONTEXT)
@archive_option
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.argument("bundle_id", metavar="ID")
def evidence_replay(archive: str, as_json: bool, bundle_id: str) -> int:
    """Re-evaluate a bundle's own policy, change and files at its recorded time.

    Exit 0 when the decision and every rule's status match the record, 1 naming each difference.

    \b
    Examples:
      policyengine evidence replay --archive evidence 20261124T150000Z-0a1b2c3d4e5f
    """
    from policyengine.gate import replay

    store = open_archive(archive)
    result = replay(store, bundle_id)
    if as_json:
        click.echo(json.dumps({"bundle_id": result.bundle_id, "evaluated_at": result.evaluated_at,
                               "recorded": result.recorded, "replayed": result.replayed, "match": result.ok,
                               "differences": result.differences, "rules": result.rules, "notes": result.notes},
                              indent=2))
    else:
        click.echo(f"replayed bundle {bundle_id} at {result.evaluated_at}")
        for r in result.rules:
            mark = "same" if r["recorded"] == r["replayed"] else "DIFFERS"
            click.echo(f"  {mark:7} {r['id']}: recorded {r['recorded']}, replayed {r['replayed']}")
        for note in result.notes:
            click.echo(f"note: {note}")
        for d in result.differences:
            click.echo(f"DIFFERENCE  {d}")
        if result.ok:
            click.echo(f"ok: the replayed decision ({result.replayed}) and every rule status match the record")
        else:
            click.echo(f"replay differs: {len(result.differences)} difference(s)")
    return EXIT_ALLOW if result.ok else EXIT_DENY
