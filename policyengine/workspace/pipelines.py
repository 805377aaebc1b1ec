"""The files that define the pipelines, read at the trusted base and at the deployed commit.

Whoever edits the pipeline definition can skip the gate or fake its answer, so the
``policy-owners`` rule guards those files. Beyond the fixed names (``.github/workflows/**``,
``.gitlab-ci.yml``, CODEOWNERS, the install lock), what a pipeline runs depends on its
configuration:

* GitHub: every local action a workflow uses (``uses: ./PATH``): the whole folder ``PATH/**``
  (``uses: ./`` is the whole repository), and the local actions those actions use in turn;
  a local reusable workflow (``uses: ./.github/workflows/x.yml``) is a workflow like the others.
* GitLab: the root configuration (``.gitlab-ci.yml``, and ``CI_CONFIG_PATH`` when it names a
  file of this repository) and every file it includes with ``include: local:`` (also a plain
  string, a list, ``trigger: include:`` child pipelines, nested includes and wildcards, whatever
  their ``rules:``), and ``include: project:`` files of this very project.

Both configurations count: the one at the trusted base (the previous deploy, else the commit
the trusted policy was read from) and the one at the deployed commit, so a change that adds an
include guards the file it includes, and one that drops an include still guards the file it
used to include. Files are read from git objects by commit id (content-addressed: a workspace
or ref the change controls cannot substitute them), with replacement objects, hooks and the
file-system monitor off.

Fail closed: a configuration that cannot be parsed, a deployed commit or a base that cannot be
read, or facts from the code host without a known base make the result an error. A change file
(``facts_source: self-declared``) vouches for its own files anyway: when the workspace is not a
git checkout of its commit, the configuration is read from the workspace, and a missing base is
noted, not an error.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from yaml.error import YAMLError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from policyengine.workspace import gitsafe
from policyengine.errors import PolicySourceError, WorkspaceError, explain_git_error
from policyengine.globs import compile_glob, relative_path_problem
from policyengine.language.loader import MAX_FILE_BYTES, compose_all
from policyengine.workspace.files import Workspace

if TYPE_CHECKING:
    import subprocess  # noqa: S404

GITLAB_ROOT = ".gitlab-ci.yml"
WORKFLOWS = ".github/workflows"
INSTALL_LOCK = "policyengine-gate.lock"
"""The GitLab template's default install lock (``POLICYENGINE_REQUIREMENTS``)."""
MAX_CONFIG_FILES = 300
"""The most configuration files followed (GitLab allows 150 includes per pipeline)."""
RECORD_VERSION = 1

_GIT_TIMEOUT = 60
# Settings that keep git from running anything a repository's configuration names.
_SAFE = ["--no-replace-objects"]  # beside gitsafe.SAFE_CONFIG; fetches name --upload-pack themselves
_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_VARIABLE = re.compile(r"\$(?:\{[A-Za-z_][A-Za-z0-9_]*\}|[A-Za-z_][A-Za-z0-9_]*)")


class PipelineError(Exception):
    """The guarded pipeline files cannot be computed (fail closed: the rule is an error)."""


class Tree(Protocol):
    """The files of one configuration: a commit's tree, or the workspace."""

    where: str

    def read(self, path: str) -> bytes | None:
        """The file's bytes; None when there is no such file. Raises PipelineError."""
        ...  # pragma: no cover - protocol

    def glob(self, pattern: str) -> list[str]:
        """The files matching a glob (``policyengine.globs`` semantics), sorted."""
        ...  # pragma: no cover - protocol


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    import subprocess  # noqa: S404 - fixed argument lists, never a shell; imported when git runs (~3 ms)

    try:
        return subprocess.run(["git", *gitsafe.SAFE_CONFIG, *_SAFE, "-C", str(repo), *args],  # noqa: S603,S607
                              capture_output=True, timeout=_GIT_TIMEOUT, env=gitsafe.environment(os.environ), check=False)
    except FileNotFoundError:
        raise PipelineError("git is not installed") from None
    except subprocess.TimeoutExpired:
        raise PipelineError(f"git {args[0]} took longer than {_GIT_TIMEOUT} s") from None


def _first_line(data: bytes) -> str:
    return explain_git_error(data, limit=200)


