"""Hierarchical attention encoder.

Level 0 attends inside each local group of tokens, then a learned query pools every group
into one summary (Set Transformer's PMA). While more summaries remain than fit in one group,
they are grouped again, attended and pooled (H-Transformer-1D / Swin). Finally the top
summaries attend together with a global token and the task token. Cost is about
O(N·G + (N/G)·G + ...) instead of O(N²) for flat attention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nb2_agents.nn.blocks import Attention, Block
from nb2_agents.nn.config import NB2Config
from nb2_agents.nn.sampling import gather_tokens, select_tokens, significance
from nb2_agents.nn.tokenizer import TokenSet


@dataclass
class Memory:
    """What the encoder hands the decoder: the multi-scale memory.

    ``tokens`` (B, T, C) holds fine tokens and summaries; ``tokens[:, fine]`` are the fine
    tokens that adaptive sampling may drop, the rest (summaries, global and task tokens) are
    always read. ``mask`` is a keep-mask broadcastable to (B, T), or None when nothing is
    padded. ``global_token`` and ``task`` are (B, C); ``kept_fraction`` is the share of fine
    tokens that the encoder's own sampling kept (1.0 when it did not sample).
    """

    tokens: torch.Tensor
    fine: slice
    mask: torch.Tensor | None
    global_token: torch.Tensor
    task: torch.Tensor
    kept_fraction: float = 1.0


class Pool(nn.Module):
    """Pool each group (B*, G, C) into one summary (B*, 1, C) with a learned query."""

    def __init__(self, cfg: NB2Config) -> None:
        super().__init__()
        self.seed = nn.Parameter(torch.zeros(1, 1, cfg.d_model))  # zero: mean pooling at init
        self.ln = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg.d_model, cfg.n_heads)

    def query(self, batch: int) -> torch.Tensor:
        return self.seed.expand(batch, 1, -1)  # (B*, 1, C)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        k, v = self.attn.keys_values(self.ln(x))  # (B*, nh, G, hs)
        return self.attn.attend(self.query(x.shape[0]), k, v, key_mask)  # (B*, 1, C)


def _key_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B*, G) keep-mask → (B*, 1, 1, G) for SDPA; None stays None."""
    return None if mask is None else mask[:, None, None, :]


class Level(nn.Module):
    """One level: attention inside groups, then pooling of each group."""

    def __init__(self, cfg: NB2Config, n_layers: int) -> None:
        super().__init__()
        args = (cfg.d_model, cfg.n_heads, cfg.mlp_ratio, cfg.gate_bias)
        self.blocks = nn.ModuleList(Block(*args) for _ in range(n_layers))
        self.pool = Pool(cfg)

    def group_attention(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x, mask=_key_mask(mask))
        return x


