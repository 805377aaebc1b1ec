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
import json
import os
import sys
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from msgspec import Struct, field

import policyengine.evidence.format.catalogue as catalogue_mod
import policyengine.evidence.format.chain as chain_mod
from policyengine.errors import EvidenceError, UsageError
from policyengine.evidence.format.bundle import (
    ATTESTATION,
    CHANGE,
    CHUNK,
    DECISION,
    MANIFEST,
    POLICY_DIR,
    ZIP_READ_ERRORS,
    BundleWriter,
    Inspection,
    Member,
    VerifyProblem,
    format_timestamp,
    plan_members,
)
from policyengine.evidence.format.catalogue import Catalogue, ChainHead
from policyengine.evidence.format.index import Query
from policyengine.evidence.format.records import (
    BASELINE,
    BASELINE_SCHEMA_VERSION,
    EVALUATION,
    ID_RE,
    RECORD,
    RECORD_KINDS,
    RECORD_SCHEMA_VERSION,
    SHA256_RE,
    build_record_statement,
    check_claimed_at,
    check_index_fields,
    document_problems,
    inspect_any,
    is_evaluation,
    kind_of,
    record_bytes,
)
from policyengine.evidence.format.signing import SigningKey
from policyengine.evidence.format.timestamp import StampCheck, backwards_problems, inspect_stamp
from policyengine.models import FileRead, parse_instant
from policyengine.redact import DEFAULT, EvidenceRedactor

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
    kind: str | None = None
    """None (or ``evaluation``) for an evaluation; ``outcome``, ``review``, ... for a linked record."""
    sequence: int | None = None
    """The bundle's place in its chain (1 for the first); None for a record made before chains."""
    store_head: str | None = dataclasses.field(default=None, compare=False)
    """After a write: the SHA-256 of the store's newest catalogue (``evidence.catalogue``), the store head.
    Not part of the bundle's identity (``list`` does not know it)."""


class VerifyReport(Struct, frozen=True):
    """The ids of the bundles checked, every problem found, and each bundle's signature state.

    ``warnings`` are odd facts that prove nothing (a bundle created long after its decision):
    they never make the report fail.
    """

    checked: tuple[str, ...]
    problems: tuple[VerifyProblem, ...]
    signatures: Mapping[str, str] = field(default_factory=dict)
    warnings: tuple[VerifyProblem, ...] = ()
    timestamps: Mapping[str, str] = field(default_factory=dict)
    """Each checked bundle's timestamp: ``none``, ``valid``, ``unchecked`` (no --tsa-cert) or ``invalid``."""

    @property
    def ok(self) -> bool:
        return not self.problems


class Prepared(Struct, frozen=True):
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


class Job(Struct, frozen=True):
    """A bundle of any kind, ready to be committed to its chain by a store's ``commit``.

    ``bulk(writer)`` writes the members that do not depend on the chain (outside any lock);
    ``tail(writer, link, signing_key)`` writes the chained tail (report, manifest, statement);
    ``index_record(link, path, sha256, signed_by)`` returns the bundle's index record.
    """

    bundle_id: str
    moment: datetime
    key: tuple[str | None, str | None]
    bulk: Callable[[BundleWriter], None]
    tail: Callable[[BundleWriter, Mapping[str, Any], SigningKey | None], None]
    index_record: Callable[[Mapping[str, Any], str, str, str | None], dict[str, Any]]

    def write(self, fh: IO[bytes], link: Mapping[str, Any], signing_key: SigningKey | None,
              redactor: EvidenceRedactor | None) -> str:
        """Write the whole bundle, chained by ``link``, to ``fh``; return its SHA-256 (a store whose
        chain head is known before the bulk is written: git, S3). A failure abandons the writer."""
        writer = BundleWriter(fh, bundle_id=self.bundle_id, created_at=self.moment, redactor=redactor)
        try:
            self.bulk(writer)
            self.tail(writer, link, signing_key)
            digest, _ = writer.close()
        except BaseException:
            writer.abandon()
            raise
        return digest


