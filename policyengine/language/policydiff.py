"""Compare two policies and name every edit that weakens, strengthens or leaves a control.

``diff(old, new)`` returns one ``Finding`` per edit, in policy order. Its ``direction`` is:

* ``weaker``: the new policy lets through something the old one stopped (fewer approvals, an
  exclusion removed, a team widened, a window widened, a freeze removed, deny -> warn, a rule
  removed or its ``when`` narrowed, ``applies_to`` narrowed, retention lowered, ...);
* ``undecided``: the direction cannot be decided (two different globs, two cron expressions,
  another time zone, a key this version does not know). It counts as a weakening and says so,
  because a reviewer has to look at it;
* ``stronger``: the opposite of weaker;
* ``neutral``: nothing a change is judged by (descriptions, controls, names, order).

Notification targets (``notify:``, one or a list) are matched by ``url_env``: a target removed
(or renamed), ``required`` or ``include_not_applicable`` turned off weaken; a target added or
turned required strengthens; another ``format`` is undecided (the receiver may no longer
understand it).

Waivers are matched by rule and scope: a new waiver (or a new scope) and a later expiry
weaken; a removed waiver and an earlier expiry strengthen; a higher ``waiver_max_days``
weakens. The emergency section: adding it weakens, removing it strengthens; inside it a wider
``declared_by`` or ``may_waive``, fewer ``requires``, a longer ``approve_within``, fewer
approvers, fewer excluded roles or a wider ``from_teams`` weaken (``_EMERGENCY_KEYS``). Reordering rules or list items is not an edit. ``weakened(findings)`` says whether any finding
is weaker or undecided: ``policy diff`` exits 1 then, and ``extends`` refuses such an edit.
The direction of each key is in ``_RULE_KEYS`` and ``_TOP_KEYS``: a new key needs an entry
there (a test checks that every key of the policy schema has one).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from msgspec import Struct

WEAKER, STRONGER, NEUTRAL, UNDECIDED = "weaker", "stronger", "neutral", "undecided"


class Finding(Struct, frozen=True):
    """One edit: where (``rules[peer-review].min_approvals``), which way, and why."""

    path: str
    direction: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "direction": self.direction, "message": self.message}


def weakened(findings: Sequence[Finding]) -> bool:
    """Whether any finding weakens the policy (undecided edits count as weakenings)."""
    return any(f.direction in (WEAKER, UNDECIDED) for f in findings)


# -- comparing one value ------------------------------------------------------------------------

Compare = Callable[[Any, Any], tuple[str, str]]
_MISSING = object()


def _show(value: Any) -> str:
    if value is _MISSING:
        return "(absent)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def _higher_is_stronger(what: str, default: Any = _MISSING) -> Compare:
    def compare(old: Any, new: Any) -> tuple[str, str]:
        a = default if old is _MISSING else old
        b = default if new is _MISSING else new
        if a is _MISSING or b is _MISSING:
            return (STRONGER, f"{what} added") if a is _MISSING else (WEAKER, f"{what} removed")
        if b < a:
            return WEAKER, f"{what} lowered"
        return (STRONGER, f"{what} raised") if b > a else (NEUTRAL, "same value")
    return compare


def _true_is_stronger(what: str, default: bool) -> Compare:
    def compare(old: Any, new: Any) -> tuple[str, str]:
        a = default if old is _MISSING else bool(old)
        b = default if new is _MISSING else bool(new)
        if a == b:
            return NEUTRAL, "same effect"
        return (STRONGER, f"{what} turned on") if b else (WEAKER, f"{what} turned off")
    return compare


def _set(value: Any) -> set[str] | None:
    if value is _MISSING or value is None:
        return None
    return {str(v) for v in value} if isinstance(value, list) else {str(value)}


def _more_is_stronger(what: str) -> Compare:
    """A list where each item adds a requirement (exclusions, required checks, sections, globs)."""
    def compare(old: Any, new: Any) -> tuple[str, str]:
        a, b = _set(old) or set(), _set(new) or set()
        if a == b:
            return NEUTRAL, "same items"
        if b > a:
            return STRONGER, f"{what} added: {', '.join(sorted(b - a))}"
        if b < a:
            return WEAKER, f"{what} removed: {', '.join(sorted(a - b))}"
        return UNDECIDED, (f"{what} changed (removed {', '.join(sorted(a - b))}; added "
                           f"{', '.join(sorted(b - a))}): cannot tell whether this is weaker")
    return compare


def _fewer_is_stronger(what: str) -> Compare:
    """A list that restricts (only these teams, only these environments): absent = everyone."""
    def compare(old: Any, new: Any) -> tuple[str, str]:
        a, b = _set(old), _set(new)
        if a == b:
            return NEUTRAL, "same items"
        if a is None:
            return STRONGER, f"{what} restricted to {', '.join(sorted(b or ()))}"
        if b is None:
            return WEAKER, f"{what} no longer restricted (was {', '.join(sorted(a))})"
        if b < a:
            return STRONGER, f"{what} narrowed: {', '.join(sorted(a - b))} removed"
        if b > a:
            return WEAKER, f"{what} widened: {', '.join(sorted(b - a))} added"
        return UNDECIDED, (f"{what} changed (removed {', '.join(sorted(a - b))}; added "
                           f"{', '.join(sorted(b - a))}): cannot tell whether this is weaker")
    return compare


def _more_is_weaker(what: str) -> Compare:
    """A list where each item lets more through (bots whose approvals count)."""
    inner = _more_is_stronger(what)

    def compare(old: Any, new: Any) -> tuple[str, str]:
        direction, message = inner(old, new)
        return {STRONGER: WEAKER, WEAKER: STRONGER}.get(direction, direction), message
    return compare


def _scope(what: str) -> Compare:
    """Where a rule or policy applies: absent = everywhere; fewer items = narrower = weaker."""
    inner = _fewer_is_stronger(what)

    def compare(old: Any, new: Any) -> tuple[str, str]:
        direction, message = inner(old, new)
        flipped = {STRONGER: WEAKER, WEAKER: STRONGER}.get(direction, direction)
        message = (message.replace("restricted to", "narrowed to").replace("no longer restricted", "widened to all")
                   .replace("narrowed:", "narrowed (applies less):").replace("widened:", "widened (applies more):"))
        return flipped, message
    return compare


_PLATFORM_CREATORS = frozenset({"github-actions", "gitlab"})
"""The creators ``checks_passed`` trusts for check runs and jobs without ``creators``."""


def _creators(old: Any, new: Any) -> tuple[str, str]:
    """``checks_passed.creators``: absent = check runs and jobs of the platform, statuses from anyone.

    A list of the platform's own creators only narrows that (statuses from anyone no longer
    count); a list naming another app or login also trusts it for check runs: undecided.
    """
    a = {x.casefold() for x in _set(old) or ()} if _set(old) is not None else None
    b = {x.casefold() for x in _set(new) or ()} if _set(new) is not None else None
    if a == b:
        return NEUTRAL, "same items"
    if a is None or b is None:
        listed = b or a or set()
        if listed <= _PLATFORM_CREATORS:
            if a is None:
                who = ", ".join(sorted(listed)) or "nobody"
                return STRONGER, f"checks counted only from {who} (statuses from anyone no longer)"
            return WEAKER, "checks counted from the default creators again (statuses from anyone)"
        return UNDECIDED, (f"creators {'set to' if a is None else 'dropped, was'} {', '.join(sorted(listed))}: trusts "
                           "other creators than the default's for check runs, fewer for statuses; cannot tell "
                           "whether this is weaker")
    if b < a:
        return STRONGER, f"fewer creators trusted: {', '.join(sorted(a - b))} removed"
    if b > a:
        return WEAKER, f"more creators trusted: {', '.join(sorted(b - a))} added"
    return UNDECIDED, (f"creators changed (removed {', '.join(sorted(a - b))}; added {', '.join(sorted(b - a))}): "
                       "cannot tell whether this is weaker")


def _undecided_if_changed(what: str) -> Compare:
    def compare(old: Any, new: Any) -> tuple[str, str]:
        if old == new:
            return NEUTRAL, "same value"
        return UNDECIDED, f"{what} changed from {_show(old)} to {_show(new)}: cannot tell whether this is weaker"
    return compare


def _neutral(what: str) -> Compare:
    def compare(old: Any, new: Any) -> tuple[str, str]:
        return NEUTRAL, f"{what} changed" if old != new else "same"
    return compare


_DURATION = re.compile(r"^([0-9]+)([dwy])$")
_DAYS = {"d": 1, "w": 7, "y": 365}


def _retention(old: Any, new: Any) -> tuple[str, str]:
    def days(value: Any) -> int | None:
        m = _DURATION.match(str(value)) if value is not _MISSING else None
        return int(m.group(1)) * _DAYS[m.group(2)] if m else None
    a, b = days(old), days(new)
    if a == b:
        return NEUTRAL, "same retention"
    if b is None or (a is not None and b < a):
        return WEAKER, f"evidence retention lowered from {_show(old)} to {_show(new)}"
    return STRONGER, f"evidence retention raised from {_show(old)} to {_show(new)}"


def _timestamp(old: Any, new: Any) -> tuple[str, str]:
    """Dropping a timestamp, or its ``required``, weakens; adding them strengthens; a new
    authority or root is undecided (it could be one the team runs)."""
    def level(value: Any) -> int:
        if not isinstance(value, dict):
            return 0
        return 2 if value.get("required") is True else 1
    a, b = level(old), level(new)
    if b < a:
        return WEAKER, ("evidence timestamp removed" if b == 0 else "evidence timestamp no longer required")
    if b > a:
        return STRONGER, ("evidence timestamp added" if a == 0 else "evidence timestamp now required")
    return UNDECIDED, "evidence timestamp authority or certificate changed: check the new one"


def _enforcement(old: Any, new: Any) -> tuple[str, str]:
    a = "deny" if old is _MISSING else old
    b = "deny" if new is _MISSING else new
    if a == b:
        return NEUTRAL, "same enforcement"
    return (WEAKER, "enforcement relaxed from deny to warn") if b == "warn" else (
        STRONGER, "enforcement raised from warn to deny")


def _when(old: Any, new: Any) -> tuple[str, str]:
    a = old.get("paths") if isinstance(old, dict) else None
    b = new.get("paths") if isinstance(new, dict) else None
    return _scope("when.paths")(a if a is not None else _MISSING, b if b is not None else _MISSING)


# -- deploy windows -----------------------------------------------------------------------------

def _canon(window: Mapping[str, Any]) -> dict[str, Any]:
    """A window with its day list in a fixed order, so reordering days is no edit."""
    out = dict(window)
    if isinstance(out.get("days"), list):
        out["days"] = sorted(map(str, out["days"]))
    return out


_WEEK = 7 * 1440


def _coverage(window: Mapping[str, Any]) -> tuple[frozenset[int], str] | None:
    """The minutes of the week an allow window opens (0 = Monday 00:00) and its label (None: not readable)."""
    from policyengine.rules.deploy_window import _parse_allow

    problems: list[tuple[str, str]] = []
    parsed = _parse_allow(dict(window), "allow", problems)
    if parsed is None or problems:
        return None
    start, end = parsed.start // 60, parsed.end // 60
    length = end - start if start < end else 1440 - start + end  # start > end: across midnight
    minutes = frozenset((d * 1440 + start + k) % _WEEK for d in parsed.days for k in range(length))
    return minutes, parsed.label


def _window_label(w: Mapping[str, Any]) -> str:
    return str(w.get("name") or w.get("days") or "window")


def _allow_windows(old: Any, new: Any) -> list[tuple[str, str, str]]:
    """Allow windows: a new or wider one weakens; a removed or narrower one strengthens.

    An edited window (the same name in both, or the one unnamed window edited in place) is one
    finding with its old and new times, never a widening and a removal; its direction comes from
    the minutes of the week it opens.
    """
    a = [_canon(w) for w in old if isinstance(w, dict)] if isinstance(old, list) else None
    b = [_canon(w) for w in new if isinstance(w, dict)] if isinstance(new, list) else None
    if a is None and b is None:
        return []
    if a is None:
        return [("allow", STRONGER, "deploys restricted to allow windows")]
    if b is None:
        return [("allow", WEAKER, "allow windows removed: deploys allowed at any time")]
    gone = [w for w in a if w not in b]
    came = [w for w in b if w not in a]
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for w in list(gone):
        twin = next((n for n in came if w.get("name") and n.get("name") == w.get("name")), None)
        if twin is not None:
            pairs.append((w, twin))
            gone.remove(w)
            came.remove(twin)
    unnamed_gone = [w for w in gone if not w.get("name")]
    unnamed_came = [w for w in came if not w.get("name")]
    if len(unnamed_gone) == len(unnamed_came):  # unnamed windows edited in place, in their order
        pairs += list(zip(unnamed_gone, unnamed_came, strict=True))
        gone = [w for w in gone if w.get("name")]
        came = [w for w in came if w.get("name")]
    out: list[tuple[str, str, str]] = []
    for w_old, w_new in pairs:
        label = _window_label(w_new)
        c_old, c_new = _coverage(w_old), _coverage(w_new)
        if c_old is None or c_new is None:
            out.append((f"allow[{label}]", UNDECIDED, f"allow window {label!r} changed: cannot tell whether it is "
                                                      f"wider ({_show(w_old)} -> {_show(w_new)})"))
            continue
        (m_old, l_old), (m_new, l_new) = c_old, c_new
        values = f"{l_old} -> {l_new}"
        if m_new == m_old:
            out.append((f"allow[{label}]", NEUTRAL, f"allow window {label!r} rewritten, same times ({values})"))
        elif m_new < m_old:
            out.append((f"allow[{label}]", STRONGER, f"allow window {label!r} narrowed: {values}"))
        elif m_new > m_old:
            out.append((f"allow[{label}]", WEAKER, f"allow window {label!r} widened: {values}"))
        else:
            out.append((f"allow[{label}]", WEAKER, f"allow window {label!r} moved: {values} (it now opens at "
                                                   "times it did not)"))
    covered_old = _union(a)
    covered_new = _union(b)
    for w in came:
        label, c = _window_label(w), _coverage(w)
        shown = c[1] if c else _show(w)
        if c is None or covered_old is None:
            out.append((f"allow[{label}]", UNDECIDED, f"allow window {label!r} added ({shown}): cannot tell "
                                                      "whether it is wider"))
        elif c[0] <= covered_old:
            out.append((f"allow[{label}]", NEUTRAL, f"allow window {label!r} added ({shown}): no time that was "
                                                    "not already allowed"))
        else:
            out.append((f"allow[{label}]", WEAKER, f"allow window {label!r} added: {shown}"))
    for w in gone:
        label, c = _window_label(w), _coverage(w)
        shown = c[1] if c else _show(w)
        if c is not None and covered_new is not None and c[0] <= covered_new:
            out.append((f"allow[{label}]", NEUTRAL, f"allow window {label!r} removed ({shown}): its times are "
                                                    "still allowed"))
        else:
            out.append((f"allow[{label}]", STRONGER, f"allow window {label!r} removed: {shown}"))
    return out


def _union(windows: Sequence[Mapping[str, Any]]) -> frozenset[int] | None:
    """Every minute of the week some window opens (None: a window cannot be read)."""
    total: set[int] = set()
    for w in windows:
        c = _coverage(w)
        if c is None:
            return None
        total |= c[0]
    return frozenset(total)


def _deny_windows(old: Any, new: Any) -> list[tuple[str, str, str]]:
    """Freezes: a removed or shorter one weakens; a new or longer one strengthens."""
    a = [w for w in old if isinstance(w, dict)] if isinstance(old, list) else []
    b = [w for w in new if isinstance(w, dict)] if isinstance(new, list) else []
    out: list[tuple[str, str, str]] = []
    by_name_a = {str(w.get("name")): w for w in a if w.get("name")}
    by_name_b = {str(w.get("name")): w for w in b if w.get("name")}
    for w in a:
        name = str(w.get("name") or "")
        if w in b:
            continue
        other = by_name_b.get(name) if name else None
        label = name or _show(w.get("cron") or w.get("from"))
        if other is None:
            out.append((f"deny[{label}]", WEAKER, f"freeze {label!r} removed"))
            continue
        if "from" in w and "from" in other and "cron" not in w and "cron" not in other:
            fa, ua, fb, ub = str(w["from"]), str(w["until"]), str(other["from"]), str(other["until"])
            if fb <= fa and ub >= ua:
                out.append((f"deny[{label}]", STRONGER, f"freeze {label!r} lengthened"))
            elif fb >= fa and ub <= ua:
                out.append((f"deny[{label}]", WEAKER, f"freeze {label!r} shortened"))
            else:
                out.append((f"deny[{label}]", UNDECIDED, f"freeze {label!r} moved: cannot tell whether it is weaker"))
        elif w.get("cron") == other.get("cron") and "duration" in w and "duration" in other:
            da, db = _duration_seconds(w["duration"]), _duration_seconds(other["duration"])
            if da is not None and db is not None and db != da:
                kind = (STRONGER, "lengthened") if db > da else (WEAKER, "shortened")
                out.append((f"deny[{label}]", kind[0], f"freeze {label!r} {kind[1]}"))
            else:
                out.append((f"deny[{label}]", UNDECIDED, f"freeze {label!r} changed: cannot tell whether it is "
                                                         "weaker"))
        else:
            out.append((f"deny[{label}]", UNDECIDED, f"freeze {label!r} changed (cron or kind): cannot tell whether "
                                                     "it is weaker"))
    for w in b:
        name = str(w.get("name") or "")
        if w not in a and not (name and name in by_name_a):
            label = name or _show(w.get("cron") or w.get("from"))
            out.append((f"deny[{label}]", STRONGER, f"freeze {label!r} added"))
    return out


def _duration_seconds(text: Any) -> int | None:
    m = re.match(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$", str(text).strip())
    if not m or not any(m.groups()):
        return None
    d, h, mi, s = (int(g) if g else 0 for g in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60 + s


def _holidays(old: Any, new: Any) -> tuple[str, str]:
    if old == new:
        return NEUTRAL, "same calendar"
    if new is _MISSING or new is None:
        return WEAKER, f"holiday calendar {_show(old)} removed"
    if old is _MISSING or old is None:
        return STRONGER, f"holiday calendar {_show(new)} added"
    return UNDECIDED, f"holiday calendar changed from {_show(old)} to {_show(new)}: cannot tell whether it is weaker"


# -- tickets ------------------------------------------------------------------------------------

_TICKET_SOURCES = ["title", "branch", "description", "commits", "ticket"]


def _pin(what: str) -> Compare:
    """An instance URL: pinning it is stronger, unpinning weaker (the environment then decides)."""
    def compare(old: Any, new: Any) -> tuple[str, str]:
        if old == new:
            return NEUTRAL, "same value"
        if old is _MISSING:
            return STRONGER, f"{what} pinned to {_show(new)}"
        if new is _MISSING:
            return WEAKER, f"{what} no longer pinned (the environment variable decides)"
        return UNDECIDED, f"{what} changed from {_show(old)} to {_show(new)}: cannot tell whether this is weaker"
    return compare


def _sources(old: Any, new: Any) -> tuple[str, str]:
    """Where keys are found: absent = everywhere; each more place is one more way to pass."""
    return _more_is_weaker("key source")(_TICKET_SOURCES if old is _MISSING else old,
                                         _TICKET_SOURCES if new is _MISSING else new)


_TICKET_KEYS: dict[str, dict[str, Compare]] = {
    "jira": {
        "projects": _more_is_weaker("Jira project"),
        "statuses": _more_is_weaker("allowed Jira status"),
        "issue_types": _fewer_is_stronger("Jira issue types"),
        "url": _pin("Jira instance"),
        "api_version": _neutral("Jira REST API version"),
        # The status whose transition records the approver: another status changes what counts as
        # approved, which policy diff cannot rank.
        "approval_status": _undecided_if_changed("Jira approval status"),
    },
    "servicenow": {
        "pattern": _undecided_if_changed("ServiceNow change number pattern"),
        "states": _undecided_if_changed("ServiceNow state codes"),
        "url": _pin("ServiceNow instance"),
    },
}
"""Directions inside a ticket rule's ``jira`` and ``servicenow`` blocks. Each more project,
status or key source is one more way to pass (weaker); ``issue_types`` restricts (absent: any
type). A block added to a rule is one more system whose tickets pass it (weaker); a block
removed, one fewer (stronger)."""


def _ticket_system(system: str, old: Any, new: Any) -> list[tuple[str, str, str]]:
    label = "Jira" if system == "jira" else "ServiceNow"
    if old is _MISSING or not isinstance(old, dict):
        return [(system, WEAKER, f"{label} tickets now also satisfy the rule")] if isinstance(new, dict) else []
    if new is _MISSING or not isinstance(new, dict):
        return [(system, STRONGER, f"{label} tickets no longer satisfy the rule")]
    out: list[tuple[str, str, str]] = []
    for key in dict.fromkeys([*old, *new]):
        a, b = old.get(key, _MISSING), new.get(key, _MISSING)
        if a == b or _same_list(a, b):
            continue
        compare = _TICKET_KEYS[system].get(key) or _undecided_if_changed(key)
        direction, message = compare(a, b)
        if direction == NEUTRAL and message.startswith("same"):
            continue
        out.append((f"{system}.{key}", direction, f"{message} ({_show(a)} -> {_show(b)})"))
    return out


# -- the direction of every key -----------------------------------------------------------------

_COMMON: dict[str, Compare] = {
    "description": _neutral("description"),
    "controls": _neutral("controls"),
    "enforcement": _enforcement,
    "when": _when,
}

_RULE_KEYS: dict[str, dict[str, Compare]] = {
    "approvals": {
        "min_approvals": _higher_is_stronger("required approvals"),
        "exclude": _more_is_stronger("exclusion"),
        "require_current_commit": _true_is_stronger("require_current_commit", False),
        "cover_range": _true_is_stronger("cover_range", False),
        "from_teams": _fewer_is_stronger("approving teams"),
        "from_users": _fewer_is_stronger("approving users"),
        "allow_bots": _more_is_weaker("allowed bot"),
    },
    "tests_passed": {
        "reports": _more_is_stronger("report globs"),
        "min_tests": _higher_is_stronger("min_tests", 1),
        "allow_skipped": _true_is_stronger("skipped tests refused (allow_skipped: false)", False),
        "allow_flaky": _true_is_stronger("flaky tests refused (allow_flaky: false)", False),
        "provenance": lambda old, new: _true_is_stronger("provenance: same_run", False)(
            old == "same_run", new == "same_run"),
    },
    "checks_passed": {
        "checks": _more_is_stronger("required check"),
        "creators": _creators,
    },
    "rollback_plan": {
        "path": _undecided_if_changed("path"),
        "required_sections": _more_is_stronger("required section"),
        "min_length": _higher_is_stronger("min_length", 0),
    },
    "deploy_window": {
        "timezone": _undecided_if_changed("timezone"),
        "holidays": _holidays,
    },
    "ticket": {
        "sources": _sources,
        # compared key by key in _ticket_system; these only name them for the schema check
        "jira": _undecided_if_changed("jira"),
        "servicenow": _undecided_if_changed("servicenow"),
    },
}
"""For each rule type, how each parameter compares. ``allow``/``deny`` of deploy windows are
compared window by window (``_allow_windows``, ``_deny_windows``); a ticket rule's ``jira`` and
``servicenow`` blocks key by key (``_TICKET_KEYS``)."""

_NEGATED = {"allow_skipped", "allow_flaky"}  # true is the weaker value


def _compare_key(rule_type: str, key: str, old: Any, new: Any) -> tuple[str, str]:
    compare = _COMMON.get(key) or _RULE_KEYS.get(rule_type, {}).get(key)
    if compare is None:
        return _undecided_if_changed(key)(old, new)
    if key in _NEGATED:  # allow_* true is weaker: compare "refused" = not allowed
        flip = {True: False, False: True}
        old = _MISSING if old is _MISSING else flip[bool(old)]
        new = _MISSING if new is _MISSING else flip[bool(new)]
    return compare(old, new)


def _rules(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    rules = doc.get("rules") or []
    return {str(r.get("id")): r for r in rules if isinstance(r, dict)}


def _rule_findings(rid: str, old: dict[str, Any], new: dict[str, Any]) -> list[Finding]:
    base = f"rules[{rid}]"
    if old.get("type") != new.get("type"):
        return [Finding(f"{base}.type", UNDECIDED,
                        f"rule type changed from {old.get('type')} to {new.get('type')}: cannot tell whether this "
                        "is weaker")]
    rule_type = str(new.get("type"))
    out: list[Finding] = []
    keys = [k for k in dict.fromkeys([*old, *new]) if k not in ("id", "type")]
    for key in keys:
        a, b = old.get(key, _MISSING), new.get(key, _MISSING)
        if rule_type == "deploy_window" and key in ("allow", "deny"):
            pairs = _allow_windows(a if a is not _MISSING else None, b if b is not _MISSING else None) \
                if key == "allow" else _deny_windows(a if a is not _MISSING else [], b if b is not _MISSING else [])
            out += [Finding(f"{base}.{path}", direction, message) for path, direction, message in pairs]
            continue
        if rule_type == "ticket" and key in _TICKET_KEYS:
            out += [Finding(f"{base}.{path}", direction, message)
                    for path, direction, message in _ticket_system(key, a, b)]
            continue
        if a == b or _same_list(a, b):
            continue
        direction, message = _compare_key(rule_type, key, a, b)
        if direction == NEUTRAL and message.startswith("same"):
            continue
        out.append(Finding(f"{base}.{key}", direction, f"{message} ({_show(a)} -> {_show(b)})"))
    return out


def _same_list(a: Any, b: Any) -> bool:
    """Lists with the same items in another order are the same (order never matters here)."""
    if not (isinstance(a, list) and isinstance(b, list)) or len(a) != len(b):
        return False
    try:
        return sorted(map(repr, a)) == sorted(map(repr, b))
    except TypeError:  # pragma: no cover - repr always works
        return False


def _owners(old: Any, new: Any) -> tuple[str, str]:
    """Policy owners guard the policy: removing them, or any of them, weakens that guard."""
    if new is _MISSING or not isinstance(new, dict):
        return WEAKER, "policy owners removed: nobody's approval is needed to change the policy"
    if old is _MISSING or not isinstance(old, dict):
        return STRONGER, "policy owners added: changes to the policy need an owner's approval"
    findings = []
    for key in ("users", "teams"):
        a, b = set(old.get(key) or []), set(new.get(key) or [])
        if a - b:
            findings.append((WEAKER, f"policy owners reduced: {', '.join(sorted(a - b))} removed from {key}"))
        if b - a:
            findings.append((UNDECIDED, f"policy owners added to {key}: {', '.join(sorted(b - a))} (more people may "
                                        "approve policy changes)"))
    a, b = set(old.get("guard") or []), set(new.get("guard") or [])
    if a - b:
        findings.append((WEAKER, f"guarded files removed: {', '.join(sorted(a - b))}"))
    if b - a:
        findings.append((STRONGER, f"guarded files added: {', '.join(sorted(b - a))}"))
    if not findings:
        return NEUTRAL, "same owners"
    worst = next((f for f in findings if f[0] == WEAKER), None) or next(
        (f for f in findings if f[0] == UNDECIDED), findings[0])
    return worst[0], "; ".join(m for _, m in findings)


def _more_is_weaker_number(what: str, default: int) -> Compare:
    inner = _higher_is_stronger(what, default)

    def compare(old: Any, new: Any) -> tuple[str, str]:
        direction, message = inner(old, new)
        return {STRONGER: WEAKER, WEAKER: STRONGER}.get(direction, direction), message
    return compare


def _not_applicable(old: Any, new: Any) -> tuple[str, str]:
    a = "error" if old is _MISSING else old
    b = "error" if new is _MISSING else new
    if a == b:
        return NEUTRAL, "same"
    if b == "pass":
        return WEAKER, "deploys outside applies_to now pass as not_applicable (the opt-in was added)"
    return STRONGER, "deploys outside applies_to are refused again (not_applicable: error)"


def _waiver_key(w: Mapping[str, Any]) -> str:
    import json

    return json.dumps([w.get("rule"), w.get("scope")], sort_keys=True, default=str)


def _waiver_label(w: Mapping[str, Any]) -> str:
    raw = w.get("scope")
    scope: dict[str, Any] = raw if isinstance(raw, dict) else {}
    where = ", ".join(f"{k}={_show(v)}" for k, v in sorted(scope.items()))
    return f"{w.get('rule')}" + (f" ({where})" if where else "")


def _waiver_end(value: Any) -> Any:
    from policyengine.lifecycle.waivers import parse_moment

    try:
        return parse_moment(value).end
    except ValueError:
        return None


def _waiver_findings(old: Any, new: Any) -> list[Finding]:
    """Waivers, matched by rule and scope: a new one weakens (so does a changed scope, which is
    a removal and an addition), a removed one strengthens; a later expiry weakens, an earlier
    one strengthens; reason, approver and approval date are neutral."""
    a = {_waiver_key(w): w for w in old if isinstance(w, dict)} if isinstance(old, list) else {}
    b = {_waiver_key(w): w for w in new if isinstance(w, dict)} if isinstance(new, list) else {}
    out: list[Finding] = []
    for key, w in b.items():
        path = f"waivers[{w.get('rule')}]"
        if key not in a:
            out.append(Finding(path, WEAKER, f"waiver added: {_waiver_label(w)} until {w.get('expires')} "
                                             f"(approved by {w.get('approved_by')})"))
            continue
        before = a[key]
        if before.get("expires") != w.get("expires"):
            ea, eb = _waiver_end(before.get("expires")), _waiver_end(w.get("expires"))
            change = f"{before.get('expires')} -> {w.get('expires')}"
            if ea is None or eb is None:
                out.append(Finding(f"{path}.expires", UNDECIDED, f"waiver {_waiver_label(w)} expiry changed "
                                                                  f"({change}): cannot tell whether this is weaker"))
            elif eb > ea:
                out.append(Finding(f"{path}.expires", WEAKER, f"waiver {_waiver_label(w)} extended ({change})"))
            elif eb < ea:
                out.append(Finding(f"{path}.expires", STRONGER, f"waiver {_waiver_label(w)} shortened ({change})"))
        for field in ("reason", "approved_by", "approved_at"):
            if before.get(field) != w.get(field):
                out.append(Finding(f"{path}.{field}", NEUTRAL, f"waiver {_waiver_label(w)} {field} changed "
                                                               f"({_show(before.get(field))} -> {_show(w.get(field))})"))
    for key, w in a.items():
        if key not in b:
            out.append(Finding(f"waivers[{w.get('rule')}]", STRONGER, f"waiver removed: {_waiver_label(w)}"))
    return out


def _notify_findings(old: Any, new: Any) -> list[Finding]:
    """Notification targets, matched by ``url_env`` (one target may be written without a list)."""
    from policyengine.language.policy import notify_targets

    def targets(value: Any) -> dict[str, dict[str, Any]]:
        if value is _MISSING:
            return {}
        return {str(t.get("url_env")): t for t in notify_targets(value)}

    a, b = targets(old), targets(new)
    out: list[Finding] = []
    for name, t in a.items():
        path = f"notify[{name}]"
        if name not in b:
            out.append(Finding(path, WEAKER, f"notification target {name} removed: decisions are no longer posted "
                                             "there" + (" (it was required)" if t.get("required") is True else "")))
            continue
        u = b[name]
        for key, what in (("required", f"notification to {name} required"),
                          ("include_not_applicable", f"notification of not_applicable decisions to {name}")):
            direction, message = _true_is_stronger(what, False)(t.get(key, _MISSING), u.get(key, _MISSING))
            if direction != NEUTRAL:
                out.append(Finding(f"{path}.{key}", direction, message))
        fa, fb = t.get("format", "slack"), u.get("format", "slack")
        if fa != fb:
            out.append(Finding(f"{path}.format", UNDECIDED, f"notification format to {name} changed ({fa} -> {fb}): "
                                                            "cannot tell whether the receiver still understands it"))
    for name, u in b.items():
        if name not in a:
            out.append(Finding(f"notify[{name}]", STRONGER, f"notification target {name} added"
                                                            + (" (required)" if u.get("required") is True else "")))
    return out


def _added_is_weaker(what: str) -> Compare:
    """A list where each item lets more through (who may declare an emergency, what it may
    waive): an addition weakens, a removal alone strengthens; absent = none."""
    def compare(old: Any, new: Any) -> tuple[str, str]:
        a, b = _set(old) or set(), _set(new) or set()
        if a == b:
            return NEUTRAL, "same items"
        if b - a:
            gone = f"; removed {', '.join(sorted(a - b))}" if a - b else ""
            return WEAKER, f"{what} widened: {', '.join(sorted(b - a))} added{gone}"
        return STRONGER, f"{what} narrowed: {', '.join(sorted(a - b))} removed"
    return compare


def _longer_is_weaker(what: str) -> Compare:
    def compare(old: Any, new: Any) -> tuple[str, str]:
        from policyengine.lifecycle.emergency import parse_duration

        a, b = parse_duration(old), parse_duration(new)
        if a is None or b is None:
            return UNDECIDED, f"{what} changed from {_show(old)} to {_show(new)}: cannot tell whether this is weaker"
        if b > a:
            return WEAKER, f"{what} lengthened ({old} -> {new})"
        return (STRONGER, f"{what} shortened ({old} -> {new})") if b < a else (NEUTRAL, "same duration")
    return compare


def _label(old: Any, new: Any) -> tuple[str, str]:
    if old is _MISSING:
        return WEAKER, f"the request label {new!r} now asks for the emergency procedure"
    if new is _MISSING:
        return STRONGER, f"the request label {old!r} no longer asks for the emergency procedure"
    return UNDECIDED, f"the emergency label changed ({old} -> {new}): cannot tell whether this is weaker"


_EMERGENCY_KEYS: dict[str, Compare] = {
    "declared_by.users": _added_is_weaker("who may declare an emergency (users)"),
    "declared_by.teams": _added_is_weaker("who may declare an emergency (teams)"),
    "trigger.label": _label,
    "requires": _more_is_stronger("what an emergency must give"),
    "may_waive": _added_is_weaker("the rules an emergency may waive"),
    "approve_within": _longer_is_weaker("the post-facto approval deadline (approve_within)"),
    "approvers.min_approvals": _higher_is_stronger("emergency approvals required", 1),
    "approvers.from_teams": _fewer_is_stronger("emergency approvers' teams"),
    "approvers.exclude": _more_is_stronger("roles that may not approve an emergency"),
}
"""The direction of every key of ``emergency:`` (a dotted path below it)."""


def _emergency_findings(old: Any, new: Any) -> list[Finding]:
    """The emergency section: adding it weakens (rules may then be waived), removing it
    strengthens; within it each key has its direction (``_EMERGENCY_KEYS``)."""
    if not isinstance(new, dict):
        return [Finding("emergency", STRONGER, "emergency procedure removed: no rule can be waived in an emergency")]
    if not isinstance(old, dict):
        waived = ", ".join(str(x) for x in new.get("may_waive") or []) or "nothing"
        return [Finding("emergency", WEAKER, f"emergency procedure added: a declared emergency waives {waived}")]

    def get(doc: dict[str, Any], dotted: str) -> Any:
        value: Any = doc
        for part in dotted.split("."):
            value = value.get(part, _MISSING) if isinstance(value, dict) else _MISSING
        return value

    out: list[Finding] = []
    for dotted, compare in _EMERGENCY_KEYS.items():
        a, b = get(old, dotted), get(new, dotted)
        if dotted == "requires":
            a = ["reason", "incident"] if a is _MISSING else a
            b = ["reason", "incident"] if b is _MISSING else b
        if a == b or _same_list(a, b):
            continue
        direction, message = compare(a, b)
        if dotted == "approvers.min_approvals":
            message += f" ({_show(a)} -> {_show(b)})"
        out.append(Finding(f"emergency.{dotted}", direction, message))
    return out


_TOP_KEYS: dict[str, Compare] = {
    "waiver_max_days": _more_is_weaker_number("waiver_max_days (the longest a waiver may last)", 90),
    "not_applicable": _not_applicable,
    "policy_owners": _owners,
    "version": _undecided_if_changed("version"),
    "name": _neutral("name"),
    "description": _neutral("description"),
}


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Finding]:
    """Every edit from policy document ``old`` to ``new`` (parsed YAML), in order."""
    out: list[Finding] = []
    for key in dict.fromkeys([*old, *new]):
        if key == "rules":
            continue
        a, b = old.get(key, _MISSING), new.get(key, _MISSING)
        if a == b:
            continue
        if key == "applies_to":
            ea = a.get("environments") if isinstance(a, dict) else None
            eb = b.get("environments") if isinstance(b, dict) else None
            if not _same_list(ea, eb):
                direction, message = _scope("environments")(ea if ea is not None else _MISSING,
                                                            eb if eb is not None else _MISSING)
                out.append(Finding("applies_to.environments", direction, f"{message} ({_show(ea)} -> {_show(eb)})"))
            rest_a = {k: v for k, v in (a if isinstance(a, dict) else {}).items() if k != "environments"}
            rest_b = {k: v for k, v in (b if isinstance(b, dict) else {}).items() if k != "environments"}
            for sub in dict.fromkeys([*rest_a, *rest_b]):
                va, vb = rest_a.get(sub, _MISSING), rest_b.get(sub, _MISSING)
                if va != vb:
                    d, m = _undecided_if_changed(f"applies_to.{sub}")(va, vb)
                    out.append(Finding(f"applies_to.{sub}", d, m))
            continue
        if key == "waivers":
            out += _waiver_findings(a, b)
            continue
        if key == "notify":
            out += _notify_findings(a, b)
            continue
        if key == "emergency":
            out += _emergency_findings(a, b)
            continue
        if key == "evidence":
            ra = a.get("retention", _MISSING) if isinstance(a, dict) else _MISSING
            rb = b.get("retention", _MISSING) if isinstance(b, dict) else _MISSING
            if ra != rb:
                direction, message = _retention(ra, rb)
                out.append(Finding("evidence.retention", direction, message))
            ta = a.get("timestamp", _MISSING) if isinstance(a, dict) else _MISSING
            tb = b.get("timestamp", _MISSING) if isinstance(b, dict) else _MISSING
            if ta != tb:
                out.append(Finding("evidence.timestamp", *_timestamp(ta, tb)))
            sa = isinstance(a, dict) and a.get("require_subject") is True
            sb = isinstance(b, dict) and b.get("require_subject") is True
            if sa != sb:  # turning it off lets a deploy ship without naming its artifacts
                out.append(Finding("evidence.require_subject", WEAKER if sa else STRONGER,
                                   "artifact digests no longer required" if sa else "artifact digests now required"))
            continue
        compare = _TOP_KEYS.get(key) or _undecided_if_changed(key)
        direction, message = compare(a, b)
        out.append(Finding(key, direction, message))
    old_rules, new_rules = _rules(old), _rules(new)
    for rid, rule in old_rules.items():
        if rid not in new_rules:
            out.append(Finding(f"rules[{rid}]", WEAKER, f"rule {rid} ({rule.get('type')}) removed"))
            continue
        out += _rule_findings(rid, rule, new_rules[rid])
    for rid, rule in new_rules.items():
        if rid not in old_rules:
            out.append(Finding(f"rules[{rid}]", STRONGER, f"rule {rid} ({rule.get('type')}) added"))
    return out


def render_text(findings: Sequence[Finding]) -> str:
    """One line per edit, weakenings first; a closing verdict."""
    order = {WEAKER: 0, UNDECIDED: 1, STRONGER: 2, NEUTRAL: 3}
    label = {WEAKER: "WEAKER", UNDECIDED: "WEAKER?", STRONGER: "STRONGER", NEUTRAL: "NEUTRAL"}
    lines = [f"  {label[f.direction]:8}  {f.path}: {f.message}"
             for f in sorted(findings, key=lambda f: order[f.direction])]
    if not findings:
        return "no change to any control\n"
    weaker = sum(f.direction in (WEAKER, UNDECIDED) for f in findings)
    verdict = (f"WEAKER: {weaker} edit{'s' if weaker != 1 else ''} weaken the policy (WEAKER? means the direction "
               "cannot be decided, so it counts as a weakening)") if weaker else "not weaker"
    return "\n".join(lines) + "\n\n" + verdict + "\n"
