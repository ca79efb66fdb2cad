"""``nb2 sweep`` as a function: a hyperparameter search for one env and algorithm.

>>> result = sweep("CartPole-v1", algo="ppo", trials=4, steps="5k")  # doctest: +SKIP
>>> result.best_file  # doctest: +SKIP   an entry for `nb2 train --hyperparams`

Every trial is an ``nb2 train`` run in ``<sweep>/trials/``; the search (Optuna's TPE, ASHA
stopping the weaker trials at their evaluations) lives in an Optuna study. The sweep folder:

- ``sweep.yaml``: the options, which ``--resume`` continues with;
- ``study.db``: the study (unless ``--storage`` names a shared one);
- ``trials/``: the trials' run folders; ``trials.csv``, ``trials.png``: every trial;
- ``<algo>.yaml``: the best trial as an entry of ``policies/<algo>.yaml``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nb2_agents.config import TrainOptions, options_of, resolve_config
from nb2_agents.counts import parse_steps
from nb2_agents.curriculum.spec import builtin_curricula, load_curriculum
from nb2_agents.errors import UsageError
from nb2_agents.evaluation import EVAL_SEED_OFFSET
from nb2_agents.executor import check_address, ray_available
from nb2_agents.hyperparams import ALGOS, assignments, parse_entry, plain, read_yaml, set_dotted
from nb2_agents.runs import dump_yaml, fresh_dir, safe_name, write_text
from nb2_agents.sweep import report
from nb2_agents.sweep import study as studies
from nb2_agents.sweep.search import Search, run_here, run_on_ray
from nb2_agents.sweep.space import Space, cap, load_space
from nb2_agents.sweep.trial import TrialJob

OPTIONS_NAME = "sweep.yaml"
PRUNERS = ("asha", "none")


@dataclass(frozen=True)
class SweepOptions:
    """What a user gives ``nb2 sweep`` (its options, by the same names)."""

    env: str | None = None
    """A Gymnasium id, or a curriculum suite (``nb2 curriculum --list``, or a YAML file)."""
    algo: str | None = None
    """Default: ppo for an env, the suite's algorithm for a suite."""
    trials: int = 10
    """Trials to run (a resumed sweep: in all, counting those it ran before)."""
    steps: int | str | None = None
    """Each trial's budget (default: the entry's n_timesteps; a suite's: all its tasks' steps)."""
    seed: int = 0
    """The trials' training seed, and the sampler's."""
    hyperparams: str | Path | None = None
    """The entries the trials' values go over (default ``policies/<algo>.yaml``)."""
    overrides: Sequence[str] | Mapping[str, Any] | None = None
    """``--set`` items, fixed in every trial."""
    space: str | Path | None = None
    """The search-space file (default ``policies/sweeps.yaml``)."""
    search: Sequence[str] = ()
    """``--search KEY=SPEC`` items over the file's space."""
    evals: int = 5
    """Evaluations per trial, evenly spaced; the last one, at the end, is the trial's result."""
    eval_episodes: int = 5
    pruner: str = "asha"
    storage: str | None = None
    """An Optuna storage URL shared by several invocations (default: study.db in the sweep folder)."""
    study_name: str | None = None
    """Default ``{env}__{algo}__{steps}``: the same command shares one study in one storage."""
    workers: int = 1
    address: str | None = None
    env_kwargs: Any = None
    device: str | None = None
    threads: int | None = None
    retention: str = "none"
    """A suite's retention strategy (``nb2 curriculum --retention``)."""


@dataclass(frozen=True)
class _Problem:
    """What the trials train, checked: the job, the space (rollouts past the budget left out),
    the algorithm and each trial's steps."""

    job: TrialJob
    space: Space
    algo: str
    steps: int


@dataclass
class SweepResult:
    """What one sweep produced."""

    sweep_dir: Path
    rows: list[report.TrialRow]
    """This sweep's trials."""
    evals: int
    study: str
    storage: str
    best_value: float | None = None
    best_params: dict[str, Any] | None = None
    best_file: Path | None = None
    command: str = ""
    """The command that trains the best trial's values."""
    measure: str = "mean return"
    interrupted: bool = False

    def summary(self) -> str:
        lines = [report.table(self.rows, self.evals, self.measure), ""]
        if self.best_file is not None:
            lines += [
                f"best: {self.best_value:.4g} with {self.best_params}",
                f"written to {self.best_file}",
                f"train it: {self.command}",
            ]
        else:
            lines.append("no trial trained its whole budget: no best entry")
        if self.interrupted:
            lines.append(f"interrupted: nb2 sweep --resume {self.sweep_dir} runs its unfinished trials again")
        lines += [
            f"study {self.study} in {self.storage}",
            f"sweep folder: {self.sweep_dir} (trials.csv, trials.png; --resume it to run more trials)",
            f"tensorboard --logdir {self.sweep_dir / 'trials'}",
        ]
        return "\n".join(lines)


