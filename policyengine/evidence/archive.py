"""The local evidence archive: bundles in a folder, recorded in an append-only index.

Layout under the archive root::

    index.jsonl                         one JSON line per bundle, appended under .lock
    .lock                               flock(2) target serializing index appends
    bundles/<YYYY>/<MM>/<id>.zip        one bundle per evaluation, allowed or denied
    bundles/<YYYY>/<MM>/.tmp-<id>.zip.part
                                        a bundle being written; a leftover one is from an
                                        interrupted run, was never indexed, is ignored by
                                        ``list`` and ``verify`` and is safe to delete

A bundle is written to its temporary file, fsynced and renamed into place before its index
line is appended; if the append fails the bundle is removed again. So a bundle never exists
without its record, nor a record without its bundle. ``flock`` serializes writers on one
machine (and on file systems that honour it); the archive is not meant for NFS.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import secrets
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from policyengine.errors import EvidenceError
from policyengine.evidence.bundle import (
    CHUNK,
    VerifyProblem,
    format_timestamp,
    inspect_bundle,
    plan_members,
    write_bundle_zip,
)
from policyengine.models import FileRead

INDEX = "index.jsonl"
LOCK = ".lock"
BUNDLES = "bundles"
_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{12}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class BundleRef:
    """One recorded bundle. ``path`` is relative to the archive root, ``/``-separated."""

    id: str
    path: str
    sha256: str
    created_at: str
    decision: str
    environment: str | None
    repository: str | None
    commit: str | None


@dataclass(frozen=True)
class VerifyReport:
    """The ids of the bundles checked and every problem found; ``ok`` when there is none."""

    checked: tuple[str, ...]
    problems: tuple[VerifyProblem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def new_bundle_id(created_at: datetime) -> str:
    """Return ``YYYYMMDDTHHMMSSZ-<12 hex>``: sorts by time, random enough for concurrent runs."""
    return created_at.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(6)


def bundle_relpath(bundle_id: str) -> str:
    """Return where bundle ``bundle_id`` lives, relative to the archive root."""
    return f"{BUNDLES}/{bundle_id[0:4]}/{bundle_id[4:6]}/{bundle_id}.zip"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _text(change: Mapping[str, Any], key: str) -> str | None:
    value = change.get(key)
    return value if isinstance(value, str) else None


def _ref(record: Mapping[str, Any]) -> BundleRef:
    return BundleRef(**{f.name: record[f.name] for f in dataclasses.fields(BundleRef)})


def _parse_record(raw: bytes) -> dict[str, Any]:
    """Return one index line as a record; raise ValueError saying what is wrong with it."""
    record = json.loads(raw)
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object")
    for key in ("id", "path", "sha256", "created_at", "decision", "policy_sha256"):
        if not isinstance(record.get(key), str):
            raise ValueError(f"{key!r} must be a string")
    for key in ("environment", "repository", "commit"):
        if not isinstance(record.get(key), (str, type(None))):
            raise ValueError(f"{key!r} must be a string or null")
    if not _ID_RE.match(record["id"]):
        raise ValueError(f"{record['id']!r} is not a bundle id")
    # The path is derived from the id, so an index line can never point outside the archive.
    if record["path"] != bundle_relpath(record["id"]):
        raise ValueError(f"path {record['path']!r} is not where bundle {record['id']} belongs")
    for key in ("sha256", "policy_sha256"):
        if not _SHA256_RE.match(record[key]):
            raise ValueError(f"{key!r} is not a SHA-256 hex digest")
    return record


class LocalArchive:
    """An evidence store in a local folder: write bundles, list them, verify them.

    A remote store offers the same three operations; the bundle format is shared
    (``policyengine.evidence.bundle``).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def index_path(self) -> Path:
        return self.root / INDEX

    # -- write -------------------------------------------------------------------------

    def write_bundle(
        self,
        *,
        decision: Mapping[str, Any],
        change: Mapping[str, Any],
        policy_filename: str,
        policy_bytes: bytes,
        files: Sequence[FileRead],
        extra_members: Mapping[str, bytes] | None = None,
        created_at: datetime | None = None,
    ) -> BundleRef:
        """Write one bundle, then record it in the index; return its reference.

        Raises ValueError for an unsafe member name, a naive ``created_at`` or a decision
        without a ``decision`` string (caller bugs), and EvidenceError when the evidence
        cannot be written: then neither a bundle nor an index line is left behind.
        """
        moment = created_at or datetime.now(timezone.utc)
        created = format_timestamp(moment)
        verdict = decision.get("decision")
        if not isinstance(verdict, str):
            raise ValueError("the decision has no 'decision' string")
        members = plan_members(
            decision=decision,
            change=change,
            policy_filename=policy_filename,
            policy_bytes=policy_bytes,
            files=files,
            extra_members=extra_members or {},
        )
        bundle_id = new_bundle_id(moment)
        rel = bundle_relpath(bundle_id)
        final = self.root / rel
        tmp = final.with_name(f".tmp-{bundle_id}.zip.part")
        new_dirs = self._make_dirs(final.parent)

        placed = False
        try:
            with open(tmp, "xb") as fh:
                write_bundle_zip(fh, members, bundle_id=bundle_id, created_at=moment)
                fh.flush()
                os.fsync(fh.fileno())
            digest = _sha256_file(tmp)
            os.replace(tmp, final)
            placed = True
            # A new folder's entry lives in its parent: sync those too, or a crash could lose the bundle.
            for d in {final.parent, *(d.parent for d in new_dirs)}:
                _fsync_dir(d)
            record = {
                "id": bundle_id,
                "path": rel,
                "sha256": digest,
                "created_at": created,
                "decision": verdict,
                "environment": _text(change, "environment"),
                "repository": _text(change, "repository"),
                "commit": _text(change, "commit"),
                "policy_sha256": hashlib.sha256(policy_bytes).hexdigest(),
            }
            self._append_index(record)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                (final if placed else tmp).unlink()
                _fsync_dir(final.parent)
            if isinstance(exc, OSError):
                where = exc.filename or self.root
                raise EvidenceError(
                    f"cannot write evidence bundle {bundle_id} to {where}: {exc.strerror or exc}",
                    hint="check that the evidence archive folder is writable and its disk has space",
                ) from exc
            raise
        return _ref(record)

    def _make_dirs(self, path: Path) -> builtins.list[Path]:
        """Create ``path`` and its parents; return the folders that were created."""
        missing = [p for p in (path, *path.parents) if not p.exists()]
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EvidenceError(
                f"cannot create the evidence archive folder {path}: {exc.strerror or exc}",
                hint=f"make {self.root} a writable folder, or choose another archive",
            ) from exc
        return missing

    def _append_index(self, record: Mapping[str, Any]) -> None:
        """Append one line to the index under the exclusive lock; on failure, leave the index as it was."""
        line = (json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            with self._locked(exclusive=True):
                fd = os.open(self.index_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    size = os.fstat(fd).st_size
                    if size and os.pread(fd, 1, size - 1) != b"\n":
                        # An earlier writer died mid-line: keep that fragment on its own line
                        # (verify reports it) rather than glue this record onto it.
                        line = b"\n" + line
                    try:
                        view = memoryview(line)
                        while view:
                            view = view[os.write(fd, view):]
                        os.fsync(fd)
                        if size == 0:
                            _fsync_dir(self.root)  # the index file itself is new
                    except BaseException:
                        with contextlib.suppress(OSError):
                            os.ftruncate(fd, size)
                        raise
                finally:
                    os.close(fd)
        except OSError as exc:
            raise EvidenceError(
                f"cannot record bundle {record['id']} in the index {self.index_path}: {exc.strerror or exc}; "
                "the bundle was removed",
                hint="check that the evidence archive folder is writable and its disk has space",
            ) from exc

    @contextlib.contextmanager
    def _locked(self, *, exclusive: bool) -> Iterator[None]:
        """Hold ``.lock``: exclusively to append, shared to read.

        A reader of an archive without a lock file (a read-only copy) reads unlocked:
        nobody appends to it.
        """
        fd: int | None = None
        try:
            fd = os.open(self.root / LOCK, (os.O_RDWR | os.O_CREAT) if exclusive else os.O_RDONLY, 0o644)
        except OSError:
            if exclusive:
                raise
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            if fd is not None:
                os.close(fd)  # closing releases the lock

    # -- read --------------------------------------------------------------------------

    def _read_index(self) -> tuple[builtins.list[dict[str, Any]], builtins.list[VerifyProblem]]:
        """Return the index records, oldest first, and a problem for each line that is not one."""
        if not self.root.is_dir():
            raise EvidenceError(
                f"no evidence archive at {self.root}",
                hint="pass the folder that holds index.jsonl and bundles/",
            )
        try:
            with self._locked(exclusive=False):
                data = self.index_path.read_bytes()
        except FileNotFoundError:
            return [], []
        except OSError as exc:
            message = f"cannot read the evidence index {self.index_path}: {exc.strerror or exc}"
            raise EvidenceError(message) from exc

        lines = data.split(b"\n")
        complete = data.endswith(b"\n")
        if complete or not data:
            lines.pop()
        records: list[dict[str, Any]] = []
        problems: list[VerifyProblem] = []
        seen: set[str] = set()
        for number, raw in enumerate(lines, 1):
            where = f"{self.index_path} line {number}"
            try:
                record = _parse_record(raw)
            except ValueError as exc:
                torn = number == len(lines) and not complete
                note = " (the last line is incomplete: a write was interrupted)" if torn else ""
                problems.append(VerifyProblem("", None, "index", f"{where}: {exc}{note}"))
                continue
            if record["id"] in seen:
                message = f"{where}: bundle {record['id']} is recorded twice"
                problems.append(VerifyProblem(record["id"], None, "index", message))
                continue
            seen.add(record["id"])
            records.append(record)
        return records, problems

    def list(self) -> builtins.list[BundleRef]:
        """Return every recorded bundle, oldest first; raise EvidenceError on a corrupt index line."""
        records, problems = self._read_index()
        if problems:
            raise EvidenceError(problems[0].message, hint="verify the archive to see every problem")
        return [_ref(r) for r in records]

    # -- verify ------------------------------------------------------------------------

    def verify(self, ids: Sequence[str] = ()) -> VerifyReport:
        """Check the bundles ``ids`` (every recorded bundle when empty); report every problem.

        Checking every bundle also reports zips under ``bundles/`` that the index does not
        record. Problems in the index itself are always reported.
        """
        records, problems = self._read_index()
        by_id = {r["id"]: r for r in records}
        if ids:
            checked = tuple(dict.fromkeys(ids))
            for bundle_id in checked:
                if bundle_id not in by_id:
                    message = f"bundle {bundle_id} is not in the index"
                    problems.append(VerifyProblem(bundle_id, None, "missing", message))
        else:
            checked = tuple(by_id)
        for bundle_id in checked:
            if bundle_id in by_id:
                problems.extend(self._check_bundle(by_id[bundle_id]))
        if not ids:
            recorded = {r["path"] for r in records}
            for path in sorted((self.root / BUNDLES).rglob("*.zip")):
                rel = path.relative_to(self.root).as_posix()
                if rel not in recorded:
                    problems.append(
                        VerifyProblem(path.stem, None, "unindexed", f"{rel} is not recorded in the index")
                    )
        return VerifyReport(checked=checked, problems=tuple(problems))

    def _check_bundle(self, record: Mapping[str, Any]) -> builtins.list[VerifyProblem]:
        bundle_id = record["id"]
        path = self.root / record["path"]
        try:
            digest = _sha256_file(path)
        except FileNotFoundError:
            message = f"bundle {bundle_id} is recorded but {record['path']} is missing"
            return [VerifyProblem(bundle_id, None, "missing", message)]
        except OSError as exc:
            message = f"bundle {bundle_id} cannot be read: {exc.strerror or exc}"
            return [VerifyProblem(bundle_id, None, "unreadable", message)]
        problems: list[VerifyProblem] = []
        if digest != record["sha256"]:
            problems.append(
                VerifyProblem(
                    bundle_id,
                    None,
                    "bundle-digest",
                    f"bundle {bundle_id} was rewritten after it was recorded "
                    f"(index sha256 {record['sha256']}, file sha256 {digest})",
                )
            )
        try:
            with zipfile.ZipFile(path) as zf:
                found = inspect_bundle(zf, bundle_id)
        except (zipfile.BadZipFile, OSError) as exc:
            message = f"bundle {bundle_id} is not a readable zip: {exc}"
            problems.append(VerifyProblem(bundle_id, None, "unreadable", message))
            return problems
        problems.extend(found.problems)
        for key, value in (
            ("decision", found.decision),
            ("created_at", found.created_at),
            ("policy_sha256", found.policy_sha256),
        ):
            if value is not None and value != record[key]:
                message = f"bundle {bundle_id} has {key} {value!r} but the index records {record[key]!r}"
                problems.append(VerifyProblem(bundle_id, None, "index", message))
        return problems
