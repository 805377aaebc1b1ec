"""``audit reconcile``: is the population complete? The evidence against what the platform recorded.

The evidence says which deploys the gate released; the platform (GitHub, GitLab, a cluster, a
deploy log) says which deploys happened. Each disagreement is an **exception**, named with the
platform's own id, time and URL:

* ``unauthorized``: a platform deployment with no bundle that released it (an ``allow``, an
  allowed emergency) for that commit or subject, written before it (``TOLERANCE``: 10 minutes);
* ``phantom``: an allowed bundle whose latest outcome says ``deployed`` but that matches no
  platform deployment of its commit or subjects (from ``TOLERANCE`` before it to
  ``redeploy_after`` after it), in a chain a deployment source covered;
* ``drift``: an artifact running now whose digest no allowed bundle names;
* ``missing-chain``: a chain the catalogue knows that the store lacks or holds shorter;
* ``ungated-repository``: (``--org``) a repository with the environment but no chain.

And in classes of their own, never counted as "no exception" and never as one either:

* ``redeploy``: released by an approval written long before (``redeploy_after``), or with a
  denial of the same commit since (a window or a freeze that closed);
* ``advisory-ship``: released only by an advisory-mode evaluation;
* ``emergency-awaiting-approval``: released by an emergency with no approval recorded yet;
* ``before-adoption``: older than the chain's first record.

Re-runs count once on both sides: two platform deployments of one commit in one chain within the
tolerance, with none between them, are one deployment (the later, naming the other), and a
re-run's bundles all match the one deployment.

The judging (``judge``) is pure: evaluations and platform records in, findings out. Reading the
evidence (``load_evaluations``) reads the index and each releasing bundle's decision and
statement (subjects), checking each bundle's SHA-256 against its index line.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import json
import re
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from msgspec import Struct, field, structs

from policyengine.evidence.format.bundle import ATTESTATION, CHANGE, DECISION, ZIP_READ_ERRORS
from policyengine.evidence.format.records import is_evaluation, kind_of
from policyengine.evidence.stores.base import EvidenceStore
from policyengine.models import iso_utc, parse_instant
from policyengine.evidence.audit.witness import judge_witnesses
from policyengine.providers.deployments import PlatformDeployment, PlatformRecords, WitnessStatus
from policyengine.lifecycle.witness_format import context_for

TOLERANCE = timedelta(minutes=10)
REDEPLOY_AFTER = timedelta(hours=24)
EXCEPTION_KINDS = ("unauthorized", "phantom", "drift", "missing-chain", "ungated-repository", "witness-mismatch")
CHAIN_KINDS = ("missing-chain", "ungated-repository")
"""Findings about a whole chain: its platform deployments are named under it (``also``)."""
CLASS_KINDS = ("redeploy", "advisory-ship", "emergency-awaiting-approval", "before-adoption")
LIMIT = ("Reconcile is as strong as the platform's own audit trail: whoever can write deployments on the "
         "platform (GitHub `deployments: write`, GitLab maintainers) can add or remove the records it "
         "compares against.")
Chain = tuple[str, str]


# -- the catalogue of chains (interface) -------------------------------------------------------


def known_chains(store: EvidenceStore, records: Sequence[Mapping[str, Any]] | None = None) -> dict[Chain, int]:
    """Every chain the store should hold, with its expected length (records in it).

    The store's newest catalogue of chains (``evidence.catalogue``: every chain, its length and
    newest bundle, each catalogue naming the one before it) is what makes a chain deleted whole
    visible; the index itself adds each chain's highest sequence number (which starts at 1), so
    a chain with records missing from its middle is found in a store written before catalogues
    too. A catalogue that cannot be read raises EvidenceError: a list that cannot be trusted is
    never taken for an empty one (reconcile exits 3). Its signature is checked by ``verify``.
    """
    if records is None:
        records, _ = store.read_index()
    highest: dict[Chain, int] = {}
    unnumbered: dict[Chain, int] = {}  # lines recorded before chains had sequence numbers
    for r in records:
        key = (str(r.get("repository")), str(r.get("environment")))
        seq = r.get("sequence")
        if type(seq) is int and seq >= 1:
            highest[key] = max(highest.get(key, 0), seq)
        else:
            unnumbered[key] = unnumbered.get(key, 0) + 1
    out = {k: highest.get(k, 0) + unnumbered.get(k, 0) for k in {*highest, *unnumbered}}
    for head in store.expected_chains():
        key = (head.repository, head.environment)
        out[key] = max(out.get(key, 0), head.sequence)
    return out


def present_chains(records: Sequence[Mapping[str, Any]]) -> dict[Chain, int]:
    """The chains the store holds now, with the number of records in each."""
    out: dict[Chain, int] = {}
    for r in records:
        key = (str(r.get("repository")), str(r.get("environment")))
        out[key] = out.get(key, 0) + 1
    return out


# -- the evidence side -------------------------------------------------------------------------


class Evaluation(Struct, frozen=True):
    """What reconcile needs of one evaluation bundle."""

    id: str
    repository: str
    environment: str
    commit: str
    decision: str
    created_at: str
    sha256: str
    advisory: bool = False
    simulated: bool = False
    emergency: bool = False
    emergency_approved: bool = False
    subjects: frozenset[str] = frozenset()
    outcome: str | None = None
    stamped_at: str | None = None
    """The timestamp authority's time (``timestamp.tsr``, its imprint over this bundle's statement
    signature checked), for a bundle that released a deploy and carries a token."""

    @property
    def time(self) -> str:
        """The time the release is judged by: the timestamp authority's where the bundle carries a
        token (the writer cannot backdate it), else the time the store recorded."""
        return self.stamped_at or self.created_at

    @property
    def allowed(self) -> bool:
        """Released by the gate: an allow (an allowed emergency included), not a simulation."""
        return self.decision == "allow" and not self.simulated

    @property
    def releases(self) -> bool:
        """Let a deploy go, by the gate or by advisory mode."""
        return not self.simulated and (self.decision == "allow" or (self.decision == "deny" and self.advisory))


class EvidenceUnreadable(Exception):
    """A bundle reconcile needs cannot be read or does not match its index line."""


def load_evaluations(store: EvidenceStore, records: Sequence[Mapping[str, Any]], *,
                     chains: set[Chain] | None = None, now: datetime | None = None,
                     public_key: tuple[Any, str] | None = None) -> list[Evaluation]:
    """The evaluations of ``chains`` (all when None) with, for each that released a deploy, its
    subjects and emergency read from its bundle (whose SHA-256 must match the index line, and
    whose statement must be signed by ``public_key`` when one is given). An emergency counts as
    approved only as ``emergency pending`` judges it at ``now`` (verified approvals by eligible
    people); without ``now`` none does (fail closed)."""
    outcomes: dict[str, tuple[tuple[str, int, str], str, str]] = {}
    for r in records:
        kind = kind_of(r)
        about = r.get("about_id")
        if not isinstance(about, str):
            continue
        if kind == "outcome":
            seq = r.get("sequence")
            order = (str(r.get("created_at")), seq if type(seq) is int else -1, str(r.get("id")))
            seen = outcomes.get(about)
            if seen is None or order > seen[0]:
                outcomes[about] = (order, str(r.get("decision")), str(r.get("about_sha256")))
    out: list[Evaluation] = []
    emergencies: list[dict[str, Any]] = []
    for r in records:
        if not is_evaluation(r):
            continue
        key = (str(r.get("repository")), str(r.get("environment")))
        if chains is not None and key not in chains:
            continue
        base = dict(id=str(r["id"]), repository=key[0], environment=key[1], commit=str(r.get("commit") or "").lower(),
                    decision=str(r.get("decision")), created_at=str(r.get("created_at")), sha256=str(r.get("sha256")),
                    advisory=r.get("advisory") is True, simulated=r.get("simulated") is True)
        latest = outcomes.get(base["id"])
        outcome = latest[1] if latest and latest[2] == base["sha256"] else None
        ev = Evaluation(**base, outcome=outcome)  # type: ignore[arg-type]
        if ev.releases:
            subjects, emergency, stamped_at = _read_release(store, r, public_key)
            ev = Evaluation(**base, outcome=outcome, subjects=subjects,  # type: ignore[arg-type]
                            emergency=emergency is not None, stamped_at=stamped_at)
            if emergency is not None and ev.allowed:
                emergencies.append({**r, "_emergency": emergency})
        out.append(ev)
    if emergencies and now is not None:
        from policyengine.lifecycle.emergency import APPROVED_LATE, APPROVED_ON_TIME
        from policyengine.evidence.audit.emergencies import period_states

        states = period_states(store, emergencies, records, now, public_key=public_key)
        approved = {k for k, v in states.items() if v in (APPROVED_ON_TIME, APPROVED_LATE)}
        # An emergency the policy released without an approval to follow waits for nothing.
        approved |= {str(e["id"]) for e in emergencies if e["_emergency"].get("approval_required") is not True}
        out = [structs.replace(ev, emergency_approved=True) if ev.id in approved else ev for ev in out]
    return out


def _read_release(store: EvidenceStore, record: Mapping[str, Any], public_key: tuple[Any, str] | None = None
                  ) -> tuple[frozenset[str], dict[str, Any] | None, str | None]:
    try:
        with store.open_bundle(record) as fh:
            data = fh.read()
    except (OSError, FileNotFoundError) as exc:
        raise EvidenceUnreadable(f"bundle {record.get('id')} cannot be read: {exc}") from None
    if hashlib.sha256(data).hexdigest() != record.get("sha256"):
        raise EvidenceUnreadable(f"bundle {record.get('id')} does not match the SHA-256 of its index line")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            decision = json.loads(zf.read(DECISION))
            change = json.loads(zf.read(CHANGE))
            envelope = json.loads(zf.read(ATTESTATION))
            stamped_at = _stamped_at(zf, envelope)
        import base64

        statement = json.loads(base64.b64decode(envelope["payload"], validate=True))
    except (*ZIP_READ_ERRORS, KeyError, ValueError, TypeError) as exc:
        raise EvidenceUnreadable(f"bundle {record.get('id')} cannot be read: {exc}") from None
    # Always: the bundle must say what its index line says (an index line edited to "allow"
    # would otherwise release a deploy the gate denied).
    if not isinstance(decision, dict) or not isinstance(change, dict):
        raise EvidenceUnreadable(f"bundle {record.get('id')} cannot be read: its decision or change is not an object")
    stated = {"decision": decision.get("decision"), "advisory": decision.get("advisory") is True,
              "simulated": decision.get("simulated") is True, "repository": change.get("repository"),
              "environment": change.get("environment"), "commit": change.get("commit")}
    indexed = {"decision": record.get("decision"), "advisory": record.get("advisory") is True,
               "simulated": record.get("simulated") is True, "repository": record.get("repository"),
               "environment": record.get("environment"), "commit": record.get("commit")}
    differ = [k for k in stated if stated[k] != indexed[k]]
    if differ:
        raise EvidenceUnreadable(f"bundle {record.get('id')} does not say what its index line says "
                                 f"({', '.join(differ)})")
    if public_key is not None:
        # Fail closed: a release the key did not sign, or whose bundle says other than its index
        # line, could be a forgery hiding a deploy.
        from policyengine.evidence.format.bundle import inspect_bundle

        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            found = inspect_bundle(zf, str(record.get("id")), public_key)
        change = found.change or {}
        said = {"decision": found.decision, "created_at": found.created_at, "advisory": found.advisory,
                "simulated": found.simulated, "repository": change.get("repository"),
                "environment": change.get("environment"), "commit": change.get("commit")}
        index = {"decision": record.get("decision"), "created_at": record.get("created_at"),
                 "advisory": record.get("advisory") is True, "simulated": record.get("simulated") is True,
                 "repository": record.get("repository"), "environment": record.get("environment"),
                 "commit": record.get("commit")}
        wrong = [k for k in said if said[k] != index[k]]
        if found.problems or found.signature != "valid" or wrong:
            why = (found.problems[0].message if found.problems else
                   f"signature {found.signature}" if found.signature != "valid" else
                   f"its index line differs in {', '.join(wrong)}")
            raise EvidenceUnreadable(f"bundle {record.get('id')} allowed a deploy but does not verify with the given "
                                     f"public key: {why}")
    subjects: set[str] = set()
    for s in statement.get("subject") or []:
        digest = s.get("digest") if isinstance(s, dict) else None
        value = digest.get("sha256") if isinstance(digest, dict) else None
        # The bundle's own members are subjects too; only artifacts named NAME=sha256 are compared,
        # and a digest is a digest whatever its name (image names need normalising).
        if isinstance(value, str) and len(value) == 64:
            subjects.add(f"sha256:{value.lower()}")
    emergency = decision.get("emergency") if isinstance(decision, dict) else None
    return (frozenset(subjects), dict(emergency) if isinstance(emergency, dict) and emergency else None,
            stamped_at)


def _stamped_at(zf: zipfile.ZipFile, envelope: Any) -> str | None:
    """The timestamp authority's time of a bundle's token, when it has one whose message imprint is
    this bundle's statement signature (the TSA's own signature is ``verify --tsa-cert``'s to
    check); None otherwise (no token, an unreadable one, the library missing: the store's time)."""
    from policyengine.evidence.format.timestamp import MEMBER, check_token

    if MEMBER not in zf.namelist():
        return None
    try:
        import base64

        signature = base64.b64decode(envelope["signatures"][0]["sig"], validate=True)
        found = check_token(zf.read(MEMBER), signature, None)
    except Exception:  # noqa: BLE001 - a token that cannot be read leaves the store's time (verify reports it)
        return None
    if found.state == "invalid" or found.gen_time is None:
        return None
    return iso_utc(found.gen_time.replace(microsecond=0))


# -- findings ----------------------------------------------------------------------------------


class Finding(Struct):
    """An exception or a class: what, where, and the platform's own id, time and URL."""

    kind: str
    repository: str | None
    environment: str | None
    detail: str
    platform_id: str | None = None
    time: str | None = None
    url: str | None = None
    creator: str | None = None
    source: str | None = None
    commit: str | None = None
    subject: str | None = None
    bundle_id: str | None = None
    also: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**structs.asdict(self), "also": list(self.also)}


