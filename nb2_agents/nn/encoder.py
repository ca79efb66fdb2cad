"""Hierarchical attention encoder.

Level 0 attends inside each local group of tokens, then a learned query pools every group
into one summary (Set Transformer's PMA). While more summaries remain than fit in one group,
they are grouped again, attended and pooled (H-Transformer-1D / Swin). Finally the top
summaries attend together with a global token and the task token. Cost is about
O(N·G + (N/G)·G + ...) instead of O(N²) for flat attention.

Scale: tokens are embedded at unit scale (``tokenizer.py``), each summary is its group's mean
plus the pooling query's read, and the global token starts as the mean of the top summaries
plus a learned offset. The observation thus stays O(1) up the hierarchy. With nanoGPT's 0.02
embeddings, attention-only pooling and a learned global token, the observation's part of the
global summary had norm 0.002: within 50 A2C updates the learned constants (global token,
decoder queries) outgrew it, the features became one vector for every observation (spread /
mean norm 0.007), and A2C scored 13.4 on SB3's ``IdentityEnvMultiDiscrete`` (MlpPolicy 100).

Adaptive token sampling (``sampling.py``) runs as tokens enter level 0: each group keeps the
tokens its pooling query finds most significant, so the local attention, the pooling and the
decoder all read fewer tokens.
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

    ``tokens`` (B, T, C) holds the fine tokens that sampling kept, the summaries of every
    level, and the final global and task tokens; ``mask`` is a keep-mask broadcastable to
    (B, T), or None when nothing is padded. ``global_token`` and ``task`` are (B, C).
    ``kept`` (B,) is the share of each observation's fine tokens that sampling kept, or None
    when sampling did not run.
    """

    tokens: torch.Tensor
    mask: torch.Tensor | None
    global_token: torch.Tensor
    task: torch.Tensor
    kept: torch.Tensor | None = None
    task_ids: torch.Tensor | None = None
    """(B,) task ids when the observation carries them, else None."""


