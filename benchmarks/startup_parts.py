"""Where a `check` of the example spends its time above the libraries it imports, in one process.

Usage: .venv/bin/python benchmarks/startup_parts.py [--runs 5]

Each run is a fresh interpreter that times ``dataclasses._process_class`` (creating a dataclass:
Python 3.11 compiles each generated method with its own ``exec``), imports the CLI and runs
`check` three times in the same process (fresh evidence folders, JUnit and JSON written, as
``bench_cli.py`` runs it). The first run pays every import and first use; the second and third
pay only the work (rules, the pipeline guard's `git`, the bundle and its fsyncs, the reports).
Compare with ``bench_cli.py``'s rows `python -c pass` and "libraries check imports".
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = r"""
import dataclasses, sys, tempfile, time
spent = [0.0, 0]
original = dataclasses._process_class
def timed(cls, *args, **kwargs):
    start = time.perf_counter()
    try:
        return original(cls, *args, **kwargs)
    finally:
        spent[0] += time.perf_counter() - start
        spent[1] += 1
dataclasses._process_class = timed
began = time.perf_counter()
import policyengine.cli
folder = tempfile.mkdtemp()
def run(n):
    sys.argv = ["policyengine", "check", "--policy", "policies/soc2-production.yml",
                "--change", "examples/change-allowed.yml", "--workspace", "examples/workspace",
                "--now", "2026-11-24T15:00:00Z", "--evidence-dir", f"{folder}/ev{n}",
                "--junit", f"{folder}/j.xml", "--json", f"{folder}/d.json"]
    start = time.perf_counter()
    try:
        policyengine.cli.main()
    except SystemExit:
        pass
    return time.perf_counter() - start
run(1)
first = time.perf_counter() - began
classes, created = spent[1], spent[0]
again = min(run(2), run(3))
print(f"{classes} {created * 1000:.1f} {first * 1000:.1f} {again * 1000:.1f}", file=sys.stderr)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    print("| run | dataclasses created | creating them, ms | imports and the first check, ms | "
          "a later check in the same process, ms |")
    print("|---:|---:|---:|---:|---:|")
    for i in range(1, args.runs + 1):
        proc = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            raise SystemExit(f"the probe failed: {proc.stderr[-500:]}")
        classes, created, first, again = proc.stderr.split()[-4:]
        print(f"| {i} | {classes} | {created} | {first} | {again} |")


if __name__ == "__main__":
    main()
