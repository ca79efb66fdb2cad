"""``nb2 curriculum`` as a function: one NB2 agent across a curriculum's tasks, then its metrics.

>>> result = run_curriculum("cartpole-variants", seeds=[0, 1, 2])  # doctest: +SKIP
>>> result.metrics["forgetting"]["mean"]  # doctest: +SKIP

One SB3 algorithm instance and one NB2 model serve every task (:mod:`.adapter` gives them one
observation and one action space). ``sequential`` trains the tasks in order, swapping the env
with ``model.set_env`` at each boundary; ``multitask`` trains on all of them at once, one
vectorised env whose copies run different tasks. Learning-rate, clip-range and entropy
schedules restart at each task. The agent is evaluated on every task ``evals_per_task`` times
per task window and at each task's end (the performance matrix's rows); see
:mod:`.metrics` for what is computed from that.

Run folder ``{runs_dir}/{suite}__{algo}__{preset}__{mode}__{retention}__{time}/``:
``config.yaml``, ``metrics.json``, ``matrix.csv`` (mean over seeds), ``curves.csv`` (every
evaluation of every seed), and ``s{seed}/`` with TensorBoard events, Monitor CSVs per task,
``matrix.csv``, ``model.zip`` and ``checkpoints/after_{i}_{task}.zip``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.vec_env import VecEnv

from nb2_agents.callbacks import NB2LoggerCallback, flat_hparams
from nb2_agents.curriculum.adapter import CommonSpaces, common_spaces
from nb2_agents.curriculum.evaluator import (
    CurriculumCallback,
    Evaluator,
    TaskEval,
    curve_row,
    evaluation_points,
    normalized,
    task_env_fns,
    task_probe,
    task_stats,
    task_vec_env,
    vec_env,
)
from nb2_agents.curriculum.metrics import (
    matrix_to_csv,
    window_auc,
)
from nb2_agents.curriculum.references import reference_aucs, reference_path
from nb2_agents.curriculum.resolve import resolve
from nb2_agents.curriculum.results import (
    CurriculumConfig,
    CurriculumResult,
    SeedResult,
    curriculum_metrics,
    phase_seconds,
    write_curves,
    write_multitask_matrix,
)
from nb2_agents.curriculum.schedules import _unwrap, task_schedules  # noqa: F401  (_unwrap: old zips)
from nb2_agents.curriculum.spec import CurriculumSpec, TaskSpec
from nb2_agents.curriculum.strategies import Strategy, install_extra_loss, make_strategy
from nb2_agents.envs_util import check_algo, import_gym_packages
from nb2_agents.errors import UsageError
from nb2_agents.hyperparams import Hyperparams
from nb2_agents.normalize import RunningStats
from nb2_agents.progress import Mode, progress_mode
from nb2_agents.runs import (
    dump_yaml,
    fresh_dir,
    marks_failure,
    run_logger,
    safe_name,
    save_model,
    write_json,
    write_text,
)
from nb2_agents.sb3 import algos
from nb2_agents.signals import sigterm_as_interrupt, stop_workers
from nb2_agents.stopwatch import Stopwatch
from nb2_agents.training import make_algorithm


def probe_spaces(spec: CurriculumSpec, algo: str) -> CommonSpaces:
    """Build each task's env once to read its spaces, then the spaces they share."""
    obs, act = [], []
    for task in spec.tasks:
        env = normalized(task, task.env_spec(algo).make())
        try:
            obs.append(env.observation_space)
            act.append(env.action_space)
        finally:
            env.close()
    common = common_spaces(spec.task_names(), obs, act, curriculum=f"curriculum {spec.name}")
    check_algo(algo, f"curriculum {spec.name}", common.action_space)
    if common.action_masked and not algos.ALGOS[algo].masks_actions:
        valid = [name for name, row in algos.ALGOS.items() if row.masks_actions]
        raise UsageError(
            f"curriculum {spec.name}: tasks have different numbers of actions, which are masked per task; "
            f"--algo {algo} cannot mask actions. Valid: {', '.join(valid)}"
        )
    return common


# --------------------------------------------------------------------------- one seed


def deterministic_eval(env_id: str) -> bool:
    """Whether a task is evaluated with greedy actions."""
    return not env_id.startswith(("MiniGrid-", "BabyAI-"))  # RL Zoo samples MiniGrid actions


