"""Read a JUnit XML test report into the totals the ``tests_passed`` rule judges.

The reader streams: it never builds an element tree and never keeps text (``system-out``,
stack traces, failure bodies). Memory stays flat whatever the report size, apart from the
retry bookkeeping described below (about 150 bytes per distinct test name in the suite being
read, freed when the suite closes: a single suite of 200,000 tests peaks near 25 MB).

Counting
    Counts come from the ``<testcase>`` elements, wherever they sit (root ``<testsuites>`` or a
    bare ``<testsuite>``, suites nested to any depth). Declared totals (``tests=``,
    ``failures=`` ...) are never used for counting; when the root's declared ``tests`` disagrees
    with the number of testcases a note says so. ``suites`` is the number of ``<testsuite>``
    elements, nested ones included.

One testcase, one outcome (direct children and attributes of the ``<testcase>``)
    - ``<error>`` or ``<rerunError>`` -> error; ``<failure>`` or ``<rerunFailure>`` -> failure.
      Several such children are still one test; error wins over failure. A rerun element with
      no final verdict next to it counts as failed: fail closed.
    - ``<skipped>`` -> skipped.
    - ``<flakyFailure>``/``<flakyError>`` alone (Surefire ``rerunFailingTestsCount``: the test
      passed on a rerun) -> passed and flaky.
    - Status attributes, used by some producers instead of child elements, are read too:
      ``status`` (ctest ``run``/``fail``/``notrun``/``disabled``; tst ``passed``/``failed``/
      ``errored``/``disabled``; googletest ``run``/``notrun``; behave ``passed``...) and
      googletest's ``result`` (``completed``/``skipped``/``suppressed``), case-insensitively.
      Pass values: run, ran, passed, pass, success, successful, succeeded, ok, completed,
      executed, true. Skip values: skipped, skip, disabled, notrun, not run, not_run, ignored,
      pending, suppressed, excluded, untested. Failure values: fail, failed, failure, false.
      Error values: error, errored, broken, crashed, timeout, aborted.
    - The worst signal wins: a failure child with ``status="disabled"`` is a failure, and
      ``status="fail"`` without a child is a failure too (fail closed).
    - An unrecognised status value with no result child is counted as an **error**, with a
      note naming the value (fail closed: we cannot tell whether the test passed).
    - swift ``--xunit-output`` writes a skipped test with no ``<skipped>`` element and no status
      attribute, so it reads as passed: nothing in the file says otherwise, and guessing from
      names would be worse. Only the skip is lost; failures are always visible.

Suite-level results
    An ``<error>`` or ``<failure>`` directly under a ``<testsuite>`` (or the root
    ``<testsuites>``), as when a class fails to load and no testcase runs, counts as one
    error test named after the suite, so the rule cannot pass a suite that never ran.

Repeated testcases (retries) and duplicated names
    Testcases of one suite element that share (classname, name) form a group, read in file
    order. A retry loop (pytest-rerunfailures, Gradle test-retry, jest ``retryTimes``) reruns a
    test after a failed attempt and stops at the first pass. So:

    - **Retried and passed**: one or more failed or errored attempts, then exactly one passing
      attempt, last (``F P``, ``F F P``, ``E F P``; a last attempt that itself passed on a
      Surefire rerun counts as a pass). It counts once, as passed, and is listed as flaky.
    - **Retried and never passed**: failed or errored attempts (and maybe skipped ones) and no
      pass (``F F``, ``F E``; TestNG's ``S F``). It counts once, as its worst attempt
      (error > failure).
    - **Anything else with a failure and at most one pass is a failure**: a failure or error
      after the pass (``P F``, ``F P F``, mikepenz ``flaky_success_first``: ``P F E``), or a
      skipped attempt before the pass (``F S P``: no retry loop skips and then passes). It
      counts once, as its worst attempt: whatever these testcases are, one of them did not
      pass after the last pass, and the gate must not call that passed.
    - **Two or more passes**: not a retry loop, each testcase counts on its own (jenkins
      ``junit-report-bad-duration.xml``: two passing ``DummyTest.testDummyMethod``, counted as 2
      tests, as Jenkins does; casperjs assertions and TestNG data-provider runs that share a
      name). A failure among them still counts as a failure (``F P P`` is 2 passed and 1
      failed: a retry followed by a rerun that cannot be told from two tests).
    - **No failure at all** (only passed and skipped attempts, xunit-viewer ``semi-colon.xml``):
      each testcase counts on its own.

    Testcases whose classnames differ are different tests (xunit-viewer
    ``duplicate_name_unique_classanme.xml``: an erroring ``CuentaTest`` and a passing
    ``TarjetaTest`` share a method name; the error stands), and so are testcases of different
    suite elements. Testcases without a ``name`` are never grouped. Every repeated group is
    named in ``notes`` with how it was read. The one case this cannot tell apart from a retry
    is two genuinely different tests with the same classname and name where the first fails
    and the second passes: it is counted passed and flaky, shows up in ``flaky_tests`` and
    ``notes``, and a policy can refuse flaky tests (``tests_passed`` ``allow_flaky: false``).
    Groups are remembered by a 128-bit fingerprint of (classname, name), not by the names
    themselves, to keep memory small.

Refusals (:class:`~policyengine.errors.ReportError`, never a pass)
    Empty or whitespace-only files, text that is not XML, XML that is not well-formed
    (truncated, unclosed CDATA, junk after the root; the message gives line and column), any
    DOCTYPE, entity or other markup declaration (billion laughs, XXE: refused as soon as the
    parser sees it, nothing is expanded or fetched), and a root element other than
    ``<testsuites>``/``<testsuite>`` (NUnit, xUnit.net, TRX, Robot Framework, anything else).
    A ``<testsuites>`` root holding nothing is a valid empty report: 0 tests, the rule decides.
"""

