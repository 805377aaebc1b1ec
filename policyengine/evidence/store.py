"""The base every evidence store shares (it imports none of them): preparing a bundle, the index record, listing, verifying.

A store keeps bundles and an index of them (``LocalArchive``: a folder; ``S3Archive``: a
bucket). Subclasses provide the storage operations; the checks an auditor relies on
(digests, statements, signatures, chains) live here once, so both stores verify the same way.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import hashlib
import os
import re
import secrets
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO, Any
from urllib.parse import quote

import policyengine.evidence.chain as chain_mod
from policyengine.errors import EvidenceError, UsageError
from policyengine.evidence.bundle import (
    CHUNK,
    Inspection,
    Member,
    VerifyProblem,
    format_timestamp,
    inspect_bundle,
    plan_members,
)
from policyengine.evidence.index import Query
from policyengine.evidence.signing import SigningKey
from policyengine.models import FileRead
from policyengine.redact import EvidenceRedactor

ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{12}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
PAUSE_ENV = "POLICYENGINE_TEST_PAUSE_AT"


def pause_point(stage: str) -> None:
    """Sleep at ``stage`` when ``POLICYENGINE_TEST_PAUSE_AT`` names it (tests kill the run there)."""
    if os.environ.get(PAUSE_ENV) == stage:
        sys.stderr.write(f"paused at {stage}\n")
        sys.stderr.flush()
        time.sleep(600)


@dataclass(frozen=True)
class BundleRef:
    """One recorded bundle. ``path`` is where the store keeps it (relative path or object key)."""

    id: str
    path: str
    sha256: str
    created_at: str
    decision: str
    environment: str | None
    repository: str | None
    commit: str | None
    sequence: int | None = None
    """The bundle's place in its chain (1 for the first); None for a record made before chains."""


