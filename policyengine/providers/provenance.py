"""Which job of this run produced each test report (``tests_passed`` ``provenance: same_run``).

The platform is the witness, never the workspace: a file in the workspace says nothing about
where it came from, and the change controls the workspace.

GitHub Actions: the report's bytes are an artifact of this workflow run
    ``GET /repos/{owner}/{repo}/actions/runs/{run_id}/artifacts`` (every page; a list shorter
    than its ``total_count`` is a partial answer: error). Artifacts are zip archives, and the
    listed ``digest`` is the SHA-256 of the zip, not of the report, so each unexpired artifact
    of the run is downloaded (``archive_download_url``; the API redirects to storage on another
    host, fetched without the token), checked against its listed ``digest``, and the SHA-256 of
    each member compared with the report's. At most ``MAX_ARTIFACTS`` archives of at most
    ``MAX_ARTIFACT_BYTES`` each are read, members of at most ``MAX_MEMBER_BYTES``
    (decompressed, counted while reading): when a report is not found and an archive was left
    unread, the answer is an error, never a fail or a pass. An artifact listed for another run
    (``workflow_run.id``) is never used.

    "Produced in this job" is not accepted: nothing the platform records ties a workspace file
    to the job, and every step of the job (the change's own code) can write the workspace. A
    job that tests and deploys uploads its report as an artifact first (``actions/upload-
    artifact``), which the API lists while the run is still in progress.

GitLab CI: this pipeline's test report holds the report's test cases
    ``GET /projects/:id/pipelines/:pipeline_id/test_report``: GitLab parsed the JUnit
    ``artifacts:reports:junit`` that the jobs of this pipeline uploaded, one suite per job name,
    with the jobs' ids (``build_ids``). A report counts when every one of its test cases
    (classname, name and status, read as GitLab reads them: ``junit.read_cases``) is in one
    suite with job ids. Compared as sets: GitLab may keep one entry per name and status. A
    suite that lists fewer test cases than its ``total_count``, or a ``suite_error``, cannot
    rule a report out: an error when no other suite holds the report.

Both: the run is the verified OIDC claim (``run_id``, ``pipeline_id``) when the bundle's
identity verified, else ``GITHUB_RUN_ID`` / ``CI_PIPELINE_ID``. What this proves: the file went
through this run's artifact store (or GitLab's parser). What it does not: that honest tests
produced it; a job of the run runs the change's code (guard the pipeline with
``policy_owners``).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from policyengine.errors import PolicyEngineError, ReportError, WorkspaceError
from policyengine.facts import ProvenanceFact, ReportFact
from policyengine.workspace.files import Workspace

if TYPE_CHECKING:
    from policyengine.providers.http import HttpSession

MAX_ARTIFACTS = 20
"""Artifact archives downloaded at most, per run."""
MAX_ARTIFACT_BYTES = 64 * 1024 * 1024
"""The largest archive downloaded."""
MAX_MEMBER_BYTES = 64 * 1024 * 1024
"""The most bytes read of one archive member (decompressed)."""
MAX_MEMBERS = 1000
"""Members of one archive read at most."""

def _shapes() -> tuple[Any, Any]:
    """The shapes of the answers read here (GitHub's artifact list page, GitLab's test report),
    built when a platform is asked: a check that asks none does not import the HTTP client."""
    from policyengine.providers import shapes

    gh_artifact = shapes.Obj({
        "id": shapes.INT, "name": shapes.STR, "size_in_bytes": shapes.COUNT, "archive_download_url": shapes.STR,
        "expired": shapes.BOOL, "digest": shapes.Opt(shapes.STR),
        "workflow_run": shapes.Opt(shapes.Obj({"id": shapes.Opt(shapes.INT)})),
    })
    gh_artifacts_page = shapes.Obj({"total_count": shapes.COUNT, "artifacts": shapes.List(gh_artifact)})
    gl_test_case = shapes.Obj({"status": shapes.STR, "name": shapes.Opt(shapes.STR),
                               "classname": shapes.Opt(shapes.STR)})
    gl_test_report = shapes.Obj({"test_suites": shapes.List(shapes.Obj({
        "name": shapes.STR, "total_count": shapes.COUNT, "build_ids": shapes.Opt(shapes.List(shapes.INT)),
        "suite_error": shapes.Opt(shapes.STR), "test_cases": shapes.Opt(shapes.List(gl_test_case)),
    }))})
    return gh_artifacts_page, gl_test_report


MEMBER = "provenance.json"
"""The record of the producers, under ``raw/`` in the bundle."""


def _record(fact: ProvenanceFact) -> bytes:
    doc = {"platform": fact.platform, "run": fact.run, "error": fact.error,
           "reports": [{"path": p, "sha256": d, "producer": prod} for p, d, prod in fact.producers]}
    if fact.run_from is not None:
        doc["run_from"] = fact.run_from
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _finish(fact: ProvenanceFact, raw: Mapping[str, bytes]) -> ProvenanceFact:
    return ProvenanceFact(platform=fact.platform, run=fact.run, producers=fact.producers, error=fact.error,
                          record=_record(fact), raw=tuple(sorted(raw.items())), source="live", run_from=fact.run_from)


def _sha256_file(workspace: Workspace, rel: str) -> str:
    digest = hashlib.sha256()
    with open(workspace.resolve(rel), "rb") as fh:
        while chunk := fh.read(1 << 18):
            digest.update(chunk)
    return digest.hexdigest()


# -- GitHub -----------------------------------------------------------------------------------


def _member_digests(data: bytes) -> dict[str, str]:
    """sha256 -> member name of each file of a zip archive; raises ValueError when it cannot be read whole."""
    out: dict[str, str] = {}
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        infos = [i for i in z.infolist() if not i.is_dir()]
        if len(infos) > MAX_MEMBERS:
            raise ValueError(f"more than {MAX_MEMBERS} files")
        for info in infos:
            digest, size = hashlib.sha256(), 0
            with z.open(info) as fh:  # counted as read: the declared size of a zip bomb may lie
                while chunk := fh.read(1 << 16):
                    size += len(chunk)
                    if size > MAX_MEMBER_BYTES:
                        raise ValueError(f"{info.filename} is larger than {MAX_MEMBER_BYTES} bytes")
                    digest.update(chunk)
            out.setdefault(digest.hexdigest(), info.filename)
    return out


def github_producers(session: HttpSession, repository: str, server_url: str, run_id: str,
                     wanted: Mapping[str, str]) -> tuple[dict[str, dict[str, Any]], str | None]:
    """``({report sha256: producer}, why some could not be looked for)`` for the digests of
    ``wanted`` (path -> sha256). Raises ``ApiError`` when the artifact list cannot be read whole."""
    from policyengine.providers import shapes
    from policyengine.providers.http import ApiError

    gh_artifacts_page, _ = _shapes()
    path = f"/repos/{repository}/actions/runs/{run_id}/artifacts"
    artifacts: list[dict[str, Any]] = []
    total = None
    for page in session.iter_pages(path, name=f"runs_{run_id}_artifacts"):
        shapes.check("GET", path, page, gh_artifacts_page)
        total = page["total_count"] if total is None else total
        artifacts.extend(page["artifacts"])
    if total is not None and len(artifacts) < total:
        raise ApiError("GET", path, 200, f"the answer lists {len(artifacts)} of {total} artifacts: a partial list "
                       "cannot show that a report is not among them")
    left = set(wanted.values())
    found: dict[str, dict[str, Any]] = {}
    unread: list[str] = []
    downloaded = 0
    for art in sorted(artifacts, key=lambda a: a["id"]):
        if not left:
            break
        run = (art.get("workflow_run") or {}).get("id")
        if art["expired"] or (run is not None and str(run) != str(run_id)):
            continue  # expired: nothing to read; another run's: never evidence of this one
        name = f"artifact {art['id']} ({art['name']})"
        if art["size_in_bytes"] > MAX_ARTIFACT_BYTES:
            unread.append(f"{name} is larger than {MAX_ARTIFACT_BYTES // (1024 * 1024)} MiB")
            continue
        if downloaded >= MAX_ARTIFACTS:
            unread.append(f"{name}: more than {MAX_ARTIFACTS} artifacts")
            continue
        downloaded += 1
        data = session.download(art["archive_download_url"], max_bytes=MAX_ARTIFACT_BYTES)
        listed = art.get("digest")
        if isinstance(listed, str) and listed.startswith("sha256:"):
            if hashlib.sha256(data).hexdigest() != listed.removeprefix("sha256:").lower():
                unread.append(f"{name}: the archive downloaded does not match the digest the API lists")
                continue
        try:
            members = _member_digests(data)
        except (ValueError, zipfile.BadZipFile, OSError, EOFError) as exc:
            unread.append(f"{name} cannot be read as a zip archive ({exc})")
            continue
        for digest in list(left):
            if digest in members:
                left.discard(digest)
                found[digest] = {
                    "artifact_id": art["id"], "artifact": art["name"], "member": members[digest], "run_id": str(run_id),
                    "url": f"{server_url}/{repository}/actions/runs/{run_id}/artifacts/{art['id']}",
                }
    why = "; ".join(unread) if left and unread else None
    return found, why


# -- GitLab -----------------------------------------------------------------------------------


def gitlab_producer(report: Mapping[str, Any], cases: frozenset[tuple[str, str, str]], pipeline_id: str,
                    server_url: str, repository: str) -> tuple[dict[str, Any] | None, str | None]:
    """``(producer, why it cannot be told)`` of a report with these test cases, from the pipeline's
    test report (already shape-checked)."""
    unusable: list[str] = []
    for suite in report["test_suites"]:
        listed = suite.get("test_cases") or []
        ids = suite.get("build_ids") or []
        if suite.get("suite_error"):
            unusable.append(f"suite {suite['name']!r}: GitLab could not read it ({str(suite['suite_error'])[:100]})")
            continue
        if len(listed) < suite["total_count"]:
            unusable.append(f"suite {suite['name']!r} lists {len(listed)} of its {suite['total_count']} test cases")
            continue
        if not ids:
            continue  # no job named: nothing ties it to a job of this pipeline
        held = {(c.get("classname") or "", c.get("name") or "", c["status"]) for c in listed}
        if cases and cases <= held:
            return {"job_ids": list(ids), "suite": suite["name"], "pipeline_id": str(pipeline_id),
                    "url": f"{server_url}/{repository}/-/jobs/{ids[0]}"}, None
    return None, ("; ".join(unusable) if unusable else None)


# -- gathering --------------------------------------------------------------------------------


NO_PLATFORM = ("provenance: same_run needs the CI platform to say which job produced each report: run the gate "
               "in GitHub Actions or GitLab CI with the github or gitlab provider")


class LiveProvenance:
    """Ask the CI platform that gathered the change (``provider``: github or gitlab)."""

    def __init__(self, provider: str | None, env: Mapping[str, str], change: Mapping[str, Any],
                 claims: Mapping[str, Any] | None = None) -> None:
        self.provider = provider
        self.env = env
        self.change = change
        self.claims = claims or {}

    def produced(self, reports: Sequence[ReportFact], workspace: Workspace) -> ProvenanceFact:
        """The producer of each report (hashed again here: a producer names the bytes it matched)."""
        if self.provider not in ("github", "gitlab"):
            return ProvenanceFact(error=NO_PLATFORM, source="live")
        try:
            if self.provider == "github":
                return self._github(reports, workspace)
            return self._gitlab(reports, workspace)
        except PolicyEngineError as exc:  # ApiError, a missing variable (UsageError): the platform did not say
            return ProvenanceFact(platform=self.provider, error=exc.message, source="live")

    def _run(self, claim: str, variable_value: str | None, variable: str) -> tuple[str | None, str]:
        """The run to ask about, and who named it: the verified ID token's claim (``id_token``), else
        the job's own variable (self-asserted: named by the variable)."""
        claimed = self.claims.get(claim)
        return (str(claimed), "id_token") if claimed else (variable_value, variable)

    def _github(self, reports: Sequence[ReportFact], workspace: Workspace) -> ProvenanceFact:
        from policyengine.providers import github
        from policyengine.redact import Redactor

        cfg = github.read_config(self.env, str(self.change.get("environment") or "") or None)
        run_id, run_from = self._run("run_id", cfg.run_id, "GITHUB_RUN_ID")
        if not run_id:
            return ProvenanceFact(platform="github", error="GITHUB_RUN_ID is not set: the workflow run is unknown",
                                  source="live")
        wanted: dict[str, str] = {}
        for rep in reports:
            try:
                wanted[rep.path] = _sha256_file(workspace, rep.path)
            except (OSError, WorkspaceError):
                continue  # unreadable: the rule already errs on it
        session = github.make_session(cfg, self.env, Redactor.from_env(self.env, [cfg.token]))
        try:
            try:
                found, why = github_producers(session, cfg.repository, cfg.server_url, run_id, wanted)
            finally:
                raw = dict(session.raw)
        finally:
            session.close()
        fact = ProvenanceFact(platform="github", run=run_id, run_from=run_from,
                              producers=tuple((p, d, found.get(d)) for p, d in wanted.items()), error=why)
        return _finish(fact, raw)

    def _gitlab(self, reports: Sequence[ReportFact], workspace: Workspace) -> ProvenanceFact:
        from policyengine.providers import gitlab, shapes
        from policyengine.redact import Redactor

        cfg = gitlab.read_config(self.env, str(self.change.get("environment") or "") or None)
        pipeline_id, run_from = self._run("pipeline_id", cfg.pipeline_id, "CI_PIPELINE_ID")
        if not pipeline_id:
            return ProvenanceFact(platform="gitlab", error="CI_PIPELINE_ID is not set: the pipeline is unknown",
                                  source="live")
        server = (self.env.get("CI_SERVER_URL") or "").rstrip("/")
        session = gitlab.make_session(cfg, self.env, Redactor.from_env(self.env, [cfg.token.value]))
        path = f"/projects/{cfg.project}/pipelines/{pipeline_id}/test_report"
        try:
            report = shapes.check("GET", path, session.get_json(path, name=f"pipelines_{pipeline_id}_test_report"),
                                  _shapes()[1])
        finally:
            raw = dict(session.raw)
            session.close()
        producers: list[tuple[str, str, Any]] = []
        problems: list[str] = []
        for rep in reports:
            digest = hashlib.sha256()
            try:
                from policyengine.workspace.junit import read_cases

                cases = read_cases(workspace.resolve(rep.path), digest.update)
            except (ReportError, WorkspaceError):
                continue  # unreadable: the rule already errs on it
            producer, why = gitlab_producer(report, cases, pipeline_id, server, cfg.repository)
            producers.append((rep.path, digest.hexdigest(), producer))
            if producer is None and why:
                problems.append(f"{rep.path}: {why}")
        error = f"GET {path}: " + "; ".join(problems) if problems else None
        return _finish(ProvenanceFact(platform="gitlab", run=pipeline_id, run_from=run_from, producers=tuple(producers),
                                      error=error),
                       raw)


