"""The GitLab CI provider: the facts of one deployment from predefined variables and the API v4.

Sources: the predefined variables (``CI_PROJECT_ID``, ``CI_PROJECT_PATH``, ``CI_COMMIT_SHA``,
``CI_COMMIT_REF_NAME``, ``CI_PIPELINE_ID``, ``CI_PIPELINE_URL``, ``CI_PIPELINE_SOURCE``,
``CI_JOB_URL``, ``CI_MERGE_REQUEST_IID``, ``GITLAB_USER_LOGIN``, ``CI_ENVIRONMENT_NAME``,
``CI_API_V4_URL``) and the REST API with ``GITLAB_TOKEN`` (sent as ``PRIVATE-TOKEN``) or, when
that is not set, ``CI_JOB_TOKEN`` (sent as ``JOB-TOKEN``). The job token cannot read merge
requests or their approvals, so with it alone those facts are ``unavailable`` and the rules
that need them are ``error``: use a project access token with ``read_api``.

Approvals carry no commit. An approval is recorded on the merge request's head commit only
when the project resets approvals on every push (``reset_approvals_on_push``, read from the
project's approval settings): then every approval still on record was given to the current
head. Otherwise, or when that setting cannot be read, approvals are recorded without a commit,
so ``require_current_commit`` treats them as stale (fail closed).

Who approved, and whether they may: each approver (``approved_by[].user``) is looked up once,
concurrently, with ``GET /projects/:id/members/all/:user_id`` (inherited members included); the
approval then carries ``permission`` from the access level (Owner 50 admin, Maintainer 40
maintain, Developer 30 write, below read) and ``role``; only Developer and above count. GitLab
answers 404 for a user who is not a member: ``none``. Any other failure leaves ``permission``
null with ``permission_error``, so the approval cannot count. Bot users (project and group access
tokens' ``project_N_bot...``, or ``user.bot``) are flagged ``bot`` and not looked up; a deleted
user (GitLab's ``ghost``, or no user) is flagged ``deleted``.

The merge request records ``merge_commit`` (``merge_commit_sha``) and ``squash_commit``
(``squash_commit_sha``); with a fast-forward merge the deployed commit is the head itself.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

from msgspec import Struct

from policyengine.change import time_problem
from policyengine.errors import UsageError
from policyengine.providers import shapes
from policyengine.providers.base import Gathered, PreviousDeploys
from policyengine.providers.github import (
    MAX_RANGE_COMMITS,
    SHA_RE,
    WORKERS,
    Facts,
    all_reviews,
    attempt,
    co_authors,
    collect_teams,
    committer_logins,
    finish_range,
    first_line,
    listed_files,
    message_body,
    needs_lookup,
    range_note,
    record_permissions,
    shaped,
    start_range,
    team_mapping,
    teams_from,
)
from policyengine.providers.http import ApiError, HttpSession, HttpSettings, TokenInfo
from policyengine.redact import Redactor

_GITLAB_NOREPLY_RE = re.compile(r"^(?:\d+-)?([A-Za-z0-9_.][A-Za-z0-9_.-]*)@users\.noreply\.[A-Za-z0-9.-]+$",
                                re.IGNORECASE)
_BOT_RE = re.compile(r"^(?:project|group)_\d+_bot(?:_[0-9a-f]+)?$|\[bot\]$|^ghost$", re.IGNORECASE)

JOB_STATUS = {
    "success": "success",
    "failed": "failure",
    "canceled": "cancelled",
    "canceling": "cancelled",
    "skipped": "skipped",
    "manual": "manual",
}
"""GitLab job statuses in the change's vocabulary; every other status (created, pending, running...) is pending."""


class GitLabConfig(Struct, frozen=True):
    """The variables of one GitLab CI job that the provider uses."""

    project: str  # the id, or the URL-encoded path
    repository: str
    sha: str
    environment: str
    token: TokenInfo
    api_url: str
    ref: str | None
    mr_iid: int | None
    user: str | None
    pipeline_id: str | None
    pipeline_url: str | None
    job_url: str | None
    source: str | None
    teams: tuple[str, ...]
    team_map: tuple[tuple[str, str], ...] = ()


