"""README.md is a front door (issue 18): short, and every link in it and in docs/ leads somewhere.

Links are checked offline: a relative link must name a file or folder of the repository, and a
`#anchor` a heading of the target (GitHub's slugs). Two pages are being written by other issues;
until they land they are the only links allowed to point nowhere, declared in PENDING.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").rglob("*.md"))]
PENDING = {
    "docs/population.md": "\"Is the population complete?\": written by issue 16 (audit reconcile)",
    "docs/auditor-checks.md": "\"What an auditor can check without trusting you\": written by issue 17",
}


def _without_code(text: str) -> str:
    text = re.sub(r"^( *)```.*?^\1```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def slugs(path: Path) -> set[str]:
    out: set[str] = set()
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} (.+)$", re.sub(r"^( *)```.*?^\1```", "", path.read_text("utf-8"),
                                                         flags=re.S | re.M), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def links(doc: str) -> list[tuple[str, str]]:
    text = _without_code((REPO / doc).read_text("utf-8"))
    return [(m[1], m[2] or "") for m in re.finditer(r"\]\(([^)\s#]*)(?:#([^)\s]+))?\)", text)]


def test_the_slugs_follow_github() -> None:
    page = REPO / "docs" / "policy.md"
    assert {"approvals", "errors-in-policies-and-change-files", "writing-testing-and-reviewing-a-policy"} <= slugs(page)


@pytest.mark.parametrize("doc", DOCS)
def test_every_relative_link_and_anchor_resolves(doc: str) -> None:
    base = (REPO / doc).parent
    broken = []
    for target, anchor in links(doc):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        path = (base / target).resolve() if target else REPO / doc
        name = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)
        if not path.exists():
            if name not in PENDING:
                broken.append(f"{target}: no such file")
            continue
        if anchor and path.suffix == ".md" and anchor not in slugs(path):
            broken.append(f"{target}#{anchor}: no such heading")
    assert broken == [], f"{doc}: {broken}"


def test_pending_pages_are_linked_once_from_the_readme() -> None:
    readme = [t for t, _ in links("README.md")]
    for page in PENDING:
        assert readme.count(page) == 1, page


def test_the_readme_is_a_front_door() -> None:
    text = (REPO / "README.md").read_text("utf-8")
    assert text.count("\n") <= 300
    headings = re.findall(r"^## (.+)$", _without_code(text), flags=re.M)
    for wanted in ("Quickstart", "Gate your first change locally", "Install", "In CI: two complete pipelines",
                   "For auditors: five commands", "Documentation"):
        assert wanted in headings, wanted
    # the quickstart's two commands, exactly; .ci/run runs exactly the second
    assert "\nbash scripts/demo.sh    #" in text and "\nbash scripts/test.sh    #" in text
    assert (REPO / ".ci" / "run").read_text("utf-8").rstrip().endswith("\nbash scripts/test.sh")
    # each pipeline block is marked for the tooling that keeps it equal to examples/pipelines/
    for name in ("examples/pipelines/github-deploy.yml", "examples/pipelines/gitlab-ci.yml"):
        assert re.search(rf"^<!-- pipeline: {re.escape(name)} -->\n```yaml\n", text, flags=re.M), name
    # no install line points at an unpublished version as if it were published
    assert "policyengine-gate==0.1.0" not in text
    # every page of docs/ is on the map
    mapped = {t for t, _ in links("README.md")}
    missing = [d for d in DOCS if d.startswith("docs/") and d.count("/") == 1 and d not in mapped]
    assert missing == []


INSTALLS = re.compile(r"extends: \.policyengine-gate|uses: [\w-]+/policyengine@|pip install|POLICYENGINE_INSTALL|"
                      r"POLICYENGINE_REQUIREMENTS|\.gitlab-ci-template\.yml")


def ci_snippets() -> list[tuple[str, int, str]]:
    out = []
    for doc in DOCS:
        text = (REPO / doc).read_text("utf-8")
        for m in re.finditer(r"^( *)```(yaml|yml)[^\n]*\n(.*?)^\1```", text, flags=re.S | re.M):
            if INSTALLS.search(m[3]):
                out.append((doc, text.count("\n", 0, m.start()) + 1, m[3]))
    return out


def test_every_ci_snippet_says_the_install_needs_a_published_or_vendored_release() -> None:
    snippets = ci_snippets()
    assert len(snippets) >= 8 and {d for d, _, _ in snippets} >= {"README.md", "docs/ci-integration.md"}
    joined = [(doc, line, re.sub(r"\s*\n\s*#\s*", " ", body)) for doc, line, body in snippets]
    silent = [f"{doc}:{line}" for doc, line, body in joined
              if "policyengine-gate must be published (or vendored" not in body]
    assert silent == []
