"""``ticket``: the change names a ticket, and the ticket system confirms it may ship.

**Finding keys** (``find_keys``, pure, shared by gathering and judging). The rule looks in the
request's title, its source branch, its description, the commit messages (subject and body)
and the change file's ``ticket.id``, in that order (``sources`` narrows the list). A key is:

* Jira: ``PROJECT-NUMBER`` where PROJECT is one of the policy's ``jira.projects`` and NUMBER has
  no leading zero, not touching another letter or digit on either side (``feature/pay-101-fix``
  gives ``PAY-101``; ``XPAY-101``, ``PAY-101a`` give nothing). Case does not matter in the text
  (branches are often lower case); keys are reported upper case. So ``CVE-2024-3094``,
  ``UTF-8`` or ``SHA-256`` are never keys unless CVE, UTF or SHA is a configured project;
* ServiceNow: a match of ``servicenow.pattern`` (default ``CHG[0-9]{7}``, e.g. ``CHG0030001``),
  bounded the same way, made only of letters, digits, ``_`` and ``-``.

At most ``MAX_TICKET_KEYS`` keys are asked, in the order found; later ones are reported as not
verified. Keys are matched in ASCII only.

**Verifying.** Every key is asked of its system (``policyengine.gather``); the rule passes when
at least one key verifies, and reports every key that did not:

* Jira: the issue exists, Jira answered with a key of a configured project (an issue moved to
  another project does not count), ``fields.status.name`` is one of ``jira.statuses`` and, when
  ``jira.issue_types`` is given, ``fields.issuetype.name`` is one of them (both compared
  case-insensitively);
* ServiceNow: the change request exists, ``approval`` is ``approved``, ``state`` is the code of
  scheduled or implement (``servicenow.states`` overrides the default codes ``-2`` and ``-1``,
  which are instance-specific), and the evaluation time is inside ``[start_date, end_date]``
  (UTC); a change without a planned window fails.

A ``ticket`` field in a change file is self-declared: its key is looked up like any other, its
``status`` is never read. Nothing in the change can make the rule pass by itself.

**Outcome.** pass: a key verified. fail: no key found, or every key was answered and none
verified (not found or not visible, wrong status, not approved, outside its window...).
error: no key verified and at least one could not be asked (credentials rejected or missing,
no permission, an outage, an answer not in the documented shape): the gate fails closed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from policyengine.facts import (
    MAX_TICKET_KEYS,
    TICKET_SOURCES,
    FactRequest,
    TicketAnswer,
    TicketRequest,
)
from policyengine.models import Outcome, Status
from policyengine.rules.base import Context, RuleType

DEFAULT_SERVICENOW_PATTERN = "CHG[0-9]{7}"
DEFAULT_STATES = {"scheduled": "-2", "implement": "-1"}
"""ServiceNow's default state codes of the change_request states a change may be implemented in."""
SN_TIME = "%Y-%m-%d %H:%M:%S"
_KEY_CHARS = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_EDGE_BEFORE = r"(?<![A-Za-z0-9])"
_EDGE_AFTER = r"(?![A-Za-z0-9])"


def request_of(params: Mapping[str, Any]) -> TicketRequest:
    """The fact request of a rule's parameters."""
    jira = params.get("jira") or {}
    sn = params.get("servicenow")
    return TicketRequest(
        jira_projects=tuple(str(p).upper() for p in jira.get("projects", ())),
        jira_url=jira.get("url"),
        jira_api_version=int(jira.get("api_version", 2)),
        jira_approval_status=str(jira["approval_status"]) if jira.get("approval_status") else None,
        servicenow_pattern=(sn.get("pattern") or DEFAULT_SERVICENOW_PATTERN) if isinstance(sn, dict) else None,
        servicenow_url=sn.get("url") if isinstance(sn, dict) else None,
        sources=tuple(params.get("sources") or TICKET_SOURCES),
    )