def _check_space(space: Space, algo: str, policy: str) -> None:
    """Every key of the space, at every value it can take, as the entry checks it: an unknown key
    or a value the algorithm refuses is an error naming the space's file, before any trial."""
    label = f"{space.source} "
    for key, value in [
        *((k, v) for p in space.params.values() for k, v in ((p.key, s) for s in p.samples())),
        *space.fixed.items(),
    ]:
        entry: dict[str, Any] = {"policy": policy}
        set_dotted(entry, key, value)
        parse_entry(ALGOS[algo], entry, dict.fromkeys(entry, label))


def _check(o: SweepOptions) -> None:
    studies.require_optuna()
    if not o.env:
        raise UsageError("no env given; pass ENV, a Gymnasium id such as CartPole-v1")
    if isinstance(o.trials, bool) or not isinstance(o.trials, int) or o.trials < 1:
        raise UsageError(f"--trials {o.trials}: expected a whole number >= 1")
    if isinstance(o.evals, bool) or not isinstance(o.evals, int) or o.evals < 1:
        raise UsageError(f"--evals {o.evals}: expected a whole number >= 1")
    if o.pruner not in PRUNERS:
        raise UsageError(f"--pruner {o.pruner!r}: valid: {', '.join(PRUNERS)}")
    if o.algo is not None and o.algo not in ALGOS:
        raise UsageError(f"unknown algorithm {o.algo!r}; valid: {', '.join(ALGOS)}")


def is_suite(target: str) -> bool:
    """Whether ``nb2 sweep TARGET`` names a curriculum suite rather than an env id."""
    return target in builtin_curricula() or target.endswith((".yaml", ".yml"))


