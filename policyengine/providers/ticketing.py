"""What the Jira and ServiceNow clients share: where the instance is, how to log in, and the
record each lookup leaves in the evidence.

**Where.** The instance comes from the policy (``jira.url``, ``servicenow.url``) or from the
environment (``JIRA_BASE_URL``, ``SERVICENOW_INSTANCE_URL``). When both are given they must
name the same instance: a pipeline that points the variable at another server (a fake Jira
that answers "Done" to everything) is refused, so pin ``url`` in the policy. The URL must be
https; plain http is accepted only for a loopback host (a local test server).

**Credentials** (never in the policy, never in any output; ``redact.SECRET_VARIABLES`` lists
them):

* Jira Cloud: ``JIRA_EMAIL`` + ``JIRA_API_TOKEN`` (HTTP basic); Jira Data Center / Server:
  ``JIRA_TOKEN`` (a personal access token, sent as a bearer token). Basic wins when both are set.
* ServiceNow: ``SERVICENOW_USER`` + ``SERVICENOW_PASSWORD`` (HTTP basic) or
  ``SERVICENOW_TOKEN`` (an OAuth access token, bearer). Basic wins when both are set.

Without an instance or credentials, every key of that system is ``unavailable`` (the rule
errors, naming the variables to set): nothing is asked anonymously.

**Records.** Every lookup, answered or not, leaves one record, a JSON object kept in the
bundle as ``raw/tickets/<system>/<key>.json``::

    {"system": "jira", "key": "PAY-101", "request": "GET /rest/api/2/issue/PAY-101?fields=...",
     "http_status": 200, "body": {...the redacted answer...}, "error": null}

The answer the judge reads is parsed from that record (``jira.answer``, ``servicenow.answer``),
live or replayed, so a replay reads exactly what was decided on.
"""

from __future__ import annotations

import base64
import ipaddress
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from msgspec import Struct

from policyengine.providers.http import ApiError, HttpSession, HttpSettings, TokenInfo
from policyengine.redact import Redactor

SYSTEMS = ("jira", "servicenow")


class System(Struct, frozen=True):
    """One ticket system's environment variables and names, for messages."""

    name: str
    label: str
    url_variable: str
    user_variable: str
    secret_variable: str
    token_variable: str


JIRA = System("jira", "Jira", "JIRA_BASE_URL", "JIRA_EMAIL", "JIRA_API_TOKEN", "JIRA_TOKEN")
SERVICENOW = System("servicenow", "ServiceNow", "SERVICENOW_INSTANCE_URL", "SERVICENOW_USER",
                    "SERVICENOW_PASSWORD", "SERVICENOW_TOKEN")
BY_NAME = {JIRA.name: JIRA, SERVICENOW.name: SERVICENOW}


class NotConfigured(Exception):
    """The system cannot be asked: no instance, no credentials, or an instance the policy does not name."""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def base_url(system: System, env: Mapping[str, str], pinned: str | None) -> str:
    """The instance to ask. Raises NotConfigured naming the cause."""
    from_env = (env.get(system.url_variable) or "").strip()
    if pinned and from_env and from_env.rstrip("/") != pinned.rstrip("/"):
        raise NotConfigured(f"{system.url_variable} ({from_env}) is not the {system.label} instance the policy names "
                            f"({pinned}); refusing to ask another server")
    url = (pinned or from_env).rstrip("/")
    if not url:
        raise NotConfigured(f"no {system.label} instance: set {system.url_variable} or `url` in the policy")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NotConfigured(f"the {system.label} URL {url!r} is not an http(s) URL")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise NotConfigured(f"the {system.label} URL {url!r} is plain http: credentials are only sent over https")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise NotConfigured(f"the {system.label} URL may hold no user, password, query or fragment")
    return url


def credentials(system: System, env: Mapping[str, str]) -> tuple[TokenInfo, list[str]]:
    """The Authorization header, and every form of the secret to redact. Raises NotConfigured."""
    user = (env.get(system.user_variable) or "").strip()
    secret = env.get(system.secret_variable) or ""
    token = env.get(system.token_variable) or ""
    if user and secret:
        pair = base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")
        return (TokenInfo("Authorization", f"Basic {pair}", f"{system.user_variable}/{system.secret_variable}"),
                [pair, secret])
    if token:
        return TokenInfo("Authorization", f"Bearer {token}", system.token_variable), [token]
    raise NotConfigured(f"no {system.label} credentials: set {system.user_variable} and {system.secret_variable}, "
                        f"or {system.token_variable}")


def open_session(system: System, env: Mapping[str, str], pinned: str | None) -> HttpSession:
    """A session to the system's instance, its secrets redacted from every body. Raises NotConfigured."""
    url = base_url(system, env, pinned)
    token, secrets = credentials(system, env)
    redactor = Redactor.from_env(env, extra=[token.value, *secrets])
    return HttpSession(url, token=token, provider=system.name, settings=HttpSettings.from_env(env),
                       redactor=redactor)


def get_record(session: HttpSession, system: str, key: str, path: str, params: Mapping[str, str]) -> dict[str, Any]:
    """Ask once and return the record of the request and its answer (or why there is none)."""
    shown = session.display_path(session._url(path, params))
    record: dict[str, Any] = {"system": system, "key": key, "request": f"GET {shown}", "http_status": None,
                              "body": None, "error": None}
    try:
        body = session.get_json(path, params)
    except ApiError as exc:
        record["http_status"] = exc.status
        record["error"] = str(exc)
        return record
    record["http_status"] = 200
    record["body"] = body
    return record


def unavailable_record(system: str, key: str, cause: str) -> dict[str, Any]:
    """The record of a lookup that was never sent (no instance or no credentials configured)."""
    return {"system": system, "key": key, "request": None, "http_status": None, "body": None, "error": cause}


def encode(record: Mapping[str, Any]) -> bytes:
    """A record as the bytes kept in the bundle."""
    return (json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def member_name(system: str, key: str) -> str:
    """Where a record is kept in the bundle, under ``raw/``."""
    return f"tickets/{system}/{key}.json"


def error_kind(status: int | None) -> str:
    """The answer's outcome for an HTTP failure: 404 not found, 401/403 denied, else unavailable."""
    if status == 404:
        return "not_found"
    if status in (401, 403):
        return "denied"
    return "unavailable"


def text(value: Any) -> str | None:
    """A raw field value as text (a ``{"value": ...}`` object gives its value), or None."""
    if isinstance(value, dict):
        value = value.get("value")
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (str, int)):
        return str(value)
    return None