def _texts(change: Mapping[str, Any], sources: tuple[str, ...]) -> list[tuple[str, str]]:
    """``(source, text)`` for every place a key may be written, in ``TICKET_SOURCES`` order."""
    pr = change.get("pull_request")
    pr = pr if isinstance(pr, dict) else {}
    out: list[tuple[str, str]] = []
    for source in TICKET_SOURCES:
        if source not in sources:
            continue
        if source == "title":
            values = [pr.get("title")]
        elif source == "branch":
            values = [pr.get("head_ref")]
        elif source == "description":
            values = [pr.get("description")]
        elif source == "commits":
            commits = change.get("commits")
            values = []
            for c in commits if isinstance(commits, list) else []:
                if isinstance(c, dict):
                    values += [c.get("message"), c.get("body")]
        else:
            ticket = change.get("ticket")
            values = [ticket.get("id")] if isinstance(ticket, dict) else []
        out += [(source, v) for v in values if isinstance(v, str) and v]
    return out


def find_keys(change: Mapping[str, Any], request: TicketRequest) -> list[tuple[str, str, tuple[str, ...]]]:
    """Every ticket key the change names: ``(system, KEY, sources it was found in)``, in order."""
    patterns: list[tuple[str, re.Pattern[str]]] = []
    if request.jira_projects:
        projects = "|".join(re.escape(p) for p in sorted(request.jira_projects, key=len, reverse=True))
        patterns.append(("jira", re.compile(_EDGE_BEFORE + rf"((?:{projects})-[1-9][0-9]{{0,9}})" + _EDGE_AFTER,
                                            re.IGNORECASE | re.ASCII)))
    if request.servicenow_pattern:
        patterns.append(("servicenow", re.compile(_EDGE_BEFORE + f"((?:{request.servicenow_pattern}))" + _EDGE_AFTER,
                                                  re.IGNORECASE | re.ASCII)))
    found: dict[tuple[str, str], list[str]] = {}
    for source, value in _texts(change, request.sources):
        for system, pattern in patterns:
            for m in pattern.finditer(value):
                key = m.group(1).upper()
                if not _KEY_CHARS.match(key):
                    continue
                where = found.setdefault((system, key), [])
                if source not in where:
                    where.append(source)
    return [(system, key, tuple(where)) for (system, key), where in found.items()]


def parse_sn_time(value: str | None) -> datetime | None:
    """A raw ServiceNow date-time (UTC ``YYYY-MM-DD HH:MM:SS``), or None if absent or not that shape."""
    if not value:
        return None
    try:
        return datetime.strptime(value.strip(), SN_TIME).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


