"""Bootstrap: ``evidence baseline`` records, signed, the commit in production when the gate is adopted.

A baseline counts as the trusted previous deploy, so the first gated deploy already has a change
range (and a path-scoped rule such as ``security-review`` does not apply to an ordinary ``src/``
change). It is also a way around the gate if anyone can write one, so each constraint is tested:
only the first record of an empty chain, a commit reachable from the default branch, signed by
the key the gate trusts, the CI actor as ``--by`` inside CI (recorded as not verified).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import s3_server
from fake_servers import FakeAPI, github_env, new_signing_key, public_pem, record_deploy
from test_history_trust import STORES_POLICY, _store_url, range_world
from test_provider_github import HEAD, MERGE, OLD, PREV, run_check

from policyengine.errors import UsageError
from policyengine.evidence.stores.history import VerifiedHistory, load_trust_key
from policyengine.evidence.format.records import BASELINE, chain_baseline
from policyengine.evidence.stores.factory import open_store
from policyengine.providers import http

pytest.importorskip("cryptography")
from cryptography.hazmat.primitives import serialization  # noqa: E402

REPO, ENV = "acme/payments", "production"
s3_session = s3_server.s3_session
s3 = s3_server.s3


@pytest.fixture(autouse=True)
def _no_real_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "SLEEP", lambda s: None)


@pytest.fixture
def api() -> FakeAPI:
    with FakeAPI("/api/v3") as server:
        yield server


def git(repo: Path, *args: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    clean.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
                 GIT_COMMITTER_EMAIL="t@example.com", GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1")
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=clean, timeout=60).stdout.strip()


@pytest.fixture
def workspace(tmp_path: Path) -> dict[str, Any]:
    """A checkout whose default branch main holds ``on_main``; ``side`` is only on a side branch."""
    repo = tmp_path / "ws"
    repo.mkdir()
    git(repo, "init", "--quiet", "-b", "main")
    git(repo, "commit", "--quiet", "--allow-empty", "-m", "production today")
    on_main = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "--quiet", "-b", "feature")
    git(repo, "commit", "--quiet", "--allow-empty", "-m", "not merged")
    side = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "--quiet", "main")
    return {"path": repo, "on_main": on_main, "side": side}


def keyfiles(folder: Path, key: Any, name: str = "signing") -> tuple[Path, Path]:
    priv, pub = folder / f"{name}.pem", folder / f"{name}.pub"
    priv.write_bytes(key.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    pub.write_bytes(public_pem(key))
    return priv, pub


def cli(*args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("POLICYENGINE_", "GITHUB_", "GITLAB_", "CI_")) and k not in ("CI",)}
    return subprocess.run([sys.executable, "-m", "policyengine", *args], capture_output=True, text=True,
                          timeout=300, check=False, env={**base, **(env or {})}, cwd=cwd)


def baseline(archive: str, ws: dict[str, Any], priv: Path, pub: Path, commit: str | None = None,
             *extra: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = env if env is not None else {"POLICYENGINE_DEFAULT_BRANCH": "main"}
    return cli("evidence", "baseline", "--archive", archive, "--environment", ENV, "--commit",
               commit or ws["on_main"], "--repository", REPO, "--by", "alice", "--signing-key", str(priv),
               "--trust-key", str(pub), "--workspace", str(ws["path"]), *extra, env=env)


def trusted(pub: Path) -> tuple[Any, str]:
    return load_trust_key(str(pub))


# -- what a baseline is ------------------------------------------------------------------------------


def test_a_signed_baseline_is_the_trusted_previous_deploy_and_verifies(tmp_path: Path,
                                                                       workspace: dict[str, Any]) -> None:
    key = new_signing_key()
    priv, pub = keyfiles(tmp_path, key)
    store = tmp_path / "ev"
    store.mkdir()
    run = baseline(str(store), workspace, priv, pub)
    assert run.returncode == 0, run.stderr
    assert "recorded baseline" in run.stdout and "not verified" in run.stdout
    history = VerifiedHistory(str(store), trusted(pub))
    found = history.latest(REPO, ENV)
    assert found is not None and found["sha"] == workspace["on_main"], history.rejected
    records, _ = open_store(str(store)).read_index()
    assert [r.get("kind") for r in records] == [BASELINE]
    assert chain_baseline(records, REPO, ENV)["commit"] == workspace["on_main"]
    assert chain_baseline(records, REPO, "staging") is None
    with zipfile.ZipFile(store / records[0]["path"]) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        doc = json.loads(zf.read("record.json"))
    assert manifest["schema_version"] == 3 and manifest["kind"] == BASELINE
    assert doc["by"] == "alice" and doc["by_verified"] is False and doc["about"] is None
    verify = cli("evidence", "verify", "--archive", str(store), "--public-key", str(pub))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # A later deploy (an evaluation) is the previous deploy from then on.
    record_deploy(store, PREV, key=key, created_at="2099-01-01T00:00:00Z")
    found = VerifiedHistory(str(store), trusted(pub)).latest(REPO, ENV)
    assert found is not None and found["sha"] == PREV


@pytest.mark.parametrize("kind", ["folder", "s3", "git"])
def test_the_first_gated_deploy_after_a_baseline_has_a_range_on_every_store(
        api: FakeAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        request: pytest.FixtureRequest, kind: str) -> None:
    """No deploy recorded yet, only the baseline: cover_range passes and the path-scoped rule is skipped."""
    from datetime import datetime, timezone

    monkeypatch.setenv("POLICYENGINE_CACHE_DIR", str(tmp_path / "cache"))
    url = _store_url(kind, tmp_path, request)
    range_world(api)
    key = new_signing_key()
    priv, pub = keyfiles(tmp_path, key, "trust")
    open_store(url).append_baseline(repository=REPO, environment=ENV, commit=PREV,
                                    payload={"by": "alice", "by_verified": False, "by_source": "--by"},
                                    signing_key=key, created_at=datetime(2026, 11, 1, tzinfo=timezone.utc))
    policy = tmp_path / "range.yml"
    policy.write_text(STORES_POLICY)
    run = run_check(monkeypatch, capsys, tmp_path, github_env(
        api, MERGE, POLICYENGINE_TRUST_KEY=str(pub), POLICYENGINE_EVIDENCE_STORE=url,
        POLICYENGINE_SIGNING_KEY=str(priv)), policy=policy)
    assert run.code == 0, run.out + run.err
    assert run.decision["change"]["range"]["previous_commit"] == PREV
    assert [c["sha"] for c in run.decision["change"]["range"]["commits"]] == [OLD, HEAD, MERGE]
    assert run.rule("infra-review")["status"] == "skipped"
    records, _ = open_store(url).read_index()
    assert [(r.get("kind"), r["sequence"]) for r in records] == [(BASELINE, 1), (None, 2)]


# -- each constraint (threat model: a baseline is a way around the gate) ---------------------------


def test_a_second_baseline_is_refused(tmp_path: Path, workspace: dict[str, Any]) -> None:
    priv, pub = keyfiles(tmp_path, new_signing_key())
    store = tmp_path / "ev"
    store.mkdir()
    assert baseline(str(store), workspace, priv, pub).returncode == 0
    again = baseline(str(store), workspace, priv, pub)
    assert again.returncode == 2, again.stdout + again.stderr
    assert "only as the first record of an empty chain" in again.stderr
    assert len(open_store(str(store)).read_index()[0]) == 1


def test_a_baseline_on_a_chain_with_records_is_refused(tmp_path: Path, workspace: dict[str, Any]) -> None:
    key = new_signing_key()
    priv, pub = keyfiles(tmp_path, key)
    store = tmp_path / "ev"
    record_deploy(store, PREV, key=key, environment="PRODUCTION")  # environment compared case-insensitively
    run = baseline(str(store), workspace, priv, pub)
    assert run.returncode == 2 and "already holds 1 record" in run.stderr, run.stderr
    assert len(open_store(str(store)).read_index()[0]) == 1


def test_a_record_written_while_the_baseline_is_written_makes_it_refused(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The empty-chain check is made again on the chain link, under the store's lock."""
    key = new_signing_key()
    store = open_store(str(tmp_path / "ev"))
    record_deploy(tmp_path / "ev", PREV, key=key)
    monkeypatch.setattr(type(store), "read_index", lambda self: ([], []))  # the first check sees nothing
    with pytest.raises(UsageError, match="gained a record"):
        store.append_baseline(repository=REPO, environment=ENV, commit=HEAD, signing_key=key,
                              payload={"by": "alice", "by_verified": False, "by_source": "--by"})
    monkeypatch.undo()
    assert [r.get("kind") for r in store.read_index()[0]] == [None]