def _need(env: Mapping[str, str], name: str, why: str) -> str:
    value = (env.get(name) or "").strip()
    if not value:
        raise UsageError(f"{name} is not set: the GitLab provider needs it for {why}",
                         hint="run inside GitLab CI, or use --provider local with --change FILE")
    return value


def read_config(env: Mapping[str, str], environment: str | None, teams: Sequence[str] | None = None) -> GitLabConfig:
    """Read and check the job's variables; a missing mandatory one is a ``UsageError`` naming it."""
    repository = _need(env, "CI_PROJECT_PATH", "the repository (group/project)")
    project = (env.get("CI_PROJECT_ID") or "").strip() or quote(repository, safe="")
    sha = _need(env, "CI_COMMIT_SHA", "the deployed commit")
    if not SHA_RE.match(sha):
        raise UsageError(f"CI_COMMIT_SHA: {sha!r} is not a commit SHA")
    environment = (environment or env.get("CI_ENVIRONMENT_NAME") or "").strip()
    if not environment:
        raise UsageError("no environment: CI_ENVIRONMENT_NAME is not set (give the job an `environment:`), "
                         "and neither is POLICYENGINE_ENVIRONMENT (--environment)")
    api_url = _need(env, "CI_API_V4_URL", "the API address")
    if env.get("GITLAB_TOKEN"):
        token = TokenInfo("PRIVATE-TOKEN", env["GITLAB_TOKEN"], "GITLAB_TOKEN")
    elif env.get("CI_JOB_TOKEN"):
        token = TokenInfo("JOB-TOKEN", env["CI_JOB_TOKEN"], "CI_JOB_TOKEN")
    else:
        raise UsageError("GITLAB_TOKEN is not set (nor CI_JOB_TOKEN): the GitLab provider reads merge requests "
                         "and approvals through the API",
                         hint="set GITLAB_TOKEN to a project access token with the read_api scope")
    iid_raw = (env.get("CI_MERGE_REQUEST_IID") or "").strip()
    mr_iid = int(iid_raw) if iid_raw.isdigit() else None
    return GitLabConfig(
        project=project,
        repository=repository,
        sha=sha.lower(),
        environment=environment,
        token=token,
        api_url=api_url.rstrip("/"),
        ref=env.get("CI_COMMIT_REF_NAME") or None,
        mr_iid=mr_iid,
        user=env.get("GITLAB_USER_LOGIN") or None,
        pipeline_id=env.get("CI_PIPELINE_ID") or None,
        pipeline_url=env.get("CI_PIPELINE_URL") or None,
        job_url=env.get("CI_JOB_URL") or None,
        source=env.get("CI_PIPELINE_SOURCE") or None,
        teams=teams_from(env, teams),
        team_map=tuple(team_mapping(env).items()),
    )


def is_bot(username: str | None) -> bool:
    """Whether a username is a project/group access token's bot user (or unknown)."""
    return not username or bool(_BOT_RE.search(username))


def _username(obj: Any) -> str | None:
    return obj.get("username") if isinstance(obj, dict) and isinstance(obj.get("username"), str) else None


def map_merge_request(mr: dict[str, Any]) -> dict[str, Any]:
    """The change's ``pull_request`` from a GitLab merge request."""
    merge = mr.get("merge_commit_sha")
    squash = mr.get("squash_commit_sha")
    labels = []
    for lbl in mr.get("labels") or []:
        name = lbl.get("name") if isinstance(lbl, dict) else lbl
        if isinstance(name, str):
            labels.append(name)
    return {
        "number": int(mr["iid"]),
        "title": mr.get("title"),
        "author": _username(mr.get("author")) or "ghost",
        "head_commit": str(mr["sha"]).lower(),
        "merge_commit": str(merge).lower() if merge and SHA_RE.match(str(merge)) else None,
        "squash_commit": str(squash).lower() if squash and SHA_RE.match(str(squash)) else None,
        "url": mr.get("web_url"),
        "state": mr.get("state"),
        "merged_by": _username(mr.get("merge_user")) or _username(mr.get("merged_by")),
        "base_ref": mr.get("target_branch"),
        "head_ref": mr.get("source_branch"),
        "description": mr.get("description") if isinstance(mr.get("description"), str) else None,
        "labels": labels,
    }


