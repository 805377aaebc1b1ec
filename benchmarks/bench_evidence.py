"""Evidence benchmarks: `evidence list` over 100,000 bundles, and bundling 1 GB of files.

Usage:
  .venv/bin/python benchmarks/bench_evidence.py list   [--bundles 100000] [--runs 7]
  .venv/bin/python benchmarks/bench_evidence.py quarter [--bundles 100000] [--runs 7]
  .venv/bin/python benchmarks/bench_evidence.py bundle [--mb 1024] [--kind binary|text|both] [--runs 3] [--nosync]

list: writes an archive's index.jsonl of --bundles synthetic records directly (one bundle every
~5 minutes over a year, two environments, both decisions; no zips: `list` reads only the index),
then times whole `policyengine evidence list --since --until` processes (interpreter start
included) for a one-month window: the first run builds index.sqlite from index.jsonl, the
others answer from it (after checking it is current). Also `python -c pass` for reference.

quarter: the same 100,000 records in a local archive and in a git store (a bare repository on
disk, ``git+file://``, with the records written directly as monthly index shards
``index/YYYY-MM.jsonl`` in one commit), then times whole `evidence list --csv` processes for one
quarter (``--since 2026-04-01 --until 2026-06-30``) side by side with a full listing (no
bounds) in each store. The git store's first run fetches into an empty cache (shallow,
blob-less, then only the shards of the period); the others find the commit in the cache.

bundle: writes --mb of evidence files (8 files; "binary": random bytes, as build artifacts;
"text": log lines, which are scanned for tokens), then in the same run: Python's own SHA-256 of
the same files (read + hashlib, 1 MiB chunks) and `LocalArchive.write_bundle` of them (copy,
redaction scan for text, SHA-256 of each member and of the whole zip, CRC-32). Each runs in a
fresh subprocess so its peak RSS is its own. Files are read from the page cache in both (the
files are written, synced to disk, then hashed twice before timing); the bundle is written
durably (fsync), hashlib writes nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


# -- list ---------------------------------------------------------------------------------------


def make_index(root: Path, count: int) -> None:
    from policyengine.evidence.stores.folder import bundle_relpath

    rng = random.Random(1)
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    root.mkdir(parents=True)
    chains: dict[str, tuple[int, str | None]] = {}
    with open(root / "index.jsonl", "w", encoding="utf-8") as f:
        for i in range(count):
            moment = start + timedelta(seconds=i * 315)
            bid = moment.strftime("%Y%m%dT%H%M%SZ") + "-" + f"{rng.getrandbits(48):012x}"
            env = "production" if i % 3 else "staging"
            seq, prev = chains.get(env, (0, None))
            sha = hashlib.sha256(bid.encode()).hexdigest()
            record = {
                "id": bid, "path": bundle_relpath(bid), "sha256": sha,
                "created_at": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "decision": "deny" if i % 7 == 0 else "allow", "environment": env,
                "repository": "acme/payments", "commit": f"{rng.getrandbits(160):040x}",
                "policy_sha256": "1" * 64, "sequence": seq + 1, "previous_sha256": prev, "signed_by": None,
            }
            chains[env] = (seq + 1, sha)
            f.write(json.dumps(record, sort_keys=True) + "\n")


def run_list(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "archive"
        t = time.perf_counter()
        make_index(root, args.bundles)
        made = time.perf_counter() - t
        size = (root / "index.jsonl").stat().st_size
        py = sys.executable
        cmd = [py, "-m", "policyengine", "evidence", "list", "--archive", str(root),
               "--since", "2026-06-01", "--until", "2026-06-30"]

        def timed(c: list[str]) -> tuple[float, str]:
            t0 = time.perf_counter()
            out = subprocess.run(c, cwd=REPO, capture_output=True, text=True, check=True).stdout
            return time.perf_counter() - t0, out

        cold, out = timed(cmd)
        rows = len(out.splitlines()) - 1
        warm = [timed(cmd)[0] for _ in range(args.runs)]
        warm_json = [timed([*cmd, "--json"])[0] for _ in range(args.runs)]
        narrow = [timed([*cmd[:-4], "--since", "2026-06-01", "--until", "2026-06-01", "--decision", "deny"])[0]
                  for _ in range(args.runs)]
        base = [timed([py, "-c", "pass"])[0] for _ in range(args.runs)]
    print(f"archive: {args.bundles} index records ({size / 1e6:.1f} MB index.jsonl, written in {made:.1f} s)")
    print(f"one-month window: {rows} bundles listed; medians of {args.runs} runs, whole process\n")
    print("| case | seconds |")
    print("|---|---:|")
    print(f"| first `evidence list` (builds index.sqlite from index.jsonl) | {cold:.3f} |")
    print(f"| `evidence list --since 2026-06-01 --until 2026-06-30` (table) | {statistics.median(warm):.3f} |")
    print(f"| same, `--json` | {statistics.median(warm_json):.3f} |")
    print(f"| one day, `--decision deny` | {statistics.median(narrow):.3f} |")
    print(f"| `python -c pass` | {statistics.median(base):.3f} |")


def make_git_store(records_file: Path, bare: Path) -> None:
    """Write the records of ``records_file`` as monthly index shards, in one commit on the evidence ref."""
    from policyengine.evidence.stores.git import shard_path

    shards: dict[str, list[bytes]] = {}
    with open(records_file, "rb") as f:
        for line in f:
            bid = json.loads(line)["id"]
            shards.setdefault(shard_path(bid).split("/", 1)[1], []).append(line)
    subprocess.run(["git", "init", "--quiet", "--bare", str(bare)], check=True)
    subprocess.run(["git", "-C", str(bare), "config", "uploadpack.allowFilter", "true"], check=True)

    def run(*args: str, data: bytes | None = None) -> str:
        return subprocess.run(["git", "-C", str(bare), *args], input=data, capture_output=True, check=True,
                              env={**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b",
                                   "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}).stdout.decode().strip()

    entries = "".join(f"100644 blob {run('hash-object', '-w', '--stdin', data=b''.join(lines))}\t{name}\n"
                      for name, lines in sorted(shards.items()))
    index_tree = run("mktree", data=entries.encode())
    root = run("mktree", data=f"040000 tree {index_tree}\tindex\n".encode())
    commit = run("commit-tree", root, "-m", "synthetic index")
    run("update-ref", "refs/heads/policyengine-evidence", commit)


def run_quarter(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root, bare, cache = Path(tmp) / "archive", Path(tmp) / "evidence.git", Path(tmp) / "cache"
        make_index(root, args.bundles)
        make_git_store(root / "index.jsonl", bare)
        git_url = f"git+file://{bare}#refs/heads/policyengine-evidence"
        # Byte-code caches as an installed package has them (a shell with PYTHONDONTWRITEBYTECODE
        # would otherwise compile every changed module in every run and time the compiler).
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["POLICYENGINE_CACHE_DIR"] = str(cache)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "policyengine")], check=True, env=env)
        quarter = ["--since", "2026-04-01", "--until", "2026-06-30", "--csv"]

        def timed(archive: str, bounds: list[str]) -> tuple[float, int]:
            c = [sys.executable, "-m", "policyengine", "evidence", "list", "--archive", archive, *bounds]
            t0 = time.perf_counter()
            out = subprocess.run(c, cwd=REPO, capture_output=True, text=True, check=True, env=env).stdout
            return time.perf_counter() - t0, len(out.splitlines()) - 1

        stores = [("local folder", str(root)), ("git store", git_url)]
        if args.shard:
            sharded = Path(tmp) / "sharded"
            shutil.copytree(root, sharded)
            subprocess.run([sys.executable, "-m", "policyengine", "evidence", "migrate", "--archive", str(sharded)],
                           cwd=REPO, capture_output=True, check=True, env=env)
            stores.insert(1, ("local folder, sharded (`evidence migrate`)", str(sharded)))
        rows: dict[tuple[str, str], tuple[list[float], int]] = {}
        first = {}
        base: list[float] = []
        for name, archive in stores:
            first[name] = timed(archive, quarter)[0]  # the local cache is built, the git cache fetched
        # Interleaved, with the baseline in every round: a load spike on the shared machine then
        # slows every case of that round alike, and the ratio to `python -c pass` stays fair.
        for _ in range(args.runs):
            base.append(timed_pass())
            for name, archive in stores:
                for label, bounds in (("quarter", quarter), ("full", ["--csv"])):
                    t, n = timed(archive, bounds)
                    rows.setdefault((name, label), ([], n))[0].append(t)
    bare = statistics.median(base)
    print(f"{args.bundles} bundles over a year; min / median of {args.runs} whole processes (`--csv`), "
          "interleaved with `python -c pass`\n")
    print("| store | first run (cold cache), quarter | quarter (2026-04-01..06-30) | x bare (median) | rows "
          "| full listing | rows |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, _ in stores:
        (q, qn), (f, fn) = rows[(name, "quarter")], rows[(name, "full")]
        print(f"| {name} | {first[name]:.3f} | **{min(q):.3f} / {statistics.median(q):.3f}** | "
              f"{statistics.median(q) / bare:.0f}x | {qn} | {min(f):.3f} / {statistics.median(f):.3f} | {fn} |")
    print(f"\n`python -c pass`: {min(base):.4f} / {bare:.4f} s (min / median)")


def timed_pass() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - t0


# -- bundle -------------------------------------------------------------------------------------


def make_files(folder: Path, total_mb: int, kind: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    per = total_mb * (1 << 20) // 8
    paths = []
    rng = random.Random(2)
    line = b"2026-11-24T15:00:00Z INFO worker[%d] request handled in %d ms path=/api/v1/refunds status=200\n"
    for i in range(8):
        path = folder / (f"artifact-{i}.bin" if kind == "binary" else f"build-{i}.log")
        with open(path, "wb") as f:
            written = 0
            if kind == "binary":
                block = os.urandom(1 << 20)
                while written < per:
                    f.write(block)
                    written += len(block)
            else:
                block = b"".join(line % (rng.randrange(64), rng.randrange(999)) for _ in range(12000))
                while written < per:
                    f.write(block)
                    written += len(block)
        paths.append(path)
    return paths


_HASH = """
import hashlib, json, resource, sys, time
t = time.perf_counter(); out = {}
for p in sys.argv[1:]:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    out[p] = h.hexdigest()
print(json.dumps({"seconds": time.perf_counter() - t, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "digests": out}))
"""

_BUNDLE = """
import json, os, resource, sys, time
from datetime import datetime, timezone
from policyengine.evidence.stores.folder import LocalArchive
from policyengine.models import FileRead
archive, digests = sys.argv[1], json.loads(sys.argv[2])
if sys.argv[3] == "nosync":  # to separate the CPU cost from the disk's: never in real use
    os.fsync = os.fdatasync = lambda fd: None
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
files = [FileRead(relpath=os.path.basename(p), abspath=p, sha256=d, size=os.path.getsize(p)) for p, d in digests.items()]
t = time.perf_counter()
ref = LocalArchive(archive).write_bundle(decision={"decision": "allow", "rules": []}, change={"repository": "acme/x",
    "environment": "production", "commit": "a" * 40}, policy_filename="p.yml", policy_bytes=b"x", files=files)
