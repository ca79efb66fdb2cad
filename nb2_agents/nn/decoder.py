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

Per-task output adapters (task-routed capacity): when observations carry a task id, each
query's output is transformed per channel as ``x * scale + shift``, with ``scale, shift =
task_film[task, query]`` (1 and 0 at init: the identity); without a task id they are not used
(a learned gain on single-env CartPole hurt: 166 instead of 500 at RL Zoo's budget, seed 0).
A task's rows are its own: nothing but that task's observations moves them, so online EWC and
distillation, which hold the shared network to earlier tasks, leave them free. A signed scale
and a shift per channel can turn the actor's logits around (``W(-x) = -Wx``), so a task whose
actions contradict an earlier one's (CartPole-Mirrored after CartPole) is learnable without
moving what the earlier task relies on: ``2 * n_queries * d_model`` parameters per task (128
for nano). The scalar per-task gain they replace, ``exp(task_gain)``, could only shrink or
grow the shared output, not turn it; a network saved with it loads, as the equivalent scale
(one parameter takes the other's place, so a saved optimizer still matches: ``sb3/extractor.py``).
A new task's actor can be set near uniform before it trains (:meth:`Decoder.soften`) so it
explores, or start from an earlier task's rows (:meth:`NB2.set_task_state`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nb2_agents.nn.blocks import Block
from nb2_agents.nn.config import NB2Config
from nb2_agents.nn.encoder import Memory


def identity_film(like: torch.Tensor) -> torch.Tensor:
    """Per-task adapters (T, nq, 2, C) that leave every output as it is: scale 1, shift 0."""
    film = torch.zeros_like(like)
    film[:, :, 0] = 1.0
    return film


def open_gates(logits: torch.Tensor) -> torch.Tensor:
    """Head gates from ``head_gate``'s logits: ``2 * sigmoid``, 1 (open) at a zero logit."""
    return 2.0 * torch.sigmoid(logits)


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
        self.task_film = nn.Parameter(torch.zeros(cfg.max_tasks, n_queries, 2, c))  # scale, shift
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Queries back to zero, head gates back to exactly open (blocks reset themselves)."""
        nn.init.zeros_(self.queries)
        nn.init.zeros_(self.head_gate.weight)
        nn.init.zeros_(self.head_gate.bias)
        with torch.no_grad():
            self.task_film.copy_(identity_film(self.task_film))

    @torch.no_grad()
    def soften(self, task: int, query: int, gain: float) -> None:
        """Scale task ``task``'s output of query ``query`` by ``gain`` and drop its shift (e.g. the
        actor's, before the task trains, so its policy starts near uniform)."""
        self.task_film[task, query, 0] = gain
        self.task_film[task, query, 1] = 0.0

    def adapt(self, x: torch.Tensor, task_ids: torch.Tensor | None) -> torch.Tensor:
        """The per-task output adapters on (B, nq, C); the identity without task ids."""
        if task_ids is None:  # no task id (a single env): no adapters, plain NB2
            return x
        scale, shift = self.task_film[task_ids].unbind(2)  # 2 x (B, nq, C)
        return torch.addcmul(shift, x, scale)  # (B, nq, C)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # saved before the adapters: a scalar gain exp(g) per task and query is a scale of exp(g)
        gain = state_dict.pop(prefix + "task_gain", None)  # (T, nq)
        if gain is not None and prefix + "task_film" not in state_dict:
            film = identity_film(self.task_film)  # (T, nq, 2, C)
            film[:, :, 0] = gain.exp().unsqueeze(-1)  # (T, nq, 1) over the channels
            state_dict[prefix + "task_film"] = film
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, mem: Memory) -> torch.Tensor:
        b = mem.tokens.shape[0]
        cond = torch.cat([mem.task, mem.global_token], dim=-1)  # (B, 2C)
        gates = open_gates(self.head_gate(cond))  # (B, L*nh), 1 at init
        gates = gates.view(b, len(self.blocks), self.cfg.n_heads)  # (B, L, nh)
        key_mask = None if mem.mask is None else mem.mask.expand(b, -1)[:, None, None, :]  # (B, 1, 1, T)
        x = self.queries + mem.global_token.unsqueeze(1)  # (B, nq, C)
        for i, blk in enumerate(self.blocks):
            x = blk(x, mem.tokens, key_mask, gates[:, i])
        return self.adapt(self.ln_out(x), mem.task_ids)  # (B, nq, C)
