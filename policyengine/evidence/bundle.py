"""The evidence bundle: one zip per evaluation, with a manifest of every member's digest.

The format does not depend on where bundles are kept: ``write_bundle_zip`` writes into any
seekable binary file and ``inspect_bundle`` checks an open zip, so every store reuses both.

A bundle holds ``decision.json``, ``change.json``, ``policy/<file>`` (the policy bytes exactly
as evaluated), ``files/<relpath>`` for every workspace file a rule read, any extra members,
and last ``manifest.json``, which lists the path, size and SHA-256 of every other member.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO, Any

from policyengine import __version__
from policyengine.errors import EvidenceError
from policyengine.models import FileRead

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
DECISION = "decision.json"
CHANGE = "change.json"
POLICY_DIR = "policy/"
FILES_DIR = "files/"
# Members a bundle may hold that its manifest does not list. A signature over the manifest
# (a DSSE envelope) will join this set: it cannot list itself in what it signs.
UNLISTED_MEMBERS = frozenset({MANIFEST})

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


@dataclass(frozen=True)
class Member:
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
        Member(POLICY_DIR + policy_filename, bytes(policy_bytes)),
        *(Member(FILES_DIR + f.relpath, file=f) for f in files),
        *(Member(name, bytes(data)) for name, data in extra_members.items()),
    ]
    seen: set[str] = set(UNLISTED_MEMBERS)
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


class BundleWriter:
    """Write members into an open zip and remember each one's size and digest for the manifest."""

    def __init__(self, zf: zipfile.ZipFile, *, created_at: datetime) -> None:
        self.zf = zf
        self.date_time = created_at.astimezone(timezone.utc).timetuple()[:6]
        self.entries: list[dict[str, Any]] = []

    def _info(self, name: str, size: int) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=self.date_time)
        info.compress_type = _compress_type(name, size)
        info.external_attr = 0o644 << 16
        info.file_size = size
        return info

    def add_bytes(self, name: str, data: bytes) -> None:
        """Write ``data`` as member ``name``."""
        self.zf.writestr(self._info(name, len(data)), data)
        self.entries.append({"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})

    def add_file(self, name: str, file: FileRead) -> None:
        """Copy ``file`` from disk as member ``name``, hashing while copying.

        A digest that differs from the one the rule saw means the file changed after the rule
        read it: the bundle would not show what was judged, so this fails closed.
        """
        digest = hashlib.sha256()
        size = 0
        info = self._info(name, max(file.size, 0))
        with self.zf.open(info, "w", force_zip64=info.file_size >= _ZIP64_THRESHOLD) as dst:
            for chunk in _read_chunks(file):
                digest.update(chunk)
                size += len(chunk)
                dst.write(chunk)
        if digest.hexdigest() != file.sha256 or size != file.size:
            raise EvidenceError(
                f"{file.relpath} changed after the policy read it (read as sha256 {file.sha256}, "
                f"{file.size} bytes; now sha256 {digest.hexdigest()}, {size} bytes)",
                hint="something in the job rewrites this file while the check runs; check a settled workspace",
            )
        self.entries.append({"path": name, "size": size, "sha256": file.sha256})

    def add_manifest(self, *, bundle_id: str, created_at: str) -> dict[str, Any]:
        """Write ``manifest.json`` listing every member written so far; return it."""
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "bundle_id": bundle_id,
            "created_at": created_at,
            "tool": {"name": "policyengine", "version": __version__},
            "members": self.entries,
        }
        data = _json_bytes(manifest)
        self.zf.writestr(self._info(MANIFEST, len(data)), data)
        return manifest


def write_bundle_zip(
    fileobj: IO[bytes], members: Sequence[Member], *, bundle_id: str, created_at: datetime
) -> dict[str, Any]:
    """Write a whole bundle into ``fileobj`` (seekable, binary); return its manifest."""
    with zipfile.ZipFile(fileobj, "w", allowZip64=True) as zf:
        writer = BundleWriter(zf, created_at=created_at)
        for m in members:
            if m.file is not None:
                writer.add_file(m.name, m.file)
            else:
                writer.add_bytes(m.name, m.data or b"")
        return writer.add_manifest(bundle_id=bundle_id, created_at=format_timestamp(created_at))


@dataclass(frozen=True)
class VerifyProblem:
    """One thing wrong in the archive, named so that an auditor can act on it.

    ``check`` is one of ``index``, ``bundle-digest``, ``manifest``, ``member-digest``,
    ``missing``, ``unindexed``, ``unreadable``. ``bundle_id`` is empty for an index line
    that cannot be parsed at all.
    """

    bundle_id: str
    member: str | None
    check: str
    message: str


@dataclass(frozen=True)
class Inspection:
    """What ``inspect_bundle`` found: problems, and facts to hold against the index record.

    A fact is None when it could not be read from a member whose digest matched.
    """

    problems: list[VerifyProblem] = field(default_factory=list)
    created_at: str | None = None
    decision: str | None = None
    policy_sha256: str | None = None


def _digest_member(zf: zipfile.ZipFile, name: str) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with zf.open(name) as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _parse_manifest(data: bytes) -> dict[str, Any]:
    manifest = json.loads(data)
    if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"expected an object with schema_version {SCHEMA_VERSION}")
    members = manifest.get("members")
    if not isinstance(members, list) or not all(
        isinstance(e, dict)
        and isinstance(e.get("path"), str)
        and isinstance(e.get("size"), int)
        and isinstance(e.get("sha256"), str)
        for e in members
    ):
        raise ValueError("'members' must be a list of {path, size, sha256}")
    return manifest


