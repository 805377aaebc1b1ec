"""Where a policy comes from: a file, or a trusted git source no change can weaken.

``--policy`` takes:

* ``PATH``: a file (in CI usually the checkout's, which the change being judged controls);
* ``git:REF:PATH``: the blob at ``REF:PATH`` in the repository's object store (the
  workspace's git repository), never the checked-out file. A remote-tracking ref
  (``origin/main``) is fetched fresh from its remote first, because earlier steps of a job can
  rewrite local refs; a commit missing from a shallow clone is fetched by id;
* ``git+URL#REF:PATH``: the same in another repository (a separate policy repository, the
  stronger setup), fetched into a temporary bare repository; ``git+file:///srv/policies.git``
  works for tests and on-prem.

A git source that cannot be read (no repository, a fetch that fails, a missing ref or path, a
path that is not a file) raises ``PolicySourceError``: the gate denies, and never falls back to
the checkout. Where the policy came from (ref, commit, path, blob id) is recorded in the
decision and the bundle.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess  # noqa: S404 - git is run with fixed argument lists, never a shell
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from policyengine import loader
from policyengine.errors import (
    InvalidInputError,
    PolicySourceError,
    Problem,
    UsageError,
)
from policyengine.loader import MAX_FILE_BYTES, read_user_file
from policyengine.policy import Policy, parse_policy

_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_GIT_TIMEOUT = 120
# Settings that keep git from running anything a repository's configuration names.
_SAFE = ["-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "protocol.ext.allow=never",
         "-c", "core.sshCommand=ssh"]


@dataclass(frozen=True)
class PolicySource:
    """Where a policy was read from, as the evidence records it."""

    kind: str  # "file" | "git"
    path: str
    ref: str | None = None
    commit: str | None = None
    blob: str | None = None
    url: str | None = None  # another repository's URL, without credentials

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "path": self.path}
        for key in ("ref", "commit", "blob", "url"):
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


def parse_spec(spec: str) -> tuple[str | None, str, str]:
    """``git:REF:PATH`` -> (None, REF, PATH); ``git+URL#REF:PATH`` -> (URL, REF, PATH)."""
    if spec.startswith("git+"):
        url, sep, rest = spec[4:].partition("#")
        if not sep or not url:
            raise UsageError(f"--policy: {spec!r} is not git+URL#REF:PATH",
                             hint="e.g. git+https://gitlab.example.com/acme/policies.git#main:prod.yml")
    elif spec.startswith("git:"):
        url, rest = None, spec[4:]
    else:
        raise UsageError(f"--policy: {spec!r} is not a git source")
    ref, sep, path = rest.partition(":")
    if not sep or not ref or not path or path.startswith("/") or ".." in path.split("/"):
        raise UsageError(f"--policy: {spec!r} needs a ref and a relative path: git:REF:PATH",
                         hint="e.g. git:origin/main:policies/prod.yml")
    if ref.startswith("-") or any(c.isspace() or ord(c) < 32 or c in "~^?*[\\" for c in ref):
        raise UsageError(f"--policy: {ref!r} is not a git ref")
    return url, ref, path


