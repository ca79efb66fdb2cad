"""NB2's forward pass with shapes that depend on the batch size alone, for tracing and export.

:class:`~nb2_agents.nn.model.NB2` is written for training: adaptive token sampling *gathers*
the kept tokens of each group into a tensor whose width K is the largest kept count in the
batch (data-dependent), skips the keep-mask when every slot is kept (a data-dependent branch),
and the forward records diagnostics on the modules. None of that survives ``torch.export`` or
``torch.jit.trace`` with a dynamic batch axis.

:class:`StaticNB2` runs the same modules with the same weights and gives the same result, but
sampling *masks* the tokens it drops instead of gathering the ones it keeps. Attention inside
NB2 carries no position of its own (positions are embedded in the tokens), so attending over
the kept tokens in place, with the others masked out of every key set (level-0 attention,
pooling and the decoder's memory), equals attending over the gathered ones; only the order of
floating-point sums differs (~1e-7). The price is that dropped tokens are still computed as
queries at level 0, so an exported graph does not save the FLOPs sampling saves in PyTorch.

Every weight is reached through its module (``attn.kv(h)``, never ``attn.kv.weight``), so
the graph still runs after ``torch.ao.quantization.quantize_dynamic`` swaps the Linear layers.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nb2_agents.nn.decoder import Decoder
from nb2_agents.nn.encoder import HierarchicalEncoder, Memory, Pool, _key_mask
from nb2_agents.nn.model import NB2
from nb2_agents.nn.tokenizer import TokenSet


def significance(pool: Pool, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """How much ``pool``'s query attends to each token of (B*, G, C), times its value norm: (B*, G).

    :meth:`Pool.significance`, through the pool's modules.
    """
    a = pool.attn
    k, v = a.keys_values(pool.ln(x))  # 2 x (B*, nh, G, hs)
    q = a.split_heads(a.q(pool.seed)).expand(x.shape[0], -1, -1, -1)  # (B*, nh, 1, hs)
    logits = (q @ k.transpose(-2, -1)).squeeze(2) / math.sqrt(a.head_dim)  # (B*, nh, G)
    if valid is not None:
        logits = logits.masked_fill(~valid.unsqueeze(1), float("-inf"))
    attn = logits.softmax(dim=-1)  # (B*, nh, G)
    return (attn * v.norm(dim=-1)).mean(dim=1)  # (B*, G)


def keep_in_place(
    scores: torch.Tensor, valid: torch.Tensor | None, keep_mass: float, min_keep: int
) -> torch.Tensor:
    """The tokens :func:`~nb2_agents.nn.sampling.select_tokens` keeps, as a keep-mask (B*, G) in
    the tokens' own order rather than as gathered indices.

    Without a sort (ONNX has no stable one): token j ranks before token i when its share is
    larger, or equal with a smaller index, which is the order of a stable descending sort.
    """
    if valid is not None:
        scores = scores.masked_fill(~valid, 0.0)
    share = scores / scores.sum(dim=-1, keepdim=True).clamp_min(1e-12)  # (B*, G)
    s_i, s_j = share.unsqueeze(-1), share.unsqueeze(-2)  # (B*, G, 1), (B*, 1, G)
    index = torch.arange(share.shape[-1], device=share.device)  # (G,)
    earlier = index.unsqueeze(0) < index.unsqueeze(1)  # (G, G): j < i
    before = (s_j > s_i) | ((s_j == s_i) & earlier)  # (B*, G, G): j ranks before i
    mass_before = (before.to(share.dtype) @ share.unsqueeze(-1)).squeeze(-1)  # (B*, G)
    rank = before.sum(dim=-1)  # (B*, G)
    keep = (mass_before < keep_mass) | (rank < min_keep)  # (B*, G)
    return keep if valid is None else keep & valid


def encode(encoder: HierarchicalEncoder, ts: TokenSet) -> Memory:
    """:meth:`HierarchicalEncoder.forward` with in-place (masked) token sampling."""
    if encoder.single_group or not encoder.sample:
        return encoder(ts)  # no sampling on this path: already static
    cfg = encoder.cfg
    b, g, G, c = ts.tokens.shape
    x = ts.tokens.reshape(b * g, G, c)  # (B*g, G, C)
    valid = ts.keep_mask(b)  # (B*g, G) or None
    level0 = encoder.level_list[0]
    mask = keep_in_place(significance(level0.pool, x, valid), valid, cfg.keep_mass, cfg.min_keep)
    x, pooled = level0(x, mask)
    summaries = pooled.view(b, g, c)  # (B, g, C)
    fine = x.reshape(b, g * G, c)  # (B, g*G, C): dropped tokens stay, masked
    fine_mask = mask.reshape(b, g * G)  # (B, g*G)

    levels, top, task = encoder.summarize(summaries, ts)
    memory = torch.cat([fine, *levels[:-1], top], dim=1)  # (B, g*G + S, C)
    rest = torch.ones(b, memory.shape[1] - fine.shape[1], dtype=torch.bool, device=memory.device)
    return Memory(memory, torch.cat([fine_mask, rest], dim=1), top[:, 0], task, None, ts.task_ids)


def decode(decoder: Decoder, mem: Memory) -> torch.Tensor:
    """:meth:`Decoder.forward` without recording the gates on the module: (B, nq, C)."""
    b = mem.tokens.shape[0]
    cond = torch.cat([mem.task, mem.global_token], dim=-1)  # (B, 2C)
    gates = 2.0 * torch.sigmoid(decoder.head_gate(cond))  # (B, L*nh)
    gates = gates.view(b, len(decoder.blocks), decoder.cfg.n_heads)  # (B, L, nh)
    key_mask = None if mem.mask is None else _key_mask(mem.mask.expand(b, -1))  # (B, 1, 1, T)
    x = decoder.queries + mem.global_token.unsqueeze(1)  # (B, nq, C)
    for i, blk in enumerate(decoder.blocks):
        x = blk(x, mem.tokens, key_mask, gates[:, i])
    x = decoder.ln_out(x)  # (B, nq, C)
    if mem.task_ids is None:
        return x
    return x * decoder.task_gain[mem.task_ids].exp().unsqueeze(-1)  # (B, nq, C)


class StaticNB2(nn.Module):
    """``NB2``'s forward for export: SB3-preprocessed observations → (B, n_queries * C).

    Shares ``net``'s modules (no copy). It skips the NaN / Inf check, which is an input
    check for training, not part of the policy.
    """

    def __init__(self, net: NB2) -> None:
        super().__init__()
        self.net = net

    def forward(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        memory = encode(self.net.encoder, self.net.tokenizer(obs))
        return decode(self.net.decoder, memory).flatten(1)  # (B, nq, C) → (B, nq*C)
