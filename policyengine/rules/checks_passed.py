"""``checks_passed``: each named CI check succeeded on the deployed commit.

A check reported several times on the deployed commit (a re-run) is judged by its latest
report: ``completed_at`` when every report has one, otherwise the order in the change.
Only ``success`` passes; a check that is missing, pending or reported only on another
commit fails.
"""

from __future__ import annotations

from typing import Any

from policyengine.models import Outcome, Status
from policyengine.rules.base import Context, RuleType, unavailable


class ChecksPassedRule(RuleType):
    """Named CI checks succeeded on the commit being deployed."""

    type_name = "checks_passed"

    def evaluate(self, ctx: Context) -> Outcome:
        cause = unavailable(ctx.change, "checks")
        if cause:
            return Outcome(Status.ERROR, f"CI checks could not be read: {cause}", {"checks": {}})
        commit = str(ctx.change.get("commit", "")).lower()
        reports = ctx.change.get("checks", []) or []
        results: dict[str, dict[str, Any]] = {}
        problems: list[str] = []
        for name in self.params["checks"]:
            same = [c for c in reports if c.get("name") == name]
            on_commit = [c for c in same if str(c.get("commit") or commit).lower() == commit]
            if not on_commit:
                if same:
                    other = ", ".join(sorted({str(c.get("commit"))[:7] for c in same}))
                    problems.append(f"{name}: reported only on other commits ({other}), not on {commit[:7]}")
                    results[name] = {"status": None, "reason": "other commit"}
                else:
                    problems.append(f"{name}: not reported")
                    results[name] = {"status": None, "reason": "missing"}
                continue
            if all(c.get("completed_at") for c in on_commit):
                on_commit = sorted(on_commit, key=lambda c: str(c["completed_at"]))
            latest = on_commit[-1]
            status = str(latest.get("status", "")).lower()
            results[name] = {"status": status, "url": latest.get("url")}
            if status != "success":
                problems.append(f"{name}: {status or 'no status'}")
        details = {"commit": commit, "checks": results}
        if problems:
            return Outcome(Status.FAIL, f"checks not successful on {commit[:7]}: " + "; ".join(problems), details)
        names = ", ".join(self.params["checks"])
        return Outcome(Status.PASS, f"all required checks succeeded on {commit[:7]}: {names}", details)
