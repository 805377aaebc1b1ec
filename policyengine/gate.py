"""The gate: gather, then judge, then record. The one way through the house.

``check`` runs one evaluation end to end and returns a ``CheckResult``; ``replay`` judges a
recorded bundle again. Every face of the product (the CLI, the GitHub action and the GitLab
template through it, and the tests) reaches the gate here, so the rules of the whole run
live in one place:

* gathering (the change from a provider, the facts from the workspace) may do I/O;
* judging (``engine.evaluate``) is pure: policy, facts and a given time in, decision out;
* recording writes the evidence bundle; if it cannot be written, the gate denies (a change
  without evidence is not allowed), and the decision says why.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from policyengine.engine import decision_to_json, evaluate, exit_code_for
from policyengine.errors import (
    EXIT_ALLOW,
    EXIT_DENY,
    InvalidInputError,
    PolicyEngineError,
    UsageError,
)
from policyengine.gather import gather_facts
from policyengine.models import Decision, Enforcement, RuleResult, Status
from policyengine.policy import Policy, load_policy
from policyengine.workspace import Workspace


@dataclass(frozen=True)
class CheckRequest:
    """Everything one evaluation needs, already parsed from options and the environment."""

    policy_path: str
    now: datetime
    env: Mapping[str, str]
    change_path: str | None = None
    provider: str | None = None
    environment: str | None = None
    workspace: str = "."
    evidence_dir: str = "evidence"
    evidence_store: str | None = None
    signing_key: Any = None  # evidence.signing.SigningKey
    trust_key: Any = None  # (Ed25519 public key, key id): whose signed bundles count as history
    subjects: Sequence[tuple[str, str]] = ()
    advisory: bool = False


@dataclass(frozen=True)
class CheckResult:
    """What the gate decided and recorded.

    ``verdict_code`` is the decision's own exit code; ``exit_code`` is what the process should
    exit with (advisory mode turns a rule denial into 0). ``document`` is the decision JSON,
    with the ``evidence`` it was recorded as.
    """

    decision: Decision
    document: dict[str, Any]
    evidence: dict[str, Any]
    store_url: str
    verdict_code: int
    exit_code: int
    advisory: bool = False
    notes: list[str] = field(default_factory=list)


def _load(request: CheckRequest) -> tuple[Policy, Any]:
    """Load the policy and gather the change; report every problem of both files at once."""
    from policyengine.evidence.history import VerifiedHistory
    from policyengine.providers import gather

    problems: list[Any] = []
    policy = gathered = None
    try:
        policy = load_policy(request.policy_path)
    except InvalidInputError as exc:
        problems.extend(exc.problems)
    try:
        teams = [t for r in (policy.rules if policy else ()) for t in r.params.get("from_teams", [])]
        # The previous deploy is only ever what a bundle signed by the trusted key proves, read
        # from the store this evaluation records into; without a trusted key there is no history.
        history = (VerifiedHistory(request.evidence_store or request.evidence_dir, request.trust_key)
                   if request.trust_key is not None else None)
        gathered = gather(request.provider, env=request.env, change_path=request.change_path,
                          environment=request.environment, previous_deploys=history, teams=teams)
    except InvalidInputError as exc:
        problems.extend(exc.problems)
    if problems:
        raise InvalidInputError(problems, what="input", hint="fix every line above, then run again")
    assert policy is not None and gathered is not None  # noqa: S101
    return policy, gathered


def _evidence_failed(decision: Decision, store_url: str, exc: PolicyEngineError) -> Decision:
    """Deny, with a rule result that says the evidence could not be recorded (fail closed)."""
    failed = RuleResult(id="evidence", type="evidence", status=Status.ERROR, enforcement=Enforcement.DENY,
                        message=f"the evidence could not be recorded: {exc.message}", controls=("CC8.1",),
                        description="The evaluation is archived as tamper-evident evidence.",
                        details={"archive": store_url})
    return Decision(decision="deny", evaluated_at=decision.evaluated_at, policy=decision.policy,
                    change=decision.change, rules=decision.rules + (failed,), applies=decision.applies,
                    note=decision.note)


def _record(request: CheckRequest, policy: Policy, gathered: Any, decision: Decision,
            store_url: str) -> dict[str, Any]:
    """Write the bundle; return what the decision JSON says of it. Raises PolicyEngineError."""
    from policyengine.evidence.stores import open_store
    from policyengine.redact import EvidenceRedactor, ci_variables

    extra = {f"raw/{name}": data for name, data in gathered.raw.items()}
    redactor = EvidenceRedactor.from_env(request.env)
    ci = ci_variables(request.env, redactor)
    if ci:
        extra["ci.json"] = (json.dumps(ci, indent=2, sort_keys=True) + "\n").encode("utf-8")
    archive = open_store(store_url)
    ref = archive.write_bundle(
        decision=decision_to_json(decision, advisory=request.advisory),
        change=gathered.change,
        policy_filename=Path(request.policy_path).name,
        policy_bytes=policy.raw,
        files=decision.files,
        extra_members=extra,
        subjects=list(request.subjects),
        signing_key=request.signing_key,
        retention=policy.retention,
        redactor=redactor,
    )
    bundle: dict[str, Any] = {"bundle_id": ref.id, "path": ref.path, "sha256": ref.sha256,
                              "signed": request.signing_key is not None}
    notes = list(getattr(archive, "notes", []))
    if notes:
        bundle["notes"] = notes
    return bundle


def check(request: CheckRequest) -> CheckResult:
    """Gather, judge and record one evaluation.

    Raises ``InvalidInputError`` (every problem of the policy and change files) or
    ``UsageError`` before anything is judged; once judged, the evaluation is always recorded
    or denied.
    """
    ws = Path(request.workspace)
    if not ws.is_dir():
        raise UsageError(f"--workspace: {request.workspace} is not a directory")
    policy, gathered = _load(request)
    facts = gather_facts(policy, gathered.change, Workspace(ws))

    decision = evaluate(policy, facts, request.now)

    # Record: a denied attempt is evidence too. If it cannot be recorded, the gate denies (exit 3).
    store_url = request.evidence_store or request.evidence_dir
    try:
        bundle = _record(request, policy, gathered, decision, store_url)
    except PolicyEngineError as exc:
        decision = _evidence_failed(decision, store_url, exc)
        bundle = {"error": exc.message}

    code = exit_code_for(decision)
    doc = decision_to_json(decision, advisory=request.advisory)
    doc["evidence"] = bundle
    final = EXIT_ALLOW if request.advisory and code == EXIT_DENY else code
    return CheckResult(decision=decision, document=doc, evidence=bundle, store_url=store_url,
                       verdict_code=code, exit_code=final, advisory=request.advisory,
                       notes=list(bundle.get("notes", [])))


# -- replay -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayResult:
    """The recorded and the replayed decision, and every difference between them."""

    bundle_id: str
    evaluated_at: str
    recorded: str
    replayed: str
    rules: list[dict[str, Any]]
    differences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences


def replay(store: Any, bundle_id: str) -> ReplayResult:
    """Re-evaluate a bundle's own policy, change and files at its recorded time; compare.

    The bundle's files are unpacked into a temporary workspace (``evidence.audit.unpack``
    checks every member name, so nothing lands outside it) and gathered from there, exactly
    as ``check`` gathers them.
    """
    import tempfile

    from policyengine.evidence.audit import unpack_for_replay
    from policyengine.models import parse_instant
    from policyengine.policy import parse_policy

    with tempfile.TemporaryDirectory(prefix="policyengine-replay-") as tmp:
        ws = Path(tmp) / "workspace"
        ws.mkdir()
        unpacked = unpack_for_replay(store, bundle_id, ws)
        notes: list[str] = []
        if unpacked.redacted:
            notes.append("members stored redacted (token-looking values removed): " + ", ".join(unpacked.redacted))
        policy = parse_policy(unpacked.policy_raw, file=unpacked.policy_member)
        at = str(unpacked.recorded.get("evaluated_at"))
        facts = gather_facts(policy, unpacked.change, Workspace(ws))
        decision = evaluate(policy, facts, parse_instant(at, option="--now"))
    return compare(bundle_id, at, unpacked.recorded, decision, notes)


def compare(bundle_id: str, at: str, recorded: dict[str, Any], decision: Decision,
            notes: list[str]) -> ReplayResult:
    """Every difference between a recorded decision document and a replayed decision."""
    differences: list[str] = []
    if decision.decision != recorded.get("decision"):
        differences.append(f"decision: recorded {recorded.get('decision')}, replayed {decision.decision}")
    before = {r.get("id"): r for r in recorded.get("rules", []) if isinstance(r, dict)}
    rules = []
    for r in decision.rules:
        old = before.pop(r.id, None)
        old_status = old.get("status") if old else None
        rules.append({"id": r.id, "recorded": old_status, "replayed": r.status.value,
                      "recorded_message": old.get("message") if old else None, "replayed_message": r.message})
        if old is None:
            differences.append(f"rule {r.id}: not in the recorded decision, replayed {r.status.value}")
        elif old_status != r.status.value:
            differences.append(f"rule {r.id}: recorded {old_status}, replayed {r.status.value} ({r.message})")
    for rid, old in before.items():
        if rid == "evidence":
            notes.append("the recorded decision has an 'evidence' result (recording failed at the time)")
            continue
        differences.append(f"rule {rid}: recorded {old.get('status')}, not evaluated on replay")
    return ReplayResult(bundle_id=bundle_id, evaluated_at=at, recorded=str(recorded.get("decision")),
                        replayed=decision.decision, rules=rules, differences=differences, notes=notes)
