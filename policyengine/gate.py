"""The gate: gather, then judge, then record. The one way through the house.

``check`` runs one evaluation end to end and returns a ``CheckResult``; ``replay`` judges a
recorded bundle again. Every face of the product (the CLI, the GitHub action and the GitLab
template through it, and the tests) reaches the gate here, so the rules of the whole run
live in one place:

* gathering (the change from a provider, the facts from the workspace) may do I/O;
* judging (``engine.evaluate``) is pure: policy, facts and a given time in, decision out;
* recording writes the evidence bundle; if it cannot be written, the gate denies (a change
  without evidence is not allowed), and the decision says why.

Checked here, once, before anything is judged:

* the environment name, wherever it came from (``--environment``, ``POLICYENGINE_ENVIRONMENT``,
  the change file, ``CI_ENVIRONMENT_NAME``): whitespace at an end, control or invisible
  characters make it invalid input (exit 2, one line naming the source and the character);
* applicability: a policy whose ``applies_to`` leaves out the change's environment judges
  nothing. Unless the policy says ``not_applicable: pass`` this is invalid input (exit 2)
  and no bundle is written (nothing was evaluated; the error is the output). With it, the
  evaluation is recorded with decision ``not_applicable`` and exits 0: never an allow;
* the clock: under CI (``CI``, ``GITHUB_ACTIONS`` or ``GITLAB_CI`` set to true) an override
  (``--now``, ``POLICYENGINE_NOW``) is refused unless ``--simulate`` is given, and a
  simulated evaluation exits 1 whatever its verdict, so it can never release a deploy. Every
  decision records the wall-clock time (read once, by the CLI) and the clock source.

After recording, the decision is posted to the notification targets (the policy's ``notify:``
and ``--notify``; ``policyengine.lifecycle.notify``): a failure is appended as a record linked to the
bundle, and a ``required`` one that fails stops a released deploy (exit 3). The webhook URLs
in use join the redactor's literals before anything is recorded or shown.

Every output (console, JSON, JUnit) goes through one redactor (``redact.Redactor.from_env``):
``CheckResult.decision`` and ``document`` are already redacted, and ``CheckResult.redact``
is run over each rendered text once more.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from msgspec import Struct, field, structs

from policyengine import clock
from policyengine.language import policysource
from policyengine.deadline import RunDeadline, running, seconds_from_env
from policyengine.lifecycle.emergency import EmergencyRequest, requested_by
from policyengine.engine import decision_to_json, evaluate, exit_code_for
from policyengine.errors import (
    EXIT_ALLOW,
    EXIT_DENY,
    EXIT_FACTS,
    InvalidInputError,
    PolicyEngineError,
    UsageError,
)
from policyengine.facts import Facts, facts_to_json
from policyengine.gather import (
    LivePipeline,
    LiveTickets,
    RecordedPipeline,
    RecordedTickets,
    SuppliedTickets,
    gather_facts,
    ticket_records,
)
from policyengine.models import (
    Decision,
    Enforcement,
    RuleResult,
    Status,
    environment_problem,
    iso_utc,
)
from policyengine.language.policy import Policy, policy_applies
from policyengine.providers import oidc
from policyengine.providers.provenance import LiveProvenance, RecordedProvenance
from policyengine.redact import Redactor
from policyengine.lifecycle.waivers import check_approvers
from policyengine.workspace.files import Workspace


class CheckRequest(Struct, frozen=True):
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
    advisory_source: str | None = None
    """Where advisory mode came from: ``--advisory``, ``POLICYENGINE_ADVISORY`` or the action's input."""
    environment_source: str = "--environment"
    """Where ``environment`` came from, named in errors (``--environment`` or ``POLICYENGINE_ENVIRONMENT``)."""
    wall_time: datetime | None = None
    """The wall clock, read once by the caller (None: the gate reads it)."""
    clock_override: bool = False
    """``now`` was given (``--now`` / ``POLICYENGINE_NOW``), not read from the clock."""
    simulate: bool = False
    """``--simulate``: a what-if evaluation; marked everywhere, never a deployment."""
    waivers_path: str | None = None
    """``--waivers`` / ``POLICYENGINE_WAIVERS``: a waivers file, ``git:REF:PATH`` or ``git+URL#REF:PATH``."""
    notify: Sequence[str] = ()
    """``--notify``: more notification targets (``env:NAME`` or a URL), beside the policy's ``notify:``."""
    extra_secrets: Sequence[str] = ()
    """More literal values redacted from every output and from the evidence (the webhook URLs in use)."""
    emergency: EmergencyRequest | None = None
    """``--emergency``, ``--reason``, ``--incident``: asks for the procedure; names nobody."""
    timestamp_urls: Sequence[str] = ()
    """``--timestamp-url``: RFC 3161 authorities (the first that answers is used); replaces the policy's."""
    tsa_cert: str | None = None
    """``--tsa-cert``: the root every authority's reply must chain to; replaces the policy's ``cert``."""
    timestamper: Any = None  # evidence.timestamp.Timestamper, set by ``check`` from the options and the policy