ACCESS_LEVELS = ((50, "admin", "Owner"), (40, "maintain", "Maintainer"), (30, "write", "Developer"),
                 (20, "read", "Reporter"), (15, "read", "Planner"), (10, "read", "Guest"), (5, "read", "Minimal Access"))


def map_access_level(data: dict[str, Any]) -> tuple[str, str | None]:
    """``(permission, role)`` of a member from its ``access_level``; an inactive member has none."""
    level = data["access_level"]
    if not isinstance(level, int) or isinstance(level, bool):
        raise TypeError(f"access_level {level!r} is not an integer")
    if data.get("state", "active") != "active":
        return "none", f"{data.get('state')} member"
    for floor, permission, role in ACCESS_LEVELS:
        if level >= floor:
            return permission, role
    return "none", None


def _person(email: Any, name: Any) -> str | None:
    if isinstance(email, str) and email:
        m = _GITLAB_NOREPLY_RE.match(email)
        return m.group(1) if m else email.lower()
    return name if isinstance(name, str) and name else None


def map_commit(c: dict[str, Any], pull_request: int | None) -> dict[str, Any]:
    """One commit. GitLab gives names and e-mails, not usernames: a no-reply address gives the username."""
    message = c.get("message") or c.get("title")
    out = {
        "sha": str(c["id"]).lower(),
        "author": _person(c.get("author_email"), c.get("author_name")),
        "committer": _person(c.get("committer_email"), c.get("committer_name")),
        "committed_at": next((v for v in (c.get("committed_date"), c.get("authored_date"))
                              if isinstance(v, str) and time_problem(v) is None), None),
        "co_authors": co_authors(message, _GITLAB_NOREPLY_RE),
        "message": first_line(message),
        "pull_request": pull_request,
    }
    body = message_body(message)
    if body:  # only when the message has more than its subject (e.g. a Refs: PAY-101 trailer)
        out["body"] = body
    return out


def map_job(job: dict[str, Any], sha: str) -> dict[str, Any]:
    """A pipeline job as a check. Its creator is GitLab itself: the pipeline jobs API lists the
    pipeline's own jobs, never an external commit status someone posted (``checks_passed``)."""
    commit: dict[str, Any] = job["commit"] if isinstance(job.get("commit"), dict) else {}
    return {
        "name": str(job["name"]),
        "status": JOB_STATUS.get(str(job.get("status")), "pending"),
        "commit": str(commit.get("id") or sha).lower(),
        "completed_at": job.get("finished_at"),
        "url": job.get("web_url"),
        "kind": "job",
        "creator": "gitlab",
    }


def pick_merge_request(cands: Iterable[Any], sha: str, *, merged_only: bool = False) -> dict[str, Any] | None:
    """The merge request that brought ``sha``: merged as it, else headed by it, else merged, else any."""
    mrs = [m for m in cands if isinstance(m, dict)]
    merged = [m for m in mrs if m.get("state") == "merged"]

    def merged_as(m: dict[str, Any]) -> bool:
        return sha in {str(m.get("merge_commit_sha") or "").lower(), str(m.get("squash_commit_sha") or "").lower()}

    for group in (
        [m for m in merged if merged_as(m)],
        [m for m in (merged if merged_only else mrs) if str(m.get("sha") or "").lower() == sha],
        merged,
        [] if merged_only else mrs,
    ):
        if group:
            return group[0]
    return None


def pick_merged_merge_request(cands: Iterable[Any], sha: str) -> dict[str, Any] | None:
    """The merged merge request that brought ``sha`` into the branch (change ranges)."""
    return pick_merge_request(cands, sha, merged_only=True)


