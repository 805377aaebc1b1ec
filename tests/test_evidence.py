"""The evidence bundle and the local archive: what an auditor relies on when we are not there."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import multiprocessing
import os
import re
import struct
import threading
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from policyengine.errors import EvidenceError
from policyengine.evidence.format import bundle as bundle_mod
from policyengine.evidence.stores.folder import LocalArchive
from policyengine.evidence.stores.base import BundleRef, VerifyReport
from policyengine.models import FileRead

CREATED = datetime(2024, 5, 1, 12, 30, 45, tzinfo=timezone.utc)
POLICY = b"name: prod\nrules:\n  - id: two-approvals\n    type: approvals\n    min_approvals: 2\n"
CHANGE = {
    "repository": "acme/shop",
    "environment": "production",
    "commit": "a" * 40,
    "files_changed": ["src/app.py"],
}


def make_file(workspace: Path, relpath: str, data: bytes) -> FileRead:
    """Write a workspace file and return it as a rule would have read it."""
    path = workspace / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return FileRead(relpath=relpath, abspath=str(path), sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def write(archive: LocalArchive, **overrides: Any) -> BundleRef:
    kwargs: dict[str, Any] = {
        "decision": {"decision": "deny", "rules": [{"id": "two-approvals", "status": "fail"}]},
        "change": CHANGE,
        "policy_filename": "policy.yml",
        "policy_bytes": POLICY,
        "files": [],
        "created_at": CREATED,
    }
    kwargs.update(overrides)
    return archive.write_bundle(**kwargs)


def problems_of(report: VerifyReport) -> set[tuple[str, str | None, str]]:
    return {(p.bundle_id, p.member, p.check) for p in report.problems}


def bundle_files(root: Path) -> list[Path]:
    """Every file under bundles/, finished or not."""
    return sorted(p for p in (root / "bundles").rglob("*") if p.is_file()) if (root / "bundles").exists() else []


@pytest.fixture
def archive(tmp_path: Path) -> LocalArchive:
    return LocalArchive(tmp_path / "archive")


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


# -- round trip -------------------------------------------------------------------------


def test_round_trip_write_list_verify(archive: LocalArchive, workspace: Path) -> None:
    app = make_file(workspace, "src/app.py", b"print('hello')\n")
    denied = write(archive, files=[app], extra_members={"reports/junit.xml": b"<testsuite/>"})
    june = datetime(2024, 6, 2, tzinfo=timezone.utc)
    allowed = write(archive, decision={"decision": "allow", "rules": []}, created_at=june)

    assert re.fullmatch(r"20240501T123045Z-[0-9a-f]{12}", denied.id)
    assert denied.path == f"bundles/2024/05/{denied.id}.zip"
    assert allowed.path.startswith("bundles/2024/06/")
    assert (denied.decision, denied.environment, denied.repository, denied.commit) == (
        "deny", "production", "acme/shop", "a" * 40,
    )
    assert denied.created_at == "2024-05-01T12:30:45Z"
    assert archive.list() == [denied, allowed]

    zip_path = archive.root / denied.path
    assert denied.sha256 == hashlib.sha256(zip_path.read_bytes()).hexdigest()
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        assert names == ["decision.json", "change.json", "policy/policy.yml", "files/src/app.py",
                         "reports/junit.xml", "report.html", "manifest.json", "attestation.intoto.json"]
        decision_text = zf.read("decision.json").decode()
        assert json.loads(decision_text)["decision"] == "deny"
        assert decision_text == json.dumps(json.loads(decision_text), indent=2, sort_keys=True) + "\n"
        assert json.loads(zf.read("change.json")) == CHANGE
        assert zf.read("policy/policy.yml") == POLICY
        assert zf.read("files/src/app.py") == b"print('hello')\n"
        assert {i.date_time for i in zf.infolist()} == {(2024, 5, 1, 12, 30, 44)}  # zip time has 2 s steps
        manifest = json.loads(zf.read("manifest.json"))
        assert manifest["schema_version"] == 3
        assert manifest["chain"]["repository"] == "acme/shop"
        assert manifest["bundle_id"] == denied.id
        assert manifest["tool"]["name"] == "policyengine"
        assert [m["path"] for m in manifest["members"]] == names[:-2]
        for m in manifest["members"]:
            data = zf.read(m["path"])
            assert (m["size"], m["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())

    record = json.loads((archive.root / "index.jsonl").read_text().splitlines()[0])
    assert record["policy_sha256"] == hashlib.sha256(POLICY).hexdigest()
    assert record["sha256"] == denied.sha256

    report = archive.verify()
    assert report.ok, report.problems
    assert report.checked == (denied.id, allowed.id)


def test_list_of_a_fresh_folder_is_empty_and_of_a_missing_one_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert LocalArchive(tmp_path / "empty").list() == []
    with pytest.raises(EvidenceError, match="no evidence archive"):
        LocalArchive(tmp_path / "typo").list()
    with pytest.raises(EvidenceError, match="no evidence archive"):
        LocalArchive(tmp_path / "typo").verify()


# -- tampering --------------------------------------------------------------------------


def flip_byte_in_member(zip_path: Path, name: str) -> None:
    """Flip one byte in the middle of a member's stored data, leaving the zip structure intact."""
    with zipfile.ZipFile(zip_path) as zf:
        info = zf.getinfo(name)
    data = bytearray(zip_path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.compress_size // 2] ^= 0xFF
    zip_path.write_bytes(data)


@pytest.mark.parametrize(
    "member",
    ["decision.json", "change.json", "policy/policy.yml", "files/src/app.py", "evidence/screen.png",
     "manifest.json"],
)
def test_a_flipped_byte_in_any_member_is_caught_naming_the_member(
    archive: LocalArchive, workspace: Path, member: str
) -> None:
    app = make_file(workspace, "src/app.py", b"def main():\n    return 42\n" * 20)
    ref = write(archive, files=[app], extra_members={"evidence/screen.png": os.urandom(4000)})
    flip_byte_in_member(archive.root / ref.path, member)

    report = archive.verify()
    assert not report.ok
    assert (ref.id, None, "bundle-digest") in problems_of(report)
    expected_check = "manifest" if member == "manifest.json" else "member-digest"
    assert (ref.id, member, expected_check) in problems_of(report)


def test_a_forged_bundle_with_a_consistent_manifest_is_caught_by_the_index_digest(archive: LocalArchive) -> None:
    ref = write(archive)
    zip_path = archive.root / ref.path
    with zipfile.ZipFile(zip_path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    decision = json.loads(members["decision.json"])
    decision["decision"] = "allow"
    members["decision.json"] = json.dumps(decision, indent=2, sort_keys=True).encode()
    manifest = json.loads(members["manifest.json"])
    for entry in manifest["members"]:
        data = members[entry["path"]]
        entry["size"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(zip_path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)

    # The members match the rewritten manifest: only the statement (which names the manifest's
    # digest and the decision) and the index can tell.
    with zipfile.ZipFile(zip_path) as zf:
        checks = {(p.member, p.check) for p in bundle_mod.inspect_bundle(zf, ref.id).problems}
    assert checks == {("attestation.intoto.json", "statement")}
    report = archive.verify()
    assert not report.ok
    digest_problems = [p for p in report.problems if p.check == "bundle-digest"]
    assert len(digest_problems) == 1
    assert digest_problems[0].bundle_id == ref.id
    assert f"bundle {ref.id} was rewritten after it was recorded" in digest_problems[0].message
    assert (ref.id, None, "index") in problems_of(report)  # decision.json now disagrees with the record


def test_a_member_added_to_a_bundle_is_reported_as_unlisted(archive: LocalArchive) -> None:
    ref = write(archive)
    with zipfile.ZipFile(archive.root / ref.path, "a") as zf:
        zf.writestr("approvals.json", b'{"approved_by": "mallory"}')
    assert (ref.id, "approvals.json", "manifest") in problems_of(archive.verify())


def test_a_deleted_bundle_is_missing(archive: LocalArchive) -> None:
    kept, deleted = write(archive), write(archive)
    (archive.root / deleted.path).unlink()
    report = archive.verify()
    assert problems_of(report) == {(deleted.id, None, "missing")}
    assert report.checked == (kept.id, deleted.id)


def test_an_unindexed_zip_is_reported_and_a_leftover_part_file_ignored(archive: LocalArchive) -> None:
    ref = write(archive)
    stray = archive.root / "bundles/2024/05/20240501T000000Z-0123456789ab.zip"
    stray.write_bytes((archive.root / ref.path).read_bytes())
    (archive.root / "bundles/2024/05/.tmp-20240501T000000Z-ba9876543210.zip.part").write_bytes(b"PK half")
    report = archive.verify()
    assert problems_of(report) == {("20240501T000000Z-0123456789ab", None, "unindexed")}
    assert [r.id for r in archive.list()] == [ref.id]


def test_verify_selected_ids_and_an_unknown_id_is_missing(archive: LocalArchive) -> None:
    first, second = write(archive), write(archive)
    flip_byte_in_member(archive.root / second.path, "decision.json")
    report = archive.verify([first.id])
    assert (report.checked, report.problems) == ((first.id,), ())
    report = archive.verify([first.id, "20990101T000000Z-000000000000"])
    assert problems_of(report) == {("20990101T000000Z-000000000000", None, "missing")}


def test_a_rewritten_zip_that_is_no_zip_is_unreadable(archive: LocalArchive) -> None:
    ref = write(archive)
    (archive.root / ref.path).write_bytes(b"not a zip at all")
    assert problems_of(archive.verify()) == {(ref.id, None, "bundle-digest"), (ref.id, None, "unreadable")}


# -- the index --------------------------------------------------------------------------


def test_a_corrupt_index_line_is_named_by_list_and_reported_by_verify(archive: LocalArchive) -> None:
    first = write(archive)
    with open(archive.root / "index.jsonl", "ab") as f:
        f.write(b'{"id": "garbage"\n')
    second = write(archive)
    with pytest.raises(EvidenceError, match=r"index\.jsonl line 2"):
        archive.list()
    report = archive.verify()
    assert report.checked == (first.id, second.id)
    assert [(p.check, "line 2" in p.message) for p in report.problems] == [("index", True)]


def test_a_final_line_without_newline_is_tolerated_only_if_valid(archive: LocalArchive) -> None:
    first = write(archive)
    index = archive.root / "index.jsonl"
    index.write_bytes(index.read_bytes().rstrip(b"\n"))
    assert [r.id for r in archive.list()] == [first.id]

    # A writer that died mid-line leaves a torn fragment: it stays visible, the next record stays whole.
    index.write_bytes(index.read_bytes() + b"\n" + b'{"id": "2024')
    with pytest.raises(EvidenceError, match="line 2.*incomplete"):
        archive.list()
    second = write(archive)
    report = archive.verify()
    assert report.checked == (first.id, second.id)
    assert [(p.check, "line 2" in p.message) for p in report.problems] == [("index", True)]


def test_an_index_line_pointing_outside_the_archive_is_rejected(archive: LocalArchive) -> None:
    ref = write(archive)
    index = archive.root / "index.jsonl"
    record = json.loads(index.read_text())
    record["path"] = "../../etc/passwd"
    index.write_text(json.dumps(record) + "\n")
    with pytest.raises(EvidenceError, match="is not where bundle"):
        archive.list()
    report = archive.verify()
    assert ("", None, "index") in problems_of(report)
    assert (ref.id, None, "unindexed") in problems_of(report)


def test_the_index_append_waits_for_the_archive_lock(archive: LocalArchive) -> None:
    write(archive)
    index = archive.root / "index.jsonl"
    written: list[BundleRef] = []
    fd = os.open(archive.root / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another writer holds the lock
        writer = threading.Thread(target=lambda: written.append(write(archive)))
        writer.start()
        writer.join(timeout=0.5)
        assert writer.is_alive(), "the append did not wait for the lock"
        assert len(index.read_bytes().splitlines()) == 1
    finally:
        os.close(fd)
    writer.join(timeout=30)
    assert len(written) == 1
    assert [r.id for r in archive.list()][1:] == [written[0].id]


def _write_many(root: str, count: int, barrier: Any) -> None:
    archive = LocalArchive(root)
    barrier.wait()
    for i in range(count):
        write(archive, decision={"decision": "allow" if i % 2 else "deny"}, created_at=None)


def test_concurrent_writers_all_land(archive: LocalArchive) -> None:
    ctx = multiprocessing.get_context("fork")
    procs_n, per_proc = 8, 5
    barrier = ctx.Barrier(procs_n)
    procs = [ctx.Process(target=_write_many, args=(str(archive.root), per_proc, barrier)) for _ in range(procs_n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * procs_n

    refs = archive.list()
    assert len(refs) == len({r.id for r in refs}) == procs_n * per_proc
    lines = (archive.root / "index.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1])
    report = archive.verify()
    assert report.ok, report.problems
    assert len(report.checked) == procs_n * per_proc


# -- failures leave nothing behind ------------------------------------------------------


def test_a_file_changed_after_the_rule_read_it_is_an_error(archive: LocalArchive, workspace: Path) -> None:
    app = make_file(workspace, "src/app.py", b"version = 1\n")
    Path(app.abspath).write_bytes(b"version = 2\n")
    with pytest.raises(EvidenceError, match=r"src/app\.py changed after the policy read it"):
        write(archive, files=[app])
    Path(app.abspath).unlink()
    with pytest.raises(EvidenceError, match=r"cannot copy src/app\.py into the evidence bundle"):
        write(archive, files=[app])
    assert bundle_files(archive.root) == []
    assert archive.list() == []


def test_a_failure_in_the_middle_of_writing_leaves_no_zip_and_no_index_line(
    archive: LocalArchive, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = write(archive)
    index_before = (archive.root / "index.jsonl").read_bytes()
    app = make_file(workspace, "src/app.py", b"x = 1\n")
    half_written: list[int] = []

    def boom(self: bundle_mod.BundleWriter, name: str, file: FileRead) -> None:
        half_written.extend(p.stat().st_size for p in archive.root.rglob(".tmp-*.zip.part"))
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(bundle_mod.BundleWriter, "add_file", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write(archive, files=[app])
    assert len(half_written) == 1  # the temporary bundle existed when it failed
    assert bundle_files(archive.root) == [archive.root / kept.path]
    assert (archive.root / "index.jsonl").read_bytes() == index_before
    assert archive.verify().ok


def test_a_failed_index_append_removes_the_bundle_and_the_torn_line(
    archive: LocalArchive, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = write(archive)
    index_before = (archive.root / "index.jsonl").read_bytes()
    real_write = os.write

    def half_then_enospc(fd: int, data: Any) -> int:
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_enospc)
    with pytest.raises(EvidenceError, match=r"cannot record bundle .* in the index .*index\.jsonl.*removed"):
        write(archive)
    monkeypatch.undo()
    assert (archive.root / "index.jsonl").read_bytes() == index_before
    assert bundle_files(archive.root) == [archive.root / kept.path]
    assert archive.verify().ok


def test_an_index_that_cannot_be_opened_removes_the_bundle(archive: LocalArchive) -> None:
    archive.root.mkdir()
    (archive.root / "index.jsonl").mkdir()
    with pytest.raises(EvidenceError, match="index"):
        write(archive)
    assert bundle_files(archive.root) == []


def test_an_archive_that_cannot_be_created_is_an_error_naming_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the archive should be")
    with pytest.raises(EvidenceError, match=re.escape(str(blocker))):
        write(LocalArchive(blocker))


# -- member names and compression -------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"extra_members": {"/etc/passwd": b""}},
        {"extra_members": {"../escape.txt": b""}},
        {"extra_members": {"notes/../../escape.txt": b""}},
        {"extra_members": {"notes\\win.txt": b""}},
        {"extra_members": {"C:/x.txt": b""}},
        {"extra_members": {"a//b.txt": b""}},
        {"extra_members": {"": b""}},
        {"extra_members": {"manifest.json": b"{}"}},
        {"extra_members": {"decision.json": b"{}"}},
        {"policy_filename": "../policy.yml"},
        {"files": [FileRead(relpath="../outside.py", abspath="/dev/null", sha256="0" * 64, size=0)]},
    ],
    ids=lambda o: repr(o)[:40],
)
def test_unsafe_or_reserved_member_names_are_rejected_before_anything_is_written(
    archive: LocalArchive, overrides: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match="member"):
        write(archive, **overrides)
    assert not archive.root.exists()


def test_large_and_compressed_members_are_stored_small_text_deflated(
    archive: LocalArchive, workspace: Path
) -> None:
    big = make_file(workspace, "build/big.log", b"log line\n" * (bundle_mod.LARGE_MEMBER // 9 + 1))
    assert big.size > bundle_mod.LARGE_MEMBER
    small = make_file(workspace, "src/app.py", b"x = 1\n" * 100)
    ref = write(archive, files=[big, small], extra_members={"shot.PNG": b"\x89PNG" + b"\0" * 500})
    with zipfile.ZipFile(archive.root / ref.path) as zf:
        kinds = {i.filename: i.compress_type for i in zf.infolist()}
    assert kinds["files/build/big.log"] == zipfile.ZIP_STORED
    assert kinds["shot.PNG"] == zipfile.ZIP_STORED
    assert kinds["files/src/app.py"] == zipfile.ZIP_DEFLATED
    assert kinds["decision.json"] == zipfile.ZIP_DEFLATED
    assert archive.verify().ok


def test_a_naive_created_at_or_a_decision_without_verdict_is_a_caller_bug(archive: LocalArchive) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        write(archive, created_at=datetime(2024, 5, 1))
    with pytest.raises(ValueError, match="'decision' string"):
        write(archive, decision={"rules": []})
    assert not archive.root.exists()
