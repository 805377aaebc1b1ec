"""Ways around the evidence checks: a bundle rewritten as an old schema, an index line that
disagrees with its bundle, `verify` of something that is not an archive, odd bundle times."""

from __future__ import annotations

import hashlib
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("cryptography")
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from test_evidence import CHANGE, problems_of, write

from policyengine.errors import UsageError
from policyengine.evidence.stores.folder import LocalArchive
from policyengine.evidence.format.bundle import ATTESTATION, DECISION, MANIFEST
from policyengine.evidence.format.index import COLUMNS, Query
from policyengine.evidence.format.signing import load_public_key, load_signing_key


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLICYENGINE_")}
    return subprocess.run([sys.executable, "-m", "policyengine", *args], capture_output=True, text=True,
                          timeout=300, check=False, env=env)


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    key = ed25519.Ed25519PrivateKey.generate()
    priv, pub = tmp_path / "signing.pem", tmp_path / "signing.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


@pytest.fixture
def archive(tmp_path: Path) -> LocalArchive:
    return LocalArchive(tmp_path / "archive")


def _index(archive: LocalArchive) -> list[dict[str, Any]]:
    return [json.loads(line) for line in archive.index_path.read_text().splitlines()]


def _write_index(archive: LocalArchive, records: list[dict[str, Any]]) -> None:
    archive.index_path.write_text("".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n"
                                          for r in records))


