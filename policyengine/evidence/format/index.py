"""The caches behind ``evidence list`` (``audit export`` and ``verify`` read the index itself).

``SqliteIndex`` is a local folder's query cache ``index.sqlite``; ``ObjectCache`` keeps an S3
bucket's index objects (see ``S3Archive.query``); ``answer`` filters and orders decoded records
the same way for every store. The index of record is the store's own (``index.jsonl`` of a
folder, or each monthly shard ``index/YYYY-MM.jsonl`` of a sharded folder, with a cache of its
own: everything below holds per shard); a cache only makes queries fast on large archives, and is never trusted: a value
stored beside it would prove nothing to someone able to edit it, and neither would its own
B-tree indexes. Three checks stand between ``index.sqlite`` and an answer:

* before each use, the cache's rows must be ``index.jsonl``'s lines: the same number, and the
  bundle ids in line order byte for byte (read from the file with one regular expression, not
  by JSON-decoding every line). A cache that holds exactly the first lines gets the new ones (an
  append costs only the new lines); one that disagrees is rebuilt and ``notes`` says so. Where a
  line is unreadable or of another shape, each line is compared field by field instead;
* the cache only says *which lines* answer a query (their line numbers and byte offsets): the
  rows returned are those lines, JSON-decoded from ``index.jsonl`` and filtered again;
* the answer must be complete: the number of lines whose ``created_at`` falls in the period,
  counted in the file with a regular expression, must equal the number of lines the cache
  named. Other filters are applied to the decoded lines only.

When a check fails the cache is rebuilt; where the count cannot be made cheaply (an unreadable
line, an escaped character anywhere in the file) every line is decoded instead. Where the cache
cannot be written (a read-only copy of an archive) it is built in memory.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from msgspec import Struct

if TYPE_CHECKING:  # sqlite3 costs ~30 ms to import: only `evidence list`/export need it
    import sqlite3

COLUMNS = ("id", "created_at", "decision", "environment", "repository", "commit", "path", "sha256",
           "policy_sha256", "sequence", "previous_sha256", "signed_by", "kind", "about_id")
# ``kind`` is null for an evaluation (lines written before linked records existed carry none);
# ``about_id`` names the evaluation a linked record (outcome, review) is about.
_VERSION = 5
_SCHEMA = """
CREATE TABLE IF NOT EXISTS bundles (
  id TEXT PRIMARY KEY, created_at TEXT NOT NULL, decision TEXT NOT NULL, environment TEXT, repository TEXT,
  "commit" TEXT, path TEXT NOT NULL, sha256 TEXT NOT NULL, policy_sha256 TEXT, sequence INTEGER,
  previous_sha256 TEXT, signed_by TEXT, kind TEXT, about_id TEXT, line INTEGER, pos INTEGER, size INTEGER
);
CREATE INDEX IF NOT EXISTS bundles_created ON bundles (created_at, id, pos, size);
CREATE INDEX IF NOT EXISTS bundles_line ON bundles (line, id);
CREATE TABLE IF NOT EXISTS bad_lines (line INTEGER PRIMARY KEY);
PRAGMA user_version = 5;
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
# The fast checks, over the whole file: every id (in line order), and every created_at.
_ID_RE = re.compile(rb'"id": "([^"\\\x00-\x1f]*)"')
_CREATED_RE = re.compile(rb'"created_at": "([^"\\\x00-\x1f]*)"')
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


class Query(Struct, frozen=True):
    """Filters of ``evidence list``; ``since`` inclusive, ``until`` exclusive (``...Z`` strings)."""

    since: str | None = None
    until: str | None = None
    environment: str | None = None
    repository: str | None = None
    decision: str | None = None
    kind: str | None = None
    """``evaluation`` (rows without a kind too), ``outcome``, ``review``."""


def in_period(record: Mapping[str, Any], q: Query) -> bool:
    """Whether a decoded index record's ``created_at`` is text within ``q``'s period."""
    created = record.get("created_at")
    return isinstance(created, str) and (q.since is None or created >= q.since) and (
        q.until is None or created < q.until)


_created = operator.itemgetter("created_at")


def _order(record: Mapping[str, Any]) -> tuple[Any, ...]:
    """A listing's order: created_at, sequence (null first), id."""
    seq = record.get("sequence")
    return record["created_at"], seq is not None, seq if isinstance(seq, int) else 0, record["id"]


