"""The evidence bundle: one zip per evaluation, with a manifest of every member's digest.

The format does not depend on where bundles are kept: ``write_bundle_zip`` writes into any
seekable binary file and ``inspect_bundle`` checks an open zip, so every store reuses both.

A bundle holds ``decision.json``, ``change.json``, ``policy/<file>`` (the policy bytes exactly
as evaluated), ``files/<relpath>`` for every workspace file a rule read, any extra members,
and last ``manifest.json``, which lists the path, size and SHA-256 of every other member.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import posixpath
import threading
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import IO, TYPE_CHECKING, Any, cast

from msgspec import Struct, field

from policyengine import __version__
from policyengine.errors import EvidenceError
from policyengine.evidence.format.signing import (
    PREDICATE_TYPE,
    SigningKey,
    build_statement,
    envelope,
    open_envelope,
)
from policyengine.evidence.format.timestamp import MEMBER as TIMESTAMP_MEMBER
from policyengine.models import FileRead
from policyengine.redact import DEFAULT, EvidenceRedactor, looks_binary

if TYPE_CHECKING:
    import queue

SCHEMA_VERSION = 3
"""The evidence schema version this release writes (docs/evidence.md, "Versions"): 1 before statements,
2 with chains, 3 with the store catalogue (``evidence.catalogue``) and the reconciliation record."""
IDENTITY_SCHEMA_VERSION = SCHEMA_VERSION
"""``identity.json`` (unknown to version 2) came with version 3 too."""
READABLE_SCHEMA_VERSIONS = (1, 2, 3)
NEWER_VERSION = "made by a newer version of policyengine: upgrade"
"""What ``verify`` says of an item whose schema version is above every version it reads: not a forgery
it can name, but evidence it cannot judge."""


def newer_version_message(what: str, version: int) -> str:
    """``WHAT claims schema_version N, made by a newer version of policyengine: upgrade (...)``."""
    return (f"{what} claims schema_version {version}, {NEWER_VERSION} (this version reads "
            f"{', '.join(map(str, READABLE_SCHEMA_VERSIONS))}) to verify it")
MANIFEST = "manifest.json"
PAGE_TEXT_LIMIT = 64 * 1024
"""Text files up to this size (the rollback plan) are kept for the bundle's page, which shows them."""
REPORT = "report.html"
ATTESTATION = "attestation.intoto.json"
TIMESTAMP = TIMESTAMP_MEMBER
"""The RFC 3161 reply over the statement's signature (schema 3, ``evidence.timestamp``): unlisted."""
IDENTITY = "identity.json"
"""The CI's ID token as RFC 7515 JSON with the key set seen at check time (schema version 3)."""
DECISION = "decision.json"
CHANGE = "change.json"
POLICY_DIR = "policy/"
FILES_DIR = "files/"
# Members a bundle may hold that its manifest does not list: the manifest itself, the
# statement envelope, which names the manifest's digest and so cannot be listed in it, and
# the timestamp token over the envelope's signature (schema 3 only: ``check_members``).
UNLISTED_MEMBERS = frozenset({MANIFEST, ATTESTATION, TIMESTAMP})

# Stored, not deflated: deflating these costs time and saves (almost) nothing.
LARGE_MEMBER = 1 << 20
COMPRESSED_SUFFIXES = frozenset(
    {".zip", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".br", ".lz4", ".jar", ".whl",
     ".png", ".jpg", ".jpeg", ".gif", ".webp", ".mp4", ".woff", ".woff2"}
)
CHUNK = 1 << 20
_ZIP64_THRESHOLD = 1 << 31  # zipfile needs to know up front when a streamed member may pass 2 GiB

# What reading a damaged member can raise: a bad CRC or header, a broken deflate stream,
# a truncated file, a flipped flag that asks for encryption or an unknown compression.
ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError)


