"""``policy explain``: a policy as a control matrix an auditor can read.

For each rule: what it requires, in plain language generated from its parameters; which
points of focus of SOC 2 CC8.1 it evidences; what makes it fail and what makes it error; and
what the evidence bundle keeps for it. Rendered as Markdown, HTML or JSON (``render``).
The words are generated from the policy itself, so the matrix cannot drift from what the
gate enforces; the checked-in matrices of the bundled policies (``docs/controls/``) are
tested to be current.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

from policyengine.language.policy import Policy

# The points of focus of CC8.1 ("The entity authorizes, designs, develops or acquires,
# configures, documents, tests, approves, and implements changes to infrastructure, data,
# software, and procedures to meet its objectives"), AICPA Trust Services Criteria (2017,
# points of focus revised 2022), as far as a deploy gate can evidence them.
FOCUS = {
    "lifecycle": "Manages changes throughout the system life cycle",
    "authorizes": "Authorizes changes",
    "documents": "Documents changes",
    "tracks": "Tracks system changes",
    "tests": "Tests system changes",
    "approves": "Approves system changes",
    "deploys": "Deploys system changes",
    "evaluates": "Identifies and evaluates system changes",
    "emergency": "Provides for changes necessary in emergency situations",
}

_FOCUS_BY_TYPE = {
    "approvals": ("authorizes", "approves"),
    "tests_passed": ("tests",),
    "checks_passed": ("tests", "evaluates"),
    "rollback_plan": ("documents", "deploys"),
    "deploy_window": ("deploys", "lifecycle"),
    "ticket": ("authorizes", "tracks", "documents"),
}


def _list(items: Sequence[Any], conj: str = "and") -> str:
    words = [str(i) for i in items]
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + f" {conj} " + words[-1]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _approvals(p: dict[str, Any]) -> tuple[str, list[str], list[str], list[str]]:
    n = int(p["min_approvals"])
    who = "different people"
    limits = []
    if p.get("from_teams"):
        limits.append(f"members of {_list(p['from_teams'], 'or')}")
    if p.get("from_users"):
        limits.append(_list(p["from_users"], "or"))
    if limits:
        who = " or ".join(limits)
    excluded = {"author": "the pull request's author", "committers": "anyone who authored or committed its commits",
                "deployer": "the person who starts the deployment"}
    text = f"At least {_plural(n, 'approval').replace('approval', 'approving review')} from {who}"
    if p.get("exclude"):
        text += ", not counting " + _list([excluded[e] for e in p["exclude"]], "or")
    text += "."
    if p.get("require_current_commit"):
        text += " Only approvals of the exact commit deployed count: a push after an approval makes it stale."
    if p.get("cover_range"):
        text += (" Every commit shipped since the previous deploy to the environment must have come through a "
                 "pull request approved the same way.")
    fails = [f"fewer than {_plural(n, 'counted approval')}", "no pull request (a direct push)"]
    if p.get("require_current_commit"):
        fails.append("approvals only of an earlier commit")
    if p.get("cover_range"):
        fails.append("a commit of the change range without an approved pull request, or no known previous deploy")
    errors = ["the reviews, commits or teams could not be read from the code host"]
    if "deployer" in p.get("exclude", []):
        errors.append("the deployer is unknown, so segregation of duties cannot be shown")
    keeps = ["every review with its reviewer, state, commit and time, and why each uncounted one was not counted",
             "the pull request's author and the commits' authors and committers"]
    return text, fails, errors, keeps


def _tests(p: dict[str, Any]) -> tuple[str, list[str], list[str], list[str]]:
    min_tests = int(p.get("min_tests", 1))
    text = (f"JUnit test reports matching {_list(p['reports'], 'or')} show at least {_plural(min_tests, 'test')} "
            "ran and none failed or errored.")
    if p.get("allow_skipped", True) is False:
        text += " No test may be skipped."
    if p.get("allow_flaky", True) is False:
        text += " No test may have passed only on a retry."
    fails = ["a failed or errored test", "no report found", f"fewer than {_plural(min_tests, 'test')} ran",
             "a report path leading outside the workspace"]
    if p.get("allow_skipped", True) is False:
        fails.append("a skipped test")
    if p.get("allow_flaky", True) is False:
        fails.append("a flaky test")
    errors = ["a report that cannot be read or is not JUnit XML (malformed, truncated, hostile)"]
    keeps = ["each report file, byte for byte, with its SHA-256", "the test totals per report"]
    if p.get("provenance", "any") == "same_run":
        text += " Each report was produced by a job of this workflow run or pipeline, as the CI platform shows."
        fails.append("a report no job of this workflow run or pipeline produced")
        errors.append("the CI platform cannot say which job produced a report (API failure, partial answer, "
                      "no CI platform)")
        keeps.append("the job that produced each report, and the platform's answers")
    return text, fails, errors, keeps


def _checks(p: dict[str, Any]) -> tuple[str, list[str], list[str], list[str]]:
    text = f"The CI checks {_list(p['checks'])} succeeded on the commit being deployed"
    if p.get("creators") is not None:
        text += ", reported by " + (_list(p["creators"]) if p["creators"] else "nobody (no report counts)") + "."
    else:
        text += (", reported by the platform's own CI (GitHub Actions check runs, GitLab pipeline jobs) or by a "
                 "commit status of the same name from anyone when no check run reports it.")
    fails = ["a check missing, pending, failed, or reported only on another commit",
             "a check reported only by an unexpected creator (another app, an account the policy does not name)"]
    errors = ["the checks could not be read from the code host"]
    keeps = ["each check's latest status on the deployed commit, with its link and who reported it"]
    return text, fails, errors, keeps


def _plan(p: dict[str, Any]) -> tuple[str, list[str], list[str], list[str]]:
    text = f"A rollback plan is shipped in {p['path']}"
    if p.get("required_sections"):
        text += " with the sections " + _list([f'"{s}"' for s in p["required_sections"]]) + ", each with content"
    if p.get("min_length"):
        text += f", at least {p['min_length']} characters long"
    text += "."
    fails = ["the file is missing", "a required section is missing or empty (a comment alone is empty)"]
    if p.get("min_length"):
        fails.append("the plan is too short")
    errors = ["the file cannot be read or is not UTF-8 text"]
    keeps = ["the plan itself, byte for byte, with its SHA-256"]
    return text, fails, errors, keeps


def _window(p: dict[str, Any]) -> tuple[str, list[str], list[str], list[str]]:
    parts = []
    for w in p.get("allow") or []:
        days = w.get("days")
        days_text = _list(days) if isinstance(days, list) else (days or "every day")
        between = w.get("between")
        hours = f" {between[0]}-{between[1]}" if between else ""
        parts.append(f"{days_text}{hours}")
    text = f"Deploys happen in the {p['timezone']} time zone"
    text += (", only " + _list(parts, "or")) if parts else ", at any time"
    freezes = [str(d.get("name") or d.get("cron") or d.get("from")) for d in p.get("deny") or []]
    if freezes:
        text += ", never during " + _list(freezes)
    hol = p.get("holidays")
    if hol:
        country = hol if isinstance(hol, str) else f"{hol.get('country')}-{hol.get('subdivision', '')}".rstrip("-")
        text += f", and never on a public holiday of {country}"
    text += "."
    fails = ["the deploy time is outside every allow window, inside a freeze, or on a holiday"]
    errors = ["the time has no zone, or a date cannot be computed"]
    keeps = ["the evaluation time, the local time and the freeze or holiday that matched"]
    return text, fails, errors, keeps


def _owners(p: dict[str, Any]) -> tuple[str, list[str], list[str], list[str]]:
    owners = _list([*p.get("users", []), *(f"members of {t}" for t in p.get("teams", []))], "or")
    text = (f"Every request of the change that modifies a guarded file ({_list(p['guard'])}, and the pipeline "
            "files the CI configuration runs at the trusted base or the deployed commit: local actions, included "
            f"GitLab files) is approved by a policy owner ({owners}) other than its author and committers, on its "
            "head commit. Added by the gate; never waivable.")
    fails = ["a request changed a guarded file without an owner's approval",
             "a request's file list is unknown and no owner approved it",
             "a commit of the change range came through no request"]
    errors = ["the reviews or teams could not be read from the code host",
              "the pipeline files could not be determined (a configuration that does not parse, a commit or "
              "trusted base that cannot be read)"]
    keeps = ["each request of the change, the guarded files it touched and whether an owner approved it"]
    return text, fails, errors, keeps


def _ticket(p: dict[str, Any]) -> tuple[str, list[str], list[str], list[str]]:
    places = {"title": "title", "branch": "source branch", "description": "description",
              "commits": "commit messages", "ticket": "change file's ticket id"}
    where = _list([places[s] for s in p.get("sources") or places], "or")
    systems = []
    jira = p.get("jira")
    if isinstance(jira, dict):
        text = (f"a Jira issue of {_list(jira['projects'], 'or')} in status "
                f"{_list([repr(s) for s in jira['statuses']], 'or')}")
        if jira.get("issue_types"):
            text += f" of type {_list(jira['issue_types'], 'or')}"
        systems.append(text)
    sn = p.get("servicenow")
    if isinstance(sn, dict):
        systems.append(f"a ServiceNow change request (number matching {sn.get('pattern') or 'CHG[0-9]{7}'}) that is "
                       "approved, scheduled or in implementation, with the deploy time inside its planned window")
    text = (f"The change names, in its {where}, at least one ticket that the ticket system confirms: "
            f"{_list(systems, 'or')}. A ticket written in a change file is looked up like any other, never trusted.")
    fails = ["no ticket key found", "every key not found or not visible, in another status or type, not approved, "
             "or outside its planned window"]
    errors = ["the ticket system could not be asked: credentials missing or rejected (401/403), an outage or an "
              "answer not in the documented shape"]
    keeps = ["each key, where it was found and the ticket system's redacted answer (raw/tickets/), which replay "
             "reads instead of asking again"]
    return text, fails, errors, keeps


_FOCUS_BY_TYPE["policy_owners"] = ("authorizes", "approves", "lifecycle")

_DESCRIBE = {"policy_owners": _owners, "approvals": _approvals, "tests_passed": _tests, "checks_passed": _checks, "rollback_plan": _plan,
             "deploy_window": _window, "ticket": _ticket}


def notifications(policy: Policy) -> str:
    """What the policy's ``notify:`` does, in words (never a URL: the policy names variables)."""
    if not policy.notify:
        return ("Decisions are not notified by the policy (check --notify may add targets; they never stop a "
                "deploy).")
    parts = []
    for t in policy.notify:
        words = f"{t.url_env} ({t.format}"
        words += ", required: a failed notification stops the deploy, is recorded with a not_deployed outcome, " \
                 "and check exits 3" if t.required else ", a failure is recorded and the decision stands"
        if t.include_not_applicable:
            words += "; not_applicable decisions too"
        parts.append(words + ")")
    return ("Every recorded decision of an environment the policy applies to, allowed or denied, is posted after "
            "its evidence is recorded to the webhook held by " + _list(parts) + ". A failed notification is "
            "appended to the evidence as a notification-failure record linked to the bundle.")


