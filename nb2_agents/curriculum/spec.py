"""Curricula as data: a sequence of tasks read from YAML (``envs/<name>.yaml``) and checked there.

A curriculum file::

    name: cartpole-variants          # optional, defaults to the file's stem
    description: ...
    algo: ppo                        # default algorithm of the suite (policies/<algo>.yaml)
    preset: nano                     # NB2 preset
    hyperparams: {n_envs: 8, ...}    # merged over policies/<algo>.yaml's `default` entry
    requires: minigrid               # pip extra: pip install 'nb2-agents[minigrid]'
    trainable_here: true             # false: days on one machine at full budget (nb2 says so)
    tasks:
      - name: CartPole-v1            # optional, defaults to env_id; unique
        env_id: CartPole-v1
        steps: 100k                  # 100000, 1e5, 100k
        env_kwargs: {}               # gym.make keyword arguments
        wrappers: []                 # "module:Class", each applied as Class(env)
        eval_episodes: 10
        random_return: 22.69         # score p = (R - random) / (reference - random), clipped to [0, 1]
        reference_return: 500
        success_key: null            # info key read at episode end; when set, p = success rate

Env ids are Gymnasium ids (imported from their package when needed, see
:mod:`nb2_agents.envs_util`), the ``nb2/`` variants of :mod:`nb2_agents.curriculum.variants`,
or ``metaworld/<task>`` for one Meta-World task (``gym.make("Meta-World/MT1", env_name=<task>)``).

Every bad input raises :class:`~nb2_agents.errors.UsageError` naming the file, the task and
the key, and saying what would be accepted.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

from nb2_agents.counts import parse_steps
from nb2_agents.curriculum.extras import METAWORLD_ID, METAWORLD_PREFIX, WRAPPER_PATH, import_object
from nb2_agents.envs_util import EnvSpec
from nb2_agents.errors import UsageError
from nb2_agents.hyperparams import ALGOS, DATA_DIR, read_yaml, valid_keys
from nb2_agents.nn.config import PRESETS
from nb2_agents.normalize import NormalizeConfig, parse_normalize

BUILTIN_DIR = DATA_DIR / "envs"
"""Where the built-in curricula lie (``envs/`` at the top of the repository)."""

TOP_KEYS = ("name", "description", "algo", "preset", "hyperparams", "requires", "trainable_here", "tasks")
TASK_KEYS = ("name", "env_id", "steps", "env_kwargs", "wrappers", "eval_episodes", "random_return",
             "reference_return", "success_key", "normalize")  # fmt: skip


@dataclass(frozen=True)
class TaskEnvSpec(EnvSpec):
    """:class:`~nb2_agents.envs_util.EnvSpec` plus a task's own wrappers, applied after NB2's.

    ``make_vec`` (Monitor innermost, then NB2's MiniGrid / masking wrappers, then these) and
    ``make`` build the same env.
    """

    wrappers: tuple[str, ...] = ()

    def wrap(self, env: gym.Env) -> gym.Env:
        env = super().wrap(env)
        for path in self.wrappers:
            env = import_object(path)(env)
        return env


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class TaskSpec:
    """One task of a curriculum: the env, its training budget and how its score is normalised."""

    name: str
    env_id: str
    steps: int
    env_kwargs: dict[str, Any] = field(default_factory=dict, hash=False)
    wrappers: tuple[str, ...] = ()
    eval_episodes: int = 10
    random_return: float | None = None
    reference_return: float | None = None
    success_key: str | None = None
    normalize: NormalizeConfig | bool | None = None
    """The task's own ``VecNormalize`` settings (``true`` or a mapping in YAML), ``False`` for
    none, or None: the curriculum's ``hyperparams.normalize`` (see :meth:`CurriculumSpec.resolved`)."""

    def __post_init__(self) -> None:
        label = f"[task {self.name!r}]"
        if not isinstance(self.name, str) or not self.name:
            raise UsageError(f"task name: expected a non-empty string, got {self.name!r}")
        if not isinstance(self.env_id, str) or not self.env_id:
            raise UsageError(
                f"{label}.env_id: expected a Gymnasium id such as CartPole-v1, got {self.env_id!r}"
            )
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps <= 0:
            raise UsageError(
                f"{label}.steps: expected a whole number > 0 (100000, 1e5, 100k), got {self.steps!r}"
            )
        if not isinstance(self.env_kwargs, Mapping) or not all(isinstance(k, str) for k in self.env_kwargs):
            raise UsageError(f"{label}.env_kwargs: expected a mapping of gym.make keyword arguments")
        object.__setattr__(self, "env_kwargs", dict(self.env_kwargs))
        object.__setattr__(self, "wrappers", tuple(self.wrappers))
        for path in self.wrappers:
            if not isinstance(path, str) or not WRAPPER_PATH.fullmatch(path):
                raise UsageError(
                    f"{label}.wrappers: {path!r} is not a dotted path; write module:Class, "
                    "e.g. gymnasium.wrappers:ClipAction"
                )
        ep = self.eval_episodes
        if isinstance(ep, bool) or not isinstance(ep, int) or ep <= 0:
            raise UsageError(f"{label}.eval_episodes: expected a whole number > 0, got {ep!r}")
        self._check_normaliser(label)
        if self.normalize is not None and not isinstance(self.normalize, (bool, NormalizeConfig)):
            config = parse_normalize(self.normalize, f"{label}.normalize")
            object.__setattr__(self, "normalize", config or False)

    @property
    def normalize_config(self) -> NormalizeConfig | None:
        """What normalises this task's observations and rewards (None: nothing)."""
        if self.normalize is True:
            return NormalizeConfig()
        return self.normalize or None

    def _check_normaliser(self, label: str) -> None:
        rand, ref = self.random_return, self.reference_return
        for key, value in (("random_return", rand), ("reference_return", ref)):
            if value is not None and not _real(value):
                raise UsageError(f"{label}.{key}: expected a finite number, got {value!r}")
        if self.success_key is not None and (not isinstance(self.success_key, str) or not self.success_key):
            raise UsageError(
                f"{label}.success_key: expected an info key such as is_success, got {self.success_key!r}"
            )
        if (rand is None) != (ref is None):
            raise UsageError(
                f"{label}: random_return and reference_return go together (the score is "
                "(R - random_return) / (reference_return - random_return)); give both or neither"
            )
        if rand is None and self.success_key is None:
            raise UsageError(
                f"{label}: no way to score it; give random_return and reference_return, "
                "or success_key (an info key such as is_success, read at episode end)"
            )
        if rand is not None and rand == ref:
            raise UsageError(f"{label}: reference_return equals random_return ({rand}); they must differ")

    @property
    def gym_id(self) -> str:
        """The id given to ``gym.make`` (``metaworld/<task>`` becomes Meta-World's MT1 id)."""
        return METAWORLD_ID if self.env_id.startswith(METAWORLD_PREFIX) else self.env_id

    @property
    def gym_kwargs(self) -> dict[str, Any]:
        """The keyword arguments given to ``gym.make`` (the Meta-World task name added)."""
        if self.env_id.startswith(METAWORLD_PREFIX):
            return {"env_name": self.env_id[len(METAWORLD_PREFIX) :], **self.env_kwargs}
        return dict(self.env_kwargs)

    def env_spec(self, algo: str = "ppo") -> TaskEnvSpec:
        """How to build this task's env for ``algo``: ``.make()`` one, ``.make_vec(...)`` many."""
        from nb2_agents.curriculum.variants import register_variants

        register_variants()
        if self.gym_id not in gym.registry:
            from nb2_agents.curriculum.available import check_task

            check_task(self)  # imports the package that registers it, or explains what is missing
        return TaskEnvSpec(self.gym_id, self.gym_kwargs, algo, self.wrappers)

    def make_env(self, render_mode: str | None = None) -> gym.Env:
        """``gym.make`` with NB2's wrappers (MiniGrid: the image-only grid) and the task's wrappers."""
        return self.env_spec().make(render_mode)

    def score(self, mean_return: float, success_rate: float | None = None) -> float:
        """Normalised score p in [0, 1]: the success rate when ``success_key`` is set (and given),
        else ``(mean_return - random_return) / (reference_return - random_return)``, clipped."""
        if self.success_key is not None and success_rate is not None:
            p = float(success_rate)
        elif self.random_return is not None and self.reference_return is not None:
            p = (float(mean_return) - self.random_return) / (self.reference_return - self.random_return)
        else:
            raise ValueError(
                f"task {self.name!r} is scored by its success rate ({self.success_key!r}); none was given"
            )
        if math.isnan(p):
            raise ValueError(f"task {self.name!r}: cannot score a NaN return / success rate")
        return min(1.0, max(0.0, p))


@dataclass(frozen=True)
class CurriculumSpec:
    """A named sequence of tasks, trained one after another, with the suite's default settings."""

    name: str
    tasks: tuple[TaskSpec, ...]
    description: str = ""
    algo: str = "ppo"
    preset: str = "nano"
    hyperparams: dict[str, Any] = field(default_factory=dict, hash=False)
    requires: str | None = None
    trainable_here: bool = True
    source: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if not self.tasks:
            raise UsageError("tasks: the task list is empty; give at least one task with env_id and steps")
        if not all(isinstance(t, TaskSpec) for t in self.tasks):
            raise UsageError("tasks: expected TaskSpec objects")
        seen: set[str] = set()
        for task in self.tasks:
            if task.name in seen:
                raise UsageError(
                    f"tasks: duplicate task name {task.name!r}; give each task a distinct name "
                    "(a task's name defaults to its env_id)"
                )
            seen.add(task.name)
        if self.algo not in ALGOS:
            raise UsageError(f"algo: unknown algorithm {self.algo!r}; valid: {sorted(ALGOS)}")
        if self.preset not in PRESETS:
            raise UsageError(f"preset: unknown NB2 preset {self.preset!r}; valid presets: {sorted(PRESETS)}")
        if not isinstance(self.hyperparams, Mapping):
            raise UsageError(f"hyperparams: expected a mapping of hyperparameters, got {self.hyperparams!r}")
        object.__setattr__(self, "hyperparams", dict(self.hyperparams))
        valid = valid_keys(ALGOS[self.algo])
        for key in self.hyperparams:
            if key not in valid:
                raise UsageError(f"hyperparams.{key}: unknown key for {self.algo}; valid keys: {valid}")
        if self.requires is not None and (not isinstance(self.requires, str) or not self.requires):
            raise UsageError(f"requires: expected a pip extra such as minigrid, got {self.requires!r}")
        if not isinstance(self.trainable_here, bool):
            raise UsageError(f"trainable_here: expected true or false, got {self.trainable_here!r}")

    def task_names(self) -> list[str]:
        return [task.name for task in self.tasks]

    @property
    def total_steps(self) -> int:
        return sum(task.steps for task in self.tasks)

    def scaled(self, factor: float) -> CurriculumSpec:
        """The same curriculum with every task's steps multiplied by ``factor`` (at least 1 step)."""
        if isinstance(factor, bool) or not _real(factor) or factor <= 0:
            raise UsageError(f"scale factor must be a number > 0, got {factor!r}")
        tasks = tuple(dataclasses.replace(t, steps=max(1, round(t.steps * factor))) for t in self.tasks)
        return dataclasses.replace(self, tasks=tasks)

    def raw(self) -> CurriculumSpec:
        """The same curriculum with no task normalised (a distilled student sees raw
        observations; each teacher normalises its own with its saved statistics)."""
        tasks = tuple(dataclasses.replace(t, normalize=False) for t in self.tasks)
        return dataclasses.replace(self, tasks=tasks)

    def resolved(self, normalize: NormalizeConfig | None) -> CurriculumSpec:
        """Every task's ``normalize`` made explicit: its own, else ``normalize`` (the curriculum's
        ``hyperparams.normalize``, from the suite or ``--set``)."""
        tasks = tuple(
            t if t.normalize is not None else dataclasses.replace(t, normalize=normalize or False)
            for t in self.tasks
        )
        return dataclasses.replace(self, tasks=tasks)


def builtin_curricula() -> list[str]:
    """Names of the built-in curricula (``envs/*.yaml``)."""
    return sorted(path.stem for path in BUILTIN_DIR.glob("*.yaml"))


def _find(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    names = builtin_curricula()
    looks_like_path = (
        isinstance(name_or_path, Path) or "/" in text or "\\" in text or text.endswith((".yaml", ".yml"))
    )
    if not looks_like_path:
        if (BUILTIN_DIR / f"{text}.yaml").is_file():
            return BUILTIN_DIR / f"{text}.yaml"
        if Path(text).is_file():
            return Path(text)
        close = difflib.get_close_matches(text, names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UsageError(
            f"unknown curriculum {text!r}; {hint}built-in curricula: {', '.join(names)}; "
            "or give the path of a YAML file"
        )
    path = Path(text).expanduser()
    if not path.is_file():
        raise UsageError(
            f"curriculum file {text} does not exist{' (it is a folder)' if path.is_dir() else ''}; "
            f"give a YAML file or a built-in curriculum: {', '.join(names)}"
        )
    return path


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if not _real(value):
        raise UsageError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _string(value: Any, where: str, example: str, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{where}: expected a non-empty string such as {example}, got {value!r}")
    return value.strip()


def _check_keys(data: dict[Any, Any], valid: tuple[str, ...], where: str, what: str) -> None:
    for key in data:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"{where}: unknown {what} key {key!r}{hint}; valid keys: {list(valid)}")


def _parse_task(raw: Any, index: int, path: Path) -> TaskSpec:
    if not isinstance(raw, dict):
        raise UsageError(
            f"{path} tasks[{index}]: expected a mapping with keys {list(TASK_KEYS)}, got {raw!r}"
        )
    name = raw.get("name", raw.get("env_id"))
    label = f"{path} [task {name!r}]" if isinstance(name, str) else f"{path} tasks[{index}]"
    _check_keys(raw, TASK_KEYS, label, "task")
    for key in ("env_id", "steps"):
        if raw.get(key) is None:
            raise UsageError(f"{label}: missing required key {key!r} (every task needs env_id and steps)")
    env_id = _string(raw["env_id"], f"{label}.env_id", "CartPole-v1")
    name = _string(raw.get("name", env_id), f"{label}.name", "CartPole-long-pole")
    env_kwargs = raw.get("env_kwargs") or {}
    if not isinstance(env_kwargs, dict):
        raise UsageError(
            f"{label}.env_kwargs: expected a mapping of gym.make keyword arguments, got {env_kwargs!r}"
        )
    wrappers = raw.get("wrappers") or []
    if isinstance(wrappers, str) or not isinstance(wrappers, list):
        raise UsageError(f"{label}.wrappers: expected a list of module:Class paths, got {wrappers!r}")
    eval_episodes = raw.get("eval_episodes", 10)
    if isinstance(eval_episodes, bool) or not isinstance(eval_episodes, int) or eval_episodes <= 0:
        raise UsageError(f"{label}.eval_episodes: expected a whole number > 0, got {eval_episodes!r}")
    try:
        return TaskSpec(
            name=name,
            env_id=env_id,
            steps=parse_steps(raw["steps"], f"{label}.steps"),
            env_kwargs=env_kwargs,
            wrappers=tuple(wrappers),
            eval_episodes=eval_episodes,
            random_return=_number(raw.get("random_return"), f"{label}.random_return"),
            reference_return=_number(raw.get("reference_return"), f"{label}.reference_return"),
            success_key=_string(raw.get("success_key"), f"{label}.success_key", "is_success", optional=True),
            normalize=raw.get("normalize"),
        )
    except UsageError as err:
        if str(err).startswith(str(path)):
            raise
        raise UsageError(f"{path} {err}") from err


def parse_curriculum(data: Any, path: Path) -> CurriculumSpec:
    """Validate the parsed YAML of a curriculum file; ``path`` names it in every error."""
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping with keys {list(TOP_KEYS)}, got {type(data).__name__}")
    _check_keys(data, TOP_KEYS, str(path), "top-level")
    if "tasks" not in data:
        raise UsageError(
            f"{path}: missing required key 'tasks' (a list of tasks, each with env_id and steps)"
        )
    raw_tasks = data["tasks"]
    if not isinstance(raw_tasks, list):
        raise UsageError(
            f"{path}.tasks: expected a list of tasks, each with env_id and steps, got {raw_tasks!r}"
        )
    if not raw_tasks:
        raise UsageError(
            f"{path}.tasks: the task list is empty; give at least one task with env_id and steps"
        )
    tasks = [_parse_task(raw, i, path) for i, raw in enumerate(raw_tasks)]
    hyperparams = data.get("hyperparams") or {}
    if not isinstance(hyperparams, dict):
        raise UsageError(f"{path}.hyperparams: expected a mapping of hyperparameters, got {hyperparams!r}")
    trainable = data.get("trainable_here", True)
    if not isinstance(trainable, bool):
        raise UsageError(f"{path}.trainable_here: expected true or false, got {trainable!r}")
    try:
        return CurriculumSpec(
            name=_string(data.get("name", path.stem), f"{path}.name", "cartpole-variants"),
            tasks=tuple(tasks),
            description=str(data.get("description") or "").strip(),
            algo=_string(data.get("algo", "ppo"), f"{path}.algo", "ppo"),
            preset=_string(data.get("preset", "nano"), f"{path}.preset", "nano"),
            hyperparams=hyperparams,
            requires=_string(data.get("requires"), f"{path}.requires", "minigrid", optional=True),
            trainable_here=trainable,
            source=path,
        )
    except UsageError as err:
        if str(err).startswith(str(path)):
            raise
        raise UsageError(f"{path}: {err}") from err


def load_curriculum(name_or_path: str | Path) -> CurriculumSpec:
    """A built-in curriculum by name (:func:`builtin_curricula`) or a YAML file by path."""
    path = _find(name_or_path)
    return parse_curriculum(read_yaml(path), path)
