"""``nb2 evaluate`` on a curriculum's model: every task, or one by name, in the curriculum's own
envs (its common spaces, task ids and each task's saved normalisation).

A curriculum model's ``nb2.json`` records the curriculum (a built-in name, and the YAML file of one
that is not built in) and its tasks. By default each task is evaluated as the curriculum's own
evaluations are: its ``eval_episodes`` episodes, from env seeds ``seed + 10000 + 1000 i``, with
greedy actions except on MiniGrid.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from stable_baselines3.common.utils import set_random_seed

from nb2_agents.curriculum.adapter import CommonSpaces
from nb2_agents.curriculum.evaluator import MAX_EVAL_ENVS, task_vec_env
from nb2_agents.curriculum.runner import deterministic_eval, probe_spaces
from nb2_agents.curriculum.spec import CurriculumSpec, TaskSpec, load_curriculum
from nb2_agents.errors import UsageError
from nb2_agents.evaluation import EVAL_SEED_OFFSET, LoadedModel, load_model, run_episodes
from nb2_agents.memory.layout import MemoryLayout
from nb2_agents.normalize import RunningStats, read_stats
from nb2_agents.runs import CONFIG_NAME, MODEL_NAME, read_meta


@dataclass
class TaskResult:
    """One task's evaluation of a curriculum model (``nb2 evaluate --json`` prints a list of them)."""

    task: str
    env: str
    score: float
    """The task's normalised score (``random_return`` → 0, ``reference_return`` → 1)."""
    mean_return: float
    std_return: float
    episodes: int
    success_rate: float | None
    seed: int
    deterministic: bool
    model: str
    steps_trained: int
    returns: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        where = self.task if self.task == self.env else f"{self.task} ({self.env})"
        text = (
            f"{where}: score {self.score:.2f}, return {self.mean_return:.2f} ± "
            f"{self.std_return:.2f} over {self.episodes} episodes "
            f"({'deterministic' if self.deterministic else 'stochastic'}, seed {self.seed})"
        )
        return text + (f", success {100 * self.success_rate:.0f}%" if self.success_rate is not None else "")


def is_curriculum_model(meta: dict[str, Any]) -> bool:
    return bool(meta.get("curriculum")) and isinstance(meta.get("tasks"), list)