from __future__ import annotations

import os
import pyexpat
from collections.abc import Callable
from typing import Any, Final

from defusedxml.common import (
    DTDForbidden,
    EntitiesForbidden,
    ExternalReferenceForbidden,
)

from policyengine.errors import ReportError
from policyengine.facts import ReportSummary, Totals

__all__ = ["MAX_LISTED", "MAX_NOTES", "ReportSummary", "Totals", "read_junit"]

__all__ = ["ReportSummary", "Totals", "read_cases", "read_junit"]

MAX_LISTED: Final = 20  # names kept in failed_tests / flaky_tests
MAX_NOTES: Final = 20
_MAX_NAME: Final = 200  # characters kept of any one name
_MAX_TRACKED: Final = 1000  # names remembered per suite while its retries are unresolved
_CHUNK: Final = 1 << 18

_DTD_MESSAGE: Final = "DTDs and entity declarations are not allowed in test reports (possible XML bomb or XXE)"


# Outcome of one testcase; also the index into per-group attempt counts.
_PASS, _FLAKY, _FAIL, _ERROR, _SKIP = range(5)

# Result children of a testcase, as bits.
_B_FAIL, _B_ERROR, _B_SKIP, _B_FLAKY = 1, 2, 4, 8

# What a status/result attribute value says, ordered from best to worst so max() combines them.
_ST_NONE, _ST_PASS, _ST_SKIP, _ST_UNKNOWN, _ST_FAIL, _ST_ERROR = range(6)

_STATUS_VALUES: Final[dict[str, int]] = {
    **dict.fromkeys(
        ("run", "ran", "passed", "pass", "success", "successful", "succeeded", "ok", "completed", "executed", "true"),
        _ST_PASS,
    ),
    **dict.fromkeys(
        (
            "skipped", "skip", "disabled", "notrun", "not run", "not_run", "ignored", "pending",
            "suppressed", "excluded", "untested",
        ),
        _ST_SKIP,
    ),
    **dict.fromkeys(("fail", "failed", "failure", "false"), _ST_FAIL),
    **dict.fromkeys(("error", "errored", "broken", "crashed", "timeout", "aborted"), _ST_ERROR),
}

# Element kinds, by local name.
_K_CASE, _K_SUITE, _K_SUITES = 1, 2, 3
_KINDS: Final[dict[str, int]] = {"testcase": _K_CASE, "testsuite": _K_SUITE, "testsuites": _K_SUITES}
_CASE_CHILDREN: Final[dict[str, int]] = {
    "failure": _B_FAIL,
    "rerunFailure": _B_FAIL,
    "error": _B_ERROR,
    "rerunError": _B_ERROR,
    "skipped": _B_SKIP,
    "flakyFailure": _B_FLAKY,
    "flakyError": _B_FLAKY,
}

