"""Render the HTML pages an auditor reads: a bundle's ``report.html`` and an audit export's ``index.html``.

Both pages are self-contained: inline CSS only, no scripts, no images, fonts or other assets
fetched from anywhere, and a Content-Security-Policy that forbids them even if one slipped in.
Every value taken from a decision, a change or an archive row is untrusted text (a PR title, a
rule message, a user name are all attacker-controllable), so every one goes through
``html.escape`` and none becomes a link target. The output depends only on the arguments
(no clock, no environment), so the same bundle always renders the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

__all__ = ["render_export_index", "render_record_report", "render_report", "render_summary"]

CSP = "default-src 'none'; style-src 'unsafe-inline'"

# Light colours only, so the page prints on any printer without ink-heavy dark areas.
_CSS = """
*{box-sizing:border-box}
body{font-family:-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Liberation Sans",sans-serif;
 color:#1b1f24;background:#fff;margin:0;padding:24px 32px;font-size:14px;line-height:1.45}
main{max-width:1100px;margin:0 auto}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 8px;padding-bottom:4px;border-bottom:1px solid #d0d7de}
h3{font-size:15px;margin:16px 0 6px}
p{margin:6px 0}
.sub{color:#57606a;margin:0 0 16px}
code,.mono{font-family:"DejaVu Sans Mono",Menlo,Consolas,"Liberation Mono",monospace;font-size:12.5px;
 overflow-wrap:break-word}
.hash{overflow-wrap:anywhere}
.nw{white-space:nowrap}
table{border-collapse:collapse;width:100%;margin:6px 0 10px}
th,td{border:1px solid #d0d7de;padding:5px 8px;text-align:left;vertical-align:top}
thead th{background:#f3f4f6}
th[scope=row]{background:#f6f8fa;width:190px;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{border:3px solid;border-radius:8px;padding:14px 20px;margin:12px 0 8px;display:flex;
 align-items:baseline;gap:20px;flex-wrap:wrap}
.verdict .word{font-size:44px;font-weight:800;letter-spacing:2px}
.verdict .why{font-size:15px}
.verdict.allow{border-color:#1a7f37;background:#eefbf1;color:#116329}
.verdict.deny{border-color:#cf222e;background:#fff0f0;color:#a40e26}
.verdict.other{border-color:#9a6700;background:#fff8e5;color:#7d4e00}
.badge{display:inline-block;border:1px solid;border-radius:4px;padding:0 6px;font-weight:700;
 font-size:12px;text-transform:uppercase;white-space:nowrap}
.s-pass,.s-allow,.s-counted{color:#116329;border-color:#1a7f37;background:#eefbf1}
.s-fail,.s-deny,.s-error,.s-not-counted{color:#a40e26;border-color:#cf222e;background:#fff0f0}
.s-warn{color:#7d4e00;border-color:#bf8700;background:#fff8e5}
.s-skipped,.s-unknown,.s-other{color:#57606a;border-color:#8c959f;background:#f6f8fa}
.note{color:#57606a;font-size:13px}
pre.plan{white-space:pre-wrap;border:1px solid #d0d7de;background:#f6f8fa;padding:8px 12px;margin:6px 0}
.warnbox{border:1px solid #bf8700;background:#fff8e5;padding:8px 12px;border-radius:6px;margin:8px 0}
footer{margin-top:32px;color:#57606a;font-size:12px;border-top:1px solid #d0d7de;padding-top:8px}
@media print{
 body{padding:0;font-size:10pt}
 code,.mono{font-size:8.5pt}
 .verdict .word{font-size:32pt}
 main{max-width:none}
 .verdict,.badge,thead th,th[scope=row]{-webkit-print-color-adjust:exact;print-color-adjust:exact}
 tr,.verdict{break-inside:avoid;page-break-inside:avoid}
 thead{display:table-header-group}
 h2,h3{break-after:avoid;page-break-after:avoid}
 a{color:inherit;text-decoration:none}
}
@page{margin:14mm}
"""


def _e(value: Any) -> str:
    """Escape any value for HTML text or a quoted attribute; ``None`` becomes an empty string."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return _escape(str(value))


def _escape(text: str) -> str:
    """Do what ``html.escape(text, quote=True)`` does, without importing ``html`` and its entity tables."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace('"', "&quot;").replace("'", "&#x27;")


def _or_dash(value: Any) -> str:
    text = _e(value)
    return text if text else "&mdash;"


def _mono(value: Any) -> str:
    text = _e(value)
    return f'<span class="mono">{text}</span>' if text else "&mdash;"


def _css_token(value: Any) -> str:
    """Reduce a status word to a fixed class name: untrusted text never becomes markup or CSS."""
    word = str(value).lower().replace(" ", "-") if value is not None else ""
    known = {"pass", "fail", "error", "warn", "skipped", "waived", "allow", "deny", "counted", "not-counted"}
    return word if word in known else "other"


def _hash(value: Any) -> str:
    """Render a digest or commit id: monospace, allowed to wrap anywhere so tables stay narrow."""
    text = _e(value)
    return f'<span class="mono hash">{text}</span>' if text else "&mdash;"


def _time(value: Any) -> str:
    """Render a timestamp on one line."""
    text = _e(value)
    return f'<span class="mono nw">{text}</span>' if text else "&mdash;"


def _badge(word: Any) -> str:
    return f'<span class="badge s-{_css_token(word)}">{_or_dash(word)}</span>'


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _seq(value: Any) -> Sequence[Any]:
    if isinstance(value, (list, tuple)):
        return value
    return ()


def _kv_table(rows: Iterable[tuple[str, str]]) -> str:
    """Render label/value rows; labels are our own text, values must already be escaped."""
    body = "".join(f'<tr><th scope="row">{label}</th><td>{value}</td></tr>' for label, value in rows)
    return f"<table>{body}</table>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], num_cols: Sequence[int] = ()) -> str:
    """Render a table; headers are our own text, cells must already be escaped."""
    head = "".join(f'<th{" class=num" if i in num_cols else ""} scope="col">{h}</th>' for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f'<td{" class=num" if i in num_cols else ""}>{c}</td>' for i, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_WAIVED_CSS = ".s-waived{color:#0a3069;border-color:#0969da;background:#ddf4ff}\n"
"""Added only to pages that show a waived badge, so pages without one stay byte for byte as they were."""


def _page(title: str, body: str) -> str:
    css = _CSS + (_WAIVED_CSS if 'class="badge s-waived"' in body else "")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n<style>{css}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def _rules_of_type(decision: Mapping[str, Any], rule_type: str) -> list[Mapping[str, Any]]:
    return [_mapping(r) for r in _seq(decision.get("rules")) if _mapping(r).get("type") == rule_type]


# ---------------------------------------------------------------------------------------------
# report.html


def _verdict_section(decision: Mapping[str, Any]) -> str:
    verdict = decision.get("decision")
    word = str(verdict).upper() if verdict in ("allow", "deny") else "UNKNOWN"
    css = verdict if verdict in ("allow", "deny") else "other"
    rules = [_mapping(r) for r in _seq(decision.get("rules"))]
    blocking = [r for r in rules if r.get("enforcement") == "deny" and r.get("status") in ("fail", "error")]
    if verdict == "allow":
        why = "Every enforced rule passed or did not apply; the deploy was allowed."
    elif verdict == "deny":
        names = ", ".join(_e(r.get("id")) for r in blocking) or "see the rules below"
        why = f"The deploy was denied by: {names}."
    else:
        why = "The decision file does not record allow or deny."
    emergency = _mapping(decision.get("emergency"))
    if verdict == "allow" and emergency.get("approval_required") is True:
        word = "EMERGENCY ALLOW"
        why = (f"An emergency change declared by {_e(emergency.get('declarer'))} "
               f"({'verified: the CI actor' if emergency.get('declarer_verified') is True else 'NOT verified by a code host'}"
               f"); incident {_e(emergency.get('incident') or 'none')}: {_e(emergency.get('reason') or 'no reason given')}. "
               f"Waived: {_e(', '.join(str(w) for w in _seq(emergency.get('waived'))) or 'nothing')}. "
               f"Post-facto approval due by {_e(emergency.get('due_at'))}.")
    parts = [
        (f'<section class="verdict {css}" aria-label="verdict"><span class="word">{word}</span>'
        f'<span class="why">{why}</span></section>')
    ]
    if emergency and word != "EMERGENCY ALLOW":
        state = ("refused: " + "; ".join(str(p) for p in _seq(emergency.get("problems")))
                 if emergency.get("accepted") is not True else "declared, but rules it may not waive still denied")
        parts.append(f'<p class="warnbox">Emergency {_e(state)}</p>')
    if decision.get("advisory") is True:
        by = _mapping(decision.get("advisory_by"))
        who = (f" Set by {_e(by.get('actor') or 'unknown')} ({_e(by.get('actor_source') or 'unknown')}) through "
               f"{_e(by.get('source') or 'unknown')}." if by else "")
        parts.append(
            f'<p class="warnbox">Advisory run: a deny was recorded but did not stop the pipeline.{who}</p>'
        )
    if decision.get("applies") is False:
        parts.append('<p class="warnbox">The policy does not apply to this environment; no rule was enforced.</p>')
    if decision.get("note"):
        parts.append(f'<p class="note">Note: {_e(decision.get("note"))}</p>')
    summary = _mapping(decision.get("summary"))
    if summary:
        kinds = ("pass", "fail", "error", "warn", "skipped") + (("waived",) if summary.get("waived") else ())
        counts = ", ".join(f"{_e(summary.get(k, 0))} {k}" for k in kinds)
        parts.append(f'<p class="note">Rules: {counts}.</p>')
    return "".join(parts)


def _change_section(decision: Mapping[str, Any]) -> str:
    change = _mapping(decision.get("change"))
    pr = _mapping(change.get("pull_request"))
    pipeline = _mapping(change.get("pipeline"))
    rows: list[tuple[str, str]] = [
        ("Repository", _or_dash(change.get("repository"))),
        ("Environment", _or_dash(change.get("environment"))),
        ("Deployed commit", _hash(change.get("commit"))),
    ]
    if change.get("ref"):
        rows.append(("Ref", _mono(change.get("ref"))))
    rows.append(("Deployer", _or_dash(change.get("deployer"))))
    if pr:
        rows += [
            ("Pull request", f"#{_e(pr.get('number'))} {_e(pr.get('title'))}"),
            ("PR author", _or_dash(pr.get("author"))),
            ("PR head commit", _hash(pr.get("head_commit"))),
        ]
        if pr.get("url"):  # text, never a link: the URL came from the code host or a change file
            rows.append(("Request URL", _mono(pr.get("url"))))
        if _seq(pr.get("labels")):
            rows.append(("Labels", ", ".join(_badge_text(label) for label in _seq(pr.get("labels")))))
        if pr.get("head_commit") and change.get("commit") and pr.get("head_commit") != change.get("commit"):
            rows.append(("", "<strong>The PR head commit is not the deployed commit.</strong>"))
    else:
        rows.append(("Pull request", "none recorded"))
    if pipeline:
        # Shown as text, never as a link: the URL came from the CI environment.
        where = " ".join(_e(pipeline.get(k)) for k in ("provider", "id") if pipeline.get(k))
        url = _e(pipeline.get("url"))
        rows.append(("Pipeline", where + (f' <span class="mono">{url}</span>' if url else "")))
    rows.append(("Evaluated at", _time(decision.get("evaluated_at"))))
    rng = _mapping(change.get("range"))
    if rng:
        previous = _mapping(rng.get("previous_deployment"))
        shipped = (f"{len(_seq(rng.get('commits')))} commit(s), {len(_seq(rng.get('pull_requests')))} request(s)"
                   + (f", {_e(rng.get('status'))}" if rng.get("status") else ""))
        rows.append(("Change range", (f"{_hash(rng.get('previous_commit'))} &rarr; {_hash(change.get('commit'))}"
                                      if rng.get("previous_commit") else "no previous deploy known: the range "
                                      "cannot be listed") + f"<br>{shipped}"))
        if previous:
            rows.append(("Previous deploy", f"{_time(previous.get('created_at'))} "
                                            f"({_e(previous.get('source'))}) {_mono(previous.get('id'))}"))
    commits = _seq(change.get("commits"))
    files = _seq(change.get("files_changed"))
    out = "<h2>The change</h2>" + _kv_table(rows)
    if commits:
        out += "<h3>Commits</h3>" + _table(
            ["Commit", "Author", "Committer"],
            [[_hash(_mapping(c).get("sha")), _or_dash(_mapping(c).get("author")),
              _or_dash(_mapping(c).get("committer"))] for c in commits],
        )
    if files:
        shown = ", ".join(f'<span class="mono">{_e(f)}</span>' for f in files[:200])
        more = f" &hellip; and {len(files) - 200} more" if len(files) > 200 else ""
        out += f"<h3>Files changed ({len(files)})</h3><p>{shown}{more}</p>"
    return out


def _badge_text(value: Any) -> str:
    return f'<span class="badge s-other">{_e(value)}</span>'


def _facts_note(change: Mapping[str, Any]) -> str:
    """Say plainly when the facts come from a change file rather than from a code host's API."""
    if change.get("facts_source") != "self-declared":
        return ""
    return ('<p class="warnbox"><strong>Self-declared facts.</strong> This change was read from a change file '
            "(<code>facts_source: self-declared</code>), not from a CI provider's API: who approved, who "
            "committed and which checks ran are what the file's author wrote, vouched for by nobody else.</p>")


def _gap_text(evaluated_at: Any, created_at: Any) -> str:
    """How long after the evaluated time the bundle was written (a large gap: judged at another time)."""
    from datetime import datetime

    try:
        evaluated = datetime.fromisoformat(str(evaluated_at).replace("Z", "+00:00"))
        created = datetime.fromisoformat(str(created_at).replace("Z", "+00:00"))
        seconds = round((created - evaluated).total_seconds())
    except (ValueError, TypeError):
        return ""
    # Beyond the 15-minute bound only the direction is shown: the evaluated time was given (--now or
    # --simulate), and the page stays the same whenever the same decision is recorded.
    if seconds < 0:
        return " <strong>(before the evaluated time: judged at another time than it ran)</strong>"
    if seconds > 15 * 60:
        return " <strong>(more than 15 minutes after the evaluated time: judged at another time than it ran)</strong>"
    return f' <span class="note">({seconds} s after the evaluated time)</span>'


PLAN_CHARS = 20000
"""The page shows at most this many characters of the rollback plan (the bundle holds all of it)."""


def _rollback_section(decision: Mapping[str, Any], texts: Mapping[str, bytes] | None) -> str:
    rules = _rules_of_type(decision, "rollback_plan")
    if not rules:
        return ""
    out = "<h2>Rollback plan</h2>"
    for rule in rules:
        path = _mapping(rule.get("details")).get("path")
        raw = (texts or {}).get(str(path)) if path else None
        out += f'<p><span class="mono">{_e(path)}</span> {_badge(rule.get("status"))}</p>'
        if raw is None:
            out += '<p class="note">The plan\'s text is not shown here (absent, not read, or too large): see the ' \
                   "bundle's files/ member.</p>"
            continue
        text = raw.decode("utf-8", errors="replace")
        more = f"\n\u2026 ({len(text) - PLAN_CHARS} more characters in the bundle)" if len(text) > PLAN_CHARS else ""
        out += f'<pre class="mono plan">{_e(text[:PLAN_CHARS] + more)}</pre>'
    return out


def _rules_section(decision: Mapping[str, Any]) -> str:
    rows = []
    for raw in _seq(decision.get("rules")):
        rule = _mapping(raw)
        controls = ", ".join(_e(c) for c in _seq(rule.get("controls"))) or "&mdash;"
        desc = rule.get("description")
        what = f'<span class="mono">{_e(rule.get("id"))}</span><br><span class="note">{_e(rule.get("type"))}</span>'
        message = _e(rule.get("message"))
        if desc:
            message += f'<br><span class="note">{_e(desc)}</span>'
        waiver = _mapping(_mapping(rule.get("details")).get("waiver")) if rule.get("status") == "waived" else {}
        if waiver:
            message += (f'<br><strong>Waiver:</strong> {_e(waiver.get("reason"))} (approved by '
                        f'{_e(waiver.get("approved_by"))} on {_e(waiver.get("approved_at"))}, expires '
                        f'{_e(waiver.get("expires"))}; was {_e(waiver.get("original_status"))})')
        rows.append([what, _badge(rule.get("status")), _e(rule.get("enforcement")), message, controls])
    if not rows:
        return "<h2>Rules</h2><p>No rule was evaluated.</p>"
    return "<h2>Rules</h2>" + _table(["Rule", "Status", "Enforcement", "Result", "SOC 2 controls"], rows)


def _approvals_section(decision: Mapping[str, Any]) -> str:
    change = _mapping(decision.get("change"))
    reviews = [_mapping(r) for r in _seq(change.get("reviews"))]
    deployed = change.get("commit")
    # Only approvals rules that actually judged the reviews say who counted.
    judging = [r for r in _rules_of_type(decision, "approvals") if r.get("status") != "skipped"]
    out = "<h2>Approvals</h2>"
    if not reviews:
        out += "<p>No reviews were recorded for this change.</p>"
    else:
        headers = ["Reviewer", "State", "Submitted at", "Reviewed commit"]
        headers += [f'Counted by <span class="mono">{_e(r.get("id"))}</span>' for r in judging]
        rows = []
        for review in reviews:
            user = review.get("user")
            commit = review.get("commit")
            commit_cell = _hash(commit)
            if commit and deployed:
                commit_cell += (" <span class=\"note\">(deployed commit)</span>" if commit == deployed
                                else " <span class=\"note\">(not the deployed commit)</span>")
            row = [_or_dash(user), _e(review.get("state")), _time(review.get("submitted_at")), commit_cell]
            for rule in judging:
                details = _mapping(rule.get("details"))
                counted = [str(u) for u in _seq(details.get("counted"))]
                reasons = [_mapping(n) for n in _seq(details.get("not_counted"))]
                reason = next((n.get("reason") for n in reasons if n.get("user") == user), None)
                if user is not None and str(user) in counted:
                    row.append(_badge("counted"))
                elif reason is not None:
                    row.append(f'{_badge("not counted")} {_e(reason)}')
                else:
                    row.append('<span class="note">not considered</span>')
            rows.append(row)
        out += _table(headers, rows)
    for rule in judging:
        details = _mapping(rule.get("details"))
        counted = [str(u) for u in _seq(details.get("counted"))]
        required = details.get("required")
        if required is not None:
            out += (f'<p><span class="mono">{_e(rule.get("id"))}</span>: {len(counted)} of {_e(required)} '
                    f"required approvals counted ({_e(', '.join(counted)) or 'nobody'}).</p>")
    return out


_TOTAL_KEYS = ("tests", "passed", "failures", "errors", "skipped", "flaky")


def _tests_section(decision: Mapping[str, Any]) -> str:
    rules = _rules_of_type(decision, "tests_passed")
    out = "<h2>Test results</h2>"
    if not rules:
        return out + "<p>The policy has no test-results rule.</p>"
    headers = ["Rule", "Status", "Tests", "Passed", "Failures", "Errors", "Skipped", "Flaky"]
    rows = []
    for rule in rules:
        totals = _mapping(_mapping(rule.get("details")).get("totals"))
        cells = [_e(totals.get(k)) if k in totals else "&mdash;" for k in _TOTAL_KEYS]
        rows.append([f'<span class="mono">{_e(rule.get("id"))}</span>', _badge(rule.get("status")), *cells])
    out += _table(headers, rows, num_cols=range(2, 8))
    file_rows = []
    for rule in rules:
        for raw in _seq(_mapping(rule.get("details")).get("files")):
            f = _mapping(raw)
            # The digest goes under the path: a column of its own gets squeezed to a few characters in print.
            file_rows.append([
                f'<span class="mono">{_e(rule.get("id"))}</span>',
                f'{_mono(f.get("path"))}<br><span class="note">SHA-256</span> {_hash(f.get("sha256"))}',
                *[_e(f.get(k)) for k in ("tests", "passed", "failures", "errors", "skipped")],
            ])
    if file_rows:
        out += "<h3>Report files</h3>" + _table(
            ["Rule", "File and its SHA-256", "Tests", "Passed", "Failures", "Errors", "Skipped"], file_rows,
            num_cols=range(2, 7),
        )
    return out


def _window_section(decision: Mapping[str, Any]) -> str:
    rules = _rules_of_type(decision, "deploy_window")
    out = "<h2>Deploy time and windows</h2>"
    if not rules:
        return out + "<p>The policy has no deploy-window rule.</p>"
    for rule in rules:
        d = _mapping(rule.get("details"))
        matched = ", ".join(_e(m) for m in _seq(d.get("matched"))) or "none"
        rows = [
            ("Rule", f'<span class="mono">{_e(rule.get("id"))}</span> {_badge(rule.get("status"))}'),
            ("Deploy time (UTC)", _time(decision.get("evaluated_at"))),
            ("Local time", f'{_time(d.get("local_time"))} ({_or_dash(d.get("timezone"))})'),
            ("Inside allowed window", _or_dash(d.get("allowed_by")) if d.get("allowed_by") else "no"),
            ("Freezes / holidays matched", matched),
            ("Holiday", _or_dash(d.get("holiday")) if d.get("holiday") else "none"),
            ("Next allowed time", _time(d.get("next_allowed")) if d.get("next_allowed") else "&mdash;"),
            ("Result", _e(rule.get("message"))),
        ]
        out += _kv_table(rows)
    return out


def _evidence_section(
    decision: Mapping[str, Any],
    members: Sequence[Mapping[str, Any]],
    bundle_id: str,
    created_at: str,
    previous_sha256: str | None,
    signed: bool,
) -> str:
    policy = _mapping(decision.get("policy"))
    tool = _mapping(decision.get("tool"))
    signature = (
        '<span class="badge s-pass">signed</span> the bundle carries a signed in-toto statement; '
        "check it with <code>policyengine evidence verify --public-key KEY</code>"
        if signed
        else '<span class="badge s-warn">unsigned</span> this bundle carries no signature; '
        "only its digests and its place in the chain can be checked"
    )
    rows = [
        ("Bundle id", _mono(bundle_id)),
        ("Bundle created at", _time(created_at) + _gap_text(decision.get("evaluated_at"), created_at)),
        ("Previous bundle SHA-256", _hash(previous_sha256) if previous_sha256
         else "none (first bundle of this repository and environment)"),
        ("Signature", signature),
        ("Policy", f'{_or_dash(policy.get("name"))} <span class="mono">{_e(policy.get("path"))}</span>'),
        ("Policy SHA-256", _hash(policy.get("sha256"))),
    ]
    if tool:
        rows.append(("Evaluated by", f'{_e(tool.get("name"))} {_e(tool.get("version"))}'))
    out = "<h2>Evidence and digests</h2>" + _kv_table(rows)
    member_rows = [
        [_mono(_mapping(m).get("path")), _e(_mapping(m).get("size")), _hash(_mapping(m).get("sha256"))]
        for m in members
    ]
    out += f"<h3>Bundle members ({len(member_rows)})</h3>"
    out += _table(["Member", "Size (bytes)", "SHA-256"], member_rows, num_cols=(1,))
    out += ('<p class="note">This page (report.html) is a rendering of decision.json. It is listed in '
            "manifest.json like every member, but a page cannot show its own digest, so it is not in the "
            "table above; the manifest and signature cover every member.</p>")
    return out


def render_report(
    decision: dict[str, Any],
    members: list[dict[str, Any]],
    bundle_id: str,
    created_at: str,
    previous_sha256: str | None,
    signed: bool,
    texts: Mapping[str, bytes] | None = None,
) -> str:
    """Render a bundle's ``report.html`` from its decision, member list and chain facts.

    ``texts`` holds small text files the rules read, as stored (redacted), by workspace path:
    the rollback plan's text is shown from it. Deterministic and pure; every value is escaped.
    The page is a member of the bundle, which is never edited: it cannot show outcomes and
    reviews recorded later, and says where they are.
    """
    change = _mapping(decision.get("change"))
    verdict = str(decision.get("decision", "unknown")).upper()
    title = f"{_e(verdict)}: {_e(change.get('repository'))} to {_e(change.get('environment'))} - policyengine evidence"
    body = (
        "<header><h1>Deploy change-control evidence</h1>"
        f'<p class="sub">{_e(change.get("repository"))} &rarr; {_e(change.get("environment"))} &middot; '
        f'commit <span class="mono">{_e(change.get("commit"))}</span> &middot; bundle '
        f'<span class="mono">{_e(bundle_id)}</span></p></header>'
        + _verdict_section(decision)
        + _facts_note(change)
        + '<p class="note">Outcome and review: this page is part of the evidence bundle, which is never edited, so '
        "it cannot show what was recorded later (the deploy's outcome, the post-implementation review). See them "
        "with <code>policyengine evidence show " + _e(bundle_id) + "</code>, or in the audit export's "
        "index.html.</p>"
        + _change_section(decision)
        + _rules_section(decision)
        + _approvals_section(decision)
        + _tests_section(decision)
        + _window_section(decision)
        + _rollback_section(decision, texts)
        + _evidence_section(decision, members, bundle_id, created_at, previous_sha256, signed)
        + "<footer>Generated by policyengine from the bundle's decision.json. SOC 2 CC8.1 change management "
        "evidence. Verify offline with <code>policyengine evidence verify</code>; re-evaluate with "
        "<code>policyengine evidence replay</code>.</footer>"
    )
    return _page(title, body)


def render_record_report(document: Mapping[str, Any], members: Sequence[Mapping[str, Any]], bundle_id: str,
                         created_at: str, previous_sha256: str | None, signed: bool) -> str:
    """Render a linked record's own small ``report.html`` (an outcome or a review).

    The evaluation's page is inside its bundle, which is never edited; so each record carries
    this page, naming the evaluation it is about by id and SHA-256. Pure; every value escaped.
    """
    kind = str(document.get("kind") or "record")
    value = document.get("status", document.get("result", document.get("notification", document.get("approval"))))
    about = _mapping(document.get("about"))
    from policyengine.providers.oidc import LEGACY, recorder_label

    verified = (" (verified: written by the gate in the run that recorded the evaluation)"
                if document.get("by_source") == "gate" else f" ({LEGACY}: recorded before CI ID tokens were "
                "checked)" if recorder_label(document) == LEGACY else " (verified (CI actor): CI ID token)")
    who = _e(document.get("by")) + (verified if document.get("by_verified") is True
                                     else " (SELF-ASSERTED: no verified CI ID token)")
    rows = [
        ("Kind", _e(kind)),
        ("Status" if kind == "outcome" else "Approval" if kind == "emergency-approval" else "Result", _badge(value)),
        ("About evaluation", f'<span class="mono">{_e(about.get("bundle_id"))}</span>'),
        ("Evaluation SHA-256", _hash(about.get("sha256"))),
        ("Change", f'{_e(document.get("repository"))} &rarr; {_e(document.get("environment"))} &middot; commit '
                   f'<span class="mono">{_e(document.get("commit"))}</span>'),
        ("Recorded by", who),
        ("Recorded at", _time(document.get("recorded_at"))),
        ("Claimed time", _time(document.get("claimed_at")) if document.get("claimed_at") else "&mdash;"),
        ("Note", _or_dash(document.get("note"))),
        *[(label, _e(document.get(key))) for label, key in (("Notification target", "target"), ("Format", "format"),
                                                             ("Required", "required"), ("Cause", "cause"))
          if key in document],
    ]
    files = _table(["Member", "Bytes", "SHA-256"],
                   [[_mono(m.get("path")), _e(m.get("size")), _hash(m.get("sha256"))] for m in members], (1,))
    title = f"{_e(kind.upper())}: {_e(value)} - {_e(document.get('repository'))} to {_e(document.get('environment'))}"
    body = (
        f"<header><h1>{_e(kind.capitalize())} of a deploy evaluation</h1>"
        f'<p class="sub">record <span class="mono">{_e(bundle_id)}</span> &middot; created {_time(created_at)} '
        f"&middot; {'signed' if signed else 'unsigned'}</p></header>"
        f"<section><h2>Record</h2>{_kv_table(rows)}</section>"
        f"<section><h2>Evidence</h2>{_kv_table([('Previous bundle in the chain', _hash(previous_sha256))])}"
        f"{files}</section>"
        "<footer>Generated by policyengine from the record's record.json. The evaluation's own page is in its "
        "bundle; <code>policyengine evidence show</code> shows both. Verify with "
        "<code>policyengine evidence verify</code>.</footer>"
    )
    return _page(title, body)


# ---------------------------------------------------------------------------------------------
# index.html of an audit export


def _href(bundle_id: Any, suffix: str) -> str:
    """Build a relative link into ``bundles/``; the id is percent-encoded so it stays one path segment."""
    return _e("bundles/" + quote(str(bundle_id), safe="-._~") + suffix)


def _verify_section(export_name: str | None, signed_by: str | None) -> str:
    """Tell the auditor the one command that verifies the export they hold, offline."""
    import shlex  # only here: the report of a check has no export section

    target = shlex.quote(export_name) if export_name else "EXPORT.zip"
    if signed_by:
        command = f"policyengine evidence verify --archive {target} --public-key signing.pub"
        who = (f"Its listing is signed by the key with id {_hash(signed_by)}; <code>signing.pub</code> stands for "
               "that public key (PEM), which the team gives you separately: never take it from this export.")
    else:
        command = f"policyengine evidence verify --archive {target}"
        who = ("<strong>Its listing is unsigned</strong>: the command proves that the files agree with each other, "
               "not who made them. With <code>--public-key</code> the check fails, because there is no signature "
               "to check; ask the team for an export made with <code>--signing-key</code>.")
    return (
        "<h2>Verify this export</h2>"
        f'<p>Run, in the folder that holds it (the zip, or the folder it was unzipped into):</p>'
        f"<p><code>{_e(command)}</code></p>"
        f"<p>{who} It checks, with no access to the archive: each included bundle's digest and members, "
        "its statement and (with the key) its signature; that <code>population.csv</code>, the sample and "
        "<code>export.json</code> name exactly the included bundles with the same digests and fields; that the "
        "recorded seed draws this sample; and that no file was added, removed or changed. Exit 0: verified; 1: each "
        "problem on one line naming the bundle or file.</p>"
    )


def _reconciliation_section(rec: Mapping[str, Any]) -> str:
    """Is the population complete? The reconciliation with the platform, in the export's page."""
    counts = _mapping(rec.get("counts"))
    body = "<h2>Reconciliation with the platform</h2>"
    body += _kv_table([
        ("Sources", _e(", ".join(str(x) for x in rec.get("sources") or []) or "none")),
        ("Platform deployments", _e(rec.get("platform_deployments"))),
        ("Matched plainly", _e(rec.get("matched"))),
        ("Exceptions", _e(rec.get("exceptions"))),
        *[(_e(k), _e(v)) for k, v in counts.items()],
    ])
    findings = [_mapping(f) for f in rec.get("findings") or []]
    if findings:
        body += _table(["Finding", "Kind", "Where", "Platform id", "Time", "Detail"], [
            [_e(f.get("finding")), _e(f.get("kind")),
             _e("/".join(str(x) for x in (f.get("repository"), f.get("environment")) if x) or "-"),
             _or_dash(f.get("platform_id") or f.get("bundle_id")), _or_dash(f.get("time")),
             _e(f.get("detail")) + (f'<br><span class="mono">{_e(f.get("url"))}</span>' if f.get("url") else "")]
            for f in findings])
    body += f'<p class="note">{_e(rec.get("limit"))}</p>'
    return body


def render_export_index(
    rows: list[dict[str, Any]],
    *,
    since: str,
    until: str,
    seed: int | None,
    sample_ids: list[str],
    export_name: str | None = None,
    signed_by: str | None = None,
    notes: Sequence[str] = (),
    reconciliation: Mapping[str, Any] | None = None,
) -> str:
    """Render an audit export's ``index.html``: the period, the population and links to the sample.

    ``export_name`` is the export's file name, for the command that verifies it; ``signed_by``
    the key id that signed its listing (None: unsigned), which decides what that command is.
    The population table shows population.csv's columns for a person: evaluated and created
    time, the request, author, approvers counted, deployer, flags, deployment, outcome, review.
    Outcomes and reviews recorded later are shown here (a bundle's own page cannot show them).
    """
    sampled = {str(s) for s in sample_ids}
    decisions = [str(_mapping(r).get("decision")) for r in rows]
    allowed = decisions.count("allow")
    denied = decisions.count("deny")
    other = len(decisions) - allowed - denied
    summary = [
        ("Period", f"{_mono(since)} to {_mono(until)}"),
        ("Population", f"{len(rows)} evaluations"),
        ("Allowed", str(allowed)),
        ("Denied", str(denied)),
    ]
    if other:
        summary.append(("Other", str(other)))
    deployments = sum(1 for r in rows if _mapping(r).get("deployment") == "yes")
    summary.append(("Deployments", f"{deployments} (allowed or advisory, not simulated, not recorded as "
                    "not deployed; re-runs of one pipeline counted once)"))
    summary += [
        ("Sample size", str(len(sample_ids))),
        ("Sample seed", _mono(seed) if seed is not None else "none (no sample drawn)"),
    ]
    body = (
        "<header><h1>Audit export: change-control evidence</h1>"
        '<p class="sub">The complete population of evaluations in the period, and the sampled bundles.</p>'
        "</header>" + _kv_table(summary)
    )
    for note in notes:
        body += f'<p class="warnbox">{_e(note)}</p>'

    by_id = {str(_mapping(r).get("id")): _mapping(r) for r in rows}
    if sample_ids:
        sample_rows = []
        for sid in sample_ids:
            r = by_id.get(str(sid), {})
            sample_rows.append([
                _mono(sid), _badge(r.get("decision")) if r else "&mdash;",
                (f'<a href="{_href(sid, "/report.html")}">report</a> &middot; '
                f'<a href="{_href(sid, ".zip")}">bundle zip</a>'),
            ])
        body += "<h2>Sample</h2>" + _table(["Bundle", "Decision", "Evidence"], sample_rows)
        body += ('<p class="note">The sample is <code>random.Random(seed).sample(sorted(population ids), size)</code>, '
                 "then sorted: the same seed draws the same sample from the same population.</p>")
    if reconciliation is not None:
        body += _reconciliation_section(reconciliation)
    body += _verify_section(export_name, signed_by)
    pop_rows = []
    for raw in rows:
        r = _mapping(raw)
        rid = r.get("id")
        is_sampled = str(rid) in sampled
        links = (
            f'<a href="{_href(rid, "/report.html")}">report</a> &middot; <a href="{_href(rid, ".zip")}">zip</a>'
            if is_sampled else ""
        )
        request = _e(r.get("request_title"))
        if r.get("request_url"):  # text, never a link: the URL came from the code host or a change file
            request += f'<br><span class="mono">{_e(r.get("request_url"))}</span>'
        status = r.get("emergency_status")
        flags = [f"emergency: {status}" if name == "emergency" and status else name
                 for name in ("advisory", "simulated", "emergency") if r.get(name) in (True, "yes")]
        if r.get("waived_rules"):
            flags.append(f"waived: {r.get('waived_rules')}")
        if r.get("facts_source") == "self-declared":
            flags.append("self-declared facts")
        if r.get("signed_by") in (None, ""):
            flags.append("unsigned")
        deployment = _e(r.get("deployment"))
        if r.get("deployment_note"):
            deployment += f' <span class="note">({_e(r.get("deployment_note"))})</span>'
        pop_rows.append([
            _mono(rid),
            f'{_time(r.get("evaluated_at"))}<br><span class="note">created</span> {_time(r.get("created_at"))}',
            _or_dash(r.get("environment")), _or_dash(r.get("repository")), _hash(r.get("commit")),
            request or "&mdash;", _or_dash(r.get("author")), _or_dash(r.get("approvers_counted")),
            _or_dash(r.get("deployer")), _badge(r.get("decision")), _or_dash(", ".join(flags)),
            deployment or "&mdash;", _or_dash(r.get("outcome")), _or_dash(r.get("review")),
            _or_dash(r.get("policy_name")),
            ("yes " + links) if is_sampled else "no",
        ])
    body += f"<h2>Population ({len(rows)})</h2>"
    body += _table(["Bundle", "Evaluated at", "Environment", "Repository", "Commit", "Request", "Author",
                    "Approvers counted", "Deployer", "Decision", "Flags", "Deployment", "Outcome", "Review",
                    "Policy", "Sampled"], pop_rows)
    body += ('<p class="note">Outcomes and reviews are records appended after the evaluation; each bundle\'s '
             "own report.html is never edited and cannot show them, so they are listed here (and by "
             "<code>policyengine evidence show ID</code>).</p>")
    body += "<footer>Generated by policyengine from the archive's records of the period.</footer>"
    return _page(f"Audit export {_e(since)} to {_e(until)} - policyengine", body)


# ---------------------------------------------------------------------------------------------
# audit summary


def duration(seconds: float | None) -> str:
    """A duration a person reads: ``3d 4h``, ``5h 12m``, ``42m``, ``12s``; ``-`` for none."""
    if seconds is None:
        return "-"
    total = round(seconds)
    d, rest = divmod(total, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    if d:
        return f"{d}d {h}h"
    if h:
        return f"{h}h {m}m"
    if m:
        return f"{m}m"
    return f"{s}s"


def _duration(seconds: Any) -> str:
    return _e(duration(seconds if isinstance(seconds, (int, float)) else None))


def _items_table(title: str, items: Sequence[Mapping[str, Any]], limit: int = 50) -> str:
    out = f"<h2>{title} ({len(items)})</h2>"
    if not items:
        return out + "<p>None.</p>"
    rows = [[_mono(i.get("id")), _time(i.get("created_at")), _or_dash(i.get("repository")),
             _or_dash(i.get("environment")), _hash(i.get("commit"))] for i in items[:limit]]
    out += _table(["Bundle", "Created at", "Repository", "Environment", "Commit"], rows)
    if len(items) > limit:
        out += f'<p class="note">&hellip; and {len(items) - limit} more (<code>--format json</code> lists every one).</p>'
    return out


def render_summary(s: Mapping[str, Any]) -> str:
    """Render ``audit summary`` as a self-contained page (the dict ``evidence.summary.summarize`` returns)."""
    p, dora, chain = _mapping(s.get("period")), _mapping(s.get("dora")), _mapping(s.get("chain"))
    freq, lead = _mapping(dora.get("deployment_frequency")), _mapping(dora.get("lead_time"))
    cfr, ttr = _mapping(dora.get("change_failure_rate")), _mapping(dora.get("time_to_restore"))
    deployments = _mapping(s.get("deployments"))
    denials = _mapping(s.get("denials"))
    overrides = _mapping(s.get("overrides"))
    status = "pass" if chain.get("status") == "ok" else "fail"
    head = [
        ("Period", f"{_mono(p.get('since'))} to {_mono(p.get('until'))}"),
        ("Scope", _e(", ".join(x for x in (p.get("environment") and f"environment {p.get('environment')}",
                                          p.get("repository") and f"repository {p.get('repository')}") if x))
         or "every repository and environment"),
        ("Evaluations", _e(s.get("evaluations"))),
        ("Deployments", _e(deployments.get("total"))),
        ("Denials", _e(denials.get("total"))),
        ("Chain", f'{_badge(status)} {_e(chain.get("status"))}: {_e(len(_seq(chain.get("problems"))))} problem(s), '
                  f'{_e(chain.get("left_out"))} evaluation(s) left out of the figures'),
    ]
    rate = cfr.get("rate")
    dora_rows = [
        ("Deployment frequency", f"{_e(freq.get('deployments'))} deployments in {_e(freq.get('days'))} days "
                                 f"({_e(freq.get('per_week'))} per week)"),
        ("Lead time for changes", f"median {_duration(lead.get('median_seconds'))}, mean "
                                  f"{_duration(lead.get('mean_seconds'))} ({_e(lead.get('measured'))} measured, "
                                  f"{_e(lead.get('not_measured'))} without commit times, "
                                  f"{_e(lead.get('inconsistent'))} inconsistent)"),
        ("Change failure rate", f"{_e(cfr.get('failed'))} of {_e(cfr.get('deployments'))}"
                                + (f" ({rate * 100:.1f}%)" if isinstance(rate, (int, float)) else "")),
        ("Time to restore", f"median {_duration(ttr.get('median_seconds'))}, mean {_duration(ttr.get('mean_seconds'))} "
                            f"({_e(ttr.get('restored'))} restored, {_e(ttr.get('not_restored'))} not restored)"),
    ]
    body = (
        f"<header><h1>Change-control summary</h1><p class=\"sub\">{_e(p.get('since'))} to {_e(p.get('until'))}</p>"
        "</header>" + _kv_table(head) + "<h2>DORA figures</h2>" + _kv_table(dora_rows)
        + "<h2>Deployments per repository and environment</h2>"
        + _table(["Repository", "Environment", "Deployments"],
                 [[_e(_mapping(d).get("repository")), _e(_mapping(d).get("environment")), _e(_mapping(d).get("count"))]
                  for d in _seq(deployments.get("by"))], num_cols=(2,))
        + "<h2>Denials by rule</h2>"
        + (_table(["Rule", "Denied evaluations"], [[_mono(_mapping(d).get("rule")), _e(_mapping(d).get("count"))]
                                                   for d in _seq(denials.get("by_rule"))], num_cols=(1,))
           if _seq(denials.get("by_rule")) else "<p>None.</p>")
        + _items_table("Advisory overrides (denied, not stopped)", _seq(overrides.get("advisory")))
        + _items_table("Simulated evaluations", _seq(overrides.get("simulated")))
        + _items_table("Unsigned bundles", _seq(s.get("unsigned")))
    )
    changes = [_mapping(c) for c in _seq(s.get("policy_changes"))]
    body += f"<h2>Policy changes ({len(changes)})</h2>"
    body += _table(["Repository", "Environment", "First bundle", "Created at", "Policy", "Resolved digest", "Verdict"],
                   [[_e(c.get("repository")), _e(c.get("environment")), _mono(c.get("bundle_id")),
                     _time(c.get("created_at")), _or_dash(c.get("policy")), _hash(c.get("resolved_sha256")),
                     _e(c.get("verdict"))] for c in changes]) if changes else "<p>None.</p>"
    body += _items_table("Deployments without an outcome", _seq(s.get("without_outcome")))
    body += _items_table("Deployments without a review", _seq(s.get("without_review")))
    emergencies = [_mapping(e) for e in _seq(s.get("emergencies"))]
    body += f"<h2>Emergencies ({len(emergencies)})</h2>"  # the one section of emergency deployments
    if emergencies:
        body += _table(
            ["Bundle", "Created at", "Repository", "Environment", "Declared by", "Reason", "Incident", "Waived rules",
             "Due", "Status", "Approved by record"],
            [[_mono(e.get("id")), _time(e.get("created_at")), _or_dash(e.get("repository")),
              _or_dash(e.get("environment")), _or_dash(e.get("declared_by")), _or_dash(e.get("reason")),
              _or_dash(e.get("incident")),
              _or_dash(" ".join(str(w) for w in _seq(e.get("waived_rules"))) or e.get("waived_rules")),
              _time(e.get("due")), _e(e.get("status")), _or_dash(e.get("approval_id"))] for e in emergencies])
    else:
        body += "<p>None.</p>"
    problems = [_mapping(x) for x in _seq(chain.get("problems"))]
    if problems:
        body += "<h2>Chain problems</h2>" + _table(
            ["Check", "Bundle", "Problem"],
            [[_mono(x.get("check")), _mono(x.get("bundle_id")), _e(x.get("message"))] for x in problems[:200]])
    if isinstance(s.get("reconciliation"), Mapping):
        body += _reconciliation_section(_mapping(s.get("reconciliation")))
    body += ("<footer>Generated by policyengine <code>audit summary</code> from the archive's verified bundles and "
             "their outcome and review records.</footer>")
    return _page(f"Change-control summary {_e(p.get('since'))} to {_e(p.get('until'))} - policyengine", body)
