"""Rollback plans are read with a CommonMark parser: look-alike headings never count."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import change, run_rule

from policyengine.workspace.markdown import sections
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


# The line scanner (policyengine.workspace.markdown._scan) reads plain plans without markdown-it; where it
# answers, it must answer exactly as markdown-it does.

REPO = Path(__file__).resolve().parents[1]
_PIECES = [
    "# Title", "## Rollback steps", "### Sub", "####### seven", "#nospace", "## ", "#", "## Closing ##", "# A # B",
    "Some text here.", "more text", "- item", "* star item", "+ plus", "1. one", "2) two", "10. ten", "01. zero",
    "-", "1.", "- ", "  continued", "   - nested", "    code-like", " one space", "", "", "", "  ", "Title\u00a0nbsp",
    "text with # hash", "---", "===", "***", "- - -", "> quote", "<div>", "```", "~~~", "[ref]: /x", "a | b", "\\# esc",
    "## Ti\\tle", "2026. a year", "-notitem", "*emph* text", "## Title   ", "#  Two spaces", "  ## indented", "-- dash",
    "\ttab", "crlf\r", "3. three", "   text", "  - x",
]


def _fuzzed(count: int) -> list[str]:
    import random

    rng = random.Random(19)  # fixed: the same documents on every run
    docs = []
    for _ in range(count):
        lines = [rng.choice(_PIECES) for _ in range(rng.randint(0, 12))]
        docs.append("\n".join(lines) + rng.choice(["", "\n", "\n\n"]))
    return docs


def test_the_scanner_agrees_with_markdown_it_on_real_plans() -> None:
    from policyengine.workspace.markdown import _scan, parsed_sections

    plans = sorted(p for root in ("examples", "policies", "tests/fixtures", "tests/golden") for p in (REPO / root).rglob("*.md"))
    assert len(plans) > 10
    read = 0
    for plan in plans:
        text = plan.read_text("utf-8")
        got = _scan(text)
        read += got is not None
        assert got is None or got == parsed_sections(text), plan
    assert _scan((REPO / "examples" / "workspace" / "ROLLBACK.md").read_text("utf-8")) is not None
    assert read > len(plans) // 2


def test_the_scanner_agrees_with_markdown_it_on_mutated_documents() -> None:
    from policyengine.workspace.markdown import _scan, parsed_sections

    read = 0
    for text in _fuzzed(6000):
        got = _scan(text)
        if got is not None:
            read += 1
            assert got == parsed_sections(text), repr(text)
    assert read > 500  # the comparison is not vacuous


@pytest.mark.parametrize("text", [
    "## Steps\n- a\n\n- b\n",           # a loose list holds the blank line: markdown-it decides
    "## Steps\ntext\n2. more\n",         # "2." cannot interrupt a paragraph
    "## Steps\n\n    code\n",            # indented code
    "Steps\n-----\n",                    # a setext heading
    "## Steps ##\n",                      # a closing sequence
    "## Steps\n- a\n  ",                  # a last blank line without a newline
])
def test_what_the_scanner_is_unsure_of_goes_to_markdown_it(text: str) -> None:
    from policyengine.workspace.markdown import _scan, parsed_sections

    assert sections(text) == parsed_sections(text)
    if text.startswith(("## Steps\n- a\n\n", "## Steps\n\n", "Steps\n", "## Steps ##", "## Steps\n- a\n  ")):
        assert _scan(text) is None