_FOREIGN_ROOTS: Final[dict[str, str]] = {
    "test-run": "NUnit 3",
    "test-results": "NUnit 2",
    "assemblies": "xUnit.net",
    "assembly": "xUnit.net",
    "TestRun": "Visual Studio TRX",
    "robot": "Robot Framework",
    "testng-results": "TestNG",
    "testExecutions": "SonarQube generic test execution",
    "checkstyle": "Checkstyle",
    "coverage": "a coverage report",
}

_MASK64: Final = (1 << 64) - 1


def _short(text: str, limit: int = _MAX_NAME) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


# A repeated group's record: attempt counts indexed by outcome, then the outcome of the last attempt.
_LAST: Final = 5


def _retry_passed(c: list[int]) -> bool:
    """Whether a group's attempts are a retry loop that passed: failures or errors, then one pass, last.

    With exactly one passing attempt and that attempt last, every earlier attempt failed,
    errored or was skipped; a skipped one breaks the loop (fail closed).
    """
    return (
        c[_PASS] + c[_FLAKY] == 1
        and c[_LAST] in (_PASS, _FLAKY)
        and c[_FAIL] + c[_ERROR] > 0
        and c[_SKIP] == 0
    )


def _group_totals(c: list[int]) -> tuple[int, int, int, int, int, int]:
    """(tests, passed, failures, errors, skipped, flaky) of one group of same-named testcases."""
    passes = c[_PASS] + c[_FLAKY]
    if (c[_FAIL] or c[_ERROR]) and passes <= 1:
        # Attempts of one test. It passed only when the one pass ended a run of failures.
        if _retry_passed(c):
            return 1, 1, 0, 0, 0, 1
        return (1, 0, 0, 1, 0, 0) if c[_ERROR] else (1, 0, 1, 0, 0, 0)
    return passes + c[_FAIL] + c[_ERROR] + c[_SKIP], passes, c[_FAIL], c[_ERROR], c[_SKIP], c[_FLAKY]


def _outcome(bits: int, status: int) -> int:
    """Outcome of one testcase from its result children and status attributes: the worst signal wins."""
    if bits & _B_ERROR or status == _ST_ERROR:
        return _ERROR
    if bits & _B_FAIL or status == _ST_FAIL:
        return _FAIL
    if bits & _B_SKIP or status == _ST_SKIP:
        return _SKIP
    if status == _ST_UNKNOWN:
        return _ERROR  # fail closed: a verdict we cannot read is not a pass
    if bits & _B_FLAKY:
        return _FLAKY
    return _PASS


# _OUTCOMES[bits][status], precomputed: one lookup per testcase.
_OUTCOMES: Final = tuple(tuple(_outcome(bits, status) for status in range(6)) for bits in range(16))


class _Scope:
    """A ``<testsuite>`` (or the ``<testsuites>`` root): the unit within which retries are grouped."""

    __slots__ = ("child_declared", "declared", "groups", "is_suite", "level_error", "name", "parent", "tracked")

    def __init__(self, name: str | None, parent: _Scope | None, is_suite: bool, declared: int | None) -> None:
        self.name = name
        self.parent = parent
        self.is_suite = is_suite
        self.declared = declared
        # Sum of the declared tests= of direct child suites; None once one of them has none.
        self.child_declared: int | None = 0
        self.level_error = False
        # fingerprint -> outcome of its only testcase so far, or, once it repeats, attempt counts by
        # outcome followed by the last attempt's outcome (see _LAST)
        self.groups: dict[int, int | list[int]] = {}
        # fingerprint -> display name, for groups that may end up failed, flaky or repeated
        self.tracked: dict[int, str] = {}

    def label(self) -> str:
        if self.name:
            return _short(self.name)
        return "(unnamed testsuite)" if self.is_suite else "(testsuites root)"