class Reconciliation(Struct):
    """The result: exceptions, classes, what was compared, and the limit of the comparison."""

    since: str
    until: str
    now: str
    sources: list[str]
    exceptions: list[Finding]
    classes: list[Finding]
    platform_deployments: int
    matched: int
    running: int
    requests: int
    skipped: int
    chains: int
    signatures_checked: bool = False
    """Every releasing bundle was verified with the given public key (``--public-key``)."""
    running_without_digest: int = 0
    """Containers of the snapshot with no image digest yet (still pulling): not judged, counted."""
    witnesses: int | None = None
    """Witness statuses read back (``--witness``), or None: not read."""

    def counts(self) -> dict[str, int]:
        counts = {k: 0 for k in (*EXCEPTION_KINDS, *CLASS_KINDS)}
        for f in (*self.exceptions, *self.classes):
            counts[f.kind] = counts.get(f.kind, 0) + 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "period": {"since": self.since, "until": self.until}, "now": self.now, "sources": self.sources,
            "tolerance_minutes": int(TOLERANCE.total_seconds() // 60), "limit": LIMIT,
            "chains": self.chains, "platform_deployments": self.platform_deployments, "matched": self.matched,
            "running_artifacts": self.running, "not_deployed_on_platform": self.skipped, "requests": self.requests,
            "signatures_checked": self.signatures_checked, "running_without_digest": self.running_without_digest,
            "witness_statuses": self.witnesses,
            "counts": self.counts(), "exceptions": [f.to_json() for f in self.exceptions],
            "classes": [f.to_json() for f in self.classes],
        }


