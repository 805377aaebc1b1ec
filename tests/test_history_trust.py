"""Planted history: the change range's previous deploy is only what a signed, verified bundle proves.

A commit can write any line into the workspace's ``index.jsonl``, and any job with access to an
environment can create a deployment record naming any commit. Neither may move the start of
the change range; only an allowed evaluation signed by the ``--trust-key`` key, read and
verified from the configured evidence store, can.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
import s3_server
from fake_servers import (
    FakeAPI,
    GitHubWorld,
    GitLabWorld,
    github_env,
    gitlab_env,
    new_signing_key,
    public_pem,
    record_deploy,
    sha_of,
)
from test_provider_github import HEAD, MERGE, OLD, PREV, reviewed_world, run_check

from policyengine.evidence.stores.folder import bundle_relpath
from policyengine.evidence.stores.history import VerifiedHistory, load_trust_key
from policyengine.providers import http
from policyengine.providers.github import gather_github
from policyengine.providers.gitlab import gather_gitlab

REPO, ENV = "acme/payments", "production"
s3_session = s3_server.s3_session  # the local S3 server (moto), for the every-store test
s3 = s3_server.s3
PLANTED = sha_of("planted-by-the-change")


@pytest.fixture(autouse=True)
def _no_real_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "SLEEP", lambda s: None)


@pytest.fixture
def api() -> FakeAPI:
    with FakeAPI("/api/v3") as server:
        yield server


def trusted(tmp_path: Path, key: Any) -> tuple[Any, str]:
    pub = tmp_path / "trust.pub"
    pub.write_bytes(public_pem(key))
    return load_trust_key(str(pub))


def plant_line(store: Path, commit: str, **over: Any) -> dict[str, Any]:
    """Append a well-formed index line for a bundle that does not exist."""
    bundle_id = "20261123T120000Z-" + secrets.token_hex(6)
    record = {"id": bundle_id, "path": bundle_relpath(bundle_id), "sha256": "ab" * 32,
              "created_at": "2026-11-23T12:00:00Z", "decision": "allow", "environment": ENV,
              "repository": REPO, "commit": commit, "policy_sha256": "cd" * 32, "sequence": 99,
              "previous_sha256": None, "signed_by": None, **over}
    store.mkdir(parents=True, exist_ok=True)
    with (store / "index.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    return record


def latest(store: Path, key_pair: tuple[Any, str]) -> dict[str, Any] | None:
    return VerifiedHistory(str(store), key_pair).latest(REPO, ENV)


# -- VerifiedHistory: what never becomes the previous deploy -------------------------------------


def test_a_genuine_signed_allowed_bundle_is_the_previous_deploy(tmp_path: Path) -> None:
    key = new_signing_key()
    ref = record_deploy(tmp_path / "ev", PREV, key=key)
    found = latest(tmp_path / "ev", trusted(tmp_path, key))
    assert found is not None and found["sha"] == PREV and found["id"] == ref.id
    assert found["source"] == "evidence-archive"


def test_the_previous_deploy_is_found_once_the_archive_is_sharded(tmp_path: Path) -> None:
    """`evidence migrate` moves index.jsonl into index/: the archive still records its deploys."""
    from policyengine.evidence.stores.folder import LocalArchive

    key = new_signing_key()
    ref = record_deploy(tmp_path / "ev", PREV, key=key)
    LocalArchive(tmp_path / "ev").migrate()
    found = latest(tmp_path / "ev", trusted(tmp_path, key))
    assert found is not None and found["id"] == ref.id


def test_a_planted_index_line_without_a_bundle_never_counts(tmp_path: Path) -> None:
    key = new_signing_key()
    record_deploy(tmp_path / "ev", PREV, key=key)
    plant_line(tmp_path / "ev", PLANTED)
    found = latest(tmp_path / "ev", trusted(tmp_path, key))
    assert found is not None and found["sha"] == PREV


def test_only_a_planted_line_gives_no_previous_deploy(tmp_path: Path) -> None:
    key = new_signing_key()
    plant_line(tmp_path / "ev", PLANTED)
    assert latest(tmp_path / "ev", trusted(tmp_path, key)) is None


@pytest.mark.parametrize("variant", ["unsigned", "other-key", "other-repository", "other-environment", "deny"])
def test_bundles_that_prove_nothing_never_count(tmp_path: Path, variant: str) -> None:
    key = new_signing_key()
    kwargs: dict[str, Any] = {"key": key}
    if variant == "unsigned":
        kwargs["key"] = None
    elif variant == "other-key":
        kwargs["key"] = new_signing_key()
    elif variant == "other-repository":
        kwargs["repository"] = "acme/other"
    elif variant == "other-environment":
        kwargs["environment"] = "staging"
    else:
        kwargs["decision"] = "deny"
    record_deploy(tmp_path / "ev", PLANTED, **kwargs)
    assert latest(tmp_path / "ev", trusted(tmp_path, key)) is None


def test_an_index_line_rewritten_to_name_another_commit_or_place_never_counts(tmp_path: Path) -> None:
    key = new_signing_key()
    record_deploy(tmp_path / "ev", PREV, key=key, repository="acme/other")
    record_deploy(tmp_path / "ev", PLANTED, key=key, decision="deny", created_at="2026-11-21T00:00:00Z")
    index = tmp_path / "ev" / "index.jsonl"
    lines = [json.loads(line) for line in index.read_text().splitlines()]
    # The first genuine line re-labelled as this repository; the deny re-labelled as an allow.
    lines[0]["repository"] = REPO
    lines[1]["decision"] = "allow"
    index.write_text("".join(json.dumps(r) + "\n" for r in lines))
    (tmp_path / "ev" / "index.sqlite").unlink(missing_ok=True)
    history = VerifiedHistory(str(tmp_path / "ev"), trusted(tmp_path, key))
    assert history.latest(REPO, ENV) is None
    assert len(history.rejected) == 2


def test_a_bundle_changed_after_signing_never_counts(tmp_path: Path) -> None:
    key = new_signing_key()
    ref = record_deploy(tmp_path / "ev", PREV, key=key)
    path = tmp_path / "ev" / ref.path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert latest(tmp_path / "ev", trusted(tmp_path, key)) is None


def test_a_copy_of_a_genuine_bundle_under_a_planted_line_for_another_commit_never_counts(tmp_path: Path) -> None:
    key = new_signing_key()
    ref = record_deploy(tmp_path / "ev", PREV, key=key, created_at="2026-11-19T00:00:00Z")
    index = tmp_path / "ev" / "index.jsonl"
    genuine = json.loads(index.read_text().splitlines()[0])
    planted = {**genuine, "commit": PLANTED, "sequence": 50}
    index.write_text(json.dumps(planted) + "\n")
    (tmp_path / "ev" / "index.sqlite").unlink(missing_ok=True)
    assert (tmp_path / "ev" / ref.path).is_file()
    assert latest(tmp_path / "ev", trusted(tmp_path, key)) is None


def test_the_latest_verified_allow_wins_by_chain_sequence(tmp_path: Path) -> None:
    key = new_signing_key()
    record_deploy(tmp_path / "ev", sha_of("first"), key=key, created_at="2026-11-18T00:00:00Z")
    record_deploy(tmp_path / "ev", PREV, key=key, created_at="2026-11-19T00:00:00Z")
    record_deploy(tmp_path / "ev", sha_of("denied"), key=key, decision="deny", created_at="2026-11-20T00:00:00Z")
    plant_line(tmp_path / "ev", PLANTED, sequence=1000, created_at="2099-01-01T00:00:00Z")
    found = latest(tmp_path / "ev", trusted(tmp_path, key))
    assert found is not None and found["sha"] == PREV


# -- the providers: the API never stands alone ------------------------------------------------------


class Fixed:
    def __init__(self, commit: str | None) -> None:
        self.commit = commit

    def latest(self, repository: str, environment: str) -> dict[str, Any] | None:
        return None if self.commit is None else {"sha": self.commit, "id": "b1", "url": None,
                                                 "created_at": "2026-11-20T00:00:00Z", "source": "evidence-archive"}


def test_the_deployments_api_alone_never_gives_a_range(api: FakeAPI) -> None:
    reviewed_world(api)  # the API names PREV as the last successful deployment
    for history in (None, Fixed(None)):
        change = gather_github(github_env(api, MERGE), environment=ENV, previous_deploys=history).change
        assert change["range"]["previous_commit"] is None and change["range"]["commits"] == []
        assert any("a deployment record alone is not trusted" in n for n in change["notes"])


def test_api_and_evidence_agree_is_noted_as_corroborated(api: FakeAPI) -> None:
    reviewed_world(api)
    change = gather_github(github_env(api, MERGE), environment=ENV, previous_deploys=Fixed(PREV)).change
    assert change["range"]["previous_commit"] == PREV
    assert any("corroborated" in n for n in change["notes"])


def test_api_that_disagrees_is_noted_and_the_evidence_is_used(api: FakeAPI) -> None:
    w = reviewed_world(api)
    w.deployments(ENV, [(8, PLANTED, ["success"])])  # a forged deployment record naming another commit
    change = gather_github(github_env(api, MERGE), environment=ENV, previous_deploys=Fixed(PREV)).change
    assert change["range"]["previous_commit"] == PREV
    assert any("disagrees" in n and PLANTED[:7] in n and "the verified evidence is used" in n
               for n in change["notes"])


def test_gitlab_api_alone_never_gives_a_range() -> None:
    with FakeAPI("/api/v4") as gl:
        from test_provider_gitlab import PREV as GL_PREV
        from test_provider_gitlab import SQUASH, approved_mr

        approved_mr(gl)
        change = gather_gitlab(gitlab_env(gl, SQUASH)).change
        assert change["range"]["previous_commit"] is None
        assert "files_changed" in change["unavailable"]
        change = gather_gitlab(gitlab_env(gl, SQUASH), previous_deploys=Fixed(GL_PREV)).change
        assert change["range"]["previous_commit"] == GL_PREV
        assert any("corroborated" in n for n in change["notes"])


def test_unreadable_history_makes_the_range_unavailable(api: FakeAPI) -> None:
    from policyengine.errors import HistoryUnavailable

    class Broken:
        def latest(self, repository: str, environment: str) -> dict[str, Any] | None:
            raise HistoryUnavailable("the evidence store s3://x could not be read: boom")

    reviewed_world(api)
    change = gather_github(github_env(api, MERGE), environment=ENV, previous_deploys=Broken()).change
    assert change["unavailable"]["range"].endswith("boom") and "files_changed" in change["unavailable"]
    assert "range" not in change


# -- end to end: check --trust-key -----------------------------------------------------------------

RANGE_POLICY = ("version: 1\nname: range\nrules:\n  - id: every-change-reviewed\n    type: approvals\n"
                "    min_approvals: 2\n    exclude: [author, committers, deployer]\n    cover_range: true\n")


def range_world(api: FakeAPI) -> GitHubWorld:
    """Only PR #42 since PREV, approved: the range is covered when its start is trusted."""
    w = reviewed_world(api)
    w.deployments(ENV, [])
    return w


