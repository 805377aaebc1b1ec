"""Split a Markdown document into its headed sections, with a real CommonMark parser.

Only real headings count: ATX (``## Rollback steps``) and setext (underlined with ``===`` or
``---``) at the top level of the document. Text that merely looks like a heading inside an
HTML comment, an HTML block, a fenced or indented code block, a blockquote or a list item is
not a heading: a plan must not pass because its required headings are commented out.

A section runs to the next heading of the same or a higher level, so its subsections belong
to it. Its ``content`` is the source of the blocks inside it other than headings and
thematic breaks (paragraphs, lists, code, tables, quotes, HTML), so a section that holds only
sub-headings, or only a ``---`` line, has no content.

Plain documents (ATX headings, paragraphs and tight lists; no HTML, code, quotes, tables,
setext headings, rules or tabs) are read by a line scanner that gives the same sections
without importing markdown-it (~15 ms of a ``check``). Anything the scanner is not sure
about goes to markdown-it; tests/test_markdown_sections.py compares the two on real plans and
on thousands of mutated ones.
"""

from __future__ import annotations

import re
from typing import Any

from policyengine.facts import Section

_BLOCKS = {"paragraph_open", "bullet_list_open", "ordered_list_open", "blockquote_open", "fence", "code_block",
           "html_block", "table_open", "heading_open", "hr"}
_PARSER: Any = None

# An ATX heading the scanner reads: 1-6 hashes at the margin, a space, a title without another
# hash or a backslash (closing sequences and escapes go to markdown-it).
_ATX = re.compile(r"#{1,6} +([^#\\]*[^#\\ ])[ ]*")
_LIST_ITEM = re.compile(r"(?:([-+*])|([0-9]{1,9})[.)])(?: +(.?)|$)")
# Anything that could start a block the scanner does not model: HTML, quotes, fences, tables
# (any pipe), link reference definitions, headings (#), and lines that could be a rule or a
# setext underline (only -, =, *, _ and spaces).
_OPENERS = ("<", ">", "```", "~~~", "[", "#")
_RULE_OR_UNDERLINE = re.compile(r"[-=*_ ]+")
# Line breaks markdown-it does not treat as line breaks, but str.splitlines() does, and NUL.
_ODD_BREAKS = frozenset("\r\x00\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def _scan(text: str) -> tuple[Section, ...] | None:
    """Return the sections of a plain document, or None when markdown-it must read it."""
    if "\t" in text or "|" in text or not _ODD_BREAKS.isdisjoint(text):
        return None
    lines = text.splitlines()  # the same lines as markdown-it's, without the odd breaks
    if lines and not lines[-1].strip(" ") and not text.endswith("\n"):
        return None  # markdown-it counts a last blank line without a newline differently
    headings: list[tuple[int, int, str]] = []  # (line, level, title)
    content = [False] * len(lines)  # whether a line is in a block other than a heading
    previous = "blank"  # the kind of the line before: blank, heading or text
    in_list = False  # whether the current run of non-blank lines has reached a list item
    for n, line in enumerate(lines):
        stripped = line.lstrip(" ")
        if not stripped:
            # A list holds the blank lines after it (up to the next block, or the end).
            content[n] = in_list
            previous = "blank"
            continue
        if _RULE_OR_UNDERLINE.fullmatch(stripped):
            return None
        if len(stripped) != len(line) and previous != "text":
            return None  # indented code, or a list continued over a blank line
        if line.startswith("#"):
            match = _ATX.fullmatch(line)
            if match is None:
                return None
            headings.append((n, len(line) - len(line.lstrip("#")), match.group(1)))
            previous, in_list = "heading", False
            continue
        if stripped.startswith(_OPENERS):
            return None
        marker = _LIST_ITEM.match(stripped)
        if marker is not None and not marker.group(3):
            return None  # an empty list item: what follows it depends on indentation
        # In a paragraph, only a bullet or "1." starts a list; "2." is more of the paragraph.
        item = marker is not None and (in_list or previous != "text" or marker.group(1) is not None
                                       or int(marker.group(2)) == 1)
        if previous == "blank":
            if item and in_list:
                return None  # a loose list: one list over the blank line
            in_list = False
        in_list = in_list or item
        content[n] = True
        previous = "text"
    out: list[Section] = []
    for k, (n, level, title) in enumerate(headings):
        end = next((m for m, other, _ in headings[k + 1:] if other <= level), len(lines))
        body = [lines[m] for m in range(n + 1, end) if content[m]]
        out.append(Section(level, title, "\n".join(body)))
    return tuple(out)


def sections(text: str) -> tuple[Section, ...]:
    """Return every top-level heading of a Markdown document with its level and content."""
    scanned = _scan(text)
    if scanned is not None:
        return scanned
    return parsed_sections(text)


def parsed_sections(text: str) -> tuple[Section, ...]:
    """Return the sections as markdown-it's CommonMark parser reads them (any document)."""
    global _PARSER
    if _PARSER is None:
        from markdown_it import MarkdownIt

        _PARSER = MarkdownIt("commonmark").enable("table")
    lines = text.splitlines()
    tokens = _PARSER.parse(text)
    blocks: list[tuple[str, int, int, int, str]] = []  # (type, start line, end line, heading level, title)
    for i, tok in enumerate(tokens):
        if tok.level != 0 or tok.type not in _BLOCKS or tok.map is None:
            continue
        level, title = 0, ""
        if tok.type == "heading_open":
            level = int(tok.tag[1:])
            inline = tokens[i + 1] if i + 1 < len(tokens) else None
            title = inline.content.strip() if inline is not None and inline.type == "inline" else ""
        blocks.append((tok.type, tok.map[0], tok.map[1], level, title))
    out: list[Section] = []
    for n, (kind, _, _, level, title) in enumerate(blocks):
        if kind != "heading_open":
            continue
        body: list[str] = []
        for other_kind, start, end, other_level, _ in blocks[n + 1:]:
            if other_kind == "heading_open" and other_level <= level:
                break
            if other_kind not in ("heading_open", "hr"):
                body.extend(lines[start:end])
        out.append(Section(level, title, "\n".join(body)))
    return tuple(out)
