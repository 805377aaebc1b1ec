"""Whose time a decision is judged at: the system clock, a given time, or a simulation.

A given time (``--now``, ``POLICYENGINE_NOW``) moves every deploy window, so under CI only a
marked simulation (``--simulate``), which can never release a deploy, may use one.
"""

from __future__ import annotations

from collections.abc import Mapping

from policyengine.errors import UsageError
from policyengine.language.policysource import _FALSE, CI_VARIABLES, OTHER_CI_MARKERS, in_any_ci


def clock_source(override: object, *, simulate: bool) -> str:
    """``system`` (the clock), ``override`` (a given time, outside CI) or ``simulated``."""
    if not override:
        return "system"
    return "simulated" if simulate else "override"


def check_override(override: object, *, simulate: bool, env: Mapping[str, str]) -> None:
    """Refuse a given time under CI unless the run is a marked simulation (UsageError, exit 2)."""
    if override and not simulate and in_any_ci(env):
        ci = next(n for n in (*CI_VARIABLES, *OTHER_CI_MARKERS)
                  if (env.get(n) or "").strip().casefold() not in _FALSE)
        raise UsageError(f"--now / POLICYENGINE_NOW: refusing to evaluate a deploy at a given time under CI "
                         f"({ci}={env.get(ci)}): the deploy happens now",
                         hint="remove POLICYENGINE_NOW / --now, or add --simulate for a what-if run that "
                              "can never release a deploy")
