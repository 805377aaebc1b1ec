"""The GitHub provider's GraphQL path: few requests, the same change as REST, and fail closed.

The fake GitHub answers the provider's GraphQL queries from the same REST routes the REST tests
use (``fake_servers.GitHubGraphQL``); every query is validated against GitHub's published schema
(npm ``@octokit/graphql-schema``, installed by ``scripts/setup.sh test``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from fake_servers import FakeAPI, GitHubWorld, Reply, Request, StaticHistory, github_env, graphql_path, sha_of

from policyengine.errors import UsageError
from policyengine.providers import http
from policyengine.providers.github import gather_github
from policyengine.providers.github_graphql import QUERIES

HEAD = sha_of("pr42-head")
MERGE = sha_of("pr42-merge")
PREV = sha_of("previous-deploy")
REPO = Path(__file__).resolve().parent.parent
# The introspection answer (schema.json): the package's schema.graphql defines some fields twice,
# which graphql-core refuses to build.
SCHEMA = REPO / ".venv" / "graphql-schema" / "node_modules" / "@octokit" / "graphql-schema" / "schema.json"
GRAPHQL = graphql_path("/api/v3")
TOKEN = "ghs_" + "T" * 36


@pytest.fixture(autouse=True)
def _no_real_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "SLEEP", lambda _s: None)


@pytest.fixture
def api() -> FakeAPI:
    with FakeAPI("/api/v3") as server:
        yield server


def big_world(api: FakeAPI, approvers: int) -> GitHubWorld:
    w = GitHubWorld(api)
    w.pull_250_250(approvers, head=HEAD, merge=MERGE, prev=PREV)
    return w


def small_world(api: FakeAPI) -> GitHubWorld:
    w = GitHubWorld(api)
    commits = [w.commit(HEAD, "alice")]
    reviews = [w.review("bob", "APPROVED", HEAD), w.review("carol", "APPROVED", HEAD, review_id=2)]
    w.pull(42, author="alice", head=HEAD, merge_commit=MERGE, merged_by="dana", commits=commits, reviews=reviews)
    w.checks(MERGE)
    w.deployments("production", [(8, PREV, ["success"])])
    w.compare(PREV, MERGE, [*commits, w.commit(MERGE, "alice", "web-flow")])
    return w


def gather(api: FakeAPI, **extra: str) -> dict[str, Any]:
    return gather_github(github_env(api, MERGE, **extra), environment="production",
                         previous_deploys=StaticHistory(PREV)).change


# -- request counts ------------------------------------------------------------------------------


def test_the_250_250_pull_request_from_3_people_takes_at_most_10_requests(api: FakeAPI) -> None:
    w = big_world(api, approvers=3)
    api.latency = 0.02
    g = gather_github(github_env(api, MERGE), environment="production", previous_deploys=StaticHistory(PREV))
    change = g.change
    assert "unavailable" not in change, change.get("unavailable")
    assert len(change["reviews"]) == 250 and len(change["commits"]) == 250
    assert len(change["range"]["commits"]) == 251
    counts = {p: api.paths().count(p) for p in set(api.paths())}
    assert counts == {
        GRAPHQL: 2,  # the pull request, first and last 100 reviews and commits, files, deployments; the middle
        f"{w.base}/commits/{MERGE}/check-runs": 1,
        f"{w.base}/commits/{MERGE}/statuses": 1,
        f"{w.base}/compare/{PREV}...{MERGE}": 3,
        **{f"{w.base}/collaborators/reviewer{i}/permission": 1 for i in range(3)},
    }
    assert api.count() == 10
    assert api.max_in_flight >= 3  # independent requests still go at once
    print(f"\nGitHub GraphQL, 250 reviews (3 people) + 250 commits: {api.count()} requests, "
          f"at most {api.max_in_flight} at once")  # docs/performance.md quotes this line
    assert sorted(n for n in g.raw if n.startswith("github/graphql_")) == ["github/graphql_1.json",
                                                                         "github/graphql_2.json"]


def test_250_distinct_approvers_cost_one_rest_lookup_each(api: FakeAPI) -> None:
    big_world(api, approvers=250)
    change = gather(api)
    assert "unavailable" not in change
    assert api.count() == 7 + 250
    print(f"\nGitHub GraphQL, 250 reviews (250 people) + 250 commits: {api.count()} requests")


@pytest.mark.parametrize("reviews, pages", [(0, 1), (100, 1), (150, 1), (200, 1), (201, 2), (300, 2), (301, 3)])
def test_lists_read_from_both_ends_are_whole_and_in_order(api: FakeAPI, reviews: int, pages: int) -> None:
    w = GitHubWorld(api)
    commits = [w.commit(HEAD, "alice")]
    rs = [w.review(f"p{i % 3}", "COMMENTED" if i % 2 else "APPROVED", HEAD,
                   at=f"2026-11-23T{10 + i // 60:02d}:{i % 60:02d}:00Z", review_id=i) for i in range(reviews)]
    w.pull(42, author="alice", head=HEAD, merge_commit=MERGE, merged_by="dana", commits=commits, reviews=rs)
    w.checks(MERGE)
    w.deployments("production", [])
    change = gather_github(github_env(api, MERGE), environment="production").change
    assert [r["submitted_at"] for r in change["reviews"]] == [r["submitted_at"] for r in rs]
    assert api.count(GRAPHQL) == pages


# -- the same change as REST --------------------------------------------------------------------------


@pytest.mark.parametrize("world", ["big", "small"])
def test_graphql_and_rest_give_the_same_change(world: str) -> None:
    changes = []
    for mode in ("graphql", "rest"):
        with FakeAPI("/api/v3") as api:
            big_world(api, approvers=3) if world == "big" else small_world(api)
            changes.append(gather(api, POLICYENGINE_GITHUB_API=mode))
    assert changes[0] == changes[1]


def test_a_renamed_file_is_listed_through_rest_with_its_old_name(api: FakeAPI) -> None:
    w = small_world(api)
    f = {"filename": "src/new.py", "previous_filename": "infra/old.py", "status": "renamed"}
    api.pages(f"{w.base}/pulls/42/files", [f])
    change = gather(api)
    assert change["files_changed"][:2] == ["src/new.py", "infra/old.py"]
    assert api.count(f"{w.base}/pulls/42/files") == 1


# -- fail closed ---------------------------------------------------------------------------------------


def graphql_answer(api: FakeAPI, world: GitHubWorld) -> dict[str, Any]:
    """What the fake answers to the provider's first query (to break it)."""
    doc = {"query": QUERIES["PolicyenginePullOfCommit"],
           "variables": {"owner": "acme", "name": "payments", "oid": MERGE, "environment": "production"}}
    answer: dict[str, Any] = world.graphql.serve(
        Request(GRAPHQL, {}, {}, "POST", json.dumps(doc).encode()), api).body
    return answer


