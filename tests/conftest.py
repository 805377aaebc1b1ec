"""Shared fixtures: the public corpus (read in place), a clean environment, paths."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
CORPUS = Path(os.environ.get("POLICYENGINE_CORPUS", REPO.parent / "shared" / "corpus"))


@pytest.fixture
def corpus() -> Path:
    """The shared corpus of real files, read in place; skipped with a visible reason when absent."""
    if not CORPUS.is_dir():
        pytest.skip(f"shared corpus not found at {CORPUS} (set POLICYENGINE_CORPUS); own fixtures still run")
    return CORPUS


@pytest.fixture(scope="session")
def _worker_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder of this test process's own (one per pytest-xdist worker), never ~/.cache."""
    return tmp_path_factory.mktemp("policyengine-cache")


@pytest.fixture(autouse=True)
def _clean_ci_env(monkeypatch: pytest.MonkeyPatch, _worker_cache: Path) -> None:
    """Tests never see the CI variables of the machine they run on, nor another worker's cache."""
    for name in list(os.environ):
        if name.startswith(("GITHUB_", "GITLAB_", "CI_", "POLICYENGINE_", "RUNNER_", "ACTIONS_")) or name in {
            "CI",
            "GITHUB_ACTIONS",
            "GITLAB_CI",
            "NO_COLOR",
        }:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("POLICYENGINE_CACHE_DIR", str(_worker_cache))


@pytest.fixture
def oidc_issuer() -> Iterator[Any]:
    """A local OIDC issuer on loopback (tests/oidc_issuer.py) for the duration of a test."""
    from tests.oidc_issuer import running_issuer

    with running_issuer() as issuer:
        yield issuer