def format_timestamp(moment: datetime) -> str:
    """Return ``moment`` as ISO 8601 UTC with a ``Z``, to the second: ``2024-05-01T12:00:00Z``."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("created_at must be timezone-aware")
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def member_name_problem(name: str) -> str | None:
    """Say why ``name`` is not a safe zip member name, or return None.

    Safe: relative, ``/``-separated, no empty, ``.`` or ``..`` segment, no control character,
    so that unpacking a bundle can never write outside the folder it is unpacked into.
    """
    if not name:
        return "the name is empty"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "the name is absolute"
    if "\\" in name:
        return "the name contains a backslash"
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        return "the name contains a control character"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "the name has an empty, '.' or '..' segment"
    return None


def member_path(path: str) -> str:
    """Encode a workspace path or file name as (part of) a member name, reversibly.

    ``%``, ``\\`` and every control, format or line-separator character are percent-encoded
    (their UTF-8 bytes), so a report named with a newline, or a policy file name holding a
    control character, is still recorded. ``urllib.parse.unquote`` reverses it
    (``member_source``). Other characters, ``/`` included, are kept as written.
    """
    import unicodedata
    from urllib.parse import quote

    out = []
    for ch in path:
        if ch in "%\\" or unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs"):
            out.append(quote(ch, safe="", errors="surrogatepass"))
        else:
            out.append(ch)
    return "".join(out)


def member_source(name: str) -> str:
    """The workspace path a ``files/`` member name was encoded from (``member_path`` reversed)."""
    from urllib.parse import unquote

    return unquote(name)


class Member(Struct, frozen=True):
    """One member to write: bytes held in memory, or a workspace file copied from disk."""

    name: str
    data: bytes | None = None
    file: FileRead | None = None


def plan_members(
    *,
    decision: Mapping[str, Any],
    change: Mapping[str, Any],
    policy_filename: str,
    policy_bytes: bytes,
    files: Sequence[FileRead],
    extra_members: Mapping[str, bytes],
) -> list[Member]:
    """Return the members of a bundle in writing order; raise ValueError on an unsafe or repeated name.

    Everything is checked here, before a single byte is written.
    """
    members = [
        Member(DECISION, _json_bytes(decision)),
        Member(CHANGE, _json_bytes(change)),
        Member(POLICY_DIR + member_path(policy_filename), bytes(policy_bytes)),
        *(Member(FILES_DIR + member_path(f.relpath), file=f) for f in files),
        *(Member(name, bytes(data)) for name, data in extra_members.items()),
    ]
    seen: set[str] = set(UNLISTED_MEMBERS | {REPORT})
    for m in members:
        problem = member_name_problem(m.name)
        if problem:
            raise ValueError(f"unsafe bundle member name {m.name!r}: {problem}")
        if m.name in seen:
            raise ValueError(f"bundle member {m.name!r} is given twice or is reserved")
        seen.add(m.name)
    return members


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _compress_type(name: str, size: int) -> int:
    if size > LARGE_MEMBER or posixpath.splitext(name)[1].lower() in COMPRESSED_SUFFIXES:
        return zipfile.ZIP_STORED
    return zipfile.ZIP_DEFLATED


def _read_chunks(file: FileRead) -> Iterator[bytes]:
    """Yield the bytes of a workspace file; a read error names the file (a write error is the archive's)."""
    try:
        with open(file.abspath, "rb") as src:
            while chunk := src.read(CHUNK):
                yield chunk
    except OSError as exc:
        raise EvidenceError(
            f"cannot copy {file.relpath} into the evidence bundle: {exc.strerror or exc}",
            hint="the files a rule read must stay in place until the evidence is written",
        ) from exc


class BackgroundHash:
    """SHA-256 computed on another thread: ``hashlib`` releases the GIL on large buffers, so
    hashing runs on a second core while this one reads, CRCs and writes.

    ``update`` hands the chunk over (bounded queue: memory stays flat); ``hexdigest`` waits
    for the hashing to catch up. Small updates are hashed inline.
    """

    _INLINE = 1 << 16

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] | None = None  # with the thread (``queue``: ~1.5 ms to import)
        self._thread: threading.Thread | None = None
        self._done: str | None = None

    def _run(self, chunks: queue.Queue[bytes | None]) -> None:
        while (chunk := chunks.get()) is not None:
            self._hash.update(chunk)

    def update(self, data: bytes) -> None:
        chunks = self._queue
        if chunks is None:
            if len(data) < self._INLINE:
                self._hash.update(data)
                return
            import queue

            chunks = self._queue = queue.Queue(maxsize=8)
            self._thread = threading.Thread(target=self._run, args=(chunks,), name="policyengine-sha256", daemon=True)
            self._thread.start()
        chunks.put(bytes(data))

    def hexdigest(self) -> str:
        if self._done is None:
            if self._queue is not None and self._thread is not None:
                self._queue.put(None)
                self._thread.join()
            self._done = self._hash.hexdigest()
        return self._done