def _t(value: str) -> datetime:
    return parse_instant(value, option="time")


def merge_reruns(deployments: Sequence[PlatformDeployment]) -> list[tuple[PlatformDeployment, list[str]]]:
    """Fold re-runs: consecutive deployments of one chain and commit (or subject), within the
    tolerance of each other, are one deployment (the latest), naming the others."""
    by_chain: dict[tuple[Any, ...], list[PlatformDeployment]] = {}
    for d in deployments:
        by_chain.setdefault((d.source, d.repository, d.environment), []).append(d)
    out: list[tuple[PlatformDeployment, list[str]]] = []
    for items in by_chain.values():
        items.sort(key=lambda d: (d.time, d.id))
        group: list[PlatformDeployment] = []
        for d in items:
            if group and (d.commit, d.subject) == (group[-1].commit, group[-1].subject) \
                    and _t(d.time) - _t(group[-1].time) <= TOLERANCE:
                group.append(d)
                continue
            if group:
                out.append((group[-1], [g.id for g in group[:-1]]))
            group = [d]
        if group:
            out.append((group[-1], [g.id for g in group[:-1]]))
    out.sort(key=lambda x: (x[0].time, x[0].id))
    return out


class _ChainIndex(Struct):
    releases: list[Evaluation]
    times: list[str]
    denials_by_commit: dict[str, list[str]]
    first: str | None