def _train_env(
    cfg: CurriculumConfig,
    tasks: list[TaskSpec],
    common: CommonSpaces,
    task_index: int | None,
    n_envs: int,
    seed: int,
    seed_dir: Path,
    stats: dict[int, RunningStats],
) -> VecEnv:
    """Task ``task_index``'s training envs, or (None) every task's at once for multitask; each
    task's envs update its normalisation ``stats``."""
    if task_index is not None:
        task = tasks[task_index]
        monitor = seed_dir / "monitor" / safe_name(task.name)
        return task_vec_env(task, task_index, common, cfg.algo, n_envs, seed, monitor, cfg.task_ids,
                            stats.get(task_index), training=True)  # fmt: skip
    copies = n_envs // len(tasks)  # multitask: task i runs in copies i*k .. i*k + k - 1
    fns = []
    for i, t in enumerate(tasks):
        monitor = seed_dir / "monitor" / safe_name(t.name)
        fns += task_env_fns(t, i, common, cfg.algo, copies, seed + copies * i, monitor, cfg.task_ids,
                            stats.get(i), training=True)  # fmt: skip
    return vec_env(fns, seed)


def _switch_env(model: BaseAlgorithm, env: VecEnv) -> None:
    """Train on ``env`` from now on; close the previous env."""
    previous = model.get_env()
    model.set_env(env, force_reset=True)
    if previous is not None:
        previous.close()
    model.ep_info_buffer.clear()  # type: ignore[union-attr]  # rollout/ keys: the current task only


class _Observe(BaseCallback):
    """Hands each step's new observations to the strategy (its replay memory)."""

    def __init__(self, strategy: Strategy, current: dict[str, int], watch: Stopwatch) -> None:
        super().__init__()
        self.strategy, self.current, self.watch = strategy, current, watch

    def _on_step(self) -> bool:
        task = self.current["task"]
        if task >= 0:
            with self.watch("retention"):
                self.strategy.observe(task, self.locals["new_obs"])
        return True


@dataclass
class _Job:
    cfg: CurriculumConfig
    spec: CurriculumSpec
    hp: Hyperparams
    seed: int
    seed_dir: Path
    only_task: int | None = None
    """Reference run: train task ``only_task`` alone, from scratch."""
    progress: Mode = "off"
    verbose: int = 1
    """2: SB3's table of logged values on stdout (``-v``)."""


