"""NB2's forward pass with shapes that depend on the batch size alone, for tracing and export.

:class:`~nb2_agents.nn.model.NB2` is written for training: adaptive token sampling *gathers*
the kept tokens of each group into a tensor whose width K is the largest kept count in the
batch (data-dependent), skips the keep-mask when every slot is kept (a data-dependent branch),
and the forward records diagnostics on the modules. None of that survives ``torch.export`` or
``torch.jit.trace`` with a dynamic batch axis.

:class:`StaticNB2` runs the same modules with the same weights and gives the same result, but
sampling *masks* the tokens it drops instead of gathering the ones it keeps. Attention inside
NB2 carries no position of its own (positions are embedded in the tokens), so running the first
level-0 block with every token as a query, then masking the dropped ones out of every later key
set (later level-0 blocks and the decoder's memory) and resetting them to their input, gives
the kept tokens the values the gathered ones get, and the pooling the same group; only the
order of floating-point sums differs (~1e-7). The price is that dropped tokens are still
computed as queries, so an exported graph does not save the FLOPs sampling saves in PyTorch.

Every weight is reached through its module (``attn.kv(h)``, never ``attn.kv.weight``), so
the graph still runs after ``torch.ao.quantization.quantize_dynamic`` swaps the Linear layers.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from nb2_agents.nn.blocks import Block
from nb2_agents.nn.decoder import Decoder
from nb2_agents.nn.encoder import HierarchicalEncoder, Memory, _key_mask, block_scores
from nb2_agents.nn.model import NB2
from nb2_agents.nn.sampling import route_weight
from nb2_agents.nn.tokenizer import TokenSet


def keep_in_place(scores: torch.Tensor, valid: torch.Tensor | None, k: int) -> torch.Tensor:
    """The ``k`` tokens :func:`~nb2_agents.nn.sampling.rank_tokens` ranks first, as a keep-mask (B*, G) in
    the tokens' own order rather than as gathered indices.

    Without a sort (ONNX has no stable one): token j ranks before token i when its score is
    larger, or equal with a smaller index, which is the order of a stable descending sort.
    """
    if valid is not None:
        scores = scores.masked_fill(~valid, float("-inf"))  # padding ranks last, as in rank_tokens
    s_i, s_j = scores.unsqueeze(-1), scores.unsqueeze(-2)  # (B*, G, 1), (B*, 1, G)
    index = torch.arange(scores.shape[-1], device=scores.device)  # (G,)
    earlier = index.unsqueeze(0) < index.unsqueeze(1)  # (G, G): j < i
    before = (s_j > s_i) | ((s_j == s_i) & earlier)  # (B*, G, G): j ranks before i
    keep = before.sum(dim=-1) < k  # (B*, G): rank below k
    return keep if valid is None else keep & valid


def sampled_block_in_place(
    blk: Block, router: nn.Module, x: torch.Tensor, valid: torch.Tensor | None, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~nb2_agents.nn.encoder.sampled_block` with every token as a query: (B*, G, C), where
    the tokens it drops keep their input, and the keep-mask (B*, G) of the tokens it keeps."""
    h, k_, v, scores = block_scores(blk, router, x)
    keep = keep_in_place(scores, valid, k)  # (B*, G)
    out = blk.finish(x, h, k_, v, _key_mask(valid))  # (B*, G, C)
    out = x + route_weight(scores).unsqueeze(-1) * (out - x)  # (B*, G, C)
    return torch.where(keep.unsqueeze(-1), out, x), keep


def encode(encoder: HierarchicalEncoder, ts: TokenSet) -> Memory:
    """:meth:`HierarchicalEncoder.forward` with in-place (masked) token sampling."""
    if encoder.single_group or not encoder.sample:
        return encoder(ts)  # no sampling on this path: already static
    b, g, G, c = ts.tokens.shape
    x = ts.tokens.reshape(b * g, G, c)  # (B*g, G, C)
    level0 = encoder.level_list[0]
    first, *rest = (cast(Block, blk) for blk in level0.blocks)
    valid = ts.keep_mask(b)  # (B*g, G) or None
    assert level0.router is not None
    x, mask = sampled_block_in_place(first, level0.router, x, valid, encoder.keep)  # (B*g, G, C), (B*g, G)
    for blk in rest:  # the dropped tokens skip these blocks, as they do in sampled_block
        x = torch.where(mask.unsqueeze(-1), blk(x, mask=_key_mask(mask)), x)  # (B*g, G, C)
    summaries = level0.pool(x, _key_mask(valid)).view(b, g, c)  # (B, g, C): every real token
    fine = x.reshape(b, g * G, c)  # (B, g*G, C): dropped tokens stay, masked
    fine_mask = mask.reshape(b, g * G)  # (B, g*G)

    levels, top, task = encoder.summarize(summaries, ts)
    memory = torch.cat([fine, *levels[:-1], top], dim=1)  # (B, g*G + S, C)
    rest_mask = torch.ones(b, memory.shape[1] - fine.shape[1], dtype=torch.bool, device=memory.device)
    return Memory(memory, torch.cat([fine_mask, rest_mask], dim=1), top[:, 0], task, None, ts.task_ids)


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
    return decoder.adapt(decoder.ln_out(x), mem.task_ids)  # (B, nq, C)


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
