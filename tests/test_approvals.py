"""approvals: segregation of duties, staleness, latest review wins, teams."""

from __future__ import annotations

from helpers import HEAD, OLD, change, review, run_rule

from policyengine.models import Status
from policyengine.rules.approvals import ApprovalsRule

SOD = {"min_approvals": 2, "exclude": ["author", "committers", "deployer"], "require_current_commit": True}


def test_two_independent_current_approvals_pass() -> None:
    out = run_rule(ApprovalsRule, SOD, change(reviews=[review("bob"), review("carol"), review("erin", commit=OLD)]))
    assert out.status is Status.PASS
    assert out.details["counted"] == ["bob", "carol"]
    assert out.details["not_counted"] == [{"user": "erin", "reason": "approved 5e4d3c2, not the current commit 9f1c2d3 (stale)"}]
    assert "erin (approved 5e4d3c2, not the current commit 9f1c2d3 (stale))" in out.message


def test_stale_approval_counts_without_require_current_commit() -> None:
    params = {**SOD, "require_current_commit": False}
    out = run_rule(ApprovalsRule, params, change(reviews=[review("bob"), review("erin", commit=OLD)]))
    assert out.status is Status.PASS


def test_author_committer_and_deployer_excluded_case_insensitively() -> None:
    c = change(
        commits=[{"sha": HEAD, "author": "alice", "committer": "Web-Flow", "co_authors": ["zed"]}],
        reviews=[review("ALICE"), review("dana"), review("web-flow"), review("Zed"), review("bob")],
    )
    out = run_rule(ApprovalsRule, SOD, c)
    assert out.status is Status.FAIL
    reasons = {d["user"]: d["reason"] for d in out.details["not_counted"]}
    assert reasons == {
        "ALICE": "author of the pull request, author of commit 9f1c2d3",
        "dana": "deployer",
        "web-flow": "committer of commit 9f1c2d3",
        "Zed": "co-author of commit 9f1c2d3",
    }
    assert out.details["counted"] == ["bob"]
    assert out.message.startswith("1 of 2 required approvals (bob)")


def test_each_person_counts_once() -> None:
    out = run_rule(ApprovalsRule, SOD, change(reviews=[review("bob"), review("Bob", at="2026-11-23T16:00:00Z")]))
    assert out.status is Status.FAIL
    assert out.details["counted"] == ["Bob"]


def test_latest_review_wins_changes_requested_after_approval() -> None:
    reviews = [review("bob", at="2026-11-23T15:00:00Z"), review("carol"),
               review("bob", "changes_requested", at="2026-11-23T17:00:00Z")]
    out = run_rule(ApprovalsRule, SOD, change(reviews=reviews))
    assert out.status is Status.FAIL
    assert {"user": "bob", "reason": "latest review is changes requested"} in out.details["not_counted"]


def test_latest_by_time_not_list_order() -> None:
    # The approval is listed last but was given earlier than the request for changes.
    reviews = [review("bob", "changes_requested", at="2026-11-23T17:00:00Z"), review("carol"),
               review("bob", at="2026-11-23T15:00:00Z")]
    out = run_rule(ApprovalsRule, SOD, change(reviews=reviews))
    assert out.status is Status.FAIL
    # ... and an approval after changes were requested counts again.
    reviews[2] = review("bob", at="2026-11-23T18:00:00Z")
    assert run_rule(ApprovalsRule, SOD, change(reviews=reviews)).status is Status.PASS


def test_comment_after_approval_keeps_it_dismissal_removes_it() -> None:
    base = [review("bob"), review("carol")]
    commented = base + [review("bob", "COMMENTED", at="2026-11-23T19:00:00Z")]
    assert run_rule(ApprovalsRule, SOD, change(reviews=commented)).status is Status.PASS
    dismissed = base + [review("bob", "DISMISSED", at="2026-11-23T19:00:00Z")]
    assert run_rule(ApprovalsRule, SOD, change(reviews=dismissed)).status is Status.FAIL


def test_no_pull_request_fails_with_reason() -> None:
    out = run_rule(ApprovalsRule, SOD, change(pull_request=None, reviews=[review("bob"), review("carol")]))
    assert out.status is Status.FAIL
    assert "without a reviewed pull request" in out.message


def test_unknown_deployer_is_an_error_when_excluded() -> None:
    out = run_rule(ApprovalsRule, SOD, change(deployer=None, reviews=[review("bob"), review("carol")]))
    assert out.status is Status.ERROR
    assert "deployer is unknown" in out.message


def test_from_teams_only_members_count() -> None:
    params = {"min_approvals": 1, "from_teams": ["security"]}
    out = run_rule(ApprovalsRule, params, change(reviews=[review("bob")]))
    assert out.status is Status.FAIL
    assert out.details["not_counted"] == [{"user": "bob", "reason": "not in team security"}]
    assert run_rule(ApprovalsRule, params, change(reviews=[review("Gina")])).status is Status.PASS


def test_from_users_or_teams() -> None:
    params = {"min_approvals": 2, "from_teams": ["security"], "from_users": ["bob"]}
    out = run_rule(ApprovalsRule, params, change(reviews=[review("bob"), review("frank"), review("carol")]))
    assert out.status is Status.PASS
    assert out.details["counted"] == ["bob", "frank"]


def test_unknown_team_is_an_error_not_a_pass() -> None:
    params = {"min_approvals": 1, "from_teams": ["sre"]}
    out = run_rule(ApprovalsRule, params, change(reviews=[review("bob")]))
    assert out.status is Status.ERROR
    assert "sre" in out.message


def test_approval_without_commit_is_stale_when_current_required() -> None:
    r = review("bob")
    r["commit"] = None
    out = run_rule(ApprovalsRule, {"min_approvals": 1, "require_current_commit": True}, change(reviews=[r]))
    assert out.status is Status.FAIL


def test_unavailable_facts_make_the_rule_error_naming_the_cause() -> None:
    c = change(reviews=[review("bob"), review("carol")],
               unavailable={"reviews": "GET /repos/acme/payments/pulls/42/reviews: HTTP 502"})
    out = run_rule(ApprovalsRule, SOD, c)
    assert out.status is Status.ERROR
    assert "HTTP 502" in out.message


def test_every_role_of_an_excluded_person_is_named() -> None:
    c = change(deployer="alice", reviews=[review("alice")])
    out = run_rule(ApprovalsRule, SOD, c)
    reason = out.details["not_counted"][0]["reason"]
    assert reason == "deployer, author of the pull request, author of 2 commits, committer of 2 commits"