def matrix(policy: Policy) -> dict[str, Any]:
    """The control matrix of ``policy`` as data (the JSON format)."""
    rows: list[dict[str, Any]] = []
    focus: set[str] = {FOCUS["tracks"], FOCUS["documents"]}
    for spec in policy.rules:
        requires, fails, errors, keeps = _DESCRIBE[spec.type](dict(spec.params))
        if spec.when_paths:
            requires += f" Applies only when the change touches {_list(spec.when_paths, 'or')}."
        rows.append({
            "id": spec.id,
            "type": spec.type,
            "enforcement": spec.enforcement.value,
            "description": spec.description,
            "requires": requires,
            "points_of_focus": [FOCUS[f] for f in _FOCUS_BY_TYPE[spec.type]],
            "controls": list(spec.controls),
            "fails_when": fails,
            "errors_when": errors + (["(an error denies: the gate fails closed)"] if spec.enforcement.value == "deny"
                                     else ["(warning only: a failure or an error is reported, never denies)"]),
            "evidence": keeps + ["the rule's result and message in decision.json and report.html"],
        })
        focus.update(FOCUS[f] for f in _FOCUS_BY_TYPE[spec.type])
    envs = list(policy.environments) if policy.environments else None
    out: dict[str, Any] = {
        "policy": policy.name,
        "sha256": policy.sha256,
        "description": policy.description,
        "applies_to": envs,
        "retention": policy.retention,
        "every_evaluation": ("Every evaluation, allowed or denied, is recorded as an evidence bundle: the decision, "
                             "the change, the policy, every file a rule read, and the code host's answers, with "
                             "digests, an optional Ed25519 signature and a hash chain per repository and "
                             "environment. If the evidence cannot be recorded, the change is denied."),
        "points_of_focus_evidenced": sorted(focus),
        "notifications": notifications(policy),
        "rules": rows,
    }
    if policy.waivers:
        out["waivers"] = [_waiver_row(w) for w in policy.waivers]
    if policy.notify:
        out["notify"] = [{"url_env": t.url_env, "format": t.format, "required": t.required,
                          "include_not_applicable": t.include_not_applicable} for t in policy.notify]
    if policy.emergency is not None:
        out["emergency"] = _emergency_row(policy.emergency)
        out["points_of_focus_evidenced"] = sorted({*out["points_of_focus_evidenced"], FOCUS["emergency"]})
    return out


