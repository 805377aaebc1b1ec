"""The S3 store against a local S3-compatible server (moto on 127.0.0.1): upload, list, get,
verify, retention, no overwrite, 20 concurrent checks, a killed writer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

pytest.importorskip("boto3")
pytest.importorskip("moto")
import s3_server
from s3_server import LOCKED_BUCKET, PLAIN_BUCKET, S3Server
from test_evidence import CHANGE, problems_of, write

from policyengine.evidence.format.index import Query
from policyengine.evidence.stores.s3 import S3Archive, retention_delta

FIXTURES = Path(__file__).parent / "fixtures" / "acceptance"
s3_session = s3_server.s3_session  # the fixtures of the local S3 server
s3 = s3_server.s3


def _store(s3: S3Server, bucket: str, prefix: str) -> S3Archive:
    """A store under a prefix no other test uses (objects under Object Lock cannot be deleted)."""
    return S3Archive(f"s3://{bucket}/{prefix}-{uuid.uuid4().hex[:8]}".replace("/-", "/"))


def test_upload_list_get_verify_with_retention(s3: S3Server, tmp_path: Path) -> None:
    store = _store(s3, LOCKED_BUCKET, "prod")
    refs = [write(store, created_at=None, retention="400d") for _ in range(3)]
    other = write(store, change={**CHANGE, "environment": "staging"}, created_at=None, retention="400d")
    day = datetime.now(timezone.utc).strftime("%Y/%m/%d")
    assert refs[0].path == f"{store.prefix}/acme/shop/production/{day}/{refs[0].id}.zip"
    assert other.path.startswith(f"{store.prefix}/acme/shop/staging/")
    keys = {o["Key"] for o in s3.client.list_objects_v2(Bucket=LOCKED_BUCKET, Prefix=store.prefix)["Contents"]}
    assert {f"{store.prefix}/_index/{r.id}.json" for r in refs} <= keys
    assert f"{store.prefix}/_chains/acme%2Fshop/production/head.json" in keys  # store.chain_key
    assert not [k for k in keys if "_staging" in k]

    rows, bad = store.query(Query(environment="production"))
    assert bad == 0 and [r["id"] for r in rows] == [r.id for r in refs]
    assert [r["sequence"] for r in rows] == [1, 2, 3]

    store.export_bundle(refs[1].id, tmp_path / "got.zip")
    body = s3.client.get_object(Bucket=LOCKED_BUCKET, Key=refs[1].path)["Body"].read()
    assert (tmp_path / "got.zip").read_bytes() == body

    report = store.verify()
    assert report.ok, report.problems
    assert len(report.checked) == 4

    mode, until = store.retention_of(store.find(refs[0].id))
    assert mode == "COMPLIANCE"
    expected = datetime.now(timezone.utc) + retention_delta("400d")
    assert abs(until - expected) < timedelta(minutes=5)
    assert store.notes == []
    version = s3.client.list_object_versions(Bucket=LOCKED_BUCKET, Prefix=refs[0].path)["Versions"][0]
    with pytest.raises(Exception, match="AccessDenied"):
        s3.client.delete_object(Bucket=LOCKED_BUCKET, Key=refs[0].path, VersionId=version["VersionId"])


def test_a_bucket_without_object_lock_is_said_so(s3: S3Server) -> None:
    store = _store(s3, PLAIN_BUCKET, "")
    ref = write(store, created_at=None, retention="400d")
    assert store.notes == [f"bucket {PLAIN_BUCKET} does not have Object Lock enabled: the policy's retention "
                           "(400d) is not enforced by the bucket"]
    assert store.retention_of(store.find(ref.id)) == (None, None)
    assert store.verify().ok


def test_nothing_is_ever_overwritten(s3: S3Server) -> None:
    store = _store(s3, PLAIN_BUCKET, "p")
    ref = write(store, created_at=None)
    before = s3.client.get_object(Bucket=PLAIN_BUCKET, Key=ref.path)["Body"].read()
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as info:
        store._put(ref.path, b"forged", if_none_match=True)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    # Landing the same id again (a second writer finishing a commit) leaves the first bytes.
    record = store.find(ref.id)
    import io

    store._land(record, io.BytesIO(b"another body"), None)
    assert s3.client.get_object(Bucket=PLAIN_BUCKET, Key=ref.path)["Body"].read() == before
    assert store.verify().ok


def test_tampering_in_the_bucket_is_caught(s3: S3Server) -> None:
    store = _store(s3, PLAIN_BUCKET, "t")
    ids = [write(store, created_at=None).id for _ in range(4)]
    records = {r["id"]: r for r in store.read_index()[0]}
    # Delete a middle bundle and its index record.
    s3.client.delete_object(Bucket=PLAIN_BUCKET, Key=records[ids[1]]["path"])
    s3.client.delete_object(Bucket=PLAIN_BUCKET, Key=f"{store.prefix}/_index/{ids[1]}.json")
    # Delete the last bundle and its record: only the chain head can tell.
    s3.client.delete_object(Bucket=PLAIN_BUCKET, Key=records[ids[3]]["path"])
    s3.client.delete_object(Bucket=PLAIN_BUCKET, Key=f"{store.prefix}/_index/{ids[3]}.json")
    report = store.verify()
    found = problems_of(report)
    assert (ids[2], None, "chain") in found
    assert (ids[3], None, "chain") in found
    assert any("bundles at the end of the chain were removed" in p.message for p in report.problems)


def _check(store_url: str, **env: str) -> list[str]:
    return [sys.executable, "-m", "policyengine", "check", "--policy", str(FIXTURES / "policy.yml"),
            "--change", str(FIXTURES / "change.yml"), "--workspace", str(FIXTURES / "workspace"),
            "--now", "2026-11-24T15:00:00Z", "--evidence-store", store_url]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLICYENGINE_TEST", "GITHUB_", "GITLAB_"))}
    env.update(extra)
    return env


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policyengine", *args], capture_output=True, text=True,
                          timeout=300, check=False, env=_env())


def test_twenty_concurrent_checks_into_s3_make_one_unbroken_chain(s3: S3Server, tmp_path: Path) -> None:
    url = _store(s3, LOCKED_BUCKET, "concurrent").url
    procs = [subprocess.Popen(_check(url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
             for _ in range(20)]
    outputs = [p.communicate(timeout=300) for p in procs]
    failed = [out for p, out in zip(procs, outputs, strict=True) if p.returncode != 0]
    assert not failed, failed[0]
    records = S3Archive(url).read_index()[0]
    assert len(records) == 20
    assert [r["sequence"] for r in records] == list(range(1, 21))
    for before, after in zip(records, records[1:], strict=False):
        assert after["previous_sha256"] == before["sha256"]
    result = _cli("evidence", "verify", "--archive", url, "--all")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: 20 bundles verified" in result.stdout

    listed = _cli("evidence", "list", "--archive", url, "--json", "--since", "2020-01-01")
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 20
    some = records[7]["id"]
    got = _cli("evidence", "get", "--archive", url, some, "-o", str(tmp_path / "b.zip"))
    assert got.returncode == 0 and (tmp_path / "b.zip").stat().st_size > 0
    shown = _cli("evidence", "show", "--archive", url, some)
    assert shown.returncode == 0 and "#8, previous" in shown.stdout
    replayed = _cli("evidence", "replay", "--archive", url, some)
    assert replayed.returncode == 0, replayed.stdout


@pytest.mark.parametrize("stage", ["staged", "claimed"])
def test_a_check_killed_while_writing_to_s3_leaves_a_chain_that_verifies(s3: S3Server, stage: str) -> None:
    url = _store(s3, PLAIN_BUCKET, "killed").url
    assert subprocess.run(_check(url), capture_output=True, env=_env(), timeout=120, check=False).returncode == 0
    proc = subprocess.Popen(_check(url), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=_env(POLICYENGINE_TEST_PAUSE_AT=stage))
    assert proc.stderr is not None
    assert proc.stderr.readline().strip() == f"paused at {stage}".encode()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

    # The next writer lands a claimed bundle from staging, then chains onto it.
    assert subprocess.run(_check(url), capture_output=True, env=_env(), timeout=120, check=False).returncode == 0
    records = S3Archive(url).read_index()[0]
    assert [r["sequence"] for r in records] == list(range(1, len(records) + 1))
    assert len(records) == (3 if stage == "claimed" else 2)
    result = _cli("evidence", "verify", "--archive", url, "--all")
    assert result.returncode == 0, result.stdout


def test_signed_bundles_from_the_environment_export_and_verify_on_s3(s3: S3Server, tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    (tmp_path / "k.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    url = _store(s3, LOCKED_BUCKET, "signed").url
    env = _env(POLICYENGINE_EVIDENCE_STORE=url, POLICYENGINE_SIGNING_KEY="env:SIGNING_PEM", SIGNING_PEM=pem)
    policy = tmp_path / "policy.yml"
    policy.write_bytes((FIXTURES / "policy.yml").read_bytes() + b"evidence:\n  retention: 400d\n")
    cmd = [str(policy) if c == str(FIXTURES / "policy.yml") else c
           for c in _check(url) if c not in ("--evidence-store", url)]
    for _ in range(3):
        run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "evidence: note" not in run.stdout  # the locked bucket takes the retention
    store = S3Archive(url)
    assert {store.retention_of(r)[0] for r in store.read_index()[0]} == {"COMPLIANCE"}
    plain = _store(s3, PLAIN_BUCKET, "signed").url
    run = subprocess.run(cmd, capture_output=True, text=True, env={**env, "POLICYENGINE_EVIDENCE_STORE": plain},
                         timeout=120, check=False)
    assert run.returncode == 0
    assert "evidence: note: bucket evidence-plain does not have Object Lock enabled" in run.stdout
    verified = _cli("evidence", "verify", "--archive", url, "--all", "--public-key", str(tmp_path / "k.pub"))
    assert verified.returncode == 0, verified.stdout
    assert "3 signed, signature valid" in verified.stdout
    out = tmp_path / "audit.zip"
    exported = _cli("audit", "export", "--archive", url, "--since", "2020-01-01", "--until", "2099-12-31",
                    "--sample", "2", "--seed", "7", "-o", str(out))
    assert exported.returncode == 0, exported.stderr
    import zipfile

    with zipfile.ZipFile(out) as zf:
        doc = json.loads(zf.read("export.json"))
        assert doc["population"] == 3 and len(doc["sample"]["ids"]) == 2
        for bid in doc["sample"]["ids"]:
            assert zf.getinfo(f"bundles/{bid}.zip").file_size > 0


@pytest.mark.parametrize("etag", ["kept", "matching the forgery"])
def test_an_edited_cache_of_the_index_changes_no_listing(s3: S3Server, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, etag: str) -> None:
    """The S3 cache lives outside the bucket, where another job may write: a record moved out of the
    period there (and given an ETag to match) is fetched again from the bucket, never listed as cached."""
    import hashlib
    import sqlite3

    from policyengine.evidence.format.index import COLUMNS

    monkeypatch.setenv("POLICYENGINE_CACHE_DIR", str(tmp_path / "cache"))
    store = _store(s3, PLAIN_BUCKET, "cache")
    refs = [write(store, created_at=None) for _ in range(3)]
    period = Query(since="2020-01-01T00:00:00Z")
    truth, bad = store.query(period)
    assert bad == 0 and [r["id"] for r in truth] == [r.id for r in refs]
    caches = list((tmp_path / "cache").glob("s3-*.sqlite"))
    assert caches
    for db in caches:
        with sqlite3.connect(db) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "bundles" in tables:  # a cache of decoded rows (before the objects were kept as bytes)
                conn.execute("UPDATE bundles SET created_at = '1999-01-01T00:00:00Z' WHERE id = ?", (refs[1].id,))
            if "objects" in tables:
                raw = conn.execute("SELECT raw FROM objects WHERE id = ?", (refs[1].id,)).fetchone()[0]
                forged = {**json.loads(raw), "created_at": "1999-01-01T00:00:00Z"}
                body = json.dumps(forged).encode()
                conn.execute("UPDATE objects SET raw = ? WHERE id = ?", (body, refs[1].id))
                if etag != "kept":
                    conn.execute("UPDATE objects SET etag = ? WHERE id = ?",
                                 (hashlib.md5(body).hexdigest(), refs[1].id))  # noqa: S324 - what S3 does
    rows, bad = S3Archive(store.url).query(period)
    project = [{c: r.get(c) for c in COLUMNS} for r in rows]
    assert bad == 0 and project == [{c: r.get(c) for c in COLUMNS} for r in truth]
