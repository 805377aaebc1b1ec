"""Notifications: every recorded production decision, posted to a webhook after the evidence.

**Targets.** A policy's ``notify:`` (one target or a list: ``{url_env: NAME, format: slack|json,
required: bool, include_not_applicable: bool}``) and ``check --notify`` (repeatable: ``env:NAME``,
or a URL written on the command line, allowed but discouraged). A webhook URL is a secret: the
policy names the variable that holds it, never the URL; every URL in use is added to the
redactor's literals (``redact.webhook_secrets``), so it reaches no output (console, JSON,
JUnit) and no bundle or record, even when a hostile change quotes it. Messages and records name
a target by its variable (``DEPLOY_WEBHOOK``) or ``--notify #N``, never by its URL. A URL must be
``https://``, or ``http://`` to a loopback host (127.0.0.1, ::1, localhost): anything else would
send the secret in clear. ``--notify`` that is neither ``env:NAME`` nor such a URL is refused
before anything is judged (exit 2), without repeating the value.

**Which decisions.** "Every production decision" is every evaluation the policy judged and
recorded: allowed, denied (advisory and simulated ones too, flagged as such), and a denial
because the evidence could not be recorded (its ``bundle_id`` is then null). Decisions recorded as
``not_applicable`` (an environment outside ``applies_to``, with ``not_applicable: pass``) are no
production decisions: a target posts them only with ``include_not_applicable: true``
(``--notify`` targets never do). A change that is refused (exit 2) was never judged: nothing is
posted.

**Messages.** Built from the decision as the outputs show it (already redacted), then redacted
once more as a whole. ``slack`` (the default): ``{"text": ..., "blocks": [...]}`` for a
Slack-compatible incoming webhook; every value from the change is escaped for Slack (``&``,
``<``, ``>``), so a pull request title cannot ping a channel (``<!channel>``) or dress up a link.
``json``: a generic document (``message_document``): verdict, exit code, repository,
environment, commit, pull request, deployer, bundle id and digest, policy, the advisory,
simulated and emergency flags, every rule's status.

**Sending.** After the evidence is recorded, one POST per target through the project's HTTP
session (``providers.http.HttpSession.post_json``: connect/read timeouts, a deadline per attempt,
a body cap, ``POLICYENGINE_HTTP_RETRIES`` bounded retries on 5xx, connection errors and rate
limits, no redirect followed, no token sent). Any 2xx answer is delivered.

**A failed notification** (an HTTP error, a refused connection, a timeout, the variable unset or
not a usable URL) is appended to the evaluation's chain as a ``notification-failure`` record
(``evidence.records``; ``EvidenceStore.append_record``): ``target`` (the variable), ``format``,
``required``, ``cause`` (redacted), ``by: "policyengine"``. It does not change the decision:
``check`` exits as the decision says, unless the target says ``required: true`` and the gate had
released the deploy (exit 0): then a ``not_deployed`` outcome is appended for the evaluation
(``evidence.outcomes.record_outcome``, ``by: "policyengine (notification failed)"``) and ``check``
exits 3, so the population (``records.is_deployment``) and the next change range
(``records.latest_deploy``) never count a deploy the pipeline was told not to make. A required
failure of a decision that already stops the deploy (deny: 1, evidence not recorded: 3) keeps its
exit code; the failure is still recorded.

**Who recorded it.** Both records are written by the gate itself, in the run that recorded the
evaluation, signed with the same ``--signing-key``: ``by_verified`` is ``true`` and ``by_source``
is ``gate``. No person claims them, and ``evidence record-outcome`` cannot forge that pair: inside
CI its recorder must be the CI actor, outside it is ``by_verified: false``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from msgspec import Struct, field

from policyengine.errors import EXIT_ALLOW, EXIT_FACTS, PolicyEngineError, UsageError
from policyengine.language.policy import NOTIFY_FORMATS, NotifyTarget
from policyengine.redact import Redactor, secret_values, webhook_secrets

GATE_SOURCE = "gate"
"""``by_source`` of the records the gate writes itself."""
FAILURE_BY = "policyengine"
OUTCOME_BY = "policyengine (notification failed)"
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
MAX_TEXT = 300
"""Longest value from the change a message carries (a title is cut, and says so)."""

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Target(Struct, frozen=True):
    """A notification target, resolved: its label (never the URL), the URL or why there is none."""

    label: str
    url: str | None
    problem: str | None = None
    format: str = "slack"
    required: bool = False
    include_not_applicable: bool = False


# -- targets ----------------------------------------------------------------------------------------


def url_problem(url: str) -> str | None:
    """Why ``url`` is no usable webhook URL (None: it is one). Never quotes the URL."""
    if not url or url != url.strip() or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        return "it is empty or holds whitespace or control characters"
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return "it is not a valid URL"
    if parts.scheme == "https" and host:
        return None
    if parts.scheme == "http" and host in LOOPBACK:
        return None
    if parts.scheme == "http" and host:
        return "it is an http:// URL to another host than this one: the webhook's secret would travel in clear " \
               "(use https://)"
    return "it is not an https:// URL"


def parse_cli(specs: Sequence[str]) -> list[tuple[str, str]]:
    """``--notify`` values as ``(label, spec)``; UsageError (exit 2) for one that is neither
    ``env:NAME`` nor a usable URL. The value itself is never repeated: it may be a secret."""
    out: list[tuple[str, str]] = []
    for n, spec in enumerate(specs, start=1):
        if spec.startswith("env:"):
            name = spec[4:]
            if not _NAME_RE.match(name):
                raise UsageError(f"--notify #{n}: env:NAME needs the name of an environment variable "
                                 "(letters, digits, _)", hint="e.g. --notify env:DEPLOY_WEBHOOK")
            out.append((name, spec))
            continue
        trouble = url_problem(spec)
        if trouble:
            raise UsageError(f"--notify #{n} is neither env:NAME nor a usable webhook URL: {trouble}",
                             hint="give the variable that holds the webhook URL: --notify env:DEPLOY_WEBHOOK")
        out.append((f"--notify #{n}", spec))
    return out


def resolve(policy_targets: Sequence[NotifyTarget], cli: Sequence[tuple[str, str]],
            env: Mapping[str, str]) -> list[Target]:
    """The targets of one evaluation: the policy's, then ``--notify``'s (``parse_cli``). A
    variable, or a URL, named twice is posted to once (the policy's entry wins)."""
    out: list[Target] = []
    seen: set[str] = set()

    def from_env(name: str) -> tuple[str | None, str | None]:
        value = env.get(name)
        if value is None or not value.strip():
            return None, f"{name} is not set"
        trouble = url_problem(value.strip())
        return (None, f"{name} does not hold a usable webhook URL: {trouble}") if trouble else (value.strip(), None)

    for t in policy_targets:
        if t.url_env in seen:
            continue
        seen.add(t.url_env)
        url, problem = from_env(t.url_env)
        out.append(Target(t.url_env, url, problem, t.format if t.format in NOTIFY_FORMATS else "slack", t.required,
                          t.include_not_applicable))
    urls = {t.url for t in out if t.url}
    for label, spec in cli:
        if spec.startswith("env:"):
            if label in seen:
                continue
            seen.add(label)
            url, problem = from_env(label)
        else:
            url, problem = spec, None
        if url is not None and url in urls:
            continue
        if url is not None:
            urls.add(url)
        out.append(Target(label, url, problem))
    return out


def secrets(targets: Sequence[Target]) -> list[str]:
    """The literal values to redact everywhere: every webhook URL in use, in its forms."""
    return webhook_secrets(t.url for t in targets if t.url)


def wanted(target: Target, decision: str | None) -> bool:
    """Whether ``target`` posts a decision (``not_applicable`` only when it asks for them)."""
    return decision != "not_applicable" or target.include_not_applicable


# -- messages ---------------------------------------------------------------------------------------


def _text(value: Any, limit: int = MAX_TEXT) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def message_document(document: Mapping[str, Any], bundle: Mapping[str, Any], exit_code: int) -> dict[str, Any]:
    """The generic (``json``) message: what was decided, about which change, recorded where."""
    change = document.get("change") if isinstance(document.get("change"), dict) else {}
    assert isinstance(change, dict)
    pr = change.get("pull_request")
    policy = document.get("policy") if isinstance(document.get("policy"), dict) else {}
    assert isinstance(policy, dict)
    rules = [r for r in document.get("rules") or [] if isinstance(r, dict)]
    return {
        "schema": "https://policyengine.dev/notification/v1",
        "verdict": document.get("decision"),
        "exit_code": exit_code,
        "advisory": document.get("advisory") is True,
        "simulated": document.get("simulated") is True,
        "emergency": bool(document.get("emergency")),
        "repository": _text(change.get("repository")),
        "environment": _text(change.get("environment")),
        "commit": _text(change.get("commit")),
        "pull_request": {"number": pr.get("number"), "title": _text(pr.get("title")),
                         "author": _text(pr.get("author")), "url": _text(pr.get("url"), 1000)}
        if isinstance(pr, dict) else None,
        "deployer": _text(change.get("deployer")),
        "bundle_id": bundle.get("bundle_id"),
        "bundle_sha256": bundle.get("sha256"),
        "evidence_error": _text(bundle.get("error"), 1000),
        "policy": {"name": _text(policy.get("name")), "sha256": policy.get("sha256")},
        "evaluated_at": document.get("evaluated_at"),
        "rules": [{"id": _text(r.get("id")), "status": r.get("status")} for r in rules],
    }


def slack_escape(value: Any) -> str:
    """A value as Slack shows it literally: ``&``, ``<`` and ``>`` escaped (no ping, no link)."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``{"text", "blocks"}`` for a Slack-compatible incoming webhook, from ``message_document``."""
    e = slack_escape
    flags = [f for f, on in (("ADVISORY", doc["advisory"]), ("SIMULATED", doc["simulated"]),
                             ("EMERGENCY", doc["emergency"])) if on]
    verdict = str(doc.get("verdict") or "unknown").upper() + "".join(f" {f}" for f in flags)
    commit = str(doc.get("commit") or "?")
    pr = doc.get("pull_request")
    pr_text = (f"#{pr.get('number')} {e(pr.get('title') or '')}".strip() if isinstance(pr, dict)
               else "none (direct push)")
    bundle = doc.get("bundle_id") or f"NOT RECORDED ({e(doc.get('evidence_error') or 'unknown error')})"
    policy = (doc.get("policy") or {}).get("name")
    text = (f"[{verdict}] {e(doc.get('repository') or '?')} to {e(doc.get('environment') or '?')} at "
            f"{e(commit[:12])} by {e(doc.get('deployer') or 'unknown')}: PR {pr_text}; bundle {e(bundle)} "
            f"(policy {e(policy or '?')})")
    fields = [("Repository", doc.get("repository")), ("Environment", doc.get("environment")),
              ("Commit", commit), ("Pull request", None), ("Deployer", doc.get("deployer")),
              ("Evidence bundle", bundle), ("Policy", policy)]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{verdict}*: {e(doc.get('repository') or '?')} "
                                                               f"to *{e(doc.get('environment') or '?')}*"}},
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*{name}*\n{pr_text if name == 'Pull request' else e(value or '?')}"}
            for name, value in fields]},
    ]
    failing = [r for r in doc.get("rules") or [] if r.get("status") not in ("pass", "skipped", "waived")]
    if failing:
        listed = ", ".join(f"{e(r.get('id'))} ({e(r.get('status'))})" for r in failing[:20])
        more = f" and {len(failing) - 20} more" if len(failing) > 20 else ""
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"Not passing: {listed}{more}"}]})
    return {"text": text, "blocks": blocks}