def _pull(answer: dict[str, Any]) -> dict[str, Any]:
    return answer["data"]["repository"]["object"]["associatedPullRequests"]["nodes"][0]


BREAKS = {
    "errors beside data": lambda a: {**a, "errors": [{"message": "Resource not accessible by integration",
                                                      "path": ["repository", "object"]}]},
    "errors without data": lambda a: {"data": None, "errors": [{"message": "Something went wrong"}]},
    "no data": lambda a: {},
    "null repository": lambda a: {"data": {"repository": None}},
    "null pull request node": lambda a: (a["data"]["repository"]["object"]["associatedPullRequests"]
                                         .update(nodes=[None]), a)[1],
    "reviews missing": lambda a: (_pull(a).pop("reviewsFirst"), a)[1],
    "reviews count more than listed": lambda a: (_pull(a)["reviewsFirst"].update(totalCount=3),
                                                 _pull(a)["reviewsLast"].update(totalCount=3), a)[2],
    "the two ends disagree": lambda a: (_pull(a)["reviewsLast"].update(totalCount=5), a)[1],
    "next page without cursor": lambda a: (_pull(a)["commitsFirst"]["pageInfo"].update(hasNextPage=True,
                                                                                       endCursor=None), a)[1],
    "review state a number": lambda a: (_pull(a)["reviewsFirst"]["nodes"][0].update(state=1), a)[1],
    "commit oid not a sha": lambda a: (_pull(a)["commitsFirst"]["nodes"][0]["commit"].update(oid="zz"), a)[1],
    "more associated requests than read": lambda a: (a["data"]["repository"]["object"]["associatedPullRequests"]
                                                     .update(totalCount=11), a)[1],
}


@pytest.mark.parametrize("how", BREAKS)
def test_a_graphql_error_or_partial_answer_makes_the_facts_unavailable(api: FakeAPI, how: str) -> None:
    w = small_world(api)
    api.fail(GRAPHQL, Reply(200, BREAKS[how](graphql_answer(api, w))))
    change = gather(api)
    unavailable = change.get("unavailable") or {}
    assert {"pull_request", "reviews", "commits", "files_changed"} <= set(unavailable), unavailable
    assert unavailable["reviews"].startswith("POST /api/graphql: "), unavailable["reviews"]
    assert "reviews" not in change and "pull_request" not in change