class RecordedProvenance:
    """The record an evidence bundle keeps (``raw/provenance.json``): replay reads it, never the platform."""

    def __init__(self, members: Mapping[str, bytes]) -> None:
        self.data = members.get(f"raw/{MEMBER}")

    def produced(self, reports: Sequence[ReportFact], workspace: Workspace) -> ProvenanceFact:
        if self.data is None:
            return ProvenanceFact(error=f"the bundle records no provenance of the reports (raw/{MEMBER})",
                                  source="recorded")
        try:
            doc = json.loads(self.data.decode("utf-8"))
            producers = tuple((str(r["path"]), str(r["sha256"]), r.get("producer") if isinstance(
                r.get("producer"), dict) else None) for r in doc["reports"])
            error = doc.get("error")
            run_from = doc.get("run_from")  # (absent from records written before it was kept)
            if run_from is not None and not isinstance(run_from, str):
                raise TypeError("run_from")
            return ProvenanceFact(platform=doc.get("platform"), run=doc.get("run"), producers=producers,
                                  error=str(error) if error else None, source="recorded", run_from=run_from)
        except (UnicodeDecodeError, ValueError, KeyError, TypeError):
            return ProvenanceFact(error=f"raw/{MEMBER} in the bundle cannot be read", source="recorded")
