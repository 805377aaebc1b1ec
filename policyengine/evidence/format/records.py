"""Linked records: what happened after the gate (``outcome``) and the post-implementation ``review``.

An evaluation bundle is never edited. What is learnt later is *appended* as a record: a bundle
of its own kind, in the same store and the same chain (repository and environment) as the
evaluation it is about, linked to it by the evaluation's id **and** SHA-256, signed like any
bundle. A record bundle holds::

    record.json              the record document (below; ``schemas/record.schema.json``)
    report.html              a small page: the record, and the evaluation it is about
    manifest.json            as for evaluations, plus "kind": "outcome" | "review"
    attestation.intoto.json  in-toto Statement v1 in a DSSE envelope, predicateType
                             RECORD_PREDICATE_TYPE; its subject is the evaluation bundle (sha256)

``record.json``::

    {"schema_version": 1, "kind": "outcome", "about": {"bundle_id": ..., "sha256": ...},
     "repository": ..., "environment": ..., "commit": ...,      (copied from the evaluation)
     "status": "deployed",              (an outcome; a review has "result": "ok" | "issues")
     "note": "..." | null, "claimed_at": "<--at>" | null, "recorded_at": "<when it was written>",
     "by": "login", "by_verified": true | false, "by_source": "GITHUB_ACTOR" | "--by" | "$USER" ...,
     "ci": {allowlisted CI variables, when recorded in CI}}

Its index line carries ``"kind"``, ``"about_id"`` and ``"about_sha256"``; its ``decision`` holds
the record's status (outcome) or result (review), never ``allow``/``deny``; ``policy_sha256`` is
null. An index line without ``kind`` (every line written before records existed) is an evaluation.

``emergency-approval`` (``evidence.emergencies``, ``policyengine emergency approve``) holds
``"approval": "approved"`` and ``"due_at"`` (the evaluation's ``emergency.due_at``).

New kinds (failed notifications, ...) are added to ``RECORD_KINDS`` with the
field that holds their value and the values allowed, and appended with
``EvidenceStore.append_record``: verification then checks them like outcomes and reviews.

This module is the format (documents, statements, inspection) and the pure functions over index
records that decide what counts as a deployment (``is_deployment``, ``latest_deploy``); it imports
no store.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from msgspec import Struct

from policyengine.errors import UsageError
from policyengine.evidence.format.bundle import (
    ATTESTATION,
    MANIFEST,
    READABLE_SCHEMA_VERSIONS,
    REPORT,
    SCHEMA_VERSION,
    ZIP_READ_ERRORS,
    Inspection,
    VerifyProblem,
    check_members,
    check_statement,
    inspect_bundle,
    newer_version_message,
)
from policyengine.evidence.format.signing import STATEMENT_TYPE
from policyengine.models import parse_instant

RECORD_PREDICATE_TYPE = "https://policyengine.dev/attestation/record/v1"
RECORD = "record.json"
RECORD_SCHEMA_VERSION = 1
EVALUATION = "evaluation"

OUTCOME_STATUSES = ("deployed", "failed", "rolled_back", "not_deployed")
REVIEW_RESULTS = ("ok", "issues")
NOTIFICATION_FAILURE = "notification-failure"
NOTIFICATION_RESULTS = ("failed",)
"""A ``notification-failure`` record (``policyengine.lifecycle.notify``): a notification of the evaluation
could not be delivered; ``target`` names the variable (never the URL), ``cause`` says why."""
RECONCILIATION = "reconciliation"
RECONCILIATION_RESULTS = ("clean", "exceptions")
"""A ``reconciliation`` record (``audit reconcile --record``): the result of comparing a period's
evidence with what the platform recorded, ``summary`` holding the period, sources, counts, every
finding and the SHA-256 of the JSON report. It is store-level: linked to the store's newest
evaluation (TODO(i16-catalogue): to the store head once the catalogue exists)."""
EMERGENCY_APPROVALS = ("approved",)
EMERGENCY_APPROVAL = "emergency-approval"
BASELINE = "baseline"
BASELINE_VALUES = ("adopted",)
BASELINE_SCHEMA_VERSION = 3
"""A ``baseline`` record (``policyengine evidence baseline``): the commit in production when the
gate was adopted. It is about no evaluation (``about`` is null; its statement's subject is the
commit ``git+<repository>@<commit>``), it is only ever the first record of an empty chain
(sequence 1), its manifest has schema_version 3, and a trusted history (``history``) counts it,
signed by the trusted key, as the previous deploy. Not a deployment: the population and the
summary list it as an exception (``baselines``), and deployments before it are "before adoption"
(``chain_baseline``)."""
NOT_A_DEPLOYMENT = frozenset({"not_deployed"})
"""Outcomes that make an evaluation no deployment at all (the population does not count it)."""
NOT_THE_PREVIOUS_DEPLOY = frozenset({"not_deployed", "failed", "rolled_back"})
"""Outcomes that make an evaluation no candidate for "the previous deploy"."""

ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{12}$")
"""A bundle id: its creation time, then 48 random bits."""
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class RecordKind(Struct, frozen=True):
    """A kind of linked record: the document field holding its value, and the values allowed."""

    name: str
    field: str
    values: tuple[str, ...]


RECORD_KINDS: dict[str, RecordKind] = {
    "outcome": RecordKind("outcome", "status", OUTCOME_STATUSES),
    "review": RecordKind("review", "result", REVIEW_RESULTS),
    NOTIFICATION_FAILURE: RecordKind(NOTIFICATION_FAILURE, "notification", NOTIFICATION_RESULTS),
    EMERGENCY_APPROVAL: RecordKind(EMERGENCY_APPROVAL, "approval", EMERGENCY_APPROVALS),
    BASELINE: RecordKind(BASELINE, "baseline", BASELINE_VALUES),
    RECONCILIATION: RecordKind(RECONCILIATION, "reconciliation", RECONCILIATION_RESULTS),
}
_COMMIT_SHA_RE = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")


def kind_of(index_record: Mapping[str, Any]) -> str:
    """The kind of an index record: its ``kind``, or ``evaluation`` when it has none (older lines)."""
    kind = index_record.get("kind")
    return kind if isinstance(kind, str) else EVALUATION


def is_evaluation(index_record: Mapping[str, Any]) -> bool:
    return kind_of(index_record) == EVALUATION


def check_index_fields(record: Mapping[str, Any]) -> None:
    """The kind-specific checks of one index line; raise ValueError saying what is wrong.

    An evaluation needs ``policy_sha256`` (a SHA-256); a record needs a known ``kind``, its
    value in ``decision``, ``about_id``/``about_sha256`` naming a bundle, and no policy.
    ``simulated`` and ``advisory``, when present, are booleans.
    """
    kind = record.get("kind", EVALUATION)
    for flag in ("simulated", "advisory"):
        if flag in record and not isinstance(record[flag], bool):
            raise ValueError(f"{flag!r} must be true or false")
    if kind == EVALUATION:
        if not isinstance(record.get("policy_sha256"), str) or not SHA256_RE.match(record["policy_sha256"]):
            raise ValueError("'policy_sha256' is not a SHA-256 hex digest")
        for key in ("about_id", "about_sha256"):
            if key in record:
                raise ValueError(f"an evaluation has no {key!r}")
        return
    if not isinstance(kind, str) or kind not in RECORD_KINDS:
        raise ValueError(f"'kind' {kind!r} is not one of evaluation, {', '.join(RECORD_KINDS)} (a kind made by a "
                         "newer version of policyengine: upgrade)")
    spec = RECORD_KINDS[kind]
    if record.get("decision") not in spec.values:
        raise ValueError(f"a {kind} record's 'decision' (its {spec.field}) must be one of {', '.join(spec.values)}")
    if record.get("policy_sha256") is not None:
        raise ValueError(f"a {kind} record has no 'policy_sha256'")
    if kind == BASELINE:
        for key in ("about_id", "about_sha256"):
            if key in record:
                raise ValueError(f"a baseline is about no evaluation: it has no {key!r}")
        if not isinstance(record.get("commit"), str) or not _COMMIT_SHA_RE.match(record["commit"]):
            raise ValueError("a baseline's 'commit' is not a full commit id")
        return
    if not isinstance(record.get("about_id"), str) or not ID_RE.match(record["about_id"]):
        raise ValueError("'about_id' is not a bundle id")
    if not isinstance(record.get("about_sha256"), str) or not SHA256_RE.match(record["about_sha256"]):
        raise ValueError("'about_sha256' is not a SHA-256 hex digest")


# -- the document -------------------------------------------------------------------------------


def document_problems(doc: Any) -> list[str]:
    """Every way ``doc`` is not a well-formed record document (empty: it is one)."""
    if not isinstance(doc, dict):
        return ["record.json is not a JSON object"]
    out = []
    if doc.get("schema_version") != RECORD_SCHEMA_VERSION or type(doc.get("schema_version")) is not int:
        out.append(f"schema_version {doc.get('schema_version')!r} is not {RECORD_SCHEMA_VERSION}")
    kind = doc.get("kind")
    spec = RECORD_KINDS.get(kind) if isinstance(kind, str) else None
    if spec is None:
        out.append(f"kind {kind!r} is not one of {', '.join(RECORD_KINDS)}")
    elif doc.get(spec.field) not in spec.values:
        out.append(f"{spec.field} {doc.get(spec.field)!r} is not one of {', '.join(spec.values)}")
    about = doc.get("about")
    if kind == BASELINE:
        if about is not None:
            out.append("a baseline is about no evaluation: about must be null")
        for key in ("repository", "environment"):
            if not isinstance(doc.get(key), str) or not doc[key].strip():
                out.append(f"a baseline must name its {key}")
        if not isinstance(doc.get("commit"), str) or not _COMMIT_SHA_RE.match(doc["commit"]):
            out.append("a baseline's commit must be a full commit id (40 or 64 lowercase hex digits)")
    elif not (isinstance(about, dict) and isinstance(about.get("bundle_id"), str) and ID_RE.match(about["bundle_id"])
            and isinstance(about.get("sha256"), str) and SHA256_RE.match(about["sha256"])):
        out.append("about must be {bundle_id, sha256} naming an evaluation bundle")
    for key in ("repository", "environment", "commit", "note", "claimed_at"):
        if not isinstance(doc.get(key), (str, type(None))):
            out.append(f"{key} must be a string or null")
    if not isinstance(doc.get("by"), str) or not doc["by"].strip():
        out.append("by must name who recorded it")
    if not isinstance(doc.get("by_verified"), bool):
        out.append("by_verified must be true or false")
    for key in ("recorded_at", "claimed_at"):
        value = doc.get(key)
        if value is None and key == "claimed_at":
            continue
        try:
            parse_instant(value if isinstance(value, str) else "", option=key)
        except UsageError:
            out.append(f"{key} {value!r} is not an ISO 8601 time with a zone")
    return out


def build_record_statement(*, bundle_id: str, created_at: str, document: Mapping[str, Any],
                           manifest_sha256: str, chain: Mapping[str, Any]) -> dict[str, Any]:
    """The in-toto Statement v1 of a record bundle: its subject is the evaluation bundle it is about
    (a baseline: the commit it names, ``git+<repository>@<commit>``, as an evaluation's statement
    names the commit it deployed)."""
    about = document["about"]
    if document["kind"] == BASELINE:
        subject = [{"name": f"git+{document['repository']}@{document['commit']}",
                    "digest": {"gitCommit": document["commit"]}}]
    else:
        subject = [{"name": f"policyengine-bundle:{about['bundle_id']}", "digest": {"sha256": about["sha256"]}}]
    return {
        "_type": STATEMENT_TYPE,
        "subject": subject,
        "predicateType": RECORD_PREDICATE_TYPE,
        "predicate": {
            "bundle_id": bundle_id,
            "created_at": created_at,
            "kind": document["kind"],
            "about": dict(about) if about is not None else None,
            "record": dict(document),
            "manifest": {"sha256": manifest_sha256},
            "chain": dict(chain),
        },
    }


def record_bytes(document: Mapping[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


# -- inspection -----------------------------------------------------------------------------------


def inspect_any(zf: zipfile.ZipFile, bundle_id: str, public_key: tuple[Any, str] | None = None) -> Inspection:
    """Inspect a bundle of any kind: a record when its manifest names a record kind, else an evaluation."""
    kind = None
    try:
        manifest = json.loads(zf.read(MANIFEST))
        kind = manifest.get("kind") if isinstance(manifest, dict) else None
    except (*ZIP_READ_ERRORS, KeyError, ValueError):
        pass  # inspect_bundle reports it
    if kind is None or kind == EVALUATION:
        return inspect_bundle(zf, bundle_id, public_key)
    return inspect_record(zf, bundle_id, public_key)


def inspect_record(zf: zipfile.ZipFile, bundle_id: str, public_key: tuple[Any, str] | None = None) -> Inspection:
    """Check a record bundle: members against the manifest, ``record.json`` well formed, the statement
    (record predicate type) naming this manifest, kind, about and record, and with ``public_key``
    a valid signature by it. The link to the evaluation is checked by the store (``link``)."""
    problems: list[VerifyProblem] = []

    def problem(check: str, member: str | None, message: str) -> None:
        problems.append(VerifyProblem(bundle_id, member, check, message))

    checked = check_members(zf, bundle_id, problem)
    if checked is None:
        return Inspection(problems)
    manifest = checked.manifest
    kind = manifest.get("kind")
    if not isinstance(kind, str) or kind not in RECORD_KINDS:
        problem("manifest", MANIFEST, f"the manifest's kind {kind!r} is not a record kind this tool knows "
                f"({', '.join(RECORD_KINDS)}): made by a newer version of policyengine? upgrade")
        kind = None
    version = manifest.get("schema_version")
    if type(version) is int and version > max(READABLE_SCHEMA_VERSIONS):
        problem("version", MANIFEST, newer_version_message("the record bundle", version))
    elif kind == BASELINE:
        if version != BASELINE_SCHEMA_VERSION or type(version) is not int:
            problem("manifest", MANIFEST, f"a {kind} bundle must have schema_version {BASELINE_SCHEMA_VERSION}")
    elif type(version) is not int or version not in (2, 3):
        problem("manifest", MANIFEST, "a record bundle must have schema_version 2 or 3")
    extra = sorted(p for p in checked.listed if p not in (RECORD, REPORT))
    if extra:
        problem("manifest", extra[0], f"a record bundle holds only {RECORD} and {REPORT}, not {', '.join(extra)}")
    doc: dict[str, Any] | None = None
    if RECORD not in checked.listed:
        problem("manifest", RECORD, f"the record bundle has no {RECORD}")
    elif RECORD in checked.verified:
        try:
            value = json.loads(zf.read(RECORD))
        except (*ZIP_READ_ERRORS, ValueError) as exc:
            value = None
            problem("record", RECORD, f"{RECORD} cannot be read: {exc}")
        if value is not None:
            found = document_problems(value)
            for text in found:
                problem("record", RECORD, f"{RECORD}: {text}")
            if not found:
                doc = value
    if doc is not None and kind is not None and doc["kind"] != kind:
        problem("record", RECORD, f"{RECORD} is a {doc['kind']!r} record but the manifest says {kind!r}")
    chain = manifest.get("chain") if isinstance(manifest.get("chain"), dict) else None
    if doc is not None and chain is not None:
        for key in ("repository", "environment"):
            if chain.get(key) != doc.get(key):
                problem("manifest", MANIFEST, f"the chain link names {key} {chain.get(key)!r} but {RECORD} has "
                        f"{doc.get(key)!r}: the record was moved between chains")
    if kind == BASELINE and (chain is None or chain.get("sequence") != 1 or chain.get("previous_sha256") is not None):
        problem("chain", MANIFEST, "a baseline must be the first record of its chain (sequence 1, no previous "
                f"bundle), but this one is #{(chain or {}).get('sequence')!r}: a baseline on a chain that already "
                "had records is no baseline")
    if doc is not None:
        claimed, recorded = doc.get("claimed_at"), doc.get("recorded_at")
        if doc.get("recorded_at") != manifest.get("created_at"):
            problem("record", RECORD, f"recorded_at {recorded!r} is not the bundle's created_at "
                    f"{manifest.get('created_at')!r}")
        if isinstance(claimed, str) and isinstance(recorded, str):
            delta = (parse_instant(claimed, option="claimed_at")
                     - parse_instant(recorded, option="recorded_at")).total_seconds()
            if delta > 0:
                problem("record", RECORD, f"claimed_at {claimed} is after the record was written ({recorded}): "
                        "a record cannot claim what had not happened yet")
    facts: dict[str, Any] = {}
    if kind is not None:
        facts["kind"] = kind
    if doc is not None:
        facts["about"] = doc["about"]
        facts["record"] = doc
    signature, signed_by = check_statement(zf, checked.names, manifest, checked.manifest_bytes, public_key, problem,
                                           predicate_types=(RECORD_PREDICATE_TYPE,), facts=facts)
    if public_key is not None and signature != "valid" and not any(p.check == "signature" for p in problems):
        problem("signature", ATTESTATION, f"a signature by the given key is required, but its signature is {signature}")
    created_at = manifest.get("created_at")
    return Inspection(
        problems=problems,
        created_at=created_at if isinstance(created_at, str) else None,
        decision=doc[RECORD_KINDS[doc["kind"]].field] if doc is not None else None,
        policy_sha256=None,
        manifest=manifest,
        signature=signature,
        chain=chain,
        schema_version=manifest.get("schema_version") if type(manifest.get("schema_version")) is int else None,
        change={k: doc.get(k) for k in ("repository", "environment", "commit")} if doc is not None else None,
        signed_by=signed_by,
        kind=kind or (doc["kind"] if doc else "unknown"),
        about=dict(doc["about"]) if doc is not None and doc["about"] is not None else None,
        record=doc,
    )


# -- who recorded it ------------------------------------------------------------------------------


class Actor(Struct, frozen=True):
    """Who records a record: the login, whether the CI vouches for it, and where it came from."""

    login: str
    verified: bool
    source: str


def ci_actor(env: Mapping[str, str]) -> tuple[str, str] | None:
    """The CI's actor and the variable it came from, or None when the CI names none.

    GitHub: ``GITHUB_TRIGGERING_ACTOR``, else ``GITHUB_ACTOR``; GitLab: ``GITLAB_USER_LOGIN``.
    Under ``GITHUB_ACTIONS=true`` / ``GITLAB_CI=true`` that host's variable is the actor; under a
    plain ``CI`` whichever of them is set. Raise UsageError when two name different people.
    """
    def flag(name: str) -> bool:
        return (env.get(name) or "").strip().casefold() == "true"

    github = next(((env[n].strip(), n) for n in ("GITHUB_TRIGGERING_ACTOR", "GITHUB_ACTOR")
                   if (env.get(n) or "").strip()), None)
    gitlab = (env["GITLAB_USER_LOGIN"].strip(), "GITLAB_USER_LOGIN") if (env.get("GITLAB_USER_LOGIN") or "").strip() \
        else None
    if flag("GITHUB_ACTIONS") and not flag("GITLAB_CI"):
        found = [github] if github else []
    elif flag("GITLAB_CI") and not flag("GITHUB_ACTIONS"):
        found = [gitlab] if gitlab else []
    else:
        found = [a for a in (github, gitlab) if a is not None]
    if not found:
        return None
    if len({login.casefold() for login, _ in found}) > 1:
        raise UsageError("the CI variables name two different actors (" + ", ".join(
            f"{name}={login}" for login, name in found) + "): who records this cannot be told")
    return found[0]


def resolve_actor(env: Mapping[str, str], by: str | None, *, in_ci: bool, option: str = "--by",
                  fallback_user: bool = False, identity: Any = None) -> Actor:
    """Who records this. Inside CI (``in_ci``: ``gate.running_in_ci``) it is the CI's actor, and
    ``by``, when given, must be that actor (case-insensitive), else UsageError (exit 2); a CI that
    names no actor is refused too. Outside CI it is ``by`` (or ``$USER`` when ``fallback_user``),
    recorded as self-asserted (``verified`` false).

    Only a verified ID token (``identity``: ``providers.oidc.Identity``) makes the record
    **verified (CI actor)**: its actor (GitHub ``actor``, GitLab ``user_login``) is who records it,
    whatever ``GITHUB_TRIGGERING_ACTOR`` says, and ``by`` must be it (exit 2 naming both). Inside
    CI without one the record names the CI variable's actor but is **self-asserted**: a shell can
    set any variable.
    """
    given = by.strip() if by else ""
    if by is not None and not given:
        raise UsageError(f"{option}: the login is empty")
    if in_ci and identity is not None and getattr(identity, "status", None) == "verified" \
            and getattr(identity, "problem", None) is None and identity.actor:
        login = str(identity.actor)
        issuer = str(identity.claims.get("iss") or "")
        if given and given.casefold() != login.casefold():
            raise UsageError(f"{option} {given} is not the actor {login} of the CI's verified ID token ({issuer}): "
                             "inside CI a record is made by the person who ran the job",
                             hint=f"drop {option}, or give {option} {login}")
        return Actor(login=login, verified=True, source=f"oidc {issuer}")
    if in_ci:
        actor = ci_actor(env)
        if actor is None:
            raise UsageError(f"{option}: running in CI, but the CI names no actor (GITHUB_TRIGGERING_ACTOR / "
                             "GITHUB_ACTOR under GitHub Actions, GITLAB_USER_LOGIN under GitLab CI): who records "
                             "this cannot be verified", hint="record it from the code host's CI, or outside CI "
                             "(it is then marked self-asserted)")
        login, source = actor
        if given and given.casefold() != login.casefold():
            raise UsageError(f"{option} {given} is not the CI actor {login} ({source}): inside CI a record is "
                             "made by the person who ran the job",
                             hint=f"drop {option}, or give {option} {login}")
        # No verified ID token: the variable names the actor, but nothing vouches for it.
        return Actor(login=login, verified=False, source=f"{source} (no verified ID token)")
    if given:
        return Actor(login=given, verified=False, source=option)
    user = (env.get("USER") or env.get("LOGNAME") or "").strip() if fallback_user else ""
    if user:
        return Actor(login=user, verified=False, source="$USER")
    raise UsageError(f"{option} is required: who records this cannot be told")


# -- segregation of duties for the review -------------------------------------------------------


def _key(login: Any) -> str:
    return str(login).strip().casefold()


def reviewer_conflicts(reviewer: str, change: Mapping[str, Any], deployers: Iterable[str] = ()) -> list[str]:
    """The roles that keep ``reviewer`` from reviewing this change (empty: none), logins compared
    case-insensitively: the pull request's ``author``, the ``deployer`` (the change's, and whoever
    recorded an outcome of it: ``deployers``), a ``committer`` (author, committer or co-author of
    any of its commits).

    Fail closed: raise UsageError when a role cannot be established (no deployer known, no commit
    list, a commit without author or committer), since segregation of duties cannot then be shown.
    """
    me = _key(reviewer)
    roles: list[str] = []
    pr = change.get("pull_request")
    if isinstance(pr, Mapping) and isinstance(pr.get("author"), str) and pr["author"].strip():
        if _key(pr["author"]) == me:
            roles.append(f"author (of pull request #{pr.get('number')})")
    known_deployers = [d for d in [change.get("deployer"), *deployers] if isinstance(d, str) and d.strip()]
    if not known_deployers:
        raise UsageError("segregation of duties cannot be shown: the change records no deployer and no outcome "
                         "names who deployed it", hint="record the outcome first (evidence record-outcome)")
    if any(_key(d) == me for d in known_deployers):
        roles.append("deployer")
    commits = change.get("commits")
    if not isinstance(commits, list):
        raise UsageError("segregation of duties cannot be shown: the change lists no commits, so its committers "
                         "are unknown")
    for c in commits:
        if not isinstance(c, Mapping):
            raise UsageError("segregation of duties cannot be shown: a commit of the change is unreadable")
        sha = str(c.get("sha") or "?")[:7]
        for role in ("author", "committer"):
            who = c.get(role)
            if not isinstance(who, str) or not who.strip():
                raise UsageError(f"segregation of duties cannot be shown: commit {sha} has no {role} recorded")
        people = [c["author"], c["committer"], *[x for x in c.get("co_authors") or [] if isinstance(x, str)]]
        if any(_key(p) == me for p in people):
            roles.append(f"committer (of commit {sha})")
            break
    return roles


# -- times ------------------------------------------------------------------------------------------


def check_claimed_at(claimed: datetime, *, now: datetime, evaluation_created_at: str) -> None:
    """``--at`` may not lie in the future, nor before the evaluation was recorded (UsageError)."""
    if claimed > now:
        raise UsageError(f"--at {claimed.isoformat()} lies in the future (now is {now.isoformat()})")
    evaluated = parse_instant(evaluation_created_at, option="created_at")
    # created_at is kept to the second: a claim within that second is not before it.
    if (claimed - evaluated).total_seconds() < 0 and claimed.replace(microsecond=0) < evaluated:
        raise UsageError(f"--at {claimed.isoformat()} is before the evaluation it is about "
                         f"(recorded at {evaluation_created_at}): nothing can have happened to it yet")


# -- what counts as a deployment --------------------------------------------------------------------


def _order(r: Mapping[str, Any]) -> tuple[str, int, str]:
    seq = r.get("sequence")
    return (str(r.get("created_at") or ""), seq if type(seq) is int else -1, str(r.get("id") or ""))


def latest_outcome(evaluation: Mapping[str, Any], records: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The last outcome record (in recorded order) about ``evaluation`` (its id **and** SHA-256), or None."""
    mine = [r for r in records if kind_of(r) == "outcome" and r.get("about_id") == evaluation.get("id")
            and r.get("about_sha256") == evaluation.get("sha256")]
    return max(mine, key=_order) if mine else None


