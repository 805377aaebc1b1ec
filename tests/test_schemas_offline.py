"""The published schemas work with no network: check-jsonschema validates real files with them offline.

Every test here runs check-jsonschema with the network cut off: ``HTTP(S)_PROXY`` points at a
closed loopback port and ``NO_PROXY`` is empty, so any fetch fails at once instead of reaching
the internet. A schema that needs a document from elsewhere (a ``$ref`` to another URL) fails
these tests, which is the point: ``decision.schema.json`` used to ``$ref`` ``change.schema.json``
under its ``$id`` on a domain the project does not control.

``decision.schema.json`` carries the change schema under ``$defs/change``, with the change
schema's own ``#`` pointers rebased onto ``#/$defs/change``. It is generated from
``change.schema.json``; after editing that file run::

    .venv/bin/python tests/test_schemas_offline.py --write
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "schemas"
EXAMPLES = REPO / "examples"
POLICIES = REPO / "policies"
BIN = Path(sys.executable).parent
DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, a connection is refused at once


# -- generating the embedded change schema ------------------------------------------------------


def _rebase(node: Any, prefix: str) -> Any:
    """Copy ``node`` with every local ``$ref`` (``#...``) moved under ``prefix`` (``#/$defs/change``)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#"):
                out[key] = prefix + value[1:]
            else:
                out[key] = _rebase(value, prefix)
        return out
    if isinstance(node, list):
        return [_rebase(item, prefix) for item in node]
    return copy.deepcopy(node)


def embedded_change(change: dict[str, Any]) -> dict[str, Any]:
    """``change.schema.json`` as ``decision.schema.json`` carries it under ``$defs/change``.

    The root-only keywords (``$schema``, ``$id``) are dropped: the embedded copy is a plain
    subschema, so every validator resolves it by JSON pointer, without embedded-resource support.
    """
    body = {k: v for k, v in change.items() if k not in ("$schema", "$id")}
    rebased: dict[str, Any] = _rebase(body, "#/$defs/change")
    return rebased


def generated_decision() -> dict[str, Any]:
    """``decision.schema.json`` with ``$defs/change`` regenerated from ``change.schema.json``."""
    decision = json.loads((SCHEMAS / "decision.schema.json").read_text(encoding="utf-8"))
    change = json.loads((SCHEMAS / "change.schema.json").read_text(encoding="utf-8"))
    decision.setdefault("$defs", {})["change"] = embedded_change(change)
    generated: dict[str, Any] = decision
    return generated


def _write() -> None:
    text = json.dumps(generated_decision(), indent=2, ensure_ascii=False) + "\n"
    (SCHEMAS / "decision.schema.json").write_text(text, encoding="utf-8")


# -- helpers ------------------------------------------------------------------------------------


def _tool(name: str) -> str:
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is not installed: install the test extra (pip install -e '.[test]')"
    return found


@pytest.fixture
def offline(tmp_path: Path) -> dict[str, str]:
    """An environment in which any HTTP(S) fetch fails fast, with an empty cache."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[name] = env[name.lower()] = DEAD_PROXY
    env["NO_PROXY"] = env["no_proxy"] = ""
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # nothing check-jsonschema cached earlier is used
    return env


def check_jsonschema(schema: Path, *files: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    args = [_tool("check-jsonschema"), "--no-cache", "-o", "text", "--schemafile", str(schema), *map(str, files)]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, check=False)


def policyengine(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user does (``python -m policyengine``), in its own process."""
    return subprocess.run([sys.executable, "-m", "policyengine", *args], capture_output=True, text=True,
                          timeout=120, env=env, cwd=REPO, check=False)


def _refs(node: Any, where: str = "#") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield where, value
            else:
                yield from _refs(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _refs(value, f"{where}/{i}")


def _pointer(root: Any, ref: str) -> Any:
    node = root
    for part in ref[1:].split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


SCHEMA_FILES = sorted(p.name for p in SCHEMAS.glob("*.json"))


# -- the harness really is offline ----------------------------------------------------------------


def test_the_offline_environment_refuses_a_remote_ref(tmp_path: Path, offline: dict[str, str]) -> None:
    # Without this, a test below could pass because a fetch happened to succeed.
    schema = tmp_path / "remote.schema.json"
    schema.write_text(json.dumps({"$schema": "https://json-schema.org/draft/2020-12/schema",
                                  "$ref": "https://schemas.invalid/elsewhere.json"}), encoding="utf-8")
    doc = tmp_path / "doc.json"
    doc.write_text("{}", encoding="utf-8")
    res = check_jsonschema(schema, doc, env=offline)
    assert res.returncode != 0
    assert "schemas.invalid" in res.stdout + res.stderr


# -- every schema stands on its own ---------------------------------------------------------------


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_no_schema_refers_to_another_document(name: str) -> None:
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    outside = [(where, ref) for where, ref in _refs(schema) if not ref.startswith("#")]
    assert outside == [], f"{name} needs other documents to be fetched or found: {outside}"
    for where, ref in _refs(schema):
        try:
            _pointer(schema, ref)
        except (KeyError, IndexError, ValueError):
            pytest.fail(f"{name}: {where}: $ref {ref} points at nothing")


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_no_schema_refers_to_an_http_url(name: str) -> None:
    # A relative $ref is resolved against the schema's $id: under an https $id it is a URL too.
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    base = schema.get("$id", "")
    remote = [
        (where, ref) for where, ref in _refs(schema)
        if not ref.startswith("#") and urljoin(base, ref).lower().startswith(("http://", "https://"))
    ]
    assert remote == [], f"{name} sends validators to the web: {remote}"


@pytest.mark.parametrize("name", ["change.schema.json", "decision.schema.json", "policy.schema.json"])
def test_schema_ids_name_no_web_address(name: str) -> None:
    # An $id is a name, but some tools fetch it; a URN cannot be fetched from anyone's server.
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    assert schema["$id"] == "urn:policyengine:schema:" + name.removesuffix(".schema.json")


def test_decision_schema_embeds_the_current_change_schema() -> None:
    decision = json.loads((SCHEMAS / "decision.schema.json").read_text(encoding="utf-8"))
    assert decision["properties"]["change"]["$ref"] == "#/$defs/change"
    assert decision == generated_decision(), (
        "decision.schema.json's $defs/change is out of date: run .venv/bin/python tests/test_schemas_offline.py --write"
    )


def test_package_validates_a_decision_with_its_own_schema_and_no_registry(tmp_path: Path) -> None:
    from jsonschema import Draft202012Validator

    from policyengine.language.loader import load_schema

    doc = _decision(tmp_path, "change-allowed.yml")
    validator = Draft202012Validator(load_schema("decision.schema.json"))  # no registry, no retrieval
    assert [e.message for e in validator.iter_errors(doc)] == []
    doc["change"]["commit"] = "not-a-sha"
    assert [list(e.absolute_path) for e in validator.iter_errors(doc)] == [["change", "commit"]]


# -- check-jsonschema, offline, on real files -----------------------------------------------------


def _decision(tmp_path: Path, change: str, *extra: str) -> dict[str, Any]:
    out = tmp_path / f"{change}.decision.json"
    res = policyengine(
        "check", "--policy", str(POLICIES / "soc2-production.yml"), "--change", str(EXAMPLES / change),
        "--workspace", str(EXAMPLES / "workspace"), "--now", "2026-11-24T15:00:00Z",
        "--evidence-dir", str(tmp_path / "ev"), "--json", str(out), *extra,
    )
    assert res.returncode in (0, 1), res.stdout + res.stderr
    doc: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return doc


@pytest.mark.parametrize(
    ("change", "extra"),
    [("change-allowed.yml", ()), ("change-denied.yml", ()), ("change-denied.yml", ("--advisory",))],
)
def test_check_jsonschema_validates_the_decision_the_cli_writes(
    tmp_path: Path, offline: dict[str, str], change: str, extra: tuple[str, ...]
) -> None:
    doc = _decision(tmp_path, change, *extra)
    assert "evidence" in doc and "bundle_id" in doc["evidence"]  # what --json adds to the bundle's copy
    path = tmp_path / "decision.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    res = check_jsonschema(SCHEMAS / "decision.schema.json", path, env=offline)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ok -- validation done" in res.stdout


def test_check_jsonschema_applies_the_embedded_change_schema(tmp_path: Path, offline: dict[str, str]) -> None:
    doc = _decision(tmp_path, "change-allowed.yml")
    doc["change"]["commit"] = "not-a-sha"
    path = tmp_path / "decision.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    res = check_jsonschema(SCHEMAS / "decision.schema.json", path, env=offline)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "$.change.commit" in res.stdout


@pytest.mark.parametrize("change", sorted(p.name for p in EXAMPLES.glob("change-*.yml")))
def test_check_jsonschema_validates_the_example_changes(offline: dict[str, str], change: str) -> None:
    res = check_jsonschema(SCHEMAS / "change.schema.json", EXAMPLES / change, env=offline)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("policy", sorted(p.name for p in POLICIES.glob("*.yml")))
def test_check_jsonschema_validates_the_bundled_policies(offline: dict[str, str], policy: str) -> None:
    res = check_jsonschema(SCHEMAS / "policy.schema.json", POLICIES / policy, env=offline)
    assert res.returncode == 0, res.stdout + res.stderr



# -- deploy window times: the loader, the schema and check-jsonschema agree ------------------------
# policyengine reads plain YAML scalars by the YAML 1.2 core schema, as check-jsonschema (ruamel)
# and editors do: an unquoted 09:00 or 16:30 is a string, never a base-60 number. Whatever a time
# looks like, `policy validate` and `check-jsonschema --schemafile schemas/policy.schema.json`
# must give the same verdict (docs/deploy-windows.md says so).

WINDOW_POLICY = """\
version: 1
name: windows
rules:
  - id: window
    type: deploy_window
    timezone: America/New_York
    allow:
      - days: [mon-fri]
        between: {between}
"""
WHERE = "rules[0].allow[0].between"
START_WORDS = 'expected a start time as "HH:MM" from 00:00 to 23:59 (for example "09:00")'
END_WORDS = 'expected an end time as "HH:MM" from 00:00 to 24:00 (for example "16:00")'


@pytest.mark.parametrize(
    ("between", "problem"),
    [
        ("[09:00, 16:30]", None),
        ("[00:00, 24:00]", None),
        ("[22:00, 02:00]", None),  # crosses midnight
        ('["09:00", "16:30"]', None),
        ("\n          - 09:00\n          - 16:30", None),  # block style
        ("[9:00, 16:30]", f'9:19: {WHERE}[0]: {START_WORDS}, got "9:00"'),
        ("[24:00, 16:00]", f'9:19: {WHERE}[0]: {START_WORDS}, got "24:00"'),
        ("[25:00, 16:00]", f'9:19: {WHERE}[0]: {START_WORDS}, got "25:00"'),
        ("[9:60, 16:00]", f'9:19: {WHERE}[0]: {START_WORDS}, got "9:60"'),
        ("[09:00, 24:01]", f'9:26: {WHERE}[1]: {END_WORDS}, got "24:01"'),
        ("[09:00, 25:00]", f'9:26: {WHERE}[1]: {END_WORDS}, got "25:00"'),
        ("[09:00, 1:30:00]", f'9:26: {WHERE}[1]: {END_WORDS}, got "1:30:00"'),  # YAML 1.1: 5400
        ("[09:00, 960]", f"9:26: {WHERE}[1]: {END_WORDS}, got 960"),  # a number, written as one
    ],
)
def test_window_times_validate_alike_in_policy_validate_and_check_jsonschema(
    tmp_path: Path, offline: dict[str, str], between: str, problem: str | None
) -> None:
    path = tmp_path / "policy.yml"
    path.write_text(WINDOW_POLICY.format(between=between), encoding="utf-8")
    ours = policyengine("policy", "validate", str(path))
    theirs = check_jsonschema(SCHEMAS / "policy.schema.json", path, env=offline)
    if problem is None:
        assert ours.returncode == 0, ours.stdout + ours.stderr
        assert theirs.returncode == 0, theirs.stdout + theirs.stderr
    else:
        assert ours.returncode == 2, ours.stdout + ours.stderr
        assert ours.stdout.splitlines() == [f"{path}:{problem}"]
        assert theirs.returncode == 1, theirs.stdout + theirs.stderr
        assert "Schema validation errors were encountered" in theirs.stdout


def test_unquoted_times_are_read_as_the_strings_written() -> None:
    from policyengine.language.loader import parse_document

    text = WINDOW_POLICY.format(between="[09:00, 16:30]") + "        name: x\n      - between: [9:00, 1:30:00]\n"
    data, _, problems = parse_document(text.encode(), file="p.yml", what="policy")
    assert problems == []
    allow = data["rules"][0]["allow"]
    assert [allow[0]["between"], allow[1]["between"]] == [["09:00", "16:30"], ["9:00", "1:30:00"]]


def _yaml_blocks(markdown: str) -> list[str]:
    blocks: list[str] = []
    current: list[str] | None = None
    for line in markdown.splitlines(keepends=True):
        if current is None and line.strip() == "```yaml":
            current = []
        elif current is not None and line.strip() == "```":
            blocks.append("".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def test_the_deploy_window_docs_example_validates_both_ways(tmp_path: Path, offline: dict[str, str]) -> None:
    blocks = _yaml_blocks((REPO / "docs" / "deploy-windows.md").read_text(encoding="utf-8"))
    assert blocks, "docs/deploy-windows.md shows no policy example"
    for i, block in enumerate(blocks):
        assert "between: [09:00, 16:00]" in block or i, "the example shows unquoted times"
        path = tmp_path / f"example-{i}.yml"
        path.write_text(block, encoding="utf-8")
        ours = policyengine("policy", "validate", str(path))
        assert ours.returncode == 0, ours.stdout + ours.stderr
        theirs = check_jsonschema(SCHEMAS / "policy.schema.json", path, env=offline)
        assert theirs.returncode == 0, theirs.stdout + theirs.stderr


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_schemas_offline.py --write  (regenerates decision.schema.json's $defs/change)")
    _write()
