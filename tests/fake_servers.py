"""Local HTTP servers that answer like the GitHub and GitLab REST APIs, for provider tests.

``FakeAPI`` listens on 127.0.0.1 (a free port), records every request, paginates lists with
``Link`` headers exactly as the real APIs do (``page``/``per_page``), and can be told to
misbehave: a queue of replies per path (500s, 429 with ``Retry-After``, an exhausted rate
limit, a slow answer, a truncated body) is served before the normal answer.

``GitHubWorld`` and ``GitLabWorld`` fill a ``FakeAPI`` with a repository's state (pull or
merge requests, reviews, commits, checks, deployments, teams) built from the response shapes
in ``tests/fixtures/github`` and ``tests/fixtures/gitlab`` (trimmed from the APIs'
documentation and the shared corpus).
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def template(provider: str, name: str) -> Any:
    """A fresh copy of a response shape from ``tests/fixtures/<provider>/<name>.json``."""
    return copy.deepcopy(json.loads((FIXTURES / provider / f"{name}.json").read_text(encoding="utf-8")))


@dataclass
class Reply:
    """One answer. ``body`` is JSON-encoded unless it is bytes."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    truncate: bool = False  # announce a longer Content-Length than sent, then close


@dataclass
class Request:
    """A request the server received."""

    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    method: str = "GET"
    body: bytes = b""

    def json(self) -> Any:
        """The request body as JSON (a POST's document)."""
        return json.loads(self.body.decode("utf-8"))


Handler = Callable[[Request, "FakeAPI"], Reply]


