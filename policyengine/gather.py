"""Gather the facts of one evaluation: exactly what the rules that apply say they need.

Each rule type lists its fact requests (``RuleType.needs``); each kind of request has one
gatherer here, in ``GATHERERS``, which reads it through the workspace (or, for kinds added
later, a provider, the network or git). Rules that do not apply (another environment, or no
changed file matches their ``when.paths``) are not asked, so nothing they would read is read.
This is the I/O half of an evaluation; the judge (``policyengine.engine``) is the pure half.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from msgspec import Struct, field

from policyengine.errors import PolicyEngineError, ReportError, WorkspaceError
from policyengine.facts import (
    DocumentFact,
    DocumentRequest,
    FactRequest,
    Facts,
    PipelineFact,
    PipelineRequest,
    ProvenanceFact,
    ProvenanceRequest,
    ReportFact,
    ReportsFact,
    ReportsRequest,
    SubjectsFact,
    SubjectsRequest,
    TicketAnswer,
    TicketRequest,
    TicketsFact,
)
from policyengine.models import FileRead
from policyengine.language.policy import Policy, build_rules, policy_applies, when_skip
from policyengine.workspace.files import Workspace


class TicketSource(Protocol):
    """Where ticket answers come from: the ticket systems (``LiveTickets``), an evidence bundle
    (``RecordedTickets``) or a policy test case (``SuppliedTickets``)."""

    def lookup(self, system: str, key: str, request: TicketRequest) -> TicketAnswer:
        """The answer for ``key``; ``records`` then holds what it was read from."""
        ...  # pragma: no cover - protocol

    @property
    def records(self) -> dict[str, bytes]:
        """Raw records of the lookups made, by bundle member name under ``raw/``."""
        ...  # pragma: no cover - protocol


class OfflineTickets:
    """Answers given in advance; a key without one is ``unavailable`` (nothing is ever asked).

    ``answers``: ``{KEY: record}`` (``providers.ticketing`` records) or ``{KEY: TicketAnswer}``.
    """

    def __init__(self, answers: Mapping[str, Any] | None = None, *, origin: str = "supplied",
                 missing: str = "no answer was supplied (this evaluation never asks the ticket system)") -> None:
        self._answers = {str(k).upper(): v for k, v in (answers or {}).items()}
        self._origin = origin
        self._missing = missing
        self.records: dict[str, bytes] = {}

    def lookup(self, system: str, key: str, request: TicketRequest) -> TicketAnswer:
        from policyengine.providers import jira, servicenow

        given = self._answers.get(key.upper())
        if isinstance(given, TicketAnswer):
            return given
        if not isinstance(given, Mapping) or given.get("system") not in (None, system):
            return TicketAnswer(system, key, "unavailable", f"{key}: {self._missing}", origin=self._origin)
        if system == "jira":
            return jira.answer(key, given, self._origin, request.jira_approval_status)
        return servicenow.answer(key, given, self._origin)


class RecordedTickets(OfflineTickets):
    """The records an evidence bundle keeps (``raw/tickets/<system>/<key>.json``): replay."""

    def __init__(self, members: Mapping[str, bytes]) -> None:
        answers: dict[str, Any] = {}
        for name, data in members.items():
            try:
                record = json.loads(data.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                continue  # unreadable: the key is then unavailable (error), never passing
            if isinstance(record, dict) and isinstance(record.get("key"), str):
                answers[record["key"]] = record
        super().__init__(answers, origin="recorded",
                         missing="no answer is recorded in the bundle (replay never asks the ticket system)")


class SuppliedTickets(OfflineTickets):
    """A policy test case's ``tickets``: ``{KEY: {status, type}}`` (Jira), ``{KEY: {approval, state,
    start_date, end_date}}`` (ServiceNow), ``{KEY: {http_status: 404}}`` or a whole raw answer
    ``{KEY: {http_status: 200, body: {...}}}``, or ``{KEY: not_found}``."""

    def __init__(self, supplied: Mapping[str, Any]) -> None:
        super().__init__({})
        self._supplied = {str(k).upper(): v for k, v in supplied.items()}

    def lookup(self, system: str, key: str, request: TicketRequest) -> TicketAnswer:
        from policyengine.providers import jira, servicenow

        given = self._supplied.get(key)
        if given == "not_found":
            given = {"http_status": 404}
        if isinstance(given, Mapping):
            if "http_status" in given:
                record = {"system": system, "key": key, "request": None, "body": None,
                          "error": None if given["http_status"] == 200 else f"HTTP {given['http_status']} "
                                                                             "(supplied by the test case)",
                          **given}
            else:
                record = (jira.supplied_record if system == "jira" else servicenow.supplied_record)(key, given)
            self._answers[key] = record
        return super().lookup(system, key, request)


class LiveTickets:
    """Ask the ticket systems (``providers.jira``, ``providers.servicenow``); keep every record."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.records: dict[str, bytes] = {}
        self._sessions: dict[tuple[str, str | None], Any] = {}

    def _session(self, system: str, pinned: str | None) -> Any:
        from policyengine.providers.ticketing import (
            BY_NAME,
            NotConfigured,
            open_session,
        )

        slot = (system, pinned)
        if slot not in self._sessions:
            try:
                self._sessions[slot] = open_session(BY_NAME[system], self.env, pinned)
            except NotConfigured as exc:
                self._sessions[slot] = str(exc)
            except PolicyEngineError as exc:  # e.g. a POLICYENGINE_HTTP_* value that is not a number
                self._sessions[slot] = exc.message
        return self._sessions[slot]

    def lookup(self, system: str, key: str, request: TicketRequest) -> TicketAnswer:
        from policyengine.providers import jira, servicenow
        from policyengine.providers.ticketing import (
            encode,
            member_name,
            unavailable_record,
        )

        pinned = request.jira_url if system == "jira" else request.servicenow_url
        session = self._session(system, pinned)
        if isinstance(session, str):
            record = unavailable_record(system, key, session)
        elif system == "jira":
            record = jira.fetch(session, key, request.jira_api_version,
                                changelog=request.jira_approval_status is not None)
        else:
            record = servicenow.fetch(session, key)
        self.records[member_name(system, key)] = encode(record)
        if system == "jira":
            return jira.answer(key, record, "live", request.jira_approval_status)
        return servicenow.answer(key, record, "live")

    def close(self) -> None:
        for session in self._sessions.values():
            if not isinstance(session, str):
                session.close()


