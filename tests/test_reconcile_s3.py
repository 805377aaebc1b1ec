"""`audit reconcile --record --public-key` against an S3 store (moto on 127.0.0.1): unauthorized
found, every release verified, the record chained and verified like any record."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

pytest.importorskip("moto")
pytest.importorskip("cryptography")

import s3_server  # noqa: E402
from s3_server import LOCKED_BUCKET, S3Server  # noqa: E402
from test_outcomes import EARLIER, cli, evaluate, keypair  # noqa: E402

from policyengine.evidence.stores.s3 import S3Archive  # noqa: E402
from policyengine.evidence.format.signing import load_signing_key  # noqa: E402

s3_session = s3_server.s3_session
s3 = s3_server.s3


def test_reconcile_and_record_in_an_s3_store(s3: S3Server, tmp_path: Path) -> None:
    priv, pub = keypair(tmp_path)
    store = S3Archive(f"s3://{LOCKED_BUCKET}/reconcile-{uuid.uuid4().hex[:8]}")
    ref = evaluate(store, key=load_signing_key(str(priv)))
    record = next(r for r in store.read_index()[0] if r["id"] == ref.id)
    later = (EARLIER + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    log = tmp_path / "deploys.jsonl"
    log.write_text("\n".join(json.dumps(x) for x in [
        {"time": later, "commit": record["commit"], "environment": record["environment"], "id": "ok-1",
         "repository": record["repository"]},
        {"time": later, "commit": "e" * 40, "environment": record["environment"], "id": "x-1",
         "repository": record["repository"]}]) + "\n")
    res = cli("audit", "reconcile", "--archive", store.url, "--since", "2000-01-01", "--until", "2999-12-31",
              "--source", f"log:{log}", "--format", "json", "--public-key", str(pub), "--record",
              "--signing-key", str(priv), env=s3.env)
    assert res.returncode == 1, res.stdout + res.stderr
    report = json.loads(res.stdout)
    assert [(f["kind"], f["platform_id"]) for f in report["exceptions"]] == [("unauthorized", "x-1")]
    assert report["matched"] == 1 and report["signatures_checked"] is True
    assert [r.get("kind") for r in store.read_index()[0]] == [None, "reconciliation"]
    verified = cli("evidence", "verify", "--archive", store.url, "--public-key", str(pub), env=s3.env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
