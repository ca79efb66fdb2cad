"""Adaptive token sampling on vs off, in the full NB2 network (inference, as in rollouts).

Two networks share the same weights and differ only in ``sampling``. Inputs are random but
structured, so that some tokens matter more than others: images are dark scenes with a few
bright rectangles, vectors are a few smooth bumps on a flat, slightly noisy baseline.

The figures are for freshly initialised weights. Each group keeps a fixed share of its tokens
(``keep_ratio``), so the count, and the saving, does not depend on the weights or the batch;
which tokens are kept does.

Return: every NB2 student of the policy zoo (``policies/zoo``) whose encoder samples tokens is
evaluated twice on the same episode seeds, as trained (sampling on) and with sampling switched
off at inference, same weights. That is not the design goal's comparison (a network trained
without sampling): a network trained with sampling has only ever seen its kept tokens, so
switching sampling off shows how much it depends on it, and the row has no goal.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from gymnasium import spaces

from benchmarks.common import (
    Row,
    calibrate,
    count_flops,
    fmt_flops,
    fmt_time,
    interleave,
    median,
    median_ratio,
    time_calls,
)
from nb2_agents.envs_util import EnvSpec, check_env_id
from nb2_agents.nn.config import get_config
from nb2_agents.nn.encoder import HierarchicalEncoder
from nb2_agents.nn.model import NB2
from nb2_agents.nn.probes import kept_share
from nb2_agents.zoo.card import Card

IMAGE_SPACE = spaces.Box(0, 255, (64, 64, 3), np.uint8)
VECTOR_SPACE = spaces.Box(-1.0, 1.0, (256,), np.float32)
SPACES: dict[str, spaces.Box] = {"image 64x64x3": IMAGE_SPACE, "vector 256": VECTOR_SPACE}
TARGET_S = 0.1
"""Seconds of back-to-back forwards per timing."""


def structured_images(batch: int, gen: torch.Generator) -> torch.Tensor:
    """(B, 64, 64, 3) floats in [0, 1] (SB3-preprocessed uint8): dark noise plus 2-4 bright boxes."""
    h, w, c = IMAGE_SPACE.shape
    img = torch.rand(batch, h, w, c, generator=gen) * 0.08
    for b in range(batch):
        for _ in range(int(torch.randint(2, 5, (1,), generator=gen))):
            y, x = (int(v) for v in torch.randint(0, h - 8, (2,), generator=gen))
            dy, dx = (int(v) for v in torch.randint(4, 12, (2,), generator=gen))
            img[b, y : y + dy, x : x + dx] = 0.5 + 0.5 * torch.rand(c, generator=gen)
    return img


def structured_vectors(batch: int, gen: torch.Generator) -> torch.Tensor:
    """(B, 256) in [-1, 1]: 1-3 Gaussian bumps of either sign over small noise."""
    n = VECTOR_SPACE.shape[0]
    pos = torch.arange(n, dtype=torch.float32)
    x = torch.randn(batch, n, generator=gen) * 0.02
    for b in range(batch):
        for _ in range(int(torch.randint(1, 4, (1,), generator=gen))):
            centre = float(torch.randint(0, n, (1,), generator=gen))
            width = 2.0 + 6.0 * float(torch.rand(1, generator=gen))
            height = float(torch.rand(1, generator=gen)) * 1.6 - 0.8
            x[b] += height * torch.exp(-(((pos - centre) / width) ** 2))
    return x.clamp(-1.0, 1.0)


def observations(space_name: str, batch: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return structured_images(batch, gen) if space_name.startswith("image") else structured_vectors(batch, gen)


def kept_fraction(net: NB2, obs: torch.Tensor) -> float:
    """Mean share of fine tokens that adaptive sampling kept; 1.0 if none."""
    kept = kept_share(net, obs)
    return 1.0 if kept is None else float(kept.mean())


def twins(space: spaces.Box, preset: str) -> tuple[NB2, NB2]:
    """(sampling on, sampling off): the same weights, in eval mode."""
    on = NB2(space, get_config(preset, sampling=True)).eval()
    off = NB2(space, get_config(preset, sampling=False)).eval()
    result = off.load_state_dict(on.state_dict(), strict=False)
    assert not result.missing_keys and all(".router." in k for k in result.unexpected_keys)
    return on, off


def forward(net: NB2, obs: torch.Tensor) -> Callable[[], None]:
    def call() -> None:
        with torch.no_grad():
            net(obs)

    return call


def measure(space_name: str, preset: str, batch: int, quick: bool) -> list[Row]:
    on, off = twins(SPACES[space_name], preset)
    obs = observations(space_name, batch)
    calls = {"on": forward(on, obs), "off": forward(off, obs)}
    # FLOPs are counted with autograd on: FlopCounterMode's module tracker fails under no_grad on
    # views of parameters (the pooling seeds); the ops, and so the FLOPs, are the same.
    flops = {name: count_flops(partial(net, obs)) for name, net in (("on", on), ("off", off))}
    kept = kept_fraction(on, obs)
    tasks = {name: partial(time_calls, call, calibrate(call, TARGET_S)) for name, call in calls.items()}
    times = interleave(tasks, 5 if quick else 7)
    ratio = median_ratio(times["on"], times["off"])
    attn_saved = 1.0 - flops["on"].attention / flops["off"].attention
    total_saved = 1.0 - flops["on"].total / flops["off"].total
    label = f"{preset} {space_name} B={batch}"
    attn_off, attn_on = fmt_flops(flops["off"].attention), fmt_flops(flops["on"].attention)
    print(
        f"   {label:<26} attn {attn_off:>11} -> {attn_on:>11}"
        f" ({attn_saved:6.1%} saved)  total {total_saved:6.1%} saved"
        f"  time {fmt_time(median(times['off'])):>9} -> {fmt_time(median(times['on'])):>9} (x{ratio:.2f})"
        f"  kept {kept:.2f}"
    )
    return [
        Row("sampling", f"{label}: attention FLOPs saved", f"{attn_saved:.1%} (total {total_saved:.1%})"),
        Row("sampling", f"{label}: time on/off", f"{ratio:.2f}"),
        Row("sampling", f"{label}: fine tokens kept", f"{kept:.2f}"),
    ]


def _encoders(model: object) -> list[HierarchicalEncoder]:
    policy = model.policy  # type: ignore[attr-defined]
    return [m for m in policy.modules() if isinstance(m, HierarchicalEncoder)]


def return_change(card: Card, episodes: int) -> list[Row]:
    """Return with sampling as trained vs switched off, same weights and episode seeds."""
    from nb2_agents.evaluation import load_model, run_episodes

    loaded = load_model(card.model_path, device="cpu")
    encoders = [enc for enc in _encoders(loaded.model) if enc.sample]
    if not encoders:
        return []
    settings = card.evaluation
    check_env_id(card.env)  # registers the env's extra (minigrid) if it is installed
    spec = EnvSpec(card.env, {}, loaded.algo)
    means = {}
    for label, on in (("on", True), ("off", False)):
        for enc in encoders:
            enc.sample = on
        vec = spec.make_vec(1, seed=settings.seed)
        returns, _, _ = run_episodes(loaded.model, vec, episodes, settings.deterministic)
        vec.close()
        means[label] = float(np.mean(returns))
    base = abs(means["off"]) or 1.0
    change = (means["on"] - means["off"]) / base
    print(
        f"   {card.name:<26} return off {means['off']:.3f} -> on {means['on']:.3f}"
        f" ({change:+.1%}, {episodes} episodes, seed {settings.seed})"
    )
    return [
        Row(
            "sampling",
            f"{card.name} ({card.env}): return as trained (on) vs sampling switched off at inference",
            f"{means['on']:.3f} vs {means['off']:.3f} ({change:+.1%})",
        )
    ]


def trained_rows(quick: bool) -> list[Row]:
    from nb2_agents.zoo.registry import entries

    students = [c for c in entries().values() if c.kind == "student" and c.built is not None]
    print("\n   change in return, trained zoo students, sampling on (as trained) vs off:")
    rows: list[Row] = []
    for card in students:
        rows += return_change(card, 5 if quick else card.evaluation.episodes)
    if not rows:
        print("   (no zoo student samples tokens: nothing to compare)")
    return rows


def run(quick: bool = False) -> list[Row]:
    presets = ("nano",) if quick else ("nano", "small")
    print("\n## Sampling: NB2 forward (no grad), adaptive token sampling on vs off, same weights")
    print(
        "   attention FLOPs off -> on, total FLOPs saved, time per forward off -> on (x on/off), kept shares"
    )
    print("   freshly initialised weights: a trained network may keep a different share of tokens")
    rows: list[Row] = []
    for preset in presets:
        for space_name in SPACES:
            for batch in (1, 64):
                rows += measure(space_name, preset, batch, quick)
    return rows + trained_rows(quick)