class HierarchicalEncoder(nn.Module):
    """Tokens grouped as (B, g, G, C) → :class:`Memory`."""

    def __init__(self, cfg: NB2Config, n_groups: int, group_len: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.group_len = group_len
        args = (cfg.d_model, cfg.n_heads, cfg.mlp_ratio, cfg.gate_bias)
        self.global_token = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        self.task_embed = nn.Embedding(cfg.max_tasks, cfg.d_model)
        self.global_blocks = nn.ModuleList(Block(*args) for _ in range(cfg.n_global_layers))
        # One group: the hierarchy has a single level, where attention inside the group and
        # attention across the whole observation coincide. Pooling the group into one summary
        # only to attend over [global, task, summary] would be redundant, so the group's tokens
        # attend together with the global and task tokens, through max(local, global) blocks.
        self.single_group = n_groups == 1
        extra = cfg.n_local_layers - cfg.n_global_layers if self.single_group else 0
        self.local_blocks = nn.ModuleList(Block(*args) for _ in range(max(extra, 0)))
        self.level_list: list[Level] = [] if self.single_group else [Level(cfg, cfg.n_local_layers)]
        self.level_masks: list[torch.Tensor] = []  # (groups, group_size) keep-mask per level >= 1
        g = n_groups
        while g > cfg.group_size:
            n = math.ceil(g / cfg.group_size)
            self.level_masks.append((torch.arange(n * cfg.group_size) < g).view(n, cfg.group_size))
            self.level_list.append(Level(cfg, 1))
            g = n
        self.levels = nn.ModuleList(self.level_list)  # registers the parameters
        # sample inside groups between level-0 layers only when there is a later layer to save
        self.sample_groups = (
            cfg.sampling and not self.single_group and cfg.n_local_layers > 1 and group_len > cfg.min_keep
        )

    def _task(self, ts: TokenSet, b: int) -> torch.Tensor:
        if ts.task_ids is None:
            return self.task_embed.weight[:1].expand(b, -1)  # (B, C): task 0
        return self.task_embed(ts.task_ids)  # (B, C)

    def forward(self, ts: TokenSet) -> Memory:
        if self.single_group:
            return self._forward_single(ts)
        b, g, G, c = ts.tokens.shape
        x = ts.tokens.reshape(b * g, G, c)  # (B*g, G, C)
        mask = None if ts.full else ts.mask.repeat(b, 1)  # (B*g, G)
        level0 = self.level_list[0]
        kept = 1.0
        if self.sample_groups:  # first layer on every token, the rest on the kept ones
            x = level0.blocks[0](x, mask=_key_mask(mask))
            x, mask, kept = self._sample(x, mask, level0.pool)
            for blk in level0.blocks[1:]:
                x = blk(x, mask=_key_mask(mask))
        else:
            x = level0.group_attention(x, mask)
        summaries = level0.pool(x, _key_mask(mask)).view(b, g, c)  # (B, g, C)
        fine = x.reshape(b, -1, c)  # (B, g*K, C)
        fine_mask = None if mask is None else mask.reshape(b, -1)  # (B, g*K)

        levels = [summaries]
        for level, level_mask in zip(self.level_list[1:], self.level_masks, strict=True):
            n_groups, size = level_mask.shape
            pad = n_groups * size - summaries.shape[1]
            s = F.pad(summaries, (0, 0, 0, pad)).view(b * n_groups, size, c)  # (B*n, size, C)
            m = level_mask.to(s.device).repeat(b, 1)  # (B*n, size)
            s = level.group_attention(s, m)  # (B*n, size, C)
            summaries = level.pool(s, _key_mask(m)).view(b, n_groups, c)  # (B, n, C)
            levels.append(summaries)

        task = self._task(ts, b)
        top = torch.cat([self.global_token.expand(b, 1, c), task.unsqueeze(1), summaries], dim=1)
        for blk in self.global_blocks:
            top = blk(top)  # (B, 2 + n_top, C)
        # fine tokens, lower-level summaries, final stage: (B, N + S, C)
        memory = torch.cat([fine, *levels[:-1], top], dim=1)
        n = fine.shape[1]
        mask = None
        if fine_mask is not None:
            rest = torch.ones(b, memory.shape[1] - n, dtype=torch.bool, device=memory.device)
            mask = torch.cat([fine_mask, rest], dim=1)  # (B, N + S)
        return Memory(memory, slice(0, n), mask, top[:, 0], task, kept)

    def _forward_single(self, ts: TokenSet) -> Memory:
        b, c = ts.tokens.shape[0], ts.tokens.shape[-1]
        task = self._task(ts, b)
        x = torch.cat([self.global_token.expand(b, 1, c), task.unsqueeze(1), ts.tokens[:, 0]], dim=1)
        mask = None
        if not ts.full:
            special = torch.ones(2, dtype=torch.bool, device=x.device)
            mask = torch.cat([special, ts.mask[0]]).unsqueeze(0)  # (1, 2+G)
        for blk in [*self.local_blocks, *self.global_blocks]:
            x = blk(x, mask=_key_mask(mask))  # (B, 2+G, C)
        return Memory(x, slice(2, x.shape[1]), mask, x[:, 0], task)

    def _sample(
        self, x: torch.Tensor, mask: torch.Tensor | None, pool: Pool
    ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Keep the tokens of each group that its pooling query finds most significant."""
        k, v = pool.attn.keys_values(pool.ln(x))  # (B*g, nh, G, hs)
        q = pool.attn.split_heads(pool.attn.q(pool.query(x.shape[0])))  # (B*g, nh, 1, hs)
        scores = significance(q, k, v, mask)  # (B*g, G)
        index, keep = select_tokens(scores, mask, self.cfg.keep_mass, self.cfg.min_keep)
        valid = x.shape[1] * x.shape[0] if mask is None else int(mask.sum())
        return gather_tokens(x, index), keep, float(keep.sum()) / max(valid, 1)
