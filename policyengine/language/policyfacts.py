"""The policy code the evidence's readers are handed (``evidence.audit.PolicyFacts``).

The export and the summary rebuild the policies of a period, compare them and render their
control matrices. They import no policy code themselves: the CLI hands them ``POLICY_FACTS``,
built here from the policy language (``policy``, ``policydiff``, ``explain``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from policyengine.evidence.audit.export import PolicyFacts


def _parse(parts: Sequence[tuple[str, bytes]]) -> Any:
    from policyengine.language.policy import parse_policy

    policy = None
    for name, raw in parts:  # the deepest base first, the bundle's own policy last
        policy = parse_policy(raw, file=name, base=policy)
    return policy


def _diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Any]:
    from policyengine.language.policydiff import diff

    return list(diff(dict(old), dict(new)))


def _weakened(findings: Sequence[Any]) -> bool:
    from policyengine.language.policydiff import weakened

    return bool(weakened(list(findings)))


def _matrix(policy: Any) -> str:
    from policyengine.language.explain import render

    return str(render(policy, "md"))


POLICY_FACTS = PolicyFacts(parse=_parse, diff=_diff, weakened=_weakened, matrix=_matrix)