def forge_old_schema(archive: LocalArchive, bundle_id: str, *, version: Any = 1, keep_chain: bool = False) -> None:
    """Rewrite a bundle as a forger would: decision flipped to allow, schema ``version``, no
    statement (and no chain link unless ``keep_chain``), every digest recomputed, the index line
    fixed up to match."""
    records = _index(archive)
    record = next(r for r in records if r["id"] == bundle_id)
    path = archive.root / record["path"]
    with zipfile.ZipFile(path) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    members.pop(ATTESTATION)
    manifest = json.loads(members.pop(MANIFEST))
    decision = json.loads(members[DECISION])
    decision["decision"] = "allow"
    members[DECISION] = json.dumps(decision).encode()
    manifest["schema_version"] = version
    if not keep_chain:
        manifest.pop("chain", None)
    manifest["members"] = [{"path": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
                           for n, d in members.items()]
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr(MANIFEST, json.dumps(manifest))
    record.update(sha256=hashlib.sha256(path.read_bytes()).hexdigest(), decision="allow", signed_by=None)
    if not keep_chain:
        record.update(sequence=None, previous_sha256=None)
    _write_index(archive, records)


# -- schema downgrade ------------------------------------------------------------------------


def test_a_signed_bundle_rewritten_as_schema_1_fails_verify_and_show_with_the_key(
        archive: LocalArchive, keys: tuple[Path, Path]) -> None:
    priv, pub = keys
    key = load_signing_key(str(priv))
    ref = write(archive, signing_key=key)
    forge_old_schema(archive, ref.id)

    report = archive.verify(public_key=load_public_key(str(pub)))
    assert (ref.id, ATTESTATION, "signature") in problems_of(report)
    result = cli("evidence", "verify", "--archive", str(archive.root), "--all", "--public-key", str(pub))
    assert result.returncode == 1, result.stdout
    assert "FAIL  signature" in result.stdout and "schema_version 1" in result.stdout
    shown = cli("evidence", "show", "--archive", str(archive.root), "--public-key", str(pub), ref.id)
    assert shown.returncode == 1
    assert "integrity   ok" not in shown.stdout and "integrity   FAILED" in shown.stdout


def test_an_old_schema_bundle_without_a_key_is_shown_as_unverified_never_ok(archive: LocalArchive) -> None:
    ref = write(archive)
    forge_old_schema(archive, ref.id)
    shown = cli("evidence", "show", "--archive", str(archive.root), ref.id)
    assert "integrity   ok" not in shown.stdout
    assert "NOT PROVEN" in shown.stdout and "unsigned" in shown.stdout
    verified = cli("evidence", "verify", "--archive", str(archive.root), "--all")
    assert f"UNSIGNED  bundle {ref.id}" in verified.stdout


def test_a_signed_bundle_without_a_key_is_not_called_ok_by_show(
        archive: LocalArchive, keys: tuple[Path, Path]) -> None:
    ref = write(archive, signing_key=load_signing_key(str(keys[0])))
    shown = cli("evidence", "show", "--archive", str(archive.root), ref.id)
    assert shown.returncode == 0
    assert "integrity   ok" not in shown.stdout and "NOT PROVEN" in shown.stdout
    shown = cli("evidence", "show", "--archive", str(archive.root), "--public-key", str(keys[1]), ref.id)
    assert shown.returncode == 0 and "integrity   ok" in shown.stdout


def test_schema_versions_never_decrease_along_a_chain(archive: LocalArchive) -> None:
    write(archive)
    second = write(archive)
    forge_old_schema(archive, second.id)
    report = archive.verify()
    assert (second.id, None, "chain") in problems_of(report)
    assert any("schema_version 1" in p.message for p in report.problems)


@pytest.mark.parametrize("version", [2.0, "2", True, 1.0, None, 0, -3, [2]])
def test_a_schema_version_that_is_not_a_known_integer_is_invalid(archive: LocalArchive, version: Any) -> None:
    ref = write(archive)
    forge_old_schema(archive, ref.id, version=version, keep_chain=True)
    report = archive.verify()
    assert (ref.id, MANIFEST, "manifest") in problems_of(report), report.problems
    assert not report.ok


def test_a_bundle_of_a_newer_schema_says_upgrade(archive: LocalArchive) -> None:
    ref = write(archive)
    forge_old_schema(archive, ref.id, version=4, keep_chain=True)
    report = archive.verify()
    assert any("made by a newer version of policyengine" in p.message and "upgrade" in p.message
               for p in report.problems), report.problems
    verified = cli("evidence", "verify", "--archive", str(archive.root), "--all")
    assert verified.returncode == 1 and "upgrade" in verified.stdout


# -- index lines against their bundles ---------------------------------------------------------


@pytest.mark.parametrize(("field", "value"), [
    ("repository", "acme/other"), ("environment", "staging"), ("commit", "b" * 40), ("decision", "allow"),
    ("signed_by", "c" * 64), ("sequence", 7), ("sequence", True), ("previous_sha256", "d" * 64),
    ("policy_sha256", "e" * 64), ("created_at", "2030-01-01T00:00:00Z"), ("repository", None),
    ("commit", None),
])
def test_every_field_of_an_index_line_is_held_against_its_bundle(
        archive: LocalArchive, field: str, value: Any) -> None:
    write(archive)
    ref = write(archive)
    records = _index(archive)
    records[-1][field] = value
    _write_index(archive, records)
    report = archive.verify()
    mine = [p for p in report.problems if p.check == "index" and p.bundle_id == ref.id]
    assert any(f" {field} " in p.message for p in mine), report.problems
    result = cli("evidence", "verify", "--archive", str(archive.root), "--all")
    assert result.returncode == 1 and f"bundle {ref.id}" in result.stdout and field in result.stdout


def test_an_index_line_naming_another_id_or_path_is_caught(archive: LocalArchive) -> None:
    ref = write(archive)
    records = _index(archive)
    records[0]["id"] = "20240501T123045Z-000000000000"
    _write_index(archive, records)
    assert not archive.verify().ok
    records[0]["id"] = ref.id
    records[0]["path"] = "bundles/2024/05/other.zip"
    _write_index(archive, records)
    assert not archive.verify().ok


def test_a_bundle_moved_to_another_chain_in_its_index_line_is_grouped_by_what_it_states(
        archive: LocalArchive) -> None:
    write(archive)
    moved = write(archive)
    records = _index(archive)
    records[-1]["environment"] = "staging"  # as if it started the staging chain... but it names its predecessor
    records[-1]["sequence"] = 1
    records[-1]["previous_sha256"] = None
    _write_index(archive, records)
    report = archive.verify()
    assert (moved.id, None, "index") in problems_of(report)


# -- verify of something that is not an archive -------------------------------------------------


def test_verify_of_an_empty_folder_is_an_error_not_ok(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("evidence", "verify", "--archive", str(empty), "--all")
    assert result.returncode == 2, result.stdout
    assert "ok:" not in result.stdout and "not an evidence archive" in result.stderr
    with pytest.raises(UsageError):
        LocalArchive(empty).verify()


def test_verify_of_a_folder_that_is_no_archive_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "src"
    (folder / "pkg").mkdir(parents=True)
    (folder / "pkg" / "thing.zip").write_bytes(b"PK")
    (folder / "README").write_text("hello")
    result = cli("evidence", "verify", "--archive", str(folder))
    assert result.returncode == 2 and "ok:" not in result.stdout
    assert "neither index.jsonl nor bundles/" in result.stderr


def test_verify_of_an_archive_with_an_empty_bundles_folder_and_no_index_has_nothing_to_verify(
        tmp_path: Path) -> None:
    (tmp_path / "a" / "bundles").mkdir(parents=True)
    result = cli("evidence", "verify", "--archive", str(tmp_path / "a"))
    assert result.returncode == 2 and "nothing to verify" in result.stderr


def test_an_archive_that_lost_its_index_fails_verify_naming_the_index(archive: LocalArchive) -> None:
    write(archive)
    archive.index_path.unlink()
    result = cli("evidence", "verify", "--archive", str(archive.root), "--all")
    assert result.returncode == 1 and "ok:" not in result.stdout
    assert "index.jsonl is missing" in result.stdout
    listed = cli("evidence", "list", "--archive", str(archive.root), "--json")
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 1


# -- times --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("evaluated", "warned"), [
    ("2024-05-01T12:30:45Z", False), ("2024-05-01T12:20:00Z", False),
    ("2024-05-01T12:31:00Z", True), ("2024-05-01T12:00:00Z", True),
])
def test_a_bundle_created_before_or_long_after_its_evaluation_is_a_warning(
        archive: LocalArchive, evaluated: str, warned: bool) -> None:
    ref = write(archive, decision={"decision": "allow", "rules": [], "evaluated_at": evaluated},
                created_at=datetime(2024, 5, 1, 12, 30, 45, tzinfo=timezone.utc))
    report = archive.verify()
    assert report.ok
    assert bool(report.warnings) is warned
    result = cli("evidence", "verify", "--archive", str(archive.root))
    assert result.returncode == 0
    assert (f"warning: bundle {ref.id}" in result.stdout) is warned
    shown = cli("evidence", "show", "--archive", str(archive.root), ref.id)
    assert ("warning:" in shown.stdout) is warned