def build_message(fmt: str, document: Mapping[str, Any], bundle: Mapping[str, Any], exit_code: int,
                  redactor: Redactor) -> dict[str, Any]:
    """The message of ``fmt`` (``slack`` or ``json``), every string redacted."""
    doc = message_document(document, bundle, exit_code)
    message = slack_message(doc) if fmt == "slack" else doc
    return {k: _redact(v, redactor) for k, v in message.items()}


def _redact(value: Any, redactor: Redactor) -> Any:
    if isinstance(value, str):
        return redactor.text(value)
    if isinstance(value, dict):
        return {k: _redact(v, redactor) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, redactor) for v in value]
    return value


# -- sending ------------------------------------------------------------------------------------------


def send(target: Target, message: Mapping[str, Any], env: Mapping[str, str], redactor: Redactor) -> str | None:
    """POST ``message`` to ``target``; None when delivered, else the cause (redacted, no URL)."""
    if target.url is None:
        return redactor.text(target.problem or "no URL")
    import requests

    from policyengine.providers.http import (
        ApiError,
        HttpSession,
        HttpSettings,
        TokenInfo,
    )

    parts = urlsplit(target.url)
    # The session's own redactor also knows the URL's path: its messages name the path it asked.
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    quiet = Redactor([*secret_values(env), *webhook_secrets([target.url]), path])
    try:
        session = HttpSession(f"{parts.scheme}://{parts.netloc}",
                              token=TokenInfo("", "", f"the webhook {target.label}"), provider="notify",
                              settings=HttpSettings.from_env(env), redactor=quiet)
        try:
            session.post_json(target.url, message)
        finally:
            session.close()
    except ApiError as exc:
        return redactor.text(quiet.text(exc.detail))
    except PolicyEngineError as exc:
        return redactor.text(quiet.text(exc.message))
    except (requests.exceptions.RequestException, ValueError, OSError) as exc:
        # Never the exception's text: it may quote the URL.
        return f"the request could not be made ({type(exc).__name__})"
    return None


