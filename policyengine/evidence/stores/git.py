"""The git evidence store: bundles kept on a ref of a git repository, one commit per bundle.

``--evidence-store`` takes:

* ``git:REF``: the ref ``REF`` (``refs/heads/policyengine-evidence``; a bare name means
  ``refs/heads/NAME``) of the remote ``origin`` of the git repository in the current
  directory (the job's checkout). Only the remote's URL is read from that repository; nothing
  is fetched into it, nothing runs in it;
* ``git+URL#REF``: the ref of another repository (``git+https://host/acme/evidence.git#refs/
  heads/evidence``, ``git+ssh://...``, ``git+file:///srv/evidence.git#...``). A separate
  evidence repository with its own narrowly scoped token is the stronger setup: a token that
  may push to the deployed repository can also push to its code.

The tree of the ref::

    bundles/<YYYY>/<MM>/<id>.zip       the bundles (the path follows from the id)
    index/<YYYY>-<MM>.jsonl            the index records of the bundles created that month,
                                       one JSON line each (the local store's format)
    chains/<chain key>/head.json       each chain's last record (``store.chain_key``)
    catalogue/<n>.json                 the store catalogues (``evidence.catalogue``), one added by
                                       each record commit

**Writing** happens in a temporary bare repository, never in a checkout: ``ls-remote`` reads
the ref, a shallow, blob-less fetch (``--depth=1 --filter=blob:none``) brings its newest
commit and trees; only the blobs a writer needs (its chain's ``head.json`` and this month's
index shard) are fetched on demand. The bundle, the shard with one more line and the new
``head.json`` are written with ``git hash-object -w``, the tree with ``read-tree`` /
``update-index`` / ``write-tree --missing-ok`` on a temporary ``GIT_INDEX_FILE``, the commit
with ``commit-tree``; ``git push --force-with-lease=REF:OLD`` is the compare-and-swap: it
succeeds only when the remote ref still points at the commit this writer built on (or does
not exist yet, for the first bundle). When it is rejected, the writer fetches the new head,
rebuilds and re-signs its bundle on it (the chain link is inside the manifest and the signed
statement) and tries again, at most ``MAX_ATTEMPTS`` times with jittered backoff: concurrent
deploys form one unbroken chain. No commit rewrites a blob that grows with the whole archive:
index shards are monthly.

**Signed bundles only.** Anyone who can push to the ref can append to it, so a git store
refuses to write an unsigned bundle (``check`` without ``--signing-key``: exit 2) and
refuses to verify without the public key (exit 2).

**Credentials.** The token comes from ``POLICYENGINE_EVIDENCE_TOKEN`` (its user name from
``POLICYENGINE_EVIDENCE_TOKEN_USER``, default ``x-access-token``, which GitHub expects; GitLab
accepts any). It reaches git only through the environment (``GIT_CONFIG_COUNT`` /
``GIT_CONFIG_KEY_0`` / ``GIT_CONFIG_VALUE_0``: an ``http.<scheme>://<host>/.extraHeader`` of
HTTP basic authorization), never on a command line that ``ps`` shows, and is redacted from
every message (as the value of a ``POLICYENGINE_*_TOKEN`` variable, and in its base64 form).
A URL holding a password is refused: put the token in the variable. Git's trace variables are
removed from its environment, the system and global configurations are not read, replace refs
are ignored, only the store URL's own transport is allowed (``https``, ``ssh``, ``file``, and
``http`` only to this machine); hooks, fsmonitor, credential helpers and upload-pack commands
never run; a URL, host, user or ref that begins with ``-`` is refused.

**Reading** (``list``, ``show``, ``get``, ``replay``, ``audit export``, the previous deploy of
``check``) fetches into a cache (``$POLICYENGINE_CACHE_DIR`` or
``~/.cache/policyengine/git-<hash>.git``); ``list`` reads only the index shards of the months its
``--since``/``--until`` cover. The cache is a folder another job may have written (a self-hosted
runner's home), so nothing in it is trusted but object bytes checked against their ids: git
runs in a repository made for each read, with a configuration written here, and borrows only
the cache's objects (``_cache``); the commit read is the one ``ls-remote`` of the given URL
names; every object read (that commit, each tree down the path, each blob) is hashed and
compared with its id here (git does not do that when reading); on a mismatch the cache is
deleted and the read done again from a fresh fetch, with a note. A cache folder holding
anything this module does not write there is deleted and made again.

**Verifying** fetches the ref's whole history into a fresh temporary repository and holds every
commit to ``COMMIT_KINDS`` (``history_problems``): a plain commit that deletes or rewrites a
record fails ``verify`` without an anchored head. A force-push of a consistent history does not:
that needs ``verify --head``.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from msgspec import Struct, structs

import policyengine.evidence.format.catalogue as catalogue_mod
from policyengine.errors import EvidenceError, UsageError, explain_git_error
from policyengine.evidence.format.bundle import VerifyProblem
from policyengine.evidence.format.index import COLUMNS, Query
from policyengine.evidence.format.records import BASELINE, kind_of
from policyengine.evidence.format.signing import SigningKey
from policyengine.evidence.format.timestamp import StampCheck
from policyengine.evidence.stores.base import (
    BundleRef,
    EvidenceStore,
    Job,
    VerifyReport,
    chain_key,
    parse_record,
    pause_point,
    ref_of,
)
from policyengine.redact import EvidenceRedactor, Redactor

TOKEN_ENV = "POLICYENGINE_EVIDENCE_TOKEN"
TOKEN_USER_ENV = "POLICYENGINE_EVIDENCE_TOKEN_USER"
TEST_PAUSE_ENV = "POLICYENGINE_TEST_GIT_PAUSE"
"""Tests only: after its first fetch, a writer creates ``<value>.ready`` and waits (at most a
minute) until ``<value>`` exists, so that another writer can move the ref meanwhile."""
MAX_ATTEMPTS = 60
GIT_TIMEOUT = 300
BUNDLES = "bundles"
INDEX_DIR = "index"
CHAINS = "chains"
CATALOGUE_DIR = catalogue_mod.CATALOGUE_DIR
_COLUMN_SET = frozenset(COLUMNS)
_SHARD_RE = re.compile(r"^([0-9]{4})-([0-9]{2})\.jsonl$")
_OID_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
# Settings that keep git from running anything a configuration names. Every repository git runs in
# is one this module created a moment before (the cache lends only its objects, see ``_cache``), the
# system and global configurations are not read (``_Git``): these are a second fence. They reach
# the git processes git itself starts (a lazy fetch) through GIT_CONFIG_PARAMETERS.
_SAFE = ["-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "protocol.ext.allow=never",
         "-c", "core.sshCommand=ssh", "-c", "gc.auto=0", "-c", "maintenance.auto=false",
         "-c", "remote.origin.uploadpack=git-upload-pack", "-c", "remote.origin.receivepack=git-receive-pack",
         "-c", "credential.helper=", "-c", "core.askPass=", "-c", "core.alternateRefsCommand=",
         "-c", "core.commitGraph=false", "-c", "fetch.writeCommitGraph=false", "-c", "fetch.recurseSubmodules=false",
         "-c", "commit.gpgSign=false", "-c", "core.quotePath=true"]
_LOOPBACK = ("localhost", "127.0.0.1", "::1")
# Environment variables of the caller that git may keep: the SSH command (a deploy key) and TLS roots.
_GIT_ENV_KEPT = ("GIT_SSH", "GIT_SSH_COMMAND", "GIT_SSL_CAINFO", "GIT_SSL_CAPATH")
# A rejected compare-and-swap (another writer moved the ref, or held its lock): build again.
_RETRYABLE = ("stale info", "fetch first", "non-fast-forward", "cannot lock ref", "failed to update ref",
              "failed to lock", "incorrect old value", "reference already exists", "already exists")
_AUTHOR = {"GIT_AUTHOR_NAME": "policyengine", "GIT_AUTHOR_EMAIL": "policyengine@invalid",
           "GIT_COMMITTER_NAME": "policyengine", "GIT_COMMITTER_EMAIL": "policyengine@invalid"}


def is_git_url(url: str) -> bool:
    """Whether ``url`` names a git store (``git:REF`` or ``git+URL#REF``)."""
    return url.startswith(("git:", "git+"))


def bundle_path(bundle_id: str) -> str:
    """Where bundle ``bundle_id`` lives in the ref's tree."""
    return f"{BUNDLES}/{bundle_id[0:4]}/{bundle_id[4:6]}/{bundle_id}.zip"


def shard_path(bundle_id: str) -> str:
    """The index shard that records bundle ``bundle_id``: the month of its id (its creation)."""
    return f"{INDEX_DIR}/{bundle_id[0:4]}-{bundle_id[4:6]}.jsonl"


def head_path(key: tuple[str | None, str | None]) -> str:
    return f"{CHAINS}/{chain_key(*key)}/head.json"


# -- what a commit of the evidence ref may change ------------------------------------------------

_BUNDLE_PATH_RE = re.compile(r"^bundles/([0-9]{4})/([0-9]{2})/([^/]+)\.zip$")
_SHARD_PATH_RE = re.compile(r"^index/([0-9]{4})-([0-9]{2})\.jsonl$")
_HEAD_PATH_RE = re.compile(r"^chains/[^/]+/[^/]+/head\.json$")
_CATALOGUE_PATH_RE = re.compile(r"^catalogue/[0-9]{12}\.json$")


class CommitKind(Struct, frozen=True):
    """What one commit of the evidence ref may change; ``history_problems`` holds every commit to it.

    ``adds``: files it creates (that never existed); ``appends``: files it creates or extends by
    exactly one line; ``sets``: files naming heads, which it creates or replaces. Nothing else
    may change: no file is deleted, and no other file is rewritten.
    """

    name: str
    adds: re.Pattern[str]
    appends: re.Pattern[str]
    sets: re.Pattern[str]
    description: str
    catalogue: re.Pattern[str] | None = None
    """The store catalogue the commit adds (``evidence.catalogue``): at most one, never changed after."""


RECORD_COMMIT = CommitKind(
    "record", _BUNDLE_PATH_RE, _SHARD_PATH_RE, _HEAD_PATH_RE,
    "adds one bundle bundles/YYYY/MM/<id>.zip, appends its index line to index/YYYY-MM.jsonl (the month of "
    "its id), sets chains/<chain key>/head.json, the head of its chain, to that same line, and adds the next "
    "store catalogue catalogue/<n>.json (commits made before catalogues add none)", _CATALOGUE_PATH_RE)
BASELINE_COMMIT = CommitKind(
    "baseline", _BUNDLE_PATH_RE, _SHARD_PATH_RE, _HEAD_PATH_RE,
    "a record commit whose bundle is a baseline (evidence baseline): it must create its chain's head.json "
    "(the chain held nothing: a baseline is only ever the first record of an empty chain, #1), and adds the "
    "next store catalogue", _CATALOGUE_PATH_RE)
COMMIT_KINDS: dict[str, CommitKind] = {"record": RECORD_COMMIT, "baseline": BASELINE_COMMIT}
"""Every kind of commit the git store writes. Every bundle (an evaluation, and each linked record:
outcome, review, emergency approval, ...) is written by ``GitArchive._commit`` as a ``record``
commit; a ``baseline`` commit is a record commit whose index line is of kind baseline, held to
creating its chain (``history_problems``). A feature that writes other files (shards, catalogues) adds its kind here, with what its
commits may change, and its check to ``history_problems``."""


def _check_ref(ref: str, where: str) -> str:
    if not ref.startswith("refs/"):
        ref = f"refs/heads/{ref}"
    parts = ref.split("/")
    if (ref.startswith("-") or any(c.isspace() or ord(c) < 32 or ord(c) == 127 or c in "~^:?*[\\" for c in ref)
            or "" in parts or any(p.startswith((".", "-")) or p.endswith(".lock") for p in parts) or ".." in ref
            or ref.endswith(".") or "@{" in ref or len(parts) < 3):
        raise UsageError(f"--evidence-store: {where}: {ref!r} is not a git ref",
                         hint="e.g. git:refs/heads/policyengine-evidence")
    return ref


DEFAULT_REF = "refs/heads/policyengine-evidence"
"""The ref of ``git+URL`` without ``#REF``."""


def parse_git_url(url: str) -> tuple[str | None, str]:
    """``git:REF`` -> (None, REF); ``git+URL#REF`` -> (URL, REF); ``git+URL`` -> (URL, ``DEFAULT_REF``).
    UsageError when malformed.

    A URL holding a password (``https://user:token@host/...``) is refused: the token would be
    printed wherever the store's URL is.
    """
    if url.startswith("git:"):
        return None, _check_ref(url[4:], url)
    remote, sep, ref = url[4:].partition("#")
    if url.startswith("git+") and not sep:  # no #REF: the documented default, the ref git: examples use
        sep, ref = "#", DEFAULT_REF
    if not url.startswith("git+") or not sep or not remote or not ref:
        raise UsageError(f"--evidence-store: {_public_url(url)!r} is not git:REF or git+URL#REF",
                         hint="e.g. git+https://github.com/acme/evidence.git#refs/heads/evidence")
    if remote.startswith("-"):
        raise UsageError(f"--evidence-store: {remote!r} is not a repository URL")
    scheme = _scheme(remote)
    if scheme not in ("https", "http", "ssh", "file"):
        raise UsageError(f"--evidence-store: {_public_url(url)!r}: the repository must be an https://, ssh://, "
                         "file:// or user@host:path URL")
    if "://" in remote:
        try:
            parts = urlsplit(remote)
            host = parts.hostname or ""
        except ValueError:
            raise UsageError(f"--evidence-store: {_public_url(url)!r} is not a repository URL") from None
        if parts.password is not None or (parts.username and scheme in ("https", "http")):
            raise UsageError("--evidence-store: the repository URL holds credentials; never put a token in a URL",
                             hint=f"give the token in {TOKEN_ENV} (it is sent as an HTTP header, never printed)")
        # An option-shaped host or user (ssh://-oProxyCommand=...) would reach ssh's command line.
        if host.startswith("-") or (parts.username or "").startswith("-"):
            raise UsageError(f"--evidence-store: {_public_url(url)!r}: a host or user may not begin with '-'")
        if scheme == "http" and host not in _LOOPBACK:
            raise UsageError(f"--evidence-store: {_public_url(url)!r}: plain http is allowed only to this machine "
                             "(localhost, 127.0.0.1, ::1)", hint="use https:// or ssh://")
    elif scheme == "ssh" and remote.split("@", 1)[-1].startswith("-"):
        raise UsageError(f"--evidence-store: {remote!r}: a host may not begin with '-'")
    return remote, _check_ref(ref, _public_url(url))


def _scheme(remote: str) -> str:
    """The transport of a repository URL (``user@host:path`` is ssh; "" when none is recognised)."""
    if "://" in remote:
        return remote.split("://", 1)[0].lower()
    return "ssh" if re.match(r"^[\w.-]+@[\w.-]+:", remote) else ""


def _public_url(url: str) -> str:
    """``url`` without any user or password (for messages)."""
    head, sep, rest = url.partition("+")
    inner = rest if sep and head == "git" else url
    try:
        parts = urlsplit(inner.split("#", 1)[0])
    except ValueError:
        return "<unparseable URL>"
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        clean = urlunsplit((parts.scheme, host, parts.path, parts.query, ""))
        fragment = inner.split("#", 1)[1] if "#" in inner else None
        clean += f"#{fragment}" if fragment is not None else ""
        return f"git+{clean}" if inner is rest else clean
    return url


def _strip_userinfo(remote: str) -> str:
    """An https URL without credentials: git must never use a token found in a URL (e.g. the
    ``gitlab-ci-token:...@`` of a GitLab checkout's origin)."""
    if "://" not in remote:
        return remote
    parts = urlsplit(remote)
    if parts.scheme.lower() not in ("https", "http") or not (parts.username or parts.password):
        return remote
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _repository_config(start: Path) -> Path | None:
    """The ``config`` file of the git repository holding ``start`` (a worktree's: its common one)."""
    for folder in (start.resolve(), *start.resolve().parents):
        dot = folder / ".git"
        if dot.is_dir():
            gitdir = dot
        elif dot.is_file():
            text = dot.read_text(encoding="utf-8", errors="replace").strip()
            if not text.startswith("gitdir:"):
                return None
            gitdir = (folder / text[len("gitdir:"):].strip()).resolve()
            common = gitdir / "commondir"
            if common.is_file():
                gitdir = (gitdir / common.read_text(encoding="utf-8", errors="replace").strip()).resolve()
        else:
            continue
        return gitdir / "config" if (gitdir / "config").is_file() else None
    return None


class CacheAltered(EvidenceError):
    """An object of the cache repository does not hash to its id: the cache was written by someone else."""


class _Git:
    """Run git in one bare repository, with the token (if any) in the environment only."""

    def __init__(self, repo: Path, remote: str, env: Mapping[str, str], *, objects: Path | None = None) -> None:
        self.repo = repo
        self.remote = remote
        token = env.get(TOKEN_ENV, "")
        user = env.get(TOKEN_USER_ENV, "") or "x-access-token"
        run_env = {k: v for k, v in env.items() if not k.startswith("GIT_") or k in _GIT_ENV_KEPT}
        # No system or global configuration, no replace refs; only the transport of the store's own
        # URL (a redirect to another protocol is refused by git).
        run_env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
                        "GIT_NO_REPLACE_OBJECTS": "1", "LC_ALL": "C",
                        "GIT_ALLOW_PROTOCOL": _scheme(remote) or "none", "GIT_DIR": str(repo), **_AUTHOR})
        if objects is not None:
            run_env["GIT_OBJECT_DIRECTORY"] = str(objects)  # the cache: its objects only
        secrets = [token] if token else []
        if token and "://" in remote and urlsplit(remote).scheme.lower() in ("https", "http"):
            parts = urlsplit(remote)
            basic = base64.b64encode(f"{user}:{token}".encode()).decode("ascii")
            run_env.update({"GIT_CONFIG_COUNT": "1",
                            "GIT_CONFIG_KEY_0": f"http.{parts.scheme.lower()}://{parts.netloc}/.extraHeader",
                            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}"})
            secrets += [basic, f"{user}:{token}"]
        self.env = run_env
        self.redactor = Redactor.from_env(env, extra=secrets)
        self._trees: dict[str, dict[str, tuple[bytes, str]]] = {}
        self._roots: dict[str, str] = {}

    def run(self, *args: str, stdin: bytes | None = None, extra_env: Mapping[str, str] | None = None,
            check: bool = True, what: str | None = None) -> subprocess.CompletedProcess[bytes]:
        from policyengine import deadline

        env = {**self.env, **(extra_env or {})}
        waiting_for = f"git {args[0]} ({what or args[0]}) of the git evidence store"
        try:
            # The run's deadline counts: git waits no longer than the time left; past it, an
            # EvidenceError like any other failure of the store (the gate notes the deadline).
            timeout = deadline.limit(GIT_TIMEOUT, waiting_for)
            try:
                proc = subprocess.run(["git", *_SAFE, *args], input=stdin, capture_output=True,
                                      timeout=timeout, env=env, check=False)
            except subprocess.TimeoutExpired:
                deadline.check(waiting_for)  # cut short by the run's deadline: say so
                raise EvidenceError(f"git {args[0]} took longer than {GIT_TIMEOUT} s (git evidence store)") from None
        except FileNotFoundError:
            raise EvidenceError("git is not installed, so the git evidence store cannot be used") from None
        except deadline.RunDeadlineError as exc:
            raise EvidenceError(exc.message, hint=exc.hint) from None
        if check and proc.returncode != 0:
            raise EvidenceError(f"git evidence store: cannot {what or args[0]}: {self.message(proc.stderr)}",
                                hint="check the store URL, that the ref exists or may be created, and "
                                     f"that {TOKEN_ENV} may read and push it")
        return proc

    def message(self, data: bytes) -> str:
        """The line of git's output that explains the failure (``errors.explain_git_error``), redacted."""
        return self.redactor.text(explain_git_error(data, limit=400))

    def init(self) -> None:
        """Create the repository (no template: no hooks) with the store as ``origin``, its promisor remote."""
        self.run("init", "--quiet", "--bare", "--template=", str(self.repo), what="create a repository")
        for key, value in (("core.repositoryformatversion", "1"), ("extensions.partialClone", "origin"),
                           ("remote.origin.url", self.remote), ("remote.origin.promisor", "true"),
                           ("remote.origin.partialclonefilter", "blob:none")):
            self.run("config", "--end-of-options", key, value, what="configure the remote")

    def ls_remote(self, ref: str) -> str | None:
        """The commit the remote's ``ref`` points at (None: no such ref)."""
        proc = self.run("ls-remote", "--end-of-options", "origin", ref, what=f"read {ref} of the evidence repository")
        for line in proc.stdout.decode("utf-8", "replace").splitlines():
            oid, _, name = line.partition("\t")
            if name == ref and _OID_RE.match(oid):
                return oid
        return None

    def fetch(self, ref: str, local: str, *, blobs: bool, history: bool = False) -> bool:
        """Fetch the newest commit of ``ref`` (``history``: with all its history) into ``local``; False
        when the ref is gone."""
        args = ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", *([] if history else ["--depth=1"])]
        if not blobs:
            args.append("--filter=blob:none")
        proc = self.run(*args, "--end-of-options", "origin", f"+{ref}:{local}", check=False)
        if proc.returncode != 0:
            if b"couldn't find remote ref" in proc.stderr:
                return False
            raise EvidenceError(f"git evidence store: cannot fetch {ref}: {self.message(proc.stderr)}",
                                hint=f"check the store URL and that {TOKEN_ENV} may read it")
        return True

    def rev_parse(self, spec: str) -> str | None:
        proc = self.run("rev-parse", "--verify", "--quiet", "--end-of-options", spec, check=False)
        return proc.stdout.decode().strip() if proc.returncode == 0 else None

    def objects(self, oids: Sequence[str]) -> builtins.list[tuple[str, bytes] | None]:
        """``(type, bytes)`` of each object (None: not there), read with one ``cat-file --batch``.

        Each object must hash to its id (SHA-1, or SHA-256 for a 64-digit id). Git does not check
        this on reading, and the cache repository lives in a folder another job may have written
        (a self-hosted runner's home): a commit, tree or shard altered there is refused here
        (``CacheAltered``) instead of being read as the remote's. Blobs of a blob-less fetch are
        fetched on demand.
        """
        if not oids:
            return []
        proc = self.run("cat-file", "--batch", stdin=("\n".join(oids) + "\n").encode(), what="read objects")
        out: list[tuple[str, bytes] | None] = []
        pos, data = 0, proc.stdout
        for oid in oids:
            end = data.find(b"\n", pos)
            header = data[pos:end].split() if end >= 0 else []
            if len(header) == 2 and header[1] == b"missing" and header[0].decode() == oid:
                out.append(None)
                pos = end + 1
                continue
            if len(header) != 3 or header[0].decode() != oid or not header[2].isdigit():
                raise EvidenceError(f"git evidence store: cannot read object {oid}")
            kind, size = header[1], int(header[2])
            content = bytes(data[end + 1:end + 1 + size])
            algo = hashlib.sha1 if len(oid) == 40 else hashlib.sha256
            if len(content) != size or algo(b"%s %d\0" % (kind, size) + content).hexdigest() != oid:
                raise CacheAltered(f"git object {oid} in {self.repo} does not hash to its id")
            out.append((kind.decode(), content))
            pos = end + 1 + size + 1
        return out

    def _object(self, oid: str, kind: str) -> bytes | None:
        found = self.objects([oid])[0]
        if found is None:
            return None
        if found[0] != kind:
            raise CacheAltered(f"git object {oid} in {self.repo} is a {found[0]}, not a {kind}")
        return found[1]

    def _entries(self, tree: str) -> dict[str, tuple[bytes, str]]:
        """``{name: (mode, id)}`` of one tree object (checked; kept: an id names one content)."""
        if tree in self._trees:
            return self._trees[tree]
        data = self._object(tree, "tree")
        if data is None:
            raise EvidenceError(f"git evidence store: tree {tree} is missing")
        width = 20 if len(tree) == 40 else 32
        out, pos = {}, 0
        while pos < len(data):
            space, nul = data.find(b" ", pos), data.find(b"\0", pos)
            if space < 0 or nul < space or nul + 1 + width > len(data):
                raise EvidenceError(f"git evidence store: tree {tree} is malformed")
            name = data[space + 1:nul].decode("utf-8", "surrogateescape")
            out[name] = (data[pos:space], data[nul + 1:nul + 1 + width].hex())
            pos = nul + 1 + width
        self._trees[tree] = out
        return out

    def _path_id(self, commit: str, path: str) -> tuple[bytes, str] | None:
        """``(mode, id)`` of ``path`` at ``commit``, walking checked objects (None: no such path)."""
        root = self._roots.get(commit)
        if root is None:
            data = self._object(commit, "commit")
            if data is None or not re.match(rb"tree [0-9a-f]{40}([0-9a-f]{24})?\n", data):
                raise EvidenceError(f"git evidence store: commit {commit} is missing or malformed")
            root = self._roots[commit] = data[5:data.index(b"\n")].decode()
        node: tuple[bytes, str] = (b"40000", root)
        for part in [p for p in path.split("/") if p]:
            if node[0] != b"40000":
                return None
            found = self._entries(node[1]).get(part)
            if found is None:
                return None
            node = found
        return node

    def blob(self, commit: str, path: str) -> bytes | None:
        """The bytes of ``path`` at ``commit`` (fetched on demand); None when there is no such file."""
        node = self._path_id(commit, path)
        if node is None or node[0] == b"40000":
            return None
        return self._object(node[1], "blob")

    def tree(self, commit: str, path: str, *, recursive: bool = False) -> dict[str, str]:
        """``{path: blob id}`` of the files under ``path`` at ``commit`` (no blob is fetched)."""
        node = self._path_id(commit, path)
        out: dict[str, str] = {}
        if node is None or node[0] != b"40000":
            return out
        todo = [(path.strip("/"), node[1])]
        while todo:
            prefix, tree = todo.pop()
            for name, (mode, oid) in self._entries(tree).items():
                if mode == b"40000":
                    if recursive:
                        todo.append((f"{prefix}/{name}", oid))
                elif mode in (b"100644", b"100755", b"120000"):  # what ls-tree calls a blob
                    out[f"{prefix}/{name}"] = oid
        return out

    def hash_object(self, data: bytes | None = None, *, file: Path | None = None) -> str:
        if file is not None:
            proc = self.run("hash-object", "-w", "--no-filters", "--", str(file), what="store a bundle")
        else:
            proc = self.run("hash-object", "-w", "--no-filters", "--stdin", stdin=data, what="store a blob")
        return proc.stdout.decode().strip()


class _Change(Struct, frozen=True):
    """One line of ``git log --raw``: a file a commit added (A), modified (M), deleted (D) or retyped (T)."""

    status: str
    new_mode: str
    old: str
    new: str
    path: str


_VERB = {"D": "deletes", "M": "rewrites", "T": "changes the type of"}


def _stem(path: str) -> str:
    """The bundle id a bundle path names (its file name without ``.zip``)."""
    return path.rsplit("/", 1)[-1].removesuffix(".zip")


def _blob_id(data: bytes, like: str) -> str:
    """The git id of a blob holding ``data`` (SHA-1, or SHA-256 when ``like`` is a 64-digit id)."""
    algo = hashlib.sha1 if len(like) == 40 else hashlib.sha256
    return algo(b"blob %d\0" % len(data) + data).hexdigest()


def _log(git: _Git, tip: str) -> builtins.list[tuple[str, builtins.list[str], builtins.list[_Change]]]:
    """(commit, parents, changes) of every commit reachable from ``tip``, oldest first: one ``git log``."""
    proc = git.run("log", "-z", "--raw", "--no-renames", "--no-abbrev", "--diff-merges=off", "--topo-order",
                   "--reverse", "--format=%H %P", "--end-of-options", tip, "--",
                   what="read the history of the evidence ref")
    tokens = proc.stdout.split(b"\0")
    commits: list[tuple[str, list[str], list[_Change]]] = []
    i = 0
    while i < len(tokens):
        token = tokens[i].lstrip(b"\n")
        i += 1
        if not token:
            continue
        if token.startswith(b":"):
            meta = token[1:].decode("ascii", "replace").split()
            if not commits or i >= len(tokens) or len(meta) != 5:
                raise EvidenceError("git evidence store: cannot read the history of the ref (git log)")
            path = tokens[i].decode("utf-8", "surrogateescape")
            i += 1
            commits[-1][2].append(_Change(meta[4][:1], meta[1], meta[2], meta[3], path))
            continue
        ids = token.decode("ascii", "replace").split()
        if not ids or not all(_OID_RE.match(oid) for oid in ids):
            raise EvidenceError("git evidence store: cannot read the history of the ref (git log)")
        commits.append((ids[0], ids[1:], []))
    return commits


def history_problems(git: _Git, tip: str) -> builtins.list[VerifyProblem]:
    """Hold every commit of the ref's history (fetched whole into ``git``) to ``COMMIT_KINDS``.

    Each commit but an empty first one is a ``record`` commit: it adds one bundle, appends that
    bundle's index line to its month's shard (the shard before it plus exactly that line: its
    id is compared with the id of that prefix of the newest shard, so no older version is read),
    and sets its chain's ``head.json`` to the same line, moving the head forward by exactly that
    record (the old ``head.json`` is the chain's previous record, the new line's sequence and
    previous_sha256 follow it). A merge, a deletion, a rewrite, a second record or any other file
    is a ``history`` problem naming the commit. One ``git log --raw`` reads the history; one
    ``cat-file --batch`` the newest version of each shard (an older one only where a commit
    rewrote the shard). A force-push that replaces the whole history is not seen here: that
    needs a head anchored elsewhere (``verify --head``).
    """
    problems: list[VerifyProblem] = []

    def fail(commit: str, message: str, bundle_id: str = "") -> None:
        problems.append(VerifyProblem(bundle_id, None, "history", f"commit {commit} {message}"))

    if (git.repo / "shallow").exists():
        problems.append(VerifyProblem("", None, "history", "the store's history could not be fetched whole (the "
                                      "repository is shallow): its commits cannot be checked"))
    commits = _log(git, tip)
    plans: dict[int, tuple[_Change, _Change, _Change]] = {}
    versions: dict[str, list[tuple[int, _Change]]] = {}
    for n, (commit, parents, changes) in enumerate(commits):
        for change in changes:
            if RECORD_COMMIT.appends.match(change.path):
                versions.setdefault(change.path, []).append((n, change))
        if len(parents) > 1:
            fail(commit, f"is a merge commit ({len(parents)} parents): the evidence ref is one line of commits, "
                         "each adding one record")
            continue
        if not changes and n == 0:
            continue  # an empty first commit only creates the ref
        adds, appends, sets, catalogues, wrong = [], [], [], [], False
        for change in changes:
            stem = _stem(change.path)
            if RECORD_COMMIT.catalogue is not None and RECORD_COMMIT.catalogue.match(change.path):
                if change.status != "A" or change.new_mode != "100644":
                    fail(commit, f"{_VERB.get(change.status, 'changes the mode of')} {change.path}: a catalogue, "
                                 "once added, is never changed or deleted")
                    wrong = True
                else:
                    catalogues.append(change)
                continue
            if change.status not in ("A", "M") or (change.new_mode != "100644"):
                verb = _VERB.get(change.status, "changes the mode of")
                fail(commit, f"{verb} {change.path}: a commit of the evidence ref may only add one record (a "
                             "bundle, its index line, its chain's head)",
                     stem if RECORD_COMMIT.adds.match(change.path) else "")
                wrong = True
            elif RECORD_COMMIT.adds.match(change.path):
                if change.status == "A":
                    adds.append(change)
                else:
                    fail(commit, f"rewrites {change.path}: a bundle, once added, is never changed", stem)
                    wrong = True
            elif RECORD_COMMIT.appends.match(change.path):
                appends.append(change)
            elif RECORD_COMMIT.sets.match(change.path):
                sets.append(change)
            else:
                fail(commit, f"changes {change.path}, which is no part of the evidence store (a commit adds a "
                             "bundle, its index line and its chain's head, nothing else)")
                wrong = True
        if not adds:
            fail(commit, "adds no record (each commit of the evidence ref adds exactly one); it changes "
                         f"{', '.join(c.path for c in changes) or 'nothing'}")
        elif len(adds) > 1:
            fail(commit, f"adds {len(adds)} bundles ({', '.join(c.path for c in adds)}): each commit of the "
                         "evidence ref adds exactly one record")
        elif len(appends) != 1 or len(sets) != 1:
            fail(commit, f"adds {adds[0].path} but changes {len(appends)} index shards and {len(sets)} chain heads "
                         "(one of each)", _stem(adds[0].path))
        elif len(catalogues) > 1:
            fail(commit, f"adds {len(catalogues)} catalogues ({', '.join(c.path for c in catalogues)}): a record "
                         "commit adds at most one", _stem(adds[0].path))
        elif not wrong:
            plans[n] = (adds[0], appends[0], sets[0])

    # Each shard, newest version first: the version before a commit is this one less its last line.
    cache: dict[str, bytes] = {}
    wanted = [(c.old if c.status == "D" else c.new) for shard in versions.values() for _, c in shard[-1:]]
    for oid, found in zip(wanted, git.objects(wanted), strict=True):
        if found is not None and found[0] == "blob":
            cache[oid] = found[1]

    def content(oid: str) -> bytes:
        if oid not in cache:
            found = git.objects([oid])[0]
            if found is None or found[0] != "blob":
                raise EvidenceError(f"git evidence store: cannot read object {oid} of the ref's history")
            cache[oid] = found[1]
        return cache[oid]

    added: dict[int, bytes] = {}
    for path, shard in versions.items():
        after = b""
        for position, (n, change) in enumerate(reversed(shard)):
            if change.status == "D":
                after = content(change.old)  # (the deletion is reported above)
                continue
            if position == 0:
                after = content(change.new)
            cut = after.rfind(b"\n", 0, len(after) - 1) + 1
            before, line = after[:cut], after[cut:]
            if after.endswith(b"\n") and ((change.status == "A" and before == b"")
                                          or (change.status == "M" and _blob_id(before, change.old) == change.old)):
                added[n] = line
                after = before
            else:
                fail(commits[n][0], f"rewrites {path}: the shard after it is not the shard before it plus "
                                    "exactly one line (an index line was added, deleted or changed)")
                after = content(change.old) if change.status == "M" else b""

    last: dict[tuple[str | None, str | None], tuple[dict[str, Any], bytes]] = {}
    for n, (bundle, shard, head) in sorted(plans.items()):
        commit, line = commits[n][0], added.get(n)
        bundle_id = _stem(bundle.path)
        if line is None:
            continue  # its shard was rewritten: reported
        try:
            record = parse_record(json.loads(line), path_for=lambda r: bundle_path(r["id"]))
        except (ValueError, TypeError, KeyError) as exc:
            fail(commit, f"appends a line to {shard.path} that is not an index record ({exc})", bundle_id)
            continue
        if record["path"] != bundle.path or shard_path(record["id"]) != shard.path:
            fail(commit, f"adds {bundle.path} but appends the index line of bundle {record['id']} to {shard.path}",
                 bundle_id)
            continue
        key = (record["repository"], record["environment"])
        if head.path != head_path(key) or head.new != _blob_id(line, head.new):
            fail(commit, f"sets {head.path} to something else than the record it adds (the head of the chain of "
                         f"{key[0]} / {key[1]} is {head_path(key)}, set to that record's index line)", bundle_id)
            continue
        previous = last.get(key)
        if previous is None:
            moved = head.status == "A"
            want: tuple[Any, Any] = (1, None)
        else:
            moved = head.status == "M" and head.old == _blob_id(previous[1], head.old)
            seq = previous[0].get("sequence")
            want = (seq + 1 if isinstance(seq, int) else None, previous[0]["sha256"])
        if not moved or (record.get("sequence"), record.get("previous_sha256")) != want:
            before = f"bundle {previous[0]['id']} (#{previous[0].get('sequence')})" if previous else "no record"
            fail(commit, f"adds bundle {record['id']} as #{record.get('sequence')} of the chain of {key[0]} / "
                         f"{key[1]}, whose last record was {before}: the head moves forward by exactly one record",
                 bundle_id)
        elif kind_of(record) == BASELINE and (previous is not None or head.status != "A"):
            fail(commit, f"adds baseline {record['id']} to the chain of {key[0]} / {key[1]}, which already had "
                         "records: a baseline is only ever the first record of an empty chain", bundle_id)
        last[key] = (record, line)
    return problems


_R = TypeVar("_R")


def _fresh_if_altered(method: Callable[..., _R]) -> Callable[..., _R]:
    """Run a read of the store; when it fails in the cache (an object altered there, or a cache
    git cannot read), once more from a fresh fetch. When that works the cache was at fault: it is
    deleted, with a note. When it fails too, its error is the remote's own and is raised."""
    @functools.wraps(method)
    def read(self: GitArchive, *args: Any, **kwargs: Any) -> _R:
        try:
            return method(self, *args, **kwargs)
        except EvidenceError as exc:
            if self._fresh:
                raise
            self._fresh, self._snapshot = True, None
            result = method(self, *args, **kwargs)
            self._drop_cache(exc)
            return result
    return read


def _jitter(attempt: int) -> float:
    return random.uniform(0, min(2.0, 0.05 * (2 ** min(attempt, 6))))


_CACHE_HEAD = b"ref: refs/heads/main\n"
_CACHE_CONFIG = (b"# policyengine's cache of a git evidence store: only objects/ is read, each object checked\n"
                 b"# against its id. A folder holding anything else is deleted and made again.\n"
                 b"[core]\n\trepositoryformatversion = 0\n\tbare = true\n")
_OBJECT_DIR_RE = re.compile(r"^(?:[0-9a-f]{2}|pack|info)$")


def _make_cache(path: Path) -> None:
    """Write an empty cache folder (a bare repository's skeleton: the objects folder is what is used)."""
    path.mkdir(mode=0o700)
    (path / "HEAD").write_bytes(_CACHE_HEAD)
    (path / "config").write_bytes(_CACHE_CONFIG)
    (path / "refs").mkdir()
    (path / "objects" / "pack").mkdir(parents=True)
    (path / "objects" / "info").mkdir()


def _cache_problem(path: Path) -> str | None:
    """What in the cache folder ``path`` policyengine did not write (None: nothing)."""
    try:
        if path.is_symlink() or not path.is_dir():
            return "it is not a folder"
        extra = sorted({e.name for e in os.scandir(path)} - {"HEAD", "config", "refs", "objects"})
        if extra:
            return f"it holds {extra[0]}"
        for name, want in (("HEAD", _CACHE_HEAD), ("config", _CACHE_CONFIG)):
            member = path / name
            if member.is_symlink() or not member.is_file() or member.read_bytes() != want:
                return f"its {name} is not the one policyengine writes"
        refs, objects = path / "refs", path / "objects"
        if refs.is_symlink() or not refs.is_dir() or any(refs.iterdir()):
            return "its refs/ is not empty"
        if objects.is_symlink() or not objects.is_dir():
            return "its objects/ is not a folder"
        for entry in os.scandir(objects):
            if entry.is_symlink() or not entry.is_dir() or not _OBJECT_DIR_RE.match(entry.name):
                return f"it holds objects/{entry.name}"
        info = objects / "info"
        if info.is_dir() and any(info.iterdir()):  # alternates, http-alternates, a commit-graph
            return f"it holds objects/info/{sorted(os.listdir(info))[0]}"
        pack = objects / "pack"
        for entry in os.scandir(pack) if pack.is_dir() else ():
            if not entry.is_file(follow_symlinks=False):  # a link, a folder, a pipe that would block git
                return f"objects/pack/{entry.name} is not a file"
    except OSError as exc:
        return f"it cannot be read: {exc.strerror or exc}"
    return None


def _remove(path: Path) -> None:
    """Delete the cache folder ``path`` (a link in its place: the link only)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def _cache_root(env: Mapping[str, str]) -> Path:
    base = env.get("POLICYENGINE_CACHE_DIR") or str(Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                                                   / "policyengine")
    return Path(base)


class GitArchive(EvidenceStore):
    """An evidence store on a git ref: one commit per bundle, pushed with compare-and-swap."""

    requires_signatures = True

    def __init__(self, url: str, *, cwd: str | os.PathLike[str] = ".", env: Mapping[str, str] | None = None) -> None:
        self.remote_url, self.ref = parse_git_url(url)
        self.url = _public_url(url)
        self._cwd = Path(cwd)
        self._env: Mapping[str, str] = os.environ if env is None else env
        self._remote: str | None = None
        self.notes: builtins.list[str] = []
        self._snapshot: tuple[_Git, str | None] | None = None
        self._fresh = False
        self._history_wanted = False  # a fresh snapshot fetches the ref's whole history (verify)
        self._history: tuple[str, builtins.list[VerifyProblem]] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    # -- plumbing ----------------------------------------------------------------------

    def remote(self) -> str:
        """The repository's URL (``git:REF``: the ``origin`` of the repository in the current directory)."""
        if self._remote is None:
            if self.remote_url is not None:
                self._remote = self.remote_url
            else:
                config = _repository_config(self._cwd)
                probe = _Git(self._cwd, "", self._env)
                probe.env.pop("GIT_DIR", None)
                proc = None
                if config is not None:  # read as a file: no repository discovery, no include, nothing run
                    proc = probe.run("config", "--file", str(config), "--get", "remote.origin.url", check=False)
                if proc is None or proc.returncode != 0 or not proc.stdout.strip():
                    raise UsageError(f"--evidence-store {self.url}: {self._cwd.resolve()} is not in a git repository "
                                     "with a remote 'origin'",
                                     hint="run in the job's checkout, or name the repository: git+URL#REF")
                self._remote = _strip_userinfo(proc.stdout.decode("utf-8", "replace").strip())
                parse_git_url(f"git+{self._remote}#{self.ref}")  # the same checks as a given URL
        return self._remote

    def check_write(self, signing_key: SigningKey | None) -> None:
        """Refuse before anything is judged: unsigned bundles, no repository (UsageError, exit 2)."""
        if signing_key is None:
            raise UsageError(f"--evidence-store {self.url}: a git evidence store keeps signed bundles only: "
                             "anyone who can push to the ref can append to it",
                             hint="give --signing-key (or POLICYENGINE_SIGNING_KEY=env:VAR), a CI secret "
                                  "scoped to the protected environment")
        self.remote()

    def _new_repo(self, objects: Path | None = None) -> _Git:
        """A repository made now in a private temporary folder (``objects``: whose objects live there)."""
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="policyengine-git-")
            weakref.finalize(self, self._tmp.cleanup)
        path = Path(tempfile.mkdtemp(dir=self._tmp.name, suffix=".git"))
        git = _Git(path, self.remote(), self._env, objects=objects)
        git.init()
        return git

    def _cache_path(self) -> Path:
        where = hashlib.sha256(f"{self.remote()}#{self.ref}".encode()).hexdigest()[:16]
        return _cache_root(self._env) / f"git-{where}.git"

    @contextlib.contextmanager
    def _cache_lock(self) -> Iterator[Path]:
        """Hold the lock of this store's cache folder (OSError when it cannot be taken); yield the folder."""
        path = self._cache_path()
        where = path.name.removesuffix(".git").removeprefix("git-")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.parent / f"git-{where}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield path
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _cache(self) -> Iterator[_Git]:
        """A new repository whose objects are the cache's, locked while fetching (a fresh one when the
        cache cannot be made).

        The cache folder lends its objects and nothing else: git runs in a repository made now, with
        a configuration written now, naming the store's URL as given; the cache's config, hooks,
        refs, packed refs, replace refs and shallow list are never read. Each object read is hashed
        against its id (``_Git.objects``), and the commit read is the one ``ls-remote`` names. A
        cache folder holding anything else than what ``_make_cache`` writes and git's objects (an
        ``objects/info/alternates``, a hook, a config of its own) is deleted and made again, with a
        note.
        """
        with contextlib.ExitStack() as lock:
            try:
                path = lock.enter_context(self._cache_lock())
                why = _cache_problem(path) if os.path.lexists(path) else None
                if why is not None:
                    self.notes.append(f"the evidence cache {path} could not be read as policyengine wrote it "
                                      f"({why}): it was deleted and made again")
                    _remove(path)
                if not os.path.lexists(path):
                    _make_cache(path)
                objects: Path | None = path / "objects"
            except OSError:  # no cache folder can be kept: read from a fresh fetch
                lock.close()
                objects = None
            yield self._new_repo(objects=objects)

    def _drop_cache(self, exc: EvidenceError) -> None:
        """A read failed in the cache (``exc``) and worked from a fresh fetch: note it, delete the cache."""
        path = self._cache_path()
        what = "was altered" if isinstance(exc, CacheAltered) else "could not be read"
        self.notes.append(f"the evidence cache {path} {what} ({exc.message}): it was deleted, and this read "
                          "comes from a fresh fetch")
        with contextlib.suppress(OSError), self._cache_lock():
            _remove(path)

    def _open(self) -> tuple[_Git, str | None]:
        """The repository and commit every read of this instance uses (fetched once)."""
        if self._snapshot is None:
            local = "refs/policyengine/snapshot"
            if self._fresh:
                git = self._new_repo()
                commit = self._fetch_snapshot(git, local, blobs=True, history=self._history_wanted)
            else:
                with self._cache() as git:
                    commit = self._fetch_snapshot(git, local, blobs=False)
            self._snapshot = (git, commit)
        return self._snapshot

    def _fetch_snapshot(self, git: _Git, local: str, *, blobs: bool, history: bool = False) -> str | None:
        """The commit the remote's ref names now, with what reading it needs (None: no such ref).

        Its id is the one ``ls-remote`` of the store's URL gives: never a ref of the cache. Only
        when the ref moved between the two calls is the fetched commit (this run's own ref) read.
        """
        oid = git.ls_remote(self.ref)
        if oid is None:
            return None
        if history or git.rev_parse(f"{oid}^{{commit}}") != oid:
            if not git.fetch(self.ref, local, blobs=blobs, history=history):
                return None
            if git.rev_parse(f"{oid}^{{commit}}") != oid:
                return git.rev_parse(local)
        return oid

    # -- write -------------------------------------------------------------------------

    def commit(self, job: Job, *, signing_key: SigningKey | None, retention: str | None,
               redactor: EvidenceRedactor | None) -> BundleRef:
        """Write ``job``'s bundle (an evaluation or a linked record) as one commit on the ref, chained
        by compare-and-swap: a rejected push rebuilds the bundle on the new head and retries."""
        if signing_key is None:  # check_write refused already; never push an unsigned bundle
            raise EvidenceError(f"{self.url}: a git evidence store keeps signed bundles only (give --signing-key)")
        from policyengine import deadline

        git = self._new_repo()
        base = "refs/policyengine/base"
        last_error = ""
        with tempfile.TemporaryDirectory(prefix="policyengine-git-bundle-") as tmp:
            for attempt in range(MAX_ATTEMPTS):
                old = git.ls_remote(self.ref)
                if old is not None and not git.fetch(self.ref, base, blobs=False):
                    continue  # deleted meanwhile: read it again
                if old is not None:
                    old = git.rev_parse(base) or old
                if attempt == 0:
                    pause_point("fetched")
                    self._test_pause()
                record, new = self._commit(git, old, job, Path(tmp), signing_key, redactor)
                pushed, last_error = self._push(git, new, old)
                if pushed:
                    return replace(ref_of(record), store_head=record["_store_head"])
                # Retries count against the run's deadline too: no wait past it.
                try:
                    time.sleep(deadline.limit(_jitter(attempt), "a retry of a rejected push to the git evidence "
                                                                f"store ({last_error})"))
                except deadline.RunDeadlineError as exc:
                    raise EvidenceError(exc.message, hint=exc.hint) from None
        raise EvidenceError(f"git evidence store {self.url}: bundle {job.bundle_id} could not be chained after "
                            f"{MAX_ATTEMPTS} attempts ({last_error})", hint="retry the job")

    def _test_pause(self) -> None:
        gate = self._env.get(TEST_PAUSE_ENV)
        if not gate:
            return
        Path(gate + ".ready").write_text("ready\n", encoding="utf-8")
        deadline = time.monotonic() + 60
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.05)

    def _commit(self, git: _Git, old: str | None, job: Job, tmp: Path, signing_key: SigningKey,
                redactor: EvidenceRedactor | None) -> tuple[dict[str, Any], str]:
        """Build the bundle on the chain as of ``old`` and the commit that adds it; return (record, commit)."""
        head = None
        if old is not None:
            raw = git.blob(old, head_path(job.key))
            if raw is not None:
                try:
                    head = parse_record(json.loads(raw), path_for=lambda r: bundle_path(r["id"]))
                except ValueError as exc:
                    raise EvidenceError(f"git evidence store {self.url}: {head_path(job.key)} is not a bundle "
                                        f"record ({exc}): the chain head cannot be read",
                                        hint=f"verify the store: {self.command('evidence', 'verify', '--all')}") from exc
        link = self.chain_link(head, job.key)
        zip_path = tmp / f"{job.bundle_id}.zip"
        with open(zip_path, "wb") as fh:
            digest = job.write(fh, link, signing_key, redactor)
        record = job.index_record(link, bundle_path(job.bundle_id), digest, signing_key.keyid)
        line = (json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
        shard = (git.blob(old, shard_path(job.bundle_id)) or b"") if old is not None else b""
        if shard and not shard.endswith(b"\n"):
            shard += b"\n"
        entries = [
            (bundle_path(job.bundle_id), git.hash_object(file=zip_path)),
            (shard_path(job.bundle_id), git.hash_object(shard + line)),
            (head_path(job.key), git.hash_object(json.dumps(record, sort_keys=True, ensure_ascii=False)
                                                  .encode("utf-8") + b"\n")),
        ]
        # The store catalogue, in the same commit: the store head moves with the chain, atomically.
        catalogue_data = self._next_catalogue(git, old, record, signing_key)
        entries.append((f"{CATALOGUE_DIR}/{catalogue_mod.catalogue_name(catalogue_mod.parse(catalogue_data).sequence)}",
                        git.hash_object(catalogue_data)))
        record = {**record, "_store_head": hashlib.sha256(catalogue_data).hexdigest()}
        index_env = {"GIT_INDEX_FILE": str(tmp / "index")}
        with contextlib.suppress(FileNotFoundError):
            (tmp / "index").unlink()
        if old is not None:
            git.run("read-tree", old, extra_env=index_env, what="read the evidence tree")
        else:
            git.run("read-tree", "--empty", extra_env=index_env, what="start the evidence tree")
        for path, oid in entries:
            git.run("update-index", "--add", "--cacheinfo", f"100644,{oid},{path}", extra_env=index_env,
                    what="add the bundle to the tree")
        tree = git.run("write-tree", "--missing-ok", extra_env=index_env, what="write the evidence tree")
        repo, env = record["repository"], record["environment"]
        message = (f"policyengine evidence {job.bundle_id}: {record['decision']} "
                   f"{repo} / {env} #{record['sequence']}\n\nsha256 {digest}\n")
        if redactor is not None:
            message = redactor.text(message)
        args = ["commit-tree", "--no-gpg-sign", tree.stdout.decode().strip(), *(["-p", old] if old else []), "-F", "-"]
        commit = git.run(*args, stdin=message.encode("utf-8"), what="commit the bundle")
        return record, commit.stdout.decode().strip()

    def _next_catalogue(self, git: _Git, old: str | None, record: Mapping[str, Any],
                        signing_key: SigningKey) -> bytes:
        """The catalogue after the newest one at ``old``, with ``record``'s chain moved forward; the first
        catalogue of a store written before catalogues lists every chain of its index."""
        latest: catalogue_mod.Catalogue | None = None
        seed: list[Mapping[str, Any]] = []
        if old is not None:
            names = sorted(p for p in git.tree(old, CATALOGUE_DIR) if _CATALOGUE_PATH_RE.match(p))
            if names:
                raw = git.blob(old, names[-1])
                try:
                    latest = catalogue_mod.parse(raw or b"")
                except ValueError as exc:
                    hint = f"verify the store: {self.command('evidence', 'verify', '--all')}"
                    raise EvidenceError(f"git evidence store {self.url}: {names[-1]} cannot be read ({exc}): "
                                        "refusing to write over it", hint=hint) from exc
            else:
                seed = list(self._read_shards(git, old, self._shards(git, old))[0])
        from datetime import datetime, timezone

        from policyengine.evidence.format.bundle import format_timestamp

        return catalogue_mod.build(latest, [*seed, record], recorded_at=format_timestamp(datetime.now(timezone.utc)),
                                   signing_key=signing_key)

    def _push(self, git: _Git, new: str, old: str | None) -> tuple[bool, str]:
        """Compare-and-swap the remote ref from ``old`` to ``new``; (True, "") or (False, why) when rejected."""
        lease = f"--force-with-lease={self.ref}:{old or ''}"
        proc = git.run("push", "--porcelain", "--quiet", lease, "--end-of-options", "origin", f"{new}:{self.ref}",
                       check=False)
        if proc.returncode == 0:
            return True, ""
        output = proc.stdout + b"\n" + proc.stderr
        why = git.message(output)
        if any(reason in output.decode("utf-8", "replace") for reason in _RETRYABLE):
            return False, why
        raise EvidenceError(f"git evidence store {self.url}: cannot push to {self.ref}: {why}",
                            hint=f"check that {TOKEN_ENV} may push to {self.ref} (and that no rule of the "
                                 "repository refuses it)")

    # -- read --------------------------------------------------------------------------

    def _parse(self, raw: bytes, shard: str, number: int) -> dict[str, Any]:
        record = parse_record(json.loads(raw), path_for=lambda r: bundle_path(r["id"]))
        if shard_path(record["id"]) != shard:
            raise ValueError(f"bundle {record['id']} does not belong in {shard}")
        return record

    def _shards(self, git: _Git, commit: str) -> builtins.list[tuple[str, str]]:
        """(path, blob id) of every index shard, oldest month first."""
        found = git.tree(commit, INDEX_DIR)
        return sorted((p, oid) for p, oid in found.items())

    def _light_rows(self, path: str, data: bytes) -> builtins.list[dict[str, Any]] | None:
        """The rows of one shard for ``list``, decoded at once; None when any line needs a closer look.

        Each record must be an object in its own month's shard, with the listed fields of the
        right types. Listing is not verification (``verify`` parses every record in full), but a
        row of another shape is never shown: the shard is then read line by line.
        """
        try:
            decoded = json.loads(b"[" + b",".join(line for line in data.split(b"\n") if line.strip()) + b"]")
        except ValueError:
            return None
        month = path.rsplit("/", 1)[-1][:7].replace("-", "")
        rows = []
        for r in decoded:
            if not (isinstance(r, dict) and type(r.get("id")) is str and r["id"][:6] == month
                    and all(type(r.get(c)) is str
                            for c in ("created_at", "decision", "path", "sha256", "policy_sha256"))
                    and all(r.get(c) is None or type(r.get(c)) is str
                            for c in ("environment", "repository", "commit", "signed_by", "previous_sha256"))
                    and (r.get("sequence") is None or type(r.get("sequence")) is int)
                    and r["path"] == bundle_path(r["id"])):
                return None
            rows.append(r)
        return rows

    def _read_shards(self, git: _Git, commit: str, wanted: Sequence[tuple[str, str]], *, light: bool = False
                     ) -> tuple[builtins.list[dict[str, Any]], builtins.list[VerifyProblem]]:
        records: list[dict[str, Any]] = []
        problems: list[VerifyProblem] = []
        seen: set[str] = set()
        blobs = self._cat_blobs(git, [oid for _, oid in wanted])
        for (path, oid), data in zip(wanted, blobs, strict=True):
            name = path.rsplit("/", 1)[-1]
            if not _SHARD_RE.match(name):
                problems.append(VerifyProblem("", None, "index", f"{path} is not an index shard (index/YYYY-MM.jsonl)"))
                continue
            quick = self._light_rows(path, data) if light else None
            if quick is not None and not seen.intersection(r["id"] for r in quick) \
                    and len({r["id"] for r in quick}) == len(quick):
                seen.update(r["id"] for r in quick)
                records.extend(quick)
                continue
            lines = data.split(b"\n")
            if data.endswith(b"\n") or not data:
                lines.pop()
            for number, raw in enumerate(lines, 1):
                where = f"{self.url} {path} line {number}"
                try:
                    record = self._parse(raw, path, number)
                except (ValueError, TypeError, KeyError) as exc:
                    problems.append(VerifyProblem("", None, "index", f"{where}: {exc}"))
                    continue
                if record["id"] in seen:
                    problems.append(VerifyProblem(record["id"], None, "index",
                                                  f"{where}: bundle {record['id']} is recorded twice"))
                    continue
                seen.add(record["id"])
                records.append(record)
        return records, problems

    def _cat_blobs(self, git: _Git, oids: Sequence[str]) -> builtins.list[bytes]:
        """The bytes of each blob, read with one ``cat-file --batch`` and checked against its id."""
        out = []
        for oid, found in zip(oids, git.objects(oids), strict=True):
            if found is None or found[0] != "blob":
                raise EvidenceError(f"git evidence store {self.url}: cannot read object {oid}")
            out.append(found[1])
        return out

    @_fresh_if_altered
    def read_index(self) -> tuple[builtins.list[dict[str, Any]], builtins.list[VerifyProblem]]:
        """Every index record of the ref's newest commit, in chain order, and a problem per unreadable line."""
        git, commit = self._open()
        if commit is None:
            return [], []
        records, problems = self._read_shards(git, commit, self._shards(git, commit))
        records.sort(key=lambda r: (r.get("sequence") or 0, r["created_at"], r["id"]))
        return records, problems

    @_fresh_if_altered
    def query(self, q: Query) -> tuple[builtins.list[dict[str, Any]], int]:
        """Answer from the index shards of the months ``q`` covers (only those are fetched and read)."""
        git, commit = self._open()
        if commit is None:
            return [], 0
        wanted = []
        for path, oid in self._shards(git, commit):
            m = _SHARD_RE.match(path.rsplit("/", 1)[-1])
            if m is None:
                continue
            start = f"{m[1]}-{m[2]}-01T00:00:00Z"
            year, month = int(m[1]), int(m[2])
            end = f"{year + month // 12:04d}-{month % 12 + 1:02d}-01T00:00:00Z"
            if (q.until is None or start < q.until) and (q.since is None or end > q.since):
                wanted.append((path, oid))
        records, problems = self._read_shards(git, commit, wanted, light=True)
        rows = []
        for r in records:
            if ((q.since is not None and r["created_at"] < q.since)
                    or (q.until is not None and r["created_at"] >= q.until)
                    or (q.environment is not None and r.get("environment") != q.environment)
                    or (q.repository is not None and r.get("repository") != q.repository)
                    or (q.decision is not None and r.get("decision") != q.decision)
                    or (q.kind is not None and kind_of(r) != q.kind)):
                continue
            if len(r) != len(COLUMNS) or r.keys() != _COLUMN_SET:
                r = {c: r.get(c) for c in COLUMNS}
            rows.append(r)
        rows.sort(key=lambda r: (r["created_at"], r["sequence"] or 0, r["id"]))
        return rows, sum(1 for p in problems if p.check == "index")

    @contextlib.contextmanager
    def open_bundle(self, record: Mapping[str, Any]) -> Iterator[IO[bytes]]:
        data = self._bundle_bytes(record["path"])
        if data is None:
            raise FileNotFoundError(record["path"])
        with tempfile.SpooledTemporaryFile(max_size=64 << 20) as fh:
            fh.write(data)
            fh.seek(0)
            yield fh

    @_fresh_if_altered
    def _bundle_bytes(self, path: str) -> bytes | None:
        git, commit = self._open()
        return git.blob(commit, path) if commit is not None else None

    def location(self, record: Mapping[str, Any]) -> str:
        return f"{self.url} {record['path']}"

    @_fresh_if_altered
    def catalogue_files(self) -> builtins.list[tuple[str, bytes]]:
        git, commit = self._open()
        if commit is None:
            return []
        found = sorted((p, oid) for p, oid in git.tree(commit, CATALOGUE_DIR).items() if _CATALOGUE_PATH_RE.match(p))
        return list(zip([p for p, _ in found], self._cat_blobs(git, [oid for _, oid in found]), strict=True))

    @_fresh_if_altered
    def unindexed(self, records: Sequence[Mapping[str, Any]]) -> builtins.list[VerifyProblem]:
        git, commit = self._open()
        if commit is None:
            return []
        recorded = {r["path"] for r in records}
        problems = []
        for path in sorted(git.tree(commit, BUNDLES, recursive=True)):
            if path.endswith(".zip") and path not in recorded:
                stem = path.rsplit("/", 1)[-1].removesuffix(".zip")
                problems.append(VerifyProblem(stem, None, "unindexed", f"{path} is not recorded in the index"))
        return problems

    @_fresh_if_altered
    def head_problems(self, records: Sequence[Mapping[str, Any]]) -> builtins.list[VerifyProblem]:
        """Each chain's ``head.json`` must name its last recorded bundle (and name a recorded chain)."""
        git, commit = self._open()
        if commit is None:
            return []
        last: dict[tuple[str | None, str | None], Mapping[str, Any]] = {}
        for r in records:
            last[(r["repository"], r["environment"])] = r
        problems = []
        for key, r in last.items():
            raw = git.blob(commit, head_path(key))
            try:
                head = json.loads(raw) if raw is not None else {}
            except ValueError:
                head = {}
            head = head if isinstance(head, dict) else {}
            if head.get("id") != r["id"] or head.get("sha256") != r["sha256"]:
                problems.append(VerifyProblem(
                    str(head.get("id") or r["id"]), None, "chain",
                    f"the head of the chain of {key[0]} / {key[1]} ({head_path(key)}) names bundle "
                    f"{head.get('id')!r} (sequence {head.get('sequence')}), but the last recorded bundle is "
                    f"{r['id']} (sequence {r.get('sequence')})"))
        return problems

    def verify(self, ids: Sequence[str] = (), public_key: tuple[Any, str] | None = None,
               heads: Sequence[str] = (), stamps: StampCheck | None = None) -> VerifyReport:
        """Verify as the base does, from a fresh fetch, and only with the public key (UsageError without)."""
        if public_key is None:
            raise UsageError(f"{self.url}: a git evidence store is verified only with the team's public key: "
                             "anyone who can push to the ref can append bundles to it",
                             hint="give --public-key FILE (the key that signs the bundles)")
        if not self._fresh or not self._history_wanted:
            self._fresh, self._history_wanted, self._snapshot = True, True, None
        report = super().verify(ids, public_key, heads=heads, stamps=stamps)
        git, commit = self._open()
        if commit is None:
            return report
        if self._history is None or self._history[0] != commit:
            self._history = (commit, history_problems(git, commit))
        if not self._history[1]:
            return report
        return structs.replace(report, problems=(*report.problems, *self._history[1]))
