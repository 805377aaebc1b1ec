"""Split a Markdown document into its headed sections, with a real CommonMark parser.

Only real headings count: ATX (``## Rollback steps``) and setext (underlined with ``===`` or
``---``) at the top level of the document. Text that merely looks like a heading inside an
HTML comment, an HTML block, a fenced or indented code block, a blockquote or a list item is
not a heading: a plan must not pass because its required headings are commented out.

A section runs to the next heading of the same or a higher level, so its subsections belong
to it. Its ``content`` is the source of the blocks inside it other than headings and
thematic breaks (paragraphs, lists, code, tables, quotes, HTML), so a section that holds only
sub-headings, or only a ``---`` line, has no content.
"""

from __future__ import annotations

from markdown_it import MarkdownIt

from policyengine.facts import Section

_BLOCKS = {"paragraph_open", "bullet_list_open", "ordered_list_open", "blockquote_open", "fence", "code_block",
           "html_block", "table_open", "heading_open", "hr"}
_PARSER = MarkdownIt("commonmark").enable("table")


def sections(text: str) -> tuple[Section, ...]:
    """Return every top-level heading of a Markdown document with its level and content."""
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
