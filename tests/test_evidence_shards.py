"""A folder archive's index in monthly shards (`evidence migrate`): the same population, read a
month at a time, and an older version that cannot split it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from test_evidence import CHANGE, write

from policyengine.errors import EvidenceError
from policyengine.evidence.stores.folder import LocalArchive
from policyengine.evidence.format.index import Query


class OlderArchive(LocalArchive):
    """A folder archive as a version before sharding writes it: its code path is this one's
    with ``index.jsonl`` taken as the only index (the older version knows no ``index/``)."""

    def sharded(self) -> bool:
        return False


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLICYENGINE_")}
    return subprocess.run([sys.executable, "-m", "policyengine", *args], capture_output=True, text=True,
                          timeout=300, check=False, env=env)


def at(month: int, day: int, hour: int = 12, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, second, tzinfo=timezone.utc)


def _populate(archive: LocalArchive) -> list[str]:
    ids = []
    for month in (1, 2, 3, 4):
        for env in ("production", "staging"):
            ids.append(write(archive, change={**CHANGE, "environment": env}, created_at=at(month, 10)).id)
    return ids


def test_migrate_moves_every_line_byte_for_byte_into_the_shard_of_its_month(tmp_path: Path) -> None:
    archive = LocalArchive(tmp_path / "archive")
    _populate(archive)
    archive.index_path.open("ab").write(b'{"torn": \n')  # an unreadable line goes with the one before it
    before = archive.index_path.read_bytes().splitlines(keepends=True)
    listed = archive.query(Query())
    result = cli("evidence", "migrate", "--archive", str(archive.root))
    assert result.returncode == 0, result.stderr
    assert "9 line(s) moved into 4 shard(s)" in result.stdout
    shards = sorted((archive.root / "index").glob("*.jsonl"))
    assert [p.name for p in shards] == ["2026-01.jsonl", "2026-02.jsonl", "2026-03.jsonl", "2026-04.jsonl"]
    after = [line for p in shards for line in p.read_bytes().splitlines(keepends=True)]
    assert after == before  # (written in month order: same order here)
    for p in shards:
        assert all(json.loads(line)["id"][:6] == p.name[:7].replace("-", "") for line in p.read_bytes().splitlines()
                   if b"torn" not in line)
    assert (archive.root / "index.jsonl").is_dir() and (archive.root / "index.jsonl" / "README").is_file()
    assert not (archive.root / "index.sqlite").exists()
    again = LocalArchive(archive.root)
    assert again.query(Query()) == listed  # the same rows, and the torn line still counted
    records, problems = again.read_index()
    assert len(records) == 8 and len(problems) == 1 and "2026-04.jsonl line 3" in problems[0].message
    assert cli("evidence", "migrate", "--archive", str(archive.root)).returncode == 0  # run again: nothing moves
    assert [p.read_bytes() for p in shards] == [p.read_bytes() for p in sorted((archive.root / "index").glob("*.jsonl"))]


def test_a_sharded_archive_is_written_listed_and_verified_as_before(tmp_path: Path) -> None:
    archive = LocalArchive(tmp_path / "archive")
    ids = _populate(archive)
    archive.migrate()
    ids.append(write(archive, created_at=at(4, 20)).id)
    ids.append(write(archive, created_at=at(5, 1)).id)
    assert (archive.root / "index" / "2026-05.jsonl").is_file()
    assert not (archive.root / "index.jsonl").is_file()
    records, problems = LocalArchive(archive.root).read_index()
    assert [r["id"] for r in records] == ids and not problems
    production = [r["sequence"] for r in records if r["environment"] == "production"]
    assert production == [1, 2, 3, 4, 5, 6]
    report = LocalArchive(archive.root).verify()
    assert report.ok, report.problems
    rows, bad = LocalArchive(archive.root).query(Query(since="2026-02-01T00:00:00Z", until="2026-04-15T00:00:00Z"))
    assert sorted(r["id"] for r in rows) == sorted(ids[2:8]) and bad == 0


def test_a_quarter_reads_only_its_months(tmp_path: Path) -> None:
    archive = LocalArchive(tmp_path / "archive")
    ids = _populate(archive)
    archive.migrate()
    (archive.root / "index" / "2026-01.jsonl").write_bytes(b"not read by a listing of February and March\n")
    rows, bad = LocalArchive(archive.root).query(Query(since="2026-02-01T00:00:00Z", until="2026-04-01T00:00:00Z"))
    assert sorted(r["id"] for r in rows) == sorted(ids[2:6]) and bad == 0
    _, bad = LocalArchive(archive.root).query(Query())
    assert bad == 1  # a listing that covers January reads it, and counts the line
    # verify always reads every shard
    assert not LocalArchive(archive.root).verify().ok


def test_a_line_in_the_shard_of_another_month_is_not_a_record_of_it(tmp_path: Path) -> None:
    archive = LocalArchive(tmp_path / "archive")
    _populate(archive)
    archive.migrate()
    feb, mar = archive.root / "index" / "2026-02.jsonl", archive.root / "index" / "2026-03.jsonl"
    line = feb.read_bytes().splitlines(keepends=True)[0]
    mar.write_bytes(mar.read_bytes() + line)
    feb.write_bytes(b"".join(feb.read_bytes().splitlines(keepends=True)[1:]))
    _, problems = LocalArchive(archive.root).read_index()
    assert any("does not belong in index/2026-03.jsonl" in p.message for p in problems)
    rows, bad = LocalArchive(archive.root).query(Query(since="2026-03-01T00:00:00Z", until="2026-04-01T00:00:00Z"))
    assert bad == 1 and len(rows) == 2


def test_a_chain_across_the_end_of_a_month_is_read_in_its_order(tmp_path: Path) -> None:
    """A bundle created at 23:59:59 on the 31st may be committed after one created at 00:00:01 on the 1st
    (its files took longer to write): shards follow the id's month, chains their sequence."""
    (tmp_path / "archive").mkdir()
    archive = LocalArchive(tmp_path / "archive")
    archive.migrate()  # a new, empty archive sharded from its first write
    first = write(archive, created_at=at(1, 31, 23, 59, 59))
    later = write(archive, created_at=at(2, 1, 0, 0, 1))  # sequence 2, in February's shard
    late = write(archive, created_at=at(1, 31, 23, 59, 58))  # sequence 3, appended to January's shard
    after = write(archive, created_at=at(2, 1, 0, 0, 5))  # builds on sequence 3, not on the last line of February
    assert (first.sequence, later.sequence, late.sequence, after.sequence) == (1, 2, 3, 4)
    records, problems = LocalArchive(archive.root).read_index()
    assert [r["id"] for r in records] == [first.id, later.id, late.id, after.id] and not problems
    report = LocalArchive(archive.root).verify()
    assert report.ok, report.problems


