"""The seam through which a loss of one's own joins SB3's updates: an optimizer step pre-hook.

SB3's own ``train()`` runs unchanged, for on-policy and off-policy algorithms alike: when SB3
calls ``optimizer.step()``, the hook back-propagates the extra loss into the gradients SB3 just
computed, and the step applies both. SB3 has already clipped its own gradients by then, so the
extra gradient is clipped on its own (:func:`install_extra_loss`). (An auxiliary phase after each
update, as in Phasic Policy Gradient, would need a hook after ``train()``, which SB3 does not
offer for off-policy algorithms.) Retention strategies (:mod:`nb2_agents.retention`) and
kickstarting distillation (:mod:`nb2_agents.distill`) add their losses here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm

from nb2_agents.sb3.algos import optimizers
from nb2_agents.stopwatch import Stopwatch

ExtraLoss = Callable[[BaseAlgorithm, str], "torch.Tensor | None"]
"""``extra_loss(model, part)``: a loss to add at a step of optimizer ``part``, or None."""


def install_extra_loss(
    model: BaseAlgorithm, extra_loss: ExtraLoss, watch: Stopwatch | None = None
) -> list[Any]:
    """Hook ``extra_loss`` (a strategy's :meth:`~nb2_agents.retention.base.Strategy.extra_loss`) into
    each optimizer's steps; returns the hook handles. ``watch``
    counts the hooks' time (the loss, its gradient and the clipping) as ``retention``.

    The extra loss's gradient is clipped to the algorithm's ``max_grad_norm`` (where it has one)
    on its own, then added to the gradient SB3 computed and clipped: otherwise an unclipped
    retention gradient would outweigh the clipped RL gradient and stop the new task's learning.
    """
    max_norm = getattr(model, "max_grad_norm", None)
    watch = watch if watch is not None else Stopwatch()

    def add_extra_grad(part: str, params: list[Any]) -> None:
        loss = extra_loss(model, part)
        if loss is None or not loss.requires_grad:
            return
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        pairs = [(p, g) for p, g in zip(params, grads, strict=True) if g is not None]
        if max_norm is not None and pairs:
            torch.nn.utils.clip_grads_with_norm_(
                [g for _, g in pairs], max_norm, torch.nn.utils.get_total_norm([g for _, g in pairs])
            )
        for p, g in pairs:
            p.grad = g if p.grad is None else p.grad + g

    handles = []
    for part, optimizer in optimizers(model.policy).items():
        params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]

        def pre_step(_opt: Any, *_: Any, part: str = part, params: list[Any] = params) -> None:
            with watch("retention"):
                add_extra_grad(part, params)

        handles.append(optimizer.register_step_pre_hook(pre_step))
    return handles