def test_an_unreachable_commit_is_refused(tmp_path: Path, workspace: dict[str, Any]) -> None:
    priv, pub = keyfiles(tmp_path, new_signing_key())
    store = tmp_path / "ev"
    store.mkdir()
    for commit, why in ((workspace["side"], "not reachable from the default branch main"),
                        ("ab" * 20, "not a commit of the workspace")):
        run = baseline(str(store), workspace, priv, pub, commit)
        assert run.returncode == 2 and why in run.stderr, run.stderr
    short = baseline(str(store), workspace, priv, pub, workspace["on_main"][:12])
    assert short.returncode == 2 and "not a full commit id" in short.stderr
    opt = baseline(str(store), workspace, priv, pub, "--upload-pack=touch /tmp/x")
    assert opt.returncode == 2 and "not a full commit id" in opt.stderr
    assert not (store / "index.jsonl").exists()


def test_under_ci_the_default_branch_is_the_platforms_fetched_from_the_platform(
        tmp_path: Path, workspace: dict[str, Any]) -> None:
    """The workspace's own refs are not trusted under CI: a commit the job made reachable locally
    (here: the workspace's main moved onto the side commit) is refused, because the platform's
    repository's default branch does not reach it."""
    priv, pub = keyfiles(tmp_path, new_signing_key())
    platform = tmp_path / "platform.git"
    git(tmp_path, "clone", "--quiet", "--bare", str(workspace["path"]), str(platform))
    git(platform, "update-ref", "refs/heads/main", workspace["on_main"])
    git(platform, "update-ref", "-d", "refs/heads/feature")
    git(workspace["path"], "update-ref", "refs/heads/main", workspace["side"])  # hostile local ref
    ci = {"GITLAB_CI": "true", "CI": "true", "CI_PROJECT_PATH": REPO, "CI_DEFAULT_BRANCH": "main",
          "CI_REPOSITORY_URL": f"file://{platform}", "GITLAB_USER_LOGIN": "alice"}
    store = tmp_path / "ev"
    store.mkdir()
    refused = baseline(str(store), workspace, priv, pub, workspace["side"], env=ci)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    ok = baseline(str(store), workspace, priv, pub, workspace["on_main"], env=ci)
    assert ok.returncode == 0, ok.stderr
    record = open_store(str(store)).read_index()[0][0]
    with zipfile.ZipFile(store / record["path"]) as zf:
        doc = json.loads(zf.read("record.json"))
    # The CI actor, marked not verified (checking it with the code host is the identity work).
    assert (doc["by"], doc["by_verified"], doc["by_source"]) == ("alice", False, "GITLAB_USER_LOGIN")