def _emergency_row(e: Any) -> dict[str, Any]:
    """The emergency procedure as the matrix describes it."""
    who = _list([*e.users, *(f"members of team {t}" for t in e.teams)], "or")
    asked = "`check --emergency`" + (f" or the request label `{e.label}`" if e.label else "")
    needs = _list(list(e.requires)) if e.requires else "nothing more"
    approvers = f"{_plural(e.min_approvals, 'approval')}" + (
        f" from members of {_list(list(e.from_teams), 'or')}" if e.from_teams else "") + (
        ", not by the declarer" + (f" nor the change's {_list(list(e.exclude), 'or')}" if e.exclude else ""))
    text = (f"Asked for with {asked}; declared only by {who} (the deployer as the code host verified it, never a "
            f"name given on the command line). It must give {needs}. A declared emergency waives "
            f"{_list(list(e.may_waive)) or 'no rule'} when they do not pass; every other rule still denies, and "
            "the evidence and policy owners' rules are never waived. An allowed emergency exits 0 with an "
            f"EMERGENCY verdict, is recorded with its declarer, reason, incident and waived rules, and needs "
            f"{approvers}, recorded within {e.approve_within} (`policyengine emergency approve`; "
            "`policyengine emergency pending` exits 1 when one is overdue).")
    return {"declared_by": {"users": list(e.users), "teams": list(e.teams)}, "trigger_label": e.label,
            "requires": list(e.requires), "may_waive": list(e.may_waive), "approve_within": e.approve_within,
            "approvers": e.approvers_json(), "describes": text}


