"""Encoder cost against token count: NB2's hierarchical encoder vs flat attention.

N tokens are laid out as a long vector is: g = N / group_size contiguous groups. The
hierarchical encoder attends inside each group (n_local_layers), pools every group into a
summary, regroups the summaries while more remain than fit in one group, and lets the top
summaries attend together with the global and task tokens (n_global_layers). The flat encoder
(``attention: flat``) runs n_local_layers + n_global_layers full self-attention blocks over
the N tokens plus the global and task tokens. Both are the same class, with the same width.

Token sampling is off here, so only the attention pattern differs (``sampling.py`` measures
sampling). The time is one forward + backward of a batch, the loss summing every output token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from benchmarks.common import (
    Flops,
    Point,
    Row,
    calibrate,
    check,
    count_flops,
    fmt_flops,
    fmt_time,
    interleave,
    median,
    median_ratio,
    time_calls,
)
from nb2_agents.nn.blocks import init_weights
from nb2_agents.nn.config import NB2Config, get_config
from nb2_agents.nn.encoder import HierarchicalEncoder
from nb2_agents.nn.tokenizer import TokenSet

TOKEN_COUNTS = (16, 64, 256, 1024)
GOALS = {64: 2.0, 256: 4.0}
"""Speed-up of the hierarchical encoder that each token count should reach, nano and small: issue
14's targets (the design card, ``NB2.md``, asks >= 2x at 64 tokens and >= 3x at 256)."""
TARGET_S = 0.1
"""Seconds of back-to-back steps per timing."""


def encoder_step(cfg: NB2Config, n_tokens: int, batch: int) -> Callable[[], None]:
    """One forward + backward of :class:`HierarchicalEncoder` on ``n_tokens`` random tokens in
    groups of ``group_size`` (one sequence of them under ``attention: flat``)."""
    group = min(cfg.group_size, n_tokens)
    n_groups = n_tokens // group
    enc = HierarchicalEncoder(cfg, n_groups, group)
    enc.apply(init_weights)
    tokens = torch.randn(batch, n_groups, group, cfg.d_model)
    mask = torch.ones(n_groups, group, dtype=torch.bool)

    def step() -> None:
        enc.zero_grad(set_to_none=True)
        mem = enc(TokenSet(tokens, mask, None, full=True))
        mem.tokens.sum().backward()

    return step


@dataclass(frozen=True)
class Result:
    hier: float
    """Median seconds per step of the hierarchical encoder."""
    flat: float
    """Median seconds per step of the flat encoder."""
    speedup: float
    """Median over rounds of flat / hier, each round's pair timed side by side."""
    hier_flops: Flops
    flat_flops: Flops


def compare(preset: str, n_tokens: int, batch: int, quick: bool) -> Result:
    """Time and count FLOPs of one forward + backward of each encoder."""
    cfg = get_config(preset, sampling=False)
    flat = cfg.replace(attention="flat")
    steps = {"hier": encoder_step(cfg, n_tokens, batch), "flat": encoder_step(flat, n_tokens, batch)}
    flops = {name: count_flops(step) for name, step in steps.items()}
    # each timing lasts about TARGET_S (one call at least), so both sides see the same load
    tasks = {name: partial(time_calls, step, calibrate(step, TARGET_S)) for name, step in steps.items()}
    times = interleave(tasks, 5 if quick else 7)
    speedup = median_ratio(times["flat"], times["hier"])
    return Result(median(times["hier"]), median(times["flat"]), speedup, flops["hier"], flops["flat"])


def run(quick: bool = False, batch: int = 32) -> list[Row]:
    presets = ("nano",) if quick else ("nano", "small")
    counts = TOKEN_COUNTS[:3] if quick else TOKEN_COUNTS
    print(f"\n## Scaling: encoder forward + backward, batch {batch}, hierarchical vs flat (sampling off)")
    print("   16 tokens are one group, where NB2 runs max(n_local, n_global) blocks instead of their sum")
    print(
        f"   {'preset':<6} {'tokens':>6} {'hier':>10} {'flat':>10} {'speed-up':>8}"
        f" {'hier attn':>12} {'flat attn':>12} {'hier total':>12} {'flat total':>12}"
    )
    rows: list[Row] = []
    for preset in presets:
        for n in counts:
            res = compare(preset, n, batch, quick)
            hier, flat, speedup, fh, ff = res.hier, res.flat, res.speedup, res.hier_flops, res.flat_flops
            print(
                f"   {preset:<6} {n:>6} {fmt_time(hier):>10} {fmt_time(flat):>10} {speedup:>7.2f}x"
                f" {fmt_flops(fh.attention):>12} {fmt_flops(ff.attention):>12}"
                f" {fmt_flops(fh.total):>12} {fmt_flops(ff.total):>12}"
            )
            goal = GOALS.get(n)
            rows.append(
                Row(
                    "scaling",
                    f"{preset} {n} tokens: hier speed-up",
                    f"{speedup:.2f}x ({fmt_time(hier)} vs {fmt_time(flat)})",
                    "—" if goal is None else f">= {goal:g}x",
                    None if goal is None else check(speedup, goal),
                    points=(
                        Point(f"{preset} hierarchical", n, hier * 1e3, "ms"),
                        Point(f"{preset} flat", n, flat * 1e3, "ms"),
                    ),
                )
            )
            attn = fh.attention / ff.attention
            rows.append(Row("scaling", f"{preset} {n} tokens: hier/flat attention FLOPs", f"{attn:.3f}"))
    return rows
