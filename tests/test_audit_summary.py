"""`audit summary` and the population of deployments: a year of evidence that adds up.

The year is built so that every figure can be counted by hand (see ``year``): 2,000 deployments
over 3 repositories and 2 environments, every 4 hours from 2026-01-01, each shipping commits
committed 1 to 4 hours before it, 100 failed and 50 rolled back (each restored by the next
deployment of its chain, 24 hours later), and around them what must *not* count: denials,
simulated and not-applicable evaluations, deploys recorded as not deployed, and re-runs of a
pipeline. Bundles are written straight into a LocalArchive (signed), outcomes and reviews with
``append_record``, once per module.
"""

from __future__ import annotations

import heapq
import json
import os
import statistics
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from policyengine.language.policyfacts import POLICY_FACTS
from policyengine.evidence.format import records as records_module
from policyengine.evidence.stores.folder import LocalArchive
from policyengine.evidence.format.records import RecordKind
from policyengine.evidence.format.signing import SigningKey, key_id
from policyengine.evidence.audit.summary import render, summarize

REPO = Path(__file__).resolve().parents[1]
POLICY_V1 = (REPO / "policies" / "soc2-production.yml").read_bytes()
POLICY_V2 = POLICY_V1.replace(b"min_approvals: 2 ", b"min_approvals: 1 ")
REPOS = ("acme/api", "acme/web", "acme/worker")
ENVS = ("production", "staging")
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
STEP = timedelta(hours=4)
N = 2000
FAILED = {i for i in range(N) if i % 20 == 7}            # 100
ROLLED_BACK = {i for i in range(N) if i % 40 == 31}      # 50
NO_OUTCOME = {i for i in range(N) if i % 25 == 24}       # 80
REVIEWED = {i for i in range(N) if i % 10 == 0}          # 200
ADVISORY = {5, 405, 805, 1205, 1605}                     # denied, advisory: deployments all the same
UNSIGNED = {1500, 1501}
RERUN = {i for i in range(N) if i % 200 == 50}           # 10 pipelines re-run: the earlier attempt does not count
EMERGENCY = {100: "on time", 700: "late", 1300: "open"}
APPROVAL = "emergency-approval"