@pytest.mark.parametrize("plant", ["line", "unsigned", "other-key", "other-repository", "deny"])
def test_planted_history_never_makes_cover_range_pass(api: FakeAPI, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                      plant: str) -> None:
    range_world(api)
    key = new_signing_key()
    store = tmp_path / "evidence"
    if plant == "line":
        plant_line(store, PREV)
    else:
        kwargs: dict[str, Any] = {"key": key}
        kwargs.update({"unsigned": {"key": None}, "other-key": {"key": new_signing_key()},
                       "other-repository": {"repository": "acme/other"}, "deny": {"decision": "deny"}}[plant])
        record_deploy(store, PREV, **kwargs)
    policy = tmp_path / "range.yml"
    policy.write_text(RANGE_POLICY)
    pub = tmp_path / "trust.pub"
    pub.write_bytes(public_pem(key))
    run = run_check(monkeypatch, capsys, tmp_path, github_env(api, MERGE, POLICYENGINE_TRUST_KEY=str(pub)),
                    policy=policy)
    assert run.code == 1, run.out + run.err
    assert run.decision is not None and run.decision["decision"] == "deny"
    assert "no previous deploy to production is known" in run.rule("every-change-reviewed")["message"]


def test_genuine_signed_history_makes_cover_range_pass(api: FakeAPI, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    range_world(api)
    key = new_signing_key()
    record_deploy(tmp_path / "evidence", PREV, key=key)
    policy = tmp_path / "range.yml"
    policy.write_text(RANGE_POLICY)
    monkeypatch.setenv("PE_TRUST", public_pem(key).decode())
    run = run_check(monkeypatch, capsys, tmp_path, github_env(api, MERGE, POLICYENGINE_TRUST_KEY="env:PE_TRUST"),
                    policy=policy)
    assert run.code == 0, run.out + run.err
    assert run.decision is not None and run.decision["change"]["range"]["previous_commit"] == PREV
    assert [c["sha"] for c in run.decision["change"]["range"]["commits"]] == [OLD, HEAD, MERGE]


def test_without_a_trust_key_the_range_is_unknown_even_with_a_signed_bundle(
        api: FakeAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    reviewed_world(api)  # the API names PREV too
    record_deploy(tmp_path / "evidence", PREV, key=new_signing_key())
    policy = tmp_path / "range.yml"
    policy.write_text(RANGE_POLICY)
    run = run_check(monkeypatch, capsys, tmp_path, github_env(api, MERGE), policy=policy)
    assert run.code == 1
    assert run.decision is not None and run.decision["change"]["range"]["previous_commit"] is None
    assert any("no --trust-key" in n for n in run.decision["change"]["notes"])


@pytest.mark.parametrize("spec, expected", [
    ("missing.pub", "--trust-key: cannot read file missing.pub"),
    ("env:PE_NOPE", "--trust-key: environment variable PE_NOPE is not set or empty"),
    ("bad.pub", "--trust-key: file bad.pub does not hold a PEM public key"),
])
def test_a_bad_trust_key_is_a_usage_error(api: FakeAPI, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                          spec: str, expected: str) -> None:
    reviewed_world(api)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.pub").write_text("not a key")
    run = run_check(monkeypatch, capsys, tmp_path, github_env(api, MERGE, POLICYENGINE_TRUST_KEY=spec))
    assert run.code == 2 and f"error: {expected}" in run.err
    assert "Traceback" not in run.err


def test_gitlab_check_trusts_only_signed_history(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from test_provider_gitlab import PREV as GL_PREV
    from test_provider_gitlab import SQUASH, approved_mr

    with FakeAPI("/api/v4") as gl:
        w: GitLabWorld = approved_mr(gl)
        w.deployments([])
        plant_line(tmp_path / "evidence", GL_PREV)
        key = new_signing_key()
        pub = tmp_path / "trust.pub"
        pub.write_bytes(public_pem(key))
        policy = tmp_path / "range.yml"
        policy.write_text(RANGE_POLICY.replace("exclude: [author, committers, deployer]", "exclude: [author]"))
        run = run_check(monkeypatch, capsys, tmp_path, gitlab_env(gl, SQUASH, POLICYENGINE_TRUST_KEY=str(pub)),
                        provider="gitlab", policy=policy)
    assert run.code == 1, run.out
    assert run.decision is not None and run.decision["change"]["range"]["previous_commit"] is None


def test_a_signed_simulation_is_never_the_previous_deploy(tmp_path: Path) -> None:
    """A --simulate run is signed like any bundle, but it deployed nothing."""
    key = new_signing_key()
    record_deploy(tmp_path / "ev", PREV, key=key)
    record_deploy(tmp_path / "ev", PLANTED, key=key, simulated=True, created_at="2026-11-21T20:00:00Z")
    found = latest(tmp_path / "ev", trusted(tmp_path, key))
    assert found is not None and found["sha"] == PREV


@pytest.mark.parametrize(("status", "counts"), [("deployed", True), ("not_deployed", False), ("failed", False),
                                                ("rolled_back", False)])
def test_an_outcome_decides_whether_the_latest_allow_is_the_previous_deploy(tmp_path: Path, status: str,
                                                                             counts: bool) -> None:
    """One definition of the previous deploy: a deployment whose outcome is not a failure."""
    from policyengine.evidence.stores.folder import LocalArchive
    from policyengine.evidence.format.records import Actor

    key = new_signing_key()
    record_deploy(tmp_path / "ev", PREV, key=key)
    later = record_deploy(tmp_path / "ev", PLANTED, key=key, created_at="2026-11-21T20:00:00Z")
    from policyengine.evidence.stores.outcomes import record_outcome

    store = LocalArchive(tmp_path / "ev")
    record_outcome(store, later.id, status=status, actor=Actor("dana", False, "--by"), signing_key=key, env={})
    found = latest(tmp_path / "ev", trusted(tmp_path, key))
    assert found is not None and found["sha"] == (PLANTED if counts else PREV)


def test_a_signed_advisory_deny_is_a_deployment_and_can_start_the_range(tmp_path: Path) -> None:
    from datetime import datetime

    from policyengine.evidence.stores.folder import LocalArchive

    key = new_signing_key()
    record_deploy(tmp_path / "ev", PREV, key=key)
    LocalArchive(tmp_path / "ev").write_bundle(
        decision={"decision": "deny", "advisory": True, "evaluated_at": "2026-11-21T20:00:00Z"},
        change={"repository": REPO, "environment": ENV, "commit": PLANTED}, policy_filename="p.yml",
        policy_bytes=b"version: 1\n", files=[], created_at=datetime.fromisoformat("2026-11-21T20:00:00+00:00"),
        signing_key=key)
    found = latest(tmp_path / "ev", trusted(tmp_path, key))
    assert found is not None and found["sha"] == PLANTED


# -- the same trusted history on every store: folder, S3, git --------------------------------------

STORES_POLICY = RANGE_POLICY + ("  - id: infra-review\n    type: approvals\n    min_approvals: 1\n"
                                "    from_teams: [security]\n    when:\n      paths: [\"infra/**\"]\n")


def _store_url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh, empty store of ``kind``: a folder, a prefix of the local S3 server, a bare git repository."""
    if kind == "folder":
        return str(tmp_path / "store")
    if kind == "s3":
        pytest.importorskip("moto")
        from s3_server import PLAIN_BUCKET

        request.getfixturevalue("s3")
        return f"s3://{PLAIN_BUCKET}/history-{secrets.token_hex(4)}"
    import os
    import subprocess

    remote = tmp_path / "evidence.git"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    subprocess.run(["git", "init", "--quiet", "--bare", str(remote)], check=True, env=clean, timeout=60)
    if kind == "git":
        return f"git+file://{remote}#refs/heads/policyengine-evidence"
    # git:REF: the ref of the origin of the checkout the job runs in
    checkout = tmp_path / "checkout"
    subprocess.run(["git", "init", "--quiet", str(checkout)], check=True, env=clean, timeout=60)
    subprocess.run(["git", "-C", str(checkout), "remote", "add", "origin", f"file://{remote}"], check=True,
                   env=clean, timeout=60)
    request.getfixturevalue("monkeypatch").chdir(checkout)
    return "git:policyengine-evidence"


@pytest.mark.parametrize("kind", ["folder", "s3", "git", "git-origin"])
def test_the_same_signed_deploy_gives_the_same_decision_on_every_store(
        api: FakeAPI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        request: pytest.FixtureRequest, kind: str) -> None:
    """One scenario, three stores: the deploy recorded and signed before is the previous deploy, so
    ``cover_range`` passes and the ``when.paths`` rule (infra only) is skipped, on each of them."""
    from datetime import datetime

    from cryptography.hazmat.primitives import serialization

    from policyengine.evidence.stores.factory import open_store

    monkeypatch.setenv("POLICYENGINE_CACHE_DIR", str(tmp_path / "cache"))
    url = _store_url(kind, tmp_path, request)
    range_world(api)
    key = new_signing_key()
    first = open_store(url).write_bundle(
        decision={"decision": "allow", "evaluated_at": "2026-11-20T20:00:00Z"},
        change={"repository": REPO, "environment": ENV, "commit": PREV}, policy_filename="p.yml",
        policy_bytes=b"version: 1\n", files=[], signing_key=key,
        created_at=datetime.fromisoformat("2026-11-20T20:00:00+00:00"))
    history = VerifiedHistory(url, trusted(tmp_path, key))
    found = history.latest(REPO, ENV)
    assert found is not None and found["sha"] == PREV and found["id"] == first.id, history.rejected

    policy = tmp_path / "range.yml"
    policy.write_text(STORES_POLICY)
    private = tmp_path / "signing.pem"
    private.write_bytes(key.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    run = run_check(monkeypatch, capsys, tmp_path, github_env(
        api, MERGE, POLICYENGINE_TRUST_KEY=str(tmp_path / "trust.pub"), POLICYENGINE_EVIDENCE_STORE=url,
        POLICYENGINE_SIGNING_KEY=str(private)), policy=policy)
    assert run.code == 0, run.out + run.err
    assert run.decision is not None and run.decision["decision"] == "allow"
    assert run.decision["change"]["range"]["previous_commit"] == PREV
    assert [c["sha"] for c in run.decision["change"]["range"]["commits"]] == [OLD, HEAD, MERGE]
    assert run.rule("every-change-reviewed")["status"] == "pass"
    assert run.rule("infra-review")["status"] == "skipped"
    # The second evaluation went to the same store, after the first.
    records, _ = open_store(url).read_index()
    assert [r["commit"] for r in records] == [PREV, MERGE]
    assert not (tmp_path / "evidence").exists()
