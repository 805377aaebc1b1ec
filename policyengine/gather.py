"""Gather the facts of one evaluation: exactly what the rules that apply say they need.

Each rule type lists its fact requests (``RuleType.needs``); each kind of request has one
gatherer here, in ``GATHERERS``, which reads it through the workspace (or, for kinds added
later, a provider, the network or git). Rules that do not apply (another environment, or no
changed file matches their ``when.paths``) are not asked, so nothing they would read is read.
This is the I/O half of an evaluation; the judge (``policyengine.engine``) is the pure half.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from policyengine.errors import ReportError, WorkspaceError
from policyengine.facts import (
    DocumentFact,
    DocumentRequest,
    FactRequest,
    Facts,
    ReportFact,
    ReportsFact,
    ReportsRequest,
)
from policyengine.models import FileRead
from policyengine.policy import Policy, build_rules, policy_applies, when_skip
from policyengine.workspace import Workspace


@dataclass(frozen=True)
class GatherContext:
    """Where gatherers read from."""

    workspace: Workspace


def _reports(request: ReportsRequest, ctx: GatherContext) -> ReportsFact:
    """Match the globs, then read each JUnit report once, hashing exactly the bytes parsed."""
    from policyengine.junit import read_junit

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
    from policyengine.markdown import sections

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


GATHERERS: Mapping[type, Callable[[Any, GatherContext], Any]] = {
    ReportsRequest: _reports,
    DocumentRequest: _document,
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


def gather_facts(policy: Policy, change: dict[str, Any], workspace: Workspace) -> Facts:
    """Gather every fact the applicable rules of ``policy`` need for ``change``."""
    ctx = GatherContext(workspace=workspace)
    answers = {request: GATHERERS[type(request)](request, ctx) for request in needed(policy, change)}
    return Facts(change=change, answers=answers)