class _HashingSink:
    """A write-only, forward-only file for ``zipfile``: hashes every byte on its way to disk.

    ``zipfile`` cannot seek back in it, so it writes sizes and CRCs after each member (data
    descriptors) and the whole bundle is hashed in the same pass that writes it: no second
    read of a 1 GB bundle.
    """

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.pos = 0
        self.digest = BackgroundHash()
        self._flushed = 0
        self._syncer: threading.Thread | None = None

    _FLUSH_EVERY = 64 << 20

    def write(self, data: bytes) -> int:
        n = self.fh.write(data)
        self.digest.update(data)
        self.pos += len(data)
        if self.pos - self._flushed >= self._FLUSH_EVERY:
            self._start_writeback()
        return n if n is not None else len(data)

    def _start_writeback(self) -> None:
        """Push written data to disk in the background, so the final fsync has little left to do."""
        self._flushed = self.pos
        if self._syncer is not None and self._syncer.is_alive():
            return
        fileno = getattr(self.fh, "fileno", None)
        if fileno is None:
            return
        try:
            self.fh.flush()
            fd = fileno()
        except (OSError, ValueError):
            return

        def sync() -> None:
            with contextlib.suppress(OSError):
                os.fdatasync(fd)

        self._syncer = threading.Thread(target=sync, name="policyengine-writeback", daemon=True)
        self._syncer.start()

    def wait(self) -> None:
        """Wait for background writeback (before the file is closed or renamed)."""
        if self._syncer is not None:
            self._syncer.join()

    def tell(self) -> int:
        return self.pos

    def seek(self, *_: Any) -> int:
        raise OSError("not seekable")

    def seekable(self) -> bool:
        return False

    def flush(self) -> None:
        self.fh.flush()


