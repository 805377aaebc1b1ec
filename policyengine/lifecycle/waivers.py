"""Waivers: a time-boxed exception to one rule, approved by a policy owner.

A waiver is written in the policy (``waivers:``) or in a waivers file (``check --waivers
FILE``, ``schemas/waivers.schema.json``), both read from the trusted policy source::

    waivers:
      - rule: deploy-window
        scope: {repository: acme/payments, environment: production, paths: ["docs/**"]}
        reason: "docs-only deploys are exempt until the new pipeline lands"
        approved_by: carol
        approved_at: 2026-11-20
        expires: 2027-01-31

Validity (checked when the policy or the waivers file is loaded, so ``policy validate`` finds
it too; each problem is one line with file:line:col, exit 2):

* ``rule`` names a rule of the policy (an unknown id gets "did you mean"); the rules the gate
  adds itself, ``evidence`` and ``policy-owners``, can never be waived;
* ``approved_at`` and ``expires`` are each a date (``YYYY-MM-DD``) or a time with a zone
  (``2027-01-31T18:00:00Z``); a time without a zone is refused. ``expires`` must be after
  ``approved_at`` and at most ``waiver_max_days`` (a policy key, default 90) after it. For
  this limit a date counts as the end of that day (UTC), so ``approved_at: 2026-11-20`` allows
  ``expires: 2027-02-18`` at most;
* ``approved_by`` is one of the policy's owners, when it names any: a user of
  ``policy_owners.users``; when the policy names owner teams, a login outside ``users`` is
  accepted at load time and checked against the change's team membership at run time (the
  gate refuses a waiver approved by someone known not to be an owner with exit 2, and the
  judge ignores one whose approver cannot be verified);
* ``scope`` names at least one of ``repository``, ``environment`` (each matched exactly) and
  ``paths`` (globs; the change is in scope only when every changed file matches one of them,
  including the files of every other request in its range; an unknown or empty file list is
  out of scope).

When judging (``apply``, pure: ``now`` is given), a waiver covers its rule only while it holds:
from ``approved_at`` (a date: the start of that day, UTC) up to ``expires`` (a date: valid
through the end of that day, UTC; a time: until that instant). An expired waiver, or one not yet
valid, is ignored and reported (a note in the decision, and the rule's details). A waiver only
changes a rule that did not pass (``fail``, ``error``, or ``warn``) into ``waived``, which does
not deny; a rule that passed or was skipped keeps its status and the waiver is recorded as
"not needed". Every waiver considered is listed in the decision with what became of it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

from msgspec import Struct, field, structs

from policyengine.language import loader
from policyengine.errors import Problem
from policyengine.globs import glob_match, static_path_problem
from policyengine.models import RuleResult, Status, iso_utc

DEFAULT_MAX_DAYS = 90
UNWAIVABLE = {
    "evidence": "the gate adds the evidence rule itself (a deploy is never allowed without its evidence)",
    "policy-owners": "the policy owners' approval guards the policy and its waivers",
}
UNWAIVABLE_TYPES = frozenset({"policy_owners", "evidence"})

# What became of a waiver in one evaluation.
APPLIED = "applied"
NOT_NEEDED = "not_needed"
EXPIRED = "expired"
NOT_YET_VALID = "not_yet_valid"
OUT_OF_SCOPE = "out_of_scope"
APPROVER_NOT_OWNER = "approver_not_owner"
APPROVER_UNVERIFIED = "approver_unverified"
REFUSED = "refused"

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class Moment(Struct, frozen=True):
    """A date or a zoned time as written; ``start``/``end`` are the instants it stands for."""

    text: str
    start: datetime
    """A date: its first instant (UTC midnight); a time: itself."""
    end: datetime
    """A date: the first instant after it (next UTC midnight); a time: itself."""
    is_date: bool


def parse_moment(value: Any) -> Moment:
    """Parse ``YYYY-MM-DD`` or an ISO 8601 time with a zone; raise ValueError saying why not."""
    text = str(value).strip()
    if _DATE.match(text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a date") from None
        start = datetime.combine(day, time(0), tzinfo=timezone.utc)
        return Moment(text, start, start + timedelta(days=1), True)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither a date (YYYY-MM-DD) nor an ISO 8601 time with a zone") from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone (add Z or an offset, or give a date)")
    return Moment(text, moment, moment, False)


class Waiver(Struct, frozen=True):
    """One waiver, validated."""

    rule: str
    reason: str
    approved_by: str
    approved_at: Moment
    expires: Moment
    repository: str | None = None
    environment: str | None = None
    paths: tuple[str, ...] | None = None
    source: str = "policy"
    """Where it is written: ``policy`` or the waivers file's name."""
    index: int = 0
    line: int | None = None
    file: str = ""
    """The file as named when loaded (for ``file:line`` in problems found at run time)."""

    @property
    def label(self) -> str:
        """``waivers[0] (policy.yml line 12)``: where a person finds it."""
        where = f" ({self.source}" + (f" line {self.line}" if self.line else "") + ")"
        return f"waivers[{self.index}]{where}"

    def scope_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.repository is not None:
            out["repository"] = self.repository
        if self.environment is not None:
            out["environment"] = self.environment
        if self.paths is not None:
            out["paths"] = list(self.paths)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "scope": self.scope_json(), "reason": self.reason,
                "approved_by": self.approved_by, "approved_at": self.approved_at.text,
                "expires": self.expires.text, "expires_at": iso_utc(self.expires.end), "source": self.source,
                "index": self.index}


