"""``checks_passed``: each named CI check succeeded on the deployed commit.

A check reported several times on the deployed commit (a re-run) is judged by its latest
report: ``completed_at`` when every report has one, otherwise the order in the change.
Only ``success`` passes; a check that is missing, pending or reported only on another
commit fails.

Only reports from an expected creator count, because anyone who may write commit statuses
(a workflow step holding ``statuses: write``) or any app installed on the repository can
report a check of any name:

- without ``creators``, a check run (``kind: check_run``) counts only from the platform's own
  CI app (``github-actions``), a GitLab pipeline job (``kind: job``) always (its creator is
  ``gitlab``), and a commit status (``kind: status``) from any creator;
- ``creators: [..]`` replaces that default: a report of any kind counts only when its creator
  (a check run's app slug, a status's login, ``gitlab`` for a GitLab job) is listed,
  compared case-insensitively;
- a check run or job of a name outranks statuses of the same name: a status cannot override
  the verdict of the check run it imitates;
- a name starting with ``policyengine/`` is the gate's own witness status, never a check;
- a report without creator information (no ``kind``, no ``creator``) counts only while the
  policy names no ``creators``. Such a report comes from a self-declared change file (whose
  author vouches for everything in it anyway) or from a bundle written before the providers
  recorded creators: ``evidence replay`` of such a bundle then judges as it was judged. The
  GitHub and GitLab providers record a kind and a creator for every check they read.
"""

from __future__ import annotations

from typing import Any

from policyengine.models import Outcome, Status
from policyengine.rules.base import Context, RuleType, unavailable
from policyengine.lifecycle.witness_format import CONTEXT_PREFIX as WITNESS_PREFIX
from policyengine.lifecycle.witness_format import is_witness_context

PLATFORM_APPS = {"check_run": "github-actions", "job": "gitlab"}
"""The creator each platform-made kind of report must have by default: the platform's own CI."""

_RANK = {"check_run": 1, "job": 1}


def _creator(report: dict[str, Any]) -> str | None:
    who = report.get("creator")
    return who.casefold() if isinstance(who, str) and who else None


def _why_not(report: dict[str, Any], creators: frozenset[str] | None) -> str | None:
    """Why ``report`` does not count, or None when it does."""
    kind = report.get("kind")
    who = _creator(report)
    if kind is None and who is None and creators is not None:
        return "no creator recorded"
    if creators is not None:
        return None if who in creators else "unexpected creator"
    if kind == "status":
        return None
    if kind in PLATFORM_APPS:
        return None if who == PLATFORM_APPS[kind] else "unexpected creator"
    if kind is None and who is None:
        return None  # self-declared, or recorded before creators were: judged as it was
    return "unexpected creator"  # a kind the gate does not know: fail closed


def _describe(report: dict[str, Any]) -> str:
    kind, who = report.get("kind"), report.get("creator")
    if kind == "check_run":
        return f"check run by app {who}" if who else "check run by an unknown app"
    if kind == "status":
        return f"status by {who}" if who else "status by an unknown account"
    if kind == "job":
        return f"job by {who}" if who else "job by an unknown creator"
    return f"report by {who}" if who else "no creator recorded"


class ChecksPassedRule(RuleType):
    """Named CI checks succeeded on the commit being deployed, reported by an expected creator."""

    type_name = "checks_passed"

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> list[tuple[str, str]]:
        return [(f"checks[{i}]", f"{name!r}: the {WITNESS_PREFIX} prefix is reserved for the gate's witness "
                 "status, which is never counted as a check")
                for i, name in enumerate(params.get("checks") or []) if is_witness_context(name)]

    def evaluate(self, ctx: Context) -> Outcome:
        cause = unavailable(ctx.change, "checks")
        if cause:
            return Outcome(Status.ERROR, f"CI checks could not be read: {cause}", {"checks": {}})
        commit = str(ctx.change.get("commit", "")).lower()
        reports = ctx.change.get("checks", []) or []
        named = self.params.get("creators")
        creators = frozenset(str(c).casefold() for c in named) if named is not None else None
        results: dict[str, dict[str, Any]] = {}
        problems: list[str] = []
        for name in self.params["checks"]:
            if is_witness_context(name):  # the gate's own witness status, whoever posted it
                problems.append(f"{name}: the {WITNESS_PREFIX} prefix is reserved for the gate's witness status, "
                                "never counted as a check")
                results[name] = {"status": None, "reason": "reserved"}
                continue
            same = [c for c in reports if c.get("name") == name]
            counted = [c for c in same if _why_not(c, creators) is None]
            ignored = [{"kind": c.get("kind"), "creator": c.get("creator"), "status": c.get("status"),
                        "reason": _why_not(c, creators)} for c in same if c not in counted]
            extra: dict[str, Any] = {"not_counted": ignored} if ignored else {}
            if same and not counted:
                who = ", ".join(dict.fromkeys(_describe(c) for c in same))
                hint = ("; to count it, list that creator in the rule's creators: (the list replaces the default set)"
                        if any(c.get("creator") for c in same) else "")
                problems.append(f"{name}: reported only by an unexpected creator ({who}){hint}")
                results[name] = {"status": None, "reason": "unexpected creator", **extra}
                continue
            best = max((_RANK.get(str(c.get("kind")), 0) for c in counted), default=0)
            # A status never overrides a check run of the same name: it could be anyone's imitation.
            counted = [c for c in counted if _RANK.get(str(c.get("kind")), 0) == best]
            on_commit = [c for c in counted if str(c.get("commit") or commit).lower() == commit]
            if not on_commit:
                if counted:
                    other = ", ".join(sorted({str(c.get("commit"))[:7] for c in counted}))
                    problems.append(f"{name}: reported only on other commits ({other}), not on {commit[:7]}")
                    results[name] = {"status": None, "reason": "other commit", **extra}
                else:
                    problems.append(f"{name}: not reported")
                    results[name] = {"status": None, "reason": "missing"}
                continue
            if all(c.get("completed_at") for c in on_commit):
                on_commit = sorted(on_commit, key=lambda c: str(c["completed_at"]))
            latest = on_commit[-1]
            status = str(latest.get("status", "")).lower()
            results[name] = {"status": status, "url": latest.get("url"),
                             **{k: latest[k] for k in ("kind", "creator") if latest.get(k) is not None}, **extra}
            if status != "success":
                problems.append(f"{name}: {status or 'no status'}")
        details: dict[str, Any] = {"commit": commit, "checks": results}
        if creators is not None:
            details["creators"] = list(named or [])
        if problems:
            return Outcome(Status.FAIL, f"checks not successful on {commit[:7]}: " + "; ".join(problems), details)
        names = ", ".join(self.params["checks"])
        return Outcome(Status.PASS, f"all required checks succeeded on {commit[:7]}: {names}", details)
