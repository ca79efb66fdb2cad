"""Online EWC (Schwarz et al. 2018, "Progress & Compress"): a quadratic pull towards earlier
tasks' parameters, weighted by how much each parameter mattered to them.

At each task's end the diagonal Fisher information is estimated on the task's own states,
``F_new = mean over samples of (d log p(y|s) / d theta)^2``, where ``log p`` is the log-likelihood
of an output sampled from the network's own distribution (the *true* Fisher, not the empirical
one). Online EWC keeps one running estimate, ``F <- decay * F + F_new``, and one anchor, the
parameters at the latest task's end. The penalty is ``lambda / 2 * sum F * (theta - anchor)^2``.
With ``average``, ``F`` is divided by its running weight ``w <- decay * w + 1`` (a weighted mean
of the tasks' Fishers instead of their sum), so the pull on the shared network does not grow with
the number of tasks behind it: after five tasks at decay 0.9 the sum weighs 4.1 tasks.

Each output head's Fisher (the action distribution, the value) is divided by its own mean
before they are added, so ``lambda`` does not depend on the scale of returns.

The penalty is one autograd node over every parameter (:class:`_Penalty`), computed with
``torch._foreach_*`` kernels, and its gradient ``lambda * F * (theta - anchor)`` is written in
closed form: through autograd, its four ops per parameter tensor and their backward cost about a
fifth of a PPO update of NB2-nano at every optimizer step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn


def fisher_diagonal(
    params: dict[str, nn.Parameter], log_likelihoods: Iterable[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Mean over samples of squared gradients: one scalar log-likelihood per sample."""
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    n = 0
    names = list(params)
    tensors = [params[k] for k in names]
    for ll in log_likelihoods:
        grads = torch.autograd.grad(ll, tensors, allow_unused=True)
        for name, g in zip(names, grads, strict=True):
            if g is not None:
                total[name] += g.detach() ** 2
        n += 1
    if n == 0:
        raise ValueError("fisher_diagonal needs at least one sample")
    return {name: f / n for name, f in total.items()}


def normalised(fisher: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``fisher`` divided by its mean over all entries (unchanged when that mean is 0)."""
    mean = torch.cat([f.flatten() for f in fisher.values()]).mean()
    if float(mean) <= 0.0:
        return fisher
    return {name: f / mean for name, f in fisher.items()}


class _Penalty(torch.autograd.Function):
    """``strength / 2 * sum_i ||sqrt(F_i) * (theta_i - anchor_i)||^2`` over parameter tensors i,
    with its gradient ``strength * F_i * (theta_i - anchor_i)``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        strength: float,
        root_fisher: list[torch.Tensor],
        anchor: list[torch.Tensor],
        *params: torch.Tensor,
    ) -> torch.Tensor:
        weighted = torch._foreach_mul(torch._foreach_sub(list(params), anchor), root_fisher)  # sqrt(F) d
        ctx.strength, ctx.root_fisher, ctx.weighted = strength, root_fisher, weighted
        norms = torch._foreach_norm(weighted, 2)  # one scalar per tensor
        return 0.5 * strength * torch.stack(norms).pow(2).sum()

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        grads = torch._foreach_mul(ctx.weighted, ctx.root_fisher)  # F d
        torch._foreach_mul_(grads, ctx.strength * grad_out)
        return (None, None, None, *grads)


class OnlineEWC:
    """The running Fisher, the anchor and the penalty over ``params`` (name → parameter)."""

    def __init__(
        self,
        params: dict[str, nn.Parameter],
        strength: float = 100.0,
        decay: float = 0.9,
        average: bool = False,
    ) -> None:
        if strength < 0 or not 0.0 <= decay <= 1.0:
            raise ValueError(f"EWC needs strength >= 0 and 0 <= decay <= 1, got {strength}, {decay}")
        self.params = params
        self.strength = strength
        self.decay = decay
        self.average = average
        self.weight = 0.0
        """How many tasks the running Fisher sums, decayed: ``w <- decay * w + 1``."""
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self.raw_fisher_mean = 0.0
        """Mean of the latest un-normalised Fisher estimate (``retention/fisher_mean``)."""
        self._root: list[torch.Tensor] | None = None  # sqrt(F) per parameter, made when first needed

    @property
    def active(self) -> bool:
        return bool(self.fisher)

    def consolidate(self, heads: list[Callable[[], Iterable[torch.Tensor]]]) -> None:
        """Estimate the Fisher of each head (a callable yielding per-sample log-likelihoods),
        fold it into the running estimate and move the anchor to the current parameters."""
        new: dict[str, torch.Tensor] = {name: torch.zeros_like(p) for name, p in self.params.items()}
        raw = []
        for head in heads:
            f = fisher_diagonal(self.params, head())
            raw.append(torch.cat([x.flatten() for x in f.values()]).mean())
            for name, value in normalised(f).items():
                new[name] += value
        self.raw_fisher_mean = float(torch.stack(raw).mean()) if raw else 0.0
        for name, value in new.items():
            self.fisher[name] = self.decay * self.fisher[name] + value if name in self.fisher else value
        self.weight = self.decay * self.weight + 1.0
        self.anchor = {name: p.detach().clone() for name, p in self.params.items()}
        self._root = None

    def penalty(self) -> torch.Tensor:
        """``strength / 2 * sum F (theta - anchor)^2``; 0 before the first consolidation."""
        device = next(iter(self.params.values())).device
        if not self.fisher:
            return torch.zeros((), device=device)
        names = list(self.params)
        if self._root is None:
            self._root = [self.fisher[k].sqrt() for k in names]
        anchor = [self.anchor[k] for k in names]
        strength = self.strength / max(self.weight, 1.0) if self.average else self.strength
        return _Penalty.apply(strength, self._root, anchor, *(self.params[k] for k in names))

    def state_dict(self) -> dict[str, Any]:
        return {
            "fisher": {k: v.cpu() for k, v in self.fisher.items()},
            "anchor": {k: v.cpu() for k, v in self.anchor.items()},
            "strength": self.strength,
            "decay": self.decay,
            "average": self.average,
            "weight": self.weight,
            "raw_fisher_mean": self.raw_fisher_mean,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = next(iter(self.params.values())).device
        unknown = set(state["fisher"]) - set(self.params)
        if unknown:
            raise ValueError(f"EWC state holds parameters this network lacks: {sorted(unknown)[:5]}")
        self.fisher = {k: v.to(device) for k, v in state["fisher"].items()}
        self.anchor = {k: v.to(device) for k, v in state["anchor"].items()}
        self.strength, self.decay = float(state["strength"]), float(state["decay"])
        self.raw_fisher_mean = float(state["raw_fisher_mean"])
        # saved before averaging existed: a sum over an unknown number of tasks, used as a sum
        self.average, self.weight = bool(state.get("average", False)), float(state.get("weight", 1.0))
        self._root = None
