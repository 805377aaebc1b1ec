"""``rollback_plan``: a rollback plan is in the workspace, with the sections a reviewer needs.

The plan is parsed as CommonMark (``policyengine.workspace.markdown``): only real top-level headings
count, ATX (``## Rollback steps``) or setext (underlined with ``===``/``---``); a heading
inside an HTML comment, a code block, a quote or a list is not one. A required section
matches a heading case-insensitively, ignoring surrounding whitespace, repeated spaces and a
trailing colon. It must have content: some block other than headings up to the next heading
of the same or a higher level, holding text other than whitespace, HTML comments and HTML tags
(a placeholder comment, or a bare ``</details>``, is not a plan). ``min_length`` counts the characters of the plan
without surrounding whitespace.
"""

from __future__ import annotations

from typing import Any

from policyengine.facts import DocumentRequest, FactRequest
from policyengine.models import Outcome, Status
from policyengine.rules.base import Context, RuleType

MAX_PLAN_BYTES = 4 * 1024 * 1024


def _norm(title: str) -> str:
    return " ".join(title.strip().rstrip(":").split()).casefold()


class RollbackPlanRule(RuleType):
    """A rollback plan exists and documents the required sections."""

    type_name = "rollback_plan"

    def paths(self) -> list[str]:
        return [self.params["path"]]

    def needs(self) -> list[FactRequest]:
        return [DocumentRequest(self.params["path"], MAX_PLAN_BYTES)]

    def evaluate(self, ctx: Context) -> Outcome:
        rel = self.params["path"]
        doc = ctx.facts.document(DocumentRequest(rel, MAX_PLAN_BYTES))
        if doc is None:  # fail closed: a judge without the facts it needs cannot pass
            return Outcome(Status.ERROR, f"the rollback plan {rel} was not gathered", {"path": rel})
        if doc.problem == "outside":
            return Outcome(Status.FAIL, str(doc.message), {"path": rel})
        if doc.problem in ("missing", "not_file"):
            return Outcome(Status.FAIL, f"no rollback plan: {doc.message}", {"path": rel})
        if doc.problem == "not_utf8":
            return Outcome(Status.ERROR, f"{doc.message}: cannot read the plan", {"path": rel})
        length = doc.length
        if doc.problem is not None or length is None or doc.file is None:
            return Outcome(Status.ERROR, str(doc.message or f"cannot read {rel}"), {"path": rel})
        info = doc.file

        # Replay judges from the facts as recorded (``facts.json``): a section's text and the
        # plan's length as read, never the redacted copy in the bundle.
        found: dict[str, list[bool]] = {}
        for section in doc.sections:
            found.setdefault(_norm(section.title), []).append(section.has_text)
        missing, empty = [], []
        for want in self.params.get("required_sections", []):
            contents = found.get(_norm(want))
            if contents is None:
                missing.append(want)
            elif not any(contents):
                empty.append(want)
        details: dict[str, Any] = {
            "path": rel,
            "sha256": info.sha256,
            "length": length,
            "sections_found": sorted({section.title for section in doc.sections}),
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
