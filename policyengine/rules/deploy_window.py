"""``deploy_window``: deploy only inside allowed local times, outside freezes and public holidays.

Semantics (docs/policy.md, docs/deploy-windows.md and the JSON Schema describe the same thing):

- ``timezone`` (required): an IANA zone name. Every local time in the rule, every cron
  expression and every message is read in this zone.
- ``allow`` (optional list): when given, an instant must fall inside at least one window.
  When absent, any time that is not denied is allowed.

  - ``days``: list of ``mon`` .. ``sun`` or ``monday`` .. ``sunday`` (case-insensitive), ranges
    such as ``mon-fri`` or ``Monday-Friday`` (a range may wrap: ``fri-mon`` is fri, sat, sun, mon), ``weekdays`` (mon-fri)
    and ``weekends`` (sat, sun); a single string is read as a one-item list. Omitted: every
    day. An empty list is a load-time error.
  - ``between``: ``["HH:MM", "HH:MM"]``, two-digit hours and minutes, start ``00:00``-``23:59``,
    end ``00:00``-``23:59`` or ``24:00`` (end of the day). The start is inclusive, the end
    exclusive. A start later than the end crosses midnight: ``["22:00", "02:00"]`` on ``fri``
    opens Friday 22:00 and closes Saturday 02:00. Equal start and end is a load-time error
    (write ``["00:00", "24:00"]`` for a whole day). Omitted: the whole day.
  - ``name`` (optional): used in messages; without it a label like ``mon-thu 09:00-16:00``.

  Allow windows are **wall-clock windows**: an instant is inside when the local clock reading
  (weekday and time) is inside. On the spring-forward day, clock readings in the gap never
  occur, so a window lying wholly in the gap (``02:00``-``03:00`` in America/New_York on
  2026-03-08) does not open that day and a window straddling the gap is shorter. On the
  fall-back day the repeated hour is read twice, so a window covering ``01:00``-``02:00`` is
  open during both passes (two real hours).
- ``deny`` (optional list): freezes; deny wins over allow. Each entry has an optional ``name``
  (default ``deny[i]``) and exactly one of:

  - ``from`` / ``until``: ISO 8601 date or date-time. Without an offset it is a local time in
    the rule's zone (a date alone is that day's local midnight, so ``until: 2027-01-04`` ends
    as that day begins); with an offset (or ``Z``) it is that instant. Denied on ``[from, until)``;
    ``from`` must be earlier than ``until``. A local time that occurs twice is read to make the
    freeze longest (fail closed): ``from`` at its first occurrence, ``until`` at its second. A
    local time that does not exist (in a spring-forward gap) means the first instant after the
    gap.
  - ``cron`` (5 fields: minute hour day-of-month month day-of-week, cronsim syntax; no
    ``@daily`` macros, no seconds field) plus either
    ``duration`` (``30m``, ``1h``, ``1h30m``, ``2d``: elapsed time; units d, h, m, s, each at most
    once and in that order; more than zero) or
    ``cron_end`` (5-field cron). A cron + duration window is active when the latest firing at
    or before now is less than ``duration`` ago. A cron + cron_end window is active when the
    latest start firing at or before now is later than the latest end firing at or before now
    (an end firing at the same minute as a start closes it).

  Cron firings follow cronsim in the rule's zone: a job at a fixed hour and minute whose local
  time occurs twice fires once, at the first occurrence; one whose local time is skipped fires
  at the end of the gap (Debian cron behaviour). ``30 1 * * *`` with ``duration: 1h`` on the
  fall-back day is denied from 01:30 EDT until 01:30 EST (one elapsed hour).
- ``holidays`` (optional): a country code (``US``) or ``{country: US, subdivision: CA}`` as the
  ``holidays`` library names them; observed public holidays included. A holiday denies the
  whole local day, from its first instant to the first instant of the next day.

Outcome: ``pass`` inside an allow window (or with no allow windows) and in no freeze or
holiday; ``fail`` otherwise, naming every reason (every matching freeze with its local bounds,
the holiday, being outside the allow windows) and ending with ``next allowed: <Weekday>
YYYY-MM-DD HH:MM <zone abbreviation>``, found by jumping from one blocking reason's end to the
next, up to 400 days ahead (else ``no allowed time in the next 400 days``); ``error`` when the
parameters are invalid or the clock has no time zone (fail closed), or a date cannot be
computed. Details: ``timezone``; ``local_time`` (ISO 8601 with offset); ``matched`` (names of
matching freezes, then the holiday's name); ``allowed_by`` (name, else label, of the allow
window the local time is in, also on a fail when a freeze overrides it; null otherwise);
``next_allowed`` (ISO 8601 with offset; null on a pass or when none was found); ``holiday``.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from msgspec import Struct

from policyengine.models import Outcome, Status
from policyengine.rules.base import Context, RuleType
from policyengine.rules.holiday_table import library_calendar, table_calendar

if TYPE_CHECKING:
    from policyengine.rules.holiday_table import Calendar

UTC = timezone.utc
SEARCH_DAYS = 400
# A guard against pathological policies (a deny cron firing every minute): each step of the
# forward search jumps past at least one window, so real policies need far fewer.
MAX_SEARCH_STEPS = 20_000
# Cron searches start this far beyond the instant asked about, then keep the firings on the
# right side of it: in a fall-back hour cronsim compares local clock readings, and the second
# pass reads earlier than a firing that happened before it.
CRON_MARGIN = timedelta(hours=6)
MAX_CRON_STEPS = 100_000

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
DAY_WORDS = {"weekdays": frozenset(range(5)), "weekends": frozenset({5, 6})}
# Full names are accepted too ("monday"), as the schema's description promises.
DAY_INDEX = {**{d: i for i, d in enumerate(DAY_NAMES)}, **{d.lower(): i for i, d in enumerate(WEEKDAY_NAMES)}}
DAY_HELP = "expected mon..sun or monday..sunday, a range like mon-fri or Monday-Friday, weekdays or weekends"

_HHMM = re.compile(r"^(\d{2}):(\d{2})$")
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


# --------------------------------------------------------------------------- compiled policy


class _Allow(Struct, frozen=True):
    days: frozenset[int]
    start: int  # seconds after local midnight
    end: int  # seconds after local midnight; 86400 for 24:00
    label: str
    name: str | None

    @property
    def title(self) -> str:
        return f'"{self.name}" ({self.label})' if self.name else f'"{self.label}"'

    def contains(self, local: datetime) -> bool:
        """Say whether a local clock reading is inside this window."""
        sod = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
        wd = local.weekday()
        if self.start < self.end:
            return wd in self.days and self.start <= sod < self.end
        return (wd in self.days and sod >= self.start) or ((wd - 1) % 7 in self.days and sod < self.end)


class _Span(Struct, frozen=True):
    name: str
    start: datetime  # UTC
    until: datetime  # UTC


class _Cron(Struct, frozen=True):
    name: str
    cron: str
    duration: timedelta | None
    cron_end: str | None


class _Holidays(Struct, frozen=True):
    country: str
    subdivision: str | None

    @property
    def where(self) -> str:
        return f"{self.country}-{self.subdivision}" if self.subdivision else self.country


class _Plan(Struct, frozen=True):
    tz: ZoneInfo
    allow: tuple[_Allow, ...]
    deny: tuple[_Span | _Cron, ...]
    holidays: _Holidays | None


class _Block(Struct, frozen=True):
    """One reason an instant is not allowed, and the earliest instant that reason can lift."""

    kind: str  # "deny" | "holiday" | "outside"
    name: str | None
    text: str  # deny/outside: what follows "<local time> is"; holiday: a whole clause
    release: datetime | None  # UTC; None: never within reach


# --------------------------------------------------------------------------- parsing


def _close(word: str, choices: list[str], n: int = 3, cutoff: float = 0.6) -> list[str]:
    """Return up to ``n`` choices close to ``word``, compared case-insensitively."""
    import difflib

    folded: dict[str, str] = {}
    for c in choices:
        folded.setdefault(c.casefold(), c)
    hits = difflib.get_close_matches(word.casefold(), list(folded), n=n, cutoff=cutoff)
    return [folded[h] for h in hits]


def _suggest(word: str, choices: list[str]) -> str:
    hits = _close(word, choices)
    return f"; did you mean {', '.join(repr(h) for h in hits)}?" if hits else ""


def _parse_zone(value: Any) -> tuple[ZoneInfo | None, str | None]:
    if not isinstance(value, str) or not value.strip():
        return None, "expected an IANA time zone name such as 'America/New_York'"
    try:
        return ZoneInfo(value), None
    except (ZoneInfoNotFoundError, ValueError):
        from zoneinfo import available_timezones

        hint = _suggest(value, sorted(available_timezones()))
        return None, f"unknown time zone {value!r}{hint or '; expected an IANA name such as America/New_York'}"


def _parse_days(value: Any, path: str, problems: list[tuple[str, str]]) -> frozenset[int]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        problems.append((path, f"expected a list of days, {DAY_HELP}"))
        return frozenset()
    if not items:
        problems.append((path, "no days listed, so the window never opens; omit `days` for every day"))
        return frozenset()
    days: set[int] = set()
    for i, item in enumerate(items):
        sub = f"{path}[{i}]"
        if not isinstance(item, str):
            problems.append((sub, f"expected a day name, got {item!r}; {DAY_HELP}"))
            continue
        word = item.strip().lower()
        if word in DAY_WORDS:
            days |= DAY_WORDS[word]
        elif word in DAY_INDEX:
            days.add(DAY_INDEX[word])
        elif "-" in word:
            first, _, last = (p.strip() for p in word.partition("-"))
            bad = [p for p in (first, last) if p not in DAY_INDEX]
            if bad:
                problems.append((sub, f"unknown day {bad[0]!r} in range {item!r}{_suggest(bad[0], list(DAY_NAMES))}"))
                continue
            a, b = DAY_INDEX[first], DAY_INDEX[last]
            days.update((a + k) % 7 for k in range((b - a) % 7 + 1))
        else:
            problems.append((sub, f"unknown day {item!r}; {DAY_HELP}{_suggest(word, [*DAY_NAMES, *DAY_WORDS])}"))
    return frozenset(days)


def _parse_hhmm(value: Any, path: str, problems: list[tuple[str, str]], *, end: bool) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 16:00 as the base-60 number 960.
        guess = f"{value // 60:02d}:{value % 60:02d}" if 0 <= value <= 1440 else None
        extra = f'; YAML reads an unquoted {guess} as a number, write "{guess}" in quotes' if guess else ""
        problems.append((path, f'expected a time as a quoted "HH:MM" string, got the number {value}{extra}'))
        return None
    m = _HHMM.match(value) if isinstance(value, str) else None
    if m is None:
        problems.append((path, f'expected a time "HH:MM" (for example "09:00"), got {value!r}'))
        return None
    hh, mm = int(m.group(1)), int(m.group(2))
    if end and (hh, mm) == (24, 0):
        return 86400
    if hh > 23 or mm > 59:
        allowed = '00:00 to 23:59, or "24:00" for the end of the day' if end else "00:00 to 23:59"
        problems.append((path, f"time {value!r} is out of range; expected {allowed}"))
        return None
    return hh * 3600 + mm * 60


def _hhmm(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"


def _days_label(days: frozenset[int]) -> str:
    if len(days) == 7:
        return "every day"
    runs: list[list[int]] = []
    for d in sorted(days):
        if runs and runs[-1][-1] == d - 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    parts = [DAY_NAMES[r[0]] if len(r) == 1 else f"{DAY_NAMES[r[0]]}-{DAY_NAMES[r[-1]]}" for r in runs]
    return ",".join(parts)


def _parse_allow(entry: Any, path: str, problems: list[tuple[str, str]]) -> _Allow | None:
    if not isinstance(entry, dict):
        problems.append((path, "expected a mapping with days, between and name"))
        return None
    before = len(problems)
    days = _parse_days(entry["days"], f"{path}.days", problems) if "days" in entry else frozenset(range(7))
    start, end = 0, 86400
    if "between" in entry:
        between = entry["between"]
        if not isinstance(between, list) or len(between) != 2:
            problems.append((f"{path}.between", 'expected two times, ["HH:MM", "HH:MM"]'))
        else:
            s = _parse_hhmm(between[0], f"{path}.between[0]", problems, end=False)
            e = _parse_hhmm(between[1], f"{path}.between[1]", problems, end=True)
            if s is not None and e is not None:
                if s == e:
                    empty = f'start and end are both {_hhmm(s)}, an empty window; ["00:00", "24:00"] is a whole day'
                    problems.append((f"{path}.between", empty))
                start, end = s, e
    name = entry.get("name")
    if name is not None and not isinstance(name, str):
        problems.append((f"{path}.name", "expected a string"))
    if len(problems) > before:
        return None
    label = f"{_days_label(days)} {_hhmm(start)}-{_hhmm(end)}"
    return _Allow(days=days, start=start, end=end, label=label, name=name or None)


def _parse_moment(value: Any) -> datetime | None:
    """Read an ISO 8601 date or date-time; naive when it has no offset."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime.combine(value, time(0))
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


