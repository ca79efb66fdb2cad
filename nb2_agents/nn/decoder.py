"""Decoder: learned queries cross-attend to the encoder's multi-scale memory.

Dynamic attention: every head's output is scaled by a gate computed from the task
embedding and the global summary (head gating, as in Mixture-of-Head attention; FiLM-style
conditioning). Gates are ``2·sigmoid(W·[task, global] + b)`` with W = 0, b = 0, so they start
fully open (= 1) and the decoder starts as plain cross-attention.

Adaptive token sampling: fine tokens are ranked by the attention the global summary pays
them times their value norm, and only the most significant are read (see ``sampling.py``).
Summaries are always kept.
"""

from __future__ import annotations

import torch
from torch import nn

from nb2_agents.nn.blocks import Block
from nb2_agents.nn.config import NB2Config
from nb2_agents.nn.encoder import Memory
from nb2_agents.nn.sampling import gather_heads, gather_tokens, select_tokens, significance


class Decoder(nn.Module):
    """:class:`Memory` → one feature vector per query, (B, n_queries, C)."""

    def __init__(self, cfg: NB2Config, n_queries: int) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.d_model
        self.queries = nn.Parameter(torch.randn(1, n_queries, c) * 0.02)
        self.block_list = [
            Block(c, cfg.n_heads, cfg.mlp_ratio, cfg.gate_bias, cross=True)
            for _ in range(cfg.n_decoder_layers)
        ]
        self.blocks = nn.ModuleList(self.block_list)  # registers the parameters
        self.head_gate = nn.Linear(2 * c, cfg.n_decoder_layers * cfg.n_heads)
        self.ln_out = nn.LayerNorm(c)
        self.reset_gates()
        self.last_gates: torch.Tensor | None = None
        self.last_kept: torch.Tensor | None = None

    def reset_gates(self) -> None:
        nn.init.zeros_(self.head_gate.weight)
        nn.init.zeros_(self.head_gate.bias)

    def forward(self, mem: Memory) -> torch.Tensor:
        b = mem.tokens.shape[0]
        cond = torch.cat([mem.task, mem.global_token], dim=-1)  # (B, 2C)
        gates = 2.0 * torch.sigmoid(self.head_gate(cond))  # (B, L*nh), 1 at init
        gates = gates.view(b, len(self.blocks), self.cfg.n_heads)  # (B, L, nh)
        self.last_gates = gates.detach()

        first = self.block_list[0]
        k, v = first.memory_kv(mem.tokens)  # (B, nh, T, hs)
        memory, mask = mem.tokens, mem.mask
        n_fine = mem.fine.stop - mem.fine.start
        self.last_kept = None
        if self.cfg.sampling and n_fine > self.cfg.min_keep:
            index, mask = self._sample(first, mem, k, v, n_fine)
            k, v = gather_heads(k, index), gather_heads(v, index)  # (B, nh, K + S, hs)
            if len(self.blocks) > 1:
                memory = gather_tokens(memory, index)  # (B, K + S, C)

        key_mask = None if mask is None else mask.expand(b, -1)[:, None, None, :]  # (B, 1, 1, T')
        x = self.queries + mem.global_token.unsqueeze(1)  # (B, nq, C)
        x = first.forward_kv(x, k, v, key_mask, gates[:, 0])
        for i, blk in enumerate(self.block_list[1:], start=1):
            x = blk(x, memory, key_mask, gates[:, i])
        return self.ln_out(x)  # (B, nq, C)

    def _sample(
        self, first: Block, mem: Memory, k: torch.Tensor, v: torch.Tensor, n_fine: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory indices to read (B, K + S) and their keep-mask: top fine tokens + the rest."""
        b, t = k.shape[0], k.shape[2]
        fine = mem.fine
        q = first.attn.split_heads(first.attn.q(first.ln_q(mem.global_token.unsqueeze(1))))
        fine_mask = None if mem.mask is None else mem.mask[:, fine]
        scores = significance(q, k[:, :, fine], v[:, :, fine], fine_mask)  # (B, N)
        index, keep = select_tokens(scores, fine_mask, self.cfg.keep_mass, self.cfg.min_keep)
        self.last_kept = keep.sum(dim=-1) / n_fine  # (B,)
        rest = torch.cat([torch.arange(fine.start), torch.arange(fine.stop, t)]).to(index.device)
        index = torch.cat([index + fine.start, rest.expand(b, -1)], dim=1)  # (B, K + S)
        rest_mask = torch.ones(b, rest.numel(), dtype=torch.bool, device=keep.device)
        if mem.mask is not None:
            rest_mask = mem.mask.expand(b, -1)[:, rest]
        return index, torch.cat([keep, rest_mask], dim=1)
