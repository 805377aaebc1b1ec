"""checks_passed counts a check only from the creator expected to report it (issue 16).

A step holding ``statuses: write`` (or an app installed on the repository) can report a check
of any name. By default a check run counts only from the platform's own CI app
(``github-actions``; GitLab: the pipeline's own jobs), a commit status from any creator, and
``policyengine/...`` (the gate's witness status) never; ``creators:`` replaces that set.
"""

from __future__ import annotations

from typing import Any

from helpers import HEAD, change, run_rule

from policyengine.models import Status
from policyengine.rules.checks_passed import ChecksPassedRule


def run(name: str, status: str = "success", app: str | None = "github-actions",
        at: str | None = "2026-11-23T16:00:00Z") -> dict[str, Any]:
    """A GitHub check run as the provider records it."""
    return {"name": name, "status": status, "commit": HEAD, "completed_at": at, "url": None,
            "kind": "check_run", "creator": app}


def status(name: str, state: str = "success", creator: str | None = "jenkins-bot",
           at: str = "2026-11-23T17:00:00Z") -> dict[str, Any]:
    """A GitHub commit status as the provider records it."""
    return {"name": name, "status": state, "commit": HEAD, "completed_at": at, "url": None,
            "kind": "status", "creator": creator}


def job(name: str, state: str = "success") -> dict[str, Any]:
    """A GitLab pipeline job as the provider records it."""
    return {"name": name, "status": state, "commit": HEAD, "completed_at": "2026-11-23T16:00:00Z", "url": None,
            "kind": "job", "creator": "gitlab"}


def judge(checks: list[dict[str, Any]], source: str | None = "github", **params: Any) -> Any:
    c = change(checks=checks)
    if source:
        c["facts_source"] = source
    return run_rule(ChecksPassedRule, {"checks": ["build"], **params}, c)


def test_check_run_of_the_platforms_app_counts() -> None:
    out = judge([run("build")])
    assert out.status is Status.PASS
    assert out.details["checks"]["build"]["creator"] == "github-actions"


def test_check_run_from_another_app_does_not_count() -> None:
    out = judge([run("build", app="evil-app")])
    assert out.status is Status.FAIL
    assert ("build: reported only by an unexpected creator (check run by app evil-app); "
            "to count it, list that creator in the rule's creators: (the list replaces the default set)") in out.message
    assert out.details["checks"]["build"]["not_counted"] == [
        {"kind": "check_run", "creator": "evil-app", "status": "success", "reason": "unexpected creator"}]


def test_other_apps_success_does_not_hide_the_platforms_failure() -> None:
    assert judge([run("build", "failure"), run("build", app="evil-app", at="2026-11-23T18:00:00Z")]).status \
        is Status.FAIL


def test_a_status_of_the_same_name_does_not_override_the_check_run() -> None:
    # A step holding statuses: write posts `build: success` after the real build failed.
    forged = status("build", creator="github-actions[bot]", at="2026-11-23T18:00:00Z")
    out = judge([run("build", "failure"), forged])
    assert out.status is Status.FAIL
    assert "build: failure" in out.message
    assert judge([run("build", "pending", at=None), forged]).status is Status.FAIL


def test_status_from_any_creator_counts_by_default() -> None:
    assert judge([status("build", creator="jenkins-bot")]).status is Status.PASS
    assert judge([status("build", creator=None)]).status is Status.PASS  # a deleted account: any creator


def test_witness_context_is_never_a_check() -> None:
    witness = status("policyengine/production", creator="policyengine-witness[bot]")
    out = run_rule(ChecksPassedRule, {"checks": ["policyengine/production"]},
                   {**change(checks=[witness]), "facts_source": "github"})
    assert out.status is Status.FAIL
    assert "policyengine/production: the policyengine/ prefix is reserved for the gate's witness status" in out.message
    named = run_rule(ChecksPassedRule, {"checks": ["policyengine/production"],
                                        "creators": ["policyengine-witness[bot]"]},
                     {**change(checks=[witness]), "facts_source": "github"})
    assert named.status is Status.FAIL
    # ... also in a change file, and as a check run
    hand = run_rule(ChecksPassedRule, {"checks": ["policyengine/production"]},
                    change(checks=[{"name": "policyengine/production", "status": "success", "commit": HEAD}]))
    assert hand.status is Status.FAIL


def test_creators_allow_a_named_app() -> None:
    assert judge([run("build", app="circleci-checks")], creators=["circleci-checks"]).status is Status.PASS
    assert judge([run("build", app="CircleCI-Checks")], creators=["circleci-checks"]).status is Status.PASS


