"""Memory over time: the global stage attends over the summaries of each env's last K steps.

NB2's hierarchy, extended to time: attention inside one step's tokens, each step pooled into
its global summary, then attention across the summaries of the last K steps. A step's summary
is the global token NB2 computes from that step alone (no memory of its own, so it never
changes once computed for the same weights). :class:`TemporalStage` lets the current step's
summary attend together with the K past ones (each plus a learned embedding of its age, the
steps before the episode masked out); its output replaces the global token (the decoder's head
gates and query start read it) and joins the decoder's memory, so the actor and critic queries
can read past steps directly.

Where the past comes from: the observation carries each env's last K observations
(``memory/layout.py``). At update time every past step is encoded again with the current
weights, so the update's log-probability is the rollout's for the same weights: PPO's ratio is
exact. Without autograd (rollouts, ``predict``), :class:`SummaryCache` keeps each env's past
summaries, so a new step costs one step's encoding, not K: a cached summary is used only where
the observation it was computed from is the one in the memory now, under the same weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from nb2_agents.nn.blocks import Block
from nb2_agents.nn.config import NB2Config
from nb2_agents.nn.encoder import Memory

AGE_STD = 1.0
"""The age embeddings start at unit scale, like the tokenizer's (``encoder.py`` says why)."""


class TemporalStage(nn.Module):
    """(current summary, K past summaries, their validity) → the step's multi-scale memory."""

    def __init__(self, cfg: NB2Config, k: int) -> None:
        super().__init__()
        self.k = k
        self.age = nn.Parameter(torch.zeros(k, cfg.d_model))  # t-1 ... t-K
        args = (cfg.d_model, cfg.n_heads, cfg.mlp_ratio, cfg.gate_bias)
        self.blocks = nn.ModuleList(Block(*args) for _ in range(cfg.n_global_layers))

    def reset_parameters(self) -> None:
        nn.init.normal_(self.age, std=AGE_STD)

    def forward(self, mem: Memory, past: torch.Tensor, valid: torch.Tensor) -> Memory:
        """``mem`` of the current step, ``past`` (B, K, C) summaries, ``valid`` (B, K) bool."""
        b = past.shape[0]
        x = torch.cat([mem.global_token.unsqueeze(1), past + self.age], dim=1)  # (B, 1+K, C)
        keep = torch.cat([valid.new_ones(b, 1), valid], dim=1)  # (B, 1+K): the current step always
        for blk in self.blocks:
            x = blk(x, mask=keep[:, None, None, :])  # (B, 1+K, C)
        tokens = torch.cat([mem.tokens, x], dim=1)  # (B, T + 1 + K, C)
        step_mask = (
            keep.new_ones(b, mem.tokens.shape[1]) if mem.mask is None else mem.mask.expand(b, -1)
        )  # (B, T)
        mask = torch.cat([step_mask, keep], dim=1)  # (B, T + 1 + K)
        return Memory(tokens, mask, x[:, 0], mem.task, mem.kept, mem.task_ids)


Encode = Callable[[torch.Tensor], torch.Tensor]
"""Encodes the past steps at the given flat (B*K) indices: (n,) → their summaries (n, C)."""


def encode_valid(valid: torch.Tensor, encode: Encode, c: int, dtype: torch.dtype) -> torch.Tensor:
    """The summaries (B, K, C) of every valid past step, zero where a step is not valid."""
    b, k = valid.shape
    index = valid.reshape(-1).nonzero().squeeze(1)  # (n,) flat indices of real past steps
    out = torch.zeros(b * k, c, dtype=dtype, device=valid.device)  # (B*K, C)
    if index.numel():
        out = out.index_copy(0, index, encode(index))
    return out.view(b, k, c)


