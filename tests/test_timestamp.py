"""An independent clock: RFC 3161 timestamps from a real TSA on loopback (``openssl ts -reply``),
checked offline by ``evidence verify``; and time that only moves forward along a chain."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("cryptography")
pytest.importorskip("rfc3161_client")
if shutil.which("openssl") is None:  # pragma: no cover - the TSA is openssl's
    pytest.skip("the loopback TSA needs the openssl command", allow_module_level=True)

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from test_evidence import CHANGE, write
from tsa_server import Tsa, TsaServer, make_tsa

from policyengine.evidence.stores.folder import LocalArchive
from policyengine.evidence.format.bundle import ATTESTATION, MANIFEST, TIMESTAMP
from policyengine.evidence.format.signing import load_public_key, load_signing_key
from policyengine.evidence.format.timestamp import StampCheck, Timestamper, load_roots, stamping

FIXTURES = Path(__file__).parent / "fixtures" / "acceptance"
def _now() -> datetime:
    """The real clock now (the TSA's clock is the real one): read per use, never at import, since
    a pytest-xdist worker may import this module minutes before it runs a test."""
    return datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture(scope="session")
def tsa(tmp_path_factory: pytest.TempPathFactory) -> Tsa:
    return make_tsa(tmp_path_factory.mktemp("tsa"))


@pytest.fixture(scope="session")
def other_tsa(tmp_path_factory: pytest.TempPathFactory) -> Tsa:
    return make_tsa(tmp_path_factory.mktemp("other-tsa"), name="Other TSA")


@pytest.fixture
def server(tsa: Tsa) -> Iterator[TsaServer]:
    with TsaServer(tsa) as running:
        yield running


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    key = ed25519.Ed25519PrivateKey.generate()
    priv, pub = tmp_path / "signing.pem", tmp_path / "signing.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def _dead_url() -> str:
    """A loopback URL nobody answers (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/tsr"


class _AnyTime(Timestamper):
    """What a key holder can do with the Python API: take a genuine token whatever created_at says."""

    def stamp(self, signature: bytes, near: datetime | None = None) -> bytes:
        return super().stamp(signature, None)


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def _rezip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _time_problems(report: Any) -> list[tuple[str, str | None, str]]:
    return [(p.bundle_id, p.member, p.message) for p in report.problems if p.check == "time"]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "policyengine", *args], capture_output=True, text=True,
                          timeout=180, check=False, env={**os.environ, **(env or {})})


def _check_args(evidence: Path, *more: str) -> list[str]:
    return ["check", "--policy", str(FIXTURES / "policy.yml"), "--change", str(FIXTURES / "change.yml"),
            "--workspace", str(FIXTURES / "workspace"), "--now", "2026-11-24T15:00:00Z",
            "--evidence-dir", str(evidence), *more]


# -- writing --------------------------------------------------------------------------------------


def test_check_stamps_each_bundle_and_verify_checks_every_token_with_no_network(
        tsa: Tsa, keys: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    evidence = tmp_path / "ev"
    with TsaServer(tsa) as server:
        for _ in range(3):
            done = _cli(*_check_args(evidence, "--signing-key", str(keys[0]), "--timestamp-url", _dead_url(),
                                     "--timestamp-url", server.url, "--tsa-cert", str(tsa.root)))
            assert done.returncode == 0, done.stdout + done.stderr
        assert server.requests == 3  # the first authority did not answer: the second stamped each bundle
    bundles = sorted((evidence / "bundles").rglob("*.zip"))
    assert len(bundles) == 3
    for path in bundles:
        members = _members(path)
        assert TIMESTAMP in members
        manifest = json.loads(members[MANIFEST])
        assert manifest["schema_version"] == 3 and manifest["timestamp"] == {"token": TIMESTAMP}
        assert TIMESTAMP not in {m["path"] for m in manifest["members"]}  # beside the manifest, not in it

    # The TSA is gone, and no socket may be opened: every token is checked offline.
    def no_network(*_: Any, **__: Any) -> Any:
        raise AssertionError("evidence verify opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    from policyengine.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["evidence", "verify", "--archive", str(evidence), "--all", "--public-key", str(keys[1]),
              "--tsa-cert", str(tsa.root), "--require-timestamps"])
    out = capsys.readouterr().out
    assert exited.value.code == 0, out
    assert "timestamps: 3 checked against --tsa-cert" in out


