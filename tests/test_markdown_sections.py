"""Rollback plans are read with a CommonMark parser: look-alike headings never count."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import change, run_rule

from policyengine.markdown import sections
from policyengine.models import Status
from policyengine.rules.rollback_plan import RollbackPlanRule

PARAMS = {"path": "ROLLBACK.md", "required_sections": ["Rollback steps", "Verification"]}
GOOD = "## Rollback steps\nRevert the deploy with `make rollback`.\n\n## Verification\nCheck /health returns 200.\n"


def _judge(tmp_path: Path, text: str) -> tuple[Status, dict[str, object]]:
    (tmp_path / "ROLLBACK.md").write_text(text, encoding="utf-8")
    out = run_rule(RollbackPlanRule, PARAMS, change(), workspace=tmp_path)
    return out.status, out.details


def test_a_real_plan_passes(tmp_path: Path) -> None:
    assert _judge(tmp_path, GOOD)[0] is Status.PASS


@pytest.mark.parametrize("hidden", [
    "<!--\n## Rollback steps\nRevert it.\n-->\n",                     # an HTML comment
    "<!-- ## Rollback steps -->\nRevert it.\n",                        # a one-line comment
    "```\n## Rollback steps\nRevert it.\n```\n",                       # a fenced code block
    "~~~md\n## Rollback steps\nRevert it.\n~~~\n",                     # a tilde fence
    "    ## Rollback steps\n    Revert it.\n",                         # an indented code block
    "<details>\n\n## Rollback steps\n\n</details>\n",                  # real, but only a closing tag under it
    "> ## Rollback steps\n> Revert it.\n",                             # a blockquote
    "- ## Rollback steps\n  Revert it.\n",                             # a list item
    "\\## Rollback steps\nRevert it.\n",                               # an escaped hash
])
def test_a_look_alike_heading_is_not_a_section(tmp_path: Path, hidden: str) -> None:
    text = hidden + "\n## Verification\nCheck /health returns 200.\n"
    status, details = _judge(tmp_path, text)
    if hidden.startswith("<details>"):
        # CommonMark ends an HTML block at a blank line: this heading is real, and has no content.
        assert status is Status.FAIL and details["empty_sections"] == ["Rollback steps"]
        return
    assert status is Status.FAIL
    assert details["missing_sections"] == ["Rollback steps"]


@pytest.mark.parametrize("body", [
    "",                                  # nothing
    "<!-- TODO: write the steps -->\n",  # a placeholder comment
    "### Details\n",                     # only a sub-heading
    "---\n",                             # only a thematic break (after a blank line)
    "\n\n   \n",                         # whitespace
])
def test_a_required_section_needs_content(tmp_path: Path, body: str) -> None:
    text = "## Rollback steps\n\n" + body + "\n## Verification\nCheck /health returns 200.\n"
    status, details = _judge(tmp_path, text)
    assert status is Status.FAIL
    assert details["empty_sections"] == ["Rollback steps"]


def test_subsection_content_belongs_to_its_section(tmp_path: Path) -> None:
    text = "## Rollback steps\n### Database\nRestore the snapshot.\n## Verification\nCheck it.\n"
    assert _judge(tmp_path, text)[0] is Status.PASS


def test_setext_headings_and_a_list_as_content() -> None:
    found = sections("Rollback steps\n==============\n\n1. revert\n2. redeploy\n\nVerification:\n---\nok\n")
    assert [(s.level, s.title) for s in found] == [(1, "Rollback steps"), (2, "Verification:")]
    assert "1. revert" in found[0].content
    assert found[1].content == "ok"
