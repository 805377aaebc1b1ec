"""The witness status format: its context and description (at most 140 characters), shared by the
publisher (``policyengine.lifecycle.witness``), the reader (``providers.deployments``), ``checks_passed``
(which never counts a witness context as a check) and ``evidence.witness`` (which judges them).

The context is ``policyengine/<environment>``; the description is::

    <decision> <bundle id> sha256:<first 16 hex of the bundle's SHA-256> head:<first 16 hex of the store head>

(``head:-`` when the store keeps no catalogue).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

CONTEXT_PREFIX = "policyengine/"
"""Every witness status's context starts with this; ``checks_passed`` never counts such a status."""
MAX_DESCRIPTION = 140
"""GitHub refuses a longer commit status description."""
DIGEST_CHARS = 16

_DESCRIPTION_RE = re.compile(
    r"^(?P<decision>allow|deny|not_applicable) (?P<bundle>[0-9]{8}T[0-9]{6}Z-[0-9a-f]{12}) "
    r"sha256:(?P<sha256>[0-9a-f]{16}) head:(?P<head>[0-9a-f]{16}|-)$")


def context_for(environment: str) -> str:
    """The status context of an environment's witness."""
    return f"{CONTEXT_PREFIX}{environment}"


def is_witness_context(context: Any) -> bool:
    """Whether a status context is reserved for witnesses (``policyengine/...``)."""
    return isinstance(context, str) and context.startswith(CONTEXT_PREFIX)


def description(decision: str, bundle_id: str, sha256: str, store_head: str | None) -> str:
    """The witness description; at most ``MAX_DESCRIPTION`` characters (asserted by the format)."""
    head = store_head[:DIGEST_CHARS] if store_head else "-"
    text = f"{decision} {bundle_id} sha256:{sha256[:DIGEST_CHARS]} head:{head}"
    if not _DESCRIPTION_RE.match(text) or len(text) > MAX_DESCRIPTION:
        raise ValueError(f"not a witness description: {text!r}")
    return text


def state_for(decision: str) -> str:
    """The status state: ``success`` for a decision that released the deploy, else ``failure``."""
    return "success" if decision in ("allow", "not_applicable") else "failure"


@dataclass(frozen=True)
class Said:
    """What one witness description says."""

    decision: str
    bundle_id: str
    sha256: str
    head: str | None


def parse_description(text: Any) -> Said | None:
    """The witness a status description states, or None when it is not one the gate writes."""
    if not isinstance(text, str):
        return None
    m = _DESCRIPTION_RE.match(text)
    if m is None:
        return None
    return Said(m["decision"], m["bundle"], m["sha256"], None if m["head"] == "-" else m["head"])


@dataclass(frozen=True)
class WitnessStatus:
    """One witness status as the platform recorded it."""

    source: str
    repository: str
    environment: str
    commit: str
    description: str | None
    time: str
    creator: str | None
    state: str | None = None
    url: str | None = None
