"""Outcomes and reviews: records appended after the gate, linked to the evaluation, verifiable.

Every evaluation bundle stays byte for byte as written; what happened later (deployed, failed,
rolled back, not deployed) and the post-implementation review are appended to the same chain as
records of their own, signed like bundles, and ``evidence verify`` proves they name a real
evaluation of their chain.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers import HEAD, OLD, change

from policyengine.errors import UsageError
from policyengine.evidence.stores.folder import LocalArchive
from policyengine.evidence.format.bundle import BundleWriter
from policyengine.evidence.format.records import (
    RECORD,
    RECORD_PREDICATE_TYPE,
    build_record_statement,
    is_deployment,
    latest_deploy,
    record_bytes,
    resolve_actor,
    reviewer_conflicts,
)
from policyengine.evidence.format.signing import SigningKey, load_public_key, load_signing_key
from policyengine.evidence.stores.base import BundleRef, EvidenceStore, Job

pytest.importorskip("cryptography")
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: E402

NOW = datetime.now(timezone.utc).replace(microsecond=0)
EARLIER = NOW - timedelta(hours=2)


def keypair(folder: Path, name: str = "signing") -> tuple[Path, Path]:
    key = ed25519.Ed25519PrivateKey.generate()
    priv, pub = folder / f"{name}.pem", folder / f"{name}.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return keypair(tmp_path)


@pytest.fixture
def archive(tmp_path: Path) -> LocalArchive:
    return LocalArchive(tmp_path / "archive")


def evaluate(store: EvidenceStore, *, decision: str = "allow", key: SigningKey | None = None,
             created_at: datetime = EARLIER, **change_over: Any) -> BundleRef:
    """An evaluation bundle, as `check` writes one."""
    doc: dict[str, Any] = {"decision": decision, "evaluated_at": created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                           "rules": [], "advisory": False}
    return store.write_bundle(decision=doc, change=change(**change_over), policy_filename="policy.yml",
                              policy_bytes=b"name: prod\nrules: []\n", files=[], created_at=created_at,
                              signing_key=key)


def cli(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("POLICYENGINE_", "GITHUB_", "GITLAB_", "CI_")) and k not in ("CI",)}
    base.setdefault("USER", "tester")
    return subprocess.run([sys.executable, "-m", "policyengine", *args], capture_output=True, text=True,
                          timeout=300, check=False, env={**base, **(env or {})})


def index_lines(store: LocalArchive) -> list[dict[str, Any]]:
    return [json.loads(line) for line in store.index_path.read_text().splitlines()]


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def rezip(path: Path, content: Mapping[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in content.items():
            zf.writestr(name, data)


def rewrite_index(store: LocalArchive, bundle_id: str, **fields: Any) -> None:
    lines = index_lines(store)
    for line in lines:
        if line["id"] == bundle_id:
            line.update(fields)
            for k in [k for k, v in fields.items() if v is ...]:
                del line[k]
    store.index_path.write_text("".join(json.dumps(x, sort_keys=True) + "\n" for x in lines))


def checks(report: Any, bundle_id: str) -> set[str]:
    return {p.check for p in report.problems if p.bundle_id == bundle_id}


# -- one appended record each, linked and verifiable; nothing edited ------------------------------


def test_an_outcome_and_a_review_are_appended_linked_signed_and_the_evaluation_is_never_edited(
        archive: LocalArchive, keys: tuple[Path, Path]) -> None:
    key = load_signing_key(str(keys[0]))
    ref = evaluate(archive, key=key)
    bundle = archive.root / ref.path
    before_bytes, before_index = bundle.read_bytes(), archive.index_path.read_text()

    root = str(archive.root)
    out = cli("evidence", "record-outcome", "--archive", root, ref.id, "--status", "deployed", "--by", "dana",
              "--note", "shipped", "--signing-key", str(keys[0]))
    assert out.returncode == 0, out.stderr
    out = cli("evidence", "review", "--archive", root, ref.id, "--by", "erin", "--result", "ok", "--note",
              "refund errors back to baseline", "--signing-key", str(keys[0]))
    assert out.returncode == 0, out.stderr

    assert bundle.read_bytes() == before_bytes  # the evaluation's bytes are unchanged
    assert archive.index_path.read_text().startswith(before_index)  # earlier lines untouched: only appended
    lines = index_lines(archive)
    assert [line.get("kind") for line in lines] == [None, "outcome", "review"]
    outcome, review = lines[1], lines[2]
    for rec, value in ((outcome, "deployed"), (review, "ok")):
        assert rec["about_id"] == ref.id and rec["about_sha256"] == ref.sha256
        assert rec["decision"] == value and rec["policy_sha256"] is None
        assert (rec["repository"], rec["environment"], rec["commit"]) == ("acme/payments", "production", HEAD)
        assert rec["signed_by"] == key.keyid
    # Same chain: each record follows the bundle before it.
    assert [line["sequence"] for line in lines] == [1, 2, 3]
    assert outcome["previous_sha256"] == ref.sha256 and review["previous_sha256"] == outcome["sha256"]

    content = members(archive.root / outcome["path"])
    assert set(content) == {RECORD, "report.html", "manifest.json", "attestation.intoto.json"}
    doc = json.loads(content[RECORD])
    assert doc["kind"] == "outcome" and doc["status"] == "deployed" and doc["note"] == "shipped"
    assert doc["about"] == {"bundle_id": ref.id, "sha256": ref.sha256}
    assert doc["by"] == "dana" and doc["by_verified"] is False and doc["claimed_at"] is None
    assert json.loads(content["manifest.json"])["kind"] == "outcome"
    envelope = json.loads(content["attestation.intoto.json"])
    import base64
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["predicateType"] == RECORD_PREDICATE_TYPE
    assert statement["subject"] == [{"name": f"policyengine-bundle:{ref.id}", "digest": {"sha256": ref.sha256}}]
    assert b"SELF-ASSERTED" in content["report.html"] and b"deployed" in content["report.html"]

    report = archive.verify((), load_public_key(str(keys[1])))
    assert report.ok, report.problems
    assert report.signatures == {ref.id: "valid", outcome["id"]: "valid", review["id"]: "valid"}
    out = cli("evidence", "verify", "--archive", root, "--all", "--public-key", str(keys[1]))
    assert out.returncode == 0, out.stdout

    shown = cli("evidence", "show", "--archive", root, ref.id, "--public-key", str(keys[1]))
    assert shown.returncode == 0, shown.stdout
    assert "outcome     DEPLOYED by dana (SELF-ASSERTED" in shown.stdout
    assert "review      OK by erin (SELF-ASSERTED" in shown.stdout
    assert "integrity: verified, signature valid" in shown.stdout
    shown = cli("evidence", "show", "--archive", root, outcome["id"], "--public-key", str(keys[1]))
    assert shown.returncode == 0 and f"about       bundle {ref.id}" in shown.stdout
    assert "integrity   ok" in shown.stdout

    listed = cli("evidence", "list", "--archive", root)
    assert listed.stdout.splitlines()[0].split()[5] == "KIND"
    assert [row.split()[5] for row in listed.stdout.splitlines()[1:]] == ["evaluation", "outcome", "review"]
    rows = json.loads(cli("evidence", "list", "--archive", root, "--kind", "outcome", "--json").stdout)
    assert [r["id"] for r in rows] == [outcome["id"]] and rows[0]["about_id"] == ref.id
    rows = json.loads(cli("evidence", "list", "--archive", root, "--kind", "evaluation", "--json").stdout)
    assert [(r["id"], r["kind"]) for r in rows] == [(ref.id, None)]


def test_an_evaluation_written_after_a_record_continues_the_same_chain(archive: LocalArchive) -> None:
    first = evaluate(archive)
    record = archive.append_record("outcome", archive.find(first.id), {"status": "deployed", "by": "dana",
                                                                         "by_verified": False})
    second = evaluate(archive, created_at=NOW)
    lines = index_lines(archive)
    assert lines[2]["id"] == second.id and lines[2]["previous_sha256"] == record.sha256
    assert lines[2]["sequence"] == 3
    assert archive.verify().ok


def test_old_archives_without_kinds_and_old_query_caches_still_work(archive: LocalArchive) -> None:
    import sqlite3

    ref = evaluate(archive)
    assert "kind" not in index_lines(archive)[0]  # evaluations keep writing no kind
    db = archive.root / "index.sqlite"
    with sqlite3.connect(db) as conn:  # a cache in the layout before kinds
        conn.executescript("CREATE TABLE bundles (id TEXT PRIMARY KEY, created_at TEXT NOT NULL, decision TEXT "
                           "NOT NULL, environment TEXT, repository TEXT, \"commit\" TEXT, path TEXT NOT NULL, "
                           "sha256 TEXT NOT NULL, policy_sha256 TEXT, sequence INTEGER, previous_sha256 TEXT, "
                           "signed_by TEXT, line INTEGER); PRAGMA user_version = 2;")
    rows = json.loads(cli("evidence", "list", "--archive", str(archive.root), "--json").stdout)
    assert [(r["id"], r["kind"]) for r in rows] == [(ref.id, None)]
    # A line that says "kind": "evaluation" is an evaluation too.
    rewrite_index(archive, ref.id, kind="evaluation")
    assert archive.verify().ok


# -- forged records fail verification ------------------------------------------------------------


def forge(store: EvidenceStore, doc: dict[str, Any], key: tuple[str | None, str | None],
          signing_key: SigningKey | None, *, when: datetime = NOW) -> BundleRef:
    """A record written by someone holding the key, bypassing every check ``append_record`` makes."""
    bundle_id = f"{when.strftime('%Y%m%dT%H%M%SZ')}-{os.urandom(6).hex()}"
    created = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    doc = {**doc, "recorded_at": created}

    def bulk(writer: BundleWriter) -> None:
        writer.add_bytes(RECORD, record_bytes(doc), redact=False)

    def tail(writer: BundleWriter, link: Mapping[str, Any], sign: SigningKey | None) -> None:
        writer.write_tail(chain=link, manifest_extra={"kind": doc["kind"]}, signing_key=sign, report=None,
                          close=False, statement_for=lambda m: build_record_statement(
                              bundle_id=bundle_id, created_at=created, document=doc, manifest_sha256=m, chain=link))

    def index_record(link: Mapping[str, Any], path: str, sha256: str, signed_by: str | None) -> dict[str, Any]:
        return {"id": bundle_id, "path": path, "sha256": sha256, "created_at": created, "decision": doc["status"],
                "environment": key[1], "repository": key[0], "commit": doc["commit"], "policy_sha256": None,
                "sequence": link["sequence"], "previous_sha256": link["previous_sha256"], "signed_by": signed_by,
                "kind": doc["kind"], "about_id": doc["about"]["bundle_id"], "about_sha256": doc["about"]["sha256"]}

    job = Job(bundle_id=bundle_id, moment=when, key=key, bulk=bulk, tail=tail, index_record=index_record)
    return store.commit(job, signing_key=signing_key, retention=None, redactor=None)


def outcome_doc(about: BundleRef, **over: Any) -> dict[str, Any]:
    return {"schema_version": 1, "kind": "outcome", "about": {"bundle_id": about.id, "sha256": about.sha256},
            "repository": "acme/payments", "environment": "production", "commit": HEAD, "status": "deployed",
            "note": None, "claimed_at": None, "by": "dana", "by_verified": True, "by_source": "GITHUB_ACTOR"} | over


def test_an_edited_status_with_recomputed_digests_fails_verification(
        archive: LocalArchive, keys: tuple[Path, Path]) -> None:
    key = load_signing_key(str(keys[0]))
    ref = evaluate(archive, key=key)
    rec = archive.append_record("outcome", archive.find(ref.id), {"status": "rolled_back", "by": "dana",
                                                                    "by_verified": True}, signing_key=key)
    path = archive.root / rec.path
    content = members(path)
    doc = json.loads(content[RECORD])
    doc["status"] = "deployed"  # the forger hides the rollback
    content[RECORD] = record_bytes(doc)
    manifest = json.loads(content["manifest.json"])
    for entry in manifest["members"]:
        if entry["path"] == RECORD:
            entry["size"], entry["sha256"] = len(content[RECORD]), hashlib.sha256(content[RECORD]).hexdigest()
    content["manifest.json"] = json.dumps(manifest).encode()
    rezip(path, content)
    rewrite_index(archive, rec.id, sha256=hashlib.sha256(path.read_bytes()).hexdigest(), decision="deployed")

    for public_key in (None, load_public_key(str(keys[1]))):
        report = archive.verify((), public_key)
        assert "statement" in checks(report, rec.id), report.problems
    out = cli("evidence", "verify", "--archive", str(archive.root), "--public-key", str(keys[1]))
    assert out.returncode == 1 and f"FAIL  statement     bundle {rec.id}" in out.stdout


def test_a_record_resigned_with_another_key_or_unsigned_fails_with_the_key(
        archive: LocalArchive, keys: tuple[Path, Path], tmp_path: Path) -> None:
    key = load_signing_key(str(keys[0]))
    public = load_public_key(str(keys[1]))
    ref = evaluate(archive, key=key)
    unsigned = archive.append_record("outcome", archive.find(ref.id), {"status": "deployed", "by": "dana",
                                                                         "by_verified": False})
    other = load_signing_key(str(keypair(tmp_path, "other")[0]))
    resigned = archive.append_record("review", archive.find(ref.id), {"result": "ok", "by": "erin",
                                                                        "by_verified": False, "note": "x"},
                                     signing_key=other)
    report = archive.verify((), public)
    assert "signature" in checks(report, unsigned.id)
    assert "signature" in checks(report, resigned.id)
    assert not checks(report, ref.id)
    assert archive.verify().ok  # without a key they are only unproven
    out = cli("evidence", "verify", "--archive", str(archive.root))
    assert out.returncode == 0 and f"UNSIGNED  bundle {unsigned.id}" in out.stdout


def test_a_record_about_a_bundle_of_another_chain_fails_even_when_signed(
        archive: LocalArchive, keys: tuple[Path, Path]) -> None:
    key = load_signing_key(str(keys[0]))
    prod = evaluate(archive, key=key)
    staging = evaluate(archive, key=key, environment="staging")
    # Signed by the right key, chained into production, but about the staging evaluation.
    doc = outcome_doc(staging, environment="production")
    forged = forge(archive, doc, ("acme/payments", "production"), key)
    report = archive.verify((), load_public_key(str(keys[1])))
    assert checks(report, forged.id) == {"link"}, report.problems
    assert any("of the chain of acme/payments / staging" in p.message for p in report.problems)
    assert not checks(report, prod.id) and not checks(report, staging.id)
    # Also when verifying that record alone.
    assert checks(archive.verify([forged.id]), forged.id) == {"link"}


@pytest.mark.parametrize("case", ["wrong-sha", "unknown-id", "about-a-record", "claims-before", "other-commit"])
def test_a_record_must_name_a_real_evaluation_of_its_chain_by_id_and_digest(
        archive: LocalArchive, keys: tuple[Path, Path], case: str) -> None:
    key = load_signing_key(str(keys[0]))
    ref = evaluate(archive, key=key)
    target = ref
    over: dict[str, Any] = {}
    if case == "wrong-sha":
        target = BundleRef(**{**vars(ref), "sha256": "0" * 64})
    elif case == "unknown-id":
        target = BundleRef(**{**vars(ref), "id": "20200101T000000Z-000000000000"})
    elif case == "about-a-record":
        target = archive.append_record("outcome", archive.find(ref.id), {"status": "deployed", "by": "dana",
                                                                           "by_verified": False}, signing_key=key)
    elif case == "claims-before":
        over["claimed_at"] = (EARLIER - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    else:
        over["commit"] = OLD
    forged = forge(archive, outcome_doc(target, **over), ("acme/payments", "production"), key)
    report = archive.verify((), load_public_key(str(keys[1])))
    assert "link" in checks(report, forged.id), report.problems


@pytest.mark.parametrize("edit", [
    {"kind": ...},                        # the outcome listed as an evaluation
    {"decision": "not_deployed"},         # its status changed in the index only
    {"about_id": "20200101T000000Z-000000000000"},
    {"about_sha256": "1" * 64},
])
def test_an_index_line_that_disagrees_with_its_record_bundle_fails(archive: LocalArchive,
                                                                   edit: dict[str, Any]) -> None:
    ref = evaluate(archive)
    rec = archive.append_record("outcome", archive.find(ref.id), {"status": "deployed", "by": "dana",
                                                                    "by_verified": False})
    if edit == {"kind": ...}:
        edit = {"kind": ..., "about_id": ..., "about_sha256": ..., "decision": "allow", "policy_sha256": "2" * 64}
    rewrite_index(archive, rec.id, **edit)
    report = archive.verify()
    assert "index" in checks(report, rec.id), report.problems


@pytest.mark.parametrize("edit", [{"simulated": ...}, {"advisory": True}])
def test_an_index_line_may_not_turn_an_evaluation_into_a_deployment(archive: LocalArchive,
                                                                    edit: dict[str, Any]) -> None:
    simulated = "simulated" in edit
    doc: dict[str, Any] = {"decision": "allow" if simulated else "deny", "rules": [], "advisory": False,
                           "simulated": simulated}
    ref = archive.write_bundle(decision=doc, change=change(), policy_filename="p.yml", policy_bytes=b"x: 1\n",
                               files=[], created_at=EARLIER)
    line = index_lines(archive)[0]
    assert not is_deployment(line, [])
    rewrite_index(archive, ref.id, **edit)
    assert is_deployment(index_lines(archive)[0], [])  # what a forged line would make history believe
    report = archive.verify()
    assert "index" in checks(report, ref.id), report.problems


# -- who may record what -----------------------------------------------------------------------------


@pytest.mark.parametrize(("who", "role"), [
    ("alice", "author"), ("ALICE", "author"), ("dana", "deployer"), ("Dana", "deployer"),
    ("carol", "committer"), ("frank", "committer"), ("oscar", "deployer"),
])
def test_the_reviewer_may_not_be_author_deployer_or_committer(archive: LocalArchive, who: str, role: str) -> None:
    commits = [{"sha": OLD, "author": "alice", "committer": "Carol"},
               {"sha": HEAD, "author": "alice", "committer": "alice", "co_authors": ["FRANK"]}]
    ref = evaluate(archive, commits=commits)
    root = str(archive.root)
    assert cli("evidence", "record-outcome", "--archive", root, ref.id, "--status", "deployed",
               "--by", "oscar").returncode == 0
    before = archive.index_path.read_bytes()
    out = cli("evidence", "review", "--archive", root, ref.id, "--by", who, "--result", "ok", "--note", "n")
    assert out.returncode == 2, out.stderr
    assert f"the reviewer is the change's {role}" in out.stderr
    assert archive.index_path.read_bytes() == before  # nothing recorded
    out = cli("evidence", "review", "--archive", root, ref.id, "--by", "erin", "--result", "issues", "--note", "n")
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("over", [{"deployer": None}, {"commits": None},
                                  {"commits": [{"sha": HEAD, "author": "alice", "committer": None}]}])
def test_a_review_is_refused_when_segregation_of_duties_cannot_be_shown(over: dict[str, Any]) -> None:
    c = change(**over)
    if over.get("commits", 1) is None:
        del c["commits"]
    with pytest.raises(UsageError, match="segregation of duties cannot be shown"):
        reviewer_conflicts("erin", c)


def test_inside_ci_the_recorder_is_the_ci_actor(archive: LocalArchive) -> None:
    ref = evaluate(archive)
    root = str(archive.root)
    github = {"CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_ACTOR": "dana"}
    out = cli("evidence", "record-outcome", "--archive", root, ref.id, "--status", "deployed", "--by", "mallory",
              env=github)
    assert out.returncode == 2 and "is not the CI actor dana (GITHUB_ACTOR)" in out.stderr
    out = cli("evidence", "review", "--archive", root, ref.id, "--by", "erin", "--result", "ok", "--note", "n",
              env={**github, "GITHUB_TRIGGERING_ACTOR": "zoe"})
    assert out.returncode == 2 and "is not the CI actor zoe (GITHUB_TRIGGERING_ACTOR)" in out.stderr
    out = cli("evidence", "record-outcome", "--archive", root, ref.id, "--status", "deployed", env=github)
    assert out.returncode == 0, out.stderr
    out = cli("evidence", "review", "--archive", root, ref.id, "--by", "ERIN", "--result", "ok", "--note", "n",
              env={"GITLAB_CI": "true", "GITLAB_USER_LOGIN": "erin"})
    assert out.returncode == 0, out.stderr
    docs = [json.loads(members(archive.root / line["path"])[RECORD]) for line in index_lines(archive)[1:]]
    # No verified CI ID token: the CI variable names who, but nothing vouches for it (issue 17).
    assert [(d["by"], d["by_verified"], d["by_source"]) for d in docs] == [
        ("dana", False, "GITHUB_ACTOR (no verified ID token)"),
        ("erin", False, "GITLAB_USER_LOGIN (no verified ID token)")]
    assert docs[0]["ci"]["GITHUB_ACTOR"] == "dana"
    # CI without an actor: who records it cannot be verified.
    out = cli("evidence", "record-outcome", "--archive", root, ref.id, "--status", "failed", "--by", "dana",
              env={"CI": "true"})
    assert out.returncode == 2 and "names no actor" in out.stderr


def test_outside_ci_the_recorder_is_self_asserted_and_marked_so() -> None:
    actor = resolve_actor({"USER": "sam"}, None, in_ci=False, fallback_user=True)
    assert (actor.login, actor.verified, actor.source) == ("sam", False, "$USER")
    actor = resolve_actor({}, "dana", in_ci=False)
    assert (actor.login, actor.verified) == ("dana", False)
    with pytest.raises(UsageError):
        resolve_actor({}, None, in_ci=False)


def test_claimed_times_in_the_future_or_before_the_evaluation_are_refused(archive: LocalArchive) -> None:
    ref = evaluate(archive)
    root = str(archive.root)
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    before = (EARLIER - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for at, words in ((future, "lies in the future"), (before, "is before the evaluation")):
        out = cli("evidence", "record-outcome", "--archive", root, ref.id, "--status", "deployed", "--at", at)
        assert out.returncode == 2 and words in out.stderr, out.stderr
    assert cli("evidence", "record-outcome", "--archive", root, ref.id, "--status", "deployed",
               "--at", "yesterday").returncode == 2
    assert len(index_lines(archive)) == 1
    good = (EARLIER + timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = cli("evidence", "record-outcome", "--archive", root, ref.id, "--status", "rolled_back", "--at", good)
    assert out.returncode == 0, out.stderr
    line = index_lines(archive)[1]
    assert json.loads(members(archive.root / line["path"])[RECORD])["claimed_at"] == good
    assert line["created_at"] != good  # the claim is recorded beside the real time, not instead of it


def test_an_unknown_bundle_or_a_record_cannot_be_given_an_outcome(archive: LocalArchive) -> None:
    ref = evaluate(archive)
    root = str(archive.root)
    out = cli("evidence", "record-outcome", "--archive", root, "20200101T000000Z-000000000000",
              "--status", "deployed")
    assert out.returncode == 2 and "is not in the archive" in out.stderr
    rec = archive.append_record("outcome", archive.find(ref.id), {"status": "deployed", "by": "d",
                                                                    "by_verified": False})
    for args in (("record-outcome", "--status", "failed"), ("review", "--by", "erin", "--result", "ok",
                                                            "--note", "n")):
        out = cli("evidence", args[0], "--archive", root, rec.id, *args[1:])
        assert out.returncode == 2 and "is a outcome record, not an evaluation" in out.stderr


def test_a_record_is_not_linked_to_an_evaluation_that_does_not_verify(archive: LocalArchive) -> None:
    ref = evaluate(archive)
    path = archive.root / ref.path
    path.write_bytes(path.read_bytes() + b"x")
    out = cli("evidence", "record-outcome", "--archive", str(archive.root), ref.id, "--status", "deployed")
    assert out.returncode == 3 and "refusing to link a record to it" in out.stderr
    assert len(index_lines(archive)) == 1


def test_secrets_in_a_note_never_reach_the_archive(archive: LocalArchive) -> None:
    ref = evaluate(archive)
    token = "ghp_" + "a1" * 18
    out = cli("evidence", "record-outcome", "--archive", str(archive.root), ref.id, "--status", "failed",
              "--note", f"token {token} leaked")
    assert out.returncode == 0
    line = index_lines(archive)[1]
    assert token.encode() not in (archive.root / line["path"]).read_bytes()
    assert archive.verify().ok


# -- the previous deploy ------------------------------------------------------------------------------


def _eval(i: int, decision: str = "allow", **over: Any) -> dict[str, Any]:
    return {"id": f"2026010{i}T000000Z-00000000000{i}", "sha256": f"{i}" * 64, "created_at": f"2026-01-0{i}T00:00:00Z",
            "decision": decision, "repository": "acme/payments", "environment": "production",
            "commit": f"{i}" * 40, "sequence": i * 10, "signed_by": None} | over


def _outcome(about: Mapping[str, Any], status: str, n: int = 1, **over: Any) -> dict[str, Any]:
    return {"id": f"2026020{n}T000000Z-a0000000000{n}", "kind": "outcome", "about_id": about["id"],
            "about_sha256": about["sha256"], "decision": status, "created_at": f"2026-02-0{n}T00:00:00Z",
            "repository": about["repository"], "environment": about["environment"], "commit": about["commit"],
            "sequence": about["sequence"] + n} | over


@pytest.mark.parametrize(("case", "deployment", "previous"), [
    ("allow", True, True),
    ("deny", False, False),
    ("advisory deny", True, True),
    ("simulated", False, False),
    ("not_applicable", False, False),
    ("allow + not_deployed", False, False),
    ("allow + failed", True, False),
    ("allow + rolled_back", True, False),
    ("allow + deployed", True, True),
    ("allow + deployed, then rolled_back", True, False),
    ("allow + failed, then deployed", True, True),
    ("allow + not_deployed naming another digest", True, True),
    ("advisory not_applicable", False, False),
])
def test_the_previous_deploy_predicate(case: str, deployment: bool, previous: bool) -> None:
    older = _eval(1)  # a plain earlier deployment: what remains when the candidate does not count
    decision = {"deny": "deny", "advisory deny": "deny", "not_applicable": "not_applicable",
                "advisory not_applicable": "not_applicable"}.get(case, "allow")
    candidate = _eval(2, decision)
    if case.startswith("advisory"):
        candidate["advisory"] = True
    if case == "simulated":
        candidate["simulated"] = True
    outcomes: list[dict[str, Any]] = []
    statuses = case.split(" + ", 1)[1].split(", then ") if " + " in case else []
    for n, status in enumerate(word.split(" ")[0] for word in statuses):
        over = {"about_sha256": "f" * 64} if "another digest" in case else {}
        outcomes.append(_outcome(candidate, status, n + 1, **over))
    records = [older, candidate, *outcomes]
    assert is_deployment(candidate, outcomes) is deployment
    assert not any(is_deployment(o, records) for o in outcomes)  # records never count
    found = latest_deploy(records, "acme/payments", "Production", records)
    assert found is not None and found["id"] == (candidate["id"] if previous else older["id"])
    # Other repositories and environments never answer.
    assert latest_deploy(records, "acme/other", "production", records) is None
    assert latest_deploy(records, "acme/payments", "staging") is None


def test_the_previous_deploy_can_require_a_signing_key() -> None:
    signed, unsigned = _eval(1, signed_by="k" * 64), _eval(2)
    found = latest_deploy([signed, unsigned], "acme/payments", "production")
    assert found is not None and found["id"] == unsigned["id"]
    found = latest_deploy([signed, unsigned], "acme/payments", "production", signed_by="k" * 64)
    assert found is not None and found["id"] == signed["id"]


# -- the audit export ---------------------------------------------------------------------------------


def test_an_audit_export_lists_records_beside_the_population_and_verifies(
        archive: LocalArchive, keys: tuple[Path, Path], tmp_path: Path) -> None:
    key = load_signing_key(str(keys[0]))
    ref = evaluate(archive, key=key)
    rec = archive.append_record("outcome", archive.find(ref.id), {"status": "rolled_back", "by": "dana",
                                                                    "by_verified": False, "note": "INC-7"},
                                signing_key=key)
    day = EARLIER.strftime("%Y-%m-%d")
    out_zip = tmp_path / "export.zip"
    args = ("audit", "export", "--archive", str(archive.root), "--since", day, "--until",
            NOW.strftime("%Y-%m-%d"), "--sample", "5", "--seed", "1", "--public-key", str(keys[1]),
            "--signing-key", str(keys[0]), "-o", str(out_zip))
    result = cli(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    with zipfile.ZipFile(out_zip) as zf:
        population = zf.read("population.csv").decode()
        records = zf.read("records.csv").decode().splitlines()
        sampled = [n for n in zf.namelist() if n.startswith("bundles/") and n.endswith(".zip")]
    assert ref.id in population and rec.id not in population  # the population holds evaluations only
    assert sampled == [f"bundles/{ref.id}.zip"]
    assert records[0].startswith("id,kind,about_id")
    assert records[1].startswith(f"{rec.id},outcome,{ref.id},{ref.sha256},rolled_back,")
    assert ",dana,no (self-asserted),INC-7," in records[1]
    verified = cli("evidence", "verify", "--archive", str(out_zip), "--public-key", str(keys[1]))
    assert verified.returncode == 0, verified.stdout
    # A forged record about the period refuses the export.
    staging = evaluate(archive, key=key, environment="staging")
    forge(archive, outcome_doc(staging, environment="production"), ("acme/payments", "production"), key)
    out_zip.unlink()
    result = cli(*args)
    assert result.returncode == 1 and "FAIL  link" in result.stdout + result.stderr
    assert not out_zip.exists()


def test_a_record_cannot_be_replayed(archive: LocalArchive) -> None:
    ref = evaluate(archive)
    rec = archive.append_record("review", archive.find(ref.id), {"result": "ok", "by": "erin", "by_verified": False,
                                                                   "note": "n"})
    out = cli("evidence", "replay", "--archive", str(archive.root), rec.id)
    assert out.returncode == 2 and "not an evaluation" in out.stderr


def test_record_documents_and_predicates_validate_against_the_published_schema(
        archive: LocalArchive, keys: tuple[Path, Path]) -> None:
    import base64

    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "record.schema.json").read_text())
    key = load_signing_key(str(keys[0]))
    ref = evaluate(archive, key=key)
    out = archive.append_record("outcome", archive.find(ref.id), {"status": "failed", "by": "dana",
                                                                    "by_verified": True, "by_source": "GITHUB_ACTOR",
                                                                    "ci": {"CI": "true"}}, signing_key=key)
    rev = archive.append_record("review", archive.find(ref.id), {"result": "issues", "by": "erin",
                                                                   "by_verified": False, "note": "n"})
    for rec in (out, rev):
        content = members(archive.root / rec.path)
        jsonschema.validate(json.loads(content[RECORD]), schema)
        predicate = json.loads(base64.b64decode(json.loads(content["attestation.intoto.json"])["payload"]))["predicate"]
        jsonschema.validate(predicate, {**schema, "$ref": "#/$defs/predicate"})
    bad = {**json.loads(members(archive.root / out.path)[RECORD]), "result": "ok"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


@pytest.mark.parametrize(("env", "actor"), [
    ({"CI": "true", "GITHUB_ACTOR": "dana"}, ("dana", "GITHUB_ACTOR")),
    ({"CI": "1", "GITLAB_USER_LOGIN": "Dana"}, ("Dana", "GITLAB_USER_LOGIN")),
    ({"GITHUB_ACTIONS": "true", "GITHUB_ACTOR": "bot", "GITHUB_TRIGGERING_ACTOR": "dana"},
     ("dana", "GITHUB_TRIGGERING_ACTOR")),
    ({"GITLAB_CI": "true", "GITLAB_USER_LOGIN": "dana", "GITHUB_ACTOR": "other"}, ("dana", "GITLAB_USER_LOGIN")),
])
def test_the_ci_actor_comes_from_the_ci_that_runs_the_job(env: dict[str, str], actor: tuple[str, str]) -> None:
    found = resolve_actor(env, None, in_ci=True)
    # Without a verified ID token the variable's actor is self-asserted (issue 17).
    assert (found.login, found.source, found.verified) == (actor[0], f"{actor[1]} (no verified ID token)", False)
    assert resolve_actor(env, actor[0].upper(), in_ci=True).login == actor[0]
    with pytest.raises(UsageError, match="is not the CI actor"):
        resolve_actor(env, "mallory", in_ci=True)


@pytest.mark.parametrize("env", [{"CI": "true"}, {"GITHUB_ACTIONS": "true", "GITLAB_USER_LOGIN": "dana"},
                                 {"CI": "true", "GITHUB_ACTOR": "dana", "GITLAB_USER_LOGIN": "erin"}])
def test_a_ci_whose_actor_cannot_be_told_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(UsageError):
        resolve_actor(env, "dana", in_ci=True)
