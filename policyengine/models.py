"""Immutable values shared by every layer: rule statuses, results and the decision."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from policyengine.errors import UsageError


class Status(str, enum.Enum):
    """One meaning each, used in every output."""

    PASS = "pass"  # the rule is met
    FAIL = "fail"  # facts were read and the rule is not met
    ERROR = "error"  # facts could not be read: fail closed
    WARN = "warn"  # an `enforcement: warn` rule that did not pass
    SKIPPED = "skipped"  # the rule does not apply (its `when` did not match)


class Enforcement(str, enum.Enum):
    DENY = "deny"
    WARN = "warn"


@dataclass(frozen=True)
class FileRead:
    """A workspace file a rule read; copied into the evidence bundle under ``files/``."""

    relpath: str
    abspath: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Outcome:
    """What a rule type returns: pass, fail or error, with a message a person understands."""

    status: Status
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    files: tuple[FileRead, ...] = ()


@dataclass(frozen=True)
class RuleResult:
    id: str
    type: str
    status: Status
    enforcement: Enforcement
    message: str
    controls: tuple[str, ...]
    description: str | None
    details: dict[str, Any]
    files: tuple[FileRead, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "status": self.status.value,
            "enforcement": self.enforcement.value,
            "message": self.message,
            "controls": list(self.controls),
            "details": self.details,
        }
        if self.description:
            out["description"] = self.description
        return out


@dataclass(frozen=True)
class Decision:
    decision: str  # "allow" | "deny"
    evaluated_at: str
    policy: dict[str, Any]
    change: dict[str, Any]
    rules: tuple[RuleResult, ...]
    applies: bool = True
    note: str | None = None

    @property
    def allowed(self) -> bool:
        return self.decision == "allow"

    @property
    def files(self) -> tuple[FileRead, ...]:
        seen: dict[str, FileRead] = {}
        for r in self.rules:
            for f in r.files:
                seen.setdefault(f.relpath, f)
        return tuple(seen.values())


def iso_utc(moment: datetime) -> str:
    """Render an aware datetime as ISO 8601 UTC with a ``Z``."""
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def parse_instant(value: str, *, option: str = "--now") -> datetime:
    """Parse an ISO 8601 time that carries its zone (``Z`` or an offset): the one parser of
    instants given by people or read back from evidence. ``option`` names it in errors."""
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(f"{option}: {value!r} is not an ISO 8601 time",
                         hint="write e.g. 2026-11-24T15:00:00Z") from None
    if moment.tzinfo is None:
        raise UsageError(f"{option}: {value!r} has no time zone",
                         hint="add Z or an offset, e.g. 2026-11-24T10:00:00-05:00")
    return moment
