"""One trial of a sweep: ``nb2 train`` with the trial's values over the entry, reporting each
evaluation during training to the search (which may stop it early: pruning); for a curriculum
suite, ``nb2 curriculum`` with the values over the suite's hyperparameters, scored by its average
performance (reported once, at the end: ASHA does not stop a suite's trials).

The objective is the mean return of the final evaluation, after training (the run's eval.json:
``eval_episodes`` episodes on its evaluation env, seed + 1000); the evaluations during training
are what ASHA compares trials at. Results to report come afterwards, from other seeds.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nb2_agents.config import TrainConfig, TrainOptions, resolve_config
from nb2_agents.curriculum.resolve import CurriculumOptions
from nb2_agents.errors import UsageError
from nb2_agents.hyperparams import assignments

Report = Callable[[int, float], bool]
"""Told each evaluation's step and mean return; False: the search stops the trial there."""


@dataclass(frozen=True)
class TrialJob:
    """What every trial of one sweep shares (sent to each worker)."""

    options: TrainOptions | None
    """The run's options; the trials' values go over its ``overrides``. None for a suite."""
    fixed: Mapping[str, Any] = field(default_factory=dict)
    """Keys the search space fixes."""
    trials_dir: Path = Path("trials")
    evals: int = 5
    """Evaluations reported to the search (those after the budget, when the last rollout runs
    past it, are not)."""

    suite: CurriculumOptions | None = None
    """A curriculum's options (one seed), the trials' values over its ``overrides``; or None."""

    def config(self, params: Mapping[str, Any]) -> TrainConfig:
        """The trial's resolved configuration: ``params`` over the space's fixed keys, over the options."""
        assert self.options is not None
        overrides = {**assignments(self.options.overrides), **self.fixed, **params}
        return resolve_config(dataclasses.replace(self.options, overrides=overrides))

    def curriculum(self, params: Mapping[str, Any]) -> CurriculumOptions:
        """A suite trial's curriculum options: ``params`` over the fixed keys, over the suite's options."""
        assert self.suite is not None
        overrides = {**assignments(self.suite.overrides), **self.fixed, **params}
        return dataclasses.replace(self.suite, overrides=overrides)


@dataclass
class TrialOutcome:
    """How a trial ended."""

    value: float | None
    """The final evaluation's mean return (after training: eval.json), or for a trial stopped
    early the last evaluation's during training; None before the first."""
    steps: int
    finished: bool
    """Trained its whole budget (False: stopped by the pruner)."""
    run_dir: Path
    evaluations: list[tuple[int, float]] = field(default_factory=list)


def run_trial(job: TrialJob, params: Mapping[str, Any], name: str, report: Report) -> TrialOutcome:
    """Train the trial ``name`` in ``trials_dir/name``. A folder left by an earlier attempt of
    the same trial (its worker died) continues from its newest checkpoint."""
    from nb2_agents.training import resume_run, run

    if job.suite is not None:
        outcome = _suite_trial(job, params, name)
        if outcome.value is not None:
            report(outcome.steps, outcome.value)  # once, at the end
        return outcome

    cfg = job.config(params)
    run_dir = job.trials_dir / name
    evaluations: list[tuple[int, float]] = []
    pruned = False

    def on_eval(step: int, value: float) -> bool:
        nonlocal pruned
        if len(evaluations) < job.evals:
            evaluations.append((step, value))
            pruned = not report(step, value)
        return not pruned

    result = None
    if run_dir.is_dir():
        try:
            result = resume_run(run_dir, cfg, verbose=0, progress=False, on_eval=on_eval)
        except UsageError:  # nothing to continue from: start it again
            shutil.rmtree(run_dir)
    if result is None:
        run_dir.mkdir(parents=True)
        result = run(cfg, progress=False, verbose=0, on_eval=on_eval, folder=run_dir)
    if result.interrupted and not pruned:  # Ctrl-C: the sweep stops (the run saved its checkpoint)
        raise KeyboardInterrupt
    if result.eval is not None:
        value: float | None = result.eval.mean_return
    else:
        value = evaluations[-1][1] if evaluations else None
    return TrialOutcome(value, result.steps, not result.interrupted, run_dir, evaluations)


def _suite_trial(job: TrialJob, params: Mapping[str, Any], name: str) -> TrialOutcome:
    """A curriculum in ``trials_dir/name/``; an earlier attempt's run there continues (resumed)."""
    from nb2_agents.curriculum.runner import resume_curriculum, run_curriculum

    folder = job.trials_dir / name
    result = None
    earlier = sorted(p for p in folder.glob("*") if p.is_dir()) if folder.is_dir() else []
    if earlier:
        try:
            result = resume_curriculum(earlier[-1], progress=False, verbose=0)
        except UsageError:  # nothing to continue from: start it again
            shutil.rmtree(folder)
    if result is None:
        result = run_curriculum(job.curriculum(params), runs_dir=folder, progress=False, verbose=0)
    value = result.metrics["average_performance"]["mean"]
    steps = sum(result.config.task_steps)
    return TrialOutcome(value, steps, True, result.run_dir, [(steps, value)] if value is not None else [])
