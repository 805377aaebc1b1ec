"""Waivers: a time-boxed exception to one rule, approved by a policy owner, shown everywhere.

End to end through the CLI (check, policy validate/diff/explain/test, evidence replay) and in
memory through the judge (``engine.evaluate``).
"""

from __future__ import annotations

import json
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from policyengine.cli import main

HEAD = "9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6"
# Saturday evening: outside the deploy window, so deploy-window fails and only it.
SATURDAY = "2026-11-28T20:00:00Z"
TUESDAY = "2026-11-24T10:00:00Z"

POLICY = """version: 1
name: prod
policy_owners: {users: [carol]%(teams)s}
%(extra)srules:
  - id: peer-review
    type: approvals
    min_approvals: 1
    exclude: [author]
  - id: deploy-window
    type: deploy_window
    timezone: UTC
    allow:
      - days: [mon, tue, wed, thu]
        between: ["09:00", "16:00"]
%(waivers)s"""

WAIVER = """  - rule: %(rule)s
    scope: %(scope)s
    reason: "docs-only deploys are exempt until the new pipeline lands"
    approved_by: %(by)s
    approved_at: %(at)s
%(expires)s"""


def waiver(rule: str = "deploy-window", scope: str = '{repository: acme/payments, environment: production, '
           'paths: ["docs/**"]}', by: str = "carol", at: str = "2026-11-20",
           expires: str | None = "2027-01-31") -> str:
    exp = f"    expires: {expires}\n" if expires is not None else ""
    return WAIVER % {"rule": rule, "scope": scope, "by": by, "at": at, "expires": exp}


def policy_text(*waivers: str, teams: str = "", extra: str = "") -> str:
    body = ("waivers:\n" + "".join(waivers)) if waivers else ""
    return POLICY % {"teams": teams, "extra": extra, "waivers": body}


def change_doc(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "repository": "acme/payments", "environment": "production", "commit": HEAD, "deployer": "dana",
        "files_changed": ["docs/setup.md", "docs/img/a.png"],
        "pull_request": {"number": 42, "author": "alice", "head_commit": HEAD},
        "commits": [{"sha": HEAD, "author": "alice", "committer": "alice"}],
        "reviews": [{"user": "bob", "state": "approved", "commit": HEAD, "submitted_at": "2026-11-23T15:00:00Z"}],
    }
    doc.update(over)
    return {k: v for k, v in doc.items() if v is not None}


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out + err


