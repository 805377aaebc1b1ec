"""Read and validate a change file: the normalized facts of one deployment, as the local
provider reads them (``schemas/change.schema.json``). Providers build the same shape.

A change file's facts are self-declared: nobody but its author vouches for them (who approved,
with which access). The local provider therefore sets ``facts_source: self-declared`` on every
change it reads (``SELF_DECLARED``), and ``load_change`` refuses a file that claims a code host
as its source. The evidence bundle keeps it,
so an auditor sees which decisions rest on a file rather than on a code host's API.

Times (``submitted_at`` of reviews, ``completed_at`` of checks, ``created_at`` of the previous
deployment, the optional ``committed_at`` of commits, which ``audit summary`` measures lead time
for changes from) must be ISO 8601 with a zone (``Z`` or an offset): a time that cannot be parsed or
that has no zone is invalid input (one problem each, ``file:line:column``), because the order of
reviews, and so whether changes were requested after an approval, depends on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from policyengine.language import loader
from policyengine.errors import InvalidInputError, Problem

CHANGE_SCHEMA = "change.schema.json"
SELF_DECLARED = "self-declared"


def load_change(path: str | Path) -> dict[str, Any]:
    """Read and validate a change file (the normalized facts of one deployment).

    Raises ``InvalidInputError(what="change")`` listing every problem, ``UsageError`` when the
    file cannot be read.
    """
    raw = loader.read_user_file(path, what="change")
    file = str(path)
    data, positions, problems = loader.parse_document(raw, file=file, what="change")
    problems = problems + loader.validate(data, positions, loader.load_schema(CHANGE_SCHEMA), file=file)
    if isinstance(data, dict):
        problems += _semantic_problems(data, positions, file)
    if problems:
        raise InvalidInputError(sorted(set(problems), key=loader.problem_order), what="change")
    assert isinstance(data, dict)  # the schema requires a mapping  # noqa: S101
    return data


def _times(data: dict[str, Any]) -> Iterator[tuple[loader.JsonPath, Any]]:
    """Every time of a change, with its path."""

    def reviews(base: loader.JsonPath, items: Any) -> Iterator[tuple[loader.JsonPath, Any]]:
        for i, r in enumerate(items if isinstance(items, list) else []):
            if isinstance(r, dict) and "submitted_at" in r:
                yield (*base, i, "submitted_at"), r["submitted_at"]

    yield from reviews(("reviews",), data.get("reviews"))
    commits = data.get("commits")
    for i, c in enumerate(commits if isinstance(commits, list) else []):
        if isinstance(c, dict) and "committed_at" in c:
            yield ("commits", i, "committed_at"), c["committed_at"]
    checks = data.get("checks")
    for i, c in enumerate(checks if isinstance(checks, list) else []):
        if isinstance(c, dict) and "completed_at" in c:
            yield ("checks", i, "completed_at"), c["completed_at"]
    rng = data.get("range")
    if isinstance(rng, dict):
        prev = rng.get("previous_deployment")
        if isinstance(prev, dict) and "created_at" in prev:
            yield ("range", "previous_deployment", "created_at"), prev["created_at"]
        shipped = rng.get("commits")
        for i, c in enumerate(shipped if isinstance(shipped, list) else []):
            if isinstance(c, dict) and "committed_at" in c:
                yield ("range", "commits", i, "committed_at"), c["committed_at"]
        prs = rng.get("pull_requests")
        for j, pr in enumerate(prs if isinstance(prs, list) else []):
            if isinstance(pr, dict):
                yield from reviews(("range", "pull_requests", j, "reviews"), pr.get("reviews"))


def time_problem(value: Any) -> str | None:
    """Why ``value`` is not an ISO 8601 time with a zone (None: it is one, or it is null)."""
    if value is None or not isinstance(value, str):
        return None  # null is allowed; another type is the schema's problem
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return f"expected an ISO 8601 time with a zone (e.g. 2026-11-23T15:00:00Z), got {value!r}"
    if moment.tzinfo is None:
        return f"the time {value!r} has no zone: add Z or an offset (e.g. 2026-11-23T15:00:00Z)"
    return None


def _semantic_problems(data: dict[str, Any], positions: loader.Positions, file: str) -> list[Problem]:
    out: list[Problem] = []
    for path, value in _times(data):
        why = time_problem(value)
        if why:
            line, column = positions.locate(path)
            out.append(Problem(file, line, column, loader.format_path(path), why))
    source = data.get("facts_source")
    if source in ("github", "gitlab"):
        line, column = positions.locate(("facts_source",))
        out.append(Problem(file, line, column, "facts_source",
                           f"a change file's facts are self-declared; it cannot claim {source!r} (remove the key)"))
    return out