def _index(evaluations: Iterable[Evaluation], first_times: Mapping[Chain, str]) -> dict[Chain, _ChainIndex]:
    chains: dict[Chain, _ChainIndex] = {}
    for ev in sorted(evaluations, key=lambda e: (e.time, e.id)):
        key = (ev.repository, ev.environment)
        ci = chains.setdefault(key, _ChainIndex([], [], {}, first_times.get(key)))
        if ev.releases:
            ci.releases.append(ev)
            ci.times.append(ev.time)
        elif ev.decision == "deny" and not ev.simulated:
            ci.denials_by_commit.setdefault(ev.commit, []).append(ev.time)
    for key, first in first_times.items():
        chains.setdefault(key, _ChainIndex([], [], {}, first))
    return chains


def _rank(ev: Evaluation) -> int:
    """Which release counts when several could have released a deploy: a plain allow, then an
    emergency waiting for its approval, then advisory mode."""
    if ev.allowed and not (ev.emergency and not ev.emergency_approved):
        return 2
    if ev.allowed:
        return 1
    return 0


def judge(evaluations: Sequence[Evaluation], platform: PlatformRecords, *, since: str, until: str, now: str,
          catalogue: Mapping[Chain, int], present: Mapping[Chain, int], first_times: Mapping[Chain, str],
          scope: set[Chain], redeploy_after: timedelta = REDEPLOY_AFTER, ungated: Sequence[Chain] = (),
          witness: Callable[[], list[Finding]] | None = None, repository: str | None = None,
          environment: str | None = None) -> Reconciliation:
    """Compare (pure): ``evaluations`` of the chains in ``scope`` against ``platform``.

    Every platform deployment of the period is judged unless ``repository`` or ``environment``
    (the command's filters) leave it out: a deployment of a repository with no chain at all is
    unauthorized too, never skipped for being outside the store's chains."""
    exceptions: list[Finding] = []
    classes: list[Finding] = []
    missing: dict[Chain, Finding] = {}
    for key in sorted(scope):
        expected = catalogue.get(key)
        have = present.get(key, 0)
        if expected is not None and have < expected:
            what = "is absent from the store" if have == 0 else f"holds {have} of its {expected} records"
            missing[key] = Finding("missing-chain", key[0], key[1], f"the catalogue knows this chain; it {what}")
    exceptions.extend(missing.values())
    for repo, env in ungated:
        # Its deployments are named under it (``also``), not judged one by one.
        missing[(repo, env)] = Finding("ungated-repository", repo, env,
                                       f"{repo} has the environment {env} but no chain in the store")
        exceptions.append(missing[(repo, env)])
    index = _index(evaluations, first_times)
    tol = TOLERANCE
    in_period = [d for d in platform.deployments if since <= d.time < until]
    merged = merge_reruns(in_period)
    matched = 0
    by_env: dict[str, list[Chain]] = {}
    for key in index:
        by_env.setdefault(key[1], []).append(key)
    for d, reruns in merged:
        if (environment is not None and d.environment != environment) or (
                repository is not None and d.repository is not None and d.repository != repository):
            continue
        keys: list[Chain] = [(d.repository, d.environment)] if d.repository else [
            k for k in by_env.get(d.environment, []) if repository is None or k[0] == repository]
        def found(kind: str, repo: str | None, detail: str, bundle_id: str | None = None,
                  d: PlatformDeployment = d, reruns: list[str] = reruns) -> Finding:
            return Finding(kind, repo, d.environment, detail, platform_id=d.id, time=d.time, url=d.url,
                           creator=d.creator, source=d.source, commit=d.commit, subject=d.subject,
                           bundle_id=bundle_id, also=list(reruns))

        lost = [k for k in keys if k in missing]
        if lost:
            missing[lost[0]].also.append(d.id)
            continue
        limit = iso_utc(_t(d.time) + tol)
        best: Evaluation | None = None
        chain_of: Chain | None = None
        for k in keys:
            ci = index.get(k)
            if ci is None:
                continue
            upto = bisect.bisect_right(ci.times, limit)
            for ev in reversed(ci.releases[:upto]):
                if not ((d.commit and ev.commit == d.commit) or (d.subject and d.subject in ev.subjects)):
                    continue
                if best is None or _rank(ev) > _rank(best) or (_rank(ev) == _rank(best) and ev.time > best.time):
                    best, chain_of = ev, k
                if _rank(ev) == 2:
                    break
        repo = d.repository or (chain_of[0] if chain_of else None)
        if best is None or chain_of is None:
            firsts = [index[k].first for k in keys if k in index and index[k].first]
            first = min(firsts) if firsts else None
            if first is not None and d.time < first:
                classes.append(found("before-adoption", repo, f"deployed before the chain's first record ({first})"))
            else:
                what = "this commit" if d.commit else "this subject"
                denied = any(d.commit and d.commit in index[k].denials_by_commit for k in keys if k in index)
                exceptions.append(found("unauthorized", repo, f"no allowing bundle for {what} was written before it"
                                        + (" (the gate denied it)" if denied else "")))
            continue
        ci = index[chain_of]
        if not best.allowed:
            classes.append(found("advisory-ship", repo, "released only by advisory mode: the gate denied it and did "
                                 "not block", best.id))
        elif best.emergency and not best.emergency_approved:
            classes.append(found("emergency-awaiting-approval", repo,
                                 "released by an emergency still waiting for its approval", best.id))
        else:
            denied_since = [t for t in ci.denials_by_commit.get(best.commit, []) if best.time < t <= limit]
            age = _t(d.time) - _t(best.time)
            if age > redeploy_after or denied_since:
                why = (f"denied since ({denied_since[0]})" if denied_since
                       else f"approved {age.days} day(s) {age.seconds // 3600} hour(s) before")
                classes.append(found("redeploy", repo, f"a redeploy of an earlier approval: {why}", best.id))
            else:
                matched += 1
    # Phantoms: allowed, deployed by their outcome, in a chain a source covered, deployed nowhere.
    by_chain_deps: dict[Chain, list[PlatformDeployment]] = {}
    for d in platform.deployments:
        for k in ([(d.repository, d.environment)] if d.repository else by_env.get(d.environment, [])):
            by_chain_deps.setdefault(k, []).append(d)
    log_envs = {d.environment for d in platform.deployments if d.source == "log"}
    for ev in evaluations:
        key = (ev.repository, ev.environment)
        if not (ev.allowed and ev.outcome == "deployed" and since <= ev.created_at < until and key in scope):
            continue
        if key not in platform.covered and ev.environment not in log_envs:
            continue
        start, end = iso_utc(_t(ev.time) - tol), iso_utc(_t(ev.time) + redeploy_after)
        if any(start <= d.time <= end and ((d.commit and d.commit == ev.commit) or (d.subject in ev.subjects))
               for d in by_chain_deps.get(key, [])):
            continue
        exceptions.append(Finding("phantom", ev.repository, ev.environment,
                                  "the bundle allowed it and its outcome says deployed, but the platform recorded "
                                  "no deployment of it", time=ev.created_at, commit=ev.commit, bundle_id=ev.id))
    # Drift: what runs now that no allowed bundle names.
    named = {s for ev in evaluations if ev.allowed for s in ev.subjects}
    for a in platform.running:
        if a.digest not in named:
            exceptions.append(Finding("drift", None, None, f"running {a.image or a.digest}, a digest no allowed "
                                      "bundle names", platform_id=a.id, time=a.started_at, source=a.source,
                                      subject=a.digest))
    # Witness mismatches (``evidence.witness``): a bundle's id, digest or time that disagrees with
    # its platform status; a witness by another creator; a witnessed bundle the store lacks.
    if witness is not None:
        exceptions.extend(witness())
    order = {k: i for i, k in enumerate((*EXCEPTION_KINDS, *CLASS_KINDS))}
    exceptions.sort(key=lambda f: (order.get(f.kind, 99), f.time or "", f.repository or "", f.platform_id or ""))
    classes.sort(key=lambda f: (order.get(f.kind, 99), f.time or "", f.repository or "", f.platform_id or ""))
    return Reconciliation(since=since, until=until, now=now, sources=list(platform.sources), exceptions=exceptions,
                          classes=classes, platform_deployments=len(merged), matched=matched,
                          running=len(platform.running), requests=platform.requests, skipped=platform.skipped,
                          chains=len(scope))


