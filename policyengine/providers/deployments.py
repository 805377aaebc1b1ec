"""What the platform recorded: deployments and running artifacts, for ``audit reconcile``.

Four sources, each read completely or not at all (a page cap reached, a malformed answer, a
GraphQL error: ``ApiError``/``SourceError``, never a shorter list):

* **GitHub**: each chain's environment deployments through GraphQL (``repository.deployments``
  filtered to the environment, with ``latestStatus`` and ``creator``), 100 per page, every chain
  of one repository host batched into one request per page (aliases), newest first and stopped at
  the period's start. The REST deployments endpoint is the shape reference; GraphQL is used
  because REST needs one more request per deployment for its statuses. ``GITHUB_GRAPHQL_URL``
  must be on the same origin as ``GITHUB_API_URL``: the token goes nowhere else.
* **GitLab**: ``GET /projects/:id/deployments?environment=&status=success``, paged. The
  deployment's own ``status`` decides, never ``deployable.status``.
* **Kubernetes**: the JSON of ``kubectl get pods -A -o json`` read from a file (a ``List``, a
  ``PodList`` or a single ``Pod``); the gate never contacts the cluster. Every container, init
  container and ephemeral container with an ``imageID`` is a running artifact, its digest the
  ``sha256:...`` after ``@``.
* **A deploy log**: JSON Lines of ``{time, commit | subject, environment, id, url}`` (Argo CD,
  Spinnaker, Heroku, a home-grown script); ``repository`` and ``creator`` are optional.

Every platform deployment keeps its creator (user or app): whoever can write deployments on the
platform can add or remove these records, so a reconciliation is as strong as the platform's own
audit trail.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from msgspec import Struct, field

from policyengine.errors import EXIT_FACTS, PolicyEngineError, UsageError
from policyengine.lifecycle.witness_format import CONTEXT_PREFIX, context_for, is_witness_context
from policyengine.models import iso_utc
from policyengine.providers.http import ApiError, HttpSession, HttpSettings, TokenInfo
from policyengine.redact import Redactor

SHA1_RE = re.compile(r"^[0-9a-f]{40}$")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
GITHUB_DEPLOYED = frozenset({"SUCCESS", "INACTIVE"})
"""GitHub latest status states that mean the deployment reached the environment: ``INACTIVE`` is
what GitHub sets on an earlier successful deployment when a newer one succeeds."""
GITLAB_DEPLOYED = frozenset({"success"})


class SourceError(PolicyEngineError):
    """A platform source that cannot be read completely: reconcile cannot judge (exit 3)."""

    exit_code = EXIT_FACTS


class PlatformDeployment(Struct, frozen=True):
    """One deployment as the platform recorded it."""

    source: str
    id: str
    time: str
    environment: str
    repository: str | None
    commit: str | None = None
    subject: str | None = None
    url: str | None = None
    creator: str | None = None
    creator_type: str | None = None
    state: str | None = None


class RunningArtifact(Struct, frozen=True):
    """A container running now (a snapshot), by its image digest."""

    source: str
    id: str  # namespace/pod/container
    digest: str
    image: str | None
    started_at: str | None
    namespace: str


class WitnessStatus(Struct, frozen=True):
    """One witness status as the platform recorded it."""

    source: str
    repository: str
    environment: str
    commit: str
    description: str | None
    time: str
    creator: str | None
    state: str | None = None
    url: str | None = None


class PlatformRecords(Struct):
    """What the sources said: deployments, running artifacts, and what was read how."""

    deployments: list[PlatformDeployment] = field(default_factory=list)
    running: list[RunningArtifact] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    requests: int = 0
    skipped: int = 0
    """Platform deployments that never reached the environment (failed, pending, no status)."""
    running_without_digest: int = 0
    """Containers of a snapshot with no ``imageID`` yet (still pulling)."""
    covered: set[tuple[str, str]] = field(default_factory=set)
    """The (repository, policy environment) chains whose deployments a source listed."""


# -- shared ------------------------------------------------------------------------------------


def _time(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise SourceError(f"{where}: no time")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise SourceError(f"{where}: {value!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise SourceError(f"{where}: {value!r} has no time zone")
    return iso_utc(moment.astimezone(timezone.utc).replace(microsecond=0))


def _digest(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    tail = value.rsplit("@", 1)[-1].strip().lower()
    return tail if DIGEST_RE.match(tail) else None


def parse_environment_map(values: Sequence[str]) -> dict[str, str]:
    """``PLATFORM=POLICY`` pairs (``--environment-map``) as a dict; a bad pair is a UsageError."""
    out: dict[str, str] = {}
    for v in values:
        platform, sep, policy = v.partition("=")
        if not sep or not platform.strip() or not policy.strip() or platform.startswith("-"):
            raise UsageError(f"--environment-map: {v!r} is not PLATFORM=POLICY",
                             hint="e.g. --environment-map prod=production")
        if platform.strip() in out:
            raise UsageError(f"--environment-map: {platform.strip()!r} is mapped twice")
        out[platform.strip()] = policy.strip()
    return out


def platform_names(env_map: Mapping[str, str], policy_env: str) -> list[str]:
    """The platform environment names that map to ``policy_env`` (itself when none is mapped to it)."""
    names = [p for p, v in env_map.items() if v == policy_env]
    return names or [policy_env]


# -- GitHub ------------------------------------------------------------------------------------

GITHUB_FIELDS = """pageInfo { hasNextPage endCursor }
nodes { databaseId createdAt environment originalEnvironment commitOid state
  creator { __typename login }
  latestStatus { state createdAt logUrl environmentUrl } }"""


def github_graphql_url(api_url: str, env: Mapping[str, str]) -> str:
    """The GraphQL endpoint: ``GITHUB_GRAPHQL_URL``, else derived from ``GITHUB_API_URL``
    (``https://api.github.com/graphql``; ``https://HOST/api/graphql`` for GitHub Enterprise
    Server). It must be on the API's origin (scheme, host, port): the token goes nowhere else."""
    api = urlsplit(api_url)
    graphql_url = (env.get("GITHUB_GRAPHQL_URL") or "").strip()
    if graphql_url:
        g = urlsplit(graphql_url)
        if (g.scheme, g.netloc.lower()) != (api.scheme, api.netloc.lower()):
            raise UsageError(f"GITHUB_GRAPHQL_URL {graphql_url!r} is not on the origin of GITHUB_API_URL "
                             f"({api.scheme}://{api.netloc}): the token is sent to the API's host only",
                             hint="unset GITHUB_GRAPHQL_URL, or give the GraphQL URL of the same host")
        return graphql_url
    path = api.path.rstrip("/")
    if path.endswith("/v3"):
        path = path[: -len("/v3")]
    return f"{api.scheme}://{api.netloc}{path}/graphql"


