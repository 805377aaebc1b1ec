"""`evidence: {require_subject: true}`: a deploy that names no artifact digest fails, like any
other missing input the deployer controls; replay judges the digests the statement names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from policyengine.cli import main
from policyengine.facts import Facts, SubjectsFact
from policyengine.models import Status
from policyengine.rules.artifact_subjects import SUBJECTS, ArtifactSubjectsRule
from policyengine.rules.base import Context, RuleSpec

POLICY = """version: 1
name: subjects
evidence:
  require_subject: true
rules:
  - id: tests
    type: tests_passed
    reports: ["reports/*.xml"]
"""
CHANGE: dict[str, Any] = {
    "repository": "acme/payments", "environment": "production",
    "commit": "9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6", "deployer": "dana",
}
DIGEST = "sha256:" + "ab" * 32


def setup(tmp_path: Path, policy: str = POLICY) -> None:
    (tmp_path / "policy.yml").write_text(policy, encoding="utf-8")
    (tmp_path / "change.yml").write_text(yaml.safe_dump(CHANGE), encoding="utf-8")
    (tmp_path / "reports").mkdir(exist_ok=True)
    (tmp_path / "reports" / "unit.xml").write_text('<testsuite name="t" tests="1"><testcase name="a"/></testsuite>')


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def check(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict[str, Any]]:
    code, out, err = run(capsys, "check", "--policy", str(tmp_path / "policy.yml"), "--change",
                         str(tmp_path / "change.yml"), "--workspace", str(tmp_path), "--evidence-dir",
                         str(tmp_path / "evidence"), "--json", str(tmp_path / "decision.json"), "--color", "never",
                         "--now", "2026-11-24T15:00:00Z", *extra)
    assert code in (0, 1), out + err
    return code, json.loads((tmp_path / "decision.json").read_text())


def rule(doc: dict[str, Any]) -> dict[str, Any]:
    return next(r for r in doc["rules"] if r["id"] == "artifact-subjects")


def test_no_subject_fails_and_the_decision_is_deny(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup(tmp_path)
    code, doc = check(tmp_path, capsys)
    assert code == 1 and doc["decision"] == "deny"
    assert rule(doc)["status"] == "fail" and "--subject" in rule(doc)["message"]


def test_a_subject_passes_and_replay_agrees(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    setup(tmp_path)
    monkeypatch.setenv("POLICYENGINE_SUBJECTS", f"image={DIGEST}")
    code, doc = check(tmp_path, capsys)
    assert code == 0 and doc["decision"] == "allow" and rule(doc)["status"] == "pass"
    monkeypatch.delenv("POLICYENGINE_SUBJECTS")
    code, out, err = run(capsys, "evidence", "replay", "--archive", str(tmp_path / "evidence"),
                         doc["evidence"]["bundle_id"])
    assert code == 0, out + err


def test_replay_of_a_denied_bundle_without_subjects_agrees(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup(tmp_path)
    _, doc = check(tmp_path, capsys)
    code, out, err = run(capsys, "evidence", "replay", "--archive", str(tmp_path / "evidence"),
                         doc["evidence"]["bundle_id"])
    assert code == 0, out + err


def test_without_the_option_nothing_is_added(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    setup(tmp_path, POLICY.replace("  require_subject: true\n", "  retention: 400d\n"))
    code, doc = check(tmp_path, capsys)
    assert code == 0 and all(r["id"] != "artifact-subjects" for r in doc["rules"])


@pytest.mark.parametrize("edit,message", [
    (("require_subject: true", "require_subject: yes please"), "require_subject"),
    (("  - id: tests\n", "  - id: artifact-subjects\n"), "reserved"),
])
def test_bad_policies_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], edit: tuple[str, str],
                                  message: str) -> None:
    setup(tmp_path, POLICY.replace(*edit))
    code, out, err = run(capsys, "policy", "validate", str(tmp_path / "policy.yml"))
    assert code == 2 and message in out + err


def test_unknown_subjects_are_an_error_never_a_pass() -> None:
    r = ArtifactSubjectsRule(RuleSpec(id="artifact-subjects", type="artifact_subjects", params={}))
    from datetime import datetime, timezone

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert r.evaluate(Context(change={}, facts=Facts(change={}), now=now)).status is Status.ERROR
    errored = Facts(change={}, answers={SUBJECTS: SubjectsFact(error="not given")})
    assert r.evaluate(Context(change={}, facts=errored, now=now)).status is Status.ERROR


def test_policy_diff_calls_turning_it_off_weaker() -> None:
    from policyengine.language.policydiff import STRONGER, WEAKER, diff

    on, off = yaml.safe_load(POLICY), yaml.safe_load(POLICY.replace("  require_subject: true\n", "  retention: 1y\n"))
    assert [(f.path, f.direction) for f in diff(on, off) if f.path == "evidence.require_subject"] == [
        ("evidence.require_subject", WEAKER)]
    assert [(f.path, f.direction) for f in diff(off, on) if f.path == "evidence.require_subject"] == [
        ("evidence.require_subject", STRONGER)]
