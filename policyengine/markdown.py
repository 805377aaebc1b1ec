"""Split a Markdown document into its headed sections (pure: text in, sections out).

Headings are ATX (``## Rollback steps``) or setext (underlined with ``===``/``---``); lines
inside a fenced code block are never headings. A section's content is everything up to the
next heading of the same or a higher level.
"""

from __future__ import annotations

import re

from policyengine.facts import Section

ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
FENCE = re.compile(r"^ {0,3}(```|~~~)")


def sections(text: str) -> tuple[Section, ...]:
    """Return every heading of a Markdown document with its level and content."""
    lines = text.splitlines()
    heads: list[tuple[int, int, str, int]] = []  # (line index, level, title, first content line)
    in_fence = False
    for i, line in enumerate(lines):
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        m = ATX.match(line)
        if m:
            heads.append((i, len(m.group(1)), (m.group(2) or "").strip(), i + 1))
            continue
        m = SETEXT.match(line)
        if m and i > 0 and lines[i - 1].strip() and not (heads and heads[-1][0] == i - 1):
            prev = lines[i - 1]
            if not ATX.match(prev) and not FENCE.match(prev):
                heads.append((i - 1, 1 if m.group(1)[0] == "=" else 2, prev.strip(), i + 1))
    out: list[Section] = []
    for n, (_, level, title, start) in enumerate(heads):
        end = len(lines)
        for later in heads[n + 1 :]:
            if later[1] <= level:
                end = later[0]
                break
        out.append(Section(level, title, "\n".join(lines[start:end])))
    return tuple(out)