def github_session(env: Mapping[str, str], redactor: Redactor | None = None) -> tuple[HttpSession, str]:
    """The session and GraphQL URL for GitHub (``GITHUB_TOKEN``: ``deployments: read``, or a
    classic token's ``repo``/``read:org`` for private repositories)."""
    token = (env.get("GITHUB_TOKEN") or "").strip()
    if not token:
        raise UsageError("GITHUB_TOKEN is not set: the github source reads the environment's deployments",
                         hint="a token with `deployments: read` (and `metadata: read`) on the repositories")
    api_url = (env.get("GITHUB_API_URL") or "https://api.github.com").rstrip("/")
    graphql = github_graphql_url(api_url, env)
    session = HttpSession(api_url, token=TokenInfo("Authorization", f"Bearer {token}", "GITHUB_TOKEN"),
                          provider="github", settings=HttpSettings.from_env(env),
                          redactor=redactor or Redactor([token]),
                          permission_hint=lambda path: "`deployments: read`")
    return session, graphql


def _alias(i: int) -> str:
    return f"c{i}"


def github_deployments(session: HttpSession, graphql_url: str, chains: Iterable[tuple[str, str]], *,
                       since: str, env_map: Mapping[str, str], records: PlatformRecords) -> None:
    """Every deployment of each (repository, policy environment) chain created at or after
    ``since`` (and every one before it on the last page read: they show "before adoption"), newest
    first, 100 per chain per request, every chain in one request per page."""
    wanted: list[tuple[str, str, str]] = []  # (repository, policy env, platform env)
    for repo, env in sorted(set(chains)):
        if repo.count("/") != 1:
            raise UsageError(f"repository {repo!r} is not OWNER/NAME: the github source cannot read it")
        for name in platform_names(env_map, env):
            wanted.append((repo, env, name))
    cursors: dict[int, str | None] = {i: None for i in range(len(wanted))}
    newest_seen: dict[int, str] = {}  # the oldest time read so far per chain: the order must hold
    max_pages = session.settings.max_pages
    page = 0
    while cursors:
        page += 1
        if page > max_pages:
            raise SourceError(f"github: more than {max_pages} pages of 100 deployments per chain; refusing to judge "
                              "a partial list", hint="raise POLICYENGINE_HTTP_MAX_PAGES, or narrow --since")
        parts, var_defs, variables = [], [], {}
        for i, after in cursors.items():
            repo, _, name = wanted[i]
            owner, repo_name = repo.split("/")
            a = _alias(i)
            var_defs += [f"$o{i}: String!", f"$n{i}: String!", f"$e{i}: String!", f"$a{i}: String"]
            variables.update({f"o{i}": owner, f"n{i}": repo_name, f"e{i}": name, f"a{i}": after})
            parts.append(f"{a}: repository(owner: $o{i}, name: $n{i}) {{ deployments(environments: [$e{i}], "
                         f"first: 100, after: $a{i}, orderBy: {{field: CREATED_AT, direction: DESC}}) "
                         f"{{ {GITHUB_FIELDS} }} }}")
        query = f"query({', '.join(var_defs)}) {{ {' '.join(parts)} }}"
        data = session.post_graphql(graphql_url, query, variables, what="the environments' deployments")
        records.requests += 1
        nxt: dict[int, str | None] = {}
        for i in cursors:
            repo, env, name = wanted[i]
            where = f"github {repo} environment {name}"
            block = data.get(_alias(i))
            if block is None:
                raise SourceError(f"{where}: the repository is not visible to GITHUB_TOKEN (null)",
                                  hint="the token needs `deployments: read` on it")
            conn = block.get("deployments") if isinstance(block, dict) else None
            if not isinstance(conn, dict) or not isinstance(conn.get("nodes"), list) \
                    or not isinstance(conn.get("pageInfo"), dict):
                raise SourceError(f"{where}: the answer is not a deployments connection (nodes, pageInfo)")
            records.covered.add((repo, env))
            last_created: str | None = None
            for node in conn["nodes"]:
                when = _time(node.get("createdAt") if isinstance(node, dict) else None, where)
                # Paging stops at the period's start only because the list is newest first: an
                # answer out of that order could hide deployments, so it is refused (fail closed).
                previous = newest_seen.get(i)
                if previous is not None and when > previous:
                    raise SourceError(f"{where}: deployments are not newest first ({when} after {previous}); "
                                      "refusing to judge a list whose end cannot be trusted")
                newest_seen[i] = last_created = when
                d = _github_node(node, repo, env, name, session.base_url, where)
                if d is None:
                    records.skipped += 1
                    continue
                records.deployments.append(d)
            info = conn["pageInfo"]
            if info.get("hasNextPage") is True and (last_created is None or last_created >= since):
                cursor = info.get("endCursor")
                if not isinstance(cursor, str) or not cursor:
                    raise SourceError(f"{where}: hasNextPage without an endCursor")
                nxt[i] = cursor
        cursors = nxt
    records.sources.append("github (GraphQL deployments with latestStatus)")


