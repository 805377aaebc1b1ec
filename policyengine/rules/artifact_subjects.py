"""``artifact_subjects``: the deploy names the artifacts it ships, by digest.

Not written in ``rules:``. When a policy says ``evidence: {require_subject: true}``, the loader
adds this rule with the id ``artifact-subjects``. A deploy that names no artifact
(``--subject NAME=sha256:HEX``, the action's ``subjects`` input, ``POLICYENGINE_SUBJECTS``)
fails, like any other missing input the deployer controls: without a digest, `audit reconcile`
cannot tie a running image or a deploy-log entry to the bundle that released it. Artifacts that
were not given to the gate at all (a caller that gathers without them) are an error.
"""

from __future__ import annotations

from policyengine.facts import FactRequest, SubjectsRequest
from policyengine.models import Outcome, Status
from policyengine.rules.base import Context, RuleType

RULE_ID = "artifact-subjects"
SUBJECTS = SubjectsRequest()


class ArtifactSubjectsRule(RuleType):
    """The deploy names at least one artifact digest (in-toto subject) beside the commit."""

    type_name = "artifact_subjects"

    def needs(self) -> list[FactRequest]:
        return [SUBJECTS]

    def evaluate(self, ctx: Context) -> Outcome:
        fact = ctx.facts.subjects(SUBJECTS)
        if fact is None or fact.error is not None:  # fail closed: unknown is never "named"
            return Outcome(Status.ERROR, f"the artifact digests are unknown: "
                           f"{fact.error if fact else 'they were not gathered'}")
        if not fact.subjects:
            return Outcome(Status.FAIL, "no artifact digest was named: pass --subject NAME=sha256:HEX (the action's "
                           "subjects input, POLICYENGINE_SUBJECTS), e.g. the image digest of the build job",
                           {"subjects": []})
        names = [name for name, _ in fact.subjects]
        return Outcome(Status.PASS, f"{len(names)} artifact(s) named by digest: {', '.join(names)}",
                       {"subjects": [{"name": n, "sha256": d} for n, d in fact.subjects]})