class WaiverUse(Struct, frozen=True):
    """What became of one waiver in one evaluation."""

    waiver: Waiver
    status: str
    why: str
    rule_status: str | None = None
    """The rule's status before the waiver (or the status it kept)."""

    def to_json(self) -> dict[str, Any]:
        out = {**self.waiver.to_json(), "status": self.status, "why": self.why}
        if self.rule_status is not None:
            out["rule_status"] = self.rule_status
        return out


# -- validation --------------------------------------------------------------------------------


class Owners(Struct):
    """The policy's owners, as far as a waiver's approver is concerned."""

    users: frozenset[str] = frozenset()
    teams: tuple[str, ...] = ()

    @property
    def named(self) -> bool:
        return bool(self.users or self.teams)

    def describe(self) -> str:
        return ", ".join([*sorted(self.users), *(f"team {t}" for t in self.teams)])


def owners_of(document: Mapping[str, Any]) -> Owners:
    owners = document.get("policy_owners")
    if not isinstance(owners, dict):
        return Owners()
    return Owners(frozenset(str(u) for u in owners.get("users") or []), tuple(str(t) for t in owners.get("teams") or []))


def check_waivers(items: Any, positions: loader.Positions, *, file: str, prefix: tuple[str | int, ...],
                  rule_ids: Sequence[str], owners: Owners, max_days: int) -> list[Problem]:
    """What the schema cannot check of a list of waivers (assumed to have the schema's shapes
    where the schema accepted them; anything else is skipped here)."""
    if not isinstance(items, list):
        return []

    def problem(path: tuple[str | int, ...], message: str) -> Problem:
        full = prefix + path
        line, column = positions.locate(full)
        return Problem(file, line, column, loader.format_path(full), message)

    out: list[Problem] = []
    known = [r for r in rule_ids if r not in UNWAIVABLE]
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        rule = item.get("rule")
        if isinstance(rule, str):
            if rule in UNWAIVABLE:
                out.append(problem((i, "rule"), f"the rule {rule!r} can never be waived: {UNWAIVABLE[rule]}"))
            elif rule not in known:
                import difflib  # only for a mistake: a valid document does not import it

                close = difflib.get_close_matches(rule, known, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                listed = ", ".join(known) or "none"
                out.append(problem((i, "rule"), f"no rule {rule!r} in the policy{hint} (its rules: {listed})"))
        moments: dict[str, Moment] = {}
        for key in ("approved_at", "expires"):
            if key in item and isinstance(item[key], str):
                try:
                    moments[key] = parse_moment(item[key])
                except ValueError as exc:
                    out.append(problem((i, key), str(exc)))
        start, end = moments.get("approved_at"), moments.get("expires")
        if start is not None and end is not None:
            if end.end <= start.start:
                out.append(problem((i, "expires"), f"expires {end.text} is not after approved_at {start.text}"))
            else:
                # For the limit a date counts as the end of its day, on both sides.
                latest = start.end + timedelta(days=max_days)
                if end.end > latest:
                    days = (end.end - start.end).total_seconds() / 86400
                    shown = f"{days:.0f}" if days == int(days) else f"{days:.1f}"
                    out.append(problem((i, "expires"),
                                       f"expires {end.text} lies {shown} days after approved_at {start.text}; "
                                       f"a waiver may last at most {max_days} days (waiver_max_days)"))
        approver = item.get("approved_by")
        if isinstance(approver, str) and owners.named and approver not in owners.users and not owners.teams:
            out.append(problem((i, "approved_by"), f"{approver!r} is not a policy owner (owners: "
                                                   f"{owners.describe()}); only a policy owner may approve a waiver"))
        scope = item.get("scope")
        if isinstance(scope, dict) and isinstance(scope.get("paths"), list):
            for j, glob in enumerate(scope["paths"]):
                trouble = static_path_problem(glob) if isinstance(glob, str) else None
                if trouble:
                    out.append(problem((i, "scope", "paths", j), trouble))
    return out


def build_waivers(items: Any, positions: loader.Positions, *, prefix: tuple[str | int, ...],
                  source: str, file: str = "") -> tuple[Waiver, ...]:
    """Waivers from validated items (``check_waivers`` and the schema found nothing)."""
    out: list[Waiver] = []
    for i, item in enumerate(items if isinstance(items, list) else []):
        scope = item.get("scope") or {}
        paths = scope.get("paths")
        out.append(Waiver(
            rule=item["rule"], reason=item["reason"], approved_by=item["approved_by"],
            approved_at=parse_moment(item["approved_at"]), expires=parse_moment(item["expires"]),
            repository=scope.get("repository"), environment=scope.get("environment"),
            paths=tuple(paths) if isinstance(paths, list) else None, source=source, index=i,
            line=positions.locate((*prefix, i, "approved_by"))[0], file=file or source))
    return tuple(out)


# -- judging (pure) ----------------------------------------------------------------------------


def approver_status(waiver: Waiver, owners: Owners, change: Mapping[str, Any]) -> tuple[str | None, str]:
    """``(None, why)`` when the approver is an owner (or the policy names none); otherwise
    ``(APPROVER_NOT_OWNER, why)`` when the change's team membership shows they are not, or
    ``(APPROVER_UNVERIFIED, why)`` when it cannot tell (fail closed: not applied)."""
    who = waiver.approved_by
    if not owners.named:
        return None, "the policy names no owners"
    if who in owners.users:
        return None, f"{who} is a policy owner"
    teams = change.get("teams")
    unknown_all = "teams" in (change.get("unavailable") or {}) or not isinstance(teams, Mapping)
    unknown: list[str] = []
    for team in owners.teams:
        members = teams.get(team) if isinstance(teams, Mapping) else None
        if unknown_all or not isinstance(members, list):
            unknown.append(team)
        elif who in members:
            return None, f"{who} is a member of the owner team {team}"
    if unknown:
        return APPROVER_UNVERIFIED, (f"whether {who} is a policy owner could not be checked: the membership of "
                                     f"{', '.join(unknown)} is unknown")
    return APPROVER_NOT_OWNER, f"{who} is not a policy owner (owners: {owners.describe()})"


def _changed_files(change: Mapping[str, Any]) -> tuple[list[str] | None, str]:
    """Every file the change ships (the deployed request's and every request of its range),
    or None with the reason when any list is unknown."""
    if "files_changed" in (change.get("unavailable") or {}):
        return None, "the changed files could not be read"
    files = change.get("files_changed")
    if not isinstance(files, list):
        return None, "the change does not list its changed files"
    out = [f for f in files if isinstance(f, str)]
    if len(out) != len(files):
        return None, "the change's file list holds a value that is not a path"
    rng = change.get("range") or {}
    deployed = (change.get("pull_request") or {}).get("number") if isinstance(change.get("pull_request"), dict) \
        else None
    for other in (rng.get("pull_requests") or []) if isinstance(rng, dict) else []:
        if not isinstance(other, dict) or other.get("number") == deployed:
            continue
        more = other.get("files")
        if not isinstance(more, list):
            return None, f"the files of #{other.get('number')} in the change's range are unknown"
        out += [f for f in more if isinstance(f, str)]
    if isinstance(rng, dict):
        orphans = [c for c in rng.get("commits") or [] if isinstance(c, dict) and c.get("pull_request") is None
                   and c.get("sha") != change.get("commit")]
        if orphans:
            return None, "the range holds commits without a pull request, whose files are unknown"
    return out, ""


def in_scope(waiver: Waiver, change: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether the change lies inside the waiver's scope, and why not."""
    if waiver.repository is not None and change.get("repository") != waiver.repository:
        return False, f"the change is to repository {change.get('repository')!r}, not {waiver.repository!r}"
    if waiver.environment is not None and change.get("environment") != waiver.environment:
        return False, f"the change deploys to {change.get('environment')!r}, not {waiver.environment!r}"
    if waiver.paths is not None:
        files, why = _changed_files(change)
        if files is None:
            return False, f"{why}, so it is out of the waiver's paths"
        if not files:
            return False, "the change lists no changed file, so it is out of the waiver's paths"
        outside = [f for f in files if not any(glob_match(g, f) for g in waiver.paths)]
        if outside:
            more = f" and {len(outside) - 3} more" if len(outside) > 3 else ""
            return False, f"{', '.join(outside[:3])}{more} outside {', '.join(waiver.paths)}"
    return True, "in scope"


def _when(waiver: Waiver, now: datetime) -> tuple[str | None, str]:
    if now < waiver.approved_at.start:
        return NOT_YET_VALID, f"not valid before {waiver.approved_at.text} (approved_at)"
    if now >= waiver.expires.end:
        return EXPIRED, f"expired at {iso_utc(waiver.expires.end)} (expires {waiver.expires.text})"
    return None, ""


_NOT_PASSED = (Status.FAIL, Status.ERROR, Status.WARN)
_REPORTED = (EXPIRED, NOT_YET_VALID, APPROVER_UNVERIFIED, APPROVER_NOT_OWNER, REFUSED)


class Applied(Struct):
    """The results with every waiver applied, what became of each, and the notes to report."""

    results: list[RuleResult]
    uses: list[WaiverUse] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def apply(waivers: Iterable[Waiver], results: Sequence[RuleResult], change: Mapping[str, Any], now: datetime,
          owners: Owners) -> Applied:
    """Apply ``waivers`` to ``results``: the first waiver that holds, covers the change and
    names a rule that did not pass turns that rule ``waived``. Pure."""
    
    out = Applied(results=list(results))
    index = {r.id: i for i, r in enumerate(out.results)}
    for waiver in waivers:
        i = index.get(waiver.rule)
        target = out.results[i] if i is not None else None
        status: str | None
        if waiver.rule in UNWAIVABLE or target is None or target.type in UNWAIVABLE_TYPES:
            status, why = REFUSED, (f"the rule {waiver.rule!r} can never be waived" if target is not None or
                                    waiver.rule in UNWAIVABLE else f"the policy has no rule {waiver.rule!r}")
        else:
            status, why = _when(waiver, now)
            if status is None:
                status, why = approver_status(waiver, owners, change)
            if status is None:
                fits, why = in_scope(waiver, change)
                status = None if fits else OUT_OF_SCOPE
        rule_status = target.status.value if target is not None else None
        if status is None and target is not None and i is not None:
            if target.status not in _NOT_PASSED:
                status, why = NOT_NEEDED, f"the rule did not need it (status {target.status.value})"
            else:
                status = APPLIED
                why = f"{target.status.value} waived"
                record = {**waiver.to_json(), "original_status": target.status.value,
                          "original_message": target.message}
                details = {**target.details, "waiver": record}
                message = (f"waived until {waiver.expires.text} (approved by {waiver.approved_by}: "
                           f"{waiver.reason}); without it: {target.message}")
                out.results[i] = structs.replace(target, status=Status.WAIVED, message=message,
                                                     details=details)
        assert status is not None  # noqa: S101
        use = WaiverUse(waiver, status, why, rule_status)
        out.uses.append(use)
        if status in _REPORTED:
            out.notes.append(f"waiver {waiver.label} for {waiver.rule} ignored: {why}")
        if status not in (APPLIED, NOT_NEEDED) and target is not None and i is not None \
                and target.status in _NOT_PASSED:
            ignored = [*out.results[i].details.get("waivers_ignored", []), use.to_json()]
            out.results[i] = structs.replace(out.results[i], details={**out.results[i].details,
                                                                          "waivers_ignored": ignored})
    return out


def check_approvers(waivers: Sequence[Waiver], document: Mapping[str, Any], change: Mapping[str, Any]) -> None:
    """A waiver approved by someone the change's team membership shows is no policy owner is
    invalid (InvalidInputError, exit 2); one whose approver cannot be checked is ignored by the
    judge (fail closed). ``document``: the policy as written (its ``policy_owners``)."""
    from policyengine.errors import InvalidInputError, Problem

    owners = owners_of(document)
    problems = []
    for waiver in waivers:
        status, why = approver_status(waiver, owners, change)
        if status == APPROVER_NOT_OWNER:
            problems.append(Problem(waiver.file or waiver.source, waiver.line, None,
                                    f"waivers[{waiver.index}].approved_by",
                                    f"{why}; only a policy owner may approve a waiver"))
    if problems:
        raise InvalidInputError(problems, what="waivers", hint="a waiver must be approved by a policy owner")

