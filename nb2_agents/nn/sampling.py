"""Adaptive token sampling: each group keeps its most significant tokens, deterministically.

Sampling runs inside the first block of level 0, after the block has computed its keys and
values over every token of the group. Significance follows ATS (Fayyaz et al., ECCV 2022):
the attention a token receives from the group's mean query, times the norm of its value, both
from that block's own projections, so scoring adds one query per group. Only the kept tokens
then go on as queries: the rest of the block (its attention, output projection and MLP), the
later level-0 blocks and the decoder read ``K`` tokens per group instead of ``G``. The dropped
tokens skip those blocks, as they are, and still enter their group's pooled summary, so nothing
of the observation is lost on its way up the hierarchy; they were also keys and values of the
first block's attention, so what they held reached the kept tokens of their group.

The skip matters for learning. When the dropped tokens were left out of the pooling too, what a
dropped token held reached the summaries only through the kept tokens' first attention, whose
gated residual starts at 0.12 (``blocks.py``). At initialisation, when the scores rank tokens
nearly at random, half the key and door cells of MiniGrid-DoorKey were thus nearly invisible,
and PPO never took off on 2 of 5 seeds (``policies/speed.yaml``).

``K`` is a fixed share of the group (:func:`keep_count`): which tokens are kept adapts to
the observation, how many does not. A data-dependent count has to be padded to the batch's
largest and masked, and then the savings shrink as the batch grows (the design before this
one kept tokens until 75 % of the significance was covered: in PPO's minibatches of 256 it
kept nearly every slot, and ran 1.1-1.5x slower than no sampling). The choice depends on the
observation alone (no noise, no batch statistics): PPO compares log-probabilities at rollout
and update time, and random token dropping would corrupt that ratio.
"""

from __future__ import annotations

import math

import torch


def keep_count(group_len: int, keep_ratio: float, min_keep: int) -> int:
    """Tokens each group keeps: ``ceil(keep_ratio * group_len)``, at least ``min_keep``, at most the group."""
    return min(group_len, max(min_keep, math.ceil(keep_ratio * group_len - 1e-9)))


def significance(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor | None
) -> torch.Tensor:
    """Score tokens (B, N) from one query per row.

    ``q`` (B, nh, 1, hs), ``k`` / ``v`` (B, nh, N, hs), ``valid`` bool broadcastable to (B, N).
    Callers run it under ``torch.no_grad()``: the choice it feeds is not differentiable.
    """
    logits = (q @ k.transpose(-2, -1)).squeeze(2) / math.sqrt(q.shape[-1])  # (B, nh, N)
    if valid is not None:
        logits = logits.masked_fill(~valid.unsqueeze(1), float("-inf"))
    attn = logits.softmax(dim=-1)  # (B, nh, N)
    return (attn * v.norm(dim=-1)).mean(dim=1)  # (B, N)


@torch.no_grad()
def rank_tokens(scores: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Indices (B, N) of each row's tokens, most significant first.

    Padding (``valid`` False) ranks after every real token; ties keep their order (a stable
    sort), so the choice depends on the row alone, never on its batch.
    """
    if valid is not None:
        scores = scores.masked_fill(~valid, -1.0)  # scores are >= 0: padding ranks last
    return scores.sort(dim=-1, descending=True, stable=True).indices  # (B, N)


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` (B, N, ...) picked by ``index`` (B, K) → (B, K, ...)."""
    shape = index.shape + (1,) * (x.dim() - 2)
    return x.gather(1, index.view(shape).expand(*index.shape, *x.shape[2:]))
