"""Where a policy comes from: a file, or a trusted git source no change can weaken.

``--policy`` (and ``--waivers``, and a policy's ``extends``) takes:

* ``PATH``: a file (in CI usually the checkout's, which the change being judged controls);
* ``git:REF:PATH``: the blob at ``REF:PATH`` in the repository being deployed, never the
  checked-out file;
* ``git:@previous-deploy:PATH``: the same, at the start of the change range (below);
* ``git+URL#REF:PATH``: the same in another repository (a separate policy repository, the
  stronger setup), fetched into a temporary bare repository; ``git+file:///srv/policies.git``
  works for tests and on-prem.

**Under CI a change is never judged by its own policy.** The policy, the waivers and every
base a policy extends are never read from a commit inside the change range: after the trusted
base and up to and including the deployed commit. The trusted base is the trusted previous
deploy (a bundle signed by the trust key); without one, the default branch as it was before
this change, as the platform recorded it, in this order: the ``before`` commit of a push
(GitHub's event ``before``, GitLab's ``CI_COMMIT_BEFORE_SHA``), the first parent of a merge
commit, the target branch's head of a pull or merge request pipeline (GitHub's
``pull_request.base.sha``, GitLab's ``CI_MERGE_REQUEST_TARGET_BRANCH_SHA``). Manual, scheduled
and API runs have none: the gate denies and asks for a trust key. Without a trusted previous
deploy a commit counts as inside the range unless it is the fallback commit or one of its
ancestors; with one, a commit is inside when it is the deployed commit's ancestor (or a
descendant of the previous deploy) but not the previous deploy's ancestor. This is decided by
ancestry, in a temporary repository fetched from the platform's URL (``GITHUB_SERVER_URL`` and
``GITHUB_REPOSITORY``, ``CI_REPOSITORY_URL``, or ``POLICYENGINE_REPOSITORY_URL``) with its
whole history, never by comparing names and never through the workspace's ``.git``, whose
config, refs, replace objects and object store an earlier step may have rewritten. The CI
token reaches git as an HTTP header in git's environment (``gitsafe.auth_header``).

The limit, stated in every run that uses the fallback: without a trust key the fallback is
the branch before this push, which may never have been gated (commit A weakens the policy and
is denied; commit B, pushed next, is judged by A's policy). Only a trust key closes this.

Outside CI a ``git:`` source is read from the workspace as given, and the source says it is not
a trusted source (as a checkout file is not).

A git source that cannot be read (no repository, a fetch that fails, a missing ref or path, a
path that is not a file, an object whose bytes do not hash to its id) raises
``PolicySourceError``: the gate denies, and never falls back to the checkout. Where the policy
came from (ref, commit, path, blob id, the trusted base) is recorded in the decision and the
bundle. Git runs through ``gitsafe``: no value can become an option, no configuration of the
workspace can run a program.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from msgspec import Struct

from policyengine.workspace import gitsafe
from policyengine.language import loader
from policyengine.errors import (
    InvalidInputError,
    PolicySourceError,
    Problem,
    UsageError,
)
from policyengine.language.loader import MAX_FILE_BYTES, read_user_file
from policyengine.language.policy import Policy, parse_policy

_SHA = gitsafe.SHA

CI_VARIABLES = ("CI", "GITHUB_ACTIONS", "GITLAB_CI")
_FALSE = frozenset({"", "0", "false", "no", "off"})
OTHER_CI_MARKERS = ("JENKINS_URL", "TF_BUILD", "BUILDKITE", "CIRCLECI", "TEAMCITY_VERSION",
                    "BITBUCKET_BUILD_NUMBER", "CODEBUILD_BUILD_ID", "DRONE", "TRAVIS")
"""Variables other CI systems set even where ``CI`` is not: the gate's CI-only refusals (a clock
override, waivers from the workspace, a declarer the CI did not verify) hold there too."""


def running_in_ci(env: Mapping[str, str]) -> bool:
    """Whether ``env`` is a CI job: ``CI``, ``GITHUB_ACTIONS`` or ``GITLAB_CI`` set to anything
    but an empty or false value (both code hosts set ``true``; erring towards CI is safe)."""
    return any((env.get(name) or "").strip().casefold() not in _FALSE for name in CI_VARIABLES)


def in_any_ci(env: Mapping[str, str]) -> bool:
    """Whether this runs in any CI: ``running_in_ci``, or another CI system's own marker. The
    refusals that only make sense in CI (a clock override, a simulation releasing a deploy,
    waivers read from the workspace, an unverified emergency declarer, a policy read from the
    change range) use this; it errs towards CI, which is the safe side."""
    return running_in_ci(env) or any((env.get(name) or "").strip().casefold() not in _FALSE
                                     for name in OTHER_CI_MARKERS)


UNTRUSTED_OUTSIDE_CI = ("not a trusted source: outside CI a git source is read from the workspace as given "
                        "(its refs and objects are whatever this machine holds), as a checkout file is")
FALLBACK_LIMIT = ("no trust key (or no trusted previous deploy yet): the trusted base is the default branch before "
                  "this change, which may never have been gated (a policy-weakening commit that was denied still "
                  "becomes the base of the next push); only a trust key (--trust-key with a persistent evidence "
                  "store) closes this")
_FETCH_TIMEOUT = 600  # the platform's repository is fetched with its history


class PolicySource(Struct, frozen=True):
    """Where a policy was read from, as the evidence records it."""

    kind: str  # "file" | "git"
    path: str
    ref: str | None = None
    commit: str | None = None
    blob: str | None = None
    url: str | None = None  # another repository's URL, without credentials
    trusted_base: dict[str, str] | None = None  # under CI: {"commit", "how"} the range starts after
    note: str | None = None  # what this source does not guarantee

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "path": self.path}
        for key in ("ref", "commit", "blob", "url", "trusted_base", "note"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    @property
    def name(self) -> str:
        """The file name, for the bundle member ``policy/<name>``."""
        return Path(self.path).name or "policy.yml"


def is_git_spec(spec: str) -> bool:
    return spec.startswith(("git:", "git+"))


def parse_spec(spec: str, what: str = "--policy") -> tuple[str | None, str, str]:
    """``git:REF:PATH`` -> (None, REF, PATH); ``git+URL#REF:PATH`` -> (URL, REF, PATH).

    A URL, ref or path that starts with ``-`` is refused (git would read it as an option), and
    so is a URL whose transport is not https, ssh or file (http only to this host)."""
    if spec.startswith("git+"):
        url, sep, rest = spec[4:].partition("#")
        if not sep or not url:
            raise UsageError(f"{what}: {spec!r} is not git+URL#REF:PATH",
                             hint="e.g. git+https://gitlab.example.com/acme/policies.git#main:prod.yml")
        gitsafe.allowed_protocols(url, what)
    elif spec.startswith("git:"):
        url, rest = None, spec[4:]
    else:
        raise UsageError(f"{what}: {spec!r} is not a git source")
    ref, sep, path = rest.partition(":")
    if not sep or not ref or not path or path.startswith("/") or ".." in path.split("/"):
        raise UsageError(f"{what}: {spec!r} needs a ref and a relative path: git:REF:PATH",
                         hint="e.g. git:@previous-deploy:policies/prod.yml")
    gitsafe.refuse_option(ref, what)
    gitsafe.refuse_option(path, what)
    if any(c.isspace() or ord(c) < 32 or c in "~^?*[\\" for c in ref) or any(ord(c) < 32 for c in path):
        raise UsageError(f"{what}: {ref!r} is not a git ref")
    return url, ref, path


_public_url = gitsafe.public_url


PREVIOUS_DEPLOY = "@previous-deploy"
"""The ref of ``git:@previous-deploy:PATH``: the commit of the trusted previous deploy; else,
under CI, the platform's record of the default branch before this change (else the gate
denies); outside CI, the merge-base of HEAD with the freshly fetched default branch."""

_CHECKOUT_REFS = re.compile(r"^(?:HEAD|@|ORIG_HEAD|FETCH_HEAD|MERGE_HEAD)(?:[~^].*|@\{.*)?$")
MANUAL_EVENTS = frozenset({"workflow_dispatch", "schedule", "repository_dispatch", "workflow_run", "workflow_call",
                           "web", "api", "trigger", "pipeline", "parent_pipeline", "chat", "webide", "ondemand_dast_scan",
                           "security_orchestration_policy", "external"})
"""GitHub events and GitLab pipeline sources that record no earlier state of the default branch."""


def names_the_checkout(ref: str) -> bool:
    """Whether a git ref names the checked-out commit (or one relative to it)."""
    return bool(_CHECKOUT_REFS.match(ref.strip()))


def default_branch(env: Mapping[str, str]) -> str | None:
    """The protected default branch, as the CI platform says it (never from the checkout).

    The platform's own value wins (GitLab's ``CI_DEFAULT_BRANCH``, the repository's
    ``default_branch`` in GitHub's event): a pipeline variable must not move the trusted base
    onto a branch the change controls. ``POLICYENGINE_DEFAULT_BRANCH`` names it only where the
    platform does not (local runs, other CIs).
    """
    if env.get("CI_DEFAULT_BRANCH", "").strip():
        return env["CI_DEFAULT_BRANCH"].strip()
    branch = (_event(env).get("repository") or {}).get("default_branch")
    if isinstance(branch, str) and branch:
        return branch
    value = env.get("POLICYENGINE_DEFAULT_BRANCH", "").strip()
    return value or None


def _event(env: Mapping[str, str]) -> dict[str, Any]:
    """GitHub's event payload (``GITHUB_EVENT_PATH``), or {} (unreadable: no fallback from it)."""
    path = env.get("GITHUB_EVENT_PATH")
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _sha(value: Any) -> str | None:
    """A commit id the platform gave, or None (missing, malformed, or all zeros)."""
    if isinstance(value, str) and _SHA.match(value.strip()) and not gitsafe.ZERO_SHA.match(value.strip()):
        return value.strip()
    return None