class FakeAPI:
    """A local API server: ``with FakeAPI("/api/v3") as api: api.json("/x", {...})``."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix.rstrip("/")
        self.routes: dict[str, Handler] = {}
        self.faults: dict[str, list[Reply]] = {}
        self.requests: list[Request] = []
        self.latency = 0.0  # added to every answer (to see requests overlap)
        self.always: Reply | None = None  # when set, the answer to every request (e.g. a 401)
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests served at once
        self._lock = threading.Lock()
        api = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                api._serve(self)

            def do_POST(self) -> None:  # noqa: N802 - http.server's name (GraphQL, statuses)
                api._serve(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)

    @property
    def origin(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def url(self) -> str:
        """The API base URL (what GITHUB_API_URL / CI_API_V4_URL is set to)."""
        return self.origin + self.prefix

    def __enter__(self) -> FakeAPI:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- configuring -----------------------------------------------------------------------

    def json(self, path: str, body: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        """Answer GET ``path`` (any query) with ``body``."""
        self.routes[path] = lambda req, api: Reply(status, body, dict(headers or {}))

    def handler(self, path: str, fn: Handler) -> None:
        """Answer GET ``path`` with whatever ``fn(request, api)`` returns."""
        self.routes[path] = fn

    def pages(self, path: str, items: list[Any], *, key: str | None = None, wrap: dict[str, Any] | None = None,
              default_per_page: int = 30) -> None:
        """Answer a list, paginated with ``page``/``per_page`` and ``Link`` headers (``key``: inside an object)."""

        def serve(req: Request, api: FakeAPI) -> Reply:
            page = int((req.query.get("page") or ["1"])[0])
            per_page = min(100, int((req.query.get("per_page") or [str(default_per_page)])[0]))
            chunk = items[(page - 1) * per_page: page * per_page]
            last = max(1, -(-len(items) // per_page))
            links = []
            for rel, num in (("next", page + 1), ("last", last), ("first", 1), ("prev", page - 1)):
                if (rel == "next" and page >= last) or (rel == "prev" and page <= 1):
                    continue
                q = {k: v[0] for k, v in req.query.items()}
                q["page"] = str(num)
                links.append(f'<{api.origin}{req.path}?{urlencode(q)}>; rel="{rel}"')
            body: Any = chunk if key is None else {**(wrap or {}), key: chunk}
            return Reply(200, body, {"Link": ", ".join(links)} if links else {})

        self.routes[path] = serve

    def fail(self, path: str, *replies: Reply) -> None:
        """Serve ``replies`` (in order) to the next requests of ``path``, before its normal answer."""
        self.faults.setdefault(path, []).extend(replies)

    # -- inspecting ------------------------------------------------------------------------

    def count(self, path: str | None = None) -> int:
        """Requests received (for ``path`` only, when given)."""
        with self._lock:
            return sum(1 for r in self.requests if path is None or r.path == self.prefix + path
                       or (r.path == path and not path.startswith(self.prefix)))

    def paths(self) -> list[str]:
        with self._lock:
            return [r.path[len(self.prefix):] if r.path.startswith(self.prefix) else r.path for r in self.requests]

    # -- serving ---------------------------------------------------------------------------

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self._answer(h)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _answer(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        req = Request(parts.path, parse_qs(parts.query), {k: v for k, v in h.headers.items()}, h.command,
                      h.rfile.read(length) if length else b"")
        with self._lock:
            self.requests.append(req)
            # A path outside the prefix (GitHub Enterprise's /api/graphql beside /api/v3) is routed whole.
            rel = parts.path[len(self.prefix):] if parts.path.startswith(self.prefix) else parts.path
            queued = self.faults.get(rel or "")
            reply = queued.pop(0) if queued else self.always
        if reply is None:
            route = self.routes.get(rel or "")
            reply = route(req, self) if route else Reply(404, {"message": "Not Found"})
        if reply.delay or self.latency:
            time.sleep(reply.delay + self.latency)
        body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        try:
            h.send_response(reply.status)
            h.send_header("Content-Type", "application/json; charset=utf-8")
            for k, v in reply.headers.items():
                h.send_header(k, v)
            if reply.truncate:
                h.send_header("Content-Length", str(len(body) + 500))
                h.send_header("Connection", "close")
                h.end_headers()
                h.wfile.write(body)
                h.wfile.flush()
                h.close_connection = True
                return
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
            h.close_connection = True


# -- GitHub ------------------------------------------------------------------------------------


def sha_of(label: str) -> str:
    """A deterministic 40-hex commit SHA for a readable label."""
    import hashlib

    return hashlib.sha1(label.encode()).hexdigest()  # noqa: S324 - a name, not security


def gh_user(login: str) -> dict[str, Any]:
    user = template("github", "user")
    user.update({"login": login, "url": f"https://api.github.com/users/{login}",
                 "html_url": f"https://github.com/{login}"})
    if login.endswith("[bot]"):
        user["type"] = "Bot"
    return user


class GitHubWorld:
    """A repository on a fake GitHub: add pull requests, checks, deployments and teams."""

    def __init__(self, api: FakeAPI, repository: str = "acme/payments") -> None:
        self.api = api
        self.repository = repository
        self.base = f"/repos/{repository}"
        self.commit_pulls: dict[str, list[dict[str, Any]]] = {}
        self.pulls: dict[int, dict[str, Any]] = {}
        self.graphql = GitHubGraphQL(self)

    def commit(self, sha: str, author: str | None, committer: str | None = "web-flow", message: str = "change",
               email: str | None = None) -> dict[str, Any]:
        c = template("github", "commit")
        c["sha"] = sha
        c["commit"]["message"] = message
        c["commit"]["author"]["email"] = email or (f"{author}@example.com" if author else "someone@example.com")
        c["commit"]["author"]["name"] = author or "Someone"
        c["author"] = gh_user(author) if author else None
        c["committer"] = gh_user(committer) if committer else None
        c["url"] = f"https://api.github.com{self.base}/commits/{sha}"
        return c

    def review(self, user: str | None, state: str, commit: str, at: str = "2026-11-23T15:00:00Z",
               review_id: int = 1, association: str = "MEMBER") -> dict[str, Any]:
        """A review; its author gets write access (unless ``permission`` said otherwise). ``user`` None: deleted."""
        r = template("github", "review")
        r.update({"id": review_id, "user": gh_user(user) if user else None, "state": state, "commit_id": commit,
                  "submitted_at": at, "author_association": association})
        path = f"{self.base}/collaborators/{user}/permission"
        if user and path not in self.api.routes:
            self.permission(user, "write")
        return r

    def permission(self, login: str, role: str, *, status: int = 200) -> None:
        """Answer the collaborator permission lookup of ``login`` (``role``: admin, maintain, write, triage, read,
        none, or a custom role name on write); ``status`` other than 200: that error."""
        legacy = {"maintain": "write", "triage": "read"}.get(role, role)
        if legacy not in ("admin", "write", "read", "none"):
            legacy = "write"
        body: Any = {"permission": legacy, "role_name": role, "user": {**gh_user(login), "role_name": role}}
        if status != 200:
            body = {"message": "Not Found" if status == 404 else "Resource not accessible by integration"}
        self.api.json(f"{self.base}/collaborators/{login}/permission", body, status=status)

    def pull(self, number: int, *, author: str, head: str, merge_commit: str | None, merged_by: str | None = None,
             commits: list[dict[str, Any]] = (), reviews: list[dict[str, Any]] = (),  # type: ignore[assignment]
             files: Iterable[str] = ("src/app.py",), labels: Iterable[str] = (), title: str | None = None,
             register_commit_pulls: bool = True) -> dict[str, Any]:
        """Add a pull request with its reviews, commits and files; merged when ``merge_commit`` is set."""
        pr = template("github", "pull")
        merged = merge_commit is not None
        files = list(files)
        pr.update({
            "number": number, "title": title or f"PR {number}", "user": gh_user(author),
            "state": "closed" if merged else "open", "merged": merged,
            "merged_at": "2026-11-23T17:00:00Z" if merged else None,
            "merge_commit_sha": merge_commit, "merged_by": gh_user(merged_by) if merged_by else None,
            "commits": len(commits), "changed_files": len(files),
            "labels": [{"id": i, "name": n, "color": "ededed"} for i, n in enumerate(labels)],
            "html_url": f"https://github.com/{self.repository}/pull/{number}",
            "url": f"https://api.github.com{self.base}/pulls/{number}",
        })
        pr["head"]["sha"] = head
        self.pulls[number] = pr
        self.api.json(f"{self.base}/pulls/{number}", pr)
        self.api.pages(f"{self.base}/pulls/{number}/reviews", list(reviews))
        self.api.pages(f"{self.base}/pulls/{number}/commits", list(commits))
        file_objs = []
        for name in files:
            f = template("github", "file")
            f["filename"] = name
            file_objs.append(f)
        self.api.pages(f"{self.base}/pulls/{number}/files", file_objs)
        if register_commit_pulls:
            simple = {k: v for k, v in pr.items() if k not in ("merged", "merged_by", "commits", "changed_files")}
            for sha in {head, *(c["sha"] for c in commits), *([merge_commit] if merge_commit else [])}:
                self.commit_pulls.setdefault(sha, []).append(simple)
                self.api.pages(f"{self.base}/commits/{sha}/pulls", self.commit_pulls[sha])
        return pr

    def no_pulls(self, sha: str) -> None:
        self.api.pages(f"{self.base}/commits/{sha}/pulls", [])

    def single_commit(self, sha: str, author: str, files: Iterable[str] = ("src/app.py",),
                      committer: str | None = None) -> None:
        c = self.commit(sha, author, committer or author)
        c["files"] = [{**template("github", "file"), "filename": f} for f in files]
        self.api.json(f"{self.base}/commits/{sha}", c)

    def checks(self, sha: str, runs: Iterable[tuple[str, str | None] | tuple[str, str | None, str | None]] = (
                   ("build", "success"), ("lint", "success")),
               statuses: Iterable[tuple[str, str] | tuple[str, str, str | None]] = ()) -> None:
        """Check runs ``(name, conclusion[, app slug])`` (app ``github-actions`` unless given) and commit
        statuses ``(context, state[, creator login])``, oldest first (creator ``ci-bot`` unless given),
        served as GitHub does: ``/check-runs`` and ``/statuses`` (newest first, every status kept)."""
        objs = []
        for i, (name, conclusion, *app) in enumerate(runs):
            r = template("github", "check_run")
            r.update({"id": 1000 + i, "name": name, "head_sha": sha,
                      "status": "completed" if conclusion else "in_progress", "conclusion": conclusion,
                      "completed_at": "2026-11-23T16:00:00Z" if conclusion else None})
            if app:
                r["app"] = {**r["app"], "slug": app[0]} if app[0] else None
            objs.append(r)
        self.api.pages(f"{self.base}/commits/{sha}/check-runs", objs, key="check_runs", wrap={"total_count": len(objs)})
        sts = []
        for i, (context, state, *creator) in enumerate(statuses):
            st = template("github", "status")
            at = f"2026-11-23T16:{10 + i:02d}:00Z"
            st.update({"id": 2000 + i, "context": context, "state": state, "created_at": at, "updated_at": at})
            if creator:
                st["creator"] = gh_user(creator[0]) if creator[0] else None
            sts.append(st)
        self.api.pages(f"{self.base}/commits/{sha}/statuses", sts[::-1])

    def deployments(self, environment: str, deps: Iterable[tuple[int, str, list[str]]]) -> None:
        """``deps``: (id, sha, states newest first), newest deployment first."""
        objs = []
        for dep_id, sha, states in deps:
            d = template("github", "deployment")
            d.update({"id": dep_id, "sha": sha, "environment": environment,
                      "url": f"https://api.github.com{self.base}/deployments/{dep_id}"})
            objs.append(d)
            sts = []
            for j, state in enumerate(states):
                st = template("github", "deployment_status")
                st.update({"id": dep_id * 10 + j, "state": state, "environment": environment})
                sts.append(st)
            self.api.json(f"{self.base}/deployments/{dep_id}/statuses", sts)
        self.api.json(f"{self.base}/deployments", objs)

    def compare(self, base: str, head: str, commits: list[dict[str, Any]], status: str = "ahead",
                files: Iterable[str] = ()) -> None:
        """The compare answer; ``files``: the paths the whole range changes (every page repeats them)."""
        body = template("github", "compare")
        body.update({"status": status, "ahead_by": len(commits), "behind_by": 0, "total_commits": len(commits),
                     "files": [{**template("github", "file"), "filename": f} for f in files]})
        self.api.pages(f"{self.base}/compare/{base}...{head}", commits, key="commits", wrap=body, default_per_page=250)

    def team(self, org: str, slug: str, members: Iterable[str]) -> None:
        self.api.pages(f"/orgs/{org}/teams/{slug}/members", [gh_user(m) for m in members])

    def pull_250_250(self, approvers: int, *, head: str, merge: str, prev: str) -> None:
        """The 250/250 pull request of docs/performance.md: 250 commits, 250 approving reviews by
        ``approvers`` people, merged as MERGE; a previous deploy ``prev`` and a range of 251 commits
        (the request's and its merge commit)."""
        commits = [self.commit(sha_of(f"c{i}"), "alice") for i in range(249)] + [self.commit(head, "alice")]
        reviews = [self.review(f"reviewer{i % approvers}", "APPROVED", head, review_id=i) for i in range(250)]
        pr = self.pull(42, author="alice", head=head, merge_commit=merge, merged_by="dana", commits=commits,
                       reviews=reviews, register_commit_pulls=False)
        self.api.pages(f"{self.base}/commits/{merge}/pulls", [pr])
        self.checks(merge)
        self.deployments("production", [(9, merge, ["in_progress"]), (8, prev, ["success"])])
        self.compare(prev, merge, [*commits, self.commit(merge, "alice", "web-flow")])


def graphql_path(prefix: str) -> str:
    """Where GitHub's GraphQL endpoint is beside a REST prefix (``/api/v3`` -> ``/api/graphql``)."""
    return (prefix[: -len("/v3")] if prefix.endswith("/v3") else prefix) + "/graphql"


class GraphQLFailed(Exception):
    """A REST route of the world answered an error: the GraphQL answer is an ``errors`` entry."""


class GitHubGraphQL:
    """The GraphQL queries of ``policyengine.providers.github_graphql``, answered from the world's REST routes.

    Each answer is built by calling the REST routes the world (or a test) registered, so a test
    that changes a REST answer changes the GraphQL one too; a REST error becomes a GraphQL
    ``errors`` entry with ``data: null``. Cursors are item positions. ``queries``: what was asked.
    """

    def __init__(self, world: GitHubWorld) -> None:
        self.world = world
        self.api = world.api
        self.queries: list[dict[str, Any]] = []
        self._headers: dict[str, str] = {}
        self.api.handler(graphql_path(self.api.prefix), self.serve)

    def _rest(self, path: str) -> Any:
        route = self.api.routes.get(path)
        if route is None:
            raise GraphQLFailed(f"Could not resolve {path}")
        items: list[Any] = []
        page = 1
        while True:
            reply = route(Request(self.api.prefix + path, {"page": [str(page)], "per_page": ["100"]}, self._headers),
                          self.api)
            if reply.status != 200:
                body = reply.body if isinstance(reply.body, dict) else {}
                raise GraphQLFailed(str(body.get("message") or f"HTTP {reply.status}"))
            if not isinstance(reply.body, list):  # an object (a pull request)
                return reply.body
            items += reply.body
            if 'rel="next"' not in reply.headers.get("Link", ""):
                return items
            page += 1

    @staticmethod
    def _actor(user: Any) -> Any:
        if not isinstance(user, dict):
            return None
        return {"__typename": "Bot" if user.get("type") == "Bot" else "User", "login": user.get("login")}

    @staticmethod
    def _conn(items: list[Any], *, first: int | None = None, last: int | None = None,
              after: str | None = None) -> dict[str, Any]:
        start = int(after) + 1 if after is not None else 0
        if last is not None:
            start = max(0, len(items) - last)
            chunk, more = items[start:], False
        else:
            chunk, more = items[start:start + (first or 0)], start + (first or 0) < len(items)
        return {"totalCount": len(items), "nodes": chunk,
                "pageInfo": {"hasNextPage": more, "endCursor": str(start + len(chunk) - 1) if chunk else None}}

    def _reviews(self, number: int) -> list[dict[str, Any]]:
        out = []
        for i, r in enumerate(self._rest(f"{self.world.base}/pulls/{number}/reviews")):
            out.append({"id": f"R{number}_{i}", "state": r.get("state"), "submittedAt": r.get("submitted_at"),
                        "authorAssociation": r.get("author_association") or "NONE",
                        "author": self._actor(r.get("user")),
                        "commit": {"oid": r["commit_id"]} if r.get("commit_id") else None})
        return out

    def _commits(self, number: int) -> list[dict[str, Any]]:
        out = []
        for i, c in enumerate(self._rest(f"{self.world.base}/pulls/{number}/commits")):
            inner = c.get("commit") or {}

            def person(kind: str, c: dict[str, Any] = c, inner: dict[str, Any] = inner) -> Any:
                p = inner.get(kind)
                if p is None:
                    return None
                user = c.get(kind)
                return {"name": p.get("name"), "email": p.get("email"), "date": p.get("date"),
                        "user": {"login": user["login"]} if isinstance(user, dict) else None}

            out.append({"id": f"C{number}_{i}", "commit": {"oid": c.get("sha"), "message": inner.get("message"),
                                                           "author": person("author"),
                                                           "committer": person("committer")}})
        return out

    def _pull(self, number: int) -> dict[str, Any]:
        pr = self._rest(f"{self.world.base}/pulls/{number}")
        files = self._rest(f"{self.world.base}/pulls/{number}/files")
        reviews, commits = self._reviews(number), self._commits(number)
        merged = bool(pr.get("merged_at")) or pr.get("merged") is True
        labels = [{"name": lbl.get("name")} for lbl in pr.get("labels") or []]
        return {
            "number": pr.get("number"), "title": pr.get("title"), "body": pr.get("body"), "url": pr.get("html_url"),
            "state": "MERGED" if merged else str(pr.get("state") or "open").upper(), "merged": merged,
            "mergedAt": pr.get("merged_at"), "headRefOid": (pr.get("head") or {}).get("sha"),
            "headRefName": (pr.get("head") or {}).get("ref"), "baseRefName": (pr.get("base") or {}).get("ref"),
            "changedFiles": pr.get("changed_files", len(files)), "author": self._actor(pr.get("user")),
            "mergedBy": self._actor(pr.get("merged_by")),
            "mergeCommit": {"oid": pr["merge_commit_sha"]} if merged and pr.get("merge_commit_sha") else None,
            "labels": {"totalCount": len(labels), "nodes": labels},
            "reviewsFirst": self._conn(reviews, first=100), "reviewsLast": self._conn(reviews, last=100),
            "commitsFirst": self._conn(commits, first=100), "commitsLast": self._conn(commits, last=100),
            "files": self._conn([{"path": f.get("filename"),
                                  "changeType": "RENAMED" if f.get("previous_filename") else "MODIFIED"}
                                 for f in files], first=100),
        }

    def _deployments(self) -> dict[str, Any]:
        body = self._rest(f"{self.world.base}/deployments")
        nodes = []
        try:
            for d in body[:10]:
                if not isinstance(d["id"], int) or isinstance(d["id"], bool):
                    raise TypeError(d["id"])
                statuses = self._rest(f"{self.world.base}/deployments/{d['id']}/statuses")
                nodes.append({"databaseId": d["id"], "commitOid": d["sha"], "createdAt": d.get("created_at"),
                              "statuses": {"nodes": [{"state": str(st["state"]).upper()} for st in statuses]}})
        except (KeyError, TypeError, AttributeError):
            return {"nodes": body}  # a REST answer of a wrong shape: the GraphQL one is wrong too
        return {"nodes": nodes}

    def serve(self, req: Request, api: FakeAPI) -> Reply:
        if req.method != "POST":
            return Reply(404, {"message": "Not Found"})
        doc = req.json()
        self.queries.append(doc)
        self._headers = req.headers  # the REST routes see what the GraphQL request carried (the token)
        query, v = doc["query"], doc["variables"]
        try:
            if "query PolicyenginePullPages" in query:
                n = v["number"]
                pr: dict[str, Any] = {}
                if v["withReviews"]:
                    pr["reviews"] = self._conn(self._reviews(n), first=100, after=v["reviews"])
                if v["withCommits"]:
                    pr["commits"] = self._conn(self._commits(n), first=100, after=v["commits"])
                return Reply(200, {"data": {"repository": {"pullRequest": pr}}})
            repo: dict[str, Any] = {}
            if "query PolicyenginePullOfCommit" in query:
                cands = self._rest(f"{self.world.base}/commits/{v['oid']}/pulls")
                nodes = [self._pull(int(c["number"])) for c in cands]
                repo["object"] = {"__typename": "Commit",
                                  "associatedPullRequests": {"totalCount": len(nodes), "nodes": nodes[:10]}}
            else:
                repo["pullRequest"] = self._pull(v["number"])
            try:
                repo["deployments"] = self._deployments()
            except GraphQLFailed as exc:
                return Reply(200, {"data": {"repository": {**repo, "deployments": None}},
                                   "errors": [{"message": str(exc), "path": ["repository", "deployments"]}]})
            return Reply(200, {"data": {"repository": repo}})
        except GraphQLFailed as exc:
            return Reply(200, {"data": None, "errors": [{"message": str(exc), "type": "FORBIDDEN"}]})


def github_env(api: FakeAPI, sha: str, token: str = "ghs_" + "T" * 36, **extra: str) -> dict[str, str]:
    """The variables of a GitHub Actions run against ``api``.

    Without ``GITHUB_ACTIONS=true`` (pass ``GITHUB_ACTIONS="true"`` to add it): these runs
    evaluate at a fixed time (``--now``), which the gate refuses under CI unless simulated
    (tests/test_gate_inputs.py); the callers name the provider explicitly.
    """
    env = {
        "GITHUB_REPOSITORY": "acme/payments",
        "GITHUB_SHA": sha,
        "GITHUB_REF": "refs/heads/main",
        "GITHUB_EVENT_NAME": "push",
        "GITHUB_ACTOR": "dana",
        "GITHUB_TRIGGERING_ACTOR": "dana",
        "GITHUB_RUN_ID": "1658821493",
        "GITHUB_RUN_ATTEMPT": "1",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_API_URL": api.url,
        "GITHUB_TOKEN": token,
        "POLICYENGINE_ENVIRONMENT": "production",
    }
    env.update(extra)
    return env


# -- GitLab ------------------------------------------------------------------------------------


def gl_user_id(username: str) -> int:
    """A stable user id for a username (the same person has the same id in every answer)."""
    import zlib

    return 1000 + zlib.crc32(username.encode()) % 1_000_000


def gl_user(username: str, user_id: int = 1) -> dict[str, Any]:
    return {"id": user_id, "name": username.title(), "username": username, "state": "active",
            "avatar_url": None, "web_url": f"https://gitlab.example.com/{username}"}


class GitLabWorld:
    """A project on a fake GitLab (API v4)."""

    def __init__(self, api: FakeAPI, project_id: int = 278964, path: str = "acme/payments") -> None:
        self.api = api
        self.path = path
        self.base = f"/projects/{project_id}"
        self.commit_mrs: dict[str, list[dict[str, Any]]] = {}

    def commit(self, sha: str, author: str, message: str = "change", committer: str | None = None) -> dict[str, Any]:
        c = template("gitlab", "commit")
        c.update({"id": sha, "short_id": sha[:8], "title": message.splitlines()[0], "message": message,
                  "author_name": author.title(), "author_email": f"{author}@example.com",
                  "committer_name": (committer or author).title(),
                  "committer_email": f"{committer or author}@example.com"})
        return c

    def merge_request(self, iid: int, *, author: str, head: str, merge_commit: str | None = None,
                      squash_commit: str | None = None, merged_by: str | None = None,
                      commits: list[dict[str, Any]] = (),  # type: ignore[assignment]
                      approvers: Iterable[str] = (), files: Iterable[str] = ("src/app.py",),
                      labels: Iterable[str] = (), state: str | None = None) -> dict[str, Any]:
        mr = template("gitlab", "merge_request")
        merged = merge_commit is not None or squash_commit is not None
        mr.update({"iid": iid, "id": 1000 + iid, "title": f"MR {iid}", "author": gl_user(author),
                   "sha": head, "merge_commit_sha": merge_commit, "squash_commit_sha": squash_commit,
                   "state": state or ("merged" if merged else "opened"),
                   "merged_by": gl_user(merged_by) if merged_by else None,
                   "merge_user": gl_user(merged_by) if merged_by else None,
                   "labels": list(labels), "web_url": f"https://gitlab.example.com/{self.path}/-/merge_requests/{iid}"})
        self.api.json(f"{self.base}/merge_requests/{iid}", mr)
        approvals = template("gitlab", "approvals")
        approvals.update({"iid": iid, "approved_by": [{"user": gl_user(u, gl_user_id(u))} for u in approvers]})
        self.api.json(f"{self.base}/merge_requests/{iid}/approvals", approvals)
        for u in approvers:  # approvers are Developers unless ``member`` said otherwise
            if f"{self.base}/members/all/{gl_user_id(u)}" not in self.api.routes:
                self.member(u, 30)
        self.api.pages(f"{self.base}/merge_requests/{iid}/commits", list(commits), default_per_page=20)
        diffs = [{**template("gitlab", "diff"), "new_path": f, "old_path": f} for f in files]
        self.api.pages(f"{self.base}/merge_requests/{iid}/diffs", diffs, default_per_page=20)
        for sha in {head, *(c["id"] for c in commits), *(s for s in (merge_commit, squash_commit) if s)}:
            self.commit_mrs.setdefault(sha, []).append(mr)
            self.api.pages(f"{self.base}/repository/commits/{sha}/merge_requests", self.commit_mrs[sha])
        return mr

    def member(self, username: str, access_level: int, *, status: int = 200, state: str = "active") -> None:
        """Answer ``GET /projects/:id/members/all/:user_id`` for ``username`` (``status`` other than 200: that error)."""
        body: Any = {**gl_user(username, gl_user_id(username)), "access_level": access_level, "state": state,
                     "expires_at": None}
        if status != 200:
            body = {"message": "404 Not found" if status == 404 else "403 Forbidden"}
        self.api.json(f"{self.base}/members/all/{gl_user_id(username)}", body, status=status)

    def project_approvals(self, reset_on_push: bool) -> None:
        body = template("gitlab", "project_approvals")
        body["reset_approvals_on_push"] = reset_on_push
        self.api.json(f"{self.base}/approvals", body)

    def jobs(self, pipeline_id: int, sha: str, jobs: Iterable[tuple[str, str]]) -> None:
        objs = []
        for i, (name, status) in enumerate(jobs):
            j = template("gitlab", "job")
            j.update({"id": 5000 + i, "name": name, "status": status})
            j["commit"]["id"] = sha
            j["pipeline"]["id"] = pipeline_id
            objs.append(j)
        self.api.pages(f"{self.base}/pipelines/{pipeline_id}/jobs", objs, default_per_page=20)

    def test_summary(self, pipeline_id: int, body: dict[str, Any] | None = None) -> None:
        self.api.json(f"{self.base}/pipelines/{pipeline_id}/test_report_summary",
                      body or template("gitlab", "test_report_summary"))

    def deployments(self, deps: Iterable[tuple[int, str]]) -> None:
        objs = []
        for dep_id, sha in deps:
            d = template("gitlab", "deployment")
            d.update({"id": dep_id, "iid": dep_id, "sha": sha, "status": "success"})
            objs.append(d)
        self.api.json(f"{self.base}/deployments", objs)

    def compare(self, commits: list[dict[str, Any]], files: Iterable[str] = ()) -> None:
        diffs = [{**template("gitlab", "diff"), "new_path": f, "old_path": f} for f in files]
        self.api.json(f"{self.base}/repository/compare", {"commit": commits[-1] if commits else None,
                                                          "commits": commits, "diffs": diffs,
                                                          "compare_timeout": False, "compare_same_ref": False})

    def group(self, path: str, members: Iterable[str]) -> None:
        from urllib.parse import quote

        self.api.pages(f"/groups/{quote(path, safe='')}/members", [gl_user(m, 100 + i) for i, m in enumerate(members)])


def gitlab_env(api: FakeAPI, sha: str, token: str = "glpat-" + "T" * 20, **extra: str) -> dict[str, str]:
    """The predefined variables of a GitLab CI deploy job against ``api``.

    Without ``GITLAB_CI=true``, for the reason ``github_env`` gives.
    """
    env = {
        "CI_PROJECT_ID": "278964",
        "CI_PROJECT_PATH": "acme/payments",
        "CI_COMMIT_SHA": sha,
        "CI_COMMIT_REF_NAME": "main",
        "CI_PIPELINE_ID": "61",
        "CI_PIPELINE_URL": "https://gitlab.example.com/acme/payments/-/pipelines/61",
        "CI_PIPELINE_SOURCE": "push",
        "CI_JOB_URL": "https://gitlab.example.com/acme/payments/-/jobs/7",
        "GITLAB_USER_LOGIN": "dana",
        "CI_ENVIRONMENT_NAME": "production",
        "CI_API_V4_URL": api.url,
        "CI_SERVER_URL": "https://gitlab.example.com",
        "GITLAB_TOKEN": token,
    }
    env.update(extra)
    return env


# -- the change schema, with the `range` the providers add (until the lead merges it) ---------

RANGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["previous_commit", "commits", "pull_requests"],
    "description": "What the deploy ships since the previous successful deploy to the same environment. "
                   "previous_commit null: no previous deploy is known, so the range cannot be listed.",
    "properties": {
        "previous_commit": {"oneOf": [{"$ref": "#/$defs/sha"}, {"type": "null"}]},
        "previous_deployment": {
            "type": ["object", "null"],
            "additionalProperties": False,
            "required": ["source"],
            "properties": {
                "id": {"type": ["string", "integer"]},
                "url": {"type": ["string", "null"]},
                "created_at": {"type": ["string", "null"]},
                "source": {"enum": ["github-deployments", "gitlab-deployments", "evidence-archive"]},
            },
        },
        "status": {"enum": ["ahead", "behind", "diverged", "identical", None]},
        "commits": {"type": "array", "items": {"$ref": "#/properties/commits/items"}},
        "pull_requests": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["number", "author", "reviews", "committers"],
                "properties": {
                    "number": {"type": "integer", "minimum": 1},
                    "title": {"type": ["string", "null"]},
                    "author": {"type": "string", "minLength": 1},
                    "head_commit": {"$ref": "#/$defs/sha"},
                    "merge_commit": {"oneOf": [{"$ref": "#/$defs/sha"}, {"type": "null"}]},
                    "url": {"type": ["string", "null"]},
                    "state": {"type": ["string", "null"]},
                    "merged_by": {"type": ["string", "null"]},
                    "base_ref": {"type": ["string", "null"]},
                    "labels": {"type": "array", "items": {"type": "string"}},
                    "reviews": {"type": "array", "items": {"$ref": "#/properties/reviews/items"}},
                    "committers": {"type": "array", "items": {"type": "string"},
                                   "description": "Authors, committers and co-authors of the request's commits."},
                },
            },
        },
    },
}


