"""Evaluate one agent on every task of a curriculum, during training and at each task's end.

Each task gets its own vectorised evaluation env (``min(eval_episodes, 10)`` copies, so
episodes run side by side in one batch), built once and reused: SB3's ``evaluate_policy``
resets it at every call. Scores are normalised by the task's spec (success rate or
``(R - random) / (reference - random)``, clipped to [0, 1]).

:class:`CurriculumCallback` runs the evaluations at scheduled env steps and logs
``curriculum/<task>/eval_score`` (and ``mean_return``, ``success_rate``),
``curriculum/current_task`` and ``curriculum/average_score`` to TensorBoard.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecTransposeImage

from nb2_agents.checkpoint.episodes import EpisodeRecorder
from nb2_agents.curriculum.adapter import CommonSpaces, TaskAdapter
from nb2_agents.curriculum.spec import TaskSpec
from nb2_agents.evaluation import EVAL_SEED_OFFSET, run_episodes
from nb2_agents.memory.wrapper import MemoryWindow, needs_transpose
from nb2_agents.normalize import NormalizeConfig, NormalizeWrapper, RunningStats, check_space
from nb2_agents.progress import Mode, Progress
from nb2_agents.stopwatch import Stopwatch

CURVE_FIELDS = ("seed", "step", "current_task", "task", "mean_return", "std_return", "success_rate", "score")
MAX_EVAL_ENVS = 10


def task_stats(tasks: Sequence[TaskSpec], common: CommonSpaces, gamma: float) -> dict[int, RunningStats]:
    """For each task that normalises (by index), fresh statistics that all its envs will share."""
    return {
        i: RunningStats(config, common.task_observation_spaces[i].shape or (), gamma)
        for i, task in enumerate(tasks)
        if (config := task.normalize_config) is not None
    }


def normalized(
    task: TaskSpec, env: gym.Env, stats: RunningStats | None = None, training: bool = False
) -> gym.Env:
    """``env`` with ``task``'s normalisation, if it has one, on ``stats`` (default: fresh ones,
    enough to read the spaces); ``training`` updates the statistics and scales the rewards."""
    config = task.normalize_config
    if config is None:
        return env
    check_space(env.observation_space, f"task {task.name!r}: normalize")
    return NormalizeWrapper(env, stats or _fresh_stats(config, env.observation_space), training)


def _fresh_stats(config: NormalizeConfig, space: spaces.Space) -> RunningStats:
    """Statistics nothing has updated yet (gamma only matters to training envs, which get theirs)."""
    return RunningStats(config, space.shape or (), 0.99)


def task_env_fns(
    task: TaskSpec,
    index: int,
    common: CommonSpaces,
    algo: str,
    n_envs: int,
    seed: int,
    monitor_dir: Path | None = None,
    task_ids: bool = True,
    stats: RunningStats | None = None,
    training: bool = False,
    record: bool = False,
    append: bool = False,
) -> list[Callable[[], gym.Env]]:
    """Constructors of ``n_envs`` copies of ``task`` in the common spaces: Monitor innermost
    (it logs the task's own rewards), then NB2's wrappers, the task's, its normalisation on the
    shared ``stats`` (updated when ``training``) and the adapter; with ``record``, the episode
    recorder of resumable checkpoints outermost. ``append``: Monitor CSVs are continued (a
    resumed run)."""
    env_spec = task.env_spec(algo)
    if monitor_dir is not None:
        monitor_dir.mkdir(parents=True, exist_ok=True)
    config = task.normalize_config
    if stats is None and config is not None:  # one set of statistics for all copies
        stats = _fresh_stats(config, common.task_observation_spaces[index])

    def make(rank: int) -> Callable[[], gym.Env]:
        def init() -> gym.Env:
            env = gym.make(env_spec.env_id, **env_spec.gym_kwargs)
            filename = None if monitor_dir is None else str(monitor_dir / str(rank))
            env = Monitor(env, filename=filename, override_existing=not append)
            env = normalized(task, env_spec.wrap(env), stats, training)
            env = TaskAdapter(env, common, index, index if task_ids else 0)
            if record:
                env = EpisodeRecorder(env)
            env.action_space.seed(seed + rank)
            return env

        return init

    return [make(rank) for rank in range(n_envs)]


def vec_env(fns: Sequence[Callable[[], gym.Env]], seed: int, memory: int | None = None) -> VecEnv:
    """DummyVecEnv over ``fns``, seeded ``seed + i``, with images transposed as SB3 would, and each
    env's last ``memory`` steps in its observation (``MemoryWindow``) when ``memory`` is set."""
    vec: VecEnv = DummyVecEnv(list(fns))
    vec.seed(seed)
    vec = VecTransposeImage(vec) if needs_transpose(vec.observation_space) else vec
    return vec if memory is None else MemoryWindow(vec, memory)


def task_vec_env(
    task: TaskSpec,
    index: int,
    common: CommonSpaces,
    algo: str,
    n_envs: int,
    seed: int,
    monitor_dir: Path | None = None,
    task_ids: bool = True,
    stats: RunningStats | None = None,
    training: bool = False,
    record: bool = False,
    append: bool = False,
) -> VecEnv:
    """``n_envs`` copies of ``task`` in the curriculum's common spaces."""
    fns = task_env_fns(task, index, common, algo, n_envs, seed, monitor_dir, task_ids, stats, training,
                       record, append)  # fmt: skip
    return vec_env(fns, seed, common.memory)


@dataclass
class TaskEval:
    """One task's evaluation at one point."""

    mean_return: float
    std_return: float
    success_rate: float | None
    score: float


def evaluate_task(
    model: BaseAlgorithm, task: TaskSpec, env: VecEnv, episodes: int, deterministic: bool
) -> TaskEval:
    """``model`` on ``episodes`` episodes of ``env`` (copies of ``task``), scored by the task's spec."""
    returns, _, successes = run_episodes(
        model, env, episodes, deterministic, task.success_key or "is_success"
    )
    rate = float(np.mean(successes)) if successes else None
    mean = float(np.mean(returns))
    return TaskEval(mean, float(np.std(returns)), rate, task.score(mean, rate))


PROBE_SEED_OFFSET = 50_000
"""A retention strategy's probes of task ``i`` (which start a new task from) run on env seeds
``seed + 50000 + 1000 i``: neither the training (``seed + rank``) nor the evaluation
(``seed + 10000 + 1000 i``) envs' episodes."""


def task_probe(
    tasks: Sequence[TaskSpec],
    common: CommonSpaces,
    algo: str,
    seed: int,
    show_task_ids: bool = True,
    stats: Mapping[int, RunningStats] | None = None,
) -> Callable[[int, int, BaseAlgorithm], float]:
    """A strategy's probe, ``probe(task_index, episodes, agent)``: the agent's score on a task, on
    env seeds neither training nor evaluation use (:data:`PROBE_SEED_OFFSET`), with actions
    sampled as in training's rollouts.

    Sampled, because a probe judges where training would start from: a policy softened to near
    uniform and the same policy at full confidence take the same greedy actions, so a greedy
    probe would score a start that explores at random as high as a competent one."""

    def probe(task_index: int, episodes: int, agent: BaseAlgorithm) -> float:
        task = tasks[task_index]
        env_seed = seed + PROBE_SEED_OFFSET + 1000 * task_index
        env = task_vec_env(task, task_index, common, algo, min(episodes, MAX_EVAL_ENVS), env_seed,
                           None, show_task_ids, (stats or {}).get(task_index))  # fmt: skip
        try:
            return evaluate_task(agent, task, env, episodes, deterministic=False).score
        finally:
            env.close()

    return probe


class Evaluator:
    """Evaluation envs for every task; ``evaluate(model)`` scores the model on each."""

    def __init__(
        self,
        tasks: Sequence[TaskSpec],
        common: CommonSpaces,
        algo: str,
        seed: int,
        deterministic: Sequence[bool],
        task_ids: Sequence[int] | None = None,
        show_task_ids: bool = True,
        stats: Mapping[int, RunningStats] | None = None,
        record: bool = False,
    ) -> None:
        """``stats``: by task id, the statistics its training envs update (read, not updated, here);
        ``record``: each env's episode is recorded, for resumable checkpoints."""
        self.tasks = list(tasks)
        self.deterministic = list(deterministic)
        ids = list(range(len(tasks))) if task_ids is None else list(task_ids)
        self.envs = [
            task_vec_env(
                task,
                ids[i],
                common,
                algo,
                min(task.eval_episodes, MAX_EVAL_ENVS),
                seed + EVAL_SEED_OFFSET + 1000 * ids[i],
                task_ids=show_task_ids,
                stats=(stats or {}).get(ids[i]),
                record=record,
            )
            for i, task in enumerate(self.tasks)
        ]

    def evaluate(self, model: BaseAlgorithm) -> list[TaskEval]:
        return [
            evaluate_task(model, task, env, task.eval_episodes, deterministic)
            for task, env, deterministic in zip(self.tasks, self.envs, self.deterministic, strict=True)
        ]

    def close(self) -> None:
        for env in self.envs:
            env.close()


class CurriculumCallback(BaseCallback):
    """Runs :class:`Evaluator` when training crosses each step in ``points``; logs and records.

    ``on_eval(step, results)`` receives every evaluation (also the ones :meth:`evaluate_now`
    runs outside ``learn``).
    """

    def __init__(
        self,
        evaluator: Evaluator,
        on_eval: Callable[[int, list[TaskEval]], None],
        current_task: Callable[[], int],
        total_steps: int,
        progress: Mode,
        extra_log: Callable[[], dict[str, float]] | None = None,
        label: str = "",
        watch: Stopwatch | None = None,
    ) -> None:
        """``watch`` counts every evaluation's time (with its logging and ``on_eval``) as ``evaluation``."""
        super().__init__()
        self.watch = watch if watch is not None else Stopwatch()
        self.evaluator = evaluator
        self.on_eval = on_eval
        self.current_task = current_task
        self.extra_log = extra_log
        self.points: list[int] = []
        self.progress = Progress(total_steps, label, progress)

    def schedule(self, points: Sequence[int]) -> None:
        """Evaluate when ``num_timesteps`` first reaches each of ``points`` during ``learn``."""
        self.points = sorted(points)

    def state_dict(self) -> dict[str, Any]:
        """What a resumable checkpoint keeps: the evaluation steps still to come."""
        return {"points": list(self.points)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.points = [int(p) for p in state["points"]]

    def _on_step(self) -> bool:
        step = self.model.num_timesteps
        self.progress.update(step)
        if self.points and step >= self.points[0]:
            while self.points and step >= self.points[0]:
                self.points.pop(0)
            self.evaluate_now(self.model)
        return True

    def evaluate_now(self, model: BaseAlgorithm) -> list[TaskEval]:
        with self.watch("evaluation"):
            return self._evaluate_now(model)

    def _evaluate_now(self, model: BaseAlgorithm) -> list[TaskEval]:
        results = self.evaluator.evaluate(model)
        step = int(model.num_timesteps)
        logger = model.logger
        for task, result in zip(self.evaluator.tasks, results, strict=True):
            logger.record(f"curriculum/{task.name}/eval_score", result.score)
            logger.record(f"curriculum/{task.name}/mean_return", result.mean_return)
            if result.success_rate is not None:
                logger.record(f"curriculum/{task.name}/success_rate", result.success_rate)
        logger.record("curriculum/current_task", self.current_task())
        logger.record("curriculum/average_score", float(np.mean([r.score for r in results])))
        for key, value in (self.extra_log() if self.extra_log else {}).items():
            logger.record(key, value)
        logger.dump(step)
        self.progress.set_postfix(
            f"task {self.current_task()} avg score {np.mean([r.score for r in results]):.2f}"
        )
        self.on_eval(step, results)
        return results

    def close(self) -> None:
        self.progress.close()


def evaluation_points(start: int, length: int, n: int) -> list[int]:
    """``n - 1`` evenly spaced steps inside ``(start, start + length)``; the end is evaluated apart."""
    return [start + math.ceil(length * k / n) for k in range(1, n)]


def curve_row(seed: int, step: int, current: int, task: str, result: TaskEval) -> dict[str, Any]:
    return {
        "seed": seed,
        "step": step,
        "current_task": current,
        "task": task,
        "mean_return": round(result.mean_return, 4),
        "std_return": round(result.std_return, 4),
        "success_rate": "" if result.success_rate is None else round(result.success_rate, 4),
        "score": round(result.score, 4),
    }