print(json.dumps({"seconds": time.perf_counter() - t, "rss_before_mb": rss0,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "path": ref.path}))
"""


def run_bundle(args: argparse.Namespace) -> None:
    kinds = ["binary", "text"] if args.kind == "both" else [args.kind]
    print("| files | size | hashlib SHA-256 | write_bundle | ratio | peak RSS hashlib / bundle |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind in kinds:
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            paths = make_files(Path(tmp) / "files", args.mb, kind)
            os.sync()  # the new files' dirty pages must not compete with the bundle's writes
            total = sum(p.stat().st_size for p in paths)
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            # Warm the page cache for both, so neither pays the disk.
            hashed = json.loads(subprocess.run([sys.executable, "-c", _HASH, *map(str, paths)], capture_output=True,
                                               text=True, check=True).stdout)
            hashed = json.loads(subprocess.run([sys.executable, "-c", _HASH, *map(str, paths)], capture_output=True,
                                               text=True, check=True).stdout)
            for mode in ("fsync", "nosync") if args.nosync else ("fsync",):
                for _ in range(args.runs):
                    bundled = json.loads(subprocess.run(
                        [sys.executable, "-c", _BUNDLE, str(Path(tmp) / "archive"), json.dumps(hashed["digests"]),
                         mode], capture_output=True, text=True, check=True, env=env).stdout)
                    zip_size = (Path(tmp) / "archive" / bundled["path"]).stat().st_size
                    h_speed = total / hashed["seconds"] / 1e6
                    b_speed = total / bundled["seconds"] / 1e6
                    label = kind + ("" if mode == "fsync" else ", no fsync (CPU only)")
                    print(f"| {label} | {total / 1e6:.0f} MB (zip {zip_size / 1e6:.0f} MB) | "
                          f"{hashed['seconds']:.2f} s ({h_speed:.0f} MB/s) | {bundled['seconds']:.2f} s "
                          f"({b_speed:.0f} MB/s) | {b_speed / h_speed:.2f} | "
                          f"{hashed['rss_mb']:.0f} MB / {bundled['rss_mb']:.0f} MB |", flush=True)
                    shutil.rmtree(Path(tmp) / "archive", ignore_errors=True)
                    os.sync()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p_list = sub.add_parser("list")
    p_list.add_argument("--bundles", type=int, default=100_000)
    p_list.add_argument("--runs", type=int, default=7)
    p_quarter = sub.add_parser("quarter")
    p_quarter.add_argument("--bundles", type=int, default=100_000)
    p_quarter.add_argument("--runs", type=int, default=7)
    p_quarter.add_argument("--shard", action="store_true",
                           help="Also time a copy of the local archive sharded by `evidence migrate`.")
    p_bundle = sub.add_parser("bundle")
    p_bundle.add_argument("--mb", type=int, default=1024)
    p_bundle.add_argument("--kind", choices=["binary", "text", "both"], default="both")
    p_bundle.add_argument("--dir", default=None, help="Where to write the files (default: the temp folder).")
    p_bundle.add_argument("--runs", type=int, default=3, help="Bundle runs per kind (each printed).")
    p_bundle.add_argument("--nosync", action="store_true",
                          help="Also run without fsync, to show the CPU cost apart from the disk's.")
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cores\n")
    {"list": run_list, "quarter": run_quarter, "bundle": run_bundle}[args.what](args)


if __name__ == "__main__":
    main()
