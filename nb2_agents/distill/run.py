"""``nb2 distill`` as a function: teachers into an NB2 student, in a run folder like ``nb2 train``'s.

>>> result = distill("teacher.zip", env="CartPole-v1", steps="50k")  # doctest: +SKIP
>>> result.eval.mean_return, result.report["teachers"][0]["teacher"]["mean_return"]  # doctest: +SKIP

Run folder ``{runs_dir}/{env or suite}__distill-{mode}__{preset}__s{seed}__{time}/``:
``config.yaml``, TensorBoard events (``rollout/``, ``train/``, ``eval/``, ``nb2/`` and
``distill/kl``, ``distill/lambda``, ``distill/teacher_agreement``; a curriculum adds
``curriculum/<task>/eval_score``), Monitor CSVs, ``checkpoints/``, ``model.zip`` (a PPO model:
``nb2 evaluate RUN`` works on it), ``eval.json`` (one env: the student's evaluation, as
``nb2 train`` writes it) and ``teachers.json`` (each teacher next to the student, see
:mod:`.report`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import VecEnv

from nb2_agents.callbacks import (
    CheckpointCallback,
    NB2LoggerCallback,
    ProgressCallback,
    SaveBestCallback,
    flat_hparams,
)
from nb2_agents.checkpoint import Checkpoint, RunParts, checkpoint_to_resume, cut_files, read_run_config
from nb2_agents.checkpoint.learn import learn_until
from nb2_agents.curriculum.evaluator import CurriculumCallback, evaluation_points
from nb2_agents.distill.labels import Labeler
from nb2_agents.distill.plan import Options, Plan, make_plan, resume_inputs
from nb2_agents.distill.report import (
    curriculum_evaluator,
    curriculum_report,
    deterministic_evals,
    env_report,
    summary_lines,
)
from nb2_agents.distill.student import build_student
from nb2_agents.evaluation import EvalResult, evaluate
from nb2_agents.hyperparams import parse_assignment
from nb2_agents.progress import Mode, progress_mode
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
    run_logger,
    save_model,
    write_json,
    write_text,
)
from nb2_agents.signals import sigterm_as_interrupt

TEACHERS_NAME = "teachers.json"


@dataclass
class DistillResult:
    """What one ``nb2 distill`` produced."""

    run_dir: Path
    model_path: Path
    mode: str
    steps: int
    """Environment steps the student took."""
    seconds: float
    interrupted: bool = False
    """Ctrl-C stopped training: model.zip and a checkpoint hold the student so far."""
    checkpoint: Path | None = None
    eval: EvalResult | None = None
    """The student's final evaluation (eval.json); None for a curriculum or when interrupted."""
    report: dict[str, Any] = field(default_factory=dict)
    """teachers.json: every teacher next to the student."""

    def summary(self) -> str:
        fps = self.steps / max(self.seconds, 1e-9)
        lines = [f"distilled ({self.mode}) {self.steps:,} steps in {self.seconds:.0f} s ({fps:,.0f} fps)"]
        if self.report:
            lines += summary_lines(self.report)
        lines += [f"run folder: {self.run_dir}", f"tensorboard --logdir {self.run_dir.parent}"]
        return "\n".join(lines)


