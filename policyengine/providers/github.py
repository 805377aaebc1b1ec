"""The GitHub Actions provider: the facts of one deployment from the run's variables and the REST API.

Sources, in order of trust:

* the default variables (``GITHUB_REPOSITORY``, ``GITHUB_SHA``, ``GITHUB_REF``,
  ``GITHUB_EVENT_NAME``, ``GITHUB_ACTOR``, ``GITHUB_TRIGGERING_ACTOR``, ``GITHUB_RUN_ID``,
  ``GITHUB_RUN_ATTEMPT``, ``GITHUB_SERVER_URL``, ``GITHUB_API_URL``) and the event payload
  (``GITHUB_EVENT_PATH``);
* the REST API at ``GITHUB_API_URL`` with ``GITHUB_TOKEN``: the pull request of the deployed
  commit, its reviews, commits and files, the check runs and commit statuses of the deployed
  commit, the members of the teams named in ``POLICYENGINE_TEAMS``, and the change range since
  the previous successful deployment to the same environment.

Fail closed: a fact an API call could not give is recorded under the change's ``unavailable``
with the endpoint and status, never as an empty list; every rule that needs it is ``error``.

Who approved, and whether they may: every review records GitHub's ``author_association``, whether
the reviewer is a bot (``user.type == "Bot"`` or a ``[bot]`` login) and whether the account was
deleted (``user: null``, shown as ``ghost``). Each distinct person who approved (of the deployed
pull request and of every request in the change range) is looked up once, concurrently, with
``GET /repos/{owner}/{repo}/collaborators/{login}/permission``; the review then carries
``permission`` (admin, maintain, write, triage, read or none: the finer ``role_name`` when it is
one of those, else the legacy ``permission``, the lower of the two when they disagree) and
``role``. A failed lookup leaves ``permission`` null with ``permission_error`` naming the cause,
so the approvals rule can never count that approval. Reviewers the association already excludes
(``NONE``, ``FIRST_TIMER``, ``FIRST_TIME_CONTRIBUTOR``, ``MANNEQUIN``), bots and deleted users are
not looked up.

``merge_commit`` is recorded only for a merged pull request: an open one's ``merge_commit_sha``
is GitHub's test merge, which merged nothing into the base branch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from msgspec import Struct, field

from policyengine.change import time_problem
from policyengine.errors import HistoryUnavailable, UsageError
from policyengine.providers import shapes
from policyengine.providers.base import Gathered, PreviousDeploys
from policyengine.providers.deployments import github_graphql_url
from policyengine.providers.github_graphql import fetch_pull
from policyengine.providers.http import ApiError, HttpSession, HttpSettings, TokenInfo
from policyengine.redact import Redactor

T = TypeVar("T")

WORKERS = 6
"""Independent endpoints fetched at once. Small: a CI runner has few cores and APIs rate-limit."""

MAX_DEPLOYMENTS_CHECKED = 10
"""Deployments (newest first) examined for the previous successful one before giving up."""

MAX_RANGE_COMMITS = 500
"""A change range longer than this is not attributed commit by commit (``range`` unavailable)."""

MAX_EVENT_BYTES = 25 * 1024 * 1024
SHA_RE = re.compile(r"^[0-9a-fA-F]{7,64}$")
BOT_LOGINS = frozenset({"github-actions", "web-flow", "dependabot", "renovate", "ghost"})
PR_EVENTS = frozenset({"pull_request", "pull_request_target", "pull_request_review", "pull_request_review_comment"})

_CO_AUTHOR_RE = re.compile(r"^[ \t]*co-authored-by:[ \t]*(.*?)[ \t]*<([^<>\s]+)>[ \t]*$", re.IGNORECASE | re.MULTILINE)
_GITHUB_NOREPLY_RE = re.compile(r"^(?:\d+\+)?([A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)@users\.noreply\.github\.com$",
                                re.IGNORECASE)


# -- helpers shared with the GitLab provider ---------------------------------------------------


def first_line(message: Any) -> str | None:
    """The subject line of a commit message."""
    if not isinstance(message, str):
        return None
    return message.strip().splitlines()[0] if message.strip() else ""


def message_body(message: Any) -> str | None:
    """The commit message after its subject line (None when there is nothing after it).

    ``Facts.finish`` puts it on one line; the ticket rule reads keys from it (``Refs: PAY-101``)."""
    if not isinstance(message, str):
        return None
    lines = message.strip().splitlines()[1:]
    rest = "\n".join(lines).strip()
    return rest or None


def co_authors(message: Any, noreply: re.Pattern[str] = _GITHUB_NOREPLY_RE) -> list[str]:
    """Logins (from no-reply addresses) or e-mail addresses of ``Co-authored-by:`` trailers.

    Trailers are accepted anywhere in the message, not only in the final trailer block:
    a co-author listed too eagerly is excluded from approving, which fails closed.
    """
    out: list[str] = []
    for _name, email in _CO_AUTHOR_RE.findall(message or "" if isinstance(message, str) else ""):
        m = noreply.match(email)
        who = m.group(1) if m else email.lower()
        if who not in out:
            out.append(who)
    return out


class Facts(Struct):
    """What a provider has gathered so far: the change, notes, and the causes of missing facts."""

    change: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)

    def missing(self, cause: ApiError | str, *facts: str) -> None:
        """Record that ``facts`` could not be gathered (the first cause of each is kept)."""
        for fact in facts:
            self.unavailable.setdefault(fact, str(cause))

    def finish(self) -> dict[str, Any]:
        """The change, with ``notes`` and ``unavailable`` when there are any, every string on one line."""
        if self.notes:
            self.change["notes"] = self.notes
        if self.unavailable:
            self.change["unavailable"] = dict(sorted(self.unavailable.items()))
        scrubbed: dict[str, Any] = one_line(self.change)
        return scrubbed


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def one_line(value: Any) -> Any:
    """``value`` with control characters in every string replaced by spaces.

    Every fact of a change is one line (messages keep only their subject). API data with a
    newline could otherwise start a line of the CI log that the runner reads as a command
    (``::add-mask::``, ``::set-output``...) when the verdict quotes it.
    """
    if isinstance(value, str):
        return _CONTROL_RE.sub(" ", value)
    if isinstance(value, dict):
        return {one_line(k): one_line(v) for k, v in value.items()}
    if isinstance(value, list):
        return [one_line(v) for v in value]
    return value


def attempt(result: Callable[[], T]) -> tuple[T | None, ApiError | None]:
    """``result()`` (a future's ``result``), or the ``ApiError`` it raised."""
    try:
        return result(), None
    except ApiError as exc:
        return None, exc


def shaped(method: str, path: str, build: Callable[..., T], *args: Any) -> T:
    """Run ``build(*args)`` (mapping an API answer); an answer of an unexpected shape becomes ``ApiError``."""
    try:
        return build(*args)
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
        raise ApiError(method, path, 200, f"HTTP 200 but the answer has an unexpected shape ({type(exc).__name__}: "
                       f"{str(exc)[:80]})") from None


def start_range(previous: dict[str, Any] | None, sha: str, environment: str,
                source: str, history: object) -> tuple[dict[str, Any], str | None, bool]:
    """Begin a change range: ``(range, note, done)``; done when no commits need listing
    (no previous deploy is known, or it was this same commit)."""
    empty: dict[str, Any] = {"previous_commit": None, "previous_deployment": None, "status": None,
                             "commits": [], "pull_requests": []}
    if previous is None:
        return empty, None, True  # resolve_previous has said why
    prev = previous["sha"]
    rng: dict[str, Any] = {**empty, "previous_commit": prev,
                           "previous_deployment": {k: v for k, v in previous.items() if k != "sha"}}
    if prev == sha:
        rng["status"] = "identical"
        return rng, f"change range: the previous deploy to {environment} was this same commit", True
    return rng, None, False


def resolve_previous(history: PreviousDeploys | None, api_prev: dict[str, Any] | None, api_err: ApiError | None,
                     repository: str, environment: str, host: str) -> tuple[dict[str, Any] | None, list[str]]:
    """The trusted previous deploy to ``environment`` and notes on how the code host agrees.

    Only ``history`` (signed evidence, verified) can name the previous deploy. The code host's
    deployments API (``api_prev``) may corroborate it but never stands alone: any job with
    access to an environment can create a deployment record naming any commit. Raises
    ``HistoryUnavailable`` when the history cannot be read.
    """
    said = f"{host} names {api_prev['sha'][:7]} (deployment {api_prev.get('id')})" if api_prev else None
    if history is None:
        return None, [f"no trusted record of previous deploys (no --trust-key): no previous successful deploy to "
                      f"{environment} is known, so the change range cannot be listed"
                      + (f"; {said}, but a deployment record alone is not trusted" if said else "")]
    trusted = history.latest(repository, environment)
    if trusted is None:
        return None, [f"no previous successful deploy to {environment} is known (no verified evidence of one), so "
                      "the change range cannot be listed"
                      + (f"; {said}, but a deployment record alone is not trusted" if said else "")]
    sha = str(trusted["sha"])
    if api_err is not None:
        note = f"previous deploy {sha[:7]} from verified evidence; {host} could not corroborate it ({api_err})"
    elif api_prev is None:
        note = f"previous deploy {sha[:7]} from verified evidence; {host} records no successful deployment"
    elif str(api_prev["sha"]).lower() == sha.lower():
        note = f"previous deploy {sha[:7]} from verified evidence, corroborated by {said}"
    else:
        note = (f"previous deploy {sha[:7]} from verified evidence; {host} disagrees ({said}): "
                "the verified evidence is used")
    return trusted, [note]


def committer_logins(commits: Iterable[dict[str, Any]]) -> list[str]:
    """Authors, committers and co-authors of mapped commits, each once, in order."""
    people: list[str] = []
    for c in commits:
        for p in (c.get("author"), c.get("committer"), *c.get("co_authors", [])):
            if p and p not in people:
                people.append(p)
    return people


def range_note(rng: dict[str, Any], environment: str, what: str = "pull request") -> str:
    """One sentence describing a change range for people."""
    prev = rng.get("previous_deployment") or {}
    commits = rng.get("commits") or []
    numbers = sorted({c["pull_request"] for c in commits if c.get("pull_request") is not None})
    orphans = [c["sha"][:7] for c in commits if c.get("pull_request") is None]
    text = (f"change range: {len(commits)} commit{'s' if len(commits) != 1 else ''} since the previous successful "
            f"deploy to {environment} ({str(rng.get('previous_commit'))[:7]}, from {prev.get('source')})")
    if numbers:
        text += f", from {what}s " + ", ".join(f"#{n}" for n in numbers)
    if orphans:
        text += f"; without a {what}: " + ", ".join(orphans)
    if rng.get("status") == "behind":
        text += "; the deployed commit is behind the previous deploy (a rollback)"
    elif rng.get("status") == "diverged":
        text += "; the deployed commit and the previous deploy have diverged"
    return text


# -- configuration -------------------------------------------------------------------------


class GitHubConfig(Struct, frozen=True):
    """The variables of one GitHub Actions run that the provider uses."""

    repository: str
    sha: str
    environment: str
    token: str
    api_url: str
    server_url: str
    ref: str | None
    event_name: str | None
    event: dict[str, Any]
    event_raw: bytes | None
    actor: str | None
    triggering_actor: str | None
    run_id: str | None
    run_attempt: str | None
    teams: tuple[str, ...]
    notes: tuple[str, ...] = ()
    team_map: tuple[tuple[str, str], ...] = ()
    graphql_url: str | None = None
    """The GraphQL endpoint for the deployed pull request; None: REST only (``POLICYENGINE_GITHUB_API=rest``)."""


def _need(env: Mapping[str, str], name: str, why: str) -> str:
    value = (env.get(name) or "").strip()
    if not value:
        raise UsageError(f"{name} is not set: the GitHub provider needs it for {why}",
                         hint="run inside GitHub Actions, or use --provider local with --change FILE")
    return value


def teams_from(env: Mapping[str, str], teams: Sequence[str] | None) -> tuple[str, ...]:
    """Team names to resolve: ``teams`` when given, else the names listed in ``POLICYENGINE_TEAMS``."""
    names = list(teams) if teams is not None else list(team_mapping(env))
    out: list[str] = []
    for name in names:
        name = name.strip()
        if name and name not in out:
            out.append(name)
    return tuple(out)


def team_mapping(env: Mapping[str, str]) -> dict[str, str]:
    """``POLICYENGINE_TEAMS`` as {policy team name: where its members are read}.

    Entries are comma-separated: ``security=acme/security-team`` maps the policy's ``security``
    to that group (GitLab) or ``org/team`` (GitHub); a bare ``acme/security`` maps the name to
    itself.
    """
    out: dict[str, str] = {}
    for entry in (env.get("POLICYENGINE_TEAMS") or "").split(","):
        name, eq, target = entry.partition("=")
        name, target = name.strip(), target.strip()
        if name:
            out.setdefault(name, target if eq and target else name)
    return out


def read_config(env: Mapping[str, str], environment: str | None, teams: Sequence[str] | None = None) -> GitHubConfig:
    """Read and check the run's variables; a missing mandatory one is a ``UsageError`` naming it."""
    repository = _need(env, "GITHUB_REPOSITORY", "the repository (owner/name)")
    if repository.count("/") != 1 or not all(repository.split("/")):
        raise UsageError(f"GITHUB_REPOSITORY: {repository!r} is not owner/name")
    sha = _need(env, "GITHUB_SHA", "the deployed commit")
    environment = (environment or "").strip()
    if not environment:
        raise UsageError("no environment: set POLICYENGINE_ENVIRONMENT (or --environment); GitHub Actions does not "
                         "tell a job which environment it deploys to",
                         hint="the action's `environment` input sets it, e.g. environment: production")
    token = _need(env, "GITHUB_TOKEN", "reading reviews, commits and checks through the API")
    notes: list[str] = []
    event_name = env.get("GITHUB_EVENT_NAME") or None
    event, event_raw = _read_event(env.get("GITHUB_EVENT_PATH"), notes)
    if event_name == "workflow_run" and isinstance(event.get("workflow_run"), dict):
        head = event["workflow_run"].get("head_sha")
        if isinstance(head, str) and SHA_RE.match(head) and head != sha:
            notes.append(f"deployed commit taken from workflow_run.head_sha ({head[:7]}), not GITHUB_SHA ({sha[:7]})")
            sha = head
    if not SHA_RE.match(sha):
        raise UsageError(f"GITHUB_SHA: {sha!r} is not a commit SHA")
    api_url = (env.get("GITHUB_API_URL") or "https://api.github.com").rstrip("/")
    mode = (env.get("POLICYENGINE_GITHUB_API") or "graphql").strip().lower()
    if mode not in ("graphql", "rest"):
        raise UsageError(f"POLICYENGINE_GITHUB_API: {mode!r} is not graphql or rest",
                         hint="graphql (the default) reads the pull request in fewer requests; rest uses REST only")
    graphql_url = github_graphql_url(api_url, env) if mode == "graphql" else None
    return GitHubConfig(
        repository=repository,
        sha=sha.lower(),
        environment=environment,
        token=token,
        api_url=api_url,
        server_url=(env.get("GITHUB_SERVER_URL") or "https://github.com").rstrip("/"),
        ref=env.get("GITHUB_REF") or None,
        event_name=event_name,
        event=event,
        event_raw=event_raw,
        actor=env.get("GITHUB_ACTOR") or None,
        triggering_actor=env.get("GITHUB_TRIGGERING_ACTOR") or None,
        run_id=env.get("GITHUB_RUN_ID") or None,
        run_attempt=env.get("GITHUB_RUN_ATTEMPT") or None,
        teams=teams_from(env, teams),
        notes=tuple(notes),
        team_map=tuple(team_mapping(env).items()),
        graphql_url=graphql_url,
    )


def _read_event(path: str | None, notes: list[str]) -> tuple[dict[str, Any], bytes | None]:
    if not path:
        return {}, None
    try:
        p = Path(path)
        if p.stat().st_size > MAX_EVENT_BYTES:
            notes.append(f"the event payload {path} is larger than {MAX_EVENT_BYTES} bytes and was not read")
            return {}, None
        raw = p.read_bytes()
        data = json.loads(raw)
    except (OSError, ValueError) as exc:
        notes.append(f"the event payload GITHUB_EVENT_PATH could not be read ({type(exc).__name__}); "
                     "the pull request is looked up through the API")
        return {}, None
    return (data if isinstance(data, dict) else {}), raw


# -- mapping API answers to the change ---------------------------------------------------------


def is_bot(login: str | None) -> bool:
    """Whether a login is an app or a machine account, not a person."""
    if not login:
        return True
    lower = login.lower()
    return lower.endswith("[bot]") or lower in BOT_LOGINS


def _login(obj: Any) -> str | None:
    return obj.get("login") if isinstance(obj, dict) and isinstance(obj.get("login"), str) else None


def map_pull(pr: dict[str, Any]) -> dict[str, Any]:
    """The change's ``pull_request`` from a GitHub pull request object.

    ``merge_commit`` only once merged: for a merge, a squash or a rebase, GitHub's
    ``merge_commit_sha`` is then the commit that brought exactly this request into the base
    (the last rebased commit for a rebase); before, it is a test merge that is in no branch.
    """
    merged = bool(pr.get("merged_at")) or pr.get("merged") is True
    out: dict[str, Any] = {
        "number": int(pr["number"]),
        "title": pr.get("title"),
        "author": _login(pr.get("user")) or "ghost",
        "head_commit": str(pr["head"]["sha"]).lower(),
        "merge_commit": (str(pr["merge_commit_sha"]).lower()
                         if merged and SHA_RE.match(str(pr.get("merge_commit_sha") or "")) else None),
        "url": pr.get("html_url"),
        "state": "merged" if merged else pr.get("state"),
        "merged_by": _login(pr.get("merged_by")),
        "base_ref": (pr.get("base") or {}).get("ref"),
        "head_ref": (pr.get("head") or {}).get("ref"),
        "description": pr.get("body") if isinstance(pr.get("body"), str) else None,
        "labels": [lbl["name"] for lbl in pr.get("labels") or [] if isinstance(lbl, dict) and lbl.get("name")],
    }
    return out


def map_review(review: dict[str, Any]) -> dict[str, Any]:
    """One review: who, what, on which commit, when; and what GitHub says of the reviewer."""
    user = review.get("user")
    login = _login(user)
    out: dict[str, Any] = {
        "user": login or "ghost",
        "state": str(review["state"]).lower(),
        # A commit id that is not a SHA (a placeholder in a recording) counts as no commit: stale.
        "commit": str(review["commit_id"]).lower() if SHA_RE.match(str(review.get("commit_id") or "")) else None,
        "submitted_at": review.get("submitted_at"),
    }
    association = review.get("author_association")
    if isinstance(association, str) and association:
        out["association"] = association.upper()
    if login is None or login.lower() == "ghost":
        out["deleted"] = True  # GitHub shows a deleted account as null (or as its ghost user)
    elif (isinstance(user, dict) and user.get("type") == "Bot") or login.lower().endswith("[bot]"):
        out["bot"] = True
    return out


PERMISSION_RANK = {"none": 0, "read": 1, "triage": 2, "write": 3, "maintain": 4, "admin": 5}
LEGACY_BASE = {"none": "none", "read": "read", "triage": "read", "write": "write", "maintain": "write",
               "admin": "admin"}
"""Each role's legacy base permission, as ``permission`` of the permission API reports it."""
EARLY_EXCLUDED = frozenset({"NONE", "FIRST_TIMER", "FIRST_TIME_CONTRIBUTOR", "MANNEQUIN"})
"""``author_association`` values that never count: no permission lookup is needed."""


def map_permission(data: dict[str, Any]) -> tuple[str, str | None]:
    """``(permission, role)`` from ``GET .../collaborators/{login}/permission``.

    ``role_name`` names the role exactly (custom roles included); ``permission`` is the legacy base
    (admin, write, read, none: maintain shows as write, triage as read). A known ``role_name`` that
    agrees with the base is kept (maintain, triage); a custom role takes the base; when the two
    disagree the lower base is kept, so a disagreement never raises anyone's access.
    """
    role = data.get("role_name")
    legacy = str(data["permission"]).lower()
    if legacy not in LEGACY_BASE:
        raise ValueError(f"unknown permission {legacy!r}")
    named = str(role or "").lower()
    if named in LEGACY_BASE:
        if LEGACY_BASE[named] == legacy:
            legacy = named
        else:
            legacy = min(LEGACY_BASE[named], legacy, key=PERMISSION_RANK.__getitem__)
    return legacy, (role if isinstance(role, str) else None)


def needs_lookup(review: dict[str, Any]) -> bool:
    """Whether an approval's eligibility depends on the reviewer's permission."""
    return (review.get("state") == "approved" and not review.get("bot") and not review.get("deleted")
            and str(review.get("association") or "").upper() not in EARLY_EXCLUDED)


def all_reviews(change: dict[str, Any]) -> list[dict[str, Any]]:
    """The reviews of the deployed request and of every request in the change range."""
    out = list(change.get("reviews") or [])
    for pr in (change.get("range") or {}).get("pull_requests") or []:
        out += pr.get("reviews") or []
    return out


def record_permissions(reviews: list[dict[str, Any]], key: Callable[[dict[str, Any]], Any],
                       results: Mapping[Any, tuple[tuple[str, str | None] | None, ApiError | None]]) -> None:
    """Write each looked-up approver's ``permission`` and ``role`` (or null and the cause) into their reviews."""
    for review in reviews:
        k = key(review)
        if k not in results or not needs_lookup(review):
            continue
        got, err = results[k]
        if got is None:
            review["permission"] = None
            review["permission_error"] = str(err or "the permission lookup failed")
        else:
            review["permission"], review["role"] = got


def _commit_time(commit: Mapping[str, Any]) -> str | None:
    """``commit.committer.date``, else ``commit.author.date``: a time with a zone, or None (lead time is
    then not measured for this commit; the change is still valid)."""
    for kind in ("committer", "author"):
        person = commit.get(kind)
        value = person.get("date") if isinstance(person, Mapping) else None
        if isinstance(value, str) and time_problem(value) is None:
            return value
    return None


def map_commit(item: dict[str, Any], pull_request: int | None) -> dict[str, Any]:
    """One commit: GitHub logins when GitHub knows the e-mail, else the e-mail; co-authors."""
    commit = item.get("commit") or {}

    def who(kind: str) -> str | None:
        login = _login(item.get(kind))
        if login:
            return login
        person = commit.get(kind) or {}
        email = person.get("email")
        if isinstance(email, str) and email:
            m = _GITHUB_NOREPLY_RE.match(email)
            return m.group(1) if m else email.lower()
        return person.get("name") or None

    out = {
        "sha": str(item["sha"]).lower(),
        "author": who("author"),
        "committer": who("committer"),
        "committed_at": _commit_time(commit),
        "co_authors": co_authors(commit.get("message")),
        "message": first_line(commit.get("message")),
        "pull_request": pull_request,
    }
    body = message_body(commit.get("message"))
    if body:  # only when the message has more than its subject (e.g. a Refs: PAY-101 trailer)
        out["body"] = body
    return out


def map_check_run(run: dict[str, Any]) -> dict[str, Any]:
    """A check run: its conclusion when completed, else ``pending``; its creator is its app's slug."""
    status = run.get("conclusion") if run.get("status") == "completed" else None
    app = run.get("app") if isinstance(run.get("app"), dict) else {}
    return {
        "name": str(run["name"]),
        "status": str(status or "pending"),
        "commit": str(run["head_sha"]).lower() if run.get("head_sha") else None,
        "completed_at": run.get("completed_at"),
        "url": run.get("html_url") or run.get("details_url"),
        "kind": "check_run",
        "creator": app.get("slug") or None,  # unknown: never the platform's app (checks_passed)
    }


def map_status(status: dict[str, Any], sha: str) -> dict[str, Any]:
    """A commit status; its creator is the login of the account that posted it."""
    return {
        "name": str(status["context"]),
        "status": str(status["state"]),
        "commit": sha,
        "completed_at": status.get("updated_at") or status.get("created_at"),
        "url": status.get("target_url"),
        "kind": "status",
        "creator": _login(status.get("creator")),
    }


def latest_statuses(statuses: list[dict[str, Any]], sha: str) -> list[dict[str, Any]]:
    """The newest status per context and creator, oldest first, from GitHub's newest-first list.

    Per creator, not per context: the newest status of a context may be anyone's, and
    ``checks_passed`` judges only those of the creators it expects.
    """
    seen: set[tuple[str, str | None]] = set()
    out: list[dict[str, Any]] = []
    for st in statuses:
        mapped = map_status(st, sha)
        key = (mapped["name"], mapped["creator"])
        if key not in seen:
            seen.add(key)
            out.append(mapped)
    return out[::-1]


def pick_pull(candidates: Iterable[dict[str, Any]], sha: str, *, merged_only: bool = False) -> dict[str, Any] | None:
    """The pull request that brought ``sha``: merged as it, else headed by it, else merged containing it."""
    cands = [c for c in candidates if isinstance(c, dict)]
    merged = [c for c in cands if c.get("merged_at")]
    for group in (
        [c for c in merged if str(c.get("merge_commit_sha") or "").lower() == sha],
        [] if merged_only else [c for c in cands if str((c.get("head") or {}).get("sha") or "").lower() == sha],
        merged,
        [] if merged_only else cands,
    ):
        if group:
            return group[0]
    return None


def pick_merged_pull(candidates: Iterable[dict[str, Any]], sha: str) -> dict[str, Any] | None:
    """The merged pull request that brought ``sha`` into the branch (change ranges)."""
    return pick_pull(candidates, sha, merged_only=True)


def _deployment(dep: dict[str, Any]) -> dict[str, Any]:
    return {"sha": str(dep["sha"]).lower(), "id": dep["id"], "url": dep.get("url"),
            "created_at": dep.get("created_at"), "source": "github-deployments"}


# -- permissions, for 401/403 messages ------------------------------------------------------


def permission_for(path: str) -> str | None:
    """The GITHUB_TOKEN permission an endpoint needs (see docs/ci-integration.md)."""
    p = path.split("?")[0]
    if p.endswith("/graphql"):
        return "`pull-requests: read`, `contents: read` and `deployments: read`"
    if p.startswith("/orgs/") and "/teams/" in p:
        return ("the organization permission `members: read` (GITHUB_TOKEN never has it: pass a GitHub App "
                "or fine-grained token as github-token)")
    if "/check-runs" in p:
        return "`checks: read`"
    if p.endswith("/status") or ("/statuses" in p and "/deployments/" not in p):
        return "`statuses: read`"
    if "/deployments" in p:
        return "`deployments: read`"
    if "/actions/" in p:
        return "`actions: read` (tests_passed provenance: same_run lists and downloads the run's artifacts)"
    if "/collaborators/" in p:
        return "`metadata: read`"
    if "/pulls" in p:
        return "`pull-requests: read`"
    if "/compare/" in p or "/commits" in p:
        return "`contents: read`"
    return None


def make_session(cfg: GitHubConfig, env: Mapping[str, str], redactor: Redactor) -> HttpSession:
    """The API session for this run."""
    return HttpSession(
        cfg.api_url,
        token=TokenInfo("Authorization", f"Bearer {cfg.token}", "GITHUB_TOKEN"),
        provider="github",
        settings=HttpSettings.from_env(env),
        redactor=redactor,
        extra_headers={"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"},
        permission_hint=permission_for,
    )


# -- gathering --------------------------------------------------------------------------------


class _GitHub:
    """One gathering: the session, the run's configuration and the facts being built."""

    def __init__(self, cfg: GitHubConfig, session: HttpSession, pool: ThreadPoolExecutor,
                 history: PreviousDeploys | None) -> None:
        self.cfg = cfg
        self.s = session
        self.pool = pool
        self.history = history
        self.repo = f"/repos/{cfg.repository}"
        self.short = cfg.sha[:7]

    # Each fetch returns mapped facts or raises ApiError.

    def event_number(self) -> int | None:
        """The pull request number of a pull request event, when the payload names a valid one."""
        if self.cfg.event_name in PR_EVENTS:
            pr = self.cfg.event.get("pull_request")
            if (isinstance(pr, dict) and isinstance(pr.get("number"), int) and not isinstance(pr["number"], bool)
                    and 1 <= pr["number"] <= shapes.MAX_INT):
                return int(pr["number"])
        return None

    def pull_graphql(self) -> dict[str, Any]:
        """The deployed pull request with its reviews, commits and files (None: REST lists them), and
        the previous deploy the deployments record, in one to three GraphQL requests (see
        ``github_graphql``). The REST objects GraphQL's nodes stand for are shape-checked and
        mapped as REST answers are."""
        assert self.cfg.graphql_url is not None  # noqa: S101
        got = fetch_pull(self.s, self.cfg.graphql_url, self.cfg.repository, self.cfg.sha, self.cfg.environment,
                         self.event_number(), pick_pull, self.s.settings.max_pages)
        path = self.s.display_path(self.cfg.graphql_url)
        out: dict[str, Any] = {"pull": None, "deployments": got["deployments"]}
        if got["pull"] is None:
            return out
        data = shapes.check("POST", path, got["pull"], shapes.GH_PULL, "pullRequest")
        n = int(data["number"])
        reviews = shapes.check("POST", path, got["reviews"], shapes.List(shapes.GH_REVIEW), "reviews")
        commits = shapes.check("POST", path, got["commits"], shapes.List(shapes.GH_COMMIT), "commits")
        out["pull"] = shaped("POST", path, lambda: {"api": data, "mapped": map_pull(data)})
        out["reviews"] = shaped("POST", path, lambda: [map_review(r) for r in reviews])
        out["commits"] = shaped("POST", path, lambda: [map_commit(c, n) for c in commits])
        if isinstance(data.get("commits"), int) and data["commits"] > len(commits):
            raise ApiError("POST", path, 200, f"the pull request has {data['commits']} commits but the API listed "
                           f"{len(commits)} (it lists at most 250); the committers cannot all be known")
        out["files"] = got["files"]
        return out

    def previous_from(self, deployments: list[dict[str, Any]] | ApiError) -> dict[str, Any] | None:
        """The newest of the environment's deployments (as ``pull_graphql`` read them) with a success."""
        if isinstance(deployments, ApiError):
            raise deployments
        path = self.s.display_path(str(self.cfg.graphql_url))
        shapes.check("POST", path, deployments, shapes.List(shapes.GH_DEPLOYMENT), "deployments")
        for dep in deployments[:MAX_DEPLOYMENTS_CHECKED]:
            if "success" in dep["statuses"]:
                return shaped("POST", path, _deployment, {
                    **dep, "url": f"{self.cfg.api_url}{self.repo}/deployments/{dep['id']}"})
        return None

    def pull_request(self) -> dict[str, Any] | None:
        number = self.event_number()
        if number is None:
            path = f"{self.repo}/commits/{self.cfg.sha}/pulls"
            cands = shapes.check("GET", path, self.s.get_pages(path, name=f"commits_{self.short}_pulls"),
                                 shapes.List(shapes.GH_PULL_SIMPLE))
            chosen = shaped("GET", path, lambda: pick_pull(cands, self.cfg.sha))
            if chosen is None:
                return None
            number = int(chosen["number"])
        path = f"{self.repo}/pulls/{number}"
        data = shapes.check("GET", path, self.s.get_json(path, name=f"pulls_{number}"), shapes.GH_PULL)
        return shaped("GET", path, lambda: {"api": data, "mapped": map_pull(data)})

    def reviews(self, number: int) -> list[dict[str, Any]]:
        path = f"{self.repo}/pulls/{number}/reviews"
        items = shapes.check("GET", path, self.s.get_pages(path, name=f"pulls_{number}_reviews"),
                             shapes.List(shapes.GH_REVIEW))
        return shaped("GET", path, lambda: [map_review(r) for r in items])

    def permission(self, login: str) -> tuple[str, str | None]:
        """The reviewer's access to the repository: ``(permission, role)``."""
        path = f"{self.repo}/collaborators/{quote(login, safe='')}/permission"
        data = self.s.get_json(path, name=f"collaborators_{re.sub(r'[^A-Za-z0-9_.-]', '_', login)}_permission")
        return shaped("GET", path, map_permission, data)

    def pr_commits(self, number: int, expected: int | None) -> list[dict[str, Any]]:
        path = f"{self.repo}/pulls/{number}/commits"
        items = shapes.check("GET", path, self.s.get_pages(path, name=f"pulls_{number}_commits"),
                             shapes.List(shapes.GH_COMMIT))
        mapped = shaped("GET", path, lambda: [map_commit(c, number) for c in items])
        if isinstance(expected, int) and expected > len(mapped):
            raise ApiError("GET", path, 200, f"the pull request has {expected} commits but the API listed "
                           f"{len(mapped)} (it lists at most 250); the committers cannot all be known")
        return mapped

    def files(self, number: int, expected: int | None) -> list[str]:
        path = f"{self.repo}/pulls/{number}/files"
        items = shapes.check("GET", path, self.s.get_pages(path, name=f"pulls_{number}_files"),
                             shapes.List(shapes.GH_FILE))

        def build() -> list[str]:
            out: list[str] = []
            for f in items:
                for name in (f["filename"], f.get("previous_filename")):
                    if name and name not in out:
                        out.append(name)
            return out

        files = shaped("GET", path, build)
        if isinstance(expected, int) and expected > len(items):
            raise ApiError("GET", path, 200, f"the pull request changes {expected} files but the API listed "
                           f"{len(items)} (it lists at most 3000)")
        return files

    def direct_commit(self) -> tuple[dict[str, Any], list[str]]:
        path = f"{self.repo}/commits/{self.cfg.sha}"
        data = shapes.check("GET", path, self.s.get_json(path, name=f"commits_{self.short}"),
                            shapes.GH_COMMIT_WITH_FILES)

        def build() -> tuple[dict[str, Any], list[str]]:
            files: list[str] = []
            for f in data.get("files") or []:
                for name in (f["filename"], f.get("previous_filename")):
                    if name and name not in files:
                        files.append(name)
            return map_commit(data, None), files

        return shaped("GET", path, build)

    def check_runs(self) -> list[dict[str, Any]]:
        path = f"{self.repo}/commits/{self.cfg.sha}/check-runs"
        runs = shapes.check("GET", path, self.s.get_pages(path, name=f"commits_{self.short}_check-runs",
                                                           key="check_runs"), shapes.List(shapes.GH_CHECK_RUN))
        return shaped("GET", path, lambda: [map_check_run(r) for r in runs])

    def statuses(self) -> list[dict[str, Any]]:
        # The list, not the combined status: only the list names each status's creator.
        path = f"{self.repo}/commits/{self.cfg.sha}/statuses"
        statuses = shapes.check("GET", path, self.s.get_pages(path, name=f"commits_{self.short}_statuses"),
                                shapes.List(shapes.GH_STATUS))
        return shaped("GET", path, lambda: latest_statuses(statuses, self.cfg.sha))

    def team(self, name: str) -> list[str]:
        """The members of the policy's team ``name``: ``POLICYENGINE_TEAMS`` maps it to ``org/team``
        (or a team of the repository owner's organization); unmapped, ``org/team`` is read as
        written and a bare name is a team of the repository owner's organization, never a stranger's."""
        name = dict(self.cfg.team_map).get(name, name)
        org, slash, slug = name.partition("/")
        if not slash:
            org, slug = self.cfg.repository.split("/")[0], name
        path = f"/orgs/{org}/teams/{slug}/members"
        items = shapes.check("GET", path, self.s.get_pages(path, name=f"teams_{org}_{slug}_members"),
                             shapes.List(shapes.GH_USER))
        return shaped("GET", path, lambda: sorted({str(m["login"]) for m in items}, key=str.casefold))

    def previous_deploy(self) -> dict[str, Any] | None:
        path = f"{self.repo}/deployments"
        deployments = self.s.get_json(path, {"environment": self.cfg.environment, "per_page": 30},
                                      name="deployments")
        shapes.check("GET", path, deployments, shapes.List(shapes.GH_DEPLOYMENT))
        for dep in deployments[:MAX_DEPLOYMENTS_CHECKED]:
            dpath = f"{self.repo}/deployments/{dep['id']}/statuses"
            statuses = self.s.get_json(dpath, {"per_page": 100}, name=f"deployments_{dep['id']}_statuses")
            shapes.check("GET", dpath, statuses, shapes.List(shapes.GH_DEPLOYMENT_STATUS))
            if any(st["state"] == "success" for st in statuses):
                return shaped("GET", path, _deployment, dep)
        return None

    def change_range(self, previous: dict[str, Any] | None, deployed: dict[str, Any] | None,
                     deployed_reviews: list[dict[str, Any]] | None,
                     deployed_commits: list[dict[str, Any]] | None
                     ) -> tuple[dict[str, Any], list[str], list[str] | str]:
        """The commits since ``previous``, the pull request that brought each one, and the files
        of the whole range (a list, or the reason they cannot be listed)."""
        notes: list[str] = []
        sha = self.cfg.sha
        rng, note, done = start_range(previous, sha, self.cfg.environment, "GitHub deployments", self.history)
        if done:
            return rng, [note] if note else [], []
        prev = rng["previous_commit"]
        path = f"{self.repo}/compare/{prev}...{sha}"
        pages = [shapes.check("GET", path, page, shapes.GH_COMPARE, f"page {i}")
                 for i, page in enumerate(self.s.iter_pages(path, name=f"compare_{prev[:7]}_{sha[:7]}"), 1)]
        if not pages:
            raise ApiError("GET", path, 200, "HTTP 200 but the answer has no page")

        def build() -> tuple[str, int, list[dict[str, Any]]]:
            first = pages[0]
            items = [c for page in pages for c in page["commits"]]
            return str(first["status"]), int(first.get("total_commits", len(items))), items

        status, total, items = shaped("GET", path, build)
        range_files = compare_files(path, pages[0])
        rng["status"] = status
        if total > len(items):
            raise ApiError("GET", path, 200, f"the range has {total} commits but the API listed {len(items)}")
        if len(items) > MAX_RANGE_COMMITS:
            raise ApiError("GET", path, 200, f"the range has {len(items)} commits, more than the "
                           f"{MAX_RANGE_COMMITS} policyengine attributes to pull requests one by one")
        known: dict[str, int] = {}
        pulls: dict[int, dict[str, Any]] = {}
        committers: dict[int, list[dict[str, Any]]] = {}
        if deployed is not None:
            n = deployed["mapped"]["number"]
            pulls[n] = deployed["api"]
            for c in deployed_commits or []:
                known[c["sha"]] = n
            if deployed["mapped"].get("merge_commit") == sha or deployed["mapped"]["head_commit"] == sha:
                known[sha] = n
            if deployed_commits is not None:
                committers[n] = deployed_commits
        shas = [str(c["sha"]).lower() for c in items]
        unknown = [s for s in shas if s not in known]
        orphans: set[str] = set()
        while unknown:
            batch, unknown = unknown[:WORKERS * 2], unknown[WORKERS * 2:]
            futures = {s: self.pool.submit(self.s.get_pages, f"{self.repo}/commits/{s}/pulls",
                                           name=f"commits_{s[:7]}_pulls") for s in batch}
            found: list[int] = []
            for s, fut in futures.items():
                if s in known:
                    continue
                cpath = f"{self.repo}/commits/{s}/pulls"
                cands = shapes.check("GET", cpath, fut.result(), shapes.List(shapes.GH_PULL_SIMPLE))
                pr = shaped("GET", cpath, pick_merged_pull, cands, s)
                if pr is None:
                    orphans.add(s)
                    continue
                n = int(pr["number"])
                known[s] = n
                if n not in pulls:
                    pulls[n] = pr
                    found.append(n)
            # Fetch the commits of each newly found pull request: they attribute other commits
            # of the range without one lookup each, and give that request's committers.
            cfuts = {n: self.pool.submit(self.pr_commits, n, None) for n in found}
            for n, fut in cfuts.items():
                committers[n] = fut.result()
                for c in committers[n]:
                    known.setdefault(c["sha"], n)
            unknown = [s for s in unknown if s not in known]
        by_sha = {str(c["sha"]).lower(): c for c in items}
        rng["commits"] = [
            shaped("GET", path, map_commit, by_sha[s], known.get(s)) for s in shas
        ]
        # Reviews of every request in the range (the deployed one's are already known).
        numbers = sorted({known[s] for s in shas if s in known})
        rfuts = {n: self.pool.submit(self.reviews, n) for n in numbers
                 if not (deployed is not None and n == deployed["mapped"]["number"] and deployed_reviews is not None)}
        rng["pull_requests"] = []
        for n in numbers:
            reviews = rfuts[n].result() if n in rfuts else deployed_reviews or []
            mapped = shaped("GET", f"{self.repo}/pulls/{n}", map_pull, pulls[n])
            mapped["reviews"] = reviews
            mapped["committers"] = committer_logins(committers.get(n, []))
            rng["pull_requests"].append(mapped)
        notes.append(range_note(rng, self.cfg.environment))
        return rng, notes, range_files


MAX_COMPARE_FILES = 300
"""GitHub's compare API lists at most this many files: a list this long may be cut short."""


def compare_files(path: str, first_page: Any) -> list[str] | str:
    """The files of a compare answer (its first page lists them all), or why they cannot be listed."""
    files = first_page.get("files") if isinstance(first_page, dict) else None
    if not isinstance(files, list):
        return f"GET {path}: HTTP 200 but the answer has no list of files"
    return listed_files(path, files, ("filename", "previous_filename"), MAX_COMPARE_FILES, "file")


def listed_files(path: str, items: list[Any], keys: tuple[str, str], cap: int, what: str) -> list[str] | str:
    """The new and old names of a compare answer's ``items`` (``keys``: new, old), each once; or
    why they cannot be listed (a list as long as the API's cap may be cut short)."""
    if len(items) >= cap:
        return (f"GET {path}: the range changes {len(items)} or more files, as many as the API lists at most "
                f"({cap}), so the list may be cut short")
    out: list[str] = []
    for item in items:
        names = (item.get(keys[0]), item.get(keys[1])) if isinstance(item, dict) else (None,)
        if not isinstance(names[0], str) or not names[0]:
            return f"GET {path}: HTTP 200 but a {what} of the answer has no {keys[0]}"
        for name in names:
            if isinstance(name, str) and name and name not in out:
                out.append(name)
    return out


def collect_teams(facts: Facts, f_teams: Mapping[str, Any]) -> None:
    """Each team's members under ``teams``; a team that could not be read is left out and its cause
    recorded as ``unavailable["teams/<name>"]``, so only the rules that need that team are ``error``."""
    if not f_teams:
        return
    team_map: dict[str, list[str]] = {}
    for name, fut in f_teams.items():
        members, terr = attempt(fut.result)
        if terr is not None:
            facts.missing(terr, f"teams/{name}")
        else:
            team_map[name] = members or []
    facts.change["teams"] = team_map


def deployer_of(cfg: GitHubConfig, pr: dict[str, Any] | None) -> tuple[str | None, str | None, str | None]:
    """(deployer, source, note): the first person among the triggering actor, the actor, the merger."""
    candidates = [
        ("GITHUB_TRIGGERING_ACTOR", cfg.triggering_actor),
        ("GITHUB_ACTOR", cfg.actor),
        ("pull_request.merged_by", (pr or {}).get("merged_by")),
    ]
    skipped = [f"{src} {who}" for src, who in candidates if who and is_bot(who)]
    bots = f"{' and '.join(skipped)} {'is a bot' if len(skipped) == 1 else 'are bots'}"
    for src, who in candidates:
        if who and not is_bot(who):
            return who, src, (f"{bots}; the deployer is {who} ({src})" if skipped else None)
    return None, None, "no person is known to have triggered this deploy" + (f" ({bots})" if skipped else "")


def gather_github(
    env: Mapping[str, str],
    *,
    environment: str | None = None,
    previous_deploys: PreviousDeploys | None = None,
    teams: Sequence[str] | None = None,
    session: HttpSession | None = None,
) -> Gathered:
    """Build the normalized change for the deployment this GitHub Actions run performs.

    ``teams``: team names to resolve (``org/team``, or ``team`` in the repository owner's
    organization); default: the comma list in ``POLICYENGINE_TEAMS``. Each becomes a key of the
    change's ``teams`` exactly as written, so write it as the policy's ``from_teams`` does.
    """
    cfg = read_config(env, environment, teams)
    redactor = Redactor.from_env(env, [cfg.token])
    s = session or make_session(cfg, env, redactor)
    owner_session = session is None
    facts = Facts(change={
        "repository": cfg.repository,
        "environment": cfg.environment,
        "commit": cfg.sha,
        "ref": cfg.ref,
        "facts_source": "github",
        "pipeline": {
            "provider": "github",
            "id": cfg.run_id or "unknown",
            "attempt": cfg.run_attempt,
            "url": (f"{cfg.server_url}/{cfg.repository}/actions/runs/{cfg.run_id}"
                    + (f"/attempts/{cfg.run_attempt}" if cfg.run_attempt else "")) if cfg.run_id else None,
            "job_url": None,
            "event": cfg.event_name,
        },
    })
    facts.notes.extend(cfg.notes)
    raw: dict[str, bytes] = {}
    if cfg.event_raw is not None:
        raw["github/event.json"] = redactor.bytes(cfg.event_raw)
    try:
        with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="policyengine-github") as pool:
            g = _GitHub(cfg, s, pool, previous_deploys)
            _gather(g, facts, pool)
            _look_up_approvers(g, facts, pool)
    finally:
        raw.update(s.raw)
        if owner_session:
            s.close()
    change = facts.finish()
    return Gathered(change=change, raw=dict(sorted(raw.items())))


