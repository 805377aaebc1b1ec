"""Whole-process wall time of the CLI against `python -c pass`, side by side in one run.

Usage: .venv/bin/python benchmarks/bench_cli.py [--runs 30] [--only check] [--baseline DIR]

Each command runs --runs times (after 3 warm-up runs, so .pyc files exist: the runs do not
inherit PYTHONDONTWRITEBYTECODE, as an installed wheel has its .pyc files), interleaved round by
round with `python -c pass` so that both see the same load; the table shows the median and
the minimum in milliseconds, the overhead over a bare interpreter start, and the ratio to it
(median over median, and min over min) from the same run. --baseline DIR adds `check` run
from another checkout (say `git worktree add /tmp/before <commit>`) with `python -m
policyengine` in that folder, which imports that checkout's code, so before and after share
one run and one load.
`check` runs on the bundled example (policies/soc2-production.yml, examples/change-allowed.yml)
with the clock pinned and a fresh evidence archive in a temporary folder. `policy validate`
checks both bundled policies; `policy test` runs 100 cases (the bundled suite's cases, copied
until there are 100) in one process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


BASELINE: Path | None = None


def once(cmd: list[str]) -> float:
    # The baseline row runs `python -m policyengine` in the other checkout, which imports its code.
    cwd = BASELINE if BASELINE is not None and cmd[1:3] == ["-m", "policyengine"] and "check" in cmd else REPO
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, check=False, env=ENV)
    elapsed = (time.perf_counter() - start) * 1000
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return elapsed


def floor_modules(check: list[str]) -> list[str]:
    """The modules a `check` run imports that are not policyengine's, in the order it imported them.

    Importing them all in a bare interpreter is the floor `check` cannot go below without
    dropping a library or a standard module it uses (click, PyYAML, dataclasses, zipfile,
    hashlib, zoneinfo, ...): the row "libraries check imports" shows it in the same run.
    """
    probe = (
        "import sys, runpy\n"
        f"sys.argv = {['policyengine', *check[1:]]!r}\n"
        "try:\n    runpy.run_module('policyengine', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "skip = set(sys.builtin_module_names) | {'__main__', 'runpy'}\n"
        "names = [m for m in sys.modules if m.split('.')[0] != 'policyengine' and m not in skip]\n"
        "print(' '.join(names), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, env=ENV, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"cannot list the modules check imports: {proc.stderr[-500:]}")
    return proc.stderr.split()


def timed(cases: dict[str, list[str]], runs: int) -> dict[str, list[float]]:
    """Run every case ``runs`` times, one round at a time, so a burst of load hits all of them."""
    for cmd in cases.values():
        for _ in range(3):
            once(cmd)
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, cmd in cases.items():
            results[name].append(once(cmd))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--only", help="run only the commands whose name contains this (and python -c pass)")
    parser.add_argument("--baseline", type=Path, help="another checkout whose check to time beside this one's")
    args = parser.parse_args()
    global BASELINE
    BASELINE = args.baseline.resolve() if args.baseline else None
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        cases = {
            "python -c pass": [py, "-c", "pass"],
            "python -m policyengine --help": [py, "-m", "policyengine", "--help"],
            "policyengine --help (console script)": [str(Path(py).parent / "policyengine"), "--help"],
            "policyengine --version (console script)": [str(Path(py).parent / "policyengine"), "--version"],
            "policyengine check (example, console script)": [
                str(Path(py).parent / "policyengine"), "check", "--policy", "policies/soc2-production.yml",
                "--change", "examples/change-allowed.yml", "--workspace", "examples/workspace",
                "--now", "2026-11-24T15:00:00Z", "--evidence-dir", str(Path(tmp) / "ev"),
                "--junit", str(Path(tmp) / "j.xml"), "--json", str(Path(tmp) / "d.json"),
            ],
        }
        suite = Path(tmp) / "suite"
        bundled = sorted((REPO / "policies" / "tests" / "soc2-production").iterdir())
        for i in range(100):
            source = bundled[i % len(bundled)]
            target = suite / f"{i:03d}-{source.name}"
            target.mkdir(parents=True)
            text = (source / "case.yml").read_text("utf-8")
            # Paths in a case are relative to it: point them back at the bundled suite.
            text = text.replace("../../../", f"{REPO / 'policies'}/").replace("../../", f"{REPO / 'policies' / 'tests'}/")
            (target / "case.yml").write_text(text, encoding="utf-8")
        cli = str(Path(py).parent / "policyengine")
        # The floor: every module `check` imports that is not ours, in a bare interpreter (the
        # fresh archive the probe writes goes to its own folder).
        probe = [a.replace(str(Path(tmp) / "ev"), str(Path(tmp) / "probe-ev")) for a in
                 cases["policyengine check (example, console script)"]]
        modules = floor_modules(probe)
        cases["libraries check imports (no policyengine code)"] = [
            py, "-c", "import importlib\nfor m in " + repr(modules) + ": importlib.import_module(m)"]
        cases["policyengine policy validate (both bundled policies)"] = [
            cli, "policy", "validate", "policies/soc2-production.yml", "policies/soc2-small-team.yml"]
        cases["policyengine policy test (100 cases)"] = [cli, "policy", "test", str(suite)]
        if args.baseline:
            own = cases["policyengine check (example, console script)"][1:]
            cases["policyengine check (example, baseline checkout)"] = [
                py, "-m", "policyengine", *(a.replace(tmp, str(Path(tmp) / "baseline")) for a in own)]
        if args.only:
            cases = {name: cmd for name, cmd in cases.items()
                     if name == "python -c pass" or name.startswith("libraries") or args.only in name}
        results = timed(cases, args.runs)
    base = statistics.median(results["python -c pass"])
    base_min = min(results["python -c pass"])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.runs} runs each, Python {sys.version.split()[0]}, load average {load:.1f} at the end\n")
    print("| command | median ms | min ms | over `python -c pass` (median) | x bare (median) | x bare (min) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, samples in results.items():
        med = statistics.median(samples)
        print(f"| {name} | {med:.1f} | {min(samples):.1f} | {med - base:+.1f} | {med / base:.1f} | {min(samples) / base_min:.1f} |")


if __name__ == "__main__":
    main()
