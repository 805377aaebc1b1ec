"""Remove secrets from text and bytes before they are printed, logged or stored as evidence.

Two kinds of secret are removed:

* token-shaped values, whoever they belong to: GitHub (``ghp_``, ``gho_``, ``ghs_``, ``ghu_``,
  ``ghr_``, ``github_pat_``), GitLab (``glpat-``, ``glcbt-``, ``gldt-``, ``glptt-``, ``glrt-``,
  ``gloas-``), AWS access key ids (``AKIA...``, ``ASIA...``), ``Bearer ...`` credentials, the
  values of ``Authorization``, ``PRIVATE-TOKEN`` and ``JOB-TOKEN`` headers, and the path of a
  Slack incoming-webhook URL (``hooks.slack.com/services/...``);
* the literal values of the tokens policyengine was given (``GITHUB_TOKEN``, ``GITLAB_TOKEN``,
  ``CI_JOB_TOKEN``), whatever their shape, and their URL-encoded forms; webhook URLs (any
  variable named ``*WEBHOOK``, ``*WEBHOOK_URL``, ``*HOOK_URL``, and the notification targets in
  use: ``webhook_secrets``, passed as ``extra``).

Every secret becomes ``[REDACTED]``, which contains no quote or backslash, so redacting a JSON
document leaves it valid JSON. The providers redact every response body *before* parsing it,
so a token an API echoes back can reach neither the change, nor the decision, nor the bundle.

For evidence, on top of that (the one redactor every layer uses: providers, outputs, evidence):

* a cheap prefilter: most chunks of a large log hold no secret, and a few substring searches
  (each at about the speed of SHA-256) decide whether the slower patterns run at all;
* streaming: a large member is redacted chunk by chunk, each chunk cut after its last
  newline so that a secret (which may span words, never lines) is never split between two
  chunks; a single line longer than 1 MiB is cut at whitespace;
* a count of what was replaced, so the manifest can say a member was redacted and keep the
  digest of the original bytes (what the rule read) beside the digest of the stored ones;
* the allowlist of CI variables a bundle may record.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from urllib.parse import quote

REDACTED = "[REDACTED]"

TOKEN_VARIABLES = ("GITHUB_TOKEN", "GITLAB_TOKEN", "CI_JOB_TOKEN")
"""The code hosts' token variables the providers read (``providers/github.py``, ``gitlab.py``)."""

TICKET_SECRET_VARIABLES = ("JIRA_API_TOKEN", "JIRA_TOKEN", "SERVICENOW_PASSWORD", "SERVICENOW_TOKEN")
"""The ticket systems' secrets (``providers/ticketing.py``): Jira Cloud's API token, Jira Data
Center's personal access token, ServiceNow's password and OAuth token."""

