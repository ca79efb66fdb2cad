"""Retention strategies: hooks the curriculum loop calls, so strategies never touch the loop.

A strategy sees the algorithm at each task's start and end, and may add a loss to every
gradient step of the policy's optimizer (:meth:`Strategy.extra_loss`). The runner installs
that loss through an optimizer step pre-hook, so SB3's own ``train()`` runs unchanged: when
SB3 calls ``optimizer.step()``, the hook back-propagates the extra loss into the gradients SB3
just computed, and the step applies both. (SB3 has already clipped its own gradients by then;
a strategy scales its loss itself.)

This issue ships ``none`` (plain fine-tuning). Register others with :func:`register_strategy`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm

from nb2_agents.errors import UsageError


class Strategy:
    """Base class and the ``none`` strategy: no retention."""

    name = "none"

    def setup(self, model: BaseAlgorithm, context: Any) -> None:
        """Called once, before the first task, with the model and the run's context."""

    def on_task_start(self, task: int, model: BaseAlgorithm) -> None:
        """Called before training task ``task`` (its env is set on ``model`` already)."""

    def on_task_end(self, task: int, model: BaseAlgorithm) -> None:
        """Called after training task ``task``, before its end-of-task evaluation."""

    def extra_loss(self, model: BaseAlgorithm) -> torch.Tensor | None:
        """A loss added at each of the policy optimizer's steps, or None."""
        return None

    def log(self) -> dict[str, float]:
        """``retention/`` scalars to log at each evaluation."""
        return {}


STRATEGIES: dict[str, Callable[[], Strategy]] = {"none": Strategy}


def register_strategy(name: str, factory: Callable[[], Strategy]) -> None:
    STRATEGIES[name] = factory


def make_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise UsageError(f"unknown retention strategy {name!r}; valid: {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name]()


def install_extra_loss(model: BaseAlgorithm, strategy: Strategy) -> Any:
    """Hook ``strategy.extra_loss`` into the policy optimizer's steps; returns the hook handle."""

    def pre_step(optimizer: torch.optim.Optimizer, *_: Any) -> None:
        loss = strategy.extra_loss(model)
        if loss is not None:
            loss.backward()

    return model.policy.optimizer.register_step_pre_hook(pre_step)
