"""Retention strategies: hooks the curriculum loop calls, so strategies never touch the loop.

A strategy sees the algorithm at each task's start and end, every observation the agent
collects (:meth:`Strategy.observe`), and may add a loss to every gradient step of each of the
algorithm's optimizers (:meth:`Strategy.extra_loss`; one ``"policy"`` optimizer for PPO, A2C,
MaskablePPO and DQN, ``"actor"`` and ``"critic"`` for SAC and TD3).

The seam into SB3 is an optimizer step pre-hook, so SB3's own ``train()`` runs unchanged, for
on-policy and off-policy algorithms alike: when SB3 calls ``optimizer.step()``, the hook
back-propagates the extra loss into the gradients SB3 just computed, and the step applies
both. SB3 has already clipped its own gradients by then, so a strategy scales its loss itself.
(An auxiliary phase after each update, as in Phasic Policy Gradient, would need a hook after
``train()``, which SB3 does not offer for off-policy algorithms.)

``none`` is plain fine-tuning; :mod:`nb2_agents.retention` registers ``ewc``, ``distill`` and
``nb2``. Names combine with ``+`` (``ewc+distill``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm

from nb2_agents.errors import UsageError
from nb2_agents.sb3.algos import optimizers
from nb2_agents.stopwatch import Stopwatch


class Strategy:
    """Base class and the ``none`` strategy: no retention."""

    name = "none"
    uses_task_ids = False
    """Whether the agent is told which task it is on (NB2's task embedding and head gates);
    otherwise every task reads task id 0, and the agent must tell tasks apart by what it sees."""

    def setup(self, model: BaseAlgorithm, context: Any) -> None:
        """Called once, before the first task, with the model and the run's context."""

    def observe(self, task: int, obs: Any) -> None:
        """Called at each env step with the batch of new observations (one per env)."""

    def on_task_start(self, task: int, model: BaseAlgorithm) -> None:
        """Called before training task ``task`` (its env is set on ``model`` already)."""

    def on_task_end(self, task: int, model: BaseAlgorithm) -> None:
        """Called after training task ``task``, before its end-of-task evaluation."""

    def extra_loss(self, model: BaseAlgorithm, part: str) -> torch.Tensor | None:
        """A loss added at each step of optimizer ``part``, or None."""
        return None

    def log(self) -> dict[str, float]:
        """``retention/`` scalars to log at each evaluation."""
        return {}

    def save(self, folder: Path) -> None:
        """Write the strategy's state (replay memory, snapshots, Fisher) into ``folder``."""

    def load(self, folder: Path, model: BaseAlgorithm) -> None:
        """Restore what :meth:`save` wrote; ``model`` is set up already."""

    def checkpoint_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
        """For a resumable checkpoint: the strategy's state as (JSON part, arrays, tensors), none
        of which needs unpickling."""
        return {}, {}, {}

    def load_checkpoint_state(
        self,
        info: dict[str, Any],
        arrays: dict[str, np.ndarray],
        tensors: dict[str, Any],
        model: BaseAlgorithm,
    ) -> None:
        """Put back what :meth:`checkpoint_state` captured; :meth:`setup` has run already."""


STRATEGIES: dict[str, Callable[..., Strategy]] = {"none": Strategy}


def register_strategy(name: str, factory: Callable[..., Strategy]) -> None:
    STRATEGIES[name] = factory


def _register_builtins() -> None:
    import nb2_agents.retention  # noqa: F401  (registers ewc, distill, nb2; imported late: it imports this module)


def check_strategy(name: str) -> None:
    _register_builtins()
    parts = name.split("+")
    unknown = [p for p in parts if p not in STRATEGIES]
    if unknown or not parts:
        raise UsageError(
            f"unknown retention strategy {name!r}; valid: {', '.join(sorted(STRATEGIES))}, "
            "or several joined with + (e.g. ewc+distill)"
        )


def make_strategy(name: str, options: dict[str, Any] | None = None) -> Strategy:
    """The strategy ``name`` (``a+b`` combines), with ``options`` for its settings."""
    check_strategy(name)
    parts = name.split("+")
    factory = next((f for key, f in STRATEGIES.items() if set(key.split("+")) == set(parts)), None)
    if factory is None:
        raise UsageError(
            f"retention strategies {' and '.join(parts)} cannot be combined; valid: {', '.join(STRATEGIES)}"
        )
    if not options:
        return factory()
    try:
        return factory(**options)
    except TypeError:
        raise UsageError(f"--retention {name} takes no options; got {sorted(options)}") from None


def install_extra_loss(model: BaseAlgorithm, strategy: Strategy, watch: Stopwatch | None = None) -> list[Any]:
    """Hook ``strategy.extra_loss`` into each optimizer's steps; returns the hook handles. ``watch``
    counts the hooks' time (the loss, its gradient and the clipping) as ``retention``.

    The extra loss's gradient is clipped to the algorithm's ``max_grad_norm`` (where it has one)
    on its own, then added to the gradient SB3 computed and clipped: otherwise an unclipped
    retention gradient would outweigh the clipped RL gradient and stop the new task's learning.
    """
    max_norm = getattr(model, "max_grad_norm", None)
    watch = watch if watch is not None else Stopwatch()

    def add_extra_grad(part: str, params: list[Any]) -> None:
        loss = strategy.extra_loss(model, part)
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
