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

Adaptive token sampling (``sampling.py``) runs inside level 0's first block: every token of a
group is a key there, and only the group's best-scored tokens go on as queries, so the
rest of level 0 and the decoder read fewer tokens. The others skip to the pooling as they are.

Sampling has two forms, chosen per call (``in_place``), over the same modules and weights:
- *gather* (training and inference): the kept tokens are gathered into (B*, K, C), so the later
  blocks and the decoder do less work;
- *in place* (export): every token stays where it is and a keep-mask marks the kept ones. The
  first block runs every token as a query, the dropped ones are reset to their input, and they
  are masked out of every later key set (the later level-0 blocks, the decoder's memory).
  Attention carries no position of its own (positions are embedded in the tokens), so the kept
  tokens get the values the gathered ones get, and each group pools the same tokens; only the
  order of floating-point sums differs (~1e-7). Its shapes depend on the batch size alone, so it
  traces with a dynamic batch axis and exports, but it does not save the FLOPs gathering saves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from nb2_agents.nn.blocks import Attention, Block
from nb2_agents.nn.config import NB2Config
from nb2_agents.nn.sampling import gather_tokens, keep_count, keep_in_place, rank_tokens, route_weight
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
        h = self.ln(x)  # (B*, G, C)
        if isinstance(self.attn.kv, nn.Linear):
            read = self.read_folded(h, key_mask)  # (B*, 1, C)
        else:  # a quantized kv (int8 export) has no weight tensor to fold
            k, v = self.attn.keys_values(h)  # (B*, nh, G, hs)
            read = self.attn(self.query(x.shape[0]), k, v, key_mask)  # (B*, 1, C)
        return masked_mean(x, key_mask) + read  # (B*, 1, C)

    def read_folded(self, h: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """What the learned query reads from ``h`` (B*, G, C), the attention of ``self.attn`` with
        its key and value projections folded out of the per-token work.

        With one query per head, ``q_h · (W_kh h_t + b_kh) = h_t · (W_khᵀ q_h) + const``, so the
        logits cost one (C → nh) product per token instead of the (C → 2C) key-value projection,
        and the softmax-weighted sum of ``h`` is projected by ``W_v`` once per group (the
        weights sum to 1, so ``b_v`` is added once). The key bias cancels in the softmax.
        """
        attn = self.attn
        assert isinstance(attn.kv, nn.Linear)
        b, _, c = h.shape
        nh, hs = attn.n_heads, attn.head_dim
        q = attn.q(self.seed).view(nh, hs)  # (nh, hs)
        w_k, w_v = attn.kv.weight.view(2, nh, hs, c).unbind(0)  # 2 x (nh, hs, C)
        u = torch.einsum("nd,ndc->nc", q, w_k) / math.sqrt(hs)  # (nh, C)
        logits = h @ u.t()  # (B*, G, nh)
        if key_mask is not None:
            logits = logits.masked_fill(~key_mask[:, 0, 0, :, None], float("-inf"))  # (B*|1, G, 1)
        weights = logits.softmax(dim=1)  # (B*, G, nh)
        pooled = weights.transpose(1, 2) @ h  # (B*, nh, C)
        v = torch.einsum("bnc,ndc->bnd", pooled, w_v)  # (B*, nh, hs)
        if attn.kv.bias is not None:
            v = v + attn.kv.bias[c:].view(nh, hs)
        return attn.out(v.reshape(b, 1, c))  # (B*, 1, C)


def _key_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B*, G) keep-mask → (B*, 1, 1, G) for SDPA; None stays None."""
    return None if mask is None else mask[:, None, None, :]


class Level(nn.Module):
    """One level: attention inside groups, then pooling of each group."""

    group_mask: torch.Tensor  # levels >= 1 only: which slots of their summary groups are real

    def __init__(self, cfg: NB2Config, n_layers: int, router: bool = False) -> None:
        super().__init__()
        args = (cfg.d_model, cfg.n_heads, cfg.mlp_ratio, cfg.gate_bias)
        self.blocks = nn.ModuleList(Block(*args) for _ in range(n_layers))
        self.pool = Pool(cfg)
        # token sampling's scores: level 0 of an encoder that samples (a network trained with
        # sampling on loads into one with it off, ``strict=False``, the router left out)
        self.router = nn.Linear(cfg.d_model, 1) if router else None

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, keep: int = 0, in_place: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Groups (B*, G, C) with keep-mask (B*, G) → attended tokens, summaries (B*, 1, C) and
        the tokens' keep-mask.

        ``keep`` > 0 samples tokens in the first block (:func:`sampled_block`): the tokens
        returned are each group's ``keep`` best-scored, (B*, keep, C), and the summaries
        pool those together with the group's other tokens, which skipped the blocks.
        ``in_place`` samples without gathering (the module doc): every token is returned,
        (B*, G, C), the dropped ones as they came, and the keep-mask marks the kept ones.
        """
        blocks = [cast(Block, blk) for blk in self.blocks]
        if not keep:
            for blk in blocks:
                x = blk(x, mask=_key_mask(mask))
            return x, self.pool(x, _key_mask(mask)), mask
        assert self.router is not None, "only level 0 samples tokens"
        if in_place:
            x, kept_mask = sampled_block_in_place(blocks.pop(0), self.router, x, mask, keep)  # (B*, G, C)
            for blk in blocks:  # the dropped tokens skip these blocks, as they do when gathered
                x = torch.where(kept_mask.unsqueeze(-1), blk(x, mask=_key_mask(kept_mask)), x)
            return x, self.pool(x, _key_mask(mask)), kept_mask  # pooled over every real token
        kept, rest = sampled_block(blocks.pop(0), self.router, x, mask, keep)
        (x, x_mask), (skipped, skipped_mask) = kept, rest  # (B*, K, C), (B*, G - K, C)
        for blk in blocks:
            x = blk(x, mask=_key_mask(x_mask))
        group = torch.cat([x, skipped], dim=1)  # (B*, G, C): the kept, then the skipped as they came
        group_mask = None
        if x_mask is not None and skipped_mask is not None:
            group_mask = torch.cat([x_mask, skipped_mask], dim=1)  # (B*, G)
        return x, self.pool(group, _key_mask(group_mask)), x_mask


Tokens = tuple[torch.Tensor, torch.Tensor | None]
"""Tokens (B*, n, C) and their keep-mask (B*, n), None when nothing is padded."""


def sampled_block(
    blk: Block, router: nn.Module, x: torch.Tensor, mask: torch.Tensor | None, keep: int
) -> tuple[Tokens, Tokens]:
    """``blk`` over groups (B*, G, C), with only each group's ``keep`` best-scored tokens as
    queries: the kept tokens after the block (B*, K, C), and the others as they came in
    (B*, G - K, C), each with its keep-mask (None when the groups have no padding).

    Every token is a key and value of this block's attention. ``router`` scores the tokens from
    the block's normalised input, and a kept token takes ``route_weight(score)`` of its update
    (``sampling.py``).
    """
    h, k, v, scores = block_scores(blk, router, x)
    order = rank_tokens(scores, mask)  # (B*, G): no autograd
    index, rest = order[:, :keep], order[:, keep:]  # (B*, K), (B*, G - K)
    skipped = gather_tokens(x, rest)  # (B*, G - K, C)
    x, h = gather_tokens(x, index), gather_tokens(h, index)  # (B*, K, C)
    y = blk.finish(x, h, k, v, _key_mask(mask))  # (B*, K, C)
    x = x + route_weight(scores.gather(1, index)).unsqueeze(-1) * (y - x)  # (B*, K, 1) weights
    # masks are kept even where every kept slot is real: a data-dependent None would not trace
    # (a masked SDPA costs what an unmasked one does on the CPU)
    if mask is None:
        return (x, None), (skipped, None)
    return (x, mask.gather(1, index)), (skipped, mask.gather(1, rest))


def sampled_block_in_place(
    blk: Block, router: nn.Module, x: torch.Tensor, valid: torch.Tensor | None, keep: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sampled_block` without gathering: every token is a query, so (B*, G, C) comes back,
    the tokens it drops as they came in, with the keep-mask (B*, G) of those it keeps."""
    h, k, v, scores = block_scores(blk, router, x)
    kept = keep_in_place(scores, valid, keep)  # (B*, G)
    y = blk.finish(x, h, k, v, _key_mask(valid))  # (B*, G, C)
    y = x + route_weight(scores).unsqueeze(-1) * (y - x)  # (B*, G, C)
    return torch.where(kept.unsqueeze(-1), y, x), kept


def block_scores(
    blk: Block, router: nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first steps of ``blk`` over groups (B*, G, C): ``h = ln_q(x)``, keys and values of every
    token, and each token's router score (B*, G)."""
    h = blk.ln_q(x)  # (B*, G, C)
    k, v = blk.attn.keys_values(h)  # 2 x (B*, nh, G, hs)
    return h, k, v, router(h).squeeze(-1)  # (B*, G)


MIN_SAMPLED_TOKENS = 64
"""Sampling runs only on observations of at least this many tokens: below it, measured by
``benchmarks/sampling.py`` (forward + backward at PPO's minibatch and rollout inference), the
gather and scoring cost as much as the dropped tokens save."""


def sampling_off_reason(cfg: NB2Config, single_group: bool, n_tokens: int, group_len: int) -> str | None:
    """Why sampling cannot save time for this observation (None: it runs, or was not asked for)."""
    if not cfg.sampling:
        return None
    if cfg.attention == "flat":
        return "flat attention never samples"
    if single_group:
        return "the observation is a single group"
    if keep_count(group_len, cfg.keep_ratio, cfg.min_keep) >= group_len:
        return (
            f"groups of {group_len} tokens leave nothing to drop "
            f"(keep_ratio={cfg.keep_ratio}, min_keep={cfg.min_keep})"
        )
    if n_tokens < MIN_SAMPLED_TOKENS:
        return (
            f"{n_tokens} tokens are fewer than the {MIN_SAMPLED_TOKENS} where sampling saves time "
            "(measured in benchmarks/sampling.py)"
        )
    return None


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
        self.keep = keep_count(group_len, cfg.keep_ratio, cfg.min_keep)
        """Tokens each level-0 group keeps when sampling runs."""
        self.sampling_off = sampling_off_reason(cfg, self.single_group, n_groups * group_len, group_len)
        """Why token sampling does not run though the config asks for it (None: it runs, or was not asked)."""
        self.sample = cfg.sampling and self.sampling_off is None
        level0 = [] if self.single_group else [Level(cfg, cfg.n_local_layers, router=self.sample)]
        self.level_list: list[Level] = level0
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
            _, pooled, _ = level(s, level.group_mask.repeat(b, 1))
            summaries = pooled.view(b, n_groups, c)  # (B, n, C)
            levels.append(summaries)
        task = self._task(ts, b)  # (B, C)
        glob = self.global_token + summaries.mean(dim=1, keepdim=True)  # (B, 1, C)
        top = torch.cat([glob, task.unsqueeze(1), summaries], dim=1)
        for blk in self.global_blocks:
            top = blk(top)  # (B, 2 + n_top, C)
        return levels, top, task

    def forward(self, ts: TokenSet, in_place: bool = False) -> Memory:
        """``in_place`` samples tokens by masking instead of gathering (the module doc): for
        tracing with a dynamic batch axis and export; the result is the same."""
        if self.single_group:
            return self._forward_single(ts)
        b, g, G, c = ts.tokens.shape
        x = ts.tokens.reshape(b * g, G, c)  # (B*g, G, C)
        mask = ts.keep_mask(b)  # (B*g, G) or None
        valid = ts.tokens.new_full((b,), g * G) if mask is None else mask.reshape(b, -1).sum(dim=1)  # (B,)
        level0 = self.level_list[0]
        x, pooled, mask = level0(x, mask, self.keep if self.sample else 0, in_place)  # x (B*g, K or G, C)
        kept = None
        if self.sample:
            n_kept = valid.new_full((b,), g * x.shape[1]) if mask is None else mask.reshape(b, -1).sum(dim=1)
            kept = n_kept / valid  # (B,) share of real tokens kept
        summaries = pooled.view(b, g, c)  # (B, g, C)
        fine = x.reshape(b, -1, c)  # (B, g*K, C); in place (B, g*G, C), dropped tokens masked
        fine_mask = None if mask is None else mask.reshape(b, -1)  # (B, g*K) or (B, g*G)

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