class BundleWriter:
    """Write a bundle into a seekable binary file: bulk members first, then the chained tail.

    The bulk (policy, change, decision, copied files, raw responses) does not depend on the
    chain and is written first, outside any lock. ``finish`` writes the members that do:
    ``report.html``, ``manifest.json`` and the statement envelope, then closes the zip.
    Every member is redacted (``policyengine.redact``) on its way in; a member that
    had to be redacted records the digest of the original bytes as well as of the stored ones.
    """

    def __init__(self, fh: IO[bytes], *, bundle_id: str, created_at: datetime,
                 redactor: EvidenceRedactor | None = None) -> None:
        self.redactor = redactor or DEFAULT
        self.sink = _HashingSink(fh)
        self.zf = zipfile.ZipFile(cast(IO[bytes], self.sink), "w", allowZip64=True)
        self.bundle_id = bundle_id
        self.created_at = created_at
        self.date_time = created_at.astimezone(timezone.utc).timetuple()[:6]
        self.entries: list[dict[str, Any]] = []
        self.texts: dict[str, bytes] = {}
        """Small text files as stored (redacted), by workspace path: the page shows the rollback plan."""

    def _info(self, name: str, size: int) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=self.date_time)
        info.compress_type = _compress_type(name, size)
        info.external_attr = 0o644 << 16
        info.file_size = size
        return info

    def add_members(self, members: Sequence[Member]) -> None:
        """Write every planned member."""
        for m in members:
            if m.file is not None:
                self.add_file(m.name, m.file)
            else:
                # identity.json holds the CI's ID token on purpose (verify re-checks it offline):
                # the one member the redactor leaves alone (providers.oidc).
                self.add_bytes(m.name, m.data or b"", redact=m.name != IDENTITY)

    def add_bytes(self, name: str, data: bytes, *, redact: bool = True) -> None:
        """Write ``data`` (redacted) as member ``name``."""
        stored, count = self.redactor.redact(data) if redact else (data, 0)
        self.zf.writestr(self._info(name, len(stored)), stored)
        entry: dict[str, Any] = {"path": name, "size": len(stored), "sha256": hashlib.sha256(stored).hexdigest()}
        if count:
            entry["redacted"] = {"count": count, "original_size": len(data),
                                 "original_sha256": hashlib.sha256(data).hexdigest()}
        self.entries.append(entry)

    def add_file(self, name: str, file: FileRead) -> None:
        """Copy ``file`` from disk as member ``name``, hashing (and redacting text) while copying.

        A digest of the original bytes that differs from the one the rule saw means the file
        changed after the rule read it: the bundle would not show what was judged, so this
        fails closed. One SHA-256 pass covers both digests when nothing was redacted (the
        stored bytes are the original ones); a redacted file is read again for its original
        digest (rare, and it must match what the rule read).
        """
        stored = BackgroundHash()
        size = stored_size = 0
        info = self._info(name, max(file.size, 0))

        def originals() -> Iterator[bytes]:
            nonlocal size
            for chunk in _read_chunks(file):
                size += len(chunk)
                yield chunk

        chunks = originals()
        first = next(chunks, b"")
        binary = looks_binary(first) or posixpath.splitext(name)[1].lower() in COMPRESSED_SUFFIXES

        def all_chunks() -> Iterator[bytes]:
            if first:
                yield first
            yield from chunks

        redacted = self.redactor.stream(all_chunks())
        out = all_chunks() if binary else iter(redacted)
        kept: list[bytes] | None = [] if not binary and file.size <= PAGE_TEXT_LIMIT else None
        try:
            with self.zf.open(info, "w", force_zip64=info.file_size >= _ZIP64_THRESHOLD) as dst:
                for chunk in out:
                    stored.update(chunk)
                    stored_size += len(chunk)
                    dst.write(chunk)
                    if kept is not None:
                        kept.append(chunk)
        finally:
            stored.hexdigest()  # waits for (and stops) the hashing thread
        was_redacted = not binary and redacted.count > 0
        original_digest, original_size = stored.hexdigest(), size
        if was_redacted:
            again = hashlib.sha256()
            original_size = 0
            for chunk in _read_chunks(file):
                again.update(chunk)
                original_size += len(chunk)
            original_digest = again.hexdigest()
        if original_digest != file.sha256 or size != file.size or original_size != file.size:
            raise EvidenceError(
                f"{file.relpath} changed after the policy read it (read as sha256 {file.sha256}, "
                f"{file.size} bytes; now sha256 {original_digest}, {original_size} bytes)",
                hint="something in the job rewrites this file while the check runs; check a settled workspace",
            )
        entry: dict[str, Any] = {"path": name, "size": stored_size, "sha256": stored.hexdigest()}
        if was_redacted:
            entry["redacted"] = {"count": redacted.count, "original_size": size, "original_sha256": file.sha256}
        self.entries.append(entry)
        if kept is not None and stored_size <= PAGE_TEXT_LIMIT:
            self.texts[file.relpath] = b"".join(kept)

    # -- the chained tail --------------------------------------------------------------

    def finish(
        self,
        *,
        decision: Mapping[str, Any],
        change: Mapping[str, Any],
        chain: Mapping[str, Any],
        subjects: Sequence[tuple[str, str]] = (),
        signing_key: SigningKey | None = None,
        close: bool = True,
    ) -> Finished:
        """Write ``report.html``, the manifest and the statement envelope; close the zip when ``close``."""
        created = format_timestamp(self.created_at)
        shown = json.loads(self.redactor.text(json.dumps(decision)))  # the page shows what the bundle stores
        report = _render_report(shown, self.entries, self.bundle_id, created,
                                chain.get("previous_sha256"), signing_key is not None, self.texts)

        def statement_for(manifest_sha256: str) -> dict[str, Any]:
            statement = build_statement(
                decision=decision, change=change, subjects=subjects, bundle_id=self.bundle_id, created_at=created,
                manifest_sha256=manifest_sha256, chain=chain,
            )
            statement["predicate"].update(_clock_fields(decision))
            return statement

        return self.write_tail(chain=chain, manifest_extra=_clock_fields(decision), statement_for=statement_for,
                               signing_key=signing_key, report=report, close=close)

    def write_tail(
        self,
        *,
        chain: Mapping[str, Any],
        manifest_extra: Mapping[str, Any],
        statement_for: Callable[[str], dict[str, Any]],
        signing_key: SigningKey | None,
        report: str | None,
        close: bool = True,
    ) -> Finished:
        """Write the chained tail of any bundle kind: ``report.html`` (when given), the manifest
        (with ``manifest_extra``) and the statement ``statement_for(<manifest sha256>)`` in its
        DSSE envelope, signed with ``signing_key``; close the zip when ``close``."""
        from policyengine.evidence.format import timestamp

        stamper = timestamp.active()
        if report is not None:
            self.add_bytes(REPORT, report.encode("utf-8"), redact=False)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "bundle_id": self.bundle_id,
            "created_at": format_timestamp(self.created_at),
            "tool": {"name": "policyengine", "version": __version__},
            "chain": dict(chain),
            "members": self.entries,
        }
        manifest.update(manifest_extra)

        def seal() -> tuple[bytes, dict[str, Any], dict[str, Any]]:
            manifest_bytes = _json_bytes(manifest)
            statement = statement_for(hashlib.sha256(manifest_bytes).hexdigest())
            return manifest_bytes, statement, envelope(statement, signing_key)

        if stamper is not None and signing_key is not None:
            # The manifest says a token was asked for: a token stripped from the bundle is then a finding.
            manifest["timestamp"] = {"token": TIMESTAMP}
        manifest_bytes, statement, env = seal()
        token = None
        if stamper is not None:
            # Stamped after signing (the token is over the signature), so on every attempt: a
            # compare-and-swap retry that signs a new statement gets a new token.
            if signing_key is None:
                why = "the statement is unsigned, and a timestamp stamps a signature (give --signing-key)"
                if stamper.required:
                    raise EvidenceError(f"a timestamp is required, but {why}")
            else:
                try:
                    token = stamper.stamp(base64.b64decode(env["signatures"][0]["sig"]), near=self.created_at)
                except EvidenceError as exc:
                    if stamper.required:
                        raise
                    why = exc.message
            if token is None:  # not required: the bundle says why it has no token, under its signature
                manifest["timestamp"] = {"token": None, "reason": why}
                manifest_bytes, statement, env = seal()
        self.zf.writestr(self._info(MANIFEST, len(manifest_bytes)), manifest_bytes)
        env_bytes = _json_bytes(env)
        self.zf.writestr(self._info(ATTESTATION, len(env_bytes)), env_bytes)
        if token is not None:
            self.zf.writestr(self._info(TIMESTAMP, len(token)), token)
        if close:
            self.close()
        return Finished(manifest=manifest, statement=statement)

    def close(self) -> tuple[str, int]:
        """Close the zip; return the SHA-256 and size of the whole bundle."""
        self.zf.close()
        self.sink.flush()
        self.sink.wait()
        return self.sink.digest.hexdigest(), self.sink.pos

    def abandon(self) -> None:
        """Stop without writing the zip's directory (the caller removes the file)."""
        self.zf._didModify = False  # type: ignore[attr-defined]  # noqa: SLF001 - zipfile has no "discard"
        with contextlib.suppress(Exception):
            self.zf.close()
        self.sink.wait()
        self.sink.digest.hexdigest()  # stops its thread