PIPELINE_MEMBER = "pipeline.json"
"""The record of the guarded pipeline files, under ``raw/`` in the bundle."""


def _pipeline_fact(record: Mapping[str, Any], data: bytes, origin: str | None) -> PipelineFact:
    guard = record.get("guard")
    notes = record.get("notes")
    error = record.get("error")
    if not isinstance(guard, list) or not all(isinstance(g, str) for g in guard):
        return PipelineFact(error="the record of the pipeline files holds no list of guarded files", source=origin,
                            record=data)
    return PipelineFact(guard=tuple(guard), error=str(error) if error else None, source=origin, record=data,
                        notes=tuple(str(n) for n in notes) if isinstance(notes, list) else ())


class LivePipeline:
    """Read the pipeline configuration at the trusted base and the deployed commit from the
    workspace's git repository (``policyengine.workspace.pipelines``); ``env`` names CI_CONFIG_PATH,
    CI_PROJECT_PATH and POLICYENGINE_REQUIREMENTS."""

    def __init__(self, env: Mapping[str, str] | None = None, *, fetch: bool = False) -> None:
        self.env = env or {}
        self.fetch = fetch
        """Fetch a commit missing from a shallow clone from origin (``check``); off by default,
        so that judging a policy test case never touches the network."""

    def files(self, workspace: Workspace, change: Mapping[str, Any], trusted_commit: str | None) -> PipelineFact:
        from policyengine.workspace import pipelines

        record = pipelines.read_pipeline(workspace, change, trusted_commit, self.env, fetch=self.fetch)
        return _pipeline_fact(record, pipelines.encode(record), record.get("source"))


