"""The test-only clock shift (tests/clockshift) moves every Python process of a run, children included."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CLOCKSHIFT = Path(__file__).resolve().parent / "clockshift"
PROBE = ("import datetime, time, subprocess, sys\n"
         "print(datetime.datetime.now(datetime.timezone.utc).date(), datetime.datetime.today().date(), datetime.date.today(),"
         " time.strftime('%Y-%m-%d', time.gmtime(time.time())), time.strftime('%Y-%m-%d'))\n"
         "sys.stdout.flush()\n"
         "subprocess.run([sys.executable, '-c', 'import datetime; print(datetime.datetime.now().date())'],"
         " check=True)\n")


def _probe(date: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PE_TEST_DATE", "PYTHONPATH"}}
    env["PYTHONPATH"] = str(CLOCKSHIFT)
    if date:
        env["PE_TEST_DATE"] = date
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True,
                         timeout=60).stdout
    return out.split()


def test_the_shift_moves_the_process_and_its_children_to_the_date() -> None:
    for date in ("2027-02-28", "2028-02-29"):
        assert _probe(date) == [date] * 6


def test_without_a_date_nothing_moves() -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"PE_TEST_DATE", "PYTHONPATH"}}
    real = lambda: subprocess.run([sys.executable, "-c", "import datetime; print(datetime.datetime.now().date())"],  # noqa: E731
                                  env=env, capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    before = real()
    dates = set(_probe(None))
    assert dates <= {before, real()}  # (a run across midnight may see both days)

