"""Where a sweep's trials run: Ray Tune with Optuna's TPE (``OptunaSearch``) and ASHA, side by
side on a local Ray or a cluster; or, for ``--workers 1`` and without Ray, one after another in
this process with the same sampler and Optuna's own asynchronous successive halving.

Both paths write the same study: each trial's values, its evaluations (intermediate values, one
step per evaluation), its state (complete, pruned: stopped early by ASHA, or failed) and the user
attributes ``sweep`` and ``run_dir``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from nb2_agents.executor import RETRIES, ray_session
from nb2_agents.sweep.space import Param, Space, to_optuna
from nb2_agents.sweep.trial import TrialJob, run_trial

METRIC = "mean_return"
REDUCTION_FACTOR = 2
"""ASHA keeps the best 1/2 of the trials at each rung (evaluations 1, 2, 4, ...)."""


@dataclass(frozen=True)
class Search:
    """One invocation's share of a sweep."""

    job: TrialJob
    space: Space
    trials: int
    """Trials to run in this invocation."""
    evals: int
    """Evaluations per trial: the steps at which ASHA may stop one."""
    asha: bool
    seed: int
    sweep: str
    """The sweep folder, as the trials' ``sweep`` attribute records it."""
    say: Callable[[str], None] = print
    measure: str = "mean return"
    """What a trial's result is, in its line."""


def _line(search: Search, name: str, value: float | None, steps: int, reached: int | None = None) -> str:
    """A trial's line: its result, and for one ASHA stopped, the evaluations it ``reached``."""
    shown = "-" if value is None else f"{value:.4g}"
    stopped = "" if reached is None else f", stopped by ASHA after {reached} of {search.evals} evaluations"
    return f"trial {name}: {search.measure} {shown} at {steps:,} steps{stopped}"


def _error(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"[:300]


# --- in this process: Optuna alone ---------------------------------------------------------------


def _suggest(trial: Any, p: Param) -> Any:
    if p.kind == "choice":
        return trial.suggest_categorical(p.key, list(p.choices))
    if p.kind.endswith("int"):
        return trial.suggest_int(p.key, int(p.low), int(p.high), log=p.log)
    return trial.suggest_float(p.key, p.low, p.high, log=p.log)


def run_here(search: Search, study: Any) -> None:
    """The trials one after another in this process; Ctrl-C stops the sweep (the trial saves its
    model and checkpoint, and the study keeps every finished trial)."""
    import optuna

    study.pruner = (
        optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=REDUCTION_FACTOR)
        if search.asha
        else optuna.pruners.NopPruner()
    )
    study.sampler = optuna.samplers.TPESampler(seed=search.seed)

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("sweep", search.sweep)
        params = {key: _suggest(trial, p) for key, p in search.space.params.items()}
        name = f"trial_{trial.number:04d}"
        trial.set_user_attr("run_dir", str(search.job.trials_dir / name))
        count = 0

        def report(step: int, value: float) -> bool:
            nonlocal count
            count += 1
            trial.report(value, count)
            return not trial.should_prune()

        try:
            outcome = run_trial(search.job, params, name, report)
        except Exception as err:
            trial.set_user_attr("error", _error(err))
            search.say(f"trial {name}: failed: {_error(err)}")
            raise
        reached = None if outcome.finished else len(outcome.evaluations)
        search.say(_line(search, name, outcome.value, outcome.steps, reached))
        if outcome.value is None:
            raise RuntimeError(f"{name} ended before its first evaluation")
        if not outcome.finished:
            raise optuna.TrialPruned()
        return outcome.value

    study.optimize(objective, n_trials=search.trials, catch=(Exception,))


# --- on Ray: Ray Tune with OptunaSearch and ASHA -------------------------------------------------