def test_a_token_from_an_authority_that_does_not_chain_to_the_given_root_fails_verify(
        tsa: Tsa, other_tsa: Tsa, server: TsaServer, keys: tuple[Path, Path], tmp_path: Path) -> None:
    archive = LocalArchive(tmp_path / "archive")
    key = load_signing_key(str(keys[0]))
    with stamping(Timestamper(urls=(server.url,), roots=load_roots(str(tsa.root), what="test"))):
        ref = write(archive, signing_key=key, created_at=_now())
    good = archive.verify([], load_public_key(str(keys[1])), stamps=StampCheck(load_roots(str(tsa.root), what="t")))
    assert good.ok, good.problems
    assert good.timestamps == {ref.id: "valid"}
    bad = archive.verify([], load_public_key(str(keys[1])),
                         stamps=StampCheck(load_roots(str(other_tsa.root), what="t")))
    assert [(b, m) for b, m, _ in _time_problems(bad)] == [(ref.id, TIMESTAMP)]
    assert "does not verify against the given TSA certificate" in _time_problems(bad)[0][2]


def test_a_reply_that_does_not_chain_to_the_pinned_certificate_is_refused_at_check_time(
        tsa: Tsa, other_tsa: Tsa, server: TsaServer, keys: tuple[Path, Path], tmp_path: Path) -> None:
    policy = tmp_path / "policy.yml"
    policy.write_text((FIXTURES / "policy.yml").read_text() + (
        f"evidence:\n  timestamp:\n    url: {server.url}\n    required: true\n    cert: {other_tsa.root}\n"))
    evidence = tmp_path / "ev"
    done = _cli("check", "--policy", str(policy), "--change", str(FIXTURES / "change.yml"),
                "--workspace", str(FIXTURES / "workspace"), "--now", "2026-11-24T15:00:00Z",
                "--evidence-dir", str(evidence), "--signing-key", str(keys[0]))
    assert done.returncode == 3, done.stdout + done.stderr
    assert "the evidence could not be recorded" in done.stdout
    assert "does not verify against the pinned TSA certificate" in done.stdout
    assert not list((evidence / "bundles").rglob("*.zip")) if (evidence / "bundles").exists() else True


def test_a_required_timestamp_no_authority_gives_denies_and_an_optional_one_is_recorded_missing(
        tsa: Tsa, keys: tuple[Path, Path], tmp_path: Path) -> None:
    dead = _dead_url()
    for required, code in ((True, 3), (False, 0)):
        policy = tmp_path / f"policy-{required}.yml"
        policy.write_text((FIXTURES / "policy.yml").read_text() + (
            f"evidence:\n  timestamp:\n    url: [{dead}]\n    required: {str(required).lower()}\n"
            f"    cert: {tsa.root}\n"))
        evidence = tmp_path / f"ev-{required}"
        done = _cli("check", "--policy", str(policy), "--change", str(FIXTURES / "change.yml"),
                    "--workspace", str(FIXTURES / "workspace"), "--now", "2026-11-24T15:00:00Z",
                    "--evidence-dir", str(evidence), "--signing-key", str(keys[0]))
        assert done.returncode == code, done.stdout + done.stderr
        if required:
            assert "the evidence could not be recorded: no timestamp authority gave a checked timestamp" in done.stdout
            continue
        (bundle,) = (evidence / "bundles").rglob("*.zip")
        members = _members(bundle)
        assert TIMESTAMP not in members
        manifest = json.loads(members[MANIFEST])
        assert manifest["timestamp"]["token"] is None
        assert dead in manifest["timestamp"]["reason"]  # the bundle says why it has no token
        plain = _cli("evidence", "verify", "--archive", str(evidence), "--public-key", str(keys[1]))
        assert plain.returncode == 0, plain.stdout
        strict = _cli("evidence", "verify", "--archive", str(evidence), "--public-key", str(keys[1]),
                      "--require-timestamps")
        assert strict.returncode == 1
        assert "FAIL  time" in strict.stdout and "carries no timestamp token (it records why:" in strict.stdout