def change_schema() -> dict[str, Any]:
    """``schemas/change.schema.json`` plus ``properties.range`` (RANGE_SCHEMA)."""
    schema = json.loads((FIXTURES.parents[1] / "schemas" / "change.schema.json").read_text(encoding="utf-8"))
    schema["properties"].setdefault("range", RANGE_SCHEMA)
    return schema


def schema_errors(change: dict[str, Any]) -> list[str]:
    """Every way ``change`` breaks the (extended) change schema."""
    from jsonschema import Draft202012Validator, FormatChecker

    v = Draft202012Validator(change_schema(), format_checker=FormatChecker())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(change)]


def decision_errors(doc: dict[str, Any]) -> list[str]:
    """Every way a decision document breaks ``schemas/decision.schema.json`` (with the extended change schema)."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    schemas = FIXTURES.parents[1] / "schemas"
    decision = json.loads((schemas / "decision.schema.json").read_text(encoding="utf-8"))
    registry = Registry().with_resources([
        ("https://policyengine.dev/schemas/change.schema.json", Resource.from_contents(change_schema())),
        ("https://policyengine.dev/schemas/decision.schema.json", Resource.from_contents(decision)),
    ])
    v = Draft202012Validator(decision, registry=registry)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(doc)]


# -- trusted deploy history (signed evidence) ----------------------------------------------------


def new_signing_key() -> Any:
    """A fresh Ed25519 ``SigningKey`` for tests."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from policyengine.evidence.format.signing import SigningKey, key_id

    private = ed25519.Ed25519PrivateKey.generate()
    return SigningKey(private, key_id(private.public_key()))