def train_seed(job: _Job) -> SeedResult:
    """Train one seed of a curriculum (or one reference task) and evaluate it throughout."""
    cfg, spec, hp, seed = job.cfg, job.spec, job.hp, job.seed
    common = probe_spaces(spec, cfg.algo)
    tasks = list(spec.tasks)
    order = list(range(len(tasks))) if job.only_task is None else [job.only_task]
    evaluated = tasks if job.only_task is None else [tasks[job.only_task]]
    eval_ids = list(range(len(tasks))) if job.only_task is None else [job.only_task]
    seed_dir = job.seed_dir
    seed_dir.mkdir(parents=True, exist_ok=True)
    n_envs = hp.n_envs
    if cfg.mode == "multitask" and job.only_task is None and n_envs % len(tasks):
        n_envs = len(tasks) * -(-n_envs // len(tasks))  # every task gets the same number of copies

    stats = task_stats(tasks, common, hp.gamma)  # normalisation, per task that has it

    def make_train_env(task_index: int | None) -> VecEnv:
        return _train_env(cfg, tasks, common, task_index, n_envs, seed, seed_dir, stats)

    multitask = cfg.mode == "multitask" and job.only_task is None
    env = make_train_env(None if multitask else order[0])
    model, extra = make_algorithm(cfg.algo, hp, env, seed, cfg.device)
    model.set_logger(run_logger(seed_dir, job.verbose))
    schedules = task_schedules(model, extra)
    strategy = make_strategy(cfg.retention, cfg.retention_options)
    probe = task_probe(tasks, common, cfg.algo, seed, cfg.task_ids, stats)
    strategy.setup(model, {"spec": spec, "common": common, "config": cfg, "seed": seed, "probe": probe})
    watch = Stopwatch()  # where the wall time goes: evaluation, retention, the rest is training
    hooks = install_extra_loss(model, strategy, watch)

    deterministic = [deterministic_eval(t.env_id) for t in evaluated]
    evaluator = Evaluator(evaluated, common, cfg.algo, seed, deterministic, eval_ids, cfg.task_ids, stats)
    result = SeedResult(seed, [], [], [], [], 0.0, 0)
    current = {"task": -1 if multitask else order[0]}
    window: dict[int, list[float]] = {i: [] for i in range(len(evaluated))}

    def on_eval(step: int, results: list[TaskEval]) -> None:
        for j, (task, r) in enumerate(zip(evaluated, results, strict=True)):
            result.curves.append(curve_row(seed, step, current["task"], task.name, r))
            if step > 0 and (multitask or eval_ids[j] == current["task"]):
                window[j].append(r.score)
        write_curves(seed_dir / "curves.csv", result.curves)  # as they come: a killed run keeps them

    label = f"s{seed}" if job.only_task is None else f"ref {tasks[job.only_task].name} s{seed}"
    total = sum(tasks[i].steps for i in order)
    callback = CurriculumCallback(
        evaluator, on_eval, lambda: current["task"], total, job.progress, strategy.log, label, watch
    )
    nb2_logger = NB2LoggerCallback(flat_hparams(cfg.to_dict()), dormant_prefix="retention/")
    observer = _Observe(strategy, current, watch)
    start_time = time.perf_counter()
    with sigterm_as_interrupt():  # SIGTERM saves as Ctrl-C does
        try:
            callback.evaluate_now(model)  # step 0: the untrained agent on every task
            windows = [(None, total)] if multitask else [(i, tasks[i].steps) for i in order]
            for task_index, steps in windows:
                current["task"] = -1 if task_index is None else task_index
                if task_index is not None and task_index != order[0]:
                    _switch_env(model, make_train_env(task_index))
                for schedule in schedules:
                    schedule.start, schedule.length = model.num_timesteps, steps
                n_points = cfg.evals_per_task * (len(tasks) if multitask else 1)
                callback.schedule(evaluation_points(model.num_timesteps, steps, n_points))
                if task_index is not None:
                    with watch("retention"):
                        strategy.on_task_start(task_index, model)
                callbacks = CallbackList([callback, nb2_logger, observer, *extra])
                model.learn(steps, callback=callbacks, reset_num_timesteps=False)
                if task_index is not None:
                    with watch("retention"):
                        strategy.on_task_end(task_index, model)
                results = callback.evaluate_now(model)
                result.rows.append([r.score for r in results])
                result.task_end_steps.append(int(model.num_timesteps))
                if job.only_task is None:
                    name = _checkpoint_name(tasks, task_index)
                    _save(model, seed_dir / "checkpoints" / f"{name}.zip", cfg, seed, tasks, stats)
                    strategy.save(seed_dir / "checkpoints" / f"{name}.retention")
        except KeyboardInterrupt:
            # keep what was trained and measured: the model now, and every evaluation so far
            path = seed_dir / "interrupted.zip"
            _save(model, path, cfg, seed, tasks, stats)
            curves = seed_dir / "curves.csv"  # written after every evaluation
            print(f"\ninterrupted at {model.num_timesteps:,} steps: model {path}, curves {curves}",
                  file=sys.stderr)  # fmt: skip
            raise
        finally:
            for hook in hooks:
                hook.remove()
            nb2_logger.remove_hooks()
            callback.close()
            evaluator.close()
            model.get_env().close()  # type: ignore[union-attr]
    result.seconds = time.perf_counter() - start_time
    result.phase_seconds = phase_seconds(result.seconds, watch.seconds)
    result.steps = int(model.num_timesteps)
    result.aucs = [window_auc(window[j]) if window[j] else None for j in range(len(evaluated))]
    _save(model, seed_dir / "model.zip", cfg, seed, tasks, stats)
    if job.only_task is None and cfg.mode == "sequential":
        matrix_to_csv(np.asarray(result.rows), spec.task_names(), seed_dir / "matrix.csv")
    return result


def _checkpoint_name(tasks: list[TaskSpec], task_index: int | None) -> str:
    return "multitask" if task_index is None else f"after_{task_index}_{safe_name(tasks[task_index].name)}"


def _save(
    model: BaseAlgorithm, path: Path, cfg: CurriculumConfig, seed: int, tasks: list[TaskSpec],
    stats: dict[int, RunningStats],
) -> None:  # fmt: skip
    """The model, nb2's metadata and each normalised task's statistics (by task name)."""
    meta = {**_meta(cfg, seed), "tasks": [t.name for t in tasks], "task_ids": cfg.task_ids}
    save_model(model, path, meta, {tasks[i].name: s for i, s in stats.items()})


def _meta(cfg: CurriculumConfig, seed: int) -> dict[str, Any]:
    meta = {"algo": cfg.algo, "env": None, "curriculum": cfg.suite, "preset": cfg.preset, "seed": seed,
            "mode": cfg.mode, "retention": cfg.retention}  # fmt: skip
    source = Path(str(cfg.curriculum))
    if source.suffix in (".yaml", ".yml") and source.is_file():  # not a built-in: where to find it again
        meta["curriculum_file"] = str(source.resolve())
    return meta


# --------------------------------------------------------------------------- many seeds


def _worker_init() -> None:
    torch.set_num_threads(1)  # workers share the cores; one thread each
    import_gym_packages()  # the parent's --gym-packages


def _run_jobs(jobs: list[_Job], workers: int) -> list[SeedResult]:
    if workers <= 1 or len(jobs) == 1:
        return [train_seed(job) for job in jobs]
    for job in jobs:  # one bar per seed would clash: a line per seed instead
        job.progress = "lines" if job.progress == "bar" else job.progress
    ctx = get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init)
    with sigterm_as_interrupt(), pool:
        try:
            return list(pool.map(train_seed, jobs))
        except KeyboardInterrupt:
            stop_workers(pool)  # each worker saves its seed, as on Ctrl-C
            raise


