"""Small builders shared by tests."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from policyengine.facts import Facts
from policyengine.gather import GATHERERS, GatherContext
from policyengine.models import Enforcement, Outcome
from policyengine.rules.base import Context, RuleSpec, RuleType
from policyengine.workspace.files import Workspace

HEAD = "9f1c2d3e4b5a69788796a5b4c3d2e1f0a9b8c7d6"
OLD = "5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b"
NOW = datetime(2026, 11, 24, 15, 0, tzinfo=timezone.utc)


def run_rule(cls: type[RuleType], params: dict[str, Any], change: dict[str, Any] | None = None,
             workspace: Path | None = None, now: datetime = NOW, answers: dict[Any, Any] | None = None) -> Outcome:
    """Judge one rule. Facts come from ``answers`` (built in memory), or, given a
    ``workspace``, are gathered from it first as ``check`` gathers them (an integration test)."""
    spec = RuleSpec(id="r", type=cls.type_name, enforcement=Enforcement.DENY, params=params)
    rule = cls(spec)
    facts = Facts(change=change or {}, answers=dict(answers or {}))
    if workspace is not None:
        ctx = GatherContext(workspace=Workspace(workspace))
        facts = Facts(change=change or {},
                      answers={r: GATHERERS[type(r)](r, ctx) for r in rule.needs()} | dict(answers or {}))
    return rule.evaluate(Context(change=change or {}, facts=facts, now=now))


def change(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "repository": "acme/payments",
        "environment": "production",
        "commit": HEAD,
        "deployer": "dana",
        "pull_request": {"number": 42, "author": "alice", "head_commit": HEAD},
        "commits": [{"sha": OLD, "author": "alice", "committer": "alice"},
                    {"sha": HEAD, "author": "alice", "committer": "alice"}],
        "reviews": [],
        "checks": [],
        "files_changed": ["src/refunds.py"],
        "teams": {"security": ["frank", "gina"]},
    }
    base.update(over)
    return base


def review(user: str, state: str = "approved", commit: str = HEAD, at: str | None = "2026-11-23T15:00:00Z") -> dict[str, Any]:
    return {"user": user, "state": state, "commit": commit, "submitted_at": at}
