"""What every provider returns, and the one thing a provider may ask of the outside: the
previous deploy, through an interface the caller passes in (providers open no archive)."""

from __future__ import annotations

from typing import Any, Protocol

from msgspec import Struct, field


class Gathered(Struct):
    """A provider's result: the change, and the raw API responses it used (secrets removed),
    which the evidence bundle keeps under ``raw/``."""

    change: dict[str, Any]
    raw: dict[str, bytes] = field(default_factory=dict)


class PreviousDeploys(Protocol):
    """Where a provider learns the previous deploy to an environment: the only trusted source
    (``evidence.history.VerifiedHistory`` reads signed bundles of the evidence store). The code
    host's deployments API may corroborate it but never stands alone: any job with access to
    an environment can create a deployment naming any commit."""

    def latest(self, repository: str, environment: str) -> dict[str, Any] | None:
        """``{"sha", "id", "url", "created_at", "source"}`` of the newest verified deploy, or None.

        Raises ``HistoryUnavailable`` when the record cannot be read."""
