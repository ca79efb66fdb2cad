"""Transformer building blocks: SDPA attention, MLP, gated residual, pre-LN block.

Built from ``nn.Linear`` + ``F.scaled_dot_product_attention`` on purpose: dynamic int8
quantization breaks on ``nn.TransformerEncoderLayer`` (pytorch#109987), and the decoder
needs to scale each head's output before the output projection.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head attention, split in two steps so callers can reuse or inspect keys/values:
    ``keys_values(memory)`` then ``attn(x, k, v)`` (self-attention when memory is x).

    The second step is the module's ``forward``, so a forward hook sees the queries' input,
    the keys and the mask: that is how ``nn/probes.py`` measures attention entropy for logging,
    without storing anything on the module.
    """

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hs)

    def keys_values(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(memory).chunk(2, dim=-1)  # 2 x (B, T, C)
        return self.split_heads(k), self.split_heads(v)  # 2 x (B, nh, T, hs)

    def forward(
        self,
        x: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None = None,
        head_gates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Queries from ``x`` (B, Tq, C) over precomputed heads ``k``, ``v`` (B, nh, Tk, hs).

        ``mask`` is a boolean keep-mask broadcastable to (B, nh, Tq, Tk); ``head_gates``
        (B, nh) scales each head's output (dynamic attention).
        """
        b, t, c = x.shape
        q = self.split_heads(self.q(x))  # (B, nh, Tq, hs)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, Tq, hs)
        if head_gates is not None:
            y = y * head_gates[:, :, None, None]  # (B, nh, 1, 1) broadcast over queries
        y = y.transpose(1, 2).reshape(b, t, c)  # (B, Tq, C)
        return self.out(y)


class MLP(nn.Module):
    def __init__(self, d_model: int, ratio: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, ratio * d_model)
        self.proj = nn.Linear(ratio * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.silu(self.fc(x)))  # SiLU: ~3x cheaper backward than GELU on CPU


class GatedResidual(nn.Module):
    """Gated residual ``out = x + sigmoid(g) * y`` replacing ``x + y``.

    The gate logit ``g`` is learned per channel and starts at ``gate_bias`` (−2 → 0.12), so
    each block starts near the identity map, which is what made transformers trainable by RL
    in GTrXL (Parisotto et al. 2019). GTrXL's input-dependent GRU gate costs a (2C → C)
    matmul and a concat per sublayer; at nano size on a CPU that made a whole PPO update ~25 %
    slower for no gain on our tasks, so the gate here is per channel (as in LayerScale/ReZero).
    """

    def __init__(self, d_model: int, gate_bias: float) -> None:
        super().__init__()
        self.logit = nn.Parameter(torch.full((d_model,), gate_bias))
        self.gate_bias = gate_bias

    def reset_parameters(self) -> None:
        nn.init.constant_(self.logit, self.gate_bias)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(x, torch.sigmoid(self.logit), y)  # x + g * y in one kernel


class Block(nn.Module):
    """Pre-LN transformer block with gated residuals.

    Self-attention when called as ``block(x)``; cross-attention to ``memory`` otherwise.
    """

    def __init__(
        self, d_model: int, n_heads: int, mlp_ratio: int, gate_bias: float, cross: bool = False
    ) -> None:
        super().__init__()
        self.ln_q = nn.LayerNorm(d_model)
        # Cross-attention normalises the memory separately; self-attention reuses ln_q.
        self.ln_kv = nn.LayerNorm(d_model) if cross else None
        self.attn = Attention(d_model, n_heads)
        self.gate_attn = GatedResidual(d_model, gate_bias)
        self.ln_mlp = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, mlp_ratio)
        self.gate_mlp = GatedResidual(d_model, gate_bias)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        head_gates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        h = self.ln_q(x)
        if memory is None:
            k, v = self.attn.keys_values(h)
        else:
            assert self.ln_kv is not None, "built with cross=False"
            k, v = self.attn.keys_values(self.ln_kv(memory))
        return self.finish(x, h, k, v, mask, head_gates)

    def finish(
        self,
        x: torch.Tensor,
        h: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None = None,
        head_gates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The block after its keys and values: queries ``h = ln_q(x)`` (B, Tq, C) attend over
        ``k``, ``v`` (B, nh, Tk, hs), then the MLP; (B, Tq, C). Token sampling calls it with
        fewer queries than keys."""
        x = self.gate_attn(x, self.attn(h, k, v, mask, head_gates))
        return self.gate_mlp(x, self.mlp(self.ln_mlp(x)))


def init_weights(module: nn.Module) -> None:
    """nanoGPT-style init for Linear / Embedding / Conv; gates keep their own bias."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    if isinstance(module, GatedResidual):
        module.reset_parameters()