class GitTree:
    """The tree of one commit, read from git objects."""

    def __init__(self, repo: Path, commit: str, where: str) -> None:
        self.repo = repo
        self.commit = commit
        self.where = where
        self._files: list[str] | None = None
        self._present: frozenset[str] = frozenset()

    def files(self) -> list[str]:
        if self._files is None:
            proc = _git(self.repo, "ls-tree", "-r", "-z", "--full-tree", "--name-only", self.commit)
            if proc.returncode != 0:
                raise PipelineError(f"cannot list the files of {self.where}: {_first_line(proc.stderr)}")
            self._files = sorted(p for p in proc.stdout.decode("utf-8", "surrogateescape").split("\0") if p)
            self._present = frozenset(self._files)
        return self._files

    def read(self, path: str) -> bytes | None:
        self.files()
        if path not in self._present:
            return None
        # Every object on the way (commit, trees, blob) is hashed and compared with its id: an
        # earlier step may have planted loose objects that git would return without checking.
        try:
            data, _blob = gitsafe.read_path(self.repo, self.commit, path, gitsafe.environment(os.environ),
                                            limit=MAX_FILE_BYTES, where=self.where)
        except PolicySourceError as exc:
            raise PipelineError(f"cannot read {path} at {self.where}: {exc.message}") from None
        return data

    def glob(self, pattern: str) -> list[str]:
        regex = compile_glob(pattern)
        return [f for f in self.files() if regex.match(f)]


class WorkspaceTree:
    """The workspace's files (a change file's workspace that is not a git checkout of its commit)."""

    def __init__(self, workspace: Workspace, where: str = "the workspace") -> None:
        self.workspace = workspace
        self.where = where

    def read(self, path: str) -> bytes | None:
        try:
            real = self.workspace.resolve(path)
            if not real.is_file():
                return None
            return self.workspace.read_bytes(path, MAX_FILE_BYTES)[0]
        except WorkspaceError as exc:
            raise PipelineError(f"cannot read {path} in {self.where}: {exc}") from None

    def glob(self, pattern: str) -> list[str]:
        try:
            found, outside = self.workspace.glob(pattern)
        except OSError as exc:
            raise PipelineError(f"cannot list {pattern} in {self.where}: {exc.strerror or exc}") from None
        if outside:
            raise PipelineError(f"{outside[0]} in {self.where} leads outside the workspace")
        return found


# -- reading configurations (pure) ------------------------------------------------------------


def _parse(data: bytes, path: str, where: str) -> list[Node]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PipelineError(f"{path} at {where} is not UTF-8 (byte {exc.start})") from None
    try:
        return compose_all(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        why = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PipelineError(f"{path}{at} at {where} is not valid YAML: {why}") from None


def _walk(nodes: list[Node]) -> list[tuple[str, Node]]:
    """Every (key, value) pair of every mapping in the documents, each node visited once."""
    out: list[tuple[str, Node]] = []
    seen: set[int] = set()
    stack: list[Node] = list(nodes)
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, MappingNode):
            for key, value in node.value:
                if isinstance(key, ScalarNode):
                    out.append((key.value, value))
                stack += [key, value]
        elif isinstance(node, SequenceNode):
            stack += node.value
    return out


def _scalars(node: Node) -> list[str]:
    if isinstance(node, ScalarNode):
        return [node.value]
    if isinstance(node, SequenceNode):
        return [n.value for n in node.value if isinstance(n, ScalarNode)]
    return []


def gitlab_includes(nodes: list[Node], projects: frozenset[str]) -> list[str]:
    """The local files an ``include:`` (top level or ``trigger:``) names, as written.

    A string or a list item that is not a URL, a mapping's ``local:``, its ``<<`` merges, and
    the ``file:`` of an ``include: project:`` naming one of ``projects`` (this very project).
    ``rules:`` are ignored: a file that is included only sometimes is guarded always.
    """
    out: list[str] = []
    for key, value in _walk(nodes):
        if key != "include":
            continue
        stack, seen = [value], set()
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node, ScalarNode):
                if node.value and not _URL.match(node.value):
                    out.append(node.value)
            elif isinstance(node, SequenceNode):
                stack += node.value
            elif isinstance(node, MappingNode):
                keys = {k.value: v for k, v in node.value if isinstance(k, ScalarNode)}
                if "local" in keys:
                    out += _scalars(keys["local"])
                if "<<" in keys:
                    stack.append(keys["<<"])
                project = keys.get("project")
                if (isinstance(project, ScalarNode) and project.value.strip().strip("/").casefold() in projects
                        and "file" in keys):
                    out += _scalars(keys["file"])
    return out


def local_uses(nodes: list[Node]) -> list[str]:
    """Every ``uses: ./PATH`` of a workflow or an action, as written."""
    return [v.value.strip() for k, v in _walk(nodes) if k == "uses" and isinstance(v, ScalarNode)
            and v.value.strip().startswith("./")]


def include_glob(written: str) -> str | None:
    """A GitLab ``include: local:`` path as a guard glob (relative to the repository root).

    ``*`` and ``**`` keep their meaning (``**`` crosses folders; the glob also matches every
    file GitLab's would); a variable (``$CI_...``) could be anything, so it becomes ``*``; ``?``,
    ``[`` and ``]`` are literal for GitLab and become ``?`` (guarding slightly more, never less).
    None for a path that leaves the repository.
    """
    path = _VARIABLE.sub("*", written.strip()).lstrip("/")
    path = re.sub(r"[\[\]]", "?", path)
    if not path or relative_path_problem(path) or ".." in path.split("/"):
        return None
    return posixpath.normpath(path) if "*" not in path and "?" not in path else path