# -- reading and comparing ---------------------------------------------------------------------


SOURCE_KINDS = ("github", "gitlab", "kubectl:FILE", "log:FILE")


def parse_source(value: str) -> tuple[str, str | None]:
    """A ``--source``: ``github``, ``gitlab``, ``kubectl:FILE`` (pods JSON) or ``log:FILE`` (JSON Lines)."""
    from policyengine.errors import UsageError

    v = value.strip()
    if v in ("github", "gitlab"):
        return v, None
    kind, sep, path = v.partition(":")
    if sep and kind in ("kubectl", "log") and path:
        return kind, path
    raise UsageError(f"--source {value!r} is not one of {', '.join(SOURCE_KINDS)}",
                     hint="e.g. --source github, or --source kubectl:pods.json")


class ReconcileRequest(Struct, frozen=True):
    """What to compare: the period, the chains, the sources, and how."""

    since: str
    until: str
    now: str
    sources: tuple[str, ...]
    env: Mapping[str, str]
    repository: str | None = None
    environment: str | None = None
    env_map: Mapping[str, str] = field(default_factory=dict)
    namespaces: tuple[str, ...] = ()
    include_kube: bool = False
    redeploy_after: timedelta = REDEPLOY_AFTER
    org_repositories: tuple[str, ...] | None = None
    """With ``--org-repository``: the repositories of the organisation that have the environment."""
    public_key: tuple[Any, str] | None = None
    """Every bundle that released a deploy must be signed by this key (``--public-key``)."""
    org: str | None = None
    """With ``--org``: the organisation (GitHub) or group (GitLab) whose repositories that have the
    environment are listed from the first github or gitlab source."""
    witness: bool = False
    """``--witness``: read the witness statuses back from each github and gitlab source."""
    witness_creators: tuple[str, ...] = ()
    """``--witness-creator``: the logins allowed to write witness statuses (any when empty)."""