def _fit_rollouts(space: Space, steps: int, n_envs: int) -> Space:
    """The space without ``n_steps`` values whose one rollout passes ``steps`` (it would train
    once, and be measured untrained before that), saying so."""
    if "n_envs" in space.params:
        return space
    most = max(steps // n_envs, 1)
    why = f"{n_envs} envs x n_steps above {most} would pass {steps:,} steps in one rollout"
    space, note = cap(space, "n_steps", most, why)
    if note:
        print(f"nb2 sweep: {note}", flush=True)
    return space


def _problem(o: SweepOptions) -> _Problem:
    """What each trial trains (paths absolute: a Ray trial runs in a folder of its own), checked
    with every value of the space and once resolved in full."""
    target = str(o.env)
    if is_suite(target):
        return _suite_problem(o, target)
    algo = o.algo or "ppo"
    space = load_space(algo, o.space, o.search)
    hyperparams = Path(o.hyperparams).resolve() if o.hyperparams is not None else None
    train = TrainOptions(
        env=o.env,
        algo=algo,
        steps=o.steps,
        seed=o.seed,
        hyperparams=hyperparams,
        overrides=o.overrides,
        env_kwargs=o.env_kwargs,
        eval_episodes=o.eval_episodes,
        final_episodes=o.eval_episodes,
        device=o.device,
        threads=o.threads,
    )
    base = resolve_config(train)
    every = max(math.ceil(base.steps / o.evals), 1)
    train = dataclasses.replace(train, steps=base.steps, eval_freq=every, save_freq=every)
    _check_space(space, algo, str(base.hyperparams.get("policy", "NB2Policy")))
    space = _fit_rollouts(space, base.steps, base.n_envs)
    job = TrialJob(train, dict(space.fixed), evals=o.evals)
    job.config({key: p.samples()[0] for key, p in space.params.items()})  # the env, the architecture ...
    return _Problem(job, space, algo, base.steps)


def _suite_problem(o: SweepOptions, target: str) -> _Problem:
    """A suite's trials: one curriculum each, on seed ``o.seed``, ``--steps`` over all its tasks."""
    from nb2_agents.curriculum.resolve import CurriculumOptions, resolve

    if o.hyperparams is not None or o.env_kwargs is not None or o.threads is not None:
        raise UsageError(f"{target} is a curriculum suite: its tasks have their own hyperparameters and "
                         "env_kwargs; use --set, not --hyperparams / --env-kwargs / --threads")  # fmt: skip
    suite = CurriculumOptions(
        curriculum=Path(target).resolve() if target.endswith((".yaml", ".yml")) else target,
        algo=o.algo, seeds=(o.seed,), overrides=o.overrides, retention=o.retention,
        device=o.device or "auto", evals_per_task=o.evals,
    )  # fmt: skip
    if o.steps is not None:  # spread over the tasks as --steps-scale does
        total = sum(t.steps for t in load_curriculum(suite.curriculum).tasks)
        suite = dataclasses.replace(suite, steps_scale=parse_steps(o.steps, "--steps") / total)
    cfg, spec, hp = resolve(suite)
    space = load_space(cfg.algo, o.space, o.search)
    _check_space(space, cfg.algo, hp.policy)
    space = _fit_rollouts(space, min(t.steps for t in spec.tasks), hp.n_envs)
    job = TrialJob(None, dict(space.fixed), evals=o.evals, suite=suite)
    resolve(job.curriculum({key: p.samples()[0] for key, p in space.params.items()}))
    return _Problem(job, space, cfg.algo, sum(t.steps for t in spec.tasks))


def sweep(
    options: SweepOptions | str | None = None,
    /,
    *,
    runs_dir: str | Path = "runs",
    resume: str | Path | None = None,
    verbose: int = 1,
    **fields: Any,
) -> SweepResult:
    """Search hyperparameters as ``nb2 sweep`` does; see the module doc for the folder it writes.

    ``resume``: a sweep folder to continue with its recorded options (``workers``, ``address``
    and ``trials`` may change), running the trials it lacks; trials a killed run left unfinished
    run again."""
    o: SweepOptions = options_of(SweepOptions, options, fields)
    if resume is not None:
        o = _resumed(Path(resume), options, fields)
    _check(o)
    address = check_address(o.address)
    problem = _problem(o)
    label = f"{safe_name(Path(str(o.env)).stem if is_suite(str(o.env)) else str(o.env))}__{problem.algo}"
    name = o.study_name or f"{label}__{problem.steps}"
    # a given storage is opened first: a bad URL fails before the sweep folder exists
    storage = studies.open_storage(o.storage) if o.storage is not None else None
    sweep_dir = Path(resume) if resume is not None else fresh_dir(runs_dir, f"sweep__{label}")
    job = dataclasses.replace(problem.job, trials_dir=sweep_dir.resolve() / "trials")
    url = studies.storage_url(o.storage, sweep_dir)
    storage = storage or studies.open_storage(url)
    study = studies.open_study(
        storage, name, {"env": o.env, "algo": problem.algo, "steps": problem.steps}, url
    )
    write_text(
        sweep_dir / OPTIONS_NAME,
        "# nb2 sweep options; continue it: nb2 sweep --resume <this folder>\n"
        + dump_yaml(plain(dataclasses.asdict(o))),
    )
    tag = str(sweep_dir.resolve())
    again = studies.abandoned(study, tag)
    for params in again:
        study.enqueue_trial(params)
    done = sum(t.state.name != "FAIL" or "error" in t.user_attrs for t in studies.mine(study, tag))
    say = print if verbose else (lambda _: None)
    if (done or again) and verbose:
        print(
            f"nb2 sweep: {done} of {o.trials} trials done in {sweep_dir}"
            + (f"; {len(again)} left unfinished run again" if again else ""),
            flush=True,
        )
    asha = o.pruner == "asha" and job.suite is None  # a suite's trials report once, at the end
    evals, measure = (1, "average performance") if job.suite is not None else (o.evals, "mean return")
    # the sampler's seed moves on with the study: a resumed or shared study would otherwise draw
    # its first (random) values again
    seed = o.seed + len(study.get_trials(deepcopy=False))
    search = Search(job, problem.space, max(o.trials - done, 0), evals, asha, seed, tag, say, measure)
    interrupted = False
    try:
        if search.trials:
            _run(search, study, storage, name, o, address, verbose)
    except KeyboardInterrupt:
        interrupted = True
    # Ray Tune ends on Ctrl-C by itself, returning: trials it left running tell
    interrupted |= any(t.state.name == "RUNNING" for t in studies.mine(study, tag))
    return _finish(sweep_dir, study, name, url, o, dataclasses.replace(problem, job=job), tag, interrupted)


def _run(
    search: Search, study: Any, storage: Any, name: str, o: SweepOptions, address: str | None, verbose: int
) -> None:
    if o.workers > 1 or address is not None:
        if _tune_available():
            if verbose:
                where = f"the Ray cluster at {address}" if address else f"a local Ray, {o.workers} at a time"
                print(f"nb2 sweep: {search.trials} trials on {where}", flush=True)
            run_on_ray(search, storage, name, o.workers, address)
            return
        print(
            "nb2 sweep: Ray Tune is not installed (pip install 'nb2-agents[ray]'): the trials run here, "
            "one after another",
            file=sys.stderr,
            flush=True,
        )
    elif verbose:
        print(f"nb2 sweep: {search.trials} trials, one after another", flush=True)
    run_here(search, study)


def _tune_available() -> bool:
    if not ray_available():
        return False
    try:
        import ray.tune  # noqa: F401  (needs the ray[tune] extras: pandas, pyarrow ...)
    except ImportError:
        return False
    return True


def _finish(
    sweep_dir: Path,
    study: Any,
    name: str,
    url: str,
    o: SweepOptions,
    problem: _Problem,
    tag: str,
    interrupted: bool,
) -> SweepResult:
    rows = report.rows_of(studies.mine(study, tag))
    suite = problem.job.suite is not None
    result = SweepResult(sweep_dir, rows, 1 if suite else o.evals, name, url, interrupted=interrupted)
    result.measure = "average performance" if suite else "mean return"
    report.write_csv(rows, sweep_dir / "trials.csv")
    if rows:
        report.plot(rows, sweep_dir / "trials.png", f"{o.env}, {problem.algo}: {len(rows)} trials")
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        return result
    best = max(complete, key=lambda t: t.value)
    result.best_value, result.best_params = float(best.value), dict(best.params)
    header = [
        f"nb2 sweep {o.env} --algo {problem.algo}: the best of {len(complete)} complete trials",
        f"of study {name} (trial {best.number}, {best.user_attrs.get('run_dir', '')}: {best.value:.4g},",
        f"training seed {o.seed}).",
    ]
    if problem.job.suite is not None:  # the suite's own hyperparameters, with these over them
        options = problem.job.curriculum(best.params)
        sets = " ".join(f"--set {k}={v}" for k, v in assignments(options.overrides).items())
        result.command = f"nb2 curriculum {o.env} --retention {o.retention} {sets} --seeds S"
        header.append("Average performance, as nb2 curriculum scores it. Report it on other seeds:")
        block: dict[str, Any] = {}  # as a suite's `hyperparams:` block, nested
        for key, value in assignments(options.overrides).items():
            set_dotted(block, key, value)
        result.best_file = sweep_dir / "best.yaml"
        report.write_best(result.best_file, "hyperparams", plain(block), [*header, result.command])
        return result
    cfg = problem.job.config(best.params)
    entry = {**cfg.hyperparams, "n_timesteps": cfg.steps}
    header.append(f"Mean return in the trial's final evaluation ({o.eval_episodes} episodes, evaluation seed "
                  f"{cfg.seed + EVAL_SEED_OFFSET}). Report returns on other seeds:")  # fmt: skip
    result.best_file = sweep_dir / f"{problem.algo}.yaml"
    result.command = (
        f"nb2 train --env {o.env} --algo {problem.algo} --hyperparams {result.best_file} --seed S"
    )
    header.append(result.command)
    if cfg.env_kwargs:
        header.append(f"env_kwargs (pass with --env-kwargs): {cfg.env_kwargs}")
    report.write_best(result.best_file, str(o.env), plain(entry), header)
    return result


def _resumed(sweep_dir: Path, options: Any, fields: dict[str, Any]) -> SweepOptions:
    path = sweep_dir / OPTIONS_NAME
    if not path.is_file():
        raise UsageError(f"--resume {sweep_dir}: not a sweep folder (it has no {OPTIONS_NAME})")
    saved = read_yaml(path)
    known = {f.name for f in dataclasses.fields(SweepOptions)}
    if not isinstance(saved, dict) or set(saved) - known:
        raise UsageError(f"{path}: not the options of nb2 sweep; keys: {sorted(known)}")
    changed = sorted(set(fields) - {"workers", "address", "trials"})
    if options is not None or changed:
        raise UsageError(
            f"--resume {sweep_dir} continues with the options in {path}; only --trials, --workers and "
            f"--address may be given with it, not {changed or 'ENV'}"
        )
    return dataclasses.replace(SweepOptions(**saved), **fields)
