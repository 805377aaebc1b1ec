"""``policy_owners``: a change to a guarded file needs an approval from one of the policy's owners.

Not written in ``rules:``. When a policy names ``policy_owners`` (``users`` and/or ``teams``),
the loader adds this rule with the id ``policy-owners``; it is never waivable. Guarded files
are the files that decide the verdict: the policy itself and every local base it extends (a
``git+URL`` base lives in another repository, guarded by that repository's controls), the
waivers file, CODEOWNERS files, the install lock (``policyengine-gate.lock``), the pipeline
definitions (``.github/workflows/**``, ``.gitlab-ci.yml``, and what the gathered
``PipelineFact`` adds: local actions, included GitLab files, a custom CI config path, read at
the trusted base and at the deployed commit) and the extra globs in ``policy_owners.guard``.
Pipeline files that could not be computed make the rule an error (fail closed).

Every request of the change is checked: the deployed pull request and, when the change range
is known, every pull request in it. Each one that touched a guarded file needs its own
approval from an owner who is neither its author nor one of its committers, of its head
commit (a push after the approval makes it stale). A request whose file list is unknown is
treated as touching a guarded file (fail closed); so is a commit of the range that came
through no request, which no one could approve. Whether a person is an owner, and why a
review did not count, follow the ``approvals`` rule, which this rule asks per request.
"""

from __future__ import annotations

from typing import Any

from policyengine.facts import FactRequest, PipelineRequest
from policyengine.globs import glob_match
from policyengine.models import Outcome, Status
from policyengine.rules.approvals import ApprovalsRule
from policyengine.rules.base import Context, RuleSpec, RuleType, unavailable

RULE_ID = "policy-owners"
GUARDED = ("CODEOWNERS", ".github/CODEOWNERS", "docs/CODEOWNERS", ".gitlab/CODEOWNERS", ".github/workflows/**",
           ".gitlab-ci.yml", "policyengine-gate.lock")
PIPELINE = PipelineRequest()


def guarded_paths(policy_paths: list[str], extra: list[str]) -> list[str]:
    """Globs of the guarded files, given the policy's own paths inside the repository."""
    return list(dict.fromkeys([*policy_paths, *GUARDED, *extra]))


class PolicyOwnersRule(RuleType):
    """Changes to the policy, CODEOWNERS or the CI configuration are approved by a policy owner."""

    type_name = "policy_owners"

    def _approval(self, sub_change: dict[str, Any], ctx: Context) -> Outcome:
        params: dict[str, Any] = {"min_approvals": 1, "exclude": ["author", "committers"],
                                  "require_current_commit": True}
        if self.params.get("users"):
            params["from_users"] = list(self.params["users"])
        if self.params.get("teams"):
            params["from_teams"] = list(self.params["teams"])
        spec = RuleSpec(id=self.spec.id, type="approvals", params=params)
        return ApprovalsRule(spec).evaluate(Context(change=sub_change, facts=ctx.facts, now=ctx.now))

    def needs(self) -> list[FactRequest]:
        return [PIPELINE]

    @staticmethod
    def _touched(files: Any, globs: list[str]) -> list[str] | None:
        """The guarded files among ``files``; None when the file list is unknown."""
        if not isinstance(files, list):
            return None
        return [f for f in files if isinstance(f, str) and any(glob_match(g, f) for g in globs)]

    def evaluate(self, ctx: Context) -> Outcome:
        change = ctx.change
        owners = ", ".join([*self.params.get("users", []), *(f"team {t}" for t in self.params.get("teams", []))])
        pipeline = ctx.facts.pipeline(PIPELINE)
        globs = list(dict.fromkeys([*self.params["guard"], *(pipeline.guard if pipeline else ())]))
        details: dict[str, Any] = {"owners": owners, "guarded": globs, "requests": []}
        if pipeline is None:  # fail closed: a judge without the facts it needs cannot pass
            pipeline_error: str | None = "the pipeline files were not gathered"
        else:
            pipeline_error = pipeline.error
            details["pipeline"] = {"source": pipeline.source, "notes": list(pipeline.notes)}
        cause = unavailable(change, "pull_request")
        if cause:
            return Outcome(Status.ERROR, f"the policy owners' approval could not be checked: {cause}", details)
        requests: list[tuple[str, list[str] | None, dict[str, Any] | None]] = []
        pr = change.get("pull_request")
        deployed_files = None if "files_changed" in (change.get("unavailable") or {}) else change.get("files_changed")
        if pr:
            requests.append((f"#{pr.get('number')}", self._touched(deployed_files, globs), dict(change)))
        else:
            requests.append(("the deployed commit (no pull request)", self._touched(deployed_files, globs), None))
        rng = change.get("range") or {}
        deployed_number = pr.get("number") if pr else None
        for other in rng.get("pull_requests") or []:
            if not isinstance(other, dict) or other.get("number") == deployed_number:
                continue
            commits = [{"sha": other.get("head_commit") or "?", "author": c, "committer": c}
                       for c in other.get("committers") or []]
            request = {"pull_request": {"number": other.get("number"), "author": other.get("author"),
                                        "head_commit": other.get("head_commit")},
                       "reviews": other.get("reviews") or [], "commits": commits, "teams": change.get("teams"),
                       "commit": other.get("head_commit"), "deployer": change.get("deployer")}
            requests.append((f"#{other.get('number')}", self._touched(other.get("files"), globs), request))
        orphans = [c.get("sha", "?")[:7] for c in rng.get("commits") or []
                   if isinstance(c, dict) and c.get("pull_request") is None and c.get("sha") != change.get("commit")]
        if orphans:
            requests.append((f"commits without a pull request ({', '.join(orphans)})", None, None))

        problems: list[str] = []
        errors: list[str] = []
        for name, touched, sub in requests:
            if touched == []:
                details["requests"].append({"request": name, "guarded_files": []})
                continue
            what = "its files are unknown" if touched is None else "it changes " + ", ".join(touched[:5])
            entry: dict[str, Any] = {"request": name, "guarded_files": touched}
            details["requests"].append(entry)
            if sub is None:
                problems.append(f"{name}: {what}, and there is no request a policy owner could approve")
                continue
            outcome = self._approval(sub, ctx)
            entry["approval"] = outcome.status.value
            if outcome.status is Status.ERROR:
                errors.append(f"{name}: {outcome.message}")
            elif outcome.status is not Status.PASS:
                problems.append(f"{name}: {what}, without an approval from a policy owner ({owners}): "
                                f"{outcome.message}")
        if pipeline_error:
            errors.append(f"the guarded pipeline files could not be determined: {pipeline_error}")
        if problems:
            return Outcome(Status.FAIL, "; ".join(problems), details)
        if errors:
            return Outcome(Status.ERROR, "; ".join(errors), details)
        approved = [d["request"] for d in details["requests"] if d.get("approval") == "pass"]
        if approved:
            return Outcome(Status.PASS, f"guarded files changed by {', '.join(approved)}, approved by a policy owner",
                           details)
        return Outcome(Status.PASS, "no guarded file changed (the policy, its bases and waivers, CODEOWNERS, the "
                                    "pipeline definitions, the install lock)", details)
