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

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from policyengine.models import FileRead

# -- test reports -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Totals:
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


@dataclass(frozen=True)
class ReportSummary:
    """What one report shows: totals, a few names for messages, and notes on anything unusual."""

    totals: Totals
    suites: int
    failed_tests: tuple[str, ...]
    flaky_tests: tuple[str, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class ReportFact:
    """One test report matched by a glob: what was read (its digest), and what it shows or why
    it could not be trusted. ``file`` is None when the file could not even be hashed."""

    path: str
    file: FileRead | None
    summary: ReportSummary | None = None
    error: str | None = None


@dataclass(frozen=True)
class ReportsRequest:
    """The JUnit reports matching these workspace globs."""

    globs: tuple[str, ...]


@dataclass(frozen=True)
class ReportsFact:
    """The answer to a ``ReportsRequest``: every matched report, in order; the matches that
    lead outside the workspace (never read); or why the globs could not be listed."""

    globs: tuple[str, ...]
    reports: tuple[ReportFact, ...] = ()
    outside: tuple[str, ...] = ()
    list_error: str | None = None


# -- documents (the rollback plan) ------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    """One heading of a Markdown document and the text under it (up to the next heading of
    the same or a higher level)."""

    level: int
    title: str
    content: str


@dataclass(frozen=True)
class DocumentRequest:
    """A Markdown document of the workspace, read whole (at most ``max_bytes``)."""

    path: str
    max_bytes: int


# Why a document could not be read: the first three are facts about the workspace (the rule
# fails), the last two mean it could not be read at all (the rule is in error).
DOCUMENT_PROBLEMS = ("outside", "missing", "not_file", "unreadable", "not_utf8")


@dataclass(frozen=True)
class DocumentFact:
    """The answer to a ``DocumentRequest``: the file read (digest), its text and its sections;
    or ``problem`` (one of ``DOCUMENT_PROBLEMS``) with a message a person understands."""

    path: str
    file: FileRead | None = None
    text: str | None = None
    sections: tuple[Section, ...] = ()
    problem: str | None = None
    message: str | None = None


# -- tickets (Jira, ServiceNow) ----------------------------------------------------------------

TICKET_SOURCES = ("title", "branch", "description", "commits", "ticket")
"""Where ticket keys are looked for, in this order: the request's title, its source branch, its
description, the commit messages, and the change file's self-declared ``ticket.id`` (a key
found there is verified like any other; its ``status`` is never read)."""


@dataclass(frozen=True)
class TicketRequest:
    """Verify the ticket keys the change names against the configured ticket systems.

    The keys are not part of the request: they depend on the change, and gathering finds them
    with the same pure function the rule judges with (``rules.ticket.find_keys``)."""

    jira_projects: tuple[str, ...] = ()
    jira_url: str | None = None
    jira_api_version: int = 2
    servicenow_pattern: str | None = None
    servicenow_url: str | None = None
    sources: tuple[str, ...] = TICKET_SOURCES


TICKET_OUTCOMES = ("found", "not_found", "denied", "unavailable", "invalid")
"""What asking the ticket system for one key gave: found (the fields below are its answer),
not_found (404, or an empty ServiceNow result), denied (401/403: a credential problem),
unavailable (an outage, a timeout, no credentials configured, no recorded answer) and
invalid (an answer that is not the documented shape). Only ``found`` can ever pass."""


@dataclass(frozen=True)
class TicketAnswer:
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
    origin: str = "live"
    """live (asked now), recorded (read from an evidence bundle) or supplied (a policy test case)."""


@dataclass(frozen=True)
class TicketsFact:
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


@dataclass(frozen=True)
class PipelineRequest:
    """The files that define the pipelines of the change's repository, beyond the fixed names:
    local actions, included GitLab files, the install lock (``policyengine.pipelines``)."""


@dataclass(frozen=True)
class PipelineFact:
    """The answer to a ``PipelineRequest``: guard globs, read at the trusted base and at the
    deployed commit; or ``error`` when they cannot be computed (the rule is then an error).
    ``record`` is kept in the evidence (``raw/pipeline.json``) and read again on replay."""

    guard: tuple[str, ...] = ()
    error: str | None = None
    notes: tuple[str, ...] = ()
    source: str | None = None
    """git (read at commits), workspace (a change file's workspace) or recorded (a bundle's record)."""
    record: bytes = b""


FactRequest = Union[ReportsRequest, DocumentRequest, TicketRequest, PipelineRequest]
"""Every kind of fact a rule may ask for. A new kind adds a request here and a gatherer in
``policyengine.gather.GATHERERS``."""


@dataclass(frozen=True)
class Facts:
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

    def tickets(self, request: TicketRequest) -> TicketsFact | None:
        """The tickets fact for ``request``, or None when it was not gathered."""
        fact = self.answers.get(request)
        return fact if isinstance(fact, TicketsFact) else None