def test_under_ci_by_must_be_the_ci_actor_and_the_repository_the_platforms(tmp_path: Path,
                                                                            workspace: dict[str, Any]) -> None:
    priv, pub = keyfiles(tmp_path, new_signing_key())
    ci = {"GITHUB_ACTIONS": "true", "CI": "true", "GITHUB_REPOSITORY": REPO, "GITHUB_ACTOR": "mallory"}
    run = baseline(str(tmp_path), workspace, priv, pub, env=ci)  # --by alice
    assert run.returncode == 2 and "is not the CI actor mallory" in run.stderr, run.stderr
    other = cli("evidence", "baseline", "--archive", str(tmp_path), "--environment", ENV, "--commit",
                workspace["on_main"], "--repository", "acme/other", "--signing-key", str(priv), "--trust-key",
                str(pub), env=ci)
    assert other.returncode == 2 and "is not the repository this CI job runs for" in other.stderr


def test_a_baseline_signed_with_another_key_than_the_trusted_one_is_refused(tmp_path: Path,
                                                                          workspace: dict[str, Any]) -> None:
    priv, _ = keyfiles(tmp_path, new_signing_key(), "mine")
    _, pub = keyfiles(tmp_path, new_signing_key(), "trusted")
    store = tmp_path / "ev"
    store.mkdir()
    run = baseline(str(store), workspace, priv, pub)
    assert run.returncode == 2 and "is not the private half of --trust-key" in run.stderr
    unsigned = cli("evidence", "baseline", "--archive", str(store), "--environment", ENV, "--commit",
                   workspace["on_main"], "--repository", REPO, "--by", "alice", "--trust-key", str(pub))
    assert unsigned.returncode == 2 and "--signing-key" in unsigned.stderr
    assert not (store / "index.jsonl").exists()


