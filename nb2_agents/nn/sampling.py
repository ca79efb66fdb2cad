"""Adaptive token sampling: keep the most significant tokens, deterministically.

Significance follows ATS (Fayyaz et al., ECCV 2022): the attention a token receives from a
summary query, times the norm of its value. Tokens are ranked and kept until a share
``keep_mass`` of the total significance is covered, so a peaked input keeps few tokens and a
flat one keeps many. The choice depends on the observation alone (no noise, no batch
statistics): PPO compares log-probabilities at rollout and update time, and random token
dropping would corrupt that ratio.
"""

from __future__ import annotations

import math

import torch


@torch.no_grad()
def significance(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor | None
) -> torch.Tensor:
    """Score tokens (B, N) from one query per row.

    ``q`` (B, nh, 1, hs), ``k`` / ``v`` (B, nh, N, hs), ``valid`` bool broadcastable to (B, N).
    """
    logits = (q @ k.transpose(-2, -1)).squeeze(2) / math.sqrt(q.shape[-1])  # (B, nh, N)
    if valid is not None:
        logits = logits.masked_fill(~valid.unsqueeze(1), float("-inf"))
    attn = logits.softmax(dim=-1)  # (B, nh, N)
    return (attn * v.norm(dim=-1)).mean(dim=1)  # (B, N)


@torch.no_grad()
def select_tokens(
    scores: torch.Tensor, valid: torch.Tensor | None, keep_mass: float, min_keep: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (B, K) of the kept tokens, most significant first, and their keep-mask (B, K).

    Each row keeps its tokens in order of significance until ``keep_mass`` of its total is
    covered, and at least ``min_keep``. ``K`` is the largest count over the batch; rows that
    keep fewer have the rest masked out, so a row's result does not depend on its batch.
    """
    if valid is not None:
        scores = scores.masked_fill(~valid, 0.0)
    share = scores / scores.sum(dim=-1, keepdim=True).clamp_min(1e-12)  # (B, N)
    ranked, order = share.sort(dim=-1, descending=True, stable=True)  # (B, N)
    keep = (ranked.cumsum(dim=-1) - ranked) < keep_mass  # mass before this token not yet covered
    keep[:, :min_keep] = True
    if valid is not None:
        keep &= valid.expand_as(scores).gather(1, order)
    k = int(keep.sum(dim=-1).max())
    return order[:, :k], keep[:, :k]


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` (B, N, ...) picked by ``index`` (B, K) → (B, K, ...)."""
    shape = index.shape + (1,) * (x.dim() - 2)
    return x.gather(1, index.view(shape).expand(*index.shape, *x.shape[2:]))