def _github_node(node: Any, repo: str, env: str, name: str, api_url: str, where: str) -> PlatformDeployment | None:
    if not isinstance(node, dict):
        raise SourceError(f"{where}: a deployment is not an object")
    ident = node.get("databaseId")
    if type(ident) is not int:
        raise SourceError(f"{where}: a deployment has no databaseId")
    when = _time(node.get("createdAt"), f"{where} deployment {ident}")
    commit = node.get("commitOid")
    if not isinstance(commit, str) or not SHA1_RE.match(commit.lower()):
        raise SourceError(f"{where} deployment {ident}: commitOid {commit!r} is not a commit SHA")
    status = node.get("latestStatus")
    state = status.get("state") if isinstance(status, dict) else None
    state = state.upper() if isinstance(state, str) else None
    if state not in GITHUB_DEPLOYED:
        return None
    creator = node.get("creator") if isinstance(node.get("creator"), dict) else {}
    log_url = status.get("logUrl") if isinstance(status, dict) else None
    url = log_url if isinstance(log_url, str) and log_url else f"{api_url}/repos/{repo}/deployments/{ident}"
    return PlatformDeployment(source="github", id=str(ident), time=when, environment=env, repository=repo,
                              commit=commit.lower(), url=url,
                              creator=str(creator.get("login")) if creator.get("login") else None,
                              creator_type=str(creator.get("__typename")) if creator.get("__typename") else None,
                              state=state.lower())


