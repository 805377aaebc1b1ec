"""The shape of the package: imports point down, nothing loops, and the judge does no I/O.

The contracts themselves are in pyproject.toml (``[tool.importlinter]``); docs/architecture.md
draws the same picture in words.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    # In a child process: import-linter configures logging, which would disable our loggers here.
    import subprocess

    proc = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                           "sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True))",
                           str(REPO / "pyproject.toml")], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, "an import points the wrong way:\n" + proc.stdout[-3000:] + proc.stderr[-2000:]


def _cycles() -> list[list[str]]:
    import grimp

    graph = grimp.build_graph("policyengine")
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles_in_the_package() -> None:
    # Function-level imports count too: a lazy import is still a dependency.
    assert _cycles() == []


def test_every_fact_a_rule_needs_has_a_gatherer() -> None:
    from policyengine.gather import GATHERERS
    from policyengine.language.policy import build_rules, load_policy

    for path in sorted((REPO / "policies").glob("*.yml")):
        for rule in build_rules(load_policy(path)):
            for request in rule.needs():
                assert type(request) in GATHERERS, f"{path.name}: {rule.spec.id} needs {request!r}"


class _IOWatch:
    """An audit hook that records file opens, sockets and processes while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.events: list[tuple[str, Any]] = []

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if self.on and event in {"open", "os.listdir", "os.scandir", "socket.connect", "socket.getaddrinfo",
                                 "subprocess.Popen", "os.system"}:
            self.events.append((event, args[:1]))


_WATCH = _IOWatch()
sys.addaudithook(_WATCH)  # hooks cannot be removed; this one only records while switched on


@pytest.mark.parametrize("policy_name", ["soc2-production", "soc2-small-team"])
@pytest.mark.parametrize("change_name", ["allowed", "denied"])
def test_the_judge_opens_no_file_and_no_socket(policy_name: str, change_name: str) -> None:
    from policyengine.engine import evaluate
    from policyengine.gather import gather_facts
    from policyengine.language.policy import load_change, load_policy
    from policyengine.workspace.files import Workspace

    policy = load_policy(REPO / "policies" / f"{policy_name}.yml")
    change = load_change(REPO / "examples" / f"change-{change_name}.yml")
    facts = gather_facts(policy, change, Workspace(REPO / "examples" / "workspace"))
    now = datetime(2026, 11, 24, 15, 0, tzinfo=timezone.utc)
    evaluate(policy, facts, now)  # warm: the first use of a rule type may import modules (files)
    _WATCH.events.clear()
    _WATCH.on = True
    try:
        decision = evaluate(policy, facts, now)
    finally:
        _WATCH.on = False
    assert _WATCH.events == []
    assert decision.rules, "the judge gave no result"


_CLOCK_CALLS = {"now", "utcnow", "today", "time", "time_ns", "monotonic", "perf_counter"}


def test_the_judge_reads_no_clock() -> None:
    """No call in the engine, a rule, waivers or emergencies reads the time: ``now`` is always given."""
    import ast

    offenders = []
    judge = [REPO / "policyengine" / name for name in ("engine.py", "lifecycle/waivers.py", "lifecycle/emergency.py",
                                                       "facts.py")]
    for path in [*judge, *sorted((REPO / "policyengine" / "rules").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in _CLOCK_CALLS):
                offenders.append(f"{path.name}:{node.lineno}: .{node.func.attr}()")
    assert offenders == []
