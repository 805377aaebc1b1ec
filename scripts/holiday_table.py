#!/usr/bin/env python3
"""Write the shipped holiday table (policyengine/rules/holiday_data/) from the holidays library.

Usage: .venv/bin/python scripts/holiday_table.py [--first 2024] [--last 2032]
       .venv/bin/python scripts/holiday_table.py --check   # exit 1 when the table is stale

`deploy_window` reads this table instead of importing the holidays library (150-200 ms with its
250 country modules) when the policy's country, subdivision and year are in it, the installed
library is the version the table was built from, and the locale picks the translation files the
table was built with (C.UTF-8 and en_US.UTF-8 do). Anywhere else it asks the library, as before. The table ships read-only inside the
package: nothing the change or another job writes can add or remove a holiday.
tests/test_holiday_table.py compares every country, subdivision and year in the table with the
library, so upgrading holidays without running this script fails the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "policyengine" / "rules" / "holiday_data"
LANGUAGE = "en_US.UTF-8"


def calendar(country: str, subdivision: str | None, year: int) -> dict[str, str]:
    """Return one year's holidays as the rule asks for them: default categories, no language."""
    import holidays

    cal = holidays.country_holidays(country, subdiv=subdivision, years=year)
    return {day.isoformat(): str(name) for day, name in sorted(cal.items())}


def build(first: int, last: int) -> dict[str, str]:
    """Return the table as file name -> JSON text."""
    # Names as the library gives them in the usual locale of CI runners and servers (C.UTF-8,
    # which Python reads as en_US.UTF-8, or en_US.UTF-8). The table records which translation
    # files that picked; the rule uses the table only when its own locale picks the same ones.
    os.environ["LANGUAGE"] = LANGUAGE
    import gettext

    import holidays

    warnings.simplefilter("error")  # a deprecated country or subdivision stays with the library
    version = str(holidays.__version__)
    codes: dict[str, str] = {}
    files: dict[str, str] = {}
    by_class: dict[type, str] = {}
    supported = holidays.list_supported_countries(include_aliases=True)
    canonical = holidays.list_supported_countries(include_aliases=False)
    for code in canonical:
        cal = holidays.country_holidays(code)
        domains = [cal._entity_code]  # noqa: SLF001 - the translation domain the library uses
        parent = getattr(cal, "parent_entity", None)
        if parent is not None:
            domains.append(getattr(parent, "country", None) or getattr(parent, "market", None))
        locale_dir = Path(holidays.__file__).parent / "locale"
        translations = {
            d: [Path(m).relative_to(locale_dir).as_posix() for m in gettext.find(d, str(locale_dir), all=True)]
            for d in domains
        }
        years = range(first, last + 1)
        national = {y: calendar(code, None, y) for y in years}
        subdivisions: dict[str, Any] = {}
        for sub in canonical[code]:
            try:
                per_year = {y: calendar(code, sub, y) for y in years}
            except Warning:
                continue
            add: dict[str, str] = {}
            drop: list[str] = []
            for y in years:
                base, mine = national[y], per_year[y]
                add.update({d: n for d, n in mine.items() if base.get(d) != n})
                drop.extend(d for d in base if d not in mine)
            subdivisions[sub] = {"add": add, "drop": drop}
        document = {
            "country": code,
            "translations": translations,
            "holidays": {d: n for y in years for d, n in national[y].items()},
            "subdivisions": subdivisions,
        }
        files[f"{code}.json"] = json.dumps(document, ensure_ascii=False, indent=0, sort_keys=True) + "\n"
        codes[code] = code
        by_class[country_class(cal)] = code
    for alias in supported:
        if alias not in canonical:
            owner = by_class.get(country_class(holidays.country_holidays(alias)))
            if owner is not None and supported[alias] == canonical[owner]:
                codes[alias] = owner
    index = {"holidays_version": version, "first_year": first, "last_year": last, "codes": dict(sorted(codes.items()))}
    files["index.json"] = json.dumps(index, indent=1, sort_keys=True) + "\n"
    return files


def country_class(cal: object) -> type | None:
    """Return the country class a code's class only renames (``USA`` and ``US`` both rename ``UnitedStates``)."""
    cls = type(cal)
    if set(vars(cls)) <= {"__module__", "__doc__", "__qualname__"}:
        return cls.__mro__[1]
    return None  # a code class with behaviour of its own stays with the library


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    this_year = date.today().year
    parser.add_argument("--first", type=int, help=f"first year (default: the index's, else {this_year - 2})")
    parser.add_argument("--last", type=int, help=f"last year (default: the index's, else {this_year + 6})")
    parser.add_argument("--check", action="store_true", help="exit 1 when the files differ from what this writes")
    args = parser.parse_args()
    old: dict[str, Any] = {}
    if (TARGET / "index.json").is_file():
        old = json.loads((TARGET / "index.json").read_text("utf-8"))
    first = args.first or old.get("first_year") or this_year - 2
    last = args.last or old.get("last_year") or this_year + 6
    files = build(first, last)
    if args.check:
        present = {p.name for p in TARGET.glob("*.json")} if TARGET.is_dir() else set()
        stale = sorted(n for n, text in files.items() if not (TARGET / n).is_file() or (TARGET / n).read_text("utf-8") != text)
        stale += sorted(present - set(files))
        if stale:
            print(f"holiday table is stale ({len(stale)} files, e.g. {stale[0]}): run scripts/holiday_table.py", file=sys.stderr)
            return 1
        return 0
    TARGET.mkdir(parents=True, exist_ok=True)
    for path in TARGET.glob("*.json"):
        if path.name not in files:
            path.unlink()
    for name, text in files.items():
        (TARGET / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(files)} files to {TARGET.relative_to(REPO)} ({first}-{last})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