# -- GitLab ------------------------------------------------------------------------------------


def gitlab_session(env: Mapping[str, str], redactor: Redactor | None = None) -> HttpSession:
    """The session for GitLab (``GITLAB_TOKEN``: ``read_api``, Reporter or above)."""
    token = (env.get("GITLAB_TOKEN") or "").strip()
    if not token:
        raise UsageError("GITLAB_TOKEN is not set: the gitlab source reads the environment's deployments",
                         hint="a token with the `read_api` scope (Reporter role or above)")
    api_url = (env.get("CI_API_V4_URL") or env.get("GITLAB_API_URL") or "https://gitlab.com/api/v4").rstrip("/")
    return HttpSession(api_url, token=TokenInfo("PRIVATE-TOKEN", token, "GITLAB_TOKEN"), provider="gitlab",
                       settings=HttpSettings.from_env(env), redactor=redactor or Redactor([token]),
                       permission_hint=lambda path: "the `read_api` scope (and at least the Reporter role)")


def gitlab_deployments(session: HttpSession, chains: Iterable[tuple[str, str]], *, since: str,
                       env_map: Mapping[str, str], records: PlatformRecords) -> None:
    """Every successful deployment of each chain's environment (paged, 100 a page)."""
    for repo, env in sorted(set(chains)):
        for name in platform_names(env_map, env):
            where = f"gitlab {repo} environment {name}"
            path = f"/projects/{quote(repo, safe='')}/deployments"
            pages = 0
            try:
                for page in session.iter_pages(path, {"environment": name, "status": "success",
                                                      "order_by": "created_at", "sort": "desc"}):
                    pages += 1
                    records.requests += 1
                    if not isinstance(page, list):
                        raise SourceError(f"{where}: the answer is not a list of deployments")
                    for item in page:
                        d = _gitlab_item(item, repo, env, name, where)
                        if d is None:
                            records.skipped += 1
                        else:
                            records.deployments.append(d)
            except ApiError as exc:
                raise SourceError(f"{where}: {exc.message}", hint=exc.hint) from None
            records.covered.add((repo, env))
    records.sources.append("gitlab (project deployments, status=success)")


