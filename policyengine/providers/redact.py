"""Remove secrets from text and bytes before they are printed, logged or stored as evidence.

Two kinds of secret are removed:

* token-shaped values, whoever they belong to: GitHub (``ghp_``, ``gho_``, ``ghs_``, ``ghu_``,
  ``ghr_``, ``github_pat_``), GitLab (``glpat-``, ``glcbt-``, ``gldt-``, ``glptt-``, ``glrt-``,
  ``gloas-``), AWS access key ids (``AKIA...``, ``ASIA...``), ``Bearer ...`` credentials and the
  values of ``Authorization``, ``PRIVATE-TOKEN`` and ``JOB-TOKEN`` headers;
* the literal values of the tokens policyengine was given (``GITHUB_TOKEN``, ``GITLAB_TOKEN``,
  ``CI_JOB_TOKEN``), whatever their shape, and their URL-encoded forms.

Every secret becomes ``[REDACTED]``, which contains no quote or backslash, so redacting a JSON
document leaves it valid JSON. The providers redact every response body *before* parsing it,
so a token an API echoes back can reach neither the change, nor the decision, nor the bundle.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote

REDACTED = "[REDACTED]"

TOKEN_VARIABLES = ("GITHUB_TOKEN", "GITLAB_TOKEN", "CI_JOB_TOKEN")
"""Environment variables whose values are secrets wherever they appear."""

# A literal value shorter than this is not redacted everywhere: replacing every "1" or "true"
# in the evidence would destroy it, and so short a value is no real token anyway.
MIN_LITERAL = 8

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Header-like "name: value" / "name=value" pairs, also inside JSON ("Authorization": "token x").
    (
        re.compile(
            r"(?i)((?:authorization|private-token|job-token|x-api-key)[\"']?\s*[:=]\s*[\"']?)"
            r"(?:(?:bearer|token|basic)\s+)?[^\s\"',;&]+"
        ),
        r"\1" + REDACTED,
    ),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\1" + REDACTED),
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}"), REDACTED),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}"), REDACTED),
    (re.compile(r"\bgl(?:pat|cbt|dt|ptt|rt|oas|soat|ft|imt|agent|wt)-[A-Za-z0-9_-]{16,}"), REDACTED),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), REDACTED),
)


class Redactor:
    """Redact the known token patterns plus a set of literal secret values."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        literals: set[str] = set()
        for secret in secrets:
            if secret and len(secret) >= MIN_LITERAL:
                literals.add(secret)
                literals.add(quote(secret, safe=""))
        # Longest first, so a secret that contains another is removed whole.
        self._literals = sorted(literals, key=len, reverse=True)

    @classmethod
    def from_env(cls, env: Mapping[str, str], extra: Iterable[str] = ()) -> Redactor:
        """Build a redactor for the token variables set in ``env`` (and any ``extra`` values)."""
        return cls([*(env.get(name, "") for name in TOKEN_VARIABLES), *extra])

    def text(self, value: str) -> str:
        """Return ``value`` with every secret replaced by ``[REDACTED]``."""
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
