"""Signed statements: sign then verify, and every kind of tampering caught with the check and bundle named."""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("cryptography")
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from test_evidence import CHANGE, flip_byte_in_member, make_file, problems_of, write

from policyengine.errors import UsageError
from policyengine.evidence.format import signing as signing_mod
from policyengine.evidence.stores.folder import LocalArchive
from policyengine.evidence.format.bundle import ATTESTATION
from policyengine.evidence.format.signing import (
    PAYLOAD_TYPE,
    load_public_key,
    load_signing_key,
    pae,
)


def _keypair(folder: Path, name: str = "signing") -> tuple[Path, Path]:
    key = ed25519.Ed25519PrivateKey.generate()
    priv = folder / f"{name}.pem"
    pub = folder / f"{name}.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return _keypair(tmp_path)


@pytest.fixture
def archive(tmp_path: Path) -> LocalArchive:
    return LocalArchive(tmp_path / "archive")


def _members(zip_path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(zip_path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def _rezip(zip_path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(zip_path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def test_pae_is_the_dsse_v1_encoding() -> None:
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_sign_then_verify(archive: LocalArchive, keys: tuple[Path, Path], tmp_path: Path) -> None:
    priv, pub = keys
    key = load_signing_key(str(priv))
    assert "PRIVATE" not in repr(key)
    ref = write(archive, signing_key=key, subjects=[("app.tar.gz", "b" * 64)])
    public = load_public_key(str(pub))

    report = archive.verify(public_key=public)
    assert report.ok, report.problems
    assert report.signatures == {ref.id: "valid"}

    env = json.loads(_members(archive.root / ref.path)[ATTESTATION])
    assert env["payloadType"] == PAYLOAD_TYPE
    assert env["signatures"][0]["keyid"] == public[1]
    statement = json.loads(base64.b64decode(env["payload"]))
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["subject"] == [
        {"name": f"git+acme/shop@{'a' * 40}", "digest": {"gitCommit": "a" * 40}},
        {"name": "app.tar.gz", "digest": {"sha256": "b" * 64}},
    ]
    predicate = statement["predicate"]
    assert statement["predicateType"] == signing_mod.PREDICATE_TYPE
    assert predicate["decision"] == "deny"
    assert predicate["rules"] == [{"id": "two-approvals", "status": "fail"}]
    manifest_bytes = _members(archive.root / ref.path)["manifest.json"]
    assert predicate["manifest"]["sha256"] == hashlib.sha256(manifest_bytes).hexdigest()
    assert predicate["chain"] == {"repository": "acme/shop", "environment": "production", "sequence": 1,
                                  "previous_sha256": None, "previous_id": None}

    # The predicate is documented: the schema validates what we write.
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(__file__).parents[1] / "schemas/attestation-predicate.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(predicate, schema)

    # Another key does not verify it, and says whose key signed.
    _, other_pub = _keypair(tmp_path, "other")
    report = archive.verify(public_key=load_public_key(str(other_pub)))
    # (the store catalogue, signed by the same key, fails too: issue 16)
    assert problems_of(report) == {(ref.id, ATTESTATION, "signature"), ("", None, "catalogue")}
    assert any("not by the given public key" in p.message for p in report.problems)


def test_unsigned_bundles_verify_digests_and_say_unsigned(archive: LocalArchive, keys: tuple[Path, Path]) -> None:
    ref = write(archive)
    report = archive.verify()
    assert report.ok and report.signatures == {ref.id: "unsigned"}
    result = _run(["evidence", "verify", "--archive", str(archive.root)])
    assert result.exit_code == 0
    assert f"UNSIGNED  bundle {ref.id}" in result.output
    # When a signature is required, an unsigned bundle fails.
    report = archive.verify(public_key=load_public_key(str(keys[1])))
    # (the store catalogue, unsigned like the bundle, fails too: issue 16)
    assert problems_of(report) == {(ref.id, ATTESTATION, "signature"), ("", None, "catalogue")}
    assert any("unsigned" in p.message for p in report.problems if p.check == "signature")


@pytest.mark.parametrize(
    "member",
    ["decision.json", "change.json", "policy/policy.yml", "files/src/app.py", "report.html", "manifest.json",
     ATTESTATION],
)
def test_a_flipped_byte_in_any_member_of_a_signed_bundle_is_caught(
    archive: LocalArchive, keys: tuple[Path, Path], tmp_path: Path, member: str
) -> None:
    ws = tmp_path / "ws"
    app = make_file(ws, "src/app.py", b"def main():\n    return 42\n" * 20)
    ref = write(archive, files=[app], signing_key=load_signing_key(str(keys[0])))
    flip_byte_in_member(archive.root / ref.path, member)
    report = archive.verify(public_key=load_public_key(str(keys[1])))
    assert not report.ok
    found = problems_of(report)
    assert (ref.id, None, "bundle-digest") in found
    if member == "manifest.json":
        assert (ref.id, member, "manifest") in found
    elif member == ATTESTATION:
        assert {(ref.id, member, "statement"), (ref.id, member, "signature")} & found
    else:
        assert (ref.id, member, "member-digest") in found


def test_a_forged_decision_with_a_rewritten_manifest_and_index_is_caught_by_signature_and_chain(
    archive: LocalArchive, keys: tuple[Path, Path]
) -> None:
    key = load_signing_key(str(keys[0]))
    forged_ref = write(archive, signing_key=key)
    later = write(archive, signing_key=key)
    zip_path = archive.root / forged_ref.path
    members = _members(zip_path)
    decision = json.loads(members["decision.json"])
    decision["decision"] = "allow"
    members["decision.json"] = json.dumps(decision, indent=2, sort_keys=True).encode()
    manifest = json.loads(members["manifest.json"])
    for entry in manifest["members"]:
        data = members[entry["path"]]
        entry["size"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    members["manifest.json"] = json.dumps(manifest).encode()
    _rezip(zip_path, members)
    # The forger also rewrites the index line, so the bundle digest matches the index again.
    index = archive.root / "index.jsonl"
    lines = [json.loads(line) for line in index.read_text().splitlines()]
    lines[0]["sha256"] = hashlib.sha256(zip_path.read_bytes()).hexdigest()
    lines[0]["decision"] = "allow"
    index.write_text("".join(json.dumps(r) + "\n" for r in lines))

    report = archive.verify(public_key=load_public_key(str(keys[1])))
    found = problems_of(report)
    assert (forged_ref.id, ATTESTATION, "statement") in found  # the signed statement names the old manifest
    assert (later.id, None, "chain") in found  # the next bundle names the original bundle's digest
    statement_problems = [p.message for p in report.problems if p.check == "statement"]
    assert any("manifest digest" in m for m in statement_problems)
    assert any("'deny' but the bundle has 'allow'" in m for m in statement_problems)
    result = _run(["evidence", "verify", "--archive", str(archive.root), "--all", "--public-key", str(keys[1])])
    assert result.exit_code == 1
    assert f"statement     bundle {forged_ref.id} member {ATTESTATION}" in result.output
    assert f"chain         bundle {later.id}" in result.output


def test_a_resigned_forgery_with_another_key_fails_the_signature(
    archive: LocalArchive, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    ref = write(archive, signing_key=load_signing_key(str(keys[0])))
    mallory, _ = _keypair(tmp_path, "mallory")
    members = _members(archive.root / ref.path)
    env = json.loads(members[ATTESTATION])
    statement = json.loads(base64.b64decode(env["payload"]))
    members[ATTESTATION] = json.dumps(signing_mod.envelope(statement, load_signing_key(str(mallory)))).encode()
    _rezip(archive.root / ref.path, members)
    report = archive.verify(public_key=load_public_key(str(keys[1])))
    assert (ref.id, ATTESTATION, "signature") in problems_of(report)


def test_a_signature_over_another_payload_is_invalid(archive: LocalArchive, keys: tuple[Path, Path]) -> None:
    ref = write(archive, signing_key=load_signing_key(str(keys[0])))
    members = _members(archive.root / ref.path)
    env = json.loads(members[ATTESTATION])
    statement = json.loads(base64.b64decode(env["payload"]))
    statement["predicate"]["decision"] = "allow"
    env["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    members[ATTESTATION] = json.dumps(env).encode()
    _rezip(archive.root / ref.path, members)
    report = archive.verify(public_key=load_public_key(str(keys[1])))
    found = problems_of(report)
    assert (ref.id, ATTESTATION, "signature") in found
    assert any("does not match" in p.message for p in report.problems if p.check == "signature")


def test_keys_from_env_and_errors_never_show_the_key(keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    pem = keys[0].read_text()
    monkeypatch.setenv("PE_KEY", pem)
    assert load_signing_key("env:PE_KEY").keyid == load_public_key(str(keys[1]))[1]
    monkeypatch.setenv("PE_BAD", "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ5dGVz\n-----END PRIVATE KEY-----\n")
    with pytest.raises(UsageError) as info:
        load_signing_key("env:PE_BAD")
    assert "c2VjcmV0" not in info.value.message and "PE_BAD" in info.value.message
    with pytest.raises(UsageError, match="is not set"):
        load_signing_key("env:PE_MISSING")
    with pytest.raises(UsageError, match="cannot read"):
        load_signing_key(str(tmp_path / "nope.pem"))
    rsa = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.rsa")
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "rsa.pem").write_bytes(other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(UsageError, match="not Ed25519"):
        load_signing_key(str(tmp_path / "rsa.pem"))


def test_check_signs_with_a_key_from_the_environment(keys: tuple[Path, Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fixtures = Path(__file__).parent / "fixtures" / "acceptance"
    monkeypatch.setenv("POLICYENGINE_SIGNING_KEY", "env:DEPLOY_SIGNING_KEY")
    monkeypatch.setenv("DEPLOY_SIGNING_KEY", keys[0].read_text())
    result = _run(["check", "--policy", str(fixtures / "policy.yml"), "--change", str(fixtures / "change.yml"),
                   "--workspace", str(fixtures / "workspace"), "--now", "2026-11-24T15:00:00Z",
                   "--evidence-dir", str(tmp_path / "ev"), "--subject", "app.tar.gz=sha256:" + "c" * 64])
    assert result.exit_code == 0, result.output
    assert "PRIVATE KEY" not in result.output
    verified = _run(["evidence", "verify", "--archive", str(tmp_path / "ev"), "--all", "--public-key", str(keys[1])])
    assert verified.exit_code == 0, verified.output
    assert "1 signed, signature valid" in verified.output
    bad = _run(["check", "--policy", str(fixtures / "policy.yml"), "--change", str(fixtures / "change.yml"),
                "--evidence-dir", str(tmp_path / "ev"), "--subject", "app.tar.gz=md5:abc"])
    assert bad.exit_code == 2 and "NAME=sha256:HEX" in bad.output


def _run(args: list[str]) -> Any:
    """Run the real command line (its error handling and exit codes included)."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "policyengine", *args], capture_output=True, text=True,
                            timeout=120, check=False)
    result.exit_code = result.returncode  # type: ignore[attr-defined]
    result.output = result.stdout + result.stderr  # type: ignore[attr-defined]
    return result


# -- redaction ----------------------------------------------------------------------------------


def test_tokens_are_redacted_in_every_member_with_both_digests_recorded(archive: LocalArchive, tmp_path: Path) -> None:
    ghp = "ghp_" + "A1b2" * 9
    log = f"step 1\nexport GITHUB_TOKEN={ghp}\ncurl -H 'Authorization: Bearer eyJhbGciOi.abc-def_123'\n".encode()
    report = make_file(tmp_path / "ws", "reports/build.log", log * 3)
    change = {**CHANGE, "pipeline": {"url": "https://ci.example.com/?token=glpat-" + "x" * 20}}
    ref = write(archive, files=[report], change=change,
                extra_members={"raw/pulls.json": b'{"head": {"token": "AKIAABCDEFGHIJKLMNOP"}}'})
    members = _members(archive.root / ref.path)
    for name, data in members.items():
        for secret in (ghp.encode(), b"eyJhbGciOi", b"glpat-xxxx", b"AKIAABCDEFGHIJKLMNOP"):
            assert secret not in data, (name, secret)
    assert b"'Authorization: [REDACTED]'" in members["files/reports/build.log"]
    manifest = json.loads(members["manifest.json"])
    entry = next(e for e in manifest["members"] if e["path"] == "files/reports/build.log")
    assert entry["sha256"] == hashlib.sha256(members["files/reports/build.log"]).hexdigest()
    assert entry["redacted"] == {"count": 6, "original_size": len(log) * 3, "original_sha256": report.sha256}
    assert archive.verify().ok


def test_the_values_of_the_token_variables_are_redacted_whatever_their_shape(archive: LocalArchive,
                                                                              tmp_path: Path) -> None:
    from policyengine.redact import EvidenceRedactor

    secret = "0dd-shaped-s3cret"  # noqa: S105 - a fake token
    big = make_file(tmp_path / "ws", "logs/deploy.log", (b"x" * 100 + b" ok\n") * 20000 + secret.encode() + b"\n")
    redactor = EvidenceRedactor.from_env({"GITLAB_TOKEN": secret, "CI": "true"})
    ref = write(archive, files=[big], extra_members={"raw/mr.json": f'{{"t": "{secret}"}}'.encode()},
                redactor=redactor)
    members = _members(archive.root / ref.path)
    assert all(secret.encode() not in data for data in members.values())
    assert members["files/logs/deploy.log"].endswith(b"[REDACTED]\n")
    assert archive.verify().ok


def test_binary_members_are_stored_as_they_are(archive: LocalArchive, tmp_path: Path) -> None:
    blob = b"\0\x01PK" + b"AKIAABCDEFGHIJKLMNOP" + bytes(range(256))
    f = make_file(tmp_path / "ws", "dist/app.bin", blob)
    ref = write(archive, files=[f])
    assert _members(archive.root / ref.path)["files/dist/app.bin"] == blob


@pytest.mark.parametrize("sample", [
    "ghp_" + "a1B2" * 9, "gho_" + "Z" * 36, "ghs_" + "9" * 36, "ghu_" + "x" * 36, "ghr_" + "y" * 36,
    "github_pat_" + "A_" * 20, *(f"{p}-" + "k" * 20 for p in ("glpat", "glcbt", "gldt", "glptt", "glrt", "gloas",
                                                           "glsoat", "glft", "glimt", "glagent", "glwt")),
    "AKIAABCDEFGHIJKLMNOP", "ASIAABCDEFGHIJKLMNOP", "Bearer abc.def-ghi_123", "bearer abcdefgh12345",
    "BEARER ABCDEFGH12345", "Authorization: token abcdefgh", "AUTHORIZATION=basic Zm9vOmJhcg==",
    '"authorization": "xyz12345678"', "PRIVATE-TOKEN: abcdefghij", "private-token=abcdefghij",
    "JOB-TOKEN: abcdefghij", "X-API-Key: abcdefghij", "x-api-key=abcdefghij",
])
def test_the_prefilter_never_hides_what_the_providers_redactor_removes(sample: str) -> None:
    from policyengine.redact import EvidenceRedactor, Redactor

    data = ("x" * 5000 + " log line with " + sample + " and more\n").encode()
    expected = Redactor().bytes(data)
    assert expected != data, "the sample is not a secret for the providers' redactor"
    stored, count = EvidenceRedactor().redact(data)
    assert (stored, count > 0) == (expected, True)
    # Streamed in small chunks, cut anywhere, on one long line or among many short ones: the same result.
    for text in (data, b"short line\n" * 700 + data + b"tail line\n" * 300):
        stream = EvidenceRedactor().stream(text[i:i + 97] for i in range(0, len(text), 97))
        assert b"".join(stream) == Redactor().bytes(text) and stream.count > 0