SECRET_VARIABLES = (*TOKEN_VARIABLES, "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", *TICKET_SECRET_VARIABLES,
                    "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "POLICYENGINE_ID_TOKEN")
"""``ACTIONS_ID_TOKEN_REQUEST_TOKEN`` is GitHub's bearer for minting ID tokens, and
``POLICYENGINE_ID_TOKEN`` GitLab's ID token itself (``providers.oidc``): neither is ever shown."""
"""Every variable whose value is a secret wherever it appears: the code hosts' tokens, the
S3 store's credentials (read by boto3 from the standard AWS variables) and the ticket systems'."""

_BASIC_PAIRS = (("JIRA_EMAIL", "JIRA_API_TOKEN"), ("SERVICENOW_USER", "SERVICENOW_PASSWORD"))
"""User and secret variables sent together as HTTP basic credentials: the base64 of the pair is a secret too."""

SECRET_SUFFIXES = ("_TOKEN", "_SECRET", "_PASSWORD", "_WEBHOOK_URL", "_WEBHOOK")
"""A ``POLICYENGINE_*`` variable whose name ends so holds a secret too (e.g. a webhook URL)."""

WEBHOOK_SUFFIXES = ("WEBHOOK", "WEBHOOK_URL", "HOOK_URL")
"""Any variable whose name ends so holds a webhook URL, a secret (``DEPLOY_WEBHOOK``,
``SLACK_WEBHOOK_URL``): its value is redacted wherever it appears. A webhook named by a policy's
``notify: {url_env: NAME}`` or ``check --notify env:NAME`` is redacted whatever its name
(``webhook_secrets``), and so is a URL given as ``--notify URL``."""


def secret_values(env: Mapping[str, str]) -> list[str]:
    """The secret values ``env`` holds: ``SECRET_VARIABLES``, ``POLICYENGINE_*`` secrets, and
    the signing key (``--signing-key env:VAR`` names a variable holding the PEM text; the PEM
    text given in place of a file name is a secret as well)."""
    import base64

    values = [env.get(name, "") for name in SECRET_VARIABLES]
    for user, secret in _BASIC_PAIRS:
        if env.get(user) and env.get(secret):
            values.append(base64.b64encode(f"{env[user].strip()}:{env[secret]}".encode()).decode("ascii"))
    values += [v for k, v in env.items() if k.startswith("POLICYENGINE_") and k.endswith(SECRET_SUFFIXES)]
    # Only values that are URLs: a hostile variable could otherwise blank out ordinary evidence.
    values += webhook_secrets(v for k, v in env.items() if k.upper().endswith(WEBHOOK_SUFFIXES)
                              and v.strip().lower().startswith(("http://", "https://")))
    key = env.get("POLICYENGINE_SIGNING_KEY", "")
    if key.startswith("env:"):
        values.append(env.get(key[4:], ""))
    elif "PRIVATE KEY" in key or "\n" in key:
        values.append(key)
    return [v for v in values if v]


def webhook_secrets(urls: Iterable[str]) -> list[str]:
    """The literal values to redact for webhook URLs in use: each URL, and the URL without its
    scheme (``hooks.example.com/services/...``). The host alone is no secret and the path alone
    is not added either: a hostile value could otherwise blank out ordinary evidence."""
    out: list[str] = []
    for url in urls:
        url = url.strip()
        if not url:
            continue
        out.append(url)
        rest = url.split("://", 1)[1] if "://" in url else ""
        if len(rest) >= MIN_LITERAL:
            out.append(rest)
    return out


# A literal value shorter than this is not redacted everywhere: replacing every "1" or "true"
# in the evidence would destroy it, and so short a value is no real token anyway.
MIN_LITERAL = 8

# No token pattern starts with a word boundary: in raw JSON or a log, an escape sequence
# (``\\r\\nghp_...``, ``%0Aghp_...``) puts a letter right before the token, and ``\\b`` would
# not match there. A token prefix inside a longer word is redacted too: over-redacting a
# few look-alikes costs nothing, a missed token leaks it.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Header-like "name: value" / "name=value" pairs, also inside JSON ("Authorization": "token x").
    # The value never takes a character that gives the text around it its structure (XML's
    # ``<``/``>``, a comment's ``-->``, ``&`` of an entity, quotes, a JSON escape's backslash,
    # Markdown's backtick, brackets): ``<system-out>Authorization:x</system-out>`` stays
    # well-formed XML once redacted. ``[REDACTED]`` (a literal secret already removed) is part
    # of a value, so the rest of the value goes too, and redacting twice changes nothing.
    (
        re.compile(
            r"(?i)((?:authorization|private-token|job-token|x-api-key)[\"']?\s*[:=]\s*[\"']?)"
            r"(?:(?:bearer|token|basic)\s+)?"
            r"(?:\[REDACTED\]|(?!-->)[^\s\"'`,;&<>(){}\[\]\\]|\\(?![\\\"'/bfnrtu]))+"
        ),
        r"\1" + REDACTED,
    ),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\1" + REDACTED),
    (re.compile(r"github_pat_[A-Za-z0-9_]{20,}"), REDACTED),
    (re.compile(r"gh[pousr]_[A-Za-z0-9]{20,}"), REDACTED),
    (re.compile(r"gl(?:pat|cbt|dt|ptt|rt|oas|soat|ft|imt|agent|wt)-[A-Za-z0-9_-]{16,}"), REDACTED),
    (re.compile(r"(?:AKIA|ASIA)[0-9A-Z]{16}"), REDACTED),
    # Slack's incoming webhooks (and workflow triggers): the path is the credential.
    (re.compile(r"(?i)(hooks\.slack\.com/)(?:services|workflows|triggers)/[A-Za-z0-9/_-]{8,}"), r"\1" + REDACTED),
    # A private key in PEM form, whole (the literal-value pass also removes each of its lines).
    (re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?-----END [A-Z0-9 ]*PRIVATE KEY-----", re.DOTALL), REDACTED),
)

# A run of characters that JSON (or a log of it) may write with escapes, holding at least one
# ``\\uXXXX``: ``\\u0067hp_...`` is ``ghp_...`` once decoded. Such runs are decoded, redacted
# and, if a secret was inside, written back (escaped again where JSON needs it).
_ESCAPED_RUN = re.compile(r"(?:\\u[0-9a-fA-F]{4}|\\[\\\"/bfnrt]|[A-Za-z0-9._~+/=%:-])++")
_ESCAPE_PART = re.compile(r"\\u([0-9a-fA-F]{4})|\\([\\\"/bfnrt])|(.)", re.DOTALL)
_SIMPLE_ESCAPES = {"\\": "\\", '"': '"', "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _decode_run(run: str) -> str:
    out = []
    for m in _ESCAPE_PART.finditer(run):
        if m.group(1) is not None:
            out.append(chr(int(m.group(1), 16)))
        elif m.group(2) is not None:
            out.append(_SIMPLE_ESCAPES[m.group(2)])
        else:
            out.append(m.group(3))
    return "".join(out)


def _encode_run(text: str) -> str:
    """Escape again what a JSON string cannot hold as it is (quotes, backslashes, controls)."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or 0xD800 <= ord(ch) <= 0xDFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def literal_forms(secret: str) -> set[str]:
    """The forms a secret value takes in the outputs: as it is, URL-encoded, JSON-escaped
    (ASCII and not), XML/HTML-escaped, and each of its lines (a PEM key spans lines)."""
    import html
    import json

    forms = {secret, quote(secret, safe=""), json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
             html.escape(secret, quote=False), html.escape(secret, quote=True)}
    forms.update(line.strip() for line in secret.splitlines())
    return {f for f in forms if len(f) >= MIN_LITERAL}


class Redactor:
    """Redact the known token patterns plus a set of literal secret values."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        literals: set[str] = set()
        for secret in secrets:
            if secret and len(secret) >= MIN_LITERAL:
                literals.update(literal_forms(secret))
        # Longest first, so a secret that contains another is removed whole.
        self._literals = sorted(literals, key=len, reverse=True)

    @classmethod
    def from_env(cls, env: Mapping[str, str], extra: Iterable[str] = ()) -> Redactor:
        """Build a redactor for the secret variables set in ``env`` (and any ``extra`` values)."""
        return cls([*secret_values(env), *extra])

    def text(self, value: str) -> str:
        """Return ``value`` with every secret replaced by ``[REDACTED]``."""
        value = self._plain(value)
        if "\\u" in value:
            value = _ESCAPED_RUN.sub(self._escaped_run, value)
        return value

    def _escaped_run(self, match: re.Match[str]) -> str:
        run = match.group(0)
        if "\\u" not in run:
            return run
        decoded = _decode_run(run)
        cleaned = self._plain(decoded)
        return run if cleaned == decoded else _encode_run(cleaned)

    def _plain(self, value: str) -> str:
        """The literal and pattern passes only (a decoded run is not decoded twice)."""
        for literal in self._literals:
            if literal in value:
                value = value.replace(literal, REDACTED)
        for pattern, replacement in _PATTERNS:
            value = pattern.sub(replacement, value)
        return value

    def bytes(self, value: bytes) -> bytes:
        """Return ``value`` redacted; bytes that are not UTF-8 pass through unchanged."""
        text = value.decode("utf-8", errors="surrogateescape")
        return self.text(text).encode("utf-8", errors="surrogateescape")

    __call__ = text


def redact(value: str, env: Mapping[str, str] | None = None) -> str:
    """Redact token patterns (and, given ``env``, the token variables' values) from ``value``."""
    return (Redactor.from_env(env) if env is not None else Redactor()).text(value)


def redact_bytes(value: bytes, env: Mapping[str, str] | None = None) -> bytes:
    """Redact token patterns (and, given ``env``, the token variables' values) from ``value``."""
    return (Redactor.from_env(env) if env is not None else Redactor()).bytes(value)


# -- evidence: prefilter, streaming, counts ---------------------------------------------------

_MARK = REDACTED.encode("ascii")
# Every pattern's match contains one of these (case-sensitive ones on the bytes as they are,
# the others on the lower-cased bytes). The g-expression has a literal first byte, so it runs
# at the speed of a substring search.
_PREFILTER_RE = re.compile(rb"g(?:h[pousr]_|ithub_pat_|l[a-z]{1,6}-)")
# A JSON unicode escape may hide any of them (``\u0067hp_``), and a PEM key has its own marker.
_ESCAPE_MARKS = (b"\\u", b"PRIVATE KEY")
_AWS_RE = re.compile(rb"A[KS]IA")  # one pass for both, faster than two substring tests
_LOWER = (b"bearer", b"authoriz", b"-token", b"x-api-key", b"hooks.slack.com")
# A chunk is cut after its last newline; a line longer than _MAX_LINE is cut after its last
# whitespace, and a run of _MAX_CARRY bytes without any is cut regardless.
_MAX_LINE = 1 << 20
_MAX_CARRY = 4096

# CI variables that describe the pipeline and are safe to keep; nothing else is recorded.
CI_ALLOWLIST = (
    "CI", "GITHUB_ACTIONS", "GITHUB_ACTOR", "GITHUB_EVENT_NAME", "GITHUB_JOB", "GITHUB_REF",
    "GITHUB_REPOSITORY", "GITHUB_RUN_ATTEMPT", "GITHUB_RUN_ID", "GITHUB_RUN_NUMBER", "GITHUB_SERVER_URL",
    "GITHUB_SHA", "GITHUB_WORKFLOW", "GITHUB_WORKFLOW_REF", "RUNNER_NAME", "RUNNER_OS",
    "GITLAB_CI", "CI_COMMIT_REF_NAME", "CI_COMMIT_SHA", "CI_ENVIRONMENT_NAME", "CI_JOB_ID", "CI_JOB_NAME",
    "CI_JOB_URL", "CI_PIPELINE_ID", "CI_PIPELINE_SOURCE", "CI_PIPELINE_URL", "CI_PROJECT_PATH",
    "CI_SERVER_URL", "GITLAB_USER_LOGIN",
)


class EvidenceRedactor:
    """Redact members on their way into a bundle (patterns, plus the given literal secrets)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = [s for s in secrets if s and len(s) >= MIN_LITERAL]
        self._redactor = Redactor(values)
        self._literals = tuple({f.encode("utf-8", errors="surrogateescape") for s in values for f in literal_forms(s)})

    @classmethod
    def from_env(cls, env: Mapping[str, str], extra: Iterable[str] = ()) -> EvidenceRedactor:
        """A redactor that also removes the values of the secret variables set in ``env``."""
        return cls([*secret_values(env), *extra])

    def might_hold_secret(self, data: bytes) -> bool:
        """Whether ``data`` may hold a secret (cheap; false positives only cost time)."""
        if (_PREFILTER_RE.search(data) or _AWS_RE.search(data) or any(m in data for m in _ESCAPE_MARKS)
                or any(v in data for v in self._literals)):
            return True
        low = data.lower()
        return any(n in low for n in _LOWER)

    def redact(self, data: bytes) -> tuple[bytes, int]:
        """Return ``data`` with every secret replaced by ``[REDACTED]``, and how many were replaced."""
        if not self.might_hold_secret(data):
            return data, 0
        out = self._redactor.bytes(data)
        if out == data:
            return data, 0
        return out, max(1, out.count(_MARK) - data.count(_MARK))

    def text(self, value: str) -> str:
        return self._redactor.text(value)

    def stream(self, chunks: Iterable[bytes]) -> RedactedStream:
        return RedactedStream(self, chunks)


class RedactedStream:
    """Iterate over redacted chunks; ``count`` says how many values were replaced so far."""

    def __init__(self, redactor: EvidenceRedactor, chunks: Iterable[bytes]) -> None:
        self.redactor = redactor
        self.chunks = chunks
        self.count = 0

    def __iter__(self) -> Iterator[bytes]:
        carry = b""
        for chunk in self.chunks:
            buf = carry + chunk if carry else chunk
            # Cut after the last newline: a secret never spans lines, but can span words
            # ("Authorization: token x"). A line longer than _MAX_LINE is cut at whitespace.
            cut = buf.rfind(b"\n")
            if cut < 0 and len(buf) > _MAX_LINE:
                cut = max(buf.rfind(b" "), buf.rfind(b"\t"))
                cut = max(cut, len(buf) - _MAX_CARRY)
            head, carry = buf[: cut + 1], buf[cut + 1 :]
            out, n = self.redactor.redact(head)
            self.count += n
            if out:
                yield out
        if carry:
            out, n = self.redactor.redact(carry)
            self.count += n
            yield out


DEFAULT = EvidenceRedactor()


def looks_binary(head: bytes) -> bool:
    """Return whether a file starting with ``head`` is binary (a NUL byte, as git decides).

    Binary members are stored as they are: rewriting bytes inside an archive or an image
    would corrupt it, and a token in compressed data is not readable anyway.
    """
    return b"\0" in head[:8192]


def ci_variables(env: Mapping[str, str], redactor: EvidenceRedactor | None = None) -> dict[str, str]:
    """Return the allowlisted CI variables of ``env``, values redacted."""
    r = redactor or EvidenceRedactor.from_env(env)
    return {k: r.text(env[k]) for k in CI_ALLOWLIST if k in env}