# -- the query cache is derived data --------------------------------------------------------------


def _populate(archive: LocalArchive) -> list[str]:
    ids = []
    for i in range(6):
        env = "production" if i % 2 == 0 else "staging"
        ids.append(write(archive, change={**CHANGE, "environment": env},
                         decision={"decision": "allow" if i < 4 else "deny", "rules": []},
                         created_at=datetime(2026, 10, 10 + i, 12, 0, tzinfo=timezone.utc)).id)
    return ids


def _listed(archive: LocalArchive, *args: str) -> list[dict[str, Any]]:
    result = cli("evidence", "list", "--archive", str(archive.root), "--json", *args)
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


@pytest.mark.parametrize("sql", [
    "DELETE FROM bundles WHERE environment = 'staging'",
    "DELETE FROM bundles WHERE decision = 'deny'",
    "DELETE FROM bundles",
    "UPDATE bundles SET created_at = '1999-01-01T00:00:00Z' WHERE decision = 'deny'",
    "UPDATE bundles SET environment = 'elsewhere' WHERE environment = 'staging'",
    "UPDATE bundles SET decision = 'allow'",
    "UPDATE bundles SET \"commit\" = 'forged', signed_by = 'x' WHERE decision = 'deny'",
    "UPDATE bundles SET id = '20261011T120000Z-000000000000' WHERE id = (SELECT MAX(id) FROM bundles)",
    ("INSERT INTO bad_lines (line) SELECT line FROM bundles WHERE decision = 'deny'; "
     "DELETE FROM bundles WHERE decision = 'deny'"),
    "UPDATE bundles SET line = line + 100 WHERE decision = 'deny'",
    # The cache only names lines; each is read back from index.jsonl, and the period's lines are counted there.
    "UPDATE bundles SET created_at = '2026-09-30T00:00:00Z' WHERE decision = 'deny'",
    "UPDATE bundles SET created_at = '2027-01-01T00:00:00Z', decision = 'allow' WHERE line = 5",
    ("UPDATE bundles SET pos = (SELECT pos FROM bundles WHERE line = 0), "
     "size = (SELECT size FROM bundles WHERE line = 0) WHERE line = 5"),
    "UPDATE bundles SET size = size - 1 WHERE line = 3",
    "UPDATE bundles SET pos = pos + size + 1 WHERE line = 2",
    "UPDATE bundles SET pos = NULL WHERE line = 1",
    # Its own B-tree index is not trusted either: a row missing from it is missed by the period's query.
    ("DROP INDEX bundles_created; CREATE INDEX bundles_created ON bundles (created_at) WHERE decision = 'allow'; "
     "PRAGMA writable_schema = ON; UPDATE sqlite_master SET sql = 'CREATE INDEX bundles_created ON bundles "
     "(created_at)' WHERE name = 'bundles_created'; PRAGMA writable_schema = OFF"),
    # Nor its schema: a table without the primary key naming one line twice, in place of another.
    ("CREATE TABLE t AS SELECT * FROM bundles; DROP TABLE bundles; CREATE TABLE bundles AS SELECT * FROM t; "
     "UPDATE bundles SET pos = (SELECT pos FROM t WHERE line = 4), size = (SELECT size FROM t WHERE line = 4), "
     "id = (SELECT id FROM t WHERE line = 4) WHERE line = 5; DROP TABLE t"),
])
@pytest.mark.parametrize("sharded", [False, True], ids=["index.jsonl", "monthly-shards"])
def test_a_cache_edited_in_place_is_noticed_and_rebuilt(archive: LocalArchive, sql: str, sharded: bool) -> None:
    ids = _populate(archive)
    if sharded:  # the same checks hold per shard: each month's cache against its own shard
        archive.migrate()
    truth = _listed(archive)
    assert [r["id"] for r in truth] == ids
    cache = archive.root / ("index/2026-10.sqlite" if sharded else "index.sqlite")
    assert cache.is_file()
    with sqlite3.connect(cache) as conn:
        conn.executescript(sql)
    result = cli("evidence", "list", "--archive", str(archive.root), "--json", "--since", "2026-10-01")
    assert json.loads(result.stdout) == truth  # (rows cut from the end are simply read again)
    assert _listed(archive, "--decision", "deny") == [r for r in truth if r["decision"] == "deny"]
    assert _listed(archive, "--environment", "staging") == [r for r in truth if r["environment"] == "staging"]
    rows, bad = archive.query(Query())
    # The listing adds the advisory and simulated flags to the index columns (`evidence list --json`).
    assert [{c: r.get(c) for c in COLUMNS} for r in rows] == [{c: t[c] for c in COLUMNS} for t in truth] and bad == 0