platform_remote = gitsafe.platform_remote


class GitSources:
    """One evaluation's git reads (the policy, its bases, the waivers), sharing one trusted range.

    Under CI the reads go to a temporary repository fetched from the platform's URL, and a
    commit inside the change range is refused; outside CI they go to the workspace as given.
    Use as a context manager (the temporary repository is removed on exit).
    """

    def __init__(self, repo: str | Path = ".", env: Mapping[str, str] | None = None,
                 previous: str | Callable[[], str | None] | None = None) -> None:
        import os

        self.repo = Path(repo)
        self.env: Mapping[str, str] = os.environ if env is None else env
        # The trusted previous deploy's commit, or a function that looks it up (once, when a git
        # source first needs it: a run with no git source never reads the history for it).
        self._previous = previous
        self._previous_known = not callable(previous)
        self.ci = in_any_ci(self.env)
        self._tmp: Path | None = None
        self._remote: tuple[str, dict[str, str], list[str]] | None = None
        self._deployed: str | None = None
        self._base: tuple[str, str] | None = None
        self._refs = 0

    @property
    def previous(self) -> str | None:
        """The trusted previous deploy's commit, or None."""
        if not self._previous_known:
            assert callable(self._previous)  # noqa: S101
            self._previous = self._previous()
            self._previous_known = True
        return self._previous if isinstance(self._previous, str) and self._previous else None

    def __enter__(self) -> GitSources:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # -- reading ---------------------------------------------------------------------------

    def read(self, spec: str, what: str = "--policy") -> tuple[bytes, PolicySource]:
        """The bytes of ``spec`` (a git source) and where they came from."""
        url, ref, path = parse_spec(spec, what)
        if url is not None:
            return self._read_other_repository(url, ref, path, what)
        if self.ci:
            return self._read_in_ci(spec, ref, path, what)
        return self._read_workspace(spec, ref, path)

    def _read_other_repository(self, url: str, ref: str, path: str, what: str) -> tuple[bytes, PolicySource]:
        import tempfile  # (with random: ~2.5 ms of every check's start-up otherwise)

        protocols = gitsafe.allowed_protocols(url, what)
        env = gitsafe.environment(self.env, protocols=protocols)
        with tempfile.TemporaryDirectory(prefix="policyengine-policy-") as tmp:
            bare = Path(tmp)
            init = gitsafe.run(bare, ["init", "--quiet", "--bare"], env)
            if init.returncode != 0:
                raise PolicySourceError(f"cannot create a temporary repository: {gitsafe.first_line(init.stderr, env)}")
            fetched = gitsafe.run(bare, ["fetch", "--no-tags", "--quiet", "--depth=1", "--end-of-options", url, ref],
                                  env)
            if fetched.returncode != 0:
                password = urlsplit(url).password if "://" in url else None
                raise PolicySourceError(f"could not fetch {ref} from {_public_url(url)}: "
                                        f"{gitsafe.first_line(fetched.stderr, env, [password] if password else [])}")
            commit = self._rev(bare, "FETCH_HEAD", env)
            if commit is None:
                raise PolicySourceError(f"{ref} from {_public_url(url)} is not a commit")
            data, blob = gitsafe.read_path(bare, commit, path, env, limit=MAX_FILE_BYTES, where=ref)
        return data, PolicySource(kind="git", path=path, ref=ref, commit=commit, blob=blob, url=_public_url(url))

    @staticmethod
    def _rev(repo: Path, name: str, env: Mapping[str, str]) -> str | None:
        proc = gitsafe.run(repo, ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{name}^{{commit}}"], env)
        value = proc.stdout.decode().strip()
        return value if proc.returncode == 0 and _SHA.match(value) else None

    # -- outside CI: the workspace, as given ---------------------------------------------------

    def _read_workspace(self, spec: str, ref: str, path: str) -> tuple[bytes, PolicySource]:
        env = gitsafe.environment(self.env)
        top = gitsafe.run(self.repo, ["rev-parse", "--show-toplevel"], env)
        if top.returncode != 0:
            raise PolicySourceError(f"{self.repo} is not in a git repository, so {spec} cannot be read",
                                    hint="check out the repository with git, or give the policy as a file")
        how = None
        read_ref = ref
        if ref == PREVIOUS_DEPLOY:
            if self.previous:
                read_ref, how = self.previous, "the trusted previous deploy"
            else:
                read_ref, how = self._merge_base(env)
        else:
            self._fetch_remote_tracking(ref, env)
        commit = self._rev(self.repo, read_ref, env)
        if commit is None and _SHA.match(read_ref):
            # A shallow clone may lack an older commit: fetch exactly that one.
            self._fetch_workspace("origin", [read_ref], depth=True)
            commit = self._rev(self.repo, read_ref, env)
        if commit is None:
            raise PolicySourceError(f"git ref {read_ref!r} does not name a commit in {self.repo}")
        data, blob = gitsafe.read_path(self.repo, commit, path, env, limit=MAX_FILE_BYTES, where=ref)
        return data, PolicySource(kind="git", path=path, ref=ref if how is None else f"{ref} ({how})", commit=commit,
                                  blob=blob, note=UNTRUSTED_OUTSIDE_CI if how != "the trusted previous deploy" else None)

    def _workspace_url(self, remote: str) -> str:
        """The URL of a remote of the workspace: ``POLICYENGINE_REPOSITORY_URL`` for origin when it
        is configured, else (outside CI) the user's own configuration of the remote."""
        configured = self.env.get("POLICYENGINE_REPOSITORY_URL", "").strip()
        if remote == "origin" and configured:
            return configured
        env = gitsafe.environment(self.env)
        proc = gitsafe.run(self.repo, ["config", "--get", "--end-of-options", f"remote.{remote}.url"], env)
        url = proc.stdout.decode("utf-8", "replace").strip()
        if proc.returncode != 0 or not url:
            raise PolicySourceError(f"the workspace has no URL for the remote {remote}")
        return url

    def _fetch_workspace(self, remote: str, refspecs: list[str], depth: bool = False, what: str = "") -> None:
        url = self._workspace_url(remote)
        env = gitsafe.environment(self.env, protocols=gitsafe.allowed_protocols(url, f"remote {remote}"))
        shallow = gitsafe.run(self.repo, ["rev-parse", "--is-shallow-repository"], env).stdout.strip() == b"true"
        # A fixed upload-pack: a [remote "<the URL>"] section of the config must not name one.
        args = ["fetch", "--no-tags", "--quiet", "--upload-pack=git-upload-pack",
                *(["--depth=1"] if shallow or depth else []), "--end-of-options", url, *refspecs]
        fetched = gitsafe.run(self.repo, args, env)
        if fetched.returncode != 0:
            raise PolicySourceError(f"could not fetch {what or ' '.join(refspecs)} fresh from {remote}: "
                                    f"{gitsafe.first_line(fetched.stderr, env)}",
                                    hint="the policy is read from the remote's branch, never from the checkout")

    def _fetch_remote_tracking(self, ref: str, env: Mapping[str, str]) -> None:
        """Fetch ``remote/branch`` fresh from its remote's URL when ``ref`` names one."""
        remotes = gitsafe.run(self.repo, ["remote"], env)
        names = remotes.stdout.decode("utf-8", "replace").split() if remotes.returncode == 0 else []
        short = ref.removeprefix("refs/remotes/")
        remote = next((r for r in names if short.startswith(r + "/")), None)
        if remote is None:
            return
        branch = short[len(remote) + 1:]
        self._fetch_workspace(remote, [f"+refs/heads/{branch}:refs/remotes/{remote}/{branch}"],
                              what=f"{remote}/{branch}")

    def _merge_base(self, env: Mapping[str, str]) -> tuple[str, str]:
        branch = default_branch(self.env)
        if not branch:
            raise PolicySourceError("no trusted previous deploy is known and the default branch is not known "
                                    "(set POLICYENGINE_DEFAULT_BRANCH), so there is no trusted policy to read",
                                    hint="give --trust-key and a persistent evidence store, or name the policy's ref")
        gitsafe.refuse_option(branch, "the default branch")
        self._fetch_workspace("origin", [f"+refs/heads/{branch}:refs/remotes/origin/{branch}"],
                              what=f"origin/{branch}")
        base = gitsafe.run(self.repo, ["merge-base", "--end-of-options", "HEAD", f"refs/remotes/origin/{branch}"], env)
        if base.returncode != 0:
            raise PolicySourceError(f"no trusted previous deploy is known, and HEAD has no merge-base with "
                                    f"origin/{branch} (a shallow clone needs more history): "
                                    f"{gitsafe.first_line(base.stderr, env)}")
        return base.stdout.decode().strip(), f"the merge-base with origin/{branch}"

    # -- under CI: the platform's repository, and the change range -------------------------------

    def _clean(self) -> tuple[Path, dict[str, str], str]:
        """The temporary repository (our own configuration), its git environment and the URL."""
        if self._remote is None:
            self._remote = platform_remote(self.env)
            if self._remote is None:
                raise PolicySourceError("under CI the repository to read the policy from must be named by the "
                                        "platform (GITHUB_SERVER_URL and GITHUB_REPOSITORY, or CI_REPOSITORY_URL) "
                                        "or by POLICYENGINE_REPOSITORY_URL; the workspace's .git/config is not "
                                        "trusted", hint="set POLICYENGINE_REPOSITORY_URL, or use git+URL#REF:PATH")
        url, header, secrets = self._remote
        env = gitsafe.environment(self.env, protocols=gitsafe.allowed_protocols(url, "the repository URL"),
                                  extra=header)
        if self._tmp is None:
            import tempfile

            self._tmp = Path(tempfile.mkdtemp(prefix="policyengine-range-"))
            known = _sha(self.env.get("GITHUB_SHA")) or _sha(self.env.get("CI_COMMIT_SHA")) or ""
            sha256 = ["--object-format=sha256"] if len(known) == 64 else []  # the platform's object format
            init = gitsafe.run(self._tmp, ["init", "--quiet", "--bare", *sha256], env)
            if init.returncode != 0:
                raise PolicySourceError(f"cannot create a temporary repository: {gitsafe.first_line(init.stderr, env)}")
        return self._tmp, env, url

    def _fetch(self, source: str, what: str) -> str:
        """Fetch ``source`` (a commit id or a ref of the platform's repository) with its whole
        history; return the commit. Raises PolicySourceError."""
        repo, env, url = self._clean()
        self._refs += 1
        local = f"refs/policyengine/{self._refs}"
        fetched = gitsafe.run(repo, ["fetch", "--no-tags", "--quiet", "--no-write-fetch-head", "--end-of-options",
                                     url, f"+{source}:{local}"], env, timeout=_FETCH_TIMEOUT)
        if fetched.returncode != 0:
            raise PolicySourceError(f"could not fetch {what} from {url}: "
                                    f"{gitsafe.first_line(fetched.stderr, env, self._remote[2] if self._remote else ())}")
        commit = self._rev(repo, local, env)
        if commit is None:
            raise PolicySourceError(f"{what} is not a commit in {url}")
        return commit

    def deployed(self) -> str:
        """The commit being deployed: the platform's (``GITHUB_SHA``, ``CI_COMMIT_SHA``), else HEAD."""
        if self._deployed is None:
            sha = _sha(self.env.get("GITHUB_SHA")) or _sha(self.env.get("CI_COMMIT_SHA"))
            if sha is None:
                env = gitsafe.environment(self.env)
                sha = self._rev(self.repo, "HEAD", env)
                if sha is None:
                    raise PolicySourceError(f"the commit being deployed is not known (no GITHUB_SHA or CI_COMMIT_SHA, "
                                            f"and {self.repo} has no HEAD)")
            self._deployed = self._fetch(sha, f"the commit being deployed ({sha[:12]})")
        return self._deployed

    def _parents(self, commit: str) -> list[str]:
        repo, env, _ = self._clean()
        body = gitsafe.read_object(repo, "commit", commit, env)
        head = body.split(b"\n\n", 1)[0]
        return [line[7:].decode() for line in head.split(b"\n") if line.startswith(b"parent ")]

    def trusted_base(self) -> tuple[str, str]:
        """``(commit, how)``: where the change range starts. Raises PolicySourceError (deny)."""
        if self._base is not None:
            return self._base
        deployed = self.deployed()
        if self.previous:
            self._base = (self._fetch(self.previous, "the trusted previous deploy"), "the trusted previous deploy")
            return self._base
        env = self.env
        event, name = _event(env), env.get("GITHUB_EVENT_NAME", "").strip()
        source = env.get("CI_PIPELINE_SOURCE", "").strip()
        github = bool(name or env.get("GITHUB_EVENT_PATH"))
        candidates: list[tuple[str | None, str]] = []
        if github and name in ("push", ""):
            candidates.append((_sha(event.get("before")), "the push's before commit (GitHub event before)"))
        if source in ("push", ""):
            candidates.append((_sha(env.get("CI_COMMIT_BEFORE_SHA")),
                               "the push's before commit (GitLab CI_COMMIT_BEFORE_SHA)"))
        manual = name in MANUAL_EVENTS or source in MANUAL_EVENTS
        found = next(((sha, how) for sha, how in candidates if sha), None)
        if found is None and not manual:
            parents = self._parents(deployed)
            if len(parents) >= 2:
                found = (parents[0], "the first parent of the merge commit being deployed")
        if found is None and not manual:
            base = (event.get("pull_request") or {}).get("base") if isinstance(event.get("pull_request"), dict) else None
            for sha, how in ((_sha((base or {}).get("sha")) if isinstance(base, dict) else None,
                              "the target branch head of the pull request (GitHub pull_request.base.sha)"),
                             (_sha(env.get("CI_MERGE_REQUEST_TARGET_BRANCH_SHA")),
                              "the target branch head of the merge request (GitLab CI_MERGE_REQUEST_TARGET_BRANCH_SHA)")):
                if sha:
                    found = (sha, how)
                    break
        if found is None:
            kind = f"GITHUB_EVENT_NAME={name}" if name else (f"CI_PIPELINE_SOURCE={source}" if source else "this run")
            raise PolicySourceError(
                f"no trusted previous deploy is known, and {kind} records no state of the default branch before this "
                "change (no push before commit, no merge commit, no pull or merge request target), so there is no "
                "policy the change being deployed did not write",
                hint="configure a trust key: --trust-key / POLICYENGINE_TRUST_KEY (the public key whose signed "
                     "bundles in a persistent evidence store name the previous deploy)")
        self._base = (self._fetch(found[0], found[1]), found[1])
        return self._base

    def _ancestor(self, older: str, newer: str) -> bool:
        repo, env, _ = self._clean()
        proc = gitsafe.run(repo, ["merge-base", "--is-ancestor", "--end-of-options", older, newer], env)
        if proc.returncode not in (0, 1):
            raise PolicySourceError(f"cannot tell whether {older[:12]} is an ancestor of {newer[:12]}: "
                                    f"{gitsafe.first_line(proc.stderr, env)}")
        return proc.returncode == 0

    def _resolve(self, ref: str) -> str:
        """The commit ``ref`` names in the platform's repository (never the workspace's refs)."""
        if ref == PREVIOUS_DEPLOY:
            return self.trusted_base()[0]
        if names_the_checkout(ref):
            return self.deployed()
        if _SHA.match(ref):
            return self._fetch(ref, ref)
        short = ref.removeprefix("refs/remotes/")
        if short.startswith("origin/"):
            return self._fetch(f"refs/heads/{short[len('origin/'):]}", ref)
        if ref.startswith(("refs/heads/", "refs/tags/")):
            return self._fetch(ref, ref)
        try:
            return self._fetch(f"refs/heads/{ref}", ref)
        except PolicySourceError:
            return self._fetch(f"refs/tags/{ref}", ref)

    def _read_in_ci(self, spec: str, ref: str, path: str, what: str) -> tuple[bytes, PolicySource]:
        base, how = self.trusted_base()
        deployed = self.deployed()
        commit = self._resolve(ref)
        if self.previous:
            inside = not self._ancestor(commit, base) and (self._ancestor(commit, deployed)
                                                           or self._ancestor(base, commit))
            rule = "after the trusted previous deploy"
        else:
            inside = not self._ancestor(commit, base)
            rule = f"not {how} nor one of its ancestors"
        if inside:
            raise PolicySourceError(
                f"{what}: {spec} resolves to {commit[:12]}, inside the change being deployed ({rule} "
                f"{base[:12]}, up to {deployed[:12]}): a change is never judged by a policy, waivers or base it wrote",
                hint="use git:@previous-deploy:PATH, or a policy repository of its own (git+URL#REF:PATH)")
        repo, env, _ = self._clean()
        data, blob = gitsafe.read_path(repo, commit, path, env, limit=MAX_FILE_BYTES, where=ref)
        shown = f"{ref} ({how})" if ref == PREVIOUS_DEPLOY else ref
        return data, PolicySource(kind="git", path=path, ref=shown, commit=commit, blob=blob,
                                  trusted_base={"commit": base, "how": how},
                                  note=None if self.previous else FALLBACK_LIMIT)


def read_policy_bytes(spec: str, *, repo: str | Path = ".", env: Mapping[str, str] | None = None,
                      base_dir: Path | None = None, previous: str | None = None,
                      sources: GitSources | None = None, what: str = "--policy") -> tuple[bytes, PolicySource]:
    """Read the policy named by ``spec`` (a file, ``git:REF:PATH`` or ``git+URL#REF:PATH``).

    ``repo`` is the repository ``git:`` sources read from outside CI (the workspace).
    ``base_dir`` resolves a relative file path (an ``extends`` names its base relative to the
    policy). ``previous`` is the trusted previous deploy's commit. ``sources`` shares one
    trusted range (and its fetched repository) between the reads of one evaluation.
    """
    if not is_git_spec(spec):
        file = Path(spec) if base_dir is None or Path(spec).is_absolute() else base_dir / spec
        return read_user_file(file, what="policy"), PolicySource(kind="file", path=str(file))
    if sources is not None:
        return sources.read(spec, what)
    with GitSources(repo, env, previous) as own:
        return own.read(spec, what)


MAX_EXTENDS_DEPTH = 5


def _base_spec(base: str, spec: str, source: PolicySource) -> tuple[str, Path | None]:
    """Where an ``extends`` value points, read from the extension's own location: a relative
    file next to a file; next to the extension's blob in the same commit for a git source."""
    if is_git_spec(base) or Path(base).is_absolute():
        return base, None
    if source.kind == "git":
        url, ref, path = parse_spec(spec, "extends")
        inside = (Path(path).parent / base).as_posix()
        if ".." in Path(inside).parts:
            raise UsageError(f"extends: {base!r} leads outside the repository of {spec}")
        commit_ref = source.commit or ref  # a base is read from the very commit its extension came from
        return (f"git+{url}#{ref}:{inside}" if url else f"git:{commit_ref}:{inside}"), None
    return base, Path(source.path).parent


def load(spec: str, *, repo: str | Path = ".", env: Mapping[str, str] | None = None, previous: str | None = None,
         sources: GitSources | None = None, _base_dir: Path | None = None, _seen: tuple[str, ...] = ()) -> Policy:
    """Read and validate the policy named by ``spec``, with the bases it ``extends``; the
    result records its source. An extension that weakens its base is invalid (exit 2).

    The policy and every base are read through one ``GitSources`` (``sources``, else one of its
    own): under CI none of them may come from inside the change range."""
    if sources is None:
        with GitSources(repo, env, previous) as own:
            return load(spec, repo=repo, env=env, previous=previous, sources=own, _base_dir=_base_dir, _seen=_seen)
    raw, source = read_policy_bytes(spec, repo=repo, env=env, base_dir=_base_dir, previous=previous,
                                    sources=sources, what="--policy" if not _seen else "extends")
    display = spec if source.kind == "git" or _base_dir is None else source.path
    base = None
    # Peek for a base only when the bytes can name one: a policy is parsed once on the hot path.
    # (A key spelled with YAML escapes skips the peek; parse_policy then refuses it, exit 2.)
    data, positions = (loader.parse_document(raw, file=display, what="policy")[:2] if b"extends" in raw
                       else (None, loader.Positions()))
    if isinstance(data, dict) and isinstance(data.get("extends"), str):
        line, column = positions.locate(("extends",))
        try:
            base_spec, base_dir = _base_spec(data["extends"], spec, source)
            if is_git_spec(base_spec):
                parse_spec(base_spec, "extends")  # an option-shaped URL, ref or path never reaches git
        except UsageError as exc:
            raise InvalidInputError([Problem(display, line, column, "extends", exc.message)], what="policy",
                                    hint=exc.hint) from None
        key = f"{base_dir}/{base_spec}" if base_dir else base_spec
        if key in _seen or len(_seen) >= MAX_EXTENDS_DEPTH:
            why = "extends itself (a loop)" if key in _seen else f"extends more than {MAX_EXTENDS_DEPTH} levels deep"
            raise InvalidInputError([Problem(display, line, column, "extends", f"the policy {why}")], what="policy")
        base = load(base_spec, repo=repo, env=env, previous=previous, sources=sources, _base_dir=base_dir,
                    _seen=(*_seen, key))
    policy = parse_policy(raw, file=display, base=base)
    if source.kind == "git":
        policy = dataclasses.replace(policy, source=source.to_json())
    if base is not None and isinstance(data, dict):  # a base is only loaded from a peeked document
        from policyengine.language.policydiff import UNDECIDED, WEAKER, diff

        weaker = [f for f in diff(base.document, policy.document) if f.direction in (WEAKER, UNDECIDED)]
        if weaker:
            raise InvalidInputError([_extension_problem(display, positions, data, f, base.path) for f in weaker],
                                    what="policy", hint="an extension may only tighten its base; "
                                    "`policyengine policy diff BASE EXTENSION` shows every edit")
    return policy


def _extension_problem(file: str, positions: loader.Positions, data: dict[str, Any], finding: Any,
                       base: str) -> Problem:
    """Locate a weakening in the extension: at the rule key that makes it, else at ``extends``."""
    path: tuple[str | int, ...] = ("extends",)
    if finding.path.startswith("rules["):
        rid, _, rest = finding.path[len("rules["):].partition("]")
        index = next((j for j, r in enumerate(data.get("rules") or []) if isinstance(r, dict) and r.get("id") == rid),
                     None)
        if index is not None:
            key = rest.lstrip(".").split(".")[0].split("[")[0]
            path = ("rules", index, key) if key else ("rules", index)
    elif finding.path.split(".")[0] in data:
        path = (finding.path.split(".")[0],)
    line, column = positions.locate(path, key=True)
    what = "may be weaker" if finding.direction == "undecided" else "weakens"
    return Problem(file, line, column, finding.path,
                   f"{finding.message}: this {what} the base policy {base}; an extension may only tighten it")


def check_reachable_from_default(commit: str, *, repo: str | Path = ".", env: Mapping[str, str] | None = None) -> str:
    """Refuse (PolicySourceError) unless ``commit`` is reachable from the default branch; return
    how it was checked. A baseline (``evidence baseline``) names the commit in production when the
    gate is adopted: a commit only on a branch the change controls must never become it.

    Under CI the default branch is the platform's (``default_branch``: ``CI_DEFAULT_BRANCH``, the
    event's repository) and both it and the commit are fetched from the repository the platform
    names (``gitsafe.platform_remote``), never read from the workspace. Outside CI it is the
    workspace's default branch (``POLICYENGINE_DEFAULT_BRANCH``, else what ``origin/HEAD``
    names), as the workspace's remote-tracking ref (else its local branch).
    """
    import os

    source_env: Mapping[str, str] = os.environ if env is None else env
    if not _SHA.match(commit):
        raise PolicySourceError(f"{commit[:80]!r} is not a full commit id")
    if in_any_ci(source_env):
        branch = default_branch(source_env)
        if not branch:
            raise PolicySourceError("the platform names no default branch (CI_DEFAULT_BRANCH, or the event's "
                                    "repository.default_branch), so the commit's reachability cannot be checked")
        gitsafe.refuse_option(branch, "the default branch")
        with GitSources(repo, source_env) as sources:
            tip = sources._fetch(f"refs/heads/{branch}", f"the default branch {branch}")  # noqa: SLF001
            found = sources._fetch(commit, f"the commit {commit[:12]}")  # noqa: SLF001
            if not sources._ancestor(found, tip):  # noqa: SLF001
                raise PolicySourceError(f"commit {commit[:12]} is not reachable from the default branch {branch} "
                                        f"({tip[:12]}) of {gitsafe.public_url(sources._clean()[2])}")  # noqa: SLF001
        return f"reachable from the default branch {branch} ({tip[:12]}), fetched from the platform's repository"
    path = Path(repo)
    git_env = gitsafe.environment(source_env)
    branch = default_branch(source_env)
    if not branch:
        head = gitsafe.run(path, ["symbolic-ref", "--quiet", "refs/remotes/origin/HEAD"], git_env)
        name = head.stdout.decode("utf-8", "replace").strip()
        branch = name.removeprefix("refs/remotes/origin/") if head.returncode == 0 and name else None
    if not branch:
        raise PolicySourceError("the workspace's default branch is not known (no origin/HEAD)",
                                hint="set POLICYENGINE_DEFAULT_BRANCH to it, e.g. main")
    gitsafe.refuse_option(branch, "the default branch")
    tip = None
    for ref in (f"refs/remotes/origin/{branch}", f"refs/heads/{branch}"):
        tip = GitSources._rev(path, ref, git_env)  # noqa: SLF001
        if tip:
            break
    if not tip:
        raise PolicySourceError(f"the workspace {path} has no default branch {branch} (origin/{branch} or {branch})")
    proc = gitsafe.run(path, ["merge-base", "--is-ancestor", "--end-of-options", commit, tip], git_env)
    if proc.returncode == 1:
        raise PolicySourceError(f"commit {commit[:12]} is not reachable from the default branch {branch} "
                                f"({tip[:12]}) of the workspace")
    if proc.returncode != 0:
        raise PolicySourceError(f"commit {commit[:12]} is not a commit of the workspace: "
                                f"{gitsafe.first_line(proc.stderr, git_env)}")
    return f"reachable from the default branch {branch} ({tip[:12]}) of the workspace"


# -- the waivers file, read like the policy; what the output says of the sources -------------


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except (OSError, ValueError):
        return False
    return True


def load_waivers(policy: Policy, spec: str, *, workspace: str | Path, env: Mapping[str, str],
                 sources: GitSources | None = None) -> tuple[Policy, bytes]:
    """Read the waivers file named by ``spec`` (a file, ``git:REF:PATH`` or ``git+URL#REF:PATH``,
    read as ``--policy`` is), validate it against ``policy``, and return the policy with its
    waivers added (the file joins the files ``policy-owners`` guards) and the file's bytes.

    Under CI, when the policy comes from git (the trusted source), a waivers file that is a
    plain path inside the workspace (relative, or absolute into it) is refused: the change
    being judged controls the workspace, so it could waive its own rules. A git source obeys
    the policy's rule (``sources``, shared with the policy): never read from inside the change
    range.
    """
    import hashlib

    from policyengine.language.loader import read_user_file
    from policyengine.language.policy import parse_waivers_file, with_waivers

    trusted_policy = bool(policy.source and policy.source.get("kind") == "git")
    if not is_git_spec(spec):
        plain = Path(spec)
        if trusted_policy and in_any_ci(env) and (not plain.is_absolute() or _inside(plain, Path(workspace))):
            raise UsageError(f"--waivers: {spec} is a file in the workspace, which the change being judged controls, "
                             f"while the policy comes from the trusted source {policy.path}; under CI the waivers "
                             "must come from the trusted source too",
                             hint="give the waivers as git:REF:PATH (e.g. git:@previous-deploy:policies/waivers.yml) or "
                                  "git+URL#REF:PATH, like --policy")
        raw = read_user_file(plain, what="waivers file")
        record: dict[str, Any] = {"path": spec, "sha256": hashlib.sha256(raw).hexdigest()}
    else:
        ref = spec.partition("#")[2].partition(":")[0] if spec.startswith("git+") else spec[4:].partition(":")[0]
        if in_any_ci(env) and spec.startswith("git:") and names_the_checkout(ref):
            raise UsageError(f"--waivers: {spec} reads the commit being deployed ({ref}), which the change being "
                             "judged controls; under CI the waivers must come from the trusted source",
                             hint="read them as of the previous deploy, e.g. git:@previous-deploy:policies/waivers.yml")
        try:
            raw, source = read_policy_bytes(spec, repo=workspace, env=env, sources=sources,
                                                         what="--waivers")
        except UsageError as exc:
            raise UsageError(exc.message.replace("--policy:", "--waivers:", 1), hint=exc.hint) from None
        record = {"path": spec, "sha256": hashlib.sha256(raw).hexdigest(), "source": source.to_json()}
    waivers = parse_waivers_file(raw, file=spec, policy=policy)
    return with_waivers(policy, waivers, record=record, spec=spec, raw=raw), raw


def source_lines(policy: Policy) -> list[str]:
    """What the output says of every git source used (the policy, its bases, the waivers file):
    the commit read, the trusted base the change range starts after (and which fallback gave
    it), and what the source does not guarantee."""
    found: list[tuple[str, dict[str, Any]]] = []
    node: Policy | None = policy
    while node is not None:
        if node.source and node.source.get("kind") == "git":
            found.append(("policy" if node is policy else "policy base", node.source))
        node = node.base
    waivers = (policy.waivers_file or {}).get("source")
    if isinstance(waivers, dict) and waivers.get("kind") == "git":
        found.append(("waivers", waivers))
    lines: list[str] = []
    for what, source in found:
        where = f"{source.get('url')}#" if source.get("url") else "git:"
        line = f"{what}: {where}{source.get('ref')}:{source.get('path')} read at {str(source.get('commit'))[:12]}"
        base = source.get("trusted_base")
        if isinstance(base, dict):
            line += f"; the change range starts after {base.get('how')} {str(base.get('commit'))[:12]}"
        lines.append(line)
        if source.get("note"):
            lines.append(f"{what}: note: {source['note']}")
    return list(dict.fromkeys(lines))
