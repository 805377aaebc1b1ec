"""Benchmark ``read_junit`` against a bare streaming parse and junitparser on one large report.

Usage::

    python benchmarks/bench_junit.py [--testcases 200000] [--out DIR] [--repeat 3]

Generates a JUnit report (about 50 MB at 200,000 testcases: passed, failed, errored and
skipped tests, some with system-out), then runs each reader in a fresh subprocess:

(a) defusedxml ``iterparse`` that clears every element and does nothing else (the floor for a
    streaming defusedxml parse), (b) ``policyengine.workspace.junit.read_junit``, (c) junitparser (the
    ``bench`` extra), which loads the whole tree.

Wall time is the best of ``--repeat`` runs; ``ru_maxrss`` growth is the largest seen over those
runs; the tracemalloc peak comes from one extra run with tracemalloc on (it slows the run, so
it is not timed). Prints a Markdown table and the ratio (b)/(a).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

REPO = Path(__file__).resolve().parents[1]
READERS = ("iterparse", "read_junit", "junitparser")
LABELS = {
    "iterparse": "(a) defusedxml iterparse, clear only",
    "read_junit": "(b) policyengine read_junit",
    "junitparser": "(c) junitparser JUnitXml.fromfile",
}

_STACK = "".join(
    f"\tat com.example.service.module{i % 7}.Handler{i}.process(Handler{i}.java:{100 + i})\n" for i in range(10)
)
_OUTPUT = "".join(f"[INFO] step {i}: connection pool ready, 12 workers, cache warm\n" for i in range(4))


def generate(path: Path, testcases: int, suite_size: int, seed: int = 20240101) -> dict[str, int]:
    """Write a report with ``testcases`` testcases; return the counts it should read as."""
    rng = random.Random(seed)  # noqa: S311  (test data, not secrets)
    counts = {"tests": 0, "passed": 0, "failures": 0, "errors": 0, "skipped": 0}
    with open(path, "w", encoding="utf-8") as out:
        out.write('<?xml version="1.0" encoding="UTF-8"?>\n<testsuites name="bench">\n')
        written = 0
        suite = 0
        while written < testcases:
            size = min(suite_size, testcases - written)
            cls = f"com.example.service.module{suite % 13}.Service{suite}Test"
            out.write(f'  <testsuite name="{cls}" tests="{size}" time="1.5">\n')
            for i in range(size):
                name = f"test_case_{i}_handles_request_kind_{rng.randrange(1000)}"
                head = f'    <testcase classname="{cls}" name="{name}" time="{rng.random():.3f}"'
                roll = rng.random()
                counts["tests"] += 1
                if roll < 0.06:
                    counts["failures"] += 1
                    message = quoteattr(f"expected <{rng.randrange(100)}> but was <{rng.randrange(100)}>")
                    out.write(
                        f"{head}>\n      <failure message={message} type=\"java.lang.AssertionError\">"
                        f"java.lang.AssertionError: mismatch\n{_STACK}</failure>\n"
                        f"      <system-out><![CDATA[{_OUTPUT}]]></system-out>\n    </testcase>\n"
                    )
                elif roll < 0.07:
                    counts["errors"] += 1
                    out.write(
                        f"{head}>\n      <error message=\"boom &amp; more\" type=\"java.lang.IllegalStateException\">"
                        f"java.lang.IllegalStateException: boom\n{_STACK}</error>\n    </testcase>\n"
                    )
                elif roll < 0.12:
                    counts["skipped"] += 1
                    out.write(f'{head}>\n      <skipped message="not on this platform"/>\n    </testcase>\n')
                elif roll < 0.28:
                    counts["passed"] += 1
                    out.write(f"{head}>\n      <system-out><![CDATA[{_OUTPUT}]]></system-out>\n    </testcase>\n")
                else:
                    counts["passed"] += 1
                    out.write(f"{head}/>\n")
            out.write(f"    <system-out><![CDATA[{_OUTPUT}]]></system-out>\n  </testsuite>\n")
            written += size
            suite += 1
        out.write("</testsuites>\n")
    return counts


# -- worker side: one reader, one run, in a fresh process -------------------------------------


def _run_iterparse(path: str) -> int:
    from defusedxml.ElementTree import iterparse

    seen = 0
    for _event, elem in iterparse(path, events=("end",), forbid_dtd=True):
        elem.clear()
        seen += 1
    return seen


def _run_read_junit(path: str) -> dict[str, int]:
    sys.path.insert(0, str(REPO))
    from policyengine.workspace.junit import read_junit

    return read_junit(path).totals.to_json()


def _run_junitparser(path: str) -> dict[str, int]:
    from junitparser import Error, Failure, JUnitXml, Skipped, TestSuite

    xml = JUnitXml.fromfile(path)
    suites = [xml] if isinstance(xml, TestSuite) else list(xml)
    counts = {"tests": 0, "passed": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        for case in suite:
            counts["tests"] += 1
            kinds = {type(r) for r in case.result}
            if Error in kinds:
                counts["errors"] += 1
            elif Failure in kinds:
                counts["failures"] += 1
            elif Skipped in kinds:
                counts["skipped"] += 1
            else:
                counts["passed"] += 1
    return counts


def worker(reader: str, path: str, trace: bool) -> None:
    """Run one reader once and print its measurements as JSON on stdout."""
    import resource

    run = {"iterparse": _run_iterparse, "read_junit": _run_read_junit, "junitparser": _run_junitparser}[reader]
    if reader == "junitparser":
        import junitparser  # noqa: F401  (import cost stays out of the timing)
    elif reader == "iterparse":
        import defusedxml.ElementTree  # noqa: F401
    else:
        sys.path.insert(0, str(REPO))
        import policyengine.workspace.junit  # noqa: F401
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if trace:
        import tracemalloc

        tracemalloc.start()
    start = time.perf_counter()
    result = run(path)
    seconds = time.perf_counter() - start
    peak = None
    if trace:
        import tracemalloc

        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "seconds": seconds,
        "rss_delta_kib": rss_after - rss_before,  # ru_maxrss is in KiB on Linux
        "tracemalloc_peak": peak,
        "result": result,
    }))


# -- driver -------------------------------------------------------------------------------------


def _spawn(reader: str, path: Path, trace: bool) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", reader, "--file", str(path)] + (["--trace"] if trace else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=3600)  # noqa: S603  (our own script)
    if proc.returncode != 0:
        raise SystemExit(f"{reader} failed:\n{proc.stderr}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    """Generate the report, run every reader, print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--testcases", type=int, default=200_000)
    parser.add_argument("--suite-size", type=int, default=500, help="testcases per <testsuite> (default 500)")
    parser.add_argument("--out", type=Path, default=None, help="directory for the report (default: a temp dir)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per reader; the best is kept (default 3)")
    parser.add_argument("--readers", default=",".join(READERS), help="comma-separated subset of " + ",".join(READERS))
    parser.add_argument("--worker", choices=READERS, help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.file, args.trace)
        return 0

    readers = [r for r in args.readers.split(",") if r]
    tmp = None
    if args.out is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-junit-")
        out_dir = Path(tmp.name)
    else:
        out_dir = args.out
        out_dir.mkdir(parents=True, exist_ok=True)
    try:
        path = out_dir / f"junit-{args.testcases}.xml"
        expected = generate(path, args.testcases, args.suite_size)
        size_mb = path.stat().st_size / 1e6
        print(f"report: {path} ({size_mb:.1f} MB, {args.testcases} testcases, {args.suite_size} per suite)")
        print(f"expected: {expected}")
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, best of {args.repeat}\n")

        rows: dict[str, dict[str, Any]] = {}
        for reader in readers:
            runs = [_spawn(reader, path, trace=False) for _ in range(args.repeat)]
            traced = _spawn(reader, path, trace=True)
            rows[reader] = {
                "seconds": min(r["seconds"] for r in runs),
                "rss_mib": max(r["rss_delta_kib"] for r in runs) / 1024,
                "peak_mib": traced["tracemalloc_peak"] / 2**20,
                "result": runs[0]["result"],
            }

        base = rows.get("iterparse", {}).get("seconds")
        print("| reader | best wall time (s) | vs (a) | ru_maxrss growth (MiB) | tracemalloc peak (MiB) | counted |")
        print("|---|---:|---:|---:|---:|---|")
        for reader, row in rows.items():
            ratio = f"{row['seconds'] / base:.2f}x" if base else "-"
            result = row["result"]
            if isinstance(result, int):
                counted = f"{result} elements"
            else:
                counted = ", ".join(f"{k}={v}" for k, v in result.items())
            print(f"| {LABELS[reader]} | {row['seconds']:.2f} | {ratio} | {row['rss_mib']:.1f} | "
                  f"{row['peak_mib']:.1f} | {counted} |")
        if "iterparse" in rows and "read_junit" in rows:
            print(f"\nratio (b)/(a) wall time: {rows['read_junit']['seconds'] / rows['iterparse']['seconds']:.2f}")
        if "read_junit" in rows:
            got = {k: v for k, v in rows["read_junit"]["result"].items() if k != "flaky"}
            print("read_junit counts match the generator:", got == expected)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