def test_the_cache_follows_appends_and_keeps_counting_unreadable_lines(archive: LocalArchive) -> None:
    _populate(archive)
    assert len(_listed(archive)) == 6
    with archive.index_path.open("ab") as f:
        f.write(b'{"not": "a record"}\n')
    write(archive)
    result = cli("evidence", "list", "--archive", str(archive.root), "--json")
    assert len(json.loads(result.stdout)) == 7 and "1 index record(s) cannot be read" in result.stderr
    assert "rebuilt" not in result.stderr
    with sqlite3.connect(archive.root / "index.sqlite") as conn:
        conn.execute("DELETE FROM bad_lines")
    result = cli("evidence", "list", "--archive", str(archive.root), "--json")
    assert len(json.loads(result.stdout)) == 7 and "1 index record(s) cannot be read" in result.stderr


def test_an_index_with_an_escaped_character_is_answered_from_every_line(archive: LocalArchive) -> None:
    """A backslash anywhere in index.jsonl could hide a line from the period's count: every line is decoded then."""
    _populate(archive)
    records = _index(archive)
    records[5]["repository"] = 'acme/"shop"'  # written as \"shop\"
    _write_index(archive, records)
    truth = [r["id"] for r in records if r["created_at"] >= "2026-10-12"]
    assert [r["id"] for r in _listed(archive, "--since", "2026-10-12")] == truth
    with sqlite3.connect(archive.root / "index.sqlite") as conn:  # the cache hides the deny of the 15th
        conn.execute("UPDATE bundles SET created_at = '2026-01-01T00:00:00Z' WHERE line = 5")
    assert [r["id"] for r in _listed(archive, "--since", "2026-10-12")] == truth
    assert _listed(archive, "--repository", 'acme/"shop"')[0]["id"] == records[5]["id"]


