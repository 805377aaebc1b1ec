"""The shipped holiday table gives what the holidays library gives, and steps aside when it cannot.

The table (policyengine/rules/holiday_data/, written by scripts/holiday_table.py) spares a
``check`` the library's import. These tests compare every country, subdivision and year it
holds with the library, so an upgraded library with a stale table fails here; and they show the
library answers wherever the table would not say the same: other years, other library
versions, a translating locale, an unreadable table.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import holidays
import pytest

from policyengine.facts import Facts
from policyengine.models import Status
from policyengine.rules import holiday_table
from policyengine.rules.base import Context, RuleSpec
from policyengine.rules.deploy_window import DeployWindowRule

REPO = Path(__file__).resolve().parents[1]
INDEX = json.loads((holiday_table.DATA / "index.json").read_text("utf-8"))


@pytest.fixture(autouse=True)
def _no_translation(monkeypatch: pytest.MonkeyPatch) -> None:
    """The locale the table was built for (C.UTF-8 reads as this); the machine's must not decide."""
    monkeypatch.setenv("LANGUAGE", "en_US.UTF-8")
    holiday_table._read_path.cache_clear()


def _entries() -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for code in sorted(set(INDEX["codes"].values())):
        document = json.loads((holiday_table.DATA / f"{code}.json").read_text("utf-8"))
        out.append((code, None))
        out.extend((code, sub) for sub in sorted(document["subdivisions"]))
    return out


def test_the_table_is_the_installed_library_version() -> None:
    assert INDEX["holidays_version"] == holidays.__version__, "run scripts/holiday_table.py"


def test_every_country_subdivision_and_year_matches_the_library() -> None:
    entries = _entries()
    assert len(entries) > 800  # every country, and their subdivisions
    years = range(INDEX["first_year"], INDEX["last_year"] + 1)
    assert date.today().year in years and date.today().year + 1 in years  # a check needs this year and next
    differ = []
    for country, sub in entries:
        cal = holiday_table.table_calendar(country, sub)
        assert cal is not None, (country, sub)
        for year in years:
            want = {d.isoformat(): str(n) for d, n in holidays.country_holidays(country, subdiv=sub, years=year).items()}
            got = {d: n for d, n in cal._days.items() if d.startswith(f"{year}-")}
            if got != want:
                differ.append(f"{country}-{sub} {year}")
    assert not differ, f"table differs from the library (run scripts/holiday_table.py): {differ[:10]}"


def test_aliases_name_the_same_calendar_as_the_library() -> None:
    for alias, code in INDEX["codes"].items():
        alias_cls, code_cls = type(holidays.country_holidays(alias)), type(holidays.country_holidays(code))
        # A code class only renames its country's class (class USA(UnitedStates): nothing more).
        assert set(vars(alias_cls)) <= {"__module__", "__doc__", "__qualname__"}, alias
        assert alias_cls.__mro__[1:] == code_cls.__mro__[1:], alias
    assert INDEX["codes"]["USA"] == "US"
    assert len(INDEX["codes"]) > 480


def test_day_by_day_lookups_match_a_lazily_filled_library_calendar() -> None:
    for country, sub in [("US", None), ("US", "CA"), ("DE", "BY"), ("GB", "SCT"), ("JP", None)]:
        cal = holiday_table.table_calendar(country, sub)
        assert cal is not None
        lib = holidays.country_holidays(country, subdiv=sub)
        day = date(INDEX["first_year"], 1, 1)
        while day.year <= INDEX["last_year"]:
            assert cal.get(day) == lib.get(day), (country, sub, day)
            day += timedelta(days=1)


def test_years_outside_the_table_come_from_the_library() -> None:
    cal = holiday_table.table_calendar("US", None)
    assert cal is not None
    for day in (date(INDEX["first_year"] - 1, 11, 28) - timedelta(days=365 * 3), date(INDEX["last_year"] + 3, 12, 25)):
        assert cal.get(day) == holidays.country_holidays("US").get(day)
    assert cal.get(date(INDEX["last_year"] + 3, 12, 25)) == "Christmas Day"


def test_another_locale_goes_to_the_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANGUAGE", "C")
    assert holiday_table.table_calendar("DE", None) is None
    monkeypatch.setenv("LANGUAGE", "de")
    assert holiday_table.table_calendar("DE", None) is None
    rule = DeployWindowRule(RuleSpec(id="w", type="deploy_window", params={"timezone": "Europe/Berlin", "holidays": "DE"}))
    out = rule.evaluate(Context(change={}, facts=Facts(change={}), now=datetime(2026, 12, 25, 10, tzinfo=timezone.utc)))
    assert out.status is Status.FAIL
    assert out.details["holiday"] == "Erster Weihnachtstag"


def _copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "holiday_data"
    shutil.copytree(holiday_table.DATA, data)
    monkeypatch.setattr(holiday_table, "DATA", data)
    return data


def test_a_table_from_another_library_version_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _copy(tmp_path, monkeypatch)
    index = json.loads((data / "index.json").read_text("utf-8"))
    index["holidays_version"] = "0.1"
    (data / "index.json").write_text(json.dumps(index), "utf-8")
    assert holiday_table.table_calendar("US", None) is None


def test_an_unreadable_or_forged_table_entry_never_opens_a_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _copy(tmp_path, monkeypatch)
    (data / "US.json").write_text("{not json", "utf-8")
    assert holiday_table.table_calendar("US", None) is None
    params = {"timezone": "America/New_York", "holidays": "US"}
    rule = DeployWindowRule(RuleSpec(id="w", type="deploy_window", params=params))
    thanksgiving = datetime(2026, 11, 26, 15, tzinfo=timezone.utc)
    out = rule.evaluate(Context(change={}, facts=Facts(change={}), now=thanksgiving))
    assert out.status is Status.FAIL and out.details["holiday"] == "Thanksgiving Day"
    (data / "US.json").unlink()
    holiday_table._read_path.cache_clear()
    assert holiday_table.table_calendar("US", None) is None
    assert rule.evaluate(Context(change={}, facts=Facts(change={}), now=thanksgiving)).status is Status.FAIL


def test_unknown_codes_are_still_explained_by_the_library() -> None:
    assert holiday_table.table_calendar("ZZ", None) is None
    assert holiday_table.table_calendar("US", "ZZ") is None
    got = dict(DeployWindowRule.check_params({"timezone": "UTC", "holidays": {"country": "US", "subdivision": "ZZ"}}))
    assert got["holidays.subdivision"].startswith("unknown subdivision 'ZZ' of US")


def test_the_regeneration_script_agrees_with_the_shipped_table() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "holiday_table.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_checking_the_example_does_not_import_the_holidays_library(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from policyengine.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('holidays', 'markdown_it')))\n"
    )
    args = [
        "check", "--policy", "policies/soc2-production.yml", "--change", "examples/change-allowed.yml",
        "--workspace", "examples/workspace", "--now", "2026-11-24T15:00:00Z", "--evidence-dir", str(tmp_path / "ev"),
    ]
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, check=False,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