def _gather(g: _GitHub, facts: Facts, pool: ThreadPoolExecutor) -> None:
    cfg = g.cfg
    change = facts.change
    # GraphQL: one request gives the pull request, its first and last reviews and commits, its
    # files and the environment's deployments (github_graphql); REST: one endpoint each.
    f_pr = pool.submit(g.pull_graphql if cfg.graphql_url else g.pull_request)
    # Pool tasks never wait on other pool tasks (no deadlock whatever the pool size): only this
    # thread and change_range, which runs here, wait on futures.
    f_runs = pool.submit(g.check_runs)
    f_statuses = pool.submit(g.statuses)
    f_teams = {t: pool.submit(g.team, t) for t in cfg.teams}
    f_prev: Future[dict[str, Any] | None] = Future() if cfg.graphql_url else pool.submit(g.previous_deploy)

    pr, err = attempt(f_pr.result)
    got: dict[str, Any] = {}
    if cfg.graphql_url:
        if err is not None:
            f_prev.set_exception(err)
        else:
            got = pr or {}
            pr = got["pull"]
            try:
                f_prev.set_result(g.previous_from(got["deployments"]))
            except ApiError as exc:
                f_prev.set_exception(exc)
    reviews: list[dict[str, Any]] | None = None
    commits: list[dict[str, Any]] | None = None
    if err is not None:
        facts.missing(err, "pull_request", "reviews", "commits", "files_changed")
    elif pr is None:
        change["pull_request"] = None
        change["reviews"] = []
        facts.notes.append(f"no pull request brought commit {cfg.sha[:7]}: it was pushed without one, so nobody "
                           "reviewed it")
        direct, derr = attempt(pool.submit(g.direct_commit).result)
        if derr is not None:
            facts.missing(derr, "commits", "files_changed")
        else:
            assert direct is not None  # noqa: S101
            commits = [direct[0]]
            change["commits"] = commits
            change["files_changed"] = direct[1]
    else:
        mapped = pr["mapped"]
        api = pr["api"]
        n = mapped["number"]
        change["pull_request"] = mapped
        if cfg.sha not in (mapped.get("merge_commit"), mapped["head_commit"]):
            facts.notes.append(
                f"deployed commit {cfg.sha[:7]} is neither the merge commit "
                f"({str(mapped.get('merge_commit'))[:7]}) nor the head ({mapped['head_commit'][:7]}) of pull "
                f"request #{n}: the review facts are those of #{n}")
        if got:
            f_reviews, f_commits = _done(got["reviews"]), _done(got["commits"])
            f_files = (_done(got["files"]) if got["files"] is not None
                       else pool.submit(g.files, n, api.get("changed_files")))
        else:
            f_reviews = pool.submit(g.reviews, n)
            f_commits = pool.submit(g.pr_commits, n, api.get("commits"))
            f_files = pool.submit(g.files, n, api.get("changed_files"))
        got_reviews, rerr = attempt(f_reviews.result)
        if rerr is not None:
            facts.missing(rerr, "reviews")
        else:
            reviews = change["reviews"] = got_reviews
        got_commits, cerr = attempt(f_commits.result)
        if cerr is not None:
            facts.missing(cerr, "commits")
        else:
            commits = change["commits"] = got_commits
        files, ferr = attempt(f_files.result)
        if ferr is not None:
            facts.missing(ferr, "files_changed")
        else:
            change["files_changed"] = files

    runs, kerr = attempt(f_runs.result)
    statuses, serr = attempt(f_statuses.result)
    if kerr is not None or serr is not None:
        facts.missing(kerr or serr or "", "checks")  # both or nothing: a partial list of checks is not trusted
    else:
        change["checks"] = (runs or []) + (statuses or [])

    collect_teams(facts, f_teams)

    # The deployer: a person, never a bot.
    pr_mapped = pr["mapped"] if pr else None
    who, source, note = deployer_of(cfg, pr_mapped)
    change["deployer"] = who
    change["deployer_source"] = source
    if note:
        facts.notes.append(note)
    if who is None and err is not None:
        facts.missing(err, "deployer")

    # The change range since the previous successful deploy to this environment.
    finish_range(g, facts, f_prev, "GitHub deployments", lambda previous: g.change_range(
        previous, pr, reviews, commits) if err is None else None, err)


