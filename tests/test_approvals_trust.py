"""approvals: who may approve (write access, bots, deleted users), that the deployed commit is the
approved one, and that a missing fact is an error, never a pass. Judged from changes built in
memory; the providers' side is in test_provider_github.py / test_provider_gitlab.py."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import HEAD, OLD, change, review, run_rule

from policyengine.models import Status
from policyengine.rules.approvals import ApprovalsRule

ONE = {"min_approvals": 1}
TWO = {"min_approvals": 2}
MERGE = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"
SQUASH = "1a1b2c3d4e5f60718293a4b5c6d7e8f901234567"
OTHER = "2a1b2c3d4e5f60718293a4b5c6d7e8f901234567"


def rv(user: str, **extra: Any) -> dict[str, Any]:
    return {**review(user), **extra}


def reasons(out: Any) -> dict[str, str]:
    return {d["user"]: d["reason"] for d in out.details["not_counted"]}


# -- approvals from anyone ----------------------------------------------------------------------


@pytest.mark.parametrize("permission", ["read", "triage", "none"])
def test_approval_without_write_access_is_not_counted(permission: str) -> None:
    out = run_rule(ApprovalsRule, ONE, change(reviews=[rv("bob", permission=permission)]))
    assert out.status is Status.FAIL
    assert reasons(out) == {"bob": f"no write access ({permission})"}
    assert f"bob (no write access ({permission}))" in out.message


@pytest.mark.parametrize("permission", ["write", "maintain", "admin"])
def test_approval_with_write_access_counts(permission: str) -> None:
    out = run_rule(ApprovalsRule, ONE, change(reviews=[rv("bob", permission=permission)], facts_source="github"))
    assert out.status is Status.PASS and out.details["counted"] == ["bob"]


@pytest.mark.parametrize("association, reason", [
    ("NONE", "no write access (no association with the repository)"),
    ("FIRST_TIMER", "first-time contributor"),
    ("FIRST_TIME_CONTRIBUTOR", "first-time contributor"),
    ("MANNEQUIN", "mannequin (an imported placeholder, not a person)"),
])
def test_association_excludes_without_a_lookup(association: str, reason: str) -> None:
    # Even a recorded write permission does not override GitHub's association.
    out = run_rule(ApprovalsRule, ONE, change(reviews=[rv("bob", association=association, permission="write")]))
    assert out.status is Status.FAIL
    assert reasons(out) == {"bob": reason}


@pytest.mark.parametrize("bot", [rv("github-actions[bot]"), rv("Renovate[BOT]"), rv("deploy-robot", bot=True),
                                 rv("project_278964_bot_3f2a", bot=True)])
def test_bot_approval_is_not_counted(bot: dict[str, Any]) -> None:
    out = run_rule(ApprovalsRule, ONE, change(reviews=[bot]))
    assert out.status is Status.FAIL
    assert reasons(out) == {bot["user"]: "bot not allowed by the policy"}


def test_bot_named_by_the_policy_counts_without_a_lookup() -> None:
    params = {"min_approvals": 1, "allow_bots": ["renovate[bot]"]}
    c = change(reviews=[rv("Renovate[bot]", bot=True)], facts_source="github")
    out = run_rule(ApprovalsRule, params, c)
    assert out.status is Status.PASS and out.details["counted"] == ["Renovate[bot]"]
    # Another bot is still not counted.
    out = run_rule(ApprovalsRule, params, change(reviews=[rv("github-actions[bot]", bot=True)]))
    assert out.status is Status.FAIL


@pytest.mark.parametrize("deleted", [rv("ghost"), rv("Ghost", permission="write"), rv("someone", deleted=True)])
def test_deleted_user_never_counts(deleted: dict[str, Any]) -> None:
    out = run_rule(ApprovalsRule, ONE, change(reviews=[deleted]))
    assert out.status is Status.FAIL
    assert reasons(out) == {deleted["user"]: "deleted user"}


def test_failed_permission_lookup_is_an_error_when_the_approval_is_needed() -> None:
    cause = "GET /repos/acme/payments/collaborators/bob/permission: HTTP 502 Bad Gateway (4 attempts)"
    c = change(reviews=[rv("bob", permission=None, permission_error=cause), rv("carol", permission="write")],
               facts_source="github")
    out = run_rule(ApprovalsRule, TWO, c)
    assert out.status is Status.ERROR
    assert out.message.startswith("approvals cannot be judged: the write access of bob could not be looked up")
    assert reasons(out) == {"bob": f"write access unknown: {cause}"}
    assert out.details["counted"] == ["carol"]
    # Not needed: the known approvals suffice, so it passes on them alone.
    assert run_rule(ApprovalsRule, ONE, c).status is Status.PASS
    # Could not pass even with it: a plain fail.
    assert run_rule(ApprovalsRule, {"min_approvals": 3}, c).status is Status.FAIL


def test_provider_approval_without_a_permission_is_unknown_not_counted() -> None:
    c = change(reviews=[rv("bob")], facts_source="gitlab")
    out = run_rule(ApprovalsRule, ONE, c)
    assert out.status is Status.ERROR
    assert "write access unknown" in reasons(out)["bob"]


def test_self_declared_approval_without_permission_counts() -> None:
    out = run_rule(ApprovalsRule, ONE, change(reviews=[rv("bob")], facts_source="self-declared"))
    assert out.status is Status.PASS


def test_range_counts_only_eligible_approvers() -> None:
    rng = {"previous_commit": OLD, "commits": [{"sha": HEAD, "pull_request": 41}],
           "pull_requests": [{"number": 41, "author": "mallory", "head_commit": HEAD, "committers": ["mallory"],
                              "reviews": [rv("github-actions[bot]", bot=True), rv("eve", permission="read")]}]}
    params = {"min_approvals": 1, "cover_range": True}
    out = run_rule(ApprovalsRule, params, change(reviews=[rv("bob", permission="write")], range=rng))
    assert out.status is Status.FAIL
    assert "#41 by mallory has 0 of 1 approvals" in out.message


# -- the deployed commit must be the approved one -----------------------------------------------


@pytest.mark.parametrize("rcc", [True, False])
def test_deployed_commit_that_is_not_the_approved_head_fails(rcc: bool) -> None:
    c = change(commit=OLD, reviews=[rv("bob"), rv("carol")])
    out = run_rule(ApprovalsRule, {**TWO, "require_current_commit": rcc}, c)
    assert out.status is Status.FAIL
    assert out.message.startswith(f"deployed commit {OLD[:7]} is not the approved head ({HEAD[:7]}) of pull "
                                  "request #42 nor the commit that merged it (no merge commit recorded)")


def test_deployed_commit_unrelated_to_a_merged_request_fails() -> None:
    pr = {"number": 42, "author": "alice", "head_commit": HEAD, "merge_commit": MERGE, "squash_commit": SQUASH}
    out = run_rule(ApprovalsRule, ONE, change(commit=OTHER, pull_request=pr, reviews=[rv("bob")]))
    assert out.status is Status.FAIL
    assert f"merge commit {MERGE[:7]}, squash commit {SQUASH[:7]}" in out.message


@pytest.mark.parametrize("deployed", [HEAD, MERGE, SQUASH, HEAD.upper()])
def test_head_merge_or_squash_commit_may_be_deployed(deployed: str) -> None:
    pr = {"number": 42, "author": "alice", "head_commit": HEAD, "merge_commit": MERGE, "squash_commit": SQUASH}
    out = run_rule(ApprovalsRule, {**ONE, "require_current_commit": True},
                   change(commit=deployed, pull_request=pr, reviews=[rv("bob")]))
    assert out.status is Status.PASS, out.message


@pytest.mark.parametrize("head", [None, "", "  "])
def test_unrecorded_head_commit_is_an_error(head: str | None) -> None:
    pr: dict[str, Any] = {"number": 42, "author": "alice"}
    if head is not None:
        pr["head_commit"] = head
    out = run_rule(ApprovalsRule, ONE, change(pull_request=pr, reviews=[rv("bob")]))
    assert out.status is Status.ERROR
    assert "head commit of pull request #42 is not recorded" in out.message


# -- missing facts are errors -------------------------------------------------------------------


EXCL = {"min_approvals": 1, "exclude": ["committers"]}


@pytest.mark.parametrize("commits", [[], None, "absent"])
def test_excluding_committers_without_commits_is_an_error(commits: Any) -> None:
    c = change(reviews=[rv("bob")])
    if commits == "absent":
        del c["commits"]
    else:
        c["commits"] = commits
    out = run_rule(ApprovalsRule, EXCL, c)
    assert out.status is Status.ERROR
    assert "the change lists no commits, so the committers cannot be excluded" in out.message


@pytest.mark.parametrize("role", ["author", "committer"])
@pytest.mark.parametrize("blank", [None, "", "   "])
def test_commit_without_author_or_committer_is_an_error(role: str, blank: str | None) -> None:
    commit: dict[str, Any] = {"sha": HEAD, "author": "alice", "committer": "alice"}
    commit[role] = blank
    out = run_rule(ApprovalsRule, EXCL, change(commits=[commit], reviews=[rv("bob")]))
    assert out.status is Status.ERROR
    assert f"commit {HEAD[:7]} has no {role} recorded" in out.message


@pytest.mark.parametrize("deployer", ["", "   ", "\t"])
def test_blank_deployer_is_an_error_when_excluded(deployer: str) -> None:
    out = run_rule(ApprovalsRule, {"min_approvals": 1, "exclude": ["deployer"]},
                   change(deployer=deployer, reviews=[rv("bob")]))
    assert out.status is Status.ERROR
    assert "the deployer is unknown" in out.message


def test_blank_author_is_an_error_when_excluded() -> None:
    pr = {"number": 42, "author": "  ", "head_commit": HEAD}
    out = run_rule(ApprovalsRule, {"min_approvals": 1, "exclude": ["author"]},
                   change(pull_request=pr, reviews=[rv("bob")]))
    assert out.status is Status.ERROR
    assert "author of pull request #42 is unknown" in out.message


@pytest.mark.parametrize("stamp", ["yesterday", "2026-11-23T17:00:00", "2026-13-40T00:00:00Z", "17:00"])
def test_unreadable_review_time_is_an_error_not_an_ignored_request_for_changes(stamp: str) -> None:
    reviews = [review("bob", at="2026-11-23T15:00:00Z"), review("bob", "changes_requested", at=stamp)]
    out = run_rule(ApprovalsRule, ONE, change(reviews=reviews))
    assert out.status is Status.ERROR
    assert "the order of reviews is unknown" in out.message and repr(stamp) in out.message


def test_unreadable_review_time_in_the_range_fails() -> None:
    rng = {"previous_commit": OLD, "commits": [{"sha": HEAD, "pull_request": 41}],
           "pull_requests": [{"number": 41, "author": "mallory", "head_commit": HEAD, "committers": ["mallory"],
                              "reviews": [review("bob"), review("bob", "changes_requested", at="later")]}]}
    out = run_rule(ApprovalsRule, {"min_approvals": 1, "cover_range": True}, change(reviews=[rv("bob")], range=rng))
    assert out.status is Status.FAIL
    assert "#41: the order of its reviews is unknown" in out.message


def test_range_request_without_committers_cannot_pass_when_they_are_excluded() -> None:
    rng = {"previous_commit": OLD, "commits": [{"sha": HEAD, "pull_request": 41}],
           "pull_requests": [{"number": 41, "author": "mallory", "head_commit": HEAD, "committers": [],
                              "reviews": [review("bob")]}]}
    out = run_rule(ApprovalsRule, {**EXCL, "cover_range": True}, change(reviews=[rv("bob")], range=rng))
    assert out.status is Status.FAIL
    assert "#41: its committers are unknown" in out.message