def _display(classname: str | None, name: str | None, scope: _Scope) -> str:
    if name:
        return _short(f"{classname}.{name}" if classname else name)
    return _short(f"(unnamed testcase in {scope.label()})")


_OTHER: Final = object()  # stack marker for elements that do not matter


def _declared_int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def _local(tag: str) -> str:
    return tag.rpartition(":")[2]


class _Reader:
    """Expat handlers that count testcases as they stream past."""

    def __init__(self) -> None:
        self.parser: Any = None
        self.stack: list[Any] = []
        self.scope: _Scope | None = None
        self.root_declared: int | None = None
        self.root_scope: _Scope | None = None
        self.suites = 0
        self.testcases = 0
        # testcases counted on their own: outcome -> count
        self.single = [0, 0, 0, 0, 0]
        # contribution of repeated groups: tests, passed, failures, errors, skipped, flaky
        self.grouped = [0, 0, 0, 0, 0, 0]
        self.suite_errors = 0
        self.failed: list[str] = []
        self.flaky: list[str] = []
        self.notes: list[str] = []
        self.root_notes: list[str] = []  # about the whole file; listed first
        self.notes_dropped = 0
        self.unknown_status: dict[str, int] = {}

    # -- notes and names -------------------------------------------------------------------

    def note(self, text: str) -> None:
        if len(self.notes) < MAX_NOTES:
            self.notes.append(text)
        else:
            self.notes_dropped += 1

    def list_failed(self, name: str) -> None:
        if len(self.failed) < MAX_LISTED:
            self.failed.append(name)

    def list_flaky(self, name: str) -> None:
        if len(self.flaky) < MAX_LISTED:
            self.flaky.append(name)

    # -- expat callbacks -------------------------------------------------------------------
    # A testcase on the stack is a list [result bits, status code, classname, name]; a suite is
    # a _Scope; anything else is _OTHER. Lists keep the per-testcase cost low.

    def start_root(self, tag: str, attrs: dict[str, str]) -> None:
        kind = _KINDS.get(_local(tag))
        if kind != _K_SUITE and kind != _K_SUITES:
            shown = _short(tag, 60)
            what = _FOREIGN_ROOTS.get(_local(tag))
            if what:
                raise ReportError(
                    f"not a JUnit report: root element <{shown}> looks like {what} output; convert it to JUnit XML"
                )
            raise ReportError(f"not a JUnit report: root element is <{shown}>, expected <testsuites> or <testsuite>")
        self.root_declared = _declared_int(attrs.get("tests"))
        self._open_scope(kind, attrs)
        self.root_scope = self.scope
        self.parser.StartElementHandler = self.start  # the root is checked once; later elements skip it

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        kind = _KINDS.get(tag)
        if kind is None and ":" in tag:
            kind = _KINDS.get(_local(tag))
        if kind == _K_CASE:
            self.testcases += 1
            status = attrs.get("status")
            result = attrs.get("result")
            code = max(self._status(status), self._status(result)) if status or result else _ST_NONE
            self.stack.append([0, code, attrs.get("classname"), attrs.get("name")])
            return
        if kind is not None:
            self._open_scope(kind, attrs)
            return
        stack = self.stack
        parent = stack[-1]
        if type(parent) is list:
            bit = _CASE_CHILDREN.get(tag)
            if bit is None and ":" in tag:
                bit = _CASE_CHILDREN.get(_local(tag))
            if bit:
                parent[0] |= bit
        elif type(parent) is _Scope:
            local = _local(tag)
            if local == "error" or local == "failure":
                parent.level_error = True
        stack.append(_OTHER)

    def end(self, tag: str) -> None:
        frame = self.stack.pop()
        if frame is _OTHER:
            return
        if type(frame) is not list:
            self._end_scope(frame)
            return
        outcome = _OUTCOMES[frame[0]][frame[1]]
        name = frame[3]
        scope = self.scope
        assert scope is not None
        if not name:
            # Nothing to group by: it counts on its own.
            self.single[outcome] += 1
            if _PASS < outcome < _SKIP:
                self._track_single(outcome, _display(frame[2], name, scope))
            return
        classname = frame[2] or ""
        key = (hash((classname, name)) & _MASK64) | (hash(f"{classname}\x00{name}") << 64)
        groups = scope.groups
        previous = groups.get(key)
        if previous is None:
            groups[key] = outcome
            self.single[outcome] += 1
            if _PASS < outcome < _SKIP and len(scope.tracked) < _MAX_TRACKED:
                scope.tracked[key] = _display(classname, name, scope)
            return
        self._repeat(scope, key, previous, outcome, _display(classname, name, scope))

    # -- helpers -----------------------------------------------------------------------------

    def _track_single(self, outcome: int, display: str) -> None:
        if outcome == _FLAKY:
            self.list_flaky(display)
        else:
            self.list_failed(display)

    def _repeat(self, scope: _Scope, key: int, previous: int | list[int], outcome: int, display: str) -> None:
        """Fold another testcase with the same (classname, name) into its group."""
        grouped = self.grouped
        if isinstance(previous, int):
            counts = [0, 0, 0, 0, 0, previous]
            counts[previous] = 1
            self.single[previous] -= 1
            scope.groups[key] = counts
        else:
            counts = previous
            for i, value in enumerate(_group_totals(counts)):
                grouped[i] -= value
        counts[outcome] += 1
        counts[_LAST] = outcome
        for i, value in enumerate(_group_totals(counts)):
            grouped[i] += value
        if key not in scope.tracked and len(scope.tracked) < _MAX_TRACKED:
            scope.tracked[key] = display

    def _status(self, value: str | None) -> int:
        if not value:
            return _ST_NONE
        code = _STATUS_VALUES.get(value)
        if code is None:
            code = _STATUS_VALUES.get(value.strip().lower(), _ST_UNKNOWN)
            if code == _ST_UNKNOWN:
                key = _short(value, 40)
                if key in self.unknown_status or len(self.unknown_status) < 10:
                    self.unknown_status[key] = self.unknown_status.get(key, 0) + 1
        return code

    def _open_scope(self, kind: int, attrs: dict[str, str]) -> None:
        parent = self.scope
        is_suite = kind == _K_SUITE
        declared = _declared_int(attrs.get("tests"))
        if is_suite:
            self.suites += 1
            if parent is not None and parent is self.root_scope and parent.child_declared is not None:
                parent.child_declared = None if declared is None else parent.child_declared + declared
        scope = _Scope(attrs.get("name"), parent, is_suite, declared)
        self.scope = scope
        self.stack.append(scope)

    def _end_scope(self, scope: _Scope) -> None:
        if scope.level_error:
            self.suite_errors += 1
            self.list_failed(scope.label())
            self.note(f"{scope.label()} reports an error outside any testcase; counted as 1 errored test")
        groups = scope.groups
        for key, display in scope.tracked.items():
            value = groups[key]
            if isinstance(value, int):
                if value in (_FAIL, _ERROR):
                    self.list_failed(display)
                elif value == _FLAKY:
                    self.list_flaky(display)
                continue
            tests, _passed, failures, errors, _skipped, flaky = _group_totals(value)
            if failures or errors:
                self.list_failed(display)
            if flaky:
                self.list_flaky(display)
            runs = sum(value[:_LAST])
            where = f"{display} appears {runs} times in {scope.label()}"
            worst = "errored" if errors else "failed"
            if tests == 1 and (flaky or not value[_PASS] + value[_FLAKY]):
                verdict = "passed on retry (flaky)" if flaky else f"{worst} every attempt"
                self.note(f"{where}: read as retries of one test, which {verdict}")
            elif tests == 1:
                # A pass among the attempts, but not a retry that passed: say why it is a failure.
                if value[_LAST] not in (_PASS, _FLAKY):
                    why = "its last attempt did not pass"
                else:
                    why = "an attempt was skipped, so this is not a retry that passed"
                self.note(f"{where}: read as attempts of one test, which {worst}: {why}")
            else:
                self.note(f"{where}: counted as {runs} tests (not a retry pattern)")
        self.scope = scope.parent
        if scope is self.root_scope:
            self._finish_root(scope)

    def _finish_root(self, root: _Scope) -> None:
        declared = root.declared
        if declared is None and not root.is_suite and root.child_declared and self.suites:
            declared = root.child_declared
        if declared is not None and declared != self.testcases:
            self.root_notes.append(f"declared tests={declared} but the file holds {self.testcases} testcases")
        if self.unknown_status:
            values = ", ".join(repr(v) for v in self.unknown_status)
            count = sum(self.unknown_status.values())
            self.root_notes.append(
                f"{count} testcase{'s' if count != 1 else ''} with an unrecognised status ({values}) "
                "counted as errored unless a result element said otherwise (fail closed)"
            )

    # -- result ----------------------------------------------------------------------------------

    def summary(self) -> ReportSummary:
        p, k, f, e, s = self.single
        g = self.grouped
        errors = e + g[3] + self.suite_errors
        totals = Totals(
            tests=p + k + f + e + s + g[0] + self.suite_errors,
            passed=p + k + g[1],
            failures=f + g[2],
            errors=errors,
            skipped=s + g[4],
            flaky=k + g[5],
        )
        notes = self.root_notes + self.notes
        dropped = self.notes_dropped + max(0, len(notes) - MAX_NOTES)
        del notes[MAX_NOTES:]
        if dropped:
            notes.append(f"{dropped} more notes not shown")
        return ReportSummary(totals, self.suites, tuple(self.failed), tuple(self.flaky), tuple(notes))


