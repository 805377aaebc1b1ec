"""The console verdict: one line per rule, then the decision."""

from __future__ import annotations

from policyengine.models import Decision, Status

COLORS = {
    Status.PASS: "32",
    Status.FAIL: "31",
    Status.ERROR: "35",
    Status.WARN: "33",
    Status.SKIPPED: "2",
    Status.WAIVED: "36",
}
LABELS = {Status.PASS: "PASS", Status.FAIL: "FAIL", Status.ERROR: "ERROR", Status.WARN: "WARN", Status.SKIPPED: "SKIP",
          Status.WAIVED: "WAIVED"}


def _paint(text: str, code: str, color: bool) -> str:
    return f"\033[{code}m{text}\033[0m" if color else text


def render(decision: Decision, *, color: bool = False, advisory: bool = False, exit_code: int = 0,
           simulated_under_ci: bool = False, approve_command: str | None = None) -> str:
    """Render a decision for a person reading CI logs.

    A ``not_applicable`` decision ends in ``NOT APPLICABLE`` (never ``ALLOW``); a simulated one
    says ``SIMULATED`` first and last, with the clock it ran at. An allowed emergency says
    ``EMERGENCY`` first and last: who declared it, why, what it waived and when approval is due,
    with ``approve_command``: the command that approves it, naming the real bundle and store.
    """
    width = max((len(r.id) for r in decision.rules), default=0)
    label_width = 6 if any(r.status is Status.WAIVED for r in decision.rules) else 5
    lines = [f"policy {decision.policy['name']} ({decision.policy['path']}) at {decision.evaluated_at}"]
    clock = decision.clock or {}
    if decision.simulated:
        lines.insert(0, _paint("SIMULATED", "1;33", color) + f": a what-if evaluation at {decision.evaluated_at} "
                     f"(wall clock {clock.get('wall_time', '?')}); it is not a deployment decision")
    elif clock.get("source") == "override":
        lines.append(f"note: evaluated at a given time ({decision.evaluated_at}), not the clock "
                     f"(wall clock {clock.get('wall_time', '?')})")
    emergency = decision.emergency or {}
    if decision.is_emergency:
        lines.insert(0, _paint("EMERGENCY", "1;41;97", color) + f": declared by {emergency.get('declarer')} "
                     f"(incident {emergency.get('incident') or 'none'}): rules waived: "
                     f"{', '.join(emergency.get('waived') or []) or 'none'}")
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
        label = _paint(f"{LABELS[r.status]:<{label_width}}", COLORS[r.status], color)
        lines.append(f"  {label} {r.id:<{width}}  {r.message}")
        waiver = r.details.get("waiver") if r.status is Status.WAIVED else None
        if isinstance(waiver, dict):
            lines.append(f"  {'':<{label_width}} {'':<{width}}  waiver: {waiver.get('reason')} (approved by "
                         f"{waiver.get('approved_by')} on {waiver.get('approved_at')}, expires "
                         f"{waiver.get('expires')}; {waiver.get('source')})")
    lines.append("")
    if decision.note and not decision.not_applicable:
        lines.append(f"note: {decision.note}")
    if decision.not_applicable:
        envs = decision.note or "the policy does not cover this environment"
        verdict = (_paint("NOT APPLICABLE", "1;36", color) + f": {envs}; "
                   "this is not an allow (recorded as not_applicable)")
    elif decision.is_emergency:
        verified = "verified" if emergency.get("declarer_verified") else "NOT verified by a code host"
        verdict = (_paint("EMERGENCY ALLOW", "1;41;97", color) + f": an emergency change declared by "
                   f"{emergency.get('declarer')} ({verified}); incident {emergency.get('incident') or 'none'}: "
                   f"{emergency.get('reason') or 'no reason given'}\n"
                   f"  waived: {', '.join(emergency.get('waived') or []) or 'nothing'}\n"
                   f"  post-facto approval due by {emergency.get('due_at')}: "
                   f"{approve_command or 'policyengine emergency approve --archive ARCHIVE BUNDLE_ID --by LOGIN'}")
    elif decision.allowed:
        verdict = _paint("ALLOW", "1;32", color) + ": the change may be deployed"
    else:
        blocking = [r.id for r in decision.rules if r.enforcement.value == "deny" and r.status in (Status.FAIL, Status.ERROR)]
        reason = "facts could not be read" if exit_code == 3 else "rules not met"
        verdict = _paint("DENY", "1;31", color) + f": {reason}: {', '.join(blocking)}"
        if emergency:
            verdict += ("\nemergency " + ("refused: " + "; ".join(emergency.get("problems") or [])
                                          if not emergency.get("accepted") else
                                          "declared, but rules it may not waive still deny"))
        if advisory:
            verdict += "\n" + _paint("ADVISORY MODE", "1;33", color) + ": this change WOULD HAVE BEEN DENIED; exiting 0 because --advisory is set"
    if decision.simulated:
        verdict = _paint("SIMULATED", "1;33", color) + " " + verdict
        if simulated_under_ci:
            verdict += "\n" + _paint("SIMULATED", "1;33", color) + ": exiting 1 under CI: a simulation never releases a deploy"
    lines.append(verdict)
    return "\n".join(lines) + "\n"