def test_a_graphql_error_denies_with_exit_3(api: FakeAPI, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from test_provider_github import run_check

    w = small_world(api)
    w.team("acme", "security", ["frank"])
    api.fail(GRAPHQL, Reply(200, {"data": None, "errors": [{"message": "Resource not accessible by integration",
                                                           "type": "FORBIDDEN"}]}))
    run = run_check(monkeypatch, capsys, tmp_path, github_env(api, MERGE), previous=PREV)
    assert run.code == 3, run.out + run.err
    assert run.decision is not None and run.decision["decision"] == "deny"
    peer = run.rule("peer-review")
    assert peer["status"] == "error"
    assert "GraphQL error" in peer["message"] and "Resource not accessible by integration" in peer["message"]
    assert "Traceback" not in run.err


def test_a_deployments_error_only_loses_the_corroboration(api: FakeAPI) -> None:
    w = small_world(api)
    api.json(f"{w.base}/deployments", {"message": "Resource not accessible by integration"}, status=403)
    change = gather(api)
    assert "unavailable" not in change and change["range"]["previous_commit"] == PREV
    assert any("could not corroborate" in n and "Resource not accessible" in n for n in change["notes"]), \
        change["notes"]


def test_wrong_deployments_only_lose_the_corroboration(api: FakeAPI) -> None:
    w = small_world(api)
    answer = graphql_answer(api, w)
    answer["data"]["repository"]["deployments"]["nodes"] = [{"databaseId": "8"}]
    api.fail(GRAPHQL, Reply(200, answer))
    change = gather(api)
    assert "unavailable" not in change and change["range"]["previous_commit"] == PREV
    assert any("could not corroborate" in n and "unexpected shape" in n for n in change["notes"]), change["notes"]


# -- where the token goes, and what is kept ---------------------------------------------------------------


def test_a_graphql_url_on_another_host_is_refused_before_any_request(api: FakeAPI) -> None:
    small_world(api)
    with pytest.raises(UsageError) as err:
        gather(api, GITHUB_GRAPHQL_URL="http://127.0.0.2:9/api/graphql")
    assert "GITHUB_GRAPHQL_URL" in str(err.value) and "origin" in str(err.value)
    assert TOKEN not in str(err.value) and api.count() == 0


def test_the_graphql_url_of_the_same_host_is_used(api: FakeAPI) -> None:
    small_world(api)
    api.handler("/custom/graphql", api.routes[GRAPHQL])
    change = gather(api, GITHUB_GRAPHQL_URL=api.origin + "/custom/graphql")
    assert "unavailable" not in change
    assert "/custom/graphql" in api.paths() and GRAPHQL not in api.paths()


def test_a_wrong_api_mode_is_a_usage_error(api: FakeAPI) -> None:
    with pytest.raises(UsageError, match="POLICYENGINE_GITHUB_API"):
        gather(api, POLICYENGINE_GITHUB_API="soap")


def test_graphql_answers_are_kept_in_raw_without_the_token(api: FakeAPI) -> None:
    w = small_world(api)
    pr = w.pulls[42]
    api.handler(f"{w.base}/pulls/42", lambda req, _api: Reply(200, {**pr, "body": req.headers["Authorization"]}))
    g = gather_github(github_env(api, MERGE), environment="production", previous_deploys=StaticHistory(PREV))
    raw = g.raw["github/graphql_1.json"].decode()
    assert json.loads(raw)["data"]["repository"]["object"]["associatedPullRequests"]["nodes"][0]["number"] == 42
    assert TOKEN not in raw and "[REDACTED]" in raw
    assert all(r.headers.get("Authorization") == f"Bearer {TOKEN}" for r in api.requests)


# -- every query against GitHub's published schema ------------------------------------------------------------


def schema_or_skip() -> Any:
    """GitHub's schema (npm @octokit/graphql-schema, pinned by scripts/setup.sh test), or fail (CI=true) / skip."""
    ci = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
    try:
        import graphql
    except ImportError:
        graphql, why = None, "graphql-core (the test extra) is not installed"
    else:
        why = f"GitHub's GraphQL schema is missing ({SCHEMA.relative_to(REPO)}): run scripts/setup.sh test"
    if graphql is None or not SCHEMA.is_file():
        if ci:
            pytest.fail(why)
        pytest.skip(why)
    # assume_valid: the published introspection breaks a rule on deprecations that GitHub's server does not
    # enforce; the queries are still validated field by field against it.
    return graphql.build_client_schema(json.loads(SCHEMA.read_text(encoding="utf-8")), assume_valid=True)


@pytest.fixture(scope="module")
def github_schema() -> Any:
    return schema_or_skip()


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_every_query_is_valid_against_githubs_schema(github_schema: Any, name: str) -> None:
    from graphql import parse, validate

    errors = validate(github_schema, parse(QUERIES[name]))
    assert [e.message for e in errors] == []


def test_the_schema_check_catches_a_wrong_field(github_schema: Any) -> None:
    from graphql import parse, validate

    wrong = QUERIES["PolicyenginePull"].replace("headRefOid", "headSha")
    assert any("headSha" in e.message for e in validate(github_schema, parse(wrong)))


def test_the_fake_is_asked_only_the_validated_queries(api: FakeAPI) -> None:
    w = big_world(api, approvers=3)
    gather(api)
    assert {d["query"] for d in w.graphql.queries} <= set(QUERIES.values())