def test_timestamp_url_needs_a_pinned_certificate(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    done = _cli(*_check_args(tmp_path / "ev", "--signing-key", str(keys[0]), "--timestamp-url",
                             "http://127.0.0.1:9/tsr"))
    assert done.returncode == 2 and "--tsa-cert" in done.stderr
    done = _cli(*_check_args(tmp_path / "ev", "--timestamp-url", "file:///etc/passwd", "--tsa-cert", "x.pem"))
    assert done.returncode == 2 and "is not an http(s) URL" in done.stderr


def test_a_compare_and_swap_retry_that_signs_again_stamps_again(
        tsa: Tsa, server: TsaServer, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The S3 store's conditional write loses once (another writer moved the head): the bundle is
    rebuilt on the new head, signed again, and so stamped again; the kept token is the new one's."""
    import uuid

    import s3_server
    from s3_server import PLAIN_BUCKET, start

    from policyengine.evidence.stores.s3 import S3Archive

    moto, s3 = start()
    try:
        for name, value in s3.env.items():
            monkeypatch.setenv(name, value)
        store = S3Archive(f"s3://{PLAIN_BUCKET}/ts-{uuid.uuid4().hex[:8]}")
        key = load_signing_key(str(keys[0]))
        roots = load_roots(str(tsa.root), what="test")
        with stamping(Timestamper(urls=(server.url,), roots=roots)):
            write(store, signing_key=key, created_at=_now())
            real = S3Archive._settled_head
            calls = {"n": 0}

            def stale(self: S3Archive, head_key: str, retain: Any) -> Any:
                calls["n"] += 1
                return (None, None) if calls["n"] == 1 else real(self, head_key, retain)

            monkeypatch.setattr(S3Archive, "_settled_head", stale)
            monkeypatch.setattr(S3Archive, "_legacy_head", lambda self, key, retain: None)
            before = server.requests
            write(store, signing_key=key, created_at=_now())
        assert calls["n"] == 2  # one lost race, one retry
        assert server.requests - before == 2  # each signed statement got its own token
        monkeypatch.undo()
        for name, value in s3.env.items():
            monkeypatch.setenv(name, value)
        report = store.verify([], load_public_key(str(keys[1])), stamps=StampCheck(roots, require=True))
        assert report.ok, report.problems
        assert set(report.timestamps.values()) == {"valid"}
    finally:
        moto.stop()
    assert s3_server  # the module is the test's S3 server


# -- findings: backdated bundles, time going backwards, tokens over other bytes ----------------------


def test_a_backdated_bundle_is_flagged_without_a_token(keys: tuple[Path, Path], tmp_path: Path) -> None:
    """Written with the signing key through the Python API, two months back, after December's records."""
    archive = LocalArchive(tmp_path / "archive")
    key = load_signing_key(str(keys[0]))
    december = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
    write(archive, signing_key=key, created_at=december)
    write(archive, signing_key=key, created_at=december + timedelta(days=3))
    forged = write(archive, signing_key=key, created_at=december - timedelta(days=60))
    report = archive.verify([], load_public_key(str(keys[1])))
    found = _time_problems(report)
    assert [(b, m) for b, m, _ in found] == [(forged.id, None)]
    assert "time went backwards" in found[0][2] and "60 days before" not in found[0][2]
    assert "63 days before" in found[0][2]


def test_concurrent_writers_within_ten_minutes_are_not_flagged(keys: tuple[Path, Path], tmp_path: Path) -> None:
    archive = LocalArchive(tmp_path / "archive")
    key = load_signing_key(str(keys[0]))
    at = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
    write(archive, signing_key=key, created_at=at)
    write(archive, signing_key=key, created_at=at - timedelta(minutes=9))  # fixed before its retries
    late = write(archive, signing_key=key, created_at=at - timedelta(minutes=11))
    assert [b for b, _, _ in _time_problems(archive.verify([], load_public_key(str(keys[1]))))] == [late.id]


def test_a_backdated_bundle_is_flagged_with_a_tsa_token(
        tsa: Tsa, server: TsaServer, keys: tuple[Path, Path], tmp_path: Path) -> None:
    """Alone in its chain, so only the token can tell: it was made today, it claims two months ago."""
    archive = LocalArchive(tmp_path / "archive")
    roots = load_roots(str(tsa.root), what="test")
    with stamping(_AnyTime(urls=(server.url,), roots=roots)):
        forged = write(archive, signing_key=load_signing_key(str(keys[0])), created_at=_now() - timedelta(days=60))
    for stamps in (StampCheck(roots), StampCheck()):  # with or without the auditor's root
        found = _time_problems(archive.verify([], load_public_key(str(keys[1])), stamps=stamps))
        assert [(b, m) for b, m, _ in found] == [(forged.id, TIMESTAMP)]
        assert "before the timestamp authority's time" in found[0][2] and "backdated" in found[0][2]


def test_a_tsa_token_over_other_bytes_is_flagged(
        tsa: Tsa, server: TsaServer, keys: tuple[Path, Path], tmp_path: Path) -> None:
    archive = LocalArchive(tmp_path / "archive")
    roots = load_roots(str(tsa.root), what="test")
    key = load_signing_key(str(keys[0]))
    with stamping(Timestamper(urls=(server.url,), roots=roots)):
        first = write(archive, signing_key=key, created_at=_now())
        second = write(archive, signing_key=key, created_at=_now())
    # A genuine token of this TSA, but over the first bundle's signature, put into the second.
    path_a, path_b = archive.root / first.path, archive.root / second.path
    members = _members(path_b)
    members[TIMESTAMP] = _members(path_a)[TIMESTAMP]
    _rezip(path_b, members)
    report = archive.verify([second.id], load_public_key(str(keys[1])), stamps=StampCheck(roots))
    found = _time_problems(report)
    assert [(b, m) for b, m, _ in found] == [(second.id, TIMESTAMP)]
    assert "stamps other bytes than this bundle's statement signature" in found[0][2]


def test_a_removed_token_and_a_token_in_an_older_schema_are_flagged(
        tsa: Tsa, server: TsaServer, keys: tuple[Path, Path], tmp_path: Path) -> None:
    archive = LocalArchive(tmp_path / "archive")
    roots = load_roots(str(tsa.root), what="test")
    key = load_signing_key(str(keys[0]))
    with stamping(Timestamper(urls=(server.url,), roots=roots)):
        stripped = write(archive, signing_key=key, created_at=_now())
        token = _members(archive.root / stripped.path)[TIMESTAMP]
    members = _members(archive.root / stripped.path)
    del members[TIMESTAMP]
    _rezip(archive.root / stripped.path, members)
    from policyengine.evidence.format import bundle as bundle_module

    with pytest.MonkeyPatch.context() as patch:  # a bundle as a release before schema 3 wrote it
        patch.setattr(bundle_module, "SCHEMA_VERSION", 2)
        older = write(archive, signing_key=key, created_at=_now())
    assert json.loads(_members(archive.root / older.path)[MANIFEST])["schema_version"] == 2
    members = _members(archive.root / older.path)
    members[TIMESTAMP] = token
    _rezip(archive.root / older.path, members)
    found = _time_problems(archive.verify([], load_public_key(str(keys[1])), stamps=StampCheck(roots)))
    messages: dict[str, str] = {}
    for b, _, m in found:
        messages[b] = messages.get(b, "") + m + "\n"
    assert "the token was removed" in messages[stripped.id]
    assert "only schema 3 bundles hold" in messages[older.id]


def test_an_unsigned_bundle_that_asked_for_a_timestamp_says_why_it_has_none(
        tsa: Tsa, server: TsaServer, tmp_path: Path) -> None:
    archive = LocalArchive(tmp_path / "archive")
    with stamping(Timestamper(urls=(server.url,), roots=load_roots(str(tsa.root), what="test"))):
        ref = write(archive, created_at=_now())
    manifest = json.loads(_members(archive.root / ref.path)[MANIFEST])
    assert manifest["timestamp"]["token"] is None and "unsigned" in manifest["timestamp"]["reason"]
    assert server.requests == 0
    with pytest.raises(Exception, match="a timestamp is required, but the statement is unsigned"), \
            stamping(Timestamper(urls=(server.url,), roots=(), required=True)):
        write(archive, created_at=_now())


def test_the_token_stamps_the_envelope_signature(tsa: Tsa, server: TsaServer, keys: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    """As Sigstore stamps a signature: the imprint is SHA-256 of the DSSE signature bytes."""
    import hashlib

    from rfc3161_client import decode_timestamp_response

    archive = LocalArchive(tmp_path / "archive")
    with stamping(Timestamper(urls=(server.url,), roots=load_roots(str(tsa.root), what="test"))):
        ref = write(archive, signing_key=load_signing_key(str(keys[0])), created_at=_now())
    members = _members(archive.root / ref.path)
    signature = base64.b64decode(json.loads(members[ATTESTATION])["signatures"][0]["sig"])
    info = decode_timestamp_response(members[TIMESTAMP]).tst_info
    assert info.message_imprint.message == hashlib.sha256(signature).digest()
    assert abs((info.gen_time.replace(tzinfo=timezone.utc) - _now()).total_seconds()) < 300
    assert CHANGE["repository"] in json.loads(members[MANIFEST])["chain"]["repository"]


def test_a_rejected_push_to_the_git_store_is_stamped_again(
        tsa: Tsa, server: TsaServer, keys: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The git store's compare-and-swap: a rival lands first, the bundle is rebuilt, re-signed and re-stamped."""
    import os

    from test_evidence import POLICY

    from policyengine.evidence.stores import git as gitstore
    from policyengine.evidence.stores.git import GitArchive

    remote = tmp_path / "evidence.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(remote)], check=True, timeout=60)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLICYENGINE_", "GIT_"))}
    env["POLICYENGINE_CACHE_DIR"] = str(tmp_path / "cache")
    url = f"git+file://{remote}#refs/heads/evidence"
    key = load_signing_key(str(keys[0]))
    roots = load_roots(str(tsa.root), what="test")
    kwargs: dict[str, Any] = {"decision": {"decision": "allow", "rules": []}, "change": CHANGE,
                              "policy_filename": "p.yml", "policy_bytes": POLICY, "files": [], "signing_key": key}
    real_push = gitstore.GitArchive._push
    pushes: list[str | None] = []

    def push_after_a_rival(self: GitArchive, g: Any, new: str, old: str | None) -> tuple[bool, str]:
        pushes.append(old)
        if len(pushes) == 1:  # a rival (not stamping) lands first
            with stamping(None):
                GitArchive(url, env=env).write_bundle(**kwargs)
        return real_push(self, g, new, old)

    with stamping(Timestamper(urls=(server.url,), roots=roots)):
        GitArchive(url, env=env).write_bundle(**kwargs)
        monkeypatch.setattr(gitstore.GitArchive, "_push", push_after_a_rival)
        before = server.requests
        GitArchive(url, env=env).write_bundle(**kwargs)
    assert len(pushes) == 3  # ours, the rival's, ours again on the new head
    assert server.requests - before == 2
    monkeypatch.undo()
    report = GitArchive(url, env=env).verify([], load_public_key(str(keys[1])), stamps=StampCheck(roots))
    assert report.ok, report.problems
    assert sorted(report.timestamps.values()) == ["none", "valid", "valid"]


def test_an_audit_export_checks_each_bundles_token(
        tsa: Tsa, server: TsaServer, keys: tuple[Path, Path], tmp_path: Path) -> None:
    archive = LocalArchive(tmp_path / "archive")
    roots = load_roots(str(tsa.root), what="test")
    key = load_signing_key(str(keys[0]))
    with stamping(Timestamper(urls=(server.url,), roots=roots)):
        for _ in range(2):
            write(archive, signing_key=key, created_at=_now())
    day = _now().date()
    out = tmp_path / "export.zip"
    done = _cli("audit", "export", "--archive", str(archive.root), "--since", str(day - timedelta(days=1)),
                "--until", str(day + timedelta(days=1)), "--sample", "2", "--seed", "1", "-o", str(out), "--signing-key", str(keys[0]))
    assert done.returncode == 0, done.stdout + done.stderr
    ok = _cli("evidence", "verify", "--archive", str(out), "--public-key", str(keys[1]), "--tsa-cert", str(tsa.root),
              "--require-timestamps")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    wrong = _cli("evidence", "verify", "--archive", str(out), "--tsa-cert", str(make_tsa(tmp_path / "x").root))
    assert wrong.returncode == 1
    assert sum("FAIL" in line and "time" in line and "timestamp.tsr" in line
               for line in wrong.stdout.splitlines()) == 2, wrong.stdout


def test_records_appended_after_the_gate_are_stamped_too(tsa: Tsa, server: TsaServer, keys: tuple[Path, Path],
                                        tmp_path: Path) -> None:
    """A record appended after the gate (outcome, review, emergency approval) is a bundle with a
    statement of its own: --timestamp-url stamps it, and --require-timestamps then holds."""
    archive = LocalArchive(tmp_path / "archive")
    evaluation = write(archive, signing_key=load_signing_key(str(keys[0])), created_at=_now(),
                       decision={"decision": "allow", "rules": []})
    done = _cli("evidence", "record-outcome", "--archive", str(archive.root), evaluation.id, "--by", "dana",
                "--status", "deployed", "--signing-key", str(keys[0]), "--timestamp-url", server.url,
                "--tsa-cert", str(tsa.root))
    assert done.returncode == 0, done.stdout + done.stderr
    assert server.requests == 1
    report = archive.verify([], load_public_key(str(keys[1])), stamps=StampCheck(load_roots(str(tsa.root), what="t")))
    assert report.ok, report.problems
    assert sorted(report.timestamps.values()) == ["none", "valid"]


def test_tokens_of_public_authorities_are_checked_offline(corpus: Path) -> None:
    """Real replies (Sigstore's staging TSA: ECDSA, SHA-256; IdenTrust: RSA, SHA-512 imprint, a DER
    root, a leaf that has expired since): checked at the token's time, with no network."""
    from cryptography import x509

    from policyengine.evidence.format.timestamp import check_token

    folder = corpus / "rfc3161"
    sigstage_root = x509.load_pem_x509_certificates((folder / "rfc3161-client__sigstage__ts_chain.pem").read_bytes())[-1]
    good = (folder / "rfc3161-client__sigstage__response-sha256.tsr").read_bytes()
    assert check_token(good, b"hello", [sigstage_root]).state == "valid"
    assert check_token(good, b"hello", []).state == "unchecked"
    assert "other bytes" in (check_token(good, b"hellO", [sigstage_root]).problem or "")
    altered = (folder / "rfc3161-client__sigstage__response-invalid-signature.tsr").read_bytes()
    assert check_token(altered, b"hello", [sigstage_root]).state == "invalid"
    identrust = load_roots(str(folder / "rfc3161-client__identrust__ts_chain.pem"), what="test")
    found = check_token((folder / "rfc3161-client__identrust__issue-104.tsr").read_bytes(), b"hello", identrust)
    assert found.state == "valid" and found.gen_time == datetime(2025, 3, 11, 8, 52, 8, tzinfo=timezone.utc)
    assert check_token((folder / "rfc3161-client__identrust__issue-104.tsr").read_bytes(), b"hello",
                       [sigstage_root]).state == "invalid"
    assert check_token(b"not a token", b"hello", [sigstage_root]).state == "invalid"


def test_policy_diff_names_a_dropped_or_relaxed_timestamp_as_weaker() -> None:
    """`extends` and `policy diff` refuse what weakens: dropping the timestamp, or its `required`."""
    from policyengine.language.policydiff import STRONGER, UNDECIDED, WEAKER, diff

    def policy(timestamp: dict[str, Any] | None) -> dict[str, Any]:
        evidence: dict[str, Any] = {"retention": "400d"}
        if timestamp is not None:
            evidence["timestamp"] = timestamp
        return {"version": 1, "name": "p", "rules": [], "evidence": evidence}

    required = {"url": "http://tsa.example/tsr", "required": True, "cert": "root.pem"}
    optional = {**required, "required": False}

    def direction(old: Any, new: Any) -> list[str]:
        return [f.direction for f in diff(policy(old), policy(new)) if f.path == "evidence.timestamp"]

    assert direction(required, None) == [WEAKER]
    assert direction(required, optional) == [WEAKER]
    assert direction(None, optional) == [STRONGER]
    assert direction(optional, required) == [STRONGER]
    assert direction(required, {**required, "url": "http://mine.example/tsr"}) == [UNDECIDED]
    assert direction(required, required) == []


def test_an_authority_that_answers_garbage_is_one_that_did_not_answer(tsa: Tsa, server: TsaServer) -> None:
    """A broken status line, a 200 with junk, or an HTTP error: each is named, the next authority is asked."""
    import threading

    from policyengine.errors import EvidenceError

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)

    def serve() -> None:
        for answer in (b"NOT HTTP\r\n\r\n", b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\njunk",
                       b"HTTP/1.0 503 Busy\r\nContent-Length: 0\r\n\r\n") * 2:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    junk = f"http://127.0.0.1:{listener.getsockname()[1]}/tsr"
    roots = load_roots(str(tsa.root), what="test")
    with pytest.raises(EvidenceError) as failed:
        Timestamper(urls=(junk, junk, junk), roots=roots).stamp(b"signature")
    message = failed.value.message
    assert message.count(junk) == 3 and "HTTP 503" in message and "does not verify" in message
    token = Timestamper(urls=(junk, junk, junk, server.url), roots=roots).stamp(b"signature")
    assert token  # the first authority that answers properly is used
    listener.close()


