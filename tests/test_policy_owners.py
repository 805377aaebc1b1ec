"""The policy owners' approval: an implicit, unwaivable rule over every request of the change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import HEAD, OLD, change, review

from policyengine.facts import Facts, PipelineFact, PipelineRequest
from policyengine.models import Status
from policyengine.language.policy import parse_policy
from policyengine.rules.base import Context

POLICY = b"""version: 1
name: prod
policy_owners: {users: [carol], teams: [security], guard: [policies/waivers.yml]}
rules:
  - id: peer-review
    type: approvals
    min_approvals: 1
    exclude: [author]
"""


def facts(ch: dict[str, Any]) -> Facts:
    """The facts the gate gathers for the rule: the change, and the guarded pipeline files (none more)."""
    return Facts(change=ch, answers={PipelineRequest(): PipelineFact(source="git")})


def judge(ch: dict[str, Any], file: str = "policies/prod.yml") -> Any:
    from helpers import NOW

    policy = parse_policy(POLICY, file=file)
    [owners] = [r for r in __import__("policyengine.language.policy", fromlist=["build_rules"]).build_rules(policy)
                if r.spec.id == "policy-owners"]
    return owners.evaluate(Context(change=ch, facts=facts(ch), now=NOW))


def test_the_rule_is_added_with_its_own_id_and_guards_the_policy_itself() -> None:
    policy = parse_policy(POLICY, file="policies/prod.yml")
    assert [r.id for r in policy.rules] == ["peer-review", "policy-owners"]
    guard = policy.rules[-1].params["guard"]
    assert guard[:1] == ["policies/prod.yml"]
    assert {".github/workflows/**", ".gitlab-ci.yml", "CODEOWNERS", "policies/waivers.yml"} <= set(guard)
    assert parse_policy(POLICY, file="git:origin/main:policies/prod.yml").rules[-1].params["guard"][0] == \
        "policies/prod.yml"


def test_a_user_rule_may_not_take_the_reserved_id() -> None:
    from policyengine.errors import InvalidInputError

    with pytest.raises(InvalidInputError) as info:
        parse_policy(POLICY.replace(b"id: peer-review", b"id: policy-owners"), file="p.yml")
    assert "reserved" in str(info.value.problems[0])


@pytest.mark.parametrize("touched", ["policies/prod.yml", ".github/workflows/deploy.yml", ".gitlab-ci.yml",
                                     "CODEOWNERS", "policies/waivers.yml"])
def test_a_guarded_file_needs_an_owner(touched: str) -> None:
    out = judge(change(files_changed=["src/a.py", touched], reviews=[review("bob")]))
    assert out.status is Status.FAIL
    assert touched in out.message and "policy owner" in out.message
    assert judge(change(files_changed=[touched], reviews=[review("carol")])).status is Status.PASS
    assert judge(change(files_changed=[touched], reviews=[review("frank")])).status is Status.PASS  # team security


def test_the_owner_cannot_approve_their_own_change_nor_an_old_commit() -> None:
    own = change(files_changed=["policies/prod.yml"], reviews=[review("carol")],
                 pull_request={"number": 42, "author": "carol", "head_commit": HEAD})
    assert judge(own).status is Status.FAIL
    assert judge(change(files_changed=["policies/prod.yml"], reviews=[review("carol", commit=OLD)])).status \
        is Status.FAIL


def test_no_guarded_file_passes_and_an_unknown_file_list_needs_an_owner() -> None:
    assert judge(change(files_changed=["src/a.py"])).status is Status.PASS
    unknown = change(reviews=[review("bob")])
    unknown.pop("files_changed")
    assert judge(unknown).status is Status.FAIL
    unavailable = change(files_changed=["src/a.py"], unavailable={"files_changed": "HTTP 500"})
    assert judge(unavailable).status is Status.FAIL


def _range_pr(number: int, author: str, files: list[str] | None, reviewers: list[str]) -> dict[str, Any]:
    pr: dict[str, Any] = {"number": number, "author": author, "head_commit": OLD, "committers": [author],
                          "reviews": [review(r, commit=OLD) for r in reviewers]}
    if files is not None:
        pr["files"] = files
    return pr


def test_each_request_of_the_range_needs_its_own_owner_approval() -> None:
    rng = {"previous_commit": "1" * 40, "commits": [{"sha": OLD, "pull_request": 40}, {"sha": HEAD, "pull_request": 42}],
           "pull_requests": [_range_pr(40, "mallory", [".github/workflows/x.yml"], ["bob"])]}
    ch = change(files_changed=["src/a.py"], range=rng)
    out = judge(ch)
    assert out.status is Status.FAIL and "#40" in out.message
    rng["pull_requests"] = [_range_pr(40, "mallory", [".github/workflows/x.yml"], ["carol"])]
    assert judge(change(files_changed=["src/a.py"], range=rng)).status is Status.PASS
    rng["pull_requests"] = [_range_pr(40, "mallory", None, ["bob"])]  # file list unknown
    assert judge(change(files_changed=["src/a.py"], range=rng)).status is Status.FAIL


def test_a_direct_push_in_the_range_cannot_be_approved() -> None:
    rng = {"previous_commit": "1" * 40, "commits": [{"sha": OLD, "pull_request": None}, {"sha": HEAD, "pull_request": 42}],
           "pull_requests": []}
    out = judge(change(files_changed=["src/a.py"], range=rng))
    assert out.status is Status.FAIL and "without a pull request" in out.message


def test_teams_that_cannot_be_read_are_an_error() -> None:
    ch = change(files_changed=["CODEOWNERS"], reviews=[review("frank")], unavailable={"teams": "HTTP 403"})
    assert judge(ch).status in (Status.ERROR, Status.FAIL)
    assert judge(ch).status is not Status.PASS


# -- the bases a policy extends are guarded too ---------------------------------------------------

BASE_POLICY = b"""version: 1
name: org-base
policy_owners: {users: [carol]}
rules:
  - id: peer-review
    type: approvals
    min_approvals: 1
    exclude: [author]
