"""The platform as witness: publish a recorded decision as a commit status (``evidence witness``).

After ``check`` has recorded a decision, a step or job **of its own** publishes the bundle id, its
SHA-256 and the store head as a commit status on the deployed commit, where the client can neither
backdate nor quietly delete them: the platform stamps the status with its own time and creator.
``audit reconcile --witness`` reads them back (``evidence.witness``).

**Its own token.** ``POLICYENGINE_WITNESS_TOKEN`` (the action's ``witness-token``): a token that
may write commit statuses (GitHub ``statuses: write``; GitLab the ``api`` scope, which the
read-only ``GITLAB_TOKEN`` lacks). It is never the gate job's own token: any step holding
``statuses: write`` could also forge the ``build``/``lint`` statuses the gate reads.

**What is published** (``witness_format``): on GitHub ``POST /repos/{repo}/statuses/{sha}``, on
GitLab ``POST /projects/:id/statuses/:sha``; context (GitLab ``name``)
``policyengine/<environment>``, state ``success`` for a decision that released the deploy and
``failure`` (GitLab ``failed``) otherwise, and the description ``<decision> <bundle id>
sha256:<16 hex> head:<16 hex>``. Everything comes from the store: the bundle's index line, its
SHA-256 (checked against the bytes read), its decision and the store's newest catalogue (or the
store head ``check`` printed, ``--store-head``).

**Off, failed, required.** Without a witness token publishing is off (exit 0, said so), unless
the policy says ``witness: {required: true}`` (recorded in the bundle's decision as
``witness.required``). A failure to publish (no token when required, an HTTP error, a refused
connection) is appended to the evaluation's chain as a ``notification-failure`` record (target
``witness policyengine/<environment>``, format ``commit-status``), like a failed notification. It
fails the run (exit 3, with a ``not_deployed`` outcome appended) only when the witness is
required and the decision had released the deploy.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from msgspec import Struct, field

from policyengine.errors import EXIT_ALLOW, EXIT_FACTS, PolicyEngineError, UsageError
from policyengine.evidence.audit.witness import description
from policyengine.lifecycle.witness_format import context_for, state_for

TOKEN_VARIABLE = "POLICYENGINE_WITNESS_TOKEN"
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")
_GITHUB_REPO_RE = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_GITLAB_PROJECT_RE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+$")
PROVIDERS = ("github", "gitlab")


class Published(Struct):
    """What ``publish`` did: the lines to print, the exit code, the records appended."""

    exit_code: int
    lines: list[str] = field(default_factory=list)
    records: list[str] = field(default_factory=list)
    status: dict[str, Any] | None = None
    """The status published (provider, repository, commit, context, state, description)."""


def detect_provider(env: Mapping[str, str]) -> str | None:
    """``github`` inside GitHub Actions, ``gitlab`` inside GitLab CI, else None."""
    if (env.get("GITHUB_ACTIONS") or "").lower() == "true":
        return "github"
    if (env.get("GITLAB_CI") or "").lower() == "true":
        return "gitlab"
    return None


def _bundle_decision(store: Any, record: Mapping[str, Any]) -> dict[str, Any]:
    """The bundle's decision document, its bytes checked against the index line's SHA-256."""
    from policyengine.errors import EvidenceError
    from policyengine.evidence.format.bundle import DECISION, ZIP_READ_ERRORS

    try:
        with store.open_bundle(record) as fh:
            data = fh.read()
    except OSError as exc:
        raise EvidenceError(f"bundle {record.get('id')} cannot be read: {exc}") from None
    if hashlib.sha256(data).hexdigest() != record.get("sha256"):
        raise EvidenceError(f"bundle {record.get('id')} does not match the SHA-256 of its index line",
                            hint=f"run `{store.command('evidence', 'verify')}`")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            decision = json.loads(zf.read(DECISION))
    except (*ZIP_READ_ERRORS, KeyError, ValueError) as exc:
        raise EvidenceError(f"bundle {record.get('id')} cannot be read: {exc}") from None
    if not isinstance(decision, dict):
        raise EvidenceError(f"bundle {record.get('id')}: its decision is not an object")
    return decision


def _post(provider: str, env: Mapping[str, str], token: str, repository: str, commit: str,
          body: dict[str, Any]) -> None:
    """POST the status; raise ``ApiError``/``PolicyEngineError`` on failure."""
    from policyengine.providers.http import HttpSession, HttpSettings, TokenInfo
    from policyengine.redact import Redactor

    if provider == "github":
        api = (env.get("GITHUB_API_URL") or "https://api.github.com").rstrip("/")
        session = HttpSession(api, token=TokenInfo("Authorization", f"Bearer {token}", TOKEN_VARIABLE),
                              provider="github", settings=HttpSettings.from_env(env), redactor=Redactor([token]),
                              permission_hint=lambda path: "`statuses: write`")
        url = f"{session.base_url}/repos/{repository}/statuses/{commit}"
    else:
        api = (env.get("CI_API_V4_URL") or env.get("GITLAB_API_URL") or "https://gitlab.com/api/v4").rstrip("/")
        session = HttpSession(api, token=TokenInfo("PRIVATE-TOKEN", token, TOKEN_VARIABLE), provider="gitlab",
                              settings=HttpSettings.from_env(env), redactor=Redactor([token]),
                              permission_hint=lambda path: "the `api` scope (Developer role or above)")
        url = f"{session.base_url}/projects/{quote(repository, safe='')}/statuses/{commit}"
    try:
        session.post_json(url, body)
    finally:
        session.close()


def publish(store: Any, bundle_id: str, *, env: Mapping[str, str], provider: str | None = None,
            store_head: str | None = None, signing_key: Any = None) -> Published:
    """Publish the witness of ``bundle_id`` (an evaluation); record a failure like a failed notification."""
    from policyengine.providers.http import ApiError
    from policyengine.redact import Redactor

    record = store.find(bundle_id)
    if record.get("kind", "evaluation") != "evaluation":
        raise UsageError(f"bundle {bundle_id} is a {record.get('kind')} record, not an evaluation: only a decision "
                         "is witnessed")
    decision_doc = _bundle_decision(store, record)
    witness = decision_doc.get("witness") if isinstance(decision_doc.get("witness"), dict) else {}
    required = witness.get("required") is True
    decision = str(record.get("decision"))
    environment = str(record.get("environment") or "")
    repository = str(record.get("repository") or "")
    commit = str(record.get("commit") or "").lower()
    context = context_for(environment)
    label = f"witness {context}"
    # Released: the deploy goes on unless this step stops it (advisory mode releases a denial too).
    released = decision_doc.get("simulated") is not True and (
        decision in ("allow", "not_applicable") or (decision == "deny" and decision_doc.get("advisory") is True))
    token = (env.get(TOKEN_VARIABLE) or "").strip()
    provider = provider or detect_provider(env)
    result = Published(exit_code=EXIT_ALLOW)
    cause: str | None = None
    if not token:
        if not required:
            result.lines.append(f"witness: off ({TOKEN_VARIABLE} is not set; the policy does not require a witness)")
            return result
        cause = f"{TOKEN_VARIABLE} is not set, and the policy says witness: required: true"
    elif provider not in PROVIDERS:
        cause = "no platform to publish to: not inside GitHub Actions or GitLab CI (give --provider github|gitlab)"
    elif not environment or not _COMMIT_RE.match(commit) or not (
            _GITHUB_REPO_RE if provider == "github" else _GITLAB_PROJECT_RE).match(repository):
        # They go into the URL the witness token is sent to: nothing but a plain repository and a commit id.
        cause = (f"bundle {bundle_id} names no usable repository, environment or commit "
                 f"({repository!r}, {environment!r}, {commit!r})")
    elif decision not in ("allow", "deny", "not_applicable"):
        cause = f"bundle {bundle_id} records the decision {decision!r}, which no witness describes"
    if cause is None:
        from policyengine.evidence.format.catalogue import newest_head

        head = store_head or newest_head(store.catalogue_files())
        text = description(decision, bundle_id, str(record.get("sha256")), head)
        state = state_for(decision)
        body: dict[str, Any] = {"state": state, "description": text}
        if provider == "github":
            body["context"] = context
        else:
            body.update(name=context, state="success" if state == "success" else "failed")
        result.status = {"provider": provider, "repository": repository, "commit": commit, "context": context,
                         "state": body["state"], "description": text}
        quiet = Redactor([token])
        try:
            _post(str(provider), env, token, repository, commit, body)
        except ApiError as exc:
            cause = quiet.text(exc.detail if exc.status else exc.message)
            if exc.hint:
                cause += f" ({quiet.text(exc.hint)})"
        except PolicyEngineError as exc:
            cause = quiet.text(exc.message)
        except OSError as exc:
            cause = f"the request could not be made ({type(exc).__name__})"
        else:
            result.lines.append(f"witness: published {context} on {repository}@{commit[:12]}: {text}")
            return result
    return _failed(store, bundle_id, result, label=label, cause=str(cause), required=required, released=released,
                   env=env, signing_key=signing_key)


def _failed(store: Any, bundle_id: str, result: Published, *, label: str, cause: str, required: bool,
            released: bool, env: Mapping[str, str], signing_key: Any) -> Published:
    from policyengine.lifecycle.notify import Target, _record_failure, _record_not_deployed

    target = Target(label, None, cause, "commit-status", required)
    line = f"witness: FAILED ({'required' if required else 'not required'}): {cause}"
    failure: str | None = None
    try:
        failure = _record_failure(store, bundle_id, target, cause, env=env, signing_key=signing_key, retention=None,
                                  extra_secrets=tuple(v for v in [(env.get(TOKEN_VARIABLE) or "").strip()] if v))
        result.records.append(failure)
        line += f"; recorded as notification-failure {failure}"
    except PolicyEngineError as exc:
        line += f"; the failure could not be recorded: {exc.message}"
    result.lines.append(line)
    if not (required and released):
        return result
    result.exit_code = EXIT_FACTS
    try:
        outcome = _record_not_deployed(store, bundle_id, target, cause, failure, env=env, signing_key=signing_key)
    except PolicyEngineError as exc:
        result.lines.append(f"witness: the required witness failed; the not_deployed outcome could not be recorded "
                            f"({exc.message}); the deploy must not proceed (exit 3)")
        return result
    result.records.append(outcome)
    result.lines.append(f"witness: the required witness failed: outcome not_deployed recorded ({outcome}); the deploy "
                        "must not proceed (exit 3)")
    return result
