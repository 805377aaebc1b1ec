"""The one HTTP session every provider uses: timeouts, retries, rate limits, pagination, redaction.

What every request gets:

* a timeout (connect and each read: ``POLICYENGINE_HTTP_TIMEOUT``, default 30 s), always, and a
  total deadline per attempt (``POLICYENGINE_HTTP_DEADLINE``, default twice the timeout: 60 s, or
  4 s with a 2 s timeout) covering the connection and every read of the body: the body is
  streamed, the deadline checked between chunks, and no single read may wait longer than the
  time left, so a server that dribbles bytes cannot hold the gate longer than the deadline per
  attempt (at most ``retries + 1`` attempts);
* the run's deadline (``policyengine.deadline``, ``POLICYENGINE_RUN_DEADLINE``) above all that:
  no attempt, read, backoff or rate-limit wait goes past it; once it passed, the request fails
  (``ApiError``, naming the run deadline and the endpoint) without another attempt;
* a body size cap (``POLICYENGINE_HTTP_MAX_BYTES``, default 32 MiB) enforced while streaming: a
  larger ``Content-Length`` is refused before the body is read, and a body without one is
  counted as it arrives and abandoned at the cap (memory stays bounded);
* bounded retries with exponential backoff on 5xx answers, connection errors, timeouts and
  bodies cut short (``POLICYENGINE_HTTP_RETRIES`` retries, default 3);
* ``Retry-After`` honoured (429, 403 secondary rate limits, 503), and GitHub's primary rate
  limit (``x-ratelimit-remaining: 0`` with ``x-ratelimit-reset``) waited out, but never longer
  than ``POLICYENGINE_HTTP_MAX_WAIT`` seconds (default 60): beyond that, a clear error;
* ``Link``-header pagination (``per_page=100``), at most ``max_pages`` pages: a longer list is
  an error rather than a silently partial list (fail closed);
* a ``User-Agent: policyengine/<version>``; the token travels in a header only, and only to
  the API's own origin (a ``Link`` to another host is refused);
* every response body the decision uses is kept, secrets removed, for the evidence bundle's
  ``raw/`` folder; bodies are redacted *before* they are parsed, so an echoed token cannot
  reach the change either.

Errors are ``ApiError``: the method and path, the HTTP status, and for 401/403 which token
lacks which permission. ``requests`` is imported when a session is created, not when
``policyengine`` is imported.
"""

from __future__ import annotations

import email.utils
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

from policyengine import __version__
from policyengine import deadline as run_deadline
from policyengine.errors import EXIT_FACTS, PolicyEngineError
from policyengine.redact import Redactor

log = logging.getLogger("policyengine.http")

USER_AGENT = f"policyengine/{__version__}"
PER_PAGE = 100
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
DEFAULT_MAX_WAIT = 60.0
DEFAULT_MAX_PAGES = 50
DEADLINE_FACTOR = 2.0
"""The per-attempt deadline, unless ``POLICYENGINE_HTTP_DEADLINE`` is given, is this many timeouts."""
DEFAULT_DEADLINE = DEADLINE_FACTOR * DEFAULT_TIMEOUT
CHUNK = 64 * 1024
BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0
MAX_BODY = 32 * 1024 * 1024
RETRY_STATUSES = frozenset({500, 502, 503, 504})

# The clock and the sleep are module attributes so tests can replace them (no real waiting).
SLEEP: Callable[[float], None] = time.sleep
CLOCK: Callable[[], float] = time.time


class ApiError(PolicyEngineError):
    """An API request that did not give a usable answer.

    ``str(error)`` is the cause a provider records under the change's ``unavailable``:
    ``GET <path>: HTTP <status> <reason>: <what it means>``.
    """

    exit_code = EXIT_FACTS

    def __init__(self, method: str, path: str, status: int | None, detail: str, *, hint: str | None = None) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.detail = detail
        where = f"{method} {path}"
        super().__init__(f"{where}: {detail}", hint=hint)

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class TokenInfo:
    """How the session authenticates, and how to name the token in messages."""

    header: str  # e.g. "Authorization"
    value: str  # e.g. "Bearer <token>" (never printed)
    name: str  # e.g. "GITHUB_TOKEN"