def test_an_unsigned_or_foreign_signed_baseline_never_counts(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Written past the CLI (anyone who can write to the store can): never the previous deploy."""
    trusted_key, foreign = new_signing_key(), new_signing_key()
    _, pub = keyfiles(tmp_path, trusted_key)
    payload = {"by": "mallory", "by_verified": False, "by_source": "--by"}
    foreign_store = open_store(str(tmp_path / "foreign"))
    foreign_store.append_baseline(repository=REPO, environment=ENV, commit=PREV, payload=payload,
                                  signing_key=foreign)
    history = VerifiedHistory(str(tmp_path / "foreign"), trusted(pub))
    assert history.latest(REPO, ENV) is None
    assert "not by the given public key" in history.rejected[0]

    unsigned_store = open_store(str(tmp_path / "unsigned"))
    original = type(unsigned_store).commit
    monkeypatch.setattr(type(unsigned_store), "commit",
                        lambda self, job, **kw: original(self, job, **{**kw, "signing_key": None}))
    unsigned_store.append_baseline(repository=REPO, environment=ENV, commit=PREV, payload=payload,
                                   signing_key=trusted_key)
    monkeypatch.undo()
    assert open_store(str(tmp_path / "unsigned")).read_index()[0][0]["signed_by"] is None
    history = VerifiedHistory(str(tmp_path / "unsigned"), trusted(pub))
    assert history.latest(REPO, ENV) is None and history.rejected


def test_a_baseline_line_claiming_a_later_place_never_counts(tmp_path: Path) -> None:
    """A baseline moved behind a deploy (its line and bundle rewritten) fails verification and never
    becomes the previous deploy: only a first record can be a baseline."""
    key = new_signing_key()
    _, pub = keyfiles(tmp_path, key)
    store = open_store(str(tmp_path / "ev"))
    store.append_baseline(repository=REPO, environment=ENV, commit=PREV, signing_key=key,
                          payload={"by": "alice", "by_verified": False, "by_source": "--by"})
    index = tmp_path / "ev" / "index.jsonl"
    line = json.loads(index.read_text())
    line["sequence"] = 2
    index.write_text(json.dumps(line) + "\n")
    history = VerifiedHistory(str(tmp_path / "ev"), trusted(pub))
    assert history.latest(REPO, ENV) is None


def test_an_older_reader_meeting_a_newer_schema_says_upgrade() -> None:
    from policyengine.evidence.format.bundle import schema_version_of

    with pytest.raises(ValueError, match="newer version of policyengine.*upgrade"):
        schema_version_of({"schema_version": 4})


def test_the_summary_and_the_export_list_the_baseline_as_an_exception(tmp_path: Path) -> None:
    key = new_signing_key()
    priv, pub = keyfiles(tmp_path, key)
    store = tmp_path / "ev"
    ref = open_store(str(store)).append_baseline(
        repository=REPO, environment=ENV, commit=PREV, signing_key=key,
        payload={"by": "alice", "by_verified": False, "by_source": "--by"})
    record_deploy(store, HEAD, key=key, created_at=ref.created_at)
    summary = cli("audit", "summary", "--archive", str(store), "--since", "2000-01-01", "--until", "2100-01-01",
                  "--format", "json", "--public-key", str(pub))
    assert summary.returncode == 0, summary.stdout + summary.stderr
    doc = json.loads(summary.stdout)
    assert [b["id"] for b in doc["baselines"]] == [ref.id] and doc["baselines"][0]["commit"] == PREV
    assert doc["baselines"][0]["exception"].startswith("baseline: the commit in production when the gate was adopted")
    assert doc["deployments"]["total"] == 1  # the baseline is no deployment
    md = cli("audit", "summary", "--archive", str(store), "--since", "2000-01-01", "--until", "2100-01-01")
    assert md.returncode == 0 and "## Baselines (exceptions" in md.stdout and ref.id in md.stdout, md.stderr
    out = tmp_path / "export.zip"
    export = cli("audit", "export", "--archive", str(store), "--since", "2000-01-01", "--until", "2100-01-01",
                 "--output", str(out), "--public-key", str(pub))
    assert export.returncode == 0, export.stdout + export.stderr
    with zipfile.ZipFile(out) as zf:
        listed = json.loads(zf.read("export.json"))["exceptions"]["baselines"]
    assert [b["id"] for b in listed] == [ref.id]
    checked = cli("evidence", "verify", "--archive", str(out))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_documented_openssl_key_pair_signs_and_is_trusted(tmp_path: Path, workspace: dict[str, Any]) -> None:
    """docs/ci-integration.md: `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout`."""
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    priv, pub = tmp_path / "policyengine-signing.pem", tmp_path / "policyengine-trust.pub"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(priv)], check=True, timeout=60)
    subprocess.run(["openssl", "pkey", "-in", str(priv), "-pubout", "-out", str(pub)], check=True, timeout=60)
    store = tmp_path / "ev"
    store.mkdir()
    run = baseline(str(store), workspace, priv, pub)
    assert run.returncode == 0, run.stderr
    found = VerifiedHistory(str(store), trusted(pub)).latest(REPO, ENV)
    assert found is not None and found["sha"] == workspace["on_main"]


def test_show_describes_a_baseline_as_the_adoption_not_a_record_about_an_evaluation(
        tmp_path: Path, workspace: dict[str, Any]) -> None:
    priv, pub = keyfiles(tmp_path, new_signing_key())
    store = tmp_path / "ev"
    store.mkdir()
    assert baseline(str(store), workspace, priv, pub).returncode == 0
    bundle_id = open_store(str(store)).read_index()[0][0]["id"]
    shown = cli("evidence", "show", "--archive", str(store), bundle_id, "--public-key", str(pub))
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert f"baseline    {REPO} {workspace['on_main']} in {ENV} when the gate was adopted" in shown.stdout
    assert "reachable   reachable from the default branch main" in shown.stdout
    assert "NOT in the archive" not in shown.stdout and "about       bundle None" not in shown.stdout


def _forge_late_baseline(store: Any, key: Any, commit: str) -> str:
    """A baseline bundle committed after the chain's first record, past every refusal of
    ``append_baseline`` (what anyone who can write to the store could do)."""
    from datetime import datetime, timezone

    from policyengine.evidence.format.bundle import format_timestamp
    from policyengine.evidence.format.records import RECORD, build_record_statement, record_bytes
    from policyengine.evidence.format.report import render_record_report
    from policyengine.evidence.stores.base import Job, new_bundle_id

    moment = datetime.now(timezone.utc)
    recorded = format_timestamp(moment)
    doc = {"schema_version": 1, "kind": BASELINE, "about": None, "repository": REPO, "environment": ENV,
           "commit": commit, "baseline": "adopted", "note": None, "claimed_at": None, "recorded_at": recorded,
           "by": "mallory", "by_verified": False, "by_source": "--by"}
    bundle_id = new_bundle_id(moment)

    def tail(writer: Any, link: Any, sign: Any) -> None:
        writer.write_tail(chain=link, manifest_extra={"kind": BASELINE, "schema_version": 3}, signing_key=sign,
                          report=render_record_report(doc, writer.entries, bundle_id, recorded, None, True),
                          close=False, statement_for=lambda m: build_record_statement(
                              bundle_id=bundle_id, created_at=recorded, document=doc, manifest_sha256=m, chain=link))

    def index_record(link: Any, path: str, sha256: str, signed_by: Any) -> dict[str, Any]:
        return {"id": bundle_id, "path": path, "sha256": sha256, "created_at": recorded, "decision": "adopted",
                "environment": ENV, "repository": REPO, "commit": commit, "policy_sha256": None,
                "sequence": link["sequence"], "previous_sha256": link["previous_sha256"], "signed_by": signed_by,
                "kind": BASELINE}

    job = Job(bundle_id=bundle_id, moment=moment, key=(REPO, ENV),
              bulk=lambda w: w.add_bytes(RECORD, record_bytes(doc), redact=False), tail=tail,
              index_record=index_record)
    store.commit(job, signing_key=key, retention=None, redactor=None)
    return bundle_id


@pytest.mark.parametrize("kind", ["folder", "git"])
def test_a_signed_baseline_forged_behind_a_deploy_fails_verify_and_never_counts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, kind: str) -> None:
    """Signed with the trusted key (a leaked key, or a store writer with it): behind a deploy it is
    no baseline. verify names it (the bundle's chain link; the git store's history too), and the
    trusted history keeps the genuine deploy as the previous one."""
    from datetime import datetime, timezone

    monkeypatch.setenv("POLICYENGINE_CACHE_DIR", str(tmp_path / "cache"))
    url = _store_url(kind, tmp_path, request)
    key = new_signing_key()
    _, pub = keyfiles(tmp_path, key)
    store = open_store(url)
    store.write_bundle(decision={"decision": "allow", "evaluated_at": "2026-11-20T20:00:00Z"},
                       change={"repository": REPO, "environment": ENV, "commit": PREV}, policy_filename="p.yml",
                       policy_bytes=b"version: 1\n", files=[], signing_key=key,
                       created_at=datetime(2026, 11, 20, 20, tzinfo=timezone.utc))
    forged = _forge_late_baseline(open_store(url), key, HEAD)
    report = open_store(url).verify(public_key=trusted(pub))
    messages = [p.message for p in report.problems if p.bundle_id == forged]
    assert any("a baseline must be the first record of its chain" in m for m in messages), report.problems
    if kind == "git":
        assert any("a baseline is only ever the first record of an empty chain" in m for m in messages), messages
    found = VerifiedHistory(url, trusted(pub)).latest(REPO, ENV)
    assert found is not None and found["sha"] == PREV