# -- defusedxml's expat hardening: refuse DTDs, entity declarations and external references --------


def _forbid_doctype(name: str | None, sysid: str | None, pubid: str | None, has_internal_subset: int) -> None:
    raise DTDForbidden(name or "", sysid or "", pubid or "")


def _forbid_entity(
    name: str | None,
    is_parameter_entity: int,
    value: str | None,
    base: str | None,
    sysid: str | None,
    pubid: str | None,
    notation_name: str | None,
) -> None:
    raise EntitiesForbidden(name or "", value or "", base or "", sysid or "", pubid or "", notation_name or "")


def _forbid_unparsed_entity(
    name: str | None, base: str | None, sysid: str | None, pubid: str | None, notation_name: str | None
) -> None:
    raise EntitiesForbidden(name or "", "", base or "", sysid or "", pubid or "", notation_name or "")


def _forbid_external(context: str | None, base: str | None, sysid: str | None, pubid: str | None) -> int:
    raise ExternalReferenceForbidden(context or "", base or "", sysid or "", pubid or "")


def _new_parser(reader: _Reader) -> Any:
    # No namespace processing: tags arrive as written ("testsuite", "TestRun", "x:testcase").
    parser = pyexpat.ParserCreate()
    parser.StartDoctypeDeclHandler = _forbid_doctype
    parser.EntityDeclHandler = _forbid_entity
    parser.UnparsedEntityDeclHandler = _forbid_unparsed_entity
    parser.ExternalEntityRefHandler = _forbid_external
    parser.SetParamEntityParsing(pyexpat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartElementHandler = reader.start_root
    parser.EndElementHandler = reader.end
    # No character-data or default handler: text (system-out, stack traces) is never materialised.
    parser.buffer_text = False
    parser.ordered_attributes = False
    reader.parser = parser
    return parser


_WHITESPACE: Final = b" \t\r\n"
_DECLARATIONS: Final = (b"<!DOCTYPE", b"<!ENTITY", b"<!ELEMENT", b"<!ATTLIST", b"<!NOTATION")


def _check_start(head: bytes) -> None:
    """Refuse plain text and bare DTD fragments before expat gives them a vaguer message."""
    if not head.startswith(b"<"):
        preview = head[:40].decode("utf-8", "replace").splitlines()[0] if head else ""
        raise ReportError(f"not XML: the report starts with {preview!r}; expected a JUnit XML document")
    if head.startswith(_DECLARATIONS):
        raise ReportError(_DTD_MESSAGE)


def read_junit(path: str | os.PathLike[str], sink: Callable[[bytes], None] | None = None) -> ReportSummary:
    """Read one JUnit XML report; raise :class:`ReportError` when it cannot be trusted as one.

    ``sink`` receives every byte read, in order (e.g. a digest's ``update``), so a caller can
    hash exactly the bytes that were parsed without reading the file twice.
    """
    reader = _Reader()
    parser = _new_parser(reader)
    size = 0
    started = False  # a non-whitespace byte was seen and checked
    try:
        with open(path, "rb") as fh:
            while True:
                chunk = fh.read(_CHUNK)
                if not chunk:
                    break
                if not started:
                    head = chunk
                    if size == 0:
                        if head.startswith((b"\xff\xfe", b"\xfe\xff")):
                            started = True  # UTF-16 with a BOM: expat decodes and judges it
                        head = head.removeprefix(b"\xef\xbb\xbf")
                    if not started:
                        head = head.lstrip(_WHITESPACE)
                        if head:
                            _check_start(head)
                            started = True
                size += len(chunk)
                if sink is not None:
                    sink(chunk)
                parser.Parse(chunk, False)
            if not started:
                raise ReportError(
                    "the report is empty (0 bytes)" if size == 0 else "the report is empty (only whitespace)"
                )
            parser.Parse(b"", True)
    except pyexpat.ExpatError as exc:
        reason = pyexpat.ErrorString(exc.code) if exc.code is not None else str(exc)
        raise ReportError(
            f"not well-formed XML at line {exc.lineno}, column {exc.offset + 1} ({reason}): "
            "the report is truncated or corrupt"
        ) from None
    except (DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden):
        raise ReportError(_DTD_MESSAGE) from None
    except OSError as exc:
        raise ReportError(f"cannot read the report: {exc.strerror or exc}") from None
    return reader.summary()


# -- the test cases of a report, as GitLab's pipeline test report lists them ------------------------


class _CaseReader:
    """Expat handlers that list each testcase's (classname, name, status), with GitLab's statuses.

    GitLab's JUnit parser gives a testcase ``failed`` when it has a ``<failure>`` child, else
    ``error`` for ``<error>``, else ``skipped`` for ``<skipped>``, else ``success``; it reads no
    status attribute and no rerun element. This reader does the same, so that a report can be
    compared with the pipeline's test report (``tests_passed`` ``provenance: same_run``)."""

    def __init__(self, limit: int) -> None:
        self.parser: Any = None
        self.limit = limit
        self.cases: set[tuple[str, str, str]] = set()
        self.stack: list[Any] = []

    def start_root(self, tag: str, attrs: dict[str, str]) -> None:
        if _local(tag) not in ("testsuites", "testsuite"):
            raise ReportError(f"not a JUnit report: root element is <{_short(tag, 60)}>")
        self.parser.StartElementHandler = self.start
        self.stack.append(_OTHER)

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        local = _local(tag)
        if local == "testcase":
            self.stack.append([set(), attrs.get("classname") or "", attrs.get("name") or ""])
            return
        parent = self.stack[-1] if self.stack else None
        if type(parent) is list:
            parent[0].add(local)
        self.stack.append(_OTHER)

    def end(self, tag: str) -> None:
        frame = self.stack.pop()
        if type(frame) is not list:
            return
        children = frame[0]
        status = ("failed" if "failure" in children else "error" if "error" in children
                  else "skipped" if "skipped" in children else "success")
        self.cases.add((frame[1], frame[2], status))
        if len(self.cases) > self.limit:
            raise ReportError(f"more than {self.limit} distinct test cases: too many to compare with the platform's")


def read_cases(path: str | os.PathLike[str], sink: Callable[[bytes], None] | None = None, *,
               limit: int = 100_000) -> frozenset[tuple[str, str, str]]:
    """The distinct (classname, name, status) of the report's testcases, GitLab's way (see
    ``_CaseReader``); refused as ``read_junit`` refuses. ``sink`` receives every byte read."""
    reader = _CaseReader(limit)
    parser = _new_parser(reader)  # type: ignore[arg-type]  # the same hardening: no DTD, no entity
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                if sink is not None:
                    sink(chunk)
                parser.Parse(chunk, False)
            parser.Parse(b"", True)
    except pyexpat.ExpatError as exc:
        raise ReportError(f"not well-formed XML at line {exc.lineno}") from None
    except (DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden):
        raise ReportError(_DTD_MESSAGE) from None
    except OSError as exc:
        raise ReportError(f"cannot read the report: {exc.strerror or exc}") from None
    return frozenset(reader.cases)
