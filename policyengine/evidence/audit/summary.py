"""The period on one page for the control owner: `policyengine audit summary`.

``summarize`` reads the archive's index, verifies the period exactly as ``audit export`` does
(``audit.check_period``: every evaluation of the period, its records, the first bundle after it
in each chain, unindexed bundles, chain heads), describes each evaluation from its bundle
(``audit.describe_population``: one bundle at a time, a few fields kept) and counts:

* **Deployments** per repository and environment. A deployment is what ``audit export`` marks
  ``deployment: yes``: an allowed (emergency allows included) or advisory evaluation, not
  simulated, not ``not_applicable``, whose latest outcome is not ``not_deployed``; re-runs of the
  same pipeline for the same repository, environment and commit count once (the latest).
* **Denials by rule**: each denied evaluation (simulated ones left out: they are what-ifs)
  counts once for every rule with enforcement ``deny`` whose status was ``fail`` or ``error``.
* **Overrides**: advisory evaluations whose verdict was deny (the deploy was not stopped),
  emergency evaluations (the decision's ``emergency`` object), simulated evaluations; **unsigned
  bundles**; each **policy change** (``audit.policy_changes``: a new resolved policy digest with
  its first bundle and ``policy diff``'s verdict).
* **Chain status**: ``ok``, or every problem verification found. The figures then leave out the
  bundles that did not verify, and say how many.
* Deployments **without an outcome** and **without a review** (records linked by id and SHA-256).
* **The four DORA figures**, from the deployments and their outcomes:

  - *deployment frequency*: deployments over the days of the period (and per week);
  - *lead time for changes*: from the earliest ``committed_at`` of the commits the deploy ships
    (``range.commits``, else ``commits``) to the evaluation's ``created_at``; median and mean over
    the deployments whose commits carry times (the others are counted as not measured; a commit
    time after the deployment is counted as inconsistent, not measured);
  - *change failure rate*: deployments whose latest outcome is ``failed`` or ``rolled_back``,
    over all deployments;
  - *time to restore*: from such a deployment to the next deployment of the same repository and
    environment (in the whole archive, so a fix after the period counts) whose latest outcome is
    ``deployed``; median and mean over the restored ones, the others counted as not restored.

* **Emergencies** (when decisions carry an ``emergency`` object): declarer, reason, incident,
  waived rules, due time, and the status from the ``emergency-approval`` records linked to the
  evaluation (id and SHA-256): ``approved on time`` (the first approval recorded no later than
  the due time), ``approved late``, ``approved`` (no due time stated) or ``open`` (none).

All times are the bundles' ``created_at`` (when the gate recorded the evaluation). No click and no
printing: ``render`` turns the result into Markdown, HTML (``report.render_summary``) or JSON.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from policyengine.errors import EvidenceError
from policyengine.evidence.audit.export import (
    baseline_exceptions,
    check_bounds,
    check_period,
    describe_population,
    linked_latest,
    mark_deployments,
    period_population,
    PolicyFacts,
    policy_changes,
)
from policyengine.evidence.format.records import is_deployment, is_evaluation, kind_of
from policyengine.evidence.format.report import duration, render_summary
from policyengine.evidence.stores.base import EvidenceStore

FAILED = frozenset({"failed", "rolled_back"})
EMERGENCY_APPROVAL = "emergency-approval"
REJECTED = frozenset({"rejected", "denied", "refused"})
"""Values of an emergency-approval record that do not approve (tolerated if such a kind exists)."""


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc)


def _item(r: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": r["id"], "created_at": r["created_at"], "repository": r["repository"],
            "environment": r["environment"], "commit": r.get("commit")}


def _order(r: Mapping[str, Any]) -> tuple[str, int, str]:
    seq = r.get("sequence")
    return (str(r.get("created_at") or ""), seq if type(seq) is int else -1, str(r.get("id") or ""))


def _stats(seconds: Sequence[float]) -> dict[str, Any]:
    if not seconds:
        return {"median_seconds": None, "mean_seconds": None}
    return {"median_seconds": float(statistics.median(seconds)), "mean_seconds": float(statistics.fmean(seconds))}


def _first(mapping: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if mapping.get(key) not in (None, "", []):
            return mapping[key]
    return None


def summarize(store: EvidenceStore, *, since: str, until: str, policy_facts: PolicyFacts,
              environment: str | None = None, repository: str | None = None,
              public_key: tuple[Any, str] | None = None) -> dict[str, Any]:
    """Verify and summarize the period ``[since, until)``; return the summary as a JSON-able dict.
    ``policy_facts``: the policy code the caller hands in (``policyfacts.POLICY_FACTS``).

    Raises UsageError when ``since`` is after ``until``. See the module docstring for each figure.
    """
    check_bounds(since, until)
    records, bad = store.read_index()
    problems = list(bad)
    evaluations = period_population(records, since=since, until=until, environment=environment,
                                    repository=repository)
    if not bad:
        problems += check_period(store, records, evaluations, since=since, until=until, environment=environment,
                                 public_key=public_key, repository=repository)
    broken = {p.bundle_id for p in problems}
    readable: list[dict[str, Any]] = []
    for r in evaluations:
        if r["id"] in broken:
            continue
        try:
            readable += describe_population(store, [r])
        except EvidenceError:
            broken.add(r["id"])
    mark_deployments(readable, records)
    deployments = [r for r in readable if r["deployment"] == "yes"]

    per_chain = Counter((r["repository"], r["environment"]) for r in deployments)
    denials = Counter(rule for r in readable if r["decision"] == "deny" and r.get("simulated") is not True
                      for rule in dict.fromkeys(r["_denied_by"]))
    denied = sum(1 for r in readable if r["decision"] == "deny" and r.get("simulated") is not True)
    changes, _ = policy_changes(store, [r for r in records if is_evaluation(r)], readable, policy_facts)

    days = max((_time(until) - _time(since)).total_seconds() / 86400, 0.0)
    lead: list[float] = []
    inconsistent = unmeasured = 0
    for r in deployments:
        first = r.get("_first_commit_at")
        if not first:
            unmeasured += 1
            continue
        delta = (_time(r["created_at"]) - _time(first)).total_seconds()
        if delta < 0:
            inconsistent += 1
        else:
            lead.append(delta)
    failed = [r for r in deployments if r.get("outcome") in FAILED]
    restore, unrestored = _time_to_restore(failed, records)

    result: dict[str, Any] = {
        "period": {"since": since, "until": until, "environment": environment, "repository": repository,
                   "days": round(days, 4)},
        "evaluations": len(evaluations),
        "deployments": {"total": len(deployments), "by": [
            {"repository": repo, "environment": env, "count": n} for (repo, env), n in sorted(per_chain.items())]},
        "denials": {"total": denied, "by_rule": [{"rule": rule, "count": n}
                                                 for rule, n in sorted(denials.items(), key=lambda x: (-x[1], x[0]))]},
        "overrides": {
            "advisory": [_item(r) for r in readable if r.get("advisory") is True and r["decision"] == "deny"],
            "emergency": [_item(r) for r in readable if r.get("_emergency") and _released(r)],
            "simulated": [_item(r) for r in readable if r.get("simulated") is True],
        },
        "unsigned": [_item(r) for r in readable if not r.get("signed_by")],
        "baselines": baseline_exceptions(records, environment=environment, repository=repository),
        "policy_changes": [{k: c.get(k) for k in ("repository", "environment", "bundle_id", "created_at", "policy",
                                                  "resolved_sha256", "previous_bundle_id", "verdict")}
                           for c in changes],
        "chain": {"status": "ok" if not problems else "problems", "checked": len(evaluations),
                  "left_out": len(evaluations) - len(readable),
                  "problems": [{"check": p.check, "bundle_id": p.bundle_id, "member": p.member,
                                "message": p.message} for p in problems]},
        "without_outcome": [_item(r) for r in deployments if r.get("outcome") is None],
        "without_review": [_item(r) for r in deployments if r.get("review") is None],
        "dora": {
            "deployment_frequency": {
                "deployments": len(deployments), "days": round(days, 4),
                "per_day": round(len(deployments) / days, 4) if days else None,
                "per_week": round(len(deployments) * 7 / days, 4) if days else None},
            "lead_time": {"measured": len(lead), "not_measured": unmeasured, "inconsistent": inconsistent,
                          **_stats(lead)},
            "change_failure_rate": {"failed": len(failed), "deployments": len(deployments),
                                    "rate": round(len(failed) / len(deployments), 6) if deployments else None},
            "time_to_restore": {"failures": len(failed), "restored": len(restore), "not_restored": unrestored,
                                **_stats(restore)},
        },
        "emergencies": _emergencies(readable, records, _emergency_states(store, readable, records, public_key)),
    }
    return result


def _time_to_restore(failed: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]]) -> tuple[
        list[float], int]:
    """Seconds from each failed deployment to the next deployment of its chain whose latest outcome is
    ``deployed`` (anywhere in the archive), and how many failures have none."""
    outcomes: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        if kind_of(r) == "outcome":
            outcomes.setdefault(str(r.get("about_id")), []).append(r)
    latest = linked_latest(records, "outcome")
    chains: dict[tuple[Any, Any], list[Mapping[str, Any]]] = {}
    for r in records:
        if not is_evaluation(r) or not is_deployment(r, outcomes.get(r["id"], [])):
            continue
        last = latest.get(r["id"])
        if last is not None and last.get("about_sha256") == r.get("sha256") and last.get("decision") == "deployed":
            chains.setdefault((r["repository"], r["environment"]), []).append(r)
    for chain in chains.values():
        chain.sort(key=_order)
    seconds: list[float] = []
    missing = 0
    for f in failed:
        after = next((r for r in chains.get((f["repository"], f["environment"]), []) if _order(r) > _order(f)), None)
        if after is None:
            missing += 1
        else:
            seconds.append((_time(after["created_at"]) - _time(f["created_at"])).total_seconds())
    return seconds, missing


def _emergency_states(store: EvidenceStore, rows: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]],
                      public_key: tuple[Any, str] | None) -> dict[str, tuple[str, Any]]:
    """Each allowed emergency's status as ``emergency pending`` judges it (only verified approvals by
    eligible people count; a self-asserted one never closes it) and the approval that closed it, by
    bundle id; {} when unreadable."""
    from policyengine.evidence.audit.emergencies import closing_approval, period_judgements

    try:
        judged = period_judgements(store, rows, records, datetime.now(timezone.utc), public_key=public_key)
    except EvidenceError:
        return {}
    need = {str(r["id"]): _min_approvals(r.get("_emergency")) for r in rows}
    return {k: (status, closing_approval(status, approvals, need.get(k, 1)))
            for k, (status, approvals) in judged.items()}


def _min_approvals(emergency: Any) -> int:
    approvers = emergency.get("approvers") if isinstance(emergency, Mapping) else None
    need = approvers.get("min_approvals", 1) if isinstance(approvers, Mapping) else 1
    return need if isinstance(need, int) and need >= 1 else 1


def _released(row: Mapping[str, Any]) -> bool:
    """Whether an emergency evaluation released a deploy: an allow its emergency was accepted for."""
    emergency = row.get("_emergency")
    return (row.get("decision") == "allow" and isinstance(emergency, Mapping)
            and emergency.get("accepted", True) is not False)


def _emergencies(rows: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]],
                 states: Mapping[str, tuple[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Each emergency evaluation with its status from the ``emergency-approval`` records about it.

    ``states``, from ``emergency pending``'s rules, wins over the count done here, and then names
    as ``approval_id`` / ``approved_at`` only the approval that closed it (none while it is open or
    overdue). The count done here serves only emergency objects those rules do not judge."""
    approvals: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        if kind_of(r) == EMERGENCY_APPROVAL and isinstance(r.get("about_id"), str):
            approvals.setdefault(r["about_id"], []).append(r)
    out = []
    for row in rows:
        emergency = row.get("_emergency")
        if not emergency:
            continue
        mine = sorted((a for a in approvals.get(row["id"], [])
                       if a.get("about_sha256") == row.get("sha256")
                       and str(a.get("decision") or "").casefold() not in REJECTED), key=_order)
        due = _first(emergency, "due", "due_at", "approval_due", "approve_by")
        first = mine[0] if mine else None
        if not _released(row):
            # A refused emergency (or one whose unwaivable rules still denied) deployed nothing:
            # it awaits no approval, so it is never "open".
            status = ("refused: " + "; ".join(str(p) for p in emergency.get("problems") or [])
                      if emergency.get("accepted") is not True else "denied: rules it may not waive still failed")
            first = None
        elif first is None:
            status = "open"
        elif not isinstance(due, str):
            status = "approved"
        else:
            try:
                status = "approved on time" if _time(first["created_at"]) <= _time(due) else "approved late"
            except ValueError:
                status = "approved"
        judged = (states or {}).get(row["id"])
        if judged is not None:
            status, closer = judged
            approved_at, approval_id = (closer.recorded_at, closer.record_id) if closer is not None else (None, None)
        else:
            approved_at, approval_id = (first["created_at"], first["id"]) if first else (None, None)
        waived = _first(emergency, "waived_rules", "waived", "rules")
        out.append({
            **_item(row),
            "declared_by": _first(emergency, "declared_by", "declarer", "by"),
            "reason": _first(emergency, "reason"),
            "incident": _first(emergency, "incident", "incident_url", "ticket"),
            "waived_rules": [str(w) for w in waived] if isinstance(waived, list) else waived,
            "due": due,
            "approved_at": approved_at,
            "approval_id": approval_id,
            "status": status,
        })
    return out


