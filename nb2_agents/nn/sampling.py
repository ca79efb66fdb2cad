"""Adaptive token sampling: each group keeps its most significant tokens, deterministically.

Sampling runs inside the first block of level 0, after the block has computed its keys and
values over every token of the group. A learned router (one ``C -> 1`` projection of the
block's normalised input) scores every token, and each group keeps its ``K`` best. Only the
kept tokens then go on as queries: the rest of the block (its attention, output projection and
MLP), the later level-0 blocks and the decoder read ``K`` tokens per group instead of ``G``.
The dropped tokens skip those blocks, as they are, and still enter their group's pooled
summary, so nothing of the observation is lost on its way up the hierarchy; they were also keys
and values of the first block's attention, so what they held reached the kept tokens.

The router learns what to keep as Mixture-of-Depths does (Raposo et al., 2024): a kept token's
update by the block is scaled by ``2 * sigmoid(score)`` (1 at a zero score), so the loss reaches
the scores of the tokens it uses. The scores used to be ATS's (Fayyaz et al., ECCV 2022: the
attention from the group's mean query times the values' norms), which no gradient shapes. On
MiniGrid-DoorKey, a trained network still dropped the key or the door at the start of about
half of its held-out episodes, and failed those layouts: 0.57-0.79 held-out return on four of
five seeds, where NB2 without sampling scored 0.95. With the router: 0.94-0.96 on four, 0.63 on
the fifth (``policies/speed.yaml``).

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


def route_weight(scores: torch.Tensor) -> torch.Tensor:
    """How much of its block update a kept token takes, from its router score: ``2 * sigmoid``,
    1 at a zero score, so a fresh router leaves the block as it is; its gradient trains the router."""
    return 2.0 * torch.sigmoid(scores)


@torch.no_grad()
def rank_tokens(scores: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Indices (B, N) of each row's tokens, most significant first.

    Padding (``valid`` False) ranks after every real token; ties keep their order (a stable
    sort), so the choice depends on the row alone, never on its batch.
    """
    if valid is not None:
        scores = scores.masked_fill(~valid, float("-inf"))  # padding ranks last
    return scores.sort(dim=-1, descending=True, stable=True).indices  # (B, N)


def keep_in_place(scores: torch.Tensor, valid: torch.Tensor | None, k: int) -> torch.Tensor:
    """The ``k`` tokens :func:`rank_tokens` ranks first, as a keep-mask (B, N) in the tokens' own
    order rather than as gathered indices: the form of sampling that traces and exports.

    Without a sort (ONNX has no stable one): token j ranks before token i when its score is
    larger, or equal with a smaller index, which is the order of a stable descending sort.
    """
    if valid is not None:
        scores = scores.masked_fill(~valid, float("-inf"))  # padding ranks last, as in rank_tokens
    s_i, s_j = scores.unsqueeze(-1), scores.unsqueeze(-2)  # (B, N, 1), (B, 1, N)
    index = torch.arange(scores.shape[-1], device=scores.device)  # (N,)
    earlier = index.unsqueeze(0) < index.unsqueeze(1)  # (N, N): j < i
    before = (s_j > s_i) | ((s_j == s_i) & earlier)  # (B, N, N): j ranks before i
    keep = before.sum(dim=-1) < k  # (B, N): rank below k
    return keep if valid is None else keep & valid


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` (B, N, ...) picked by ``index`` (B, K) → (B, K, ...)."""
    shape = index.shape + (1,) * (x.dim() - 2)
    return x.gather(1, index.view(shape).expand(*index.shape, *x.shape[2:]))
