"""The witness status format: its context and description (at most 140 characters), shared by the
publisher (``policyengine.lifecycle.witness``), the reader (``providers.deployments``), ``checks_passed``
(which never counts a witness context as a check) and ``evidence.witness`` (which judges them).

The context is ``policyengine/<environment>``; the description is::

    <decision> <bundle id> sha256:<first 16 hex of the bundle's SHA-256> head:<first 16 hex of the store head>

(``head:-`` when the store keeps no catalogue).
"""

from __future__ import annotations

from typing import Any

CONTEXT_PREFIX = "policyengine/"
"""Every witness status's context starts with this; ``checks_passed`` never counts such a status."""
MAX_DESCRIPTION = 140
"""GitHub refuses a longer commit status description."""
DIGEST_CHARS = 16


def context_for(environment: str) -> str:
    """The status context of an environment's witness."""
    return f"{CONTEXT_PREFIX}{environment}"


def is_witness_context(context: Any) -> bool:
    """Whether a status context is reserved for witnesses (``policyengine/...``)."""
    return isinstance(context, str) and context.startswith(CONTEXT_PREFIX)


def state_for(decision: str) -> str:
    """The status state: ``success`` for a decision that released the deploy, else ``failure``."""
    return "success" if decision in ("allow", "not_applicable") else "failure"
