"""checks_passed and rollback_plan."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import HEAD, OLD, change, run_rule

from policyengine.workspace.markdown import sections
from policyengine.models import Status
from policyengine.rules.checks_passed import ChecksPassedRule
from policyengine.rules.rollback_plan import RollbackPlanRule


def check(name: str, status: str = "success", commit: str = HEAD, **kw: str) -> dict[str, str]:
    return {"name": name, "status": status, "commit": commit, **kw}


class TestChecksPassed:
    def test_all_success_on_deployed_commit(self) -> None:
        out = run_rule(ChecksPassedRule, {"checks": ["build", "lint"]}, change(checks=[check("build"), check("lint")]))
        assert out.status is Status.PASS

    def test_missing_failed_and_other_commit(self) -> None:
        checks = [check("build", "failure"), check("lint", commit=OLD)]
        out = run_rule(ChecksPassedRule, {"checks": ["build", "lint", "scan"]}, change(checks=checks))
        assert out.status is Status.FAIL
        assert "build: failure" in out.message
        assert "lint: reported only on other commits (5e4d3c2), not on 9f1c2d3" in out.message
        assert "scan: not reported" in out.message

    def test_latest_rerun_decides(self) -> None:
        checks = [check("build", "failure", completed_at="2026-11-23T10:00:00Z"),
                  check("build", "success", completed_at="2026-11-23T11:00:00Z")]
        assert run_rule(ChecksPassedRule, {"checks": ["build"]}, change(checks=checks)).status is Status.PASS
        checks.reverse()
        checks[0]["completed_at"], checks[1]["completed_at"] = checks[1]["completed_at"], checks[0]["completed_at"]
        assert run_rule(ChecksPassedRule, {"checks": ["build"]}, change(checks=checks)).status is Status.FAIL

    def test_pending_is_not_success(self) -> None:
        out = run_rule(ChecksPassedRule, {"checks": ["build"]}, change(checks=[check("build", "pending")]))
        assert out.status is Status.FAIL


PLAN = """# Plan

## Rollback steps
1. redeploy previous tag

## Verification:
Health checks are green.
"""


class TestRollbackPlan:
    params = {"path": "ROLLBACK.md", "required_sections": ["rollback STEPS", "Verification"]}

    def write(self, tmp_path: Path, text: str, name: str = "ROLLBACK.md") -> Path:
        (tmp_path / name).write_text(text, encoding="utf-8")
        return tmp_path

    def test_present_with_sections(self, tmp_path: Path) -> None:
        out = run_rule(RollbackPlanRule, self.params, workspace=self.write(tmp_path, PLAN))
        assert out.status is Status.PASS
        assert out.files and out.files[0].relpath == "ROLLBACK.md"

    def test_missing_file_fails(self, tmp_path: Path) -> None:
        out = run_rule(RollbackPlanRule, self.params, workspace=tmp_path)
        assert out.status is Status.FAIL
        assert "does not exist" in out.message

    def test_missing_and_empty_sections(self, tmp_path: Path) -> None:
        text = "# Plan\n\n## Rollback steps\n<!-- TODO -->\n\n## Other\ntext\n"
        out = run_rule(RollbackPlanRule, self.params, workspace=self.write(tmp_path, text))
        assert out.status is Status.FAIL
        assert out.details["missing_sections"] == ["Verification"]
        assert out.details["empty_sections"] == ["rollback STEPS"]

    def test_subsection_content_counts_but_sibling_does_not(self, tmp_path: Path) -> None:
        text = "## Rollback steps\n### Database\nrestore snapshot\n## Verification\n"
        out = run_rule(RollbackPlanRule, self.params, workspace=self.write(tmp_path, text))
        assert out.details["empty_sections"] == ["Verification"]

    def test_setext_and_fenced_code(self, tmp_path: Path) -> None:
        text = "Rollback steps\n--------------\n```\n# not a heading\n```\nVerification\n============\nok\n"
        assert [s.title for s in sections(text)] == ["Rollback steps", "Verification"]
        assert run_rule(RollbackPlanRule, self.params, workspace=self.write(tmp_path, text)).status is Status.PASS

    def test_min_length(self, tmp_path: Path) -> None:
        out = run_rule(RollbackPlanRule, {**self.params, "min_length": 5000}, workspace=self.write(tmp_path, PLAN))
        assert out.status is Status.FAIL
        assert "fewer than the 5000 required" in out.message

    def test_symlink_outside_workspace_fails_and_is_not_read(self, tmp_path: Path) -> None:
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "secret.md").write_text(PLAN)
        ws = tmp_path / "ws"
        ws.mkdir()
        os.symlink(outside / "secret.md", ws / "ROLLBACK.md")
        out = run_rule(RollbackPlanRule, self.params, workspace=ws)
        assert out.status is Status.FAIL
        assert "outside the workspace" in out.message
        assert out.files == ()

    def test_symlink_inside_workspace_is_followed(self, tmp_path: Path) -> None:
        self.write(tmp_path, PLAN, "docs.md")
        os.symlink(tmp_path / "docs.md", tmp_path / "ROLLBACK.md")
        assert run_rule(RollbackPlanRule, self.params, workspace=tmp_path).status is Status.PASS

    def test_not_utf8_is_an_error(self, tmp_path: Path) -> None:
        (tmp_path / "ROLLBACK.md").write_bytes(b"## Rollback steps\n\xff\xfe\n")
        assert run_rule(RollbackPlanRule, self.params, workspace=tmp_path).status is Status.ERROR

    @pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
    def test_unreadable_is_an_error(self, tmp_path: Path) -> None:
        p = self.write(tmp_path, PLAN) / "ROLLBACK.md"
        p.chmod(0)
        assert run_rule(RollbackPlanRule, self.params, workspace=tmp_path).status is Status.ERROR


def test_checks_unavailable_is_an_error() -> None:
    c = change(checks=[check("build")], unavailable={"checks": "GET /commits/x/check-runs: timed out"})
    out = run_rule(ChecksPassedRule, {"checks": ["build"]}, c)
    assert out.status is Status.ERROR
    assert "timed out" in out.message
