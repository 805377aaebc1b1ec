"""Outcome and review records in the S3 store (moto on 127.0.0.1): appended, chained, verified."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

pytest.importorskip("moto")
pytest.importorskip("cryptography")
import s3_server  # noqa: E402
from s3_server import LOCKED_BUCKET, S3Server  # noqa: E402
from test_outcomes import checks, cli, evaluate, forge, keypair, outcome_doc  # noqa: E402

from policyengine.evidence.format.records import latest_deploy  # noqa: E402
from policyengine.evidence.stores.s3 import S3Archive  # noqa: E402
from policyengine.evidence.format.signing import load_public_key, load_signing_key  # noqa: E402

s3_session = s3_server.s3_session
s3 = s3_server.s3


def test_records_in_a_bucket_are_chained_linked_retained_and_verified(s3: S3Server, tmp_path: Path) -> None:
    priv, pub = keypair(tmp_path)
    key, public = load_signing_key(str(priv)), load_public_key(str(pub))
    store = S3Archive(f"s3://{LOCKED_BUCKET}/outcomes-{uuid.uuid4().hex[:8]}")
    ref = evaluate(store, key=key)
    original = s3.client.get_object(Bucket=LOCKED_BUCKET, Key=ref.path)["Body"].read()

    out = cli("evidence", "record-outcome", "--archive", store.url, ref.id, "--status", "deployed",
              "--signing-key", str(priv), env={**s3.env, "CI": "true", "GITHUB_ACTIONS": "true",
                                               "GITHUB_ACTOR": "dana"})
    assert out.returncode == 0, out.stderr
    out = cli("evidence", "review", "--archive", store.url, ref.id, "--by", "erin", "--result", "ok",
              "--note", "fine", "--signing-key", str(priv), env=s3.env)
    assert out.returncode == 0, out.stderr

    records, problems = store.read_index()
    assert not problems
    assert [(r.get("kind"), r["sequence"]) for r in records] == [(None, 1), ("outcome", 2), ("review", 3)]
    assert all(r.get("about_id") == ref.id for r in records[1:])
    assert s3.client.get_object(Bucket=LOCKED_BUCKET, Key=ref.path)["Body"].read() == original
    head = json.loads(s3.client.get_object(
        Bucket=LOCKED_BUCKET, Key=f"{store.prefix}/_chains/acme%2Fpayments/production/head.json")["Body"].read())
    assert head["record"]["id"] == records[2]["id"]  # the chain head moved to the last record
    report = store.verify((), public)
    assert report.ok, report.problems
    assert store.retention_of(records[1])[0] is None  # the test policy sets no retention
    assert latest_deploy(records, "acme/payments", "production") == records[0]

    staging = evaluate(store, key=key, environment="staging")
    forged = forge(store, outcome_doc(staging, environment="production"), ("acme/payments", "production"), key)
    report = store.verify((), public)
    assert checks(report, forged.id) == {"link"}, report.problems
    out = cli("evidence", "verify", "--archive", store.url, "--public-key", str(pub), env=s3.env)
    assert out.returncode == 1 and f"FAIL  link          bundle {forged.id}" in out.stdout
