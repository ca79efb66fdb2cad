"""Retention strategies: the hooks a training loop calls, so strategies never touch the loop.

A strategy sees the algorithm at each task's start and end, every observation the agent
collects (:meth:`Strategy.observe`), and may add a loss to every gradient step of each of the
algorithm's optimizers (:meth:`Strategy.extra_loss`; one ``"policy"`` optimizer for PPO, A2C,
MaskablePPO and DQN, ``"actor"`` and ``"critic"`` for SAC and TD3), which
:func:`nb2_agents.sb3.extra_loss.install_extra_loss` hooks into SB3's optimizer steps.

``none`` is plain fine-tuning; :mod:`.strategy` registers ``ewc``, ``distill`` and ``nb2``. Names
combine with ``+`` (``ewc+distill``). The curriculum loop (:mod:`nb2_agents.curriculum`) and
kickstarting distillation (:mod:`nb2_agents.distill`) build on this module; it depends on neither.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm

from nb2_agents.errors import UsageError


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

    def load(self, folder: Path, model: BaseAlgorithm, trust_pickle: bool = False) -> None:
        """Restore what :meth:`save` wrote; ``model`` is set up already. Nothing is unpickled
        unless ``trust_pickle`` (:mod:`nb2_agents.safe_files`)."""

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
"""By name; ``ewc``, ``distill``, ``nb2`` and their combinations are registered by
:mod:`.strategy`, which the package imports first: importing this module imports the package."""


def register_strategy(name: str, factory: Callable[..., Strategy]) -> None:
    STRATEGIES[name] = factory


def check_strategy(name: str) -> None:
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
