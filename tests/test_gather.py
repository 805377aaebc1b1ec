"""The provider entry point: detection, the local file, teams the policy needs."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import FIXTURES

from policyengine import providers
from policyengine.errors import UsageError
from policyengine.providers import Gathered, detect, gather


def test_detect() -> None:
    assert detect({"GITHUB_ACTIONS": "true"}) == "github"
    assert detect({"GITLAB_CI": "true"}) == "gitlab"
    assert detect({}) == "local"


def test_local_without_change_file_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="give --change FILE"):
        gather(None, env={})


def test_change_file_wins_and_environment_override() -> None:
    got = gather(None, env={"GITHUB_ACTIONS": "true"}, change_path=str(FIXTURES / "acceptance/change.yml"),
                 environment="staging")
    assert got.change["environment"] == "staging"


def test_policy_teams_and_env_teams_reach_the_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake(env: Any, **kw: Any) -> Gathered:
        seen.update(kw)
        return Gathered(change={})

    import policyengine.providers.github as gh

    monkeypatch.setattr(gh, "gather_github", fake)
    gather("github", env={"POLICYENGINE_TEAMS": "acme/sre, acme/security"}, teams=["acme/security", "dba"])
    assert seen["teams"] == ["acme/security", "dba", "acme/sre"]
    assert providers.PROVIDER_NAMES == ("local", "github", "gitlab")