def _clock_fields(decision: Mapping[str, Any]) -> dict[str, Any]:
    """What the manifest and the statement say of the clock: ``simulated`` (a what-if run,
    never a deployment) and ``clock`` (its source and the wall-clock time), when the decision has them."""
    out: dict[str, Any] = {}
    if "simulated" in decision:
        out["simulated"] = decision.get("simulated") is True
    clock = decision.get("clock")
    if isinstance(clock, Mapping):
        out["clock"] = {"source": clock.get("source"), "wall_time": clock.get("wall_time")}
    return out


CLOCK_SKEW_LIMIT_SECONDS = 15 * 60
"""A bundle written more than this after its evaluation time was evaluated at another time than
when it ran (a clock override): verify and export warn."""


def clock_warning(created_at: Any, evaluated_at: Any) -> str | None:
    """Warn when a bundle's creation time precedes its evaluation time, or follows it by more
    than 15 minutes: the rules were judged at a time other than when the check ran."""
    from policyengine.errors import UsageError
    from policyengine.models import parse_instant

    if not isinstance(created_at, str) or not isinstance(evaluated_at, str):
        return None
    try:
        created = parse_instant(created_at, option="created_at")
        evaluated = parse_instant(evaluated_at, option="evaluated_at")
    except UsageError:  # an unreadable time is not this warning's business
        return None
    # created_at is kept to the second: allow the evaluation's fraction of a second.
    delta = (created - evaluated).total_seconds()
    if delta < -1:
        return (f"created at {created_at}, before its evaluation time {evaluated_at}: "
                "the rules were judged at a time that had not come yet (a clock override)")
    if delta > CLOCK_SKEW_LIMIT_SECONDS:
        return (f"created at {created_at}, {int(delta // 60)} minutes after its evaluation time {evaluated_at}: "
                "the rules were judged at an earlier time than the check ran (a clock override)")
    return None


class Finished(Struct, frozen=True):
    """The manifest and statement a finished bundle holds."""

    manifest: dict[str, Any]
    statement: dict[str, Any]


def _render_report(decision: Mapping[str, Any], members: list[dict[str, Any]], bundle_id: str, created_at: str,
                   previous: Any, signed: bool, texts: Mapping[str, bytes] | None = None) -> str | None:
    from policyengine.evidence.format.report import render_report

    return render_report(dict(decision), [dict(m) for m in members], bundle_id, created_at,
                         previous if isinstance(previous, str) else None, signed, texts=texts)


def write_bundle_zip(
    fileobj: IO[bytes],
    members: Sequence[Member],
    *,
    bundle_id: str,
    created_at: datetime,
    decision: Mapping[str, Any] | None = None,
    change: Mapping[str, Any] | None = None,
    chain: Mapping[str, Any] | None = None,
    signing_key: SigningKey | None = None,
) -> dict[str, Any]:
    """Write a whole (unchained unless ``chain`` is given) bundle into ``fileobj``; return its manifest."""
    writer = BundleWriter(fileobj, bundle_id=bundle_id, created_at=created_at)
    writer.add_members(members)
    done = writer.finish(decision=decision or {}, change=change or {}, chain=chain or {}, signing_key=signing_key)
    return done.manifest


class VerifyProblem(Struct, frozen=True):
    """One thing wrong in the archive, named so that an auditor can act on it.

    ``check`` is one of ``index``, ``bundle-digest``, ``manifest``, ``member-digest``,
    ``missing``, ``unindexed``, ``unreadable``, ``statement``, ``signature``, ``replay``,
    ``chain`` or ``history`` (a commit of a git store's ref that does more than add one record).
    ``bundle_id`` is empty for an index line that cannot be parsed at all.
    """

    bundle_id: str
    member: str | None
    check: str
    message: str