def is_curriculum_path(path: str | Path) -> bool:
    """Whether ``path`` is a curriculum's model, seed folder or run folder (``nb2 evaluate`` routes
    it here)."""
    if isinstance(path, str) and path.startswith("zoo:"):
        return False
    models = curriculum_models(path)
    try:
        return bool(models) and is_curriculum_model(read_meta(models[0]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return False  # not a readable zip: the plain path reports it


def curriculum_models(path: str | Path) -> list[Path]:
    """The model zips at ``path``: itself, a seed folder's ``model.zip``, or every seed's of a
    curriculum run folder (``s0/model.zip``, ``s1/model.zip``, ...); [] where there is none."""
    path = Path(path)
    if path.is_file():
        return [path]
    if (path / MODEL_NAME).is_file():
        return [path / MODEL_NAME]
    seeds = [p for p in path.glob(f"s*/{MODEL_NAME}") if p.parent.name[1:].isdigit()]
    return sorted(seeds, key=lambda p: int(p.parent.name[1:]))


def _curriculum_of(meta: dict[str, Any], model: Path) -> CurriculumSpec:
    """The curriculum a model was trained on: the file recorded, else the name (a built-in), else
    the run folder's ``config.yaml``."""
    tried = []
    candidates = [meta.get("curriculum_file"), meta.get("curriculum")]
    for folder in (model.parent, model.parent.parent):
        config = folder / CONFIG_NAME
        if config.is_file():
            try:
                candidates.append(yaml.safe_load(config.read_text()).get("curriculum"))
            except (yaml.YAMLError, AttributeError):
                pass
    for candidate in dict.fromkeys(c for c in candidates if c):
        try:
            return load_curriculum(candidate)
        except UsageError:
            tried.append(str(candidate))
    raise UsageError(
        f"{model}: cannot find the curriculum it was trained on (tried {', '.join(tried) or 'nothing'}); "
        "it must be a built-in curriculum or its YAML file must still exist"
    )


def _select(tasks: list[TaskSpec], names: list[str], task: str | None, model: Path) -> list[int]:
    if task is None:
        return list(range(len(names)))
    by_name = [i for i, name in enumerate(names) if name == task]
    by_env = [i for i, t in enumerate(tasks) if t.env_id == task]
    found = by_name or by_env
    if len(found) != 1:
        why = "names more than one task" if found else "is not one of its tasks"
        raise UsageError(f"--env {task} {why} ({model}); its tasks: {', '.join(names)}")
    return found


def evaluate_curriculum(
    path: str | Path,
    task: str | None = None,
    episodes: int | None = None,
    deterministic: bool | None = None,
    seed: int | None = None,
    device: str = "auto",
    trust_pickle: bool = False,
) -> list[TaskResult]:
    """Evaluate a curriculum model (module docstring) on every task, or on ``task`` (a task's name
    or env id). A curriculum run folder evaluates each seed's model in turn.

    :param episodes: per task; default: each task's ``eval_episodes``
    :param seed: default: the run's seed, so the envs are its own evaluations' (module docstring)
    :param trust_pickle: load a model zip that needs unpickling (``--trust-pickle``)
    """
    if episodes is not None and episodes < 1:
        raise UsageError(f"--episodes must be a positive integer, got {episodes}")
    models = curriculum_models(path)
    if not models:
        raise UsageError(f"{path}: no model.zip here, nor in seed folders s0/, s1/, ...")
    return [
        r
        for model in models
        for r in _evaluate_one(model, task, episodes, deterministic, seed, device, trust_pickle)
    ]


def _evaluate_one(
    path: Path,
    task: str | None,
    episodes: int | None,
    deterministic: bool | None,
    seed: int | None,
    device: str,
    trust_pickle: bool,
) -> list[TaskResult]:
    meta = read_meta(path)
    if not is_curriculum_model(meta):
        raise UsageError(
            f"{path} was not saved by nb2 curriculum (its nb2.json names no curriculum, no tasks)"
        )
    spec = _curriculum_of(meta, path)
    names = [str(n) for n in meta["tasks"]]
    if spec.task_names() != names:
        raise UsageError(
            f"{path} was trained on tasks {names}, but curriculum {spec.name} now has {spec.task_names()}"
        )
    loaded = load_model(path, device=device, trust_pickle=trust_pickle)
    stats = read_stats(path)  # by task name: the normalised tasks' statistics
    tasks = tuple(  # a task normalised in training is normalised the same way here, whatever the YAML says
        dataclasses.replace(t, normalize=stats[t.name].config) if t.name in stats else t for t in spec.tasks
    )
    spec = dataclasses.replace(spec, tasks=tasks)
    layout = MemoryLayout.of(loaded.model.observation_space)
    common = probe_spaces(spec, loaded.algo, None if layout is None else layout.k)
    if common.model_observation_space != loaded.model.observation_space:
        raise UsageError(
            f"{path}: curriculum {spec.name}'s spaces {common.model_observation_space} do not match "
            f"the model's {loaded.model.observation_space}"
        )
    base_seed = int(meta.get("seed", 0)) if seed is None else seed
    return [
        _evaluate_task(
            loaded,
            path,
            common,
            tasks[i],
            i,
            bool(meta.get("task_ids")),
            stats.get(tasks[i].name),
            episodes,
            deterministic,
            base_seed,
        )
        for i in _select(list(tasks), names, task, path)
    ]


def _evaluate_task(
    loaded: LoadedModel,
    path: Path,
    common: CommonSpaces,
    task: TaskSpec,
    index: int,
    task_ids: bool,
    stats: RunningStats | None,
    episodes: int | None,
    deterministic: bool | None,
    base_seed: int,
) -> TaskResult:
    n = episodes or task.eval_episodes
    greedy = deterministic_eval(task.env_id) if deterministic is None else deterministic
    env_seed = base_seed + EVAL_SEED_OFFSET + 1000 * index
    env = task_vec_env(task, index, common, loaded.algo, min(n, MAX_EVAL_ENVS), env_seed, task_ids=task_ids,
                       stats=stats)  # fmt: skip
    set_random_seed(env_seed)
    try:
        returns, _, successes = run_episodes(loaded.model, env, n, greedy, task.success_key or "is_success")
    finally:
        env.close()
    rate = float(np.mean(successes)) if successes else None
    mean = float(np.mean(returns))
    return TaskResult(
        task=task.name,
        env=task.env_id,
        score=task.score(mean, rate),
        mean_return=mean,
        std_return=float(np.std(returns)),
        episodes=len(returns),
        success_rate=rate,
        seed=env_seed,
        deterministic=greedy,
        model=str(path),
        steps_trained=int(loaded.model.num_timesteps),
        returns=returns,
    )


def results_json(results: list[TaskResult]) -> str:
    return json.dumps([r.to_dict() for r in results])
