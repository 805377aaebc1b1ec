"""Unexpected shapes from the code host: every answer the providers use is checked at the boundary.

A fuzz-ish table: for each endpoint the providers call, the fake API's answer is replaced by a
wrong shape (a string for an object, an object for a list, a list of strings, a number as a
string, null, a bool for an int, a huge int, a missing key...). The fact that endpoint feeds
must become ``unavailable`` (the rules needing it ``error``, exit 3): never an exception out of
the provider, never a silently skipped item, never ``allow``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fake_servers import FakeAPI, StaticHistory, github_env, gitlab_env, sha_of
from test_provider_github import (
    MERGE,
    PREV,
    reviewed_world,
    run_check,
    three_merged_prs,
)
from test_provider_gitlab import PREV as GL_PREV
from test_provider_gitlab import SQUASH, approved_mr

from policyengine.providers import http
from policyengine.providers.github import gather_github
from policyengine.providers.gitlab import gather_gitlab

MISSING = object()

WHOLE_LIST = {"string": "x", "object": {"message": "hi"}, "strings": ["a", "b"], "null": None, "number": 42,
              "nulls": [None], "lists": [[]]}
WHOLE_OBJECT = {"string": "x", "list": [{"a": 1}], "strings": ["a"], "null": None, "number": 42, "bool": True}
INT_BAD = {"number-as-string": "42abc", "digits-string": "42", "bool": True, "huge": 10**30, "negative": -1,
           "float": 4.5, "null": None, "missing": MISSING}
SHA_BAD = {"not-hex": "z" * 40, "number": 42, "empty": "", "null": None, "missing": MISSING, "short": "abc",
           "object": {"sha": "a" * 40}}
STR_BAD = {"number": 42, "bool": False, "object": {"a": 1}, "list": ["x"], "null": None, "missing": MISSING}
TIME_BAD = {"words": "yesterday", "number": 12345, "bad-date": "2026-13-45T00:00:00Z", "no-zone": "2026-11-20T10:00:00"}
OBJ_BAD = {"string": "x", "number": 42, "list": ["x"], "null": None, "missing": MISSING}
KINDS = {"int": INT_BAD, "sha": SHA_BAD, "str": STR_BAD, "time": TIME_BAD, "obj": OBJ_BAD}


@pytest.fixture(autouse=True)
def _no_real_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "SLEEP", lambda s: None)


def answer(api: FakeAPI, path: str) -> Any:
    """The fake API's current (first page) answer for ``path``."""
    from fake_servers import Request

    reply = api.routes[path](Request(api.prefix + path, {"per_page": ["100"]}, {}), api)
    return copy.deepcopy(reply.body)


def mutate(body: Any, where: tuple[Any, ...], value: Any) -> Any:
    out = copy.deepcopy(body)
    target = out
    for step in where[:-1]:
        target = target[step]
    if value is MISSING:
        del target[where[-1]]
    else:
        target[where[-1]] = value
    return out


# (endpoint, world, the fact it feeds, is the answer a list, [(field path, kind)])
GH_B = "/repos/acme/payments"
GITHUB: dict[str, tuple[str, str, str, bool, list[tuple[tuple[Any, ...], str]]]] = {
    "commit-pulls": (f"{GH_B}/commits/{MERGE}/pulls", "reviewed", "pull_request", True,
                     [((0, "number"), "int"), ((0, "head", "sha"), "sha")]),
    "pull": (f"{GH_B}/pulls/42", "reviewed", "pull_request", False,
             [(("number",), "int"), (("head", "sha"), "sha"), (("state",), "str"), (("merged_at",), "time"),
              (("labels",), "str"), (("commits",), "int")]),
    "reviews": (f"{GH_B}/pulls/42/reviews", "reviewed", "reviews", True,
                [((0, "state"), "str"), ((0, "submitted_at"), "time"), ((0, "user"), "str")]),
    "pr-commits": (f"{GH_B}/pulls/42/commits", "reviewed", "commits", True,
                   [((0, "sha"), "sha"), ((0, "commit"), "obj")]),
    "files": (f"{GH_B}/pulls/42/files", "reviewed", "files_changed", True, [((0, "filename"), "str")]),
    "check-runs": (f"{GH_B}/commits/{MERGE}/check-runs", "reviewed", "checks", False,
                   [(("check_runs",), "str"), (("check_runs", 0, "name"), "str"),
                    (("check_runs", 0, "head_sha"), "sha"), (("check_runs", 0, "status"), "str")]),
    "statuses": (f"{GH_B}/commits/{MERGE}/statuses", "reviewed", "checks", True,
                 [((0, "context"), "str"), ((0, "state"), "str"), ((0, "creator"), "obj")]),
    "team": ("/orgs/acme/teams/security/members", "reviewed", "teams", True, [((0, "login"), "str")]),
    "compare": (f"{GH_B}/compare/{PREV}...{MERGE}", "reviewed", "range", False,
                [(("commits",), "str"), (("commits", 0, "sha"), "sha"), (("status",), "str"),
                 (("total_commits",), "int"), (("files",), "str")]),
    "range-commit-pulls": (f"{GH_B}/commits/{sha_of('m40')}/pulls", "three", "range", True,
                           [((0, "number"), "int"), ((0, "head", "sha"), "sha")]),
}


