"""Judge: evaluate every rule of a policy against one change. Pure: no network, no environment,
no global clock; every rule gives a result and nothing short-circuits."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from policyengine.globs import glob_match
from policyengine.models import Decision, Enforcement, Outcome, RuleResult, Status
from policyengine.rules.base import Context
from policyengine.workspace import Workspace

if TYPE_CHECKING:
    from policyengine.policy import Policy

SCHEMA_VERSION = 1


def iso_utc(moment: datetime) -> str:
    """Render an aware datetime as ISO 8601 UTC with a ``Z``."""
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _applies(policy: Policy, change: dict[str, Any]) -> bool:
    if not policy.environments:
        return True
    env = str(change.get("environment", "")).casefold()
    return env in {e.casefold() for e in policy.environments}


def _when_skip(paths: tuple[str, ...] | None, change: dict[str, Any]) -> tuple[bool, str | None]:
    """Return (skip, note). A rule whose ``when.paths`` cannot be checked (the change does not
    list its files) is applied anyway: fail closed."""
    if not paths:
        return False, None
    files = change.get("files_changed")
    if "files_changed" in (change.get("unavailable") or {}):
        return False, "the changed files could not be read, so the rule was applied"
    if files is None:
        return False, "the change does not list its changed files, so the rule was applied"
    for f in files:
        if any(glob_match(p, f) for p in paths):
            return False, None
    return True, "no changed file matches " + ", ".join(paths)


def evaluate(policy: Policy, change: dict[str, Any], workspace: Workspace, now: datetime) -> Decision:
    """Evaluate every rule of ``policy`` for ``change`` at ``now`` and derive the decision."""
    from policyengine.policy import build_rules

    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    ctx = Context(change=change, workspace=workspace, now=now)
    applies = _applies(policy, change)
    results: list[RuleResult] = []
    for rule in build_rules(policy):
        spec = rule.spec
        if not applies:
            envs = ", ".join(policy.environments or ())
            outcome = Outcome(Status.SKIPPED, f"policy applies to {envs}; this change deploys to "
                              f"{change.get('environment')}")
        else:
            skip, note = _when_skip(spec.when_paths, change)
            if skip:
                outcome = Outcome(Status.SKIPPED, f"does not apply: {note}")
            else:
                outcome = rule.evaluate(ctx)
                if note:
                    outcome = Outcome(outcome.status, f"{outcome.message} ({note})", outcome.details, outcome.files)
        status = outcome.status
        details = dict(outcome.details)
        if spec.enforcement is Enforcement.WARN and status in (Status.FAIL, Status.ERROR):
            details["outcome"] = status.value
            status = Status.WARN
        results.append(
            RuleResult(
                id=spec.id,
                type=spec.type,
                status=status,
                enforcement=spec.enforcement,
                message=outcome.message,
                controls=spec.controls,
                description=spec.description,
                details=details,
                files=outcome.files,
            )
        )
    deny = any(r.enforcement is Enforcement.DENY and r.status in (Status.FAIL, Status.ERROR) for r in results)
    note = None
    if not applies:
        note = (f"policy {policy.name!r} applies to {', '.join(policy.environments or ())}; "
                f"nothing was enforced for environment {change.get('environment')!r}")
    return Decision(
        decision="deny" if deny else "allow",
        evaluated_at=iso_utc(now),
        policy={"name": policy.name, "path": policy.path, "sha256": policy.sha256},
        change=change,
        rules=tuple(results),
        applies=applies,
        note=note,
    )


def summary(decision: Decision) -> dict[str, int]:
    """Count rules by status."""
    counts = {s.value: 0 for s in Status}
    for r in decision.rules:
        counts[r.status.value] += 1
    return counts


def exit_code_for(decision: Decision) -> int:
    """0 allow; 1 a deny-rule failed; 3 deny only because facts could not be read."""
    from policyengine.errors import EXIT_ALLOW, EXIT_DENY, EXIT_FACTS

    if decision.allowed:
        return EXIT_ALLOW
    if any(r.enforcement is Enforcement.DENY and r.status is Status.FAIL for r in decision.rules):
        return EXIT_DENY
    return EXIT_FACTS


def decision_to_json(decision: Decision, *, advisory: bool = False) -> dict[str, Any]:
    """The decision document described by ``schemas/decision.schema.json``."""
    from policyengine import __version__

    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "decision": decision.decision,
        "evaluated_at": decision.evaluated_at,
        "tool": {"name": "policyengine", "version": __version__},
        "advisory": advisory,
        "applies": decision.applies,
        "policy": decision.policy,
        "change": decision.change,
        "summary": summary(decision),
        "rules": [r.to_json() for r in decision.rules],
    }
    if decision.note:
        out["note"] = decision.note
    return out
