"""What an auditor does with an archive: read a bundle, unpack one for replay, export a period.

No click and no printing here: the CLI renders the results and reports progress.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import random
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from policyengine.errors import EvidenceError
from policyengine.evidence.bundle import (
    ATTESTATION,
    CHANGE,
    DECISION,
    FILES_DIR,
    MANIFEST,
    POLICY_DIR,
    REPORT,
    ZIP_READ_ERRORS,
    member_name_problem,
)
from policyengine.evidence.index import COLUMNS, Query
from policyengine.evidence.store import EvidenceStore


@dataclass(frozen=True)
class BundleContents:
    """The members of one bundle a person reads: decision, change, manifest, statement."""

    record: dict[str, Any]
    decision: dict[str, Any]
    change: dict[str, Any]
    manifest: dict[str, Any]
    envelope: dict[str, Any] | None
    policy_name: str | None


def read_bundle(store: EvidenceStore, bundle_id: str) -> BundleContents:
    """Read the decision, change and manifest of a recorded bundle (not verified: see ``verify``)."""
    record = store.find(bundle_id)
    try:
        with store.open_bundle(record) as fh, zipfile.ZipFile(fh) as zf:
            names = zf.namelist()
            policy = next((n for n in names if n.startswith(POLICY_DIR)), None)
            return BundleContents(
                record=record,
                decision=json.loads(zf.read(DECISION)),
                change=json.loads(zf.read(CHANGE)),
                manifest=json.loads(zf.read(MANIFEST)),
                envelope=json.loads(zf.read(ATTESTATION)) if ATTESTATION in names else None,
                policy_name=policy[len(POLICY_DIR):] if policy else None,
            )
    except FileNotFoundError as exc:
        raise EvidenceError(f"bundle {bundle_id} is recorded but {store.location(record)} is missing") from exc
    except (*ZIP_READ_ERRORS, KeyError, ValueError) as exc:
        raise EvidenceError(f"bundle {bundle_id} cannot be read: {exc}",
                            hint=f"run `policyengine evidence verify {bundle_id}`") from exc


# -- replay (the gate judges; this only unpacks) ----------------------------------------------


@dataclass(frozen=True)
class Unpacked:
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
                target = workspace / name[len(FILES_DIR):]
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(name) as src, open(target, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
    except FileNotFoundError as exc:
        raise EvidenceError(f"bundle {bundle_id} is recorded but {store.location(record)} is missing") from exc
    except (*ZIP_READ_ERRORS, KeyError, ValueError, StopIteration) as exc:
        raise EvidenceError(f"bundle {bundle_id} cannot be replayed: {exc}",
                            hint=f"run `policyengine evidence verify {bundle_id}`") from exc
    redacted = [m["path"] for m in manifest.get("members", []) if isinstance(m, dict) and m.get("redacted")]
    return Unpacked(recorded=recorded, change=change, policy_member=policy_member, policy_raw=policy_raw,
                    redacted=redacted)


# -- export ---------------------------------------------------------------------------------

POPULATION_COLUMNS = ("id", "created_at", "environment", "repository", "commit", "decision", "sha256",
                      "sequence", "previous_sha256", "signed_by", "policy_sha256", "path")


def draw_sample(ids: list[str], size: int, seed: int) -> list[str]:
    """Return a reproducible random sample of ``ids``: ``random.Random(seed)`` over the sorted ids."""
    population = sorted(ids)
    return sorted(random.Random(seed).sample(population, min(size, len(population))))


@dataclass(frozen=True)
class ExportResult:
    path: str
    population: int
    sample_ids: list[str]
    seed: int | None


def export(
    store: EvidenceStore,
    *,
    since: str,
    until: str,
    environment: str | None,
    sample: int | None,
    seed: int | None,
    out: str,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> ExportResult:
    """Write an audit export zip: population.csv, the sample and its bundles, index.html.

    The zip is written to a temporary file beside ``out`` and renamed into place when whole.
    ``on_start(n)`` is called with the number of bundles to copy, ``progress(1)`` after each.
    """
    from policyengine.evidence.report import render_export_index

    rows, bad = store.query(Query(since=since, until=until, environment=environment))
    if bad:
        raise EvidenceError(f"{bad} index record(s) of {store.url} cannot be read: the population would be incomplete",
                            hint="run `policyengine evidence verify --all` to see them")
    sample_ids = draw_sample([r["id"] for r in rows], sample, seed if seed is not None else 0) if sample else []
    population_csv = io.StringIO()
    writer = csv.writer(population_csv, lineterminator="\n")
    writer.writerow([*POPULATION_COLUMNS, "sampled"])
    chosen = set(sample_ids)
    for r in rows:
        writer.writerow([*("" if r.get(c) is None else r.get(c) for c in POPULATION_COLUMNS),
                         "yes" if r["id"] in chosen else "no"])
    by_id = {r["id"]: r for r in rows}
    folder = os.path.dirname(os.path.abspath(out)) or "."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".policyengine-export-", suffix=".part")
    digests: dict[str, str] = {}
    try:
        with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            def put(name: str, data: bytes, compress: int = zipfile.ZIP_DEFLATED) -> None:
                zf.writestr(zipfile.ZipInfo(name, date_time=_zip_time()), data, compress_type=compress)
                digests[name] = hashlib.sha256(data).hexdigest()

            put("population.csv", population_csv.getvalue().encode("utf-8"))
            if on_start:
                on_start(len(sample_ids))
            for bundle_id in sample_ids:
                record = by_id[bundle_id]
                name = f"bundles/{bundle_id}.zip"
                digest = hashlib.sha256()
                with store.open_bundle(record) as src:
                    # Streamed: a sampled bundle may be large; memory stays flat.
                    with zf.open(zipfile.ZipInfo(name, date_time=_zip_time()), "w", force_zip64=True) as dst:
                        while chunk := src.read(1 << 20):
                            digest.update(chunk)
                            dst.write(chunk)
                    digests[name] = digest.hexdigest()
                    src.seek(0)
                    with zipfile.ZipFile(src) as bundle:
                        if REPORT in bundle.namelist():
                            put(f"bundles/{bundle_id}/report.html", bundle.read(REPORT))
                if progress:
                    progress(1)
            put("index.html", render_export_index([{c: r.get(c) for c in COLUMNS} for r in rows], since=since,
                                                  until=until, seed=seed if sample else None,
                                                  sample_ids=sample_ids).encode("utf-8"))
            export_doc = {
                "archive": store.url, "since": since, "until": until, "environment": environment,
                "population": len(rows),
                "allowed": sum(r["decision"] == "allow" for r in rows),
                "denied": sum(r["decision"] == "deny" for r in rows),
                "sample": {"size": len(sample_ids), "requested": sample, "seed": seed if sample else None,
                           "method": "random.Random(seed).sample(sorted(population ids), size), then sorted",
                           "ids": sample_ids},
                "files": digests,
            }
            put("export.json", (json.dumps(export_doc, indent=2, sort_keys=True) + "\n").encode("utf-8"))
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return ExportResult(path=out, population=len(rows), sample_ids=sample_ids, seed=seed if sample else None)


def _zip_time() -> tuple[int, int, int, int, int, int]:
    now = datetime.now().astimezone()
    return (now.year, now.month, now.day, now.hour, now.minute, now.second)