def _action_dir(written: str) -> str | None:
    """``./path/to/action`` -> ``path/to/action`` (``.`` for the repository itself); None outside it."""
    path = posixpath.normpath(written.strip().split("@", 1)[0])
    if path == ".":
        return "."
    if relative_path_problem(path) or path.startswith("../"):
        return None
    return path


def _is_yaml(path: str) -> bool:
    return path.endswith((".yml", ".yaml"))


def pipeline_guard(tree: Tree, roots: list[str], projects: frozenset[str]) -> tuple[list[str], list[str]]:
    """The guard globs of one configuration, and notes. Raises PipelineError (fail closed)."""
    guard: list[str] = []
    notes: list[str] = []
    read = 0

    def parsed(path: str) -> list[Node] | None:
        nonlocal read
        read += 1
        if read > MAX_CONFIG_FILES:
            raise PipelineError(f"{tree.where} has more than {MAX_CONFIG_FILES} pipeline configuration files")
        data = tree.read(path)
        return None if data is None else _parse(data, path, tree.where)

    # GitLab: the root configurations and every file they include, transitively.
    queue = list(roots)
    done: set[str] = set()
    while queue:
        path = queue.pop(0)
        if path in done:
            continue
        done.add(path)
        nodes = parsed(path)
        if nodes is None:
            continue
        for written in gitlab_includes(nodes, projects):
            pattern = include_glob(written)
            if pattern is None:
                notes.append(f"{path} at {tree.where} includes {written!r}, outside the repository")
                continue
            guard.append(pattern)
            wild = any(c in pattern for c in "*?")
            queue += [f for f in tree.glob(pattern) if _is_yaml(f)] if wild else [pattern]

    # GitHub: the workflows and the local actions they use, transitively.
    queue = [f for f in tree.glob(f"{WORKFLOWS}/**") if _is_yaml(f)]
    done = set()
    while queue:
        path = queue.pop(0)
        if path in done:
            continue
        done.add(path)
        nodes = parsed(path)
        if nodes is None:
            continue
        for written in local_uses(nodes):
            target = _action_dir(written[2:] if written.startswith("./") else written)
            if target is None:
                notes.append(f"{path} at {tree.where} uses {written!r}, outside the repository")
                continue
            if target == ".":
                guard.append("**")  # the repository itself is the action: every file is its code
                queue += ["action.yml", "action.yaml"]
            elif _is_yaml(target):
                guard.append(target)  # a reusable workflow
                queue.append(target)
            else:
                guard += [target, f"{target}/**"]
                queue += [f"{target}/action.yml", f"{target}/action.yaml"]
    return list(dict.fromkeys(guard)), notes


# -- the two configurations of a change -------------------------------------------------------


def _ci_config_roots(env: Mapping[str, str]) -> tuple[list[str], list[str]]:
    roots, notes = [GITLAB_ROOT], []
    custom = (env.get("CI_CONFIG_PATH") or "").strip()
    if custom and custom != GITLAB_ROOT:
        if "@" in custom or _URL.match(custom):
            notes.append(f"CI_CONFIG_PATH {custom!r} is in another project or at a URL: that project's own "
                         "controls guard it")
        else:
            path = include_glob(custom)
            if path is None:
                notes.append(f"CI_CONFIG_PATH {custom!r} leads outside the repository")
            else:
                roots.append(path)
    return roots, notes


def _lock_paths(env: Mapping[str, str]) -> list[str]:
    """The GitLab template's install lock: its default name, and POLICYENGINE_REQUIREMENTS."""
    out = [INSTALL_LOCK]
    named = (env.get("POLICYENGINE_REQUIREMENTS") or "").strip()
    if named:
        # An absolute path or one outside the checkout: guard the file's name wherever it is.
        path = None if named.startswith("/") else include_glob(named.removeprefix("./"))
        out.append(path if path is not None else f"**/{posixpath.basename(named)}")
    return list(dict.fromkeys(out))


def _git_checkout(root: Path) -> tuple[bool, str]:
    """Whether ``root`` is the top of a git work tree (else why not)."""
    proc = _git(root, "rev-parse", "--show-toplevel")
    if proc.returncode != 0:
        return False, f"the workspace is not a git checkout ({_first_line(proc.stderr)})"
    top = Path(proc.stdout.decode("utf-8", "surrogateescape").strip())
    try:
        same = top.resolve() == root.resolve()
    except OSError:
        same = False
    return (True, "") if same else (False, f"the workspace is not the top of its git checkout ({top})")


