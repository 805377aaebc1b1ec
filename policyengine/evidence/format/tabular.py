"""Cells and periods as every table of evidence writes them (``evidence list``, ``audit export``, summaries).

Kept apart from ``audit`` so that a listing, which needs only these, does not import the bundle
readers: ``evidence list`` of a quarter is measured as a whole process.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["CSV_TRIGGERS", "CSV_TRIGGER_CHARS", "check_bounds", "csv_cell", "csv_table", "csv_text"]


def check_bounds(since: str, until: str) -> None:
    """Refuse a period whose start is after its end (UsageError, exit 2): it would select nothing, silently."""
    if since > until:
        from policyengine.errors import UsageError

        raise UsageError(f"--since {since} is later than --until {until}: the period is empty",
                         hint="swap the two dates")


CSV_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
CSV_TRIGGER_CHARS = frozenset(CSV_TRIGGERS)
"""The same, as a set of first characters (``text[:1] in CSV_TRIGGER_CHARS``; the empty text is not in it)."""


def csv_cell(value: Any) -> str:
    """A value as an export's CSV files write it: None is empty; text a spreadsheet would run as a
    formula (starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) is prefixed with
    ``'`` so it stays text. Every cell goes through here; ``export_verify`` compares through it too."""
    text = "" if value is None else ("yes" if value is True else "no" if value is False else str(value))
    return "'" + text if text.startswith(CSV_TRIGGERS) else text


def csv_text(rows: Iterable[Sequence[str]]) -> str:
    """Rows of text cells as CSV (RFC 4180 quoting, LF line ends), as every table of evidence is written.

    A cell holding a comma, a quote, a line feed or a carriage return is quoted (quotes doubled).
    ``csv.writer`` is not used: with LF line ends it leaves a lone carriage return unquoted,
    which spreadsheets and ``csv.reader`` take as the end of a row, so a title holding one could
    split a population row in two (or make the export unreadable to its own verification).
    """
    rows = [row if type(row) is list else list(row) for row in rows]
    text = "\n".join(map(",".join, rows))
    if ('"' not in text and "\r" not in text and text.count("\n") == len(rows) - 1
            and text.count(",") == sum(len(row) - 1 for row in rows) and [""] not in rows):
        return text + "\n" if rows else ""  # no cell needs quotes: the usual case by far
    # (a row of one empty cell is written "", as an empty line would be no row at all)
    return "".join((",".join(map(_quoted, row)) if row != [""] else '""') + "\n" for row in rows)


def _quoted(cell: str) -> str:
    if not any(c in cell for c in ',"\r\n'):
        return cell
    return '"' + cell.replace('"', '""') + '"'


def csv_table(columns: Sequence[str], records: Iterable[Mapping[str, Any]]) -> str:
    """``records`` as CSV text with a header of ``columns``, each cell as ``csv_cell`` writes it,
    except that numbers are written as they are (a sequence is never a formula)."""
    return csv_text([list(columns)] + [
        ["" if v is None else v if type(v) is str and v[:1] not in CSV_TRIGGER_CHARS
         else str(v) if type(v) is int else csv_cell(v) for v in map(r.get, columns)]
        for r in records
    ])