def test_a_failed_notification_and_a_failed_witness_are_stamped_like_their_bundle(
        tsa: Tsa, server: TsaServer, keys: tuple[Path, Path], tmp_path: Path) -> None:
    """The records the gate and the witness step write about a failure carry the authority's time
    too: a failure recorded late, or backdated, would otherwise rest on the writer's word."""
    evidence = tmp_path / "ev"
    done = _cli(*_check_args(evidence, "--signing-key", str(keys[0]), "--timestamp-url", server.url,
                             "--tsa-cert", str(tsa.root), "--notify", "env:DEAD_HOOK"),
                env={"DEAD_HOOK": _dead_url()})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "notify: FAILED" in done.stdout + done.stderr
    archive = LocalArchive(evidence)
    records, _ = archive.read_index()
    evaluation = next(r for r in records if r.get("kind", "evaluation") == "evaluation")
    # The witness: required by nobody, no token: off, nothing written. A refused platform: recorded.
    done = _cli("evidence", "witness", "--archive", str(evidence), evaluation["id"], "--provider", "github",
                "--signing-key", str(keys[0]), "--timestamp-url", server.url, "--tsa-cert", str(tsa.root),
                env={"POLICYENGINE_WITNESS_TOKEN": "ghs_" + "W" * 36, "GITHUB_API_URL": _dead_url(),
                     "POLICYENGINE_HTTP_RETRIES": "0"})
    assert done.returncode == 0 and "witness: FAILED" in done.stdout, done.stdout + done.stderr
    failures = [r for r in archive.read_index()[0] if r.get("kind") == "notification-failure"]
    assert len(failures) == 2
    for record in failures:
        with archive.open_bundle(record) as fh, zipfile.ZipFile(fh) as zf:
            assert TIMESTAMP in zf.namelist(), record
    report = archive.verify([], load_public_key(str(keys[1])),
                            stamps=StampCheck(load_roots(str(tsa.root), what="t"), require=True))
    assert report.ok, report.problems