def public_pem(key: Any) -> bytes:
    """The PEM public key of a ``SigningKey``."""
    from cryptography.hazmat.primitives import serialization

    pem: bytes = key.private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem


def record_deploy(store: Path, commit: str, *, key: Any = None, repository: str = "acme/payments",
                  environment: str = "production", decision: str = "allow",
                  created_at: str = "2026-11-20T20:00:00Z", simulated: bool = False) -> Any:
    """Record an evaluation of ``commit`` in the evidence folder ``store`` (signed by ``key`` when given)."""
    from datetime import datetime

    from policyengine.evidence.stores.folder import LocalArchive

    return LocalArchive(store).write_bundle(
        decision={"decision": decision, "evaluated_at": created_at, **({"simulated": True} if simulated else {})},
        change={"repository": repository, "environment": environment, "commit": commit},
        policy_filename="p.yml", policy_bytes=b"version: 1\n", files=[],
        created_at=datetime.fromisoformat(created_at.replace("Z", "+00:00")), signing_key=key)


def trusted_history(tmp_path: Path, commit: str, *, store: Path | None = None, **kw: Any) -> dict[str, str]:
    """Record a signed, allowed deploy of ``commit`` in ``tmp_path/evidence`` (or ``store``) and
    return the variables that make ``check`` trust its key (``POLICYENGINE_TRUST_KEY``)."""
    key = new_signing_key()
    record_deploy(store or tmp_path / "evidence", commit, key=key, **kw)
    pub = tmp_path / "trust.pub"
    pub.write_bytes(public_pem(key))
    return {"POLICYENGINE_TRUST_KEY": str(pub)}


class StaticHistory:
    """A ``PreviousDeploys`` that names one verified deploy (for provider tests; the gate's
    ``VerifiedHistory`` is tested against real signed bundles)."""

    def __init__(self, commit: str | None) -> None:
        self.commit = commit

    def latest(self, repository: str, environment: str) -> dict[str, Any] | None:
        if self.commit is None:
            return None
        return {"sha": self.commit, "id": "20261120T200000Z-000000000000", "url": None,
                "created_at": "2026-11-20T20:00:00Z", "source": "evidence-archive"}
