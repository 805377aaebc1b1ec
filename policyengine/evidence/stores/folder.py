"""The local evidence archive: bundles in a folder, recorded in an append-only index.

Layout under the archive root::

    index.jsonl                         one JSON line per bundle, appended under .lock
    index.sqlite                        a query cache of index.jsonl for `evidence list`;
                                        checked against it before each use, never authoritative
    index/<YYYY>-<MM>.jsonl             instead of index.jsonl, once sharded (``migrate``): the
                                        lines of the bundles whose id (creation) falls in that month
    index/<YYYY>-<MM>.sqlite            the query cache of that month's shard, checked against it
    index.jsonl/README                  in a sharded archive index.jsonl is a folder: an older
                                        policyengine fails on it instead of starting a second index
    .lock                               flock(2) target serializing writers
    .pending.json                       the record of a bundle being committed (exists only
                                        while a writer holds the lock, or after it was killed)
    bundles/<YYYY>/<MM>/<id>.zip        one bundle per evaluation, allowed or denied
    catalogue/<n>.json                  the store catalogues (``evidence.catalogue``), one per write,
                                        written under .lock right after the index line
    bundles/<YYYY>/<MM>/.tmp-<id>.<pid>.zip.part
                                        a bundle being written; a leftover one is from a
                                        killed run, is never indexed, is ignored by ``list``
                                        and ``verify`` and removed by the next writer

Writing a bundle: the bulk members (policy, change, decision, copied files) are written to
the temporary file without any lock. Then, holding ``.lock``, the writer reads its chain's
head (the last record of the same repository and environment), writes the chained tail
(report, manifest, statement), fsyncs, records ``.pending.json``, renames the bundle into
place, appends its index line and removes ``.pending.json``. Holding the lock from reading
the head until the append means concurrent pipelines never fork a chain. A writer killed
after recording ``.pending.json`` is completed (or undone) by the next one to take the lock:
so a bundle never exists without its record, nor a record without its bundle.
``flock`` serializes writers on one machine (and on file systems that honour it); the
archive is not meant for NFS.

**Sharding.** ``evidence migrate`` splits ``index.jsonl`` into monthly shards (each line kept
byte for byte, in its order, in the shard of its id's month), under ``.lock``: the shards are
written to a temporary folder and renamed into place as ``index/``, then ``index.jsonl`` is
replaced by a folder of that name. Every version that writes a folder archive opens
``index.jsonl`` as a file before it appends (for its chain head): on a folder that fails, so
an older version refuses to write into a sharded archive (exit 3, ``Is a directory``) instead
of starting a second index beside the shards. A sharded archive that holds a *file*
``index.jsonl`` again is refused by every command (``split_error``) until ``migrate`` appends
the file's lines the shards lack to their shards (none, after an interrupted migration) and
puts the folder back.
``evidence list`` reads only the shards of the months its bounds cover, each checked against
its own cache. Within a chain, records are read in sequence order across shards (a bundle
created before midnight on the last day of a month may be recorded after one created just
after it); the chain head a writer builds on is the newest catalogue's, checked against its
index line, else found by reading every shard.

Nothing is written through a symbolic link inside the archive (the root itself and its
parents are the user's business): files are opened with ``O_NOFOLLOW`` (new ones with
``O_EXCL``), folders below the root are checked with ``lstat``, and the archive's own names
at its root must not be links; otherwise EvidenceError names the path (the gate denies, exit 3).
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import heapq
import json
import os
import re
import stat
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from msgspec import structs

import policyengine.evidence.format.catalogue as catalogue_mod
from policyengine.errors import EvidenceError
from policyengine.evidence.format.bundle import (
    CHANGE,
    DECISION,
    MANIFEST,
    POLICY_DIR,
    ZIP_READ_ERRORS,
    BundleWriter,
    VerifyProblem,
    format_timestamp,
)
from policyengine.evidence.format.index import Query, SqliteIndex, answer, in_period
from policyengine.evidence.format.records import EVALUATION, ID_RE, RECORD, RECORD_KINDS
from policyengine.evidence.format.signing import SigningKey
from policyengine.evidence.format.timestamp import StampCheck
from policyengine.evidence.stores.base import (
    BundleRef,
    EvidenceStore,
    Job,
    NothingToVerifyError,
    VerifyReport,
    new_bundle_id,
    parse_record,
    pause_point,
    ref_of,
    sha256_stream,
)
from policyengine.redact import EvidenceRedactor

INDEX = "index.jsonl"
INDEX_DIR = "index"
MARKER = "README"
_SHARD_RE = re.compile(r"^([0-9]{4})-([0-9]{2})\.jsonl$")
_MARKER_TEXT = (
    "This evidence archive keeps its index in monthly shards, index/YYYY-MM.jsonl\n"
    "(`policyengine evidence migrate` moved index.jsonl there).\n"
    "index.jsonl is this folder so that an older policyengine, which appends to a file of that\n"
    "name, fails here instead of starting a second index beside the shards. Do not remove it.\n"
)
LOCK = ".lock"
PENDING = ".pending.json"
SQLITE = "index.sqlite"
BUNDLES = "bundles"
CATALOGUE = catalogue_mod.CATALOGUE_DIR

__all__ = ["BUNDLES", "INDEX", "BundleRef", "LocalArchive", "VerifyReport", "bundle_relpath", "new_bundle_id"]


def bundle_relpath(bundle_id: str) -> str:
    """Return where bundle ``bundle_id`` lives, relative to the archive root."""
    return f"{BUNDLES}/{bundle_id[0:4]}/{bundle_id[4:6]}/{bundle_id}.zip"


SQLITE_SIDE_FILES = ("-journal", "-wal", "-shm")
# Every name the archive itself writes at its root: none may be a symbolic link.
OWN_NAMES = (INDEX, LOCK, PENDING, BUNDLES, CATALOGUE, SQLITE, INDEX_DIR, *(SQLITE + s for s in SQLITE_SIDE_FILES))


def shard_name(bundle_id: str) -> str:
    """The shard of a sharded archive that records bundle ``bundle_id``: the month of its id."""
    return f"{bundle_id[0:4]}-{bundle_id[4:6]}.jsonl"


def _month_bounds(name: str) -> tuple[str, str]:
    """The period ``[start, end)`` of shard ``name`` (``YYYY-MM.jsonl``), as ``...Z`` strings."""
    year, month = int(name[0:4]), int(name[5:7])
    return (f"{year:04d}-{month:02d}-01T00:00:00Z",
            f"{year + month // 12:04d}-{month % 12 + 1:02d}-01T00:00:00Z")


def _link_error(path: Path) -> EvidenceError:
    return EvidenceError(
        f"{path} is a symbolic link (or not what the archive expects there): refusing to write the evidence "
        "archive through it",
        hint="an evidence archive holds only its own files and folders; remove the link "
             "(was it committed into the repository?)")


def open_nofollow(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that never follows a symbolic link in the last component (EvidenceError naming it)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP or (exc.errno == errno.ENOTDIR and os.path.islink(path)):
            raise _link_error(path) from exc
        raise


def open_read(path: Path) -> IO[bytes]:
    """Open a file of the archive for reading, never through a symbolic link."""
    fd = open_nofollow(path, os.O_RDONLY)
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    return os.fdopen(fd, "rb")


def _sha256_file(path: Path) -> str:
    with open_read(path) as f:
        return sha256_stream(f)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _id_of(raw: bytes) -> str | None:
    try:
        bid = json.loads(raw).get("id")
    except (ValueError, AttributeError):
        return None
    return bid if isinstance(bid, str) and ID_RE.match(bid) else None


def _remove_tree(path: Path) -> None:
    """Remove a temporary folder of ours (never following a link inside it)."""
    import shutil

    with contextlib.suppress(FileNotFoundError):
        if os.path.islink(path) or not os.path.isdir(path):
            os.unlink(path)
        else:
            shutil.rmtree(path)


def _parse_line(raw: bytes) -> dict[str, Any]:
    return parse_record(json.loads(raw), path_for=lambda r: bundle_relpath(r["id"]))


def _shard_parser(shard: str) -> Callable[[bytes], dict[str, Any]]:
    """``_parse_line`` for the lines of shard ``shard``: a line of another month is not one of its records."""

    def parse(raw: bytes) -> dict[str, Any]:
        record = _parse_line(raw)
        if shard_name(record["id"]) != shard:
            raise ValueError(f"bundle {record['id']} does not belong in {INDEX_DIR}/{shard}")
        return record

    return parse


def _seq(record: Mapping[str, Any]) -> int:
    seq = record.get("sequence")
    return seq if type(seq) is int else 0


def _chain_order(records: builtins.list[dict[str, Any]]) -> builtins.list[dict[str, Any]]:
    """The records of the shards, read oldest month first, with each chain in recorded order.

    A bundle's shard is the month of its id, given when it was prepared; its chain link is
    given when it is committed. Across a month's end the two orders can differ (a bundle created
    at 23:59 on the 31st, written after one created at 00:01): each chain's records are put back
    in their chain's places merged by sequence across shards. Within one shard, line order is kept
    as it stands (``verify`` reports lines swapped in a shard as before).
    """
    places: dict[tuple[Any, Any], builtins.list[int]] = {}
    for i, r in enumerate(records):
        places.setdefault((r["repository"], r["environment"]), []).append(i)
    out = builtins.list(records)
    for positions in places.values():
        runs: dict[str, builtins.list[dict[str, Any]]] = {}
        for i in positions:
            runs.setdefault(records[i]["id"][:6], []).append(records[i])
        if len(runs) < 2:
            continue
        for i, r in zip(positions, heapq.merge(*runs.values(), key=_seq), strict=True):
            out[i] = r
    return out


def _listing_order(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """Where ``index.answer`` puts a record: created_at, then sequence (none first), then id."""
    seq = record.get("sequence")
    return record["created_at"], seq is not None, seq if isinstance(seq, int) else 0, record["id"]


def _split_lines(data: bytes) -> builtins.list[bytes]:
    """The lines of an index file; a torn last line is a line too."""
    lines = data.split(b"\n")
    if not lines[-1]:
        lines.pop()
    return lines


class LocalArchive(EvidenceStore):
    """An evidence store in a local folder: write bundles, list them, verify them."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.url = str(root)
        self.notes: builtins.list[str] = []

    @property
    def index_path(self) -> Path:
        return self.root / INDEX

    @property
    def shard_dir(self) -> Path:
        return self.root / INDEX_DIR

    def sharded(self) -> bool:
        """Whether the index is kept in monthly shards (``index/``).

        EvidenceError when ``index/`` is not a folder, or when a *file* ``index.jsonl`` stands beside
        it: an older version wrote it (or a migration was interrupted), and reading either half
        alone would show part of the population as the whole (fail closed).
        """
        try:
            mode = os.lstat(self.shard_dir).st_mode
        except FileNotFoundError:
            return False
        if not stat.S_ISDIR(mode):
            raise _link_error(self.shard_dir)
        try:
            index_mode = os.lstat(self.index_path).st_mode
        except FileNotFoundError:
            return True
        if not stat.S_ISDIR(index_mode):
            raise self.split_error()
        return True

    def split_error(self) -> EvidenceError:
        return EvidenceError(
            f"{self.index_path} is a file, but this archive's index is sharded by month in {self.shard_dir}: "
            "an older policyengine wrote it, or `evidence migrate` was interrupted; refusing to use half of the index",
            hint=f"upgrade every job that writes to {self.root}, then run "
                 f"`{self.command('evidence', 'migrate')}`: it moves the file's lines into the shards")

    def _shard_names(self) -> builtins.list[str]:
        """The ``*.jsonl`` files of ``index/``, sorted (the shards, oldest month first, and any stray)."""
        try:
            return sorted(n for n in os.listdir(self.shard_dir) if n.endswith(".jsonl"))
        except FileNotFoundError:
            return []

    # -- write -------------------------------------------------------------------------

    def commit(self, job: Job, *, signing_key: SigningKey | None, retention: str | None,
               redactor: EvidenceRedactor | None) -> BundleRef:
        """Write ``job``'s bundle (an evaluation or a linked record), chain and record it; see the module doc.

        On any failure neither a bundle nor an index line is left behind (EvidenceError for I/O).
        """
        bundle_id = job.bundle_id
        rel = bundle_relpath(bundle_id)
        final = self.root / rel
        tmp = final.with_name(f".tmp-{bundle_id}.{os.getpid()}.zip.part")
        new_dirs = self._make_dirs(final.parent)
        self.refuse_links()

        placed = False
        pending = False
        recorded = False
        writer: BundleWriter | None = None
        try:
            with os.fdopen(open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb") as fh:
                writer = BundleWriter(fh, bundle_id=bundle_id, created_at=job.moment, redactor=redactor)
                job.bulk(writer)
                pause_point("bulk")
                with self._locked(exclusive=True):
                    self._recover(signing_key, writer=True)
                    pause_point("locked")
                    head = self._chain_head(job.key)
                    link = self.chain_link(head, job.key)
                    job.tail(writer, link, signing_key)
                    digest, _ = writer.close()
                    fh.flush()
                    os.fsync(fh.fileno())
                    record = job.index_record(link, rel, digest, signing_key.keyid if signing_key else None)
                    self._write_pending(record)
                    pending = True
                    os.replace(tmp, final)
                    placed = True
                    # A new folder's entry lives in its parent: sync those too, or a crash could lose the bundle.
                    for d in {final.parent, *(d.parent for d in new_dirs)}:
                        _fsync_dir(d)
                    pause_point("placed")
                    self._append_index(record)
                    recorded = True  # from here on the bundle stays: only the catalogue may lag
                    pause_point("indexed")
                    # The store head: a new catalogue with this chain moved forward (under the same
                    # lock: it serialises nothing the chain does not). A writer killed before it is
                    # caught up by the next one (``_recover``, from .pending.json).
                    store_head = self._record_catalogue([record], signing_key)
                    (self.root / PENDING).unlink()
                    pending = False
                    self._sweep_parts(final.parent)
        except BaseException as exc:
            if writer is not None:
                writer.abandon()
            if not recorded:
                with contextlib.suppress(OSError):
                    (final if placed else tmp).unlink()
                    _fsync_dir(final.parent)
            if pending and not recorded:  # (recorded: .pending.json lets the next writer catch the catalogue up)
                with contextlib.suppress(OSError):
                    (self.root / PENDING).unlink()
            if isinstance(exc, OSError):
                where = exc.filename or self.root
                raise EvidenceError(
                    f"cannot write evidence bundle {bundle_id} to {where}: {exc.strerror or exc}",
                    hint="check that the evidence archive folder is writable and its disk has space",
                ) from exc
            raise
        return dataclasses.replace(ref_of(record), store_head=store_head)

    # -- the catalogue ---------------------------------------------------------------------

    def catalogue_files(self) -> builtins.list[tuple[str, bytes]]:
        folder = self.root / CATALOGUE
        try:
            if not stat.S_ISDIR(os.lstat(folder).st_mode):
                raise _link_error(folder)
            names = sorted(p.name for p in folder.iterdir() if catalogue_mod.sequence_of_name(p.name) is not None)
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            with open_read(folder / name) as f:
                out.append((f"{CATALOGUE}/{name}", f.read()))
        return out

    def _latest_catalogue(self) -> catalogue_mod.Catalogue | None:
        """The newest catalogue (call holding the lock); EvidenceError when it cannot be read: a writer
        never builds on a catalogue it cannot read (fail closed)."""
        folder = self.root / CATALOGUE
        try:
            names = sorted(p.name for p in folder.iterdir() if catalogue_mod.sequence_of_name(p.name) is not None)
        except FileNotFoundError:
            return None
        if not names:
            return None
        try:
            with open_read(folder / names[-1]) as f:
                return catalogue_mod.parse(f.read())
        except ValueError as exc:
            raise EvidenceError(f"the catalogue {folder / names[-1]} cannot be read ({exc}): refusing to write "
                                "over it", hint=f"run `{self.command('evidence', 'verify', '--all')}`") from exc

    def _record_catalogue(self, records: Sequence[Mapping[str, Any]], signing_key: SigningKey | None) -> str:
        """Write the catalogue that moves the chains of ``records`` forward (call holding the lock); return
        the store head. The first catalogue of an archive written before catalogues lists every chain."""
        latest = self._latest_catalogue()
        if latest is None:
            every, _ = self._all_records()
            records = [*every, *records]
        if latest is not None and not catalogue_mod.behind(latest, records):
            return latest.sha256  # nothing moves: the store head stays
        data = catalogue_mod.build(latest, records, recorded_at=format_timestamp(datetime.now(timezone.utc)),
                                   signing_key=signing_key)
        folder = self.root / CATALOGUE
        new_dirs = self._make_dirs(folder)
        path = folder / catalogue_mod.catalogue_name(latest.sequence + 1 if latest else 1)
        if os.path.lexists(path):
            raise EvidenceError(f"{path} exists but is not the newest catalogue: refusing to write over it",
                                hint=f"run `{self.command('evidence', 'verify', '--all')}`")
        # Written beside, then renamed: a reader never sees half a catalogue.
        tmp = folder / f".tmp-catalogue.{os.getpid()}.part"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        try:
            with os.fdopen(open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        for d in {folder, *(d.parent for d in new_dirs)}:
            _fsync_dir(d)
        return hashlib.sha256(data).hexdigest()

    def _make_dirs(self, path: Path) -> builtins.list[Path]:
        """Create ``path`` (the archive root or a folder inside it) and its parents; return those created.

        The root and its parents are the user's business (a symlinked root is followed); every
        folder inside the archive must be a real folder, never a symbolic link: EvidenceError.
        """
        inside = path.relative_to(self.root).parts if path != self.root else ()
        missing = [p for p in (self.root, *self.root.parents) if not p.exists()]
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            current = self.root
            for part in inside:
                current = current / part
                try:
                    os.mkdir(current, 0o755)
                    missing.append(current)
                except FileExistsError:
                    pass
                if not stat.S_ISDIR(os.lstat(current).st_mode):
                    raise _link_error(current)
        except OSError as exc:
            raise EvidenceError(
                f"cannot create the evidence archive folder {path}: {exc.strerror or exc}",
                hint=f"make {self.root} a writable folder, or choose another archive",
            ) from exc
        return missing

    def refuse_links(self) -> None:
        """Raise EvidenceError when a file or folder the archive writes at its root is a symbolic link."""
        for name in OWN_NAMES:
            path = self.root / name
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise EvidenceError(f"cannot inspect {path}: {exc.strerror or exc}") from exc
            if stat.S_ISLNK(mode) or (name in (BUNDLES, CATALOGUE, INDEX_DIR) and not stat.S_ISDIR(mode)):
                raise _link_error(path)

    def _inside_dirs_ok(self, rel: str) -> bool:
        """Whether every folder of ``rel`` (relative to the root) is a real folder, not a link."""
        current = self.root
        for part in Path(rel).parts[:-1]:
            current = current / part
            try:
                if not stat.S_ISDIR(os.lstat(current).st_mode):
                    return False
            except FileNotFoundError:
                return False
        return True

    def _chain_head(self, key: tuple[str | None, str | None]) -> dict[str, Any] | None:
        """Return the last index record of chain ``key`` (call holding the lock)."""
        if self.sharded():
            return self._sharded_chain_head(key)
        try:
            with open_read(self.index_path) as f:
                size = f.seek(0, os.SEEK_END)
                # Usually the chain's last record is near the end: read the last MiB first.
                for start in (max(0, size - (1 << 20)), 0):
                    f.seek(start)
                    data = f.read()
                    lines = data.split(b"\n")
                    if start:
                        lines = lines[1:]  # the first line may be cut
                    for raw in reversed(lines):
                        if not raw.strip():
                            continue
                        try:
                            record = _parse_line(raw)
                        except ValueError:
                            continue  # a torn line: verify reports it
                        if (record["repository"], record["environment"]) == key:
                            return record
                    if not start:
                        break
        except FileNotFoundError:
            return None
        return None

    def _sharded_chain_head(self, key: tuple[str | None, str | None]) -> dict[str, Any] | None:
        """The chain head of a sharded archive (call holding the lock, after ``_recover``).

        The newest catalogue names each chain's head (it is written under the lock right after each
        index line, and caught up by ``_recover``); that head's line must be in its shard with the
        same SHA-256, chain and sequence, and no line of the chain in that shard or the newest one
        may come later in the chain. Otherwise (no catalogue, a new chain, any disagreement) every
        shard is read: a writer never builds on a head it could not confirm.
        """
        latest = self._latest_catalogue()
        known = latest.chain(*key) if latest is not None else None
        names = self._shard_names()
        if known is not None and names and _SHARD_RE.match(shard_name(known.id)):
            found: dict[str, Any] | None = None
            best: dict[str, Any] | None = None
            for name in dict.fromkeys([shard_name(known.id), names[-1]]):
                try:
                    with open_read(self.shard_dir / name) as f:
                        records, _ = self.parse_index(f.read(), shard=name)
                except FileNotFoundError:
                    continue
                for r in records:
                    if (r["repository"], r["environment"]) != key:
                        continue
                    if r["id"] == known.id:
                        found = r
                    if best is None or _seq(r) >= _seq(best):
                        best = r
            if (found is not None and best is found and found["sha256"] == known.sha256
                    and found.get("sequence") == known.sequence):
                return found
        head = None
        for r in self._all_records()[0]:
            if (r["repository"], r["environment"]) == key:
                head = r
        return head

    def _write_pending(self, record: Mapping[str, Any]) -> None:
        path = self.root / PENDING
        with os.fdopen(open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "w", encoding="utf-8") as f:
            json.dump(record, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(self.root)

    def _recover(self, signing_key: SigningKey | None = None, *, writer: bool = False) -> None:
        """Complete or undo the commit of a writer that was killed (call holding the lock).

        A bundle in place whose digest matches the pending record is recorded (its index line
        appended, then the catalogue caught up, with a note); anything else about the pending
        bundle is removed. A reader does not write a catalogue over a signed one (it holds no
        key): it leaves the pending record for the next writer, and ``verify`` says the catalogue
        is behind. A writer always catches it up (its own write needs the pending slot).
        """
        path = self.root / PENDING
        try:
            with open_read(path) as f:
                record = _parse_line(f.read())
        except FileNotFoundError:
            return
        except ValueError:
            path.unlink()
            return
        indexed = self._last_id(self._index_file_for(record["id"])) == record["id"]
        if not indexed:
            final = self.root / record["path"]
            if not self._inside_dirs_ok(record["path"]):
                raise _link_error(final.parent)
            try:
                complete = _sha256_file(final) == record["sha256"]
            except FileNotFoundError:
                complete = False
            if complete:
                self._append_index(record)
                indexed = True
            else:
                with contextlib.suppress(FileNotFoundError):
                    final.unlink()
        if indexed:
            latest = self._latest_catalogue()
            if catalogue_mod.behind(latest, [record]) or latest is None:
                if not writer and latest is not None and latest.signature != "unsigned":
                    return  # a signed catalogue: only a writer catches it up
                self._record_catalogue([record], signing_key)
                self.notes.append(f"the catalogue lacked bundle {record['id']} (#{record.get('sequence')} of "
                                  f"{record.get('repository')} / {record.get('environment')}), whose writer stopped "
                                  "between the bundle and the catalogue: repaired, it records it now")
        path.unlink()
        _fsync_dir(self.root)

    def _index_file_for(self, bundle_id: str) -> Path:
        """The file that records (or will record) bundle ``bundle_id``: its month's shard, or index.jsonl."""
        return self.shard_dir / shard_name(bundle_id) if self.sharded() else self.index_path

    def _last_id(self, path: Path) -> str | None:
        try:
            with open_read(path) as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 65536))
                tail = f.read()
        except FileNotFoundError:
            return None
        for raw in reversed(tail.split(b"\n")):
            if raw.strip():
                try:
                    return str(json.loads(raw).get("id"))
                except (ValueError, AttributeError):
                    return None
        return None

    def _sweep_parts(self, folder: Path) -> None:
        """Remove temporary bundles left in ``folder`` by writers that no longer run."""
        with contextlib.suppress(OSError):
            for part in folder.glob(".tmp-*.zip.part"):
                pid = part.name.split(".")[-3]
                if pid.isdigit() and not _pid_alive(int(pid)):
                    part.unlink()

    def _append_index(self, record: Mapping[str, Any]) -> None:
        """Append one line to the index (the caller holds the lock); on failure, leave it as it was."""
        line = (json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
        path = self._index_file_for(record["id"])
        try:
            fd = open_nofollow(path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
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
                        _fsync_dir(path.parent)  # the index file (or shard) itself is new
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, size)
                    raise
            finally:
                os.close(fd)
        except OSError as exc:
            raise EvidenceError(
                f"cannot record bundle {record['id']} in the index {path}: {exc.strerror or exc}; "
                "the bundle was removed",
                hint="check that the evidence archive folder is writable and its disk has space",
            ) from exc

    @contextlib.contextmanager
    def _locked(self, *, exclusive: bool) -> Iterator[None]:
        """Hold ``.lock``: exclusively to write, shared to read.

        A reader of an archive without a lock file (a read-only copy) reads unlocked:
        nobody appends to it.
        """
        fd: int | None = None
        try:
            fd = open_nofollow(self.root / LOCK, (os.O_RDWR | os.O_CREAT) if exclusive else os.O_RDONLY)
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

    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise EvidenceError(
                f"no evidence archive at {self.root}",
                hint="pass the folder that holds index.jsonl and bundles/",
            )

    # -- migrate -----------------------------------------------------------------------

    def migrate(self) -> tuple[int, int, int]:
        """Shard the index by month (see the module doc); return (lines, shards, lines merged).

        Each line of ``index.jsonl`` is kept byte for byte, in its order, in the shard of its id's
        month; a line without a readable bundle id (a torn or edited line, which ``verify``
        reports) goes with the line before it. Run on an archive already sharded that holds a file
        ``index.jsonl`` again (an interrupted migration, or an older version that wrote after it),
        the file's lines the shards do not hold are appended to their shards, so nothing an older
        version recorded is left out (``verify`` then reports its chain as it stands), and the file
        is replaced by the folder. Everything happens holding ``.lock``; the shards are renamed into
        place whole, before the file is replaced.
        """
        self._check_root()
        self.refuse_links()
        with self._locked(exclusive=True):
            self._recover()
            if os.path.lexists(self.root / PENDING):
                raise EvidenceError(f"a signed write to {self.root} is pending: not migrating now",
                                    hint="run `policyengine check` with the signing key once, then migrate")
            try:
                sharded = self.sharded()
            except EvidenceError:
                sharded = True  # a file index.jsonl beside the shards: merged below
            try:
                data = self._read_file(self.index_path) if not os.path.isdir(self.index_path) else b""
            except FileNotFoundError:
                data = b""
            lines = _split_lines(data)
            shards: dict[str, builtins.list[bytes]] = {}
            month = None
            for raw in lines:
                bid = _id_of(raw)
                if bid is not None:
                    month = shard_name(bid)
                if month is None:  # unreadable lines before any readable one: the first readable line's month
                    month = next((shard_name(b) for b in map(_id_of, lines) if b is not None), None)
                if month is None:
                    raise EvidenceError(f"{self.index_path} holds no line with a bundle id: nothing to shard by",
                                        hint=f"run `{self.command('evidence', 'verify', '--all')}`")
                shards.setdefault(month, []).append(raw + b"\n")
            merged = 0
            if sharded:
                merged = self._merge_into_shards(shards)
            else:
                self._write_new_shards(shards)
            self._place_marker()
            for side in ("", *SQLITE_SIDE_FILES):  # the old cache: only derived data
                with contextlib.suppress(FileNotFoundError):
                    (self.root / (SQLITE + side)).unlink()
        return len(lines), len(shards), merged

    def _write_new_shards(self, shards: Mapping[str, Sequence[bytes]]) -> None:
        """Write ``index/`` whole in a temporary folder, then rename it into place (holding the lock)."""
        tmp = self.root / f".tmp-{INDEX_DIR}.{os.getpid()}"
        for old in self.root.glob(f".tmp-{INDEX_DIR}.*"):
            pid = old.name.rsplit(".", 1)[-1]
            if not (pid.isdigit() and _pid_alive(int(pid))) or old == tmp:
                _remove_tree(old)
        os.mkdir(tmp, 0o755)
        for name, lines in shards.items():
            with os.fdopen(open_nofollow(tmp / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb") as fh:
                fh.write(b"".join(lines))
                fh.flush()
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
        os.rename(tmp, self.shard_dir)
        _fsync_dir(self.root)

    def _merge_into_shards(self, shards: Mapping[str, Sequence[bytes]]) -> int:
        """Append to the shards the lines they do not hold yet; return how many."""
        held: set[bytes] = set()
        for name in self._shard_names():
            with contextlib.suppress(FileNotFoundError):
                held.update(line + b"\n" for line in _split_lines(self._read_file(self.shard_dir / name)))
        merged = 0
        for name, lines in shards.items():
            new = [line for line in lines if line not in held]
            if not new:
                continue
            path = self.shard_dir / name
            fd = open_nofollow(path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
            try:
                size = os.fstat(fd).st_size
                prefix = b"\n" if size and os.pread(fd, 1, size - 1) != b"\n" else b""
                os.write(fd, prefix + b"".join(new))
                os.fsync(fd)
            finally:
                os.close(fd)
            merged += len(new)
        _fsync_dir(self.shard_dir)
        return merged

    def _place_marker(self) -> None:
        """Replace a file ``index.jsonl`` (or nothing) by the folder an older version cannot append to."""
        if os.path.isdir(self.index_path) and not os.path.islink(self.index_path):
            return
        tmp = self.root / f".tmp-{INDEX}.{os.getpid()}"
        _remove_tree(tmp)
        os.mkdir(tmp, 0o755)
        with os.fdopen(open_nofollow(tmp / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "w",
                       encoding="utf-8") as fh:
            fh.write(_MARKER_TEXT)
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.index_path)  # its lines are in the shards (fsynced) already
        os.rename(tmp, self.index_path)
        _fsync_dir(self.root)

    def recover_if_needed(self) -> None:
        """Finish a commit a killed writer left pending, when the archive is writable.

        Refuses (EvidenceError) an archive whose own files or folders are symbolic links.
        """
        self.refuse_links()
        if os.path.lexists(self.root / PENDING):
            with contextlib.suppress(OSError), self._locked(exclusive=True):
                self._recover()

    def read_index(self) -> tuple[builtins.list[dict[str, Any]], builtins.list[VerifyProblem]]:
        """Return the index records, oldest first, and a problem for each line that is not one."""
        self._check_root()
        self.recover_if_needed()
        with self._locked(exclusive=False):
            return self._all_records()

    def _all_records(self) -> tuple[builtins.list[dict[str, Any]], builtins.list[VerifyProblem]]:
        """Every index record (both layouts) and a problem per unreadable line (call holding the lock)."""
        if self.sharded():
            records: list[dict[str, Any]] = []
            problems: list[VerifyProblem] = []
            seen: set[str] = set()
            for name in self._shard_names():
                if not _SHARD_RE.match(name):
                    problems.append(VerifyProblem("", None, "index", f"{self.shard_dir / name} is not an index "
                                                  "shard (index/YYYY-MM.jsonl)"))
                    continue
                found, bad = self.parse_index(self._read_file(self.shard_dir / name), shard=name, seen=seen)
                records.extend(found)
                problems.extend(bad)
            return _chain_order(records), problems
        try:
            return self.parse_index(self._read_file(self.index_path))
        except FileNotFoundError:
            return [], []

    def _read_file(self, path: Path) -> bytes:
        """The bytes of an index file (FileNotFoundError passes; other errors are EvidenceError)."""
        try:
            with open_read(path) as f:
                return f.read()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise EvidenceError(f"cannot read the evidence index {path}: {exc.strerror or exc}") from exc

    def parse_index(
        self, data: bytes, first_line: int = 1, *, shard: str | None = None, seen: set[str] | None = None,
    ) -> tuple[builtins.list[dict[str, Any]], builtins.list[VerifyProblem]]:
        """Parse index lines (numbered from ``first_line``) into records and problems.

        ``shard``: the lines of that shard of a sharded archive (each must be of its month);
        ``seen``: the ids of the shards read before (a repeated id is a problem).
        """
        parse = _shard_parser(shard) if shard is not None else _parse_line
        path = self.shard_dir / shard if shard is not None else self.index_path
        lines = data.split(b"\n")
        complete = data.endswith(b"\n")
        if complete or not data:
            lines.pop()
        records: list[dict[str, Any]] = []
        problems: list[VerifyProblem] = []
        seen = set() if seen is None else seen
        for number, raw in enumerate(lines, first_line):
            where = f"{path} line {number}"
            try:
                record = parse(raw)
            except ValueError as exc:
                torn = number == len(lines) + first_line - 1 and not complete
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

    @contextlib.contextmanager
    def open_bundle(self, record: Mapping[str, Any]) -> Iterator[IO[bytes]]:
        with open(self.root / record["path"], "rb") as fh:
            yield fh

    def location(self, record: Mapping[str, Any]) -> str:
        return str(record["path"])

    def unindexed(self, records: Sequence[Mapping[str, Any]]) -> builtins.list[VerifyProblem]:
        recorded = {r["path"] for r in records}
        problems = []
        for path in sorted((self.root / BUNDLES).rglob("*.zip")):
            rel = path.relative_to(self.root).as_posix()
            if rel not in recorded:
                problems.append(VerifyProblem(path.stem, None, "unindexed", f"{rel} is not recorded in the index"))
        return problems

    def query(self, q: Query) -> tuple[Sequence[Mapping[str, Any]], int]:
        """Answer from ``index.sqlite``, brought up to date with ``index.jsonl`` first (rows: read with ``.get``).

        Without ``index.jsonl`` but with bundles, the answer is built (in memory) from the
        bundles' own manifests and decisions, and ``notes`` says so: the archive lost its index.
        """
        self._check_root()
        self.recover_if_needed()
        if self.sharded():
            return self._sharded_query(q)
        if not self.index_path.exists() and (self.root / BUNDLES).is_dir():
            records, bad = self._records_from_bundles()
            if records or bad:
                self.notes.append(f"{self.index_path} is missing: listed from the bundles themselves; "
                                  f"run `{self.command('evidence', 'verify', '--all')}`")
            return answer([r for r in records if in_period(r, q)], q), bad
        try:
            with self._locked(exclusive=False), open_read(self.index_path) as f:
                data = f.read()
        except FileNotFoundError:
            data = b""
        except OSError as exc:
            raise EvidenceError(f"cannot read the evidence index {self.index_path}: {exc.strerror or exc}") from exc
        return self._cached_answer(self.root / SQLITE, data, q, _parse_line, INDEX, self.refuse_links)

    def _cached_answer(self, cache: Path, data: bytes, q: Query, parse: Callable[[bytes], dict[str, Any]],
                       name: str, refuse_links: Callable[[], None]) -> tuple[Sequence[Mapping[str, Any]], int]:
        """Answer ``q`` from the lines ``data`` of index file ``name`` with the query cache ``cache``."""
        import sqlite3  # (SqliteIndex imports it anyway)

        try:
            return self._answer_with(SqliteIndex(cache), data, q, parse, name)
        except sqlite3.DatabaseError as exc:
            # A damaged cache file ("database disk image is malformed"): it is only derived data.
            self.notes.append(f"the query cache {cache.name} was damaged ({exc}) and was rebuilt from {name}")
            with contextlib.suppress(OSError, EvidenceError):
                refuse_links()  # (a linked cache is not deleted: the answer is then built in memory)
                for side in ("", *SQLITE_SIDE_FILES):
                    cache.with_name(cache.name + side).unlink(missing_ok=True)
            try:
                return self._answer_with(SqliteIndex(cache), data, q, parse, name)
            except sqlite3.DatabaseError:
                return self._answer_with(SqliteIndex(None), data, q, parse, name)  # in memory

    def _refuse_shard_cache_links(self, cache: Path) -> None:
        """EvidenceError when a shard's cache file (or a side file SQLite makes) is a symbolic link."""
        for side in ("", *SQLITE_SIDE_FILES):
            path = cache.with_name(cache.name + side)
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISLNK(os.lstat(path).st_mode):
                    raise _link_error(path)

    def _sharded_query(self, q: Query) -> tuple[Sequence[Mapping[str, Any]], int]:
        """Answer ``q`` from the shards of the months it covers, each checked against its own cache.

        A line is listed from the shard of its id's month (``verify`` holds its ``created_at``
        against the bundle's); a file of ``index/`` that is not a shard counts as unreadable.
        """
        wanted = []
        bad = 0
        with self._locked(exclusive=False):
            for name in self._shard_names():
                if not _SHARD_RE.match(name):
                    bad += 1
                    continue
                start, end = _month_bounds(name)
                if (q.until is None or start < q.until) and (q.since is None or end > q.since):
                    try:
                        wanted.append((name, self._read_file(self.shard_dir / name)))
                    except FileNotFoundError:
                        continue
        rows: list[Mapping[str, Any]] = []
        ordered = True
        for name, data in wanted:
            cache = self.shard_dir / (name[: -len(".jsonl")] + ".sqlite")
            self._refuse_shard_cache_links(cache)
            found, unreadable = self._cached_answer(cache, data, q, _shard_parser(name), f"{INDEX_DIR}/{name}",
                                                    lambda c=cache: self._refuse_shard_cache_links(c))
            if rows and found and _listing_order(found[0]) < _listing_order(rows[-1]):
                ordered = False  # a line whose created_at is not of its shard's month
            rows.extend(found)
            bad += unreadable
        # Each shard's answer is in listing order already: the whole is too when they do not overlap.
        return (rows if ordered else answer(rows, q)), bad

    def _answer_with(self, index: SqliteIndex, data: bytes, q: Query, parse: Callable[[bytes], dict[str, Any]],
                     name: str = INDEX) -> tuple[Sequence[Mapping[str, Any]], int]:
        try:
            bad = index.sync_jsonl(data, parse)
            rows = index.checked_query(q)
            if rows is None:  # the cache named a wrong line, or too few: it was edited
                index.rebuild()
                rows = index.checked_query(q)
            if rows is None:  # still: answer from every line, decoded
                rows = index.scan(q)
            if name != INDEX:  # a shard: name it and its own cache
                cache = name[: -len(".jsonl")] + ".sqlite"
                self.notes.extend(n.replace(SQLITE, cache).replace(INDEX, name) for n in index.notes)
            else:
                self.notes.extend(index.notes)
            return rows, bad
        finally:
            index.close()

    def _records_from_bundles(self) -> tuple[builtins.list[dict[str, Any]], int]:
        """Rebuild index records from the bundles' manifests (digests computed, nothing trusted)."""
        records: list[dict[str, Any]] = []
        bad = 0
        for path in sorted((self.root / BUNDLES).rglob("*.zip")):
            try:
                with zipfile.ZipFile(path) as zf:
                    manifest = json.loads(zf.read(MANIFEST))
                    kind = manifest.get("kind")
                    if kind not in (None, EVALUATION):
                        doc = json.loads(zf.read(RECORD))
                        chain = manifest.get("chain") or {}
                        records.append({
                            "id": path.stem, "path": path.relative_to(self.root).as_posix(),
                            "sha256": _sha256_file(path), "created_at": manifest["created_at"],
                            "decision": doc[RECORD_KINDS[kind].field], "environment": doc.get("environment"),
                            "repository": doc.get("repository"), "commit": doc.get("commit"), "policy_sha256": None,
                            "sequence": chain.get("sequence"), "previous_sha256": chain.get("previous_sha256"),
                            "signed_by": None, "kind": kind, "about_id": doc["about"]["bundle_id"],
                            "about_sha256": doc["about"]["sha256"],
                        })
                        continue
                    decision = json.loads(zf.read(DECISION))
                    change = json.loads(zf.read(CHANGE))
                chain = manifest.get("chain") or {}
                policy = next(e for e in manifest["members"] if e["path"].startswith(POLICY_DIR))
                records.append({
                    "id": path.stem, "path": path.relative_to(self.root).as_posix(), "sha256": _sha256_file(path),
                    "created_at": manifest["created_at"], "decision": decision["decision"],
                    "environment": change.get("environment"), "repository": change.get("repository"),
                    "commit": change.get("commit"), "policy_sha256": policy["sha256"],
                    "sequence": chain.get("sequence"), "previous_sha256": chain.get("previous_sha256"),
                    "signed_by": None,
                })
            except (*ZIP_READ_ERRORS, KeyError, ValueError, TypeError, StopIteration, AttributeError):
                bad += 1
        return records, bad

    def verify(self, ids: Sequence[str] = (), public_key: tuple[Any, str] | None = None,
               heads: Sequence[str] = (), stamps: StampCheck | None = None) -> VerifyReport:
        """Verify as the base does; a folder that is not an archive is ``NothingToVerifyError`` (exit 2).

        A folder is an archive when it holds ``index.jsonl`` or ``bundles/``. One that lost
        ``index.jsonl`` but still holds bundles is a problem found (``index``, and each bundle
        ``unindexed``), never "ok".
        """
        self._check_root()
        has_index = os.path.lexists(self.index_path)
        if not has_index and not os.path.lexists(self.root / BUNDLES):
            raise NothingToVerifyError(
                f"{self.root} is not an evidence archive: it holds neither {INDEX} nor {BUNDLES}/",
                hint="pass the folder that `policyengine check --evidence-dir` wrote")
        self.recover_if_needed()  # (before the catalogues are read: a repair it makes is seen)
        report = super().verify(ids, public_key, heads=heads, stamps=stamps)
        if not has_index and not ids:
            held = [p for p in report.problems if p.check == "unindexed"]
            lost = VerifyProblem("", None, "index", f"{self.index_path} is missing, but {BUNDLES}/ holds "
                                 f"{len(held)} bundle(s): the index of record was deleted")
            report = structs.replace(report, problems=(lost, *report.problems))
        return report
