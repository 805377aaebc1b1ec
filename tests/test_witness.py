"""The platform as witness: `evidence witness` publishes a decision as a commit status, and
`audit reconcile --witness` reads the statuses back (policyengine.lifecycle.witness, evidence.witness).

The GitHub and GitLab stand-ins keep statuses as the platforms do: the platform stamps each with
its own time and the creator its token belongs to, and GitHub's GraphQL gives the latest status
of each context of a commit.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from policyengine.evidence.audit.witness import description, judge_witnesses, parse_description
from policyengine.lifecycle.witness_format import MAX_DESCRIPTION
from policyengine.providers.deployments import WitnessStatus
from tests.fake_servers import FakeAPI, sha_of
from tests.reconcile_world import (
    T0,
    Evidence,
    GitHubDeployments,
    GitHubStatuses,
    GitLabDeployments,
    GitLabStatuses,
    gitlab_deployment,
    iso,
)

REPO, ENV = "acme/payments", "production"
READ_TOKEN = "ghp_" + "R" * 36
WITNESS_TOKEN = "ghp_" + "W" * 36
GL_READ, GL_WITNESS = "glpat-" + "r" * 20, "glpat-" + "w" * 20
PERIOD = ("--since", "2026-03-01", "--until", "2026-03-31")
CONTEXT = f"policyengine/{ENV}"


def cli(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from policyengine.cli import main

    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


def reconcile(evidence: Evidence, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, Any, str]:
    code, out, err = cli("audit", "reconcile", "--archive", str(evidence.archive.root), *PERIOD,
                         "--now", "2026-04-01T00:00:00Z", "--format", "json", *args, capsys=capsys)
    try:
        return code, json.loads(out), err
    except ValueError:
        return code, out, err


def witness(evidence: Evidence, bundle_id: str, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    return cli("evidence", "witness", "--archive", str(evidence.archive.root), bundle_id, *args, capsys=capsys)


def mismatches(report: Any) -> list[dict[str, Any]]:
    return [f for f in report["exceptions"] if f["kind"] == "witness-mismatch"]


@pytest.fixture
def evidence(tmp_path: Path) -> Evidence:
    return Evidence(tmp_path / "archive")


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> Any:
    with FakeAPI("/api/v3") as api:
        deployments = GitHubDeployments(api)
        api.prefix = "/api"
        statuses = GitHubStatuses(deployments)
        statuses.logins = {WITNESS_TOKEN: "acme-witness[bot]", READ_TOKEN: "auditor"}
        monkeypatch.setenv("GITHUB_TOKEN", READ_TOKEN)
        monkeypatch.setenv("GITHUB_API_URL", api.origin + "/api/v3")
        monkeypatch.setenv("POLICYENGINE_HTTP_RETRIES", "0")
        monkeypatch.setenv("GITHUB_ACTIONS", "true")
        monkeypatch.delenv("GITLAB_CI", raising=False)
        monkeypatch.delenv("POLICYENGINE_WITNESS_TOKEN", raising=False)
        yield deployments, statuses


@pytest.fixture
def gitlab(monkeypatch: pytest.MonkeyPatch) -> Any:
    with FakeAPI("/api/v4") as api:
        deployments = GitLabDeployments(api)
        statuses = GitLabStatuses(api)
        statuses.logins = {GL_WITNESS: "witness-bot"}
        monkeypatch.setenv("GITLAB_TOKEN", GL_READ)
        monkeypatch.setenv("CI_API_V4_URL", api.url)
        monkeypatch.setenv("POLICYENGINE_HTTP_RETRIES", "0")
        monkeypatch.setenv("GITLAB_CI", "true")
        monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
        monkeypatch.delenv("POLICYENGINE_WITNESS_TOKEN", raising=False)
        yield deployments, statuses


def published(evidence: Evidence, github: Any, sha: str, when: datetime, monkeypatch: pytest.MonkeyPatch,
              capsys: pytest.CaptureFixture[str], **kw: Any) -> dict[str, Any]:
    """An allowed, deployed evaluation at ``when``, its witness published a minute later by the
    witness token, and the platform's deployment of it."""
    deployments, statuses = github
    record = evidence.evaluation(REPO, ENV, sha, when, **kw)
    statuses.accept(REPO, sha)
    statuses.clock = lambda: when + timedelta(minutes=1)
    monkeypatch.setenv("POLICYENGINE_WITNESS_TOKEN", WITNESS_TOKEN)
    code, out, err = witness(evidence, record["id"], capsys=capsys)
    assert code == 0, out + err
    monkeypatch.delenv("POLICYENGINE_WITNESS_TOKEN")
    deployments.add(REPO, ENV, sha, when + timedelta(minutes=3), ident=len(deployments.nodes.get((REPO, ENV), [])) + 1)
    return record