class World:
    def __init__(self, tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.tmp, self.capsys = tmp, capsys
        (tmp / "ws").mkdir(exist_ok=True)

    def write(self, name: str, text: str) -> Path:
        path = self.tmp / name
        path.write_text(text, encoding="utf-8")
        return path

    def check(self, policy: str, change: dict[str, Any] | None = None, now: str = SATURDAY,
              *extra: str) -> tuple[int, dict[str, Any], str]:
        self.write("policy.yml", policy)
        self.write("change.yml", yaml.safe_dump(change if change is not None else change_doc()))
        out = self.tmp / "decision.json"
        if out.exists():
            out.unlink()
        code, text = run(["check", "--policy", str(self.tmp / "policy.yml"), "--change", str(self.tmp / "change.yml"),
                          "--workspace", str(self.tmp / "ws"), "--now", now, "--evidence-dir",
                          str(self.tmp / "evidence"), "--json", str(out), "--junit", str(self.tmp / "junit.xml"),
                          *extra], self.capsys)
        doc = json.loads(out.read_text("utf-8")) if out.exists() else {}
        return code, doc, text


@pytest.fixture
def world(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> World:
    for name in ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "POLICYENGINE_WAIVERS", "POLICYENGINE_POLICY"):
        monkeypatch.delenv(name, raising=False)
    return World(tmp_path, capsys)


def rule(doc: dict[str, Any], rid: str) -> dict[str, Any]:
    return next(r for r in doc["rules"] if r["id"] == rid)


# -- an active waiver ---------------------------------------------------------------------------


def test_without_the_waiver_the_deploy_window_denies(world: World) -> None:
    code, doc, _ = world.check(policy_text())
    assert (code, doc["decision"], rule(doc, "deploy-window")["status"]) == (1, "deny", "fail")


def test_an_active_waiver_waives_the_rule_and_the_deploy_is_allowed(world: World) -> None:
    code, doc, text = world.check(policy_text(waiver()))
    assert (code, doc["decision"]) == (0, "allow"), text
    window = rule(doc, "deploy-window")
    assert window["status"] == "waived"
    assert window["details"]["waiver"]["original_status"] == "fail"
    assert window["details"]["waiver"]["approved_by"] == "carol"
    assert window["details"]["waiver"]["expires"] == "2027-01-31"
    assert doc["summary"]["waived"] == 1
    [used] = doc["waivers_used"]
    assert (used["rule"], used["reason"], used["approved_by"], used["expires"], used["status"]) == (
        "deploy-window", "docs-only deploys are exempt until the new pipeline lands", "carol", "2027-01-31",
        "applied")
    # Console: the status, the reason, the approver and the expiry.
    line = next(x for x in text.splitlines() if "deploy-window" in x)
    assert line.split()[0] == "WAIVED"
    assert "docs-only deploys are exempt" in text and "carol" in text and "2027-01-31" in text
    # JUnit: a skipped testcase of type waived, naming the waiver.
    junit = (world.tmp / "junit.xml").read_text("utf-8")
    case = junit[junit.index('name="deploy-window"'):]
    case = case[:case.index("</testcase>")]
    assert 'type="waived"' in case and "carol" in case and "2027-01-31" in case and "<failure" not in case
    # The bundle: decision.json lists it, report.html shows the waived badge and the waiver.
    bundle = next((world.tmp / "evidence").glob("bundles/*/*/*.zip"))
    with zipfile.ZipFile(bundle) as zf:
        recorded = json.loads(zf.read("decision.json"))
        report = zf.read("report.html").decode()
    assert recorded["waivers_used"] == doc["waivers_used"]
    assert rule(recorded, "deploy-window")["status"] == "waived"
    assert 'class="badge s-waived"' in report and ".s-waived{" in report and "docs-only deploys are exempt" in report and "2027-01-31" in report


def test_the_decision_with_waivers_is_valid_against_the_decision_schema(world: World) -> None:
    import jsonschema

    from policyengine.language.loader import load_schema

    _, doc, _ = world.check(policy_text(waiver(), waiver(scope="{repository: acme/other}")))
    jsonschema.validate(doc, load_schema("decision.schema.json"))
    assert [w["status"] for w in doc["waivers_considered"]] == ["applied", "out_of_scope"]


def test_a_waiver_waives_only_its_rule(world: World) -> None:
    unreviewed = change_doc(reviews=[])
    code, doc, _ = world.check(policy_text(waiver()), unreviewed)
    assert (code, doc["decision"]) == (1, "deny")
    assert rule(doc, "deploy-window")["status"] == "waived"
    assert rule(doc, "peer-review")["status"] == "fail"


def test_a_rule_that_passed_stays_pass_and_the_waiver_was_not_needed(world: World) -> None:
    code, doc, _ = world.check(policy_text(waiver()), now=TUESDAY)
    assert (code, rule(doc, "deploy-window")["status"]) == (0, "pass")
    assert doc["waivers_used"] == []
    assert doc["waivers_considered"][0]["status"] == "not_needed"
    assert "waived" not in doc["summary"]


# -- expiry and approval time -------------------------------------------------------------------


@pytest.mark.parametrize(("expires", "now", "active"), [
    ("2027-01-31", "2027-01-31T23:59:59Z", True),   # a date is valid through the end of that day, UTC
    ("2027-01-31", "2027-02-01T00:00:00Z", False),
    ("2027-01-31T12:00:00-05:00", "2027-01-31T16:59:59Z", True),
    ("2027-01-31T12:00:00-05:00", "2027-01-31T17:00:00Z", False),
])
def test_expiry_boundaries(world: World, expires: str, now: str, active: bool) -> None:
    # Every moment is on a Sunday or early on a Monday: deploy-window fails without a waiver.
    code, doc, text = world.check(policy_text(waiver(expires=f'"{expires}"', at="2026-12-01")), now=now)
    window = rule(doc, "deploy-window")
    expected = (0, "waived", "applied") if active else (1, "fail", "expired")
    assert (code, window["status"], doc["waivers_considered"][0]["status"]) == expected, text


def test_an_expired_waiver_is_ignored_and_reported(world: World) -> None:
    code, doc, text = world.check(policy_text(waiver(expires="2026-11-27")))
    assert (code, doc["decision"]) == (1, "deny")
    window = rule(doc, "deploy-window")
    assert window["status"] == "fail"
    [ignored] = window["details"]["waivers_ignored"]
    assert ignored["status"] == "expired" and "2026-11-28T00:00:00Z" in ignored["why"]
    assert "expired" in doc["note"] and "deploy-window" in doc["note"]
    assert "expired" in text
    assert doc["waivers_used"] == []


def test_a_waiver_approved_in_the_future_is_not_yet_valid(world: World) -> None:
    code, doc, _ = world.check(policy_text(waiver(at="2026-11-29", expires="2027-01-31")))
    assert (code, rule(doc, "deploy-window")["status"]) == (1, "fail")
    assert doc["waivers_considered"][0]["status"] == "not_yet_valid"
    assert "not valid before 2026-11-29" in doc["note"]


# -- scope ---------------------------------------------------------------------------------------


def _range(*, with_pr: bool) -> dict[str, Any]:
    """A range that also ships #7 (whose files are unknown), or a commit that came through no request."""
    old = "5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b"
    if with_pr:
        pr = {"number": 7, "author": "eve", "reviews": [], "committers": ["eve"], "head_commit": old}
        return {"previous_commit": old, "commits": [], "pull_requests": [pr]}
    return {"previous_commit": old, "pull_requests": [],
            "commits": [{"sha": old, "author": "eve", "committer": "eve", "pull_request": None}]}



@pytest.mark.parametrize(("change", "why"), [
    (change_doc(repository="acme/other"), "repository"),
    (change_doc(repository="ACME/payments"), "repository"),  # exactly
    (change_doc(environment="staging"), "staging"),
    (change_doc(files_changed=["docs/setup.md", "src/app.py"]), "src/app.py"),
    (change_doc(files_changed=None), "does not list its changed files"),
    (change_doc(files_changed=["docs/a.md"], unavailable={"files_changed": "HTTP 500"}), "could not be read"),
    (change_doc(files_changed=[]), "no changed file"),
    (change_doc(range=_range(with_pr=True)), "#7"),
    (change_doc(range=_range(with_pr=False)), "commits without a pull request"),
])
def test_a_change_out_of_scope_is_not_waived(world: World, change: dict[str, Any], why: str) -> None:
    code, doc, text = world.check(policy_text(waiver()), change)
    assert doc, text
    window = rule(doc, "deploy-window")
    assert window["status"] == "fail", text
    assert doc["decision"] == "deny"
    [considered] = doc["waivers_considered"]
    assert considered["status"] == "out_of_scope" and why in considered["why"]
    assert window["details"]["waivers_ignored"][0]["status"] == "out_of_scope"


def test_a_waiver_without_paths_covers_every_file(world: World) -> None:
    code, doc, _ = world.check(policy_text(waiver(scope="{environment: production}")),
                               change_doc(files_changed=["src/app.py"]))
    assert (code, rule(doc, "deploy-window")["status"]) == (0, "waived")


# -- invalid waivers: exit 2, file:line:col --------------------------------------------------------


def _validate(world: World, text: str, *extra: str) -> tuple[int, str]:
    path = world.write("policy.yml", text)
    return run(["policy", "validate", str(path), *extra], world.capsys)


@pytest.mark.parametrize(("waivers", "extra", "where", "message"), [
    (waiver(expires=None), "", "waivers[0]", "expires"),
    (waiver(expires="2027-02-19"), "", "waivers[0].expires", "at most 90 days"),
    (waiver(expires="2027-01-31"), "waiver_max_days: 30\n", "waivers[0].expires", "at most 30 days"),
    (waiver(expires="2026-11-19"), "", "waivers[0].expires", "is not after approved_at"),
    (waiver(expires='"2027-01-31T10:00:00"'), "", "waivers[0].expires", "no time zone"),
    (waiver(expires="2027-02-30"), "", "waivers[0].expires", "is not a date"),
    (waiver(at="yesterday"), "", "waivers[0].approved_at", "neither a date"),
    (waiver(by="mallory"), "", "waivers[0].approved_by", "not a policy owner"),
    (waiver(rule="policy-owners"), "", "waivers[0].rule", "can never be waived"),
    (waiver(rule="evidence"), "", "waivers[0].rule", "can never be waived"),
    (waiver(rule="deploy-windw"), "", "waivers[0].rule", "did you mean 'deploy-window'?"),
    (waiver(scope="{}"), "", "waivers[0].scope", ""),
    (waiver(scope='{paths: ["../secrets/**"]}'), "", "waivers[0].scope.paths[0]", "outside the workspace"),
    (waiver(scope="{repo: acme/payments}"), "", "waivers[0].scope", "repo"),
])
def test_an_invalid_waiver_is_refused_with_its_line(world: World, waivers: str, extra: str, where: str,
                                                    message: str) -> None:
    text = policy_text(waivers, extra=extra)
    code, out = _validate(world, text)
    assert code == 2, out
    line = next(x for x in out.splitlines() if f": {where}" in x)
    assert message in line
    assert line.startswith(str(world.tmp / "policy.yml") + ":")
    lineno = int(line.split(":")[1])
    assert lineno > text.splitlines().index("waivers:")  # located inside the waivers
    # check refuses it too, before judging anything
    code, doc, out = world.check(text)
    assert code == 2 and doc == {} and "Traceback" not in out


def test_the_maximum_is_inclusive(world: World) -> None:
    code, out = _validate(world, policy_text(waiver(expires="2027-02-18")))
    assert code == 0, out
    code, out = _validate(world, policy_text(waiver(expires="2026-12-20"), extra="waiver_max_days: 30\n"))
    assert code == 0, out


def test_an_owner_team_member_may_approve_checked_at_run_time(world: World) -> None:
    text = policy_text(waiver(by="frank"), teams=", teams: [security]")
    assert _validate(world, text)[0] == 0  # a login outside users may be a member of an owner team
    member = change_doc(teams={"security": ["frank"]})
    code, doc, _ = world.check(text, member)
    assert (code, rule(doc, "deploy-window")["status"]) == (0, "waived")
    stranger = change_doc(teams={"security": ["gina"]})
    code, doc, out = world.check(text, stranger)
    assert code == 2 and doc == {}
    assert "waivers[0].approved_by" in out and "frank is not a policy owner" in out
    assert f"{world.tmp / 'policy.yml'}:" in out  # file:line of the waiver
    unknown = change_doc()  # membership unknown: fail closed, the waiver is not applied
    code, doc, _ = world.check(text, unknown)
    assert (code, rule(doc, "deploy-window")["status"]) == (1, "fail")
    assert doc["waivers_considered"][0]["status"] == "approver_unverified"


def test_the_judge_never_waives_the_gates_own_rules() -> None:
    """Defence in depth: even a waiver built in memory (never validated) cannot waive policy-owners."""
    from policyengine.engine import evaluate
    from policyengine.facts import Facts
    from policyengine.language.policy import parse_policy
    from policyengine.lifecycle.waivers import Waiver, parse_moment

    policy = parse_policy(policy_text().encode(), file="policies/prod.yml")
    forged = Waiver(rule="policy-owners", reason="x", approved_by="carol", approved_at=parse_moment("2026-11-20"),
                    expires=parse_moment("2027-01-01"))
    import dataclasses

    policy = dataclasses.replace(policy, waivers=(forged,))
    ch = change_doc(files_changed=["policies/prod.yml"])
    decision = evaluate(policy, Facts(change=ch), datetime(2026, 11, 24, 10, tzinfo=timezone.utc))
    owners = next(r for r in decision.rules if r.id == "policy-owners")
    assert owners.status.value == "fail" and decision.decision == "deny"
    assert decision.waivers[0]["status"] == "refused"


# -- waivers file --------------------------------------------------------------------------------


def test_a_waivers_file_is_validated_against_the_policy(world: World) -> None:
    world.write("policy.yml", policy_text())
    bad = world.write("waivers.yml", "waivers:\n" + waiver(by="mallory") + waiver(rule="peer-reviews") +
                      "  - rule: deploy-window\n    colour: red\n")
    code, out = run(["policy", "validate", str(world.tmp / "policy.yml"), "--waivers", str(bad)], world.capsys)
    assert code == 2
    lines = [x for x in out.splitlines() if x.startswith(str(bad) + ":")]
    assert any(":5:" in x and "waivers[0].approved_by" in x and "not a policy owner" in x for x in lines), out
    assert any("waivers[1].rule" in x and "did you mean 'peer-review'" in x for x in lines), out
    assert any("waivers[2]" in x and "colour" in x for x in lines), out
    good = world.write("waivers.yml", "version: 1\nwaivers:\n" + waiver())
    code, out = run(["policy", "validate", str(world.tmp / "policy.yml"), "--waivers", str(good)], world.capsys)
    assert code == 0 and "1 waivers" in out


def test_a_waivers_file_waives_and_is_recorded_in_the_bundle(world: World) -> None:
    path = world.write("waivers.yml", "waivers:\n" + waiver())
    code, doc, text = world.check(policy_text(), None, SATURDAY, "--waivers", str(path))
    assert (code, rule(doc, "deploy-window")["status"]) == (0, "waived"), text
    assert doc["waivers_used"][0]["source"] == "waivers.yml"
    import hashlib

    assert doc["policy"]["waivers_file"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    bundle = next((world.tmp / "evidence").glob("bundles/*/*/*.zip"))
    with zipfile.ZipFile(bundle) as zf:
        assert zf.read("waivers/waivers.yml") == path.read_bytes()
    # Replay judges with the recorded waivers: the same decision.
    bundle_id = bundle.stem
    code, out = run(["evidence", "replay", bundle_id, "--archive", str(world.tmp / "evidence")], world.capsys)
    assert code == 0, out


def test_the_waivers_file_comes_from_the_environment_too(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    path = world.write("waivers.yml", "waivers:\n" + waiver())
    monkeypatch.setenv("POLICYENGINE_WAIVERS", str(path))
    code, doc, _ = world.check(policy_text())
    assert (code, rule(doc, "deploy-window")["status"]) == (0, "waived")


def test_a_change_editing_the_waivers_file_needs_an_owner(world: World) -> None:
    path = world.write("waivers.yml", "waivers:\n" + waiver(scope="{environment: production}"))
    edit = change_doc(files_changed=[str(path)])
    code, doc, _ = world.check(policy_text(), edit, SATURDAY, "--waivers", str(path))
    owners = rule(doc, "policy-owners")
    assert owners["status"] == "fail" and "waivers.yml" in owners["message"]
    assert (code, doc["decision"]) == (1, "deny")
    approved = change_doc(files_changed=[str(path)], reviews=[
        {"user": "carol", "state": "approved", "commit": HEAD, "submitted_at": "2026-11-23T15:00:00Z"}])
    code, doc, _ = world.check(policy_text(), approved, SATURDAY, "--waivers", str(path))
    assert (code, rule(doc, "policy-owners")["status"]) == (0, "pass")


# -- policy diff, extends, explain, test -----------------------------------------------------------


def _diff(world: World, old: str, new: str) -> tuple[int, dict[str, Any]]:
    a, b = world.write("old.yml", old), world.write("new.yml", new)
    code, out = run(["policy", "diff", str(a), str(b), "--format", "json"], world.capsys)
    return code, json.loads(out)


def test_policy_diff_a_new_waiver_is_a_weakening(world: World) -> None:
    code, doc = _diff(world, policy_text(), policy_text(waiver()))
    assert code == 1 and doc["weaker"] is True
    assert [(f["path"], f["direction"]) for f in doc["findings"]] == [("waivers[deploy-window]", "weaker")]


@pytest.mark.parametrize(("old", "new", "direction", "code"), [
    (waiver(), waiver(expires="2027-02-10"), "weaker", 1),          # expiry extended
    (waiver(expires="2027-02-10"), waiver(), "stronger", 0),        # expiry shortened
    (waiver(), "", "stronger", 0),                                  # removed
    (waiver(), waiver(scope="{repository: acme/payments}"), "weaker", 1),  # scope widened: a new waiver
])
def test_policy_diff_directions_of_waiver_edits(world: World, old: str, new: str, direction: str,
                                                code: int) -> None:
    got, doc = _diff(world, policy_text(old), policy_text(*([new] if new else [])))
    assert got == code
    assert direction in [f["direction"] for f in doc["findings"]]


def test_policy_diff_a_higher_waiver_maximum_is_a_weakening(world: World) -> None:
    code, doc = _diff(world, policy_text(), policy_text(extra="waiver_max_days: 120\n"))
    assert code == 1 and doc["findings"][0]["path"] == "waiver_max_days"


def test_an_extension_may_not_add_a_waiver(world: World) -> None:
    world.write("base.yml", policy_text())
    ext = world.write("ext.yml", "version: 1\nname: ext\nextends: base.yml\nrules:\n  - id: peer-review\n"
                      "    type: approvals\n    min_approvals: 1\nwaivers:\n" + waiver())
    code, out = run(["policy", "validate", str(ext)], world.capsys)
    assert code == 2 and "waiver added" in out


def test_explain_lists_the_waivers(world: World) -> None:
    path = world.write("policy.yml", policy_text(waiver()))
    code, out = run(["policy", "explain", str(path)], world.capsys)
    assert code == 0
    assert "## Waivers" in out and "docs-only deploys are exempt" in out and "2027-01-31" in out and "carol" in out
    code, out = run(["policy", "explain", str(path), "--format", "json"], world.capsys)
    assert json.loads(out)["waivers"][0]["expires"] == "2027-01-31"


def test_policy_test_cases_may_expect_waived(world: World) -> None:
    case = world.tmp / "cases" / "docs-on-saturday"
    case.mkdir(parents=True)
    world.write("policy.yml", policy_text(waiver()))
    (case / "case.yml").write_text(yaml.safe_dump({
        "policy": "../../policy.yml", "now": SATURDAY, "change": change_doc(),
        "expect": {"decision": "allow", "rules": {"deploy-window": "waived"}}}), encoding="utf-8")
    code, out = run(["policy", "test", str(world.tmp / "cases")], world.capsys)
    assert code == 0, out


def test_the_waivers_file_schema_matches_the_policys_waiver() -> None:
    from policyengine.language.loader import load_schema

    assert load_schema("waivers.schema.json")["$defs"]["waiver"] == load_schema("policy.schema.json")["$defs"]["waiver"]
