"""The facts of one evaluation: what gathering produced and the judge reads. Pure data.

A rule type says which facts it needs as *requests* (``ReportsRequest``, ``DocumentRequest``,
``TicketRequest``, which is answered over the network by the ticket systems). Gathering
(``policyengine.gather``) answers each request once, through the workspace or a provider, and
puts the answers in ``Facts``, keyed by the request. The judge then reads only ``Facts``: it
opens no file, calls no network and reads no clock, so a rule can be tested, replayed or
property-tested from values built in memory.

A fact that could not be gathered is still a value: it says why (``error``, ``problem``), and
the rule that needs it turns that into ``error`` or ``fail``; never into ``pass``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Union

from msgspec import Struct, field, structs

from policyengine.models import FileRead

# -- test reports -----------------------------------------------------------------------------


class Totals(Struct, frozen=True):
    """Test counts. ``tests == passed + failures + errors + skipped``; flaky tests are in ``passed`` too."""

    tests: int
    passed: int
    failures: int
    errors: int
    skipped: int
    flaky: int = 0

    def to_json(self) -> dict[str, int]:
        """Return the counts as a JSON object."""
        return {
            "tests": self.tests,
            "passed": self.passed,
            "failures": self.failures,
            "errors": self.errors,
            "skipped": self.skipped,
            "flaky": self.flaky,
        }

    def __add__(self, other: object) -> Totals:
        if not isinstance(other, Totals):
            return NotImplemented
        return Totals(
            self.tests + other.tests,
            self.passed + other.passed,
            self.failures + other.failures,
            self.errors + other.errors,
            self.skipped + other.skipped,
            self.flaky + other.flaky,
        )


class ReportSummary(Struct, frozen=True):
    """What one report shows: totals, a few names for messages, and notes on anything unusual."""

    totals: Totals
    suites: int
    failed_tests: tuple[str, ...]
    flaky_tests: tuple[str, ...]
    notes: tuple[str, ...]


class ReportFact(Struct, frozen=True):
    """One test report matched by a glob: what was read (its digest), and what it shows or why
    it could not be trusted. ``file`` is None when the file could not even be hashed."""

    path: str
    file: FileRead | None
    summary: ReportSummary | None = None
    error: str | None = None


class ReportsRequest(Struct, frozen=True):
    """The JUnit reports matching these workspace globs."""

    globs: tuple[str, ...]


class ReportsFact(Struct, frozen=True):
    """The answer to a ``ReportsRequest``: every matched report, in order; the matches that
    lead outside the workspace (never read); or why the globs could not be listed."""

    globs: tuple[str, ...]
    reports: tuple[ReportFact, ...] = ()
    outside: tuple[str, ...] = ()
    list_error: str | None = None


# -- documents (the rollback plan) ------------------------------------------------------------


_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_TAG = re.compile(r"</?[A-Za-z][^<>]*>")


def readable(content: str) -> str:
    """``content`` as a reader sees it: without HTML comments and HTML tags, stripped (a
    placeholder comment, or a bare ``</details>``, is no text)."""
    return _TAG.sub("", _COMMENT.sub("", content)).strip()


class Section(Struct, frozen=True):
    """One heading of a Markdown document and the text under it (up to the next heading of
    the same or a higher level)."""

    level: int
    title: str
    content: str
    recorded_has_text: bool | None = None
    """Replayed from ``facts.json``: whether the content held readable text when it was judged
    (the content itself is not kept there). None: computed from ``content``."""

    @property
    def has_text(self) -> bool:
        """Whether the section holds text a reader sees (``readable``)."""
        if self.recorded_has_text is not None:
            return self.recorded_has_text
        return bool(readable(self.content))


class DocumentRequest(Struct, frozen=True):
    """A Markdown document of the workspace, read whole (at most ``max_bytes``)."""

    path: str
    max_bytes: int


# Why a document could not be read: the first three are facts about the workspace (the rule
# fails), the last two mean it could not be read at all (the rule is in error).
DOCUMENT_PROBLEMS = ("outside", "missing", "not_file", "unreadable", "not_utf8")


class DocumentFact(Struct, frozen=True):
    """The answer to a ``DocumentRequest``: the file read (digest), its text and its sections;
    or ``problem`` (one of ``DOCUMENT_PROBLEMS``) with a message a person understands."""

    path: str
    file: FileRead | None = None
    text: str | None = None
    sections: tuple[Section, ...] = ()
    problem: str | None = None
    message: str | None = None
    recorded_length: int | None = None
    """Replayed from ``facts.json``: ``length`` as judged (the text itself is not kept there)."""

    @property
    def length(self) -> int | None:
        """The characters of the document without surrounding whitespace; None when it was not read."""
        if self.recorded_length is not None:
            return self.recorded_length
        return None if self.text is None else len(self.text.strip())


# -- tickets (Jira, ServiceNow) ----------------------------------------------------------------

TICKET_SOURCES = ("title", "branch", "description", "commits", "ticket")
"""Where ticket keys are looked for, in this order: the request's title, its source branch, its
description, the commit messages, and the change file's self-declared ``ticket.id`` (a key
found there is verified like any other; its ``status`` is never read)."""


class TicketRequest(Struct, frozen=True):
    """Verify the ticket keys the change names against the configured ticket systems.

    The keys are not part of the request: they depend on the change, and gathering finds them
    with the same pure function the rule judges with (``rules.ticket.find_keys``)."""

    jira_projects: tuple[str, ...] = ()
    jira_url: str | None = None
    jira_api_version: int = 2
    jira_approval_status: str | None = None
    """``jira.approval_status``: read the changelog (``expand=changelog``) for who moved the issue
    to this status, and when."""
    servicenow_pattern: str | None = None
    servicenow_url: str | None = None
    sources: tuple[str, ...] = TICKET_SOURCES


TICKET_OUTCOMES = ("found", "not_found", "denied", "unavailable", "invalid")
"""What asking the ticket system for one key gave: found (the fields below are its answer),
not_found (404, or an empty ServiceNow result), denied (401/403: a credential problem),
unavailable (an outage, a timeout, no credentials configured, no recorded answer) and
invalid (an answer that is not the documented shape). Only ``found`` can ever pass."""


class TicketAnswer(Struct, frozen=True):
    """The ticket system's answer for one key, as the judge reads it.

    Jira: ``status`` (``fields.status.name``), ``issue_type`` (``fields.issuetype.name``) and
    ``resolved_key`` (the key Jira answered with: an issue moved to another project answers
    with its new key). ServiceNow: ``state`` and ``approval`` (raw values) and ``start``/``end``
    (raw ``start_date``/``end_date``: UTC ``YYYY-MM-DD HH:MM:SS``)."""

    system: str
    key: str
    outcome: str
    message: str | None = None
    http_status: int | None = None
    status: str | None = None
    issue_type: str | None = None
    resolved_key: str | None = None
    state: str | None = None
    approval: str | None = None
    start: str | None = None
    end: str | None = None
    approved_by: str | None = None
    """Jira with ``approval_status``: the author of the last changelog transition to that status."""
    approved_at: str | None = None
    """... and its ``created`` time, as Jira wrote it."""
    approvals: str | None = None
    """ServiceNow: the change's approval records (``sysapproval_approver``): who, state, when."""
    origin: str = "live"
    """live (asked now), recorded (read from an evidence bundle) or supplied (a policy test case)."""


