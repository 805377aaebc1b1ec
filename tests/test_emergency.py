"""Emergency changes (break-glass): declared only by the verified deployer, waived rules recorded,
a loud EMERGENCY verdict, post-facto approvals with segregation of duties, pending deadlines."""

from __future__ import annotations

import json
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.oidc_issuer import verified_ci
import yaml

from policyengine.language.policyfacts import POLICY_FACTS
from policyengine.cli import main
from policyengine.lifecycle.emergency import (
    APPROVED_LATE,
    APPROVED_ON_TIME,
    OPEN,
    OVERDUE,
    EmergencyPolicy,
    EmergencyRequest,
    apply,
    emergency_status,
)
from policyengine.models import Enforcement, RuleResult, Status
from policyengine.language.policydiff import STRONGER, WEAKER, diff

POLICY = """version: 1
name: em
rules:
  - id: peer-review
    type: approvals
    min_approvals: 1
    exclude: [author, deployer]
  - id: deploy-window
    type: deploy_window
    timezone: UTC
    allow:
      - name: weekdays
        days: [mon-fri]
        between: ["09:00", "17:00"]
  - id: tests
    type: tests_passed
    reports: ["reports/*.xml"]
emergency:
  declared_by: {teams: [oncall], users: [olga]}
  trigger: {label: emergency}
  requires: [reason, incident]
  may_waive: [peer-review, deploy-window]
  approve_within: 72h
  approvers: {min_approvals: 1, from_teams: [security], exclude: [author, deployer, committers]}
"""

CHANGE: dict[str, Any] = {
    "repository": "acme/payments", "environment": "production",
    "commit": "9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6", "deployer": "dana",
    "pull_request": {"number": 42, "title": "hotfix", "author": "alice",
                     "head_commit": "9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6", "labels": []},
    "commits": [{"sha": "9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6", "author": "alice", "committer": "carl"}],
    "reviews": [],
    "teams": {"oncall": ["dana"], "security": ["frank", "gina", "carl", "alice"]},
}
PASSING = '<testsuite name="t" tests="1" failures="0"><testcase name="a"/></testsuite>'
FAILING = '<testsuite name="t" tests="1" failures="1"><testcase name="a"><failure message="x"/></testcase></testsuite>'
SATURDAY_NIGHT = "2026-11-28T22:00:00Z"


def setup(tmp_path: Path, change: dict[str, Any] | None = None, report: str = PASSING,
          policy: str = POLICY) -> None:
    (tmp_path / "policy.yml").write_text(policy, encoding="utf-8")
    (tmp_path / "change.yml").write_text(yaml.safe_dump(change or CHANGE), encoding="utf-8")
    (tmp_path / "reports").mkdir(exist_ok=True)
    (tmp_path / "reports" / "unit.xml").write_text(report, encoding="utf-8")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def check(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str,
          now: str | None = SATURDAY_NIGHT) -> tuple[int, str, str]:
    args = ["check", "--policy", str(tmp_path / "policy.yml"), "--change", str(tmp_path / "change.yml"),
            "--workspace", str(tmp_path), "--evidence-dir", str(tmp_path / "evidence"),
            "--json", str(tmp_path / "decision.json"), "--junit", str(tmp_path / "junit.xml"), "--color", "never",
            *extra]
    if now:
        args += ["--now", now]
    return run(capsys, *args)


def declare(tmp_path: Path, capsys: pytest.CaptureFixture[str], **kw: Any) -> tuple[int, str, str]:
    return check(tmp_path, capsys, "--emergency", "--reason", "refunds down", "--incident", "INC-4711", **kw)


def decision(tmp_path: Path) -> dict[str, Any]:
    value: dict[str, Any] = json.loads((tmp_path / "decision.json").read_text())
    return value


def bundle_id(tmp_path: Path) -> str:
    return str(decision(tmp_path)["evidence"]["bundle_id"])


def statuses(doc: dict[str, Any]) -> dict[str, str]:
    return {r["id"]: r["status"] for r in doc["rules"]}


# -- the declaration -------------------------------------------------------------------------------


