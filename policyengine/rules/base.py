"""The shape every rule type shares, and the context a rule is judged in."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from msgspec import Struct, field

from policyengine.facts import FactRequest, Facts
from policyengine.models import Enforcement, Outcome


class RuleSpec(Struct, frozen=True):
    """One rule of a loaded policy: the common keys, plus the type's own parameters."""

    id: str
    type: str
    enforcement: Enforcement = Enforcement.DENY
    controls: tuple[str, ...] = ()
    description: str | None = None
    when_paths: tuple[str, ...] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    line: int | None = None


class Context(Struct, frozen=True):
    """Everything a rule may look at. Pure data: no files, no network, no environment, no clock."""

    change: dict[str, Any]
    facts: Facts
    now: datetime  # timezone-aware


def unavailable(change: dict[str, Any], *facts: str) -> str | None:
    """Say why a fact a rule needs could not be gathered (a provider's API failed), or None.

    Providers record such facts in the change's ``unavailable`` map (fact name to cause);
    a rule that needs one of them returns ``error``: fail closed, naming the cause.
    """
    missing = change.get("unavailable") or {}
    causes = [f"{fact}: {missing[fact]}" for fact in facts if fact in missing]
    return "; ".join(causes) if causes else None


class RuleType:
    """Base class of rule types. Subclasses register in ``policyengine.rules.RULE_TYPES``.

    The JSON Schema has already checked the parameters' shapes when a rule is built;
    ``check_params`` adds the checks a schema cannot express (a time zone that exists,
    a cron expression that parses), so that they are caught at load time. ``needs`` lists
    the facts a rule reads beyond the change (``policyengine.facts``); ``evaluate`` then
    judges from ``Context`` alone and never does I/O.
    """

    type_name: ClassVar[str] = ""

    def __init__(self, spec: RuleSpec) -> None:
        self.spec = spec
        self.params = spec.params

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> list[tuple[str, str]]:
        """Return ``(sub-path, message)`` for every semantic problem; sub-path like ``deny[1].cron``."""
        return []

    def paths(self) -> list[str]:
        """Workspace paths or globs this rule reads (checked at load time to stay inside)."""
        return []

    def needs(self) -> list[FactRequest]:
        """The facts this rule reads beyond the change, gathered before it is judged."""
        return []

    def evaluate(self, ctx: Context) -> Outcome:  # pragma: no cover - abstract
        raise NotImplementedError