class TicketsFact(Struct, frozen=True):
    """The answer to a ``TicketRequest``: one answer per key found, and the raw (redacted)
    records kept in the evidence as ``raw/tickets/<system>/<key>.json``."""

    answers: tuple[TicketAnswer, ...] = ()
    records: tuple[tuple[str, bytes], ...] = ()
    skipped: tuple[str, ...] = ()
    """Keys beyond the most that are asked (``MAX_TICKET_KEYS``): never verified."""

    def answer(self, system: str, key: str) -> TicketAnswer | None:
        """The answer for ``key`` of ``system``, or None when it was not asked."""
        return next((a for a in self.answers if a.system == system and a.key == key), None)


MAX_TICKET_KEYS = 20
"""The most keys asked for one change; more are reported as not verified (never as passing)."""


# -- the pipeline files (the policy owners guard them) -----------------------------------------


class PipelineRequest(Struct, frozen=True):
    """The files that define the pipelines of the change's repository, beyond the fixed names:
    local actions, included GitLab files, the install lock (``policyengine.workspace.pipelines``)."""


class PipelineFact(Struct, frozen=True):
    """The answer to a ``PipelineRequest``: guard globs, read at the trusted base and at the
    deployed commit; or ``error`` when they cannot be computed (the rule is then an error).
    ``record`` is kept in the evidence (``raw/pipeline.json``) and read again on replay."""

    guard: tuple[str, ...] = ()
    error: str | None = None
    notes: tuple[str, ...] = ()
    source: str | None = None
    """git (read at commits), workspace (a change file's workspace) or recorded (a bundle's record)."""
    record: bytes = b""


