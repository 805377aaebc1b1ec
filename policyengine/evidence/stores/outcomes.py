"""Record what happened after the gate (``record-outcome``) and the post-implementation review.

Both append a linked record (``records``) with ``EvidenceStore.append_record``; this module only
checks what is specific to each before it does: the evaluation exists and is one, the claimed
time, and for a review the segregation of duties (the reviewer wrote, committed or deployed
none of the change). No click and no printing: the CLI resolves who records it
(``records.resolve_actor``) and prints the result.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from policyengine.errors import EvidenceError, UsageError
from policyengine.evidence.format.bundle import ZIP_READ_ERRORS, format_timestamp
from policyengine.evidence.format.records import (
    OUTCOME_STATUSES,
    RECORD,
    REVIEW_RESULTS,
    Actor,
    is_evaluation,
    kind_of,
    reviewer_conflicts,
)
from policyengine.evidence.format.signing import SigningKey
from policyengine.evidence.stores.replay import policy_retention
from policyengine.evidence.stores.base import BundleRef, EvidenceStore, read_bundle
from policyengine.redact import EvidenceRedactor, ci_variables


def read_member(store: EvidenceStore, record: Mapping[str, Any], member: str, noun: str = "bundle") -> Any:
    """One JSON member of a recorded bundle (not verified: see ``verify``); EvidenceError when unreadable."""
    try:
        with store.open_bundle(record) as fh, zipfile.ZipFile(fh) as zf:
            return json.loads(zf.read(member))
    except FileNotFoundError as exc:
        raise EvidenceError(f"{noun} {record['id']} is recorded but {store.location(record)} is missing") from exc
    except (*ZIP_READ_ERRORS, KeyError, ValueError) as exc:
        raise EvidenceError(f"{noun} {record['id']} cannot be read: {exc}",
                            hint=f"run `{store.command('evidence', 'verify', record['id'])}`") from exc


def read_record(store: EvidenceStore, record: Mapping[str, Any]) -> dict[str, Any]:
    """The ``record.json`` of a linked record's bundle (not verified: see ``verify``)."""
    value = read_member(store, record, RECORD, "record")
    if not isinstance(value, dict):
        raise EvidenceError(f"record {record['id']}: {RECORD} is not a JSON object")
    return value


def _evaluation(store: EvidenceStore, bundle_id: str) -> dict[str, Any]:
    about = store.find(bundle_id)  # UsageError (exit 2) when it is not recorded
    if not is_evaluation(about):
        raise UsageError(f"bundle {bundle_id} is a {kind_of(about)} record, not an evaluation: outcomes and "
                         "reviews are recorded about the bundle `check` wrote",
                         hint=f"`{store.command('evidence', 'list', '--kind', 'evaluation')}` shows the evaluations")
    return about


def _retention(store: EvidenceStore, about: Mapping[str, Any]) -> str | None:
    """Keep a record as long as the evaluation's policy keeps evidence (S3 Object Lock)."""
    return policy_retention(store, about)


def _payload(actor: Actor, note: str | None, env: Mapping[str, str], redactor: EvidenceRedactor) -> dict[str, Any]:
    payload: dict[str, Any] = {"note": note if note else None, "by": actor.login, "by_verified": actor.verified,
                               "by_source": actor.source}
    ci = ci_variables(env, redactor)
    if ci:
        payload["ci"] = ci
    return payload


def record_outcome(store: EvidenceStore, bundle_id: str, *, status: str, actor: Actor, note: str | None = None,
                   claimed_at: datetime | None = None, signing_key: SigningKey | None = None,
                   env: Mapping[str, str] | None = None, now: datetime | None = None) -> BundleRef:
    """Append an outcome (``deployed``, ``failed``, ``rolled_back``, ``not_deployed``) of evaluation ``bundle_id``.

    ``claimed_at`` (``--at``) is when the person says it happened: it may not lie in the future
    nor before the evaluation was recorded (UsageError).
    """
    if status not in OUTCOME_STATUSES:
        raise UsageError(f"--status {status!r} is not one of {', '.join(OUTCOME_STATUSES)}")
    about = _evaluation(store, bundle_id)
    env = env or {}
    redactor = EvidenceRedactor.from_env(env)
    payload = _payload(actor, note, env, redactor) | {
        "status": status, "claimed_at": format_timestamp(claimed_at) if claimed_at else None}
    return store.append_record("outcome", about, payload, signing_key=signing_key,
                               created_at=now or datetime.now(timezone.utc), retention=_retention(store, about),
                               redactor=redactor)


def record_review(store: EvidenceStore, bundle_id: str, *, result: str, actor: Actor, note: str,
                  signing_key: SigningKey | None = None, env: Mapping[str, str] | None = None,
                  now: datetime | None = None) -> BundleRef:
    """Append the post-implementation review (``ok`` or ``issues``) of evaluation ``bundle_id``.

    The reviewer may not be the change's author, its deployer (the change's, or whoever recorded
    an outcome of it) nor a committer of it, logins compared case-insensitively: UsageError
    naming the role. When a role cannot be established, the review is refused too.
    """
    if result not in REVIEW_RESULTS:
        raise UsageError(f"--result {result!r} is not one of {', '.join(REVIEW_RESULTS)}")
    if not note or not note.strip():
        raise UsageError("--note: a review says what was reviewed and found; the note is empty")
    about = _evaluation(store, bundle_id)
    change = read_bundle(store, bundle_id).change
    deployers = [str(read_record(store, r).get("by") or "") for r in store.linked_records(bundle_id, "outcome")]
    roles = reviewer_conflicts(actor.login, change, [d for d in deployers if d])
    if roles:
        raise UsageError(f"--by {actor.login}: the reviewer is the change's {' and '.join(roles)}: a "
                         "post-implementation review must be made by someone who did not write, commit or deploy it",
                         hint="ask another person to review the change")
    env = env or {}
    redactor = EvidenceRedactor.from_env(env)
    payload = _payload(actor, note, env, redactor) | {"result": result}
    return store.append_record("review", about, payload, signing_key=signing_key,
                               created_at=now or datetime.now(timezone.utc), retention=_retention(store, about),
                               redactor=redactor)