def answer(records: Iterable[Mapping[str, Any]], q: Query) -> list[Mapping[str, Any]]:
    """The records of ``q`` among records already within its period, oldest first (``_order``).

    They are the decoded lines themselves, not projected on ``COLUMNS``: read them with ``.get``.
    """
    kind = q.kind
    chosen = [
        r for r in records
        if (q.environment is None or r.get("environment") == q.environment)
        and (q.repository is None or r.get("repository") == q.repository)
        and (q.decision is None or r.get("decision") == q.decision)
        and (kind is None or (r.get("kind") in (None, "evaluation") if kind == "evaluation" else r.get("kind") == kind))
    ]
    chosen.sort(key=_created)  # every record here has a text created_at (``in_period``)
    if len({r["created_at"] for r in chosen}) != len(chosen):
        chosen.sort(key=_order)  # ties: by sequence and id too
    return chosen


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


class SqliteIndex:
    """A query cache of one store's index."""

    def __init__(self, path: Path | None) -> None:
        self.conn = _connect(path)
        self.notes: list[str] = []
        self._data = b""
        self._count = 0
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

        The cache is never trusted: each time, its rows are compared with the lines of
        ``index.jsonl``: the count, and the bundle ids in line order, read with one regular
        expression over the whole file rather than by JSON-decoding it. Where the cache records an
        unreadable line, or the ids disagree, each line is compared with its row (the id and what
        queries filter on; a line of another shape is decoded). When the cache holds exactly a
        prefix of the lines, the new lines are added; when it disagrees, it is rebuilt and
        ``notes`` says so. Only complete lines count: a torn last line is unreadable.
        """
        end = data.rfind(b"\n") + 1
        self._data = data[:end]
        self._count = self._data.count(b"\n")
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
        count = self._count
        fast = self._id_view()
        if fast is not None:
            n, ids_blob, end = fast
            if n > count:
                return False
            prefix = self._data
            if n < count:  # where the cache says its last line ends, if that is the end of line n
                ok = end is not None and 0 < end <= len(self._data) and self._data[end - 1] == 10
                prefix = self._data[:end] if ok and self._data.count(b"\n", 0, end) == n else \
                    b"".join(line + b"\n" for line in self._lines[:n])
            # One regular expression over the file: our lines hold one id each.
            found = _ID_RE.findall(prefix)
            if len(found) == n and b"\n".join(found) == ids_blob:
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

    def _id_view(self) -> tuple[int, bytes, int | None] | None:
        """The cache's ids in line order, joined, and where its last line ends; None when it records an unreadable line."""
        if self._bad_count():
            return None
        n, low, high, ids = self.conn.execute(
            "SELECT count(*), min(line), max(line), group_concat(id, char(10)) FROM "
            "(SELECT line, id FROM bundles ORDER BY line)"
        ).fetchone()
        if n and (low != 0 or high != n - 1):
            return None
        end = None
        if n:
            last = self.conn.execute("SELECT pos, size FROM bundles WHERE line = ?", (n - 1,)).fetchone()
            if last is not None and type(last[0]) is int and type(last[1]) is int:
                end = last[0] + last[1] + 1
        return int(n), (ids if isinstance(ids, str) else "").encode("utf-8", "surrogatepass"), end

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

    def _readable_lines(self, start: int = 0) -> Iterator[tuple[int, int, bytes, dict[str, Any] | None]]:
        """Lines ``start``.., each as (number, byte offset, bytes, record); the record is None when the
        line is unreadable or repeats an earlier line's id."""
        seen = {row[0] for row in self.conn.execute("SELECT id FROM bundles")} if start else set()
        lines = self._lines
        pos = sum(len(line) + 1 for line in lines[:start])
        for i in range(start, len(lines)):
            raw = lines[i]
            try:
                record: dict[str, Any] | None = self._parse_line(raw)
            except ValueError:
                record = None
            if record is not None:
                if record["id"] in seen:
                    record = None
                else:
                    seen.add(record["id"])
            yield i, pos, raw, record
            pos += len(raw) + 1

    def _add_lines(self, start: int) -> None:
        """Parse lines ``start``.. in full and add them (call inside a write)."""
        records, bad = [], []
        for i, pos, raw, record in self._readable_lines(start):
            if record is None:
                bad.append((i,))
            else:
                records.append([*(record.get(c) for c in COLUMNS), i, pos, len(raw)])
        self.conn.executemany(
            f"INSERT INTO bundles ({_COLS_SQL}, line, pos, size) VALUES ({', '.join('?' * (len(COLUMNS) + 3))})",  # noqa: S608
            records,
        )
        self.conn.executemany("INSERT INTO bad_lines (line) VALUES (?)", bad)

    def checked_query(self, q: Query) -> list[Mapping[str, Any]] | None:
        """Answer ``q`` after ``sync_jsonl``, with the lines of ``index.jsonl`` the cache names.

        Return None when the cache is caught naming a wrong line or too few (rebuild it then).

        Complete, because every line whose decoded ``created_at`` is in the period holds the text
        ``"created_at": "<that time>"`` as its last such key, so the regular expression counts it:
        the cache must name at least that many lines, each checked to be in the period. That holds
        when the file has no backslash (no escape could spell a key or hide a value from the
        count); with one, or where the cache records unreadable lines (which the count would
        include), ``scan`` answers instead.
        """
        data = self._data
        if self._bad_count() or b"\\" in data:
            return self.scan(q)
        found = _CREATED_RE.findall(data)
        since = q.since.encode("utf-8", "surrogatepass") if q.since is not None else None
        until = q.until.encode("utf-8", "surrogatepass") if q.until is not None else None
        found.sort()  # (index.jsonl is nearly in time order already)
        low = 0 if since is None else bisect.bisect_left(found, since)
        high = len(found) if until is None else bisect.bisect_left(found, until)
        where, args = [], []
        if since is not None:
            where.append("created_at >= ?")
            args.append(q.since)
        if until is not None:
            where.append("created_at < ?")
            args.append(q.until)
        sql = "SELECT id, pos, size FROM bundles" + (" WHERE " + " AND ".join(where) if where else "")
        named = self.conn.execute(sql, args).fetchall()
        if len(named) != max(high - low, 0) or len({row[0] for row in named}) != len(named):
            return None  # the cache hides a line of the period (or names one twice)
        records = []
        decode = json.JSONDecoder().raw_decode  # our lines have no whitespace around the object
        for bid, pos, size in named:
            if type(pos) is not int or type(size) is not int or pos < 0 or size < 0:
                return None
            end = pos + size
            if end >= len(data) or data[end] != 10 or (pos and data[pos - 1] != 10):
                return None  # not a whole line
            raw = data[pos:end]
            if b"\n" in raw:
                return None
            # The line is listed as it stands (``evidence verify`` checks every field of every line);
            # it must be an object, of the id the cache gives, and in the period.
            try:
                text = raw.decode("utf-8")
                record, stop = decode(text)
            except ValueError:
                return None
            if (stop != len(text) or type(record) is not dict or record.get("id") != bid
                    or not in_period(record, q)):
                return None
            records.append(record)
        return answer(records, q)

    def scan(self, q: Query) -> list[Mapping[str, Any]]:
        """Answer ``q`` from every line of ``index.jsonl``, decoded (after ``sync_jsonl``), without the cache."""
        return answer((record for _, _, _, record in self._readable_lines() if record is not None
                        and in_period(record, q)), q)

    def rebuild(self) -> None:
        """Drop every row and parse every line again (after ``sync_jsonl``)."""
        with self._write():
            self.conn.execute("DELETE FROM bundles")
            self.conn.execute("DELETE FROM bad_lines")
            self._add_lines(0)
        self.notes.append(_REBUILT)


