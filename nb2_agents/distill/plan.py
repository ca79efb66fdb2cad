"""Everything ``nb2 distill`` checks before it trains: the student's settings, the envs, and
teachers loaded against those envs. Bad input raises :class:`~nb2_agents.errors.UsageError`
here, before any run folder exists.

The student's hyperparameters are PPO's: for ``--mode pure``, ``policies/distill.yaml``'s entry
for the env (a supervised schedule: many gradient steps per labelled state); for ``--mode
kickstart``, ``policies/ppo.yaml``'s (as ``nb2 train --env ENV`` uses); for a curriculum, its own
settings, trained as ``nb2 curriculum --mode multitask`` does (envs split evenly across tasks,
task ids shown). ``--set key=value`` overrides any of them, as for ``nb2 train``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gymnasium import spaces
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import VecEnv

from nb2_agents.config import VERSION, TrainConfig, resolve_config
from nb2_agents.counts import parse_steps
from nb2_agents.curriculum.adapter import CommonSpaces
from nb2_agents.curriculum.evaluator import task_env_fns, vec_env
from nb2_agents.curriculum.runner import probe_spaces
from nb2_agents.curriculum.runner import resolve as resolve_curriculum
from nb2_agents.curriculum.spec import CurriculumSpec
from nb2_agents.distill.student import MODES
from nb2_agents.distill.teachers import Teacher, load_teacher
from nb2_agents.envs_util import EnvSpec
from nb2_agents.errors import UsageError
from nb2_agents.evaluation import EVAL_SEED_OFFSET
from nb2_agents.hyperparams import ALGOS, DATA_DIR, Hyperparams, parse_entry, plain
from nb2_agents.nn.config import PRESETS
from nb2_agents.runs import safe_name

ALGO = "ppo"
"""The student's algorithm."""
PURE_HYPERPARAMS = DATA_DIR / "policies" / "distill.yaml"
"""The student's settings for pure distillation, keyed by env id (``policies/distill.yaml``)."""


