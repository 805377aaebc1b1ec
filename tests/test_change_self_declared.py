"""A change file's facts are self-declared: marked so in the decision and the bundle; reviewers
may declare their permission or that they are bots; times must parse and carry a zone."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from fake_servers import decision_errors

from policyengine.cli import main

REPO = Path(__file__).resolve().parents[1]
ALLOWED = (REPO / "examples" / "change-allowed.yml").read_text(encoding="utf-8")
POLICY = """version: 1
name: self-declared
rules:
  - id: peer-review
    type: approvals
    min_approvals: 2
    exclude: [author, committers, deployer]
    require_current_commit: true
"""


def run_check(tmp_path: Path, change_text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    (tmp_path / "policy.yml").write_text(POLICY, encoding="utf-8")
    (tmp_path / "change.yml").write_text(change_text, encoding="utf-8")
    args = ["check", "--policy", str(tmp_path / "policy.yml"), "--change", str(tmp_path / "change.yml"),
            "--workspace", str(tmp_path), "--now", "2026-11-24T15:00:00Z", "--evidence-dir",
            str(tmp_path / "evidence"), "--json", str(tmp_path / "decision.json"), "--color", "never"]
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_facts_of_a_change_file_are_marked_self_declared_in_decision_and_bundle(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_check(tmp_path, ALLOWED, capsys)
    assert code == 0, out + err
    decision = json.loads((tmp_path / "decision.json").read_text())
    assert decision["change"]["facts_source"] == "self-declared"
    assert decision_errors(decision) == []
    [bundle] = sorted((tmp_path / "evidence").rglob("*.zip"))
    with zipfile.ZipFile(bundle) as z:
        assert json.loads(z.read("change.json"))["facts_source"] == "self-declared"


@pytest.mark.parametrize("source", ["github", "gitlab"])
def test_a_change_file_cannot_claim_a_code_host_as_its_source(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             source: str) -> None:
    code, out, err = run_check(tmp_path, ALLOWED + f"facts_source: {source}\n", capsys)
    assert code == 2
    line = len(ALLOWED.splitlines()) + 1
    assert f"change.yml:{line}:15: facts_source: a change file's facts are self-declared; it cannot claim " \
           f"'{source}' (remove the key)" in err


def test_declared_read_permission_and_bot_are_not_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = ALLOWED.replace("  - user: carol\n    state: approved\n",
                           "  - user: carol\n    state: approved\n    permission: read\n")
    text = text.replace("  - user: bob\n    state: approved\n", "  - user: bob\n    state: approved\n    bot: true\n")
    code, out, err = run_check(tmp_path, text, capsys)
    assert code == 1, out + err
    decision = json.loads((tmp_path / "decision.json").read_text())
    msg = decision["rules"][0]["message"]
    assert "bob (bot not allowed by the policy)" in msg and "carol (no write access (read))" in msg


@pytest.mark.parametrize("stamp, why", [
    ('"2026-11-23T16:45:00"', "the time '2026-11-23T16:45:00' has no zone: add Z or an offset"),
    ('"last tuesday"', "expected an ISO 8601 time with a zone (e.g. 2026-11-23T15:00:00Z), got 'last tuesday'"),
    ('"2026-02-30T10:00:00Z"', "expected an ISO 8601 time with a zone"),
])
def test_review_time_without_zone_or_unparseable_is_invalid_input(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str],
                                                                  stamp: str, why: str) -> None:
    text = ALLOWED.replace('submitted_at: "2026-11-23T16:45:00Z"', f"submitted_at: {stamp}")
    assert text != ALLOWED
    code, out, err = run_check(tmp_path, text, capsys)
    assert code == 2, out + err
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.strip().startswith(f"submitted_at: {stamp}"))
    assert f"change.yml:{line}:19: reviews[2].submitted_at: {why}" in err
    assert not (tmp_path / "decision.json").exists() or json.loads(
        (tmp_path / "decision.json").read_text())["decision"] != "allow"


def test_every_bad_time_is_one_problem_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = ALLOWED.replace('"2026-11-23T14:10:00Z"', '"2026-11-23 14:10"').replace(
        "    status: success\n    commit: 9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6\n  - name: lint",
        "    status: success\n    commit: 9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6\n    completed_at: soon\n"
        "  - name: lint")
    code, out, err = run_check(tmp_path, text, capsys)
    assert code == 2
    assert "reviews[0].submitted_at: the time '2026-11-23 14:10' has no zone" in err
    assert "checks[0].completed_at: expected an ISO 8601 time with a zone" in err
    assert "2 problems" in err
