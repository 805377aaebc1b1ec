"""Remove token-looking values from evidence before it is stored.

A bundle is kept for years and handed to auditors: a token that leaked into a test report,
a log or an API response must not travel with it. This module is the evidence layer's own
small redactor (``policyengine.providers.redact`` did not exist when it was written); it
recognizes GitHub (``ghp_``, ``gho_``, ``ghs_``, ``ghu_``, ``ghr_``, ``github_pat_``), GitLab
(``glpat-``), AWS access key ids (``AKIA``) and ``Bearer`` credentials, and replaces the
secret part with ``[REDACTED]``.

Large members are scanned in chunks: a cheap substring test on each chunk decides whether the
(slower) regular expression runs at all, and a chunk is cut after its last whitespace byte so
that a token is never split between two chunks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping

REPLACEMENT = b"[REDACTED]"

_TOKEN_RE = re.compile(
    rb"(?:gh[pousr]_[A-Za-z0-9]{20,255}|github_pat_[A-Za-z0-9_]{20,255}|glpat-[A-Za-z0-9_\-]{20,255}"
    rb"|AKIA[A-Z0-9]{16})"
    rb"|(?P<bearer>[Bb]earer\s+)[A-Za-z0-9\-._~+/]{8,}=*"
)
# Every match contains one of these. Each test runs at about the speed of SHA-256 (a literal
# search; the ``g`` expression has a literal first byte), where the full expression is 20
# times slower, so most chunks (no match) cost three fast passes.
_PREFILTER_RE = re.compile(rb"g(?:h[pousr]_|ithub_pat_|lpat-)")
_NEEDLES = (b"AKIA", b"earer")
# A chunk is cut after its last whitespace; a run without any is cut here regardless.
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


def _sub(match: re.Match[bytes]) -> bytes:
    bearer = match.group("bearer")
    return (bearer + REPLACEMENT) if bearer else REPLACEMENT


def might_hold_token(data: bytes) -> bool:
    """Return whether ``data`` contains a substring every token has (cheap; false positives happen)."""
    return any(n in data for n in _NEEDLES) or _PREFILTER_RE.search(data) is not None


def redact_bytes(data: bytes) -> tuple[bytes, int]:
    """Return ``data`` with every token-looking value replaced, and how many were replaced."""
    if not might_hold_token(data):
        return data, 0
    return _TOKEN_RE.subn(_sub, data)


def redact_text(text: str) -> str:
    """Return ``text`` with every token-looking value replaced."""
    return redact_bytes(text.encode("utf-8", "surrogatepass"))[0].decode("utf-8", "surrogatepass")


class StreamRedactor:
    """Redact a stream of chunks; ``count`` says how many values were replaced so far."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        carry = b""
        for chunk in chunks:
            buf = carry + chunk if carry else chunk
            cut = max(buf.rfind(b" "), buf.rfind(b"\n"), buf.rfind(b"\t"))
            if cut < len(buf) - _MAX_CARRY:
                cut = len(buf) - _MAX_CARRY
            head, carry = buf[: cut + 1], buf[cut + 1 :]
            out, n = redact_bytes(head)
            self.count += n
            if out:
                yield out
        if carry:
            out, n = redact_bytes(carry)
            self.count += n
            yield out


def looks_binary(head: bytes) -> bool:
    """Return whether a file starting with ``head`` is binary (a NUL byte, as git decides).

    Binary members are stored as they are: rewriting bytes inside an archive or an image
    would corrupt it, and a token in compressed data is not readable anyway.
    """
    return b"\0" in head[:8192]


def ci_variables(env: Mapping[str, str]) -> dict[str, str]:
    """Return the allowlisted CI variables of ``env``, values redacted."""
    return {k: redact_text(env[k]) for k in CI_ALLOWLIST if k in env}
