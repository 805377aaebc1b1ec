"""The platform as witness: what a witness status says, and how ``audit reconcile`` judges it.

After recording, a step of its own (``evidence witness``, ``policyengine.lifecycle.witness``) publishes each
decision as a commit status on the deployed commit, where the client can neither backdate nor
quietly delete it: the platform stamps its own time and creator. The status's context is
``policyengine/<environment>``; its description (at most 140 characters) is::

    <decision> <bundle id> sha256:<first 16 hex of the bundle's SHA-256> head:<first 16 hex of the store head>

(``head:-`` when the store keeps no catalogue). ``audit reconcile --witness`` reads the statuses
back and reports a **witness mismatch** (``judge_witnesses``, pure) when:

* the description is not one the gate writes (an edited or forged status);
* the bundle it names is not in the store (a witnessed bundle deleted);
* the bundle says another decision, commit, repository or environment than its witness;
* the bundle's SHA-256 does not start with the witnessed digest (a bundle rewritten);
* the store head it names is no catalogue of the store (a store rewritten);
* the bundle's time (the timestamp authority's where the bundle has a token) is more than
  ``TOLERANCE`` from the platform's time of the status (a backdated bundle);
* the status was written by another creator than the configured ones (``--witness-creator``).

A bundle without a witness is not a mismatch (publishing is off without a witness token); only
what the platform says is compared. GitHub's GraphQL gives the latest status of each context of
a commit, so of two decisions on one commit and environment only the later one's witness is
read back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from msgspec import Struct

from policyengine.lifecycle.witness_format import DIGEST_CHARS, MAX_DESCRIPTION, context_for
from policyengine.providers.deployments import WitnessStatus

TOLERANCE = timedelta(minutes=10)

_DESCRIPTION_RE = re.compile(
    r"^(?P<decision>allow|deny|not_applicable) (?P<bundle>[0-9]{8}T[0-9]{6}Z-[0-9a-f]{12}) "
    r"sha256:(?P<sha256>[0-9a-f]{16}) head:(?P<head>[0-9a-f]{16}|-)$")


def description(decision: str, bundle_id: str, sha256: str, store_head: str | None) -> str:
    """The witness description; at most ``MAX_DESCRIPTION`` characters (asserted by the format)."""
    head = store_head[:DIGEST_CHARS] if store_head else "-"
    text = f"{decision} {bundle_id} sha256:{sha256[:DIGEST_CHARS]} head:{head}"
    if not _DESCRIPTION_RE.match(text) or len(text) > MAX_DESCRIPTION:
        raise ValueError(f"not a witness description: {text!r}")
    return text


class Said(Struct, frozen=True):
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


class Mismatch(Struct, frozen=True):
    """A witness that disagrees with the store (``reconcile`` makes it a ``witness-mismatch`` finding)."""

    status: WitnessStatus
    detail: str
    bundle_id: str | None = None


def _t(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def judge_witnesses(statuses: Iterable[WitnessStatus], records: Mapping[str, Mapping[str, Any]], *,
                    store_heads: Iterable[str], creators: Sequence[str] = (),
                    times: Mapping[str, str] | None = None) -> list[Mismatch]:
    """Compare (pure) each witness status with the store.

    ``records``: the store's index lines by bundle id; ``store_heads``: the SHA-256 of every
    catalogue the store holds; ``creators``: the logins allowed to write witnesses (any when
    empty); ``times``: a bundle's independent time (the timestamp authority's) by id, where it
    has one, else its ``created_at`` is compared."""
    heads = [h for h in store_heads]
    allowed = {c.lower() for c in creators}
    out: list[Mismatch] = []
    for st in statuses:
        said = parse_description(st.description)
        if said is None:
            out.append(Mismatch(st, f"the status {context_for(st.environment)} is not a witness the gate writes "
                                    f"(description {str(st.description)[:MAX_DESCRIPTION]!r}): edited or forged"))
            continue
        problems: list[str] = []
        if allowed and (st.creator or "").lower() not in allowed:
            problems.append(f"written by {st.creator or 'an unknown creator'}, not by "
                            f"{' or '.join(sorted(allowed))}")
        record = records.get(said.bundle_id)
        if record is None:
            problems.append(f"it witnesses bundle {said.bundle_id}, which the store does not hold")
            out.append(Mismatch(st, "; ".join(problems), said.bundle_id))
            continue
        stated = {"decision": record.get("decision"), "commit": str(record.get("commit") or "").lower(),
                  "repository": record.get("repository"), "environment": record.get("environment")}
        witnessed = {"decision": said.decision, "commit": st.commit.lower(), "repository": st.repository,
                     "environment": st.environment}
        for key in ("decision", "commit", "repository", "environment"):
            if stated[key] != witnessed[key]:
                problems.append(f"the bundle's {key} is {stated[key]!r}, its witness says {witnessed[key]!r}")
        sha = str(record.get("sha256") or "")
        if not sha.startswith(said.sha256):
            problems.append(f"the bundle's sha256 is {sha[:DIGEST_CHARS]}..., its witness says {said.sha256}...")
        if said.head is not None and not any(h.startswith(said.head) for h in heads):
            problems.append(f"the witnessed store head {said.head}... is no catalogue of the store")
        when = (times or {}).get(said.bundle_id) or str(record.get("created_at") or "")
        try:
            gap = abs(_t(st.time) - _t(when))
        except ValueError:
            problems.append(f"the bundle's time {when!r} cannot be compared with its witness")
        else:
            if gap > TOLERANCE:
                problems.append(f"the bundle says {when}, the platform witnessed it at {st.time} "
                                f"({int(gap.total_seconds() // 60)} minutes apart; tolerance "
                                f"{int(TOLERANCE.total_seconds() // 60)})")
        if problems:
            out.append(Mismatch(st, "; ".join(problems), said.bundle_id))
    return out