def test_an_unusually_written_index_line_is_read_in_full(archive: LocalArchive) -> None:
    ids = _populate(archive)
    records = _index(archive)
    archive.index_path.write_text("".join(json.dumps(r, ensure_ascii=True) + "\n" for r in reversed(records[:1]))
                                  + "".join(json.dumps(r, sort_keys=True) + "\n" for r in records[1:]))
    assert [r["id"] for r in _listed(archive)] == ids
    result = cli("evidence", "list", "--archive", str(archive.root))
    assert "rebuilt" not in result.stderr


def test_an_archive_that_lost_its_index_is_listed_from_its_bundles(archive: LocalArchive) -> None:
    ids = _populate(archive)
    truth = _listed(archive)
    archive.index_path.unlink()
    (archive.root / "index.sqlite").unlink()
    result = cli("evidence", "list", "--archive", str(archive.root), "--json", "--since", "2026-10-12",
                 "--environment", "production")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [r for r in truth if r["created_at"] >= "2026-10-12"
                                         and r["environment"] == "production"]
    assert [r["id"] for r in truth] == ids
    assert "index.jsonl is missing: listed from the bundles themselves" in result.stderr


def test_a_damaged_cache_file_is_rebuilt_not_a_crash(archive: LocalArchive) -> None:
    """index.sqlite whose pages are overwritten ("database disk image is malformed"): derived data."""
    import random

    _populate(archive)
    truth = _listed(archive, "--since", "2026-10-11")
    db = archive.root / "index.sqlite"
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) > 2 * page
    rng = random.Random(5)
    data[page:] = bytes(rng.randrange(256) for _ in range(len(data) - page))  # all but the schema page
    db.write_bytes(bytes(data))
    result = cli("evidence", "list", "--archive", str(archive.root), "--json", "--since", "2026-10-11")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == truth
    assert "the query cache index.sqlite was damaged" in result.stderr
    again = cli("evidence", "list", "--archive", str(archive.root), "--json", "--since", "2026-10-11")
    assert json.loads(again.stdout) == truth and "damaged" not in again.stderr


def _truth(index: Path, q: Query) -> list[dict[str, Any]]:
    """What every line of index.jsonl says, decoded one by one (the first line of each id), filtered."""
    from policyengine.evidence.stores.folder import _parse_line

    seen, out = set(), []
    for raw in index.read_bytes().split(b"\n")[:-1]:
        try:
            record = _parse_line(raw)
        except ValueError:
            continue
        if record["id"] in seen:
            continue
        seen.add(record["id"])
        created = record["created_at"]
        if ((q.since is None or created >= q.since) and (q.until is None or created < q.until)
                and (q.environment is None or record.get("environment") == q.environment)
                and (q.decision is None or record.get("decision") == q.decision)):
            out.append(record)
    out.sort(key=lambda r: (r["created_at"], r.get("sequence") is not None, r.get("sequence") or 0, r["id"]))
    return [{c: r.get(c) for c in COLUMNS} for r in out]