@dataclass(frozen=True)
class HttpSettings:
    """Limits of a session; ``from_env`` reads the ``POLICYENGINE_HTTP_*`` overrides."""

    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    max_wait: float = DEFAULT_MAX_WAIT
    max_pages: int = DEFAULT_MAX_PAGES
    deadline: float = 0.0
    """Total seconds per attempt; 0 (the default): ``DEADLINE_FACTOR`` times ``timeout``."""
    max_bytes: int = MAX_BODY

    def __post_init__(self) -> None:
        if not self.deadline or self.deadline <= 0:
            object.__setattr__(self, "deadline", DEADLINE_FACTOR * self.timeout)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> HttpSettings:
        """Read ``POLICYENGINE_HTTP_TIMEOUT``, ``_RETRIES``, ``_MAX_WAIT``, ``_MAX_PAGES``, ``_DEADLINE``,
        ``_MAX_BYTES``."""
        from policyengine.errors import UsageError

        def number(name: str, default: float, kind: type) -> Any:
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                return default
            try:
                value = kind(raw.strip())
            except ValueError:
                raise UsageError(f"{name}: {raw!r} is not a number") from None
            if value < 0 or (value == 0 and name.endswith(("TIMEOUT", "DEADLINE", "MAX_BYTES"))):
                raise UsageError(f"{name}: {raw!r} must be positive")
            return value

        return cls(
            timeout=number("POLICYENGINE_HTTP_TIMEOUT", DEFAULT_TIMEOUT, float),
            retries=number("POLICYENGINE_HTTP_RETRIES", DEFAULT_RETRIES, int),
            max_wait=number("POLICYENGINE_HTTP_MAX_WAIT", DEFAULT_MAX_WAIT, float),
            max_pages=max(1, number("POLICYENGINE_HTTP_MAX_PAGES", DEFAULT_MAX_PAGES, int)),
            deadline=number("POLICYENGINE_HTTP_DEADLINE", 0.0, float),  # 0: DEADLINE_FACTOR x the timeout
            max_bytes=number("POLICYENGINE_HTTP_MAX_BYTES", MAX_BODY, int),
        )


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


_LINK_RE = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]+)*)")


def parse_link_header(value: str) -> dict[str, str]:
    """Return ``{rel: url}`` from a ``Link`` header (RFC 8288), e.g. ``{"next": "https://..."}``."""
    links: dict[str, str] = {}
    for match in _LINK_RE.finditer(value or ""):
        url, params = match.group(1), match.group(2)
        for param in params.split(";"):
            key, _, val = param.strip().partition("=")
            if key.strip().lower() == "rel":
                for rel in val.strip().strip('"').split():
                    links.setdefault(rel.lower(), url)
    return links


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now)


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n >= 1024 * 1024 and n % (1024 * 1024) == 0 else f"{n} bytes"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _TooLarge(Exception):
    """The body is larger than the cap (announced, or counted while streaming)."""


class _DeadlinePassed(Exception):
    """The attempt's total deadline passed while the body was being read."""


def _set_read_timeout(resp: Any, seconds: float) -> None:
    """Make the next socket read of ``resp`` wait at most ``seconds`` (best effort)."""
    getters: tuple[Callable[[Any], Any], ...] = (lambda r: r.raw.connection.sock,
                                                 lambda r: r.raw._fp.fp.raw._sock)
    for get in getters:
        try:
            sock = get(resp)
        except AttributeError:
            continue
        if sock is not None:
            try:
                sock.settimeout(max(0.001, seconds))
            except OSError:
                pass
            return