WAIVERS_MEMBER = "waivers/"
"""The bundle member (``waivers/<name>``) that holds the waivers file used, byte for byte."""
# Where a run is CI lives with the policy source (which refuses the change range under CI).
running_in_ci, in_any_ci = policysource.running_in_ci, policysource.in_any_ci
FACTS_MEMBER = "facts.json"
"""The bundle member that holds the facts as judged (``facts.facts_to_json``); replay judges from it."""


def _check_environments(request: CheckRequest, change: Mapping[str, Any]) -> None:
    """Refuse an environment name that could look like another (one line: source, character)."""
    from policyengine.providers import detect

    sources: list[tuple[str, Any]] = []
    if request.environment is not None:
        sources.append((request.environment_source, request.environment))
    provider = request.provider or ("local" if request.change_path else detect(request.env))
    if request.environment is None and provider == "gitlab":
        sources.append(("CI_ENVIRONMENT_NAME", request.env.get("CI_ENVIRONMENT_NAME")))
    if request.environment is None and provider == "local":
        sources.append((f"the change file's environment ({request.change_path})", change.get("environment")))
    sources.append(("the change's environment", change.get("environment")))
    for source, value in sources:
        if not isinstance(value, str):
            continue
        trouble = environment_problem(value)
        if trouble:
            raise UsageError(f"{source}: environment {value!r} is not a valid name: {trouble}",
                             hint="environment names may not start or end with whitespace, nor hold "
                                  "control or invisible characters")


def _check_applies(policy: Policy, change: Mapping[str, Any]) -> None:
    """A policy that does not cover the environment judges nothing: refuse unless it opted in."""
    if policy_applies(policy, change) or policy.not_applicable == "pass":
        return
    envs = ", ".join(policy.environments or ())
    raise UsageError(f"policy {policy.name} applies to {envs}; this change deploys to "
                     f"{change.get('environment')}: nothing to judge",
                     hint="check the environment name, or run the policy written for this environment; "
                          "add `not_applicable: pass` to the policy to record such deploys as not applicable")


def redact_value(value: Any, redactor: Redactor) -> Any:
    """Every string in ``value`` (keys too), redacted."""
    if isinstance(value, str):
        return redactor.text(value)
    if isinstance(value, dict):
        return {redact_value(k, redactor): redact_value(v, redactor) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v, redactor) for v in value)
    return value


def redact_decision(decision: Decision, redactor: Redactor) -> Decision:
    """The decision as the outputs may show it: every string redacted."""
    rules = tuple(structs.replace(
        r, id=redactor.text(r.id), type=redactor.text(r.type), message=redactor.text(r.message),
        controls=tuple(redactor.text(c) for c in r.controls),
        description=redactor.text(r.description) if r.description else r.description,
        details=redact_value(r.details, redactor)) for r in decision.rules)
    return structs.replace(
        decision, policy=redact_value(decision.policy, redactor), change=redact_value(decision.change, redactor),
        rules=rules, note=redactor.text(decision.note) if decision.note else decision.note,
        waivers=tuple(redact_value(w, redactor) for w in decision.waivers))


class CheckResult(Struct, frozen=True):
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
    redactor: Redactor = field(default_factory=Redactor)
    simulated_under_ci: bool = False
    notifications: list[str] = field(default_factory=list)
    """One line per notification target: sent, or FAILED and how it was recorded (``notify.deliver``)."""
    warnings: list[str] = field(default_factory=list)
    """Lines the CLI prints on every run (a policy without ``policy_owners``: nothing is guarded)."""
    sources: list[str] = field(default_factory=list)
    """One line per policy, base or waivers file read from git: where, which trusted base, its note."""

    def redact(self, text: str) -> str:
        """Run the one redactor over a rendered output (console text, JSON, JUnit XML)."""
        return self.redactor.text(text)


def _owner_teams(policy: Policy | None) -> list[str]:
    """Teams whose membership the judge needs: every rule's ``from_teams`` and the owner teams
    (the policy-owners rule and waiver approvers)."""
    out: list[str] = []
    for rule in policy.rules if policy else ():
        out += rule.params.get("from_teams", [])
        if rule.type == "policy_owners":
            out += rule.params.get("teams", [])
    if policy is not None and policy.emergency is not None:
        out += policy.emergency.team_names()  # who may declare one, and who may approve it
    return list(dict.fromkeys(out))


def _load(request: CheckRequest) -> tuple[Policy, Any]:
    """Load the policy and gather the change; report every problem of both files at once."""
    from policyengine.providers import gather

    problems: list[Any] = []
    policy = gathered = None
    # The previous deploy is only ever what a bundle signed by the trusted key proves, read from
    # the store this evaluation records into; without a trusted key there is no history. One
    # lookup serves the policy's ref (@previous-deploy) and the provider's change range.
    history = None
    if request.trust_key is not None:
        from policyengine.evidence.stores.history import VerifiedHistory

        history = VerifiedHistory(request.evidence_store or request.evidence_dir, request.trust_key)
    try:
        # The trusted previous deploy starts the change range: the policy, its bases and the
        # waivers are never read from inside it (under CI), and @previous-deploy reads at it.
        # It is looked up only when a git source needs it.
        with policysource.GitSources(request.workspace, request.env,
                                     lambda: _previous_deploy_commit(request, history)) as sources:
            policy = policysource.load(request.policy_path, repo=request.workspace, env=request.env,
                                       sources=sources)
            if request.waivers_path:
                policy, _ = policysource.load_waivers(policy, request.waivers_path, workspace=request.workspace, env=request.env,
                                         sources=sources)
    except InvalidInputError as exc:
        problems.extend(exc.problems)
    try:
        teams = _owner_teams(policy)
        gathered = gather(request.provider, env=request.env, change_path=request.change_path,
                          environment=request.environment, previous_deploys=history, teams=teams)
    except InvalidInputError as exc:
        problems.extend(exc.problems)
    if problems:
        raise InvalidInputError(problems, what="input", hint="fix every line above, then run again")
    assert policy is not None and gathered is not None  # noqa: S101
    return policy, gathered


