"""Chains that must never meet: ``acme`` + ``payments/production`` and ``acme/payments`` +
``production`` (GitLab subgroups, ``review/x`` environments) each keep their own chain, in
every store; chains recorded under the old, colliding S3 keys stay readable and continue."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import pytest
from test_evidence import CHANGE, write

from policyengine.evidence.stores.folder import LocalArchive
from policyengine.evidence.stores.base import EvidenceStore, chain_key, legacy_chain_segment

A = {**CHANGE, "repository": "acme", "environment": "payments/production"}
B = {**CHANGE, "repository": "acme/payments", "environment": "production"}

PAIRS: list[tuple[str | None, str | None]] = [
    ("acme", "payments/production"), ("acme/payments", "production"), ("acme/payments/production", None),
    (None, "acme/payments/production"), ("acme", ""), ("acme", None), ("", "acme"), ("acme", "-"),
    ("acme", "%"), ("acme", "%%"), ("acme", "_none_"), ("acme", "."), ("acme", ".."), ("a%2Fb", "c"),
    ("a/b", "c"), ("group/sub/project", "review/x"), ("group/sub", "project/review/x"), ("é", "ü/ß"),
]


def test_chain_keys_are_injective_and_reversible() -> None:
    keys = [chain_key(*p) for p in PAIRS]
    assert len(set(keys)) == len(PAIRS)
    for (repo, env), key in zip(PAIRS, keys, strict=True):
        parts = key.split("/")
        assert len(parts) == 2
        back = [None if p == "%" else "" if p == "%%" else unquote(p) for p in parts]
        assert back == [repo, env]
    # A pair without "/" keeps the key it had before, so most chains need no migration.
    assert chain_key("shop", "production") == f"{legacy_chain_segment('shop')}/{legacy_chain_segment('production')}"


def _chains_of(store: EvidenceStore) -> dict[tuple[str | None, str | None], list[int | None]]:
    out: dict[tuple[str | None, str | None], list[int | None]] = {}
    for ref in store.list():
        out.setdefault((ref.repository, ref.environment), []).append(store.find(ref.id)["sequence"])
    return out


def _interleave(store: Any, **kw: Any) -> None:
    for change in (B, B, A, B, A):
        write(store, change=change, **kw)


def test_colliding_pairs_form_their_own_chains_in_a_folder(tmp_path: Any) -> None:
    store = LocalArchive(tmp_path / "a")
    _interleave(store)
    report = store.verify()
    assert report.ok, report.problems
    assert _chains_of(store) == {("acme/payments", "production"): [1, 2, 3], ("acme", "payments/production"): [1, 2]}


pytest.importorskip("boto3")
pytest.importorskip("moto")
import s3_server  # noqa: E402 - after the checks that the S3 extras are installed

s3_session = s3_server.s3_session  # the fixtures of the local S3 server
s3 = s3_server.s3


def _s3_store(bucket: str) -> Any:
    from policyengine.evidence.stores.s3 import S3Archive

    return S3Archive(f"s3://{bucket}/keys-{uuid.uuid4().hex[:8]}")


def test_colliding_pairs_form_their_own_chains_in_s3(s3: Any) -> None:
    store = _s3_store(s3_server.PLAIN_BUCKET)
    _interleave(store, created_at=None)
    report = store.verify()
    assert report.ok, report.problems
    assert _chains_of(store) == {("acme/payments", "production"): [1, 2, 3], ("acme", "payments/production"): [1, 2]}
    keys = {o["Key"] for o in s3.client.list_objects_v2(Bucket=s3_server.PLAIN_BUCKET,
                                                        Prefix=store.prefix + "/_chains/")["Contents"]}
    assert keys == {f"{store.prefix}/_chains/acme%2Fpayments/production/head.json",
                    f"{store.prefix}/_chains/acme/payments%2Fproduction/head.json"}


def _old_keys(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Make the S3 store write chain heads under the old (colliding) keys; return the undo."""
    from policyengine.evidence.stores.s3 import S3Archive

    monkeypatch.setattr(S3Archive, "_head_key", S3Archive._legacy_head_key)
    return monkeypatch.undo


def test_a_chain_recorded_under_the_old_key_verifies_and_continues(s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _s3_store(s3_server.PLAIN_BUCKET)
    undo = _old_keys(monkeypatch)
    old = [write(store, change=B, created_at=None) for _ in range(2)]
    undo()
    assert store.verify().ok  # read before anything new is written
    new = write(store, change=B, created_at=None)
    record = store.find(new.id)
    assert record["sequence"] == 3 and record["previous_sha256"] == old[-1].sha256
    report = store.verify()
    assert report.ok, report.problems


def test_an_old_key_taken_over_by_the_colliding_pair_is_not_followed(
        s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _s3_store(s3_server.PLAIN_BUCKET)
    undo = _old_keys(monkeypatch)
    b_refs = [write(store, change=B, created_at=None) for _ in range(2)]
    # Under the old keys A's first bundle was chained onto B's head and took the head over:
    # the damage the collision did (verify names it), which no migration can undo.
    a_old = write(store, change=A, created_at=None)
    undo()
    nxt = write(store, change=B, created_at=None)
    assert store.find(nxt.id)["sequence"] == 3 and store.find(nxt.id)["previous_sha256"] == b_refs[-1].sha256
    a_next = write(store, change=A, created_at=None)
    assert store.find(a_next.id)["previous_sha256"] == a_old.sha256
    report = store.verify()
    assert {p.bundle_id for p in report.problems} == {a_old.id}, report.problems