class SummaryCache:
    """Each env's past summaries between calls without autograd (rollouts, ``predict``).

    After a call it holds, per batch row (env), the step just encoded (its flat observation and
    summary) and the past (flat observations, summaries, validity). At the next call a past
    step's summary is reused where the memory holds, at that age, the very observation it was
    computed from, and the weights have not changed since (a count of in-place updates of every
    parameter: optimizer steps, loads and resets all bump it); every other valid past step is
    encoded. An env whose episode just started has no valid past: nothing is encoded.

    The observations are kept in the narrowest of :data:`COMPACT_FORMS` that gives them back
    exactly (cell ids, one-hot vectors and SB3's images scaled by 1/255: uint8, a quarter of
    float32's bytes) and compared as they were, so the comparison is as exact as on the originals.
    """

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.version: int | None = None
        self.flat_dtype: torch.dtype | None = None  # the observations' dtype before compaction
        self.flat_scale = 1.0  # kept = observation x scale
        self.step_flat: torch.Tensor | None = None  # (B, F)
        self.step_summary: torch.Tensor | None = None  # (B, C)
        self.past_flat: torch.Tensor | None = None  # (B, K, F)
        self.past_summary: torch.Tensor | None = None  # (B, K, C)
        self.past_valid: torch.Tensor | None = None  # (B, K)

    def summaries(
        self,
        version: int,
        past_flat: torch.Tensor,
        valid: torch.Tensor,
        encode: Encode,
        c: int,
    ) -> torch.Tensor:
        """The past summaries (B, K, C) of ``past_flat`` (B, K, F), reusing what still holds."""
        if (
            self.past_flat is None
            or self.version != version
            or self.past_flat.shape != past_flat.shape
            or self.flat_dtype != past_flat.dtype
            or self.past_flat.device != past_flat.device
        ):
            return encode_valid(valid, encode, c, past_flat.dtype)
        assert self.step_flat is not None and self.step_summary is not None
        assert self.past_summary is not None and self.past_valid is not None
        # what each age holds if every env moved one step on: the last step, then the past
        held_flat = torch.cat([self.step_flat.unsqueeze(1), self.past_flat[:, :-1]], dim=1)  # (B, K, F)
        held_flat = expand(held_flat, past_flat.dtype, self.flat_scale)  # the values as they were
        held = torch.cat([self.step_summary.unsqueeze(1), self.past_summary[:, :-1]], dim=1)  # (B, K, C)
        held_valid = torch.cat([torch.ones_like(valid[:, :1]), self.past_valid[:, :-1]], dim=1)  # (B, K)
        same = held_valid & (held_flat == past_flat).all(dim=-1)  # (B, K)
        reuse = valid & same
        out = torch.where(reuse.unsqueeze(-1), held, torch.zeros_like(held))  # (B, K, C)
        missing = valid & ~same
        if bool(missing.any()):
            fresh = encode_valid(missing, encode, c, out.dtype)  # (B, K, C), zero elsewhere
            out = torch.where(missing.unsqueeze(-1), fresh, out)
        return out

    def store(
        self,
        version: int,
        step_flat: torch.Tensor,
        step_summary: torch.Tensor,
        past_flat: torch.Tensor,
        past_summary: torch.Tensor,
        valid: torch.Tensor,
    ) -> None:
        self.version, self.flat_dtype = version, past_flat.dtype
        last = None if self.step_flat is None else (self.step_flat.dtype, self.flat_scale)
        form, (self.step_flat, self.past_flat) = narrowest(step_flat, past_flat, first=last)
        self.flat_scale = form[1]
        self.step_summary, self.past_summary, self.past_valid = step_summary, past_summary, valid

    def nbytes(self) -> int:
        """What the cache holds now, in bytes (every env of the last call)."""
        held = (self.step_flat, self.step_summary, self.past_flat, self.past_summary, self.past_valid)
        return sum(t.numel() * t.element_size() for t in held if t is not None)


COMPACT_FORMS: tuple[tuple[torch.dtype, float], ...] = (
    (torch.uint8, 1.0),  # small integers: cell ids, one-hot vectors
    (torch.uint8, 255.0),  # SB3's images, divided by 255 on the way in (preprocess_obs)
    (torch.float16, 1.0),
)
"""(dtype, scale) forms tried in this order for the cached observations (kept = value x scale)."""


def narrow(x: torch.Tensor, dtype: torch.dtype, scale: float) -> torch.Tensor:
    """``x`` in a compact form (:data:`COMPACT_FORMS`)."""
    if scale == 1.0:
        return x.to(dtype)
    return (x * scale).round().to(dtype)


def expand(x: torch.Tensor, dtype: torch.dtype, scale: float) -> torch.Tensor:
    """The values :func:`narrow` kept, as they were."""
    return x.to(dtype) if scale == 1.0 else x.to(dtype) / scale


Form = tuple[torch.dtype, float]


def narrowest(*tensors: torch.Tensor, first: Form | None = None) -> tuple[Form, tuple[torch.Tensor, ...]]:
    """The first of ``first`` (the form used last time) and :data:`COMPACT_FORMS` that gives every
    value of ``tensors`` back exactly (the round trip gives the same values: no NaN, nothing out of
    range, no lost digits), else the tensors' own dtype; and ``tensors`` in that form. Their own
    dtype as ``first`` is taken without a check: a rollout step then costs no round trip where no
    compact form held before."""
    own = (tensors[0].dtype, 1.0)
    rest = tuple(form for form in COMPACT_FORMS if form != first)  # a failed ``first`` is not retried
    for dtype, scale in rest if first is None else (first, *rest):
        if (dtype, scale) == own:
            break
        kept = tuple(narrow(t, dtype, scale) for t in tensors)
        back = (expand(k, t.dtype, scale) for k, t in zip(kept, tensors, strict=True))
        if all(torch.equal(b, t) for b, t in zip(back, tensors, strict=True)):
            return (dtype, scale), kept
    return own, tensors


def compact_form(*tensors: torch.Tensor, first: Form | None = None) -> Form:
    """The form :func:`narrowest` keeps ``tensors`` in."""
    return narrowest(*tensors, first=first)[0]


def param_version(module: nn.Module) -> int:
    """A number that changes whenever any parameter of ``module`` is updated in place."""
    return sum(p._version for p in module.parameters())
