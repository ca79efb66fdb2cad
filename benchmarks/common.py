"""What the benchmarks share: result rows, interleaved timing, attention FLOP counting, and the
long benchmarks' runs, each in a fresh process, kept so that a later invocation resumes."""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from nb2_agents import executor

aten = torch.ops.aten


@dataclass(frozen=True)
class Point:
    """One plotted value: ``y`` (in ``unit``) of ``series`` at ``x`` (a number: a line; a label: a bar)."""

    series: str
    x: float | str
    y: float
    unit: str


@dataclass(frozen=True)
class Row:
    """One line of the summary table. ``met`` is None when the figure has no goal."""

    benchmark: str
    metric: str
    value: str
    goal: str = "—"
    met: bool | None = None
    points: tuple[Point, ...] = ()
    """What the row's benchmark plot draws for it (``benchmarks/report.py``); may be empty."""


def check(value: float, goal: float) -> bool:
    return value >= goal


def time_calls(fn: Callable[[], Any], reps: int) -> float:
    """Seconds per call of ``fn``, averaged over ``reps`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def calibrate(fn: Callable[[], Any], target: float) -> int:
    """How many back-to-back calls of ``fn`` take about ``target`` seconds (at least 1)."""
    fn()  # warm-up
    once = time_calls(fn, 1)
    return max(1, round(target / max(once, 1e-9)))


def interleave(tasks: Mapping[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run each task once per round and collect what it returns (a time, a rate...).

    The order rotates every round (ABC, BCA, CAB, ...), so load from other processes and slow
    drift of the machine land on every task alike and cancel out of their ratios.
    """
    names = list(tasks)
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            out[name].append(tasks[name]())
    return out


def median(values: list[float]) -> float:
    return statistics.median(values)


def median_ratio(num: list[float], den: list[float]) -> float:
    """Median of the per-round ratios: each round's pair ran side by side, under the same load."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


# PyTorch's FlopCounterMode knows the CUDA attention kernels but not the one SDPA picks on a
# CPU; the CPU kernel takes the same (query, key, value, ...) arguments.
def _cpu_sdpa_flop(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return int(sdpa_flop_count(query, key, value))


def _cpu_sdpa_backward_flop(
    grad_out: Any, query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    return int(sdpa_backward_flop_count(grad_out, query, key, value))


_CPU_SDPA = {
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flop,
}


@dataclass(frozen=True)
class Flops:
    attention: int
    """FLOPs of scaled-dot-product attention (QKᵀ and AV, and their backward)."""
    total: int
    """FLOPs of every op FlopCounterMode counts (matmuls, convolutions, attention)."""


def count_flops(fn: Callable[[], Any]) -> Flops:
    """FLOPs of one call of ``fn``, with attention ops counted separately."""
    with FlopCounterMode(display=False, custom_mapping=_CPU_SDPA) as counter:
        fn()
    ops = counter.get_flop_counts()["Global"]
    attention = sum(n for op, n in ops.items() if "attention" in str(op))
    return Flops(attention=int(attention), total=int(sum(ops.values())))


def fmt_flops(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}FLOP"
    return f"{n:.0f} FLOP"


def fmt_time(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.0f} µs"


# --------------------------------------------------------------------------- runs in fresh processes

MB = 1024 * 1024
MEASURED_DIR = "measured"
"""Under a long benchmark's runs dir: one JSON per finished job; a later invocation resumes after them."""


def cpu_s() -> float:
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def maxrss_mb() -> float:
    """This process's peak resident set (``ru_maxrss``) in MB (Linux reports kilobytes, macOS bytes)."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value / MB if sys.platform == "darwin" else value * 1024 / MB


def eval_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(step, mean return) from SB3's ``eval/evaluations.npz``; empty if there is none."""
    path = run_dir / "eval" / "evaluations.npz"
    if not path.is_file():
        return []
    data = np.load(path)
    return [(int(t), float(np.mean(r))) for t, r in zip(data["timesteps"], data["results"], strict=True)]


class Job(Protocol):
    """A run of a long benchmark: a frozen dataclass of plain values (the key of its kept outcome)."""

    @property
    def label(self) -> str: ...


class Outcome(Protocol):
    """What a job produced: a dataclass of plain values (it crosses processes and goes to JSON)."""

    error: str | None

    def summary(self) -> str:
        """The figures of the progress line."""
        ...


J = TypeVar("J", bound=Job)
R = TypeVar("R", bound=Outcome)


