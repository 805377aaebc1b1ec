"""Read a user's YAML or JSON file and validate it against a JSON Schema, with precise errors.

Every problem a person can act on is reported at once, as ``file:line:column: json.path: message``.

The YAML reader is deliberately strict and boring:

* it is safe: only plain data (mappings, lists, strings, numbers, booleans, null), never objects;
* a key repeated in one mapping is a problem, because a repeated ``min_approvals`` would silently
  weaken a control (most YAML libraries keep the last one without a word);
* mapping keys stay the strings the user wrote (YAML 1.1 would turn ``on:`` into ``True``);
* plain scalars follow the YAML 1.2 core schema: only ``true``/``false`` are booleans (``NO``, the
  country code of Norway, stays a string), ``16:00`` is not a base-60 number, and dates stay strings.
  So an unquoted ``between: [09:00, 16:30]`` holds the strings written, as check-jsonschema and
  editors (YAML 1.2) read it: the policy schema and docs/deploy-windows.md rely on this;
* aliases are expanded within limits, so a "billion laughs" document is rejected quickly.

Schemas are read from the installed package (or the source checkout), never from the network.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msgspec import Struct
from yaml.composer import Composer
from yaml.error import MarkedYAMLError, YAMLError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader, ReaderError
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from policyengine.errors import InvalidInputError, Problem, UsageError

if TYPE_CHECKING:  # jsonschema is imported only to explain an invalid document (it is slow to import)
    from jsonschema.exceptions import ValidationError

__all__ = [
    "JsonPath",
    "MAX_ALIAS_NODES",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "Position",
    "Positions",
    "format_path",
    "load_document",
    "load_schema",
    "parse_document",
    "read_user_file",
    "render_value",
    "schema_text",
    "validate",
]

JsonPath = tuple[str | int, ...]

MAX_FILE_BYTES = 4 * 1024 * 1024
"""A policy or change file larger than this is refused unread."""

MAX_NODES = 50_000
"""Most values (scalars, lists, mappings) one document may hold, counted as written and again
once aliases are expanded. Policies and change files hold a few thousand at most."""

MAX_ALIAS_NODES = 10_000
"""Most values one document may reach through aliases: enough for sharing, not for a bomb."""

MAX_DEPTH = 100
"""Deepest nesting of lists and mappings."""

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"

# The YAML 1.2 core schema, for plain (unquoted) scalars only.
_CORE_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_CORE_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_CORE_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_CORE_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)


# --------------------------------------------------------------------------------------------
# Positions


class Position(Struct, frozen=True):
    """Where a value starts in the file (1-based), and where its key starts when it has one."""

    line: int
    column: int
    key_line: int | None = None
    key_column: int | None = None


class Positions(dict[JsonPath, Position]):
    """JSON path (tuple of keys and indexes) to the position of the value at that path."""

    def locate(self, path: Sequence[str | int], *, key: bool = False) -> tuple[int | None, int | None]:
        """Return ``(line, column)`` of ``path``, or of its nearest recorded ancestor.

        With ``key=True`` the position of the key is preferred (for "unknown key" problems).
        """
        p = tuple(path)
        while True:
            pos = self.get(p)
            if pos is not None:
                if key and pos.key_line is not None:
                    return pos.key_line, pos.key_column
                return pos.line, pos.column
            if not p:
                return None, None
            p = p[:-1]
            key = False


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


def format_path(path: Iterable[str | int]) -> str:
    """Render a JSON path the way people write it: ``rules[2].min_approvals``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part, ensure_ascii=False)}]"
    return out


# --------------------------------------------------------------------------------------------
# Reading


