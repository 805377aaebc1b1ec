"""A year of deployments reconciled: 1% bypass the gate and three chains were deleted; reconcile
finds exactly those, with at most one request per 100 platform deployments (the stand-in counts
them). Its time is measured in benchmarks/bench_reconcile.py (docs/performance.md), not here."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from policyengine.evidence.audit import reconcile as reconcile_module
from tests.fake_servers import FakeAPI
from tests.reconcile_world import GitHubDeployments
from tests.reconcile_year import DELETED, N, RERUN, ROLLBACK, build, chain_of


@pytest.fixture(scope="module")
def year(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with FakeAPI("/api") as api:
        gh = GitHubDeployments(api)
        ev, catalogue, bypass = build(tmp_path_factory.mktemp("year") / "archive", gh)
        deployments = sum(len(v) for v in gh.nodes.values())
        yield {"api": api, "evidence": ev, "catalogue": catalogue, "bypass": bypass, "deployments": deployments}


def test_the_year_finds_exactly_the_bypasses_and_the_deleted_chains(
        year: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from policyengine.cli import main

    api: FakeAPI = year["api"]
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_" + "Y" * 36)
    monkeypatch.setenv("GITHUB_API_URL", api.origin + "/api/v3")
    monkeypatch.setattr(reconcile_module, "known_chains", lambda store, records=None: year["catalogue"])
    before = api.count()
    with pytest.raises(SystemExit) as exc:
        main(["audit", "reconcile", "--archive", str(year["evidence"].archive.root), "--since", "2026-01-01",
              "--until", "2026-12-31", "--now", "2027-01-01T00:00:00Z", "--source", "github", "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert exc.value.code == 1
    found = [(f["kind"], f["platform_id"] or f["repository"] + "/" + f["environment"]) for f in report["exceptions"]]
    assert sorted(found) == sorted([("unauthorized", i) for i in year["bypass"]]
                                   + [("missing-chain", f"{r}/{e}") for r, e in DELETED])
    assert len(year["bypass"]) == N // 100
    # Every deployment of a deleted chain is named under it, none judged alone.
    lost = sum(len(f["also"]) for f in report["exceptions"] if f["kind"] == "missing-chain")
    assert lost == sum(1 for i in range(N) if chain_of(i) in DELETED) + sum(1 for i in ROLLBACK
                                                                            if chain_of(i) in DELETED)
    # A re-run of a pipeline is one deployment, not two.
    assert report["platform_deployments"] == N + len(ROLLBACK) == year["deployments"] - len(RERUN)
    # Rollbacks days later are redeploys of earlier approvals: a class, not an exception.
    rollbacks = sum(1 for i in ROLLBACK if chain_of(i) not in DELETED)
    assert report["counts"]["redeploy"] == rollbacks
    assert [k for k, v in report["counts"].items() if v and k not in ("unauthorized", "missing-chain", "redeploy")] == []
    # Paged: at most one request per 100 platform deployments.
    requests = api.count() - before
    assert requests == report["requests"] and requests * 100 <= year["deployments"]


def test_the_year_with_its_witnesses_read_back_in_pages(
        year: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Every evaluation of the year witnessed as `evidence witness` writes it; one status edited.
    The witness read-back adds one request per 100 commits, and finds exactly the edited one."""
    from datetime import datetime, timedelta

    from policyengine.cli import main
    from policyengine.evidence.audit.witness import description
    from policyengine.lifecycle.witness_format import context_for
    from tests.reconcile_world import GitHubStatuses

    api: FakeAPI = year["api"]
    gh = api.routes["/graphql"].__self__  # type: ignore[attr-defined]
    statuses = GitHubStatuses(gh)
    records, _ = year["evidence"].archive.read_index()
    evaluations = [r for r in records if r.get("kind", "evaluation") == "evaluation"]
    for r in evaluations:
        when = datetime.fromisoformat(r["created_at"].replace("Z", "+00:00")) + timedelta(minutes=1)
        statuses.add(r["repository"], r["commit"], context=context_for(r["environment"]), when=when,
                     description=description(r["decision"], r["id"], r["sha256"], None))
    edited = evaluations[len(evaluations) // 2]
    latest = statuses.by_commit[(edited["repository"], edited["commit"])][-1]
    latest["description"] = latest["description"].replace(f"sha256:{edited['sha256'][:16]}", "sha256:" + "0" * 16)
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_" + "Y" * 36)
    monkeypatch.setenv("GITHUB_API_URL", api.origin + "/api/v3")
    monkeypatch.setattr(reconcile_module, "known_chains", lambda store, records=None: year["catalogue"])
    before = api.count()
    with pytest.raises(SystemExit):
        main(["audit", "reconcile", "--archive", str(year["evidence"].archive.root), "--since", "2026-01-01",
              "--until", "2026-12-31", "--now", "2027-01-01T00:00:00Z", "--source", "github", "--witness",
              "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    found = [f for f in report["exceptions"] if f["kind"] == "witness-mismatch"]
    assert [(f["commit"], f["bundle_id"]) for f in found] == [(edited["commit"], edited["id"])]
    commits = {(r["repository"], r["commit"]) for r in evaluations}
    asked = [sum(1 for k in q["variables"] if k.startswith("s")) for q in gh.queries[-(api.count() - before):]
             if "status { contexts" in q["query"]]
    # Paged: 100 commits a request (the period's evaluated and deployed commits), none asked twice.
    assert asked and all(n == 100 for n in asked[:-1]) and 0 < asked[-1] <= 100
    assert len(commits) <= sum(asked) <= len(commits) + year["deployments"]
    assert report["witness_statuses"] > 0