"""


def _owners_rule_of(policy: Any) -> Any:
    from policyengine.language.policy import build_rules

    return next(r for r in build_rules(policy) if r.spec.id == "policy-owners")


def _extending(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extends: str = "base.yml") -> Any:
    from policyengine.language.policysource import load

    (tmp_path / "policies" / "org").mkdir(parents=True)
    (tmp_path / "policies" / "base.yml").write_bytes(BASE_POLICY)
    (tmp_path / "policies" / "org" / "root.yml").write_bytes(BASE_POLICY.replace(b"org-base", b"org-root"))
    (tmp_path / "policies" / "prod.yml").write_text(
        f"version: 1\nname: prod\nextends: {extends}\nrules:\n  - id: peer-review\n    min_approvals: 2\n")
    monkeypatch.chdir(tmp_path)
    return load("policies/prod.yml")


def test_a_change_to_the_base_a_policy_extends_needs_an_owner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = _extending(tmp_path, monkeypatch)
    rule = _owners_rule_of(policy)
    assert {"policies/prod.yml", "policies/base.yml"} <= set(rule.params["guard"])
    ch = change(files_changed=["policies/base.yml"], reviews=[review("bob")])
    out = rule.evaluate(Context(change=ch, facts=facts(ch), now=__import__("helpers").NOW))
    assert out.status is Status.FAIL and "policies/base.yml" in out.message
    ok = change(files_changed=["policies/base.yml"], reviews=[review("carol")])
    assert rule.evaluate(Context(change=ok, facts=facts(ok), now=__import__("helpers").NOW)).status \
        is Status.PASS


def test_every_base_of_a_chain_is_guarded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from policyengine.language.policysource import load

    policy = _extending(tmp_path, monkeypatch)
    (tmp_path / "policies" / "base.yml").write_bytes(b"extends: org/root.yml\n" + BASE_POLICY.replace(
        b"min_approvals: 1", b"min_approvals: 2"))
    policy = load("policies/prod.yml")
    assert {"policies/base.yml", "policies/org/root.yml"} <= set(_owners_rule_of(policy).params["guard"])


def test_a_base_from_git_is_guarded_by_its_path_and_one_from_another_repository_is_not() -> None:
    base = parse_policy(BASE_POLICY, file="git:" + "a" * 40 + ":policies/base.yml")
    ext = b"version: 1\nname: prod\nextends: base.yml\nrules: []\n"
    policy = parse_policy(ext, file="git:origin/main:policies/prod.yml", base=base)
    assert "policies/base.yml" in _owners_rule_of(policy).params["guard"]
    other = parse_policy(BASE_POLICY, file="git+https://git.example.com/org/policies.git#main:base.yml")
    policy = parse_policy(ext, file="policies/prod.yml", base=other)
    guard = _owners_rule_of(policy).params["guard"]
    assert "base.yml" not in guard and not any("example.com" in g for g in guard)
