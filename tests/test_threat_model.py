"""docs/threat-model.md names real tests: every `file::test` it cites exists."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_test_the_threat_model_cites_exists() -> None:
    text = (REPO / "docs" / "threat-model.md").read_text("utf-8")
    cited: list[tuple[str, str]] = []
    for row in (line for line in text.splitlines() if line.startswith("| ")):
        current = None
        for ref in re.findall(r"`([^`]+)`", row):
            match = re.fullmatch(r"(?:(test_\w+\.py)::)?(?:\w+::)?(test_\w+)(?:\[.*\])?", ref)
            if match and (match.group(1) or current):
                current = match.group(1) or current
                cited.append((current, match.group(2)))
            elif re.fullmatch(r"test_\w+\.py", ref):
                current = ref
    assert len(cited) > 60
    missing = [f"{f}::{t}" for f, t in cited
               if not (REPO / "tests" / f).is_file()
               or not re.search(rf"def {t}\b", (REPO / "tests" / f).read_text("utf-8"))]
    assert missing == [], "docs/threat-model.md cites tests that do not exist"
