"""`policy explain`: the control matrix, generated from the policy, and kept current in docs/."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from policyengine.language.explain import FOCUS, matrix, render
from policyengine.language.policy import parse_policy
from policyengine.rules import RULE_TYPES

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["soc2-production", "soc2-small-team"])
def test_the_checked_in_matrices_are_current(name: str) -> None:
    """Regenerate with: policyengine policy explain policies/NAME.yml -o docs/controls/NAME.md"""
    run = subprocess.run([sys.executable, "-m", "policyengine", "policy", "explain", f"policies/{name}.yml"],
                         cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout == (REPO / "docs" / "controls" / f"{name}.md").read_text("utf-8"), (
        f"docs/controls/{name}.md is stale: policyengine policy explain policies/{name}.yml -o docs/controls/{name}.md")


def test_every_rule_type_is_explained_with_points_of_focus() -> None:
    rules = {
        "approvals": "min_approvals: 2\n    exclude: [author]\n    from_teams: [sec]\n    cover_range: true",
        "tests_passed": 'reports: ["r/*.xml"]\n    min_tests: 3\n    allow_skipped: false\n    allow_flaky: false',
        "checks_passed": "checks: [build]",
        "rollback_plan": "path: R.md\n    required_sections: [Steps]\n    min_length: 10",
        "deploy_window": "timezone: UTC\n    allow: [{days: [mon], between: ['09:00', '10:00']}]\n    holidays: US",
        "ticket": "jira: {projects: [PAY], statuses: [Done], issue_types: [Story]}\n    servicenow: {}",
    }
    assert set(rules) == set(RULE_TYPES)
    body = "".join(f"  - id: {t}\n    type: {t}\n    {p}\n" for t, p in rules.items())
    policy = parse_policy(f"version: 1\nname: all\nrules:\n{body}".encode(), file="all.yml")
    data = matrix(policy)
    by_id = {r["id"]: r for r in data["rules"]}
    assert "At least 2 approving reviews from members of sec, not counting the pull request's author." in \
        by_id["approvals"]["requires"]
    assert "through a pull request approved the same way" in by_id["approvals"]["requires"]
    assert "at least 3 tests ran" in by_id["tests_passed"]["requires"]
    assert "No test may be skipped." in by_id["tests_passed"]["requires"]
    assert "a flaky test" in by_id["tests_passed"]["fails_when"]
    assert "mon 09:00-10:00" in by_id["deploy_window"]["requires"]
    assert "public holiday of US" in by_id["deploy_window"]["requires"]
    assert "a Jira issue of PAY in status 'Done' of type Story or a ServiceNow change request" in \
        by_id["ticket"]["requires"]
    for row in data["rules"]:
        assert row["points_of_focus"] and set(row["points_of_focus"]) <= set(FOCUS.values())
        assert row["fails_when"] and row["errors_when"] and row["evidence"]


def test_formats_render_and_escape(tmp_path: Path) -> None:
    policy = parse_policy(b'version: 1\nname: "<script>x</script>"\nrules:\n  - id: c\n    type: checks_passed\n'
                          b'    checks: ["a|b"]\n', file="p.yml")
    assert json.loads(render(policy, "json"))["rules"][0]["requires"].startswith("The CI checks a|b")
    page = render(policy, "html")
    assert "<script>x" not in page and "&lt;script&gt;" in page
    assert "a\\|b" in render(policy, "md")  # a pipe cannot break the table