class Inspection(Struct, frozen=True):
    """What ``inspect_bundle`` found: problems, and facts to hold against the index record.

    A fact is None when it could not be read from a member whose digest matched.
    ``signature`` is ``valid``, ``unsigned``, ``unchecked`` (signed; no key given), ``invalid``,
    ``wrong-key`` or ``absent`` (no statement: a bundle that claims schema 1, made before
    statements existed; with a public key that is a ``signature`` problem like any other).
    ``change`` holds repository, environment and commit of ``change.json`` (when its digest
    matched), ``signed_by`` the key id the statement's signature names (None: unsigned),
    ``warnings`` what is odd but proves nothing (times).
    """

    problems: list[VerifyProblem] = field(default_factory=list)
    created_at: str | None = None
    decision: str | None = None
    policy_sha256: str | None = None
    manifest: dict[str, Any] | None = None
    signature: str = "absent"
    chain: dict[str, Any] | None = None
    schema_version: int | None = None
    change: dict[str, Any] | None = None
    signed_by: str | None = None
    evaluated_at: str | None = None
    warnings: list[VerifyProblem] = field(default_factory=list)
    """Not integrity problems: e.g. a creation time far from the evaluation time (``clock_warning``)."""
    simulated: bool = False
    advisory: bool = False
    """decision.json says ``advisory: true`` (a denial that did not stop the deploy)."""
    kind: str | None = None
    """None for an evaluation; the kind of a linked record (``outcome``, ``review``: ``records``)."""
    about: dict[str, Any] | None = None
    """A linked record's ``about``: the id and SHA-256 of the evaluation bundle it is about."""
    record: dict[str, Any] | None = None
    """A linked record's ``record.json`` (when its digest matched and it is well formed)."""


def _digest_member(zf: zipfile.ZipFile, name: str) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with zf.open(name) as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def schema_version_of(manifest: Any) -> int:
    """Return the manifest's ``schema_version``; raise ValueError unless it is a readable integer.

    Only a JSON integer counts: ``2.0``, ``"2"`` and ``true`` are not versions (in Python
    ``True == 1`` and ``1.0 in (1, 2)``, hence the exact type test).
    """
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if type(version) is int and version > max(READABLE_SCHEMA_VERSIONS):
        raise ValueError(newer_version_message("it", version))
    if type(version) is not int or version not in READABLE_SCHEMA_VERSIONS:
        raise ValueError(f"schema_version {version!r} is not one of the integers "
                         f"{', '.join(map(str, READABLE_SCHEMA_VERSIONS))}")
    return version


def _parse_manifest(data: bytes) -> dict[str, Any]:
    manifest = json.loads(data)
    if not isinstance(manifest, dict):
        raise ValueError("expected a JSON object")
    schema_version_of(manifest)
    members = manifest.get("members")
    if not isinstance(members, list) or not all(
        isinstance(e, dict)
        and isinstance(e.get("path"), str)
        and isinstance(e.get("size"), int)
        and isinstance(e.get("sha256"), str)
        for e in members
    ):
        raise ValueError("'members' must be a list of {path, size, sha256}")
    if manifest["schema_version"] >= 2 and not isinstance(manifest.get("chain"), dict):
        raise ValueError("'chain' must be an object")
    return manifest


class CheckedMembers(Struct):
    """What ``check_members`` found in any bundle kind: its member names, manifest (parsed and raw),
    the members whose bytes match the manifest (name -> SHA-256), and the names it lists."""

    names: list[str]
    manifest: dict[str, Any]
    manifest_bytes: bytes
    verified: dict[str, str]
    listed: set[str]