def _previous_deploy_commit(request: CheckRequest, history: Any) -> str | None:
    """The trusted previous deploy's commit, for ``--policy git:@previous-deploy:PATH``: the policy
    as of the start of the change range. None when no trusted history names one."""
    from policyengine.errors import PolicySourceError
    from policyengine.providers import detect
    from policyengine.errors import HistoryUnavailable

    if history is None:
        return None
    env = request.env
    name = request.provider or ("local" if request.change_path else detect(env))
    repository = environment = None
    if name == "local" and request.change_path:
        from policyengine.change import load_change

        try:
            change = load_change(request.change_path)
        except InvalidInputError:
            return None  # the change's own problems are reported when it is gathered
        repository, environment = change.get("repository"), request.environment or change.get("environment")
    elif name == "github":
        repository, environment = env.get("GITHUB_REPOSITORY"), request.environment
    elif name == "gitlab":
        repository, environment = env.get("CI_PROJECT_PATH"), request.environment or env.get("CI_ENVIRONMENT_NAME")
    if not isinstance(repository, str) or not isinstance(environment, str):
        return None
    try:
        found = history.latest(repository, environment)
    except HistoryUnavailable as exc:
        raise PolicySourceError(f"the trusted previous deploy could not be read: {exc.message}") from None
    return str(found["sha"]) if found else None


def timestamper_for(request: CheckRequest, policy: Policy) -> Any:
    """The RFC 3161 timestamper of this run (None: no timestamp asked for): ``--timestamp-url`` and
    ``--tsa-cert`` replace the policy's ``evidence.timestamp`` url and cert; ``required`` is the
    policy's. Refused (UsageError, before anything is judged) without a pinned TSA certificate:
    a reply that cannot be checked proves nothing."""
    section = policy.timestamp or {}
    urls = list(request.timestamp_urls) or list(section.get("url") or [])
    if not urls:
        return None
    # Only now: the timestamp client's HTTP and TLS modules cost ~10 ms of every check.
    from policyengine.evidence.format.timestamp import Timestamper, check_url, load_roots
    for url in urls:
        check_url(url, what="--timestamp-url" if request.timestamp_urls else "evidence.timestamp.url")
    cert, what = (request.tsa_cert, "--tsa-cert") if request.tsa_cert else (section.get("cert"), "evidence.timestamp.cert")
    if not cert:
        raise UsageError("--timestamp-url needs the timestamp authority's root certificate, to check every reply",
                         hint="give --tsa-cert FILE (or evidence.timestamp.cert in the policy)")
    roots = load_roots(str(cert), what=what, base=None if request.tsa_cert else Path(request.workspace))
    return Timestamper(urls=tuple(urls), roots=roots, required=section.get("required") is True)


def _evidence_failed(decision: Decision, store_url: str, exc: PolicyEngineError) -> Decision:
    """Deny, with a rule result that says the evidence could not be recorded (fail closed)."""
    failed = RuleResult(id="evidence", type="evidence", status=Status.ERROR, enforcement=Enforcement.DENY,
                        message=f"the evidence could not be recorded: {exc.message}", controls=("CC8.1",),
                        description="The evaluation is archived as tamper-evident evidence.",
                        details={"archive": store_url})
    return structs.replace(decision, decision="deny", rules=decision.rules + (failed,))


def _deadline_passed(decision: Decision, run: RunDeadline) -> Decision:
    """Deny, with a rule result that says the run deadline passed and what it was waiting for."""
    from policyengine.deadline import ENV

    passed = RuleResult(id="run-deadline", type="run_deadline", status=Status.ERROR, enforcement=Enforcement.DENY,
                        message=f"the run deadline ({ENV}={run.seconds:g} s) passed while waiting for "
                                f"{run.passed_while}: what was not answered in time counts as no answer",
                        controls=("CC8.1",), description="The evaluation finished within the run deadline.",
                        details={"deadline_seconds": run.seconds, "waiting_for": run.passed_while})
    return structs.replace(decision, decision="deny", rules=decision.rules + (passed,))


