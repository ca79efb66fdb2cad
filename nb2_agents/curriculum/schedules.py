"""Schedules that restart at each task of a curriculum (learning rate, clip range, entropy).

Models saved before these lived here pickled ``nb2_agents.curriculum.runner._unwrap``, which
the runner still exposes.
"""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from nb2_agents.callbacks import EntCoefScheduleCallback


def _unwrap(base: Any) -> Any:
    return base


class TaskSchedule:
    """An SB3 schedule restarted at each task: progress runs 1 → 0 over the current window.

    A saved model stores the plain schedule (``__reduce__``), not the window or the model.
    """

    def __reduce__(self) -> tuple[Any, tuple[Any]]:
        return _unwrap, (self.base,)

    def __init__(self, base: Any, model: BaseAlgorithm) -> None:
        self.base, self.model = base, model
        self.start, self.length = 0, 1

    def __call__(self, _progress_remaining: float) -> float:
        progress = 1.0 - (self.model.num_timesteps - self.start) / max(self.length, 1)
        return float(self.base(min(1.0, max(0.0, progress))))


def task_schedules(model: BaseAlgorithm, callbacks: list[BaseCallback]) -> list[TaskSchedule]:
    """Wrap ``model``'s learning-rate and clip-range schedules and the callbacks' entropy
    schedule; set each one's ``start`` and ``length`` at a task's start."""
    schedules = []
    model.lr_schedule = TaskSchedule(model.lr_schedule, model)
    schedules.append(model.lr_schedule)
    for name in ("clip_range", "clip_range_vf"):
        value = getattr(model, name, None)
        if callable(value):
            setattr(model, name, TaskSchedule(value, model))
            schedules.append(getattr(model, name))
    for cb in callbacks:
        if isinstance(cb, EntCoefScheduleCallback):
            cb.schedule = TaskSchedule(cb.schedule, model)
            schedules.append(cb.schedule)
    return schedules