@dataclass(frozen=True)
class VerifyReport:
    """The ids of the bundles checked, every problem found, and each bundle's signature state.

    ``warnings`` are odd facts that prove nothing (a bundle created long after its decision):
    they never make the report fail.
    """

    checked: tuple[str, ...]
    problems: tuple[VerifyProblem, ...]
    signatures: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[VerifyProblem, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Prepared:
    """A bundle planned but not yet written."""

    bundle_id: str
    moment: datetime
    created: str
    verdict: str
    members: list[Member]
    decision: Mapping[str, Any]
    change: Mapping[str, Any]
    key: tuple[str | None, str | None]
    policy_sha256: str


class NothingToVerifyError(UsageError):
    """``verify`` was pointed at something that is not an archive, or at one that records nothing.

    Exit 2: there is nothing whose integrity could be shown, so "ok" would be a lie.
    """


def _chain_component(value: str | None) -> str:
    if value is None:
        return "%"
    if value == "":
        return "%%"
    if value in (".", ".."):
        return "%2E" * len(value)
    return quote(value, safe="")


def chain_key(repository: str | None, environment: str | None) -> str:
    """Return the key of the chain of (``repository``, ``environment``), for every store.

    Injective: each component is percent-encoded with no safe character (so a ``/`` inside a
    GitLab subgroup or a ``review/x`` environment becomes ``%2F``), then the two are joined
    with ``/``: ``acme`` + ``payments/production`` is ``acme/payments%2Fproduction`` and
    ``acme/payments`` + ``production`` is ``acme%2Fpayments/production``. None is ``%`` and the
    empty string ``%%``, which percent-encoding never produces (nor did the old keys); ``.``
    and ``..`` are encoded. ``unquote`` of each part gives the value back. A pair whose values
    hold no ``/`` keeps the key it had before (``legacy_chain_segment``).
    """
    return f"{_chain_component(repository)}/{_chain_component(environment)}"


def legacy_chain_segment(value: str | None) -> str:
    """The chain key component written before ``chain_key`` (not injective: ``/`` was kept).

    Only for reading chains recorded under the old keys.
    """
    if not value:
        return "_none_"
    return "/".join(quote(part, safe="-._~") or "_" for part in value.split("/"))


def new_bundle_id(created_at: datetime) -> str:
    """Return ``YYYYMMDDTHHMMSSZ-<12 hex>``: sorts by time, random enough for concurrent runs."""
    return created_at.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(6)


def _text(change: Mapping[str, Any], key: str) -> str | None:
    value = change.get(key)
    return value if isinstance(value, str) else None


def ref_of(record: Mapping[str, Any]) -> BundleRef:
    fields: dict[str, Any] = {f.name: record.get(f.name) for f in dataclasses.fields(BundleRef)}
    return BundleRef(**fields)


def parse_record(record: Any, *, path_for: Any) -> dict[str, Any]:
    """Check one index record; raise ValueError saying what is wrong with it."""
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object")
    for key in ("id", "path", "sha256", "created_at", "decision", "policy_sha256"):
        if not isinstance(record.get(key), str):
            raise ValueError(f"{key!r} must be a string")
    for key in ("environment", "repository", "commit", "previous_sha256"):
        if not isinstance(record.get(key), (str, type(None))):
            raise ValueError(f"{key!r} must be a string or null")
    if not isinstance(record.get("sequence"), (int, type(None))):
        raise ValueError("'sequence' must be a number or null")
    if not ID_RE.match(record["id"]):
        raise ValueError(f"{record['id']!r} is not a bundle id")
    # The path is derived from the id, so an index record can never point outside the store.
    if record["path"] != path_for(record):
        raise ValueError(f"path {record['path']!r} is not where bundle {record['id']} belongs")
    for key in ("sha256", "policy_sha256"):
        if not SHA256_RE.match(record[key]):
            raise ValueError(f"{key!r} is not a SHA-256 hex digest")
    if record.get("previous_sha256") is not None and not SHA256_RE.match(record["previous_sha256"]):
        raise ValueError("'previous_sha256' is not a SHA-256 hex digest")
    return record


def sha256_stream(fh: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := fh.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


class EvidenceStore:
    """Base of the stores: subclasses write bundles and read their index and bytes."""

    url: str

    # -- to provide -------------------------------------------------------------------

    def check_write(self, signing_key: SigningKey | None) -> None:
        """Refuse, before anything is judged, a write this store cannot take (UsageError: exit 2).

        The default accepts every write; a store that keeps signed bundles only says so here.
        """

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
        subjects: Sequence[tuple[str, str]] = (),
        signing_key: SigningKey | None = None,
        retention: str | None = None,
        redactor: EvidenceRedactor | None = None,
    ) -> BundleRef:  # pragma: no cover - abstract
        """Write one bundle (decision, change, policy, the files rules read), chain and record it."""
        raise NotImplementedError

    def read_index(self) -> tuple[builtins.list[dict[str, Any]], builtins.list[VerifyProblem]]:
        """Return the records in chain order (oldest first) and a problem per unreadable record."""
        raise NotImplementedError  # pragma: no cover

    @contextlib.contextmanager
    def open_bundle(self, record: Mapping[str, Any]) -> Iterator[IO[bytes]]:
        """Yield the bundle's bytes as a seekable file; raise FileNotFoundError when it is gone."""
        raise NotImplementedError  # pragma: no cover
        yield

    def unindexed(self, records: Sequence[Mapping[str, Any]]) -> builtins.list[VerifyProblem]:
        """Problems for bundles the store holds but the index does not record."""
        return []

    def head_problems(self, records: Sequence[Mapping[str, Any]]) -> builtins.list[VerifyProblem]:
        """Problems with the store's own record of each chain's last bundle (if it keeps one)."""
        return []

    def location(self, record: Mapping[str, Any]) -> str:
        return str(record["path"])

    def query(self, q: Query) -> tuple[builtins.list[dict[str, Any]], int]:
        """Return the records matching ``q`` (oldest first) and how many index records are unreadable."""
        raise NotImplementedError  # pragma: no cover

    # -- shared ---------------------------------------------------------------------------

    def prepare(
        self,
        *,
        decision: Mapping[str, Any],
        change: Mapping[str, Any],
        policy_filename: str,
        policy_bytes: bytes,
        files: Sequence[FileRead],
        extra_members: Mapping[str, bytes] | None,
        created_at: datetime | None,
    ) -> Prepared:
        """Check everything about a bundle before a byte is written (ValueError: a caller bug)."""
        moment = created_at or datetime.now(timezone.utc)
        created = format_timestamp(moment)
        verdict = decision.get("decision")
        if not isinstance(verdict, str):
            raise ValueError("the decision has no 'decision' string")
        members = plan_members(
            decision=decision, change=change, policy_filename=policy_filename, policy_bytes=policy_bytes,
            files=files, extra_members=extra_members or {},
        )
        return Prepared(
            bundle_id=new_bundle_id(moment), moment=moment, created=created, verdict=verdict, members=members,
            decision=decision, change=change, key=(_text(change, "repository"), _text(change, "environment")),
            policy_sha256=hashlib.sha256(policy_bytes).hexdigest(),
        )

    @staticmethod
    def chain_link(head: Mapping[str, Any] | None, prep: Prepared) -> dict[str, Any]:
        """Return the chain facts a new bundle records, given its chain's current last record."""
        return {
            "repository": prep.key[0],
            "environment": prep.key[1],
            "sequence": (int(head.get("sequence") or 0) + 1) if head else 1,
            "previous_sha256": head["sha256"] if head else None,
            "previous_id": head["id"] if head else None,
        }

    @staticmethod
    def record_for(prep: Prepared, *, path: str, sha256: str, chain: Mapping[str, Any],
                   signed_by: str | None) -> dict[str, Any]:
        return {
            "id": prep.bundle_id,
            "path": path,
            "sha256": sha256,
            "created_at": prep.created,
            "decision": prep.verdict,
            "environment": prep.key[1],
            "repository": prep.key[0],
            "commit": _text(prep.change, "commit"),
            "policy_sha256": prep.policy_sha256,
            "sequence": chain["sequence"],
            "previous_sha256": chain["previous_sha256"],
            "signed_by": signed_by,
        } | ({"simulated": True} if prep.decision.get("simulated") is True else {})

    def list(self) -> builtins.list[BundleRef]:
        """Return every recorded bundle, oldest first; raise EvidenceError on a corrupt index record."""
        records, problems = self.read_index()
        if problems:
            raise EvidenceError(problems[0].message, hint="verify the archive to see every problem")
        return [ref_of(r) for r in records]

    def find(self, bundle_id: str) -> dict[str, Any]:
        """Return the index record of ``bundle_id``; raise UsageError when it is not recorded."""
        records, _ = self.read_index()
        for r in records:
            if r["id"] == bundle_id:
                return r
        raise UsageError(f"bundle {bundle_id} is not in the archive {self.url}",
                         hint="`policyengine evidence list` shows the recorded bundles")

    def verify(self, ids: Sequence[str] = (), public_key: tuple[Any, str] | None = None,
               heads: Sequence[str] = ()) -> VerifyReport:
        """Check the bundles ``ids`` (every recorded bundle when empty); report every problem.

        ``heads`` are chain heads anchored elsewhere (the SHA-256 of a chain's newest bundle when
        it was written): each must be the digest of a recorded bundle, which is then checked
        too, with the chain up to it and after it; a head that names nothing in the archive is a
        ``head`` problem (the newest bundles were deleted, or the history rewritten).

        Per bundle: its digest against the index, every member against the manifest, the
        statement against the manifest (and its signature against ``public_key``: with a key,
        every bundle must carry a valid signature by it, whatever schema it claims), every
        field of the index record against what the bundle itself says. Then the chain of each
        checked bundle, grouped by the repository and environment the bundles state, with
        schema versions that never decrease along a chain. Checking every bundle also reports
        what the index does not record. Raise ``NothingToVerifyError`` when every bundle was
        asked for and the store records and holds none.
        """
        records, problems = self.read_index()
        by_id = {r["id"]: r for r in records}
        head_ids: dict[str, str] = {}
        for head in dict.fromkeys(heads):
            named = next((r for r in records if r["sha256"] == head), None)
            if named is None:
                problems.append(VerifyProblem("", None, "head", (
                    f"the anchored chain head sha256 {head} is not in the archive {self.url}: the bundle it names "
                    "(the newest of its chain when it was anchored) was deleted, or the history was rewritten")))
            else:
                head_ids[named["id"]] = head
        if ids:
            checked = tuple(dict.fromkeys([*ids, *head_ids]))
            for bundle_id in checked:
                if bundle_id not in by_id:
                    message = f"bundle {bundle_id} is not in the index"
                    problems.append(VerifyProblem(bundle_id, None, "missing", message))
        else:
            checked = tuple(by_id)
        actual: dict[str, str | None] = {}
        found: dict[str, Inspection | None] = {}
        signatures: dict[str, str] = {}
        warnings: list[VerifyProblem] = []
        for bundle_id in checked:
            if bundle_id in by_id:
                digest, inspection, bundle_problems = self._check_bundle(by_id[bundle_id], public_key)
                actual[bundle_id], found[bundle_id] = digest, inspection
                signatures[bundle_id] = inspection.signature if inspection else "unreadable"
                problems.extend(bundle_problems)
                if inspection:
                    warnings.extend(inspection.warnings)

        def stated_key(r: Mapping[str, Any]) -> tuple[str | None, str | None]:
            """The chain a bundle belongs to, as the bundle itself states it (else as the index does)."""
            inspection = found.get(r["id"])
            if inspection is not None and inspection.chain is not None:
                link = inspection.chain
                repo, env = link.get("repository"), link.get("environment")
                return (repo if isinstance(repo, str) else None, env if isinstance(env, str) else None)
            if inspection is not None and inspection.change is not None:
                return inspection.change["repository"], inspection.change["environment"]
            return r["repository"], r["environment"]

        keys = {stated_key(by_id[i]) for i in checked if i in by_id}
        entries = []
        newest_schema: dict[tuple[str | None, str | None], tuple[int, str]] = {}
        for r in records:
            key = stated_key(r)
            if key not in keys:
                continue
            inspection = found.get(r["id"])
            if inspection is not None and inspection.schema_version is not None:
                before = newest_schema.get(key)
                if before is not None and inspection.schema_version < before[0]:
                    problems.append(VerifyProblem(
                        r["id"], None, "chain",
                        f"bundle {r['id']} claims schema_version {inspection.schema_version} but follows bundle "
                        f"{before[1]} of schema_version {before[0]} in the chain of {key[0]} / {key[1]}: schema "
                        "versions never decrease along a chain (the bundle was rewritten as an older format)"))
                elif before is None or inspection.schema_version > before[0]:
                    newest_schema[key] = (inspection.schema_version, r["id"])
            if r["id"] in found:
                # An unreadable bundle, or one from before chains (schema 1), has no link to check;
                # the chain continues through its digest.
                link = inspection.chain if inspection else None
                previous = link.get("previous_sha256", chain_mod.UNKNOWN) if link is not None else chain_mod.UNKNOWN
                sequence = link.get("sequence") if link else None
            elif r.get("sequence") is None:  # not checked this time, and recorded before chains
                previous, sequence = chain_mod.UNKNOWN, None
            else:  # not checked this time: trust the index for its link
                previous, sequence = r.get("previous_sha256"), r.get("sequence")
            entries.append(chain_mod.ChainEntry(
                id=r["id"], key=key, recorded_sha256=r["sha256"], actual_sha256=actual.get(r["id"]),
                previous_sha256=previous if isinstance(previous, (str, type(None))) else chain_mod.UNKNOWN,
                sequence=sequence if type(sequence) is int else None,
            ))
        problems.extend(chain_mod.walk(entries, report_ids=checked))
        for bundle_id, head in head_ids.items():
            if actual.get(bundle_id) not in (None, head):
                problems.append(VerifyProblem(bundle_id, None, "head", (
                    f"the anchored chain head sha256 {head} is recorded as bundle {bundle_id}, whose bytes now "
                    f"have sha256 {actual[bundle_id]}: the bundle was rewritten")))
        if not ids:
            problems.extend(self.unindexed(records))
            problems.extend(self.head_problems(records))
            if not checked and not problems:
                raise NothingToVerifyError(
                    f"nothing to verify: {self.url} records no evidence bundle and holds none",
                    hint="pass the archive that `policyengine check` wrote (--evidence-dir / --evidence-store)")
        return VerifyReport(checked=checked, problems=tuple(problems), signatures=signatures,
                            warnings=tuple(warnings))

    def _check_bundle(
        self, record: Mapping[str, Any], public_key: tuple[Any, str] | None
    ) -> tuple[str | None, Inspection | None, builtins.list[VerifyProblem]]:
        bundle_id = record["id"]
        problems: list[VerifyProblem] = []
        try:
            with self.open_bundle(record) as fh:
                digest = sha256_stream(fh)
                if digest != record["sha256"]:
                    problems.append(VerifyProblem(
                        bundle_id, None, "bundle-digest",
                        f"bundle {bundle_id} was rewritten after it was recorded "
                        f"(index sha256 {record['sha256']}, stored sha256 {digest})",
                    ))
                fh.seek(0)
                try:
                    with zipfile.ZipFile(fh) as zf:
                        found = inspect_bundle(zf, bundle_id, public_key)
                except (zipfile.BadZipFile, OSError, EOFError) as exc:
                    problems.append(VerifyProblem(bundle_id, None, "unreadable",
                                                  f"bundle {bundle_id} is not a readable zip: {exc}"))
                    return digest, None, problems
        except FileNotFoundError:
            message = f"bundle {bundle_id} is recorded but {self.location(record)} is missing"
            return None, None, [VerifyProblem(bundle_id, None, "missing", message)]
        except OSError as exc:
            message = f"bundle {bundle_id} cannot be read: {exc.strerror or exc}"
            return None, None, [VerifyProblem(bundle_id, None, "unreadable", message)]
        problems.extend(found.problems)
        problems.extend(self.index_mismatches(record, found))
        return digest, found, problems

    @staticmethod
    def index_mismatches(record: Mapping[str, Any], found: Inspection) -> builtins.list[VerifyProblem]:
        """Hold every field of an index record against what the bundle itself says.

        ``id`` and ``path`` are checked where the record is parsed (the path is derived from the
        id) and by the manifest's ``bundle_id`` (a ``replay``); ``sha256`` is the bundle's digest.
        The rest: ``created_at`` and ``sequence``/``previous_sha256`` (manifest), ``decision``
        (decision.json), ``policy_sha256`` (the policy member), ``repository``, ``environment``
        and ``commit`` (change.json), ``signed_by`` (the key id the statement's signature names).
        A fact the bundle cannot give (an unreadable member, reported already) is not compared.
        """
        bundle_id = record["id"]
        facts: list[tuple[str, Any]] = [
            ("decision", found.decision), ("created_at", found.created_at), ("policy_sha256", found.policy_sha256),
        ]
        if found.manifest is not None:
            link = found.chain or {}
            # A bundle without a chain link (schema 1) was recorded without one.
            facts += [("previous_sha256", link.get("previous_sha256")), ("sequence", link.get("sequence"))]
        if found.change is not None:
            facts += [(k, found.change[k]) for k in ("repository", "environment", "commit")]
        if found.manifest is not None and not (found.signature == "invalid" and found.signed_by is None):
            facts.append(("signed_by", found.signed_by))  # (an unreadable envelope is reported already)
        problems = []
        always = {"previous_sha256", "sequence", "repository", "environment", "commit", "signed_by"}
        for key, value in facts:
            recorded = record.get(key)
            if (value is not None or key in always) and (value != recorded or type(value) is not type(recorded)):
                message = f"bundle {bundle_id} has {key} {value!r} but the index records {recorded!r}"
                problems.append(VerifyProblem(bundle_id, None, "index", message))
        return problems

    def export_bundle(self, bundle_id: str, dest: str | os.PathLike[str]) -> dict[str, Any]:
        """Copy bundle ``bundle_id`` to ``dest`` (written whole or not at all); return its record."""
        record = self.find(bundle_id)
        dest = os.fspath(dest)
        folder = os.path.dirname(os.path.abspath(dest))
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".policyengine-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, self.open_bundle(record) as fh:
                while chunk := fh.read(CHUNK):
                    out.write(chunk)
            os.replace(tmp, dest)
        except FileNotFoundError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise EvidenceError(f"bundle {bundle_id} is recorded but {self.location(record)} is missing") from exc
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return record