def masked_mean(x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of (B*, G, C) over its real tokens, given an SDPA keep-mask (B*|1, 1, 1, G): (B*, 1, C)."""
    if key_mask is None:
        return x.mean(dim=1, keepdim=True)
    m = key_mask[:, 0, 0, :].unsqueeze(-1).to(x.dtype)  # (B*|1, G, 1)
    return (x * m).sum(dim=1, keepdim=True) / m.sum(dim=1, keepdim=True).clamp_min(1.0)


class Pool(nn.Module):
    """Pool each group (B*, G, C) into one summary (B*, 1, C): the group's mean plus what a
    learned query reads from it.

    The mean carries the tokens' own scale into the summaries, so the observation, not a
    learned constant, dominates every level above (see :class:`HierarchicalEncoder`).
    """

    def __init__(self, cfg: NB2Config) -> None:
        super().__init__()
        self.seed = nn.Parameter(torch.zeros(1, 1, cfg.d_model))  # zero: reads every token alike at init
        self.ln = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg.d_model, cfg.n_heads)

    def query(self, batch: int) -> torch.Tensor:
        return self.seed.expand(batch, 1, -1)  # (B*, 1, C)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        k, v = self.attn.keys_values(self.ln(x))  # (B*, nh, G, hs)
        read = self.attn.attend(self.query(x.shape[0]), k, v, key_mask)  # (B*, 1, C)
        return masked_mean(x, key_mask) + read  # (B*, 1, C)

    @torch.no_grad()
    def significance(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """How much this pool's query attends to each token, times its value norm: (B*, G).

        Written with functional calls on the pool's own weights: the score is a side
        computation, and going through the submodules would fire their hooks (profilers,
        FLOP counters) as if the pool had run.
        """
        a = self.attn
        h = F.layer_norm(x, self.ln.normalized_shape, self.ln.weight, self.ln.bias, self.ln.eps)
        k, v = F.linear(h, a.kv.weight, a.kv.bias).chunk(2, dim=-1)  # 2 x (B*, G, C)
        q = F.linear(self.seed, a.q.weight, a.q.bias).expand(x.shape[0], 1, -1)  # (B*, 1, C)
        return significance(a.split_heads(q), a.split_heads(k), a.split_heads(v), mask)


def _key_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B*, G) keep-mask → (B*, 1, 1, G) for SDPA; None stays None."""
    return None if mask is None else mask[:, None, None, :]


class Level(nn.Module):
    """One level: attention inside groups, then pooling of each group."""

    group_mask: torch.Tensor  # levels >= 1 only: which slots of their summary groups are real

    def __init__(self, cfg: NB2Config, n_layers: int) -> None:
        super().__init__()
        args = (cfg.d_model, cfg.n_heads, cfg.mlp_ratio, cfg.gate_bias)
        self.blocks = nn.ModuleList(Block(*args) for _ in range(n_layers))
        self.pool = Pool(cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Groups (B*, G, C) with keep-mask (B*, G) → attended tokens and summaries (B*, 1, C)."""
        for blk in self.blocks:
            x = blk(x, mask=_key_mask(mask))
        return x, self.pool(x, _key_mask(mask))


class HierarchicalEncoder(nn.Module):
    """Tokens grouped as (B, g, G, C) → :class:`Memory`."""

    def __init__(self, cfg: NB2Config, n_groups: int, group_len: int) -> None:
        super().__init__()
        self.cfg = cfg
        args = (cfg.d_model, cfg.n_heads, cfg.mlp_ratio, cfg.gate_bias)
        self.global_token = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        self.task_embed = nn.Embedding(cfg.max_tasks, cfg.d_model)
        self.global_blocks = nn.ModuleList(Block(*args) for _ in range(cfg.n_global_layers))
        # One group: the hierarchy has a single level, where attention inside the group and
        # attention across the whole observation coincide. Pooling the group into one summary
        # only to attend over [global, task, summary] would be redundant, so the group's tokens
        # attend together with the global and task tokens, through max(local, global) blocks.
        # Flat attention (the baseline) is that single level over every token, through
        # n_local + n_global blocks: NB2's depth when the observation spans several groups.
        self.flat = cfg.attention == "flat"
        self.single_group = n_groups == 1 or self.flat
        if self.flat:
            extra = cfg.n_local_layers
        else:
            extra = cfg.n_local_layers - cfg.n_global_layers if self.single_group else 0
        self.local_blocks = nn.ModuleList(Block(*args) for _ in range(max(extra, 0)))
        self.level_list: list[Level] = [] if self.single_group else [Level(cfg, cfg.n_local_layers)]
        g = n_groups
        while g > cfg.group_size:
            n = math.ceil(g / cfg.group_size)
            level = Level(cfg, 1)
            # (groups, group_size) keep-mask of this level's groups of summaries; a buffer, so it
            # moves with the model instead of being copied to the device on every forward
            mask = (torch.arange(n * cfg.group_size) < g).view(n, cfg.group_size)
            level.register_buffer("group_mask", mask, persistent=False)
            self.level_list.append(level)
            g = n
        self.levels = nn.ModuleList(self.level_list)  # registers the parameters
        self.sample = cfg.sampling and not self.single_group and group_len > cfg.min_keep
        self.sampling_off: str | None = None
        """Why token sampling does not run though the config asks for it (None: it runs, or was not asked)."""
        if cfg.sampling and self.flat:
            self.sampling_off = "flat attention never samples"
        elif cfg.sampling and self.single_group:
            self.sampling_off = "the observation is a single group"
        elif cfg.sampling and not self.sample:
            self.sampling_off = (
                f"groups of {group_len} tokens leave nothing to drop below min_keep={cfg.min_keep}"
            )

    @property
    def level_masks(self) -> list[torch.Tensor]:
        """(groups, group_size) keep-mask of each level above 0."""
        return [level.group_mask for level in self.level_list[1:]]

    def _task(self, ts: TokenSet, b: int) -> torch.Tensor:
        if ts.task_ids is None:
            return self.task_embed.weight[:1].expand(b, -1)  # (B, C): task 0
        return self.task_embed(ts.task_ids)  # (B, C)

    def summarize(
        self, summaries: torch.Tensor, ts: TokenSet
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Level-0 group summaries (B, g, C) → every level's summaries, the global stage's output
        (B, 2 + n_top, C: global token, task token, top summaries) and the task embedding (B, C)."""
        b, _, c = summaries.shape
        levels = [summaries]
        for level in self.level_list[1:]:
            n_groups, size = level.group_mask.shape
            pad = n_groups * size - summaries.shape[1]
            s = F.pad(summaries, (0, 0, 0, pad)).view(b * n_groups, size, c)  # (B*n, size, C)
            _, pooled = level(s, level.group_mask.repeat(b, 1))
            summaries = pooled.view(b, n_groups, c)  # (B, n, C)
            levels.append(summaries)
        task = self._task(ts, b)  # (B, C)
        glob = self.global_token + summaries.mean(dim=1, keepdim=True)  # (B, 1, C)
        top = torch.cat([glob, task.unsqueeze(1), summaries], dim=1)
        for blk in self.global_blocks:
            top = blk(top)  # (B, 2 + n_top, C)
        return levels, top, task

    def forward(self, ts: TokenSet) -> Memory:
        if self.single_group:
            return self._forward_single(ts)
        b, g, G, c = ts.tokens.shape
        x = ts.tokens.reshape(b * g, G, c)  # (B*g, G, C)
        mask = ts.keep_mask(b)  # (B*g, G) or None
        kept = None
        if self.sample:
            x, mask, kept = self._sample(x, mask, self.level_list[0].pool, b)  # (B*g, K, C)
        x, pooled = self.level_list[0](x, mask)
        summaries = pooled.view(b, g, c)  # (B, g, C)
        fine = x.reshape(b, -1, c)  # (B, g*K, C)
        fine_mask = None if mask is None else mask.reshape(b, -1)  # (B, g*K)

        levels, top, task = self.summarize(summaries, ts)
        memory = torch.cat([fine, *levels[:-1], top], dim=1)  # (B, N + S, C)
        mask = None
        if fine_mask is not None:
            rest = torch.ones(b, memory.shape[1] - fine.shape[1], dtype=torch.bool, device=memory.device)
            mask = torch.cat([fine_mask, rest], dim=1)  # (B, N + S)
        return Memory(memory, mask, top[:, 0], task, kept, ts.task_ids)

    def _forward_single(self, ts: TokenSet) -> Memory:
        """One sequence: the single group, or under flat attention every group's tokens (the
        tokenizer gives each segment one group, so only a Dict's shorter keys leave padding)."""
        b, _, _, c = ts.tokens.shape
        task = self._task(ts, b)
        tokens = ts.tokens.reshape(b, -1, c)  # (B, g*G, C); g is 1 unless flat
        mask = None
        if ts.sample_mask is not None:  # global and task tokens always kept: no empty rows
            special = torch.ones(b, 2, dtype=torch.bool, device=tokens.device)
            mask = torch.cat([special, ts.sample_mask.reshape(b, -1)], dim=1)  # (B, 2+N)
        elif not ts.full:
            special = torch.ones(2, dtype=torch.bool, device=tokens.device)
            mask = torch.cat([special, ts.mask.reshape(-1)]).unsqueeze(0)  # (1, 2+N)
        glob = self.global_token + masked_mean(tokens, _key_mask(None if mask is None else mask[:, 2:]))
        x = torch.cat([glob, task.unsqueeze(1), tokens], dim=1)  # (B, 2+N, C); glob (B, 1, C)
        for blk in [*self.local_blocks, *self.global_blocks]:
            x = blk(x, mask=_key_mask(mask))  # (B, 2+N, C)
        return Memory(x, mask, x[:, 0], task, None, ts.task_ids)

    def _sample(
        self, x: torch.Tensor, mask: torch.Tensor | None, pool: Pool, b: int
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Keep each group's most significant tokens: (B*g, K, C), keep-mask, kept share (B,).

        The keep-mask is None when every group kept all K slots: masked SDPA runs about twice
        as slow on a CPU, and with no padding there is nothing to mask.
        """
        scores = pool.significance(x, mask)  # (B*g, G)
        index, keep = select_tokens(scores, mask, self.cfg.keep_mass, self.cfg.min_keep)
        valid = x.shape[0] // b * x.shape[1] if mask is None else mask.reshape(b, -1).sum(dim=1)
        kept = keep.reshape(b, -1).sum(dim=1) / valid  # (B,) share of real tokens kept
        return gather_tokens(x, index), None if bool(keep.all()) else keep, kept
