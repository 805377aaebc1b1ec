"""The run deadline: one monotonic limit on a whole ``check``, which every wait respects.

A person who sets ``POLICYENGINE_RUN_DEADLINE=600`` (the default: 10 minutes) expects
``check`` to end by then, whatever the code host, the ticket systems or git do. Each of those
has its own limits (``POLICYENGINE_HTTP_TIMEOUT``, the per-attempt deadline, retries, git's
timeouts), and together they could add up to hours; the run deadline bounds their sum:

* ``check`` creates one ``RunDeadline`` before it reads anything, and makes it the active one
  (``running``) for the whole run;
* every HTTP request (``providers.http``: connect, each read, each attempt, each backoff or
  rate-limit wait) and every git subprocess (``policysource``, the git evidence store, and its
  push retries) waits at most the time left (``limit``); with none left it does not start;
* gathering and judging may use the deadline less a **reserve** (a third, at most 60 s): the
  rest is kept to record the deny. ``recording()`` then opens the reserve, so the evidence
  store's own retries and git's timeouts count against the whole deadline, never beyond it;
* past it, whatever was waited for fails with the message of ``RunDeadlineError`` (as the
  caller's own error: ``ApiError``, so the fact is unavailable; ``EvidenceError``;
  ``PolicySourceError``; all exit 3), the deadline remembers what it was (``passed_while``), and
  ``check`` denies with a rule result that says so, records that deny, and exits 3.

Only code that waits reads this module; the judge never does (it reads no clock).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping

from policyengine.errors import EXIT_FACTS, PolicyEngineError, UsageError

ENV = "POLICYENGINE_RUN_DEADLINE"
DEFAULT_SECONDS = 600.0
MAX_RESERVE = 60.0
RESERVE_SHARE = 1 / 3


class RunDeadlineError(PolicyEngineError):
    """The run deadline passed while waiting for something (named in the message)."""

    exit_code = EXIT_FACTS

    def __init__(self, deadline: RunDeadline, waiting_for: str) -> None:
        self.waiting_for = waiting_for
        super().__init__(f"the run deadline ({ENV}={deadline.seconds:g} s) passed while waiting for {waiting_for}",
                         hint=f"find out why {waiting_for} is slow, or raise {ENV}")


class RunDeadline:
    """A monotonic deadline ``seconds`` from now; the last ``reserve`` seconds are for recording."""

    def __init__(self, seconds: float, reserve: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.reserve = min(MAX_RESERVE, seconds * RESERVE_SHARE) if reserve is None else reserve
        self._clock = clock
        self.end = clock() + seconds
        self._recording = False
        self.passed_while: str | None = None
        """What was waited for when the deadline first passed (None: it has not)."""

    def remaining(self) -> float:
        """Seconds left: to the start of the reserve while gathering, to the end once recording."""
        limit = self.end if self._recording else self.end - self.reserve
        return limit - self._clock()

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Open the reserve: what runs inside may wait until the whole deadline."""
        before, self._recording = self._recording, True
        try:
            yield
        finally:
            self._recording = before

    def passed(self, waiting_for: str) -> RunDeadlineError:
        """Note that the deadline passed while waiting for ``waiting_for``; return the error to raise."""
        if self.passed_while is None:
            self.passed_while = waiting_for
        return RunDeadlineError(self, waiting_for)

    def limit(self, own: float, waiting_for: str) -> float:
        """``own`` (a timeout, a wait), cut to the time left; raises ``RunDeadlineError`` when none is left."""
        left = self.remaining()
        if left <= 0:
            raise self.passed(waiting_for)
        return min(own, left)

    def check(self, waiting_for: str) -> None:
        """Raise ``RunDeadlineError`` when no time is left (after a wait ended by the deadline)."""
        if self.remaining() <= 0:
            raise self.passed(waiting_for)


_ACTIVE: RunDeadline | None = None


def active() -> RunDeadline | None:
    """The deadline of the run in progress (None: no ``check`` is running, e.g. a test or ``replay``)."""
    return _ACTIVE


@contextlib.contextmanager
def running(deadline: RunDeadline | None) -> Iterator[RunDeadline | None]:
    """Make ``deadline`` the active one for the duration (process-wide: the providers' thread
    pools see it too)."""
    global _ACTIVE
    before, _ACTIVE = _ACTIVE, deadline
    try:
        yield deadline
    finally:
        _ACTIVE = before


def limit(own: float, waiting_for: str) -> float:
    """``own`` cut to the active run's time left (``own`` when no run is active); raises
    ``RunDeadlineError`` when none is left."""
    run = _ACTIVE
    return own if run is None else run.limit(own, waiting_for)


def check(waiting_for: str) -> None:
    """Raise ``RunDeadlineError`` when the active run has no time left (nothing when none is active)."""
    if _ACTIVE is not None:
        _ACTIVE.check(waiting_for)


def seconds_from_env(env: Mapping[str, str]) -> float:
    """``POLICYENGINE_RUN_DEADLINE`` in seconds (default 600); not a positive number is a usage error."""
    raw = (env.get(ENV) or "").strip()
    if not raw:
        return DEFAULT_SECONDS
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{ENV}: {raw!r} is not a number of seconds",
                         hint=f"e.g. {ENV}=600 for ten minutes") from None
    if not value > 0 or value == float("inf"):
        raise UsageError(f"{ENV}: {raw!r} must be a positive number of seconds",
                         hint=f"e.g. {ENV}=600 for ten minutes")
    return value