# -- after the evidence is recorded --------------------------------------------------------------------


class Delivery(Struct):
    """What the notifications did: the lines to print, and the exit code after them."""

    exit_code: int
    lines: list[str] = field(default_factory=list)
    records: list[str] = field(default_factory=list)
    """Ids of the records appended (notification failures, the not_deployed outcome)."""


def deliver(targets: Sequence[Target], *, document: Mapping[str, Any], bundle: Mapping[str, Any], exit_code: int,
            store_url: str, env: Mapping[str, str], redactor: Redactor, signing_key: Any = None,
            retention: str | None = None, extra_secrets: Sequence[str] = ()) -> Delivery:
    """Post the decision to every target that wants it; record each failure, linked to the bundle.

    ``document`` is the decision as the outputs show it (redacted), ``bundle`` what was recorded
    (``bundle_id``, ``sha256``; or ``error``), ``exit_code`` what ``check`` would exit with. Returns
    the exit code after the notifications: 3 when a ``required`` target failed and the decision had
    released the deploy (a ``not_deployed`` outcome is then appended), else ``exit_code``.
    """
    result = Delivery(exit_code=exit_code)
    decision = document.get("decision")
    chosen = [t for t in targets if wanted(t, decision if isinstance(decision, str) else None)]
    if not chosen:
        return result
    store: Any = None
    stopped = False
    for target in chosen:
        message = build_message(target.format, document, bundle, exit_code, redactor)
        cause = send(target, message, env, redactor)
        what = f"{target.label} ({target.format}{', required' if target.required else ''})"
        if cause is None:
            result.lines.append(f"notify: sent to {what}")
            continue
        line = f"notify: FAILED {what}: {cause}"
        bundle_id = bundle.get("bundle_id")
        if not bundle_id:
            result.lines.append(line + "; not recorded: there is no evidence bundle to link it to")
            continue
        failure: str | None = None
        try:
            if store is None:
                from policyengine.evidence.stores.factory import open_store

                store = open_store(store_url)
            failure = _record_failure(store, str(bundle_id), target, cause, env=env, signing_key=signing_key,
                                      retention=retention, extra_secrets=extra_secrets)
            result.records.append(failure)
            line += f"; recorded as notification-failure {failure}"
        except PolicyEngineError as exc:
            line += f"; the failure could not be recorded: {redactor.text(exc.message)}"
        result.lines.append(line)
        if not (target.required and result.exit_code == EXIT_ALLOW and not stopped):
            continue
        stopped = True
        result.exit_code = EXIT_FACTS
        try:
            if store is None:
                raise PolicyEngineError("the evidence store could not be opened")
            outcome = _record_not_deployed(store, str(bundle_id), target, cause, failure, env=env,
                                           signing_key=signing_key)
        except PolicyEngineError as exc:
            result.lines.append(f"notify: the required notification failed; the not_deployed outcome could not be "
                                f"recorded ({redactor.text(exc.message)}); the deploy must not proceed (exit 3)")
            continue
        result.records.append(outcome)
        result.lines.append(f"notify: the required notification failed: outcome not_deployed recorded ({outcome}); "
                            "the deploy must not proceed (exit 3)")
    return result


