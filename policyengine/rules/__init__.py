"""The rule types, in one explicit registry."""

from __future__ import annotations

from policyengine.rules.approvals import ApprovalsRule
from policyengine.rules.artifact_subjects import ArtifactSubjectsRule
from policyengine.rules.base import Context, RuleSpec, RuleType
from policyengine.rules.checks_passed import ChecksPassedRule
from policyengine.rules.deploy_window import DeployWindowRule
from policyengine.rules.policy_owners import PolicyOwnersRule
from policyengine.rules.rollback_plan import RollbackPlanRule
from policyengine.rules.tests_passed import TestsPassedRule
from policyengine.rules.ticket import TicketRule

RULE_TYPES: dict[str, type[RuleType]] = {
    cls.type_name: cls
    for cls in (ApprovalsRule, TestsPassedRule, ChecksPassedRule, RollbackPlanRule, DeployWindowRule, TicketRule)
}

IMPLICIT_RULE_TYPES: dict[str, type[RuleType]] = {PolicyOwnersRule.type_name: PolicyOwnersRule,
                                                   ArtifactSubjectsRule.type_name: ArtifactSubjectsRule}
"""Rule types the gate adds itself (never written in ``rules:``, never waivable)."""

__all__ = ["IMPLICIT_RULE_TYPES", "RULE_TYPES", "Context", "RuleSpec", "RuleType"]