def inspect_bundle(zf: zipfile.ZipFile, bundle_id: str) -> Inspection:
    """Check every member of an open bundle against its manifest; report every problem found."""

    problems: list[VerifyProblem] = []

    def problem(check: str, member: str | None, message: str) -> None:
        problems.append(VerifyProblem(bundle_id, member, check, message))

    names = zf.namelist()
    for name, count in sorted(Counter(names).items()):
        if count > 1:
            problem("manifest", name, f"member {name} appears {count} times in the zip")
        unsafe = member_name_problem(name)
        if unsafe:
            problem("manifest", name, f"member name {name!r} is unsafe: {unsafe}")
    if MANIFEST not in names:
        problem("manifest", MANIFEST, f"{MANIFEST} is missing: the members cannot be checked")
        return Inspection(problems)
    try:
        manifest = _parse_manifest(zf.read(MANIFEST))
    except (*ZIP_READ_ERRORS, ValueError) as exc:
        problem("manifest", MANIFEST, f"{MANIFEST} cannot be read: {exc}")
        return Inspection(problems)
    if manifest.get("bundle_id") != bundle_id:
        named = manifest.get("bundle_id")
        problem("manifest", MANIFEST, f"{MANIFEST} names bundle {named!r}, not {bundle_id}")

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

    for required in (DECISION, CHANGE):
        if required not in listed:
            problem("manifest", required, f"the bundle has no {required}")
    policies = [p for p in listed if p.startswith(POLICY_DIR)]
    if len(policies) != 1:
        problem("manifest", None, f"the bundle holds {len(policies)} policy files, expected exactly 1")

    created_at = manifest.get("created_at")
    decision = None
    if DECISION in verified:
        try:
            value = json.loads(zf.read(DECISION))
            decision = value.get("decision") if isinstance(value, dict) else None
        except (*ZIP_READ_ERRORS, ValueError):
            decision = None
        if not isinstance(decision, str):
            problem("manifest", DECISION, f"{DECISION} has no 'decision' string")
            decision = None
    return Inspection(
        problems=problems,
        created_at=created_at if isinstance(created_at, str) else None,
        decision=decision,
        policy_sha256=verified.get(policies[0]) if len(policies) == 1 else None,
    )