def _waiver_row(w: Any) -> dict[str, Any]:
    """One waiver as the matrix lists it (explain reads no clock: the reader compares the dates)."""
    scope = w.scope_json()
    where = "; ".join(f"{k}: {', '.join(v) if isinstance(v, list) else v}" for k, v in scope.items())
    return {"rule": w.rule, "scope": scope, "applies_to": where, "reason": w.reason, "approved_by": w.approved_by,
            "approved_at": w.approved_at.text, "expires": w.expires.text, "source": w.source}


_WAIVERS_INTRO = ("Waivers: time-boxed exceptions, each approved by a policy owner. While one holds (approved_at "
                  "through expires, a date meaning the end of that day UTC) and the change lies in its scope, the "
                  "rule it names is recorded as waived instead of failing; it is listed in the decision and the "
                  "evidence bundle with its reason, approver and expiry. An expired waiver is ignored and reported.")


def render(policy: Policy, fmt: str = "md") -> str:
    """The control matrix as ``md``, ``html`` or ``json``."""
    data = matrix(policy)
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    if fmt == "html":
        return _html(data)
    return _markdown(data)


def _markdown(d: dict[str, Any]) -> str:
    lines = [f"# Control matrix: {d['policy']}", ""]
    if d["description"]:
        lines += [str(d["description"]), ""]
    scope = ", ".join(d["applies_to"]) if d["applies_to"] else "every environment"
    lines += [f"- Applies to: {scope}", f"- Policy digest (SHA-256): `{d['sha256']}`",
              f"- Evidence kept for: {d['retention'] or 'as long as the store keeps it'}",
              f"- CC8.1 points of focus evidenced: {'; '.join(d['points_of_focus_evidenced'])}",
              *([f"- Notifications: {d['notifications']}"] if d.get("notify") else []), "",
              d["every_evaluation"], "",
              "| rule | requires | CC8.1 points of focus | fails when | errors when | evidence kept |",
              "|---|---|---|---|---|---|"]
    for r in d["rules"]:
        rid = f"`{r['id']}` ({r['type']}{', warning only' if r['enforcement'] == 'warn' else ''})"
        lines.append("| " + " | ".join(x.replace("|", "\\|") for x in (
            rid, r["requires"], "; ".join(r["points_of_focus"]), "; ".join(r["fails_when"]),
            "; ".join(r["errors_when"]), "; ".join(r["evidence"]))) + " |")
    if d.get("waivers"):
        lines += ["", "## Waivers", "", _WAIVERS_INTRO, "",
                  "| rule waived | scope | reason | approved by | approved at | expires |", "|---|---|---|---|---|---|"]
        for w in d["waivers"]:
            lines.append("| " + " | ".join(str(x).replace("|", "\\|") for x in (
                f"`{w['rule']}`", w["applies_to"], w["reason"], w["approved_by"], w["approved_at"], w["expires"])) + " |")
    if d.get("emergency"):
        lines += ["", "## Emergency changes", "", d["emergency"]["describes"]]
    lines += ["", "Generated by `policyengine policy explain` from the policy itself."]
    return "\n".join(lines) + "\n"


