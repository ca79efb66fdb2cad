"""The teachers' labels for the states the student visited: one teacher on one env, or one teacher
per task of a curriculum, read through the curriculum's common interface.

In a curriculum the student sees each task through :class:`~nb2_agents.curriculum.adapter.TaskAdapter`:
a Dict of ``obs`` (zero-padded to the largest task), ``obs_mask``, ``task_id`` and, where tasks
have fewer actions, ``action_mask``. Each teacher must see its own task's observation, so
:class:`Labeler` routes each row to its task's teacher by ``task_id`` (the student always sees
task ids here), cuts the padding off, and maps the teacher's targets into the shared action
space: probabilities padded with zeros for the actions the task lacks (which the student
masks), Box actions rescaled to the shared ``Box(-1, 1)`` with the unused dimensions masked out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer

from nb2_agents.curriculum.adapter import OBS_KEY, CommonSpaces
from nb2_agents.distill.losses import Targets
from nb2_agents.distill.policies import Obs, Outputs
from nb2_agents.distill.teachers import Teacher
from nb2_agents.nn.tokenizer import TASK_KEY


def rollout_observations(buffer: RolloutBuffer, device: torch.device) -> Obs:
    """Every observation of the last rollout as one batch (N = n_steps × n_envs) of tensors."""

    def flat(array: np.ndarray) -> torch.Tensor:
        rows = array if buffer.generator_ready else array.reshape(-1, *array.shape[2:])
        return torch.as_tensor(rows, device=device)

    obs: Any = buffer.observations
    return {k: flat(v) for k, v in obs.items()} if isinstance(obs, dict) else flat(obs)


def _half_range(space: spaces.Box, device: torch.device) -> torch.Tensor:
    half = (space.high.astype(np.float64) - space.low.astype(np.float64)) / 2
    half = np.where(np.isfinite(half) & (half > 0), half, 1.0)
    return torch.as_tensor(half, dtype=torch.float32, device=device)


def _targets(out: Outputs, action_space: spaces.Space, device: torch.device) -> Targets:
    """One teacher's outputs as :class:`Targets` in its own action space."""
    if out.log_probs is not None:
        return Targets(probs=out.log_probs.exp().to(device), value=_to(out.value, device))
    assert out.mean is not None and isinstance(action_space, spaces.Box)
    mean = out.mean.reshape(out.mean.shape[0], -1).to(device)  # (B, d)
    stochastic = torch.full((mean.shape[0],), out.log_std is not None, device=device)
    log_std = (
        out.log_std.reshape(mean.shape).to(device) if out.log_std is not None else torch.zeros_like(mean)
    )
    half = _half_range(action_space, device).reshape(1, -1).expand_as(mean)
    return Targets(
        mean=mean,
        log_std=log_std,
        stochastic=stochastic,
        half_range=half,
        dim_mask=torch.ones_like(mean),
        value=_to(out.value, device),
    )


def _to(tensor: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if tensor is None else tensor.to(device)


def _to_common(targets: Targets, task_space: spaces.Space, common: CommonSpaces) -> Targets:
    """A task's targets in the curriculum's shared action space."""
    shared = common.action_space
    if targets.probs is not None:
        assert isinstance(shared, spaces.Discrete)
        missing = int(shared.n) - targets.probs.shape[1]  # actions the task lacks: probability 0
        return Targets(probs=F.pad(targets.probs, (0, missing)), value=targets.value)
    if not common.rescaled:
        return targets
    assert isinstance(task_space, spaces.Box) and isinstance(shared, spaces.Box)
    assert targets.mean is not None and targets.log_std is not None and targets.dim_mask is not None
    device = targets.mean.device
    low = torch.as_tensor(task_space.low, dtype=torch.float32, device=device)
    width = torch.as_tensor(task_space.high, dtype=torch.float32, device=device) - low
    pad = (0, int(np.prod(shared.shape)) - targets.mean.shape[1])  # dimensions the task does not use
    mean = F.pad(2 * (targets.mean - low) / width - 1, pad)  # task bounds → [-1, 1], as TaskAdapter inverts
    log_std = F.pad(targets.log_std + torch.log(2 / width), pad)
    return Targets(
        mean=mean,
        log_std=log_std,
        stochastic=targets.stochastic,
        half_range=torch.ones_like(mean),
        dim_mask=F.pad(targets.dim_mask, pad),
        value=targets.value,
    )


def _scatter(parts: Sequence[tuple[torch.Tensor, Targets]], size: int) -> Targets:
    """Rows of several tasks' targets put back in the batch's order."""
    first = parts[0][1]
    out: dict[str, torch.Tensor | None] = {}
    for name in ("probs", "mean", "log_std", "stochastic", "half_range", "dim_mask", "value"):
        template = getattr(first, name)
        if template is None or any(getattr(t, name) is None for _, t in parts):
            out[name] = None
            continue
        full = template.new_zeros((size, *template.shape[1:]))
        for index, targets in parts:
            full[index] = getattr(targets, name)
        out[name] = full
    return Targets(**out)


class Labeler:
    """Teacher targets for a batch of the student's observations.

    :param teachers: one teacher, or one per task of ``common``'s curriculum (in task order)
    :param temperature: τ of ``softmax(logits / τ)`` and ``softmax(Q / τ)``
    :param common: the curriculum's shared spaces; None for a single env
    """

    def __init__(
        self,
        teachers: Sequence[Teacher],
        temperature: float,
        device: torch.device,
        common: CommonSpaces | None = None,
    ) -> None:
        if common is None and len(teachers) != 1:
            raise ValueError(f"one env takes one teacher, got {len(teachers)}")
        self.teachers, self.temperature, self.device, self.common = (
            list(teachers),
            temperature,
            device,
            common,
        )

    def __call__(self, obs: Obs) -> Targets:
        if self.common is None:
            teacher = self.teachers[0]
            return _targets(teacher.outputs(obs, self.temperature), teacher.action_space, self.device)
        task_ids = obs[TASK_KEY].reshape(-1).long()
        parts = []
        for task, teacher in enumerate(self.teachers):
            index = (task_ids == task).nonzero().reshape(-1)
            if index.numel() == 0:
                continue
            raw = self._task_obs(obs, index, task)
            targets = _targets(teacher.outputs(raw, self.temperature), teacher.action_space, self.device)
            parts.append((index, _to_common(targets, teacher.action_space, self.common)))
        return _scatter(parts, int(task_ids.shape[0]))

    def _task_obs(self, obs: dict[str, torch.Tensor], index: torch.Tensor, task: int) -> Obs:
        """Task ``task``'s own observations at rows ``index``, as its teacher was trained on them."""
        assert self.common is not None
        space = self.common.task_observation_spaces[task]
        device = self.teachers[task].device
        if isinstance(space, spaces.Dict):
            return {k: obs[k][index].to(device) for k in space.spaces}
        rows = obs[OBS_KEY][index]
        if self.common.padded:  # the task's scalars come first; the rest is padding
            size = int(np.prod(space.shape or ()))
            rows = rows[:, :size].reshape(len(index), *(space.shape or ()))
        return rows.to(device)
