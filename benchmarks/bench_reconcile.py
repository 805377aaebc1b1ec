"""`audit reconcile` over a generated year: 2,000 GitHub deployments, 20 chains, 1% bypassing the
gate, three chains deleted (tests/reconcile_year.py), against the GraphQL stand-in on loopback.

Usage: .venv/bin/python benchmarks/bench_reconcile.py [--runs 5]

A third case reads the witnesses back (``--witness``): every evaluation of the year is witnessed
as ``evidence witness`` writes it (a commit status a minute after the bundle), served by the
GraphQL stand-in, 100 commits a request.

The year is written once (not timed); each run is the whole command in this process (reading the
index and every releasing bundle, the GraphQL pages, judging, rendering JSON). The table shows
the median and the minimum wall time, the requests made and the exceptions found.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from policyengine.cli import main as cli
    from policyengine.evidence.audit import reconcile as reconcile_module
    from tests.fake_servers import FakeAPI
    from policyengine.evidence.audit.witness import description
    from policyengine.lifecycle.witness_format import context_for
    from tests.reconcile_world import GitHubDeployments, GitHubStatuses
    from tests.reconcile_year import build

    with tempfile.TemporaryDirectory() as tmp, FakeAPI("/api") as api:
        gh = GitHubDeployments(api)
        started = time.perf_counter()
        ev, catalogue, _ = build(Path(tmp) / "archive", gh)
        print(f"wrote the year in {time.perf_counter() - started:.1f} s "
              f"({sum(len(v) for v in gh.nodes.values())} platform deployments)")
        reconcile_module.known_chains = lambda store, records=None: catalogue  # type: ignore[assignment]
        os.environ.update({"GITHUB_TOKEN": "ghs_" + "B" * 36, "GITHUB_API_URL": api.origin + "/api/v3"})
        from cryptography.hazmat.primitives import serialization

        pub = Path(tmp) / "signing.pub"
        pub.write_bytes(ev.key.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        from datetime import datetime, timedelta

        statuses = GitHubStatuses(gh)
        for r in ev.archive.read_index()[0]:
            if r.get("kind", "evaluation") == "evaluation":
                when = datetime.fromisoformat(r["created_at"].replace("Z", "+00:00")) + timedelta(minutes=1)
                statuses.add(r["repository"], r["commit"], context=context_for(r["environment"]), when=when,
                             description=description(r["decision"], r["id"], r["sha256"], None))
        for label, extra in (("reconcile", []), ("reconcile --public-key", ["--public-key", str(pub)]),
                             ("reconcile --witness", ["--witness"])):
            samples, report = [], {}
            for _ in range(args.runs):
                out = StringIO()
                start = time.perf_counter()
                with redirect_stdout(out):
                    try:
                        cli(["audit", "reconcile", "--archive", str(ev.archive.root), "--since", "2026-01-01",
                             "--until", "2026-12-31", "--now", "2027-01-01T00:00:00Z", "--source", "github",
                             "--format", "json", *extra])
                    except SystemExit:
                        pass
                samples.append(time.perf_counter() - start)
                report = json.loads(out.getvalue())
            print(f"{label}, {args.runs} runs: median {statistics.median(samples):.2f} s, "
                  f"min {min(samples):.2f} s; {report['requests']} request(s) for "
                  f"{report['platform_deployments']} deployment(s); "
                  f"counts {dict((k, v) for k, v in report['counts'].items() if v)}")


if __name__ == "__main__":
    main()