def load_kept(path: Path, job: Any, rebuild: Callable[[dict[str, Any]], R]) -> R | None:
    """The outcome kept at ``path`` for exactly ``job`` (every field equal), rebuilt from its
    fields (``job`` left out); None where there is none, it was another job's, or it cannot be read."""
    try:
        data = json.loads(path.read_text())
        if data["job"] != json.loads(json.dumps(asdict(job))):
            return None
        return rebuild({k: v for k, v in data["outcome"].items() if k != "job"})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_kept(path: Path, job: Any, outcome: Any) -> None:
    """Keep a finished job's outcome at ``path`` (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"job": asdict(job), "outcome": asdict(outcome)}, indent=1))
    tmp.replace(path)


def _guarded(run: Callable[[J], R], job: J) -> tuple[R | None, str]:
    """``run(job)`` and no error, or None and the error it raised: one failed run does not cost
    the others'."""
    try:
        return run(job), ""
    except Exception as err:
        return None, f"{type(err).__name__}: {' '.join(str(err).split())}"


def run_jobs(
    jobs: Sequence[J],
    workers: int,
    run: Callable[[J], R],
    where: Callable[[J], Path],
    rebuild: Callable[[J, dict[str, Any]], R],
    failed: Callable[[J, str], R],
) -> list[R]:
    """``run(job)`` for every job, each in a fresh process of its own (:func:`nb2_agents.executor.run_jobs`
    with ``fresh``: a Ray worker used once, ``workers`` side by side, or on the cluster of
    ``--address`` / ``RAY_ADDRESS``; one spawned process after another for ``--workers 1``), in
    ``jobs``' order. A job kept by an earlier invocation (``where(job)``, see :func:`load_kept`) is
    not run again; a finished one is kept there as soon as it finishes. A job that raises becomes
    ``failed(job, error)``; it is not kept (it runs again)."""
    done: dict[int, R] = {}
    todo: list[int] = []
    for i, job in enumerate(jobs):
        cached = load_kept(where(job), job, partial(rebuild, job))
        if cached is None:
            todo.append(i)
            continue
        done[i] = cached
        print(f"   [{len(done)}/{len(jobs)}] {job.label:<38} measured earlier: {where(job)}", flush=True)

    def finished(k: int, result: tuple[Any, str]) -> None:
        job = jobs[todo[k]]
        outcome, error = result
        if error:
            outcome = failed(job, error)
        else:
            save_kept(where(job), job, outcome)
        done[todo[k]] = outcome
        print(
            f"   [{len(done)}/{len(jobs)}] {job.label:<38} {outcome.error or outcome.summary()}", flush=True
        )

    executor.run_jobs(partial(_guarded, run), [jobs[i] for i in todo], workers, fresh=True,
                      on_result=finished)  # fmt: skip
    return [done[i] for i in range(len(jobs))]


def names_of(valid: Sequence[str], what: str) -> Callable[[str], list[str]]:
    """An argparse ``type``: comma-separated names, each one of ``valid`` (``what`` names them)."""

    def parse(value: str) -> list[str]:
        names = [v.strip() for v in value.split(",") if v.strip()]
        unknown = sorted(set(names) - set(valid))
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"unknown {what}(s) {unknown}; choose from {', '.join(valid)}")
        return names

    return parse


def add_run_options(
    parser: argparse.ArgumentParser, workers: int, runs_dir: Path, quick_runs_dir: Path
) -> None:
    """A long benchmark's options for its runs: ``--workers``, ``--runs-dir``, ``--device``, ``--threads``."""
    parser.add_argument(
        "--workers", type=int, default=workers, help=f"runs side by side, on Ray (default {workers})"
    )
    parser.add_argument(
        "--address", metavar="auto|HOST:PORT", help="run them on this Ray cluster (default: RAY_ADDRESS)"
    )
    parser.add_argument("--runs-dir", type=Path, help=f"default {runs_dir} ({quick_runs_dir} with --quick)")
    parser.add_argument("--device", default="auto", help="torch device (default auto)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per run (default 1)")


def parse_run_options(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> tuple[argparse.Namespace, dict[str, Any]]:
    """Parse ``argv``, set torch's threads, and return the arguments and the run options of
    :func:`add_run_options` as ``run(...)`` keywords (``workers``, ``runs_dir``, ``device``)."""
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.address:  # where nb2_agents.executor looks for a cluster
        os.environ["RAY_ADDRESS"] = args.address
    return args, dict(workers=args.workers, runs_dir=args.runs_dir, device=args.device)