def _deployment(d: dict[str, Any]) -> dict[str, Any]:
    job = d["deployable"] if isinstance(d.get("deployable"), dict) else {}
    return {"sha": str(d["sha"]).lower(), "id": d["id"], "url": job.get("web_url"),
            "created_at": d.get("created_at"), "source": "gitlab-deployments"}


def make_session(cfg: GitLabConfig, env: Mapping[str, str], redactor: Redactor) -> HttpSession:
    """The API session for this job."""
    name = cfg.token.name

    def permission(path: str) -> str | None:
        if name == "CI_JOB_TOKEN" and "/merge_requests" in path:
            return ("access to the merge requests API, which CI_JOB_TOKEN never has: set GITLAB_TOKEN to a project "
                    "access token with the `read_api` scope")
        return "the `read_api` scope (and at least the Reporter role)"

    job_token = ("CI_JOB_TOKEN cannot read merge requests or their approvals: set GITLAB_TOKEN to a project access "
                 "token with the `read_api` scope") if name == "CI_JOB_TOKEN" else None
    return HttpSession(cfg.api_url, token=cfg.token, provider="gitlab", settings=HttpSettings.from_env(env),
                       redactor=redactor, permission_hint=permission, unauthorized_hint=job_token,
                       block_on_401=job_token is None)


