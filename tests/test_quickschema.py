"""The hot-path validator agrees with jsonschema (the reference) on real and mutated documents."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from policyengine.language.loader import load_schema
from policyengine.language.quickschema import Unsupported, is_valid

REPO = Path(__file__).resolve().parents[1]
POLICIES = [*sorted((REPO / "policies").glob("*.yml")), *sorted((REPO / "tests" / "fixtures").rglob("policy*.yml"))]
CHANGES = [*sorted((REPO / "examples").glob("change-*.yml")), *sorted((REPO / "policies" / "tests" / "changes").glob("*.yml"))]
ODD_VALUES: list[Any] = [None, True, False, 0, 1, -1, 1.0, 2.5, "", "x", "09:00", "2026-11-24T15:00:00Z", [], [1], {},
                         {"x": 1}, "a" * 70, "UTC", "deny", "warn", "approvals", 10**12, ["author", "author"]]


def _docs(paths: list[Path]) -> list[Any]:
    out = []
    for path in paths:
        try:
            out.append(yaml.safe_load(path.read_text("utf-8")))
        except yaml.YAMLError:
            continue
    return out


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _paths(v, (*prefix, i))
    return found


def _mutate(doc: Any, rng: random.Random) -> Any:
    doc = copy.deepcopy(doc)
    path = rng.choice(_paths(doc)[1:] or [()])
    if not path:
        return rng.choice(ODD_VALUES)
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    key = path[-1]
    action = rng.randrange(5)
    if action == 0:  # delete
        del parent[key]
    elif action == 1:  # replace with an odd value
        parent[key] = copy.deepcopy(rng.choice(ODD_VALUES))
    elif action == 2 and isinstance(parent, dict):  # an unknown key beside it
        parent[f"{key}x"] = 1
    elif action == 3 and isinstance(parent[key], list):  # duplicate an item
        parent[key].append(copy.deepcopy(parent[key][0]) if parent[key] else 1)
    else:  # swap in a value from elsewhere in the document
        other = rng.choice(_paths(doc))
        value: Any = doc
        for part in other:
            value = value[part]
        parent[key] = copy.deepcopy(value)
    return doc


@pytest.mark.parametrize(("schema_name", "paths"), [("policy.schema.json", POLICIES), ("change.schema.json", CHANGES)])
def test_agrees_with_jsonschema_on_real_and_mutated_documents(schema_name: str, paths: list[Path]) -> None:
    schema = load_schema(schema_name)
    reference = Draft202012Validator(schema)
    docs = _docs(paths)
    assert docs
    rng = random.Random(20261128)
    checked = invalid = 0
    for doc in docs:
        assert is_valid(schema, doc) == reference.is_valid(doc)
        for _ in range(300):
            mutated = _mutate(doc, rng)
            want = reference.is_valid(mutated)
            assert is_valid(schema, mutated) == want, (schema_name, mutated)
            checked += 1
            invalid += not want
    assert checked >= 300 and 0 < invalid < checked  # the mutations reach both answers


def test_json_equality_and_types_follow_the_spec() -> None:
    assert not is_valid({"const": 1}, True)
    assert is_valid({"const": 1}, 1.0)
    assert not is_valid({"type": "integer"}, True)
    assert is_valid({"type": "integer"}, 3.0)
    assert not is_valid({"enum": [False]}, 0)
    assert not is_valid({"uniqueItems": True}, [1, 1.0])
    assert is_valid({"uniqueItems": True}, [1, True])
    assert is_valid({"pattern": "b"}, "abc")  # search, not match


def test_an_unknown_keyword_is_never_decided_alone() -> None:
    with pytest.raises(Unsupported):
        is_valid({"unevaluatedProperties": False}, {"x": 1})
    with pytest.raises(Unsupported):
        is_valid({"$ref": "https://example.com/s.json"}, 1)


def test_check_does_not_import_jsonschema_for_a_valid_policy_and_change() -> None:
    import subprocess
    import sys

    code = ("import sys; from policyengine.language.policy import load_policy; from policyengine.change import load_change;"
            "load_policy('policies/soc2-production.yml'); load_change('examples/change-allowed.yml');"
            "print('jsonschema' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                         check=False)
    assert run.stdout.strip() == "False", run.stdout + run.stderr