def test_a_lagging_catalogue_never_makes_a_writer_fork_a_chain(tmp_path: Path) -> None:
    (tmp_path / "archive").mkdir()
    archive = LocalArchive(tmp_path / "archive")
    archive.migrate()
    write(archive, created_at=at(1, 5))
    write(archive, created_at=at(1, 6))
    newest = sorted((archive.root / "catalogue").glob("*.json"))[-1]
    newest.unlink()  # the catalogue now names sequence 1 as the head: the writer must not believe it
    third = write(archive, created_at=at(1, 7))
    assert third.sequence == 3


def test_an_older_version_cannot_write_into_a_sharded_archive(tmp_path: Path) -> None:
    archive = LocalArchive(tmp_path / "archive")
    _populate(archive)
    archive.migrate()
    shards = {p.name: p.read_bytes() for p in (archive.root / "index").iterdir()}
    bundles = sorted((archive.root / "bundles").rglob("*"))
    with pytest.raises(EvidenceError, match="Is a directory"):
        write(OlderArchive(archive.root), created_at=at(4, 11))
    assert {p.name: p.read_bytes() for p in (archive.root / "index").iterdir()} == shards
    assert sorted((archive.root / "bundles").rglob("*")) == bundles  # its bundle was removed
    assert (archive.root / "index.jsonl").is_dir()


def test_a_file_index_beside_the_shards_is_refused_until_migrate_merges_it(tmp_path: Path) -> None:
    """Someone removed the index.jsonl folder and an older version wrote there: never half a population."""
    archive = LocalArchive(tmp_path / "archive")
    ids = _populate(archive)
    archive.migrate()
    (archive.root / "index.jsonl" / "README").unlink()
    (archive.root / "index.jsonl").rmdir()
    stray = write(OlderArchive(archive.root), change={**CHANGE, "environment": "production"}, created_at=at(4, 11))
    assert archive.index_path.is_file()
    for action in (lambda a: a.query(Query()), lambda a: a.read_index(), lambda a: a.verify(),
                   lambda a: write(a, created_at=at(4, 12))):
        with pytest.raises(EvidenceError, match="is a file, but this archive's index is sharded"):
            action(LocalArchive(archive.root))
    result = cli("evidence", "list", "--archive", str(archive.root))
    assert result.returncode != 0 and "evidence migrate" in result.stderr and "Traceback" not in result.stderr
    result = cli("evidence", "migrate", "--archive", str(archive.root))
    assert result.returncode == 0 and "1 line(s) written by an older version merged" in result.stdout
    rows, _ = LocalArchive(archive.root).query(Query())
    assert sorted(r["id"] for r in rows) == sorted([*ids, stray.id])
    report = LocalArchive(archive.root).verify()  # it restarted the chain: reported, not hidden
    assert any(p.bundle_id == stray.id and p.check == "chain" for p in report.problems)


def test_a_symlinked_shard_cache_is_refused(tmp_path: Path) -> None:
    archive = LocalArchive(tmp_path / "archive")
    _populate(archive)
    archive.migrate()
    target = tmp_path / "elsewhere.sqlite"
    target.write_bytes(b"")
    (archive.root / "index" / "2026-02.sqlite").symlink_to(target)
    with pytest.raises(EvidenceError, match="symbolic link"):
        LocalArchive(archive.root).query(Query(since="2026-02-01T00:00:00Z", until="2026-03-01T00:00:00Z"))
    assert target.read_bytes() == b""