def _record(request: CheckRequest, policy: Policy, gathered: Any, decision: Decision,
            store_url: str, raw: Mapping[str, bytes] | None = None, facts: Facts | None = None,
            identity: oidc.Identity | None = None) -> dict[str, Any]:
    """Write the bundle; return what the decision JSON says of it. Raises PolicyEngineError.

    ``raw``: more raw answers to keep under ``raw/`` (the ticket systems' records). ``facts``:
    the facts judged, kept as ``facts.json`` (``facts.facts_to_json``) so that replay judges
    what was judged, not the redacted copies of the files."""
    from policyengine.evidence.format.bundle import member_path
    from policyengine.evidence.stores.factory import open_store
    from policyengine.redact import EvidenceRedactor, ci_variables

    redactor = EvidenceRedactor.from_env(request.env, request.extra_secrets)
    extra = {f"raw/{name}": data for name, data in {**gathered.raw, **(raw or {})}.items()}
    if facts is not None:
        extra[FACTS_MEMBER] = (json.dumps(facts_to_json(facts, redactor.text), indent=2, sort_keys=True,
                                          ensure_ascii=False) + "\n").encode("utf-8")
    base, depth = policy.base, 0
    while base is not None:  # the bases a policy extends are evidence too: replay needs them
        depth += 1
        name = member_path(Path(base.source["path"] if base.source else base.path).name)
        extra[f"policy-base/{depth}-{name}"] = base.raw
        base = base.base
    if policy.waivers_file:  # the waivers file is evidence too: replay judges with the same waivers
        source = policy.waivers_file.get("source") or {}
        name = Path(str(source.get("path") or policy.waivers_file["path"])).name or "waivers.yml"
        extra[f"{WAIVERS_MEMBER}{member_path(name)}"] = policy.waivers_raw
    ci = ci_variables(request.env, redactor)
    if ci:
        extra["ci.json"] = (json.dumps(ci, indent=2, sort_keys=True) + "\n").encode("utf-8")
    member = identity.member() if identity is not None else None
    if member is not None:
        extra[oidc.MEMBER] = member
    recorded = decision_to_json(decision, advisory=request.advisory)
    if identity is not None and (identity.status != "absent" or in_any_ci(request.env)):
        recorded["identity"] = json.loads(redactor.text(json.dumps(identity.summary())))
    if request.advisory:
        recorded["advisory_by"] = json.loads(redactor.text(json.dumps(advisory_by(request, identity))))
    if policy.witness is not None:  # read by `evidence witness` (policyengine.lifecycle.witness)
        recorded["witness"] = dict(policy.witness)
    from policyengine.evidence.format.timestamp import stamping

    archive = open_store(store_url)
    with stamping(request.timestamper):  # every statement signed (each retry too) is stamped
        ref = archive.write_bundle(
            decision=recorded,
            change=gathered.change,
            policy_filename=Path(policy.source["path"]).name if policy.source else Path(request.policy_path).name,
            policy_bytes=policy.raw,
            files=decision.files,
            extra_members=extra,
            subjects=list(request.subjects),
            signing_key=request.signing_key,
            retention=policy.retention,
            redactor=redactor,
            created_at=_wall(request),
        )
    bundle: dict[str, Any] = {"bundle_id": ref.id, "path": ref.path, "sha256": ref.sha256,
                              "signed": request.signing_key is not None}
    # The chain's new head: anchored elsewhere, it lets `evidence verify --head` detect the
    # deletion of the newest bundles or a rewritten history.
    bundle["chain"] = {"repository": ref.repository, "environment": ref.environment, "sequence": ref.sequence,
                       "head_sha256": ref.sha256}
    # The store head (the newest catalogue's digest): one anchored value covers every chain.
    if ref.store_head:
        bundle["store_head"] = ref.store_head
    notes = list(getattr(archive, "notes", []))
    if not request.evidence_store and running_in_ci(request.env):
        # A job folder lives only as long as the CI artifact it is uploaded as.
        when = (request.env.get("POLICYENGINE_EVIDENCE_EXPIRES") or "").strip()
        notes.append(f"this evidence is kept only in the job folder {store_url}: it expires with the CI artifact"
                     + (f" ({when})" if when else ", when the CI deletes the job's artifacts")
                     + "; configure a persistent store (--evidence-store git:REF, git+URL#REF or s3://...) "
                       "to keep it for the audit period")
    if notes:
        bundle["notes"] = notes
    return bundle


def _identity(request: CheckRequest, policy: Policy, change: Mapping[str, Any]) -> oidc.Identity:
    """The CI's signed identity (``providers.oidc``), checked against the change and this job.
    Outside any CI nothing is asked for: there is no platform to vouch for anyone."""
    if not in_any_ci(request.env):
        return oidc.Identity("absent")
    settings = oidc.IdentitySettings(issuers=policy.identity_issuers, required=policy.identity_required)
    identity = oidc.establish(request.env, settings, _wall(request), change)
    if identity.status == "verified" and identity.problem is None and identity.token:
        earlier = _token_accepted_before(request.evidence_store or request.evidence_dir, identity)
        if earlier:
            identity.problem = oidc.IdentityProblem(
                f"the CI's ID token (sha256 {oidc.token_digest(identity.token)[:16]}...) was already accepted by "
                f"bundle {earlier} in this store: a token is accepted once (a replay)", claim="jti", mismatch=True)
    return identity


def _provenance_source(request: CheckRequest, identity: oidc.Identity, change: Mapping[str, Any]) -> Any:
    """Who says which job produced each test report: the platform whose provider gathered the
    change (none for a change file), about the run the verified token names (else the CI's variables)."""
    from policyengine.providers import detect

    provider = request.provider or ("local" if request.change_path else detect(request.env))
    verified = identity.status == "verified" and identity.problem is None
    return LiveProvenance(provider, request.env, change, identity.claims if verified else None)


