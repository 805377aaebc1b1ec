"""The git evidence store: one commit per signed bundle, chained by compare-and-swap pushes.

Every test uses a bare repository it creates itself as the remote (``git+file://...``); no
network is used.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("cryptography")
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from policyengine.errors import EvidenceError, UsageError
from policyengine.evidence.stores.git import GitArchive, parse_git_url
from policyengine.evidence.format.index import Query
from policyengine.evidence.stores.factory import open_store

FIXTURES = Path(__file__).parent / "fixtures" / "acceptance"
REF = "refs/heads/policyengine-evidence"
TOKEN = "pe-evidence-token-0123456789abcdef"


def git(*args: str, cwd: Path | None = None, stdin: bytes | None = None) -> bytes:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update({"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_NOSYSTEM": "1"})
    return subprocess.run(["git", *args], cwd=cwd, input=stdin, capture_output=True, check=True, env=env,
                          timeout=120).stdout


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A bare repository standing in for the evidence repository (partial clone allowed, as on the code hosts)."""
    path = tmp_path / "evidence.git"
    git("init", "--quiet", "--bare", str(path))
    git("-C", str(path), "config", "uploadpack.allowFilter", "true")
    return path


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    key = ed25519.Ed25519PrivateKey.generate()
    priv, pub = tmp_path / "signing.pem", tmp_path / "signing.pub"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


def url_of(remote: Path) -> str:
    return f"git+file://{remote}#{REF}"


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("POLICYENGINE_", "GITHUB_", "GITLAB_", "CI_", "GIT_")) and k not in ("CI",)}
    env["POLICYENGINE_CACHE_DIR"] = str(tmp_path / "cache")
    env.update(extra)
    return env


def check_cmd(store: str, key: Path | None, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "policyengine", "check", "--policy", str(FIXTURES / "policy.yml"),
           "--change", str(FIXTURES / "change.yml"), "--workspace", str(FIXTURES / "workspace"),
           "--now", "2026-11-24T15:00:00Z", "--evidence-store", store, *extra]
    return cmd + (["--signing-key", str(key)] if key else [])


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "policyengine", *args], capture_output=True, text=True,
                          env=env, timeout=300, check=False)


def records(url: str, env: dict[str, str]) -> list[dict[str, Any]]:
    return GitArchive(url, env=env).read_index()[0]


def test_twenty_concurrent_checks_into_one_git_store_make_one_unbroken_chain(
        tmp_path: Path, remote: Path, keys: tuple[Path, Path]) -> None:
    url, env = url_of(remote), env_for(tmp_path)
    procs = [subprocess.Popen(check_cmd(url, keys[0]), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
             for _ in range(20)]
    outputs = [p.communicate(timeout=600) for p in procs]
    failed = [out for p, out in zip(procs, outputs, strict=True) if p.returncode != 0]
    assert not failed, failed[0]
    found = records(url, env)
    assert [r["sequence"] for r in found] == list(range(1, 21))
    assert found[0]["previous_sha256"] is None
    for before, after in zip(found, found[1:], strict=False):
        assert after["previous_sha256"] == before["sha256"]
    # One commit per bundle, each the child of the one before: the ref's history is the chain.
    assert git("-C", str(remote), "rev-list", "--count", REF).strip() == b"20"
    verified = cli(env, "evidence", "verify", "--archive", url, "--public-key", str(keys[1]))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "ok: 20 bundles verified" in verified.stdout and "20 signed, signature valid" in verified.stdout
    # Every run printed the head it made; the last one names the head of the whole chain.
    heads = [line for out, _ in outputs for line in out.decode().splitlines() if "chain head of" in line]
    assert len(heads) == 20 and any(found[-1]["sha256"] in h and "#20" in h for h in heads)


def test_a_push_rejected_mid_way_is_rebuilt_on_the_new_head_and_retried(
        tmp_path: Path, remote: Path, keys: tuple[Path, Path]) -> None:
    url, env = url_of(remote), env_for(tmp_path)
    first = subprocess.run(check_cmd(url, keys[0]), capture_output=True, env=env, timeout=120, check=False)
    assert first.returncode == 0, first.stderr
    gate = tmp_path / "go"
    slow = subprocess.Popen(check_cmd(url, keys[0], "--json", str(tmp_path / "slow.json")), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**env, "POLICYENGINE_TEST_GIT_PAUSE": str(gate)})
    deadline = time.monotonic() + 120
    while not Path(f"{gate}.ready").exists():
        assert slow.poll() is None and time.monotonic() < deadline, slow.communicate()
        time.sleep(0.05)
    # The slow writer has fetched the chain at #1; another writer now moves the ref to #2.
    fast = subprocess.run(check_cmd(url, keys[0], "--json", str(tmp_path / "fast.json")), capture_output=True,
                          env=env, timeout=120, check=False)
    assert fast.returncode == 0, fast.stderr
    gate.write_text("go")
    out, err = slow.communicate(timeout=120)
    assert slow.returncode == 0, out + err
    found = records(url, env)
    assert [r["sequence"] for r in found] == [1, 2, 3]
    fast_doc = json.loads((tmp_path / "fast.json").read_text())
    slow_doc = json.loads((tmp_path / "slow.json").read_text())
    assert found[1]["id"] == fast_doc["evidence"]["bundle_id"]
    assert found[2]["id"] == slow_doc["evidence"]["bundle_id"]
    assert found[2]["previous_sha256"] == found[1]["sha256"]
    assert slow_doc["evidence"]["chain"] == {"repository": found[2]["repository"],
                                             "environment": found[2]["environment"], "sequence": 3,
                                             "head_sha256": found[2]["sha256"]}
    # The rebuilt bundle was signed again: its statement names the new link.
    verified = cli(env, "evidence", "verify", "--archive", url, "--public-key", str(keys[1]))
    assert verified.returncode == 0, verified.stdout


