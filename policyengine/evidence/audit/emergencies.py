"""Emergency deploys after the fact: who approved them, and which still await approval.

An allowed emergency (``emergency`` in the evaluation's ``decision.json``, ``approval_required``
true) needs a post-facto approval within ``approve_within``. ``approve`` appends a signed
``emergency-approval`` record linked to the evaluation (``EvidenceStore.append_record``); the
evaluation's bundle is never edited. ``pending`` lists every allowed emergency with its status
(``emergency.emergency_status``): approved on time, approved late, open, overdue.

Who may approve (``emergency.approver_problems``, checked before anything is written):

* not the declarer, whatever ``approvers.exclude`` says; nor anyone in the roles it names
  (``author``, ``deployer`` - the change's and whoever recorded an outcome of it -,
  ``committers``), logins compared case-insensitively; a role that could not be established
  when the emergency was judged refuses every approver (fail closed);
* with ``approvers.from_teams``, a member of one of them by the change's recorded team
  membership; unknown membership refuses;
* inside CI the approver is the CI actor (``records.resolve_actor``: ``--by`` must be that actor);
  outside CI the approval is recorded as self-asserted, shown so, and never closes an emergency.
  One approval per person counts.

Only approvals that verify count (``store.verify``: digests, statement, link to this evaluation;
with a public key, a valid signature by it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from msgspec import Struct, field

from policyengine.lifecycle.emergency import (
    APPROVED_LATE,
    APPROVED_ON_TIME,
    OVERDUE,
    approver_problems,
    emergency_status,
)
from policyengine.errors import EvidenceError, UsageError
from policyengine.evidence.format.bundle import DECISION
from policyengine.evidence.stores.outcomes import (
    _evaluation,
    _payload,
    _retention,
    read_member,
    read_record,
)
from policyengine.evidence.format.records import (
    EMERGENCY_APPROVAL,
    Actor,
    is_deployment,
    is_evaluation,
    kind_of,
)
from policyengine.evidence.format.signing import SigningKey
from policyengine.evidence.stores.base import BundleRef, EvidenceStore, read_bundle
from policyengine.redact import EvidenceRedactor


def _decision(store: EvidenceStore, record: Mapping[str, Any]) -> dict[str, Any]:
    """The ``decision.json`` of an evaluation bundle."""
    value = read_member(store, record, DECISION)
    return value if isinstance(value, dict) else {}


def allowed_emergency(decision: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The emergency object of an allowed emergency that needs approval, or None."""
    emergency = decision.get("emergency")
    if decision.get("decision") != "allow" or decision.get("simulated") is True or not isinstance(emergency, Mapping):
        return None
    return emergency if emergency.get("approval_required") is True else None


class Approval(Struct, frozen=True):
    """One approval record about an emergency, and whether it counts."""

    record_id: str
    by: str
    verified: bool
    recorded_at: str
    counts: bool
    why_not: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"record_id": self.record_id, "by": self.by, "by_verified": self.verified,
                "recorded_at": self.recorded_at, "counts": self.counts, "why_not": self.why_not}


class EmergencyState(Struct, frozen=True):
    """Where one allowed emergency stands."""

    bundle_id: str
    sha256: str
    repository: str | None
    environment: str | None
    commit: str | None
    declarer: str | None
    declarer_verified: bool
    reason: str | None
    incident: str | None
    waived: tuple[str, ...]
    declared_at: str | None
    due_at: str
    min_approvals: int
    status: str
    approvals: tuple[Approval, ...] = field(default_factory=tuple)

    @property
    def closed(self) -> bool:
        return self.status in (APPROVED_ON_TIME, APPROVED_LATE)

    def to_json(self) -> dict[str, Any]:
        return {"bundle_id": self.bundle_id, "sha256": self.sha256, "repository": self.repository,
                "environment": self.environment, "commit": self.commit, "declarer": self.declarer,
                "declarer_verified": self.declarer_verified, "reason": self.reason, "incident": self.incident,
                "waived": list(self.waived), "declared_at": self.declared_at, "due_at": self.due_at,
                "min_approvals": self.min_approvals, "status": self.status,
                "approvals": [a.to_json() for a in self.approvals]}


