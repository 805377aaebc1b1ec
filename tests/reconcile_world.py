"""Stand-ins for `audit reconcile`: evidence written into a LocalArchive, and the platforms'
deployment records served by ``FakeAPI``.

The GitHub stand-in answers the GraphQL query ``reconcile`` sends (``repository.deployments``
filtered to an environment, newest first, ``first: 100``, cursors), its nodes built from REST
deployment objects (the documented shape reference: ``id``, ``sha``, ``environment``,
``original_environment``, ``creator``, ``created_at``) and their statuses (newest first; the
latest decides; lower-case REST states become the GraphQL enum's upper case). The GitLab stand-in
serves ``GET /projects/:id/deployments`` with ``environment`` and ``status`` filters, paged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from policyengine.evidence.stores.folder import LocalArchive
from policyengine.evidence.format.signing import SigningKey, key_id
from tests.fake_servers import FakeAPI, Reply, Request

REPO = Path(__file__).resolve().parents[1]
POLICY = (REPO / "policies" / "soc2-production.yml").read_bytes()
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def signer() -> SigningKey:
    k = ed25519.Ed25519PrivateKey.generate()
    return SigningKey(k, key_id(k.public_key()))


class Evidence:
    """A store of evaluations written as `check` writes them (signed), one call per bundle."""

    def __init__(self, root: Path, key: SigningKey | None = None) -> None:
        self.archive = LocalArchive(root)
        self.key = key or signer()

    def evaluation(self, repo: str, env: str, commit: str, when: datetime, *, verdict: str = "allow",
                   advisory: bool = False, emergency: bool = False, subjects: Iterable[str] = (),
                   pipeline: str = "run-1", outcome: str | None = "deployed",
                   simulated: bool = False, witness_required: bool | None = None) -> dict[str, Any]:
        decision: dict[str, Any] = {"decision": verdict, "evaluated_at": iso(when), "advisory": advisory,
                                    "simulated": simulated, "policy": {"name": "prod", "path": "p.yml"},
                                    "clock": {"source": "system"}, "rules": []}
        if witness_required is not None:  # the policy's witness: section, as `check` records it
            decision["witness"] = {"required": witness_required}
        if emergency:  # the shape `check --emergency` records (policyengine.lifecycle.emergency)
            decision["emergency"] = {"declarer": "erin", "declarer_verified": True, "reason": "outage",
                                     "incident": "INC-1", "waived": ["peer-review"], "declared_at": iso(when),
                                     "approval_required": True, "due_at": iso(when + timedelta(hours=4)),
                                     "approvers": {"min_approvals": 1, "exclude": ["deployer"]},
                                     "excluded": {}, "excluded_unknown": []}
        change = {"repository": repo, "environment": env, "commit": commit, "deployer": "dana",
                  "pipeline": {"provider": "github", "id": pipeline}, "commits": []}
        ref = self.archive.write_bundle(
            decision=decision, change=change, policy_filename="policy.yml", policy_bytes=POLICY, files=[],
            created_at=when, signing_key=self.key,
            subjects=[(f"app-{i}", s.removeprefix("sha256:")) for i, s in enumerate(subjects)])
        record = self.last_record(ref.id)
        if outcome:
            self.archive.append_record("outcome", record, {"status": outcome, "by": "dana", "by_verified": False,
                                                           "by_source": "--by"},
                                       signing_key=self.key, created_at=when + timedelta(minutes=2))
        return record

    def last_record(self, bundle_id: str) -> dict[str, Any]:
        with open(self.archive.index_path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, 2) - 8192))
            record: dict[str, Any] = json.loads(fh.read().rstrip(b"\n").rsplit(b"\n", 1)[-1])
        assert record["id"] == bundle_id
        return record


# -- GitHub ------------------------------------------------------------------------------------


def rest_deployment(ident: int, repo: str, env: str, sha: str, when: datetime, *, creator: str = "deploy-bot",
                    creator_type: str = "Bot", ref: str = "main") -> dict[str, Any]:
    """A REST deployment object (the shape of the corpus' `deployments` answers)."""
    return {"url": f"https://api.github.com/repos/{repo}/deployments/{ident}", "id": ident,
            "node_id": f"DE_{ident}", "sha": sha, "ref": ref, "task": "deploy", "payload": {},
            "original_environment": env, "environment": env, "description": "",
            "creator": {"login": creator, "type": creator_type}, "created_at": iso(when), "updated_at": iso(when),
            "statuses_url": f"https://api.github.com/repos/{repo}/deployments/{ident}/statuses",
            "repository_url": f"https://api.github.com/repos/{repo}"}


def rest_status(state: str, when: datetime, ident: int) -> dict[str, Any]:
    return {"id": ident * 10, "state": state, "created_at": iso(when), "updated_at": iso(when),
            "description": "", "target_url": "", "log_url": f"https://github.com/acme/actions/runs/{ident}"}


def graphql_node(dep: dict[str, Any], statuses: list[dict[str, Any]]) -> dict[str, Any]:
    """The GraphQL Deployment node of a REST deployment and its statuses (newest first)."""
    latest = statuses[0] if statuses else None
    creator = dep.get("creator") or {}
    typename = "Bot" if creator.get("type") == "Bot" else "User"
    return {"databaseId": dep["id"], "createdAt": dep["created_at"], "environment": dep["environment"],
            "originalEnvironment": dep.get("original_environment", dep["environment"]),
            "commitOid": dep["sha"], "state": "ACTIVE",
            "creator": {"__typename": typename, "login": creator.get("login")},
            "latestStatus": None if latest is None else {
                "state": str(latest["state"]).upper(), "createdAt": latest["created_at"],
                "logUrl": latest.get("log_url") or latest.get("target_url") or None,
                "environmentUrl": latest.get("environment_url") or None}}


class GitHubDeployments:
    """The GraphQL endpoint of a fake GitHub (``/graphql`` beside the API root)."""

    def __init__(self, api: FakeAPI) -> None:
        self.api = api
        self.nodes: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.queries: list[dict[str, Any]] = []
        self.statuses: GitHubStatuses | None = None
        api.handler("/graphql", self.serve)

    def add(self, repo: str, env: str, sha: str, when: datetime, *, ident: int, state: str | None = "success",
            creator: str = "deploy-bot", creator_type: str = "Bot") -> dict[str, Any]:
        dep = rest_deployment(ident, repo, env, sha, when, creator=creator, creator_type=creator_type)
        statuses = [] if state is None else [rest_status(state, when + timedelta(minutes=1), ident)]
        node = graphql_node(dep, statuses)
        self.nodes.setdefault((repo, env), []).append(node)
        return node

    def add_node(self, repo: str, env: str, node: dict[str, Any]) -> None:
        self.nodes.setdefault((repo, env), []).append(node)

    def serve(self, req: Request, api: FakeAPI) -> Reply:
        if req.method != "POST":
            return Reply(404, {"message": "Not Found"})
        doc = req.json()
        self.queries.append(doc)
        query, variables = doc["query"], doc["variables"]
        if "status { contexts" in query and self.statuses is not None:
            return self.statuses.serve_graphql(query, variables)
        data: dict[str, Any] = {}
        for i in sorted({int(m) for m in re.findall(r"\$o(\d+)", query)}):
            assert f"deployments(environments: [$e{i}]" in query and "latestStatus" in query
            repo = f"{variables[f'o{i}']}/{variables[f'n{i}']}"
            env = variables[f"e{i}"]
            nodes = sorted(self.nodes.get((repo, env), []), key=lambda n: n["createdAt"], reverse=True)
            start = int(variables.get(f"a{i}") or 0)
            chunk = nodes[start:start + 100]
            data[f"c{i}"] = {"deployments": {
                "pageInfo": {"hasNextPage": start + 100 < len(nodes),
                             "endCursor": str(start + len(chunk)) if chunk else None},
                "nodes": chunk}}
        return Reply(200, {"data": data})


# -- GitLab ------------------------------------------------------------------------------------


def gitlab_deployment(ident: int, env: str, sha: str, when: datetime, *, status: str = "success",
                      user: str = "root", deployable: bool = True) -> dict[str, Any]:
    """A deployment of the list shape (corpus docs__deployments_list.json): environment an object,
    the deployment's own status, user, and a deployable job whose status may disagree."""
    return {"created_at": when.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "updated_at": iso(when), "status": status,
            "deployable": None if not deployable else {
                "id": ident * 7, "name": "deploy", "status": "success", "web_url": f"https://gitlab.test/jobs/{ident}",
                "pipeline": {"id": ident, "sha": sha, "status": "success",
                             "web_url": f"https://gitlab.test/pipelines/{ident}"}},
            "environment": {"external_url": "https://example.test", "id": 9, "name": env},
            "id": ident, "iid": ident, "ref": "main", "sha": sha,
            "user": {"id": 1, "name": user, "username": user, "state": "active"}}


class GitLabDeployments:
    """``GET /projects/:id/deployments`` of a fake GitLab, paged, honouring environment and status."""

    def __init__(self, api: FakeAPI) -> None:
        self.api = api
        self.items: dict[str, list[dict[str, Any]]] = {}

    def add(self, project: str, item: dict[str, Any]) -> None:
        path = "/projects/" + project.replace("/", "%2F") + "/deployments"
        items = self.items.setdefault(path, [])
        items.append(item)

        def serve(req: Request, api: FakeAPI, items: list[dict[str, Any]] = items) -> Reply:
            env = (req.query.get("environment") or [None])[0]
            status = (req.query.get("status") or [None])[0]
            chosen = [x for x in items if (env is None or x["environment"]["name"] == env)
                      and (status is None or x.get("status", "success") == status)]
            chosen.sort(key=lambda x: x["created_at"], reverse=True)
            page = int((req.query.get("page") or ["1"])[0])
            per_page = min(100, int((req.query.get("per_page") or ["20"])[0]))
            chunk = chosen[(page - 1) * per_page: page * per_page]
            headers = {}
            if page * per_page < len(chosen):
                q = {k: v[0] for k, v in req.query.items()}
                q["page"] = str(page + 1)
                from urllib.parse import urlencode

                headers["Link"] = f'<{api.origin}{req.path}?{urlencode(q)}>; rel="next"'
            return Reply(200, chunk, headers)

        self.api.handler(path, serve)


# -- commit statuses: the witness ---------------------------------------------------------------


class GitHubStatuses:
    """Commit statuses of a fake GitHub, as the platform keeps them: ``POST /repos/{repo}/statuses/
    {sha}`` (REST; the platform stamps its own time, ``clock``, and the creator its token belongs
    to, ``logins``), read back through GraphQL ``object(oid:) { ... on Commit { status { contexts
    } } }`` (the latest status of each context, as GitHub's combined status gives)."""

    def __init__(self, deployments: GitHubDeployments, *, rest_prefix: str = "/v3") -> None:
        self.api = deployments.api
        self.rest_prefix = rest_prefix
        deployments.statuses = self
        self.by_commit: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.logins: dict[str, str] = {}
        self.clock = lambda: datetime.now(timezone.utc)
        self.refuse: int | None = None

    def accept(self, repo: str, sha: str) -> None:
        """Let statuses be posted on ``repo``@``sha``."""

        def post(req: Request, api: FakeAPI) -> Reply:
            if req.method != "POST":
                return Reply(404, {"message": "Not Found"})
            if self.refuse:
                return Reply(self.refuse, {"message": "Resource not accessible by integration"})
            token = req.headers.get("Authorization", "").removeprefix("Bearer ")
            if token not in self.logins:
                return Reply(401, {"message": "Bad credentials"})
            body = req.json()
            desc = body.get("description")
            if body.get("state") not in ("error", "failure", "pending", "success") or (
                    isinstance(desc, str) and len(desc) > 140):
                return Reply(422, {"message": "Validation Failed"})
            status = {"context": body.get("context", "default"), "description": desc,
                      "state": body["state"].upper(), "createdAt": iso(self.clock()),
                      "targetUrl": body.get("target_url"), "creator": {"login": self.logins[token]}}
            self.by_commit.setdefault((repo, sha), []).append(status)
            return Reply(201, {"id": len(self.by_commit[(repo, sha)]), "state": body["state"],
                               "context": status["context"], "description": desc})

        self.api.handler(f"{self.rest_prefix}/repos/{repo}/statuses/{sha}", post)

    def add(self, repo: str, sha: str, *, context: str, description: str, when: datetime,
            creator: str = "acme-witness[bot]", state: str = "SUCCESS") -> None:
        """A status the platform holds (written by anyone with ``statuses: write``)."""
        self.by_commit.setdefault((repo, sha), []).append(
            {"context": context, "description": description, "state": state, "createdAt": iso(when),
             "targetUrl": None, "creator": {"login": creator}})

    def serve_graphql(self, query: str, variables: dict[str, Any]) -> Reply:
        data: dict[str, Any] = {}
        for ri in sorted({int(m) for m in re.findall(r"r(\d+): repository", query)}):
            repo = f"{variables[f'o{ri}']}/{variables[f'n{ri}']}"
            block: dict[str, Any] = {}
            part = query.split(f"r{ri}: repository", 1)[1].split(": repository", 1)[0]
            for ci in sorted({int(m) for m in re.findall(r"k(\d+): object\(oid: \$s(?:\d+)\)", part)}):
                sha = variables[f"s{ci}"]
                statuses = self.by_commit.get((repo, sha), [])
                latest: dict[str, dict[str, Any]] = {}
                for st in statuses:  # posted in time order: the last of each context wins
                    latest[st["context"]] = st
                block[f"k{ci}"] = {"oid": sha, "status": {"contexts": list(latest.values())} if latest else None}
            data[f"r{ri}"] = block
        return Reply(200, {"data": data})


class GitLabStatuses:
    """Commit statuses of a fake GitLab: ``POST /projects/:id/statuses/:sha`` (``name``, ``state``,
    ``description``; the platform stamps ``created_at`` and the ``author`` of the token) and
    ``GET /projects/:id/repository/commits/:sha/statuses`` (``name``, ``all``), paged."""

    def __init__(self, api: FakeAPI) -> None:
        self.api = api
        self.by_commit: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.logins: dict[str, str] = {}
        self.clock = lambda: datetime.now(timezone.utc)

    def accept(self, project: str, sha: str) -> None:
        enc = project.replace("/", "%2F")

        def post(req: Request, api: FakeAPI) -> Reply:
            if req.method != "POST":
                return Reply(404, {"message": "404 Not found"})
            token = req.headers.get("PRIVATE-TOKEN", "")
            if token not in self.logins:
                return Reply(401, {"message": "401 Unauthorized"})
            body = req.json()
            if body.get("state") not in ("pending", "running", "success", "failed", "canceled"):
                return Reply(400, {"error": "state does not have a valid value"})
            self.add(project, sha, name=body.get("name") or "default", description=body.get("description"),
                     when=self.clock(), author=self.logins[token], status=body["state"])
            return Reply(201, self.by_commit[(project, sha)][-1])

        def listing(req: Request, api: FakeAPI) -> Reply:
            name = (req.query.get("name") or [None])[0]
            items = [s for s in self.by_commit.get((project, sha), []) if name is None or s["name"] == name]
            return Reply(200, list(reversed(items)))

        self.api.handler(f"/projects/{enc}/statuses/{sha}", post)
        self.api.handler(f"/projects/{enc}/repository/commits/{sha}/statuses", listing)

    def add(self, project: str, sha: str, *, name: str, description: str | None, when: datetime,
            author: str = "witness-bot", status: str = "success") -> None:
        items = self.by_commit.setdefault((project, sha), [])
        items.append({"id": len(items) + 1, "sha": sha, "ref": "main", "status": status, "name": name,
                      "target_url": None, "description": description,
                      "created_at": when.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "started_at": None,
                      "finished_at": None, "allow_failure": False, "coverage": None,
                      "author": {"id": 7, "username": author, "name": author, "state": "active"}})

