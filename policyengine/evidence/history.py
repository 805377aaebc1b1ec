"""The previous deploy to an environment, as an evidence archive records it.

Providers ask for it through the small ``providers.PreviousDeploys`` interface when the code
host cannot say; the gate passes them an ``ArchiveHistory``, so providers never open an
archive themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from policyengine.errors import EvidenceError


class ArchiveHistory:
    """Previous deploys read from a local evidence archive's index."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def latest(self, repository: str, environment: str) -> dict[str, Any] | None:
        """The newest allowed decision for ``repository`` and ``environment``, or None."""
        from policyengine.evidence.archive import LocalArchive

        store = LocalArchive(self.root)
        if not store.index_path.is_file():
            return None
        try:
            refs = store.list()
        except (EvidenceError, OSError, ValueError):
            return None
        best = None
        for ref in refs:
            if (ref.decision == "allow" and ref.commit and ref.repository == repository
                    and (ref.environment or "").casefold() == environment.casefold()
                    and (best is None or ref.created_at > best.created_at)):
                best = ref
        if best is None:
            return None
        return {"sha": best.commit, "id": best.id, "url": None, "created_at": best.created_at,
                "source": "evidence-archive"}