def cases(table: dict[str, tuple[str, str, str, bool, list[tuple[tuple[Any, ...], str]]]]) -> list[Any]:
    out = []
    for name, (_, _, _, is_list, fields) in table.items():
        for variant in (WHOLE_LIST if is_list else WHOLE_OBJECT):
            out.append(pytest.param(name, ("whole", variant), id=f"{name}-whole-{variant}"))
        for where, kind in fields:
            for variant in KINDS[kind]:
                if kind == "str" and where[-1] in ("labels", "check_runs", "statuses", "commits", "files"):
                    if variant in ("list", "null", "missing"):
                        continue  # another list, or none: a shape these fields may have
                if where[-1] in ("merged_at", "submitted_at", "labels", "files", "total_commits", "commits",
                                 "head_sha", "user", "creator") and variant in ("null", "missing"):
                    continue  # optional fields: null or absent is a valid answer
                out.append(pytest.param(name, (where, variant),
                                        id=f"{name}-{'.'.join(map(str, where))}-{variant}"))
    return out


def unavailable_for(change: dict[str, Any], fact: str) -> str | None:
    """The cause recorded for ``fact`` (or for one of its parts, e.g. one team), if any."""
    causes = change.get("unavailable") or {}
    for key, cause in causes.items():
        if key == fact or key.startswith(fact + "/"):
            return str(cause)
    return None


def wrong(table: dict[str, Any], name: str, how: tuple[Any, str], api: FakeAPI) -> Any:
    path, _, _, is_list, _ = table[name]
    where, variant = how
    good = answer(api, path)
    if where == "whole":
        return (WHOLE_LIST if is_list else WHOLE_OBJECT)[variant]
    kind = next(k for w, k in table[name][4] if w == where)
    return mutate(good, where, KINDS[kind][variant])


@pytest.mark.parametrize("name, how", cases(GITHUB))
def test_github_wrong_shapes_make_the_fact_unavailable(name: str, how: tuple[Any, str]) -> None:
    path, world, fact, _, _ = GITHUB[name]
    with FakeAPI("/api/v3") as api:
        (three_merged_prs if world == "three" else reviewed_world)(api)
        api.json(path, wrong(GITHUB, name, how, api))
        # These fuzz the REST answers: the REST path (POLICYENGINE_GITHUB_API=rest, and the change range's
        # requests) reads them; tests/test_provider_github_graphql.py fuzzes the GraphQL answers.
        change = gather_github(github_env(api, MERGE, POLICYENGINE_TEAMS="acme/security",
                                          POLICYENGINE_GITHUB_API="rest"), environment="production",
                               previous_deploys=StaticHistory(PREV)).change
    cause = unavailable_for(change, fact)
    assert cause is not None, change.get("unavailable")
    assert "HTTP 200 but the answer" in cause or "unexpected shape" in cause, cause


GITLAB: dict[str, tuple[str, str, str, bool, list[tuple[tuple[Any, ...], str]]]] = {
    "commit-mrs": (f"/projects/278964/repository/commits/{SQUASH}/merge_requests", "mr", "pull_request", True,
                   [((0, "iid"), "int"), ((0, "sha"), "sha"), ((0, "state"), "str")]),
    "mr": ("/projects/278964/merge_requests/7", "mr", "pull_request", False,
           [(("iid",), "int"), (("sha",), "sha"), (("state",), "str"), (("labels",), "str")]),
    "approvals": ("/projects/278964/merge_requests/7/approvals", "mr", "reviews", False,
                  [(("approved_by",), "str"), (("approved_by", 0, "user"), "str")]),
    "mr-commits": ("/projects/278964/merge_requests/7/commits", "mr", "commits", True, [((0, "id"), "sha")]),
    "diffs": ("/projects/278964/merge_requests/7/diffs", "mr", "files_changed", True, [((0, "new_path"), "str")]),
    "jobs": ("/projects/278964/pipelines/61/jobs", "mr", "checks", True,
             [((0, "name"), "str"), ((0, "status"), "str"), ((0, "finished_at"), "time")]),
    "group": ("/groups/acme%2Fsecurity/members", "mr", "teams", True, [((0, "username"), "str")]),
    "compare": ("/projects/278964/repository/compare", "mr", "range", False,
                [(("commits",), "str"), (("commits", 0, "id"), "sha"), (("diffs",), "str")]),
}