# -- the artifacts the deploy ships (``evidence: {require_subject: true}``) -----------------------


class SubjectsRequest(Struct, frozen=True):
    """The artifacts the deploy ships, by digest (``--subject``, the action's ``subjects``,
    ``POLICYENGINE_SUBJECTS``): given to the gate by the deployer, named in the signed statement."""


class SubjectsFact(Struct, frozen=True):
    """The answer to a ``SubjectsRequest``: ``(name, sha256 hex)`` pairs; ``error`` when the
    caller gave none to the gatherer at all (not the same as an empty list: the rule errors)."""

    subjects: tuple[tuple[str, str], ...] = ()
    error: str | None = None


# -- which job of this run produced each test report (``tests_passed`` ``provenance: same_run``) ----


class ProvenanceRequest(Struct, frozen=True):
    """Ask the CI platform which job of this workflow run (GitHub) or pipeline (GitLab) produced
    each JUnit report matching these workspace globs."""

    globs: tuple[str, ...]


class ProvenanceFact(Struct, frozen=True):
    """The answer to a ``ProvenanceRequest``: for each report read (``path``, ``sha256``), the job
    that produced it (``producer``: ids and a URL) or None when no job of the run did; or ``error``
    when the platform could not say (an API failure, a partial answer, no platform at all).
    ``record`` is kept in the evidence (``raw/provenance.json``) and read again on replay;
    ``raw`` holds the platform's answers (``raw/github/...``, ``raw/gitlab/...``)."""

    platform: str | None = None
    run: str | None = None
    producers: tuple[tuple[str, str, Any], ...] = ()
    error: str | None = None
    record: bytes = b""
    raw: tuple[tuple[str, bytes], ...] = ()
    source: str | None = None
    """live (asked now) or recorded (read from an evidence bundle)."""
    run_from: str | None = None
    """Who names ``run``: ``id_token`` (the verified CI ID token's claims: the platform's word) or
    the variable it was read from, ``GITHUB_RUN_ID`` or ``CI_PIPELINE_ID`` (the job's environment:
    self-asserted; on GitLab an earlier job's ``dotenv`` report can set it). None in records
    written before it was kept."""

    def producer(self, path: str, sha256: str) -> dict[str, Any] | None:
        """The job that produced the report ``path`` with this digest, or None."""
        for p, digest, producer in self.producers:
            if p == path and digest == sha256 and isinstance(producer, dict):
                return producer
        return None


FactRequest = Union[ReportsRequest, DocumentRequest, TicketRequest, PipelineRequest, SubjectsRequest,
                    ProvenanceRequest]
"""Every kind of fact a rule may ask for. A new kind adds a request here and a gatherer in
``policyengine.gather.GATHERERS``."""


