"""Providers gather the facts of one deployment into the normalized change.

Every provider builds the same shape (``schemas/change.schema.json``) that the local
``--change`` file holds, so rules never know which code host they run on and any decision
can be replayed offline from its bundle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from policyengine.errors import UsageError
from policyengine.providers.base import Gathered, PreviousDeploys

__all__ = ["PROVIDER_NAMES", "Gathered", "PreviousDeploys", "detect", "gather"]

PROVIDER_NAMES = ("local", "github", "gitlab")


def detect(env: Mapping[str, str]) -> str:
    """Choose the provider from the CI environment: GitHub Actions, GitLab CI, else local."""
    if env.get("GITHUB_ACTIONS") == "true":
        return "github"
    if env.get("GITLAB_CI") == "true":
        return "gitlab"
    return "local"


def gather(
    provider: str | None,
    *,
    env: Mapping[str, str],
    change_path: str | None = None,
    environment: str | None = None,
    previous_deploys: PreviousDeploys | None = None,
    teams: Sequence[str] = (),
) -> Gathered:
    """Gather the change with the named provider (detected from ``env`` when None).

    A ``--change`` file always wins when no provider is named: it is the local provider.
    ``teams``: team names the policy's rules need (their ``from_teams``); the CI providers
    resolve them together with those listed in ``POLICYENGINE_TEAMS``. ``previous_deploys``
    says where the previous deploy is recorded when the code host cannot say.
    """
    # Each POLICYENGINE_TEAMS entry is `name=group-or-org/team` or a bare name (looked up as written);
    # the provider resolves each wanted name through that mapping.
    listed = [t.split("=", 1)[0].strip() for t in (env.get("POLICYENGINE_TEAMS") or "").split(",") if t.strip()]
    wanted = list(teams) + [t for t in listed if t]
    wanted = list(dict.fromkeys(wanted))
    name = provider or ("local" if change_path else detect(env))
    if name == "local":
        if not change_path:
            raise UsageError(
                "no change to judge: give --change FILE, or run inside GitHub Actions or GitLab CI",
                hint="see examples/change-allowed.yml for the format, or use --provider github|gitlab",
            )
        from policyengine.change import load_change

        change = load_change(change_path)
        change["facts_source"] = "self-declared"  # a file vouches for itself (policyengine.change)
        if environment:
            change["environment"] = environment
        return Gathered(change=change)
    if name == "github":
        from policyengine.providers.github import gather_github

        return gather_github(env, environment=environment, previous_deploys=previous_deploys, teams=wanted)
    if name == "gitlab":
        from policyengine.providers.gitlab import gather_gitlab

        return gather_gitlab(env, environment=environment, previous_deploys=previous_deploys, teams=wanted)
    raise UsageError(f"--provider: unknown provider {name!r}; known: {', '.join(PROVIDER_NAMES)}")