def outcomes_by_evaluation(records: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """The outcome records, grouped by the id of the evaluation they are about (one pass, so that
    asking for each evaluation's outcomes stays linear in the archive)."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        if kind_of(r) == "outcome" and isinstance(r.get("about_id"), str):
            out.setdefault(r["about_id"], []).append(r)
    return out


def is_deployment(record: Mapping[str, Any], outcomes: Iterable[Mapping[str, Any]]) -> bool:
    """Whether the population counts this index record as a deployment.

    A deployment is an evaluation (no ``kind``, or ``evaluation``) that was allowed (emergency
    allows included) or advisory (``advisory: true``: its denial did not stop the deploy), not
    ``simulated``, not ``not_applicable``, unless its latest outcome (``outcomes``: index records of
    any kind; only outcomes naming this evaluation's id and SHA-256 count) is ``not_deployed``.
    """
    if kind_of(record) != EVALUATION or record.get("simulated") is True:
        return False
    decision = record.get("decision")
    if decision != "allow" and not (decision == "deny" and record.get("advisory") is True):
        return False
    last = latest_outcome(record, outcomes)
    return last is None or last.get("decision") not in NOT_A_DEPLOYMENT


def latest_deploy(records: Sequence[Mapping[str, Any]], repository: str, environment: str,
                  outcomes: Iterable[Mapping[str, Any]] | None = None, *,
                  signed_by: str | None = None) -> Mapping[str, Any] | None:
    """"The previous deploy" of ``repository`` to ``environment``: the latest evaluation that
    ``is_deployment`` counts, skipping records and evaluations whose latest outcome is
    ``not_deployed``, ``failed`` or ``rolled_back``; None when there is none.

    ``records`` are index records (any kind); ``outcomes`` defaults to them. The repository
    compares exactly, the environment case-insensitively (as the history lookup always did); an
    evaluation without a commit is skipped (it names nothing to compare with). With ``signed_by``
    (a key id) only evaluations whose index line names that key count. Latest = greatest
    (created_at, sequence, id).
    """
    found = deploy_candidates(records, repository, environment, outcomes, signed_by=signed_by)
    return max(found, key=_order) if found else None


def chain_baseline(records: Iterable[Mapping[str, Any]], repository: str,
                   environment: str) -> Mapping[str, Any] | None:
    """The baseline of the chain of ``repository`` / ``environment`` (its index record), or None.

    Only a baseline line that claims to be the chain's first record (sequence 1) counts: a later
    one is refused by ``verify`` (``inspect_record``) and named by reconcile as a problem, never as
    the adoption. Deployments recorded before it (a platform's deployment history reaches further
    back than the gate) are "before adoption". The line is not verified here: verify the store.
    """
    for r in records:
        env = r.get("environment")
        if (kind_of(r) == BASELINE and r.get("repository") == repository and isinstance(env, str)
                and env.casefold() == environment.casefold() and r.get("sequence") == 1):
            return r
    return None


def baselines(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Every baseline line, in index order (the export and the summary list them as exceptions)."""
    return [r for r in records if kind_of(r) == BASELINE]


def deploy_candidates(records: Sequence[Mapping[str, Any]], repository: str, environment: str,
                      outcomes: Iterable[Mapping[str, Any]] | None = None, *,
                      signed_by: str | None = None) -> list[Mapping[str, Any]]:
    """Every evaluation that could be "the previous deploy" (``latest_deploy``'s rule), in index order.

    ``latest_deploy`` takes the latest of them; the trusted history (``history``) takes the latest
    of them whose bundle verifies with the trusted key.
    """
    by_evaluation = outcomes_by_evaluation(records if outcomes is None else outcomes)
    found = []
    for r in records:
        env, commit = r.get("environment"), r.get("commit")
        if (r.get("repository") != repository or not isinstance(env, str)
                or env.casefold() != environment.casefold() or not isinstance(commit, str) or not commit
                or (signed_by is not None and r.get("signed_by") != signed_by)):
            continue
        if kind_of(r) == BASELINE:
            # The commit in production when the gate was adopted: the previous deploy of a chain with
            # no deployment yet (only ever its first record; ``history`` verifies that, signed).
            if r.get("sequence") == 1 and r.get("decision") in BASELINE_VALUES:
                found.append(r)
            continue
        mine = by_evaluation.get(str(r.get("id")), [])
        if not is_deployment(r, mine):  # (an evaluation, allowed or advisory, not simulated, not not_deployed)
            continue
        last = latest_outcome(r, mine)
        if last is not None and last.get("decision") in NOT_THE_PREVIOUS_DEPLOY:
            continue
        found.append(r)
    return found