def chain_of(i: int) -> tuple[str, str]:
    return REPOS[i % 6 // 2], ENVS[i % 2]


def key() -> SigningKey:
    k = ed25519.Ed25519PrivateKey.generate()
    return SigningKey(k, key_id(k.public_key()))


def decision(verdict: str, when: datetime, *, rules: list[dict[str, Any]] | None = None, advisory: bool = False,
             simulated: bool = False, emergency: dict[str, Any] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"decision": verdict, "evaluated_at": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                           "advisory": advisory, "simulated": simulated, "policy": {"name": "prod", "path": "p.yml"},
                           "clock": {"source": "system"}, "rules": rules or []}
    if emergency:
        doc["emergency"] = emergency
    return doc


def change(repo: str, env: str, commit: str, when: datetime, *, pipeline: str, lead_hours: int = 1,
           **extra: Any) -> dict[str, Any]:
    committed = (when - timedelta(hours=lead_hours)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"repository": repo, "environment": env, "commit": commit, "deployer": "dana",
            "pipeline": {"provider": "github", "id": pipeline},
            "pull_request": {"number": 1, "author": "alice", "title": "a change", "url": "https://h/pr/1"},
            "commits": [{"sha": commit, "author": "alice", "committer": "alice", "committed_at": committed},
                        {"sha": "f" * 40, "author": "alice", "committer": "alice",
                         "committed_at": (when - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")}],
            **extra}


def outcome(archive: LocalArchive, about: dict[str, Any], status: str, when: datetime, signer: SigningKey) -> None:
    archive.append_record("outcome", about, {"status": status, "by": "dana", "by_verified": False,
                                             "by_source": "--by"}, signing_key=signer, created_at=when)


class Year:
    def __init__(self, root: Path, signer: SigningKey) -> None:
        self.archive = LocalArchive(root)
        self.signer = signer
        self.ids: dict[int, str] = {}

    def write(self, *, when: datetime, verdict: str = "allow", repo: str, env: str, commit: str, pipeline: str,
              lead_hours: int = 1, policy: bytes | None = None, signed: bool = True, **kw: Any) -> dict[str, Any]:
        # The policy changes (is weakened) from deployment 1000 on, in every chain at once.
        policy = policy or (POLICY_V1 if when < START + 1000 * STEP else POLICY_V2)
        ref = self.archive.write_bundle(
            decision=decision(verdict, when, **kw),
            change=change(repo, env, commit, when, pipeline=pipeline, lead_hours=lead_hours),
            policy_filename="policy.yml", policy_bytes=policy, files=[], created_at=when,
            signing_key=self.signer if signed else None)
        return self.last_record(ref.id)

    def last_record(self, bundle_id: str) -> dict[str, Any]:
        """The index line just appended (reading the whole index per bundle would make the year quadratic)."""
        with open(self.archive.index_path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, 2) - 8192))
            record: dict[str, Any] = json.loads(fh.read().rstrip(b"\n").rsplit(b"\n", 1)[-1])
        assert record["id"] == bundle_id
        return record


@pytest.fixture(scope="module")
def year(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Year]:
    """The year: written once for the module, with an emergency-approval record kind registered
    (the emergency feature adds it; the summary only reads it)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(records_module.RECORD_KINDS, APPROVAL, RecordKind(APPROVAL, "result", ("approved",)))
        # A lighter path for writing 6,000 bundles: no fsync (durability is tested elsewhere).
        mp.setattr(os, "fsync", lambda fd: None)
        y = Year(tmp_path_factory.mktemp("year") / "archive", key())
        # Every write is queued with its time and made in time order: verify fails a chain whose
        # created_at goes backwards by more than 10 minutes (a backdated bundle), so the year is
        # written the way a real archive grows.
        events: list[tuple[datetime, int, Any]] = []

        order = iter(range(10**9))

        def at(when: datetime, action: Any) -> None:
            heapq.heappush(events, (when, next(order), action))

        def evaluation(i: int, when: datetime, common: dict[str, Any], kw: dict[str, Any]) -> None:
            record = y.write(when=when, lead_hours=i % 4 + 1, signed=i not in UNSIGNED, **common, **kw)
            y.ids[i] = record["id"]
            if i not in NO_OUTCOME:
                status = "failed" if i in FAILED else "rolled_back" if i in ROLLED_BACK else "deployed"
                at(when + timedelta(minutes=30), lambda: outcome(y.archive, record, status,
                                                                 when + timedelta(minutes=30), y.signer))
            if i in REVIEWED:
                at(when + timedelta(hours=1), lambda: y.archive.append_record(
                    "review", record, {"result": "ok", "note": "fine", "by": "rita", "by_verified": False,
                                       "by_source": "--by"}, signing_key=y.signer,
                    created_at=when + timedelta(hours=1)))
            if EMERGENCY.get(i) in ("on time", "late"):
                approved = when + timedelta(hours=6 if EMERGENCY[i] == "late" else 1)
                at(approved, lambda: y.archive.append_record(
                    APPROVAL, record, {"result": "approved", "by": "cto", "by_verified": False, "by_source": "--by"},
                    signing_key=y.signer, created_at=approved))

        # Outside the period: never counted (and the oldest record of its chain).
        at(datetime(2025, 12, 31, 12, tzinfo=timezone.utc), lambda: y.write(
            when=datetime(2025, 12, 31, 12, tzinfo=timezone.utc), repo=REPOS[0], env=ENVS[0], commit="8" * 40,
            pipeline="old"))
        for i in range(N):
            when = START + i * STEP
            repo, env = chain_of(i)
            common: dict[str, Any] = {"repo": repo, "env": env, "commit": f"{i:040x}", "pipeline": f"run-{i}"}
            if i in RERUN:  # the first attempt of the same pipeline, allowed, a minute earlier
                at(when - timedelta(minutes=1), lambda when=when, common=common: y.write(
                    when=when - timedelta(minutes=1), **common))
            kw: dict[str, Any] = {}
            if i in ADVISORY:
                kw = {"verdict": "deny", "advisory": True,
                      "rules": [{"id": "peer-review", "enforcement": "deny", "status": "fail"}]}
            if i in EMERGENCY:
                kw["emergency"] = {"declared_by": "erin", "reason": "outage", "incident": "INC-1",
                                   "waived_rules": ["peer-review"],
                                   "due": (when + timedelta(hours=4)).strftime("%Y-%m-%dT%H:%M:%SZ")}
            at(when, lambda i=i, when=when, common=common, kw=kw: evaluation(i, when, common, kw))
        # What is not a deployment, spread over the year (3 minutes after deployments of chain 0).
        for n in range(30):  # 20 denied by peer-review, 10 by peer-review and tests
            rules = [{"id": "peer-review", "enforcement": "deny", "status": "fail"}]
            if n >= 20:
                rules.append({"id": "tests", "enforcement": "deny", "status": "error"})
            when = START + (60 * n) * STEP + timedelta(minutes=3)
            at(when, lambda when=when, rules=rules, n=n: y.write(
                when=when, verdict="deny", rules=rules, repo=REPOS[0], env=ENVS[0], commit="d" * 40,
                pipeline=f"deny-{n}"))
        for n in range(4):
            when = START + (500 * n + 6) * STEP + timedelta(minutes=3)
            at(when, lambda when=when, n=n: y.write(when=when, simulated=True, repo=REPOS[0], env=ENVS[0],
                                                    commit="5" * 40, pipeline=f"sim-{n}"))
        for n in range(3):
            when = START + (600 * n + 12) * STEP + timedelta(minutes=3)
            at(when, lambda when=when, n=n: y.write(when=when, verdict="not_applicable", repo=REPOS[0],
                                                    env=ENVS[0], commit="6" * 40, pipeline=f"na-{n}"))
        for n in range(6):
            when = START + (300 * n + 18) * STEP + timedelta(minutes=3)

            def not_deployed(when: datetime = when, n: int = n) -> None:
                record = y.write(when=when, repo=REPOS[0], env=ENVS[0], commit="7" * 40, pipeline=f"nd-{n}")
                at(when + timedelta(minutes=5), lambda: outcome(y.archive, record, "not_deployed",
                                                                when + timedelta(minutes=5), y.signer))

            at(when, not_deployed)
        while events:  # an action may queue later ones (an evaluation queues its outcome)
            _when, _seq, action = heapq.heappop(events)
            action()
        yield y


@pytest.fixture(scope="module")
def summary(year: Year) -> Iterator[dict[str, Any]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(records_module.RECORD_KINDS, APPROVAL, RecordKind(APPROVAL, "result", ("approved",)))
        yield summarize(year.archive, since="2026-01-01T00:00:00Z", until="2027-01-01T00:00:00Z", policy_facts=POLICY_FACTS)


def test_the_year_verifies_and_counts_deployments_not_evaluations(summary: dict[str, Any]) -> None:
    assert summary["chain"] == {"status": "ok", "checked": N + len(RERUN) + 30 + 4 + 3 + 6, "left_out": 0,
                                "problems": []}
    assert summary["evaluations"] == N + len(RERUN) + 43
    assert summary["deployments"]["total"] == N
    # i % 6 picks the chain: chains 0 and 1 get 334, the others 333.
    by = {(d["repository"], d["environment"]): d["count"] for d in summary["deployments"]["by"]}
    assert by == {chain_of(c): 334 if c < 2 else 333 for c in range(6)}


def test_denials_overrides_unsigned_and_policy_changes(summary: dict[str, Any]) -> None:
    assert summary["denials"] == {"total": 35, "by_rule": [{"rule": "peer-review", "count": 35},
                                                           {"rule": "tests", "count": 10}]}
    assert len(summary["overrides"]["advisory"]) == len(ADVISORY)
    assert len(summary["overrides"]["simulated"]) == 4
    assert len(summary["overrides"]["emergency"]) == len(EMERGENCY)
    assert {u["repository"] for u in summary["unsigned"]} == {chain_of(i)[0] for i in UNSIGNED}
    assert len(summary["unsigned"]) == len(UNSIGNED)
    # Each chain: its first policy ("first seen"; not for the chain whose bundle of 2025 already used
    # it), then the weaker policy from deployment 1000 on, with its first bundle.
    verdicts = sorted(c["verdict"] for c in summary["policy_changes"])
    assert verdicts == ["first seen"] * 5 + ["weaker"] * 6
    first_weaker = min(c["created_at"] for c in summary["policy_changes"] if c["verdict"] == "weaker")
    assert first_weaker == (START + 1000 * STEP).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_missing_outcomes_and_reviews(summary: dict[str, Any], year: Year) -> None:
    assert {x["id"] for x in summary["without_outcome"]} == {year.ids[i] for i in NO_OUTCOME}
    assert len(summary["without_review"]) == N - len(REVIEWED)


def test_the_four_dora_figures(summary: dict[str, Any]) -> None:
    dora = summary["dora"]
    assert dora["deployment_frequency"] == {"deployments": N, "days": 365.0, "per_day": round(N / 365, 4),
                                            "per_week": round(N * 7 / 365, 4)}
    # Lead times of 1, 2, 3, 4 hours, 500 each: median 2.5 h, mean 2.5 h.
    assert dora["lead_time"] == {"measured": N, "not_measured": 0, "inconsistent": 0,
                                 "median_seconds": 9000.0, "mean_seconds": 9000.0}
    assert statistics.median([(i % 4 + 1) * 3600 for i in range(N)]) == 9000
    assert dora["change_failure_rate"] == {"failed": 150, "deployments": N, "rate": 0.075}
    # Each failure is followed, 6 deployments (24 h) later, by a deployed one of the same chain.
    assert dora["time_to_restore"] == {"failures": 150, "restored": 150, "not_restored": 0,
                                       "median_seconds": 86400.0, "mean_seconds": 86400.0}


def test_emergencies_have_their_status(summary: dict[str, Any], year: Year) -> None:
    status = {e["id"]: e["status"] for e in summary["emergencies"]}
    assert status == {year.ids[100]: "approved on time", year.ids[700]: "approved late", year.ids[1300]: "open"}
    first = next(e for e in summary["emergencies"] if e["id"] == year.ids[100])
    assert (first["declared_by"], first["reason"], first["incident"], first["waived_rules"]) == (
        "erin", "outage", "INC-1", ["peer-review"])


def test_the_summary_renders_for_a_person(summary: dict[str, Any]) -> None:
    md = render(summary, "md")
    assert "| Change failure rate | 150 of 2000 (7.5%) |" in md
    assert "| Lead time for changes | median 2h 30m" in md
    assert "| Time to restore | median 1d 0h" in md
    assert "approved late" in md and "Chain: **ok**" in md
    page = render(summary, "html")
    assert "<script" not in page and "150 of 2000 (7.5%)" in page
    assert json.loads(render(summary, "json"))["deployments"]["total"] == N


def test_a_broken_chain_shows_in_the_summary(tmp_path: Path) -> None:
    y = Year(tmp_path / "archive", key())
    refs = [y.write(when=START + k * STEP, repo=REPOS[0], env=ENVS[0], commit=f"{k:040x}", pipeline=f"p{k}")
            for k in range(3)]
    path = y.archive.root / refs[1]["path"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    s = summarize(y.archive, since="2026-01-01T00:00:00Z", until="2027-01-01T00:00:00Z", policy_facts=POLICY_FACTS)
    named = {p["bundle_id"] for p in s["chain"]["problems"]}
    assert s["chain"]["status"] == "problems" and refs[1]["id"] in named
    # The figures leave out every bundle a problem names (the damaged one, and the next, whose link
    # no longer holds), and say so.
    assert s["chain"]["left_out"] == len(named) >= 1
    assert s["deployments"]["total"] == 3 - len(named)
    assert "left out of the figures" in render(s, "md")


def test_cli_summary_formats_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from policyengine.cli import main

    y = Year(tmp_path / "archive", key())
    for k in range(2):
        y.write(when=START + k * STEP, repo=REPOS[0], env=ENVS[0], commit=f"{k:040x}", pipeline=f"p{k}")

    def run(*args: str) -> int:
        with pytest.raises(SystemExit) as exc:
            main(["audit", "summary", "--archive", str(y.archive.root), *args])
        return int(exc.value.code or 0)

    assert run("--since", "2026-01-01", "--until", "2026-12-31", "--format", "json") == 0
    assert json.loads(capsys.readouterr().out)["deployments"]["total"] == 2
    assert run("--since", "2026-12-31", "--until", "2026-01-01") == 2
    assert "later than --until" in capsys.readouterr().err
    out = tmp_path / "s.html"
    assert run("--since", "2026-01-01", "--until", "2026-12-31", "--format", "html", "-o", str(out)) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