def reconcile(store: EvidenceStore, request: ReconcileRequest,
              catalogue: Callable[[EvidenceStore, Sequence[Mapping[str, Any]]], Mapping[Chain, int]] | None = None
              ) -> Reconciliation:
    """Read the store and every source completely, then ``judge``. Raises ``SourceError`` (exit 3)
    when a source cannot be read completely, ``EvidenceError`` when the evidence cannot."""
    from policyengine.errors import EvidenceError, UsageError

    parsed = [parse_source(s) for s in request.sources]
    if request.org and not any(kind in ("github", "gitlab") for kind, _ in parsed):
        raise UsageError("--org needs a github or gitlab --source to list the organisation's repositories")
    records, bad = store.read_index()
    if bad:
        raise EvidenceError(f"the index has {len(bad)} unreadable record(s): {bad[0].message}",
                            hint=f"run `{store.command('evidence', 'verify')}`")
    expected = dict((catalogue or known_chains)(store, records))
    present = present_chains(records)
    scope = {k for k in (*present, *expected)
             if (request.repository is None or k[0] == request.repository)
             and (request.environment is None or k[1] == request.environment)}
    if request.repository and request.environment:
        scope.add((request.repository, request.environment))
    first_times: dict[Chain, str] = {}
    for r in records:
        key = (str(r.get("repository")), str(r.get("environment")))
        t = str(r.get("created_at"))
        if key not in first_times or t < first_times[key]:
            first_times[key] = t
    from policyengine.deadline import RunDeadline, running, seconds_from_env

    # Every request to the platforms waits at most the run's time left (POLICYENGINE_RUN_DEADLINE).
    with running(RunDeadline(seconds_from_env(request.env))):
        platform, org_found = _read_sources(parsed, request, scope)
    try:
        evaluations = load_evaluations(store, records, chains=None if platform.running else scope,
                                       now=parse_instant(request.now, option="--now"),
                                       public_key=request.public_key)
    except EvidenceUnreadable as exc:
        raise EvidenceError(str(exc), hint=f"run `{store.command('evidence', 'verify')}`") from None
    ungated: list[Chain] = []
    if org_found is not None and request.environment:
        have = {k for k in present if k[1] == request.environment}
        ungated = sorted({(r, request.environment) for r in org_found if (r, request.environment) not in have})
    witness: Callable[[], list[Finding]] | None = None
    witnesses_read: int | None = None
    if request.witness:
        with running(RunDeadline(seconds_from_env(request.env))):
            statuses = _read_witnesses(parsed, request, scope, evaluations, platform)
        witnesses_read = len(statuses)
        found = judge_witnesses(
            statuses, {str(r["id"]): r for r in records if is_evaluation(r)},
            store_heads=[hashlib.sha256(data).hexdigest() for _, data in store.catalogue_files()],
            creators=request.witness_creators, times={ev.id: ev.stamped_at for ev in evaluations if ev.stamped_at})

        def witness() -> list[Finding]:
            return [Finding("witness-mismatch", m.status.repository, m.status.environment, m.detail,
                            platform_id=f"{context_for(m.status.environment)}@{m.status.commit[:12]}",
                            time=m.status.time, url=m.status.url, creator=m.status.creator, source=m.status.source,
                            commit=m.status.commit, bundle_id=m.bundle_id) for m in found]
    result = judge(evaluations, platform, since=request.since, until=request.until, now=request.now,
                   catalogue=expected, present=present, first_times=first_times, scope=scope,
                   redeploy_after=request.redeploy_after, ungated=ungated, repository=request.repository,
                   environment=request.environment, witness=witness)
    result.witnesses = witnesses_read
    result.signatures_checked = request.public_key is not None
    result.running_without_digest = platform.running_without_digest
    return result


