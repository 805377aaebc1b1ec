"""Test-only: run this Python process as if today were ``PE_TEST_DATE`` (YYYY-MM-DD).

``PE_TEST_DATE=2027-02-28 bash scripts/test.sh`` puts this folder on the virtual
environment's path (a ``.pth`` file) and the date in ``.venv/pe-test-date`` for the run, so
every Python process of the run (pytest, its workers, and each ``python -m policyengine`` a
test starts, whatever environment it is given) imports it at start-up. The shift is a whole number of days from the real date, so a
parent and its children agree on the time (each started at a different real moment) and the
time of day stays real.

What moves: ``time.time``/``time_ns`` (and ``localtime``/``gmtime``/``ctime``/``strftime``
without an argument) and ``datetime.now``/``utcnow``/``today``, through a subclass that
overrides only those three, so every other datetime behaviour (``fold`` at a clock change,
arithmetic, ``astimezone``) is the C implementation's own. ``date.today`` moves too (CPython's
calls ``time.time``). ``time.clock_gettime`` and programs that are not Python (git, openssl)
keep the real clock: tests/tsa_server.py moves its openssl with libfaketime. freezegun was tried first: its
datetime drops ``fold``, which changed messages at a DST fall-back even with a zero shift.

Never part of the product: a clock variable the product read would be a clock override under
CI that gets around the ``--now`` refusal. The product only ever sees a different wall clock,
as it would on that day. libfaketime (tests/test_golden.py) shifts one process at the C
level, but stalls threads' timed waits, so it cannot run the whole suite.
"""

import os
import sys


def _date() -> str:
    """``PE_TEST_DATE``, else the date scripts/test.sh left in the virtual environment for the run
    (a test may start a child with an environment of its own, without the variable). The variable
    set but empty turns the shift off (a child that libfaketime shifts itself)."""
    if "PE_TEST_DATE" in os.environ:
        return os.environ["PE_TEST_DATE"]
    try:
        with open(os.path.join(sys.prefix, "pe-test-date"), encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError:
        return ""


_DATE = _date()
if _DATE:
    import datetime as _dt
    import time as _time

    _real_time, _real_time_ns = _time.time, _time.time_ns
    _SHIFT = (_dt.date.fromisoformat(_DATE) - _dt.date.today()).days * 86400
    _real_localtime, _real_gmtime, _real_ctime, _real_strftime = (_time.localtime, _time.gmtime, _time.ctime,
                                                                  _time.strftime)

    def _time_now() -> float:
        return _real_time() + _SHIFT

    def _time_ns_now() -> int:
        return _real_time_ns() + _SHIFT * 1_000_000_000

    _time.time, _time.time_ns = _time_now, _time_ns_now
    _time.localtime = lambda secs=None: _real_localtime(_time_now() if secs is None else secs)
    _time.gmtime = lambda secs=None: _real_gmtime(_time_now() if secs is None else secs)
    _time.ctime = lambda secs=None: _real_ctime(_time_now() if secs is None else secs)
    _time.strftime = lambda fmt, t=None: _real_strftime(fmt, _time.localtime() if t is None else t)

    class _ShiftedDatetime(_dt.datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[override]
            return cls.fromtimestamp(_time_now(), tz)

        @classmethod
        def utcnow(cls):  # type: ignore[override]
            return cls.utcfromtimestamp(_time_now())

        @classmethod
        def today(cls):  # type: ignore[override]
            return cls.fromtimestamp(_time_now())

    _ShiftedDatetime.__name__ = _ShiftedDatetime.__qualname__ = "datetime"
    _ShiftedDatetime.__module__ = "datetime"
    _dt.datetime = _ShiftedDatetime  # type: ignore[misc]