def test_creators_replace_the_default_set() -> None:
    # github-actions is no longer trusted unless listed ...
    out = judge([run("build")], creators=["circleci-checks"])
    assert out.status is Status.FAIL and "check run by app github-actions" in out.message
    # ... and statuses count only from the listed logins.
    assert judge([status("build", creator="mallory")], creators=["jenkins-bot"]).status is Status.FAIL
    assert judge([status("build", creator="jenkins-bot")], creators=["jenkins-bot"]).status is Status.PASS
    assert judge([status("build", creator=None)], creators=["jenkins-bot"]).status is Status.FAIL
    # an unexpected creator's failure later than the expected one's success does not matter
    assert judge([status("build", creator="jenkins-bot"),
                  status("build", "failure", creator="mallory", at="2026-11-23T19:00:00Z")],
                 creators=["jenkins-bot"]).status is Status.PASS


def test_gitlab_jobs_are_the_platforms_own() -> None:
    assert judge([job("build")], source="gitlab").status is Status.PASS
    assert judge([job("build")], source="gitlab", creators=["jenkins-bot"]).status is Status.FAIL
    assert judge([job("build")], source="gitlab", creators=["gitlab"]).status is Status.PASS


def test_change_file_without_creators_counts_unless_the_policy_names_creators() -> None:
    hand = {"name": "build", "status": "success", "commit": HEAD}
    assert judge([hand], source="self-declared").status is Status.PASS
    assert judge([hand], source=None).status is Status.PASS
    out = judge([hand], source="self-declared", creators=["github-actions"])
    assert out.status is Status.FAIL
    assert "build: reported only by an unexpected creator (no creator recorded)" in out.message
    # a change file may state the creator (self-declared, like the rest of the file)
    assert judge([run("build")], source="self-declared", creators=["github-actions"]).status is Status.PASS


def test_a_bundle_recorded_before_creators_replays_as_it_was_judged_unless_the_policy_names_creators() -> None:
    # A change read from GitHub before the providers recorded creators has checks with neither a
    # kind nor a creator: replaying such a bundle judges it as it was judged (the providers now
    # record both for every check they read). A policy that names creators never counts them.
    legacy = [{"name": "build", "status": "success", "commit": HEAD}]
    assert judge(legacy, source="github").status is Status.PASS
    out = judge(legacy, source="github", creators=["github-actions"])
    assert out.status is Status.FAIL and "no creator recorded" in out.message
    # A check run that says who made it is held to it, whatever the source.
    assert judge([{**legacy[0], "kind": "check_run", "creator": "evil-app"}], source="github").status is Status.FAIL


def test_policy_naming_the_witness_context_is_refused_at_load(tmp_path: Any, monkeypatch: Any) -> None:
    from test_policy_loader import edited, problems_of

    text = edited("checks: [build, lint]", "checks: [build, policyengine/production]")
    assert problems_of(tmp_path, monkeypatch, text) == [
        "acceptance.yml:29:21: rules[3].checks[1]: 'policyengine/production': the policyengine/ prefix is "
        "reserved for the gate's witness status, which is never counted as a check"]


def test_policy_creators_load(tmp_path: Any, monkeypatch: Any) -> None:
    from test_policy_loader import edited, problems_of, write

    from policyengine.language.policy import load_policy

    text = edited("checks: [build, lint]", "checks: [build, lint]\n    creators: [github-actions, jenkins-bot]")
    rule = next(r for r in load_policy(write(tmp_path, monkeypatch, text)).rules if r.type == "checks_passed")
    assert rule.params["creators"] == ["github-actions", "jenkins-bot"]
    bad = edited("checks: [build, lint]", "checks: [build, lint]\n    creators: github-actions")
    assert len(problems_of(tmp_path, monkeypatch, bad)) == 1


def test_policy_diff_judges_creators() -> None:
    """Trusting more creators weakens; trusting fewer strengthens; an app beside the default is undecided."""
    import copy

    from test_policy_diff import BASE, _rule

    from policyengine.language.policydiff import STRONGER, UNDECIDED, WEAKER, diff

    def direction(old: list[str] | None, new: list[str] | None) -> set[str]:
        a, b = copy.deepcopy(BASE), copy.deepcopy(BASE)
        for doc, value in ((a, old), (b, new)):
            if value is not None:
                _rule(doc, "required-checks")["creators"] = value
        return {f.direction for f in diff(a, b) if f.path.endswith("creators")}

    assert direction(None, ["github-actions"]) == {STRONGER}  # statuses from anyone no longer count
    assert direction(["github-actions"], None) == {WEAKER}
    assert direction(None, ["github-actions", "evil-app"]) == {UNDECIDED}
    assert direction(["github-actions"], ["github-actions", "jenkins-bot"]) == {WEAKER}
    assert direction(["github-actions", "jenkins-bot"], ["github-actions"]) == {STRONGER}
    assert direction(["a"], ["b"]) == {UNDECIDED}