_RESERVED_RECORD_FIELDS = frozenset({"schema_version", "kind", "about", "repository", "environment", "commit",
                                     "recorded_at"})


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
    # os.urandom is what secrets.token_hex reads; secrets would import random and hmac (~2 ms).
    return created_at.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + os.urandom(6).hex()


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
    for key in ("id", "path", "sha256", "created_at", "decision"):
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
    if not SHA256_RE.match(record["sha256"]):
        raise ValueError("'sha256' is not a SHA-256 hex digest")
    check_index_fields(record)  # policy_sha256 (evaluations), kind and about (records), flags
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
    ) -> BundleRef:
        """Write one bundle (decision, change, policy, the files rules read), chain and record it.

        Raises ValueError for an unsafe member name, a naive ``created_at`` or a decision without
        a ``decision`` string (caller bugs), and EvidenceError when the evidence cannot be written:
        then neither a bundle nor an index line is left behind. ``retention`` is applied where the
        store can enforce it (S3 Object Lock); ``redactor`` removes secrets from every member.
        Every store writes through its ``commit``, as linked records do.
        """
        prep = self.prepare(decision=decision, change=change, policy_filename=policy_filename,
                            policy_bytes=policy_bytes, files=files, extra_members=extra_members,
                            created_at=created_at)
        return self.commit(self.evaluation_job(prep, subjects), signing_key=signing_key, retention=retention,
                           redactor=redactor)

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

    def catalogue_files(self) -> builtins.list[tuple[str, bytes]]:
        """Every catalogue the store holds, ``(name, bytes)`` in sequence order (none in a store
        written before catalogues)."""
        return []

    def query(self, q: Query) -> tuple[Sequence[Mapping[str, Any]], int]:
        """Return the records matching ``q`` (oldest first) and how many index records are unreadable.

        A record may hold more keys than ``index.COLUMNS`` and lack those that do not apply (an
        evaluation has no ``kind``): read it with ``.get``.
        """
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
    def chain_link(head: Mapping[str, Any] | None, key: tuple[str | None, str | None]) -> dict[str, Any]:
        """Return the chain facts a new bundle of chain ``key`` records, given the chain's current last record."""
        return {
            "repository": key[0],
            "environment": key[1],
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
        } | ({"simulated": True} if prep.decision.get("simulated") is True else {}) | (
            {"advisory": True} if prep.decision.get("advisory") is True else {}) | _identity_digest(prep.decision)

    def evaluation_job(self, prep: Prepared, subjects: Sequence[tuple[str, str]]) -> Job:
        """The commit job of an evaluation bundle (``write_bundle``)."""
        def bulk(writer: BundleWriter) -> None:
            writer.add_members(prep.members)

        def tail(writer: BundleWriter, link: Mapping[str, Any], signing_key: SigningKey | None) -> None:
            writer.finish(decision=prep.decision, change=prep.change, chain=link, subjects=subjects,
                          signing_key=signing_key, close=False)

        def index_record(link: Mapping[str, Any], path: str, sha256: str, signed_by: str | None) -> dict[str, Any]:
            return self.record_for(prep, path=path, sha256=sha256, chain=link, signed_by=signed_by)

        return Job(bundle_id=prep.bundle_id, moment=prep.moment, key=prep.key, bulk=bulk, tail=tail,
                   index_record=index_record)

    def commit(self, job: Job, *, signing_key: SigningKey | None, retention: str | None,
               redactor: EvidenceRedactor | None) -> BundleRef:
        """Write ``job``'s bundle, chain it after its chain's last bundle and record it (atomically).

        Each store provides it; ``write_bundle`` and ``append_record`` both go through it.
        """
        raise EvidenceError(f"the evidence store {self.url} cannot append records")  # pragma: no cover

    # -- linked records --------------------------------------------------------------------

    def append_record(
        self,
        kind: str,
        about: Mapping[str, Any],
        payload: Mapping[str, Any],
        *,
        signing_key: SigningKey | None = None,
        created_at: datetime | None = None,
        retention: str | None = None,
        redactor: EvidenceRedactor | None = None,
    ) -> BundleRef:
        """Append a linked record of ``kind`` about the evaluation ``about`` (its index record).

        The record is a bundle of its own (``records``): ``record.json`` built from ``payload``
        (the kind's fields: an outcome's ``status``, a review's ``result``, and ``note``,
        ``claimed_at``, ``by``, ``by_verified``, ...), its own ``report.html``, a manifest with
        ``kind``, and a statement of the record predicate type signed with ``signing_key``. It
        goes into the same chain (the evaluation's repository and environment), after the chain's
        last bundle, and its index line names the evaluation by id and SHA-256. Nothing recorded
        before is touched.

        Refused before anything is written: ``about`` is not an evaluation (UsageError), the
        evaluation's bundle does not verify (digests, members, statement, index record:
        EvidenceError), ``claimed_at`` lies in the future or before the evaluation (UsageError),
        or the payload is not a valid document of ``kind`` (ValueError: a caller bug).
        Every later feature that records something about an evaluation appends it this way.
        """
        spec = RECORD_KINDS.get(kind)
        if spec is None:
            raise ValueError(f"unknown record kind {kind!r}")
        reserved = sorted(_RESERVED_RECORD_FIELDS & set(payload))
        if reserved:
            raise ValueError(f"the payload may not set {', '.join(reserved)}: they come from the evaluation")
        if not is_evaluation(about):
            raise UsageError(f"bundle {about['id']} is a {kind_of(about)} record, not an evaluation: records are "
                             "about the evaluation bundle `check` wrote",
                             hint=f"`{self.command('evidence', 'list', '--kind', 'evaluation')}` shows the evaluations")
        digest, inspection, problems = self._check_bundle(about, None)
        if problems or inspection is None or digest != about["sha256"]:
            first = problems[0].message if problems else "it cannot be read"
            raise EvidenceError(f"bundle {about['id']} does not verify ({first}): refusing to link a record to it",
                                hint=f"run `{self.command('evidence', 'verify', about['id'])}`")
        moment = created_at or datetime.now(timezone.utc)
        recorded = format_timestamp(moment)
        claimed = payload.get("claimed_at")
        if claimed is not None:
            check_claimed_at(parse_instant(str(claimed), option="--at"), now=moment,
                             evaluation_created_at=about["created_at"])
        document: dict[str, Any] = {
            "schema_version": RECORD_SCHEMA_VERSION, "kind": kind,
            "about": {"bundle_id": about["id"], "sha256": about["sha256"]},
            "repository": about["repository"], "environment": about["environment"], "commit": about["commit"],
            "note": None, "claimed_at": None, "recorded_at": recorded, **payload,
        }
        # Notes are people's text: secrets in them never reach the archive.
        document = json.loads((redactor or DEFAULT).text(json.dumps(document)))
        bad = document_problems(document)
        if bad:
            raise ValueError(f"not a valid {kind} record: {'; '.join(bad)}")
        bundle_id = new_bundle_id(moment)
        key = (about["repository"], about["environment"])

        def bulk(writer: BundleWriter) -> None:
            writer.add_bytes(RECORD, record_bytes(document), redact=False)

        def tail(writer: BundleWriter, link: Mapping[str, Any], sign: SigningKey | None) -> None:
            from policyengine.evidence.format.report import render_record_report

            report = render_record_report(document, writer.entries, bundle_id, recorded,
                                          link.get("previous_sha256"), sign is not None)
            writer.write_tail(
                chain=link, manifest_extra={"kind": kind}, signing_key=sign, report=report, close=False,
                statement_for=lambda manifest_sha256: build_record_statement(
                    bundle_id=bundle_id, created_at=recorded, document=document, manifest_sha256=manifest_sha256,
                    chain=link))

        def index_record(link: Mapping[str, Any], path: str, sha256: str, signed_by: str | None) -> dict[str, Any]:
            return {
                "id": bundle_id, "path": path, "sha256": sha256, "created_at": recorded,
                "decision": document[spec.field], "environment": key[1], "repository": key[0],
                "commit": about["commit"], "policy_sha256": None, "sequence": link["sequence"],
                "previous_sha256": link["previous_sha256"], "signed_by": signed_by,
                "kind": kind, "about_id": about["id"], "about_sha256": about["sha256"],
            }

        job = Job(bundle_id=bundle_id, moment=moment, key=key, bulk=bulk, tail=tail, index_record=index_record)
        return self.commit(job, signing_key=signing_key, retention=retention, redactor=redactor)

    def append_baseline(
        self,
        *,
        repository: str,
        environment: str,
        commit: str,
        payload: Mapping[str, Any],
        signing_key: SigningKey | None,
        created_at: datetime | None = None,
        redactor: EvidenceRedactor | None = None,
    ) -> BundleRef:
        """Record, signed, the commit in production when the gate is adopted (``records.BASELINE``).

        Refused (UsageError, nothing written) unless it is signed and is the first record of an
        empty chain: the chain of ``repository`` / ``environment`` (the environment compared
        case-insensitively) holds no record of any kind, checked on the index before writing and
        again on the chain link under the store's lock (a record written meanwhile makes it #2:
        refused). Who may write one (the reachability of ``commit``, the key the gate trusts, the
        CI actor) is checked by the caller (``cli.evidence``).
        """
        if signing_key is None:
            raise UsageError("a baseline must be signed: give --signing-key (the key whose public half the gate "
                             "trusts), or it can never count as the previous deploy")
        reserved = sorted(_RESERVED_RECORD_FIELDS & set(payload))
        if reserved:
            raise ValueError(f"the payload may not set {', '.join(reserved)}")
        root = getattr(self, "root", None)  # a folder store not made yet holds no record
        records = [] if isinstance(root, Path) and not root.exists() else self.read_index()[0]
        mine = [r for r in records if r.get("repository") == repository
                and str(r.get("environment") or "").casefold() == environment.casefold()]
        if mine:
            raise UsageError(f"the chain of {repository} / {environment} already holds {len(mine)} record"
                             f"{'s' if len(mine) != 1 else ''} (the first: {mine[0].get('id')}, a "
                             f"{kind_of(mine[0])}): a baseline is accepted only as the first record of an empty "
                             "chain", hint="the gate already knows a previous deploy from its own records")
        moment = created_at or datetime.now(timezone.utc)
        recorded = format_timestamp(moment)
        document: dict[str, Any] = {
            "schema_version": RECORD_SCHEMA_VERSION, "kind": BASELINE, "about": None,
            "repository": repository, "environment": environment, "commit": commit, "baseline": "adopted",
            "note": None, "claimed_at": None, "recorded_at": recorded, **payload,
        }
        document = json.loads((redactor or DEFAULT).text(json.dumps(document)))
        bad = document_problems(document)
        if bad:
            raise UsageError(f"not a valid baseline: {'; '.join(bad)}")
        bundle_id = new_bundle_id(moment)
        key = (repository, environment)

        def bulk(writer: BundleWriter) -> None:
            writer.add_bytes(RECORD, record_bytes(document), redact=False)

        def tail(writer: BundleWriter, link: Mapping[str, Any], sign: SigningKey | None) -> None:
            from policyengine.evidence.format.report import render_record_report

            if link.get("sequence") != 1 or link.get("previous_sha256") is not None:
                raise UsageError(f"the chain of {repository} / {environment} gained a record while the baseline "
                                 "was being written: a baseline is accepted only as the first record of an empty "
                                 "chain")
            report = render_record_report(document, writer.entries, bundle_id, recorded, None, sign is not None)
            writer.write_tail(
                chain=link, manifest_extra={"kind": BASELINE, "schema_version": BASELINE_SCHEMA_VERSION},
                signing_key=sign, report=report, close=False,
                statement_for=lambda manifest_sha256: build_record_statement(
                    bundle_id=bundle_id, created_at=recorded, document=document, manifest_sha256=manifest_sha256,
                    chain=link))

        def index_record(link: Mapping[str, Any], path: str, sha256: str, signed_by: str | None) -> dict[str, Any]:
            return {
                "id": bundle_id, "path": path, "sha256": sha256, "created_at": recorded,
                "decision": "adopted", "environment": environment, "repository": repository,
                "commit": commit, "policy_sha256": None, "sequence": link["sequence"],
                "previous_sha256": link["previous_sha256"], "signed_by": signed_by, "kind": BASELINE,
            }

        job = Job(bundle_id=bundle_id, moment=moment, key=key, bulk=bulk, tail=tail, index_record=index_record)
        return self.commit(job, signing_key=signing_key, retention=None, redactor=redactor)

    def linked_records(self, bundle_id: str, kind: str | None = None) -> builtins.list[dict[str, Any]]:
        """The index records of the records about evaluation ``bundle_id`` (of ``kind``), in recorded order."""
        records, _ = self.read_index()
        return [r for r in records if not is_evaluation(r) and r.get("about_id") == bundle_id
                and (kind is None or kind_of(r) == kind)]

    def catalogue(self, public_key: tuple[Any, str] | None = None) -> Catalogue | None:
        """The store's newest catalogue: the chains it should hold, each with its expected length
        (``ChainHead.sequence``) and newest bundle (id, SHA-256); None when the store has none yet.

        What ``audit reconcile`` holds the store to ("missing chain"). Raises EvidenceError when the
        newest catalogue cannot be read (or, with ``public_key``, is not validly signed by it):
        a list that cannot be trusted is never taken for an empty one.
        """
        files = self.catalogue_files()
        if not files:
            return None
        name, data = files[-1]
        try:
            found = catalogue_mod.parse(data, public_key)
        except ValueError as exc:
            raise EvidenceError(f"the catalogue {name} of {self.url} cannot be read: {exc}",
                                hint=f"run `{self.command('evidence', 'verify', '--all')}`") from exc
        if public_key is not None and found.signature != "valid":
            raise EvidenceError(f"the catalogue {name} of {self.url} is not signed by the given key "
                                f"({found.signature})",
                                hint=f"run `{self.command('evidence', 'verify', '--all')}`")
        return found

    def expected_chains(self, public_key: tuple[Any, str] | None = None) -> builtins.list[ChainHead]:
        """The chains the newest catalogue knows (repository, environment, length, head); [] without one."""
        found = self.catalogue(public_key)
        return builtins.list(found.chains) if found is not None else []

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
                         hint=f"`{self.command('evidence', 'list')}` shows the recorded bundles")

    def command(self, group: str, name: str, *words: str) -> str:
        """``policyengine GROUP NAME --archive THIS-STORE WORDS...``: a hint a person can paste as printed."""
        from policyengine.errors import command

        return command("policyengine", group, name, "--archive", self.url, *words)

    def verify(self, ids: Sequence[str] = (), public_key: tuple[Any, str] | None = None,
               heads: Sequence[str] = (), stamps: StampCheck | None = None) -> VerifyReport:
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
        # The catalogues before the index: every store records a bundle in its index before any
        # catalogue names it, so a write landing meanwhile can never look like a missing chain.
        catalogue_files = self.catalogue_files() if heads or not ids else []
        records, problems = self.read_index()
        by_id = {r["id"]: r for r in records}
        catalogues: builtins.list[Catalogue] = []
        if heads or not ids:
            catalogues, series_problems = catalogue_mod.read_series(catalogue_files, public_key)
            problems.extend(series_problems)
        head_ids: dict[str, str] = {}
        store_heads: builtins.list[Catalogue] = []
        for head in dict.fromkeys(heads):
            named = next((r for r in records if r["sha256"] == head), None)
            anchored = next((c for c in catalogues if c.sha256 == head), None)
            if anchored is not None:
                store_heads.append(anchored)  # a store head: its catalogue, and what followed it
            elif named is None:
                problems.append(VerifyProblem("", None, "head", (
                    f"the anchored chain head sha256 {head} is not in the archive {self.url}: the bundle it names "
                    "(the newest of its chain when it was anchored), or the catalogue it names (a store head), "
                    "was deleted, or the history was rewritten")))
            else:
                head_ids[named["id"]] = head
        for anchored in store_heads:
            problems.extend(catalogue_mod.chain_problems(
                anchored, records, what=f"the anchored store head (catalogue #{anchored.sequence})"))
        if catalogues and not ids:
            latest = catalogues[-1]
            if all(latest is not a for a in store_heads):
                problems.extend(catalogue_mod.chain_problems(latest, records,
                                                             what=f"the newest catalogue (#{latest.sequence})"))
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
        timestamps: dict[str, str] = {}
        for bundle_id in checked:
            if bundle_id in by_id:
                digest, inspection, bundle_problems = self._check_bundle(by_id[bundle_id], public_key,
                                                                         stamps or StampCheck(), timestamps)
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

        for bundle_id in checked:
            inspection = found.get(bundle_id)
            if inspection is not None and inspection.kind not in (None, EVALUATION):
                problems.extend(self.link_problems(by_id[bundle_id], inspection, by_id, found, actual,
                                                   stated_key(by_id[bundle_id])))

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
                # Schema 3 marks a bundle that asked for a timestamp; the next run may not ask (a
                # --timestamp-url left off): 2 after 3 is no rewrite. A stripped token is caught by
                # the manifest's own ``timestamp`` field, a missing one by --require-timestamps.
                if before is not None and inspection.schema_version < before[0] and not (
                        inspection.schema_version == 2 and before[0] == 3):
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
        # Time only moves forward along a chain (with or without tokens): a bundle written with
        # the key and backdated into the past is a failure. A git commit's date is no clock.
        by_chain: dict[tuple[str | None, str | None], list[tuple[str, Any]]] = {}
        for entry in entries:
            inspection = found.get(entry.id)
            stated = inspection.created_at if inspection is not None else None
            by_chain.setdefault(entry.key, []).append((entry.id, stated or by_id[entry.id].get("created_at")))
        for chain_records in by_chain.values():
            for bundle_id, message in backwards_problems(chain_records, checked):
                problems.append(VerifyProblem(bundle_id, None, "time", message))
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
        if catalogues and not ids:
            warnings.extend(catalogue_mod.lag_warnings(catalogues[-1], records))
        return VerifyReport(checked=checked, problems=tuple(problems), signatures=signatures,
                            warnings=tuple(warnings), timestamps=timestamps)

    def _check_bundle(
        self, record: Mapping[str, Any], public_key: tuple[Any, str] | None, stamps: StampCheck | None = None,
        timestamps: dict[str, str] | None = None,
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
                        found = inspect_any(zf, bundle_id, public_key)
                        if found.manifest is not None:
                            stamp = inspect_stamp(zf, zf.namelist(), found.manifest, stamps or StampCheck(),
                                                  envelope_member=ATTESTATION)
                            problems.extend(VerifyProblem(bundle_id, member, "time", message)
                                            for member, message in stamp.problems)
                            if timestamps is not None:
                                timestamps[bundle_id] = stamp.state
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
        problems = []
        kind = found.kind or EVALUATION
        recorded_kind = kind_of(record)
        if kind != recorded_kind:
            problems.append(VerifyProblem(bundle_id, None, "index", f"bundle {bundle_id} is a {kind} bundle but the "
                                          f"index records it as {recorded_kind!r}"))
        facts: list[tuple[str, Any]] = [
            ("decision", found.decision), ("created_at", found.created_at), ("policy_sha256", found.policy_sha256),
        ]
        always = {"previous_sha256", "sequence", "repository", "environment", "commit", "signed_by"}
        if kind != EVALUATION:
            # A record names its evaluation in its line too: the line must say what the bundle says.
            about = found.about or {}
            facts += [("about_id", about.get("bundle_id")), ("about_sha256", about.get("sha256"))]
            always.add("policy_sha256")
        else:
            # What decides whether an evaluation counts as a deployment (``records.is_deployment``)
            # must not be made up by the line: a line that hides a what-if run, or calls a denial
            # advisory, is a forgery. (A line without ``advisory`` is older than the field.)
            if found.manifest is not None and found.decision is not None:
                if found.simulated != (record.get("simulated") is True):
                    problems.append(VerifyProblem(
                        bundle_id, None, "index", f"bundle {bundle_id} has simulated {found.simulated!r} but the "
                        f"index records {record.get('simulated')!r}"))
                if "advisory" in record and record.get("advisory") is not found.advisory:
                    problems.append(VerifyProblem(
                        bundle_id, None, "index", f"bundle {bundle_id} has advisory {found.advisory!r} but the "
                        f"index records {record.get('advisory')!r}"))
        if found.manifest is not None:
            link = found.chain or {}
            # A bundle without a chain link (schema 1) was recorded without one.
            facts += [("previous_sha256", link.get("previous_sha256")), ("sequence", link.get("sequence"))]
        if found.change is not None:
            facts += [(k, found.change[k]) for k in ("repository", "environment", "commit")]
        if found.manifest is not None and not (found.signature == "invalid" and found.signed_by is None):
            facts.append(("signed_by", found.signed_by))  # (an unreadable envelope is reported already)
        for key, value in facts:
            recorded = record.get(key)
            if (value is not None or key in always) and (value != recorded or type(value) is not type(recorded)):
                message = f"bundle {bundle_id} has {key} {value!r} but the index records {recorded!r}"
                problems.append(VerifyProblem(bundle_id, None, "index", message))
        return problems

    def link_problems(self, record: Mapping[str, Any], found: Inspection, by_id: Mapping[str, Mapping[str, Any]],
                      inspected: Mapping[str, Inspection | None], actual: Mapping[str, str | None],
                      key: tuple[str | None, str | None]) -> builtins.list[VerifyProblem]:
        """A linked record must name, by id **and** SHA-256, a real evaluation bundle of its own chain,
        recorded before it, for the same commit; a time it claims may not precede that evaluation.

        ``inspected``/``actual``: what this verification already found (an evaluation not checked
        in this run is read and checked here, without a key: its own signature is checked when
        it is verified itself).
        """
        bundle_id = record["id"]
        out: list[VerifyProblem] = []

        def problem(message: str) -> None:
            out.append(VerifyProblem(bundle_id, None, "link", message))

        about = found.about
        if about is None:
            return out  # record.json unreadable: reported already
        target_id, target_sha = about["bundle_id"], about["sha256"]
        target = by_id.get(target_id)
        if target is None:
            problem(f"record {bundle_id} is about bundle {target_id}, which is not in the archive")
            return out
        if not is_evaluation(target):
            problem(f"record {bundle_id} is about bundle {target_id}, which is a {kind_of(target)} record, "
                    "not an evaluation")
            return out
        if target_id in inspected:
            digest, inspection = actual.get(target_id), inspected[target_id]
        else:
            digest, inspection, target_problems = self._check_bundle(target, None)
            if target_problems:
                problem(f"record {bundle_id} is about bundle {target_id}, which does not verify "
                        f"({target_problems[0].message})")
        if target_sha != target["sha256"] or (digest is not None and digest != target_sha):
            problem(f"record {bundle_id} names bundle {target_id} with sha256 {target_sha}, but that bundle is "
                    f"recorded with sha256 {target['sha256']}" + (f" and stored with sha256 {digest}"
                                                                   if digest and digest != target["sha256"] else ""))
        if digest is None and inspection is None:
            problem(f"record {bundle_id} is about bundle {target_id}, whose file is missing or unreadable")
        if inspection is not None and inspection.kind not in (None, EVALUATION):
            problem(f"record {bundle_id} is about bundle {target_id}, which holds a {inspection.kind} record, "
                    "not an evaluation")
        target_key: tuple[str | None, str | None] = (target["repository"], target["environment"])
        if inspection is not None and inspection.chain is not None:
            repo, env = inspection.chain.get("repository"), inspection.chain.get("environment")
            target_key = (repo if isinstance(repo, str) else None, env if isinstance(env, str) else None)
        if target_key != key:
            problem(f"record {bundle_id} of the chain of {key[0]} / {key[1]} is about bundle {target_id} of the "
                    f"chain of {target_key[0]} / {target_key[1]}: a record belongs to its evaluation's chain")
        mine = (found.chain or {}).get("sequence")
        theirs = (inspection.chain or {}).get("sequence") if inspection is not None else target.get("sequence")
        if type(mine) is int and type(theirs) is int and target_key == key and mine <= theirs:
            problem(f"record {bundle_id} (sequence {mine}) comes before bundle {target_id} (sequence {theirs}), "
                    "the evaluation it is about")
        doc = found.record or {}
        change = inspection.change if inspection is not None else None
        if change is not None and doc.get("commit") != change.get("commit"):
            problem(f"record {bundle_id} names commit {doc.get('commit')!r} but bundle {target_id} is about "
                    f"commit {change.get('commit')!r}")
        claimed = doc.get("claimed_at")
        evaluated = (inspection.created_at if inspection is not None else None) or target.get("created_at")
        if isinstance(claimed, str) and isinstance(evaluated, str):
            try:
                before = parse_instant(claimed, option="claimed_at").replace(microsecond=0) < parse_instant(
                    evaluated, option="created_at")
            except UsageError:
                before = False  # reported as a record problem
            if before:
                problem(f"record {bundle_id} claims {claimed}, before bundle {target_id} was recorded "
                        f"({evaluated})")
        return out

    def export_bundle(self, bundle_id: str, dest: str | os.PathLike[str]) -> dict[str, Any]:
        """Copy bundle ``bundle_id`` to ``dest`` (written whole or not at all); return its record."""
        import tempfile

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


def _identity_digest(decision: Mapping[str, Any]) -> dict[str, Any]:
    """``identity_sha256``: the digest of the CI ID token this evaluation accepted (verified, no
    problem), so that the gate can refuse the same token twice in one store."""
    identity = decision.get("identity")
    if isinstance(identity, Mapping) and identity.get("status") == "verified" and "problem" not in identity \
            and isinstance(identity.get("token_sha256"), str):
        return {"identity_sha256": identity["token_sha256"]}
    return {}


# -- reading one bundle for a person ---------------------------------------------------------


class BundleContents(Struct, frozen=True):
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
                            hint=f"run `{store.command('evidence', 'verify', bundle_id)}`") from exc
