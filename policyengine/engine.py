"""Judge: evaluate every rule of a policy on the facts of one change. Pure: no files, no network,
no environment, no clock; every rule gives a result and nothing short-circuits."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from policyengine.lifecycle.emergency import EmergencyRequest
from policyengine.lifecycle.emergency import apply as apply_emergency
from policyengine.facts import Facts
from policyengine.models import (
    NOT_APPLICABLE,
    Decision,
    Enforcement,
    Outcome,
    RuleResult,
    Status,
    iso_utc,
)
from policyengine.language.policy import policy_applies, when_skip
from policyengine.rules.base import Context
from policyengine.lifecycle.waivers import apply as apply_waivers
from policyengine.lifecycle.waivers import owners_of

if TYPE_CHECKING:
    from policyengine.language.policy import Policy

SCHEMA_VERSION = 1


def evaluate(policy: Policy, facts: Facts, now: datetime, emergency: EmergencyRequest | None = None) -> Decision:
    """Evaluate every rule of ``policy`` on the gathered ``facts`` at ``now``; derive the decision.

    Pure: the facts were gathered before (``policyengine.gather``), and ``now`` is given.
    ``emergency``: what the command line asked for (``--emergency``, ``--reason``, ``--incident``);
    the policy's trigger label is read from the change whatever it is (``emergency.apply``).
    """
    from policyengine.language.policy import build_rules

    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    change = facts.change
    ctx = Context(change=change, facts=facts, now=now)
    applies = policy_applies(policy, change)
    results: list[RuleResult] = []
    for rule in build_rules(policy):
        spec = rule.spec
        if not applies:
            envs = ", ".join(policy.environments or ())
            outcome = Outcome(Status.SKIPPED, f"policy applies to {envs}; this change deploys to "
                              f"{change.get('environment')}")
        else:
            skip, note = when_skip(spec.when_paths, change)
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
    notes: list[str] = []
    uses: tuple[dict[str, Any], ...] = ()
    if applies and policy.waivers:
        applied = apply_waivers(policy.waivers, results, change, now, owners_of(policy.document))
        results, notes = applied.results, applied.notes
        uses = tuple(u.to_json() for u in applied.uses)
    declared: dict[str, Any] | None = None
    if applies:
        # After the waivers: an emergency waives what is still failing, and records it.
        urgent = apply_emergency(policy.emergency, emergency, results, change, now)
        results, declared = urgent.results, urgent.emergency
    deny = any(r.enforcement is Enforcement.DENY and r.status in (Status.FAIL, Status.ERROR) for r in results)
    note = "; ".join(notes) or None
    verdict = "deny" if deny else "allow"
    if not applies:
        # Nothing was judged: never an allow (the gate refuses this unless the policy opted in).
        verdict = NOT_APPLICABLE
        note = (f"policy {policy.name!r} applies to {', '.join(policy.environments or ())}; "
                f"nothing was judged for environment {change.get('environment')!r}")
    return Decision(
        decision=verdict,
        evaluated_at=iso_utc(now),
        policy=policy_record(policy),
        change=change,
        rules=tuple(results),
        applies=applies,
        note=note,
        waivers=uses,
        emergency=declared,
    )


def policy_record(policy: Policy) -> dict[str, Any]:
    """What the decision says of its policy: name, path, digests, and where it came from."""
    out: dict[str, Any] = {"name": policy.name, "path": policy.path, "sha256": policy.sha256,
                           "resolved_sha256": policy.resolved_sha256}
    if policy.source:
        out["source"] = policy.source
    bases = []
    base = policy.base
    while base is not None:
        bases.append({"path": base.path, "sha256": base.sha256, **({"source": base.source} if base.source else {})})
        base = base.base
    if bases:
        out["extends"] = bases
    if policy.waivers_file:
        out["waivers_file"] = dict(policy.waivers_file)
    return out


def summary(decision: Decision) -> dict[str, int]:
    """Count rules by status."""
    counts = {s.value: 0 for s in Status if s is not Status.WAIVED}
    for r in decision.rules:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    return counts  # ``waived`` only when a rule was waived: decisions without waivers stay as they were


def exit_code_for(decision: Decision) -> int:
    """0 allow (or not_applicable); 1 a deny-rule failed; 3 deny only because facts could not be read.

    A simulated decision's exit code is the gate's business (under CI it never releases a deploy).
    """
    from policyengine.errors import EXIT_ALLOW, EXIT_DENY, EXIT_FACTS

    if decision.allowed or decision.not_applicable:
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
    if decision.waivers:
        out["waivers_used"] = [w for w in decision.waivers if w.get("status") == "applied"]
        out["waivers_considered"] = list(decision.waivers)
    if decision.emergency is not None:
        out["emergency"] = dict(decision.emergency)
    out["simulated"] = decision.simulated
    if decision.clock is not None:
        out["clock"] = dict(decision.clock)
    return out