def _gitlab_item(item: Any, repo: str, env: str, name: str, where: str) -> PlatformDeployment | None:
    if not isinstance(item, dict) or type(item.get("id")) is not int:
        raise SourceError(f"{where}: a deployment is not an object with an id")
    ident = item["id"]
    environment = item.get("environment")
    env_name = environment.get("name") if isinstance(environment, dict) else environment
    if env_name is not None and env_name != name:
        raise SourceError(f"{where} deployment {ident}: environment {env_name!r} was not asked for")
    # The deployment's own status decides (older GitLab answers have none: the filter chose them).
    status = item.get("status", "success")
    if status not in GITLAB_DEPLOYED:
        return None
    sha = item.get("sha")
    if not isinstance(sha, str) or not SHA1_RE.match(sha.lower()):
        raise SourceError(f"{where} deployment {ident}: sha {sha!r} is not a commit SHA")
    when = _time(item.get("created_at"), f"{where} deployment {ident}")
    user = item.get("user") if isinstance(item.get("user"), dict) else {}
    deployable = item.get("deployable") if isinstance(item.get("deployable"), dict) else {}
    pipeline = deployable.get("pipeline") if isinstance(deployable.get("pipeline"), dict) else {}
    url = deployable.get("web_url") or pipeline.get("web_url")
    return PlatformDeployment(source="gitlab", id=str(ident), time=when, environment=env, repository=repo,
                              commit=sha.lower(), url=str(url) if url else None,
                              creator=str(user.get("username")) if user.get("username") else None,
                              creator_type="User" if user else ("API" if item.get("deployable") is None else None),
                              state="success")


# -- Kubernetes --------------------------------------------------------------------------------


def read_pods(path: str, *, namespaces: Sequence[str] = (), include_kube: bool = False) -> tuple[
        list[RunningArtifact], int]:
    """The running artifacts of a ``kubectl get pods -A -o json`` file; and how many containers had
    no digest yet (``imageID`` empty: still pulling). A file that is not a pod listing is an error."""
    try:
        doc = json.loads(Path(path).read_bytes())
    except OSError as exc:
        raise SourceError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise SourceError(f"{path}: not JSON ({exc})",
                          hint="write it with `kubectl get pods -A -o json > FILE`") from None
    if isinstance(doc, dict) and doc.get("kind") in ("List", "PodList") and isinstance(doc.get("items"), list):
        pods = doc["items"]
    elif isinstance(doc, dict) and doc.get("kind") == "Pod":
        pods = [doc]
    else:
        raise SourceError(f"{path}: not a pod listing (kind List, PodList or Pod)",
                          hint="write it with `kubectl get pods -A -o json > FILE`")
    out: list[RunningArtifact] = []
    pending = 0
    wanted = set(namespaces)
    for n, pod in enumerate(pods):
        meta = pod.get("metadata") if isinstance(pod, dict) else None
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
            raise SourceError(f"{path}: item {n} is not a pod with metadata.name")
        ns = str(meta.get("namespace") or "default")
        if wanted and ns not in wanted:
            continue
        if not wanted and not include_kube and ns.startswith("kube-"):
            continue
        status = pod.get("status") if isinstance(pod.get("status"), dict) else {}
        for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
            for c in status.get(key) or []:
                if not isinstance(c, dict):
                    raise SourceError(f"{path}: pod {ns}/{meta['name']} has a malformed {key}")
                raw = c.get("imageID")
                digest = _digest(raw)
                if digest is None:
                    if raw:
                        raise SourceError(f"{path}: pod {ns}/{meta['name']} container {c.get('name')}: imageID "
                                          f"{raw!r} has no sha256 digest")
                    pending += 1
                    continue
                state = c.get("state") if isinstance(c.get("state"), dict) else {}
                if key == "initContainerStatuses" and "running" not in state:
                    continue  # an init container that finished runs nothing now (a sidecar keeps running)
                started = (state.get("running") or {}).get("startedAt") if isinstance(state.get("running"), dict) \
                    else None
                out.append(RunningArtifact(source="kubernetes", id=f"{ns}/{meta['name']}/{c.get('name')}",
                                           digest=digest, image=c.get("image") if isinstance(c.get("image"), str)
                                           else None, started_at=started if isinstance(started, str) else None,
                                           namespace=ns))
    return out, pending