def _new_run_dir(root: Path, cfg: CurriculumConfig) -> Path:
    return fresh_dir(root, f"{cfg.suite}__{cfg.algo}__{cfg.preset}__{cfg.mode}__{cfg.retention}")


def run_curriculum(
    curriculum: str | Path = "cartpole-variants",
    *,
    algo: str | None = None,
    preset: str | None = None,
    mode: str = "sequential",
    retention: str = "none",
    seeds: Sequence[int] = (0,),
    steps_scale: float = 1.0,
    evals_per_task: int = 4,
    overrides: dict[str, Any] | None = None,
    runs_dir: str | Path = "runs",
    device: str = "auto",
    workers: int = 1,
    progress: bool | None = None,
    task_ids: bool | None = None,
    retention_options: dict[str, Any] | None = None,
    verbose: int = 1,
) -> CurriculumResult:
    """Train one agent across a curriculum for each seed; write the run folder; return metrics.

    :param curriculum: a built-in suite name (``nb2 curriculum --list``) or a YAML file
    :param workers: seeds trained side by side in this many processes
    :param overrides: hyperparameters over the suite's (``--set key=value``)
    :param task_ids: tell the agent which task it is on (default: ``nb2`` retention and multitask)
    :param retention_options: the strategy's settings, e.g. ``{"replay_budget_mb": 16}``
    :param verbose: 2 also prints SB3's table of logged values, per seed (``-v``)
    """
    cfg, spec, hp = resolve(curriculum, algo, preset, mode, retention, seeds, steps_scale, evals_per_task,
                            overrides, device, task_ids, retention_options)  # fmt: skip
    probe_spaces(spec, cfg.algo)  # space errors before a folder exists
    run_dir = _new_run_dir(Path(runs_dir), cfg)
    write_text(
        run_dir / "config.yaml", "# nb2 curriculum configuration, fully resolved\n" + dump_yaml(cfg.to_dict())
    )
    mode = progress_mode(progress)
    jobs = [_Job(cfg, spec, hp, s, run_dir / f"s{s}", progress=mode, verbose=verbose) for s in cfg.seeds]
    with marks_failure(run_dir):
        results = _run_jobs(jobs, workers)
    refs = reference_aucs(cfg, spec, Path(runs_dir))
    metrics = curriculum_metrics(cfg, spec, results, refs)
    write_json(run_dir / "metrics.json", metrics)
    mean_rows = np.mean([r.rows for r in results], axis=0)
    if cfg.mode == "sequential":
        matrix_to_csv(mean_rows, spec.task_names(), run_dir / "matrix.csv")
    else:
        write_multitask_matrix(run_dir / "matrix.csv", spec.task_names(), mean_rows[0])
    write_curves(run_dir / "curves.csv", [row for r in results for row in r.curves])
    return CurriculumResult(run_dir, cfg, metrics, results)


# --------------------------------------------------------------------------- reference runs


def run_references(
    curriculum: str | Path = "cartpole-variants",
    *,
    algo: str | None = None,
    preset: str | None = None,
    seeds: Sequence[int] = (0,),
    steps_scale: float = 1.0,
    evals_per_task: int = 4,
    overrides: dict[str, Any] | None = None,
    runs_dir: str | Path = "runs",
    device: str = "auto",
    workers: int = 1,
    progress: bool | None = None,
    verbose: int = 1,
) -> list[Path]:
    """Single-task runs from scratch, one per task and seed, cached under
    ``{runs_dir}/references/{suite}/``; forward transfer compares against them. Cached runs
    (same task, algorithm, preset, hyperparameters and seed) are reused, not re-trained."""
    cfg, spec, hp = resolve(
        curriculum, algo, preset, "sequential", "none", seeds, steps_scale, evals_per_task, overrides, device
    )
    probe_spaces(spec, cfg.algo)
    root = Path(runs_dir)
    mode = progress_mode(progress)
    jobs, paths = [], []
    for i in range(len(spec.tasks)):
        for s in cfg.seeds:
            path = reference_path(root, cfg, spec, i, s)
            paths.append(path)
            if not path.exists():
                folder = path.with_suffix("")
                jobs.append(_Job(cfg, spec, hp, s, folder, only_task=i, progress=mode, verbose=verbose))
    results = _run_jobs(jobs, workers)
    for job, r in zip(jobs, results, strict=True):
        assert job.only_task is not None
        path = reference_path(root, cfg, spec, job.only_task, job.seed)
        record = {"task": spec.tasks[job.only_task].name, "seed": job.seed, "auc": r.aucs[0],
                  "final_score": r.rows[-1][0], "curves": r.curves, "config": cfg.to_dict()}  # fmt: skip
        write_json(path, record)
    return paths
