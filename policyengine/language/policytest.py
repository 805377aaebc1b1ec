"""``policy test``: run a policy against sample changes and compare with expected outcomes.

A suite is a folder of cases, one folder each (``DIR/<case>/case.yml``), or a single case
folder. A case holds:

```yaml
description: Friday night deploys are refused        # optional
policy: ../../policies/soc2-production.yml            # optional; --policy overrides; relative to case.yml
now: 2026-11-27T22:00:00-05:00                        # required, with a zone
change: change.yml                                    # a file beside case.yml, or the change inline
expect:
  decision: deny                                      # allow | deny
  rules:                                              # optional: only the rules listed are compared
    deploy-window: fail                               # pass | fail | error | warn | skipped | waived
    emergency: pass                                   # the rule the gate adds when an emergency is asked for
```

and optionally a ``workspace/`` folder beside ``case.yml`` with the files the rules read
(test reports, the rollback plan), or ``workspace: PATH`` naming one relative to ``case.yml``
(cases can share one); without either the workspace is empty. Each case is judged
with the gate's judge (``gate.judge``): nothing is recorded and nothing touches the network.

A policy with a ``ticket`` rule reads the ticket systems' answers from the case, never from
the systems themselves; a key the case does not answer makes the rule ``error``:

```yaml
tickets:
  PAY-101: {status: Done, type: Story}                 # Jira: fields.status.name, fields.issuetype.name
  PAY-102: not_found                                   # Jira or ServiceNow: 404 / empty result
  OPS-7: {http_status: 401}                            # any HTTP failure (401, 403, 500...)
  CHG0030001: {approval: approved, state: "-2", start_date: "2026-11-24 14:00:00",
               end_date: "2026-11-24 18:00:00"}        # ServiceNow raw values (UTC)
  PAY-103: {http_status: 200, body: {fields: {status: {name: Done}}}}   # a whole raw answer
```
A case that is invalid (unknown key, bad time, invalid change) is an error (exit 2); a case
whose outcome differs from what it expects is a failure (exit 1).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from msgspec import Struct, field

from policyengine.language import loader
from policyengine.errors import InvalidInputError, Problem, UsageError
from policyengine.models import Decision, parse_instant
from policyengine.language.policy import Policy
from policyengine.language.policysource import load as load_policy

CASE_FILE = "case.yml"
STATUSES = ["pass", "fail", "error", "warn", "skipped", "waived"]
DECISIONS = ["allow", "deny"]

CASE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["now", "change", "expect"],
    "properties": {
        "description": {"type": "string"},
        "policy": {"type": "string", "minLength": 1},
        "now": {"type": "string", "minLength": 1},
        "change": {"type": ["string", "object"]},
        "workspace": {"type": "string", "minLength": 1},
        "tickets": {
            "type": "object",
            "description": "The ticket systems' answers, by key: policy tests never ask them.",
            "propertyNames": {"pattern": "^[A-Za-z0-9_-]{1,64}$", "title": "a ticket key (letters, digits, _ and -)"},
            "additionalProperties": {
                "if": {"type": "string"},
                "then": {"const": "not_found"},
                "else": {
                        "type": "object",
                        "additionalProperties": False,
                        "minProperties": 1,
                        "properties": {
                            "status": {"type": "string"},
                            "type": {"type": "string"},
                            "issue_type": {"type": "string"},
                            "approval": {"type": "string"},
                            "state": {"type": ["string", "integer"]},
                            "start_date": {"type": "string"},
                            "end_date": {"type": "string"},
                            "http_status": {"type": "integer", "minimum": 100, "maximum": 599},
                            "body": {},
                        },
                },
            },
        },
        "expect": {
            "type": "object",
            "additionalProperties": False,
            "required": ["decision"],
            "properties": {
                "decision": {"enum": DECISIONS},
                "rules": {"type": "object", "additionalProperties": {"enum": STATUSES}},
            },
        },
    },
}


class CaseResult(Struct, frozen=True):
    """One case: its name, and every difference between what it expects and what happened."""

    name: str
    description: str | None
    differences: tuple[str, ...] = ()
    decision: str | None = None

    @property
    def ok(self) -> bool:
        return not self.differences


class SuiteResult(Struct):
    """Every case of a suite, in name order."""

    root: str
    cases: list[CaseResult] = field(default_factory=list)

    @property
    def failed(self) -> list[CaseResult]:
        return [c for c in self.cases if not c.ok]


def find_cases(root: Path) -> list[Path]:
    """The case folders under ``root`` (``root`` itself when it is one), sorted by name."""
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder of policy test cases",
                         hint=f"each case is a folder holding {CASE_FILE}; see `policyengine policy test --help`")
    if (root / CASE_FILE).is_file():
        return [root]
    cases = sorted(p.parent for p in root.glob(f"*/{CASE_FILE}"))
    if not cases:
        raise UsageError(f"no test cases in {root}: expected {root}/<case>/{CASE_FILE}")
    return cases


def _sub_positions(positions: loader.Positions, key: str) -> loader.Positions:
    return loader.Positions({p[1:]: pos for p, pos in positions.items() if p[:1] == (key,)})


def _load_case(folder: Path, policy_override: Policy | None,
               cache: dict[str, Any] | None = None) -> tuple[dict[str, Any], Policy, dict[str, Any]]:
    """Read and validate one case: its document, its policy and its change. Raises InvalidInputError
    listing every problem of the case (and of its policy and change files), not only the first."""
    path = folder / CASE_FILE
    file = str(path)
    raw = loader.read_user_file(path, what="test case")
    data, positions, problems = loader.parse_document(raw, file=file, what="test case")
    if problems or not isinstance(data, dict):
        raise InvalidInputError(problems or [Problem(file, None, None, "", "expected a mapping")], what="test case")
    problems = loader.validate(data, positions, CASE_SCHEMA, file=file)
    flagged = {p.path.split(".", 1)[0].split("[", 1)[0] for p in problems}

    def problem(where: tuple[str, ...], message: str) -> Problem:
        line, column = positions.locate(where)
        return Problem(file, line, column, loader.format_path(where), message)

    if "now" in data and "now" not in flagged:
        try:
            parse_instant(str(data["now"]), option=f"{file}: now")
        except UsageError as exc:
            problems.append(problem(("now",), exc.message.split(": ", 2)[-1]))
    policy: Policy | None = None
    if policy_override is not None:
        policy = policy_override
    elif "policy" in data and "policy" not in flagged:
        key = str((folder / str(data["policy"])).resolve())
        cached = (cache or {}).get(key)
        if isinstance(cached, Policy):
            policy = cached
        elif isinstance(cached, str):  # the policy's own problems were listed with the first case naming it
            problems.append(problem(("policy",), cached))
        else:
            try:
                policy = load_policy(str(folder / str(data["policy"])))
            except InvalidInputError as exc:
                problems += exc.problems
                cached = f"{data['policy']} is not a valid policy (its problems are listed above)"
            except UsageError as exc:
                problems.append(problem(("policy",), exc.message))
                cached = exc.message
            if cache is not None:
                cache[key] = policy if policy is not None else cached
    elif "policy" not in data:
        problems.append(problem((), "no policy: write `policy: PATH` in the case, or give --policy"))
    change: Any = None
    change_value = data.get("change")
    if "change" not in flagged and isinstance(change_value, str):
        from policyengine.change import load_change

        try:
            change = load_change(folder / change_value)
        except InvalidInputError as exc:
            problems += exc.problems
        except UsageError as exc:
            problems.append(problem(("change",), exc.message))
    elif "change" not in flagged and change_value is not None:
        change = change_value
        sub = _sub_positions(positions, "change")
        change_problems = loader.validate(change, sub, loader.load_schema("change.schema.json"), file=file)
        problems += [p._replace(path="change" + ("." + p.path if p.path and not p.path.startswith("[") else p.path))
                     for p in change_problems]
    if "workspace" in data and "workspace" not in flagged and not (folder / str(data["workspace"])).is_dir():
        problems.append(problem(("workspace",), f"{data['workspace']} is not a folder (relative to {CASE_FILE})"))
    expect = data.get("expect")
    if policy is not None and isinstance(expect, dict) and isinstance(expect.get("rules"), dict):
        known = {r.id for r in policy.rules} | ({"emergency"} if policy.emergency is not None else set())
        problems += [problem(("expect", "rules", rid), f"no rule {rid!r} in policy {policy.name} "
                             f"(its rules: {', '.join(sorted(known))})")
                     for rid in expect["rules"] if rid not in known]
    if problems:
        raise InvalidInputError(problems, what="test case")
    assert policy is not None  # noqa: S101 - no problem listed means the policy loaded
    return data, policy, change


def _compare(data: dict[str, Any], decision: Decision) -> list[str]:
    expect = data["expect"]
    out: list[str] = []
    if decision.decision != expect["decision"]:
        failing = [r.id for r in decision.rules if r.status.value in ("fail", "error")]
        why = f" (rules not met: {', '.join(failing)})" if failing else ""
        out.append(f"decision: expected {expect['decision']}, got {decision.decision}{why}")
    actual = {r.id: r for r in decision.rules}
    for rid, want in (expect.get("rules") or {}).items():
        got = actual.get(rid)
        if got is None:  # the emergency rule is judged only when an emergency was asked for
            out.append(f"rule {rid}: expected {want}, but it was not judged")
        elif got.status.value != want:
            out.append(f"rule {rid}: expected {want}, got {got.status.value}: {got.message}")
    return out


def run_suite(root: str | Path, *, policy_path: str | None = None) -> SuiteResult:
    """Run every case under ``root``. Raises InvalidInputError listing every invalid case."""
    from policyengine.gate import judge

    override = load_policy(policy_path) if policy_path else None
    folders = find_cases(Path(root))
    loaded: list[tuple[Path, dict[str, Any], Policy, dict[str, Any]]] = []
    problems: list[Problem] = []
    policies: dict[str, Any] = {}  # each policy file is read once per suite
    for folder in folders:
        try:
            loaded.append((folder, *_load_case(folder, override, policies)))
        except InvalidInputError as exc:
            problems.extend(exc.problems)
        except UsageError as exc:  # an unreadable case file: listed with the others, not alone
            problems.append(Problem(str(folder / CASE_FILE), None, None, "", exc.message))
    if problems:
        raise InvalidInputError(problems, what="test cases", hint="fix every line above, then run again")
    result = SuiteResult(root=str(root))
    for folder, data, policy, change in loaded:
        name = folder.name if folder != Path(root) else folder.resolve().name
        workspace = folder / str(data.get("workspace", "workspace"))
        now = parse_instant(str(data["now"]))
        if workspace.is_dir():
            decision = judge(policy, change, workspace, now, tickets=data.get("tickets"))
        else:
            with tempfile.TemporaryDirectory(prefix="policyengine-case-") as empty:
                decision = judge(policy, change, empty, now, tickets=data.get("tickets"))
        result.cases.append(CaseResult(name=name, description=data.get("description"),
                                       differences=tuple(_compare(data, decision)), decision=decision.decision))
    return result


def render_text(result: SuiteResult) -> str:
    """A line per case; under a failed one, each difference of expected against actual."""
    lines = [f"policy test {result.root} ({len(result.cases)} case{'s' if len(result.cases) != 1 else ''})"]
    for case in result.cases:
        lines.append(f"  {'PASS' if case.ok else 'FAIL'}  {case.name}" +
                     (f"  ({case.description})" if case.description and not case.ok else ""))
        lines += [f"        {d}" for d in case.differences]
    failed = len(result.failed)
    lines.append(f"{len(result.cases) - failed} passed, {failed} failed")
    return "\n".join(lines) + "\n"


def render_junit(result: SuiteResult) -> str:
    """JUnit XML: one testcase per case, a failure holding its differences."""
    from xml.sax.saxutils import escape, quoteattr

    out = ['<?xml version="1.0" encoding="utf-8"?>',
           f'<testsuite name="policy test" tests="{len(result.cases)}" failures="{len(result.failed)}" errors="0">']
    for case in result.cases:
        attrs = f'classname={quoteattr("policy test." + Path(result.root).name)} name={quoteattr(case.name)}'
        if case.ok:
            out.append(f"  <testcase {attrs}/>")
            continue
        text = escape("\n".join(case.differences))
        out.append(f"  <testcase {attrs}>\n    <failure message={quoteattr(case.differences[0])}>{text}</failure>\n"
                   "  </testcase>")
    out.append("</testsuite>")
    return "\n".join(out) + "\n"