def check_members(zf: zipfile.ZipFile, bundle_id: str, problem: Callable[[str, str | None, str], None]
                  ) -> CheckedMembers | None:
    """The checks every bundle kind shares: safe, unique member names; a readable manifest naming
    ``bundle_id``; every listed member present with its size and digest; nothing unlisted.

    Reports through ``problem(check, member, message)``; None when the manifest cannot be read.
    """
    names = zf.namelist()
    for name, count in sorted(Counter(names).items()):
        if count > 1:
            problem("manifest", name, f"member {name} appears {count} times in the zip")
        unsafe = member_name_problem(name)
        if unsafe:
            problem("manifest", name, f"member name {name!r} is unsafe: {unsafe}")
    if MANIFEST not in names:
        problem("manifest", MANIFEST, f"{MANIFEST} is missing: the members cannot be checked")
        return None
    try:
        manifest_bytes = zf.read(MANIFEST)
        manifest = _parse_manifest(manifest_bytes)
    except (*ZIP_READ_ERRORS, ValueError) as exc:
        if NEWER_VERSION in str(exc):  # not damage: evidence this version cannot judge
            problem("version", MANIFEST, f"bundle {bundle_id} was {NEWER_VERSION} ({MANIFEST}: {exc})")
        else:
            problem("manifest", MANIFEST, f"{MANIFEST} cannot be read: {exc}")
        return None
    if manifest.get("bundle_id") != bundle_id:
        named = manifest.get("bundle_id")
        problem("replay", MANIFEST, f"the file of bundle {bundle_id} holds bundle {named!r} "
                f"(its {MANIFEST} says so): a copy of another bundle stored under a new name")

    verified: dict[str, str] = {}  # member -> digest, for members whose bytes match the manifest
    for entry in manifest["members"]:
        path = entry["path"]
        if path in verified or path in UNLISTED_MEMBERS:
            problem("manifest", path, f"member {path} is listed more than once or may not be listed")
            continue
        if path not in names:
            problem("missing", path, f"member {path} is listed in the manifest but absent from the zip")
            continue
        try:
            size, digest = _digest_member(zf, path)
        except ZIP_READ_ERRORS as exc:
            problem("member-digest", path, f"member {path} cannot be read back, its stored bytes changed: {exc}")
            continue
        if (size, digest) != (entry["size"], entry["sha256"]):
            problem(
                "member-digest",
                path,
                f"member {path} does not match the manifest "
                f"(manifest: {entry['size']} bytes, sha256 {entry['sha256']}; zip: {size} bytes, sha256 {digest})",
            )
            continue
        verified[path] = digest
    listed = {e["path"] for e in manifest["members"]}
    for name in sorted(set(names) - listed - UNLISTED_MEMBERS):
        problem("manifest", name, f"member {name} is in the zip but not listed in the manifest")
    return CheckedMembers(names=names, manifest=manifest, manifest_bytes=manifest_bytes, verified=verified,
                          listed=listed)


def inspect_bundle(zf: zipfile.ZipFile, bundle_id: str, public_key: tuple[Any, str] | None = None) -> Inspection:
    """Check every member of an open evaluation bundle against its manifest, and its statement against both.

    Reports every problem found. With ``public_key``, a bundle that is not signed by it is a
    ``signature`` problem; without, a signature cannot be checked and is reported as such.
    A bundle whose manifest names a record kind (``kind``) is not an evaluation: that is a
    ``manifest`` problem here (``records.inspect_any`` dispatches on the kind).
    """

    problems: list[VerifyProblem] = []

    def problem(check: str, member: str | None, message: str) -> None:
        problems.append(VerifyProblem(bundle_id, member, check, message))

    checked = check_members(zf, bundle_id, problem)
    if checked is None:
        return Inspection(problems)
    names, manifest, manifest_bytes = checked.names, checked.manifest, checked.manifest_bytes
    verified, listed = checked.verified, checked.listed
    if manifest.get("kind", "evaluation") != "evaluation":
        problem("manifest", MANIFEST, f"the manifest says this is a {manifest.get('kind')!r} record, "
                "not an evaluation")

    for required in (DECISION, CHANGE):
        if required not in listed:
            problem("manifest", required, f"the bundle has no {required}")
    policies = [p for p in listed if p.startswith(POLICY_DIR)]
    if len(policies) != 1:
        problem("manifest", None, f"the bundle holds {len(policies)} policy files, expected exactly 1")

    created_at = manifest.get("created_at")
    decision = None
    evaluated_at = None
    simulated = advisory = False
    if DECISION in verified:
        try:
            value = json.loads(zf.read(DECISION))
            decision = value.get("decision") if isinstance(value, dict) else None
            evaluated_at = value.get("evaluated_at") if isinstance(value, dict) else None
            simulated = isinstance(value, dict) and value.get("simulated") is True
            advisory = isinstance(value, dict) and value.get("advisory") is True
        except (*ZIP_READ_ERRORS, ValueError):
            decision = None
        if not isinstance(decision, str):
            problem("manifest", DECISION, f"{DECISION} has no 'decision' string")
            decision = None
    change: dict[str, Any] | None = None
    if CHANGE in verified:
        try:
            value = json.loads(zf.read(CHANGE))
        except (*ZIP_READ_ERRORS, ValueError):
            value = None
        if isinstance(value, dict):
            change = {k: value.get(k) if isinstance(value.get(k), str) else None
                      for k in ("repository", "environment", "commit")}
        else:
            problem("manifest", CHANGE, f"{CHANGE} is not a JSON object")

    version = manifest["schema_version"]
    signature = "absent"
    signed_by = None
    chain = manifest.get("chain") if isinstance(manifest.get("chain"), dict) else None
    if chain is not None and change is not None:
        for key in ("repository", "environment"):
            if chain.get(key) != change[key]:
                problem("manifest", MANIFEST, f"the chain link names {key} {chain.get(key)!r} but {CHANGE} "
                        f"has {change[key]!r}: the bundle was moved between chains")
    if version >= 2:
        signature, signed_by = _check_statement(zf, names, manifest, manifest_bytes, decision, public_key,
                                                problem)
    if public_key is not None and signature != "valid" and not any(
            p.check == "signature" for p in problems):
        # Whatever version a bundle claims, a required signature must be there: a forger who
        # rewrites a bundle as "schema 1" (no statement) must not pass as an old bundle.
        why = (f"it claims schema_version {version} (made before statements existed) and carries no statement"
               if version < 2 else f"its signature is {signature}")
        problem("signature", ATTESTATION, f"a signature by the given key is required, but {why}")
    warnings: list[VerifyProblem] = []
    time_note = clock_warning(created_at, evaluated_at)
    if time_note:
        warnings.append(VerifyProblem(bundle_id, None, "time", time_note))
    return Inspection(
        problems=problems,
        created_at=created_at if isinstance(created_at, str) else None,
        decision=decision,
        policy_sha256=verified.get(policies[0]) if len(policies) == 1 else None,
        manifest=manifest,
        signature=signature,
        chain=chain,
        schema_version=version,
        change=change,
        signed_by=signed_by,
        evaluated_at=evaluated_at if isinstance(evaluated_at, str) else None,
        warnings=warnings,
        simulated=simulated,
        advisory=advisory,
    )


