"""The SQLite query cache behind ``evidence list`` and ``audit export``.

The index of record is the store's own (``index.jsonl`` of a folder, ``_index/`` objects of
a bucket); this cache only makes queries fast on large archives, and is never trusted: a value
stored beside it would prove nothing to someone able to edit it. Before each use, a folder's
cache is compared with ``index.jsonl`` itself: the number of lines and, per line, the id and
every field a query filters on, read from the file with one regular expression over it (our
lines are written with sorted keys), not by JSON-decoding every line. A cache that holds
exactly the first lines gets the new ones (an append costs only the new lines); one that
disagrees is rebuilt and ``notes`` says so. Each row an answer returns is compared with its
line too. Where the cache cannot be written (a read-only copy of an archive) it is built in memory.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # sqlite3 costs ~30 ms to import: only `evidence list`/export need it
    import sqlite3

COLUMNS = ("id", "created_at", "decision", "environment", "repository", "commit", "path", "sha256",
           "policy_sha256", "sequence", "previous_sha256", "signed_by", "kind", "about_id")
# ``kind`` is null for an evaluation (lines written before linked records existed carry none);
# ``about_id`` names the evaluation a linked record (outcome, review) is about.
_VERSION = 3
_SCHEMA = """
CREATE TABLE IF NOT EXISTS bundles (
  id TEXT PRIMARY KEY, created_at TEXT NOT NULL, decision TEXT NOT NULL, environment TEXT, repository TEXT,
  "commit" TEXT, path TEXT NOT NULL, sha256 TEXT NOT NULL, policy_sha256 TEXT, sequence INTEGER,
  previous_sha256 TEXT, signed_by TEXT, kind TEXT, about_id TEXT, line INTEGER
);
CREATE INDEX IF NOT EXISTS bundles_created ON bundles (created_at);
CREATE INDEX IF NOT EXISTS bundles_line ON bundles (line);
CREATE TABLE IF NOT EXISTS bad_lines (line INTEGER PRIMARY KEY);
PRAGMA user_version = 3;
"""
_COLS_SQL = ", ".join(f'"{c}"' for c in COLUMNS)


def _sql_tok(c: str) -> str:
    return f"""(CASE WHEN "{c}" IS NULL THEN 'null' WHEN typeof("{c}") = 'text' THEN '"' || "{c}" || '"' ELSE '?' END)"""


# What the consistency check compares per line: the id and every column a query filters on, as
# the two spans of our lines that hold them (keys are sorted: created_at, decision, environment
# and id are neighbours; repository comes later).
_SPAN_SQL = " || ', ' || ".join(f"""'"{c}": ' || {_sql_tok(c)}""" for c in ("created_at", "decision", "environment",
                                                                          "id"))
_REPO_SQL = f"""'"repository": ' || {_sql_tok("repository")}"""
_REBUILT = ("the query cache index.sqlite disagreed with index.jsonl and was rebuilt from it "
            "(index.jsonl is the record; the cache is only derived from it)")
_STR = rb'"[^"\\\x00-\x1f]*"'
_OPT = rb'(?:null|' + _STR + rb')'
# One of our own index lines (json.dumps with sort_keys, no escapes): groups created_at,
# decision, environment, id, repository as JSON tokens. Anything else is decoded in full.
_FAST_LINE = re.compile(
    rb'\{"commit": ' + _OPT + rb', "created_at": (' + _STR + rb'), "decision": (' + _STR + rb'), '
    rb'"environment": (' + _OPT + rb'), "id": (' + _STR + rb'), "path": ' + _STR + rb', '
    rb'"policy_sha256": ' + _STR + rb', "previous_sha256": ' + _OPT + rb', "repository": (' + _OPT + rb'), '
    rb'"sequence": (?:null|[0-9]+), "sha256": ' + _STR + rb', "signed_by": ' + _OPT + rb'\}'
)
_SPAN_RE = re.compile(rb'"created_at": ' + _STR + rb', "decision": ' + _STR + rb', "environment": ' + _OPT
                      + rb', "id": ' + _STR)
_REPO_RE = re.compile(rb'"repository": ' + _OPT)


def _no_parser(raw: bytes) -> dict[str, Any]:
    raise ValueError("no parser")


def _tok(value: Any) -> str:
    """A value as the cache's spans show it: ``null``, ``"text"`` (unescaped), else ``?``."""
    if value is None:
        return "null"
    return f'"{value}"' if isinstance(value, str) else "?"


@dataclass(frozen=True)
class Query:
    """Filters of ``evidence list``; ``since`` inclusive, ``until`` exclusive (``...Z`` strings)."""

    since: str | None = None
    until: str | None = None
    environment: str | None = None
    repository: str | None = None
    decision: str | None = None
    kind: str | None = None
    """``evaluation`` (rows without a kind too), ``outcome``, ``review``."""