_OBJECTS_VERSION = 1
_OBJECTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (id TEXT PRIMARY KEY, etag TEXT NOT NULL, raw BLOB NOT NULL);
PRAGMA user_version = 1;
"""


class ObjectCache:
    """A bucket's index objects as they were fetched: ``{id: (ETag, bytes)}``, in SQLite.

    Nothing here is trusted: ``S3Archive.query`` uses a cached object only when the bucket's
    listing gives the same ETag and the bytes hash to it, and decodes every record it answers
    with from those bytes. Where the file cannot be written the cache lives in memory.
    """

    def __init__(self, path: Path | None) -> None:
        import sqlite3

        self.conn: sqlite3.Connection | None = None
        if path is not None:
            try:
                conn = sqlite3.connect(path, timeout=30, isolation_level=None)
                if conn.execute("PRAGMA user_version").fetchone()[0] != _OBJECTS_VERSION:
                    conn.executescript("DROP TABLE IF EXISTS objects;")
                conn.executescript(_OBJECTS_SCHEMA)
                self.conn = conn
            except sqlite3.Error:
                self.conn = None
        if self.conn is None:
            self.conn = sqlite3.connect(":memory:", isolation_level=None)
            self.conn.executescript(_OBJECTS_SCHEMA)

    def close(self) -> None:
        assert self.conn is not None
        self.conn.close()

    def load(self) -> dict[str, tuple[Any, Any]]:
        """Every cached ``id: (etag, raw)``, as stored (any types: check before use)."""
        assert self.conn is not None
        import sqlite3

        try:
            return {row[0]: (row[1], row[2]) for row in self.conn.execute("SELECT id, etag, raw FROM objects")}
        except sqlite3.Error:  # a damaged cache only makes a slower run
            return {}

    def update(self, put: Sequence[tuple[str, str, bytes]], drop: Iterable[str]) -> None:
        assert self.conn is not None
        import sqlite3

        try:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany("INSERT OR REPLACE INTO objects (id, etag, raw) VALUES (?, ?, ?)", put)
            self.conn.executemany("DELETE FROM objects WHERE id = ?", ((i,) for i in drop))
            self.conn.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