def _tune_trial(config: dict[str, Any], job: TrialJob) -> None:
    """A Ray Tune trial: reports each evaluation, then the outcome (``finished``) once more."""
    from ray import tune

    name = f"trial_{tune.get_context().get_trial_id()}"

    def report(step: int, value: float) -> bool:
        tune.report({METRIC: value, "timesteps": step, "finished": False, "run_dir": name})
        return True  # ASHA stops a trial by raising SystemExit from tune.report

    outcome = run_trial(job, config, name, report)
    if outcome.value is None:
        raise RuntimeError(f"{name} ended before its first evaluation")
    tune.report({METRIC: outcome.value, "timesteps": outcome.steps, "finished": True, "run_dir": name})


def _searcher_class() -> type:
    from ray.tune.search.optuna import OptunaSearch

    class _OptunaSearch(OptunaSearch):  # type: ignore[misc]
        """Ray's OptunaSearch, telling Optuna which trials ASHA stopped early (pruned, not
        complete at a smaller budget), which failed, and where each ran."""

        sweep = ""
        trials_dir = ""

        def suggest(self, trial_id: str) -> dict[str, Any] | None:
            params = super().suggest(trial_id)
            if trial_id in self._ot_trials:
                ot = self._ot_trials[trial_id]
                ot.set_user_attr("sweep", self.sweep)
                ot.set_user_attr("run_dir", f"{self.trials_dir}/trial_{trial_id}")
            return params  # type: ignore[no-any-return]

        def on_trial_complete(
            self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
        ) -> None:
            if error and trial_id in self._ot_trials:
                self._ot_trials[trial_id].set_user_attr(
                    "error", "failed on Ray: its error.txt is under ray/tune"
                )
            if not error and result and not result.get("finished") and METRIC in result:
                # Tune hands the result ASHA stopped a trial at to this method only
                self._ot_trials[trial_id].report(result[METRIC], result["training_iteration"])
            if error or not (result or {}).get("finished"):
                result = None  # failed (error) or pruned: Optuna gets no final value
            super().on_trial_complete(trial_id, result, error)

    return _OptunaSearch


def _reporter(search: Search) -> Any:
    from ray.tune import Callback

    class _Lines(Callback):  # type: ignore[misc]
        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            r = trial.last_result or {}
            if METRIC in r:
                reached = None if r.get("finished") else r.get("training_iteration", 0)
                search.say(_line(search, r["run_dir"], r[METRIC], r["timesteps"], reached))

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            search.say(
                f"trial trial_{trial.trial_id}: failed: {' '.join(str(trial.error_msg).split())[-300:]}"
            )

    return _Lines()


@contextlib.contextmanager
def _tune_quiet() -> Iterator[None]:
    """No Tune banner and progress table (their verbose=0 still prints some): the sweep prints a
    line per trial."""
    previous = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT")
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = previous


def run_on_ray(search: Search, storage: Any, study_name: str, workers: int, address: str | None) -> None:
    """The trials as Ray Tune trials, at most ``workers`` at once (on a cluster: its CPUs)."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    searcher = _searcher_class()(
        to_optuna(search.space),
        metric=METRIC,
        mode="max",
        study_name=study_name,
        storage=storage,
        seed=search.seed,
    )
    searcher.sweep, searcher.trials_dir = search.sweep, str(search.job.trials_dir)
    scheduler = (  # max_t: the evaluations, then the outcome's report
        ASHAScheduler(
            time_attr="training_iteration",
            max_t=search.evals + 1,
            grace_period=1,
            reduction_factor=REDUCTION_FACTOR,
        )
        if search.asha
        else FIFOScheduler()
    )
    with ray_session(workers, address, log_to_driver=False), _tune_quiet():
        concurrent = workers if address is None else max(int(ray.cluster_resources().get("CPU", 1)), 1)
        tuner = tune.Tuner(
            tune.with_resources(functools.partial(_tune_trial, job=search.job), {"cpu": 1}),
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=search.trials,
                max_concurrent_trials=concurrent,
                metric=METRIC,
                mode="max",
            ),
            run_config=tune.RunConfig(
                storage_path=str((search.job.trials_dir.parent / "ray").resolve()),
                name="tune",
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=RETRIES),
                callbacks=[_reporter(search)],
            ),
        )
        tuner.fit()
    sys.stdout.flush()
