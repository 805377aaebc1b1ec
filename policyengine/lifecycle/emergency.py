"""Emergency changes (break-glass): the policy's ``emergency:`` section, and what it does to a
judged change. Pure: no files, no network, no clock (``now`` is given).

A policy may let some people deploy in an emergency without some of its rules::

    emergency:
      declared_by: {teams: [oncall], users: [alice]}   # who may declare one
      trigger: {label: emergency}                      # a request label (or --emergency)
      requires: [reason, incident]                     # default: both
      may_waive: [peer-review, deploy-window]          # rule ids
      approve_within: 72h                              # post-facto approval deadline (h or d)
      approvers: {min_approvals: 1, from_teams: [security], exclude: [author, deployer]}

How an emergency is asked for, and by whom:

* ``check --emergency`` (or ``POLICYENGINE_EMERGENCY``), or the trigger label on the deployed
  request, only *asks* for the procedure. The declarer is always the change's deployer as the
  provider established it; never a name from a label, a variable or the command line. Under
  CI (``EmergencyRequest.require_verified``) the deployer must come from the code host's
  provider and from the CI actor (``GITHUB_TRIGGERING_ACTOR``, ``GITHUB_ACTOR``,
  ``GITLAB_USER_LOGIN``): a change file's deployer, or a merger the provider fell back to, cannot
  declare one. Outside CI a change file's deployer is accepted and recorded as self-declared.
* the reason comes from ``--reason TEXT`` (``POLICYENGINE_EMERGENCY_REASON``), else from the
  request's description (``Reason: ...``, up to ``Incident:`` or the end); the incident from
  ``--incident ID`` (``POLICYENGINE_EMERGENCY_INCIDENT``), else a request label
  ``incident:ID``, else ``Incident: ID`` in the description.

What the judge does (``apply``), after every rule and every waiver was judged:

* a declaration that is valid (an allowed declarer, every required item present) turns each
  ``may_waive`` rule that did not pass (``fail`` or ``error`` of a ``deny`` rule) into
  ``waived`` and records it. Every other rule keeps its status: an unwaivable failure still
  denies. An implicit rule ``emergency`` passes and says who declared it, why and what it waived;
* a declaration that is not valid (declarer not allowed, or not verified under CI; membership
  of the declarer's teams unknown; reason or incident missing; the policy has no ``emergency``
  section but ``--emergency`` was given) waives nothing, and the rule ``emergency`` fails (or
  is ``error`` when a fact to decide it is unknown): a deny that names the rule.

The rules the gate adds itself (``evidence``, ``policy-owners``) and ``emergency`` can never be
waived; ``policy validate`` refuses a ``may_waive`` that names them (exit 2, file:line:col).

An allowed emergency is decision ``allow`` with an ``emergency`` object (``Emergency.to_json``):
declarer, reason, incident, waived rules, ``due_at`` (``evaluated_at`` + ``approve_within``),
the approvers' rules and the logins excluded from approving. It needs post-facto approval
(``policyengine emergency approve``); ``emergency_status`` says where it stands.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from msgspec import Struct, structs

from policyengine.language import loader
from policyengine.errors import Problem
from policyengine.models import Enforcement, RuleResult, Status, iso_utc, parse_instant
from policyengine.lifecycle.waivers import UNWAIVABLE, UNWAIVABLE_TYPES

RULE_ID = "emergency"
RULE_TYPE = "emergency"
RULE_DESCRIPTION = ("An emergency change is declared by someone allowed to, with its reason and incident "
                    "(added by the gate when an emergency is asked for; never waivable).")
NEVER_WAIVABLE: dict[str, str] = {
    **UNWAIVABLE,
    RULE_ID: "the emergency rule judges the declaration itself",
}
REQUIREMENTS = ("reason", "incident")
EXCLUDABLE = ("author", "deployer", "committers")
CI_ACTOR_SOURCES = frozenset({"GITHUB_TRIGGERING_ACTOR", "GITHUB_ACTOR", "GITLAB_USER_LOGIN"})
"""Where a provider read the deployer from the CI itself (not a fallback such as the merger)."""
VERIFIED_FACT_SOURCES = frozenset({"github", "gitlab"})
MAX_APPROVE_WITHIN_HOURS = 30 * 24

# What ``emergency_status`` says of an allowed emergency.
APPROVED_ON_TIME = "approved on time"
APPROVED_LATE = "approved late"
OPEN = "open"
OVERDUE = "overdue"

_DURATION = re.compile(r"^([1-9][0-9]{0,4})([hd])$")
_INCIDENT_LABEL = re.compile(r"^incident[:/=]\s*(\S.*)$", re.IGNORECASE)
_INCIDENT_TEXT = re.compile(r"\bincident\s*:\s*([A-Za-z0-9][A-Za-z0-9._#/-]{0,99})", re.IGNORECASE)
_REASON_TEXT = re.compile(r"\breason\s*:\s*(.+?)\s*(?=\bincident\s*:|$)", re.IGNORECASE | re.DOTALL)
_MAX_TEXT = 500


def parse_duration(text: Any) -> timedelta | None:
    """``72h`` or ``3d`` -> timedelta; None when it is neither."""
    match = _DURATION.match(str(text).strip()) if isinstance(text, str) else None
    if not match:
        return None
    amount = int(match.group(1))
    return timedelta(hours=amount) if match.group(2) == "h" else timedelta(days=amount)


# -- the policy section -------------------------------------------------------------------------


class EmergencyPolicy(Struct, frozen=True):
    """The policy's ``emergency:`` section, validated."""

    users: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()
    label: str | None = None
    requires: tuple[str, ...] = REQUIREMENTS
    may_waive: tuple[str, ...] = ()
    approve_within: str = "72h"
    min_approvals: int = 1
    from_teams: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @property
    def deadline(self) -> timedelta:
        value = parse_duration(self.approve_within)
        assert value is not None  # noqa: S101 - validated when loaded
        return value

    def approvers_json(self) -> dict[str, Any]:
        return {"min_approvals": self.min_approvals, "from_teams": list(self.from_teams),
                "exclude": list(self.exclude)}

    def team_names(self) -> list[str]:
        """Teams whose membership the judge and the approval need (the provider fetches them)."""
        return list(dict.fromkeys([*self.teams, *self.from_teams]))