class RecordedPipeline:
    """The record an evidence bundle keeps (``raw/pipeline.json``): replay reads it, never git."""

    def __init__(self, members: Mapping[str, bytes]) -> None:
        self.data = members.get(f"raw/{PIPELINE_MEMBER}")

    def files(self, workspace: Workspace, change: Mapping[str, Any], trusted_commit: str | None) -> PipelineFact:
        if self.data is None:
            return PipelineFact(error=f"the bundle records no pipeline files (raw/{PIPELINE_MEMBER})",
                                source="recorded")
        try:
            record = json.loads(self.data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            record = None
        if not isinstance(record, dict):
            return PipelineFact(error=f"raw/{PIPELINE_MEMBER} in the bundle is not a JSON object", source="recorded")
        return _pipeline_fact(record, self.data, "recorded")


NO_TICKETS = OfflineTickets(missing="the ticket system is not asked here (no ticket answers were given)")


class GatherContext(Struct, frozen=True):
    """Where gatherers read from: the workspace, the change (ticket keys are found in it) and
    the ticket answers (asked live by ``check``; recorded or supplied otherwise)."""

    workspace: Workspace
    change: Mapping[str, Any] = field(default_factory=dict)
    tickets: Any = NO_TICKETS
    """A ``TicketSource``; the default never touches the network."""
    pipeline: Any = None
    """Where the pipeline files come from (``LivePipeline``, ``RecordedPipeline``); None: the
    workspace's git repository, without the CI variables."""
    trusted_commit: str | None = None
    """The commit the trusted policy was read from (``git:`` in this repository): a base."""
    subjects: tuple[tuple[str, str], ...] | None = None
    """The artifacts the deployer named (``--subject``); None: not given to this gathering."""
    provenance: Any = None
    """Who says which job produced each test report (``providers.provenance.LiveProvenance``,
    ``RecordedProvenance``); None: no CI platform is asked (``provenance: same_run`` errors)."""


def _reports(request: ReportsRequest, ctx: GatherContext) -> ReportsFact:
    """Match the globs, then read each JUnit report once, hashing exactly the bytes parsed."""
    from policyengine.workspace.junit import read_junit

    matched: list[str] = []
    escapes: list[str] = []
    for pattern in request.globs:
        try:
            found, out = ctx.workspace.glob(pattern)
        except OSError as exc:
            return ReportsFact(request.globs, list_error=f"cannot list {pattern}: {exc.strerror or exc}")
        matched += [f for f in found if f not in matched]
        escapes += [f for f in out if f not in escapes]
    if escapes:  # the rule fails on these: nothing is read
        return ReportsFact(request.globs, outside=tuple(escapes))
    reports: list[ReportFact] = []
    for rel in matched:
        digest, size = hashlib.sha256(), [0]

        def sink(chunk: bytes, digest: Any = digest, size: list[int] = size) -> None:
            digest.update(chunk)
            size[0] += len(chunk)

        try:
            real = ctx.workspace.resolve(rel)
            summary = read_junit(real, sink)
        except (WorkspaceError, ReportError) as exc:
            try:  # the parse stopped early: hash the whole file for the evidence
                info = ctx.workspace.describe(rel)
            except WorkspaceError as exc2:
                reports.append(ReportFact(rel, None, error=str(exc2)))
                continue
            reports.append(ReportFact(rel, info, error=str(exc)))
            continue
        info = FileRead(relpath=rel, abspath=str(real), sha256=digest.hexdigest(), size=size[0])
        reports.append(ReportFact(rel, info, summary))
    return ReportsFact(request.globs, tuple(reports))


def _document(request: DocumentRequest, ctx: GatherContext) -> DocumentFact:
    """Read a Markdown document whole and split it into its sections."""
    from policyengine.workspace.markdown import sections

    rel = request.path
    try:
        real = ctx.workspace.resolve(rel)
    except WorkspaceError as exc:
        return DocumentFact(rel, problem="outside", message=str(exc))
    if not real.exists():
        return DocumentFact(rel, problem="missing", message=f"{rel} does not exist in the workspace")
    if not real.is_file():
        return DocumentFact(rel, problem="not_file", message=f"{rel} is not a file")
    try:
        data, info = ctx.workspace.read_bytes(rel, request.max_bytes)
        text = data.decode("utf-8-sig")
    except WorkspaceError as exc:
        return DocumentFact(rel, problem="unreadable", message=str(exc))
    except UnicodeDecodeError as exc:
        return DocumentFact(rel, file=info, problem="not_utf8", message=f"{rel} is not UTF-8 text (byte {exc.start})")
    return DocumentFact(rel, file=info, text=text, sections=sections(text))


def _tickets(request: TicketRequest, ctx: GatherContext) -> TicketsFact:
    """Ask for every key the change names (at most ``MAX_TICKET_KEYS``), each once."""
    from policyengine.facts import MAX_TICKET_KEYS
    from policyengine.rules.ticket import find_keys

    keys = find_keys(ctx.change, request)
    source = ctx.tickets
    answers = tuple(source.lookup(system, key, request) for system, key, _where in keys[:MAX_TICKET_KEYS])
    names = {f"tickets/{a.system}/{a.key}.json" for a in answers}
    records = tuple(sorted((n, b) for n, b in source.records.items() if n in names))
    return TicketsFact(answers=answers, records=records, skipped=tuple(k for _s, k, _w in keys[MAX_TICKET_KEYS:]))


def _pipeline(request: PipelineRequest, ctx: GatherContext) -> PipelineFact:
    """The guarded pipeline files, at the trusted base and at the deployed commit."""
    source = ctx.pipeline if ctx.pipeline is not None else LivePipeline()
    fact: PipelineFact = source.files(ctx.workspace, ctx.change, ctx.trusted_commit)
    return fact


def _provenance(request: ProvenanceRequest, ctx: GatherContext) -> ProvenanceFact:
    """Which job of this run produced each report matching the globs (the CI platform says)."""
    from policyengine.providers.provenance import NO_PLATFORM

    if ctx.provenance is None:
        return ProvenanceFact(error=NO_PLATFORM)
    matched: list[str] = []
    for pattern in request.globs:  # listed as _reports lists them; each file is hashed (again) by the source
        try:
            found, out = ctx.workspace.glob(pattern)
        except OSError as exc:
            return ProvenanceFact(error=f"cannot list {pattern}: {exc.strerror or exc}")
        if out:
            return ProvenanceFact(error="a report path leads outside the workspace")
        matched += [f for f in found if f not in matched]
    fact: ProvenanceFact = ctx.provenance.produced([ReportFact(rel, None) for rel in matched], ctx.workspace)
    return fact


def _subjects(request: SubjectsRequest, ctx: GatherContext) -> SubjectsFact:
    """The artifacts the deployer named; none given to this gathering at all is an error."""
    if ctx.subjects is None:
        return SubjectsFact(error="the artifacts the deploy ships were not given to the gate")
    return SubjectsFact(subjects=tuple(ctx.subjects))


GATHERERS: Mapping[type, Callable[[Any, GatherContext], Any]] = {
    SubjectsRequest: _subjects,
    ReportsRequest: _reports,
    DocumentRequest: _document,
    TicketRequest: _tickets,
    PipelineRequest: _pipeline,
    ProvenanceRequest: _provenance,
}
"""One gatherer per kind of fact request."""


def needed(policy: Policy, change: Mapping[str, Any]) -> list[FactRequest]:
    """The fact requests of the rules that apply to ``change``, each once, in policy order."""
    if not policy_applies(policy, change):
        return []
    wanted: list[FactRequest] = []
    for rule in build_rules(policy):
        if when_skip(rule.spec.when_paths, change)[0]:
            continue
        wanted += [r for r in rule.needs() if r not in wanted]
    return wanted


def trusted_commit(policy: Policy) -> str | None:
    """The commit the policy was read from, when it came from this repository's git (``git:``)."""
    source = policy.source or {}
    commit = source.get("commit")
    return commit if source.get("kind") == "git" and not source.get("url") and isinstance(commit, str) else None


def gather_facts(policy: Policy, change: dict[str, Any], workspace: Workspace, tickets: Any = None,
                 pipeline: Any = None, subjects: Sequence[tuple[str, str]] | None = None,
                 provenance: Any = None) -> Facts:
    """Gather every fact the applicable rules of ``policy`` need for ``change``.

    ``tickets``: where ticket answers come from (a ``TicketSource``); None never asks anyone,
    so a ticket rule then errors: only ``check`` passes ``LiveTickets``. ``pipeline``: where the
    pipeline files come from (None: ``LivePipeline`` without CI variables). ``subjects``: the
    artifacts the deployer named (``check``), or those the bundle's statement names (replay).
    ``provenance``: who says which job produced each test report (None: nobody is asked)."""
    ctx = GatherContext(workspace=workspace, change=change, tickets=tickets if tickets is not None else NO_TICKETS,
                        pipeline=pipeline, trusted_commit=trusted_commit(policy),
                        subjects=None if subjects is None else tuple(subjects), provenance=provenance)
    answers = {request: GATHERERS[type(request)](request, ctx) for request in needed(policy, change)}
    return Facts(change=change, answers=answers)


def ticket_records(facts: Facts) -> dict[str, bytes]:
    """The raw ticket records of ``facts``, by bundle member name under ``raw/``, and the record
    of the guarded pipeline files (``pipeline.json``): replay reads both, never asks again."""
    out: dict[str, bytes] = {}
    for fact in facts.answers.values():
        if isinstance(fact, TicketsFact):
            out.update(fact.records)
        elif isinstance(fact, PipelineFact) and fact.record and fact.source != "recorded":
            out[PIPELINE_MEMBER] = fact.record
        elif isinstance(fact, ProvenanceFact) and fact.record and fact.source == "live":
            from policyengine.providers.provenance import MEMBER

            out[MEMBER] = fact.record
            out.update(fact.raw)
    return out
