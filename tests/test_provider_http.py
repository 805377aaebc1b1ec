"""The provider HTTP session against a local server: retries, rate limits, pagination, redaction."""

from __future__ import annotations

import logging
import subprocess
import sys
import time

import pytest
from fake_servers import FakeAPI, Reply

from policyengine import __version__
from policyengine.providers import http
from policyengine.providers.http import (
    ApiError,
    HttpSession,
    HttpSettings,
    TokenInfo,
    parse_link_header,
)
from policyengine.redact import REDACTED, Redactor, redact, redact_bytes

TOKEN = "ghs_" + "C" * 36
CANARY = "canary-token-0123456789"


class Sleeps:
    """An injected sleep: records the waits, never waits."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def session(api: FakeAPI, sleeps: Sleeps | None = None, clock: float | None = None, **settings: float) -> HttpSession:
    return HttpSession(
        api.url,
        token=TokenInfo("Authorization", f"Bearer {TOKEN}", "GITHUB_TOKEN"),
        provider="github",
        settings=HttpSettings(**{"timeout": 5.0, "retries": 3, "max_wait": 60.0, "max_pages": 50, **settings}),
        redactor=Redactor([TOKEN, CANARY]),
        permission_hint=lambda path: "`pull-requests: read`" if "/pulls" in path else None,
        sleep=sleeps or Sleeps(),
        clock=(lambda: clock) if clock is not None else None,
    )


@pytest.fixture
def api() -> FakeAPI:
    with FakeAPI("/api/v3") as server:
        yield server


def test_requests_is_not_imported_with_policyengine() -> None:
    code = ("import sys, policyengine, policyengine.providers, policyengine.providers.http, "
            "policyengine.providers.github, policyengine.providers.gitlab, policyengine.cli; "
            "print('requests' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_user_agent_and_token_only_in_the_header(api: FakeAPI) -> None:
    api.json("/repos/a/b", {"ok": True})
    s = session(api)
    assert s.get_json("/repos/a/b", name="repo") == {"ok": True}
    req = api.requests[0]
    assert req.headers["User-Agent"] == f"policyengine/{__version__}"
    assert req.headers["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in req.path and not any(TOKEN in v for vs in req.query.values() for v in vs)
    assert s.raw == {"github/repo.json": b'{"ok": true}'}


def test_500_then_success_is_retried_with_backoff(api: FakeAPI) -> None:
    api.json("/x", [1])
    api.fail("/x", Reply(500, {"message": "boom"}), Reply(502, b"<html>bad gateway</html>"))
    sleeps = Sleeps()
    assert session(api, sleeps).get_json("/x") == [1]
    assert api.count("/x") == 3
    assert sleeps.waits == [0.5, 1.0]


def test_persistent_500_is_an_error_naming_endpoint_status_and_attempts(api: FakeAPI) -> None:
    api.json("/repos/a/b/pulls/1", {})
    api.fail("/repos/a/b/pulls/1", *[Reply(500, {"message": "boom"})] * 4)
    with pytest.raises(ApiError) as exc:
        session(api).get_json("/repos/a/b/pulls/1")
    assert str(exc.value) == "GET /repos/a/b/pulls/1: HTTP 500 Internal Server Error (4 attempts)"
    assert exc.value.status == 500 and exc.value.exit_code == 3
    assert api.count() == 4


def test_429_retry_after_is_honoured(api: FakeAPI) -> None:
    api.json("/x", {"ok": 1})
    api.fail("/x", Reply(429, {"message": "slow down"}, {"Retry-After": "7"}))
    sleeps = Sleeps()
    assert session(api, sleeps).get_json("/x") == {"ok": 1}
    assert sleeps.waits == [7.0]


def test_retry_after_longer_than_the_limit_is_a_clear_error_without_waiting(api: FakeAPI) -> None:
    api.json("/x", {})
    api.fail("/x", Reply(429, {"message": "slow down"}, {"Retry-After": "3600"}))
    sleeps = Sleeps()
    with pytest.raises(ApiError) as exc:
        session(api, sleeps).get_json("/x")
    assert "retry after 3600 s, more than the 60 s policyengine waits" in str(exc.value)
    assert sleeps.waits == []


def test_secondary_rate_limit_403_with_retry_after_is_waited_out(api: FakeAPI) -> None:
    api.json("/x", {"ok": 1})
    api.fail("/x", Reply(403, {"message": "You have exceeded a secondary rate limit"}, {"Retry-After": "2"}))
    sleeps = Sleeps()
    assert session(api, sleeps).get_json("/x") == {"ok": 1}
    assert sleeps.waits == [2.0]


def test_primary_rate_limit_waits_until_reset_when_short(api: FakeAPI) -> None:
    now = 1_800_000_000.0
    api.json("/x", {"ok": 1})
    api.fail("/x", Reply(403, {"message": "API rate limit exceeded"},
                         {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(now) + 20)}))
    sleeps = Sleeps()
    assert session(api, sleeps, clock=now).get_json("/x") == {"ok": 1}
    assert sleeps.waits == [21.0]


def test_rate_limit_exhaustion_is_a_clear_error_and_stops_asking(api: FakeAPI) -> None:
    now = 1_800_000_000.0
    api.json("/x", {})
    api.json("/y", {})
    api.fail("/x", Reply(403, {"message": "API rate limit exceeded for installation"},
                         {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(now) + 3000)}))
    s = session(api, clock=now)
    with pytest.raises(ApiError) as exc:
        s.get_json("/x")
    msg = str(exc.value)
    assert msg.startswith("GET /x: HTTP 403 Forbidden: the API rate limit of GITHUB_TOKEN is exhausted until ")
    assert "2027-01-15T08:50:00Z" in msg and "more than the 60 s policyengine waits" in msg
    with pytest.raises(ApiError, match="not requested: an earlier request failed"):
        s.get_json("/y")
    assert api.count() == 1


def test_timeout_is_retried_then_reported(api: FakeAPI) -> None:
    api.json("/slow", {})
    api.fail("/slow", Reply(200, {}, delay=0.6), Reply(200, {}, delay=0.6))
    started = time.monotonic()
    with pytest.raises(ApiError) as exc:
        session(api, timeout=0.15, retries=1).get_json("/slow")
    assert str(exc.value) == "GET /slow: timed out after 0.15 s (2 attempts)"
    assert time.monotonic() - started < 1.5


def test_timeout_then_success(api: FakeAPI) -> None:
    api.json("/slow", {"ok": 1})
    api.fail("/slow", Reply(200, {}, delay=0.6))
    assert session(api, timeout=0.15).get_json("/slow") == {"ok": 1}


def test_body_cut_short_is_retried(api: FakeAPI) -> None:
    api.json("/cut", {"ok": 1})
    api.fail("/cut", Reply(200, {"ok": 1, "padding": "x" * 100}, truncate=True))
    sleeps = Sleeps()
    assert session(api, sleeps).get_json("/cut") == {"ok": 1}
    assert api.count("/cut") == 2 and sleeps.waits == [0.5]


def test_truncated_json_is_an_error_not_an_empty_answer(api: FakeAPI) -> None:
    api.json("/bad", None)
    api.fail("/bad", Reply(200, b'[{"id": 1, "user": {"login": "bo'))
    with pytest.raises(ApiError) as exc:
        session(api).get_json("/bad")
    assert str(exc.value) == "GET /bad: HTTP 200 but the body is not valid JSON (truncated or not an API answer)"


def test_401_names_the_token_and_blocks_further_requests(api: FakeAPI) -> None:
    api.json("/repos/a/b/pulls/1", {"message": "Bad credentials"}, status=401)
    api.json("/repos/a/b", {})
    s = session(api)
    with pytest.raises(ApiError) as exc:
        s.get_json("/repos/a/b/pulls/1")
    assert str(exc.value) == ("GET /repos/a/b/pulls/1: HTTP 401 Unauthorized: GITHUB_TOKEN was rejected "
                              "(missing, expired or revoked) [API said: Bad credentials]")
    with pytest.raises(ApiError):
        s.get_json("/repos/a/b")
    assert api.count() == 1


def test_403_names_the_missing_permission(api: FakeAPI) -> None:
    api.json("/repos/a/b/pulls/1/reviews", {"message": "Resource not accessible by integration"}, status=403)
    with pytest.raises(ApiError) as exc:
        session(api).get_pages("/repos/a/b/pulls/1/reviews")
    assert ("HTTP 403 Forbidden: GITHUB_TOKEN lacks `pull-requests: read` "
            "[API said: Resource not accessible by integration]") in str(exc.value)
    assert exc.value.hint == "grant `pull-requests: read` to GITHUB_TOKEN"


def test_other_4xx_is_not_retried(api: FakeAPI) -> None:
    api.json("/x", {"message": "Validation Failed"}, status=422)
    with pytest.raises(ApiError, match=r"HTTP 422 Unprocessable"):
        session(api).get_json("/x")
    assert api.count() == 1


def test_link_pagination_follows_next_and_keeps_each_page(api: FakeAPI) -> None:
    api.pages("/items", list(range(250)))
    s = session(api)
    assert s.get_pages("/items", name="items") == list(range(250))
    assert api.count("/items") == 3
    assert sorted(s.raw) == ["github/items_p1.json", "github/items_p2.json", "github/items_p3.json"]
    assert [r.query["per_page"] for r in api.requests] == [["100"]] * 3


def test_pagination_inside_an_object(api: FakeAPI) -> None:
    api.pages("/runs", [{"n": i} for i in range(101)], key="check_runs", wrap={"total_count": 101})
    assert len(session(api).get_pages("/runs", key="check_runs")) == 101


def test_page_cap_is_an_error_not_a_partial_list(api: FakeAPI) -> None:
    api.pages("/items", list(range(350)))
    with pytest.raises(ApiError, match="more than 3 pages of 100; refusing to judge a partial list"):
        session(api, max_pages=3).get_pages("/items")


def test_token_is_never_sent_to_another_host() -> None:
    with FakeAPI() as a, FakeAPI() as b:
        a.json("/items", [1], headers={"Link": f'<{b.url}/steal?page=2>; rel="next"'})
        b.json("/steal", [2])
        a.json("/moved", {}, status=302, headers={"Location": f"{b.url}/steal"})
        s = session(a)
        with pytest.raises(ApiError, match="refused to send GITHUB_TOKEN to another host"):
            s.get_pages("/items")
        with pytest.raises(ApiError, match="redirected to 127.0.0.1"):
            s.get_json("/moved")
        assert b.count() == 0


def test_same_origin_redirect_is_followed(api: FakeAPI) -> None:
    api.json("/old", {}, status=301, headers={"Location": "/api/v3/new"})
    api.json("/new", {"moved": True})
    assert session(api).get_json("/old") == {"moved": True}


def test_echoed_secrets_are_redacted_before_parsing_and_in_raw(api: FakeAPI) -> None:
    api.json("/echo", {"title": f"leak {TOKEN} and {CANARY}", "auth": f"Bearer {TOKEN}"})
    s = session(api)
    data = s.get_json("/echo", name="echo")
    assert data == {"title": f"leak {REDACTED} and {REDACTED}", "auth": f"Bearer {REDACTED}"}
    assert TOKEN.encode() not in s.raw["github/echo.json"] and CANARY.encode() not in s.raw["github/echo.json"]


def test_error_messages_and_logs_never_hold_the_token(api: FakeAPI, caplog: pytest.LogCaptureFixture) -> None:
    api.json("/x", {"message": f"token {CANARY} is bad"}, status=401)
    caplog.set_level(logging.DEBUG, logger="policyengine.http")
    with pytest.raises(ApiError) as exc:
        session(api).get_json("/x")
    assert CANARY not in str(exc.value) and REDACTED in str(exc.value)
    assert caplog.records and all(CANARY not in r.getMessage() and TOKEN not in r.getMessage()
                                  for r in caplog.records)


def test_settings_from_env() -> None:
    s = HttpSettings.from_env({"POLICYENGINE_HTTP_TIMEOUT": "2.5", "POLICYENGINE_HTTP_RETRIES": "0",
                               "POLICYENGINE_HTTP_MAX_WAIT": "5", "POLICYENGINE_HTTP_MAX_PAGES": "7"})
    assert s == HttpSettings(timeout=2.5, retries=0, max_wait=5.0, max_pages=7)
    from policyengine.errors import UsageError

    with pytest.raises(UsageError, match="POLICYENGINE_HTTP_TIMEOUT"):
        HttpSettings.from_env({"POLICYENGINE_HTTP_TIMEOUT": "soon"})


def test_module_sleep_hook_is_used_when_none_is_injected(api: FakeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps = Sleeps()
    monkeypatch.setattr(http, "SLEEP", sleeps)
    api.json("/x", {})
    api.fail("/x", Reply(503, {}))
    s = HttpSession(api.url, token=TokenInfo("PRIVATE-TOKEN", "glpat-" + "x" * 20, "GITLAB_TOKEN"), provider="gitlab")
    s.get_json("/x")
    assert sleeps.waits == [0.5]


def test_parse_link_header() -> None:
    value = ('<https://api.github.com/x?page=2>; rel="next", <https://api.github.com/x?page=5>; rel="last", '
             '<https://gitlab.example.com/api/v4/y?page=1&per_page=100>; rel="first"')
    assert parse_link_header(value) == {"next": "https://api.github.com/x?page=2",
                                        "last": "https://api.github.com/x?page=5",
                                        "first": "https://gitlab.example.com/api/v4/y?page=1&per_page=100"}
    assert parse_link_header("") == {}


@pytest.mark.parametrize("secret", [
    "ghp_" + "a" * 36, "gho_" + "B" * 36, "ghs_" + "c1" * 18, "ghu_" + "D" * 36, "github_pat_" + "11AB_" * 10,
    "glpat-" + "x" * 20, "glcbt-" + "64_" + "y" * 20, "gldt-" + "z" * 20, "AKIAIOSFODNN7EXAMPLE",
])
def test_redact_token_patterns(secret: str) -> None:
    text = f"before {secret} after"
    assert redact(text) == f"before {REDACTED} after"
    assert redact_bytes(text.encode()) == f"before {REDACTED} after".encode()


@pytest.mark.parametrize("text, expected", [
    ("Authorization: token abcdef0123456789", f"Authorization: {REDACTED}"),
    ('{"Authorization": "Bearer xyz.abc.def-123"}', f'{{"Authorization": "{REDACTED}"}}'),
    ("curl -H 'PRIVATE-TOKEN: s3cr3tvalue99'", f"curl -H 'PRIVATE-TOKEN: {REDACTED}'"),
    ("JOB-TOKEN=abcdefgh12345", f"JOB-TOKEN={REDACTED}"),
    ("use Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig now", f"use Bearer {REDACTED} now"),
    ("authorization_required: true", "authorization_required: true"),
])
def test_redact_headers_and_bearer(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_literal_values_from_env() -> None:
    env = {"GITHUB_TOKEN": CANARY, "GITLAB_TOKEN": "plain-value-42x", "CI_JOB_TOKEN": "short"}
    text = f"{CANARY} plain-value-42x short canary-token%2D0123"
    out = redact(text, env)
    assert CANARY not in out and "plain-value-42x" not in out
    assert "short" in out  # too short to be redacted everywhere
    assert redact("x canary%2Dtoken", {"GITHUB_TOKEN": "canary-token"}) == "x canary%2Dtoken"
    r = Redactor(["a/b+c=d/secret"])
    assert r.text("q=a%2Fb%2Bc%3Dd%2Fsecret") == f"q={REDACTED}"
    assert r.bytes(b"\xff\xfe a/b+c=d/secret") == b"\xff\xfe " + REDACTED.encode()
