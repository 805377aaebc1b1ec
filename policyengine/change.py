"""Read and validate a change file: the normalized facts of one deployment, as the local
provider reads them (``schemas/change.schema.json``). Providers build the same shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from policyengine import loader
from policyengine.errors import InvalidInputError

CHANGE_SCHEMA = "change.schema.json"


def load_change(path: str | Path) -> dict[str, Any]:
    """Read and validate a change file (the normalized facts of one deployment).

    Raises ``InvalidInputError(what="change")`` listing every problem, ``UsageError`` when the
    file cannot be read.
    """
    raw = loader.read_user_file(path, what="change")
    file = str(path)
    data, positions, problems = loader.parse_document(raw, file=file, what="change")
    problems = problems + loader.validate(data, positions, loader.load_schema(CHANGE_SCHEMA), file=file)
    if problems:
        raise InvalidInputError(sorted(problems, key=loader.problem_order), what="change")
    assert isinstance(data, dict)  # the schema requires a mapping  # noqa: S101
    return data
