"""A model's observation normalisation (``normalize``) inside its exported graph.

A model trained with ``normalize`` acts on normalised observations, ``clip((obs - mean) /
sqrt(var + eps), -clip_obs, clip_obs)`` with the statistics saved in its zip
(:mod:`nb2_agents.normalize`). The exported file takes raw observations, as the env gives them,
so the transform runs inside the graph: one row of statistics for a single-env model; for a
curriculum model one row per task id (read from the ``task_id`` input), identity for tasks
that were not normalised. Rewards play no part in acting, so their statistics are not exported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from nb2_agents.curriculum.adapter import OBS_KEY
from nb2_agents.errors import UsageError
from nb2_agents.nn.tokenizer import TASK_KEY
from nb2_agents.normalize import RunningStats, read_stats, stats_for

NO_CLIP = 3.0e38
"""The clip bound of a task whose observations are not normalised (float32's largest is 3.4e38)."""


class ObsNormalizer(nn.Module):
    """``clip((x - mean[t]) * scale[t], -clip[t], clip[t])`` with ``t`` the task id (0 without one)."""

    mean: torch.Tensor  # (T, D) buffers
    scale: torch.Tensor  # (T, D)
    clip: torch.Tensor  # (T, 1)

    def __init__(self, rows: list[RunningStats | None], width: int) -> None:
        super().__init__()
        mean = np.zeros((len(rows), width), np.float32)
        scale = np.ones((len(rows), width), np.float32)
        clip = np.full((len(rows), 1), NO_CLIP, np.float32)
        for t, stats in enumerate(rows):
            if stats is None or not stats.config.norm_obs:
                continue
            n = int(np.prod(stats.shape))  # a padded curriculum observation: the task's own first
            mean[t, :n] = stats.obs_rms.mean.reshape(-1)
            scale[t, :n] = 1.0 / np.sqrt(stats.obs_rms.var.reshape(-1) + stats.config.epsilon)
            clip[t] = stats.config.clip_obs
        self.register_buffer("mean", torch.from_numpy(mean), persistent=False)
        self.register_buffer("scale", torch.from_numpy(scale), persistent=False)
        self.register_buffer("clip", torch.from_numpy(clip), persistent=False)

    def forward(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1).float()  # (B, D)
        no_task = torch.zeros_like(flat[:, 0], dtype=torch.long)  # (B,)
        t = no_task if task is None else task.reshape(-1).long()  # (B,)
        clip = self.clip[t]  # (B, 1)
        y = (flat - self.mean[t]) * self.scale[t]  # (B, D)
        return torch.minimum(torch.maximum(y, -clip), clip).view(x.shape)  # (B, *obs shape)


def normalizer_for(path: Path, meta: dict[str, Any], space: spaces.Space) -> ObsNormalizer | None:
    """The graph's normaliser for the model zip at ``path`` (None when it has no statistics)."""
    stats = read_stats(path)
    if not stats:
        return None
    if not isinstance(space, spaces.Dict):
        env = str(meta.get("env"))
        row = stats_for(stats, env, path)
        return ObsNormalizer([row], int(np.prod(space.shape or ())))
    names = meta.get("tasks")
    task_space = space.spaces.get(TASK_KEY)
    if not isinstance(names, list) or not isinstance(task_space, spaces.Discrete) or not meta.get("task_ids"):
        raise UsageError(
            f"{path}: its tasks' observations were normalised, each with its own statistics, but the "
            "model does not see task ids (or predates nb2 saving its task names), so an exported "
            "graph could not tell which statistics to apply. Train it with task ids (--task-ids)"
        )
    rows = [stats.get(names[t]) if t < len(names) else None for t in range(int(task_space.n))]
    return ObsNormalizer(rows, int(np.prod(space.spaces[OBS_KEY].shape or ())))
