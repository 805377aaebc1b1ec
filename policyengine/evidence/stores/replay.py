"""Reading a bundle back: unpack one for replay, and the policy members it was judged by.

The gate replays a bundle (``gate.replay``); the stores append records whose retention follows
the evaluation's policy (``outcomes``); the export rebuilds the policies of a period
(``audit.bundle_policy``). Each reads the members here, never the policy language itself.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from msgspec import Struct

from policyengine.errors import EvidenceError
from policyengine.evidence.format.bundle import (
    CHANGE,
    DECISION,
    FILES_DIR,
    MANIFEST,
    POLICY_DIR,
    ZIP_READ_ERRORS,
    member_name_problem,
    member_source,
)
from policyengine.evidence.format.records import is_evaluation, kind_of
from policyengine.evidence.stores.base import EvidenceStore


class Unpacked(Struct, frozen=True):
    """What a replay needs from a bundle: its recorded decision, change and policy bytes."""

    recorded: dict[str, Any]
    change: dict[str, Any]
    policy_member: str
    policy_raw: bytes
    redacted: list[str]


def unpack_for_replay(store: EvidenceStore, bundle_id: str, workspace: Path) -> Unpacked:
    """Unpack a bundle's ``files/`` into ``workspace`` and return its decision, change and policy.

    Member names were checked when the bundle was written and are checked again here, so
    nothing lands outside ``workspace``.
    """
    record = store.find(bundle_id)
    if not is_evaluation(record):
        from policyengine.errors import UsageError

        raise UsageError(f"bundle {bundle_id} is a {kind_of(record)} record, not an evaluation: there is no "
                         "decision to replay", hint=f"replay the evaluation it is about: {record.get('about_id')}")
    try:
        with store.open_bundle(record) as fh, zipfile.ZipFile(fh) as zf:
            manifest = json.loads(zf.read(MANIFEST))
            recorded = json.loads(zf.read(DECISION))
            change = json.loads(zf.read(CHANGE))
            policy_member = next(n for n in zf.namelist() if n.startswith(POLICY_DIR))
            policy_raw = zf.read(policy_member)
            for name in zf.namelist():
                if not name.startswith(FILES_DIR):
                    continue
                if member_name_problem(name):
                    raise EvidenceError(f"bundle {bundle_id} has an unsafe member name {name!r}")
                source = member_source(name[len(FILES_DIR):])
                parts = source.split("/")
                if source.startswith("/") or "\0" in source or any(part in ("", ".", "..") for part in parts):
                    raise EvidenceError(f"bundle {bundle_id} has an unsafe member name {name!r}")
                target = workspace / source
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(name) as src, open(target, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
    except FileNotFoundError as exc:
        raise EvidenceError(f"bundle {bundle_id} is recorded but {store.location(record)} is missing") from exc
    except (*ZIP_READ_ERRORS, KeyError, ValueError, StopIteration) as exc:
        raise EvidenceError(f"bundle {bundle_id} cannot be replayed: {exc}",
                            hint=f"run `{store.command('evidence', 'verify', bundle_id)}`") from exc
    redacted = [m["path"] for m in manifest.get("members", []) if isinstance(m, dict) and m.get("redacted")]
    return Unpacked(recorded=recorded, change=change, policy_member=policy_member, policy_raw=policy_raw,
                    redacted=redacted)


def policy_bases(names: Sequence[str]) -> list[str]:
    """The ``policy-base/N-name`` members among a bundle's ``names``, nearest base first."""
    bases = [n for n in names if n.startswith("policy-base/")]
    return sorted(bases, key=lambda n: int(n.split("/", 1)[1].split("-", 1)[0] or 0))


def policy_members(store: EvidenceStore, record: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """The ``policy-base/`` members of a bundle, the deepest base first, then its ``policy/``
    member: (name, bytes) each; raises EvidenceError."""
    try:
        with store.open_bundle(record) as fh, zipfile.ZipFile(fh) as zf:
            names = zf.namelist()
            member = next(n for n in names if n.startswith(POLICY_DIR))
            return [(name, zf.read(name)) for name in [*reversed(policy_bases(names)), member]]
    except (*ZIP_READ_ERRORS, OSError, StopIteration) as exc:
        raise EvidenceError(f"the policy of bundle {record.get('id')} cannot be read: {exc}") from exc


def policy_retention(store: EvidenceStore, record: Mapping[str, Any]) -> str | None:
    """The ``evidence.retention`` the bundle's policy set (its own, else its nearest base's), read
    with the YAML reader; None when there is none or it cannot be read."""
    from policyengine.language import loader
    from policyengine.errors import PolicyEngineError

    try:
        parts = policy_members(store, record)
    except EvidenceError:
        return None
    for name, raw in reversed(parts):  # the bundle's own policy first, then its bases
        try:
            data, _, problems = loader.parse_document(raw, file=name, what="policy")
        except (ValueError, PolicyEngineError):
            return None
        evidence = data.get("evidence") if isinstance(data, dict) and not problems else None
        retention = evidence.get("retention") if isinstance(evidence, dict) else None
        if isinstance(retention, str):
            return retention
    return None
