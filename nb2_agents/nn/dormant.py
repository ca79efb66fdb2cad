"""Dormant units: the plasticity diagnostic of ReDo (Sokar et al. 2023, "The Dormant Neuron
Phenomenon in Deep Reinforcement Learning").

A hidden unit ``i`` of a layer is τ-dormant on a batch when its mean absolute activation is at
most τ times the layer's average: ``E|h_i| / mean_j E|h_j| <= τ``. A network that trains task
after task can lose units this way, and with them the capacity to learn the next task. NB2's
hidden units are the SiLU outputs of every block's MLP (``blocks.MLP``); the share of dormant
ones per block is what ``retention/dormant_frac/<block>`` shows across a curriculum.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from nb2_agents.nn.blocks import MLP

DORMANT_TAU = 0.1
"""τ: a unit whose mean |activation| is at most this share of its layer's average is dormant."""


def dormant_fraction(activations: torch.Tensor, tau: float = DORMANT_TAU) -> float:
    """Share of τ-dormant units in ``activations`` (..., H): units along the last axis, every
    leading axis (batch, tokens) averaged over."""
    score = activations.detach().abs().reshape(-1, activations.shape[-1]).mean(dim=0)  # (H,)
    mean = score.mean()
    if float(mean) == 0.0:  # every unit silent: all dormant
        return 1.0
    return float((score / mean <= tau).float().mean())


@contextmanager
def recording_mlp_activations(net: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """While open, each forward of ``net`` stores the hidden activations (SiLU outputs) of every
    MLP inside it, by the MLP's module name, in the dict this yields (the last call's)."""
    found: dict[str, torch.Tensor] = {}
    handles = []

    def store(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
        def hook(_module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            found[name] = F.silu(output.detach())  # MLP.forward: proj(silu(fc(x)))

        return hook

    for name, module in net.named_modules():
        if isinstance(module, MLP):
            handles.append(module.fc.register_forward_hook(store(name)))
    try:
        yield found
    finally:
        for handle in handles:
            handle.remove()