# -- publishing ------------------------------------------------------------------------------------


def test_witness_publishes_the_decision_with_its_own_token(evidence: Evidence, github: Any,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    deployments, statuses = github
    record = evidence.evaluation(REPO, ENV, sha_of("a"), T0)
    statuses.accept(REPO, sha_of("a"))
    monkeypatch.setenv("POLICYENGINE_WITNESS_TOKEN", WITNESS_TOKEN)
    code, out, err = witness(evidence, record["id"], capsys=capsys)
    assert code == 0, out + err
    posted = [r for r in deployments.api.requests if r.method == "POST" and "/statuses/" in r.path]
    assert len(posted) == 1
    assert posted[0].path == f"/api/v3/repos/{REPO}/statuses/{sha_of('a')}"
    # Its own token, never the gate's read token.
    assert posted[0].headers["Authorization"] == f"Bearer {WITNESS_TOKEN}"
    body = posted[0].json()
    assert body["context"] == CONTEXT and body["state"] == "success"
    heads = sorted(p.name for p in (evidence.archive.root / "catalogue").iterdir())
    import hashlib

    head = hashlib.sha256((evidence.archive.root / "catalogue" / heads[-1]).read_bytes()).hexdigest()
    assert body["description"] == f"allow {record['id']} sha256:{record['sha256'][:16]} head:{head[:16]}"
    assert len(body["description"]) <= MAX_DESCRIPTION
    assert WITNESS_TOKEN not in out + err and "published" in out


def test_a_denied_decision_is_witnessed_as_a_failure(evidence: Evidence, github: Any,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    _, statuses = github
    record = evidence.evaluation(REPO, ENV, sha_of("d"), T0, verdict="deny", outcome=None)
    statuses.accept(REPO, sha_of("d"))
    monkeypatch.setenv("POLICYENGINE_WITNESS_TOKEN", WITNESS_TOKEN)
    code, _, _ = witness(evidence, record["id"], capsys=capsys)
    assert code == 0
    st = statuses.by_commit[(REPO, sha_of("d"))][0]
    assert st["state"] == "FAILURE" and st["description"].startswith(f"deny {record['id']} ")


def test_without_a_witness_token_publishing_is_off(evidence: Evidence, github: Any,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    deployments, _ = github
    record = evidence.evaluation(REPO, ENV, sha_of("a"), T0)
    before = len(evidence.archive.read_index()[0])
    code, out, _ = witness(evidence, record["id"], capsys=capsys)
    assert code == 0 and "witness: off" in out
    assert len(evidence.archive.read_index()[0]) == before  # nothing recorded
    assert not [r for r in deployments.api.requests if r.method == "POST"]


def test_a_required_witness_without_a_token_stops_the_deploy(evidence: Evidence, github: Any,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    record = evidence.evaluation(REPO, ENV, sha_of("a"), T0, witness_required=True, outcome=None)
    code, out, _ = witness(evidence, record["id"], capsys=capsys)
    assert code == 3, out
    linked = evidence.archive.linked_records(record["id"])
    kinds = [(r.get("kind"), r.get("decision")) for r in linked]
    assert ("notification-failure", "failed") in kinds and ("outcome", "not_deployed") in kinds
    assert "must not proceed" in out


def test_a_refused_publish_is_recorded_and_fails_only_when_required(evidence: Evidence, github: Any,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    _, statuses = github
    statuses.refuse = 403
    monkeypatch.setenv("POLICYENGINE_WITNESS_TOKEN", WITNESS_TOKEN)
    optional = evidence.evaluation(REPO, ENV, sha_of("a"), T0, outcome=None)
    statuses.accept(REPO, sha_of("a"))
    code, out, err = witness(evidence, optional["id"], capsys=capsys)
    assert code == 0 and "witness: FAILED (not required)" in out and "403" in out
    assert [r["kind"] for r in evidence.archive.linked_records(optional["id"])] == ["notification-failure"]
    failure = evidence.archive.linked_records(optional["id"])[0]
    assert WITNESS_TOKEN not in json.dumps(failure) and WITNESS_TOKEN not in out + err
    required = evidence.evaluation(REPO, ENV, sha_of("b"), T0 + timedelta(hours=1), witness_required=True,
                                   outcome=None)
    statuses.accept(REPO, sha_of("b"))
    code, out, _ = witness(evidence, required["id"], capsys=capsys)
    assert code == 3
    assert {r["kind"] for r in evidence.archive.linked_records(required["id"])} == {"notification-failure",
                                                                                      "outcome"}


def test_a_required_witness_stops_an_advisory_denial_it_could_not_publish_but_not_a_blocking_one(
        evidence: Evidence, github: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # Advisory mode lets a denied deploy go on: a required witness that failed must stop it too.
    advisory = evidence.evaluation(REPO, ENV, sha_of("a"), T0, verdict="deny", advisory=True,
                                   witness_required=True, outcome=None)
    assert witness(evidence, advisory["id"], capsys=capsys)[0] == 3
    assert "outcome" in {r["kind"] for r in evidence.archive.linked_records(advisory["id"])}
    # A blocking denial stops the deploy already: the failure is recorded, the exit stays 0.
    blocked = evidence.evaluation(REPO, ENV, sha_of("b"), T0 + timedelta(hours=1), verdict="deny",
                                  witness_required=True, outcome=None)
    assert witness(evidence, blocked["id"], capsys=capsys)[0] == 0
    assert [r["kind"] for r in evidence.archive.linked_records(blocked["id"])] == ["notification-failure"]


def test_a_repository_or_commit_that_is_no_plain_name_never_reaches_the_url(
        evidence: Evidence, github: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # What the store records goes into the URL the witness token is sent to: a path trick is refused.
    deployments, _ = github
    record = evidence.evaluation("acme/../../user", ENV, sha_of("a"), T0, outcome=None)
    monkeypatch.setenv("POLICYENGINE_WITNESS_TOKEN", WITNESS_TOKEN)
    code, out, _ = witness(evidence, record["id"], capsys=capsys)
    assert code == 0 and "no usable repository" in out
    assert not [r for r in deployments.api.requests if r.method == "POST"]


def test_an_unknown_bundle_is_refused(evidence: Evidence, github: Any, capsys: pytest.CaptureFixture[str]) -> None:
    evidence.evaluation(REPO, ENV, sha_of("a"), T0)
    code, _, err = witness(evidence, "20260302T090000Z-000000000000", capsys=capsys)
    assert code == 2 and "not in the archive" in err


# -- reading back ----------------------------------------------------------------------------------


def test_a_published_witness_reads_back_clean(evidence: Evidence, github: Any, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    published(evidence, github, sha_of("a"), T0, monkeypatch, capsys)
    code, report, err = reconcile(evidence, "--source", "github", "--witness",
                                  "--witness-creator", "acme-witness[bot]", capsys=capsys)
    assert code == 0, (report, err)
    assert report["witness_statuses"] == 1 and report["exceptions"] == []


def test_a_witness_status_whose_digest_was_edited_is_a_witness_mismatch(
        evidence: Evidence, github: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    record = published(evidence, github, sha_of("a"), T0, monkeypatch, capsys)
    _, statuses = github
    st = statuses.by_commit[(REPO, sha_of("a"))][-1]
    wrong = "0" * 16 if not record["sha256"].startswith("0" * 16) else "1" * 16
    st["description"] = st["description"].replace(f"sha256:{record['sha256'][:16]}", f"sha256:{wrong}")
    code, report, _ = reconcile(evidence, "--source", "github", "--witness", capsys=capsys)
    assert code == 1
    [found] = mismatches(report)
    assert found["bundle_id"] == record["id"] and "sha256" in found["detail"]
    assert found["platform_id"] == f"{CONTEXT}@{sha_of('a')[:12]}" and found["source"] == "github"


def test_a_backdated_bundle_disagrees_with_its_witness_time(evidence: Evidence, github: Any,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    deployments, statuses = github
    # Written with the signing key "two hours earlier" than the platform saw its witness.
    record = evidence.evaluation(REPO, ENV, sha_of("a"), T0)
    statuses.accept(REPO, sha_of("a"))
    statuses.clock = lambda: T0 + timedelta(hours=2)
    monkeypatch.setenv("POLICYENGINE_WITNESS_TOKEN", WITNESS_TOKEN)
    assert witness(evidence, record["id"], capsys=capsys)[0] == 0
    deployments.add(REPO, ENV, sha_of("a"), T0 + timedelta(minutes=3), ident=1)
    code, report, _ = reconcile(evidence, "--source", "github", "--witness", capsys=capsys)
    assert code == 1
    [found] = mismatches(report)
    assert "witnessed it at" in found["detail"] and iso(T0 + timedelta(hours=2)) in found["detail"]


def test_a_witnessed_bundle_missing_from_the_store_a_forged_status_and_another_creator(
        evidence: Evidence, github: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    deployments, statuses = github
    record = published(evidence, github, sha_of("a"), T0, monkeypatch, capsys)
    # A decision the store no longer holds (its bundle and index line deleted), still witnessed.
    gone = "20260302T100000Z-0123456789ab"
    statuses.add(REPO, sha_of("b"), context=CONTEXT, when=T0 + timedelta(hours=1),
                 description=f"allow {gone} sha256:{'c' * 16} head:-")
    deployments.add(REPO, ENV, sha_of("b"), T0 + timedelta(hours=1, minutes=2), ident=50)
    # A status in the witness context that the gate never writes.
    statuses.add(REPO, sha_of("c"), context=CONTEXT, when=T0 + timedelta(hours=2), creator="mallory",
                 description="allow: all good, trust me")
    evidence.evaluation(REPO, ENV, sha_of("c"), T0 + timedelta(hours=2))
    deployments.add(REPO, ENV, sha_of("c"), T0 + timedelta(hours=2, minutes=2), ident=51)
    # Another creator re-posting the right values.
    st = statuses.by_commit[(REPO, sha_of("a"))][-1]
    statuses.add(REPO, sha_of("a"), context=CONTEXT, description=st["description"], creator="mallory",
                 when=T0 + timedelta(minutes=2))
    code, report, _ = reconcile(evidence, "--source", "github", "--witness",
                                "--witness-creator", "acme-witness[bot]", capsys=capsys)
    assert code == 1
    found = {f["commit"]: f for f in mismatches(report)}
    assert set(found) == {sha_of("a"), sha_of("b"), sha_of("c")}
    assert "not by acme-witness[bot]" in found[sha_of("a")]["detail"]
    assert found[sha_of("a")]["bundle_id"] == record["id"]
    assert "does not hold" in found[sha_of("b")]["detail"] and found[sha_of("b")]["bundle_id"] == gone
    assert "edited or forged" in found[sha_of("c")]["detail"]
    # The deployment of the deleted bundle's commit is unauthorized too.
    assert any(f["kind"] == "unauthorized" and f["commit"] == sha_of("b") for f in report["exceptions"])


def test_a_store_head_no_catalogue_has_is_a_mismatch(evidence: Evidence, github: Any,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    record = published(evidence, github, sha_of("a"), T0, monkeypatch, capsys)
    _, statuses = github
    st = statuses.by_commit[(REPO, sha_of("a"))][-1]
    st["description"] = st["description"].rsplit("head:", 1)[0] + "head:" + "f" * 16
    code, report, _ = reconcile(evidence, "--source", "github", "--witness", capsys=capsys)
    assert code == 1
    [found] = mismatches(report)
    assert "no catalogue of the store" in found["detail"] and found["bundle_id"] == record["id"]


def test_the_witness_read_back_is_paged_and_a_graphql_error_is_exit_3(
        evidence: Evidence, github: Any, capsys: pytest.CaptureFixture[str]) -> None:
    deployments, _ = github
    for i in range(150):
        when = T0 + timedelta(hours=i)
        evidence.evaluation(REPO, ENV, sha_of(f"c{i}"), when, outcome=None)
    code, report, _ = reconcile(evidence, "--source", "github", "--witness", capsys=capsys)
    assert code == 0, report
    witness_queries = [q for q in deployments.queries if "status { contexts" in q["query"]]
    assert len(witness_queries) == 2  # 150 commits, 100 a request
    assert report["requests"] == 1 + 2
    deployments.api.always = None
    deployments.statuses = None  # the stand-in no longer knows the query: a GraphQL error
    code, _, err = reconcile(evidence, "--source", "github", "--witness", capsys=capsys)
    assert code == 3 and READ_TOKEN not in err


def test_witness_needs_a_platform_source(evidence: Evidence, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    evidence.evaluation(REPO, ENV, sha_of("a"), T0)
    log = tmp_path / "deploys.jsonl"
    log.write_text(json.dumps({"time": iso(T0), "commit": sha_of("a"), "environment": ENV, "id": "1",
                               "url": "https://deploy.test/1", "repository": REPO}) + "\n")
    code, _, err = reconcile(evidence, "--source", f"log:{log}", "--witness", capsys=capsys)
    assert code == 2 and "github or gitlab" in err
    code, _, err = reconcile(evidence, "--source", f"log:{log}", "--witness-creator", "x", capsys=capsys)
    assert code == 2 and "--witness-creator needs --witness" in err


# -- GitLab ----------------------------------------------------------------------------------------


def test_gitlab_publish_and_read_back(evidence: Evidence, gitlab: Any, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    deployments, statuses = gitlab
    record = evidence.evaluation(REPO, ENV, sha_of("a"), T0)
    statuses.accept(REPO, sha_of("a"))
    statuses.clock = lambda: T0 + timedelta(minutes=1)
    monkeypatch.setenv("POLICYENGINE_WITNESS_TOKEN", GL_WITNESS)
    code, out, err = witness(evidence, record["id"], capsys=capsys)
    assert code == 0, out + err
    posted = [r for r in deployments.api.requests if r.method == "POST"]
    assert posted[0].path == f"/api/v4/projects/acme%2Fpayments/statuses/{sha_of('a')}"
    assert posted[0].headers["PRIVATE-TOKEN"] == GL_WITNESS
    assert posted[0].json()["name"] == CONTEXT and posted[0].json()["state"] == "success"
    monkeypatch.delenv("POLICYENGINE_WITNESS_TOKEN")
    deployments.add(REPO, gitlab_deployment(1, ENV, sha_of("a"), T0 + timedelta(minutes=3)))
    code, report, _ = reconcile(evidence, "--source", "gitlab", "--witness", "--witness-creator", "witness-bot",
                                capsys=capsys)
    assert code == 0 and report["witness_statuses"] == 1, report
    listing = [r for r in deployments.api.requests if r.path.endswith("/statuses") and r.method == "GET"]
    assert listing[-1].query["name"] == [CONTEXT] and listing[-1].query["all"] == ["true"]
    # Every status is listed on GitLab, not only the latest: an edited one among them is found.
    statuses.add(REPO, sha_of("a"), name=CONTEXT, when=T0 + timedelta(minutes=2),
                 description=f"allow {record['id']} sha256:{'0' * 16} head:-")
    code, report, _ = reconcile(evidence, "--source", "gitlab", "--witness", capsys=capsys)
    assert code == 1 and [f["source"] for f in mismatches(report)] == ["gitlab"]


# -- the format and the judge (pure) ---------------------------------------------------------------


def test_the_description_round_trips_and_stays_within_140_characters() -> None:
    bundle = "20261207T001751Z-0123456789ab"
    text = description("not_applicable", bundle, "a" * 64, "b" * 64)
    assert len(text) <= MAX_DESCRIPTION
    said = parse_description(text)
    assert said is not None and (said.decision, said.bundle_id, said.sha256, said.head) == (
        "not_applicable", bundle, "a" * 16, "b" * 16)
    assert parse_description(text + " ") is None and parse_description(text.replace("sha256:", "sha1:")) is None
    assert parse_description(None) is None


def test_the_judge_compares_decision_commit_and_environment() -> None:
    bundle = "20260302T090000Z-0123456789ab"
    record = {"id": bundle, "decision": "deny", "commit": sha_of("a"), "repository": REPO, "environment": ENV,
              "sha256": "a" * 64, "created_at": iso(T0)}
    status = WitnessStatus("github", REPO, ENV, sha_of("b"), f"allow {bundle} sha256:{'a' * 16} head:-",
                           iso(T0 + timedelta(minutes=1)), "bot")
    [m] = judge_witnesses([status], {bundle: record}, store_heads=[])
    assert "decision" in m.detail and "commit" in m.detail
    ok = WitnessStatus("github", REPO, ENV, sha_of("a"), f"deny {bundle} sha256:{'a' * 16} head:-",
                       iso(T0 + timedelta(minutes=9)), "bot")
    assert judge_witnesses([ok], {bundle: record}, store_heads=[]) == []
    # The timestamp authority's time, where the bundle has one, is what the witness is held to.
    assert judge_witnesses([ok], {bundle: record}, store_heads=[],
                           times={bundle: iso(T0 + timedelta(hours=1))})