def _approvals(store: EvidenceStore, evaluation: Mapping[str, Any], emergency: Mapping[str, Any],
               linked: Sequence[Mapping[str, Any]], public_key: tuple[Any, str] | None) -> tuple[list[Approval],
                                                                                                 list[dict[str, Any]]]:
    """Every approval record about ``evaluation`` (by id and SHA-256), and the documents of those that verify."""
    shown: list[Approval] = []
    docs: list[dict[str, Any]] = []
    mine = [r for r in linked if kind_of(r) == EMERGENCY_APPROVAL and r.get("about_id") == evaluation["id"]
            and r.get("about_sha256") == evaluation["sha256"]]
    deployers = [str(read_record(store, r).get("by") or "") for r in linked
                 if kind_of(r) == "outcome" and r.get("about_id") == evaluation["id"]]
    seen: set[str] = set()
    for r in mine:
        try:
            doc = read_record(store, r)
        except EvidenceError as exc:
            shown.append(Approval(r["id"], "?", False, str(r.get("created_at")), False, exc.message))
            continue
        report = store.verify([r["id"]], public_key)
        login = str(doc.get("by") or "")
        why: str | None = None
        if not report.ok:
            why = f"does not verify: {report.problems[0].message}"
        elif doc.get("by_verified") is not True:
            why = "self-asserted (recorded outside CI): never closes an emergency"
        elif login.casefold() in seen:
            why = f"{login} approved already: one approval per person counts"
        else:
            why = "; ".join(approver_problems(emergency, login, [d for d in deployers if d])) or None
        if why is None:
            seen.add(login.casefold())
            docs.append(doc)
        shown.append(Approval(r["id"], login, doc.get("by_verified") is True, str(doc.get("recorded_at")),
                              why is None, why))
    return shown, docs


def judged_approvals(store: EvidenceStore, evaluation: Mapping[str, Any], decision: Mapping[str, Any],
                     linked: Sequence[Mapping[str, Any]], public_key: tuple[Any, str] | None) -> dict[str, Approval]:
    """Each emergency approval record about ``evaluation``, by record id, judged as ``pending`` judges it
    (empty when the evaluation is no allowed emergency needing approval)."""
    emergency = allowed_emergency(decision)
    if emergency is None:
        return {}
    approvals, _ = _approvals(store, evaluation, emergency, linked, public_key)
    return {a.record_id: a for a in approvals}


def pending(store: EvidenceStore, now: datetime, *, public_key: tuple[Any, str] | None = None,
            include_closed: bool = False) -> list[EmergencyState]:
    """Every allowed emergency deployment of the archive (not simulated, not recorded as not
    deployed) still awaiting approval (or, with ``include_closed``, every one), oldest first."""
    records, problems = store.read_index()
    if problems:
        raise EvidenceError(problems[0].message,
                            hint=f"run `{store.command('evidence', 'verify', '--all')}` to see every problem")
    linked_by: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        if not is_evaluation(r) and isinstance(r.get("about_id"), str):
            linked_by.setdefault(r["about_id"], []).append(r)
    out: list[EmergencyState] = []
    for r in records:
        if not is_evaluation(r) or r.get("decision") != "allow" or not is_deployment(r, linked_by.get(r["id"], [])):
            continue
        decision = _decision(store, r)
        emergency = allowed_emergency(decision)
        if emergency is None:
            continue
        approvals, docs = _approvals(store, r, emergency, linked_by.get(r["id"], []), public_key)
        status = emergency_status(emergency, docs, now)
        state = _state(r, emergency, status, approvals)
        if include_closed or not state.closed:
            out.append(state)
    return out


def period_states(store: EvidenceStore, rows: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]],
                  now: datetime, *, public_key: tuple[Any, str] | None = None) -> dict[str, str]:
    """The status of each allowed emergency deployment among a period's rows, by bundle id (``period_judgements``)."""
    return {k: status for k, (status, _) in period_judgements(store, rows, records, now, public_key=public_key).items()}


def closing_approval(status: str, approvals: Sequence[Approval], min_approvals: int) -> Approval | None:
    """The approval that closed an emergency (the ``min_approvals``-th that counts), or None while it is open
    or overdue: a self-asserted, ineligible or unverifiable approval never closes one."""
    if status not in (APPROVED_ON_TIME, APPROVED_LATE):
        return None
    counting = sorted((a for a in approvals if a.counts), key=lambda a: (a.recorded_at, a.record_id))
    return counting[max(1, min_approvals) - 1] if len(counting) >= max(1, min_approvals) else None


