"""The S3 evidence store: bundles in a bucket (AWS S3, MinIO, Ceph, ...), never overwritten.

Keys under ``s3://bucket/prefix``::

    <prefix>/<repository>/<environment>/<YYYY>/<MM>/<DD>/<id>.zip   the bundles
    <prefix>/_index/<id>.json                                        one index record per bundle
    <prefix>/_chains/<chain key>/head.json                           each chain's last bundle
                                                                     (``store.chain_key``: the repository and
                                                                     environment, each percent-encoded)
    <prefix>/_staging/<id>.zip                                       a bundle being committed
    <prefix>/_catalogue/<n>.json                                     the store catalogues (the newest:
                                                                     the store head)
    <prefix>/_catalogue/pending/<id>.json                            a record whose catalogue is not written yet

Every bundle and index record is written with ``If-None-Match: *``: an existing object is never
replaced. Where the bucket has Object Lock enabled, bundles and records are written in
COMPLIANCE mode until now + the policy's ``evidence.retention``; where it is not, the store says
so (``notes``) and writes them without.

Committing a bundle to its chain, without a lock:

1. read ``head.json`` and its ETag; if the bundle it names never landed (its writer was
   killed), finish that writer's commit from ``_staging/`` first;
2. build the bundle with ``previous`` = the head, upload it to ``_staging/<id>.zip``;
3. replace ``head.json`` with ``If-Match: <ETag>`` (``If-None-Match: *`` for a new chain);
   when another writer moved the head meanwhile, the write fails (412) and this writer
   rebuilds its bundle on the new head and tries again: chains never fork;
4. write the bundle to its final key and its index record, then delete the staged copy;
5. move the store catalogue forward (``evidence.catalogue``): read the newest
   ``_catalogue/<n>.json``, write ``_catalogue/<n+1>.json`` with ``If-None-Match: *``; when another
   writer took ``n+1`` meanwhile (412), read it and try again. Between the head claim and the
   bundle, a marker ``_catalogue/pending/<id>.json`` names the record: a writer killed before its
   catalogue leaves it, and the next writer folds that record into its catalogue and says so.
   Writers of other chains meet only here, after their bundles are in place.

boto3 is the optional extra ``policyengine-gate[s3]``; the endpoint, region and credentials come
from the standard AWS variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, profiles, ...).
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any, cast

import policyengine.evidence.format.catalogue as catalogue_mod
from policyengine import deadline
from policyengine.errors import EvidenceError, UsageError
from policyengine.evidence.format.bundle import CHUNK, VerifyProblem, format_timestamp
from policyengine.evidence.format.index import ObjectCache, Query, answer, in_period
from policyengine.evidence.format.signing import SigningKey
from policyengine.evidence.stores.base import (
    BundleRef,
    EvidenceStore,
    Job,
    chain_key,
    legacy_chain_segment,
    parse_record,
    pause_point,
    ref_of,
)
from policyengine.redact import EvidenceRedactor

_INSTALL_HINT = "install the S3 extra: pip install 'policyengine-gate[s3]'"
_MAX_ATTEMPTS = 100
_RETENTION_RE = re.compile(r"^([0-9]+)([dwy])$")


def retention_delta(value: str) -> timedelta:
    """``400d`` / ``10w`` / ``2y`` -> a timedelta (a year is 365 days)."""
    match = _RETENTION_RE.match(value)
    if not match:
        raise ValueError(f"retention {value!r} is not a number followed by d, w or y")
    n, unit = int(match[1]), match[2]
    return timedelta(days=n * {"d": 1, "w": 7, "y": 365}[unit])


def _catalogue_segment() -> str:
    """The key segment of the store catalogues (``_catalogue``: beside ``_index`` and ``_chains``)."""
    return "_" + catalogue_mod.CATALOGUE_DIR


def _segment(value: str | None) -> str:
    """A repository or environment as bundle key segments: safe characters kept, ``/`` kept.

    Readable, not injective: bundle keys end with the bundle id, so two chains never share one.
    Chain heads use ``store.chain_key``, which is injective.
    """
    return legacy_chain_segment(value)


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _status(exc: Exception) -> int:
    response = getattr(exc, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _precondition_failed(exc: Exception) -> bool:
    return _status(exc) in (409, 412) or _code(exc) in ("PreconditionFailed", "ConditionalRequestConflict")


_MD5 = re.compile(r"^[0-9a-f]{32}$")


def _md5_etag(etag: Any) -> str | None:
    """An object's ETag when it is the MD5 of its bytes (written in one piece, without KMS), else None."""
    text = str(etag or "").strip('"').lower()
    return text if _MD5.match(text) else None