def read_user_file(path: str | Path, *, what: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """Read a user's file once, as bytes; raise ``UsageError`` when it cannot be read."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise UsageError(f"{what} file not found: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"{what} file {path} is a directory, not a file") from None
    except PermissionError:
        raise UsageError(f"cannot read {what} file {path}: permission denied") from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} file {path}: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:
        raise UsageError(f"{what} file {path} is larger than {max_bytes} bytes; refusing to read it")
    return raw


def _decode(raw: bytes, *, file: str, what: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UsageError(
            f"{what} file {file} is not UTF-8 text (invalid byte 0x{raw[exc.start]:02x} on line {line})",
            hint="save the file as UTF-8",
        ) from None


# --------------------------------------------------------------------------------------------
# Parsing


class _LimitError(MarkedYAMLError):
    """A document that is syntactically fine but beyond the limits (too deep)."""


class _Rules:
    """Our scalar resolution and limits, shared by both composers below."""

    _depth = 0
    _nodes = 0

    def resolve(self, kind: type[Node], value: Any, implicit: Any) -> str:
        if kind is ScalarNode:
            if implicit and implicit[0]:
                if _CORE_NULL.match(value):
                    return _NULL
                if _CORE_BOOL.match(value):
                    return _BOOL
                if _CORE_INT.match(value):
                    return _INT
                if _CORE_FLOAT.match(value):
                    return _FLOAT
            return _STR
        if kind is SequenceNode:
            return _SEQ
        return _MAP

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        # The composer recurses once per level: refuse absurd nesting before Python's stack does.
        # Count while composing, so that a huge document is refused before it is all composed.
        self._depth += 1
        self._nodes += 1
        try:
            if self._depth > MAX_DEPTH:
                message = f"the document is nested more than {MAX_DEPTH} levels deep"
                raise _LimitError(None, None, message, self.peek_event().start_mark)  # type: ignore[no-untyped-call]
            if self._nodes > MAX_NODES:
                message = f"the document holds more than {MAX_NODES} values"
                raise _LimitError(None, None, message, self.peek_event().start_mark)  # type: ignore[no-untyped-call]
            node: Node | None = super().compose_node(parent, index)  # type: ignore[misc]
            assert node is not None  # noqa: S101 - the parser yields a node for every value event
            return node
        finally:
            self._depth -= 1

    peek_event: Any


class _SafeComposer(_Rules, Reader, Scanner, Parser, Composer, BaseResolver):
    """PyYAML's pure-Python reader, scanner, parser and composer, with our own scalar resolution.

    Only composes a node graph; values are built by ``_Builder``, never by a PyYAML constructor.
    """

    def __init__(self, text: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        BaseResolver.__init__(self)
        self._depth = 0
        self._nodes = 0


class _Declined(Exception):
    """Something the libyaml path does not read exactly as the pure-Python path: let that read it."""


def _libyaml_composer() -> type | None:
    """Return a composer that takes its events from libyaml's parser (C), or None without libyaml.

    The scanner and parser are most of the time a policy takes to read in pure Python (~10 ms of
    a check); libyaml gives the same events. Composing, resolving and the limits stay ours.
    """
    try:
        from yaml._yaml import CParser
    except ImportError:
        return None

    class _CComposer(_Rules, Composer, BaseResolver, CParser):  # type: ignore[misc, valid-type]
        def __init__(self, text: str) -> None:
            CParser.__init__(self, text)
            Composer.__init__(self)
            BaseResolver.__init__(self)
            self._depth = 0
            self._nodes = 0

        _flow = 0  # how many flow collections ([...] or {...}) the composer is inside

        def compose_scalar_node(self, anchor: Any) -> Node:
            if self._flow and self.peek_event().value == "":
                # An empty value in a flow collection ([a: ]): libyaml marks it one column
                # further on than PyYAML does, so positions in messages would move.
                raise _Declined
            node: Node = Composer.compose_scalar_node(self, anchor)
            if node.style == "":  # libyaml's plain style; PyYAML's is None
                node.style = None
            return node

        def _collection(self, compose: Any, anchor: Any) -> Node:
            flow = bool(self.peek_event().flow_style)
            self._flow += flow
            try:
                return compose(self, anchor)  # type: ignore[no-any-return]
            finally:
                self._flow -= flow

        def compose_sequence_node(self, anchor: Any) -> Node:
            return self._collection(Composer.compose_sequence_node, anchor)

        def compose_mapping_node(self, anchor: Any) -> Node:
            return self._collection(Composer.compose_mapping_node, anchor)

    return _CComposer


_CCOMPOSER: Any = None
# What the pure-Python path reads differently from libyaml, or reports on: tabs, carriage
# returns, byte order marks, the line breaks NEL/LS/PS, directives, and anything not ASCII
# (marks count characters differently). Such documents, and any document libyaml or the
# checks below refuse, take the pure-Python path, which gives the errors users have always seen.
_LIBYAML_SAFE = re.compile(r"[\n\x20-\x7e]*")


def _compose_libyaml(text: str) -> Node | None:
    """Compose one document with libyaml's events, or return None: the pure-Python path decides."""
    global _CCOMPOSER
    if not _LIBYAML_SAFE.fullmatch(text) or text.startswith("%") or "\n%" in text:
        return None
    if _CCOMPOSER is None:
        _CCOMPOSER = _libyaml_composer() or False
    if _CCOMPOSER is False:
        return None
    composer = _CCOMPOSER(text)
    try:
        node: Node | None = composer.get_single_node()
    except Exception:  # noqa: BLE001 - any trouble: the pure-Python path reads it and explains
        return None
    finally:
        composer.dispose()
    return node


class _Fatal(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.message)
        self.problem = problem


def _quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _join(items: Sequence[str], word: str = "and") -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {word} " + items[-1]


_REPEATED_WHY = "a repeated key would silently weaken a control"


class _Builder:
    """Turn a composed node graph into plain data and positions, expanding aliases within limits."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.positions = Positions()
        self.problems: list[Problem] = []
        self.nodes = 0
        self.alias_nodes = 0
        self.seen: set[int] = set()
        self.active: set[int] = set()

    def _problem(self, node: Node, path: JsonPath, message: str) -> Problem:
        mark = node.start_mark
        return Problem(self.file, mark.line + 1, mark.column + 1, format_path(path), message)

    def build(self, node: Node, path: JsonPath, key_node: Node | None = None, via_alias: bool = False) -> Any:
        if id(node) in self.active:
            raise _Fatal(self._problem(node, path, "an alias refers to a value that contains it (a recursive alias)"))
        if id(node) in self.seen:
            via_alias = True
        self.seen.add(id(node))
        self.nodes += 1
        if via_alias:
            self.alias_nodes += 1
            if self.alias_nodes > MAX_ALIAS_NODES:
                raise _Fatal(
                    self._problem(
                        node, path, f"aliases expand to more than {MAX_ALIAS_NODES} values; refusing to expand them"
                    )
                )
        if self.nodes > MAX_NODES:
            raise _Fatal(self._problem(node, path, f"the document holds more than {MAX_NODES} values"))
        if path not in self.positions:
            self.positions[path] = Position(
                node.start_mark.line + 1,
                node.start_mark.column + 1,
                key_node.start_mark.line + 1 if key_node is not None else None,
                key_node.start_mark.column + 1 if key_node is not None else None,
            )
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                if node.tag != _SEQ:
                    self.problems.append(self._problem(node, path, f"unsupported YAML tag {node.tag!r}"))
                return [self.build(item, path + (i,), None, via_alias) for i, item in enumerate(node.value)]
            assert isinstance(node, MappingNode)  # noqa: S101 - a node is a scalar, a sequence or a mapping
            return self._mapping(node, path, via_alias)
        finally:
            self.active.discard(id(node))

    def _mapping(self, node: MappingNode, path: JsonPath, via_alias: bool) -> dict[str, Any]:
        if node.tag != _MAP:
            self.problems.append(self._problem(node, path, f"unsupported YAML tag {node.tag!r}"))
        out: dict[str, Any] = {}
        lines: dict[str, list[Node]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.problems.append(
                    self._problem(key_node, path, "a mapping key must be a plain string, not a list or a mapping")
                )
                continue
            key = str(key_node.value)
            if key == "<<" and key_node.tag == _STR and key_node.style is None:
                self.problems.append(
                    self._problem(key_node, path, 'merge keys ("<<") are not supported; write the keys out')
                )
                continue
            lines.setdefault(key, []).append(key_node)
            if key in out:
                continue  # reported below; the first value is kept
            out[key] = self.build(value_node, path + (key,), key_node, via_alias)
        for key, key_nodes in lines.items():
            if len(key_nodes) > 1:
                where = _join([str(k.start_mark.line + 1) for k in key_nodes])
                times = "twice" if len(key_nodes) == 2 else f"{len(key_nodes)} times"
                message = f"key {_quote(key)} appears {times} (lines {where}); " + _REPEATED_WHY
                self.problems.append(self._problem(key_nodes[1], path, message))
        return out

    def _scalar(self, node: ScalarNode, path: JsonPath) -> Any:
        value: str = node.value
        tag = node.tag
        if tag in (_STR, _TIMESTAMP):  # a date stays the string the user wrote
            return value
        try:
            if tag == _NULL:
                if value not in ("", "~", "null", "Null", "NULL"):
                    raise ValueError
                return None
            if tag == _BOOL:
                if value in ("true", "True", "TRUE"):
                    return True
                if value in ("false", "False", "FALSE"):
                    return False
                raise ValueError
            if tag == _INT:
                text = value.replace("_", "") if node.style is not None else value
                if text.startswith(("0o", "0O")):
                    return int(text[2:], 8)
                if text.startswith(("0x", "0X")):
                    return int(text[2:], 16)
                return int(text, 10)
            if tag == _FLOAT:
                low = value.lower()
                if low in (".inf", "+.inf"):
                    return math.inf
                if low == "-.inf":
                    return -math.inf
                if low == ".nan":
                    return math.nan
                return float(value)
        except ValueError:
            kind = tag.rsplit(":", 1)[-1]
            self.problems.append(self._problem(node, path, f"cannot read {_quote(value)} as {kind}"))
            return value
        self.problems.append(self._problem(node, path, f"unsupported YAML tag {tag!r}"))
        return value


def _syntax_problem(exc: YAMLError, text: str, file: str) -> Problem:
    if isinstance(exc, ReaderError):
        before = text[: exc.position]
        line = before.count("\n") + 1
        column = exc.position - (before.rfind("\n") + 1) + 1
        char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
        return Problem(file, line, column, "", f"invalid YAML: the control character U+{char:04X} is not allowed")
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        if isinstance(exc, _LimitError):
            message = exc.problem or "the document is too large"
        elif exc.problem == "but found another document":
            message = "invalid YAML: the file holds more than one document (a second '---'); expected one"
        else:
            message = "invalid YAML: " + (exc.problem or "syntax error")
            context, context_mark = exc.context, exc.context_mark
            if context and context.startswith("while "):
                at = f" at line {context_mark.line + 1}" if context_mark is not None else ""
                message += f" ({context}{at})"
            elif context:
                # e.g. "found duplicate anchor 'a'; first occurrence" (line 1), "second occurrence" (here)
                at = f" at line {context_mark.line + 1}" if context_mark is not None else ""
                message = f"invalid YAML: {context}{at}, {exc.problem or 'here'} here"
        if any(sign in (exc.problem or "") for sign in _INDENTATION_SIGNS):
            message += ("; check the indentation: keys of one mapping must start in the same column, and a "
                        "nested key further right than its parent (use spaces, not tabs)")
        if mark is None:
            return Problem(file, None, None, "", message)
        return Problem(file, mark.line + 1, mark.column + 1, "", message)
    return Problem(file, None, None, "", f"invalid YAML: {exc}")


_INDENTATION_SIGNS = ("expected <block end>", "mapping values are not allowed here", "did not find expected key",
                      "did not find expected '-' indicator", "found character '\\t'")
"""PyYAML's words for a key or item in the wrong column: these get a hint that names indentation."""


def parse_document(raw: bytes, *, file: str, what: str) -> tuple[Any, Positions, list[Problem]]:
    """Parse bytes of YAML (or JSON) into plain data and the position of every value.

    Returns ``(data, positions, problems)``: ``problems`` are those that still let the rest of
    the document be checked (a repeated key, an unsupported tag), so a caller can report them
    together with schema problems. A document that cannot be read at all (a syntax error, an
    empty file, an alias bomb) raises ``InvalidInputError``; a file that is not UTF-8 raises
    ``UsageError``.
    """
    text = _decode(raw, file=file, what=what)
    if "\t" in text and text.lstrip()[:1] in ("{", "["):
        # JSON indented with tabs is valid JSON but not valid YAML to PyYAML. In valid JSON a tab
        # can only be whitespace between tokens (inside strings it must be escaped), so a space
        # in its place changes nothing, not even a line or column number.
        try:
            json.loads(text)
        except ValueError:
            pass
        else:
            text = text.replace("\t", " ")
    try:
        root = _compose_libyaml(text)
        if root is None:
            composer = _SafeComposer(text)  # the reader checks every character here
            try:
                root = composer.get_single_node()
            finally:
                composer.dispose()
    except RecursionError:
        raise InvalidInputError(
            [Problem(file, None, None, "", "the document is nested too deeply")], what=what
        ) from None
    except YAMLError as exc:
        raise InvalidInputError([_syntax_problem(exc, text, file)], what=what) from None
    if root is None or (isinstance(root, ScalarNode) and root.tag == _NULL and root.value == ""):
        raise InvalidInputError([Problem(file, None, None, "", "the file is empty")], what=what)
    builder = _Builder(file)
    try:
        data = builder.build(root, ())
    except _Fatal as exc:
        raise InvalidInputError([exc.problem], what=what) from None
    except RecursionError:  # pragma: no cover - MAX_DEPTH stops this first
        raise InvalidInputError(
            [Problem(file, None, None, "", "the document is nested too deeply")], what=what
        ) from None
    return data, builder.positions, sorted(builder.problems, key=problem_order)


def compose_all(text: str) -> list[Node]:
    """Compose every YAML document of ``text`` into node graphs, building no values.

    For files that are not ours to validate (CI configurations): custom tags (GitLab's
    ``!reference``) are kept as tags, aliases stay shared nodes (never expanded), and the depth
    and size limits hold. Raises ``yaml.YAMLError`` (``RecursionError`` is turned into one).
    """
    composer = _SafeComposer(text)
    try:
        nodes: list[Node] = []
        while composer.check_node():
            node = composer.get_node()
            if node is not None:
                nodes.append(node)
        return nodes
    except RecursionError:
        raise YAMLError("the document is nested too deeply") from None
    finally:
        composer.dispose()


def load_document(path: str | Path, *, what: str) -> tuple[Any, Positions]:
    """Read and parse a YAML or JSON file; raise ``InvalidInputError`` listing every problem."""
    raw = read_user_file(path, what=what)
    data, positions, problems = parse_document(raw, file=str(path), what=what)
    if problems:
        raise InvalidInputError(problems, what=what)
    return data, positions


# --------------------------------------------------------------------------------------------
# Schemas


def load_schema(name: str) -> dict[str, Any]:
    """Return the schema ``schemas/<name>`` carried by the package (or by the source checkout).

    The file is read once; each call returns a fresh copy, so a caller cannot change the schema
    the next caller validates with.
    """
    schema: dict[str, Any] = json.loads(schema_text(name))
    return schema


BUNDLED_POLICIES = ("soc2-production", "soc2-small-team")
"""The starter policies shipped inside the package (``policies/`` in the source checkout)."""


def bundled_policy_text(name: str) -> str:
    """Return the text of a starter policy carried by the package (or by the source checkout)."""
    if name not in BUNDLED_POLICIES:
        raise ValueError(f"not a bundled policy: {name!r}")
    return _packaged_text("policies", f"{name}.yml")


@functools.cache
def schema_text(name: str) -> str:
    """Return the text of ``schemas/<name>`` exactly as shipped (what ``policy schema`` prints)."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"not a schema name: {name!r}")
    return _packaged_text("schemas", name)


def _packaged_text(folder: str, name: str) -> str:
    """Read ``<folder>/<name>`` from the installed package (the wheel carries ``schemas/`` and
    ``policies/`` inside it), or from the source checkout when running from one."""
    # On disk, the package's folder is where importlib.resources would look; reading it directly
    # spares every check that module's import (~5 ms). A source checkout has no such folder
    # inside the package, so the resources lookup found nothing there either.
    import policyengine

    package = Path(str(policyengine.__file__)).resolve().parent
    for candidate in (package / folder / name, package.parent / folder / name):
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    text: str | None = None
    try:  # a package that is not a folder (imported from a zip)
        import importlib.resources

        resource = importlib.resources.files("policyengine") / folder / name
        if resource.is_file():
            text = resource.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError, ModuleNotFoundError):
        text = None
    if text is None:
        raise FileNotFoundError(
            f"{folder}/{name} is missing from the package and from {package.parent / folder}; the installation is broken"
        )
    return text


# --------------------------------------------------------------------------------------------
# Validation

_TYPE_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}
_PLURAL_WORDS = {
    "integer": "integers",
    "number": "numbers",
    "string": "strings",
    "boolean": "booleans",
    "object": "mappings",
    "array": "lists",
    "null": "nulls",
}
# Errors about the shape of an object rather than about one of its values.
_SHAPE_KEYWORDS = {"required", "additionalProperties", "unevaluatedProperties", "dependentRequired"}
_SCALAR_KEYWORDS = {
    "enum",
    "const",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "multipleOf",
    "format",
}


def render_value(value: Any) -> str:
    """Show a user's value briefly: strings quoted, containers named, long text cut."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:57] + "..."
        return _quote(text)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return str(value)


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class _Describer:
    """Say in words what a (sub)schema expects: ``an integer >= 1``, ``one of deny, warn``."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def deref(self, schema: Any) -> Any:
        seen = 0
        while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#"):
            target: Any = self.root
            for part in schema["$ref"][1:].split("/")[1:]:
                part = part.replace("~1", "/").replace("~0", "~")
                target = target[int(part)] if isinstance(target, list) else target[part]
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **siblings} if isinstance(target, dict) else target
            seen += 1
            if seen > 20:
                break
        return schema

    def walk(self, schema_path: Sequence[Any]) -> Any:
        """Return the subschema at an absolute schema path, following ``$ref`` on the way."""
        node: Any = self.root
        for part in schema_path:
            node = self.deref(node)
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return None
        return node

    def describe(self, schema: Any, *, plural: bool = False) -> str:
        """Return what ``schema`` expects, e.g. ``an integer >= 1`` (``plural``: ``integers >= 1``)."""
        schema = self.deref(schema)
        if schema is True or not isinstance(schema, dict):
            return "any value"
        if "const" in schema:
            return _plain(schema["const"])
        if "enum" in schema:
            values = ", ".join(_plain(v) for v in schema["enum"])
            return f"values from {values}" if plural else f"one of {values}"
        for key in ("anyOf", "oneOf"):
            if key in schema and "type" not in schema:
                return " or ".join(self.describe(s) for s in schema[key])
        types = schema.get("type")
        type_list = [types] if isinstance(types, str) else list(types or [])
        if not type_list:
            if "properties" in schema or "required" in schema:
                type_list = ["object"]
            elif "items" in schema:
                type_list = ["array"]
        words = _PLURAL_WORDS if plural else _TYPE_WORDS
        if len(type_list) > 1:
            return " or ".join(words.get(t, t) for t in type_list)
        kind = type_list[0] if type_list else None
        if isinstance(schema.get("title"), str) and schema is not self.root:
            # A pattern is precise but hard to read: the subschema's title says it in words.
            text = ("items, each " if plural else "") + str(schema["title"])
            if kind == "string" and schema.get("examples"):
                text += f" (for example {render_value(schema['examples'][0])})"
            return text
        if kind is None:
            return "any value"
        text = words.get(kind, kind)
        if kind in ("integer", "number"):
            bounds = []
            if "minimum" in schema:
                bounds.append(f">= {schema['minimum']}")
            if "exclusiveMinimum" in schema:
                bounds.append(f"> {schema['exclusiveMinimum']}")
            if "maximum" in schema:
                bounds.append(f"<= {schema['maximum']}")
            if "exclusiveMaximum" in schema:
                bounds.append(f"< {schema['exclusiveMaximum']}")
            if bounds:
                text += " " + " and ".join(bounds)
        elif kind == "string":
            if "pattern" in schema:
                text += f" matching {schema['pattern']}"
                if schema.get("examples"):
                    text += f" (for example {render_value(schema['examples'][0])})"
            elif schema.get("minLength") == 1:
                text = "non-empty strings" if plural else "a non-empty string"
            elif "minLength" in schema:
                text += f" of at least {schema['minLength']} characters"
        elif kind == "array":
            low, high = schema.get("minItems"), schema.get("maxItems")
            inner = "items"
            if isinstance(schema.get("items"), dict):
                described = self.describe(schema["items"], plural=True)
                if described != "any value":
                    inner = described
            if low is not None and low == high:
                text = f"a list of exactly {low} {inner}"
            elif low == 1:
                text = f"a non-empty list of {inner}"
            elif low:
                text = f"a list of at least {low} {inner}"
            else:
                text = f"a list of {inner}"
            if plural:
                text = text.replace("a non-empty list", "non-empty lists", 1).replace("a list", "lists", 1)
        return text


class _Raw(Struct):
    """One reduced schema error: where, and what to say."""

    path: JsonPath
    message: str
    key: bool = False  # position at the key rather than at the value
    combined_with: tuple[str, ...] = ()  # keys this key cannot be combined with
    weak: bool = False  # dropped when a more specific problem is found at or under the same path
    missing: str | None = None  # the required key this problem says is missing
    suggests: str | None = None  # the key an unknown key is probably a misspelling of


class _Reducer:
    """Turn jsonschema's errors into one clear message per mistake."""

    def __init__(self, root: dict[str, Any], data: Any) -> None:
        self.describer = _Describer(root)
        self.data = data

    def reduce(self, error: ValidationError) -> list[_Raw]:
        path = tuple(error.absolute_path)
        instance = error.instance
        schema = error.schema if isinstance(error.schema, dict) else {}
        v = error.validator
        value: Any = error.validator_value
        if v in ("oneOf", "anyOf"):
            return self._alternatives(error)
        if v == "type" or v in _SCALAR_KEYWORDS - {"format"}:
            message = f"expected {self.describer.describe(schema)}, got {render_value(instance)}"
            if v == "enum" and isinstance(instance, str):
                words = [e for e in value if isinstance(e, str)]
                import difflib  # only for a mistake: a valid document does not import it

                close = difflib.get_close_matches(instance, words, n=1, cutoff=0.6)
                if close:
                    message += f"; did you mean {_quote(close[0])}?"
            return [_Raw(path, message)]
        if v in ("minItems", "maxItems"):
            return [_Raw(path, f"expected {self.describer.describe(schema)}, got {_count(instance)}")]
        if v == "required":
            missing = [k for k in value if isinstance(instance, dict) and k not in instance]
            return [_Raw(path, f"missing required key {_quote(k)}", missing=k) for k in missing]
        if v in ("additionalProperties", "unevaluatedProperties") and isinstance(instance, dict):
            allowed = list(schema.get("properties", {}))
            patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
            out = []
            for k in instance:
                if k in allowed or any(p.search(k) for p in patterns):
                    continue
                message = f"unknown key {_quote(k)}"
                import difflib

                close = difflib.get_close_matches(k, allowed, n=1, cutoff=0.6)
                if close:
                    message += f"; did you mean {_quote(close[0])}?"
                elif allowed:
                    message += "; expected one of " + ", ".join(allowed)
                out.append(_Raw(path + (k,), message, key=True, suggests=close[0] if close else None))
            return out
        if error.schema is False:
            return self._forbidden(error)
        if v == "uniqueItems" and isinstance(instance, list):
            seen: list[Any] = []
            for i, item in enumerate(instance):
                if item in seen:
                    return [_Raw(path + (i,), f"{render_value(item)} is listed more than once; list each value once")]
                seen.append(item)
        if v == "dependentRequired" and isinstance(instance, dict):
            out = []
            for key, needs in value.items():
                if key in instance:
                    out += [
                        _Raw(path, f"missing required key {_quote(n)} (needed with {_quote(key)})")
                        for n in needs
                        if n not in instance
                    ]
            return out
        return [_Raw(path, _clean(error.message))]

    def _forbidden(self, error: ValidationError) -> list[_Raw]:
        """A ``false`` schema: a key that must not be there.

        jsonschema leaves the key out of a ``false`` schema's error path, so the key is found
        again from the schema. Under ``dependentSchemas`` it means "cannot be combined with".
        """
        path = tuple(error.absolute_path)
        schema_path = list(error.absolute_schema_path)
        owner: tuple[str, ...] = ()
        if "dependentSchemas" in schema_path:
            i = len(schema_path) - 1 - schema_path[::-1].index("dependentSchemas")
            if i + 1 < len(schema_path):
                owner = (str(schema_path[i + 1]),)
        keys: list[str] = []
        if schema_path and schema_path[-1] == "properties":
            props = self.describer.walk(schema_path)
            parent = _at(self.data, path)
            if isinstance(props, dict) and isinstance(parent, dict):
                keys = [k for k, sub in props.items() if sub is False and k in parent]
        if not keys:
            return [_Raw(path, "no value is allowed here")]
        out = []
        for key in keys:
            if owner:
                message = f"key {_quote(key)} cannot be combined with"
                out.append(_Raw(path + (key,), message, key=True, combined_with=owner))
            else:
                out.append(_Raw(path + (key,), f"key {_quote(key)} is not allowed here", key=True))
        return out

    def _alternatives(self, error: ValidationError) -> list[_Raw]:
        path = tuple(error.absolute_path)
        instance = error.instance
        alternatives: Any = error.validator_value
        branches: list[Any] = list(alternatives)
        word = "exactly" if error.validator == "oneOf" else "at least"
        if not error.context:
            # More than one alternative of a oneOf matched: usually a forbidden key says it better.
            return [_Raw(path, _alternatives_text(branches, self.describer, word), weak=True)]
        by_branch: dict[int, list[ValidationError]] = {}
        for sub in error.context:
            by_branch.setdefault(int(sub.relative_schema_path[0]), []).append(sub)
        # A branch whose type does not fit the value is no candidate.
        viable = [
            i
            for i in range(len(branches))
            if not any(e.validator == "type" and not e.relative_path for e in by_branch.get(i, []))
        ]
        if not viable:
            expected = " or ".join(self.describer.describe(b) for b in branches)
            return [_Raw(path, f"expected {expected}, got {render_value(instance)}")]
        # A branch whose shape fits (its required keys are there, no unknown key): its errors are the ones.
        fitting = [
            i
            for i in viable
            if not any(e.validator in _SHAPE_KEYWORDS and not e.relative_path for e in by_branch.get(i, []))
        ]
        if len(fitting) == 1 or len(viable) == 1:
            chosen = fitting[0] if len(fitting) == 1 else viable[0]
            out: list[_Raw] = []
            for sub in by_branch.get(chosen, []):
                out += self.reduce(sub)
            return out
        if all(_required_only(self.describer.deref(b)) for b in branches):
            return [_Raw(path, _alternatives_text(branches, self.describer, word))]
        from jsonschema.exceptions import best_match

        best = best_match(e for i in viable for e in by_branch.get(i, []))
        return self.reduce(best) if best is not None else [_Raw(path, _clean(error.message))]


def _required_only(schema: Any) -> bool:
    return isinstance(schema, dict) and set(schema) <= {"required", "description"} and bool(schema.get("required"))


def _alternatives_text(branches: list[Any], describer: _Describer, word: str) -> str:
    resolved = [describer.deref(b) for b in branches]
    if all(_required_only(b) for b in resolved):
        if all(len(b["required"]) == 1 for b in resolved):
            keys = [_quote(b["required"][0]) for b in resolved]
            return f"expected {word} one of the keys {_join(keys, 'or')}"
        sets = [" and ".join(_quote(k) for k in b["required"]) for b in resolved]
        return f"expected {word} one of these sets of keys: " + "; ".join(sets)
    return f"expected {word} one of: " + "; ".join(describer.describe(b) for b in resolved)


def _at(data: Any, path: JsonPath) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _count(instance: Any) -> str:
    if isinstance(instance, list):
        n = len(instance)
        return "an empty list" if n == 0 else f"{n} item" + ("" if n == 1 else "s")
    return render_value(instance)


def _clean(message: str) -> str:
    return message.replace("'", '"')


def problem_order(p: Problem) -> tuple[int, int, str, str]:
    """Sort problems by where they are in the file, then by path and message."""
    return (p.line or 0, p.column or 0, p.path, p.message)


def validate(data: Any, positions: Positions, schema: dict[str, Any], *, file: str) -> list[Problem]:
    """Check ``data`` against a draft 2020-12 schema and return every problem, sorted by line.

    Each problem says where (``file:line:column`` and the JSON path), what is wrong and what is
    expected; alternatives (``oneOf``/``anyOf``, ``if``/``then``) are reduced to one line per mistake.
    """
    from policyengine.language.quickschema import Unsupported, is_valid

    try:
        if is_valid(schema, data):  # the common case, without importing jsonschema
            return []
    except Unsupported:
        pass
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schema)
    reducer = _Reducer(schema, data)
    errors = list(validator.iter_errors(data))
    # A wrong type makes the other checks of the same value noise ("5 is not a string" is enough).
    typed = {(tuple(e.absolute_path), id(e.schema)) for e in errors if e.validator == "type"}
    raws: list[_Raw] = []
    for error in errors:
        if error.validator != "type" and (tuple(error.absolute_path), id(error.schema)) in typed:
            continue
        raws += reducer.reduce(error)
    # A misspelled required key is one mistake: "did you mean" says it, "missing" would repeat it.
    suggested = {(r.path[:-1], r.suggests) for r in raws if r.suggests}
    raws = [r for r in raws if r.missing is None or (r.path, r.missing) not in suggested]
    strong = [r.path for r in raws if not r.weak]
    raws = [r for r in raws if not r.weak or not any(p[: len(r.path)] == r.path for p in strong)]
    # "key X cannot be combined with A" and "... with B" become one line.
    merged: list[_Raw] = []
    by_key: dict[JsonPath, _Raw] = {}
    for raw in raws:
        if raw.combined_with:
            first = by_key.get(raw.path)
            if first is not None:
                first.combined_with += tuple(k for k in raw.combined_with if k not in first.combined_with)
                continue
            by_key[raw.path] = raw
        merged.append(raw)
    problems: list[Problem] = []
    seen: set[tuple[JsonPath, str]] = set()
    for raw in merged:
        message = raw.message
        if raw.combined_with:
            message += " " + _join([_quote(k) for k in raw.combined_with], "or")
        if (raw.path, message) in seen:
            continue
        seen.add((raw.path, message))
        line, column = positions.locate(raw.path, key=raw.key)
        shown = raw.path[:-1] if raw.key else raw.path
        problems.append(Problem(file, line, column, format_path(shown), message))
    return sorted(problems, key=problem_order)
