"""Run the benchmarks: ``python -m benchmarks [--quick] [--only NAME[,NAME]] [--threads N]``.

``retention`` trains whole curricula (hours; ``--quick``: minutes), one run after another in
fresh processes rather than in interleaved rounds, so it runs only when named
in ``--only``; the others run by default.

Every comparison runs side by side in this one process, in interleaved rounds, and is
reported as a ratio of medians (or a median of per-round ratios), so that load from other
processes cancels out. The figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import gymnasium
import stable_baselines3
import torch

from benchmarks import retention, sampling, scaling, throughput
from benchmarks.common import Row

BENCHMARKS: dict[str, Callable[[bool], list[Row]]] = {
    "throughput": throughput.run,
    "scaling": scaling.run,
    "sampling": sampling.run,
    "retention": retention.run,
}
LONG = ("retention",)
"""Run only when named in ``--only``."""
DEFAULT = [name for name in BENCHMARKS if name not in LONG]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> str:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return "\n".join(
        [
            f"CPU:      {cpu_model()}, {os.cpu_count()} cores ({usable} usable)",
            f"load:     {load} (1, 5, 15 min) at start",
            f"software: Python {platform.python_version()}, torch {torch.__version__}, "
            f"SB3 {stable_baselines3.__version__}, gymnasium {gymnasium.__version__}",
            f"threads:  torch.set_num_threads({torch.get_num_threads()})",
        ]
    )


def table(rows: list[Row]) -> str:
    lines = ["| benchmark | metric | value | goal | met |", "|---|---|---|---|---|"]
    for r in rows:
        met = "—" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(f"| {r.benchmark} | {r.metric} | {r.value} | {r.goal} | {met} |")
    return "\n".join(lines)


def parse_only(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}"
        )
    return names


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and rounds (about 1-2 minutes)")
    parser.add_argument(
        "--only",
        type=parse_only,
        default=DEFAULT,
        help=f"comma-separated subset of {', '.join(BENCHMARKS)} (default: all but {', '.join(LONG)})",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    print("# nb2-agents benchmarks" + (" (quick)" if args.quick else ""))
    print(machine())
    rows: list[Row] = []
    start = time.perf_counter()
    for name in args.only:
        t0 = time.perf_counter()
        rows += BENCHMARKS[name](args.quick)
        print(f"   ({name}: {time.perf_counter() - t0:.0f} s)")
    print(f"\n## Summary ({time.perf_counter() - start:.0f} s in all)\n")
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
