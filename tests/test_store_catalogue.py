"""The store catalogue and the store head (issue 16), and the evidence schema version plan.

Every store (folder, S3 through a moto server, git through a bare repository) keeps a catalogue of
its chains and their heads; each catalogue names the digest of the one before it; the store head
is the digest of the newest one. One anchored store head covers every chain.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("cryptography")

from test_evidence import CHANGE, POLICY

from policyengine.evidence.format import bundle as bundle_module
from policyengine.evidence.stores.folder import LocalArchive

REPO = Path(__file__).resolve().parents[1]


def _write(archive: Any, **change: Any) -> Any:
    return archive.write_bundle(decision={"decision": "allow", "rules": []}, change={**CHANGE, **change},
                                policy_filename="p.yml", policy_bytes=POLICY, files=[])


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policyengine", *args], capture_output=True, text=True,
                          timeout=300, check=False, env=env)


def _verify(archive: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return cli("evidence", "verify", "--archive", archive, *extra, env=env)


# -- versions ------------------------------------------------------------------------------------


def test_this_release_writes_schema_version_3() -> None:
    assert bundle_module.SCHEMA_VERSION == 3 and 3 in bundle_module.READABLE_SCHEMA_VERSIONS


def test_an_older_verify_meeting_a_newer_bundle_says_upgrade(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = LocalArchive(tmp_path / "ev")
    _write(archive)
    with monkeypatch.context() as m:
        m.setattr(bundle_module, "SCHEMA_VERSION", max(bundle_module.READABLE_SCHEMA_VERSIONS) + 1)
        newer = _write(archive)
    result = _verify(str(tmp_path / "ev"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"FAIL  version       bundle {newer.id} member manifest.json" in result.stdout
    assert "made by a newer version of policyengine: upgrade" in result.stdout
    assert "cannot be read" not in result.stdout


# -- the folder store ---------------------------------------------------------------------------


def _check(store_args: list[str], *extra: str, env: dict[str, str] | None = None,
           change: str = "examples/change-allowed.yml") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policyengine", "check", "--policy",
                           str(REPO / "policies" / "soc2-production.yml"), "--change", str(REPO / change),
                           "--workspace", str(REPO / "examples" / "workspace"), "--now", "2026-11-24T15:00:00Z",
                           *store_args, *extra], capture_output=True, text=True, timeout=300, check=False, env=env)


def _store_head(out: str) -> str:
    import re

    found = re.findall(r"store head sha256 ([0-9a-f]{64})", out)
    assert len(found) == 1, out
    return found[0]


def _two_chains(archive: LocalArchive) -> list[Any]:
    refs = [_write(archive, environment="production"), _write(archive, environment="staging"),
            _write(archive, environment="production")]
    return refs


def test_each_write_makes_a_catalogue_of_every_chain(tmp_path: Path) -> None:
    archive = LocalArchive(tmp_path / "ev")
    refs = _two_chains(archive)
    heads = [r.store_head for r in refs]
    assert all(heads) and len(set(heads)) == 3
    cat = archive.catalogue()
    assert cat is not None and cat.sequence == 3 and cat.sha256 == heads[-1]
    assert {(c.environment, c.sequence, c.sha256) for c in cat.chains} == {
        ("production", 2, refs[2].sha256), ("staging", 1, refs[1].sha256)}
    files = archive.catalogue_files()
    assert [n for n, _ in files] == ["catalogue/000000000001.json", "catalogue/000000000002.json",
                                     "catalogue/000000000003.json"]
    report = archive.verify(heads=[heads[0]])
    assert report.ok, report.problems


def test_check_prints_the_store_head_and_verify_head_accepts_it(tmp_path: Path) -> None:
    archive = tmp_path / "ev"
    run = _check(["--evidence-dir", str(archive)])
    assert run.returncode in (0, 1), run.stderr
    head = _store_head(run.stdout)
    assert head == LocalArchive(archive).catalogue().sha256  # type: ignore[union-attr]
    ok = _verify(str(archive), "--head", head)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "1 anchored head found" in ok.stdout


def _delete_chain(archive: LocalArchive, environment: str) -> None:
    index = archive.root / "index.jsonl"
    kept = []
    for line in index.read_text("utf-8").splitlines():
        record = json.loads(line)
        if record["environment"] == environment:
            (archive.root / record["path"]).unlink()
        else:
            kept.append(line)
    index.write_text("".join(k + "\n" for k in kept), encoding="utf-8")


def test_a_deleted_chain_fails_verify_and_verify_head(tmp_path: Path) -> None:
    archive = LocalArchive(tmp_path / "ev")
    refs = _two_chains(archive)
    _delete_chain(archive, "staging")
    plain = _verify(str(archive.root))
    assert plain.returncode == 1 and "FAIL  missing-chain" in plain.stdout, plain.stdout
    assert "staging" in plain.stdout and "the chain was deleted" in plain.stdout
    with_head = _verify(str(archive.root), "--head", refs[-1].store_head)
    assert with_head.returncode == 1 and "FAIL  missing-chain" in with_head.stdout, with_head.stdout
    assert "the anchored store head" in with_head.stdout
    # What reconcile reads: the chains the catalogue knows, with their lengths.
    assert {(c.environment, c.sequence) for c in archive.expected_chains()} == {("production", 2), ("staging", 1)}
    # Deleting the catalogues too does not help: the anchored store head names one that is gone.
    for name, _ in archive.catalogue_files():
        (archive.root / name).unlink()
    quiet = _verify(str(archive.root))
    assert quiet.returncode == 0, quiet.stdout  # (without an anchor, nothing says a chain existed)
    anchored = _verify(str(archive.root), "--head", refs[-1].store_head)
    assert anchored.returncode == 1 and "FAIL  head" in anchored.stdout, anchored.stdout


def test_deleted_newest_bundles_of_any_chain_fail_verify_store_head(tmp_path: Path) -> None:
    archive = LocalArchive(tmp_path / "ev")
    refs = _two_chains(archive)
    head = refs[-1].store_head
    # Delete the newest production bundle and every catalogue after the anchor... there is none:
    # delete the newest bundle of the production chain, its index line, and the newest catalogue.
    index = archive.root / "index.jsonl"
    lines = index.read_text("utf-8").splitlines()
    (archive.root / refs[2].path).unlink()
    index.write_text("".join(line + "\n" for line in lines[:-1]), encoding="utf-8")
    shorter = _verify(str(archive.root), "--head", head)  # the catalogues still there: the chain is short
    assert shorter.returncode == 1 and "FAIL  missing-chain" in shorter.stdout, shorter.stdout
    assert "only up to #1" in shorter.stdout
    for name, _ in archive.catalogue_files()[-1:]:
        (archive.root / name).unlink()
    caught = _verify(str(archive.root), "--head", head)
    assert caught.returncode == 1, caught.stdout
    assert "FAIL  head" in caught.stdout
    # Per-chain heads verify as before: the staging head is still there.
    still = _verify(str(archive.root), "--head", refs[1].sha256)
    assert still.returncode == 0, still.stdout


def test_a_replayed_older_catalogue_that_hides_a_deleted_chain_fails(tmp_path: Path) -> None:
    archive = LocalArchive(tmp_path / "ev")
    first = _write(archive, environment="production")
    staging = _write(archive, environment="staging")
    head = staging.store_head
    _delete_chain(archive, "staging")
    files = archive.catalogue_files()
    # Replay catalogue #1 (production only) as the newest, in place of #2 (which knew staging).
    (archive.root / files[1][0]).write_bytes(files[0][1])
    plain = _verify(str(archive.root))
    assert plain.returncode == 1 and "FAIL  catalogue" in plain.stdout, plain.stdout
    anchored = _verify(str(archive.root), "--head", head)
    assert anchored.returncode == 1, anchored.stdout
    assert first.store_head != head


def _keys(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    priv, pub = tmp_path / "signing.pem", tmp_path / "signing.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def _env(**extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("POLICYENGINE_", "GITHUB_", "GITLAB_", "CI_")) and k != "CI"}
    return {**env, **extra}


def _killed_at(stage: str, store_args: list[str], key: Path, env: dict[str, str]) -> None:
    import os
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "policyengine", "check", "--policy",
                             str(REPO / "policies" / "soc2-production.yml"), "--change",
                             str(REPO / "examples" / "change-allowed.yml"), "--workspace",
                             str(REPO / "examples" / "workspace"), "--now", "2026-11-24T15:00:00Z", *store_args,
                             "--signing-key", str(key)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**env, "POLICYENGINE_TEST_PAUSE_AT": stage})
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert line.strip() == f"paused at {stage}".encode(), line
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_a_crash_between_bundle_and_catalogue_is_repaired_by_the_next_write_and_said(tmp_path: Path) -> None:
    priv, pub = _keys(tmp_path)
    root = tmp_path / "ev"
    env = _env()
    first = _check(["--evidence-dir", str(root), "--signing-key", str(priv)], env=env)
    assert first.returncode in (0, 1), first.stderr
    _killed_at("indexed", ["--evidence-dir", str(root)], priv, env)
    archive = LocalArchive(root)
    assert len(archive.read_index()[0]) == 2 and archive.catalogue().chains[0].sequence == 1  # type: ignore[union-attr]
    behind = _verify(str(root), "--public-key", str(pub), env=env)
    assert behind.returncode == 0, behind.stdout  # one record behind is no forgery ...
    assert "warning:" in behind.stdout and "the catalogue (#1) is behind" in behind.stdout  # ... and it says so
    again = _check(["--evidence-dir", str(root), "--signing-key", str(priv)], env=env)
    assert again.returncode in (0, 1), again.stderr
    assert "evidence: note: the catalogue lacked bundle" in again.stdout and "repaired" in again.stdout
    cat = LocalArchive(root).catalogue()
    assert cat is not None and cat.chains[0].sequence == 3 and cat.sequence == 3
    clean = _verify(str(root), "--public-key", str(pub), "--head", _store_head(again.stdout), env=env)
    assert clean.returncode == 0 and "behind" not in clean.stdout, clean.stdout


def test_an_unsigned_folder_catalogue_is_repaired_by_verify_and_said(tmp_path: Path) -> None:
    root = tmp_path / "ev"
    env = _env()
    first = _check(["--evidence-dir", str(root)], env=env)
    assert first.returncode in (0, 1), first.stderr
    import os
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "policyengine", "check", "--policy",
                             str(REPO / "policies" / "soc2-production.yml"), "--change",
                             str(REPO / "examples" / "change-allowed.yml"), "--workspace",
                             str(REPO / "examples" / "workspace"), "--now", "2026-11-24T15:00:00Z",
                             "--evidence-dir", str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**env, "POLICYENGINE_TEST_PAUSE_AT": "indexed"})
    assert proc.stderr is not None and proc.stderr.readline().strip() == b"paused at indexed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    repaired = _verify(str(root), env=env)
    assert repaired.returncode == 0, repaired.stdout
    assert "note: the catalogue lacked bundle" in repaired.stdout and "repaired" in repaired.stdout
    assert LocalArchive(root).catalogue().chains[0].sequence == 2  # type: ignore[union-attr]


# -- the git store ------------------------------------------------------------------------------


def _git_store(tmp_path: Path) -> tuple[str, dict[str, str], Any, Path]:
    from test_evidence_git import env_for, git, url_of

    from policyengine.evidence.format.signing import load_signing_key

    remote = tmp_path / "evidence.git"
    git("init", "--quiet", "--bare", str(remote))
    git("-C", str(remote), "config", "uploadpack.allowFilter", "true")
    priv, pub = _keys(tmp_path)
    return url_of(remote), env_for(tmp_path), load_signing_key(str(priv)), pub


def _git_write(url: str, env: dict[str, str], key: Any, environment: str) -> Any:
    from policyengine.evidence.stores.git import GitArchive

    return GitArchive(url, env=env).write_bundle(
        decision={"decision": "allow", "rules": []}, change={**CHANGE, "environment": environment},
        policy_filename="p.yml", policy_bytes=POLICY, files=[], signing_key=key)


def test_the_git_store_commits_its_catalogue_with_each_record(tmp_path: Path) -> None:
    from test_evidence_git import REF, git

    from policyengine.evidence.stores.git import GitArchive

    url, env, key, pub = _git_store(tmp_path)
    refs = [_git_write(url, env, key, e) for e in ("production", "staging", "production")]
    store = GitArchive(url, env=env)
    cat = store.catalogue()
    assert cat is not None and cat.sha256 == refs[-1].store_head and cat.signature == "unchecked"
    assert {(c.environment, c.sequence) for c in store.expected_chains()} == {("production", 2), ("staging", 1)}
    # One commit adds the bundle and the catalogue together: no window between them.
    changed = git("-C", str(tmp_path / "evidence.git"), "show", "--name-only", "--format=", REF).decode().split()
    assert "catalogue/000000000003.json" in changed and any(p.startswith("bundles/") for p in changed)
    ok = _verify(url, "--public-key", str(pub), "--head", refs[0].store_head, env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_a_git_history_rewound_past_a_new_chain_fails_the_store_head(tmp_path: Path) -> None:
    from test_evidence_git import REF, git

    url, env, key, pub = _git_store(tmp_path)
    _git_write(url, env, key, "production")
    remote = tmp_path / "evidence.git"
    before = git("-C", str(remote), "rev-parse", REF).decode().strip()
    staging = _git_write(url, env, key, "staging")
    # A force-push back to before the staging chain: a consistent history, without it.
    git("-C", str(remote), "update-ref", REF, before)
    plain = _verify(url, "--public-key", str(pub), env=env)
    assert plain.returncode == 0, plain.stdout  # nothing in the store says the chain existed ...
    anchored = _verify(url, "--public-key", str(pub), "--head", staging.store_head, env=env)
    assert anchored.returncode == 1 and "FAIL  head" in anchored.stdout, anchored.stdout  # ... the anchor does


def test_a_git_commit_that_rewrites_a_catalogue_fails_the_history(tmp_path: Path) -> None:
    from test_evidence_git import _plain_commit

    url, env, key, pub = _git_store(tmp_path)
    _git_write(url, env, key, "production")
    _git_write(url, env, key, "staging")
    remote = tmp_path / "evidence.git"

    def hide_staging(work: Path) -> None:
        files = sorted((work / "catalogue").iterdir())
        files[-1].write_bytes(files[0].read_bytes())

    commit = _plain_commit(tmp_path, remote, hide_staging)
    caught = _verify(url, "--public-key", str(pub), env=env)
    assert caught.returncode == 1, caught.stdout
    assert f"commit {commit}" in caught.stdout and "a catalogue, once added, is never changed" in caught.stdout
    assert "FAIL  catalogue" in caught.stdout


# -- the S3 store (moto on 127.0.0.1) -------------------------------------------------------------

try:
    import s3_server

    s3_session = s3_server.s3_session  # the fixtures of the local S3 server
    s3 = s3_server.s3
except ImportError:  # pragma: no cover - without moto only the S3 cases skip
    pass


def _s3_store(bucket: str, name: str) -> Any:
    import uuid

    from policyengine.evidence.stores.s3 import S3Archive

    return S3Archive(f"s3://{bucket}/{name}-{uuid.uuid4().hex[:8]}")


def test_s3_catalogue_store_head_and_a_deleted_chain(s3: Any) -> None:
    pytest.importorskip("moto")
    from s3_server import PLAIN_BUCKET

    store = _s3_store(PLAIN_BUCKET, "catalogue")
    refs = _two_chains(store)
    cat = store.catalogue()
    assert cat is not None and cat.sequence == 3 and cat.sha256 == refs[-1].store_head
    assert {(c.environment, c.sequence) for c in store.expected_chains()} == {("production", 2), ("staging", 1)}
    ok = _verify(store.url, "--head", refs[0].store_head)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # Delete the staging chain: its bundle, its index record, its head.
    records = store.read_index()[0]
    for r in records:
        if r["environment"] == "staging":
            s3.client.delete_object(Bucket=store.bucket, Key=r["path"])
            s3.client.delete_object(Bucket=store.bucket, Key=store._index_key(r["id"]))
            s3.client.delete_object(Bucket=store.bucket, Key=store._head_key(("acme/shop", "staging")))
    plain = _verify(store.url)
    assert plain.returncode == 1 and "FAIL  missing-chain" in plain.stdout, plain.stdout
    anchored = _verify(store.url, "--head", refs[-1].store_head)
    assert anchored.returncode == 1 and "the anchored store head" in anchored.stdout, anchored.stdout
    # Replaying catalogue #1 over the newest one, to hide the chain, breaks the series.
    files = store.catalogue_files()
    s3.client.put_object(Bucket=store.bucket, Key=files[-1][0], Body=files[0][1])
    replayed = _verify(store.url, "--head", refs[-1].store_head)
    assert replayed.returncode == 1 and "FAIL  catalogue" in replayed.stdout, replayed.stdout


def test_s3_a_crash_between_bundle_and_catalogue_is_repaired_by_the_next_write(s3: Any) -> None:
    pytest.importorskip("moto")
    import os
    import signal

    from s3_server import PLAIN_BUCKET

    store = _s3_store(PLAIN_BUCKET, "crash")
    env = {**_env(), **s3.env}
    first = _check(["--evidence-store", store.url], env=env)
    assert first.returncode in (0, 1), first.stderr
    proc = subprocess.Popen([sys.executable, "-m", "policyengine", "check", "--policy",
                             str(REPO / "policies" / "soc2-production.yml"), "--change",
                             str(REPO / "examples" / "change-allowed.yml"), "--workspace",
                             str(REPO / "examples" / "workspace"), "--now", "2026-11-24T15:00:00Z",
                             "--evidence-store", store.url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**env, "POLICYENGINE_TEST_PAUSE_AT": "landed"})
    assert proc.stderr is not None and proc.stderr.readline().strip() == b"paused at landed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    behind = _verify(store.url, env=env)
    assert behind.returncode == 0 and "the catalogue (#1) is behind" in behind.stdout, behind.stdout
    # The next write, of another chain, catches the catalogue up and says so.
    ref = _write(store, repository="acme/other")
    assert any("the catalogue lacked bundle" in n and "repaired" in n for n in store.notes), store.notes
    cat = store.catalogue()
    assert cat is not None and cat.sha256 == ref.store_head
    assert {(c.repository, c.sequence) for c in cat.chains} == {("acme/payments", 2), ("acme/other", 1)}
    clean = _verify(store.url, "--head", ref.store_head, env=env)
    assert clean.returncode == 0 and "behind" not in clean.stdout, clean.stdout


# -- the integration files: the action's output store-head, the template's dotenv ----------------


def test_the_action_and_the_template_report_the_store_head(tmp_path: Path) -> None:
    from fake_servers import FakeAPI, github_env, gitlab_env
    from test_ci_persistent_store import RANGE_FREE
    from test_evidence_git import TOKEN
    from test_provider_github import MERGE, reviewed_world
    from test_provider_gitlab import SQUASH, approved_mr
    from test_provider_integration_files import run_action, run_template

    from policyengine.evidence.stores.git import GitArchive

    url, _, _, _ = _git_store(tmp_path)
    priv = tmp_path / "signing.pem"
    policy = tmp_path / "range-free.yml"
    policy.write_text(RANGE_FREE, encoding="utf-8")
    cache = {"POLICYENGINE_CACHE_DIR": str(tmp_path / "cache")}
    with FakeAPI("/api/v3") as api:
        reviewed_world(api)
        res, outputs, summary = run_action(tmp_path / "gh", {
            **github_env(api, MERGE), "POLICYENGINE_EVIDENCE_STORE": url, "PE_SIGNING_KEY_PEM": priv.read_text(),
            "POLICYENGINE_EVIDENCE_TOKEN": TOKEN, **cache}, policy=policy)
    assert res.returncode == 0, res.stdout + res.stderr
    store = GitArchive(url, env={**_env(), "POLICYENGINE_CACHE_DIR": str(tmp_path / "c2")})
    first = store.catalogue()
    assert first is not None and outputs["store-head"] == first.sha256
    assert f"Store head: `{first.sha256}`" in summary
    with FakeAPI("/api/v4") as api:
        approved_mr(api)
        res = run_template(tmp_path, {
            **gitlab_env(api, SQUASH), "POLICYENGINE_POLICY": str(policy), "POLICYENGINE_NOW": "2026-11-24T15:00:00Z",
            "POLICYENGINE_EVIDENCE_STORE": url, "POLICYENGINE_SIGNING_KEY": "env:PE_KEY", "PE_KEY": priv.read_text(),
            "POLICYENGINE_EVIDENCE_TOKEN": TOKEN, **cache})
    assert res.returncode == 0, res.stdout + res.stderr
    dotenv = dict(line.split("=", 1) for line in (tmp_path / "project" / "policyengine.env").read_text().splitlines())
    second = GitArchive(url, env={**_env(), "POLICYENGINE_CACHE_DIR": str(tmp_path / "c3")}).catalogue()
    assert second is not None and second.sequence == 2 and dotenv["POLICYENGINE_STORE_HEAD"] == second.sha256
    assert f"policyengine: store head sha256 {second.sha256}" in res.stdout


# -- writers of different chains at once: no update of the catalogue is lost -----------------------


def _concurrently(store_factory: Any, n: int) -> list[Any]:
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> Any:
        return _write(store_factory(), repository=f"acme/svc-{i}")

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


def test_writers_of_different_chains_at_once_lose_no_chain_folder(tmp_path: Path) -> None:
    root = tmp_path / "ev"
    refs = _concurrently(lambda: LocalArchive(root), 8)
    cat = LocalArchive(root).catalogue()
    assert cat is not None and {c.repository for c in cat.chains} == {f"acme/svc-{i}" for i in range(8)}
    assert cat.sha256 in {r.store_head for r in refs}
    assert _verify(str(root), "--head", cat.sha256).returncode == 0


def test_writers_of_different_chains_at_once_lose_no_chain_s3(s3: Any) -> None:
    pytest.importorskip("moto")
    from s3_server import PLAIN_BUCKET

    url = _s3_store(PLAIN_BUCKET, "many").url
    from policyengine.evidence.stores.s3 import S3Archive

    refs = _concurrently(lambda: S3Archive(url), 8)
    cat = S3Archive(url).catalogue()
    assert cat is not None and {c.repository for c in cat.chains} == {f"acme/svc-{i}" for i in range(8)}
    assert cat.sha256 in {r.store_head for r in refs}
    ok = _verify(url, "--head", cat.sha256)
    assert ok.returncode == 0 and "behind" not in ok.stdout, ok.stdout


def test_the_first_catalogue_of_an_older_archive_lists_every_chain(tmp_path: Path) -> None:
    import shutil

    archive = LocalArchive(tmp_path / "ev")
    _two_chains(archive)
    shutil.rmtree(archive.root / "catalogue")  # as written before catalogues existed
    assert archive.catalogue() is None and archive.verify().ok
    ref = _write(archive, repository="acme/other")
    cat = archive.catalogue()
    assert cat is not None and cat.sequence == 1 and cat.sha256 == ref.store_head
    assert {(c.repository, c.environment, c.sequence) for c in cat.chains} == {
        ("acme/shop", "production", 2), ("acme/shop", "staging", 1), ("acme/other", "production", 1)}
