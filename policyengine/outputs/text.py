"""The console verdict: one line per rule, then the decision."""

from __future__ import annotations

from policyengine.models import Decision, Status

COLORS = {
    Status.PASS: "32",
    Status.FAIL: "31",
    Status.ERROR: "35",
    Status.WARN: "33",
    Status.SKIPPED: "2",
}
LABELS = {Status.PASS: "PASS", Status.FAIL: "FAIL", Status.ERROR: "ERROR", Status.WARN: "WARN", Status.SKIPPED: "SKIP"}


def _paint(text: str, code: str, color: bool) -> str:
    return f"\033[{code}m{text}\033[0m" if color else text


def render(decision: Decision, *, color: bool = False, advisory: bool = False, exit_code: int = 0) -> str:
    """Render a decision for a person reading CI logs."""
    width = max((len(r.id) for r in decision.rules), default=0)
    lines = [f"policy {decision.policy['name']} ({decision.policy['path']}) at {decision.evaluated_at}"]
    ch = decision.change
    pr = ch.get("pull_request")
    what = f"{ch.get('repository')} {str(ch.get('commit', ''))[:12]} -> {ch.get('environment')}"
    if pr:
        what += f" (#{pr.get('number')}: {pr.get('title') or ''})".rstrip(": )") + (")" if pr.get("title") else "")
    if ch.get("deployer"):
        what += f", deployed by {ch['deployer']}"
    lines.append(what)
    for note in ch.get("notes") or []:
        lines.append(f"note: {note}")
    lines.append("")
    for r in decision.rules:
        label = _paint(f"{LABELS[r.status]:<5}", COLORS[r.status], color)
        lines.append(f"  {label} {r.id:<{width}}  {r.message}")
    lines.append("")
    if decision.note:
        lines.append(f"note: {decision.note}")
    if decision.allowed:
        verdict = _paint("ALLOW", "1;32", color) + ": the change may be deployed"
    else:
        blocking = [r.id for r in decision.rules if r.enforcement.value == "deny" and r.status in (Status.FAIL, Status.ERROR)]
        reason = "facts could not be read" if exit_code == 3 else "rules not met"
        verdict = _paint("DENY", "1;31", color) + f": {reason}: {', '.join(blocking)}"
        if advisory:
            verdict += "\n" + _paint("ADVISORY MODE", "1;33", color) + ": this change WOULD HAVE BEEN DENIED; exiting 0 because --advisory is set"
    lines.append(verdict)
    return "\n".join(lines) + "\n"