def _check_statement(
    zf: zipfile.ZipFile,
    names: list[str],
    manifest: dict[str, Any],
    manifest_bytes: bytes,
    decision: str | None,
    public_key: tuple[Any, str] | None,
    problem: Any,
) -> tuple[str, str | None]:
    """Check an evaluation's statement envelope: signature, and that it names this manifest, decision and chain.

    Return the signature state and the key id the signature names (None when unsigned).
    """
    facts = {"decision": decision} if decision is not None else {}
    return check_statement(zf, names, manifest, manifest_bytes, public_key, problem,
                           predicate_types=(PREDICATE_TYPE,), facts=facts)


def check_statement(
    zf: zipfile.ZipFile,
    names: list[str],
    manifest: dict[str, Any],
    manifest_bytes: bytes,
    public_key: tuple[Any, str] | None,
    problem: Any,
    *,
    predicate_types: Sequence[str],
    facts: Mapping[str, Any],
) -> tuple[str, str | None]:
    """Check any bundle kind's statement envelope: its type, its signature, and that its predicate
    names this manifest's digest, bundle id and chain, and each of ``facts`` (predicate key ->
    the value the bundle has).

    Return the signature state and the key id the signature names (None when unsigned).
    """
    if ATTESTATION not in names:
        problem("statement", ATTESTATION, f"{ATTESTATION} is missing: the bundle carries no statement")
        return "absent", None
    try:
        data = zf.read(ATTESTATION)
    except ZIP_READ_ERRORS as exc:
        problem("statement", ATTESTATION, f"{ATTESTATION} cannot be read back: {exc}")
        return "invalid", None
    found = open_envelope(data, public_key, predicate_types)
    signed_by = found.keyids[0] if found.keyids else None
    if found.statement is None:
        problem("statement", ATTESTATION, f"{ATTESTATION}: {found.problem}")
        return found.signature, signed_by
    if found.signature in ("invalid", "wrong-key"):
        problem("signature", ATTESTATION, f"{ATTESTATION}: {found.problem}")
    elif found.signature == "unsigned" and public_key is not None:
        problem("signature", ATTESTATION, "the bundle is unsigned, but a signature by the given key is required")
    predicate = found.statement.get("predicate")
    predicate = predicate if isinstance(predicate, dict) else {}
    expected = {
        "manifest digest": ((predicate.get("manifest") or {}).get("sha256") if isinstance(
            predicate.get("manifest"), dict) else None, hashlib.sha256(manifest_bytes).hexdigest()),
        "bundle id": (predicate.get("bundle_id"), manifest.get("bundle_id")),
        "chain": (predicate.get("chain"), manifest.get("chain")),
    }
    for key, actual in facts.items():
        expected[key.replace("_", " ")] = (predicate.get(key), actual)
    for what, (stated, actual) in expected.items():
        if stated != actual:
            problem("statement", ATTESTATION,
                    f"the statement's {what} is {stated!r} but the bundle has {actual!r}: "
                    "the bundle was changed after the statement was made")
    return found.signature, signed_by