def _evaluation(
    plan: Plan, run_dir: Path, resumed: bool
) -> tuple[BaseCallback, EvalCallback | None, Any, dict[str, VecEnv]]:
    """In-training evaluation: (callback, the EvalCallback for the progress bar, what to close,
    its envs by name for checkpoints).

    One env: SB3's EvalCallback (``eval/`` keys, ``checkpoints/best_model.zip``); a curriculum:
    every task (``curriculum/<task>/eval_score``), both every ``eval_freq`` steps."""
    if plan.spec is None:
        assert plan.env_spec is not None
        eval_env = plan.env_spec.make_vec(1, plan.eval_seed, monitor_dir=str(run_dir / "eval"), record=True,
                                          append=resumed)  # fmt: skip
        best = SaveBestCallback(run_dir / CHECKPOINTS / BEST_NAME, plan.meta())
        callback = EvalCallback(
            eval_env,
            callback_on_new_best=best,
            n_eval_episodes=5,
            eval_freq=max(plan.eval_freq // plan.n_envs, 1) if plan.eval_freq else 0,
            log_path=str(run_dir / "eval"),
            deterministic=plan.deterministic_eval,
            verbose=0,
            warn=False,
        )
        return callback, callback, eval_env, {"eval": eval_env}
    evaluator = curriculum_evaluator(plan, record=True)
    every_task = CurriculumCallback(evaluator, lambda step, results: None, lambda: -1, plan.steps, "off")
    if plan.eval_freq:
        every_task.schedule(evaluation_points(0, plan.steps, max(plan.steps // plan.eval_freq, 1)))
    return every_task, None, evaluator, {f"eval/{i}": env for i, env in enumerate(evaluator.envs)}


def _train(
    plan: Plan, run_dir: Path, mode: Mode, verbose: int, ckpt: Checkpoint | None = None
) -> tuple[BaseAlgorithm, float, bool, Path | None]:
    """Train the student in ``run_dir`` (from ``ckpt``, resumed); (model, seconds, interrupted,
    interruption checkpoint)."""
    opts = plan.options
    if ckpt is not None:
        cut_files(run_dir, ckpt)
    env = plan.make_env(run_dir, record=True, append=ckpt is not None)
    labeler = Labeler(plan.teachers, opts.temperature, get_device(opts.device), plan.common)
    model, callbacks, hooks = build_student(
        opts.mode,
        plan.hp,
        env,
        labeler,
        plan.steps,
        opts.seed,
        opts.device,
        plan.config["kl_coef"],
        opts.value_coef,
    )
    model.set_logger(run_logger(run_dir, verbose))
    eval_cb, sb3_eval, eval_resource, eval_envs = _evaluation(plan, run_dir, ckpt is not None)
    checkpoints = CheckpointCallback(run_dir / CHECKPOINTS, plan.save_freq, plan.meta())
    nb2_logger = NB2LoggerCallback(flat_hparams({**plan.config, "teachers": None}))
    bar = ProgressCallback(sb3_eval, mode, label="distill")
    start, interrupted = time.perf_counter(), False
    listed: list[BaseCallback] = [*callbacks, eval_cb, checkpoints, nb2_logger, bar]
    checkpoints.parts = parts = RunParts(model, {"train": env, **eval_envs}, listed, run_dir)
    try:
        with sigterm_as_interrupt():  # SIGTERM saves as Ctrl-C does
            learn_until(model, plan.steps, listed, parts, ckpt, "distill", verbose)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        for hook in hooks:
            hook.remove()
        bar.close()
        nb2_logger.remove_hooks()
        env.close()
        eval_resource.close()
    seconds = time.perf_counter() - start
    model.logger.dump(model.num_timesteps)  # the last update's train/ and distill/ values
    return model, seconds, interrupted, checkpoints.save(prefix="interrupted") if interrupted else None


def run(
    plan: Plan, runs_dir: str | Path = "runs", progress: bool | None = None, verbose: int = 1
) -> DistillResult:
    """Train the student of a checked :class:`Plan` in a fresh run folder, then evaluate it next
    to its teachers."""
    mode = plan.options.mode
    run_dir = new_run_dir(runs_dir, plan.name, f"distill-{mode}", plan.options.preset, plan.seed)
    with marks_failure(run_dir):
        return _run_in(plan, run_dir, progress, verbose)


def _run_in(
    plan: Plan, run_dir: Path, progress: bool | None, verbose: int, ckpt: Checkpoint | None = None
) -> DistillResult:
    mode = plan.options.mode
    write_text(
        run_dir / CONFIG_NAME, "# nb2 distill configuration, fully resolved\n" + dump_yaml(plan.config)
    )
    if verbose and ckpt is None:
        print(
            f"nb2 distill ({mode}): {', '.join(str(t.path) for t in plan.teachers)} -> {run_dir}", flush=True
        )
    model, seconds, interrupted, checkpoint = _train(plan, run_dir, progress_mode(progress), verbose, ckpt)
    model_path = save_model(model, run_dir / MODEL_NAME, plan.meta())
    result = DistillResult(
        run_dir, model_path, mode, int(model.num_timesteps), seconds, interrupted, checkpoint
    )
    if interrupted:
        return result
    if plan.spec is None:
        result.eval = evaluate(
            model_path,
            episodes=plan.final_episodes,
            seed=plan.eval_seed,
            deterministic=plan.deterministic_eval,
            device=plan.options.device,
        )
        write_json(run_dir / EVAL_NAME, {**result.eval.to_dict(), "train_seconds": round(seconds, 1)})
        result.report = env_report(plan, result.eval)
    else:
        evaluator = curriculum_evaluator(plan)
        try:
            result.report = curriculum_report(plan, evaluator.evaluate(model), deterministic_evals(plan))
        finally:
            evaluator.close()
    write_json(run_dir / TEACHERS_NAME, result.report)
    return result


def distill(
    teachers: str | Path | Sequence[str | Path],
    env: str | None = None,
    curriculum: str | Path | None = None,
    *,
    preset: str = "nano",
    steps: int | str | None = None,
    mode: str = "pure",
    temperature: float = 1.0,
    kl_coef: float = 1.0,
    value_coef: float = 0.5,
    runs_dir: str | Path = "runs",
    seed: int = 0,
    trust_pickle: bool = False,
    device: str = "auto",
    eval_freq: int | str | None = None,
    final_episodes: int | None = None,
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
    progress: bool | None = None,
    verbose: int = 1,
) -> DistillResult:
    """Distil teachers into an NB2 student (PPO + NB2 policy), as ``nb2 distill`` does.

    Every input is checked and every teacher loaded before anything is written; bad input
    raises :class:`~nb2_agents.errors.UsageError`.

    :param teachers: a model zip, run folder or ``zoo:NAME``; for a curriculum, one per task, in order
    :param env: the env id (one teacher) ...
    :param curriculum: ... or a curriculum (built-in suite or YAML file): one multi-task student
    :param steps: env steps (default: the entry's ``n_timesteps``; the curriculum's total)
    :param mode: ``pure`` (distillation loss only) or ``kickstart`` (PPO's loss plus the
        distillation loss, its weight falling linearly from ``kl_coef`` to 0)
    :param temperature: τ of ``softmax(logits / τ)`` / ``softmax(Q / τ)`` for Discrete teachers
        (below 1 sharpens; Q-value teachers often need a small τ, Rusu et al. used 0.01)
    :param value_coef: weight of the value regression to the teacher's value estimate
    :param trust_pickle: load teachers that need unpickling with SB3's ``load`` (``--trust-pickle``)
    :param eval_freq: evaluate the student every this many steps (0: never; default: steps / 10)
    :param final_episodes: episodes of the final evaluation of student and teacher (one env;
        default 20; a curriculum uses each task's ``eval_episodes``)
    :param overrides: the student's hyperparameters over the env's ``policies/distill.yaml``
        (pure) or ``ppo.yaml`` (kickstart) entry or the curriculum's settings: ``{"n_epochs": 20}``
        or ``["n_epochs=20"]`` (``--set``)
    :param progress: a progress bar on stderr; None: a bar on a terminal, a line every 30 s elsewhere
    :param verbose: 0 prints nothing, 1 what it does and the report, 2 also SB3's table of logged
        values (``-q``, the default, ``-v``)
    """
    paths = [teachers] if isinstance(teachers, (str, Path)) else list(teachers)
    options = Options(
        mode=mode,
        temperature=float(temperature),
        kl_coef=float(kl_coef),
        value_coef=float(value_coef),
        preset=preset,
        steps=steps,
        seed=int(seed),
        device=device,
        trust=trust_pickle,
        eval_freq=eval_freq,
        final_episodes=final_episodes,
        overrides=dict(
            overrides.items() if isinstance(overrides, Mapping) else map(parse_assignment, overrides or ())
        ),
    )
    plan = make_plan(paths, env, curriculum, options)
    return run(plan, runs_dir=runs_dir, progress=progress, verbose=verbose)


def resume_distill(
    run_dir: str | Path,
    *,
    force: bool = False,
    trust_pickle: bool = False,
    progress: bool | None = None,
    verbose: int = 1,
) -> DistillResult:
    """Continue an ``nb2 distill`` run from its newest checkpoint, exactly as if it had not stopped
    (``nb2 distill --resume RUN``): its plan is rebuilt from its ``config.yaml`` and the teachers
    reloaded. Refused with the reason: a finished run, one without a checkpoint, a rebuilt
    configuration that differs from the recorded one (another nb2-agents version, changed
    defaults, a teacher that moved) unless ``force``. ``trust_pickle``: as ``--trust-pickle``."""
    run = Path(run_dir)
    config = read_run_config(run, "distill")
    teachers, env, curriculum, options = resume_inputs(config)
    plan = make_plan(teachers, env, curriculum, replace(options, trust=trust_pickle))
    restart = f"nb2 distill with the options in {run / CONFIG_NAME}"
    ckpt = checkpoint_to_resume(
        run, config, plan.config, force, "distill", verbose, TEACHERS_NAME, plan.save_freq, restart
    )
    (run / FAILED_NAME).unlink(missing_ok=True)
    with marks_failure(run):
        return _run_in(plan, run, progress, verbose, ckpt)
