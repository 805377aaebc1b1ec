"""What defining one small frozen value class costs: ``@dataclass(frozen=True)`` against alternatives.

Usage: .venv/bin/python benchmarks/class_creation.py [--classes 300]
       (msgspec is not a dependency: ``pip install msgspec`` into a scratch venv to see its row)

Defines --classes classes of five fields (two with defaults, a docstring) each way, in one
process, best of three; and times importing the alternative in a fresh interpreter. Creating the
74 dataclasses a `check` defines is the largest part of its start-up above the libraries
(``startup_parts.py``); this is the measurement behind the alternative docs/performance.md names.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time


def with_dataclass(i: int) -> type:
    namespace = {"__annotations__": {"a": "int", "b": "str", "c": "tuple[str, ...]", "d": "int", "e": "str"},
                 "d": 0, "e": "", "__doc__": "A value."}
    return dataclasses.dataclass(frozen=True)(type(f"C{i}", (), namespace))


def with_msgspec(i: int) -> type:
    import msgspec

    return msgspec.defstruct(f"M{i}", [("a", int), ("b", str), ("c", tuple), ("d", int, 0), ("e", str, "")],
                             frozen=True)


def best_per_class(make: object, count: int) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for i in range(count):
            make(i)  # type: ignore[operator]
        best = min(best, (time.perf_counter() - start) / count)
    return best * 1e6


def import_ms(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print((time.perf_counter() - t) * 1000)"
    runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
            for _ in range(5)]
    return min(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=300)
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}, {args.classes} classes each, best of 3\n")
    print("| how | us per class | import, ms (min of 5 fresh interpreters) |")
    print("|---|---:|---:|")
    print(f"| @dataclass(frozen=True) | {best_per_class(with_dataclass, args.classes):.0f} | "
          f"{import_ms('dataclasses'):.1f} |")
    try:
        import msgspec  # noqa: F401
    except ImportError:
        print("| msgspec.Struct, frozen | (not installed: pip install msgspec) | - |")
        return
    print(f"| msgspec.Struct, frozen | {best_per_class(with_msgspec, args.classes):.0f} | {import_ms('msgspec'):.1f} |")


if __name__ == "__main__":
    main()