# -- a deploy log ------------------------------------------------------------------------------


def read_deploy_log(path: str, *, env_map: Mapping[str, str], records: PlatformRecords) -> None:
    """Each line of a JSON Lines deploy log as a platform deployment; a bad line is an error
    naming the file and the line (a log read in part is no log)."""
    try:
        lines = Path(path).read_bytes().splitlines()
    except OSError as exc:
        raise SourceError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    for n, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        where = f"{path}:{n}"
        try:
            item = json.loads(raw)
        except ValueError as exc:
            raise SourceError(f"{where}: not JSON ({exc})") from None
        if not isinstance(item, dict):
            raise SourceError(f"{where}: not an object")
        env = item.get("environment")
        if not isinstance(env, str) or not env:
            raise SourceError(f"{where}: no environment")
        commit, subject = item.get("commit"), item.get("subject")
        if commit is not None and (not isinstance(commit, str) or not SHA1_RE.match(commit.lower())):
            raise SourceError(f"{where}: commit {commit!r} is not a 40-hex commit SHA")
        if subject is not None and _digest(subject) is None:
            raise SourceError(f"{where}: subject {subject!r} is not sha256:HEX")
        if commit is None and subject is None:
            raise SourceError(f"{where}: neither commit nor subject")
        ident = item.get("id")
        if not isinstance(ident, (str, int)) or isinstance(ident, bool) or str(ident) == "":
            raise SourceError(f"{where}: no id")
        repo = item.get("repository")
        if repo is not None and not isinstance(repo, str):
            raise SourceError(f"{where}: repository is not a string")
        url, creator = item.get("url"), item.get("creator")
        records.deployments.append(PlatformDeployment(
            source="log", id=str(ident), time=_time(item.get("time"), where), environment=env_map.get(env, env),
            repository=repo, commit=commit.lower() if isinstance(commit, str) else None, subject=_digest(subject),
            url=url if isinstance(url, str) else None, creator=creator if isinstance(creator, str) else None,
            state="success"))
    records.sources.append(f"deploy log {path}")


# -- the organisation's repositories that have the environment (``--org``) ---------------------

GITHUB_ORG_QUERY = """query($org: String!, $after: String) { organization(login: $org) {
  repositories(first: 100, after: $after) { pageInfo { hasNextPage endCursor }
    nodes { nameWithOwner isArchived environments(first: 100) { totalCount nodes { name } } } } } }"""


def github_org_repositories(session: HttpSession, graphql_url: str, org: str, names: Sequence[str],
                            records: PlatformRecords) -> list[str]:
    """Every repository of the organisation ``org`` that has one of the environments ``names``."""
    found: list[str] = []
    after: str | None = None
    for _page in range(session.settings.max_pages):
        data = session.post_graphql(graphql_url, GITHUB_ORG_QUERY, {"org": org, "after": after},
                                    what=f"the repositories of {org}")
        records.requests += 1
        organisation = data.get("organization")
        conn = organisation.get("repositories") if isinstance(organisation, dict) else None
        if not isinstance(conn, dict) or not isinstance(conn.get("nodes"), list) \
                or not isinstance(conn.get("pageInfo"), dict):
            raise SourceError(f"github organisation {org}: not visible to GITHUB_TOKEN, or not a repositories "
                              "connection", hint="the token needs `metadata: read` on the organisation's repositories")
        for node in conn["nodes"]:
            if not isinstance(node, dict) or not isinstance(node.get("nameWithOwner"), str):
                raise SourceError(f"github organisation {org}: a repository without nameWithOwner")
            envs = node.get("environments")
            if not isinstance(envs, dict) or not isinstance(envs.get("nodes"), list):
                raise SourceError(f"github {node['nameWithOwner']}: its environments cannot be read")
            if type(envs.get("totalCount")) is int and envs["totalCount"] > len(envs["nodes"]):
                raise SourceError(f"github {node['nameWithOwner']}: more than {len(envs['nodes'])} environments; "
                                  "refusing to judge a partial list")
            if any(isinstance(e, dict) and e.get("name") in names for e in envs["nodes"]):
                found.append(node["nameWithOwner"])
        info = conn["pageInfo"]
        if info.get("hasNextPage") is not True:
            return found
        after = info.get("endCursor")
        if not isinstance(after, str) or not after:
            raise SourceError(f"github organisation {org}: hasNextPage without an endCursor")
    raise SourceError(f"github organisation {org}: more than {session.settings.max_pages} pages of repositories; "
                      "refusing to judge a partial list", hint="raise POLICYENGINE_HTTP_MAX_PAGES")


