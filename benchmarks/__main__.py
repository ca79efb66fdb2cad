"""Run the benchmarks: ``python -m benchmarks [--quick] [--only NAME[,NAME]] [--threads N] [--out FILE]``.

``make bench`` runs them all (but ``retention``, ``distill`` and ``reliability``) and writes
``benchmarks/RESULTS.md`` (the machine, the table, the targets missed) and
``benchmarks/plots/*.png``; ``--out ''`` writes nothing.

``retention`` trains whole curricula (hours; ``--quick``: minutes), one run after another in
fresh processes rather than in interleaved rounds, and ``distill`` trains kickstarted, scratch
and distilled students from the policy zoo (hours; ``--quick``: minutes), and ``reliability``
trains NB2-nano and SB3's MlpPolicy on 8 env / algorithm rows over 10 seeds each (about 7 hours
on two cores; ``--quick``: minutes), and ``speed`` trains NB2, flat attention and SB3's networks
on DoorKey as cells and as pixels to the same return (hours; ``--quick``: minutes), so they run
only when named in ``--only``; the others run by default.

Every comparison runs side by side in this one process, in interleaved rounds, and is
reported as a ratio of medians (or a median of per-round ratios), so that load from other
processes cancels out. The figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium
import stable_baselines3
import torch

from benchmarks import (
    distill,
    latency,
    overhead,
    parity,
    reliability,
    report,
    retention,
    sampling,
    scaling,
    speed,
    throughput,
)
from benchmarks.common import Row

BENCHMARKS: dict[str, Callable[[bool], list[Row]]] = {
    "throughput": throughput.run,
    "scaling": scaling.run,
    "sampling": sampling.run,
    "overhead": overhead.run,
    "latency": latency.run,
    "parity": parity.run,
    "retention": retention.run,
    "distill": distill.run,
    "reliability": reliability.run,
    "speed": speed.run,
}
LONG = ("retention", "distill", "reliability", "speed")
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
    parser.add_argument(
        "--out",
        default=str(report.RESULTS),
        help="markdown report, plots beside it in plots/ (default benchmarks/RESULTS.md; '' for none)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    print("# nb2-agents benchmarks" + (" (quick)" if args.quick else ""))
    about = machine()
    print(about)
    rows: list[Row] = []
    start = time.perf_counter()
    for name in args.only:
        t0 = time.perf_counter()
        rows += BENCHMARKS[name](args.quick)
        print(f"   ({name}: {time.perf_counter() - t0:.0f} s)")
    seconds = time.perf_counter() - start
    print(f"\n## Summary ({seconds:.0f} s in all)\n")
    print(report.table(rows))
    if args.out:
        command = "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])
        plots = report.write(rows, about, command.strip(), seconds, Path(args.out))
        print(f"\nwrote {args.out}" + "".join(f", {p}" for p in plots))
    return rows


if __name__ == "__main__":
    main()
