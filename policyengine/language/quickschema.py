"""A fast yes/no check of a document against our JSON Schemas, on the hot path of every run.

Importing jsonschema costs 50-100 ms, most of a ``check``'s start. Valid documents are the
common case, and for them a yes is all that is needed; jsonschema (the published schema's
reference implementation) is loaded only when this says no, to explain every problem.

This interprets the subset of draft 2020-12 our schemas use. It never decides alone what it
does not understand: a keyword outside the subset raises ``Unsupported`` and the caller asks
jsonschema. Formats are annotations here, as they are for jsonschema without a format
checker. ``tests/test_quickschema.py`` checks that it agrees with jsonschema on the bundled
policies, changes and fixtures and on thousands of mutations of them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

# Keywords that assert nothing.
_ANNOTATIONS = frozenset({"$schema", "$id", "$defs", "$comment", "title", "description", "default", "examples",
                          "format", "deprecated", "readOnly", "writeOnly"})
_KNOWN = _ANNOTATIONS | frozenset({
    "$ref", "type", "enum", "const", "properties", "additionalProperties", "required", "minProperties",
    "propertyNames", "dependentSchemas", "items", "prefixItems", "minItems", "maxItems", "uniqueItems", "minLength",
    "maxLength", "pattern", "minimum", "maximum", "allOf", "anyOf", "oneOf", "if", "then", "else",
})


class Unsupported(Exception):  # noqa: N818 - a signal, not a failure
    """The schema uses a keyword this checker does not implement: ask jsonschema."""


@functools.lru_cache(maxsize=512)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _is_type(value: Any, name: str) -> bool:
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if name == "integer":
        if isinstance(value, bool):
            return False
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    raise Unsupported(f"type {name!r}")


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1, and 1 equals 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


class _Checker:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root

    def _resolve(self, ref: str) -> Any:
        if not ref.startswith("#"):
            raise Unsupported(f"$ref {ref!r}")
        node: Any = self.root
        for part in ref[1:].split("/")[1:] if ref != "#" else []:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, list):
                node = node[int(part)]
            elif isinstance(node, Mapping) and part in node:
                node = node[part]
            else:
                raise Unsupported(f"$ref {ref!r} does not resolve")
        return node

    def valid(self, schema: Any, value: Any) -> bool:  # noqa: C901 - one branch per keyword
        if schema is True:
            return True
        if schema is False:
            return False
        if not isinstance(schema, Mapping):
            raise Unsupported("a schema that is not an object")
        unknown = set(schema) - _KNOWN
        if unknown:
            raise Unsupported(", ".join(sorted(unknown)))
        if "$ref" in schema and not self.valid(self._resolve(schema["$ref"]), value):
            return False
        if "type" in schema:
            types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if not any(_is_type(value, t) for t in types):
                return False
        if "enum" in schema and not any(_equal(value, e) for e in schema["enum"]):
            return False
        if "const" in schema and not _equal(value, schema["const"]):
            return False
        if isinstance(value, str):
            if "minLength" in schema and len(value) < schema["minLength"]:
                return False
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                return False
            if "pattern" in schema and not _regex(schema["pattern"]).search(value):
                return False
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if "minimum" in schema and value < schema["minimum"]:
                return False
            if "maximum" in schema and value > schema["maximum"]:
                return False
        if isinstance(value, list) and not self._array(schema, value):
            return False
        if isinstance(value, dict) and not self._object(schema, value):
            return False
        if "allOf" in schema and not all(self.valid(s, value) for s in schema["allOf"]):
            return False
        if "anyOf" in schema and not any(self.valid(s, value) for s in schema["anyOf"]):
            return False
        if "oneOf" in schema and sum(1 for s in schema["oneOf"] if self.valid(s, value)) != 1:
            return False
        if "if" in schema:
            branch = "then" if self.valid(schema["if"], value) else "else"
            if branch in schema and not self.valid(schema[branch], value):
                return False
        return True

    def _array(self, schema: Mapping[str, Any], value: list[Any]) -> bool:
        if "minItems" in schema and len(value) < schema["minItems"]:
            return False
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            return False
        prefix = schema.get("prefixItems") or []
        for item, sub in zip(value, prefix, strict=False):
            if not self.valid(sub, item):
                return False
        if "items" in schema and not all(self.valid(schema["items"], item) for item in value[len(prefix):]):
            return False
        if schema.get("uniqueItems"):
            for i, a in enumerate(value):
                if any(_equal(a, b) for b in value[i + 1:]):
                    return False
        return True

    def _object(self, schema: Mapping[str, Any], value: dict[str, Any]) -> bool:
        if any(k not in value for k in schema.get("required", ())):
            return False
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            return False
        props = schema.get("properties") or {}
        for key, item in value.items():
            if key in props:
                if not self.valid(props[key], item):
                    return False
            elif "additionalProperties" in schema and not self.valid(schema["additionalProperties"], item):
                return False
            if "propertyNames" in schema and not self.valid(schema["propertyNames"], key):
                return False
        for key, sub in (schema.get("dependentSchemas") or {}).items():
            if key in value and not self.valid(sub, value):
                return False
        return True


def is_valid(schema: Mapping[str, Any], value: Any) -> bool:
    """Whether ``value`` is valid against ``schema``; raises ``Unsupported`` when unsure."""
    return _Checker(schema).valid(schema, value)
