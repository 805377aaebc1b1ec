"""`policyengine evidence`: list, show, get, verify and replay bundles (local folder or S3)."""

from __future__ import annotations

import json
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

    from policyengine.evidence.stores import open_store

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
    from policyengine.evidence.signing import load_public_key

    return load_public_key(public_key)


@click.group(context_settings=CONTEXT)
def evidence() -> None:
    """List, show, fetch, verify and replay evidence bundles (a folder or an S3 bucket)."""


_LIST_COLS = ("id", "created_at", "environment", "repository", "commit", "decision", "signed")


@evidence.command("list", context_settings=CONTEXT)
@archive_option
@click.option("--since", metavar="DATE|TIME", help="Only bundles created at or after this (2026-11-01 or ISO time).")
@click.option("--until", metavar="DATE|TIME", help="Only bundles created before this (a date includes the day).")
@click.option("--environment", metavar="NAME", help="Only this environment.")
@click.option("--repository", metavar="OWNER/NAME", help="Only this repository.")
@click.option("--decision", type=click.Choice(["allow", "deny"]), help="Only this decision.")
@click.option("--json", "fmt", flag_value="json", help="Print JSON.")
@click.option("--csv", "fmt", flag_value="csv", help="Print CSV.")
def evidence_list(archive: str, since: str | None, until: str | None, environment: str | None,
                  repository: str | None, decision: str | None, fmt: str | None) -> int:
    """List bundles, oldest first, as a table (default), JSON or CSV.

    Served from the archive's SQLite index (index.sqlite), rebuilt from index.jsonl when missing
    or stale.

    \b
    Examples:
      policyengine evidence list --archive evidence --since 2026-10-01 --until 2026-12-31
      policyengine evidence list --archive s3://acme-evidence/prod --environment production --csv
    """
    from policyengine.cli.common import err
    from policyengine.evidence.index import COLUMNS, Query

    store = open_archive(archive)
    q = Query(since=parse_bound(since, "--since", end=False), until=parse_bound(until, "--until", end=True),
              environment=environment, repository=repository, decision=decision)
    rows, bad = store.query(q)
    for note in getattr(store, "notes", []):
        err(f"warning: {note}")
    if bad:
        err(f"warning: {bad} index record(s) cannot be read and are not listed; "
            "run `policyengine evidence verify --all`")
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return EXIT_ALLOW
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(COLUMNS)
        w.writerows([["" if r[c] is None else r[c] for c in COLUMNS] for r in rows])
        click.echo(buf.getvalue(), nl=False)
        return EXIT_ALLOW
    if not rows:
        click.echo(f"no bundles in {archive}" + (" match" if any(vars(q).values()) else ""))
        return EXIT_ALLOW
    cells = [[r["id"], r["created_at"], r["environment"] or "", r["repository"] or "", (r["commit"] or "")[:12],
              r["decision"], "yes" if r["signed_by"] else "no"] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(_LIST_COLS)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(_LIST_COLS, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    click.echo("\n".join(lines))
    return EXIT_ALLOW


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
    from policyengine.evidence.audit import read_bundle

    store = open_archive(archive)
    key = load_key(public_key)
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
        out += [f"  {rv.get('user')} at {rv.get('submitted_at')} on {str(rv.get('commit'))[:12]}" for rv in approvals]
    statement = _statement(b.envelope)
    for subject in statement.get("subject", []) if isinstance(statement.get("subject"), list) else []:
        digest = ", ".join(f"{k}:{v}" for k, v in (subject.get("digest") or {}).items())
        out.append(f"subject     {subject.get('name')} ({digest})")
    out.append(f"chain       {chain.get('repository')} / {chain.get('environment')} #{chain.get('sequence')}, previous "
               f"{chain.get('previous_id') or '(none: first bundle)'}")
    redacted = [e["path"] for e in m.get("members", []) if e.get("redacted")]
    out.append(f"members     {len(m.get('members', []))} listed"
               + (f"; redacted: {', '.join(redacted)}" if redacted else ""))
    report = store.verify([bundle_id], key)
    sig = report.signatures.get(bundle_id, "?")
    out.append(f"signature   {_SIGNATURE_WORDS.get(sig, sig)}")
    if not report.ok:
        out.append(f"integrity   FAILED: {len(report.problems)} problem(s)")
        out += [f"  {p.check}: {p.message}" for p in report.problems]
    elif key is not None and sig == "valid":
        out.append("integrity   ok: digests, statement, signature and chain link verified")
    elif sig == "unchecked":
        out.append("integrity   NOT PROVEN: digests and chain link consistent, but the signature was not "
                   "checked (give --public-key)")
    else:
        out.append("integrity   NOT PROVEN: digests and chain link consistent, but the bundle is unsigned: "
                   "anyone able to write the archive could have made it")
    out += [f"warning: {w.message}" for w in report.warnings]
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


@evidence.command("verify", context_settings=CONTEXT)
@archive_option
@click.option("--all", "all_", is_flag=True, help="Verify every bundle (the default when no ID is given).")
@click.option("--public-key", metavar="FILE",
              help="Require every bundle to be signed by this Ed25519 public key (PEM) and check it.")
@click.option("--head", "heads", multiple=True, metavar="SHA256",
              help="A chain head recorded elsewhere (printed by `check` after each write): the archive must "
              "still hold that bundle, intact, in its chain. Repeatable, one per chain.")
@click.argument("ids", nargs=-1, metavar="[ID...]")
def evidence_verify(archive: str, all_: bool, public_key: str | None, heads: tuple[str, ...],
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
    """
    if all_ and ids:
        raise UsageError("give bundle IDs or --all, not both")
    import re

    from policyengine.evidence.export_verify import is_export, verify_export

    heads = tuple(h.strip().lower().removeprefix("sha256:") for h in heads)
    for head in heads:
        if not re.fullmatch(r"[0-9a-f]{64}", head):
            raise UsageError(f"--head: {head!r} is not a SHA-256 hex digest",
                             hint="give the digest `policyengine check` printed as the chain head")
    if not archive.startswith(("git:", "git+")) and is_export(archive):
        if ids:
            raise UsageError("an export is verified as a whole: give no bundle IDs")
        if heads:
            raise UsageError("--head checks an archive, not an export")
        result = verify_export(archive, load_key(public_key))
        click.echo("\n".join(result.lines()))
        return EXIT_ALLOW if result.ok else EXIT_DENY
    return verify_archive(open_archive(archive), () if all_ else ids, load_key(public_key), heads)


def verify_archive(store: Any, ids: tuple[str, ...], key: Any, heads: tuple[str, ...] = ()) -> int:
    """Verify an opened store (every bundle when ``ids`` is empty), print the outcome, return the exit code.

    0 when every check holds, 1 with one ``FAIL`` line per problem; a store that is not an
    archive, or records nothing, raises ``NothingToVerifyError`` (exit 2). ``warning:`` lines
    never change the exit code.
    """
    report = store.verify(ids, key, heads=heads) if heads else store.verify(ids, key)
    for p in report.problems:
        where = f"bundle {p.bundle_id or '?'}" + (f" member {p.member}" if p.member else "")
        click.echo(f"FAIL  {p.check:13} {where}: {p.message}")
    for w in report.warnings:
        click.echo(f"warning: bundle {w.bundle_id}: {w.message}")
    counts: dict[str, int] = {}
    for bundle_id, state in report.signatures.items():
        counts[state] = counts.get(state, 0) + 1
        if state in ("unsigned", "absent") and key is None:
            why = "it carries no signature" if state == "unsigned" else \
                "it claims schema 1 and carries no statement nor signature"
            click.echo(f"UNSIGNED  bundle {bundle_id}: digests and chain checked; {why}: who wrote it is not proven")
        elif state == "unchecked":
            click.echo(f"NOTE  bundle {bundle_id} is signed; its signature was not checked (give --public-key)")
    n = len(report.checked)
    sig_summary = ", ".join(f"{v} {_SIGNATURE_WORDS.get(k, k)}" for k, v in sorted(counts.items()))
    if report.ok:
        click.echo(f"ok: {n} bundle{'s' if n != 1 else ''} verified: digests, statements, chains"
                   + (f"; signatures: {sig_summary}" if sig_summary else "")
                   + (f"; {len(heads)} anchored head{'s' if len(heads) != 1 else ''} found" if heads else ""))
        return EXIT_ALLOW
    click.echo(f"verification failed: {len(report.problems)} problem(s) in {n} bundle(s) checked")
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
