"""The shapes the providers rely on, checked at the boundary before any answer is mapped.

Every JSON answer a provider uses is checked against a small spec of the fields it reads: ints
are ints (never bool, never huge), strings are strings, lists are lists of objects, commit SHAs
are 40 (or 64) hex digits, timestamps parse. An answer of another shape raises ``ApiError``
(``HTTP 200 but the answer has an unexpected shape: <where> ...``), which makes the fact it
feeds ``unavailable``: never a crash, and never an item silently skipped (a skipped pull
request or check could turn a deny into an allow).

A spec is built from ``INT``, ``COUNT``, ``STR``, ``SHA``, ``TIME``, ``BOOL``, ``ANY``,
``Opt(spec)`` (null or absent), ``Obj({key: spec})`` (an object; other keys are ignored),
``List(spec)`` and ``OneOf(spec, ...)``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from policyengine.providers.http import ApiError

MAX_INT = 2**53
"""Larger ids or counts than this are not a real API's (and would lose precision in JSON tools)."""

_SHA_RE = re.compile(r"^[0-9a-fA-F]{40}$|^[0-9a-fA-F]{64}$")


class ShapeError(ValueError):
    """Where an answer differs from its spec, and how."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where or 'the answer'} {problem}")


class Spec:
    """A check of one value; ``check`` raises ``ShapeError``."""

    def check(self, value: Any, where: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


@dataclass(frozen=True)
class _Int(Spec):
    minimum: int

    def check(self, value: Any, where: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ShapeError(where, f"must be an integer, not {_kind(value)}")
        if not self.minimum <= value <= MAX_INT:
            raise ShapeError(where, f"must be an integer from {self.minimum} to 2^53, not {value}")


class _Str(Spec):
    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, str):
            raise ShapeError(where, f"must be a string, not {_kind(value)}")


class _Sha(Spec):
    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, str) or not _SHA_RE.match(value):
            shown = repr(value)[:50] if isinstance(value, str) else _kind(value)
            raise ShapeError(where, f"must be a commit SHA (40 hex digits), not {shown}")


class _Time(Spec):
    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, str):
            raise ShapeError(where, f"must be a timestamp, not {_kind(value)}")
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ShapeError(where, f"must be an ISO 8601 timestamp, not {value[:40]!r}") from None
        if moment.tzinfo is None:
            raise ShapeError(where, f"must be a timestamp with a time zone, not {value[:40]!r}")


class _Bool(Spec):
    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, bool):
            raise ShapeError(where, f"must be true or false, not {_kind(value)}")


class _Any(Spec):
    def check(self, value: Any, where: str) -> None:
        return None


@dataclass(frozen=True)
class Opt(Spec):
    """``spec``, or null; a key with an ``Opt`` spec may also be absent."""

    spec: Spec

    def check(self, value: Any, where: str) -> None:
        if value is not None:
            self.spec.check(value, where)


@dataclass(frozen=True)
class Obj(Spec):
    """An object whose listed keys have the listed shapes (keys not listed are not read)."""

    fields: Mapping[str, Spec]

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise ShapeError(where, f"must be an object, not {_kind(value)}")
        for key, spec in self.fields.items():
            at = f"{where}.{key}" if where else key
            if key not in value:
                if isinstance(spec, Opt):
                    continue
                raise ShapeError(at, "is missing")
            spec.check(value[key], at)


@dataclass(frozen=True)
class List(Spec):
    """A list whose every item has the shape ``item``."""

    item: Spec

    def check(self, value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise ShapeError(where, f"must be a list, not {_kind(value)}")
        for i, item in enumerate(value):
            self.item.check(item, f"{where}[{i}]")


@dataclass(frozen=True)
class OneOf(Spec):
    """A value of any of the ``options``."""

    options: tuple[Spec, ...]

    def check(self, value: Any, where: str) -> None:
        errors: list[str] = []
        for option in self.options:
            try:
                option.check(value, where)
            except ShapeError as exc:
                errors.append(str(exc))
            else:
                return
        raise ShapeError(where, "has none of the expected shapes (" + "; ".join(errors)[:200] + ")")


INT = _Int(1)  # ids and numbers
COUNT = _Int(0)  # counts
STR = _Str()
SHA = _Sha()
TIME = _Time()
BOOL = _Bool()
ANY = _Any()


def check(method: str, path: str, data: Any, spec: Spec, where: str = "") -> Any:
    """Return ``data`` when it has the shape ``spec``; else raise ``ApiError`` naming where it differs."""
    try:
        spec.check(data, where)
    except ShapeError as exc:
        raise ApiError(method, path, 200, f"HTTP 200 but the answer has an unexpected shape: {exc}") from None
    return data


# -- GitHub ----------------------------------------------------------------------------------------

GH_USER = Obj({"login": STR})
GH_PERSON = Obj({"email": Opt(STR), "name": Opt(STR)})
GH_PULL_SIMPLE = Obj({
    "number": INT, "state": Opt(STR), "head": Obj({"sha": SHA}), "merge_commit_sha": Opt(SHA),
    "merged_at": Opt(TIME),
})
GH_PULL = Obj({
    "number": INT, "title": Opt(STR), "user": Opt(GH_USER), "head": Obj({"sha": SHA}),
    "merge_commit_sha": Opt(SHA), "html_url": Opt(STR), "state": STR, "merged": Opt(BOOL),
    "merged_at": Opt(TIME), "merged_by": Opt(GH_USER), "base": Opt(Obj({"ref": Opt(STR)})),
    "labels": Opt(List(Obj({"name": STR}))), "commits": Opt(COUNT), "changed_files": Opt(COUNT),
})
GH_REVIEW = Obj({"user": Opt(GH_USER), "state": STR, "commit_id": Opt(STR), "submitted_at": Opt(TIME)})
GH_COMMIT = Obj({
    "sha": SHA, "author": Opt(GH_USER), "committer": Opt(GH_USER),
    "commit": Obj({"message": Opt(STR), "author": Opt(GH_PERSON), "committer": Opt(GH_PERSON)}),
})
GH_FILE = Obj({"filename": STR, "previous_filename": Opt(STR)})
GH_COMMIT_WITH_FILES = Obj({**GH_COMMIT.fields, "files": Opt(List(GH_FILE))})
GH_CHECK_RUN = Obj({
    "name": STR, "status": STR, "conclusion": Opt(STR), "head_sha": Opt(SHA), "completed_at": Opt(TIME),
    "html_url": Opt(STR), "details_url": Opt(STR), "app": Opt(Obj({"slug": Opt(STR)})),
})
GH_STATUS = Obj({"context": STR, "state": STR, "created_at": Opt(TIME), "updated_at": Opt(TIME),
                 "target_url": Opt(STR), "creator": Opt(GH_USER)})
GH_DEPLOYMENT = Obj({"id": INT, "sha": SHA, "created_at": Opt(TIME), "url": Opt(STR)})
GH_DEPLOYMENT_STATUS = Obj({"state": STR})
GH_COMPARE = Obj({"status": STR, "total_commits": Opt(COUNT), "commits": List(GH_COMMIT),
                  "files": Opt(List(GH_FILE))})

# -- GitLab ----------------------------------------------------------------------------------------

GL_USER = Obj({"username": STR})
GL_MR_SIMPLE = Obj({"iid": INT, "sha": SHA, "state": STR, "merge_commit_sha": Opt(SHA),
                    "squash_commit_sha": Opt(SHA)})
GL_MR = Obj({
    "iid": INT, "title": Opt(STR), "author": Opt(GL_USER), "sha": SHA, "merge_commit_sha": Opt(SHA),
    "squash_commit_sha": Opt(SHA), "web_url": Opt(STR), "state": STR, "merge_user": Opt(GL_USER),
    "merged_by": Opt(GL_USER), "target_branch": Opt(STR),
    "labels": Opt(List(OneOf((STR, Obj({"name": STR}))))),
})
GL_APPROVALS = Obj({"approved_by": (List(Obj({"user": Opt(GL_USER), "approved_at": Opt(TIME)})))})  # null: a deleted user
GL_COMMIT = Obj({
    "id": SHA, "message": Opt(STR), "title": Opt(STR), "author_email": Opt(STR), "author_name": Opt(STR),
    "committer_email": Opt(STR), "committer_name": Opt(STR),
})
GL_DIFF = Obj({"new_path": STR, "old_path": Opt(STR)})
GL_CHANGES = Obj({"changes": List(GL_DIFF), "overflow": Opt(BOOL)})
GL_JOB = Obj({"name": STR, "status": STR, "commit": Opt(Obj({"id": Opt(SHA)})), "finished_at": Opt(TIME),
              "web_url": Opt(STR)})
GL_MEMBER = Obj({"username": STR, "state": Opt(STR)})
GL_DEPLOYMENT = Obj({"id": INT, "sha": SHA, "status": Opt(STR), "created_at": Opt(TIME),
                     "deployable": Opt(Obj({"web_url": Opt(STR)}))})
GL_COMPARE = Obj({"commits": List(GL_COMMIT), "diffs": List(GL_DIFF), "compare_timeout": Opt(BOOL)})
