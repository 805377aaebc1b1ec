"""Public holidays from the table shipped in the package, with the holidays library as the fallback.

Importing the holidays library costs 150-200 ms (it loads all of its 250 country modules to
answer for one), most of a ``check``. ``scripts/holiday_table.py`` writes the library's answers
for every country and subdivision over a span of years into ``holiday_data/``, which ships
read-only inside the package: nothing a change, its workspace or another job writes is read
here, so no one can forge a holiday list to open a window.

The table answers only when it gives exactly what the library would: the installed library
is the version the table was built from, the country and subdivision are in it, and the
locale picks the same translation files for the names as when the table was built (the
library translates names by LANGUAGE, LC_ALL, LC_MESSAGES or LANG; the table holds them as
C.UTF-8 and en_US.UTF-8 show them, the usual locales of CI runners). Any other question, a
year outside the table, or a table that cannot be read goes to the library, as before. ``tests/test_holiday_table.py`` compares every
entry with the library.
"""

from __future__ import annotations

import json
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

DATA = Path(__file__).with_name("holiday_data")


class Calendar(Protocol):
    """What the rule asks of a holiday calendar: one day's holiday name(s), or None."""

    def get(self, key: date, default: Any = None) -> Any: ...


class TableCalendar:
    """A country's (or subdivision's) holidays, from the table inside its years, else the library."""

    def __init__(self, country: str, subdivision: str | None, days: dict[str, str], first: int, last: int):
        self._country = country
        self._subdivision = subdivision
        self._days = days
        self._first = first
        self._last = last
        self._library: Calendar | None = None

    def get(self, key: date, default: Any = None) -> Any:
        """Return the holiday name(s) on ``key`` (joined by "; " as the library does), else ``default``."""
        if self._first <= key.year <= self._last:
            return self._days.get(key.isoformat(), default)
        if self._library is None:
            self._library = library_calendar(self._country, self._subdivision)
        return self._library.get(key, default)


def library_calendar(country: str, subdivision: str | None) -> Calendar:
    """Return the holidays library's calendar (raises as the library does for unknown codes)."""
    import holidays

    cal: Calendar = holidays.country_holidays(country, subdiv=subdivision)
    return cal


def _read(name: str) -> Any:
    """Return one parsed file of the table (read once a process, like a module; it ships with the code)."""
    return _read_path(DATA / name)


@lru_cache(maxsize=8)
def _read_path(path: Path) -> Any:
    return json.loads(path.read_text("utf-8"))


def _index() -> dict[str, Any] | None:
    """Return the table's index when the installed library is the one it was built from."""
    try:
        index = _read("index.json")
        version = index["holidays_version"]
        if not isinstance(version, str) or not _library_is(version):
            return None
        return index if isinstance(index, dict) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


@lru_cache(maxsize=1)
def _library_dir() -> Path | None:
    import importlib.util

    try:
        spec = importlib.util.find_spec("holidays")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@lru_cache(maxsize=4)
def _library_is(version: str) -> bool:
    """Say whether the holidays package Python would import is release ``version``.

    Reads the installed distribution's METADATA beside the package instead of importing
    importlib.metadata (~10 ms); any other layout answers no, and the library is asked.
    """
    package = _library_dir()
    if package is None:
        return False
    metadata = package.parent / f"holidays-{version}.dist-info" / "METADATA"
    try:
        with metadata.open(encoding="utf-8") as fh:
            head = [fh.readline() for _ in range(5)]
    except OSError:
        return False
    return f"Version: {version}\n" in head


def _same_translations(translations: dict[str, Any]) -> bool:
    """Say whether the library would translate names with the files the table was built with."""
    import gettext

    package = _library_dir()
    if package is None or not translations:
        return False
    locale_dir = package / "locale"
    for domain, files in translations.items():
        # The same search the library's gettext.translation(languages=None) makes.
        found = gettext.find(domain, str(locale_dir), all=True)
        if [Path(f).relative_to(locale_dir).as_posix() for f in found] != files:
            return False
    return True


def table_calendar(country: str, subdivision: str | None) -> TableCalendar | None:
    """Return the table's calendar for a country (and subdivision), or None when the library must answer."""
    index = _index()
    if index is None:
        return None
    codes = index.get("codes")
    code = codes.get(country) if isinstance(codes, dict) else None
    if not isinstance(code, str) or not code.isalpha():
        return None
    try:
        document = _read(f"{code}.json")
        days = dict(document["holidays"])
        if subdivision is not None:
            sub = document["subdivisions"].get(subdivision)
            if sub is None:
                return None
            for day in sub["drop"]:
                days.pop(day, None)
            days.update(sub["add"])
        translations = document["translations"]
        first, last = index["first_year"], index["last_year"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not (isinstance(first, int) and isinstance(last, int) and isinstance(translations, dict)):
        return None
    if not _same_translations(translations):
        return None
    return TableCalendar(country, subdivision, days, first, last)