def _done(value: T) -> Future[T]:
    """A future that already holds ``value`` (a fact GraphQL gave with the pull request)."""
    fut: Future[T] = Future()
    fut.set_result(value)
    return fut


def finish_range(g: Any, facts: Facts, f_prev: Any, host: str,
                 compute: Callable[[dict[str, Any] | None], tuple[dict[str, Any], list[str], list[str] | str] | None],
                 err: ApiError | None) -> None:
    """Resolve the trusted previous deploy, list the range, and make ``files_changed`` the files
    of the whole range (unavailable when the range, or its files, cannot be known)."""
    cfg, change = g.cfg, facts.change
    api_prev, perr = attempt(f_prev.result)
    try:
        previous, pnotes = resolve_previous(g.history, api_prev, perr, cfg.repository, cfg.environment, host)
    except HistoryUnavailable as exc:
        facts.missing(exc.message, "range", "files_changed")
        change.pop("files_changed", None)
        return
    facts.notes.extend(pnotes)
    if err is not None:
        facts.missing(err, "range")
        return
    try:
        got = compute(previous)
    except ApiError as exc:
        facts.missing(exc, "range", "files_changed")
        change.pop("files_changed", None)
        return
    assert got is not None  # noqa: S101
    rng, notes, range_files = got
    change["range"] = rng
    facts.notes.extend(notes)
    if previous is None:
        facts.missing("the change range is unknown (no verified previous deploy), so the files this deploy ships "
                      "cannot be listed", "files_changed")
    elif isinstance(range_files, str):
        facts.missing(range_files, "files_changed")
    elif "files_changed" in change:
        change["files_changed"] = list(dict.fromkeys([*change["files_changed"], *range_files]))
    if "files_changed" in facts.unavailable:
        change.pop("files_changed", None)


def _look_up_approvers(g: _GitHub, facts: Facts, pool: ThreadPoolExecutor) -> None:
    """Look up, once each and at once, the permission of every person who approved."""
    reviews = all_reviews(facts.change)
    logins: dict[str, str] = {}
    for review in reviews:
        if needs_lookup(review):
            logins.setdefault(str(review["user"]).casefold(), str(review["user"]))
    futures = {k: pool.submit(g.permission, login) for k, login in logins.items()}
    results = {k: attempt(f.result) for k, f in futures.items()}
    record_permissions(reviews, lambda r: str(r["user"]).casefold(), results)