def test_a_rejected_push_is_retried_in_process(tmp_path: Path, remote: Path, keys: tuple[Path, Path],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from test_evidence import CHANGE, POLICY

    from policyengine.evidence.stores import git as gitstore
    from policyengine.evidence.format.signing import load_signing_key

    url, env = url_of(remote), env_for(tmp_path)
    key = load_signing_key(str(keys[0]))
    kwargs: dict[str, Any] = {"decision": {"decision": "allow", "rules": []}, "change": CHANGE,
                              "policy_filename": "p.yml", "policy_bytes": POLICY, "files": [], "signing_key": key}
    GitArchive(url, env=env).write_bundle(**kwargs)
    real_push = gitstore.GitArchive._push
    calls: list[str | None] = []

    def push_after_a_rival(self: GitArchive, g: Any, new: str, old: str | None) -> tuple[bool, str]:
        calls.append(old)
        if len(calls) == 1:  # a rival lands first
            GitArchive(url, env=env).write_bundle(**kwargs)
        return real_push(self, g, new, old)

    monkeypatch.setattr(gitstore.GitArchive, "_push", push_after_a_rival)
    ref = GitArchive(url, env=env).write_bundle(**kwargs)
    assert len(calls) == 3 and calls[0] != calls[2]  # the rival's own push, then ours twice
    assert ref.sequence == 3
    found = records(url, env)
    assert [r["sequence"] for r in found] == [1, 2, 3] and found[2]["id"] == ref.id


def _commit_ids(remote: Path) -> list[str]:
    return git("-C", str(remote), "rev-list", REF).decode().split()


def test_a_force_pushed_history_without_the_newest_bundle_fails_verify_head(
        tmp_path: Path, remote: Path, keys: tuple[Path, Path]) -> None:
    url, env = url_of(remote), env_for(tmp_path)
    heads = []
    for _ in range(3):
        run = subprocess.run(check_cmd(url, keys[0], "--json", str(tmp_path / "d.json")), capture_output=True,
                             env=env, timeout=120, check=False)
        assert run.returncode == 0, run.stderr
        heads.append(json.loads((tmp_path / "d.json").read_text())["evidence"]["chain"]["head_sha256"])
    ok = cli(env, "evidence", "verify", "--archive", url, "--public-key", str(keys[1]), "--head", heads[-1])
    assert ok.returncode == 0, ok.stdout
    assert "1 anchored head found" in ok.stdout

    # Whoever can force-push drops the newest commit: the archive is consistent without it.
    newest, parent = _commit_ids(remote)[:2]
    git("-C", str(remote), "update-ref", REF, parent, newest)
    plain = cli(env, "evidence", "verify", "--archive", url, "--public-key", str(keys[1]))
    assert plain.returncode == 0  # without an anchored head, nothing can tell
    caught = cli(env, "evidence", "verify", "--archive", url, "--public-key", str(keys[1]), "--head", heads[-1])
    assert caught.returncode == 1, caught.stdout
    assert f"the anchored chain head sha256 {heads[-1]} is not in the archive" in caught.stdout
    # An older head still anchored is found: it was not rewritten.
    older = cli(env, "evidence", "verify", "--archive", url, "--public-key", str(keys[1]), "--head", heads[1])
    assert older.returncode == 0, older.stdout


def test_a_rewritten_bundle_in_a_rewritten_history_fails_verify_head(
        tmp_path: Path, remote: Path, keys: tuple[Path, Path]) -> None:
    url, env = url_of(remote), env_for(tmp_path)
    for _ in range(2):
        assert subprocess.run(check_cmd(url, keys[0], "--json", str(tmp_path / "d.json")), capture_output=True,
                              env=env, timeout=120, check=False).returncode == 0
    head = json.loads((tmp_path / "d.json").read_text())["evidence"]["chain"]["head_sha256"]
    found = records(url, env)
    # Rewrite the newest bundle's bytes and every record naming its digest, then force-push that tree.
    work = tmp_path / "work"
    git("clone", "--quiet", "--branch", REF.removeprefix("refs/heads/"), str(remote), str(work))
    bundle = work / found[-1]["path"]
    data = bytearray(bundle.read_bytes())
    data[-30] ^= 1
    bundle.write_bytes(bytes(data))
    import hashlib

    forged = hashlib.sha256(bytes(data)).hexdigest()
    for path in [*work.joinpath("index").iterdir(), *work.joinpath("chains").rglob("head.json")]:
        path.write_text(path.read_text().replace(head, forged))
    git("add", "-A", cwd=work)
    git("commit", "--quiet", "--amend", "-m", "rewritten", cwd=work)
    git("push", "--quiet", "--force", "origin", f"HEAD:{REF}", cwd=work)
    caught = cli(env, "evidence", "verify", "--archive", url, "--public-key", str(keys[1]), "--head", head)
    assert caught.returncode == 1
    assert "is not in the archive" in caught.stdout


def test_deleting_the_newest_bundles_of_a_local_folder_is_caught_with_the_head(
        tmp_path: Path, keys: tuple[Path, Path]) -> None:
    """``--head`` works for every store: the local folder too (S3: test_evidence_s3)."""
    folder, env = tmp_path / "evidence", env_for(tmp_path)
    heads = []
    for _ in range(3):
        cmd = [c for c in check_cmd("x", keys[0], "--json", str(tmp_path / "d.json"))]
        cmd[cmd.index("--evidence-store"):cmd.index("--evidence-store") + 2] = ["--evidence-dir", str(folder)]
        assert subprocess.run(cmd, capture_output=True, env=env, timeout=120, check=False).returncode == 0
        heads.append(json.loads((tmp_path / "d.json").read_text())["evidence"]["chain"]["head_sha256"])
    lines = (folder / "index.jsonl").read_text().splitlines(keepends=True)
    (folder / "index.jsonl").write_text("".join(lines[:-1]))
    (folder / json.loads(lines[-1])["path"]).unlink()
    plain = cli(env, "evidence", "verify", "--archive", str(folder), "--public-key", str(keys[1]))
    # The store catalogue knows the chain was longer (issue 16): caught without the head too.
    assert plain.returncode == 1 and "FAIL  missing-chain" in plain.stdout, plain.stdout
    caught = cli(env, "evidence", "verify", "--archive", str(folder), "--public-key", str(keys[1]),
                 "--head", heads[-1])
    assert caught.returncode == 1 and "is not in the archive" in caught.stdout
    assert cli(env, "evidence", "verify", "--archive", str(folder), "--head", "abc").returncode == 2


def test_the_token_reaches_no_output_no_command_line_and_no_object_of_the_repository(
        tmp_path: Path, remote: Path, keys: tuple[Path, Path]) -> None:
    url = url_of(remote)
    workspace = tmp_path / "ws"
    subprocess.run(["cp", "-r", str(FIXTURES / "workspace"), str(workspace)], check=True)
    for report in workspace.rglob("*.xml"):  # a file a rule reads echoes the token
        report.write_text(report.read_text().replace("</testsuite>", f"<system-out>{TOKEN}</system-out></testsuite>",
                                                     1))
    env = env_for(tmp_path, POLICYENGINE_EVIDENCE_TOKEN=TOKEN)
    cmd = check_cmd(url, keys[0], "--json", str(tmp_path / "d.json"), "--junit", str(tmp_path / "j.xml"))
    cmd[cmd.index("--workspace") + 1] = str(workspace)
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    basic = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    listed = cli(env, "evidence", "list", "--archive", url, "--json")
    shown = cli(env, "evidence", "show", "--archive", url, records(url, env)[0]["id"], "--public-key", str(keys[1]))
    verified = cli(env, "evidence", "verify", "--archive", url, "--public-key", str(keys[1]))
    assert listed.returncode == shown.returncode == verified.returncode == 0
    texts = [run.stdout, run.stderr, listed.stdout, listed.stderr, shown.stdout, shown.stderr, verified.stdout,
             (tmp_path / "d.json").read_text(), (tmp_path / "j.xml").read_text()]
    for text in texts:
        assert TOKEN not in text and basic not in text
    every_object = git("-C", str(remote), "cat-file", "--batch-all-objects", "--batch")
    assert every_object  # the repository holds the bundle, so the grep means something
    assert TOKEN.encode() not in every_object and basic.encode() not in every_object
    # Inside the zip the member is deflated: look at the bundle's own members too.
    import io
    import zipfile

    record = records(url, env)[0]
    blob = git("-C", str(remote), "cat-file", "blob", f"{REF}:{record['path']}")
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        for name in zf.namelist():
            assert TOKEN.encode() not in zf.read(name), name


def test_the_token_travels_in_the_environment_never_in_arguments(
        tmp_path: Path, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Over HTTP the token is an extraHeader given by GIT_CONFIG_* variables, scoped to the host."""
    from policyengine.evidence.stores import git as gitstore

    seen: list[tuple[list[str], dict[str, str]]] = []

    def fake_run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        seen.append((list(args), dict(kwargs["env"])))
        return subprocess.CompletedProcess(args, 128, b"", f"fatal: unable to access: 403 {TOKEN}".encode())

    monkeypatch.setattr(gitstore.subprocess, "run", fake_run)
    env = env_for(tmp_path, POLICYENGINE_EVIDENCE_TOKEN=TOKEN)
    store = GitArchive("git+https://git.example.com/acme/evidence.git#refs/heads/ev", env=env)
    with pytest.raises(EvidenceError) as caught:
        store.read_index()
    assert TOKEN not in caught.value.message and "[REDACTED]" in caught.value.message
    args, run_env = seen[0]
    assert all(TOKEN not in a and "Authorization" not in a for a in args)
    basic = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    assert run_env["GIT_CONFIG_COUNT"] == "1"
    assert run_env["GIT_CONFIG_KEY_0"] == "http.https://git.example.com/.extraHeader"
    assert run_env["GIT_CONFIG_VALUE_0"] == f"Authorization: Basic {basic}"
    # Only the store's own transport; no system or global configuration; no replace refs.
    assert "GIT_TRACE" not in run_env and run_env["GIT_ALLOW_PROTOCOL"] == "https"
    assert run_env["GIT_CONFIG_GLOBAL"] == os.devnull and run_env["GIT_CONFIG_NOSYSTEM"] == "1"
    assert run_env["GIT_NO_REPLACE_OBJECTS"] == "1"


@pytest.mark.parametrize("url", [
    "git+https://user:ghp_abcdefghijklmnopqrstuvwxyz0123456789@github.com/acme/ev.git#refs/heads/ev",
    "git+https://oauth2@gitlab.example.com/acme/ev.git#refs/heads/ev",
])
def test_a_url_holding_credentials_is_refused_without_printing_them(tmp_path: Path, keys: tuple[Path, Path],
                                                                    url: str) -> None:
    run = subprocess.run(check_cmd(url, keys[0]), capture_output=True, text=True, env=env_for(tmp_path),
                         timeout=120, check=False)
    assert run.returncode == 2
    assert "holds credentials" in run.stderr
    assert "ghp_" not in run.stdout + run.stderr and "oauth2" not in run.stdout + run.stderr


@pytest.mark.parametrize("url", ["git+ext::sh -c evil#refs/heads/x", "git+/srv/x.git#refs/heads/x",
                                 "git:refs/heads/../x", "git:-x", "git+file:///srv/e.git#", "git:refs/heads/a b",
                                 "git+http://git.example.com/e.git#refs/heads/x",
                                 "git+ssh://-oProxyCommand=touch%20pwned/e.git#refs/heads/x",
                                 "git+ssh://-oProxyCommand=x@host/e.git#refs/heads/x",
                                 "git+git@-oProxyCommand=x:e.git#refs/heads/x", "git+-upload-pack=x#refs/heads/x",
                                 "git+file:///srv/e.git#-x", "git+file:///srv/e.git#refs/heads/-x",
                                 "git+git://git.example.com/e.git#refs/heads/x"])
def test_malformed_git_store_urls_are_invalid_input(url: str) -> None:
    with pytest.raises(UsageError):
        parse_git_url(url)


@pytest.mark.parametrize("url", ["git+http://127.0.0.1:8080/e.git#refs/heads/x", "git+http://localhost/e.git#x",
                                 "git+http://[::1]:9/e.git#x", "git+git@github.com:acme/e.git#x",
                                 "git+ssh://git@github.com/acme/e.git#x", "git+https://github.com/acme/e.git#x"])
def test_plain_http_only_to_this_machine(url: str) -> None:
    remote, ref = parse_git_url(url)
    assert remote and ref.startswith("refs/")


def test_an_unsigned_write_is_refused_before_anything_is_judged(tmp_path: Path, remote: Path) -> None:
    url, env = url_of(remote), env_for(tmp_path)
    run = subprocess.run(check_cmd(url, None, "--json", str(tmp_path / "d.json")), capture_output=True, text=True,
                         env=env, timeout=120, check=False)
    assert run.returncode == 2
    assert "a git evidence store keeps signed bundles only" in run.stderr and "--signing-key" in run.stderr
    assert not (tmp_path / "d.json").exists()
    assert git("-C", str(remote), "for-each-ref") == b""  # nothing pushed
    with pytest.raises(EvidenceError):  # the store itself refuses too, whoever calls it
        from test_evidence import CHANGE, POLICY

        GitArchive(url, env=env).write_bundle(decision={"decision": "allow"}, change=CHANGE, policy_filename="p",
                                              policy_bytes=POLICY, files=[])


def test_verify_without_the_public_key_is_refused(tmp_path: Path, remote: Path, keys: tuple[Path, Path]) -> None:
    url, env = url_of(remote), env_for(tmp_path)
    assert subprocess.run(check_cmd(url, keys[0]), capture_output=True, env=env, timeout=120,
                          check=False).returncode == 0
    run = cli(env, "evidence", "verify", "--archive", url)
    assert run.returncode == 2
    assert "verified only with the team's public key" in run.stderr
    assert "ok" not in run.stdout


def test_list_show_get_replay_and_export_read_the_git_store(tmp_path: Path, remote: Path,
                                                            keys: tuple[Path, Path]) -> None:
    url, env = url_of(remote), env_for(tmp_path)
    for _ in range(2):
        assert subprocess.run(check_cmd(url, keys[0]), capture_output=True, env=env, timeout=120,
                              check=False).returncode == 0
    listed = cli(env, "evidence", "list", "--archive", url, "--json", "--since", "2020-01-01")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert len(rows) == 2 and rows[0]["path"].startswith("bundles/")
    assert json.loads(cli(env, "evidence", "list", "--archive", url, "--json", "--until", "2020-01-01").stdout) == []
    some = rows[1]["id"]
    got = cli(env, "evidence", "get", "--archive", url, some, "-o", str(tmp_path / "b.zip"))
    assert got.returncode == 0 and rows[1]["sha256"] in got.stdout
    shown = cli(env, "evidence", "show", "--archive", url, some, "--public-key", str(keys[1]))
    assert shown.returncode == 0 and "#2, previous" in shown.stdout, shown.stdout + shown.stderr
    replayed = cli(env, "evidence", "replay", "--archive", url, some)
    assert replayed.returncode == 0, replayed.stdout
    exported = cli(env, "audit", "export", "--archive", url, "--since", "2020-01-01", "--until", "2099-12-31",
                   "--public-key", str(keys[1]), "-o", str(tmp_path / "audit.zip"))
    assert exported.returncode == 0, exported.stdout + exported.stderr


def test_git_ref_uses_the_origin_of_the_checkout(tmp_path: Path, remote: Path, keys: tuple[Path, Path]) -> None:
    checkout = tmp_path / "checkout"
    git("init", "--quiet", str(checkout))
    git("-C", str(checkout), "remote", "add", "origin", f"file://{remote}")
    env = env_for(tmp_path)
    run = subprocess.run(check_cmd(f"git:{REF}", keys[0]), capture_output=True, text=True, env=env, cwd=checkout,
                         timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert git("-C", str(remote), "rev-list", "--count", REF).strip() == b"1"
    outside = tmp_path / "nowhere"
    outside.mkdir()
    refused = subprocess.run(check_cmd(f"git:{REF}", keys[0]), capture_output=True, text=True, env=env, cwd=outside,
                             timeout=120, check=False)
    assert refused.returncode == 2 and "with a remote 'origin'" in refused.stderr


def test_query_reads_only_the_shards_of_the_period(tmp_path: Path, remote: Path) -> None:
    """Shards of other months are never read: a corrupt one outside the period does not matter."""
    from test_evidence import CHANGE

    env = env_for(tmp_path)
    tree_input = b""
    lines = {"2026-01": [], "2026-02": []}
    for month, day in (("2026-01", "15"), ("2026-02", "03")):
        bid = f"{month.replace('-', '')}{day}T100000Z-0123456789ab"
        record = {"commit": CHANGE["commit"], "created_at": f"{month}-{day}T10:00:00Z", "decision": "allow",
                  "environment": "production", "id": bid, "path": f"bundles/{bid[:4]}/{bid[4:6]}/{bid}.zip",
                  "policy_sha256": "0" * 64, "previous_sha256": None, "repository": "acme/shop", "sequence": 1,
                  "sha256": "1" * 64, "signed_by": None}
        lines[month].append(json.dumps(record, sort_keys=True))
    shards = {"2026-01.jsonl": b"not json\n", "2026-02.jsonl": ("\n".join(lines["2026-02"]) + "\n").encode()}
    for name, data in shards.items():
        oid = git("-C", str(remote), "hash-object", "-w", "--stdin", stdin=data).decode().strip()
        tree_input += f"100644 blob {oid}\t{name}\n".encode()
    index_tree = git("-C", str(remote), "mktree", stdin=tree_input).decode().strip()
    root = git("-C", str(remote), "mktree", stdin=f"040000 tree {index_tree}\tindex\n".encode()).decode().strip()
    commit = git("-C", str(remote), "commit-tree", root, "-m", "synthetic").decode().strip()
    git("-C", str(remote), "update-ref", REF, commit)
    store = open_store(url_of(remote))
    assert isinstance(store, GitArchive)
    store._env = env
    rows, bad = store.query(Query(since="2026-02-01T00:00:00Z", until="2026-03-01T00:00:00Z"))
    assert [r["id"] for r in rows] == [json.loads(lines["2026-02"][0])["id"]] and bad == 0
    _, bad_all = GitArchive(url_of(remote), env=env).query(Query())
    assert bad_all == 1


def test_an_outcome_is_appended_to_a_git_store_and_verifies(tmp_path: Path, remote: Path,
                                                            keys: tuple[Path, Path]) -> None:
    """Linked records go through the same compare-and-swap commit as evaluations."""
    env = env_for(tmp_path)
    url = url_of(remote)
    first = subprocess.run(check_cmd(url, keys[0]), capture_output=True, text=True, env=env, timeout=300, check=False)
    assert first.returncode in (0, 1), first.stderr
    [evaluation] = records(url, env)
    run = cli(env, "evidence", "record-outcome", "--archive", url, "--status", "deployed", "--by", "dana",
              "--signing-key", str(keys[0]), evaluation["id"])
    assert run.returncode == 0, run.stdout + run.stderr
    both = records(url, env)
    assert [r.get("kind") for r in both] == [None, "outcome"]
    assert both[1]["about_id"] == evaluation["id"] and both[1]["previous_sha256"] == evaluation["sha256"]
    verified = cli(env, "evidence", "verify", "--archive", url, "--public-key", str(keys[1]))
    assert verified.returncode == 0, verified.stdout + verified.stderr


def _alter_cache_object(cache: Path, oid: str, content: bytes, kind: bytes = b"blob") -> None:
    """Replace object ``oid`` of the cache repository ``cache`` with ``content`` (as another job on the
    runner could): packs are unpacked to loose objects first, then the loose file is rewritten."""
    import zlib

    packs = sorted((cache / "objects" / "pack").glob("*.pack"))
    for pack in packs:
        moved = cache.parent / pack.name
        pack.rename(moved)
        pack.with_suffix(".idx").unlink()
        for extra in pack.parent.glob(pack.stem + ".*"):
            extra.unlink()
        git("--git-dir", str(cache), "unpack-objects", "-q", stdin=moved.read_bytes())
    loose = cache / "objects" / oid[:2] / oid[2:]
    assert loose.exists(), "the object is not in the cache"
    loose.chmod(0o644)
    loose.write_bytes(zlib.compress(b"%s %d\0" % (kind, len(content)) + content))


def kind_of(what: str) -> str:
    return "blob" if what == "shard" else "tree"


@pytest.mark.parametrize("what", ["shard", "tree"])
def test_an_altered_cache_is_never_read_as_the_store(tmp_path: Path, remote: Path, keys: tuple[Path, Path],
                                                     what: str) -> None:
    """The cache lives where another job may write (a self-hosted runner's home): objects that do not
    hash to their ids are refused, the cache dropped, and the listing read from a fresh fetch."""
    url, env = url_of(remote), env_for(tmp_path)
    for _ in range(3):
        assert subprocess.run(check_cmd(url, keys[0]), capture_output=True, env=env, timeout=120,
                              check=False).returncode == 0
    truth = cli(env, "evidence", "list", "--archive", url, "--json")
    assert truth.returncode == 0 and len(json.loads(truth.stdout)) == 3
    caches = list((tmp_path / "cache").glob("git-*.git"))
    assert len(caches) == 1
    cache = caches[0]
    head = git("-C", str(remote), "rev-parse", REF).decode().strip()
    shard = git("-C", str(remote), "ls-tree", "-r", "--name-only", head, "index/").decode().split()[0]
    if what == "shard":  # the shard without its newest line: the newest bundle hidden
        oid = git("-C", str(remote), "rev-parse", f"{head}:{shard}").decode().strip()
        lines = git("-C", str(remote), "cat-file", "blob", oid).splitlines(keepends=True)
        _alter_cache_object(cache, oid, b"".join(lines[:-1]))
    else:  # the index tree pointing at a shard of one line
        one = git("-C", str(remote), "cat-file", "blob", f"{head}:{shard}").splitlines(keepends=True)[0]
        fake = git("--git-dir", str(cache), "hash-object", "-w", "--stdin", stdin=one).decode().strip()
        oid = git("-C", str(remote), "rev-parse", f"{head}:index").decode().strip()
        entry = b"100644 " + shard.split("/")[-1].encode() + b"\0" + bytes.fromhex(fake)
        _alter_cache_object(cache, oid, entry, b"tree")
    assert git("--git-dir", str(cache), "cat-file", kind_of(what), oid).count(b"\n") < 3  # git reads the altered one
    listed = cli(env, "evidence", "list", "--archive", url, "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == json.loads(truth.stdout)
    assert "was altered" in listed.stderr and "does not hash to its id" in listed.stderr
    again = cli(env, "evidence", "list", "--archive", url, "--json")  # the cache was rebuilt
    assert json.loads(again.stdout) == json.loads(truth.stdout) and "altered" not in again.stderr


def test_a_cache_git_cannot_read_is_replaced_and_a_remote_failure_still_says_so(
        tmp_path: Path, remote: Path, keys: tuple[Path, Path]) -> None:
    url, env = url_of(remote), env_for(tmp_path)
    for _ in range(2):
        assert subprocess.run(check_cmd(url, keys[0]), capture_output=True, env=env, timeout=120,
                              check=False).returncode == 0
    truth = cli(env, "evidence", "list", "--archive", url, "--json")
    assert truth.returncode == 0
    [cache] = list((tmp_path / "cache").glob("git-*.git"))
    (cache / "HEAD").write_text("garbage\n")  # git no longer takes it for a repository
    listed = cli(env, "evidence", "list", "--archive", url, "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == json.loads(truth.stdout)
    assert "could not be read" in listed.stderr and "it was deleted" in listed.stderr
    assert cli(env, "evidence", "list", "--archive", url).stderr == ""  # a new cache
    # The remote itself failing is not blamed on the cache: its error is the one shown.
    remote.rename(tmp_path / "gone.git")
    failed = cli(env, "evidence", "list", "--archive", url)
    said = failed.stderr.replace(str(tmp_path), "<tmp>")  # the test's own folder name holds "cache"
    assert failed.returncode == 3 and "cannot" in said and "cache" not in said, failed.stderr
    assert "does not appear to be a git repository" in said  # git's explaining line, not its last one


# -- the read cache: nothing in it is trusted but object bytes checked against their ids ----------------


def _three_bundles_and_an_older_copy(tmp_path: Path, remote: Path, keys: tuple[Path, Path],
                                     env: dict[str, str]) -> tuple[Path, list[Any], Path]:
    """Record two bundles, copy the store aside (an older copy), record a third; list once (the cache)."""
    import shutil

    url = url_of(remote)
    for n in range(3):
        if n == 2:
            shutil.copytree(remote, tmp_path / "older.git")
        assert subprocess.run(check_cmd(url, keys[0]), capture_output=True, env=env, timeout=120,
                              check=False).returncode == 0
    truth = cli(env, "evidence", "list", "--archive", url, "--json")
    assert truth.returncode == 0 and len(json.loads(truth.stdout)) == 3
    [cache] = list((tmp_path / "cache").glob("git-*.git"))
    return cache, json.loads(truth.stdout), tmp_path / "older.git"


@pytest.mark.parametrize("plant", ["uploadpack", "include", "url", "insteadof", "url-and-uploadpack", "fsmonitor"])
def test_a_planted_cache_config_runs_nothing_and_hides_nothing(tmp_path: Path, remote: Path,
                                                               keys: tuple[Path, Path], plant: str) -> None:
    """The cache's own config is another job's to write: a command it names never runs, a remote it
    names is never read as the store; the listing is the remote's, the cache is rebuilt."""
    env = env_for(tmp_path)
    url = url_of(remote)
    cache, truth, older = _three_bundles_and_an_older_copy(tmp_path, remote, keys, env)
    marker = tmp_path / "pwned"
    command = f"touch {marker}; git-upload-pack"
    config = cache / "config"
    text = config.read_text()
    if plant == "uploadpack":
        text += f'[remote "origin"]\n\tuploadpack = {command}\n'
    elif plant == "include":
        (tmp_path / "evil.cfg").write_text(f'[remote "origin"]\n\tuploadpack = {command}\n'
                                           f'[uploadpack]\n\tpackObjectsHook = touch {marker}; git\n')
        text += f"[include]\n\tpath = {tmp_path / 'evil.cfg'}\n"
    elif plant in ("url", "url-and-uploadpack"):  # the remote of the cache's config: an older copy of the store
        text = (text.replace(f"file://{remote}", f"file://{older}") if f"file://{remote}" in text
                else text + f'[remote "origin"]\n\turl = file://{older}\n')
        if plant == "url-and-uploadpack":
            text += f'[remote "origin"]\n\tuploadpack = {command}\n'
    elif plant == "insteadof":
        text += f'[url "file://{older}"]\n\tinsteadOf = file://{remote}\n'
    else:
        text += f"[core]\n\tfsmonitor = touch {marker}\n\thooksPath = {tmp_path}\n"
    summary = ("audit", "summary", "--archive", url, "--since", "2020-01-01", "--until", "2099-12-31",
               "--format", "json", "--public-key", str(keys[1]))
    true_summary = cli(env, *summary)
    assert true_summary.returncode == 0, true_summary.stdout + true_summary.stderr
    config.write_text(text)
    for args in (("evidence", "list", "--archive", url, "--json"), summary):
        run = cli(env, *args)
        assert run.returncode == 0, run.stdout + run.stderr
        assert not marker.exists(), f"{args[0]} ran a command the cache's config names"
        if args[0] == "evidence":
            assert json.loads(run.stdout) == truth
        else:
            assert json.loads(run.stdout) == json.loads(true_summary.stdout)
        config.write_text(text)  # planted again for the next command
    cli(env, "evidence", "list", "--archive", url, "--json")
    assert f"file://{older}" not in config.read_text() and "uploadpack" not in config.read_text()


@pytest.mark.parametrize("plant", ["alternates", "info-alternates", "hook", "replace", "shallow", "packed-ref"])
def test_a_cache_with_planted_files_is_rebuilt_or_ignored(tmp_path: Path, remote: Path, keys: tuple[Path, Path],
                                                          plant: str) -> None:
    env = env_for(tmp_path)
    url = url_of(remote)
    cache, truth, older = _three_bundles_and_an_older_copy(tmp_path, remote, keys, env)
    marker = tmp_path / "pwned"
    planted: Path
    if plant == "alternates":
        planted = cache / "objects" / "info" / "alternates"
        planted.write_text(f"{older / 'objects'}\n")
    elif plant == "info-alternates":
        planted = cache / "info" / "alternates"
        planted.parent.mkdir(exist_ok=True)
        planted.write_text(f"{older / 'objects'}\n")
    elif plant == "hook":
        planted = cache / "hooks" / "reference-transaction"
        planted.parent.mkdir(exist_ok=True)
        planted.write_text(f"#!/bin/sh\ntouch {marker}\n")
        planted.chmod(0o755)
    elif plant == "replace":  # the newest commit replaced by the older copy's tip
        new = git("-C", str(remote), "rev-parse", REF).decode().strip()
        old = git("-C", str(older), "rev-parse", REF).decode().strip()
        git("--git-dir", str(cache), "fetch", "--quiet", f"file://{older}", f"+{REF}:refs/older")
        git("--git-dir", str(cache), "update-ref", f"refs/replace/{new}", old)
        planted = cache / "refs" / "replace" / new
    elif plant == "shallow":
        planted = cache / "shallow"
        planted.write_text("0" * 40 + "\n")
    else:  # the snapshot ref pointed at the older tip
        old = git("-C", str(older), "rev-parse", REF).decode().strip()
        git("--git-dir", str(cache), "fetch", "--quiet", f"file://{older}", f"+{REF}:refs/older")
        planted = cache / "packed-refs"
        planted.write_text(f"{old} refs/policyengine/snapshot\n")
    listed = cli(env, "evidence", "list", "--archive", url, "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert json.loads(listed.stdout) == truth
    assert not marker.exists()
    if plant in ("alternates", "info-alternates", "hook", "shallow"):
        assert not planted.exists(), "the cache was not rebuilt"


# -- the ref's history: each commit adds one record, and nothing else ------------------------------


def _write_records(url: str, env: dict[str, str], keys: tuple[Path, Path], n: int) -> None:
    from test_evidence import CHANGE, POLICY

    from policyengine.evidence.format.signing import load_signing_key

    key = load_signing_key(str(keys[0]))
    for _ in range(n):
        GitArchive(url, env=env).write_bundle(decision={"decision": "allow", "rules": []}, change=CHANGE,
                                              policy_filename="p.yml", policy_bytes=POLICY, files=[],
                                              signing_key=key)


def _plain_commit(tmp_path: Path, remote: Path, edit: Any, message: str = "maintenance") -> str:
    """Clone the ref, let ``edit`` change the checkout, commit and push WITHOUT force; return the commit."""
    import shutil

    work = tmp_path / "work"
    shutil.rmtree(work, ignore_errors=True)
    git("clone", "--quiet", "--branch", REF.removeprefix("refs/heads/"), str(remote), str(work))
    edit(work)
    git("add", "-A", cwd=work)
    git("commit", "--quiet", "--allow-empty", "-m", message, cwd=work)
    git("push", "--quiet", "origin", f"HEAD:{REF}", cwd=work)  # a fast-forward: no force needed
    return git("rev-parse", "HEAD", cwd=work).decode().strip()


def _verify(env: dict[str, str], url: str, keys: tuple[Path, Path], *extra: str) -> subprocess.CompletedProcess[str]:
    return cli(env, "evidence", "verify", "--archive", url, "--public-key", str(keys[1]), *extra)


def test_a_plain_commit_that_deletes_the_newest_record_fails_verify(tmp_path: Path, remote: Path,
                                                                    keys: tuple[Path, Path]) -> None:
    """Deleting the newest bundle and its index line, and pointing head.json back, leaves a consistent
    tree that append-only branch protection accepts: the history shows it, without --head."""
    url, env = url_of(remote), env_for(tmp_path)
    _write_records(url, env, keys, 3)
    found = records(url, env)
    assert _verify(env, url, keys).returncode == 0
    newest, before = found[-1], found[-2]

    def delete_newest(work: Path) -> None:
        (work / newest["path"]).unlink()
        shard = work / f"index/{newest['id'][:4]}-{newest['id'][4:6]}.jsonl"
        lines = shard.read_bytes().splitlines(keepends=True)
        assert json.loads(lines[-1])["id"] == newest["id"]
        shard.write_bytes(b"".join(lines[:-1]))
        [head] = list((work / "chains").rglob("head.json"))
        head.write_text(json.dumps(before, sort_keys=True, ensure_ascii=False) + "\n")

    commit = _plain_commit(tmp_path, remote, delete_newest)
    assert len(records(url, env)) == 2  # the store now looks whole without it
    caught = _verify(env, url, keys)
    assert caught.returncode == 1, caught.stdout + caught.stderr
    assert "FAIL  history" in caught.stdout
    assert f"commit {commit} deletes {newest['path']}" in caught.stdout
    assert f"commit {commit} rewrites index/" in caught.stdout
    assert "ok:" not in caught.stdout


@pytest.mark.parametrize("variant", ["rewrite-old-bundle", "two-records", "edit-index-line", "merge",
                                     "unrelated-file", "empty", "head-only", "delete-head"])
def test_every_commit_adds_exactly_one_record(tmp_path: Path, remote: Path, keys: tuple[Path, Path],
                                              variant: str) -> None:
    import shutil

    url, env = url_of(remote), env_for(tmp_path)
    _write_records(url, env, keys, 2)
    found = records(url, env)
    shard_path = f"index/{found[0]['id'][:4]}-{found[0]['id'][4:6]}.jsonl"
    expected: str
    if variant == "two-records":
        # Two genuine records written on a copy of the store, brought over in one fast-forward commit.
        side = tmp_path / "side.git"
        shutil.copytree(remote, side)
        _write_records(url_of(side), env, keys, 2)
        git("-C", str(remote), "fetch", "--quiet", str(side), f"{REF}:refs/side")
        tip = git("-C", str(remote), "rev-parse", REF).decode().strip()
        commit = git("-C", str(remote), "commit-tree", "refs/side^{tree}", "-p", tip, "-m", "both").decode().strip()
        git("-C", str(remote), "update-ref", "-d", "refs/side")
        git("-C", str(remote), "update-ref", REF, commit, tip)
        expected = f"commit {commit} adds 2 bundles"
        assert len(records(url, env)) == 4
    elif variant == "merge":
        tip = git("-C", str(remote), "rev-parse", REF).decode().strip()
        other = git("-C", str(remote), "commit-tree", f"{tip}^{{tree}}", "-m", "unrelated root").decode().strip()
        commit = git("-C", str(remote), "commit-tree", f"{tip}^{{tree}}", "-p", tip, "-p", other,
                     "-m", "merge").decode().strip()
        git("-C", str(remote), "update-ref", REF, commit, tip)
        expected = f"commit {commit} is a merge"
    else:
        def edit(work: Path) -> None:
            if variant == "rewrite-old-bundle":
                bundle = work / found[0]["path"]
                data = bytearray(bundle.read_bytes())
                data[-30] ^= 1
                bundle.write_bytes(bytes(data))
            elif variant == "edit-index-line":  # the same record, spelled differently: every field still agrees
                shard = work / shard_path
                lines = shard.read_text().splitlines(keepends=True)
                lines[0] = json.dumps(json.loads(lines[0]), sort_keys=True, indent=None, separators=(", ", ":")) + "\n"
                shard.write_text("".join(lines))
            elif variant == "unrelated-file":
                (work / "README.md").write_text("evidence\n")
            elif variant == "head-only":
                [head] = list((work / "chains").rglob("head.json"))
                head.write_text(head.read_text().replace('"sequence": 2', '"sequence":2'))
            elif variant == "delete-head":
                [head] = list((work / "chains").rglob("head.json"))
                head.unlink()

        commit = _plain_commit(tmp_path, remote, edit)
        expected = {"rewrite-old-bundle": f"commit {commit} rewrites {found[0]['path']}",
                    "edit-index-line": f"commit {commit} rewrites {shard_path}",
                    "unrelated-file": f"commit {commit} changes README.md",
                    "empty": f"commit {commit} adds no record",
                    "head-only": f"commit {commit} adds no record",
                    "delete-head": f"commit {commit} deletes chains/"}[variant]
    caught = _verify(env, url, keys)
    assert caught.returncode == 1, caught.stdout + caught.stderr
    assert "FAIL  history" in caught.stdout and expected in caught.stdout, caught.stdout


def test_a_force_push_of_a_rewritten_history_needs_the_anchored_head(tmp_path: Path, remote: Path,
                                                                      keys: tuple[Path, Path]) -> None:
    """A history rewritten whole (force-push) is consistent: only an anchored head shows it."""
    url, env = url_of(remote), env_for(tmp_path)
    _write_records(url, env, keys, 3)
    head = records(url, env)[-1]["sha256"]
    newest, parent = _commit_ids(remote)[:2]
    git("-C", str(remote), "update-ref", REF, parent, newest)
    assert _verify(env, url, keys).returncode == 0  # documented: undetectable without --head
    caught = _verify(env, url, keys, "--head", head)
    assert caught.returncode == 1 and "is not in the archive" in caught.stdout


def test_the_history_is_read_in_one_pass(tmp_path: Path, remote: Path, keys: tuple[Path, Path],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """verify fetches the whole history once and reads it with one `git log`, whatever its length."""
    from policyengine.evidence.stores import git as gitstore

    url, env = url_of(remote), env_for(tmp_path)
    _write_records(url, env, keys, 6)
    calls: list[list[str]] = []
    real = gitstore._Git.run

    def counting(self: Any, *args: str, **kwargs: Any) -> Any:
        calls.append(list(args))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(gitstore._Git, "run", counting)
    from policyengine.evidence.format.signing import load_public_key

    report = GitArchive(url, env=env).verify(public_key=load_public_key(str(keys[1])))
    assert report.ok, report.problems
    commands = [c[0] for c in calls]
    assert commands.count("log") == 1 and commands.count("fetch") == 1
    fetch = next(c for c in calls if c[0] == "fetch")
    assert not any(a.startswith("--depth") for a in fetch)  # the whole history
