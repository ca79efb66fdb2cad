"""What the benchmarks share: result rows, interleaved timing, attention FLOP counting."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

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
