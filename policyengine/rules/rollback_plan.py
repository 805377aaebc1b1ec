"""``rollback_plan``: a rollback plan is in the workspace, with the sections a reviewer needs.

Headings are Markdown ATX (``## Rollback steps``) or setext (underlined with ``===``/``---``).
A required section matches a heading case-insensitively, ignoring surrounding whitespace,
repeated spaces, trailing ``#`` and a trailing colon. Its content is everything up to the
next heading of the same or a higher level; it must hold some text other than whitespace
and HTML comments (a placeholder comment is not a plan). ``min_length`` counts the
characters of the plan without surrounding whitespace.
"""

from __future__ import annotations

import re
from typing import Any

from policyengine.errors import WorkspaceError
from policyengine.models import Outcome, Status
from policyengine.rules.base import Context, RuleType

MAX_PLAN_BYTES = 4 * 1024 * 1024
ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
FENCE = re.compile(r"^ {0,3}(```|~~~)")
COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)


def _norm(title: str) -> str:
    return " ".join(title.strip().rstrip(":").split()).casefold()


def sections(text: str) -> list[tuple[int, str, str]]:
    """Return ``(level, title, content)`` for each heading of a Markdown document."""
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
    out: list[tuple[int, str, str]] = []
    for n, (_, level, title, start) in enumerate(heads):
        end = len(lines)
        for later in heads[n + 1 :]:
            if later[1] <= level:
                end = later[0]
                break
        out.append((level, title, "\n".join(lines[start:end])))
    return out


class RollbackPlanRule(RuleType):
    """A rollback plan exists and documents the required sections."""

    type_name = "rollback_plan"

    def paths(self) -> list[str]:
        return [self.params["path"]]

    def evaluate(self, ctx: Context) -> Outcome:
        rel = self.params["path"]
        try:
            real = ctx.workspace.resolve(rel)
        except WorkspaceError as exc:
            return Outcome(Status.FAIL, str(exc), {"path": rel})
        if not real.exists():
            return Outcome(Status.FAIL, f"no rollback plan: {rel} does not exist in the workspace", {"path": rel})
        if not real.is_file():
            return Outcome(Status.FAIL, f"no rollback plan: {rel} is not a file", {"path": rel})
        try:
            data, info = ctx.workspace.read_bytes(rel, MAX_PLAN_BYTES)
            text = data.decode("utf-8-sig")
        except WorkspaceError as exc:
            return Outcome(Status.ERROR, str(exc), {"path": rel})
        except UnicodeDecodeError as exc:
            return Outcome(Status.ERROR, f"{rel} is not UTF-8 text (byte {exc.start}): cannot read the plan",
                           {"path": rel})

        found: dict[str, list[str]] = {}
        for _, title, content in sections(text):
            found.setdefault(_norm(title), []).append(COMMENT.sub("", content).strip())
        missing, empty = [], []
        for want in self.params.get("required_sections", []):
            contents = found.get(_norm(want))
            if contents is None:
                missing.append(want)
            elif not any(contents):
                empty.append(want)
        length = len(text.strip())
        details: dict[str, Any] = {
            "path": rel,
            "sha256": info.sha256,
            "length": length,
            "sections_found": sorted({t for _, t, _ in sections(text)}),
            "missing_sections": missing,
            "empty_sections": empty,
        }
        problems = []
        if missing:
            problems.append("missing section" + ("s " if len(missing) > 1 else " ") + ", ".join(f'"{m}"' for m in missing))
        if empty:
            problems.append("empty section" + ("s " if len(empty) > 1 else " ") + ", ".join(f'"{m}"' for m in empty))
        min_length = self.params.get("min_length")
        if min_length and length < min_length:
            problems.append(f"{length} characters, fewer than the {min_length} required")
        if problems:
            return Outcome(Status.FAIL, f"rollback plan {rel}: " + "; ".join(problems), details, (info,))
        req = self.params.get("required_sections", [])
        tail = f" with sections {', '.join(repr(r) for r in req)}" if req else ""
        return Outcome(Status.PASS, f"rollback plan {rel} present{tail}", details, (info,))
