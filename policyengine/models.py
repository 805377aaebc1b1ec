"""Immutable values shared by every layer: rule statuses, results and the decision."""

from __future__ import annotations

import enum
import unicodedata
from datetime import datetime, timezone
from typing import Any

from msgspec import Struct, field

from policyengine.errors import UsageError


class Status(str, enum.Enum):
    """One meaning each, used in every output."""

    PASS = "pass"  # the rule is met
    FAIL = "fail"  # facts were read and the rule is not met
    ERROR = "error"  # facts could not be read: fail closed
    WARN = "warn"  # an `enforcement: warn` rule that did not pass
    SKIPPED = "skipped"  # the rule does not apply (its `when` did not match)
    WAIVED = "waived"  # the rule did not pass, and an active waiver covers it: it does not deny


class Enforcement(str, enum.Enum):
    DENY = "deny"
    WARN = "warn"


class FileRead(Struct, frozen=True):
    """A workspace file a rule read; copied into the evidence bundle under ``files/``."""

    relpath: str
    abspath: str
    sha256: str
    size: int


class Outcome(Struct, frozen=True):
    """What a rule type returns: pass, fail or error, with a message a person understands."""

    status: Status
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    files: tuple[FileRead, ...] = ()


class RuleResult(Struct, frozen=True):
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


NOT_APPLICABLE = "not_applicable"
"""The decision when the policy does not cover the change's environment and the policy opted in
(``not_applicable: pass``): nothing was judged. Never an allow, never a deployment."""


class Decision(Struct, frozen=True):
    decision: str  # "allow" | "deny" | "not_applicable"
    evaluated_at: str
    policy: dict[str, Any]
    change: dict[str, Any]
    rules: tuple[RuleResult, ...]
    applies: bool = True
    note: str | None = None
    simulated: bool = False
    """Set by the gate (``--simulate``): a what-if evaluation, never counted as a deployment."""
    clock: dict[str, str] | None = None
    """Set by the gate: ``{"source": "system"|"override"|"simulated", "wall_time": ISO 8601}``."""
    waivers: tuple[dict[str, Any], ...] = ()
    """Every waiver the judge considered, with what became of it (``waivers.WaiverUse.to_json``)."""
    emergency: dict[str, Any] | None = None
    """Set when an emergency was asked for (``emergency.apply``): who declared it, why, what it waived."""

    @property
    def is_emergency(self) -> bool:
        """An allowed emergency: a deploy that skipped rules and awaits post-facto approval."""
        return self.allowed and bool(self.emergency and self.emergency.get("approval_required"))

    @property
    def allowed(self) -> bool:
        return self.decision == "allow"

    @property
    def not_applicable(self) -> bool:
        return self.decision == NOT_APPLICABLE

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


# -- environment names ----------------------------------------------------------------------

# Characters that show nothing (or nothing distinct) but are not in the categories below.
_INVISIBLE_EXTRA = frozenset({0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x2800, 0x3164, 0xFFA0}
                             | set(range(0xFE00, 0xFE10)) | set(range(0xE0100, 0xE01F0)))
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"})
_CONTROL_NAMES = {0x09: "CHARACTER TABULATION", 0x0A: "LINE FEED", 0x0B: "LINE TABULATION", 0x0C: "FORM FEED",
                  0x0D: "CARRIAGE RETURN", 0x00: "NULL", 0x1B: "ESCAPE", 0x7F: "DELETE", 0x85: "NEXT LINE"}


def describe_char(ch: str) -> str:
    """``U+200B ZERO WIDTH SPACE``: a character named so a person can find it."""
    code = ord(ch)
    name = _CONTROL_NAMES.get(code) or unicodedata.name(ch, "")
    if not name:
        category = unicodedata.category(ch)
        name = {"Cc": "CONTROL CHARACTER", "Cs": "SURROGATE", "Co": "PRIVATE USE CHARACTER"}.get(
            category, "UNASSIGNED CHARACTER")
    return f"U+{code:04X} {name}"


def environment_problem(name: str) -> str | None:
    """Say what makes ``name`` unfit as an environment name, or return None.

    An environment name decides which policy applies, so two names that look the same must be
    the same: no control character (C0, C1, tab, newline), no invisible character (Unicode
    Cf, Zl, Zp, Zs other than a plain inner space, e.g. U+200B ZERO WIDTH SPACE, U+00A0, U+FEFF,
    bidi marks; surrogates, private-use and unassigned code points; fillers and variation
    selectors), and no whitespace at either end. Inner plain spaces are fine (both code hosts
    allow them). Positions count from 0, like a string index.
    """
    if name == "":
        return "the environment name is empty"
    for i, ch in enumerate(name):
        code = ord(ch)
        if ch == " ":
            if i == 0 or i == len(name) - 1:
                where = "leading" if i == 0 else "trailing"
                return f"{where} {describe_char(ch)} at position {i}"
            continue
        if unicodedata.category(ch) in _BAD_CATEGORIES or code in _INVISIBLE_EXTRA:
            kind = "control character" if unicodedata.category(ch) == "Cc" else "invisible character"
            return f"{kind} {describe_char(ch)} at position {i}"
        if ch.isspace():  # pragma: no cover - every whitespace character is in a category above
            return f"whitespace {describe_char(ch)} at position {i}"
    return None
