"""NB2's forward with shapes that depend on the batch size alone, for tracing and export.

:class:`~nb2_agents.nn.model.NB2`'s training forward *gathers* the tokens adaptive sampling
keeps into a tensor whose width is fixed by the config, but whose indices come from a sort that
ONNX cannot express stably. :class:`StaticNB2` runs the very same modules with sampling *in
place* (``NB2.run(obs, in_place=True)``: a keep-mask instead of a gather, see
``nn/encoder.py``), which gives the same result up to the order of floating-point sums (~1e-7).
There is no second copy of the network's forward to keep in step with the first.

Every weight is reached through its module (``attn.kv(h)``, never ``attn.kv.weight``, except
where a module checks that its layer is a plain ``nn.Linear``), so the graph still runs after
``torch.ao.quantization.quantize_dynamic`` swaps the Linear layers.
"""

from __future__ import annotations

import torch
from torch import nn

from nb2_agents.nn.model import NB2


class StaticNB2(nn.Module):
    """``NB2``'s forward for export: SB3-preprocessed observations → (B, n_queries * C).

    Shares ``net``'s modules (no copy). It skips the NaN / Inf check, which is an input
    check for training, not part of the policy.
    """

    def __init__(self, net: NB2) -> None:
        super().__init__()
        self.net = net

    def forward(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net.run(obs, in_place=True).flatten(1)  # (B, nq, C) → (B, nq*C)