def _public_url(url: str) -> str:
    """The URL without user or password (a token in a URL must never reach the evidence)."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return url


def _git(repo: Path, *args: str, env: Mapping[str, str] | None = None, binary: bool = False) -> Any:
    from policyengine import deadline

    run_env = dict(os.environ if env is None else env)
    run_env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"})
    remote = next((_public_url(a) for a in args if "://" in a), None)
    what = f"git {args[0]}" + (f" from {remote}" if remote else "") + " (the policy source)"
    try:
        timeout = deadline.limit(_GIT_TIMEOUT, what)  # the run's deadline counts: git waits no longer
        try:
            proc = subprocess.run(["git", *_SAFE, "-C", str(repo), *args], capture_output=True,  # noqa: S603,S607
                                  timeout=timeout, env=run_env, check=False)
        except subprocess.TimeoutExpired:
            deadline.check(what)  # cut short by the run's deadline: say so
            raise PolicySourceError(f"git {args[0]} took longer than {_GIT_TIMEOUT} s") from None
    except FileNotFoundError:
        raise PolicySourceError("git is not installed, so the trusted policy cannot be read") from None
    except deadline.RunDeadlineError as exc:  # the trusted policy could not be read in time: deny, exit 3
        raise PolicySourceError(exc.message, hint=exc.hint) from None
    return proc


def _first_line(data: bytes) -> str:
    from policyengine.redact import Redactor

    text = data.decode("utf-8", "replace").strip().splitlines()
    return Redactor.from_env(os.environ).text(text[-1] if text else "no message")[:300]


def _fetch_remote_tracking(repo: Path, ref: str, env: Mapping[str, str] | None) -> None:
    """Fetch ``remote/branch`` fresh from its remote when ``ref`` names a remote-tracking branch."""
    remotes = _git(repo, "remote", env=env)
    names = remotes.stdout.decode("utf-8", "replace").split() if remotes.returncode == 0 else []
    short = ref.removeprefix("refs/remotes/")
    remote = next((r for r in names if short.startswith(r + "/")), None)
    if remote is None:
        return
    branch = short[len(remote) + 1:]
    shallow = _git(repo, "rev-parse", "--is-shallow-repository", env=env).stdout.strip() == b"true"
    args = ["fetch", "--no-tags", "--quiet", *(["--depth=1"] if shallow else []), remote,
            f"+refs/heads/{branch}:refs/remotes/{remote}/{branch}"]
    fetched = _git(repo, *args, env=env)
    if fetched.returncode != 0:
        raise PolicySourceError(f"could not fetch {remote}/{branch} fresh from {remote}: {_first_line(fetched.stderr)}",
                                hint="the policy is read from the remote's branch, never from the checkout")


def _read_blob(repo: Path, ref: str, path: str, env: Mapping[str, str] | None) -> tuple[bytes, str, str]:
    commit_p = _git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}", env=env)
    if commit_p.returncode != 0 and _SHA.match(ref):
        # A shallow clone may lack an older commit: fetch exactly that one.
        _git(repo, "fetch", "--no-tags", "--quiet", "--depth=1", "origin", ref, env=env)
        commit_p = _git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}", env=env)
    if commit_p.returncode != 0:
        raise PolicySourceError(f"git ref {ref!r} does not name a commit in {repo}")
    commit = commit_p.stdout.decode().strip()
    blob_p = _git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{commit}:{path}", env=env)
    if blob_p.returncode != 0:
        raise PolicySourceError(f"{path} does not exist at {ref} ({commit[:12]})")
    blob = blob_p.stdout.decode().strip()
    kind = _git(repo, "cat-file", "-t", blob, env=env).stdout.decode().strip()
    if kind != "blob":
        raise PolicySourceError(f"{path} at {ref} is a {kind or 'missing object'}, not a file")
    size = _git(repo, "cat-file", "-s", blob, env=env).stdout.decode().strip()
    if not size.isdigit() or int(size) > MAX_FILE_BYTES:
        raise PolicySourceError(f"{path} at {ref} is larger than {MAX_FILE_BYTES} bytes; refusing to read it")
    data = _git(repo, "cat-file", "blob", blob, env=env)
    if data.returncode != 0:
        raise PolicySourceError(f"cannot read {path} at {ref}: {_first_line(data.stderr)}")
    return bytes(data.stdout), commit, blob


PREVIOUS_DEPLOY = "@previous-deploy"
"""The ref of ``git:@previous-deploy:PATH``: the commit of the trusted previous deploy, else the
merge-base of HEAD with the freshly fetched default branch, else the gate denies."""


def default_branch(env: Mapping[str, str]) -> str | None:
    """The protected default branch, as the CI platform says it (never from the checkout).

    The platform's own value wins (GitLab's ``CI_DEFAULT_BRANCH``, the repository's
    ``default_branch`` in GitHub's event): a pipeline variable must not move the trusted base
    onto a branch the change controls. ``POLICYENGINE_DEFAULT_BRANCH`` names it only where the
    platform does not (local runs, other CIs).
    """
    if env.get("CI_DEFAULT_BRANCH", "").strip():
        return env["CI_DEFAULT_BRANCH"].strip()
    event = env.get("GITHUB_EVENT_PATH")
    if event:
        import json

        try:
            with open(event, encoding="utf-8") as fh:
                branch = ((json.load(fh) or {}).get("repository") or {}).get("default_branch")
        except (OSError, ValueError, AttributeError):
            branch = None
        if isinstance(branch, str) and branch:
            return branch
    value = env.get("POLICYENGINE_DEFAULT_BRANCH", "").strip()
    return value or None


def resolve_previous_deploy(repo: Path, env: Mapping[str, str] | None,
                            previous: str | None) -> tuple[str, str]:
    """``(commit, how)`` for ``@previous-deploy``: the trusted previous deploy's commit, else the
    merge-base with the freshly fetched default branch. Raises PolicySourceError (deny)."""
    if previous:
        return previous, "the trusted previous deploy"
    values = os.environ if env is None else env
    branch = default_branch(values)
    if not branch:
        raise PolicySourceError("no trusted previous deploy is known and the default branch is not known "
                                "(set POLICYENGINE_DEFAULT_BRANCH), so there is no trusted policy to read",
                                hint="give --trust-key and a persistent evidence store, or name the policy's ref")
    _fetch_remote_tracking(repo, f"origin/{branch}", env)
    base = _git(repo, "merge-base", "HEAD", f"refs/remotes/origin/{branch}", env=env)
    if base.returncode != 0:
        raise PolicySourceError(f"no trusted previous deploy is known, and HEAD has no merge-base with origin/{branch} "
                                f"(a shallow clone needs more history): {_first_line(base.stderr)}")
    return base.stdout.decode().strip(), f"the merge-base with origin/{branch}"


def read_policy_bytes(spec: str, *, repo: str | Path = ".", env: Mapping[str, str] | None = None,
                      base_dir: Path | None = None, previous: str | None = None) -> tuple[bytes, PolicySource]:
    """Read the policy named by ``spec`` (a file, ``git:REF:PATH`` or ``git+URL#REF:PATH``).

    ``repo`` is the repository ``git:`` sources read from (the workspace). ``base_dir``
    resolves a relative file path (an ``extends`` names its base relative to the policy).
    ``previous`` is the trusted previous deploy's commit, for ``git:@previous-deploy:PATH``.
    """
    if not is_git_spec(spec):
        file = Path(spec) if base_dir is None or Path(spec).is_absolute() else base_dir / spec
        return read_user_file(file, what="policy"), PolicySource(kind="file", path=str(file))
    url, ref, path = parse_spec(spec)
    if url is None:
        root = Path(repo)
        top = _git(root, "rev-parse", "--show-toplevel", env=env)
        if top.returncode != 0:
            raise PolicySourceError(f"{root} is not in a git repository, so {spec} cannot be read",
                                    hint="check out the repository with git, or give the policy as a file")
        how = None
        read_ref = ref
        if ref == PREVIOUS_DEPLOY:
            read_ref, how = resolve_previous_deploy(root, env, previous)
        else:
            _fetch_remote_tracking(root, ref, env)
        data, commit, blob = _read_blob(root, read_ref, path, env)
        return data, PolicySource(kind="git", path=path, ref=ref if how is None else f"{ref} ({how})", commit=commit,
                                  blob=blob)
    with tempfile.TemporaryDirectory(prefix="policyengine-policy-") as tmp:
        bare = Path(tmp)
        init = _git(bare, "init", "--quiet", "--bare", env=env)
        if init.returncode != 0:
            raise PolicySourceError(f"cannot create a temporary repository: {_first_line(init.stderr)}")
        fetched = _git(bare, "fetch", "--no-tags", "--quiet", "--depth=1", url, ref, env=env)
        if fetched.returncode != 0:
            raise PolicySourceError(f"could not fetch {ref} from {_public_url(url)}: {_first_line(fetched.stderr)}")
        data, commit, blob = _read_blob(bare, "FETCH_HEAD", path, env)
    return data, PolicySource(kind="git", path=path, ref=ref, commit=commit, blob=blob, url=_public_url(url))


MAX_EXTENDS_DEPTH = 5


def _base_spec(base: str, spec: str, source: PolicySource) -> tuple[str, Path | None]:
    """Where an ``extends`` value points, read from the extension's own location: a relative
    file next to a file; next to the extension's blob in the same commit for a git source."""
    if is_git_spec(base) or Path(base).is_absolute():
        return base, None
    if source.kind == "git":
        url, ref, path = parse_spec(spec)
        inside = (Path(path).parent / base).as_posix()
        if ".." in Path(inside).parts:
            raise UsageError(f"extends: {base!r} leads outside the repository of {spec}")
        commit_ref = source.commit or ref  # a base is read from the very commit its extension came from
        return (f"git+{url}#{ref}:{inside}" if url else f"git:{commit_ref}:{inside}"), None
    return base, Path(source.path).parent


def load(spec: str, *, repo: str | Path = ".", env: Mapping[str, str] | None = None, previous: str | None = None,
         _base_dir: Path | None = None, _seen: tuple[str, ...] = ()) -> Policy:
    """Read and validate the policy named by ``spec``, with the bases it ``extends``; the
    result records its source. An extension that weakens its base is invalid (exit 2)."""
    raw, source = read_policy_bytes(spec, repo=repo, env=env, base_dir=_base_dir, previous=previous)
    display = spec if source.kind == "git" or _base_dir is None else source.path
    base = None
    # Peek for a base only when the bytes can name one: a policy is parsed once on the hot path.
    # (A key spelled with YAML escapes skips the peek; parse_policy then refuses it, exit 2.)
    data, positions = (loader.parse_document(raw, file=display, what="policy")[:2] if b"extends" in raw
                       else (None, loader.Positions()))
    if isinstance(data, dict) and isinstance(data.get("extends"), str):
        base_spec, base_dir = _base_spec(data["extends"], spec, source)
        key = f"{base_dir}/{base_spec}" if base_dir else base_spec
        line, column = positions.locate(("extends",))
        if key in _seen or len(_seen) >= MAX_EXTENDS_DEPTH:
            why = "extends itself (a loop)" if key in _seen else f"extends more than {MAX_EXTENDS_DEPTH} levels deep"
            raise InvalidInputError([Problem(display, line, column, "extends", f"the policy {why}")], what="policy")
        base = load(base_spec, repo=repo, env=env, _base_dir=base_dir, _seen=(*_seen, key))
    policy = parse_policy(raw, file=display, base=base)
    if source.kind == "git":
        policy = dataclasses.replace(policy, source=source.to_json())
    if base is not None and isinstance(data, dict):  # a base is only loaded from a peeked document
        from policyengine.policydiff import UNDECIDED, WEAKER, diff

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
