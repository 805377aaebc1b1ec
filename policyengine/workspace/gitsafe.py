"""Run git on values a change may control without letting git run anything else.

Every value that reaches git from the outside (a URL, a ref, a path in ``--policy``,
``--waivers`` or ``extends``) is refused when it starts with ``-`` and is put after
``--end-of-options``, so it can never be read as an option (``--upload-pack=...``). Only the
``https``, ``ssh`` and ``file`` transports are allowed, and ``http`` to this host (loopback, for
tests); never a remote helper (``ext::``, ``fd::``).

Git runs with no system or global configuration, replace objects off
(``GIT_NO_REPLACE_OBJECTS``), no hooks, no fsmonitor, no credential helper or askpass program,
``ssh`` as the only ssh command, and none of the caller's ``GIT_*`` variables. Objects read
from a repository are hashed again and compared with the id they were asked for: a repository
an earlier step rewrote cannot hand back other bytes under a recorded id.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from policyengine.errors import PolicySourceError, UsageError, explain_git_error

if TYPE_CHECKING:
    import subprocess  # noqa: S404

GIT_TIMEOUT = 120
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
ZERO_SHA = re.compile(r"^0+$")
SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")

SAFE_CONFIG: tuple[str, ...] = (
    "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "core.sshCommand=ssh",
    "-c", "core.askPass=/bin/false", "-c", "credential.helper=", "-c", "core.commitGraph=false",
    "-c", "gc.auto=0", "-c", "maintenance.auto=false", "-c", "fetch.recurseSubmodules=false",
    "-c", "protocol.ext.allow=never", "-c", "protocol.fd.allow=never",
    "-c", "core.alternateRefsCommand=true",
)
"""``-c`` settings that win over a repository's own configuration (the workspace's may be hostile)."""

_KEPT = ("GIT_CEILING_DIRECTORIES", "GIT_SSL_CAINFO", "GIT_SSL_CAPATH")


def refuse_option(value: str, what: str) -> None:
    """A value that git could read as an option is refused (``-`` first), whatever follows."""
    if value.startswith("-"):
        raise UsageError(f"{what}: {value!r} starts with '-', which git would read as an option",
                         hint="name a ref, path or URL that does not start with '-'")


def allowed_protocols(url: str, what: str) -> str:
    """The ``GIT_ALLOW_PROTOCOL`` list for fetching ``url``; refuse a URL git must not use.

    https, ssh (``ssh://`` or ``host:path``) and file (``file://`` or a local path) only; http
    only to this host (tests). Never a remote helper (``ext::``, ``fd::``, ``NAME::``)."""
    refuse_option(url, what)
    if any(ord(c) < 32 or ord(c) == 127 for c in url):
        raise UsageError(f"{what}: the URL holds a control character")
    if re.match(r"^[A-Za-z0-9+.-]+::", url):
        raise UsageError(f"{what}: {url.split('::')[0]}:: runs a git remote helper; only https, ssh and file "
                         "URLs are allowed")
    base = "https:ssh:file"
    if "://" in url:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme == "http" and (parts.hostname or "") in LOOPBACK:
            return base + ":http"
        if scheme not in ("https", "ssh", "file"):
            raise UsageError(f"{what}: {scheme}:// is not allowed; use https, ssh or file "
                             "(http only to this host)")
    return base


def auth_header(url: str, user: str, token: str) -> dict[str, str]:
    """Git's environment that sends ``token`` as HTTP basic authorization to ``url``'s host
    only (``http.<url>.extraHeader`` through ``GIT_CONFIG_COUNT``): never a URL with a token in
    it, never an argument ``ps`` shows; works with ``persist-credentials: false``."""
    parts = urlsplit(url)
    if not token or parts.scheme.lower() not in ("https", "http") or not parts.hostname:
        return {}
    basic = base64.b64encode(f"{user}:{token}".encode()).decode("ascii")
    return {"GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": f"http.{parts.scheme.lower()}://{parts.netloc.rpartition('@')[2]}/.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}"}


def environment(env: Mapping[str, str], *, protocols: str = "https:ssh:file",
                extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Git's environment: the caller's without any ``GIT_*`` variable, and the safe settings."""
    run_env = {k: v for k, v in env.items() if not k.startswith("GIT_") or k in _KEPT}
    run_env.pop("SSH_ASKPASS", None)
    run_env.update({"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_NO_REPLACE_OBJECTS": "1",
                    "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false", "GIT_SSH_COMMAND": "ssh",
                    "GIT_PAGER": "cat", "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C",
                    "GIT_ALLOW_PROTOCOL": protocols, "GIT_PROTOCOL_FROM_USER": "0"})
    run_env.update(extra or {})
    return run_env


def run(repo: Path, args: Sequence[str], env: Mapping[str, str],
        timeout: int = GIT_TIMEOUT) -> subprocess.CompletedProcess[bytes]:
    """Run ``git -C repo ARGS`` with the safe settings; ``env`` is already ``environment()``.

    The run's deadline counts (``deadline``): git waits no longer than the time the run has left,
    and a policy source that could not be read in time denies (exit 3) naming the git command."""
    import subprocess  # noqa: S404 - fixed argument lists, never a shell; imported when git runs (~3 ms)

    from policyengine import deadline

    command = args[0] if args else ""
    remote = next((a for a in args if "://" in a), None)
    what = f"git {command}" + (f" from {public_url(remote)}" if remote else "") + " (the policy source)"
    try:
        limit = deadline.limit(timeout, what)
        try:
            return subprocess.run(["git", "--no-pager", *SAFE_CONFIG, "-C", str(repo), *args],  # noqa: S603,S607
                                  capture_output=True, timeout=limit, env=dict(env), check=False)
        except subprocess.TimeoutExpired:
            deadline.check(what)  # cut short by the run's deadline: say so
            raise PolicySourceError(f"git {command} took longer than {timeout} s") from None
    except FileNotFoundError:
        raise PolicySourceError("git is not installed, so the trusted policy cannot be read") from None
    except deadline.RunDeadlineError as exc:  # the trusted policy could not be read in time: deny, exit 3
        raise PolicySourceError(exc.message, hint=exc.hint) from None



def object_id(kind: str, data: bytes, like: str) -> str:
    """The id git gives ``data`` as a ``kind`` object, in the format of ``like`` (SHA-1 or SHA-256)."""
    algo = hashlib.sha256 if len(like) == 64 else hashlib.sha1
    return algo(f"{kind} {len(data)}\0".encode() + data, usedforsecurity=False).hexdigest()


def read_object(repo: Path, kind: str, oid: str, env: Mapping[str, str], *, limit: int | None = None) -> bytes:
    """The bytes of object ``oid``, checked to hash to ``oid``. Raises PolicySourceError."""
    if not SHA.match(oid):
        raise PolicySourceError(f"{oid!r} is not an object id")
    if limit is not None:
        size = run(repo, ["cat-file", "-s", oid], env).stdout.decode().strip()
        if not size.isdigit() or int(size) > limit:
            raise PolicySourceError(f"object {oid[:12]} is larger than {limit} bytes (or missing); refusing to read it")
    proc = run(repo, ["cat-file", kind, oid], env)
    if proc.returncode != 0:
        raise PolicySourceError(f"cannot read {kind} {oid[:12]} in {repo}")
    data = bytes(proc.stdout)
    if object_id(kind, data, oid) != oid:
        raise PolicySourceError(f"the repository {repo} returned bytes for {kind} {oid} that do not hash to it; "
                                "refusing them (an earlier step may have tampered with its object store)")
    return data


def tree_entry(tree: bytes, name: str, like: str) -> tuple[str, str] | None:
    """``(mode, oid)`` of ``name`` in a raw tree object, or None."""
    width = 32 if len(like) == 64 else 20
    i, want = 0, name.encode("utf-8", "surrogateescape")
    while i < len(tree):
        space = tree.index(b" ", i)
        nul = tree.index(b"\0", space)
        mode, entry = tree[i:space].decode("ascii"), tree[space + 1:nul]
        oid = tree[nul + 1:nul + 1 + width].hex()
        if entry == want:
            return mode, oid
        i = nul + 1 + width
    return None


def read_path(repo: Path, commit: str, path: str, env: Mapping[str, str], *, limit: int, where: str
              ) -> tuple[bytes, str]:
    """The file ``path`` at ``commit``, every object on the way checked against its id:
    ``(bytes, blob id)``. Raises PolicySourceError (missing, not a file, tampered, too large)."""
    head = read_object(repo, "commit", commit, env)
    match = re.match(rb"tree ([0-9a-f]{40,64})\n", head)
    if not match:
        raise PolicySourceError(f"commit {commit[:12]} has no tree")
    oid, mode = match.group(1).decode(), "40000"
    parts = [p for p in path.split("/") if p not in ("", ".")]
    for depth, part in enumerate(parts):
        if mode != "40000":
            raise PolicySourceError(f"{path} does not exist at {where} ({commit[:12]})")
        found = tree_entry(read_object(repo, "tree", oid, env), part, commit)
        if found is None:
            raise PolicySourceError(f"{path} does not exist at {where} ({commit[:12]})")
        mode, oid = found
        if depth == len(parts) - 1 and mode not in ("100644", "100755"):
            kind = {"40000": "tree", "120000": "symbolic link", "160000": "submodule"}.get(mode, mode)
            raise PolicySourceError(f"{path} at {where} is a {kind}, not a file")
    return read_object(repo, "blob", oid, env, limit=limit), oid


def first_line(data: bytes, env: Mapping[str, str], secrets: Sequence[str] = ()) -> str:
    """The line of git's error output that explains the failure (``errors.explain_git_error``),
    redacted, for a one-line message."""
    from policyengine.redact import Redactor

    return Redactor.from_env(env, extra=secrets).text(explain_git_error(data, limit=300))


def public_url(url: str) -> str:
    """The URL without user or password (a token in a URL must never reach the evidence)."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if parts.port:
            host += f":{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return url


def platform_remote(env: Mapping[str, str]) -> tuple[str, dict[str, str], list[str]] | None:
    """``(url, git environment with the token, secrets)`` of the repository being deployed, as
    the platform names it (never the workspace's ``.git/config``), or None when none is named."""
    server, repository = env.get("GITHUB_SERVER_URL", "").strip(), env.get("GITHUB_REPOSITORY", "").strip()
    if server and repository:
        url, user, token = f"{server.rstrip('/')}/{repository}", "x-access-token", env.get("GITHUB_TOKEN", "")
    elif env.get("CI_REPOSITORY_URL", "").strip():
        raw = env["CI_REPOSITORY_URL"].strip()
        url, user = public_url(raw), "gitlab-ci-token"
        token = env.get("CI_JOB_TOKEN", "") or (urlsplit(raw).password or "" if "://" in raw else "")
    elif env.get("POLICYENGINE_REPOSITORY_URL", "").strip():
        url, user, token = public_url(env["POLICYENGINE_REPOSITORY_URL"].strip()), "x-access-token", ""
    else:
        return None
    header = auth_header(url, user, token)
    secrets = [token, header.get("GIT_CONFIG_VALUE_0", "").rpartition(" ")[2]] if header else []
    return url, header, [s for s in secrets if s]