def _html(d: dict[str, Any]) -> str:
    e = html.escape
    rows = "".join(
        "<tr>" + "".join(f"<td>{cell}</td>" for cell in (
            f"<code>{e(r['id'])}</code><br>{e(r['type'])}{' (warning only)' if r['enforcement'] == 'warn' else ''}",
            e(r["requires"]), "<br>".join(e(x) for x in r["points_of_focus"]),
            "<br>".join(e(x) for x in r["fails_when"]), "<br>".join(e(x) for x in r["errors_when"]),
            "<br>".join(e(x) for x in r["evidence"]))) + "</tr>\n"
        for r in d["rules"])
    scope = ", ".join(d["applies_to"]) if d["applies_to"] else "every environment"
    waivers = ""
    if d.get("waivers"):
        waivers = (f"<h2>Waivers</h2>\n<p>{e(_WAIVERS_INTRO)}</p>\n<table><thead><tr><th>rule waived</th><th>scope</th>"
                   "<th>reason</th><th>approved by</th><th>approved at</th><th>expires</th></tr></thead><tbody>\n" +
                   "".join("<tr>" + "".join(f"<td>{e(str(w[k]))}</td>" for k in (
                       "rule", "applies_to", "reason", "approved_by", "approved_at", "expires")) + "</tr>\n"
                           for w in d["waivers"]) + "</tbody></table>\n")
    if d.get("emergency"):
        waivers += f"<h2>Emergency changes</h2>\n<p>{e(d['emergency']['describes'])}</p>\n"
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Control matrix: {e(d['policy'])}"
            "</title><style>body{font-family:system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #999;padding:.4em;vertical-align:top;text-align:left}</style></head><body>\n"
            f"<h1>Control matrix: {e(d['policy'])}</h1>\n<p>{e(d['description'] or '')}</p>\n"
            f"<ul><li>Applies to: {e(scope)}</li><li>Policy digest (SHA-256): <code>{e(d['sha256'])}</code></li>"
            f"<li>Evidence kept for: {e(d['retention'] or 'as long as the store keeps it')}</li>"
            + (f"<li>Notifications: {e(d['notifications'])}</li>" if d.get("notify") else "") + "</ul>\n"
            f"<p>{e(d['every_evaluation'])}</p>\n<table><thead><tr><th>rule</th><th>requires</th>"
            "<th>CC8.1 points of focus</th><th>fails when</th><th>errors when</th><th>evidence kept</th></tr></thead>"
            f"<tbody>\n{rows}</tbody></table>\n{waivers}<p>Generated by <code>policyengine policy explain</code> from the policy "
            "itself.</p>\n</body></html>\n")
