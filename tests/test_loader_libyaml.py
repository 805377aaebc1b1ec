"""Policies and changes composed from libyaml's events read exactly as the pure-Python parser reads them.

``policyengine.language.loader`` takes its parse events from libyaml (C) when a document is plain ASCII
without tabs, carriage returns or directives, and keeps its own composer, scalar rules and
limits. Whatever libyaml refuses, or the composer's limits stop, is read again by the
pure-Python parser, so errors are word for word the ones users have always seen. These tests
hold the C path to that: where it gives a node graph, the pure-Python parser gives the same one
(tags, values, styles, and the line and column where every node starts).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from yaml.nodes import MappingNode, Node, ScalarNode

from policyengine.language import loader

REPO = Path(__file__).resolve().parents[1]


def _dump(node: Node, seen: dict[int, int] | None = None) -> Any:
    """Describe a node graph; a node met again (an alias) is named by the order it was first met in."""
    seen = {} if seen is None else seen
    if id(node) in seen:
        return ("again", seen[id(node)])
    seen[id(node)] = len(seen)
    # End marks and flow_style are left out: nothing in policyengine reads them, and the parsers
    # differ on them (a mapping's end after a trailing comment, indentless lists).
    marks = (node.start_mark.line, node.start_mark.column)
    if isinstance(node, ScalarNode):
        return ("scalar", node.tag, node.value, node.style, marks)
    if isinstance(node, MappingNode):
        return ("map", node.tag, marks, [(_dump(k, seen), _dump(v, seen)) for k, v in node.value])
    return ("seq", node.tag, marks, [_dump(item, seen) for item in node.value])


def _python(text: str) -> Node:
    composer = loader._SafeComposer(text)
    try:
        node = composer.get_single_node()
    finally:
        composer.dispose()
    assert node is not None
    return node


def _same_or_declined(text: str) -> bool:
    """Return whether the C path answered; fail when it answers differently from the pure-Python path."""
    fast = loader._compose_libyaml(text)
    if fast is None:
        return False
    assert _dump(fast) == _dump(_python(text)), repr(text[:300])
    return True


def _documents() -> list[str]:
    roots = [REPO / "policies", REPO / "examples", REPO / "tests" / "fixtures", REPO / "tests" / "golden"]
    paths = sorted(p for root in roots for pattern in ("*.yml", "*.yaml") for p in root.rglob(pattern))
    return [t for t in (p.read_text("utf-8", errors="replace") for p in paths) if len(t) < 60_000]


def test_the_bundled_policies_and_example_take_the_c_path() -> None:
    for name in ("policies/soc2-production.yml", "policies/soc2-small-team.yml", "examples/change-allowed.yml"):
        assert _same_or_declined((REPO / name).read_text("utf-8")), name


def test_every_yaml_file_of_the_project_reads_the_same() -> None:
    docs = _documents()
    assert len(docs) > 50
    assert sum(_same_or_declined(t) for t in docs) > len(docs) // 2


_INSERTS = [*":-[]{},#&*!|>'\"%@` \n?~\\0a", "  ", "\n  ", "- ", ": ", "&a ", "*a", "<<: ", "!!str ", "...", "\n---\n"]


def test_mutated_documents_read_the_same_or_go_to_the_python_parser() -> None:
    rng = random.Random(19)  # fixed: the same documents on every run
    docs = [t[:3000] for t in _documents()]
    answered = 0
    for _ in range(1500):
        text = rng.choice(docs)
        for _ in range(rng.randint(1, 4)):
            k = rng.randrange(len(text) + 1)
            roll = rng.random()
            if roll < 0.4:
                text = text[:k] + rng.choice(_INSERTS) + text[k:]
            elif roll < 0.7:
                text = text[:k] + text[k + rng.randint(1, 5):]
            else:
                lines = text.split("\n")
                lines.insert(rng.randrange(len(lines) + 1), rng.choice(lines))
                text = "\n".join(lines)
        answered += _same_or_declined(text)
    assert answered > 300  # the comparison is not vacuous


@pytest.mark.parametrize("text", [
    "name: caf\u00e9\n",                 # not ASCII: marks would count differently
    "name:\tx\n",                        # a tab
    "name: x\r\nother: y\r\n",           # carriage returns
    "%YAML 1.2\n---\nname: x\n",         # a directive
    "a: [1, 2\n",                        # a syntax error: the pure-Python parser words it
    "a: *nowhere\n",                     # an undefined alias
    "a: " + "[" * 200 + "]" * 200 + "\n",  # deeper than the limit
    "x: [a: ]\n",                        # an empty value in a flow collection: libyaml marks it
    "x: {a: , b: 1}\n",                  # one column later than PyYAML
])
def test_what_the_c_path_declines(text: str) -> None:
    assert loader._compose_libyaml(text) is None


def test_errors_are_the_pure_python_parsers() -> None:
    from policyengine.errors import InvalidInputError

    with pytest.raises(InvalidInputError) as caught:
        loader.parse_document(b"rules:\n  - id: a\n    type: [x\n", file="p.yml", what="policy")
    problem = caught.value.problems[0]
    assert (problem.line, problem.column) != (None, None)
    assert "p.yml" in str(problem)