class _GitLab:
    """One gathering: the session, the job's configuration and a thread pool."""

    def __init__(self, cfg: GitLabConfig, session: HttpSession, pool: ThreadPoolExecutor,
                 history: PreviousDeploys | None) -> None:
        self.cfg = cfg
        self.s = session
        self.pool = pool
        self.history = history
        self.p = f"/projects/{cfg.project}"
        self.short = cfg.sha[:7]

    def merge_request(self) -> dict[str, Any] | None:
        iid = self.cfg.mr_iid
        if iid is None:
            path = f"{self.p}/repository/commits/{self.cfg.sha}/merge_requests"
            cands = shapes.check("GET", path, self.s.get_pages(path, name=f"commits_{self.short}_merge_requests"),
                                 shapes.List(shapes.GL_MR_SIMPLE))
            chosen = shaped("GET", path, lambda: pick_merge_request(cands, self.cfg.sha))
            if chosen is None:
                return None
            iid = int(chosen["iid"])
        path = f"{self.p}/merge_requests/{iid}"
        data = shapes.check("GET", path, self.s.get_json(path, name=f"merge_requests_{iid}"), shapes.GL_MR)
        return shaped("GET", path, lambda: {"api": data, "mapped": map_merge_request(data)})

    def resets_approvals(self) -> bool | None:
        """Whether the project removes approvals when commits are pushed (None: unknown)."""
        try:
            data = self.s.get_json(f"{self.p}/approvals", name="project_approvals")
        except ApiError:
            return None
        value = data.get("reset_approvals_on_push") if isinstance(data, dict) else None
        return value if isinstance(value, bool) else None

    def approvals(self, iid: int, head: str, resets: bool | None) -> list[dict[str, Any]]:
        path = f"{self.p}/merge_requests/{iid}/approvals"
        data = shapes.check("GET", path, self.s.get_json(path, name=f"merge_requests_{iid}_approvals"),
                            shapes.GL_APPROVALS)

        def build() -> list[dict[str, Any]]:
            out = []
            for entry in data.get("approved_by") or []:
                obj = entry.get("user") if isinstance(entry, dict) else None
                user = _username(obj)
                review: dict[str, Any] = {"user": user or "ghost", "state": "approved",
                                          "commit": head if resets else None,
                                          "submitted_at": entry.get("approved_at") if isinstance(entry, dict) else None}
                if not user or user.lower() == "ghost" or (isinstance(obj, dict) and obj.get("ghost") is True):
                    review["deleted"] = True
                elif is_bot(user) or (isinstance(obj, dict) and obj.get("bot") is True):
                    review["bot"] = True
                elif isinstance(obj, dict) and isinstance(obj.get("id"), int):
                    review["user_id"] = obj["id"]  # for the member lookup; removed once looked up
                out.append(review)
            return out

        return shaped("GET", path, build)

    def member(self, user_id: int) -> tuple[str, str | None]:
        """An approver's access to the project: ``(permission, role)``; not a member: ``none``."""
        path = f"{self.p}/members/all/{user_id}"
        try:
            data = self.s.get_json(path, name=f"members_all_{user_id}")
        except ApiError as exc:
            if exc.status == 404:
                return "none", None
            raise
        return shaped("GET", path, map_access_level, data)

    def mr_commits(self, iid: int) -> list[dict[str, Any]]:
        path = f"{self.p}/merge_requests/{iid}/commits"
        items = shapes.check("GET", path, self.s.get_pages(path, name=f"merge_requests_{iid}_commits"),
                             shapes.List(shapes.GL_COMMIT))
        return shaped("GET", path, lambda: [map_commit(c, iid) for c in items])

    def files(self, iid: int) -> list[str]:
        path = f"{self.p}/merge_requests/{iid}/diffs"
        try:
            items = self.s.get_pages(path, name=f"merge_requests_{iid}_diffs")
        except ApiError as exc:
            if exc.status != 404:
                raise
            # GitLab before 15.7 has no /diffs; /changes lists at most a configured number of files.
            cpath = f"{self.p}/merge_requests/{iid}/changes"
            data = self.s.get_json(cpath, name=f"merge_requests_{iid}_changes")
            shapes.check("GET", cpath, data, shapes.GL_CHANGES)
            if data.get("overflow"):
                raise ApiError("GET", cpath, 200, "the merge request has more changed files than the API lists "
                               "(overflow)") from None
            items = data["changes"]
            path = cpath
        shapes.check("GET", path, items, shapes.List(shapes.GL_DIFF))

        def build() -> list[str]:
            out: list[str] = []
            for d in items or []:
                for name in (d["new_path"], d.get("old_path")):
                    if name and name not in out:
                        out.append(name)
            return out

        return shaped("GET", path, build)

    def jobs(self) -> list[dict[str, Any]]:
        if not self.cfg.pipeline_id:
            raise ApiError("GET", f"{self.p}/pipelines/?/jobs", None, "CI_PIPELINE_ID is not set, so the "
                           "pipeline's jobs cannot be read")
        path = f"{self.p}/pipelines/{self.cfg.pipeline_id}/jobs"
        items = shapes.check("GET", path, self.s.get_pages(path, name=f"pipelines_{self.cfg.pipeline_id}_jobs"),
                             shapes.List(shapes.GL_JOB))
        return shaped("GET", path, lambda: [map_job(j, self.cfg.sha) for j in items])

    def test_summary(self) -> str | None:
        if not self.cfg.pipeline_id:
            return None
        path = f"{self.p}/pipelines/{self.cfg.pipeline_id}/test_report_summary"
        try:
            data = self.s.get_json(path, name=f"pipelines_{self.cfg.pipeline_id}_test_report_summary")
            total = data["total"]
            return (f"pipeline test report (GitLab, for information; rules read JUnit files): {total['count']} "
                    f"tests, {total['success']} passed, {total['failed']} failed, {total['error']} errors, "
                    f"{total['skipped']} skipped")
        except ApiError as exc:
            return f"pipeline test report summary not read: {exc}"
        except (KeyError, TypeError):
            return f"pipeline test report summary not read: GET {path}: unexpected answer shape"

    def team(self, name: str) -> list[str]:
        """The direct active members of the GitLab group the policy's team ``name`` stands for.

        Only a documented mapping names a group: ``POLICYENGINE_TEAMS`` (``name=group/path``, or a
        bare path standing for itself), or a path under the project's own top-level namespace. A
        bare name is never looked up as a top-level group: on a shared instance it may be a
        stranger's.
        """
        mapped = dict(self.cfg.team_map).get(name)
        top = self.cfg.repository.split("/")[0]
        if mapped is None and not (name.startswith(top + "/") and len(name) > len(top) + 1):
            raise ApiError("GET", "/groups/?/members", None,
                           f"team {name!r} is not mapped to a GitLab group: set POLICYENGINE_TEAMS to "
                           f"{name}=<group path> (a bare name is never looked up as a top-level group)")
        name = mapped or name
        path = f"/groups/{quote(name, safe='')}/members"
        items = shapes.check("GET", path, self.s.get_pages(
            path, name=f"groups_{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}_members"), shapes.List(shapes.GL_MEMBER))
        return shaped("GET", path, lambda: sorted({str(m["username"]) for m in items
                                                   if m.get("state", "active") == "active"}, key=str.casefold))

    def previous_deploy(self) -> dict[str, Any] | None:
        path = f"{self.p}/deployments"
        deps = self.s.get_json(path, {"environment": self.cfg.environment, "status": "success",
                                      "order_by": "id", "sort": "desc", "per_page": 20}, name="deployments")
        shapes.check("GET", path, deps, shapes.List(shapes.GL_DEPLOYMENT))
        for d in deps:
            if d.get("status", "success") == "success":
                return shaped("GET", path, _deployment, d)
        return None

    def change_range(self, previous: dict[str, Any] | None, deployed: dict[str, Any] | None,
                     deployed_reviews: list[dict[str, Any]] | None, deployed_commits: list[dict[str, Any]] | None,
                     resets: bool | None) -> tuple[dict[str, Any], list[str], list[str] | str]:
        notes: list[str] = []
        sha = self.cfg.sha
        rng, note, done = start_range(previous, sha, self.cfg.environment, "GitLab deployments", self.history)
        if done:
            return rng, [note] if note else [], []
        prev = rng["previous_commit"]
        path = f"{self.p}/repository/compare"
        data = shapes.check("GET", path, self.s.get_json(path, {"from": prev, "to": sha},
                                                         name=f"compare_{prev[:7]}_{sha[:7]}"), shapes.GL_COMPARE)
        items = shaped("GET", path, lambda: list(data["commits"]))
        range_files = compare_diffs(path, data)
        rng["status"] = "ahead" if items else "behind"
        if len(items) > MAX_RANGE_COMMITS:
            raise ApiError("GET", path, 200, f"the range has {len(items)} commits, more than the "
                           f"{MAX_RANGE_COMMITS} policyengine attributes to merge requests one by one")
        known: dict[str, int] = {}
        mrs: dict[int, dict[str, Any]] = {}
        committers: dict[int, list[dict[str, Any]]] = {}
        if deployed is not None:
            n = deployed["mapped"]["number"]
            mrs[n] = deployed["api"]
            for c in deployed_commits or []:
                known[c["sha"]] = n
            if sha in (deployed["mapped"].get("merge_commit"), deployed["mapped"].get("squash_commit"),
                       deployed["mapped"]["head_commit"]):
                known[sha] = n
            if deployed_commits is not None:
                committers[n] = deployed_commits
        shas = [str(c["id"]).lower() for c in items]
        unknown = [s for s in shas if s not in known]
        while unknown:
            batch, unknown = unknown[:WORKERS * 2], unknown[WORKERS * 2:]
            futures = {s: self.pool.submit(self.s.get_pages, f"{self.p}/repository/commits/{s}/merge_requests",
                                           name=f"commits_{s[:7]}_merge_requests") for s in batch}
            found: list[int] = []
            for s, fut in futures.items():
                if s in known:
                    continue
                cpath = f"{self.p}/repository/commits/{s}/merge_requests"
                cands = shapes.check("GET", cpath, fut.result(), shapes.List(shapes.GL_MR_SIMPLE))
                mr = shaped("GET", cpath, pick_merged_merge_request, cands, s)
                if mr is None:
                    continue
                n = int(mr["iid"])
                known[s] = n
                if n not in mrs:
                    mrs[n] = mr
                    found.append(n)
            cfuts = {n: self.pool.submit(self.mr_commits, n) for n in found}
            for n, fut in cfuts.items():
                committers[n] = fut.result()
                for c in committers[n]:
                    known.setdefault(c["sha"], n)
            unknown = [s for s in unknown if s not in known]
        by_sha = {str(c["id"]).lower(): c for c in items}
        rng["commits"] = [shaped("GET", path, map_commit, by_sha[s], known.get(s)) for s in shas]
        numbers = sorted({known[s] for s in shas if s in known})
        deployed_n = deployed["mapped"]["number"] if deployed is not None else None
        afuts = {n: self.pool.submit(self.approvals, n, str(mrs[n]["sha"]).lower(), resets) for n in numbers
                 if not (n == deployed_n and deployed_reviews is not None)}
        rng["pull_requests"] = []
        for n in numbers:
            reviews = afuts[n].result() if n in afuts else deployed_reviews or []
            mapped = shaped("GET", f"{self.p}/merge_requests/{n}", map_merge_request, mrs[n])
            mapped["reviews"] = reviews
            mapped["committers"] = committer_logins(committers.get(n, []))
            rng["pull_requests"].append(mapped)
        notes.append(range_note(rng, self.cfg.environment, "merge request"))
        return rng, notes, range_files


