"""One seed of a curriculum: one agent trained across the tasks, evaluated throughout, and
checkpointed so that a killed run continues exactly where it stopped (``nb2 curriculum --resume``).

A seed's resumable checkpoints (``s{seed}/checkpoints/state/<steps>/``) are written at the first
rollout of each task window and every ``checkpoint_freq`` steps (at a rollout start, as
``nb2 train`` writes them). Each holds what :mod:`nb2_agents.checkpoint` holds for a single run
(weights, optimizers, counters, generators, every env's episode in progress, the evaluation envs'
included, callback counters, Monitor lengths, TensorBoard's step) and the curriculum's own state:
its position (the task window and the step it started at), every evaluation so far, the
retention strategy's replay memory, snapshots, Fishers and generator, each task's normalisation
statistics, and the time spent so far. A seed that finished writes ``result.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.vec_env import VecEnv

from nb2_agents.callbacks import CheckpointCallback, NB2LoggerCallback, flat_hparams
from nb2_agents.checkpoint import STATE_DIR, Checkpoint, RunParts, capture, cut_files, listed, restore, write
from nb2_agents.checkpoint.resume import newest_checkpoint
from nb2_agents.cli_common import EXIT_INTERRUPTED
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
from nb2_agents.curriculum.metrics import matrix_to_csv, window_auc
from nb2_agents.curriculum.results import CurriculumConfig, SeedResult, phase_seconds, write_curves
from nb2_agents.curriculum.schedules import task_schedules
from nb2_agents.curriculum.spec import CurriculumSpec
from nb2_agents.envs_util import check_algo, is_minigrid_id
from nb2_agents.errors import UsageError
from nb2_agents.hyperparams import Hyperparams
from nb2_agents.normalize import RunningStats
from nb2_agents.progress import Mode
from nb2_agents.retention.base import make_strategy
from nb2_agents.runs import CHECKPOINTS, remove_stale_temps, run_logger, safe_name, save_model, write_json
from nb2_agents.sb3 import algos
from nb2_agents.sb3.extra_loss import install_extra_loss
from nb2_agents.signals import sigterm_as_interrupt
from nb2_agents.stopwatch import Stopwatch
from nb2_agents.training import make_algorithm

RESULT_NAME = "result.json"
"""A finished seed's :class:`SeedResult`: a resumed run takes it as it is."""


def probe_spaces(spec: CurriculumSpec, algo: str, memory: int | None = None) -> CommonSpaces:
    """Build each task's env once to read its spaces, then the spaces they share (``memory``: the
    past steps each env keeps, ``policy_kwargs.memory``)."""
    obs, act = [], []
    for task in spec.tasks:
        env = normalized(task, task.env_spec(algo).make())
        try:
            obs.append(env.observation_space)
            act.append(env.action_space)
        finally:
            env.close()
    common = common_spaces(spec.task_names(), obs, act, curriculum=f"curriculum {spec.name}")
    common = dataclasses.replace(common, memory=memory)
    check_algo(algo, f"curriculum {spec.name}", common.action_space)
    if common.action_masked and not algos.ALGOS[algo].masks_actions:
        valid = [name for name, row in algos.ALGOS.items() if row.masks_actions]
        raise UsageError(
            f"curriculum {spec.name}: tasks have different numbers of actions, which are masked per task; "
            f"--algo {algo} cannot mask actions. Valid: {', '.join(valid)}"
        )
    return common


def deterministic_eval(env_id: str) -> bool:
    """Whether a task is evaluated with greedy actions."""
    return not is_minigrid_id(env_id)  # RL Zoo samples MiniGrid actions


@dataclass
class SeedJob:
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
    resume: bool = False
    """Continue from the seed's newest checkpoint (a finished seed: its ``result.json``)."""
    parent: int | None = None
    """In a worker process: the pid of the run's process; the seed stops if that one dies."""