MAX_DURATION = timedelta(days=366)
"""A cron window's duration: at most a year (longer would overlap its own next firing)."""
EARLIEST, LATEST = datetime(1970, 1, 1, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC)
"""Freeze instants must lie in this range: far enough from the ends of the calendar that
computing with them (offsets, the next allowed time) can never overflow."""


def _parse_duration(value: Any) -> timedelta | None:
    m = _DURATION.match(value.strip()) if isinstance(value, str) else None
    if m is None or not any(m.groups()):
        return None
    d, h, mi, sec = (int(g) if g else 0 for g in m.groups())
    if d > MAX_DURATION.days or h > 24 * MAX_DURATION.days or mi > 1440 * MAX_DURATION.days:
        return None
    try:
        total = timedelta(days=d, hours=h, minutes=mi, seconds=sec)
    except OverflowError:
        return None
    return total if timedelta(0) < total <= MAX_DURATION else None


def _cron_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "expected a cron expression such as '0 12 * * wed'"
    if value.strip().startswith("@"):
        return f"cron macros such as {value.strip()!r} are not supported; write 5 fields, for example '0 0 * * *'"
    if len(value.split()) != 5:
        fields = len(value.split())
        return f"cron expression {value!r} has {fields} fields; expected 5 (minute hour day-of-month month day-of-week)"
    from cronsim import CronSim, CronSimError

    try:
        CronSim(value, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        return f"cron expression {value!r} does not parse: {exc}"
    return None


def _parse_deny(entry: Any, i: int, tz: ZoneInfo | None, problems: list[tuple[str, str]]) -> _Span | _Cron | None:
    path = f"deny[{i}]"
    if not isinstance(entry, dict):
        problems.append((path, "expected a mapping with from/until, or cron with duration or cron_end"))
        return None
    name = entry.get("name")
    if name is not None and not isinstance(name, str):
        problems.append((f"{path}.name", "expected a string"))
        return None
    label = name or path
    has_span = "from" in entry or "until" in entry
    has_cron = "cron" in entry or "duration" in entry or "cron_end" in entry
    if has_span and has_cron:
        problems.append((path, "give either from/until or cron with duration/cron_end, not both"))
        return None
    if has_span:
        moments: list[datetime | None] = []
        for key in ("from", "until"):
            if key not in entry:
                problems.append((f"{path}.{key}", f"`{key}` is required with `{'until' if key == 'from' else 'from'}`"))
                moments.append(None)
                continue
            moment = _parse_moment(entry[key])
            if moment is None:
                problems.append(
                    (f"{path}.{key}", f"expected an ISO 8601 date-time such as '2026-12-18T00:00', got {entry[key]!r}")
                )
            moments.append(moment)
        start, until = moments
        if start is None or until is None:
            return None
        zone = tz or ZoneInfo("UTC")
        a: datetime | None
        b: datetime | None
        try:
            a, b = _instant(start, zone, last=False), _instant(until, zone, last=True)
        except OverflowError:
            a = b = None
        for key, instant in (("from", a), ("until", b)):
            if instant is None or not EARLIEST <= instant < LATEST:
                problems.append((f"{path}.{key}", f"expected a date-time between {EARLIEST.year} and "
                                                  f"{LATEST.year} (UTC), got {entry[key]!r}"))
                return None
        assert a is not None and b is not None  # noqa: S101
        if a >= b:
            order = f"`from` ({entry['from']}) must be earlier than `until` ({entry['until']})"
            problems.append((f"{path}.from", order))
            return None
        return _Span(name=label, start=a, until=b)
    if "cron" not in entry:
        problems.append((path, "expected `from` and `until`, or `cron` with `duration` or `cron_end`"))
        return None
    before = len(problems)
    problem = _cron_problem(entry["cron"])
    if problem:
        problems.append((f"{path}.cron", problem))
    duration: timedelta | None = None
    cron_end: str | None = None
    if ("duration" in entry) == ("cron_end" in entry):
        problems.append((path, "a cron window needs exactly one of `duration` or `cron_end`"))
    elif "duration" in entry:
        duration = _parse_duration(entry["duration"])
        if duration is None:
            got = entry["duration"]
            wanted = (f"expected a positive duration of at most {MAX_DURATION.days}d such as 30m, 1h30m or 2d "
                      f"(d, h, m, s in order), got {got!r}")
            problems.append((f"{path}.duration", wanted))
    else:
        problem = _cron_problem(entry["cron_end"])
        if problem:
            problems.append((f"{path}.cron_end", problem))
        else:
            cron_end = entry["cron_end"]
    if len(problems) > before:
        return None
    return _Cron(name=label, cron=entry["cron"], duration=duration, cron_end=cron_end)


def _country_hints(country: str, codes: list[str]) -> list[str]:
    """Suggest valid codes for a wrong one: another case, a country's name, a near code."""
    same = [c for c in codes if c.casefold() == country.casefold()]
    if same:
        return same
    try:  # country names come from the library's registry, which is not public API
        from holidays.registry import COUNTRIES

        names = {entry[0]: entry[1] for entry in COUNTRIES.values() if len(entry) > 1}
    except (ImportError, AttributeError, TypeError, IndexError):
        names = {}
    spaced = {n: re.sub(r"(?<=[a-z])(?=[A-Z])", " ", n) for n in names}  # UnitedStates -> United States
    by_name = [f"{names[n]} ({spaced[n]})" for n in _close(country.replace(" ", ""), list(names))]
    if by_name:
        return by_name
    near = _close(country, codes, n=5, cutoff=0.5)
    return near or [c for c in codes if c[:1].casefold() == country[:1].casefold()][:5]


def _parse_holidays(value: Any, problems: list[tuple[str, str]]) -> _Holidays | None:
    if isinstance(value, str):
        country, subdivision, path = value, None, "holidays"
    elif isinstance(value, dict) and isinstance(value.get("country"), str):
        country, subdivision, path = value["country"], value.get("subdivision"), "holidays.country"
        if subdivision is not None and not isinstance(subdivision, str):
            problems.append(("holidays.subdivision", "expected a subdivision code such as CA"))
            return None
    else:
        problems.append(("holidays", "expected a country code such as US, or {country: US, subdivision: CA}"))
        return None
    # The shipped table holds only codes the library accepted (same library version).
    if table_calendar(country, subdivision) is not None:
        return _Holidays(country=country, subdivision=subdivision)
    import holidays

    # Fast path: ask for the one country. Listing every supported country imports all of
    # them (~150 ms), so that happens only to explain a mistake.
    # (Only for code-shaped names: the library also resolves class names such as "Germany".)
    if re.fullmatch(r"[A-Z]{2,3}", country):
        try:
            holidays.country_holidays(country, subdiv=subdivision)
            return _Holidays(country=country, subdivision=subdivision)
        except (NotImplementedError, AttributeError):
            pass
    supported = holidays.list_supported_countries(include_aliases=True)
    if country not in supported:
        hits = _country_hints(country, sorted(holidays.list_supported_countries(include_aliases=False)))
        listed = f"; close valid codes: {', '.join(hits)}" if hits else "; expected an ISO 3166-1 code such as US or DE"
        problems.append((path, f"unknown holiday country code {country!r}{listed}"))
        return None
    if subdivision is not None:
        subs = supported[country]
        if not subs:
            hint = f"; {country} has no subdivisions"
        else:
            hint = _suggest(subdivision, subs) or f"; valid ones include {', '.join(subs[:8])} ({len(subs)} in all)"
        problems.append(("holidays.subdivision", f"unknown subdivision {subdivision!r} of {country}{hint}"))
        return None
    return _Holidays(country=country, subdivision=subdivision)


def _compile(params: dict[str, Any]) -> tuple[_Plan | None, list[tuple[str, str]]]:
    """Check the parameters and build the plan; the plan is None when there are problems."""
    problems: list[tuple[str, str]] = []
    tz: ZoneInfo | None = None
    if "timezone" not in params:
        problems.append(("timezone", "a time zone is required, such as America/New_York"))
    else:
        tz, problem = _parse_zone(params["timezone"])
        if problem:
            problems.append(("timezone", problem))
    allow: list[_Allow] = []
    if params.get("allow") is not None:
        if not isinstance(params["allow"], list):
            problems.append(("allow", "expected a list of windows"))
        else:
            for i, entry in enumerate(params["allow"]):
                window = _parse_allow(entry, f"allow[{i}]", problems)
                if window is not None:
                    allow.append(window)
    deny: list[_Span | _Cron] = []
    if params.get("deny") is not None:
        if not isinstance(params["deny"], list):
            problems.append(("deny", "expected a list of windows"))
        else:
            for i, entry in enumerate(params["deny"]):
                window_d = _parse_deny(entry, i, tz, problems)
                if window_d is not None:
                    deny.append(window_d)
    hol = _parse_holidays(params["holidays"], problems) if params.get("holidays") is not None else None
    if problems or tz is None:
        return None, problems
    return _Plan(tz=tz, allow=tuple(allow), deny=tuple(deny), holidays=hol), problems


# --------------------------------------------------------------------------- time arithmetic


def _transition(lo: datetime, hi: datetime, tz: ZoneInfo) -> datetime:
    """Return the first instant in ``(lo, hi]`` with the UTC offset ``hi`` has (one change between)."""
    lo_off = lo.astimezone(tz).utcoffset()
    a, b = lo, hi
    while (b - a) > timedelta(seconds=1):
        mid = a + timedelta(seconds=int((b - a).total_seconds()) // 2)
        if mid.astimezone(tz).utcoffset() == lo_off:
            a = mid
        else:
            b = mid
    return b


def _instant(moment: datetime, tz: ZoneInfo, *, last: bool) -> datetime:
    """Turn a local time (naive: in ``tz``) into a UTC instant.

    A reading that occurs twice gives its first occurrence, or its second when ``last``;
    a reading in a spring-forward gap gives the first instant after the gap.
    """
    if moment.tzinfo is not None and moment.utcoffset() is not None:
        return moment.astimezone(UTC)
    naive = moment.replace(tzinfo=None)
    first = naive.replace(tzinfo=tz, fold=0).astimezone(UTC)
    second = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
    if first == second:
        return first
    if first.astimezone(tz).replace(tzinfo=None) == naive:  # occurs twice
        return second if last else first
    # In the gap: fold=0 reads it with the offset before the change and lands after the gap,
    # fold=1 with the offset after and lands before it; the change lies between them.
    return _transition(min(first, second), max(first, second), tz)


def _day_start(day: date, tz: ZoneInfo) -> datetime:
    return _instant(datetime.combine(day, time(0)), tz, last=False)


def _transitions_on(day: date, tz: ZoneInfo) -> list[datetime]:
    lo = datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
    hi = lo + timedelta(hours=26)
    if lo.astimezone(tz).utcoffset() == hi.astimezone(tz).utcoffset():
        return []
    return [_transition(lo, hi, tz)]


def _prev_firing(expr: str, t: datetime, tz: ZoneInfo) -> datetime | None:
    """Return the latest firing of ``expr`` at or before ``t`` (UTC), or None."""
    from cronsim import CronSim

    it = CronSim(expr, (t + CRON_MARGIN).astimezone(tz), reverse=True)
    for _ in range(MAX_CRON_STEPS):
        try:
            fired = next(it).astimezone(UTC)
        except StopIteration:
            return None
        if fired <= t:
            return fired
    return None


def _next_firing(expr: str, t: datetime, tz: ZoneInfo) -> datetime | None:
    """Return the earliest firing of ``expr`` strictly after ``t`` (UTC), or None."""
    from cronsim import CronSim

    it = CronSim(expr, (t - CRON_MARGIN).astimezone(tz))
    for _ in range(MAX_CRON_STEPS):
        try:
            fired = next(it).astimezone(UTC)
        except StopIteration:
            return None
        if fired > t:
            return fired
    return None


def _chain_end(expr: str, duration: timedelta, began: datetime, tz: ZoneInfo) -> datetime:
    """Return when a run of overlapping or touching cron + duration windows ends.

    Only a speed-up for the forward search (every release is re-checked): without it, a
    cron firing every few minutes would make the search advance one window at a time.
    """
    from cronsim import CronSim

    ends = began + duration
    stop = ends + timedelta(days=SEARCH_DAYS + 1)
    it = CronSim(expr, began.astimezone(tz))
    for _ in range(MAX_CRON_STEPS):
        try:
            fired = next(it).astimezone(UTC)
        except StopIteration:
            break
        if fired > ends or ends > stop:
            break
        ends = max(ends, fired + duration)
    return ends


# --------------------------------------------------------------------------- wording


def _clock(local: datetime) -> str:
    return local.strftime("%H:%M:%S" if local.second else "%H:%M")


def _when(t: datetime, tz: ZoneInfo) -> str:
    local = t.astimezone(tz)
    return f"{WEEKDAY_NAMES[local.weekday()]} {local.date().isoformat()} {_clock(local)} {local.tzname()}"


def _bounds(a: datetime, b: datetime | None, tz: ZoneInfo) -> str:
    la = a.astimezone(tz)
    if b is None:
        return f"{la.date().isoformat()} {_clock(la)} {la.tzname()}, no end found"
    lb = b.astimezone(tz)
    end = _clock(lb) if lb.date() == la.date() else f"{lb.date().isoformat()} {_clock(lb)}"
    if la.tzname() == lb.tzname():
        return f"{la.date().isoformat()} {_clock(la)} to {end} {lb.tzname()}"
    return f"{la.date().isoformat()} {_clock(la)} {la.tzname()} to {end} {lb.tzname()}"


# --------------------------------------------------------------------------- judging


def _holiday_name(cal: Calendar | None, day: date) -> str | None:
    if cal is None:
        return None
    name = cal.get(day)
    return str(name) if name else None


def _allow_release(plan: _Plan, t: datetime) -> datetime | None:
    """Return the earliest instant after ``t`` at which the clock may enter an allow window."""
    tz = plan.tz
    today = t.astimezone(tz).date()
    candidates: list[datetime] = []
    for k in range(-1, 9):
        day = today + timedelta(days=k)
        candidates.extend(_transitions_on(day, tz))
        for window in plan.allow:
            if day.weekday() in window.days:
                naive = datetime.combine(day, time(0)) + timedelta(seconds=window.start)
                candidates.append(_instant(naive, tz, last=False))
                candidates.append(_instant(naive, tz, last=True))
    later = [c for c in candidates if c > t]
    return min(later) if later else None


def _blocks(plan: _Plan, t: datetime, cal: Calendar | None) -> tuple[list[_Block], _Allow | None]:
    """Return every reason ``t`` is not allowed, and the allow window it is inside (if any)."""
    tz = plan.tz
    blocks: list[_Block] = []
    for window in plan.deny:
        if isinstance(window, _Span):
            if window.start <= t < window.until:
                text = f'inside "{window.name}" ({_bounds(window.start, window.until, tz)})'
                blocks.append(_Block("deny", window.name, text, window.until))
            continue
        began = _prev_firing(window.cron, t, tz)
        if began is None:
            continue
        if window.duration is not None:
            if t < began + window.duration:
                ends = began + window.duration
                text = f'inside "{window.name}" ({_bounds(began, ends, tz)})'
                blocks.append(_Block("deny", window.name, text, _chain_end(window.cron, window.duration, began, tz)))
        elif window.cron_end is not None:
            ended = _prev_firing(window.cron_end, t, tz)
            if ended is None or began > ended:
                ends_at = _next_firing(window.cron_end, t, tz)
                text = f'inside "{window.name}" ({_bounds(began, ends_at, tz)})'
                blocks.append(_Block("deny", window.name, text, ends_at))
    local = t.astimezone(tz)
    holiday = _holiday_name(cal, local.date())
    if holiday is not None and plan.holidays is not None:
        day = f"{WEEKDAY_NAMES[local.weekday()]} {local.date().isoformat()}"
        text = f"{day} is a public holiday in {plan.holidays.where}: {holiday}"
        blocks.append(_Block("holiday", holiday, text, _day_start(local.date() + timedelta(days=1), tz)))
    inside = next((w for w in plan.allow if w.contains(local)), None)
    if plan.allow and inside is None:
        titles = ", ".join(w.title for w in plan.allow)
        noun = "window" if len(plan.allow) == 1 else "windows"
        text = f"outside the allowed {noun} {titles}"
        blocks.append(_Block("outside", None, text, _allow_release(plan, t)))
    return blocks, inside


def _next_allowed(
    plan: _Plan, now: datetime, cal: Calendar | None, blocks: list[_Block]
) -> tuple[datetime | None, bool]:
    """Return the first allowed instant after ``now`` (None if none in reach), and whether the step limit hit."""
    horizon = now + timedelta(days=SEARCH_DAYS)
    current = blocks
    for _ in range(MAX_SEARCH_STEPS):
        releases = [b.release for b in current]
        if any(r is None for r in releases):
            return None, False
        # Every blocking reason holds until its release, so nothing before the latest one is allowed.
        t = max(r for r in releases if r is not None)
        if t > horizon:
            return None, False
        current, _ = _blocks(plan, t, cal)
        if not current:
            return t, False
    return None, True


def _calendar(plan: _Plan) -> Calendar | None:
    if plan.holidays is None:
        return None
    country, subdivision = plan.holidays.country, plan.holidays.subdivision
    return table_calendar(country, subdivision) or library_calendar(country, subdivision)


class DeployWindowRule(RuleType):
    """Deploy only inside allowed local times, outside freezes and public holidays."""

    type_name = "deploy_window"

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> list[tuple[str, str]]:
        """Return every problem a schema cannot see: zones, cron expressions, times, days, holidays."""
        return _compile(params)[1]

    def evaluate(self, ctx: Context) -> Outcome:
        """Judge ``ctx.now`` against the windows, freezes and holidays."""
        plan, problems = _compile(self.params)
        if plan is None:
            listed = "; ".join(f"{path}: {message}" for path, message in problems)
            return Outcome(Status.ERROR, f"invalid deploy_window parameters: {listed}")
        now = ctx.now
        if now.tzinfo is None or now.utcoffset() is None:
            # Fail closed: a clock without a zone could be read in any of them.
            return Outcome(Status.ERROR, "the evaluation time has no time zone; cannot place it in a deploy window")
        from cronsim import CronSimError

        try:
            return self._judge(plan, now.astimezone(UTC))
        except (CronSimError, NotImplementedError, ValueError, ArithmeticError) as exc:
            return Outcome(Status.ERROR, f"could not compute the deploy window: {exc}")

    def _judge(self, plan: _Plan, now: datetime) -> Outcome:
        tz = plan.tz
        cal = _calendar(plan)
        blocks, inside = _blocks(plan, now, cal)
        local = now.astimezone(tz)
        holiday = next((b.name for b in blocks if b.kind == "holiday"), None)
        details: dict[str, Any] = {
            "timezone": tz.key,
            "local_time": local.isoformat(),
            "matched": [b.name for b in blocks if b.kind in ("deny", "holiday")],
            "allowed_by": (inside.name or inside.label) if inside else None,
            "next_allowed": None,
            "holiday": holiday,
        }
        if not blocks:
            where = f"inside the allowed window {inside.title} and " if inside else ""
            return Outcome(Status.PASS, f"{_when(now, tz)} is {where}in no freeze", details)
        found, stopped = _next_allowed(plan, now, cal, blocks)
        if found is not None:
            details["next_allowed"] = found.astimezone(tz).isoformat()
            tail = f"next allowed: {_when(found, tz)}"
        elif stopped:
            tail = f"no allowed time found (search stopped after {MAX_SEARCH_STEPS} steps)"
        else:
            tail = f"no allowed time in the next {SEARCH_DAYS} days"
        clauses = [b.text for b in blocks if b.kind == "holiday"]
        predicates = [b.text for b in blocks if b.kind != "holiday"]
        if predicates:
            clauses.insert(0, f"{_when(now, tz)} is {' and '.join(predicates)}")
        message = "; ".join([*clauses, tail])
        return Outcome(Status.FAIL, message, details)