def build_policy(data: Any) -> EmergencyPolicy | None:
    """The section from a validated policy document (None when it has none)."""
    section = data.get("emergency") if isinstance(data, dict) else None
    if not isinstance(section, dict):
        return None
    declared = section.get("declared_by") or {}
    trigger = section.get("trigger") or {}
    approvers = section.get("approvers") or {}
    return EmergencyPolicy(
        users=tuple(declared.get("users") or ()), teams=tuple(declared.get("teams") or ()),
        label=trigger.get("label"), requires=tuple(section.get("requires", REQUIREMENTS)),
        may_waive=tuple(section.get("may_waive") or ()), approve_within=str(section["approve_within"]),
        min_approvals=int(approvers.get("min_approvals", 1)), from_teams=tuple(approvers.get("from_teams") or ()),
        exclude=tuple(approvers.get("exclude") or ()))


def check_section(data: Any, positions: loader.Positions, file: str) -> list[Problem]:
    """What the schema cannot check of ``emergency:``: ``may_waive`` names rules of the policy,
    never one the gate adds itself (did-you-mean for unknown ids); ``approve_within`` at most 30 days."""
    section = data.get("emergency") if isinstance(data, dict) else None
    if not isinstance(section, dict):
        return []

    def problem(path: tuple[str | int, ...], message: str) -> Problem:
        full = ("emergency", *path)
        line, column = positions.locate(full)
        return Problem(file, line, column, loader.format_path(full), message)

    rules = data.get("rules") if isinstance(data, dict) else None
    ids = [r["id"] for r in rules or [] if isinstance(r, dict) and isinstance(r.get("id"), str)]
    known = [i for i in ids if i not in NEVER_WAIVABLE]
    out: list[Problem] = []
    may_waive = section.get("may_waive")
    for j, rid in enumerate(may_waive if isinstance(may_waive, list) else []):
        if not isinstance(rid, str):
            continue
        if rid in NEVER_WAIVABLE:
            out.append(problem(("may_waive", j), f"the rule {rid!r} can never be waived: {NEVER_WAIVABLE[rid]}"))
        elif rid not in known:
            import difflib  # only for a mistake: a valid document does not import it

            close = difflib.get_close_matches(rid, known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            out.append(problem(("may_waive", j), f"no rule {rid!r} in the policy{hint} (its rules: "
                                                 f"{', '.join(known) or 'none'})"))
        else:
            rule = next(r for r in rules or [] if isinstance(r, dict) and r.get("id") == rid)
            if rule.get("type") in UNWAIVABLE_TYPES:
                out.append(problem(("may_waive", j), f"the rule {rid!r} ({rule.get('type')}) can never be waived"))
    within = parse_duration(section.get("approve_within"))
    if within is not None and within > timedelta(hours=MAX_APPROVE_WITHIN_HOURS):
        out.append(problem(("approve_within",), f"{section.get('approve_within')} is longer than 30 days: an "
                                                "emergency must be approved within 30 days (720h) at most"))
    return out


def check_rule_ids(data: Any, positions: loader.Positions, file: str) -> list[Problem]:
    """The rule id ``emergency`` is reserved for the rule the gate adds."""
    rules = data.get("rules") if isinstance(data, dict) else None
    out = []
    for i, rule in enumerate(rules if isinstance(rules, list) else []):
        if isinstance(rule, dict) and rule.get("id") == RULE_ID:
            line, column = positions.locate(("rules", i, "id"))
            out.append(Problem(file, line, column, loader.format_path(("rules", i, "id")),
                               f"the rule id {RULE_ID!r} is reserved for the emergency declaration, which the gate "
                               "judges itself; choose another id"))
    return out


# -- the request ----------------------------------------------------------------------------------


class EmergencyRequest(Struct, frozen=True):
    """What the command line asked for. It names nobody: the declarer is the change's deployer."""

    flag: bool = False
    """``--emergency``: the procedure was asked for on the command line."""
    reason: str | None = None
    incident: str | None = None
    require_verified: bool = False
    """Under CI: the declarer must be the CI actor as a code host's provider verified it."""
    verified_actor: str | None = None
    """The actor of the CI's verified ID token (``providers.oidc``): the declarer, whatever the
    CI variables say (on a re-run the token wins over ``GITHUB_TRIGGERING_ACTOR``)."""
    identity_checked: bool = False
    """The CI was asked for its ID token: without a verified one the declarer is not verified."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"flag": self.flag, "reason": self.reason, "incident": self.incident,
                               "require_verified": self.require_verified}
        if self.identity_checked:
            out["verified_actor"] = self.verified_actor
        return out


def _pr(change: Mapping[str, Any]) -> Mapping[str, Any]:
    pr = change.get("pull_request")
    return pr if isinstance(pr, Mapping) else {}


def _labels(change: Mapping[str, Any]) -> list[str]:
    labels = _pr(change).get("labels")
    return [str(x) for x in labels if isinstance(x, str)] if isinstance(labels, list) else []


def _clean(text: Any) -> str | None:
    if not isinstance(text, str):
        return None
    value = " ".join(text.split())
    return value[:_MAX_TEXT] or None


def requested_by(section: EmergencyPolicy | None, request: EmergencyRequest | None,
                 change: Mapping[str, Any]) -> str | None:
    """How the procedure was asked for (``--emergency`` or ``label NAME``), or None when it was not."""
    if request is not None and request.flag:
        return "--emergency"
    if section is not None and section.label:
        wanted = section.label.casefold()
        if any(label.casefold() == wanted for label in _labels(change)):
            return f"label {section.label}"
    return None


def reason_and_incident(request: EmergencyRequest | None,
                        change: Mapping[str, Any]) -> tuple[tuple[str | None, str | None], tuple[str | None, str | None]]:
    """``((reason, its source), (incident, its source))``: the command line first, then the request."""
    description = _pr(change).get("description")
    text = description if isinstance(description, str) else ""
    reason = _clean(request.reason) if request else None
    reason_source: str | None = "--reason" if reason else None
    if reason is None:
        match = _REASON_TEXT.search(text)
        reason = _clean(match.group(1)) if match else None
        reason_source = "the request's description" if reason else None
    incident = _clean(request.incident) if request else None
    incident_source: str | None = "--incident" if incident else None
    if incident is None:
        for label in _labels(change):
            found = _INCIDENT_LABEL.match(label.strip())
            if found and _clean(found.group(1)):
                incident, incident_source = _clean(found.group(1)), f"label {label.strip()}"
                break
    if incident is None:
        match = _INCIDENT_TEXT.search(text)
        if match:
            incident, incident_source = match.group(1), "the request's description"
    return (reason, reason_source), (incident, incident_source)


# -- judging ----------------------------------------------------------------------------------------


def _key(login: Any) -> str:
    return str(login).strip().casefold()


def excluded_logins(section: EmergencyPolicy, change: Mapping[str, Any],
                    declarer: str | None) -> tuple[dict[str, list[str]], list[str]]:
    """Who may not approve this emergency, with their roles, and the roles that could not be
    established (fail closed: the approval is then refused). The declarer is always excluded."""
    out: dict[str, list[str]] = {}
    unknown: list[str] = []

    def add(login: Any, role: str) -> None:
        if isinstance(login, str) and login.strip():
            roles = out.setdefault(_key(login), [])
            if role not in roles:
                roles.append(role)

    add(declarer, "declarer")
    commits = change.get("commits")
    commit_list = commits if isinstance(commits, list) and "commits" not in (change.get("unavailable") or {}) \
        else None
    if "deployer" in section.exclude:
        if isinstance(change.get("deployer"), str) and change["deployer"].strip():
            add(change["deployer"], "deployer")
        else:
            unknown.append("deployer: the change records no deployer")
    if "author" in section.exclude:
        author = _pr(change).get("author")
        if isinstance(author, str) and author.strip():
            add(author, "author")
        elif not _pr(change):
            # A direct push has no request: its commits' authors wrote the change.
            if commit_list is None:
                unknown.append("author: no request and no commit list")
            for c in commit_list or []:
                add(c.get("author") if isinstance(c, Mapping) else None, "author")
        else:
            unknown.append("author: the request names no author")
    if "committers" in section.exclude:
        if commit_list is None:
            unknown.append("committers: the change lists no commits")
        for c in commit_list or []:
            if not isinstance(c, Mapping) or not all(isinstance(c.get(k), str) and c[k].strip()
                                                     for k in ("author", "committer")):
                unknown.append("committers: a commit has no author or committer recorded")
                continue
            for who in [c["author"], c["committer"], *[x for x in c.get("co_authors") or [] if isinstance(x, str)]]:
                add(who, "committer")
    return out, list(dict.fromkeys(unknown))


def _declarer(section: EmergencyPolicy | None, request: EmergencyRequest | None,
              change: Mapping[str, Any]) -> tuple[str | None, Status, list[str], dict[str, Any]]:
    """``(declarer, status, problems, facts)`` of the declaration's "who"."""
    deployer = change.get("deployer")
    source = change.get("deployer_source")
    facts_source = change.get("facts_source")
    verified = facts_source in VERIFIED_FACT_SOURCES and source in CI_ACTOR_SOURCES
    if request is not None and request.identity_checked:
        # Only the CI's signed identity vouches for the declarer: a variable can be set by anyone.
        verified = request.verified_actor is not None
        if verified:
            deployer, source = request.verified_actor, "oidc"
        elif source in CI_ACTOR_SOURCES:
            source = f"{source} (no verified ID token)"
    facts: dict[str, Any] = {"declarer": deployer if isinstance(deployer, str) else None,
                             "declarer_source": source if isinstance(source, str) else None,
                             "declarer_verified": verified, "facts_source": facts_source}
    if "deployer" in (change.get("unavailable") or {}) or not isinstance(deployer, str) or not deployer.strip():
        return None, Status.ERROR, ["the deployer is unknown, so who declares the emergency cannot be told"], facts
    if request is not None and request.require_verified and not verified:
        where = (f"from {source}" if (facts_source in VERIFIED_FACT_SOURCES or request.identity_checked) and source
                 else "self-declared in a change file" if facts_source not in VERIFIED_FACT_SOURCES
                 else "of unknown origin")
        return deployer, Status.FAIL, [f"the declarer must be the CI actor as the code host's provider verified it; "
                                       f"the deployer {deployer} is {where}"], facts
    if section is None:
        return deployer, Status.PASS, [], facts
    if _key(deployer) in {_key(u) for u in section.users}:
        return deployer, Status.PASS, [], {**facts, "declarer_allowed_as": "user"}
    teams = change.get("teams")
    unknown_all = "teams" in (change.get("unavailable") or {}) or not isinstance(teams, Mapping)
    unknown: list[str] = []
    for team in section.teams:
        members = teams.get(team) if isinstance(teams, Mapping) else None
        if unknown_all or not isinstance(members, list):
            unknown.append(team)
        elif _key(deployer) in {_key(m) for m in members if isinstance(m, str)}:
            return deployer, Status.PASS, [], {**facts, "declarer_allowed_as": f"member of team {team}"}
    allowed = ", ".join([*section.users, *(f"team {t}" for t in section.teams)]) or "nobody"
    if unknown:
        return deployer, Status.ERROR, [f"whether {deployer} may declare an emergency could not be checked: the "
                                        f"membership of {', '.join(unknown)} is unknown"], facts
    return deployer, Status.FAIL, [f"{deployer} may not declare an emergency (declared_by: {allowed})"], facts


def _memberships(teams: Sequence[str], change: Mapping[str, Any]) -> dict[str, list[str] | None]:
    """The members of ``teams`` as the change records them (None: unknown)."""
    known = change.get("teams")
    unknown_all = "teams" in (change.get("unavailable") or {}) or not isinstance(known, Mapping)
    out: dict[str, list[str] | None] = {}
    for team in teams:
        members = known.get(team) if isinstance(known, Mapping) and not unknown_all else None
        out[team] = [m for m in members if isinstance(m, str)] if isinstance(members, list) else None
    return out


class Applied(Struct):
    """The results with the emergency applied, and the ``emergency`` object of the decision."""

    results: list[RuleResult]
    emergency: dict[str, Any] | None = None


def _rule(status: Status, message: str, details: dict[str, Any]) -> RuleResult:
    return RuleResult(id=RULE_ID, type=RULE_TYPE, status=status, enforcement=Enforcement.DENY, message=message,
                      controls=("CC8.1",), description=RULE_DESCRIPTION, details=details)


def apply(section: EmergencyPolicy | None, request: EmergencyRequest | None, results: Sequence[RuleResult],
          change: Mapping[str, Any], now: datetime) -> Applied:
    """Apply an emergency, when one was asked for, to judged ``results`` (see the module docstring)."""
    how = requested_by(section, request, change)
    out = Applied(results=list(results))
    if how is None:
        return out
    declarer, status, problems, facts = _declarer(section, request, change)
    (reason, reason_source), (incident, incident_source) = reason_and_incident(request, change)
    if section is None:
        status, problems = Status.FAIL, ["the policy defines no emergency procedure (no `emergency:` section)"]
    else:
        for item, value in (("reason", reason), ("incident", incident)):
            if item in section.requires and not value:
                where = ("--reason TEXT, or `Reason: ...` in the request's description" if item == "reason"
                         else "--incident ID, a request label incident:ID, or `Incident: ID` in the description")
                problems.append(f"the emergency has no {item} ({where})")
                if status is Status.PASS:
                    status = Status.FAIL
    record: dict[str, Any] = {
        "requested_by": how, **facts, "reason": reason, "reason_source": reason_source,
        "incident": incident, "incident_source": incident_source, "declared_at": iso_utc(now),
        "require_verified": bool(request and request.require_verified),
    }
    if request is not None and request.identity_checked:  # replay judges the same declarer
        record["identity_checked"] = True
    if section is not None:
        record.update({"may_waive": list(section.may_waive), "approve_within": section.approve_within,
                       "approvers": section.approvers_json()})
    if status is not Status.PASS or section is None:
        record.update({"accepted": False, "problems": problems, "waived": [], "approval_required": False,
                       "due_at": None})
        out.results.append(_rule(status, "emergency refused: " + "; ".join(problems), {"emergency": record}))
        out.emergency = record
        return out
    waived: list[str] = []
    short = f"incident {incident}" if incident else "no incident"
    for i, r in enumerate(out.results):
        if r.id not in section.may_waive or r.id in NEVER_WAIVABLE or r.type in UNWAIVABLE_TYPES:
            continue
        if r.enforcement is not Enforcement.DENY or r.status not in (Status.FAIL, Status.ERROR):
            continue
        waived.append(r.id)
        note = {"declarer": declarer, "reason": reason, "incident": incident, "original_status": r.status.value,
                "original_message": r.message}
        out.results[i] = structs.replace(
            r, status=Status.WAIVED, details={**r.details, "emergency": note},
            message=f"EMERGENCY: waived (declared by {declarer}, {short}: {reason or 'no reason given'}); "
                    f"without it: {r.message}")
    blocked = [r.id for r in out.results if r.enforcement is Enforcement.DENY and r.status in (Status.FAIL, Status.ERROR)]
    excluded, unknown = excluded_logins(section, change, declarer)
    due = now + section.deadline
    record.update({"accepted": True, "problems": [], "waived": waived, "approval_required": not blocked,
                   "due_at": iso_utc(due) if not blocked else None,
                   "excluded": excluded, "excluded_unknown": unknown,
                   "approver_teams": _memberships(section.from_teams, change)})
    who = f"{declarer} ({facts['declarer_source'] or 'self-declared'}" + (
        ", verified)" if facts["declarer_verified"] else ", NOT verified by a code host)")
    message = (f"emergency declared by {who}, {short}: {reason or 'no reason given'}; waived: "
               f"{', '.join(waived) or 'nothing'}")
    if blocked:
        message += f"; still denied by rules an emergency may not waive: {', '.join(blocked)}"
    else:
        message += f"; post-facto approval due by {iso_utc(due)}"
    out.results.append(_rule(Status.PASS, message, {"emergency": record}))
    out.emergency = record
    return out


# -- after the deploy: approvals and status --------------------------------------------------------


def approver_problems(emergency: Mapping[str, Any], login: str, deployers: Iterable[str] = ()) -> list[str]:
    """Why ``login`` may not approve this emergency (empty: they may).

    Segregation of duties: not the declarer, nor anyone in the roles ``approvers.exclude`` names
    (recorded in the emergency when it was judged; ``deployers`` adds whoever recorded an outcome
    of it, when ``deployer`` is excluded). A role that could not be established refuses every
    approver (fail closed). ``from_teams``: a member of one of them, by the change's ``teams`` as
    recorded in the emergency when it was judged (``approver_teams``); unknown membership refuses.
    """
    me = _key(login)
    out: list[str] = []
    raw_excluded = emergency.get("excluded")
    excluded: Mapping[str, Any] = raw_excluded if isinstance(raw_excluded, Mapping) else {}
    roles = list(excluded.get(me) or [])
    if _key(emergency.get("declarer") or "") == me and "declarer" not in roles:
        roles.append("declarer")
    approvers = emergency.get("approvers") if isinstance(emergency.get("approvers"), Mapping) else {}
    exclude = list(approvers.get("exclude") or []) if isinstance(approvers, Mapping) else []
    if "deployer" in exclude and any(_key(d) == me for d in deployers) and "deployer" not in roles:
        roles.append("deployer")
    if roles:
        out.append(f"{login} is the change's {' and '.join(roles)}: an emergency is approved by someone else")
    for gap in emergency.get("excluded_unknown") or []:
        out.append(f"segregation of duties cannot be shown ({gap})")
    teams_wanted = list(approvers.get("from_teams") or []) if isinstance(approvers, Mapping) else []
    if teams_wanted:
        raw_teams = emergency.get("approver_teams")
        recorded: Mapping[str, Any] = raw_teams if isinstance(raw_teams, Mapping) else {}
        member = False
        unknown = []
        for team in teams_wanted:
            members = recorded.get(team)
            if not isinstance(members, list):
                unknown.append(team)
            elif me in {_key(m) for m in members if isinstance(m, str)}:
                member = True
        if not member:
            if unknown:
                out.append(f"whether {login} is a member of {', '.join(teams_wanted)} cannot be checked: the "
                           f"membership of {', '.join(unknown)} was not recorded with the change")
            else:
                out.append(f"{login} is not a member of {', '.join(teams_wanted)} (approvers.from_teams)")
    return out


def _emergency_of(value: Mapping[str, Any]) -> Mapping[str, Any]:
    """The emergency object of a decision document, or the object itself."""
    inner = value.get("emergency")
    return inner if isinstance(inner, Mapping) else value


def counted_approvals(decision_or_emergency: Mapping[str, Any], approvals: Iterable[Mapping[str, Any]],
                      deployers: Iterable[str] = ()) -> list[Mapping[str, Any]]:
    """The approval records (``record.json`` documents of kind ``emergency-approval``) that count,
    in recorded order: verified (made by the CI actor; a self-asserted approval never counts),
    by someone allowed to approve, one per person (the first). ``deployers``: whoever recorded
    an outcome of the evaluation (excluded with the deployer)."""
    emergency = _emergency_of(decision_or_emergency)
    deployers = list(deployers)
    seen: set[str] = set()
    out = []
    for doc in sorted(approvals, key=lambda d: str(d.get("recorded_at") or "")):
        if doc.get("kind") != "emergency-approval" or doc.get("approval") != "approved":
            continue
        login = doc.get("by")
        if doc.get("by_verified") is not True or not isinstance(login, str) or _key(login) in seen:
            continue
        if approver_problems(emergency, login, deployers):
            continue
        seen.add(_key(login))
        out.append(doc)
    return out


def emergency_status(decision_or_emergency: Mapping[str, Any], approval_records: Iterable[Mapping[str, Any]],
                     now: datetime, deployers: Iterable[str] = ()) -> str:
    """Where an allowed emergency stands: ``approved on time``, ``approved late``, ``open`` or ``overdue``.

    ``decision_or_emergency``: a decision document (``decision.json``) holding an ``emergency``
    object, or that object itself. ``approval_records``: the ``record.json`` documents of the
    ``emergency-approval`` records about it (the caller selects them by the evaluation's id and
    SHA-256, and verifies them); ``deployers``: who recorded an outcome of it. Only verified approvals by eligible people count (``counted_approvals``);
    it is approved when ``approvers.min_approvals`` of them are recorded, on time when the last
    of those was recorded at or before ``due_at``. Raises ValueError for a decision that is not
    an allowed emergency (nothing to approve).
    """
    emergency = _emergency_of(decision_or_emergency)
    if emergency.get("approval_required") is not True or not isinstance(emergency.get("due_at"), str):
        raise ValueError("not an allowed emergency: nothing needs approval")
    due = parse_instant(str(emergency["due_at"]), option="due_at")
    approvers = emergency.get("approvers") if isinstance(emergency.get("approvers"), Mapping) else {}
    need = approvers.get("min_approvals", 1) if isinstance(approvers, Mapping) else 1
    need = need if isinstance(need, int) and need > 0 else 1
    counted = counted_approvals(decision_or_emergency, approval_records, deployers)
    if len(counted) >= need:
        closed = parse_instant(str(counted[need - 1].get("recorded_at")), option="recorded_at")
        return APPROVED_ON_TIME if closed <= due else APPROVED_LATE
    return OVERDUE if now > due else OPEN
