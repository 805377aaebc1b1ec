"""The SQLite query cache behind ``evidence list`` and ``audit export``.

The index of record is the store's own (``index.jsonl`` of a folder, ``_index/`` objects of
a bucket); this cache only makes queries fast on large archives. It is rebuilt from the index
of record when it is missing or stale and brought up to date incrementally otherwise: a folder's
cache remembers how many bytes of ``index.jsonl`` it has read and a digest of the last 4 KiB
of them (and the file's inode and modification time), so an append costs only the new lines,
and a rewrite of ``index.jsonl`` (which should never happen) is noticed and causes a rebuild.
Where the cache cannot be written (a read-only copy of an archive) it is built in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COLUMNS = ("id", "created_at", "decision", "environment", "repository", "commit", "path", "sha256",
           "policy_sha256", "sequence", "previous_sha256", "signed_by")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS bundles (
  id TEXT PRIMARY KEY, created_at TEXT NOT NULL, decision TEXT NOT NULL, environment TEXT, repository TEXT,
  "commit" TEXT, path TEXT NOT NULL, sha256 TEXT NOT NULL, policy_sha256 TEXT, sequence INTEGER,
  previous_sha256 TEXT, signed_by TEXT, line INTEGER
);
CREATE INDEX IF NOT EXISTS bundles_created ON bundles (created_at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
PRAGMA user_version = 1;
"""
_TAIL = 4096
_COLS_SQL = ", ".join(f'"{c}"' for c in COLUMNS)


@dataclass(frozen=True)
class Query:
    """Filters of ``evidence list``; ``since`` inclusive, ``until`` exclusive (``...Z`` strings)."""

    since: str | None = None
    until: str | None = None
    environment: str | None = None
    repository: str | None = None
    decision: str | None = None


def _connect(path: Path | None) -> sqlite3.Connection:
    if path is not None:
        try:
            conn = sqlite3.connect(path, timeout=30, isolation_level=None)
            conn.executescript(_SCHEMA)
            return conn
        except sqlite3.Error:
            pass  # read-only or damaged: fall back to a cache in memory
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(_SCHEMA)
    return conn


def _meta(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT key, value FROM meta").fetchall())


def _insert(conn: sqlite3.Connection, records: Iterable[Mapping[str, Any]], first_line: int = 0) -> None:
    conn.executemany(
        # Column names are this module's constants; every value is a bound parameter.
        f"INSERT OR REPLACE INTO bundles ({_COLS_SQL}, line) VALUES ({', '.join('?' * (len(COLUMNS) + 1))})",  # noqa: S608
        ([*(r.get(c) for c in COLUMNS), first_line + i] for i, r in enumerate(records)),
    )


class SqliteIndex:
    """A query cache of one store's index."""

    def __init__(self, path: Path | None) -> None:
        self.conn = _connect(path)

    def close(self) -> None:
        self.conn.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def sync_jsonl(self, index_path: Path, parse: Any) -> int:
        """Bring the cache up to date with ``index.jsonl``; return how many lines could not be read.

        ``parse(data, first_line)`` returns (records, problems) for complete lines.
        """
        try:
            st = os.stat(index_path)
        except FileNotFoundError:
            with self._write():
                self.conn.execute("DELETE FROM bundles")
                self.conn.execute("DELETE FROM meta")
            return 0
        meta = _meta(self.conn)
        stamp = f"{st.st_ino}:{st.st_mtime_ns}"
        if meta.get("size") == str(st.st_size) and meta.get("stamp") == stamp:
            return int(meta.get("bad_lines", "0"))
        with self._write(), open(index_path, "rb") as f:
            meta = _meta(self.conn)  # another reader may have synced meanwhile
            offset = int(meta.get("size", "0"))
            # Rewritten in place (same size, new time), replaced, or shorter: rebuild.
            fresh = (meta.get("inode") != str(st.st_ino) or offset > st.st_size
                     or (offset == st.st_size and meta.get("stamp") != stamp))
            if not fresh and offset:
                f.seek(max(0, offset - _TAIL))
                fresh = hashlib.sha256(f.read(min(offset, _TAIL))).hexdigest() != meta.get("tail")
            if fresh:
                self.conn.execute("DELETE FROM bundles")
                offset, lines, bad = 0, 0, 0
            else:
                lines, bad = int(meta.get("lines", "0")), int(meta.get("bad_lines", "0"))
            f.seek(offset)
            data = f.read()
            end = data.rfind(b"\n") + 1  # only complete lines: a line being appended waits
            data = data[:end]
            if data:
                records, problems = parse(data, lines + 1)
                _insert(self.conn, records, lines)
                lines += data.count(b"\n")
                bad += len(problems)
            offset += end
            f.seek(max(0, offset - _TAIL))
            tail = hashlib.sha256(f.read(min(offset, _TAIL))).hexdigest()
            self.conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [
                ("size", str(offset)), ("inode", str(st.st_ino)), ("stamp", stamp), ("tail", tail),
                ("lines", str(lines)),
                ("bad_lines", str(bad)),
            ])
        if offset != st.st_size:
            # A torn last line: count it, but do not remember the size, so it is read again.
            return bad + 1
        return bad

    def known_ids(self) -> set[str]:
        return {row[0] for row in self.conn.execute("SELECT id FROM bundles")}

    def add(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Add records (a bucket's index objects not seen before)."""
        with self._write():
            start = self.conn.execute("SELECT COALESCE(MAX(line), -1) + 1 FROM bundles").fetchone()[0]
            _insert(self.conn, records, start)

    def remove(self, ids: Iterable[str]) -> None:
        with self._write():
            self.conn.executemany("DELETE FROM bundles WHERE id = ?", ((i,) for i in ids))

    def query(self, q: Query) -> list[dict[str, Any]]:
        """Return the matching records, oldest first."""
        where, args = [], []
        for column, op, value in (
            ("created_at", ">=", q.since), ("created_at", "<", q.until), ("environment", "=", q.environment),
            ("repository", "=", q.repository), ("decision", "=", q.decision),
        ):
            if value is not None:
                where.append(f'"{column}" {op} ?')
                args.append(value)
        sql = f"SELECT {_COLS_SQL} FROM bundles"  # noqa: S608 - constant columns, bound values
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, sequence, id"
        cur = self.conn.execute(sql, args)
        return [dict(zip(COLUMNS, row, strict=True)) for row in cur]
