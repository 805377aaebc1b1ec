"""The deployed pull request through GitHub's GraphQL API: fewer round trips, the same facts.

One query (``PolicyenginePull``) asks for the pull request (by number, or the requests associated
with the deployed commit), the first and the last 100 of its reviews and commits, its first 100
files, and the environment's 10 newest deployments with their statuses. A list longer than 200
needs follow-up pages (``PolicyenginePullPages``, reviews and commits in one request), which stop
as soon as they reach the last 100. Every node is turned into the REST object it stands for and
mapped by the REST provider's own functions, so the change is the same whichever API gave it.

Kept on REST, where GraphQL saves nothing or lacks a fact:

* a file list with a rename or a copy, or longer than 100 (GraphQL has no previous file name);
* the approvers' permissions (GraphQL's ``repository.collaborators`` needs push access, more than
  the token permissions the README lists);
* check runs and commit statuses, the change range and the requests in it.

Fail closed: an answer with ``errors`` (even beside data), a null where an object is expected, a
list that does not add up to its ``totalCount``, or a page cap reached raises ``ApiError``; the
facts it feeds are ``unavailable`` and every rule needing them is ``error``. Every answer is kept
as ``raw/github/graphql_<n>.json``. ``GITHUB_GRAPHQL_URL`` must be on ``GITHUB_API_URL``'s origin.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from policyengine.providers.http import ApiError, HttpSession

PAGE = 100
MAX_CANDIDATES = 10
"""Pull requests associated with the deployed commit read at once; more is refused (fail closed)."""

PAGE_FIELDS = """
fragment ReviewPage on PullRequestReviewConnection {
  totalCount
  pageInfo { hasNextPage endCursor }
  nodes { id state submittedAt authorAssociation author { __typename login } commit { oid } }
}
fragment Person on GitActor { name email date user { login } }
fragment CommitPage on PullRequestCommitConnection {
  totalCount
  pageInfo { hasNextPage endCursor }
  nodes { id commit { oid message author { ...Person } committer { ...Person } } }
}"""

PULL_FIELDS = PAGE_FIELDS + """
fragment Pull on PullRequest {
  number title body url state merged mergedAt headRefOid headRefName baseRefName changedFiles
  author { __typename login }
  mergedBy { __typename login }
  mergeCommit { oid }
  labels(first: 100) { totalCount nodes { name } }
  reviewsFirst: reviews(first: 100) { ...ReviewPage }
  reviewsLast: reviews(last: 100) { ...ReviewPage }
  commitsFirst: commits(first: 100) { ...CommitPage }
  commitsLast: commits(last: 100) { ...CommitPage }
  files(first: 100) { totalCount pageInfo { hasNextPage endCursor } nodes { path changeType } }
}
"""

DEPLOYMENTS = """deployments(environments: [$environment], first: 10, orderBy: {field: CREATED_AT, direction: DESC}) {
      nodes { databaseId commitOid createdAt statuses(first: 100) { nodes { state } } }
    }"""

QUERY_BY_NUMBER = f"""query PolicyenginePull($owner: String!, $name: String!, $number: Int!, $environment: String!) {{
  repository(owner: $owner, name: $name) {{
    pullRequest(number: $number) {{ ...Pull }}
    {DEPLOYMENTS}
  }}
}}
{PULL_FIELDS}"""

QUERY_BY_COMMIT = f"""query PolicyenginePullOfCommit($owner: String!, $name: String!, $oid: GitObjectID!,
    $environment: String!) {{
  repository(owner: $owner, name: $name) {{
    object(oid: $oid) {{
      __typename
      ... on Commit {{ associatedPullRequests(first: {MAX_CANDIDATES}) {{ totalCount nodes {{ ...Pull }} }} }}
    }}
    {DEPLOYMENTS}
  }}
}}
{PULL_FIELDS}"""

QUERY_PAGES = """query PolicyenginePullPages($owner: String!, $name: String!, $number: Int!,
    $reviews: String, $commits: String, $withReviews: Boolean!, $withCommits: Boolean!) {
  repository(owner: $owner, name: $name) {
    pullRequest(number: $number) {
      reviews(first: 100, after: $reviews) @include(if: $withReviews) { ...ReviewPage }
      commits(first: 100, after: $commits) @include(if: $withCommits) { ...CommitPage }
    }
  }
}
""" + PAGE_FIELDS

QUERIES = {"PolicyenginePull": QUERY_BY_NUMBER, "PolicyenginePullOfCommit": QUERY_BY_COMMIT,
           "PolicyenginePullPages": QUERY_PAGES}
"""Every query this module sends (tests validate each against GitHub's published schema)."""

RENAMING = frozenset({"RENAMED", "COPIED"})


class _Shape(ValueError):
    pass


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Shape(f"{where} is {'null' if value is None else type(value).__name__}, not an object")
    return value


def _str(value: Any, where: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _Shape(f"{where} is not a string")
    return value


def _int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 2**53:
        raise _Shape(f"{where} is not a count")
    return value


def _nodes(conn: Any, where: str) -> list[dict[str, Any]]:
    nodes = _obj(conn, where).get("nodes")
    if not isinstance(nodes, list):
        raise _Shape(f"{where}.nodes is not a list")
    return [_obj(n, f"{where}.nodes[{i}]") for i, n in enumerate(nodes)]


def _page(conn: Any, where: str) -> tuple[int, list[dict[str, Any]], bool, str | None]:
    """(totalCount, nodes, hasNextPage, endCursor) of a connection."""
    c = _obj(conn, where)
    info = _obj(c.get("pageInfo"), f"{where}.pageInfo")
    more = info.get("hasNextPage")
    if not isinstance(more, bool):
        raise _Shape(f"{where}.pageInfo.hasNextPage is not a boolean")
    cursor = _str(info.get("endCursor"), f"{where}.pageInfo.endCursor", optional=True)
    if more and not cursor:
        raise _Shape(f"{where} has a next page but no endCursor")
    return _int(c.get("totalCount"), f"{where}.totalCount"), _nodes(c, where), more, cursor


def _login(actor: Any, where: str) -> dict[str, Any] | None:
    """A REST user object (``login``, ``type``) from a GraphQL actor; None for a deleted account."""
    if actor is None:
        return None
    a = _obj(actor, where)
    login = _str(a.get("login"), f"{where}.login")
    return {"login": login, "type": "Bot" if a.get("__typename") == "Bot" else "User"}


def rest_review(node: dict[str, Any], where: str) -> dict[str, Any]:
    """The REST review a GraphQL ``PullRequestReview`` stands for."""
    commit = node.get("commit")
    return {
        "user": _login(node.get("author"), f"{where}.author"),
        "state": _str(node.get("state"), f"{where}.state"),
        "commit_id": _str(_obj(commit, f"{where}.commit").get("oid"), f"{where}.commit.oid")
        if commit is not None else None,
        "submitted_at": _str(node.get("submittedAt"), f"{where}.submittedAt", optional=True),
        "author_association": _str(node.get("authorAssociation"), f"{where}.authorAssociation"),
    }


def rest_commit(node: dict[str, Any], where: str) -> dict[str, Any]:
    """The REST commit a GraphQL ``PullRequestCommit`` stands for."""
    c = _obj(node.get("commit"), f"{where}.commit")
    out: dict[str, Any] = {"sha": _str(c.get("oid"), f"{where}.commit.oid"),
                           "commit": {"message": _str(c.get("message"), f"{where}.commit.message")}}
    for kind in ("author", "committer"):
        person = c.get(kind)
        if person is None:
            out[kind] = None
            out["commit"][kind] = None
            continue
        p = _obj(person, f"{where}.commit.{kind}")
        user = p.get("user")
        out[kind] = ({"login": _str(_obj(user, f"{where}.commit.{kind}.user").get("login"),
                                    f"{where}.commit.{kind}.user.login")} if user is not None else None)
        out["commit"][kind] = {k: _str(p.get(k), f"{where}.commit.{kind}.{k}", optional=True)
                               for k in ("name", "email", "date")}
    return out


def rest_pull(node: dict[str, Any], where: str) -> dict[str, Any]:
    """The REST pull request a GraphQL ``PullRequest`` stands for (what ``map_pull`` reads)."""
    number = _int(node.get("number"), f"{where}.number")
    merged = node.get("merged")
    if not isinstance(merged, bool):
        raise _Shape(f"{where}.merged is not a boolean")
    labels = _obj(node.get("labels"), f"{where}.labels")
    names = [_str(lbl.get("name"), f"{where}.labels.name") for lbl in _nodes(labels, f"{where}.labels")]
    if _int(labels.get("totalCount"), f"{where}.labels.totalCount") != len(names):
        raise _Shape(f"{where} has more labels than one page lists")
    merge_commit = node.get("mergeCommit")
    state = _str(node.get("state"), f"{where}.state")
    return {
        "number": number,
        "title": _str(node.get("title"), f"{where}.title", optional=True),
        "body": _str(node.get("body"), f"{where}.body", optional=True),
        "html_url": _str(node.get("url"), f"{where}.url", optional=True),
        "state": "open" if state == "OPEN" else "closed",
        "merged": merged,
        "merged_at": _str(node.get("mergedAt"), f"{where}.mergedAt", optional=True),
        "merge_commit_sha": (_str(_obj(merge_commit, f"{where}.mergeCommit").get("oid"), f"{where}.mergeCommit.oid")
                             if merge_commit is not None else None),
        "user": _login(node.get("author"), f"{where}.author"),
        "merged_by": _login(node.get("mergedBy"), f"{where}.mergedBy"),
        "head": {"sha": _str(node.get("headRefOid"), f"{where}.headRefOid"),
                 "ref": _str(node.get("headRefName"), f"{where}.headRefName")},
        "base": {"ref": _str(node.get("baseRefName"), f"{where}.baseRefName")},
        "labels": [{"name": n} for n in names],
        "changed_files": _int(node.get("changedFiles"), f"{where}.changedFiles"),
        "commits": _int(_obj(node.get("commitsFirst"), f"{where}.commitsFirst").get("totalCount"),
                        f"{where}.commitsFirst.totalCount"),
    }


class _List:
    """One list of the pull request (reviews or commits), read from both ends."""

    def __init__(self, kind: str, first: Any, last: Any, where: str) -> None:
        self.kind = kind
        self.total, self.items, self.more, self.cursor = _page(first, f"{where}.{kind}First")
        last_total, self.tail, _, _ = _page(last, f"{where}.{kind}Last")
        if last_total != self.total:
            raise _Shape(f"{where}.{kind}: the two ends count {self.total} and {last_total}")
        self.tail_ids = [_str(n.get("id"), f"{where}.{kind}Last.id") for n in self.tail]
        self.seen = {_str(n.get("id"), f"{where}.{kind}First.id") for n in self.items}
        self._check_joined()

    def _check_joined(self) -> None:
        # The pages read from the start (a prefix) and the last 100 (a suffix) cover the list once
        # they are as long as it together; whole() checks the union against totalCount.
        if len(self.items) + len(self.tail) >= self.total or any(i in self.seen for i in self.tail_ids):
            self.more = False

    def add(self, conn: Any, where: str) -> None:
        total, nodes, more, cursor = _page(conn, where)
        if total != self.total:
            raise _Shape(f"{where}: the list changed while it was read ({self.total} then {total})")
        for n in nodes:
            self.seen.add(_str(n.get("id"), f"{where}.id"))
        self.items += nodes
        self.more, self.cursor = more, cursor
        self._check_joined()

    def whole(self, where: str) -> list[dict[str, Any]]:
        out = list(self.items)
        if self.more:
            raise _Shape(f"{where}.{self.kind}: pages left unread")
        out += [n for n, i in zip(self.tail, self.tail_ids) if i not in self.seen]
        ids = [n.get("id") for n in out]
        if len(out) != self.total or len(set(ids)) != len(ids):
            raise _Shape(f"{where}.{self.kind}: {len(out)} read, {self.total} counted")
        return out


def fetch_pull(session: HttpSession, url: str, repository: str, sha: str, environment: str,
               number: int | None, pick: Any, max_pages: int) -> dict[str, Any]:
    """The deployed pull request and the environment's deployments, as REST objects.

    Returns ``{"pull": REST pull or None, "reviews": [...], "commits": [...], "files": [paths] or
    None (REST must list them), "deployments": [REST deployment with "statuses"] or the ApiError
    that made them unreadable}``. ``pick``
    chooses among the requests associated with ``sha`` (``github.pick_pull``)."""
    owner, name = repository.split("/")
    shown = session.display_path(url)
    counter = [0]

    tolerated: list[str] = []

    def ask(query: str, variables: Mapping[str, Any], what: str) -> dict[str, Any]:
        counter[0] += 1
        # The deployments only corroborate: their own error (a token without deployments: read)
        # loses that corroboration, never the pull request.
        return session.post_graphql(url, query, variables, what=what, name=f"graphql_{counter[0]}",
                                    tolerate=("repository", "deployments") if counter[0] == 1 else None,
                                    tolerated=tolerated)

    def shape(exc: Exception) -> ApiError:
        return ApiError("POST", shown, 200, f"HTTP 200 but the GraphQL answer has an unexpected shape: {exc}")

    base = {"owner": owner, "name": name, "environment": environment}
    if number is not None:
        data = ask(QUERY_BY_NUMBER, {**base, "number": number}, f"pull request #{number}")
    else:
        data = ask(QUERY_BY_COMMIT, {**base, "oid": sha}, f"the pull requests of commit {sha[:7]}")
    try:
        repo = _obj(data.get("repository"), "repository")
    except _Shape as exc:
        raise shape(exc) from None
    deployments: list[dict[str, Any]] | ApiError = []
    try:  # the deployments only corroborate the verified previous deploy: a wrong answer loses only that
        for i, d in enumerate(_nodes(repo.get("deployments"), "repository.deployments")):
            w = f"repository.deployments.nodes[{i}]"
            deployments.append({"id": _int(d.get("databaseId"), f"{w}.databaseId"),
                                "sha": _str(d.get("commitOid"), f"{w}.commitOid"),
                                "created_at": _str(d.get("createdAt"), f"{w}.createdAt"),
                                "statuses": [str(_str(s.get("state"), f"{w}.statuses.state")).lower()
                                             for s in _nodes(d.get("statuses"), f"{w}.statuses")]})
    except _Shape as exc:
        deployments = shape(exc)
    if tolerated:
        deployments = ApiError("POST", shown, 200, f"GraphQL error for the deployments: {tolerated[0]}")
    try:
        if number is not None:
            node = _obj(repo.get("pullRequest"), "repository.pullRequest")
        else:
            obj = _obj(repo.get("object"), "repository.object")
            if obj.get("__typename") != "Commit":
                raise _Shape("repository.object is not a commit")
            conn = _obj(obj.get("associatedPullRequests"), "repository.object.associatedPullRequests")
            cands = _nodes(conn, "repository.object.associatedPullRequests")
            if _int(conn.get("totalCount"), "associatedPullRequests.totalCount") != len(cands):
                raise _Shape(f"more than {MAX_CANDIDATES} pull requests contain commit {sha[:7]}")
            by_number = {}
            rest = []
            for i, c in enumerate(cands):
                r = rest_pull(c, f"associatedPullRequests.nodes[{i}]")
                by_number[r["number"]] = c
                rest.append(r)
            chosen = pick(rest, sha)
            if chosen is None:
                return {"pull": None, "reviews": [], "commits": [], "files": None, "deployments": deployments}
            node = by_number[chosen["number"]]
            number = int(chosen["number"])
        where = "pullRequest"
        pull = rest_pull(node, where)
        lists = {"reviews": _List("reviews", node.get("reviewsFirst"), node.get("reviewsLast"), where),
                 "commits": _List("commits", node.get("commitsFirst"), node.get("commitsLast"), where)}
        ftotal, fnodes, fmore, _ = _page(node.get("files"), f"{where}.files")
        files: list[str] | None = [str(_str(f.get("path"), f"{where}.files.path")) for f in fnodes]
        if fmore or ftotal != len(fnodes) or any(f.get("changeType") in RENAMING for f in fnodes):
            files = None  # the REST list names renamed files' old paths too
    except _Shape as exc:
        raise shape(exc) from None
    pages = 1
    while any(v.more for v in lists.values()):
        pages += 1
        if pages > max_pages:
            raise ApiError("POST", shown, None, f"more than {max_pages} pages of {PAGE} for pull request #{number}; "
                           "refusing to judge a partial list", hint="raise POLICYENGINE_HTTP_MAX_PAGES")
        r, c = lists["reviews"], lists["commits"]
        data = ask(QUERY_PAGES, {"owner": owner, "name": name, "number": number,
                                 "reviews": r.cursor if r.more else None, "commits": c.cursor if c.more else None,
                                 "withReviews": r.more, "withCommits": c.more},
                   f"the reviews and commits of pull request #{number}")
        try:
            pr = _obj(_obj(data.get("repository"), "repository").get("pullRequest"), "repository.pullRequest")
            for kind, lst in lists.items():
                if lst.more:
                    lst.add(pr.get(kind), f"pullRequest.{kind}")
        except _Shape as exc:
            raise shape(exc) from None
    try:
        reviews = [rest_review(n, f"{where}.reviews") for n in lists["reviews"].whole(where)]
        commits = [rest_commit(n, f"{where}.commits") for n in lists["commits"].whole(where)]
    except _Shape as exc:
        raise shape(exc) from None
    return {"pull": pull, "reviews": reviews, "commits": commits, "files": files, "deployments": deployments}