def advisory_by(request: CheckRequest, identity: oidc.Identity | None) -> dict[str, Any]:
    """Who set advisory mode: the verified token's actor inside CI, else the CI variable's actor
    (self-asserted) or ``$USER``; and the source (the option, the variable or the action input)."""
    from policyengine.evidence.format.records import ci_actor

    verified = identity is not None and identity.status == "verified" and identity.problem is None
    if verified and identity is not None and identity.actor:
        actor, how = identity.actor, "verified (CI actor): oidc"
    elif (found := ci_actor(request.env)) is not None:
        actor, how = found[0], f"self-asserted: {found[1]}"
    else:
        actor, how = (request.env.get("USER") or request.env.get("LOGNAME") or None), "self-asserted: $USER"
    return {"actor": actor, "actor_verified": bool(verified and identity is not None and identity.actor),
            "actor_source": how, "source": request.advisory_source or "--advisory"}


def _token_accepted_before(store_url: str, identity: oidc.Identity) -> str | None:
    """The id of a bundle of this store that already accepted ``identity``'s token, or None.

    A token lives minutes, so only records created since its ``iat`` (less the leeway) can hold
    it: the store's index query (its cached index) answers that without reading the whole
    history. Each accepted token's digest is kept in its index record (``identity_sha256``)."""
    from policyengine.evidence.format.index import Query
    from policyengine.evidence.stores.factory import open_store

    iat = identity.claims.get("iat")
    if not isinstance(iat, (int, float)):
        return None
    since = datetime.fromtimestamp(iat - oidc.LEEWAY_SECONDS - 1, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = oidc.token_digest(identity.token or "")
    try:
        store = open_store(store_url)
        records, _ = store.query(Query(since=since, kind="evaluation"))
    except (PolicyEngineError, OSError):
        return None  # an unreadable store fails the write itself, which denies
    for r in records:
        if r.get("identity_sha256") == digest:
            return str(r.get("id"))
        if "identity_sha256" in r:
            continue
        # A store whose listing projects its records (git, S3) drops the digest: read it from the
        # bundle's own decision, for the few bundles of the token's minutes only.
        try:
            with store.open_bundle(r) as fh, zipfile.ZipFile(fh) as zf:
                recorded = json.loads(zf.read("decision.json")).get("identity")
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, PolicyEngineError):
            continue
        if isinstance(recorded, dict) and recorded.get("token_sha256") == digest and "problem" not in recorded:
            return str(r.get("id"))
    return None


def _identity_judged(decision: Decision, identity: oidc.Identity, policy: Policy,
                     request: CheckRequest) -> Decision:
    """Add the ``identity`` result when the token's claims disagree with the change (always an
    error), or when identity is required inside CI and no token verified (fail closed)."""
    if identity.status == "verified" and identity.problem is None:
        return decision
    if identity.status == "verified" and identity.problem is not None:
        message = identity.problem.message
    elif policy.identity_required and in_any_ci(request.env):
        if identity.status == "absent":
            message = ("identity is required, but the CI offered no ID token: grant the job `permissions: "
                       "id-token: write` (GitHub Actions) or declare `id_tokens: POLICYENGINE_ID_TOKEN: "
                       "{aud: policyengine}` (GitLab CI)")
        else:
            why = identity.problem.message if identity.problem else "no token verified"
            message = f"identity is required, but {why}"
    else:
        return decision
    result = RuleResult(id="identity", type="identity", status=Status.ERROR, enforcement=Enforcement.DENY,
                        message=message, controls=("CC8.1",),
                        description="The CI platform's signed identity (OIDC ID token) verifies and agrees with "
                                    "the change.",
                        details={"status": identity.status, "issuers": list(policy.identity_issuers),
                                 "required": policy.identity_required})
    return structs.replace(decision, decision="deny", rules=decision.rules + (result,))


def judge(policy: Policy, change: dict[str, Any], workspace: str | Path, now: datetime,
          tickets: Mapping[str, Any] | None = None) -> Decision:
    """Gather the facts from ``workspace`` and judge, recording nothing (``policy test``, dry runs).

    Nothing is written and nothing touches the network: the change is given, the facts come
    from the workspace alone, and ticket answers from ``tickets`` (a policy test case's
    ``tickets``; a key without one is an error).
    """
    facts = gather_facts(policy, change, Workspace(Path(workspace)), tickets=SuppliedTickets(tickets or {}))
    return evaluate(policy, facts, now)


def _emergency_request(request: CheckRequest, policy: Policy, change: Mapping[str, Any]) -> EmergencyRequest:
    """The command line's emergency request (or none asked for: the trigger label may still ask),
    with ``require_verified`` under CI whichever way it is asked for. ``--reason`` or
    ``--incident`` without an emergency asked for (``--emergency`` or the trigger label) is a
    usage error: they would be silently dropped."""
    asked = structs.replace(request.emergency or EmergencyRequest(), require_verified=in_any_ci(request.env))
    if (asked.reason or asked.incident) and requested_by(policy.emergency, asked, change) is None:
        label = policy.emergency.label if policy.emergency else None
        raise UsageError("--reason / --incident given, but no emergency was asked for (no --emergency"
                         + (f", no label {label!r} on the request)" if label else ")"),
                         hint="add --emergency to ask for the emergency procedure")
    return asked