def test_allowed_declarer_waives_review_and_window_exits_0_with_a_loud_emergency_everywhere(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup(tmp_path)
    code, out, err = declare(tmp_path, capsys)
    assert code == 0, out + err
    doc = decision(tmp_path)
    assert doc["decision"] == "allow"
    assert statuses(doc) == {"peer-review": "waived", "deploy-window": "waived", "tests": "pass",
                             "emergency": "pass"}
    em = doc["emergency"]
    assert em["declarer"] == "dana" and em["reason"] == "refunds down" and em["incident"] == "INC-4711"
    assert em["waived"] == ["peer-review", "deploy-window"]
    assert em["due_at"] == "2026-12-01T22:00:00Z" and em["approval_required"] is True
    assert out.startswith("EMERGENCY: declared by dana")
    assert "EMERGENCY ALLOW: an emergency change declared by dana" in out
    assert "post-facto approval due by 2026-12-01T22:00:00Z" in out
    junit = (tmp_path / "junit.xml").read_text()
    assert 'name="em [EMERGENCY]"' in junit and '<property name="emergency" value="true" />' in junit
    assert '<property name="emergency_waived" value="peer-review, deploy-window" />' in junit
    [zip_path] = sorted((tmp_path / "evidence").rglob("*.zip"))
    with zipfile.ZipFile(zip_path) as zf:
        recorded = json.loads(zf.read("decision.json"))
        report = zf.read("report.html").decode()
    assert recorded["emergency"]["waived"] == ["peer-review", "deploy-window"]
    assert "EMERGENCY ALLOW" in report and "INC-4711" in report


def test_a_label_asks_for_it_and_the_description_gives_reason_and_incident(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    change = json.loads(json.dumps(CHANGE))
    change["pull_request"].update(labels=["emergency"], description="Reason: refunds down. Incident: INC-9")
    setup(tmp_path, change)
    code, out, err = check(tmp_path, capsys)
    assert code == 0, out + err
    em = decision(tmp_path)["emergency"]
    assert (em["requested_by"], em["reason"], em["incident"]) == ("label emergency", "refunds down.", "INC-9")


@pytest.mark.parametrize("deployer", ["mallory", "alice", "frank"])
def test_a_declarer_the_policy_does_not_name_is_denied_naming_the_rule(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], deployer: str) -> None:
    setup(tmp_path, {**CHANGE, "deployer": deployer})
    code, out, _ = declare(tmp_path, capsys)
    assert code == 1
    doc = decision(tmp_path)
    assert doc["decision"] == "deny"
    assert statuses(doc)["emergency"] == "fail" and statuses(doc)["peer-review"] != "waived"
    assert f"{deployer} may not declare an emergency" in out
    assert "DENY: rules not met:" in out and "emergency" in out.splitlines()[-2]


def test_unknown_membership_of_the_declaring_team_is_an_error_not_an_allow(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup(tmp_path, {**CHANGE, "teams": {"security": ["frank"]}})
    code, _, _ = declare(tmp_path, capsys)
    assert code != 0 and decision(tmp_path)["decision"] == "deny"
    assert statuses(decision(tmp_path))["emergency"] == "error"


@pytest.mark.parametrize(("missing", "args"), [
    ("reason", ["--emergency", "--incident", "INC-1"]),
    ("incident", ["--emergency", "--reason", "down"]),
])
def test_a_declaration_without_its_reason_or_incident_is_denied(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], missing: str, args: list[str]) -> None:
    setup(tmp_path)
    code, out, _ = check(tmp_path, capsys, *args)
    assert code == 1
    assert statuses(decision(tmp_path))["emergency"] == "fail"
    assert f"the emergency has no {missing}" in out


def test_a_failing_test_still_denies_because_tests_are_not_in_may_waive(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup(tmp_path, report=FAILING)
    code, out, _ = declare(tmp_path, capsys)
    assert code == 1
    doc = decision(tmp_path)
    assert doc["decision"] == "deny"
    assert statuses(doc) == {"peer-review": "waived", "deploy-window": "waived", "tests": "fail", "emergency": "pass"}
    assert doc["emergency"]["approval_required"] is False and doc["emergency"]["due_at"] is None
    assert "EMERGENCY ALLOW" not in out


def test_emergency_on_a_policy_without_the_procedure_is_denied(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup(tmp_path, policy=POLICY.split("emergency:")[0])
    code, out, _ = declare(tmp_path, capsys)
    assert code == 1 and "the policy defines no emergency procedure" in out


def test_reason_without_an_emergency_asked_for_is_a_usage_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup(tmp_path)
    code, _, err = check(tmp_path, capsys, "--reason", "x")
    assert code == 2 and "no emergency was asked for" in err


def test_under_ci_a_change_files_deployer_cannot_declare(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The declarer is the CI actor as a code host's provider verified it, never a name from a
    file, a label or the command line."""
    policy = POLICY.replace("    allow:\n      - name: weekdays\n        days: [mon-fri]\n        between: "
                            "[\"09:00\", \"17:00\"]\n", "    allow:\n      - name: always\n        days: [mon-sun]\n"
                            "        between: [\"00:00\", \"23:59\"]\n")
    setup(tmp_path, policy=policy)
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("GITHUB_ACTOR", "dana")
    code, out, _ = declare(tmp_path, capsys, now=None)
    assert code == 1
    assert statuses(decision(tmp_path))["emergency"] == "fail"
    assert "the declarer must be the CI actor as the code host's provider verified it" in out


def _result(rid: str, rtype: str, status: Status = Status.FAIL) -> RuleResult:
    return RuleResult(id=rid, type=rtype, status=status, enforcement=Enforcement.DENY, message="m",
                      controls=(), description=None, details={})


@pytest.mark.parametrize(("facts_source", "source", "ok"), [
    ("github", "GITHUB_ACTOR", True), ("github", "GITHUB_TRIGGERING_ACTOR", True),
    ("gitlab", "GITLAB_USER_LOGIN", True), ("github", "pull_request.merged_by", False),
    ("gitlab", "merge_request.merged_by", False), ("self-declared", "GITHUB_ACTOR", False),
    (None, None, False),
])
def test_only_a_ci_actor_from_a_code_host_may_declare_when_verification_is_required(
        facts_source: str | None, source: str | None, ok: bool) -> None:
    section = EmergencyPolicy(users=("dana",), may_waive=("peer-review",))
    change = {**CHANGE, "facts_source": facts_source, "deployer_source": source}
    applied = apply(section, EmergencyRequest(flag=True, reason="r", incident="i", require_verified=True),
                    [_result("peer-review", "approvals")], change, datetime(2026, 11, 28, tzinfo=timezone.utc))
    assert applied.emergency is not None and applied.emergency["accepted"] is ok
    assert applied.results[0].status is (Status.WAIVED if ok else Status.FAIL)


def test_rules_the_gate_adds_are_never_waived_whatever_may_waive_says() -> None:
    section = EmergencyPolicy(users=("dana",), may_waive=("policy-owners", "evidence", "owners", "emergency"))
    results = [_result("policy-owners", "policy_owners"), _result("evidence", "evidence"),
               _result("owners", "policy_owners")]
    applied = apply(section, EmergencyRequest(flag=True, reason="r", incident="i"), results, CHANGE,
                    datetime(2026, 11, 28, tzinfo=timezone.utc))
    assert [r.status for r in applied.results[:3]] == [Status.FAIL] * 3
    assert applied.emergency is not None and applied.emergency["waived"] == []


def test_no_request_and_no_label_changes_nothing() -> None:
    section = EmergencyPolicy(users=("dana",), label="emergency", may_waive=("peer-review",))
    applied = apply(section, None, [_result("peer-review", "approvals")], CHANGE,
                    datetime(2026, 11, 28, tzinfo=timezone.utc))
    assert applied.emergency is None and applied.results[0].status is Status.FAIL and len(applied.results) == 1


def test_replay_of_an_emergency_bundle_matches(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup(tmp_path)
    declare(tmp_path, capsys)
    code, out, err = run(capsys, "evidence", "replay", "--archive", str(tmp_path / "evidence"), bundle_id(tmp_path))
    assert code == 0, out + err


# -- the policy section -------------------------------------------------------------------------------


def test_policy_validate_names_every_bad_emergency_key_with_file_line_col(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = POLICY.split("emergency:")[0].replace("  - id: tests\n", "  - id: emergency\n") + """emergency:
  declared_by: {teams: [], colour: blue}
  trigger: {labels: emergency}
  requires: [reason, ticket]
  may_waive: [peer-reveiw, evidence, policy-owners, emergency]
  approve_within: 3 days
  approvers: {min_approvals: 0, from_teams: [security], exclude: [boss]}
  extra: 1
"""
    (tmp_path / "p.yml").write_text(bad, encoding="utf-8")
    code, out, err = run(capsys, "policy", "validate", str(tmp_path / "p.yml"))
    err += out
    assert code == 2
    f = str(tmp_path / "p.yml")
    for expected in [
        f"{f}:15:9: rules[2].id: the rule id 'emergency' is reserved",
        f"{f}:19:24: emergency.declared_by.teams: expected a non-empty list",
        f"{f}:19:28: emergency.declared_by: unknown key \"colour\"",
        f"{f}:20:13: emergency.trigger: unknown key \"labels\"; did you mean \"label\"?",
        f"{f}:21:22: emergency.requires[1]: expected one of reason, incident",
        f"{f}:22:15: emergency.may_waive[0]: no rule 'peer-reveiw' in the policy; did you mean 'peer-review'?",
        f"{f}:22:28: emergency.may_waive[1]: the rule 'evidence' can never be waived",
        f"{f}:22:38: emergency.may_waive[2]: the rule 'policy-owners' can never be waived",
        f"{f}:22:53: emergency.may_waive[3]: the rule 'emergency' can never be waived",
        f"{f}:23:19: emergency.approve_within: expected hours or days",
        f"{f}:24:30: emergency.approvers.min_approvals: expected an integer >= 1",
        f"{f}:24:67: emergency.approvers.exclude[0]: expected one of author, deployer, committers",
        f"{f}:25:3: emergency: unknown key \"extra\"",
    ]:
        assert expected in err, f"missing {expected!r} in:\n{err}"


def test_policy_validate_refuses_a_deadline_over_30_days_and_missing_required_keys(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.yml").write_text(POLICY.replace("72h", "31d"), encoding="utf-8")
    code, out, err = run(capsys, "policy", "validate", str(tmp_path / "p.yml"))
    err += out
    assert code == 2 and "emergency.approve_within: 31d is longer than 30 days" in err
    (tmp_path / "q.yml").write_text(POLICY.split("emergency:")[0] + "emergency:\n  declared_by: {users: [a]}\n")
    code, out, err = run(capsys, "policy", "validate", str(tmp_path / "q.yml"))
    err += out
    assert code == 2
    for key in ("may_waive", "approve_within", "approvers"):
        assert f'missing required key "{key}"' in err or f"'{key}' is a required property" in err, err


def test_every_key_of_the_emergency_schema_has_a_diff_direction() -> None:
    from policyengine.language.loader import load_schema
    from policyengine.language.policydiff import _EMERGENCY_KEYS

    section = load_schema("policy.schema.json")["properties"]["emergency"]["properties"]
    keys = set()
    for key, value in section.items():
        subs = value.get("properties") if isinstance(value, dict) else None
        keys |= {f"{key}.{sub}" for sub in subs} if subs else {key}
    assert keys == set(_EMERGENCY_KEYS)


@pytest.mark.parametrize(("edit", "path", "direction"), [
    (lambda e: e["approvers"].update(min_approvals=0 + 1), None, None),
    (lambda e: e.update(approve_within="96h"), "emergency.approve_within", WEAKER),
    (lambda e: e.update(approve_within="48h"), "emergency.approve_within", STRONGER),
    (lambda e: e["may_waive"].append("tests"), "emergency.may_waive", WEAKER),
    (lambda e: e["may_waive"].remove("deploy-window"), "emergency.may_waive", STRONGER),
    (lambda e: e["declared_by"]["users"].append("mallory"), "emergency.declared_by.users", WEAKER),
    (lambda e: e["declared_by"]["teams"].append("everyone"), "emergency.declared_by.teams", WEAKER),
    (lambda e: e.update(requires=["reason"]), "emergency.requires", WEAKER),
    (lambda e: e["approvers"].pop("from_teams"), "emergency.approvers.from_teams", WEAKER),
    (lambda e: e["approvers"]["exclude"].remove("committers"), "emergency.approvers.exclude", WEAKER),
])
def test_policy_diff_knows_the_direction_of_each_emergency_key(edit: Any, path: str | None,
                                                                direction: str | None) -> None:
    old = yaml.safe_load(POLICY)
    old["emergency"]["approvers"]["min_approvals"] = 2
    new = json.loads(json.dumps(old))
    edit(new["emergency"])
    findings = [f for f in diff(old, new) if f.path.startswith("emergency")]
    if path is None:  # min_approvals 2 -> 1
        assert [(f.path, f.direction) for f in findings] == [("emergency.approvers.min_approvals", WEAKER)]
        return
    assert [(f.path, f.direction) for f in findings] == [(path, direction)]


def test_adding_the_emergency_section_is_a_weakening_and_removing_it_is_not() -> None:
    with_it = yaml.safe_load(POLICY)
    without = {k: v for k, v in with_it.items() if k != "emergency"}
    assert [(f.path, f.direction) for f in diff(without, with_it)] == [("emergency", WEAKER)]
    assert [(f.path, f.direction) for f in diff(with_it, without)] == [("emergency", STRONGER)]


# -- after the deploy: pending and approvals --------------------------------------------------------


def pending(tmp_path: Path, capsys: pytest.CaptureFixture[str], now: str, *extra: str) -> tuple[int, str, str]:
    return run(capsys, "emergency", "pending", "--archive", str(tmp_path / "evidence"), "--now", now, *extra)


def approve(tmp_path: Path, capsys: pytest.CaptureFixture[str], by: str) -> tuple[int, str, str]:
    return run(capsys, "emergency", "approve", "--archive", str(tmp_path / "evidence"), bundle_id(tmp_path),
               "--by", by, "--note", "checked")


@pytest.fixture
def declared(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    setup(tmp_path)
    code, out, err = declare(tmp_path, capsys)
    assert code == 0, out + err
    return tmp_path


def test_pending_exits_1_once_72h_pass_without_approval_and_0_after_an_approval(
        declared: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, oidc_issuer: Any) -> None:
    code, out, _ = pending(declared, capsys, "2026-11-30T00:00:00Z")
    assert code == 0 and out.startswith("OPEN ") and "due 2026-12-01T22:00:00Z" in out
    code, out, _ = pending(declared, capsys, "2026-12-01T22:00:01Z")
    assert code == 1 and out.startswith("OVERDUE ") and "approvals 0/1" in out
    verified_ci(monkeypatch, oidc_issuer, "frank")
    code, out, err = approve(declared, capsys, "frank")
    assert code == 0, out + err
    assert "by frank (verified (CI actor): oidc http://127.0.0.1:" in out
    monkeypatch.delenv("GITHUB_ACTIONS")
    code, out, _ = pending(declared, capsys, "2026-12-09T00:00:00Z")
    assert code == 0 and out.strip() == "no emergency deployment awaits approval"
    code, out, _ = pending(declared, capsys, "2026-12-09T00:00:00Z", "--all", "--json")
    [state] = json.loads(out)["emergencies"]
    assert state["status"] == APPROVED_LATE or state["status"] == APPROVED_ON_TIME


@pytest.mark.parametrize(("by", "role"), [("dana", "declarer"), ("alice", "author"), ("carl", "committer")])
def test_an_approval_by_the_declarer_deployer_author_or_committer_is_refused(
        declared: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, by: str,
        role: str) -> None:
    monkeypatch.setenv("GITLAB_CI", "true")
    monkeypatch.setenv("GITLAB_USER_LOGIN", by)
    code, _, err = approve(declared, capsys, by.upper())  # logins compare case-insensitively
    assert code == 2 and role in err and "refused" in err
    assert not [p for p in (declared / "evidence").rglob("*.zip")][1:], "nothing may be recorded"


def test_an_approver_outside_from_teams_or_with_unknown_membership_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    setup(tmp_path, {**CHANGE, "teams": {"oncall": ["dana"]}})
    declare(tmp_path, capsys)
    monkeypatch.setenv("GITLAB_CI", "true")
    monkeypatch.setenv("GITLAB_USER_LOGIN", "frank")
    code, _, err = approve(tmp_path, capsys, "frank")
    assert code == 2 and "the membership of security was not recorded" in err
    monkeypatch.delenv("GITLAB_CI")
    setup(tmp_path)
    declare(tmp_path, capsys)
    monkeypatch.setenv("GITLAB_CI", "true")
    monkeypatch.setenv("GITLAB_USER_LOGIN", "bob")
    code, _, err = approve(tmp_path, capsys, "bob")
    assert code == 2 and "bob is not a member of security" in err


def test_inside_ci_an_approval_whose_by_is_not_the_ci_actor_is_refused(
        declared: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_ACTOR", "dana")
    code, _, err = approve(declared, capsys, "frank")
    assert code == 2 and "--by frank is not the CI actor dana" in err


def test_a_self_asserted_approval_is_recorded_but_does_not_close_it(
        declared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = approve(declared, capsys, "frank")
    assert code == 0 and "self-asserted" in out and "never closes the emergency" in err
    code, out, _ = pending(declared, capsys, "2026-12-02T00:00:00Z")
    assert code == 1 and "SELF-ASSERTED" in out and "does not count" in out


@pytest.mark.parametrize("how", ["corrupted", "rewritten"])
def test_a_tampered_approval_does_not_count(declared: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch, oidc_issuer: Any, how: str) -> None:
    """Someone who can write the archive turns a self-asserted approval into a verified one, or
    breaks a verified one: neither closes the emergency."""
    if how == "corrupted":
        verified_ci(monkeypatch, oidc_issuer, "frank")
    approve(declared, capsys, "frank")
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    [record] = [p for p in (declared / "evidence").rglob("*.zip") if p.stem != bundle_id(declared)]
    if how == "corrupted":
        data = bytearray(record.read_bytes())
        data[40] ^= 0xFF
        record.write_bytes(bytes(data))
    else:
        with zipfile.ZipFile(record) as zf:
            items = {n: zf.read(n) for n in zf.namelist()}
        doc = json.loads(items["record.json"])
        items["record.json"] = json.dumps({**doc, "by_verified": True, "by_source": "GITHUB_ACTOR"}).encode()
        with zipfile.ZipFile(record, "w") as zf:
            for name, value in items.items():
                zf.writestr(name, value)
    code, out, err = pending(declared, capsys, "2026-12-02T00:00:00Z")
    assert code == 1 and "does not count" in out, out + err
    assert "approvals 0/1" in out


def test_approving_a_bundle_that_is_no_allowed_emergency_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    setup(tmp_path, report=FAILING)
    declare(tmp_path, capsys)
    code, _, err = approve(tmp_path, capsys, "frank")
    assert code == 2 and "is not an allowed emergency deployment" in err


def test_pending_refuses_a_clock_override_under_ci(declared: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    code, _, err = pending(declared, capsys, "2027-01-01T00:00:00Z")
    assert code == 2 and "--now" in err


# -- emergency_status (pure: for the audit summary) -------------------------------------------------

EMERGENCY: dict[str, Any] = {"declarer": "dana", "approval_required": True, "due_at": "2026-12-01T22:00:00Z",
             "approvers": {"min_approvals": 2, "from_teams": ["security"], "exclude": ["author"]},
             "excluded": {"dana": ["declarer"], "alice": ["author"]}, "excluded_unknown": [],
             "approver_teams": {"security": ["frank", "gina", "alice"]}}


def approval(by: str, at: str, verified: bool = True) -> dict[str, Any]:
    return {"kind": "emergency-approval", "approval": "approved", "by": by, "by_verified": verified,
            "recorded_at": at}


NOW = datetime(2026, 12, 3, tzinfo=timezone.utc)


@pytest.mark.parametrize(("approvals", "now", "expected"), [
    ([], NOW - timedelta(days=3), OPEN),
    ([], NOW, OVERDUE),
    ([approval("frank", "2026-11-30T00:00:00Z")], NOW, OVERDUE),
    ([approval("frank", "2026-11-30T00:00:00Z"), approval("gina", "2026-12-01T21:00:00Z")], NOW, APPROVED_ON_TIME),
    ([approval("frank", "2026-11-30T00:00:00Z"), approval("gina", "2026-12-02T00:00:00Z")], NOW, APPROVED_LATE),
    ([approval("frank", "2026-11-30T00:00:00Z"), approval("FRANK", "2026-11-30T01:00:00Z")], NOW, OVERDUE),
    ([approval("frank", "2026-11-30T00:00:00Z"), approval("gina", "2026-11-30T01:00:00Z", False)], NOW, OVERDUE),
    ([approval("frank", "2026-11-30T00:00:00Z"), approval("alice", "2026-11-30T01:00:00Z")], NOW, OVERDUE),
    ([approval("frank", "2026-11-30T00:00:00Z"), approval("dana", "2026-11-30T01:00:00Z")], NOW, OVERDUE),
    ([approval("frank", "2026-11-30T00:00:00Z"), approval("bob", "2026-11-30T01:00:00Z")], NOW, OVERDUE),
])
def test_emergency_status_counts_only_verified_eligible_distinct_approvals(
        approvals: list[dict[str, Any]], now: datetime, expected: str) -> None:
    assert emergency_status({"decision": "allow", "emergency": EMERGENCY}, approvals, now) == expected
    assert emergency_status(EMERGENCY, approvals, now) == expected


def test_emergency_status_does_not_count_whoever_recorded_an_outcome_when_deployers_are_excluded() -> None:
    emergency = {**EMERGENCY, "approvers": {**EMERGENCY["approvers"], "min_approvals": 1, "exclude": ["deployer"]}}
    approvals = [approval("gina", "2026-11-30T00:00:00Z")]
    assert emergency_status(emergency, approvals, NOW) == APPROVED_ON_TIME
    assert emergency_status(emergency, approvals, NOW, deployers=["Gina"]) == OVERDUE


def test_emergency_status_refuses_what_is_no_allowed_emergency() -> None:
    with pytest.raises(ValueError, match="not an allowed emergency"):
        emergency_status({**EMERGENCY, "approval_required": False}, [], NOW)


def test_the_audit_summary_agrees_with_pending_a_self_asserted_approval_leaves_it_open(
        declared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The period summary judges approvals by emergency pending's rules, not by counting records."""
    from policyengine.evidence.stores.folder import LocalArchive
    from policyengine.evidence.audit.summary import summarize

    approve(declared, capsys, "frank")  # outside CI: self-asserted
    summary = summarize(LocalArchive(declared / "evidence"), since="2000-01-01", until="2100-01-01",
                        policy_facts=POLICY_FACTS)
    [emergency] = summary["emergencies"]
    assert emergency["status"] in ("open", "overdue")


def _population(export_zip: Path) -> dict[str, dict[str, str]]:
    import csv
    import io

    with zipfile.ZipFile(export_zip) as zf:
        return {r["id"]: r for r in csv.DictReader(io.StringIO(zf.read("population.csv").decode(), newline=""))}


def test_the_export_shows_each_emergency_with_its_status_and_verify_checks_it(
        declared: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, oidc_issuer: Any) -> None:
    """audit export's emergency_status: open (or overdue), a self-asserted approval leaves it so, an
    approval from the CI actor closes it; verify refuses a status the export's own records contradict."""
    from test_export_population import _edit

    archive, bid = declared / "evidence", bundle_id(declared)
    due = datetime(2026, 12, 1, 22, tzinfo=timezone.utc)

    def exported(name: str) -> tuple[Path, dict[str, str]]:
        out = declared / name
        code, stdout, err = run(capsys, "audit", "export", "--archive", str(archive), "--since", "2000-01-01",
                                "--until", "2100-01-01", "-o", str(out))
        assert code == 0, stdout + err
        return out, _population(out)[bid]

    waiting = "open" if datetime.now(timezone.utc) <= due else "overdue"
    out, row = exported("before.zip")
    assert row["emergency"] == "yes" and row["emergency_status"] == waiting
    approve(declared, capsys, "frank")  # outside CI: self-asserted, never closes it
    assert exported("self-asserted.zip")[1]["emergency_status"] == waiting
    verified_ci(monkeypatch, oidc_issuer, "frank")
    assert approve(declared, capsys, "frank")[0] == 0
    monkeypatch.delenv("GITHUB_ACTIONS")
    out, row = exported("after.zip")
    assert row["emergency_status"] == ("approved on time" if datetime.now(timezone.utc) <= due else "approved late")
    assert run(capsys, "evidence", "verify", "--archive", str(out))[0] == 0
    with zipfile.ZipFile(out) as zf:
        assert "emergency: approved" in zf.read("index.html").decode()

    folder = declared / "early"  # the first export, claiming an approval its records.csv does not hold
    with zipfile.ZipFile(declared / "before.zip") as zf:
        zf.extractall(folder)
    _edit(folder, bid, "emergency_status", "approved on time")
    code, stdout, _ = run(capsys, "evidence", "verify", "--archive", str(folder))
    assert code == 1 and "holds no verified emergency-approval record" in stdout, stdout
    _edit(folder, bid, "emergency_status", "fine")
    code, stdout, _ = run(capsys, "evidence", "verify", "--archive", str(folder))
    assert code == 1 and "expected one of approved on time" in stdout, stdout