def _read_body(resp: Any, limit: int, deadline: float, read_timeout: float, *, truncate: bool = False) -> bytes:
    """Stream the body of ``resp``: at most ``limit`` bytes, finished before ``deadline`` (monotonic).

    ``truncate``: stop quietly at ``limit`` (error bodies, of which only the start is shown);
    else a longer body raises ``_TooLarge``. Raises ``_DeadlinePassed`` when time runs out.
    """
    length = resp.headers.get("Content-Length")
    if not truncate and length and length.strip().isdigit() and int(length) > limit:
        raise _TooLarge(f"it announces {int(length)} bytes")
    parts: list[bytes] = []
    size = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _DeadlinePassed()
        _set_read_timeout(resp, min(read_timeout, left))
        # read1 returns as soon as any bytes arrive (read(n) would wait for n of them), so the
        # deadline is checked between small reads; urllib3 < 2 has no read1: smaller reads.
        read1 = getattr(resp.raw, "read1", None)
        chunk = read1(CHUNK, decode_content=True) if callable(read1) else resp.raw.read(4096, decode_content=True)
        if not chunk:
            if time.monotonic() > deadline:
                raise _DeadlinePassed()
            release = getattr(resp.raw, "release_conn", None)
            if callable(release):  # read to the end: the connection can serve the next request
                release()
            return b"".join(parts)
        size += len(chunk)
        if size > limit:
            if truncate:
                parts.append(chunk[: len(chunk) - (size - limit)])
                return b"".join(parts)
            raise _TooLarge(f"more than {limit} bytes arrived")
        parts.append(chunk)