@dataclass(frozen=True)
class Options:
    """What the user chose for the student and its training (checked by :meth:`check`)."""

    mode: str = "pure"
    temperature: float = 1.0
    kl_coef: float = 1.0
    value_coef: float = 0.5
    preset: str = "nano"
    steps: int | str | None = None
    seed: int = 0
    device: str = "auto"
    trust: bool = False
    eval_freq: int | str | None = None
    """Evaluate the student every this many steps (0: never; default: a tenth of the budget)."""
    final_episodes: int | None = None
    """Episodes of the final evaluation of student and teacher (one env; default 20)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """The student's hyperparameters over the env's ``policies/distill.yaml`` (pure) or
    ``ppo.yaml`` (kickstart) entry or the curriculum's settings (``--set key=value``; dotted keys
    reach into ``policy_kwargs``)."""

    def check(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f"unknown --mode {self.mode!r}; valid: {', '.join(MODES)}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise UsageError(
                f"--temperature must be a positive number (1: the teacher as is), got {self.temperature}"
            )
        for name, value in (("kl_coef", self.kl_coef), ("value_coef", self.value_coef)):
            if not (value >= 0 and math.isfinite(value)):
                raise UsageError(f"--{name.replace('_', '-')} must be a number >= 0, got {value}")
        if self.preset not in PRESETS:
            raise UsageError(f"unknown --preset {self.preset!r}; valid presets: {', '.join(PRESETS)}")
        if self.seed < 0:
            raise UsageError(f"--seed must be a non-negative integer, got {self.seed}")

    def to_config(self) -> dict[str, Any]:
        """The distillation settings as config.yaml records them."""
        kl_coef = self.kl_coef if self.mode == "kickstart" else 1.0  # pure: the loss is all there is
        return {
            "mode": self.mode,
            "temperature": self.temperature,
            "kl_coef": kl_coef,
            "value_coef": self.value_coef,
        }


@dataclass
class Plan:
    """A checked ``nb2 distill`` run."""

    name: str
    """The env id or the curriculum's name (the run folder's first part)."""
    options: Options
    teachers: list[Teacher]
    hp: Hyperparams
    steps: int
    n_envs: int
    eval_freq: int
    """In-training evaluations every this many steps (0: none)."""
    save_freq: int
    final_episodes: int
    """Episodes of the final evaluation (one env; a curriculum uses each task's ``eval_episodes``)."""
    deterministic_eval: bool
    config: dict[str, Any]
    """What config.yaml holds."""
    env_spec: EnvSpec | None = None
    spec: CurriculumSpec | None = None
    common: CommonSpaces | None = None

    @property
    def seed(self) -> int:
        return self.options.seed

    @property
    def eval_seed(self) -> int:
        return self.seed + EVAL_SEED_OFFSET

    def make_env(self, run_dir: Path | None, record: bool = False, append: bool = False) -> VecEnv:
        """The student's training envs (``n_envs / tasks`` copies of each task for a curriculum),
        with Monitor CSVs in ``run_dir`` (continued with ``append``); ``record``: for resumable
        checkpoints."""
        if self.spec is None:
            assert self.env_spec is not None
            monitor_dir = None if run_dir is None else str(run_dir)
            return self.env_spec.make_vec(self.n_envs, self.seed, monitor_dir, record=record, append=append)
        assert self.common is not None
        copies = self.n_envs // len(self.spec.tasks)
        fns = []
        for i, task in enumerate(self.spec.tasks):
            monitor = None if run_dir is None else run_dir / "monitor" / safe_name(task.name)
            fns += task_env_fns(task, i, self.common, ALGO, copies, self.seed + copies * i, monitor, True,
                                record=record, append=append)  # fmt: skip
        return vec_env(fns, self.seed)

    def meta(self) -> dict[str, Any]:
        """nb2.json of the student's model zip (``nb2 evaluate`` reads it)."""
        spec = self.env_spec
        meta = {
            "algo": ALGO,
            "env": spec.env_id if spec else None,
            "env_kwargs": dict(spec.env_kwargs) if spec else {},
            "preset": self.options.preset,
            "seed": self.seed,
            "eval_seed": self.eval_seed,
            "deterministic_eval": self.deterministic_eval,
            "distill": {"mode": self.options.mode, "teachers": [str(t.path) for t in self.teachers]},
        }
        if self.spec is not None:
            meta["curriculum"] = self.spec.name
        return meta


def _spaces(vec: VecEnv) -> tuple[spaces.Space, spaces.Space]:
    try:
        return vec.observation_space, vec.action_space
    finally:
        vec.close()


def _env_plan(env: str, teachers: Sequence[str | Path], options: Options) -> Plan:
    if len(teachers) != 1:
        raise UsageError(
            f"--env {env} takes one --teacher, got {len(teachers)}; several teachers need "
            "--curriculum SUITE, one teacher per task"
        )
    cfg: TrainConfig = resolve_config(
        env=env,
        algo=ALGO,
        hyperparams=PURE_HYPERPARAMS if options.mode == "pure" else None,
        preset=options.preset,
        steps=options.steps,
        seed=options.seed,
        device=options.device,
        eval_freq=options.eval_freq,
        final_episodes=options.final_episodes,
        overrides=options.overrides,
    )
    # the student sees raw observations, as in curricula; a normalised teacher normalises its own
    cfg.hyperparams.pop("normalize", None)
    hp = parse_entry(ALGOS[ALGO], cfg.hyperparams, cfg.source)
    env_spec = EnvSpec(cfg.env, cfg.env_kwargs, ALGO)
    obs_space, action_space = _spaces(env_spec.make_vec(1, cfg.seed))
    device = get_device(cfg.device)
    teacher = load_teacher(teachers[0], obs_space, action_space, env, options.trust, device)
    config = {**cfg.to_dict(), "command": "distill", **options.to_config(), "teachers": [teacher.describe()]}
    return Plan(
        env,
        options,
        [teacher],
        hp,
        cfg.steps,
        hp.n_envs,
        cfg.eval_freq,
        cfg.save_freq,
        cfg.final_episodes,
        cfg.deterministic_eval,
        plain(config),
        env_spec=env_spec,
    )


def _curriculum_plan(curriculum: str | Path, teachers: Sequence[str | Path], options: Options) -> Plan:
    cfg, spec, hp = resolve_curriculum(
        curriculum=curriculum,
        algo=ALGO,
        preset=options.preset,
        mode="multitask",
        seeds=[options.seed],
        device=options.device,
        task_ids=True,
        overrides=options.overrides,
    )
    spec = spec.raw()  # the student sees raw observations; teachers normalise their own
    shared = probe_spaces(spec, ALGO)
    names = spec.task_names()
    if len(teachers) != len(names):
        raise UsageError(
            f"curriculum {spec.name} has {len(names)} tasks ({', '.join(names)}), so it takes "
            f"{len(names)} --teacher options, one per task in that order; got {len(teachers)}"
        )
    loaded = []
    for task, path in zip(spec.tasks, teachers, strict=True):
        obs_space, action_space = _spaces(task.env_spec(ALGO).make_vec(1, options.seed))
        where = f"task {task.name} of curriculum {spec.name}"
        loaded.append(
            load_teacher(path, obs_space, action_space, where, options.trust, get_device(options.device))
        )
    given = options.steps
    steps = parse_steps(given, "--steps") if given is not None else sum(cfg.task_steps)
    n_envs = len(names) * -(-hp.n_envs // len(names))  # every task gets the same number of copies
    config = {
        "command": "distill",
        "curriculum": str(curriculum),
        "suite": spec.name,
        "algo": ALGO,
        "preset": options.preset,
        "seed": options.seed,
        "steps": steps,
        "n_envs": n_envs,
        **options.to_config(),
        "teachers": [t.describe() for t in loaded],
        "hyperparams": cfg.hyperparams,
        "device": options.device,
        "nb2_agents": VERSION,
    }
    if options.eval_freq is None:
        eval_freq = max(math.ceil(steps / 10), 1)
    else:
        eval_freq = (
            0 if str(options.eval_freq).strip() == "0" else parse_steps(options.eval_freq, "--eval-freq")
        )
    save_freq = max(math.ceil(steps / 5), 1)
    config.update(eval_freq=eval_freq, save_freq=save_freq)
    return Plan(
        spec.name,
        options,
        loaded,
        hp,
        steps,
        n_envs,
        eval_freq,
        save_freq,
        0,
        True,
        plain(config),
        spec=spec,
        common=shared,
    )


def make_plan(
    teachers: Sequence[str | Path],
    env: str | None = None,
    curriculum: str | Path | None = None,
    options: Options | None = None,
) -> Plan:
    """Check every input and load the teachers (see :func:`~nb2_agents.distill.run.distill`);
    writes nothing."""
    options = options or Options()
    options.check()
    if (env is None) == (curriculum is None):
        raise UsageError(
            "pass one of --env ENV_ID (one teacher) or --curriculum SUITE (one teacher per task)"
        )
    if not teachers:
        raise UsageError("pass at least one --teacher PATH (a model .zip, a run folder or zoo:NAME)")
    if curriculum is not None:
        return _curriculum_plan(curriculum, teachers, options)
    assert env is not None
    return _env_plan(env, teachers, options)


def resume_inputs(config: dict[str, Any]) -> tuple[list[str], str | None, str | None, Options]:
    """The teachers, env, curriculum and options that made a run's ``config.yaml``, to rebuild its
    plan (``nb2 distill --resume``). The hyperparameters come back as overrides of every key, so
    the rebuilt entry is the recorded one; ``--trust-pickle`` is not recorded (the teachers are
    loaded safely unless the resumed run is given it again)."""
    try:
        teachers = [str(t["path"]) for t in config["teachers"]]
        options = Options(
            mode=config["mode"],
            temperature=float(config["temperature"]),
            kl_coef=float(config["kl_coef"]),
            value_coef=float(config["value_coef"]),
            preset=config.get("preset") or config["hyperparams"]["policy_kwargs"]["preset"],
            steps=int(config["steps"]),
            seed=int(config["seed"]),
            device=str(config.get("device", "auto")),
            eval_freq=int(config["eval_freq"]) if "eval_freq" in config else None,
            final_episodes=int(config["final_episodes"]) if "final_episodes" in config else None,
            overrides=dict(config["hyperparams"]),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise UsageError(f"not the config.yaml of an nb2 distill run: {type(err).__name__}: {err}") from None
    curriculum = config.get("curriculum")
    return teachers, None if curriculum else str(config["env"]), curriculum, options
