"""``nb2 train`` as a function: resolve a configuration, train in a fresh run folder, evaluate.

>>> result = train(env="CartPole-v1", steps="100k", seed=0)  # doctest: +SKIP
>>> result.run_dir, result.eval.mean_return  # doctest: +SKIP

Everything the user gives is checked by :func:`resolve_config` before any folder is created;
bad input raises :class:`~nb2_agents.errors.UsageError`. See :mod:`nb2_agents.runs` for the
run folder's layout and :mod:`nb2_agents.callbacks` for what goes to TensorBoard.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise
from stable_baselines3.common.vec_env import VecEnv

from nb2_agents.callbacks import (
    CheckpointCallback,
    EntCoefScheduleCallback,
    NB2LoggerCallback,
    ProgressCallback,
    SaveBestCallback,
    flat_hparams,
)
from nb2_agents.checkpoint import Checkpoint, RunParts, checkpoint_to_resume, cut_files, read_run_config
from nb2_agents.checkpoint.learn import learn_until
from nb2_agents.config import TrainConfig, TrainOptions, options_of, resolve_config
from nb2_agents.envs_util import EnvSpec
from nb2_agents.errors import UsageError
from nb2_agents.evaluation import EVAL_SEED_OFFSET, EvalResult, evaluate
from nb2_agents.hyperparams import ALGOS, Hyperparams, LinearSchedule, parse_entry
from nb2_agents.memory import MemoryWindow
from nb2_agents.nn.model import NB2
from nb2_agents.normalize import vec_normalize
from nb2_agents.progress import progress_mode
from nb2_agents.runs import (
    BEST_NAME,
    CHECKPOINTS,
    CONFIG_NAME,
    EVAL_NAME,
    FAILED_NAME,
    MODEL_NAME,
    dump_yaml,
    marks_failure,
    new_run_dir,
    remove_stale_temps,
    run_logger,
    save_model,
    write_config,
    write_json,
)
from nb2_agents.signals import sigterm_as_interrupt

__all__ = ["TrainConfig", "TrainOptions", "TrainResult", "resolve_config", "run", "train"]


@dataclass
class TrainResult:
    """What one ``nb2 train`` produced."""

    run_dir: Path
    model_path: Path
    config: TrainConfig
    steps: int
    """Environment steps trained."""
    seconds: float
    interrupted: bool = False
    """True when Ctrl-C (or ``on_eval``) stopped training: model.zip and a checkpoint hold the
    model so far."""
    checkpoint: Path | None = None
    """The checkpoint written on Ctrl-C."""
    eval: EvalResult | None = None
    """The final evaluation (also in eval.json); None when interrupted."""

    def summary(self) -> str:
        fps = self.steps / max(self.seconds, 1e-9)
        lines = [f"trained {self.steps:,} steps in {self.seconds:.0f} s ({fps:,.0f} fps)"]
        if self.eval is not None:
            lines.append(f"evaluation: {self.eval.summary()}")
        lines += [f"run folder: {self.run_dir}", f"tensorboard --logdir {self.run_dir.parent}"]
        return "\n".join(lines)


def _action_noise(hp: Hyperparams, n_actions: int) -> Any:
    if hp.noise_type is None:
        return None
    mean, sigma = np.zeros(n_actions), hp.noise_std * np.ones(n_actions)
    if hp.noise_type == "normal":
        return NormalActionNoise(mean, sigma)
    return OrnsteinUhlenbeckActionNoise(mean, sigma)


def make_algorithm(
    algo: str, hp: Hyperparams, env: VecEnv, seed: int, device: str
) -> tuple[BaseAlgorithm, list[BaseCallback]]:
    """The SB3 algorithm for a resolved entry, and the callbacks its settings need
    (``ent_coef: lin_X`` is annealed by a callback; SB3 takes a float)."""
    kwargs = dict(hp.algo_kwargs)
    noise = _action_noise(hp, int(np.prod(env.action_space.shape or (1,))))
    if noise is not None:
        kwargs["action_noise"] = noise
    callbacks: list[BaseCallback] = []
    ent_schedule = kwargs.get("ent_coef")
    if isinstance(ent_schedule, LinearSchedule):
        kwargs["ent_coef"] = ent_schedule(1.0)
        callbacks.append(EntCoefScheduleCallback(ent_schedule))
    model = ALGOS[algo](hp.policy, env, seed=seed, device=device, verbose=0, **kwargs)
    return model, callbacks


OnEval = Callable[[int, float], bool]
"""Called after each evaluation during training with the step and the mean return; False stops
training there (a sweep's pruner), as Ctrl-C does: the model and a checkpoint are saved."""


class _AfterEval(BaseCallback):
    """After each evaluation: a line on stdout when there is no progress bar to show it, and
    ``on_eval``; training stops when it says so."""

    def __init__(self, line: bool, on_eval: OnEval | None) -> None:
        super().__init__()
        self.line, self.on_eval = line, on_eval
        self.stopped = False

    def _on_step(self) -> bool:
        parent = self.parent
        assert isinstance(parent, EvalCallback)
        step, value = self.model.num_timesteps, float(parent.last_mean_reward)
        if self.line:
            print(f"[eval] {step:,} steps: mean return {value:.3g}", flush=True)
        if self.on_eval is not None and not self.on_eval(step, value):
            self.stopped = True
        return not self.stopped


def run(
    cfg: TrainConfig,
    runs_dir: str | Path = "runs",
    progress: bool | None = None,
    verbose: int = 1,
    on_eval: OnEval | None = None,
    folder: Path | None = None,
) -> TrainResult:
    """Train ``cfg`` (already resolved) in a fresh folder under ``runs_dir`` (or in ``folder``,
    an empty one).

    Ctrl-C (or SIGTERM) during training, or ``on_eval`` returning False, saves ``model.zip`` and
    ``checkpoints/interrupted_*.zip`` and returns with ``interrupted=True``.

    :param progress: a progress bar on stderr; None: a bar on a terminal, a line every 30 s elsewhere
    """
    run_dir = folder or new_run_dir(runs_dir, cfg.env, cfg.algo, cfg.preset, cfg.seed)
    with marks_failure(run_dir):
        return _run_in(cfg, run_dir, progress, verbose, on_eval=on_eval)


def _run_in(
    cfg: TrainConfig,
    run_dir: Path,
    progress: bool | None,
    verbose: int,
    ckpt: Checkpoint | None = None,
    on_eval: OnEval | None = None,
) -> TrainResult:
    """Train in ``run_dir``: from scratch, or from ``ckpt`` (a resumed run)."""
    write_config(run_dir / CONFIG_NAME, cfg.to_dict())
    if ckpt is not None:
        cut_files(run_dir, ckpt)  # Monitor rows written after the checkpoint would count twice
        remove_stale_temps(run_dir)  # what a write the crash cut short left behind
    if verbose and ckpt is None:
        print(f"nb2 train: resolved configuration (saved as {run_dir / CONFIG_NAME}):")
        print("  " + dump_yaml(cfg.to_dict()).rstrip().replace("\n", "\n  "), flush=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    hp = parse_entry(ALGOS[cfg.algo], cfg.hyperparams, f"{run_dir / CONFIG_NAME} [hyperparams]")
    spec = EnvSpec(cfg.env, cfg.env_kwargs, cfg.algo)
    resumed = ckpt is not None
    env = spec.make_vec(hp.n_envs, cfg.seed, monitor_dir=str(run_dir), record=True, append=resumed)
    eval_env = spec.make_vec(1, cfg.seed + EVAL_SEED_OFFSET, monitor_dir=str(run_dir / "eval"),
                             record=True, append=resumed)  # fmt: skip
    if hp.normalize is not None:  # SB3's EvalCallback copies the statistics over before evaluating
        env = vec_normalize(env, hp.normalize, hp.gamma)
        eval_env = vec_normalize(eval_env, hp.normalize, hp.gamma, training=False)
    if hp.memory is not None:  # outermost: the memory holds what the policy reads
        env, eval_env = MemoryWindow(env, hp.memory), MemoryWindow(eval_env, hp.memory)
    model, extra_callbacks = make_algorithm(cfg.algo, hp, env, cfg.seed, cfg.device)
    model.set_logger(run_logger(run_dir, verbose))
    if verbose and ckpt is None:
        nets = [m for m in model.policy.modules() if isinstance(m, NB2)]
        for reason in sorted({str(n.encoder.sampling_off) for n in nets if n.encoder.sampling_off}):
            print(f"nb2 train: token sampling is off: {reason}", flush=True)
    meta = {
        "algo": cfg.algo,
        "env": cfg.env,
        "env_kwargs": cfg.env_kwargs,
        "preset": cfg.preset,
        "seed": cfg.seed,
        "eval_seed": cfg.seed + EVAL_SEED_OFFSET,
        "deterministic_eval": cfg.deterministic_eval,
    }

    mode = progress_mode(progress)
    show = mode == "bar"
    eval_class = MaskableEvalCallback if cfg.algo == "maskable_ppo" else EvalCallback
    after_eval = _AfterEval(line=not show and verbose > 0, on_eval=on_eval)
    eval_cb = eval_class(
        eval_env,
        callback_on_new_best=SaveBestCallback(run_dir / CHECKPOINTS / BEST_NAME, meta),
        callback_after_eval=after_eval,
        n_eval_episodes=cfg.eval_episodes,
        eval_freq=max(cfg.eval_freq // hp.n_envs, 1) if cfg.eval_freq else 0,
        log_path=str(run_dir / "eval"),
        deterministic=cfg.deterministic_eval,
        verbose=0,
        warn=False,
    )
    checkpoints = CheckpointCallback(run_dir / CHECKPOINTS, cfg.save_freq, meta, cfg.keep_checkpoints)
    nb2_logger = NB2LoggerCallback(flat_hparams({**cfg.to_dict(), "architecture": None}))
    bar = ProgressCallback(eval_cb, mode)
    callbacks: list[BaseCallback] = [eval_cb, checkpoints, nb2_logger, bar, *extra_callbacks]
    checkpoints.parts = parts = RunParts(model, {"train": env, "eval": eval_env}, callbacks, run_dir)
    start, interrupted = time.perf_counter(), False
    try:
        with sigterm_as_interrupt():
            learn_until(model, cfg.steps, callbacks, parts, ckpt, "train", verbose)
        interrupted = after_eval.stopped
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        nb2_logger.remove_hooks()
        env.close()
        eval_env.close()
    seconds = time.perf_counter() - start
    model.logger.dump(model.num_timesteps)  # the last update's train/ and nb2/ values
    model_path = save_model(model, run_dir / MODEL_NAME, meta)
    result = TrainResult(run_dir, model_path, cfg, int(model.num_timesteps), seconds, interrupted)
    if interrupted:
        result.checkpoint = checkpoints.save(prefix="interrupted")
        return result
    result.eval = evaluate(
        model_path,
        episodes=cfg.final_episodes,
        seed=cfg.seed + EVAL_SEED_OFFSET,
        deterministic=cfg.deterministic_eval,
        device=cfg.device,
    )
    write_json(run_dir / EVAL_NAME, {**result.eval.to_dict(), "train_seconds": round(seconds, 1)})
    return result


def train(
    options: TrainOptions | str | None = None,
    /,
    *,
    runs_dir: str | Path = "runs",
    progress: bool | None = None,
    verbose: int = 1,
    resume: str | Path | None = None,
    force: bool = False,
    **fields: Any,
) -> TrainResult:
    """Train an NB2 policy as ``nb2 train`` does, and return where everything went.

    What to train is a :class:`TrainOptions` (the CLI's options by the same names), given as
    ``options`` (or just its env id), or by keyword (``train(env="CartPole-v1", steps="100k")``),
    or both (keywords over ``options``); ``None`` means the config file's value, else the
    hyperparameter file's, else the default. Ctrl-C stops training, saves ``model.zip`` and a
    checkpoint and returns with ``interrupted=True``. ``verbose``: 0 prints nothing, 1 the configuration and
    evaluations, 2 also SB3's table of logged values (``-q``, the default, ``-v``).

    ``resume``: a run folder to continue from its newest checkpoint (:func:`resume_run`); the other
    options then change its configuration only with ``force``.
    """
    opts: TrainOptions = options_of(TrainOptions, options, fields)
    if resume is not None:
        if opts.config is not None:
            raise UsageError("--resume RUN continues RUN's own config.yaml; --config cannot be given with it")
        opts = dataclasses.replace(opts, config=Path(resume) / CONFIG_NAME)
    cfg = resolve_config(opts)
    if resume is not None:
        return resume_run(Path(resume), cfg, force, progress, verbose)
    return run(cfg, runs_dir=runs_dir, progress=progress, verbose=verbose)


def resume_run(
    run_dir: Path,
    cfg: TrainConfig,
    force: bool = False,
    progress: bool | None = None,
    verbose: int = 1,
    on_eval: OnEval | None = None,
) -> TrainResult:
    """Continue ``run_dir`` from its newest readable checkpoint, as if it had never stopped.

    Refused, with the reason: a finished run (it has ``eval.json``); a run without a checkpoint;
    a configuration (``cfg``, the run's own unless options changed it) or an nb2-agents version
    other than the run's, unless ``force``. A damaged newest checkpoint falls back to the one
    before it, and says so."""
    saved = read_run_config(run_dir, "train")
    restart = f"nb2 train --config {run_dir / CONFIG_NAME}"
    ckpt = checkpoint_to_resume(
        run_dir, saved, cfg.to_dict(), force, "train", verbose, EVAL_NAME, cfg.save_freq, restart
    )
    (run_dir / FAILED_NAME).unlink(missing_ok=True)
    with marks_failure(run_dir):
        return _run_in(cfg, run_dir, progress, verbose, ckpt, on_eval)