def _connect(path: Path | None) -> sqlite3.Connection:
    import sqlite3

    if path is not None:
        try:
            conn = sqlite3.connect(path, timeout=30, isolation_level=None)
            if conn.execute("PRAGMA user_version").fetchone()[0] != _VERSION:
                # A cache of an older layout: it is only derived, so drop it (rebuilt from the index).
                conn.executescript("DROP TABLE IF EXISTS bundles; DROP TABLE IF EXISTS bad_lines;")
            conn.executescript(_SCHEMA)
            return conn
        except sqlite3.Error:
            pass  # read-only or damaged: fall back to a cache in memory
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.executescript(_SCHEMA)
    return conn


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
        self.notes: list[str] = []
        self._data = b""
        self._split: list[bytes] | None = None
        self._parse_line: Callable[[bytes], dict[str, Any]] = _no_parser

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

    # -- a folder's index.jsonl ------------------------------------------------------------

    def _cache_view(self) -> tuple[list[str], list[str]] | None:
        """Per line, in line order, the cache's two spans; None when its line numbers do not add up."""
        rows = self.conn.execute(
            f"SELECT line, {_SPAN_SQL}, {_REPO_SQL} FROM bundles ORDER BY line"  # noqa: S608 - constant columns
        ).fetchall()
        bad = self.conn.execute("SELECT line, '!', '!' FROM bad_lines ORDER BY line").fetchall()
        if bad:
            rows = sorted(rows + bad, key=lambda r: r[0] if type(r[0]) is int else -1)
        if [r[0] for r in rows] != list(range(len(rows))):
            return None
        return [r[1] for r in rows], [r[2] for r in rows]

    @property
    def _lines(self) -> list[bytes]:
        if self._split is None:
            self._split = self._data.split(b"\n")[:-1] if self._data else []
        return self._split

    def sync_jsonl(self, data: bytes, parse_line: Callable[[bytes], dict[str, Any]]) -> int:
        """Make the cache agree with ``data`` (the bytes of ``index.jsonl``); return how many lines are unreadable.

        The cache is never trusted: each time, its rows (count, and per line the id, created_at,
        decision, environment and repository: what queries filter on) are compared with the
        lines of ``index.jsonl``, which are read with one regular expression over the whole
        file, not JSON-decoded (our lines are written with sorted keys; when that view differs
        from the cache's, each line is looked at, and any line of another shape is decoded).
        When the cache holds exactly a prefix of the lines, the new lines are added; when it
        disagrees, it is rebuilt and ``notes`` says so. Only complete lines count: a torn last
        line is unreadable.
        """
        end = data.rfind(b"\n") + 1
        self._data = data[:end]
        self._split = None
        self._parse_line = parse_line
        torn = 0 if end == len(data) else 1
        if self._agrees() is True:
            return self._bad_count() + torn
        with self._write():
            state = self._agrees()  # another process may have synced meanwhile
            if state is not True:
                if state is False:
                    self.notes.append(_REBUILT)
                    self.conn.execute("DELETE FROM bundles")
                    self.conn.execute("DELETE FROM bad_lines")
                    start = 0
                else:
                    start = state
                self._add_lines(start)
        return self._bad_count() + torn

    def _bad_count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM bad_lines").fetchone()[0])

    def _agrees(self) -> bool | int:
        """True: the cache holds exactly the lines; an int n: it holds exactly the first n; False: it disagrees."""
        count = self._data.count(b"\n")
        fast = self._fast_view()
        if fast is not None:
            n, spans_blob, repos_blob = fast
            if n > count:
                return False
            prefix = self._data if n == count else b"".join(line + b"\n" for line in self._lines[:n])
            # One regular expression over the whole file for each span: our lines hold one match each.
            found_spans, found_repos = _SPAN_RE.findall(prefix), _REPO_RE.findall(prefix)
            if (len(found_spans) == len(found_repos) == n and b"\n".join(found_spans) == spans_blob
                    and b"\n".join(found_repos) == repos_blob):
                return True if n == count else n
        # Unreadable or repeated lines, lines of another shape, or a disagreement: look at each line.
        view = self._cache_view()
        if view is None or len(view[0]) > count:
            return False
        spans, repos = view
        seen: set[str] = set()
        for i in range(len(spans)):
            if self._line_spans(i, spans[i] == "!", seen) != (spans[i], repos[i]):
                return False
        return True if len(spans) == count else len(spans)

    def _fast_view(self) -> tuple[int, bytes, bytes] | None:
        """The cache's spans of every line joined, when it records no unreadable line (else None)."""
        if self._bad_count():
            return None
        n, low, high, spans, repos = self.conn.execute(
            "SELECT count(*), min(line), max(line), group_concat(s, char(10)), group_concat(r, char(10)) FROM "
            f"(SELECT line, {_SPAN_SQL} AS s, {_REPO_SQL} AS r FROM bundles ORDER BY line)"  # noqa: S608
        ).fetchone()
        if n and (low != 0 or high != n - 1):
            return None
        return (int(n), (spans or "").encode("utf-8", "surrogatepass"),
                (repos or "").encode("utf-8", "surrogatepass"))

    def _line_spans(self, i: int, recheck: bool, seen: set[str]) -> tuple[str, str]:
        """What line ``i`` says, as the cache's spans (``!`` when it is not a readable, first record of its id)."""
        raw = self._lines[i]
        if not recheck and _FAST_LINE.fullmatch(raw):
            m, repo = _SPAN_RE.search(raw), _REPO_RE.search(raw)
            if m is not None and repo is not None:
                bid = m.group(0).rsplit(b'"id": ', 1)[1].decode("utf-8", "surrogatepass")
                if bid in seen:
                    return "!", "!"
                seen.add(bid)
                return m.group(0).decode("utf-8", "surrogatepass"), repo.group(0).decode("utf-8", "surrogatepass")
        try:
            record = self._parse_line(raw)
        except ValueError:
            return "!", "!"
        if record["id"] in seen:
            return "!", "!"
        seen.add(record["id"])
        span = ", ".join(f'"{c}": {_tok(record.get(c))}' for c in ("created_at", "decision", "environment", "id"))
        return span, f'"repository": {_tok(record.get("repository"))}'

    def _add_lines(self, start: int) -> None:
        """Parse lines ``start``.. in full and add them (call inside a write)."""
        seen = {row[0] for row in self.conn.execute("SELECT id FROM bundles")}
        records, bad = [], []
        for i in range(start, len(self._lines)):
            try:
                record = self._parse_line(self._lines[i])
            except ValueError:
                bad.append((i,))
                continue
            if record["id"] in seen:
                bad.append((i,))
                continue
            seen.add(record["id"])
            records.append((i, record))
        self.conn.executemany(
            f"INSERT INTO bundles ({_COLS_SQL}, line) VALUES ({', '.join('?' * (len(COLUMNS) + 1))})",  # noqa: S608
            ([*(r.get(c) for c in COLUMNS), i] for i, r in records),
        )
        self.conn.executemany("INSERT INTO bad_lines (line) VALUES (?)", bad)

    def checked_query(self, q: Query) -> list[dict[str, Any]] | None:
        """Answer ``q`` after ``sync_jsonl``; None when a row returned differs from its line (rebuild then).

        Only the rows returned are JSON-decoded from ``index.jsonl``, and each must be exactly its line.
        """
        rows = self.query(q, with_line=True)
        lines = self._lines
        for row in rows:
            line = row.pop("line")
            if type(line) is not int or not 0 <= line < len(lines):
                return None
            raw = lines[line]
            # An evaluation's line has no kind or about_id (nulls in the row).
            plain = {k: v for k, v in row.items() if not (k in ("kind", "about_id") and v is None)}
            if raw == json.dumps(plain, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass"):
                continue  # our own line, byte for byte
            try:
                record = self._parse_line(raw)
            except ValueError:
                return None
            if {c: record.get(c) for c in COLUMNS} != row or any(
                    type(record.get(c)) is not type(row[c]) for c in COLUMNS):
                return None
        return rows

    def rebuild(self) -> None:
        """Drop every row and parse every line again (after ``sync_jsonl``)."""
        with self._write():
            self.conn.execute("DELETE FROM bundles")
            self.conn.execute("DELETE FROM bad_lines")
            self._add_lines(0)
        self.notes.append(_REBUILT)

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

    def query(self, q: Query, *, with_line: bool = False) -> list[dict[str, Any]]:
        """Return the matching records, oldest first (with their ``line`` when ``with_line``)."""
        where, args = [], []
        for column, op, value in (
            ("created_at", ">=", q.since), ("created_at", "<", q.until), ("environment", "=", q.environment),
            ("repository", "=", q.repository), ("decision", "=", q.decision),
        ):
            if value is not None:
                where.append(f'"{column}" {op} ?')
                args.append(value)
        if q.kind == "evaluation":
            where.append("(kind IS NULL OR kind = 'evaluation')")
        elif q.kind is not None:
            where.append("kind = ?")
            args.append(q.kind)
        cols = (*COLUMNS, "line") if with_line else COLUMNS
        sql = f"SELECT {_COLS_SQL}{', line' if with_line else ''} FROM bundles"  # noqa: S608 - constant columns
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, sequence, id"
        cur = self.conn.execute(sql, args)
        return [dict(zip(cols, row, strict=True)) for row in cur]