def train_seed(job: SeedJob) -> SeedResult:
    """Train one seed of a curriculum (or one reference task) and evaluate it throughout."""
    ckpt = None
    if job.resume:
        done = job.seed_dir / RESULT_NAME
        if done.is_file():
            return SeedResult(**json.loads(done.read_text()))
        folder = job.seed_dir / CHECKPOINTS / STATE_DIR
        ckpt = newest_checkpoint(folder, "curriculum")
        if ckpt is None and listed(folder):
            raise UsageError(
                f"--resume: no checkpoint in {folder} can be read (each is named above); "
                f"delete {job.seed_dir} to train seed {job.seed} again from the start"
            )
        if ckpt is None:  # stopped before its first checkpoint (at the first rollout): nothing to keep
            shutil.rmtree(job.seed_dir, ignore_errors=True)
        else:
            cut_files(job.seed_dir, ckpt)  # Monitor rows written after the checkpoint would count twice
            remove_stale_temps(job.seed_dir)  # what a write the kill cut short left behind
    try:
        return _SeedRun(job, ckpt).run()
    except _Orphaned:
        os._exit(EXIT_INTERRUPTED)  # no parent to report to: the pool would keep this process waiting


class _Observe(BaseCallback):
    """Hands each step's new observations to the strategy (its replay memory)."""

    def __init__(self, run: _SeedRun) -> None:
        super().__init__()
        self.run = run

    def _on_step(self) -> bool:
        if self.run.task >= 0:
            with self.run.watch("retention"):
                self.run.strategy.observe(self.run.task, self.locals["new_obs"])
        return True


class _Orphaned(KeyboardInterrupt):
    """The run's process died: this worker saves as on Ctrl-C, then exits."""