def _read_witnesses(parsed: Sequence[tuple[str, str | None]], request: ReconcileRequest, scope: set[Chain],
                    evaluations: Sequence[Evaluation], platform: PlatformRecords) -> list[WitnessStatus]:
    """The witness statuses of every commit of the period, of each chain in ``scope``: the commits
    the store evaluated and those the platform deployed. Read from each github and gitlab source."""
    from policyengine.errors import UsageError
    from policyengine.providers import deployments as dep

    kinds = [kind for kind, _ in parsed if kind in ("github", "gitlab")]
    if not kinds:
        raise UsageError("--witness reads commit statuses back from the platform: it needs a github or gitlab --source")
    commits: dict[Chain, set[str]] = {}
    for ev in evaluations:
        key = (ev.repository, ev.environment)
        if key in scope and request.since <= ev.created_at < request.until and ev.commit:
            commits.setdefault(key, set()).add(ev.commit)
    for d in platform.deployments:
        if d.repository and d.commit and request.since <= d.time < request.until \
                and (d.repository, d.environment) in scope:
            commits.setdefault((d.repository, d.environment), set()).add(d.commit)
    found: list[WitnessStatus] = []
    for kind in dict.fromkeys(kinds):
        if kind == "github":
            session, graphql = dep.github_session(request.env)
            try:
                found += dep.github_witnesses(session, graphql, commits, records=platform)
            finally:
                session.close()
        else:
            session = dep.gitlab_session(request.env)
            try:
                found += dep.gitlab_witnesses(session, commits, records=platform)
            finally:
                session.close()
    platform.sources.append(f"witness statuses ({', '.join(dict.fromkeys(kinds))})")
    return found


def _read_sources(parsed: Sequence[tuple[str, str | None]], request: ReconcileRequest, scope: set[Chain]
                  ) -> tuple[PlatformRecords, list[str] | None]:
    """Read every source completely (``scope`` grows by the ``--org`` repositories found)."""
    from policyengine.providers import deployments as dep

    platform = PlatformRecords()
    org_found: list[str] | None = list(request.org_repositories) if request.org_repositories is not None else None
    org_asked = request.org is None
    names = dep.platform_names(request.env_map, request.environment) if request.environment else []
    for kind, path in parsed:
        if kind == "github":
            session, graphql = dep.github_session(request.env)
            try:
                if not org_asked and request.org:
                    org_found = [*(org_found or []), *dep.github_org_repositories(session, graphql, request.org,
                                                                                  names, platform)]
                    org_asked = True
                    scope |= {(r, str(request.environment)) for r in org_found}
                dep.github_deployments(session, graphql, scope, since=request.since, env_map=request.env_map,
                                       records=platform)
            finally:
                session.close()
        elif kind == "gitlab":
            session = dep.gitlab_session(request.env)
            try:
                if not org_asked and request.org:
                    org_found = [*(org_found or []), *dep.gitlab_group_repositories(session, request.org, names,
                                                                                    platform)]
                    org_asked = True
                    scope |= {(r, str(request.environment)) for r in org_found}
                dep.gitlab_deployments(session, scope, since=request.since, env_map=request.env_map,
                                       records=platform)
            finally:
                session.close()
        elif kind == "kubectl":
            assert path is not None  # noqa: S101 - parse_source gives one
            artifacts, pending = dep.read_pods(path, namespaces=request.namespaces, include_kube=request.include_kube)
            platform.running.extend(artifacts)
            platform.running_without_digest += pending
            platform.sources.append(f"kubectl pods {path}")
        else:
            assert path is not None  # noqa: S101
            dep.read_deploy_log(path, env_map=request.env_map, records=platform)
    return platform, org_found


# -- what exports and summaries carry --------------------------------------------------------

RECONCILIATION_CSV = "reconciliation.csv"
RECONCILIATION_COLUMNS = ("finding", "kind", "repository", "environment", "source", "platform_id", "time", "url",
                          "creator", "commit", "subject", "bundle_id", "detail", "also")


def reconciliation_csv(result: Reconciliation) -> str:
    """``reconciliation.csv``: one row per exception and per class, every cell through ``csv_cell``."""
    from policyengine.evidence.format.tabular import csv_cell, csv_text

    rows: list[list[str]] = [list(RECONCILIATION_COLUMNS)]
    for label, items in (("exception", result.exceptions), ("class", result.classes)):
        for f in items:
            values = {**f.to_json(), "finding": label, "also": " ".join(f.also)}
            rows.append([csv_cell(values.get(c)) for c in RECONCILIATION_COLUMNS])
    return csv_text(rows)