class Facts(Struct, frozen=True):
    """The facts of one evaluation: the change, and the answer to every request of the rules
    that apply."""

    change: dict[str, Any]
    answers: Mapping[Any, Any] = field(default_factory=dict)

    def get(self, request: FactRequest) -> Any:
        """The answer to ``request``, or None when it was not gathered."""
        return self.answers.get(request)

    def reports(self, request: ReportsRequest) -> ReportsFact | None:
        """The reports fact for ``request``, or None when it was not gathered."""
        fact = self.answers.get(request)
        return fact if isinstance(fact, ReportsFact) else None

    def document(self, request: DocumentRequest) -> DocumentFact | None:
        """The document fact for ``request``, or None when it was not gathered."""
        fact = self.answers.get(request)
        return fact if isinstance(fact, DocumentFact) else None

    def pipeline(self, request: PipelineRequest) -> PipelineFact | None:
        """The pipeline files fact for ``request``, or None when it was not gathered."""
        fact = self.answers.get(request)
        return fact if isinstance(fact, PipelineFact) else None

    def subjects(self, request: SubjectsRequest) -> SubjectsFact | None:
        """The subjects fact for ``request``, or None when it was not gathered."""
        fact = self.answers.get(request)
        return fact if isinstance(fact, SubjectsFact) else None

    def provenance(self, request: ProvenanceRequest) -> ProvenanceFact | None:
        """The provenance fact for ``request``, or None when it was not gathered."""
        fact = self.answers.get(request)
        return fact if isinstance(fact, ProvenanceFact) else None

    def tickets(self, request: TicketRequest) -> TicketsFact | None:
        """The tickets fact for ``request``, or None when it was not gathered."""
        fact = self.answers.get(request)
        return fact if isinstance(fact, TicketsFact) else None


# -- the facts as judged, kept in the evidence -------------------------------------------------
#
# A bundle stores the workspace files a rule read *redacted* (no token reaches the evidence),
# so the stored copy of a report or a plan is not always what was judged: ``Authorization:x``
# became ``Authorization:[REDACTED]``, two test names that differed only by a token became one,
# a plan lost the characters of its token. ``facts_to_json`` keeps, beside those copies, the
# facts the judge read, as it read them: for test reports the totals, the suite count, the
# failing and flaky test names and the notes (retries already paired on the real names); for a
# document its length and each section's level, title and whether it held text; for tickets
# the answers. Every string in it is redacted (names are for people; no verdict is derived from
# them again); the numbers and flags that decide are kept as computed. ``facts_from_json``
# reads them back for replay, which judges from them instead of re-reading the redacted copies.

FACTS_FORMAT = 1


def _file_json(file: FileRead | None, redact: Callable[[str], str]) -> dict[str, Any] | None:
    if file is None:
        return None
    return {"relpath": redact(file.relpath), "sha256": file.sha256, "size": file.size}


def fact_to_json(request: Any, fact: Any, redact: Callable[[str], str]) -> dict[str, Any] | None:
    """One answer as ``facts.json`` keeps it (every string through ``redact``); None for a kind it does not keep."""
    r = redact
    if isinstance(request, ReportsRequest) and isinstance(fact, ReportsFact):
        reports = []
        for rep in fact.reports:
            summary = None
            if rep.summary is not None:
                s = rep.summary
                summary = {"totals": s.totals.to_json(), "suites": s.suites,
                           "failed_tests": [r(n) for n in s.failed_tests], "flaky_tests": [r(n) for n in s.flaky_tests],
                           "notes": [r(n) for n in s.notes]}
            reports.append({"path": r(rep.path), "file": _file_json(rep.file, r),
                            "error": None if rep.error is None else r(rep.error), "summary": summary})
        return {"kind": "reports", "globs": [r(g) for g in request.globs], "reports": reports,
                "outside": [r(o) for o in fact.outside],
                "list_error": None if fact.list_error is None else r(fact.list_error)}
    if isinstance(request, DocumentRequest) and isinstance(fact, DocumentFact):
        return {"kind": "document", "path": r(request.path), "max_bytes": request.max_bytes,
                "file": _file_json(fact.file, r), "problem": fact.problem,
                "message": None if fact.message is None else r(fact.message), "length": fact.length,
                "sections": [{"level": sec.level, "title": r(sec.title), "has_text": sec.has_text}
                             for sec in fact.sections]}
    if isinstance(request, TicketRequest) and isinstance(fact, TicketsFact):
        def text(value: Any) -> Any:
            return r(value) if isinstance(value, str) else value

        return {"kind": "tickets",
                "request": {k: ([text(x) for x in v] if isinstance(v, tuple) else text(v))
                            for k, v in structs.asdict(request).items()},
                "answers": [{k: text(v) for k, v in structs.asdict(a).items()} for a in fact.answers],
                "skipped": [r(k) for k in fact.skipped]}
    return None