class TicketRule(RuleType):
    """At least one ticket the change names is verified by its ticket system."""

    type_name = "ticket"

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        sn = params.get("servicenow")
        if isinstance(sn, dict) and isinstance(sn.get("pattern"), str):
            try:
                compiled = re.compile(sn["pattern"], re.ASCII)
            except re.error as exc:
                problems.append(("servicenow.pattern", f"not a regular expression: {exc}"))
            else:
                if compiled.match(""):
                    problems.append(("servicenow.pattern", "matches the empty string: every text would hold a key"))
        return problems

    def needs(self) -> list[FactRequest]:
        return [request_of(self.params)]

    # -- judging one key ----------------------------------------------------------------------

    def _jira(self, a: TicketAnswer) -> str | None:
        """Why a found Jira issue does not verify, or None."""
        jira = self.params.get("jira") or {}
        projects = {str(p).upper() for p in jira.get("projects", ())}
        if a.resolved_key and a.resolved_key != a.key:
            if a.resolved_key.rsplit("-", 1)[0] not in projects:
                return f"{a.key} is now {a.resolved_key}, not in {', '.join(sorted(projects))}"
        allowed = [str(s) for s in jira.get("statuses", ())]
        if (a.status or "").casefold() not in {s.casefold() for s in allowed}:
            return f"{a.key} is {a.status!r}, not {' or '.join(repr(s) for s in allowed)}"
        types = [str(t) for t in jira.get("issue_types") or ()]
        if types and (a.issue_type or "").casefold() not in {t.casefold() for t in types}:
            return f"{a.key} is a {a.issue_type or '(no type)'}, not {' or '.join(repr(t) for t in types)}"
        wanted = jira.get("approval_status")
        if wanted and not a.approved_by:  # fail closed: who approved it cannot be shown
            return (f"{a.key}: its changelog shows no transition to {str(wanted)!r}, so who approved it and when "
                    "cannot be shown")
        return None

    def _servicenow(self, a: TicketAnswer, now: datetime) -> tuple[str, str | None]:
        """``(kind, reason)``: ``("ok", None)``, ``("fail", why)`` or ``("error", why)``."""
        sn = self.params.get("servicenow") or {}
        codes = {**DEFAULT_STATES, **{k: str(v) for k, v in (sn.get("states") or {}).items()}}
        names = {v: k for k, v in codes.items()}
        if (a.approval or "") != "approved":
            return "fail", f"{a.key} is not approved (approval {a.approval or '(empty)'!r})"
        if a.state not in names:
            return "fail", (f"{a.key} is in state {a.state!r}, not scheduled ({codes['scheduled']}) or implement "
                            f"({codes['implement']})")
        if not a.start or not a.end:
            return "fail", f"{a.key} has no planned start and end"
        start, end = parse_sn_time(a.start), parse_sn_time(a.end)
        if start is None or end is None:
            return "error", f"{a.key}: planned window {a.start!r} - {a.end!r} is not 'YYYY-MM-DD HH:MM:SS'"
        if not start <= now <= end:
            return "fail", f"{a.key} is planned {a.start} - {a.end} UTC; now is outside that window"
        return "ok", None

    def evaluate(self, ctx: Context) -> Outcome:
        request = request_of(self.params)
        keys = find_keys(ctx.change, request)
        places = ", ".join(request.sources)
        details: dict[str, Any] = {"keys": [], "sources": list(request.sources)}
        if not keys:
            return Outcome(Status.FAIL, f"no ticket key found (looked in: {places})", details)
        fact = ctx.facts.tickets(request)
        if fact is None:  # fail closed: a judge without the facts it needs cannot pass
            return Outcome(Status.ERROR, "the ticket answers were not gathered", details)
        verified: list[str] = []
        failed: list[str] = []
        errors: list[str] = []
        for system, key, sources in keys[:MAX_TICKET_KEYS]:
            a = fact.answer(system, key)
            entry: dict[str, Any] = {"system": system, "key": key, "found_in": list(sources)}
            if a is None:
                reason, kind = f"{key}: no answer was gathered", "error"
            elif a.outcome == "not_found":
                reason, kind = str(a.message), "fail"
            elif a.outcome != "found":
                reason, kind = str(a.message or f"{key}: {a.outcome}"), "error"
            elif system == "jira":
                why = self._jira(a)
                reason, kind = (why, "fail") if why else (
                    f"{key} is {a.status}" + (f" ({a.issue_type})" if a.issue_type else "")
                    + (f", approved by {a.approved_by} at {a.approved_at}" if a.approved_by else ""), "ok")
                entry.update(status=a.status, issue_type=a.issue_type)
                if a.approved_by:
                    entry.update(approved_by=a.approved_by, approved_at=a.approved_at)
            else:
                kind, why = self._servicenow(a, ctx.now)
                reason = why or f"{key} is approved, state {a.state}, planned {a.start} - {a.end} UTC"
                entry.update(state=a.state, approval=a.approval, start=a.start, end=a.end)
                if a.approvals is not None:
                    entry.update(approvals=a.approvals)
            if a is not None:
                entry.update(outcome=a.outcome, origin=a.origin, http_status=a.http_status)
            entry.update(verified=kind == "ok", reason=reason)
            details["keys"].append(entry)
            (verified if kind == "ok" else failed if kind == "fail" else errors).append(reason)
        skipped = [key for _s, key, _w in keys[MAX_TICKET_KEYS:]]
        if skipped:
            details["not_asked"] = skipped
            failed.append(f"{len(skipped)} more key(s) not asked (at most {MAX_TICKET_KEYS}): {', '.join(skipped)}")
        others = "; ".join(errors + failed)
        if verified:
            return Outcome(Status.PASS, "; ".join(verified) + (f" (not verified: {others})" if others else ""), details)
        if errors:
            return Outcome(Status.ERROR, "no ticket verified; " + others, details)
        return Outcome(Status.FAIL, "no ticket verified: " + others, details)