def period_judgements(store: EvidenceStore, rows: Sequence[Mapping[str, Any]], records: Sequence[Mapping[str, Any]],
                      now: datetime, *, public_key: tuple[Any, str] | None = None,
                      ) -> dict[str, tuple[str, list[Approval]]]:
    """The status of each allowed emergency deployment among a period's described rows, by bundle id.

    ``rows``: evaluations as ``audit.describe_population`` describes them (their decision's
    ``emergency`` object as ``_emergency``); ``records``: the archive's index. The same judgement
    as ``pending`` (only verified approvals by eligible people count), for the rows of a period
    only, without reading any other bundle: ``audit export`` and ``audit summary`` use it.
    """
    linked_by: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        if not is_evaluation(r) and isinstance(r.get("about_id"), str):
            linked_by.setdefault(r["about_id"], []).append(r)
    out: dict[str, tuple[str, list[Approval]]] = {}
    for row in rows:
        emergency = allowed_emergency({"decision": row.get("decision"), "simulated": row.get("simulated"),
                                       "emergency": row.get("_emergency")})
        linked = linked_by.get(str(row.get("id")), [])
        if emergency is None or not is_deployment(row, linked):
            continue
        approvals, docs = _approvals(store, row, emergency, linked, public_key)
        try:
            out[str(row["id"])] = (emergency_status(emergency, docs, now), approvals)
        except ValueError:
            continue  # a malformed due time: the row shows no status rather than a wrong one
    return out


def _state(record: Mapping[str, Any], emergency: Mapping[str, Any], status: str,
           approvals: Sequence[Approval]) -> EmergencyState:
    approvers = emergency.get("approvers") if isinstance(emergency.get("approvers"), Mapping) else {}
    need = approvers.get("min_approvals", 1) if isinstance(approvers, Mapping) else 1
    return EmergencyState(
        bundle_id=str(record["id"]), sha256=str(record["sha256"]), repository=record.get("repository"),
        environment=record.get("environment"), commit=record.get("commit"), declarer=emergency.get("declarer"),
        declarer_verified=emergency.get("declarer_verified") is True, reason=emergency.get("reason"),
        incident=emergency.get("incident"), waived=tuple(str(w) for w in emergency.get("waived") or []),
        declared_at=emergency.get("declared_at"), due_at=str(emergency.get("due_at")),
        min_approvals=need if isinstance(need, int) else 1, status=status, approvals=tuple(approvals))


def any_overdue(states: Sequence[EmergencyState]) -> bool:
    return any(s.status == OVERDUE for s in states)


def approve(store: EvidenceStore, bundle_id: str, *, actor: Actor, note: str | None = None,
            signing_key: SigningKey | None = None, env: Mapping[str, str] | None = None,
            now: datetime | None = None) -> BundleRef:
    """Append an ``emergency-approval`` record about the allowed emergency ``bundle_id``.

    Refused (UsageError, nothing written): the bundle is no evaluation, or not an allowed
    emergency; ``actor`` may not approve it (``emergency.approver_problems``); ``actor`` already
    gave a verified approval of it. A self-asserted approval (outside CI) is recorded and shown
    so; it never closes the emergency.
    """
    about = _evaluation(store, bundle_id)
    contents = read_bundle(store, bundle_id)
    emergency = allowed_emergency(contents.decision)
    if emergency is None:
        raise UsageError(f"bundle {bundle_id} is not an allowed emergency deployment (decision "
                         f"{contents.decision.get('decision')}"
                         + (", no emergency declared" if not contents.decision.get("emergency") else "")
                         + "): there is nothing to approve",
                         hint=f"`{store.command('emergency', 'pending', '--all')}` lists the emergencies")
    linked = store.linked_records(bundle_id)
    deployers = [str(read_record(store, r).get("by") or "") for r in linked if kind_of(r) == "outcome"]
    problems = approver_problems(emergency, actor.login, [d for d in deployers if d])
    if problems:
        raise UsageError(f"--by {actor.login}: refused: {'; '.join(problems)}",
                         hint="ask someone allowed by the policy's emergency.approvers to approve it")
    if actor.verified:
        for r in linked:
            if kind_of(r) != EMERGENCY_APPROVAL or r.get("about_sha256") != about["sha256"]:
                continue
            doc = read_record(store, r)
            if doc.get("by_verified") is True and str(doc.get("by") or "").casefold() == actor.login.casefold():
                raise UsageError(f"--by {actor.login}: {actor.login} approved this emergency already "
                                 f"(record {r['id']}): one approval per person counts")
    env = env or {}
    redactor = EvidenceRedactor.from_env(env)
    payload = _payload(actor, note, env, redactor) | {"approval": "approved", "due_at": emergency.get("due_at")}
    return store.append_record(EMERGENCY_APPROVAL, about, payload, signing_key=signing_key,
                               created_at=now or datetime.now(timezone.utc), retention=_retention(store, about),
                               redactor=redactor)