@pytest.mark.parametrize("name, how", cases(GITLAB))
def test_gitlab_wrong_shapes_make_the_fact_unavailable(name: str, how: tuple[Any, str]) -> None:
    path, _, fact, _, _ = GITLAB[name]
    with FakeAPI("/api/v4") as api:
        approved_mr(api)
        api.json(path, wrong(GITLAB, name, how, api))
        change = gather_gitlab(gitlab_env(api, SQUASH, POLICYENGINE_TEAMS="acme/security"),
                               previous_deploys=StaticHistory(GL_PREV)).change
    if how == (("labels",), "list") or how == (("labels",), "null"):
        return
    cause = unavailable_for(change, fact)
    assert cause is not None, change.get("unavailable")


@pytest.mark.parametrize("provider, body", [
    ("github", ["a", "b"]), ("github", {"id": 1}), ("github", [{"id": True, "sha": PREV}]),
    ("github", [{"id": 8, "sha": "not-a-sha"}]), ("gitlab", ["a"]), ("gitlab", [{"id": "12", "sha": GL_PREV}]),
])
def test_wrong_deployments_only_lose_the_corroboration(provider: str, body: Any) -> None:
    """The deployments API only corroborates the verified previous deploy: a wrong answer is a note."""
    if provider == "github":
        with FakeAPI("/api/v3") as api:
            reviewed_world(api)
            api.json(f"{GH_B}/deployments", body)
            change = gather_github(github_env(api, MERGE), environment="production",
                                   previous_deploys=StaticHistory(PREV)).change
        prev = PREV
    else:
        with FakeAPI("/api/v4") as api:
            approved_mr(api)
            api.json("/projects/278964/deployments", body)
            change = gather_gitlab(gitlab_env(api, SQUASH), previous_deploys=StaticHistory(GL_PREV)).change
        prev = GL_PREV
    assert change["range"]["previous_commit"] == prev
    assert any("could not corroborate" in n and "unexpected shape" in n for n in change["notes"]), change["notes"]


CLI_CASES: list[tuple[str, str, Callable[[FakeAPI], None], Any]] = [
    ("github", "pull number 42abc", lambda api: api.json(f"{GH_B}/pulls/42", {**answer(api, f"{GH_B}/pulls/42"),
                                                                              "number": "42abc"}), None),
    ("github", "pull number true", lambda api: api.json(f"{GH_B}/pulls/42", {**answer(api, f"{GH_B}/pulls/42"),
                                                                             "number": True}), None),
    ("github", "reviews null", lambda api: api.json(f"{GH_B}/pulls/42/reviews", None), None),
    ("github", "commit pulls of strings", lambda api: api.json(f"{GH_B}/commits/{MERGE}/pulls", ["42"]), None),
    ("github", "check runs list", lambda api: api.json(f"{GH_B}/commits/{MERGE}/check-runs", [{"name": "build"}]),
     None),
    # The range's files become unknown, so the infra/** rule applies (and fails): a deny, never an allow.
    ("github", "compare string", lambda api: api.json(f"{GH_B}/compare/{PREV}...{MERGE}", "x"), 1),
    ("gitlab", "mr iid string", lambda api: api.json("/projects/278964/merge_requests/7",
                                                     {**answer(api, "/projects/278964/merge_requests/7"),
                                                      "iid": "7"}), None),
    ("gitlab", "jobs object", lambda api: api.json("/projects/278964/pipelines/61/jobs", {"jobs": []}), None),
    ("gitlab", "approvals huge", lambda api: api.json("/projects/278964/merge_requests/7/approvals",
                                                      {"approved_by": [{"user": {"username": 10**30}}]}), None),
]


@pytest.mark.parametrize("provider, what, breaks, code", CLI_CASES, ids=[c[1] for c in CLI_CASES])
def test_wrong_shapes_end_in_exit_3_never_allow_or_a_traceback(
        provider: str, what: str, breaks: Callable[[FakeAPI], None], code: Any,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with FakeAPI("/api/v3" if provider == "github" else "/api/v4") as api:
        if provider == "github":
            reviewed_world(api)
            env, prev = github_env(api, MERGE, POLICYENGINE_GITHUB_API="rest"), PREV
        else:
            approved_mr(api)
            env, prev = gitlab_env(api, SQUASH), GL_PREV
        breaks(api)
        run = run_check(monkeypatch, capsys, tmp_path, env, provider=provider, previous=prev)
    assert run.code == (code or 3), run.out + run.err
    assert run.decision is not None and run.decision["decision"] == "deny"
    assert "Traceback" not in run.err