@pytest.mark.parametrize("sharded", [False, True], ids=["index.jsonl", "monthly-shards"])
@pytest.mark.parametrize("seed", range(12))
def test_no_edit_of_the_index_or_the_cache_changes_what_a_full_decode_lists(tmp_path: Path, seed: int,
                                                                           sharded: bool) -> None:
    """Random edits of index.jsonl (reordered, repeated, unreadable, escaped lines) and of index.sqlite
    (rows, offsets, ids, times, whole tables): every answer equals decoding every line."""
    import random
    import sqlite3 as sq

    rng = random.Random(seed)
    root = tmp_path / "archive"
    root.mkdir()
    index = root / "index.jsonl"
    lines = []
    for i in range(60):
        bid = f"202610{10 + i // 6:02d}T12{i % 6:02d}00Z-{rng.getrandbits(48):012x}"
        record = {"commit": "a" * 40, "created_at": f"2026-10-{10 + i // 6:02d}T12:{i % 6:02d}:00Z",
                  "decision": rng.choice(["allow", "deny"]), "environment": rng.choice(["production", "staging"]),
                  "id": bid, "path": f"bundles/2026/10/{bid}.zip", "policy_sha256": "1" * 64,
                  "previous_sha256": None, "repository": "acme/shop", "sequence": i + 1, "sha256": "2" * 64,
                  "signed_by": None}
        lines.append(json.dumps(record, sort_keys=True))
    index.write_text("\n".join(lines) + "\n")
    archive = LocalArchive(root)
    cache = root / "index.sqlite"
    if sharded:  # one shard (October), checked against its own cache
        archive.migrate()
        index, cache = root / "index" / "2026-10.jsonl", root / "index" / "2026-10.sqlite"
    queries = [Query(), Query(since="2026-10-12T00:00:00Z", until="2026-10-15T00:00:00Z"),
               Query(since="2026-10-13T12:02:00Z", environment="staging"), Query(until="2026-10-11T00:00:00Z",
                                                                                  decision="deny")]

    def check() -> None:
        for q in queries:
            rows, _ = LocalArchive(root).query(q)
            assert [{c: r.get(c) for c in COLUMNS} for r in rows] == _truth(index, q), (seed, q)

    check()
    edits_of_file = [
        lambda ls: ls.insert(rng.randrange(len(ls)), ls[rng.randrange(len(ls))]),  # a repeated line
        lambda ls: ls.insert(rng.randrange(len(ls)), '{"not": "a record"}'),
        lambda ls: ls.__setitem__(rng.randrange(len(ls)), ls[rng.randrange(len(ls))].replace(
            '"created_at": "2026-10-1', '"created_at": "2026-10-\\u0031')),  # an escape
        lambda ls: ls.__setitem__(rng.randrange(len(ls)), ls[rng.randrange(len(ls))].replace(
            '"decision"', '"created_at": "2026-10-12T00:00:00Z", "decision"', 1)),  # a key twice
        lambda ls: rng.shuffle(ls),
        lambda ls: ls.append(ls[0].replace("acme/shop", 'acme/"shop"')),
    ]
    edits_of_cache = [
        "UPDATE bundles SET created_at = '1999-01-01T00:00:00Z' WHERE line = {n}",
        "DELETE FROM bundles WHERE line = {n}",
        "UPDATE bundles SET pos = pos + 1 WHERE line = {n}",
        "UPDATE bundles SET id = (SELECT id FROM bundles WHERE line = 0) || 'x' WHERE line = {n}",
        "UPDATE bundles SET environment = 'staging', decision = 'deny' WHERE line = {n}",
        "DELETE FROM bad_lines",
        "INSERT INTO bad_lines (line) VALUES ({n})",
        "UPDATE bundles SET line = line + 1 WHERE line >= {n}",
        "DROP INDEX bundles_created",
    ]
    for sql in rng.sample(edits_of_cache, len(edits_of_cache)):  # each edit of the cache, in some order
        if rng.random() < 0.3:
            current = index.read_text().splitlines()
            rng.choice(edits_of_file)(current)
            index.write_text("\n".join(current) + "\n")
            check()
        with sq.connect(cache) as conn:
            n = conn.execute("SELECT count(*) FROM bundles").fetchone()[0]
            with contextlib.suppress(sq.Error):
                conn.executescript(sql.format(n=rng.randrange(12, max(n, 13))))  # (a line of the periods)
        check()


def test_the_background_hash_is_sha256_of_every_byte_in_order_small_and_large() -> None:
    """Members of 64 KiB and more are hashed on another thread (the queue is made with it): the
    digest is hashlib's of the same bytes whichever way each chunk went, and with no large chunk
    no thread is started."""
    from policyengine.evidence.format.bundle import BackgroundHash

    rng = __import__("random").Random(5)
    for sizes in ([3], [70_000], [10, 70_000, 5, 200_000, 3, 65_536, 65_535], [0, 1 << 20, 0]):
        chunks = [rng.randbytes(n) for n in sizes]
        background = BackgroundHash()
        for chunk in chunks:
            background.update(chunk)
        assert background.hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest(), sizes
        assert background.hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest()  # asked twice: the same
        assert (background._thread is None) == all(n < 65_536 for n in sizes)
