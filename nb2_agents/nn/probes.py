"""What a forward pass of NB2 did, recorded by hooks for logging: nothing is stored on modules.

:func:`recording` installs forward hooks for as long as it is open and collects, per forward:
- the share of each observation's fine tokens that adaptive sampling kept (the encoder's
  :class:`~nb2_agents.nn.encoder.Memory`),
- the decoder's head gates (its ``head_gate`` layer's output),
- optionally, the entropy of every attention's distributions (from each attention's input; it
  costs an explicit softmax, so it is asked for by diagnostics, not by training).

Hooks do not run inside a traced graph, so the network's traced inference is off while open.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nb2_agents.nn.blocks import Attention
from nb2_agents.nn.decoder import open_gates
from nb2_agents.nn.encoder import Memory, Pool

if TYPE_CHECKING:
    from nb2_agents.nn.model import NB2


@torch.no_grad()
def attention_entropy(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None) -> float:
    """Mean entropy (nats) of softmax(q k^T / sqrt(hs)) over every head and query."""
    logits = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, nh, Tq, Tk)
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    logp = logits.log_softmax(dim=-1)
    return float(-(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(dim=-1).mean())


@dataclass
class Recording:
    """What the last forward inside :func:`recording` did."""

    kept: torch.Tensor | None = None
    """(B,) share of fine tokens that sampling kept; None when sampling did not run."""
    gates: torch.Tensor | None = None
    """(B, L, nh) decoder head gates."""
    entropy: dict[str, float] = field(default_factory=dict)
    """Mean attention entropy (nats) by attention module name (a Pool by its own name)."""


Hook = Callable[..., None]


def _attention_hook(rec: Recording, name: str) -> Hook:
    def hook(attn: Attention, args: tuple[Any, ...], kwargs: dict[str, Any], _out: torch.Tensor) -> None:
        x, k, _v, *rest = (*args, *kwargs.values())  # forward(x, k, v, mask, head_gates)
        q = attn.split_heads(attn.q(x))  # (B, nh, Tq, hs)
        rec.entropy[name] = attention_entropy(q, k, rest[0] if rest else None)

    return hook


def _pool_hook(rec: Recording, name: str) -> Hook:
    # Pool reads through its attention's folded weights (no call to the attention), so its
    # distribution is computed here from the pool's input: one query per group
    def hook(pool: Pool, args: tuple[Any, ...], _out: torch.Tensor) -> None:
        x, key_mask = args  # (B*, G, C), (B*|1, 1, 1, G) or None
        k, _ = pool.attn.keys_values(pool.ln(x))  # (B*, nh, G, hs)
        q = pool.attn.split_heads(pool.attn.q(pool.query(x.shape[0])))  # (B*, nh, 1, hs)
        rec.entropy[name] = attention_entropy(q, k, key_mask)

    return hook


@contextmanager
def recording(net: NB2, entropy: bool = False) -> Iterator[Recording]:
    """While open, each forward of ``net`` fills the :class:`Recording` this yields."""
    rec = Recording()

    def kept(_m: nn.Module, _args: tuple[Any, ...], memory: Memory) -> None:
        rec.kept = None if memory.kept is None else memory.kept.detach()

    def gates(_m: nn.Module, _args: tuple[Any, ...], logits: torch.Tensor) -> None:
        b, n = logits.shape[0], len(net.decoder.blocks)
        rec.gates = open_gates(logits.detach()).view(b, n, -1)  # (B, L, nh)

    handles = [
        net.encoder.register_forward_hook(kept),
        net.decoder.head_gate.register_forward_hook(gates),
    ]
    if entropy:
        for name, module in net.named_modules():
            if isinstance(module, Pool):
                handles.append(module.register_forward_hook(_pool_hook(rec, name)))
            elif isinstance(module, Attention) and not name.endswith("pool.attn"):
                hook = _attention_hook(rec, name)
                handles.append(module.register_forward_hook(hook, with_kwargs=True))
    traced, net.traced_inference = net.traced_inference, False
    try:
        yield rec
    finally:
        net.traced_inference = traced
        for handle in handles:
            handle.remove()


@torch.no_grad()
def kept_share(net: NB2, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor | None:
    """(B,) share of each observation's fine tokens that sampling keeps, from one forward of
    ``net`` on ``obs``; None when sampling does not run."""
    with recording(net) as rec:
        net(obs)
    return rec.kept