def _record_failure(store: Any, bundle_id: str, target: Target, cause: str, *, env: Mapping[str, str],
                    signing_key: Any, retention: str | None, extra_secrets: Sequence[str]) -> str:
    from policyengine.evidence.format.records import NOTIFICATION_FAILURE
    from policyengine.redact import EvidenceRedactor, ci_variables

    redactor = EvidenceRedactor.from_env(env, extra_secrets)
    payload: dict[str, Any] = {"notification": "failed", "target": target.label, "format": target.format,
                               "required": target.required, "cause": cause, "by": FAILURE_BY, "by_verified": True,
                               "by_source": GATE_SOURCE}
    ci = ci_variables(env, redactor)
    if ci:
        payload["ci"] = ci
    ref = store.append_record(NOTIFICATION_FAILURE, store.find(bundle_id), payload, signing_key=signing_key,
                              created_at=datetime.now(timezone.utc), retention=retention, redactor=redactor)
    return str(ref.id)


def _record_not_deployed(store: Any, bundle_id: str, target: Target, cause: str, failure: str | None, *,
                         env: Mapping[str, str], signing_key: Any) -> str:
    from policyengine.evidence.stores.outcomes import record_outcome
    from policyengine.evidence.format.records import Actor

    note = (f"the required notification to {target.label} failed ({cause})"
            + (f"; recorded as notification-failure {failure}" if failure else "")
            + ": the gate stopped the deploy (check exited 3)")
    ref = record_outcome(store, bundle_id, status="not_deployed", actor=Actor(OUTCOME_BY, True, GATE_SOURCE),
                         note=note, signing_key=signing_key, env=env)
    return str(ref.id)