def export_parts(result: Reconciliation) -> dict[str, Any]:
    """What ``audit export --reconcile-with`` writes: the CSV's name and text, the counts, the findings."""
    return {"name": RECONCILIATION_CSV, "csv": reconciliation_csv(result), "summary": summary_of(result),
            "findings": [{**f.to_json(), "finding": label} for label, items in (
                ("exception", result.exceptions), ("class", result.classes)) for f in items]}


def summary_of(result: Reconciliation) -> dict[str, Any]:
    """The reconciliation's counts for an export's ``export.json`` and ``audit summary``."""
    return {"sources": list(result.sources), "signatures_checked": result.signatures_checked,
            "counts": result.counts(), "exceptions": len(result.exceptions),
            "classes": len(result.classes), "platform_deployments": result.platform_deployments,
            "matched": result.matched, "running_artifacts": result.running,
            "tolerance_minutes": int(TOLERANCE.total_seconds() // 60), "limit": LIMIT}


def record_reconciliation(store: EvidenceStore, result: Reconciliation, report: bytes, *, signing_key: Any,
                          by: Any, at: datetime) -> Any:
    """Append the signed store-level ``reconciliation`` record (``--record``); return its ``BundleRef``.

    Linked to the store's newest evaluation, so it is chained and signed like every record; its
    summary names the store head it reconciled (``store_head``: the newest catalogue's SHA-256),
    so the record covers every chain of the store as it stood, not only the anchor's.
    """
    from policyengine.errors import UsageError
    from policyengine.evidence.format.catalogue import newest_head
    from policyengine.evidence.format.records import RECONCILIATION

    records, _ = store.read_index()
    evaluations = [r for r in records if is_evaluation(r)]
    if not evaluations:
        raise UsageError("--record: the store holds no evaluation to link the reconciliation to")

    def order(r: Mapping[str, Any]) -> tuple[str, int, str]:
        seq = r.get("sequence")
        return (str(r.get("created_at")), seq if type(seq) is int else -1, str(r.get("id")))

    anchor = max(evaluations, key=order)
    summary = {**summary_of(result), "period": {"since": result.since, "until": result.until},
               "now": result.now, "report_sha256": hashlib.sha256(report).hexdigest(),
               "store_head": newest_head(store.catalogue_files()),
               "findings": [{**f.to_json(), "finding": label} for label, items in (
                   ("exception", result.exceptions), ("class", result.classes)) for f in items]}
    payload = {"reconciliation": "exceptions" if result.exceptions else "clean", "summary": summary,
               "by": by.login, "by_verified": by.verified, "by_source": by.source}
    return store.append_record(RECONCILIATION, anchor, payload, signing_key=signing_key, created_at=at)


# -- rendering ---------------------------------------------------------------------------------


def render_table(result: Reconciliation) -> str:
    """The human report: counts, each exception and class with the platform's id, time and URL."""
    lines = [f"reconciliation {result.since} .. {result.until}: {result.chains} chain(s), "
             f"{result.platform_deployments} platform deployment(s), {result.matched} matched plainly, "
             f"{result.running} running artifact(s)"
             + (f" ({result.running_without_digest} more without a digest yet, not judged)"
                if result.running_without_digest else "") + f"; {result.requests} request(s)",
             f"sources: {', '.join(result.sources) or 'none'}",
             "signatures: every releasing bundle verified with the public key" if result.signatures_checked
             else "signatures: not checked (give --public-key, or run `policyengine evidence verify`)",
             f"tolerance: {int(TOLERANCE.total_seconds() // 60)} minutes",
             f"witness: {result.witnesses} status(es) read back" if result.witnesses is not None
             else "witness: not read (give --witness)",
             ""]
    counts = result.counts()
    lines.append("exceptions: " + ", ".join(f"{k} {counts[k]}" for k in EXCEPTION_KINDS))
    lines.append("classes:    " + ", ".join(f"{k} {counts[k]}" for k in CLASS_KINDS))
    for title, items in (("EXCEPTION", result.exceptions), ("CLASS", result.classes)):
        for f in items:
            where = "/".join(x for x in (f.repository, f.environment) if x) or "-"
            ident = f"{f.source or 'store'}:{f.platform_id}" if f.platform_id else (f"bundle {f.bundle_id}"
                                                                                   if f.bundle_id else "-")
            extra = [x for x in (f"commit {f.commit}" if f.commit else None,
                                 f"subject {f.subject}" if f.subject else None,
                                 f"bundle {f.bundle_id}" if f.bundle_id and f.platform_id else None,
                                 f"by {f.creator}" if f.creator else None, f.url,
                                 f"re-runs {' '.join(f.also)}" if f.also and f.kind not in CHAIN_KINDS else None,
                                 f"{len(f.also)} platform deployment(s) of it cannot be judged"
                                 if f.also and f.kind in CHAIN_KINDS else None) if x]
            lines.append(f"{title:9} {f.kind:28} {where:30} {ident:24} {f.time or '-':20} {f.detail}"
                         + (f" ({'; '.join(extra)})" if extra else ""))
    lines += ["", f"limit: {LIMIT}"]
    # Platform values (URLs, creators, ids) reach a terminal: no control character may act there.
    return "\n".join(_CONTROL.sub("?", line) for line in lines) + "\n"


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