UNGUARDED = ("the policy names no policy_owners: the policy, its bases, the waivers file, CODEOWNERS, the pipeline "
             "definitions and the install lock are unguarded; a change can edit them without an owner's approval")


def unguarded_warning(policy: Policy) -> list[str]:
    """The warning printed on every run of a policy without ``policy_owners`` (else none)."""
    return [] if any(r.type == "policy_owners" for r in policy.rules) else [UNGUARDED]


def _wall(request: CheckRequest) -> datetime:
    return request.wall_time if request.wall_time is not None else request.now


def check(request: CheckRequest) -> CheckResult:
    """Gather, judge and record one evaluation.

    Raises ``InvalidInputError`` (every problem of the policy and change files) or
    ``UsageError`` before anything is judged; once judged, the evaluation is always recorded
    or denied.

    The whole run has one deadline (``POLICYENGINE_RUN_DEADLINE``, ``policyengine.deadline``),
    started here before anything is read: every HTTP request and git command waits at most the
    time left. Past it, the evaluation is denied with a ``run-deadline`` result naming what was
    waited for, recorded in the time kept for that (the reserve), and the exit code is 3.
    """
    run = RunDeadline(seconds_from_env(request.env))
    with running(run):
        return _check(request, run)


def _check(request: CheckRequest, run: RunDeadline) -> CheckResult:
    """``check`` under the run deadline ``run``."""
    ws = Path(request.workspace)
    if not ws.is_dir():
        raise UsageError(f"--workspace: {request.workspace} is not a directory")
    clock.check_override(request.clock_override, simulate=request.simulate, env=request.env)
    if request.evidence_store:
        # A store that cannot take this write (a git store without a signing key, a malformed
        # URL) is invalid input, refused before anything is judged.
        from policyengine.evidence.stores.factory import open_store

        open_store(request.evidence_store).check_write(request.signing_key)
    from policyengine.lifecycle import notify

    notify_cli = notify.parse_cli(request.notify)  # a bad --notify is refused before anything is judged
    if request.wall_time is None:
        request = structs.replace(request, wall_time=datetime.now(timezone.utc))
    policy, gathered = _load(request)
    request = structs.replace(request, timestamper=timestamper_for(request, policy))
    targets = notify.resolve(policy.notify, notify_cli, request.env)
    request = structs.replace(request, extra_secrets=(*request.extra_secrets, *notify.secrets(targets)))
    _check_environments(request, gathered.change)
    _check_applies(policy, gathered.change)
    check_approvers(policy.waivers, policy.document, gathered.change)
    urgent = _emergency_request(request, policy, gathered.change)
    # The identity first: its verified run (run_id, pipeline_id) names the run whose jobs must
    # have produced the test reports (provenance: same_run).
    identity = _identity(request, policy, gathered.change)
    live = LiveTickets(request.env)
    try:
        facts = gather_facts(policy, gathered.change, Workspace(ws), tickets=live,
                             pipeline=LivePipeline(request.env, fetch=True), subjects=list(request.subjects),
                             provenance=_provenance_source(request, identity, gathered.change))
    finally:
        live.close()

    if identity.token:  # the token is redacted everywhere but identity.json
        request = structs.replace(request, extra_secrets=(*request.extra_secrets, *oidc.secrets(identity.token)))
    if in_any_ci(request.env):  # the emergency declarer is verified by the token, as records are
        urgent = structs.replace(urgent, identity_checked=True, verified_actor=identity.actor
                                     if identity.problem is None else None)
    decision = evaluate(policy, facts, request.now, urgent)
    decision = structs.replace(decision, simulated=request.simulate, clock={
        "source": clock.clock_source(request.clock_override, simulate=request.simulate), "wall_time": iso_utc(_wall(request).replace(microsecond=0))})
    decision = _identity_judged(decision, identity, policy, request)
    if run.passed_while is not None:  # fail closed: what was not answered in time is no answer
        decision = _deadline_passed(decision, run)

    # Record: a denied attempt is evidence too. If it cannot be recorded, the gate denies (exit 3).
    # Recording may use the reserve of the run's deadline, kept for it.
    store_url = request.evidence_store or request.evidence_dir
    with run.recording():
        try:
            bundle = _record(request, policy, gathered, decision, store_url, ticket_records(facts), facts,
                             identity=identity)
        except PolicyEngineError as exc:
            decision = _evidence_failed(decision, store_url, exc)
            bundle = {"error": exc.message}

    code = exit_code_for(decision)
    if run.passed_while is not None:
        code = EXIT_FACTS  # the deadline passed: exit 3, whatever else failed
    final = EXIT_ALLOW if request.advisory and code == EXIT_DENY else code
    # Under CI a simulation never releases a deploy, whatever it decided.
    simulated_under_ci = request.simulate and in_any_ci(request.env)
    if simulated_under_ci and final == EXIT_ALLOW:
        final = EXIT_DENY
    redactor = Redactor.from_env(request.env, request.extra_secrets)
    shown = redact_decision(decision, redactor)
    doc = redact_value(decision_to_json(shown, advisory=request.advisory), redactor)
    if identity.status != "absent" or in_any_ci(request.env):
        doc["identity"] = redact_value(identity.summary(), redactor)
    if request.advisory:
        doc["advisory_by"] = redact_value(advisory_by(request, identity), redactor)
    doc["evidence"] = redact_value(bundle, redactor)
    # After the evidence is recorded: post the decision; a failure is recorded, linked to the bundle.
    from policyengine.evidence.format.timestamp import stamping

    # A failure record is stamped like the bundle: its time rests on the authority, not on us.
    with run.recording(), stamping(request.timestamper):
        delivered = notify.deliver(targets, document=doc, bundle=bundle, exit_code=final, store_url=store_url,
                                   env=request.env, redactor=redactor, signing_key=request.signing_key,
                                   retention=policy.retention, extra_secrets=request.extra_secrets)
    return CheckResult(decision=shown, document=doc, evidence=bundle, store_url=store_url,
                       verdict_code=code, exit_code=delivered.exit_code, advisory=request.advisory,
                       notes=list(bundle.get("notes", [])), redactor=redactor,
                       simulated_under_ci=simulated_under_ci, notifications=delivered.lines,
                       warnings=unguarded_warning(policy), sources=policysource.source_lines(policy))


