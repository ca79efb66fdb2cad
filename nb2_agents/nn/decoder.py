"""Decoder: learned queries cross-attend to the encoder's multi-scale memory.

The memory holds the fine tokens that adaptive token sampling kept (see ``encoder.py``), the
group summaries of every level, and the global and task tokens.

Dynamic attention: every head's output is scaled by a gate computed from the task
embedding and the global summary (head gating, as in Mixture-of-Head attention; FiLM-style
conditioning). Gates are ``2·sigmoid(W·[task, global] + b)`` with W = 0, b = 0, so they start
fully open (= 1) and the decoder starts as plain cross-attention.

Zero queries: every query starts as the observation's global summary, so the output features
depend on the observation from the first step. Random queries (std 0.02) outweighed the gated
cross-attention output about 13:1, ``ln_out`` kept the constant, and the features were 97.5 %
one vector at init (spread / mean norm 0.025 on Pendulum states, MlpPolicy 8.3). TD3's actor
then learned one action for every state (−1.00 everywhere; Pendulum −1432 and −1466 on seeds
0 and 2). With zero queries and the encoder's unit-scale stream (``encoder.py``), TD3 scores
−169.2, −172.0, −135.0 on seeds 0–2 (MlpPolicy −164.5, −165.8, −129.3).

Per-task output gains: when observations carry a task id, each query's output is scaled by
``exp(task_gain[task, query])`` (0 at init: gain 1); without one they are not used (a learned
gain on single-env CartPole hurt: 166 instead of 500 at RL Zoo's budget, seed 0). A new task's
actor gain can be set low before it trains (:meth:`Decoder.soften`), so its policy starts near
uniform and explores, while earlier tasks keep theirs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nb2_agents.nn.blocks import Block
from nb2_agents.nn.config import NB2Config
from nb2_agents.nn.encoder import Memory


class Decoder(nn.Module):
    """:class:`Memory` → one feature vector per query, (B, n_queries, C)."""

    def __init__(self, cfg: NB2Config, n_queries: int) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.d_model
        self.queries = nn.Parameter(torch.zeros(1, n_queries, c))  # zero: see the module doc
        self.blocks = nn.ModuleList(
            Block(c, cfg.n_heads, cfg.mlp_ratio, cfg.gate_bias, cross=True)
            for _ in range(cfg.n_decoder_layers)
        )
        self.head_gate = nn.Linear(2 * c, cfg.n_decoder_layers * cfg.n_heads)
        self.ln_out = nn.LayerNorm(c)
        self.task_gain = nn.Parameter(torch.zeros(cfg.max_tasks, n_queries))
        self.last_gates: torch.Tensor | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Queries back to zero, head gates back to exactly open (blocks reset themselves)."""
        nn.init.zeros_(self.queries)
        nn.init.zeros_(self.head_gate.weight)
        nn.init.zeros_(self.head_gate.bias)
        nn.init.zeros_(self.task_gain)

    @torch.no_grad()
    def soften(self, task: int, query: int, gain: float) -> None:
        """Set task ``task``'s output gain of query ``query`` (e.g. the actor's, before the task trains)."""
        self.task_gain[task, query] = math.log(gain)

    def forward(self, mem: Memory) -> torch.Tensor:
        b = mem.tokens.shape[0]
        cond = torch.cat([mem.task, mem.global_token], dim=-1)  # (B, 2C)
        gates = 2.0 * torch.sigmoid(self.head_gate(cond))  # (B, L*nh), 1 at init
        gates = gates.view(b, len(self.blocks), self.cfg.n_heads)  # (B, L, nh)
        self.last_gates = gates.detach()
        key_mask = None if mem.mask is None else mem.mask.expand(b, -1)[:, None, None, :]  # (B, 1, 1, T)
        x = self.queries + mem.global_token.unsqueeze(1)  # (B, nq, C)
        for i, blk in enumerate(self.blocks):
            x = blk(x, mem.tokens, key_mask, gates[:, i])
        x = self.ln_out(x)  # (B, nq, C)
        if mem.task_ids is None:  # no task id (a single env): no gains, plain NB2
            return x
        return x * self.task_gain[mem.task_ids].exp().unsqueeze(-1)  # (B, nq, 1) per-task gains