def _has_commit(root: Path, sha: str, fetch: bool, env: Mapping[str, str]) -> bool:
    """Whether the commit is in the repository; with ``fetch``, a shallow clone fetches exactly
    that one first, from the repository the platform names."""
    def present() -> bool:
        proc = _git(root, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{sha}^{{commit}}")
        return proc.returncode == 0 and proc.stdout.decode().strip() == sha

    if present():
        return True
    if not fetch:
        return False
    # From the repository the platform names, never the workspace's own remote (an earlier step
    # may point remote.origin.url elsewhere or give it an uploadpack command: git runs the first
    # uploadpack it is given, so only the command line's --upload-pack is safe).
    remote = gitsafe.platform_remote(env)
    if remote is None:
        return False
    url, header, _secrets = remote
    gitsafe.refuse_option(url, "the repository URL")
    run_env = gitsafe.environment(env, protocols=gitsafe.allowed_protocols(url, "the repository URL"), extra=header)
    with contextlib.suppress(PolicySourceError):
        gitsafe.run(root, ["fetch", "--no-tags", "--quiet", "--depth=1", "--no-write-fetch-head",
                           "--upload-pack=git-upload-pack", "--end-of-options", url, sha], run_env)
    return present()


def read_pipeline(workspace: Workspace, change: Mapping[str, Any], trusted_commit: str | None,
                  env: Mapping[str, str], *, fetch: bool = False) -> dict[str, Any]:
    """The record of the pipeline files guarded for ``change`` (JSON-ready; ``error`` when they
    cannot be computed). ``trusted_commit``: the commit the trusted policy was read from.
    ``fetch``: a commit missing from a shallow clone is fetched from origin (``check`` only)."""
    roots, notes = _ci_config_roots(env)
    from_platform = change.get("facts_source") in ("github", "gitlab")
    projects = frozenset(str(p).strip().strip("/").casefold() for p in (change.get("repository"),
                                                                          env.get("CI_PROJECT_PATH")) if p)
    record: dict[str, Any] = {"version": RECORD_VERSION, "roots": roots, "deployed": None, "base": None,
                              "source": None, "guard": [*roots, *_lock_paths(env)], "notes": notes, "error": None}

    def fail(message: str) -> dict[str, Any]:
        record["error"] = message
        return record

    deployed = change.get("commit")
    rng = change.get("range")
    base, base_from = (rng.get("previous_commit") if isinstance(rng, dict) else None), "the previous deploy"
    if not base and trusted_commit:
        base, base_from = trusted_commit, "the commit the trusted policy was read from"
    try:
        checkout, why = _git_checkout(workspace.root)
        trees: list[Tree] = []
        if checkout and isinstance(deployed, str) and _SHA.fullmatch(deployed) and _has_commit(workspace.root,
                                                                                               deployed, fetch, env):
            trees.append(GitTree(workspace.root, deployed, f"the deployed commit {deployed[:12]}"))
            record.update(deployed=deployed, source="git")
        elif from_platform:
            cause = why or "the commit is not in the repository" + (", even after fetching it" if fetch else "")
            return fail(f"the deployed commit {str(deployed)[:12]} cannot be read from git: {cause}")
        else:
            trees.append(WorkspaceTree(workspace))
            record["source"] = "workspace"
            notes.append("read from the workspace: it is not a git checkout of the change file's commit")
        if not base:
            if from_platform:
                return fail("no trusted base is known (no previous deploy in the change range, and the policy "
                            "was not read from git), so the pipeline configuration before the change cannot "
                            "be read; read the policy from git (policy-source / POLICYENGINE_POLICY_SOURCE "
                            "previous-deploy) or give a trust key and a persistent evidence store")
            notes.append("the change file names no previous deploy and the policy was not read from git: "
                         "the pipeline configuration before the change was not read")
        elif base != deployed:
            if not (isinstance(base, str) and _SHA.fullmatch(base)):
                return fail(f"the trusted base {str(base)[:40]!r} is not a commit id")
            if checkout and _has_commit(workspace.root, base, fetch, env):
                trees.append(GitTree(workspace.root, base, f"the trusted base {base[:12]} ({base_from})"))
                record["base"] = base
            elif checkout or from_platform:
                return fail(f"the trusted base {base[:12]} ({base_from}) is not in the repository"
                            + (", even after fetching it" if fetch else ""))
            else:
                notes.append(f"the trusted base {base[:12]} was not read: {why}")
        guard: list[str] = list(record["guard"])
        for tree in trees:
            found, more = pipeline_guard(tree, roots, projects)
            guard += found
            notes += more
    except PipelineError as exc:
        return fail(str(exc))
    record["guard"] = list(dict.fromkeys(guard))
    return record


def encode(record: Mapping[str, Any]) -> bytes:
    """The record as kept in the evidence bundle (``raw/pipeline.json``)."""
    return (json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