# -- replay -----------------------------------------------------------------------------------


class ReplayResult(Struct, frozen=True):
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
    as ``check`` gathers them. Ticket answers are read from the bundle's ``raw/tickets/``
    records, never asked again: a key without a record is an error on replay.
    """
    import tempfile

    from policyengine.evidence.stores.replay import unpack_for_replay
    from policyengine.models import parse_instant
    from policyengine.language.policy import parse_policy

    with tempfile.TemporaryDirectory(prefix="policyengine-replay-") as tmp:
        ws = Path(tmp) / "workspace"
        ws.mkdir()
        unpacked = unpack_for_replay(store, bundle_id, ws)
        notes: list[str] = []
        if unpacked.redacted:
            notes.append("members stored redacted (token-looking values removed): " + ", ".join(unpacked.redacted))
        base = None
        for name, raw in reversed(_policy_bases(store, bundle_id)):  # the deepest base first
            base = parse_policy(raw, file=name, base=base)
        policy = parse_policy(unpacked.policy_raw, file=unpacked.policy_member, base=base)
        waivers = _waivers_member(store, bundle_id)
        if waivers is not None:
            from policyengine.language.policy import parse_waivers_file, with_waivers

            name, raw = waivers
            recorded_file = (unpacked.recorded.get("policy") or {}).get("waivers_file") or {}
            spec = str(recorded_file.get("path") or name)
            policy = with_waivers(policy, parse_waivers_file(raw, file=name, policy=policy),
                                  record=dict(recorded_file), spec=spec, raw=raw)
        at = str(unpacked.recorded.get("evaluated_at"))
        tickets = RecordedTickets(_members(store, bundle_id, "raw/tickets/"))
        facts = gather_facts(policy, unpacked.change, Workspace(ws), tickets=tickets,
                             pipeline=RecordedPipeline(_members(store, bundle_id, "raw/pipeline.json")),
                             subjects=_recorded_subjects(store, bundle_id),
                             provenance=RecordedProvenance(_members(store, bundle_id, "raw/provenance.json")))
        facts, mismatches = _recorded_facts(store, bundle_id, facts, unpacked.redacted, notes)
        decision = evaluate(policy, facts, parse_instant(at, option="--now"),
                            recorded_emergency(unpacked.recorded))
        decision = _recorded_deadline(unpacked.recorded, decision, notes)
    result = compare(bundle_id, at, unpacked.recorded, decision, notes)
    result.differences.extend(mismatches)
    return result


def _recorded_subjects(store: Any, bundle_id: str) -> list[tuple[str, str]] | None:
    """The artifacts the bundle's statement names (``--subject`` when it was checked), or None
    when the statement cannot be read (the ``artifact-subjects`` rule then errors on replay)."""
    import base64

    from policyengine.evidence.format.bundle import ATTESTATION

    members = _members(store, bundle_id, ATTESTATION)
    try:
        envelope = json.loads(members[ATTESTATION].decode("utf-8"))
        statement = json.loads(base64.b64decode(envelope["payload"], validate=True))
        return [(str(s["name"]), str(s["digest"]["sha256"])) for s in statement.get("subject", [])
                if isinstance(s, dict) and isinstance(s.get("digest"), dict) and "sha256" in s["digest"]]
    except (KeyError, ValueError, TypeError, AttributeError):
        return None


def _recorded_facts(store: Any, bundle_id: str, reread: Facts, redacted: Sequence[str],
                    notes: list[str]) -> tuple[Facts, list[str]]:
    """The facts to judge on replay: those the bundle recorded as judged (``facts.json``), and
    for a request it did not record (a bundle written before ``facts.json`` existed), the facts
    re-read from its stored files, as before.

    The stored files are redacted copies: a redaction may rewrite a report (``Authorization:x``
    becomes ``Authorization:[REDACTED]``), merge two test names that differ by a token only, or
    shorten a plan, so the recorded facts, not a re-reading, are what was judged. Where every
    file a recorded fact names was stored unredacted, the re-reading must give the same facts:
    a difference (a recorded fact that its own file contradicts, or a reader that changed) is
    reported as a replay difference. A ``facts.json`` that cannot be read refuses the replay.
    """
    from policyengine.errors import EvidenceError
    from policyengine.evidence.format.bundle import FILES_DIR, member_path
    from policyengine.facts import RecordedFactsError, fact_to_json, facts_from_json
    from policyengine.redact import REDACTED, EvidenceRedactor

    members = _members(store, bundle_id, FACTS_MEMBER)
    if FACTS_MEMBER not in members:
        notes.append(f"the bundle has no {FACTS_MEMBER} (written before it existed): the facts are re-read "
                     "from its stored files, which may be redacted copies")
        return reread, []
    try:
        recorded = facts_from_json(json.loads(members[FACTS_MEMBER].decode("utf-8")))
    except (UnicodeDecodeError, ValueError) as exc:  # RecordedFactsError is a ValueError
        why = str(exc) if isinstance(exc, RecordedFactsError) else f"not JSON: {exc}"
        raise EvidenceError(f"bundle {bundle_id} cannot be replayed: its {FACTS_MEMBER} cannot be read ({why})",
                            hint=f"run `policyengine evidence verify {bundle_id}`") from None
    stored_redacted = set(redacted)
    redactor = EvidenceRedactor()
    answers = dict(reread.answers)
    mismatches: list[str] = []
    used = 0
    for request, live in reread.answers.items():
        fact = recorded.get(request)
        if fact is None:
            continue
        answers[request] = fact
        used += 1
        files = [r.file for r in getattr(fact, "reports", ())] + ([fact.file] if hasattr(fact, "sections") else [])
        if not files or any(f is None or REDACTED in f.relpath or FILES_DIR + member_path(f.relpath) in stored_redacted
                            for f in files):
            continue  # a redacted copy (or no copy): only the recorded fact says what was judged
        if fact_to_json(request, live, redactor.text) != fact_to_json(request, fact, redactor.text):
            what = getattr(request, "path", None) or ", ".join(getattr(request, "globs", ()))
            mismatches.append(f"facts of {what}: the stored files, read again, do not give the facts recorded "
                              f"in {FACTS_MEMBER}")
    if used:
        notes.append(f"judged from the facts recorded in {FACTS_MEMBER} ({used} of {len(reread.answers)} "
                     "fact requests), not from the stored copies of the files")
    return Facts(change=reread.change, answers=answers), mismatches


def _recorded_deadline(recorded: Mapping[str, Any], decision: Decision, notes: list[str]) -> Decision:
    """A run whose deadline passed was denied for it (``run-deadline``): a fact of that run, not
    judged again, so replay denies the same way and says so."""
    old = next((r for r in recorded.get("rules", []) if isinstance(r, dict) and r.get("id") == "run-deadline"
                and r.get("type") == "run_deadline"), None)
    if old is None:
        return decision
    notes.append("the run deadline passed when this was checked (rule run-deadline): replay denies for it too")
    result = RuleResult(id="run-deadline", type="run_deadline", status=Status.ERROR, enforcement=Enforcement.DENY,
                        message=str(old.get("message") or "the run deadline passed"), controls=("CC8.1",),
                        description="The evaluation finished within the run deadline.",
                        details=dict(old.get("details") or {}) if isinstance(old.get("details"), dict) else {})
    return structs.replace(decision, decision="deny", rules=decision.rules + (result,))


def recorded_emergency(recorded: Mapping[str, Any]) -> EmergencyRequest | None:
    """The emergency request a recorded decision was judged with (replay asks for it again)."""
    emergency = recorded.get("emergency")
    if not isinstance(emergency, dict):
        return None
    return EmergencyRequest(
        flag=emergency.get("requested_by") == "--emergency",
        reason=emergency.get("reason") if emergency.get("reason_source") == "--reason" else None,
        incident=emergency.get("incident") if emergency.get("incident_source") == "--incident" else None,
        require_verified=emergency.get("require_verified") is True,
        identity_checked=emergency.get("identity_checked") is True,
        verified_actor=emergency.get("declarer") if emergency.get("identity_checked") is True
        and emergency.get("declarer_source") == "oidc" else None)


def _policy_bases(store: Any, bundle_id: str) -> list[tuple[str, bytes]]:
    """The ``policy-base/N-name`` members of a bundle (the bases its policy extends), nearest first."""
    import zipfile

    from policyengine.evidence.stores.replay import policy_bases

    record = store.find(bundle_id)
    with store.open_bundle(record) as fh, zipfile.ZipFile(fh) as zf:
        return [(n, zf.read(n)) for n in policy_bases(zf.namelist())]


def _waivers_member(store: Any, bundle_id: str) -> tuple[str, bytes] | None:
    """The ``waivers/<name>`` member of a bundle (the waivers file it was judged with), if any."""
    members = _members(store, bundle_id, WAIVERS_MEMBER)
    first = sorted(members)[:1]
    return (first[0], members[first[0]]) if first else None


def _members(store: Any, bundle_id: str, prefix: str) -> dict[str, bytes]:
    """The members of a bundle whose names start with ``prefix`` (e.g. ``raw/tickets/``)."""
    import zipfile

    record = store.find(bundle_id)
    with store.open_bundle(record) as fh, zipfile.ZipFile(fh) as zf:
        return {n: zf.read(n) for n in zf.namelist() if n.startswith(prefix) and not n.endswith("/")}


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
