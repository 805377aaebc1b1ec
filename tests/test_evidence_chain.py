"""The hash chain: deletions, swaps, replays and insertions caught by name; concurrent and killed writers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from test_evidence import CHANGE, problems_of, write

from policyengine.evidence.stores.folder import LocalArchive
from policyengine.evidence.format.bundle import MANIFEST

FIXTURES = Path(__file__).parent / "fixtures" / "acceptance"
NOW = "2026-11-24T15:00:00Z"


@pytest.fixture
def archive(tmp_path: Path) -> LocalArchive:
    return LocalArchive(tmp_path / "archive")


def _index(archive: LocalArchive) -> list[dict[str, object]]:
    if archive.shard_dir.is_dir():  # (sharded by `evidence migrate`: every shard, in chain order)
        return list(archive.read_index()[0])
    return [json.loads(line) for line in archive.index_path.read_text().splitlines()]


def _shard_first(root: Path, sharded: bool) -> None:
    if sharded:
        root.mkdir()
        LocalArchive(root).migrate()


def _write_index(archive: LocalArchive, records: list[dict[str, object]]) -> None:
    archive.index_path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def _chain(archive: LocalArchive, n: int) -> list[str]:
    return [write(archive, created_at=None).id for _ in range(n)]


def test_each_bundle_records_its_predecessor(archive: LocalArchive) -> None:
    ids = _chain(archive, 3)
    other = write(archive, change={**CHANGE, "environment": "staging"}, created_at=None)
    records = {r["id"]: r for r in _index(archive)}
    assert [records[i]["sequence"] for i in ids] == [1, 2, 3]
    assert records[ids[0]]["previous_sha256"] is None
    assert records[ids[1]]["previous_sha256"] == records[ids[0]]["sha256"]
    assert records[ids[2]]["previous_sha256"] == records[ids[1]]["sha256"]
    assert (records[other.id]["sequence"], records[other.id]["previous_sha256"]) == (1, None)  # its own chain
    with zipfile.ZipFile(archive.root / str(records[ids[2]]["path"])) as zf:
        chain = json.loads(zf.read(MANIFEST))["chain"]
    assert chain == {"repository": "acme/shop", "environment": "production", "sequence": 3,
                     "previous_sha256": records[ids[1]]["sha256"], "previous_id": ids[1]}
    assert archive.verify().ok


def test_a_bundle_deleted_from_the_middle_is_caught_at_the_next_one(archive: LocalArchive) -> None:
    first, middle, last = _chain(archive, 3)
    records = _index(archive)
    (archive.root / str(records[1]["path"])).unlink()
    _write_index(archive, [records[0], records[2]])  # the deleter also removes the index line
    report = archive.verify()
    assert problems_of(report) == {(last, None, "chain")}
    message = report.problems[0].message
    assert f"bundle {last} names as its previous bundle sha256 {records[1]['sha256']}" in message
    assert f"not in the archive: a bundle after {first} was deleted" in message
    assert middle not in {p.bundle_id for p in report.problems}


def test_a_deleted_zip_whose_index_line_stays_is_missing_and_the_chain_still_links(archive: LocalArchive) -> None:
    _, middle, _ = _chain(archive, 3)
    (archive.root / str(_index(archive)[1]["path"])).unlink()
    assert problems_of(archive.verify()) == {(middle, None, "missing")}


def test_two_swapped_bundles_are_caught(archive: LocalArchive) -> None:
    ids = _chain(archive, 4)
    records = _index(archive)
    a, b = archive.root / str(records[1]["path"]), archive.root / str(records[2]["path"])
    tmp = a.with_suffix(".swap")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    report = archive.verify()
    found = problems_of(report)
    for bundle_id in (ids[1], ids[2]):
        assert (bundle_id, None, "bundle-digest") in found
        assert (bundle_id, MANIFEST, "replay") in found  # each file holds the other bundle
    assert (ids[1], None, "chain") in found
    assert any("recorded after it" in p.message and "reordered or swapped" in p.message
               for p in report.problems if p.check == "chain")


def test_two_swapped_index_lines_are_caught_as_reordered(archive: LocalArchive) -> None:
    ids = _chain(archive, 4)
    records = _index(archive)
    records[1], records[2] = records[2], records[1]
    _write_index(archive, records)
    report = archive.verify()
    chain_problems = {p.bundle_id: p.message for p in report.problems if p.check == "chain"}
    assert ids[2] in chain_problems
    assert f"names bundle {ids[1]}, recorded after it" in chain_problems[ids[2]]


def test_an_old_bundle_replayed_under_a_new_name_is_caught(archive: LocalArchive) -> None:
    ids = _chain(archive, 3)
    records = _index(archive)
    old = records[0]
    new_id = ids[2][:-12] + "0123456789ab"
    copy = dict(old, id=new_id, path=f"bundles/{new_id[0:4]}/{new_id[4:6]}/{new_id}.zip")
    shutil.copy(archive.root / str(old["path"]), archive.root / str(copy["path"]))
    _write_index(archive, [*records, copy])
    report = archive.verify()
    found = problems_of(report)
    assert (new_id, MANIFEST, "replay") in found
    assert (new_id, None, "replay") in found
    byte_identical = next(p.message for p in report.problems if p.check == "replay" and p.member is None)
    assert f"bundle {new_id} is byte-identical to bundle {ids[0]}" in byte_identical
    assert (new_id, None, "chain") in found
    # Unrecorded, the copy is still reported.
    _write_index(archive, records)
    assert (new_id, None, "unindexed") in problems_of(archive.verify())


def test_an_inserted_bundle_is_caught(archive: LocalArchive, tmp_path: Path) -> None:
    ids = _chain(archive, 3)
    # A bundle made elsewhere that claims the same predecessor as ids[1], slipped in before it.
    other = LocalArchive(tmp_path / "forge")
    write(other, created_at=None)
    records = _index(archive)
    forged_ref = write(LocalArchive(tmp_path / "forge"), created_at=None)
    forged = json.loads((other.index_path).read_text().splitlines()[-1])
    shutil.copy(other.root / str(forged["path"]), archive.root / str(forged["path"]))
    forged["previous_sha256"] = records[0]["sha256"]
    _write_index(archive, [records[0], forged, *records[1:]])
    report = archive.verify()
    found = problems_of(report)
    assert (forged_ref.id, None, "chain") in found
    assert (ids[1], None, "chain") in found


def test_verify_one_id_checks_its_link_only(archive: LocalArchive) -> None:
    first, middle, last = _chain(archive, 3)
    records = _index(archive)
    _write_index(archive, [records[0], records[2]])
    (archive.root / str(records[1]["path"])).unlink()
    assert archive.verify([first]).ok
    assert problems_of(archive.verify([last])) == {(last, None, "chain")}


# -- many writers, killed writers -------------------------------------------------------------


def _check_cmd(archive: Path) -> list[str]:
    return [sys.executable, "-m", "policyengine", "check", "--policy", str(FIXTURES / "policy.yml"),
            "--change", str(FIXTURES / "change.yml"), "--workspace", str(FIXTURES / "workspace"),
            "--now", NOW, "--evidence-dir", str(archive)]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLICYENGINE_", "GITHUB_", "GITLAB_", "CI"))}
    env.update(extra)
    return env


def _verify_all(archive: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policyengine", "evidence", "verify", "--archive", str(archive),
                           "--all"], capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize("sharded", [False, True], ids=["index.jsonl", "monthly-shards"])
def test_twenty_concurrent_checks_make_one_unbroken_chain(tmp_path: Path, sharded: bool) -> None:
    root = tmp_path / "archive"
    _shard_first(root, sharded)
    procs = [subprocess.Popen(_check_cmd(root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
             for _ in range(20)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 20, outputs
    records = _index(LocalArchive(root))
    assert len(records) == 20
    assert [r["sequence"] for r in records] == list(range(1, 21))
    for before, after in zip(records, records[1:], strict=False):
        assert after["previous_sha256"] == before["sha256"]
    result = _verify_all(root)
    assert result.returncode == 0, result.stdout
    assert "ok: 20 bundles verified" in result.stdout


@pytest.mark.parametrize("sharded", [False, True], ids=["index.jsonl", "monthly-shards"])
@pytest.mark.parametrize("stage", ["bulk", "locked", "placed"])
def test_a_check_killed_while_writing_leaves_no_partial_bundle(tmp_path: Path, stage: str, sharded: bool) -> None:
    root = tmp_path / "archive"
    _shard_first(root, sharded)
    assert subprocess.run(_check_cmd(root), capture_output=True, env=_env(), timeout=120, check=False).returncode == 0
    proc = subprocess.Popen(_check_cmd(root), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=_env(POLICYENGINE_TEST_PAUSE_AT=stage))
    assert proc.stderr is not None
    line = proc.stderr.readline()  # the hook says where it sleeps
    assert line.strip() == f"paused at {stage}".encode(), line
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    result = _verify_all(root)  # the next reader completes or undoes the killed commit
    assert result.returncode == 0, result.stdout
    records = _index(LocalArchive(root))
    expected = 2 if stage == "placed" else 1  # a bundle in place with its digest recorded is completed
    assert len(records) == expected
    zips = sorted(p.relative_to(root).as_posix() for p in (root / "bundles").rglob("*.zip"))
    assert zips == sorted(str(r["path"]) for r in records)
    assert not (root / ".pending.json").exists()

    # The next run chains onto it and removes the killed run's temporary file.
    time.sleep(0.1)
    assert subprocess.run(_check_cmd(root), capture_output=True, env=_env(), timeout=120, check=False).returncode == 0
    assert not list((root / "bundles").rglob("*.part"))
    records = _index(LocalArchive(root))
    assert [r["sequence"] for r in records] == list(range(1, expected + 2))
    assert _verify_all(root).returncode == 0


def test_the_walk_skips_links_it_cannot_read_and_continues_through_their_digests() -> None:
    from policyengine.evidence.format.chain import UNKNOWN, ChainEntry, walk

    key = ("acme/shop", "production")
    a, b, c, d = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)
    entries = [
        ChainEntry("old-1", key, a, a, UNKNOWN, None),  # written before chains existed
        ChainEntry("old-2", key, b, b, UNKNOWN, None),
        ChainEntry("new-1", key, c, c, b, 1),  # the first chained bundle names the last legacy one
        ChainEntry("new-2", key, d, None, UNKNOWN, None),  # unreadable: reported elsewhere
        ChainEntry("new-3", key, "e" * 64, "e" * 64, d, 3),
    ]
    assert walk(entries) == []
    broken = [*entries[:4], ChainEntry("new-3", key, "e" * 64, "e" * 64, c, 3)]
    assert [(p.bundle_id, p.check) for p in walk(broken)] == [("new-3", "chain")]


def test_the_chain_head_is_found_far_from_the_end_of_a_long_index(archive: LocalArchive) -> None:
    first = write(archive, created_at=None)
    from policyengine.evidence.stores.folder import bundle_relpath

    filler = []
    for i in range(2500):  # another chain's records: well over the 1 MiB read first
        bid = f"20240101T000000Z-{i:012x}"
        filler.append({"id": bid, "path": bundle_relpath(bid), "sha256": f"{i:064x}",
                       "created_at": "2024-01-01T00:00:00Z", "decision": "allow", "environment": "staging",
                       "repository": "acme/other", "commit": None,
                       "policy_sha256": "1" * 64, "sequence": i + 1, "previous_sha256": None, "signed_by": None})
    with open(archive.index_path, "a") as f:
        f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in filler)
    assert archive.index_path.stat().st_size > 1 << 20
    second = write(archive, created_at=None)
    record = _index(archive)[-1]
    assert record["id"] == second.id
    assert (record["sequence"], record["previous_sha256"]) == (2, first.sha256)