def _not_found(exc: Exception) -> bool:
    return _status(exc) == 404 or _code(exc) in ("NoSuchKey", "404", "NotFound")


class S3Archive(EvidenceStore):
    """An evidence store in an S3-compatible bucket."""

    def __init__(self, url: str, *, client: Any = None) -> None:
        match = re.match(r"^s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(.*))?$", url)
        if not match:
            raise UsageError(f"--evidence-store: {url!r} is not s3://bucket[/prefix]")
        self.url = url
        self.bucket = match[1]
        self.prefix = (match[2] or "").strip("/")
        self._client = client
        self._lock_enabled: bool | None = None
        self.notes: list[str] = []

    # -- plumbing ----------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                import boto3  # type: ignore[import-untyped]
                from botocore.config import Config  # type: ignore[import-untyped]
            except ImportError as exc:
                raise UsageError("the S3 evidence store needs boto3", hint=_INSTALL_HINT) from exc
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
            # The run's deadline counts (POLICYENGINE_RUN_DEADLINE): no read waits past the time left.
            try:
                read = deadline.limit(60.0, f"the S3 store {self.url}")
            except deadline.RunDeadlineError as exc:
                raise EvidenceError(exc.message, hint=exc.hint) from None
            self._client = boto3.client("s3", region_name=region, config=Config(
                retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=min(10.0, read), read_timeout=read))
        return self._client

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def bundle_key(self, record: Mapping[str, Any]) -> str:
        bid = record["id"]
        return self._key(_segment(record.get("repository")), _segment(record.get("environment")),
                         bid[0:4], bid[4:6], bid[6:8], f"{bid}.zip")

    def _index_key(self, bundle_id: str) -> str:
        return self._key("_index", f"{bundle_id}.json")

    def _head_key(self, key: tuple[str | None, str | None]) -> str:
        return self._key("_chains", chain_key(*key), "head.json")

    def _legacy_head_key(self, key: tuple[str | None, str | None]) -> str:
        """Where the head was kept before ``chain_key`` (shared by ``acme`` + ``a/b`` and ``acme/a`` + ``b``)."""
        return self._key("_chains", legacy_chain_segment(key[0]), legacy_chain_segment(key[1]), "head.json")

    def _legacy_head(self, key: tuple[str | None, str | None],
                     retain_until: datetime | None) -> dict[str, Any] | None:
        """The last record of chain ``key`` as recorded under the old head key (migrate on read).

        Used only when the new key has no head. The old head counts only when the bundle it
        names belongs to exactly this repository and environment; when another pair's writes
        took the old key over, this pair's last index record is its head.
        """
        legacy = self._legacy_head_key(key)
        if legacy == self._head_key(key):
            return None
        record, _ = self._settled_head(legacy, retain_until)
        if record is None:
            return None
        if (record.get("repository"), record.get("environment")) == key:
            return record
        records, _ = self.read_index()
        mine = [r for r in records if (r["repository"], r["environment"]) == key]
        return mine[-1] if mine else None

    def _staging_key(self, bundle_id: str) -> str:
        return self._key("_staging", f"{bundle_id}.zip")

    def _fail(self, what: str, exc: Exception) -> EvidenceError:
        code = _code(exc) or type(exc).__name__
        hint = "check the bucket, the AWS credentials and AWS_ENDPOINT_URL"
        if type(exc).__name__ == "NoCredentialsError":
            hint = "set AWS credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile or a role)"
        return EvidenceError(f"S3 store {self.url}: cannot {what}: {code}: {exc}", hint=hint)

    def _errors(self) -> tuple[type[Exception], ...]:
        from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

        return (ClientError, BotoCoreError)

    def lock_enabled(self) -> bool:
        """Whether the bucket has Object Lock enabled (asked once)."""
        if self._lock_enabled is None:
            try:
                conf = self.client.get_object_lock_configuration(Bucket=self.bucket)
                self._lock_enabled = conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
            except self._errors():
                self._lock_enabled = False
        return self._lock_enabled

    def _put(self, key: str, body: Any, *, if_none_match: bool = False, if_match: str | None = None,
             retain_until: datetime | None = None, content_type: str = "application/octet-stream") -> str:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "Body": body, "ContentType": content_type}
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        if if_match:
            kwargs["IfMatch"] = if_match
        if retain_until is not None:
            kwargs["ObjectLockMode"] = "COMPLIANCE"
            kwargs["ObjectLockRetainUntilDate"] = retain_until
        return str(self.client.put_object(**kwargs).get("ETag", ""))

    def _get_json(self, key: str) -> tuple[dict[str, Any] | None, str | None]:
        data, etag = self._get_bytes(key)
        return (json.loads(data), etag) if data is not None else (None, None)

    def _get_bytes(self, key: str) -> tuple[bytes | None, str | None]:
        """The bytes of ``key`` and its ETag; (None, None) when there is no such object."""
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=key)
        except self._errors() as exc:
            if _not_found(exc):
                return None, None
            raise self._fail(f"read {key}", exc) from exc
        return resp["Body"].read(), str(resp.get("ETag"))

    def _exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except self._errors() as exc:
            if _not_found(exc):
                return False
            raise self._fail(f"look up {key}", exc) from exc
        return True

    # -- write -------------------------------------------------------------------------

    def commit(self, job: Job, *, signing_key: SigningKey | None, retention: str | None,
               redactor: EvidenceRedactor | None) -> BundleRef:
        """Write ``job``'s bundle (an evaluation or a linked record) to the bucket, chained with a
        conditional write (see the module doc); return its reference."""
        retain_until = self._retain_until(retention)
        head_key = self._head_key(job.key)
        try:
            with tempfile.TemporaryDirectory(prefix="policyengine-s3-") as tmp:
                for attempt in range(_MAX_ATTEMPTS):
                    head, etag = self._settled_head(head_key, retain_until)
                    if head is None:  # a chain recorded under the old key continues here
                        head = self._legacy_head(job.key, retain_until)
                    link = self.chain_link(head, job.key)
                    path = Path(tmp) / f"{job.bundle_id}.zip"
                    digest = self._build(path, job, link, signing_key, redactor)
                    record = job.index_record(link, "", digest, signing_key.keyid if signing_key else None)
                    record["path"] = self.bundle_key(record)
                    staging = self._staging_key(job.bundle_id)
                    with open(path, "rb") as body:
                        self._put(staging, body, if_none_match=True)
                    claim = json.dumps({"record": record, "previous_id": link["previous_id"]}, sort_keys=True)
                    pause_point("staged")
                    try:
                        self._put(head_key, claim.encode("utf-8"), if_none_match=etag is None, if_match=etag,
                                  content_type="application/json")
                    except self._errors() as exc:
                        if not _precondition_failed(exc):
                            raise
                        # Another writer moved the head: rebuild on the new head.
                        with contextlib.suppress(*self._errors()):
                            self.client.delete_object(Bucket=self.bucket, Key=staging)
                        try:
                            time.sleep(deadline.limit(min(0.05 * (attempt + 1), 1.0),
                                                      f"a retry of the write to the S3 store {self.url}"))
                        except deadline.RunDeadlineError as exc:
                            raise EvidenceError(exc.message, hint=exc.hint) from None
                        continue
                    self._put(self._pending_key(record["id"]),
                              json.dumps(record, sort_keys=True).encode("utf-8"), content_type="application/json")
                    pause_point("claimed")
                    with open(path, "rb") as body:
                        self._land(record, body, retain_until)
                    pause_point("landed")
                    store_head = self._record_catalogue(record, signing_key)
                    return dataclasses.replace(ref_of(record), store_head=store_head)
        except self._errors() as exc:
            raise self._fail(f"write bundle {job.bundle_id}", exc) from exc
        raise EvidenceError(f"S3 store {self.url}: bundle {job.bundle_id} could not be chained after "
                            f"{_MAX_ATTEMPTS} attempts: too many concurrent writers", hint="retry the job")

    # -- the catalogue ---------------------------------------------------------------------

    def _catalogue_prefix(self) -> str:
        return self._key(_catalogue_segment()) + "/"

    def _pending_key(self, bundle_id: str) -> str:
        return self._key(_catalogue_segment(), "pending", f"{bundle_id}.json")

    def _catalogue_keys(self) -> tuple[builtins.list[str], builtins.list[str]]:
        """(catalogue keys in sequence order, pending marker keys): one listing."""
        names, pending = [], []
        prefix = self._catalogue_prefix()
        for obj in self._list_keys(prefix):
            rest = obj["Key"][len(prefix):]
            if rest.startswith("pending/") and rest.endswith(".json"):
                pending.append(obj["Key"])
            elif catalogue_mod.sequence_of_name(rest) is not None and "/" not in rest:
                names.append(obj["Key"])
        return sorted(names), pending

    def catalogue_files(self) -> builtins.list[tuple[str, bytes]]:
        names, _ = self._catalogue_keys()
        out = []
        for key in names:
            data, _ = self._get_bytes(key)
            if data is not None:
                out.append((key, data))
        return out

    def _record_catalogue(self, record: Mapping[str, Any], signing_key: SigningKey | None) -> str:
        """Write the next catalogue with ``record``'s chain moved forward (and the records of writers that
        stopped before theirs, from their markers); return the store head. A compare-and-swap on the
        catalogue's name: only writers that reach this point at once retry, after their bundles landed."""
        for attempt in range(_MAX_ATTEMPTS):
            names, markers = self._catalogue_keys()
            latest = None
            if names:
                data, _ = self._get_bytes(names[-1])
                try:
                    latest = catalogue_mod.parse(data or b"")
                except ValueError as exc:
                    raise EvidenceError(f"S3 store {self.url}: the catalogue {names[-1]} cannot be read ({exc}): "
                                        "refusing to write over it",
                                        hint=f"run `{self.command('evidence', 'verify', '--all')}`") from exc
            others: list[dict[str, Any]] = []
            own = self._pending_key(record["id"])
            for key in markers:
                if key == own:
                    continue
                doc, _ = self._get_json(key)
                if isinstance(doc, dict) and isinstance(doc.get("id"), str) and self._exists(
                        self._index_key(doc["id"])):
                    others.append(doc)  # landed, not catalogued by its writer (yet)
            seed: list[Mapping[str, Any]] = list(self.read_index()[0]) if latest is None else []
            repaired = catalogue_mod.behind(latest, others) if latest is not None else others
            if latest is not None and not catalogue_mod.behind(latest, [record, *others]):
                head = latest.sha256  # a later writer of this chain catalogued it already
            else:
                data = catalogue_mod.build(latest, [*seed, *others, record],
                                           recorded_at=format_timestamp(datetime.now(timezone.utc)),
                                           signing_key=signing_key)
                number = latest.sequence + 1 if latest else 1
                name = self._key(_catalogue_segment(), catalogue_mod.catalogue_name(number))
                try:
                    self._put(name, data, if_none_match=True, content_type="application/json")
                except self._errors() as exc:
                    if not _precondition_failed(exc):
                        raise
                    try:
                        time.sleep(deadline.limit(min(0.02 * (attempt + 1), 0.5),
                                                  f"a retry of the catalogue write to the S3 store {self.url}"))
                    except deadline.RunDeadlineError as exc2:
                        raise EvidenceError(exc2.message, hint=exc2.hint) from None
                    continue
                head = hashlib.sha256(data).hexdigest()
                for fixed in repaired:
                    self.notes.append(f"the catalogue lacked bundle {fixed['id']} (#{fixed.get('sequence')} of "
                                      f"{fixed.get('repository')} / {fixed.get('environment')}), whose writer had not "
                                      "recorded it in the catalogue (it stopped, or was still running): repaired, "
                                      "the catalogue records it now")
            for done in [record, *others]:
                with contextlib.suppress(*self._errors()):
                    self.client.delete_object(Bucket=self.bucket, Key=self._pending_key(str(done["id"])))
            return head
        raise EvidenceError(f"S3 store {self.url}: the catalogue could not be written after {_MAX_ATTEMPTS} "
                            "attempts: too many concurrent writers", hint="retry the job")

    def _retain_until(self, retention: str | None) -> datetime | None:
        if not retention:
            return None
        if not self.lock_enabled():
            self.notes.append(f"bucket {self.bucket} does not have Object Lock enabled: the policy's retention "
                              f"({retention}) is not enforced by the bucket")
            return None
        return datetime.now(timezone.utc) + retention_delta(retention)

    def _build(self, path: Path, job: Job, link: Mapping[str, Any], signing_key: SigningKey | None,
               redactor: EvidenceRedactor | None) -> str:
        with open(path, "wb") as fh:
            return job.write(fh, link, signing_key, redactor)

    def _land(self, record: Mapping[str, Any], body: IO[bytes], retain_until: datetime | None) -> None:
        """Write a claimed bundle to its final key and its index record; drop the staged copy.

        A 412 means the object is already there (a later writer finished this commit).
        """
        for key, data, ctype in (
            (record["path"], body, "application/zip"),
            (self._index_key(record["id"]), json.dumps(record, sort_keys=True).encode("utf-8"), "application/json"),
        ):
            try:
                self._put(key, data, if_none_match=True, retain_until=retain_until, content_type=ctype)
            except self._errors() as exc:
                if not _precondition_failed(exc):
                    raise
        with contextlib.suppress(*self._errors()):
            self.client.delete_object(Bucket=self.bucket, Key=self._staging_key(record["id"]))

    def _settled_head(self, head_key: str, retain_until: datetime | None) -> tuple[dict[str, Any] | None, str | None]:
        """Return the chain head record and its ETag, finishing a killed writer's commit first."""
        claim, etag = self._get_json(head_key)
        if claim is None:
            return None, None
        record = claim["record"]
        if not self._exists(self._index_key(record["id"])):
            staging = self._staging_key(record["id"])
            try:
                resp = self.client.get_object(Bucket=self.bucket, Key=staging)
            except self._errors() as exc:
                if not _not_found(exc):
                    raise
                if self._exists(record["path"]):  # landed; its index record may be missing
                    try:
                        self._put(self._index_key(record["id"]), json.dumps(record, sort_keys=True).encode("utf-8"),
                                  if_none_match=True, retain_until=retain_until, content_type="application/json")
                    except self._errors() as put_exc:
                        if not _precondition_failed(put_exc):  # 412: its writer recorded it meanwhile
                            raise
                return record, etag
            with tempfile.TemporaryFile() as body:
                for chunk in iter(lambda: resp["Body"].read(CHUNK), b""):
                    body.write(chunk)
                body.seek(0)
                self._land(record, body, retain_until)
        return record, etag

    # -- read --------------------------------------------------------------------------

    def _list_keys(self, prefix: str) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                yield from page.get("Contents", [])
        except self._errors() as exc:
            raise self._fail(f"list {prefix}", exc) from exc

    def _parse(self, data: Any, key: str) -> dict[str, Any]:
        return parse_record(data, path_for=self.bundle_key)

    def read_index(self) -> tuple[builtins.list[dict[str, Any]], builtins.list[VerifyProblem]]:
        """Read every index record from the bucket (fresh: verification does not trust a cache)."""
        records, problems = [], []
        for obj in self._list_keys(self._key("_index") + "/"):
            key = obj["Key"]
            try:
                data, _ = self._get_json(key)
                records.append(self._parse(data, key))
            except (ValueError, TypeError, KeyError) as exc:
                stem = key.rsplit("/", 1)[-1].removesuffix(".json")
                problems.append(VerifyProblem(stem, None, "index", f"index record {key}: {exc}"))
                continue
            if records[-1]["id"] + ".json" != key.rsplit("/", 1)[-1]:
                problems.append(VerifyProblem(records[-1]["id"], None, "index",
                                              f"index record {key} names bundle {records[-1]['id']}"))
        records.sort(key=lambda r: (r.get("sequence") or 0, r["created_at"], r["id"]))
        return records, problems

    def query(self, q: Query) -> tuple[Sequence[Mapping[str, Any]], int]:
        """Answer from the bucket's listing and a local cache of its index objects, checked against it.

        The listing (fresh on each run) names every index object and its ETag. A cached object is
        used only when its ETag is the listed one and its bytes hash to it (the ETag of an object
        written in one piece without KMS is its MD5); any other is fetched again. Every record
        answered is decoded from those bytes, so an edit of the cache (``$POLICYENGINE_CACHE_DIR``,
        else ``~/.cache/policyengine``: outside the bucket, where another job may write) costs only
        fetches.
        """
        cache_dir = Path(os.environ.get("POLICYENGINE_CACHE_DIR")
                         or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "policyengine")
        where = (os.environ.get("AWS_ENDPOINT_URL", "") + " " + self.url).encode("utf-8")
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            path: Path | None = cache_dir / f"s3-{hashlib.sha256(where).hexdigest()[:16]}.objects.sqlite"
        except OSError:
            path = None
        cache = ObjectCache(path)
        try:
            listed: dict[str, tuple[str, str | None]] = {}
            for obj in self._list_keys(self._key("_index") + "/"):
                listed[obj["Key"].rsplit("/", 1)[-1].removesuffix(".json")] = (obj["Key"], _md5_etag(obj.get("ETag")))
            cached = cache.load()
            records, fetched, bad = [], [], 0
            for bid, (key, etag) in listed.items():
                stored = cached.get(bid)
                if (etag is not None and stored is not None and stored[0] == etag and isinstance(stored[1], bytes)
                        and hashlib.md5(stored[1], usedforsecurity=False).hexdigest() == etag):
                    raw: bytes = stored[1]
                else:
                    body, got = self._get_bytes(key)
                    if body is None:
                        continue  # deleted since the listing
                    raw = body
                    if etag is not None and _md5_etag(got) == etag:
                        fetched.append((bid, etag, raw))
                try:
                    record = self._parse(json.loads(raw), key)
                    if record["id"] != bid:
                        raise ValueError(f"{key} names bundle {record['id']}")
                except (ValueError, TypeError, KeyError):
                    bad += 1
                    continue
                if in_period(record, q):
                    records.append(record)
            cache.update(fetched, set(cached) - set(listed))
            return answer(records, q), bad
        finally:
            cache.close()

    @contextlib.contextmanager
    def open_bundle(self, record: Mapping[str, Any]) -> Iterator[IO[bytes]]:
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=record["path"])
        except self._errors() as exc:
            if _not_found(exc):
                raise FileNotFoundError(record["path"]) from exc
            raise self._fail(f"read {record['path']}", exc) from exc
        with tempfile.SpooledTemporaryFile(max_size=64 << 20) as fh:
            for chunk in iter(lambda: resp["Body"].read(CHUNK), b""):
                fh.write(chunk)
            fh.seek(0)
            yield cast(IO[bytes], fh)

    def location(self, record: Mapping[str, Any]) -> str:
        return f"s3://{self.bucket}/{record['path']}"

    def retention_of(self, record: Mapping[str, Any]) -> tuple[str | None, datetime | None]:
        """Return the Object Lock mode and retain-until date of a bundle (None when not locked)."""
        head = self.client.head_object(Bucket=self.bucket, Key=record["path"])
        return head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")

    def unindexed(self, records: Sequence[Mapping[str, Any]]) -> builtins.list[VerifyProblem]:
        recorded = {r["path"] for r in records}
        skip = tuple(self._key(p) + "/" for p in ("_index", "_chains", "_staging", _catalogue_segment()))
        problems = []
        for obj in self._list_keys(self._key("") + "/" if self.prefix else ""):
            key = obj["Key"]
            if key.startswith(skip) or not key.endswith(".zip") or key in recorded:
                continue
            stem = key.rsplit("/", 1)[-1].removesuffix(".zip")
            message = f"s3://{self.bucket}/{key} is not recorded in the index"
            problems.append(VerifyProblem(stem, None, "unindexed", message))
        return problems

    def head_problems(self, records: Sequence[Mapping[str, Any]]) -> builtins.list[VerifyProblem]:
        """Each chain's head must name its last recorded bundle: else bundles at its end were removed."""
        last: dict[tuple[str | None, str | None], Mapping[str, Any]] = {}
        for r in records:
            last[(r["repository"], r["environment"])] = r
        problems = []
        for key, r in last.items():
            claim, _ = self._get_json(self._head_key(key))
            if claim is None and self._legacy_head_key(key) != self._head_key(key):
                old, _ = self._get_json(self._legacy_head_key(key))
                old_record = (old or {}).get("record") or {}
                if (old_record.get("repository"), old_record.get("environment")) == key:
                    claim = old  # a chain recorded before chain_key, not yet continued
            head = (claim or {}).get("record") or {}
            if head.get("id") != r["id"] or head.get("sha256") != r["sha256"]:
                problems.append(VerifyProblem(
                    str(head.get("id") or r["id"]), None, "chain",
                    f"the head of the chain of {key[0]} / {key[1]} names bundle {head.get('id')!r} "
                    f"(sequence {head.get('sequence')}), but the last recorded bundle is {r['id']} "
                    f"(sequence {r.get('sequence')}): bundles at the end of the chain were removed",
                ))
        return problems