MAX_COMPARE_DIFFS = 1000
"""A compare answer listing this many diffs may be cut short by the instance's diff limits."""


def compare_diffs(path: str, data: Any) -> list[str] | str:
    """The files of a compare answer (``diffs``), or why they cannot be listed."""
    if not isinstance(data, dict) or not isinstance(data.get("diffs"), list):
        return f"GET {path}: HTTP 200 but the answer has no list of diffs"
    if data.get("compare_timeout") is True:
        return f"GET {path}: the comparison timed out (compare_timeout), so its list of files is incomplete"
    return listed_files(path, data["diffs"], ("new_path", "old_path"), MAX_COMPARE_DIFFS, "diff")


def gather_gitlab(
    env: Mapping[str, str],
    *,
    environment: str | None = None,
    previous_deploys: PreviousDeploys | None = None,
    teams: Sequence[str] | None = None,
    session: HttpSession | None = None,
) -> Gathered:
    """Build the normalized change for the deployment this GitLab CI job performs.

    ``teams``: GitLab group paths whose direct, active members are listed under the change's
    ``teams`` (default: the comma list in ``POLICYENGINE_TEAMS``).
    """
    cfg = read_config(env, environment, teams)
    redactor = Redactor.from_env(env, [cfg.token.value])
    s = session or make_session(cfg, env, redactor)
    owner = session is None
    facts = Facts(change={
        "repository": cfg.repository,
        "environment": cfg.environment,
        "commit": cfg.sha,
        "ref": cfg.ref,
        "facts_source": "gitlab",
        "pipeline": {"provider": "gitlab", "id": cfg.pipeline_id or "unknown", "attempt": None,
                     "url": cfg.pipeline_url, "job_url": cfg.job_url, "event": cfg.source},
    })
    try:
        with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="policyengine-gitlab") as pool:
            g = _GitLab(cfg, s, pool, previous_deploys)
            _gather(g, facts, pool)
            _look_up_approvers(g, facts, pool)
    finally:
        raw = dict(sorted(s.raw.items()))
        if owner:
            s.close()
    return Gathered(change=facts.finish(), raw=raw)


