"""A generated year for `audit reconcile` (the approach of tests/test_audit_summary.py's year):
2,000 platform deployments over 10 repositories and 2 environments (20 chains), every 4 hours
from 2026-01-01, each released by a signed allow bundle written 2 minutes before it, except:

* ``BYPASS``: 1% of deploys (20) bypass the gate: a platform deployment, no bundle;
* ``RERUN``: 10 pipelines re-run: a second bundle and a second platform deployment 3 minutes on
  (one deployment, not two);
* ``ROLLBACK``: 10 rollbacks, an hour later, to the chain's previous allowed commit;
* ``DELETED``: three chains deleted from the store after the catalogue was taken (their
  deployments cannot be judged; each chain is one missing-chain exception).

Nothing is unauthorized but the bypasses, nothing missing but the three chains. Used by
tests/test_reconcile_year.py (counts) and benchmarks/bench_reconcile.py (time).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from policyengine.evidence.audit.reconcile import Chain, known_chains
from tests.reconcile_world import Evidence, GitHubDeployments

N = 2000
REPOS = tuple(f"acme/svc{k}" for k in range(10))
ENVS = ("production", "staging")
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
STEP = timedelta(hours=4)
BYPASS = {i for i in range(N) if i % 100 == 37}                       # 20
RERUN = {i for i in range(N) if i % 200 == 150}                       # 10
ROLLBACK = {i for i in range(N) if i % 200 == 90}                     # 10
DELETED: tuple[Chain, ...] = (("acme/svc3", "production"), ("acme/svc6", "staging"), ("acme/svc9", "production"))


def chain_of(i: int) -> Chain:
    return REPOS[(i // 2) % len(REPOS)], ENVS[i % 2]


def commit_of(i: int) -> str:
    return f"{i:040x}"


@contextmanager
def _no_fsync() -> Iterator[None]:
    real = os.fsync
    os.fsync = lambda fd: None  # durability is tested elsewhere; 2,000 bundles want speed
    try:
        yield
    finally:
        os.fsync = real


def build(root: Path, github: GitHubDeployments | None) -> tuple[Evidence, dict[Chain, int], set[str]]:
    """Write the year's evidence under ``root`` and its deployments into ``github``; return the
    evidence, the catalogue taken before the chains were deleted, and the bypass deployment ids."""
    ev = Evidence(root)
    bypass_ids: set[str] = set()
    previous: dict[Chain, int] = {}
    ident = 0
    with _no_fsync():
        for i in range(N):
            repo, env = chain_of(i)
            when = START + i * STEP
            ident += 1
            if i in BYPASS:
                assert (repo, env) not in DELETED
                bypass_ids.add(str(ident))
            else:
                ev.evaluation(repo, env, commit_of(i), when - timedelta(minutes=2), pipeline=f"run-{i}",
                              outcome="deployed" if i % 10 == 0 else None)
            if github is not None:
                github.add(repo, env, commit_of(i), when, ident=ident)
            if i in RERUN:
                ev.evaluation(repo, env, commit_of(i), when + timedelta(minutes=1), pipeline=f"run-{i}", outcome=None)
                ident += 1
                if github is not None:
                    github.add(repo, env, commit_of(i), when + timedelta(minutes=3), ident=ident)
            if i in ROLLBACK and (repo, env) in previous:
                ident += 1
                if github is not None:
                    github.add(repo, env, commit_of(previous[(repo, env)]), when + timedelta(hours=1), ident=ident)
            if i not in BYPASS:
                previous[(repo, env)] = i
    catalogue = known_chains(ev.archive)
    _delete(ev, set(DELETED))
    return ev, catalogue, bypass_ids


def _delete(ev: Evidence, chains: set[Chain]) -> None:
    index = ev.archive.index_path
    kept: list[bytes] = []
    for line in index.read_bytes().splitlines(keepends=True):
        record: dict[str, Any] = json.loads(line)
        if (record["repository"], record["environment"]) in chains:
            os.remove(ev.archive.root / record["path"])
        else:
            kept.append(line)
    index.write_bytes(b"".join(kept))