def facts_to_json(facts: Facts, redact: Callable[[str], str]) -> dict[str, Any]:
    """The facts of one evaluation as the bundle keeps them (``facts.json``), strings redacted."""
    kept = [doc for request, fact in facts.answers.items() if (doc := fact_to_json(request, fact, redact)) is not None]
    return {"format": FACTS_FORMAT, "facts": kept}


class RecordedFactsError(ValueError):
    """``facts.json`` is not the shape ``facts_to_json`` writes."""


def _want(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    # bool is an int in Python: a count or a level must be a real integer.
    if isinstance(value, bool) and kind in (int, (int, type(None))):
        raise RecordedFactsError(f"{where}: expected an integer, got {value!r}")
    if not isinstance(value, kind):
        raise RecordedFactsError(f"{where}: unexpected {type(value).__name__} {value!r:.60}")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    return tuple(_want(v, str, where) for v in _want(value, list, where))


def _optional_str(value: Any, where: str) -> str | None:
    return None if value is None else _want(value, str, where)


def _file_from(value: Any, where: str) -> FileRead | None:
    if value is None:
        return None
    _want(value, dict, where)
    size = _want(value.get("size"), int, where + ".size")
    if size < 0:
        raise RecordedFactsError(f"{where}.size: negative")
    return FileRead(relpath=_want(value.get("relpath"), str, where + ".relpath"), abspath="",
                    sha256=_want(value.get("sha256"), str, where + ".sha256"), size=size)


def _count(value: Any, where: str) -> int:
    n = _want(value, int, where)
    if n < 0:
        raise RecordedFactsError(f"{where}: negative")
    return int(n)


def _reports_from(doc: dict[str, Any], where: str) -> tuple[ReportsRequest, ReportsFact]:
    reports = []
    for i, rep in enumerate(_want(doc.get("reports"), list, where + ".reports")):
        at = f"{where}.reports[{i}]"
        _want(rep, dict, at)
        summary = None
        if rep.get("summary") is not None:
            s = _want(rep["summary"], dict, at + ".summary")
            t = _want(s.get("totals"), dict, at + ".summary.totals")
            totals = Totals(*(_count(t.get(k), f"{at}.summary.totals.{k}")
                              for k in ("tests", "passed", "failures", "errors", "skipped", "flaky")))
            summary = ReportSummary(totals, _count(s.get("suites"), at + ".summary.suites"),
                                    _strings(s.get("failed_tests"), at + ".summary.failed_tests"),
                                    _strings(s.get("flaky_tests"), at + ".summary.flaky_tests"),
                                    _strings(s.get("notes"), at + ".summary.notes"))
        file = _file_from(rep.get("file"), at + ".file")
        error = _optional_str(rep.get("error"), at + ".error")
        if summary is None and error is None:  # fail closed: nothing says what the report showed
            raise RecordedFactsError(f"{at}: neither a summary nor an error")
        if summary is not None and file is None:
            raise RecordedFactsError(f"{at}: a summary without the file it was read from")
        reports.append(ReportFact(_want(rep.get("path"), str, at + ".path"), file, summary, error))
    globs = _strings(doc.get("globs"), where + ".globs")
    fact = ReportsFact(globs, tuple(reports), _strings(doc.get("outside"), where + ".outside"),
                       _optional_str(doc.get("list_error"), where + ".list_error"))
    return ReportsRequest(globs), fact


def _document_from(doc: dict[str, Any], where: str) -> tuple[DocumentRequest, DocumentFact]:
    path = _want(doc.get("path"), str, where + ".path")
    request = DocumentRequest(path, _count(doc.get("max_bytes"), where + ".max_bytes"))
    problem = _optional_str(doc.get("problem"), where + ".problem")
    if problem is not None and problem not in DOCUMENT_PROBLEMS:
        raise RecordedFactsError(f"{where}.problem: unknown problem {problem!r}")
    sections = []
    for i, sec in enumerate(_want(doc.get("sections"), list, where + ".sections")):
        at = f"{where}.sections[{i}]"
        _want(sec, dict, at)
        sections.append(Section(_count(sec.get("level"), at + ".level"), _want(sec.get("title"), str, at + ".title"),
                                "", recorded_has_text=_want(sec.get("has_text"), bool, at + ".has_text")))
    length = doc.get("length")
    file = _file_from(doc.get("file"), where + ".file")
    if problem is None and (file is None or length is None):  # fail closed: a plan read must say what it held
        raise RecordedFactsError(f"{where}: a document read without its file or length")
    return request, DocumentFact(path, file, None, tuple(sections), problem,
                                 _optional_str(doc.get("message"), where + ".message"),
                                 recorded_length=None if length is None else _count(length, where + ".length"))


def _tickets_from(doc: dict[str, Any], where: str) -> tuple[TicketRequest, TicketsFact]:
    def tuples(d: dict[str, Any]) -> dict[str, Any]:
        return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}

    raw = _want(doc.get("request"), dict, where + ".request")
    names = set(TicketRequest.__struct_fields__)
    if set(raw) - names:
        raise RecordedFactsError(f"{where}.request: unknown keys {sorted(set(raw) - names)}")
    try:
        request = TicketRequest(**tuples(raw))
        answer_names = set(TicketAnswer.__struct_fields__)
        answers = []
        for i, a in enumerate(_want(doc.get("answers"), list, where + ".answers")):
            _want(a, dict, f"{where}.answers[{i}]")
            if set(a) - answer_names:
                raise RecordedFactsError(f"{where}.answers[{i}]: unknown keys {sorted(set(a) - answer_names)}")
            answer = TicketAnswer(**{**a, "origin": "recorded"})
            if answer.outcome not in TICKET_OUTCOMES:
                raise RecordedFactsError(f"{where}.answers[{i}].outcome: unknown outcome {answer.outcome!r}")
            answers.append(answer)
    except TypeError as exc:
        raise RecordedFactsError(f"{where}: {exc}") from None
    return request, TicketsFact(tuple(answers), (), _strings(doc.get("skipped", []), where + ".skipped"))


_READERS: Mapping[str, Callable[[dict[str, Any], str], tuple[Any, Any]]] = {
    "reports": _reports_from,
    "document": _document_from,
    "tickets": _tickets_from,
}


def facts_from_json(doc: Any) -> dict[Any, Any]:
    """Read ``facts.json`` back: request -> the fact as judged. Raises ``RecordedFactsError`` for
    anything but the shape ``facts_to_json`` writes (replay then refuses, never guesses)."""
    _want(doc, dict, "facts.json")
    if doc.get("format") != FACTS_FORMAT:
        raise RecordedFactsError(f"facts.json: format {doc.get('format')!r} is not {FACTS_FORMAT}")
    out: dict[Any, Any] = {}
    for i, entry in enumerate(_want(doc.get("facts"), list, "facts.json: facts")):
        where = f"facts[{i}]"
        _want(entry, dict, where)
        reader = _READERS.get(entry.get("kind"))  # type: ignore[arg-type]
        if reader is None:
            raise RecordedFactsError(f"{where}.kind: unknown kind {entry.get('kind')!r}")
        request, fact = reader(entry, where)
        if request in out:
            raise RecordedFactsError(f"{where}: the same request is recorded twice")
        out[request] = fact
    return out