# -- rendering ------------------------------------------------------------------------------------


LIST_LIMIT = 50
"""Markdown and HTML list at most this many items of a list (the JSON has every one)."""


def _md_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ").replace("`", "'")


def _md_items(title: str, items: Sequence[Mapping[str, Any]]) -> list[str]:
    out = [f"## {title} ({len(items)})", ""]
    if not items:
        return [*out, "None.", ""]
    out += ["| Bundle | Created at | Repository | Environment | Commit |", "|---|---|---|---|---|"]
    for it in items[:LIST_LIMIT]:
        out.append(f"| {_md_cell(it['id'])} | {_md_cell(it['created_at'])} | {_md_cell(it['repository'])} | "
                   f"{_md_cell(it['environment'])} | {_md_cell(str(it.get('commit') or '')[:12])} |")
    if len(items) > LIST_LIMIT:
        out.append(f"\n... and {len(items) - LIST_LIMIT} more (`--format json` lists every one).")
    return [*out, ""]


def render_markdown(s: Mapping[str, Any]) -> str:
    """The summary as Markdown: what a control owner pastes into a ticket or a wiki page."""
    p, dora, chain = s["period"], s["dora"], s["chain"]
    scope = ", ".join(x for x in (p["environment"] and f"environment {p['environment']}",
                                  p["repository"] and f"repository {p['repository']}") if x)
    cfr = dora["change_failure_rate"]
    lines = [
        f"# Change-control summary: {p['since']} to {p['until']}" + (f" ({_md_cell(scope)})" if scope else ""),
        "",
        f"- Evaluations: {s['evaluations']}; deployments: {s['deployments']['total']}; denials: "
        f"{s['denials']['total']}",
        f"- Chain: **{chain['status']}**" + (f" ({len(chain['problems'])} problem(s); {chain['left_out']} "
                                              "evaluation(s) left out of the figures)" if chain["problems"] else
                                              f" (every one of the {chain['checked']} evaluations verified)"),
        "",
        "## DORA figures",
        "",
        "| Figure | Value |",
        "|---|---|",
        f"| Deployment frequency | {dora['deployment_frequency']['deployments']} deployments in "
        f"{dora['deployment_frequency']['days']:g} days ({dora['deployment_frequency']['per_week'] or 0:g} per week) |",
        f"| Lead time for changes | median {duration(dora['lead_time']['median_seconds'])}, mean "
        f"{duration(dora['lead_time']['mean_seconds'])} ({dora['lead_time']['measured']} measured, "
        f"{dora['lead_time']['not_measured']} without commit times, {dora['lead_time']['inconsistent']} inconsistent) |",
        f"| Change failure rate | {cfr['failed']} of {cfr['deployments']}"
        + (f" ({cfr['rate'] * 100:.1f}%)" if cfr["rate"] is not None else "") + " |",
        f"| Time to restore | median {duration(dora['time_to_restore']['median_seconds'])}, mean "
        f"{duration(dora['time_to_restore']['mean_seconds'])} ({dora['time_to_restore']['restored']} restored, "
        f"{dora['time_to_restore']['not_restored']} not restored) |",
        "",
        "## Deployments per repository and environment",
        "",
        "| Repository | Environment | Deployments |",
        "|---|---|---|",
        *[f"| {_md_cell(d['repository'])} | {_md_cell(d['environment'])} | {d['count']} |"
          for d in s["deployments"]["by"]],
        "",
        "## Denials by rule",
        "",
    ]
    if s["denials"]["by_rule"]:
        lines += ["| Rule | Denied evaluations |", "|---|---|",
                  *[f"| {_md_cell(d['rule'])} | {d['count']} |" for d in s["denials"]["by_rule"]], ""]
    else:
        lines += ["None.", ""]
    lines += _md_items("Advisory overrides (denied, not stopped)", s["overrides"]["advisory"])
    lines += _md_items("Simulated evaluations", s["overrides"]["simulated"])
    lines += _md_items("Unsigned bundles", s["unsigned"])
    if s.get("baselines"):
        lines += _md_items("Baselines (exceptions: the commit in production when the gate was adopted, recorded by a "
                           "person; deployments before it are before adoption)", s["baselines"])
    lines += [f"## Policy changes ({len(s['policy_changes'])})", ""]
    if s["policy_changes"]:
        lines += ["| Repository | Environment | First bundle | Created at | Policy | Digest | Verdict |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {_md_cell(c['repository'])} | {_md_cell(c['environment'])} | {_md_cell(c['bundle_id'])} | "
                  f"{_md_cell(c['created_at'])} | {_md_cell(c['policy'])} | {_md_cell((c['resolved_sha256'] or '')[:12])}"
                  f" | {_md_cell(c['verdict'])} |" for c in s["policy_changes"]]
        lines.append("")
    else:
        lines += ["None.", ""]
    lines += _md_items("Deployments without an outcome", s["without_outcome"])
    lines += _md_items("Deployments without a review", s["without_review"])
    # One section for the emergency deployments (the overrides' list is the same rows, with less).
    lines += [f"## Emergencies ({len(s['emergencies'])})", ""]
    if s["emergencies"]:
        lines += ["| Bundle | Created at | Repository | Environment | Declared by | Reason | Incident | Waived rules "
                  "| Due | Status | Approved by record |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for e in s["emergencies"][:LIST_LIMIT]:
            waived = " ".join(e["waived_rules"]) if isinstance(e["waived_rules"], list) else e["waived_rules"]
            lines.append(f"| {_md_cell(e['id'])} | {_md_cell(e['created_at'])} | {_md_cell(e['repository'])} | "
                         f"{_md_cell(e['environment'])} | {_md_cell(e['declared_by'])} | {_md_cell(e['reason'])} | "
                         f"{_md_cell(e['incident'])} | {_md_cell(waived)} | {_md_cell(e['due'])} | "
                         f"{_md_cell(e['status'])} | {_md_cell(e['approval_id'] or '-')} |")
        if len(s["emergencies"]) > LIST_LIMIT:
            lines.append(f"\n... and {len(s['emergencies']) - LIST_LIMIT} more (`--format json` lists every one).")
        lines.append("")
    else:
        lines += ["None.", ""]
    rec = s.get("reconciliation")
    if isinstance(rec, Mapping):
        lines += [f"## Reconciliation with the platform ({rec['exceptions']} exception(s))", "",
                  f"Sources: {_md_cell(', '.join(rec['sources']) or 'none')}; {rec['platform_deployments']} platform "
                  f"deployment(s), {rec['matched']} matched plainly.", "",
                  "| Finding | Count |", "|---|---|",
                  *[f"| {_md_cell(k)} | {v} |" for k, v in rec["counts"].items()], "", _md_cell(rec["limit"]), ""]
    if chain["problems"]:
        lines += ["## Chain problems", ""]
        lines += [f"- `{_md_cell(x['check'])}` bundle {_md_cell(x['bundle_id'])}: {_md_cell(x['message'])}"
                  for x in chain["problems"][:LIST_LIMIT]]
        lines.append("")
    return "\n".join(lines)


def render(summary: Mapping[str, Any], fmt: str) -> str:
    """The summary as ``md``, ``html`` (a self-contained page) or ``json``."""
    if fmt == "json":
        return json.dumps(summary, indent=2, sort_keys=True) + "\n"
    if fmt == "html":
        return render_summary(summary)
    return render_markdown(summary)


def write_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it, renamed into place when whole."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".policyengine-summary-", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