def _gather(g: _GitLab, facts: Facts, pool: ThreadPoolExecutor) -> None:
    cfg = g.cfg
    change = facts.change
    f_mr = pool.submit(g.merge_request)
    f_resets = pool.submit(g.resets_approvals)
    f_jobs = pool.submit(g.jobs)
    f_tests = pool.submit(g.test_summary)
    f_teams = {t: pool.submit(g.team, t) for t in cfg.teams}
    f_prev = pool.submit(g.previous_deploy)

    mr, err = attempt(f_mr.result)
    resets = f_resets.result()
    reviews: list[dict[str, Any]] | None = None
    commits: list[dict[str, Any]] | None = None
    if err is not None:
        facts.missing(err, "pull_request", "reviews", "commits", "files_changed")
    elif mr is None:
        change["pull_request"] = None
        change["reviews"] = []
        facts.notes.append(f"no merge request brought commit {cfg.sha[:7]}: it was pushed without one, so nobody "
                           "approved it")
        path = f"{g.p}/repository/commits/{cfg.sha}"
        try:
            data = shapes.check("GET", path, g.s.get_json(path, name=f"commits_{g.short}"), shapes.GL_COMMIT)
            commits = [shaped("GET", path, lambda: map_commit(data, None))]
            change["commits"] = commits
        except ApiError as exc:
            facts.missing(exc, "commits")
        try:
            diff = shapes.check("GET", f"{path}/diff", g.s.get_pages(f"{path}/diff", name=f"commits_{g.short}_diff"),
                                shapes.List(shapes.GL_DIFF))
            change["files_changed"] = shaped("GET", f"{path}/diff", lambda: sorted(
                {p for d in diff for p in (d["new_path"], d.get("old_path")) if p}))
        except ApiError as exc:
            facts.missing(exc, "files_changed")
    else:
        mapped, n = mr["mapped"], mr["mapped"]["number"]
        change["pull_request"] = mapped
        if cfg.sha not in (mapped.get("merge_commit"), mapped.get("squash_commit"), mapped["head_commit"]):
            facts.notes.append(
                f"deployed commit {cfg.sha[:7]} is neither the merge commit "
                f"({str(mapped.get('merge_commit') or mapped.get('squash_commit'))[:7]}) "
                f"nor the head ({mapped['head_commit'][:7]}) of merge request !{n}: the approval facts are those "
                f"of !{n}")
        if resets is True:
            facts.notes.append(f"approvals are recorded on the head commit of !{n}: the project removes approvals "
                               "when commits are pushed (reset_approvals_on_push)")
        else:
            facts.notes.append(
                "GitLab approvals carry no commit and the project does not (or may not) reset approvals on push: "
                "approvals are recorded without a commit, so require_current_commit counts them as stale")
        f_appr = pool.submit(g.approvals, n, mapped["head_commit"], resets)
        f_commits = pool.submit(g.mr_commits, n)
        f_files = pool.submit(g.files, n)
        got_reviews, aerr = attempt(f_appr.result)
        if aerr is not None:
            facts.missing(aerr, "reviews")
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

    jobs, jerr = attempt(f_jobs.result)
    if jerr is not None:
        facts.missing(jerr, "checks")
    else:
        change["checks"] = jobs
    summary = f_tests.result()
    if summary:
        facts.notes.append(summary)

    collect_teams(facts, f_teams)

    merged_by = mr["mapped"].get("merged_by") if mr else None
    if cfg.user and not is_bot(cfg.user):
        change["deployer"], change["deployer_source"] = cfg.user, "GITLAB_USER_LOGIN"
    elif merged_by and not is_bot(merged_by):
        change["deployer"], change["deployer_source"] = merged_by, "merge_request.merged_by"
        facts.notes.append(f"GITLAB_USER_LOGIN {cfg.user or '(unset)'} is not a person; the deployer is {merged_by}, "
                           "who merged the merge request")
    else:
        change["deployer"], change["deployer_source"] = None, None
        facts.notes.append("no person is known to have triggered this deploy")
        if err is not None:
            facts.missing(err, "deployer")

    finish_range(g, facts, f_prev, "GitLab deployments", lambda previous: g.change_range(
        previous, mr, reviews, commits, resets) if err is None else None, err)


def _look_up_approvers(g: _GitLab, facts: Facts, pool: ThreadPoolExecutor) -> None:
    """Look up, once each and at once, the access level of every person who approved."""
    reviews = all_reviews(facts.change)
    ids = sorted({r["user_id"] for r in reviews if needs_lookup(r) and isinstance(r.get("user_id"), int)})
    futures = {i: pool.submit(g.member, i) for i in ids}
    results = {i: attempt(f.result) for i, f in futures.items()}
    missing: tuple[None, ApiError] = (None, ApiError("GET", f"{g.p}/members/all/?", 200,
                                                     "the approvals answer gave no user id to look up"))
    for review in reviews:
        if needs_lookup(review) and not isinstance(review.get("user_id"), int):
            record_permissions([review], lambda r: "?", {"?": missing})
    record_permissions(reviews, lambda r: r.get("user_id"), results)
    for review in reviews:
        review.pop("user_id", None)