class _StopIfOrphaned(BaseCallback):
    """A worker whose run's process died (``kill -9``, a crash) stops as on Ctrl-C and exits,
    rather than train on unseen (a ``--resume`` would train the same seed a second time beside
    it) and then wait for work forever, holding the terminal's or a pipe's output open."""

    def __init__(self, parent: int) -> None:
        super().__init__()
        self.parent_pid = parent  # not ``parent``: SB3's callbacks have one (the callback above them)

    def _on_step(self) -> bool:
        if self.n_calls % 64 == 0 and not _alive(self.parent_pid):
            raise _Orphaned
        return True


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (the run's process, whose child a Ray worker is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


class _SeedRun:
    """The agent, its envs, evaluator, strategy and callbacks for one seed; :meth:`run` trains it."""

    def __init__(self, job: SeedJob, ckpt: Checkpoint | None) -> None:
        cfg, spec, seed = job.cfg, job.spec, job.seed
        self.job, self.cfg, self.seed, self.ckpt = job, cfg, seed, ckpt
        self.common = probe_spaces(spec, cfg.algo, job.hp.memory)
        self.tasks = tasks = list(spec.tasks)
        only = job.only_task
        self.multitask = cfg.mode == "multitask" and only is None
        order = list(range(len(tasks))) if only is None else [only]
        self.evaluated = tasks if only is None else [tasks[only]]
        self.eval_ids = list(range(len(tasks))) if only is None else [only]
        self.total = sum(tasks[i].steps for i in order)
        self.windows: list[tuple[int | None, int]] = (
            [(None, self.total)] if self.multitask else [(i, tasks[i].steps) for i in order]
        )
        job.seed_dir.mkdir(parents=True, exist_ok=True)
        self.n_envs = job.hp.n_envs
        if self.multitask and self.n_envs % len(tasks):
            self.n_envs = len(tasks) * -(-self.n_envs // len(tasks))  # every task the same number of copies
        self.stats = task_stats(tasks, self.common, job.hp.gamma)  # normalisation, per task that has it

        saved = ckpt.info["extra"] if ckpt else {"window": 0, "start": 0}
        self.position = {"window": int(saved["window"]), "start": int(saved["start"])}
        """The task window being trained and the step it started at."""
        first = self.windows[self.position["window"]][0]
        self.task = -1 if first is None else first
        env = self._train_env(first, append=ckpt is not None)
        self.model, extra = make_algorithm(cfg.algo, job.hp, env, seed, cfg.device)
        self.model.set_logger(run_logger(job.seed_dir, job.verbose))
        self.schedules = task_schedules(self.model, extra)
        self.strategy = make_strategy(cfg.retention, cfg.retention_options)
        probe = task_probe(tasks, self.common, cfg.algo, seed, cfg.task_ids, self.stats)
        self.strategy.setup(self.model, {"spec": spec, "common": self.common, "config": cfg, "seed": seed,
                                         "probe": probe})  # fmt: skip
        self.watch = Stopwatch()  # where the wall time goes: evaluation, retention, the rest is training
        deterministic = [deterministic_eval(t.env_id) for t in self.evaluated]
        self.evaluator = Evaluator(self.evaluated, self.common, cfg.algo, seed, deterministic, self.eval_ids,
                                   cfg.task_ids, self.stats, record=True)  # fmt: skip
        self.result = SeedResult(seed, [], [], [], [], 0.0, 0)
        self.scores: dict[int, list[float]] = {j: [] for j in range(len(self.evaluated))}
        """Per evaluated task, its scores during its own window (all windows in multitask): the AUC."""
        label = f"s{seed}" if only is None else f"ref {tasks[only].name} s{seed}"
        self.callback = CurriculumCallback(self.evaluator, self._on_eval, lambda: self.task, self.total,
                                           job.progress, self.strategy.log, label, self.watch)  # fmt: skip
        self.nb2_logger = NB2LoggerCallback(flat_hparams(cfg.to_dict()), dormant_prefix="retention/")
        freq = cfg.checkpoint_freq if only is None else 0  # a reference run is not resumed
        self.saver = CheckpointCallback(job.seed_dir / CHECKPOINTS, freq, {}, cfg.keep_checkpoints,
                                        zips=False, at_end=False)  # fmt: skip
        self.saver.write_state = self._write_state
        self.callbacks: list[BaseCallback] = [self.callback, self.nb2_logger, _Observe(self), *extra]
        self.callbacks.append(self.saver)
        if job.parent is not None:
            self.callbacks.append(_StopIfOrphaned(job.parent))
        evals = {f"eval.{j}": e for j, e in enumerate(self.evaluator.envs)}
        self.parts = RunParts(self.model, {"train": env, **evals}, self.callbacks, job.seed_dir)
        self.seconds_before = 0.0
        """Seconds the seed trained before the checkpoint it resumed from."""

    def _train_env(self, task_index: int | None, append: bool = False) -> VecEnv:
        """Task ``task_index``'s training envs, or (None) every task's at once for multitask; each
        task's envs update its normalisation statistics."""
        cfg, seed, seed_dir, tasks = self.cfg, self.seed, self.job.seed_dir, self.tasks
        if task_index is not None:
            task = tasks[task_index]
            monitor = seed_dir / "monitor" / safe_name(task.name)
            return task_vec_env(task, task_index, self.common, cfg.algo, self.n_envs, seed, monitor,
                                cfg.task_ids, self.stats.get(task_index), training=True, record=True,
                                append=append)  # fmt: skip
        copies = self.n_envs // len(tasks)  # multitask: task i runs in copies i*k .. i*k + k - 1
        fns = []
        for i, t in enumerate(tasks):
            monitor = seed_dir / "monitor" / safe_name(t.name)
            fns += task_env_fns(t, i, self.common, cfg.algo, copies, seed + copies * i, monitor, cfg.task_ids,
                                self.stats.get(i), training=True, record=True, append=append)  # fmt: skip
        return vec_env(fns, seed, self.common.memory)

    def _on_eval(self, step: int, results: list[TaskEval]) -> None:
        for j, (task, r) in enumerate(zip(self.evaluated, results, strict=True)):
            self.result.curves.append(curve_row(self.seed, step, self.task, task.name, r))
            if step > 0 and (self.multitask or self.eval_ids[j] == self.task):
                self.scores[j].append(r.score)
        # as they come: a killed run keeps them
        write_curves(self.job.seed_dir / "curves.csv", self.result.curves)

    # --- checkpoints
    def _write_state(self) -> Path:
        r = self.result
        self.parts.extra = {
            **self.position,
            "rows": r.rows, "curves": r.curves, "task_end_steps": r.task_end_steps,
            "scores": {str(j): s for j, s in self.scores.items()},
            "seconds": self.seconds_before + time.perf_counter() - self._started,
            "watch": dict(self.watch.seconds),
            "stats": {str(i): s.to_dict() for i, s in self.stats.items()},
        }  # fmt: skip
        ckpt = capture(self.parts)
        info, arrays, tensors = self.strategy.checkpoint_state()
        ckpt.info["strategy"] = info
        ckpt.arrays.update({f"strategy/{k}": v for k, v in arrays.items()})
        ckpt.torch_part["strategy"] = tensors
        return write(self.job.seed_dir / CHECKPOINTS / STATE_DIR, ckpt, self.cfg.keep_checkpoints)

    def _restore(self, ckpt: Checkpoint) -> BaseCallback:
        """Put the run in the checkpoint's state; the returned callback goes first into the
        resumed ``learn`` (it puts back what ``learn``'s set-up resets)."""
        first = restore(self.parts, ckpt)
        extra = ckpt.info["extra"]
        r = self.result
        r.rows, r.curves, r.task_end_steps = extra["rows"], extra["curves"], extra["task_end_steps"]
        self.scores = {int(j): list(s) for j, s in extra["scores"].items()}
        self.seconds_before = float(extra["seconds"])
        self.watch.seconds = {k: float(v) for k, v in extra["watch"].items()}
        for i, saved in extra["stats"].items():  # after the episodes' replay, which updated them
            loaded = RunningStats.from_dict(saved, f"{ckpt.path}: stats of task {i}")
            self.stats[int(i)].obs_rms, self.stats[int(i)].ret_rms = loaded.obs_rms, loaded.ret_rms
        strategy = {
            k.removeprefix("strategy/"): v for k, v in ckpt.arrays.items() if k.startswith("strategy/")
        }
        self.strategy.load_checkpoint_state(ckpt.info["strategy"], strategy, ckpt.torch_part["strategy"],
                                            self.model)  # fmt: skip
        if self.job.verbose:
            print(f"nb2 curriculum: s{self.seed} resuming at {self.model.num_timesteps:,} of {self.total:,} "
                  f"steps (checkpoint {ckpt.path})", flush=True)  # fmt: skip
        return first

    # --- training
    def run(self) -> SeedResult:
        job, model, strategy = self.job, self.model, self.strategy
        hooks = install_extra_loss(model, strategy.extra_loss, self.watch)
        self._started = time.perf_counter()
        resumed = self._restore(self.ckpt) if self.ckpt is not None else None
        with sigterm_as_interrupt():  # SIGTERM saves as Ctrl-C does
            try:
                if resumed is None:
                    self.callback.evaluate_now(model)  # step 0: the untrained agent on every task
                for k in range(self.position["window"], len(self.windows)):
                    self._window(k, resumed)
                    resumed = None
            except KeyboardInterrupt:
                # keep what was trained and measured: the model now, and every evaluation so far
                path = job.seed_dir / "interrupted.zip"
                self._save(path)
                ckpts = job.seed_dir / CHECKPOINTS / STATE_DIR
                print(f"\ninterrupted at {model.num_timesteps:,} steps: model {path}, curves "
                      f"{job.seed_dir / 'curves.csv'}; continue from {ckpts} with --resume",
                      file=sys.stderr)  # fmt: skip
                raise
            finally:
                for hook in hooks:
                    hook.remove()
                self.nb2_logger.remove_hooks()
                self.callback.close()
                self.evaluator.close()
                model.get_env().close()  # type: ignore[union-attr]
        return self._finish()

    def _window(self, k: int, resumed: BaseCallback | None) -> None:
        """Train task window ``k`` (every task at once in multitask), then evaluate and save; with
        ``resumed``, the window continues from the checkpoint ``_restore`` put back."""
        model, strategy, cfg = self.model, self.strategy, self.cfg
        task_index, steps = self.windows[k]
        self.task = -1 if task_index is None else task_index
        if resumed is None:
            if k > 0:
                self._switch_env(self._train_env(task_index))
            self.position = {"window": k, "start": int(model.num_timesteps)}
            n_points = cfg.evals_per_task * (len(self.tasks) if self.multitask else 1)
            self.callback.schedule(evaluation_points(model.num_timesteps, steps, n_points))
            if task_index is not None:
                with self.watch("retention"):
                    strategy.on_task_start(task_index, model)
            self.saver.save_first = self.job.only_task is None  # a checkpoint at each task's start
        start = self.position["start"]
        for schedule in self.schedules:
            schedule.start, schedule.length = start, steps
        callbacks = self.callbacks if resumed is None else [resumed, *self.callbacks]
        model.learn(start + steps - model.num_timesteps, callback=CallbackList(callbacks),
                    reset_num_timesteps=False)  # fmt: skip
        if task_index is not None:
            with self.watch("retention"):
                strategy.on_task_end(task_index, model)
        results = self.callback.evaluate_now(model)
        self.result.rows.append([r.score for r in results])
        self.result.task_end_steps.append(int(model.num_timesteps))
        if self.job.only_task is None:
            name = (
                "multitask"
                if task_index is None
                else f"after_{task_index}_{safe_name(self.tasks[task_index].name)}"
            )
            self._save(self.job.seed_dir / CHECKPOINTS / f"{name}.zip")
            strategy.save(self.job.seed_dir / CHECKPOINTS / f"{name}.retention")

    def _switch_env(self, env: VecEnv) -> None:
        """Train on ``env`` from now on; close the previous env."""
        previous = self.model.get_env()
        self.model.set_env(env, force_reset=True)
        if previous is not None:
            previous.close()
        self.model.ep_info_buffer.clear()  # type: ignore[union-attr]  # rollout/ keys: the current task only
        self.parts.envs["train"] = env

    def _finish(self) -> SeedResult:
        r, job = self.result, self.job
        r.seconds = self.seconds_before + time.perf_counter() - self._started
        r.phase_seconds = phase_seconds(r.seconds, self.watch.seconds)
        r.steps = int(self.model.num_timesteps)
        r.aucs = [window_auc(self.scores[j]) if self.scores[j] else None for j in range(len(self.evaluated))]
        self._save(job.seed_dir / "model.zip")
        if job.only_task is None and self.cfg.mode == "sequential":
            matrix_to_csv(np.asarray(r.rows), job.spec.task_names(), job.seed_dir / "matrix.csv")
        write_json(job.seed_dir / RESULT_NAME, asdict(r))
        return r

    def _save(self, path: Path) -> None:
        """The model, nb2's metadata and each normalised task's statistics (by task name)."""
        cfg, tasks = self.cfg, self.tasks
        meta = {**_meta(cfg, self.seed), "tasks": [t.name for t in tasks], "task_ids": cfg.task_ids}
        save_model(self.model, path, meta, {tasks[i].name: s for i, s in self.stats.items()})


def _meta(cfg: CurriculumConfig, seed: int) -> dict[str, Any]:
    meta = {"algo": cfg.algo, "env": None, "curriculum": cfg.suite, "preset": cfg.preset, "seed": seed,
            "mode": cfg.mode, "retention": cfg.retention}  # fmt: skip
    source = Path(str(cfg.curriculum))
    if source.suffix in (".yaml", ".yml") and source.is_file():  # not a built-in: where to find it again
        meta["curriculum_file"] = str(source.resolve())
    return meta