class HttpSession:
    """A provider's connection to one API: every request goes through ``get_json`` or ``get_pages``.

    Thread-safe for the providers' use: independent endpoints are fetched from a small thread
    pool; the counters and the raw store are guarded by a lock.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: TokenInfo,
        provider: str,
        settings: HttpSettings | None = None,
        redactor: Redactor | None = None,
        extra_headers: Mapping[str, str] | None = None,
        permission_hint: Callable[[str], str | None] | None = None,
        unauthorized_hint: str | None = None,
        block_on_401: bool = True,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        import requests  # imported here: `import policyengine` must stay light

        self._requests = requests
        import urllib3.exceptions

        # Reading a streamed body raises urllib3's own errors (requests only wraps them in .content).
        self._urllib3_timeout = urllib3.exceptions.TimeoutError
        self._urllib3_errors: tuple[type[Exception], ...] = (
            urllib3.exceptions.ProtocolError, urllib3.exceptions.DecodeError)
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            from policyengine.errors import UsageError

            raise UsageError(f"API base URL {base_url!r} is not an http(s) URL")
        self._origin = (parts.scheme, parts.netloc)
        self._base_path = parts.path
        self.token = token
        self.provider = provider
        self.settings = settings or HttpSettings()
        self.redactor = redactor or Redactor([token.value])
        self._permission_hint = permission_hint
        self._unauthorized_hint = unauthorized_hint
        # A 401 means the token is bad: every later request would fail too, so none is sent.
        # (Not for GitLab's job token, which is refused by endpoints it may not use.)
        self._block_on_401 = block_on_401
        self._sleep_fn = sleep
        self._clock_fn = clock
        self._session = requests.Session()
        self._session.headers.update(
            {"User-Agent": USER_AGENT, "Accept": "application/json", **(extra_headers or {})}
        )
        # The token is added per request, not to the session, so that no redirect or Link
        # to another host can carry it (requests also drops Authorization on such redirects).
        self._lock = threading.Lock()
        self.raw: dict[str, bytes] = {}
        self.requests_made = 0
        self.waited = 0.0
        self._cache: dict[str, Any] = {}
        self._blocked: ApiError | None = None  # a 401 or an exhausted rate limit: stop asking

    # -- helpers --------------------------------------------------------------------------

    def _sleep(self, seconds: float) -> None:
        with self._lock:
            self.waited += seconds
        (self._sleep_fn or SLEEP)(seconds)

    def _now(self) -> float:
        return (self._clock_fn or CLOCK)()

    def _run_left(self, method: str, shown: str) -> float:
        """Seconds the run's deadline leaves (inf without one); past it, the ``ApiError`` that says so."""
        try:
            return run_deadline.limit(float("inf"), self._waiting_for(method, shown))
        except run_deadline.RunDeadlineError as exc:
            raise ApiError(method, shown, None, exc.message, hint=exc.hint) from None

    def _waiting_for(self, method: str, shown: str) -> str:
        return self.redactor.text(f"the {self.provider} API at {self._origin[1]} ({method} {shown})")

    def _url(self, path: str, params: Mapping[str, Any] | None) -> str:
        url = path if path.startswith(("http://", "https://")) else self.base_url + path
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params)
        return url

    def display_path(self, url: str) -> str:
        """The path and query of ``url`` relative to the API base, for messages (never a token)."""
        parts = urlsplit(url)
        path = parts.path
        if self._base_path and path.startswith(self._base_path):
            path = path[len(self._base_path):] or "/"
        shown = path + (f"?{parts.query}" if parts.query else "")
        return self.redactor.text(shown)

    def close(self) -> None:
        """Release the connections."""
        self._session.close()

    def _same_origin(self, url: str) -> bool:
        parts = urlsplit(url)
        return (parts.scheme, parts.netloc) == self._origin

    def _denied(self, method: str, shown: str, status: int, body: str, headers: Mapping[str, str]) -> ApiError:
        """Explain a 401, 403 or 404: which token, which permission."""
        name = self.token.name
        api_message = _api_message(body)
        need = self._permission_hint(shown) if self._permission_hint else None
        reason = f"HTTP {status} {_reason(status)}"
        if status == 401:
            detail = f"{reason}: {name} was rejected (missing, expired or revoked)"
            if self._unauthorized_hint:
                detail += f"; {self._unauthorized_hint}"
            hint = f"check that {name} is set to a valid token for this {self.provider} instance"
        elif status == 403:
            detail = f"{reason}: {name} lacks {need}" if need else f"{reason}: {name} is not allowed to read this"
            hint = f"grant {need} to {name}" if need else None  # type: ignore[assignment]
        else:
            detail = f"{reason}" + (f" (or {name} lacks {need}: APIs answer 404 for what a token cannot see)"
                                    if need else "")
            hint = None
        if api_message:
            detail += f" [API said: {api_message}]"
        return ApiError(method, shown, status, self.redactor.text(detail), hint=hint)

    # -- one request ----------------------------------------------------------------------

    def _request(self, url: str, *, method: str = "GET", body: bytes | None = None, redirect_out: bool = False,
                 redact: bool = True) -> tuple[bytes, Mapping[str, str]]:
        """GET ``url`` (or send ``body`` with ``method``) with retries; return the redacted body
        and the headers of a 2xx answer. Only a GET follows redirects (within the origin).

        ``redirect_out``: a redirect to another origin is not followed but returned, as an empty
        body and its ``Location`` (``download`` fetches it without the token). ``redact`` False:
        the body is returned as received (bytes that are only hashed, never kept or shown)."""
        requests = self._requests
        shown = self.display_path(url)
        if not self._same_origin(url):
            raise ApiError(method, shown, None, f"refused to send {self.token.name} to another host "
                           f"({urlsplit(url).netloc}); the API base is {self._origin[1]}")
        if self._blocked is not None:
            raise ApiError(method, shown, self._blocked.status,
                           f"not requested: an earlier request failed ({self._blocked.detail})",
                           hint=self._blocked.hint)
        s = self.settings
        attempt = 0
        redirects = 0
        last: str = ""
        while True:
            attempt += 1
            left = self._run_left(method, shown)  # the run's deadline first: past it, no attempt starts
            with self._lock:
                self.requests_made += 1
            started = time.monotonic()
            deadline = started + min(s.deadline, left)
            resp = None
            sent = {self.token.header: self.token.value} if self.token.header else {}
            if body is not None:
                sent["Content-Type"] = "application/json; charset=utf-8"
            try:
                resp = self._session.request(
                    method,
                    url,
                    data=body,
                    headers=sent,
                    timeout=(min(s.timeout, 10.0, s.deadline, left), min(s.timeout, s.deadline, left)),
                    # Redirects are followed below, and only within the API's origin: requests
                    # would forward a PRIVATE-TOKEN header to any host a redirect names.
                    allow_redirects=False,
                    stream=True,
                )
                ok = 200 <= resp.status_code < 300
                # Streamed under the deadline and the size cap; a cut-short body raises here.
                content = _read_body(resp, s.max_bytes if ok else 65536, deadline, s.timeout, truncate=not ok)
            except _TooLarge as exc:
                assert resp is not None  # noqa: S101
                resp.close()
                raise ApiError(method, shown, resp.status_code, f"HTTP {resp.status_code}: the body is larger than "
                               f"the {_size(s.max_bytes)} policyengine reads ({exc}); refused") from None
            except _DeadlinePassed:
                if resp is not None:
                    resp.close()
                last = f"the answer took longer than the {s.deadline:g} s deadline"
                status: int | None = None
            except (requests.exceptions.Timeout, TimeoutError, self._urllib3_timeout):
                if resp is not None:
                    resp.close()
                # A read cut short to the time left is the deadline, not the per-read timeout.
                passed = time.monotonic() >= deadline - 0.05 and s.deadline < s.timeout + (time.monotonic() - started)
                last = (f"the answer took longer than the {s.deadline:g} s deadline" if passed
                        else f"timed out after {min(s.timeout, s.deadline):g} s")
                status = None
            except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError, *self._urllib3_errors, OSError) as exc:
                if resp is not None:
                    resp.close()
                last = "connection failed" + (": the body was cut short" if isinstance(
                    exc, (requests.exceptions.ChunkedEncodingError, *self._urllib3_errors)) else "")
                status = None
            else:
                status = resp.status_code
                log.debug("%s %s -> %s in %.3fs (attempt %d)", method, shown, status, time.monotonic() - started,
                          attempt)
                headers = resp.headers
                if status in (301, 302, 303, 307, 308) and method != "GET":
                    raise ApiError(method, shown, status, f"HTTP {status} {_reason(status)}: redirected; a {method} "
                                   "is not sent again to another address")
                if status in (301, 302, 303, 307, 308) and headers.get("Location"):
                    target = urljoin(url, headers["Location"])
                    redirects += 1
                    if redirect_out and not self._same_origin(target) and redirects <= 5:
                        return b"", {"Location": target}
                    if not self._same_origin(target) or redirects > 5:
                        raise ApiError(method, shown, status, f"HTTP {status}: redirected to "
                                       f"{urlsplit(target).netloc or target}; not followed with {self.token.name} "
                                       "(another host, or too many redirects)")
                    url = target
                    attempt -= 1
                    continue
                if 200 <= status < 300:
                    return (self.redactor.bytes(content) if redact else content), headers
                body_text = self.redactor.text(content[:65536].decode("utf-8", errors="replace"))
                wait = self._rate_limit_wait(method, shown, status, headers, body_text)
                if wait is not None:
                    if attempt > s.retries:
                        raise ApiError(method, shown, status, f"HTTP {status} {_reason(status)}: still "
                                       f"rate limited after {attempt} attempts")
                    log.debug("%s %s: rate limited, waiting %.1fs", method, shown, wait)
                    self._sleep(min(wait, max(0.0, self._run_left(method, shown))))
                    continue
                if status in (401, 403, 404):
                    err = self._denied(method, shown, status, body_text, headers)
                    if status == 401 and self._block_on_401:
                        self._blocked = err
                    raise err
                if status not in RETRY_STATUSES:
                    api_message = _api_message(body_text)
                    raise ApiError(method, shown, status, f"HTTP {status} {_reason(status)}"
                                   + (f" [API said: {api_message}]" if api_message else ""))
                last = f"HTTP {status} {_reason(status)}"
                retry_after = _retry_after(headers.get("Retry-After"), self._now())
                if retry_after is not None and retry_after > s.max_wait:
                    raise ApiError(method, shown, status, f"{last}: the API asks to retry after "
                                   f"{retry_after:.0f} s, more than the {s.max_wait:g} s policyengine waits")
            log.debug("%s %s: %s (attempt %d)", method, shown, last, attempt)
            left = self._run_left(method, shown)  # an attempt cut short by the run's deadline ends here
            if attempt > s.retries:
                noun = "attempt" if attempt == 1 else "attempts"
                raise ApiError(method, shown, status, f"{last} ({attempt} {noun})")
            backoff = min(BACKOFF_CAP, BACKOFF_BASE * (2 ** (attempt - 1)))
            if status is not None and resp is not None:
                ra = _retry_after(resp.headers.get("Retry-After"), self._now())
                if ra is not None:
                    backoff = max(backoff, ra)
            self._sleep(min(backoff, left))

    def _rate_limit_wait(self, method: str, shown: str, status: int, headers: Mapping[str, str],
                         body: str) -> float | None:
        """Seconds to wait before retrying a rate-limited answer, None if it is not one.

        Raises (and blocks the session) when the wait would exceed ``max_wait``.
        """
        if status not in (403, 429):
            return None
        now = self._now()
        max_wait = self.settings.max_wait
        retry_after = _retry_after(headers.get("Retry-After"), now)
        remaining = headers.get("x-ratelimit-remaining")
        reset = headers.get("x-ratelimit-reset")
        if retry_after is not None:
            if retry_after > max_wait:
                err = ApiError(method, shown, status,
                               f"HTTP {status} {_reason(status)}: rate limited; the API asks to retry after "
                               f"{retry_after:.0f} s, more than the {max_wait:g} s policyengine waits",
                               hint="retry the deploy later, or raise POLICYENGINE_HTTP_MAX_WAIT")
                self._blocked = err
                raise err
            return retry_after
        if remaining is not None and remaining.strip() == "0":
            try:
                reset_at = float(reset) if reset is not None else None
            except ValueError:
                reset_at = None
            if reset_at is None:
                wait = 60.0
                when = "an unknown time"
            else:
                wait = max(0.0, reset_at - now) + 1.0
                when = _iso(reset_at)
            if wait > max_wait:
                err = ApiError(method, shown, status,
                               f"HTTP {status} {_reason(status)}: the API rate limit of {self.token.name} "
                               f"is exhausted until {when} ({wait:.0f} s), more than the {max_wait:g} s "
                               "policyengine waits",
                               hint="retry the deploy after the reset, or use a token with its own limit")
                self._blocked = err
                raise err
            return wait
        if status == 429:
            return min(max_wait, BACKOFF_CAP)
        return None

    # -- public ---------------------------------------------------------------------------

    def _record(self, name: str | None, body: bytes) -> None:
        if name:
            with self._lock:
                self.raw[f"{self.provider}/{name}.json"] = body

    def _decode(self, url: str, body: bytes) -> Any:
        try:
            return json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ApiError("GET", self.display_path(url), 200,
                           "HTTP 200 but the body is not valid JSON (truncated or not an API answer)") from None

    def get_json(self, path: str, params: Mapping[str, Any] | None = None, *, name: str | None = None) -> Any:
        """GET one JSON document; keep its body as ``raw/<provider>/<name>.json``."""
        url = self._url(path, params)
        with self._lock:
            if url in self._cache:
                return self._cache[url]
        body, _ = self._request(url)
        self._record(name, body)
        data = self._decode(url, body)
        with self._lock:
            self._cache[url] = data
        return data

    def download(self, url: str, *, max_bytes: int) -> bytes:
        """GET a file (a GitHub artifact's archive) of at most ``max_bytes``, as received.

        The API answers with a redirect to storage on another host (a signed, short-lived URL):
        that is fetched without the token, and only over https (or http to this host, for
        tests); the same timeouts, deadline and retries apply. The bytes are not redacted:
        callers hash them and keep nothing of them."""
        from dataclasses import replace

        shown = self.display_path(url)
        body, headers = self._request(url, redirect_out=True, redact=False)
        target = headers.get("Location") if not body else None
        limits = replace(self.settings, max_bytes=max_bytes)
        if target is None:
            if len(body) > max_bytes:
                raise ApiError("GET", shown, 200, f"the file is larger than the {_size(max_bytes)} read; refused")
            return body
        parts = urlsplit(target)
        host = parts.hostname or ""
        if not (parts.scheme == "https" or (parts.scheme == "http" and _loopback(host))):
            raise ApiError("GET", shown, None, f"redirected to {parts.scheme}://{host}: only https is followed")
        storage = HttpSession(f"{parts.scheme}://{parts.netloc}", token=TokenInfo("", "", "no token"),
                              provider=self.provider, settings=limits, redactor=self.redactor)
        try:
            data, _ = storage._request(target, redact=False)
        except ApiError as exc:  # name the API's path, never the signed storage URL
            raise ApiError("GET", shown, exc.status, f"downloading from {host}: {exc.detail}") from None
        finally:
            storage.close()
        return data

    def post_json(self, url: str, document: Any) -> None:
        """POST ``document`` as JSON to ``url`` (of this session's origin); return on a 2xx answer.

        The same limits as a GET (timeouts, the deadline, the body cap, bounded retries on 5xx,
        connection errors and rate limits); a redirect is an error, never followed. Raises
        ``ApiError``. Used for notifications (``policyengine.lifecycle.notify``).
        """
        data = json.dumps(document, ensure_ascii=False).encode("utf-8")
        self._request(url, method="POST", body=data)

    def post_graphql(self, url: str, query: str, variables: Mapping[str, Any], *, what: str,
                     name: str | None = None, tolerate: tuple[str, ...] | None = None,
                     tolerated: list[str] | None = None) -> Any:
        """POST a GraphQL ``query`` to ``url`` (of this session's origin: the token goes nowhere
        else); return its ``data``. An answer with ``errors``, or without an object under
        ``data``, raises ``ApiError`` naming ``what`` was asked (fail closed: a partial answer is
        never taken for the whole). ``name``: keep the answer as ``raw/<provider>/<name>.json``.

        ``tolerate``: a field path (e.g. ``("repository", "deployments")``) whose own errors do not
        fail the answer: when every error lies under it, their messages go to ``tolerated`` and the
        caller treats that field as unreadable (GitHub answers it null)."""
        body = json.dumps({"query": query, "variables": dict(variables)}, ensure_ascii=False).encode("utf-8")
        raw, _ = self._request(url, method="POST", body=body)
        self._record(name, raw)
        answer = self._decode(url, raw)
        shown = self.display_path(url)
        if not isinstance(answer, dict):
            raise ApiError("POST", shown, 200, f"HTTP 200 but the answer to {what} is not a GraphQL object")
        errors = answer.get("errors")
        if errors and tolerate and tolerated is not None and isinstance(errors, list) and all(
                isinstance(e, dict) and isinstance(e.get("path"), list)
                and tuple(e["path"][:len(tolerate)]) == tolerate for e in errors):
            tolerated.extend(str(e.get("message"))[:200] for e in errors)
            errors = None
        if errors:
            first = errors[0] if isinstance(errors, list) and errors else errors
            message = first.get("message") if isinstance(first, dict) else first
            raise ApiError("POST", shown, 200, f"GraphQL error for {what}: {str(message)[:200]}")
        data = answer.get("data")
        if not isinstance(data, dict):
            raise ApiError("POST", shown, 200, f"HTTP 200 but the answer to {what} has no data object")
        return data

    def iter_pages(self, path: str, params: Mapping[str, Any] | None = None, *,
                   name: str | None = None) -> Iterator[Any]:
        """Yield each page's JSON, following ``Link: rel="next"`` (``per_page=100``).

        Page ``n``'s body is kept as ``raw/<provider>/<name>_p<n>.json``. More than
        ``max_pages`` pages raise ``ApiError``: a partial list is never returned as whole.
        """
        query = {"per_page": PER_PAGE, **(params or {})}
        url: str | None = self._url(path, query)
        page = 0
        while url:
            page += 1
            if page > self.settings.max_pages:
                raise ApiError("GET", self.display_path(url), None,
                               f"more than {self.settings.max_pages} pages of {PER_PAGE}; refusing to judge a "
                               "partial list", hint="raise POLICYENGINE_HTTP_MAX_PAGES")
            body, headers = self._request(url)
            self._record(f"{name}_p{page}" if name else None, body)
            yield self._decode(url, body)
            nxt = parse_link_header(headers.get("Link", "")).get("next")
            url = urljoin(url, nxt) if nxt else None

    def get_pages(self, path: str, params: Mapping[str, Any] | None = None, *, name: str | None = None,
                  key: str | None = None) -> list[Any]:
        """GET every page of a list and return the items (``key``: the list inside an object page)."""
        items: list[Any] = []
        for page in self.iter_pages(path, params, name=name):
            if key and not isinstance(page, dict):
                raise ApiError("GET", self.display_path(self._url(path, params)), 200,
                               f"HTTP 200 but the answer is not an object with a list under {key!r}")
            chunk = page.get(key) if key else page
            if not isinstance(chunk, list):
                raise ApiError("GET", self.display_path(self._url(path, params)), 200,
                               f"HTTP 200 but the answer is not a list{f' under {key!r}' if key else ''}")
            items.extend(chunk)
        return items


def _loopback(host: str) -> bool:
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _api_message(body: str) -> str:
    """The ``message`` (GitHub) or ``message``/``error`` (GitLab) of an error body, shortened."""
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    if isinstance(data, dict):
        msg = data.get("message") or data.get("error") or data.get("error_description")
        if isinstance(msg, (dict, list)):
            msg = json.dumps(msg)[:200]
        if isinstance(msg, str):
            return msg[:200]
    return ""