def gitlab_group_repositories(session: HttpSession, group: str, names: Sequence[str],
                              records: PlatformRecords) -> list[str]:
    """Every project of the group (subgroups included) that has one of the environments ``names``."""
    found: list[str] = []
    try:
        projects = session.get_pages(f"/groups/{quote(group, safe='')}/projects",
                                     {"include_subgroups": "true", "archived": "false"})
        records.requests += max(1, -(-len(projects) // 100))
        for p in projects:
            if not isinstance(p, dict) or type(p.get("id")) is not int or not isinstance(
                    p.get("path_with_namespace"), str):
                raise SourceError(f"gitlab group {group}: a project without id and path_with_namespace")
            for name in names:
                envs = session.get_json(f"/projects/{p['id']}/environments", {"name": name})
                records.requests += 1
                if not isinstance(envs, list):
                    raise SourceError(f"gitlab {p['path_with_namespace']}: the environments answer is not a list")
                if any(isinstance(e, dict) and e.get("name") == name for e in envs):
                    found.append(p["path_with_namespace"])
                    break
    except ApiError as exc:
        raise SourceError(f"gitlab group {group}: {exc.message}", hint=exc.hint) from None
    return found


# -- witness statuses (``audit reconcile --witness``) ------------------------------------------

GITHUB_STATUS_FIELDS = "oid status { contexts { context description state createdAt targetUrl creator { login } } }"
WITNESS_BATCH = 100
"""Commits asked for in one GraphQL request (aliases)."""


def github_witnesses(session: HttpSession, graphql_url: str, commits: Mapping[tuple[str, str], Iterable[str]], *,
                     records: PlatformRecords) -> list[WitnessStatus]:
    """The witness statuses (context ``policyengine/<environment>``) of each chain's commits:
    the latest status of each context of each commit, ``WITNESS_BATCH`` commits a request."""
    wanted: list[tuple[str, str]] = []  # (repository, commit)
    envs: dict[tuple[str, str], set[str]] = {}
    for (repo, env), shas in sorted(commits.items()):
        if repo.count("/") != 1:
            raise UsageError(f"repository {repo!r} is not OWNER/NAME: the github source cannot read it")
        for sha in sorted({s.lower() for s in shas if isinstance(s, str) and SHA1_RE.match(s.lower())}):
            if (repo, sha) not in envs:
                wanted.append((repo, sha))
            envs.setdefault((repo, sha), set()).add(env)
    out: list[WitnessStatus] = []
    for start in range(0, len(wanted), WITNESS_BATCH):
        batch = wanted[start:start + WITNESS_BATCH]
        repos = sorted({r for r, _ in batch})
        var_defs: list[str] = []
        variables: dict[str, Any] = {}
        parts: list[str] = []
        for ri, repo in enumerate(repos):
            owner, name = repo.split("/")
            var_defs += [f"$o{ri}: String!", f"$n{ri}: String!"]
            variables.update({f"o{ri}": owner, f"n{ri}": name})
            inner = []
            for ci, (r, sha) in enumerate(batch):
                if r == repo:
                    var_defs.append(f"$s{ci}: GitObjectID!")
                    variables[f"s{ci}"] = sha
                    inner.append(f"k{ci}: object(oid: $s{ci}) {{ ... on Commit {{ {GITHUB_STATUS_FIELDS} }} }}")
            parts.append(f"r{ri}: repository(owner: $o{ri}, name: $n{ri}) {{ {' '.join(inner)} }}")
        query = f"query({', '.join(var_defs)}) {{ {' '.join(parts)} }}"
        data = session.post_graphql(graphql_url, query, variables, what="the commits' witness statuses")
        records.requests += 1
        for ri, repo in enumerate(repos):
            block = data.get(f"r{ri}")
            if not isinstance(block, dict):
                raise SourceError(f"github {repo}: the repository is not visible to GITHUB_TOKEN (null)",
                                  hint="the token needs `statuses: read` on it")
            for ci, (r, sha) in enumerate(batch):
                if r != repo:
                    continue
                where = f"github {repo} commit {sha[:12]}"
                node = block.get(f"k{ci}")
                if node is None:
                    continue  # a commit the repository no longer has: nothing witnessed there
                if not isinstance(node, dict) or "status" not in node:
                    raise SourceError(f"{where}: the answer is not a commit with a status")
                status = node["status"]
                if status is None:
                    continue
                contexts = status.get("contexts") if isinstance(status, dict) else None
                if not isinstance(contexts, list):
                    raise SourceError(f"{where}: the status has no list of contexts")
                for c in contexts:
                    if not isinstance(c, dict) or not isinstance(c.get("context"), str):
                        raise SourceError(f"{where}: a status context is not an object with a context")
                    env = c["context"][len(CONTEXT_PREFIX):] if is_witness_context(c["context"]) else None
                    if env is None or env not in envs[(repo, sha)]:
                        continue
                    creator = c.get("creator") if isinstance(c.get("creator"), dict) else {}
                    out.append(WitnessStatus(
                        source="github", repository=repo, environment=env, commit=sha,
                        description=c.get("description") if isinstance(c.get("description"), str) else None,
                        time=_time(c.get("createdAt"), f"{where} status {c['context']}"),
                        creator=str(creator["login"]) if creator.get("login") else None,
                        state=str(c.get("state")).lower() if c.get("state") else None,
                        url=c.get("targetUrl") if isinstance(c.get("targetUrl"), str) else None))
    return out


def gitlab_witnesses(session: HttpSession, commits: Mapping[tuple[str, str], Iterable[str]], *,
                     records: PlatformRecords) -> list[WitnessStatus]:
    """The witness statuses of each chain's commits: ``GET /projects/:id/repository/commits/:sha/
    statuses?name=policyengine/<environment>&all=true``, paged (every status, not only the latest)."""
    out: list[WitnessStatus] = []
    for (repo, env), shas in sorted(commits.items()):
        context = context_for(env)
        for sha in sorted({s.lower() for s in shas if isinstance(s, str) and SHA1_RE.match(s.lower())}):
            where = f"gitlab {repo} commit {sha[:12]}"
            path = f"/projects/{quote(repo, safe='')}/repository/commits/{sha}/statuses"
            try:
                for page in session.iter_pages(path, {"name": context, "all": "true"}):
                    records.requests += 1
                    if not isinstance(page, list):
                        raise SourceError(f"{where}: the answer is not a list of statuses")
                    for item in page:
                        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                            raise SourceError(f"{where}: a status is not an object with a name")
                        if item["name"] != context:
                            continue
                        author = item.get("author") if isinstance(item.get("author"), dict) else {}
                        out.append(WitnessStatus(
                            source="gitlab", repository=repo, environment=env, commit=sha,
                            description=item.get("description") if isinstance(item.get("description"), str)
                            else None,
                            time=_time(item.get("created_at"), f"{where} status {context}"),
                            creator=str(author["username"]) if author.get("username") else None,
                            state=str(item.get("status")) if item.get("status") else None,
                            url=item.get("target_url") if isinstance(item.get("target_url"), str) else None))
            except ApiError as exc:
                raise SourceError(f"{where}: {exc.message}", hint=exc.hint) from None
    return out
