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

from nb2_agents.config import TrainConfig, TrainOptions, options_of, resolve_config
from nb2_agents.errors import UsageError
from nb2_agents.evaluation import EVAL_SEED_OFFSET
from nb2_agents.executor import check_address, ray_available
from nb2_agents.hyperparams import ALGOS, parse_entry, plain, read_yaml, set_dotted
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
    algo: str = "ppo"
    trials: int = 10
    """Trials to run (a resumed sweep: in all, counting those it ran before)."""
    steps: int | str | None = None
    """Each trial's budget (default: the entry's n_timesteps)."""
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
    interrupted: bool = False

    def summary(self) -> str:
        lines = [report.table(self.rows, self.evals), ""]
        if self.best_file is not None:
            env = next(iter(read_yaml(self.best_file)))
            lines += [
                f"best: mean return {self.best_value:.4g} with {self.best_params}",
                f"as an entry: {self.best_file}",
                f"train it: nb2 train --env {env} --hyperparams {self.best_file}",
            ]
        else:
            lines.append("no trial trained its whole budget: no best entry")
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
    if o.algo not in ALGOS:
        raise UsageError(f"unknown algorithm {o.algo!r}; valid: {', '.join(ALGOS)}")


def _job(o: SweepOptions, space: Space) -> tuple[TrialJob, TrainConfig, Space]:
    """What each trial trains (paths absolute: a Ray trial runs in a folder of its own), checked
    with the space's first values; and the space, without rollouts longer than the budget."""
    hyperparams = Path(o.hyperparams).resolve() if o.hyperparams is not None else None
    train = TrainOptions(
        env=o.env,
        algo=o.algo,
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
    _check_space(space, o.algo, str(base.hyperparams.get("policy", "NB2Policy")))
    if "n_envs" not in space.params:  # a rollout past the budget: one update, measured untrained
        most = max(base.steps // base.n_envs, 1)
        space, note = cap(
            space,
            "n_steps",
            most,
            f"{base.n_envs} envs x n_steps above {most} would pass the "
            f"{base.steps:,}-step budget in one rollout",
        )
        if note:
            print(f"nb2 sweep: {note}", flush=True)
    job = TrialJob(train, dict(space.fixed), evals=o.evals)
    first = {key: p.samples()[0] for key, p in space.params.items()}
    return job, job.config(first), space  # the env, the architecture, ... with the space's values


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
    space = load_space(o.algo, o.space, o.search)
    job, cfg, space = _job(o, space)
    name = o.study_name or f"{safe_name(str(o.env))}__{o.algo}__{cfg.steps}"
    if o.storage is not None:
        studies.open_storage(o.storage)  # a bad URL fails before the sweep folder exists
    sweep_dir = Path(resume) if resume is not None else fresh_dir(runs_dir, f"sweep__{o.env}__{o.algo}")
    job = dataclasses.replace(job, trials_dir=sweep_dir.resolve() / "trials")
    url = studies.storage_url(o.storage, sweep_dir)
    storage = studies.open_storage(url)
    study = studies.open_study(storage, name, {"env": o.env, "algo": o.algo, "steps": cfg.steps}, url)
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
    if done and verbose:
        print(
            f"nb2 sweep: {done} of {o.trials} trials done in {sweep_dir}"
            + (f"; {len(again)} left unfinished run again" if again else ""),
            flush=True,
        )
    search = Search(job, space, max(o.trials - done, 0), o.evals, o.pruner == "asha", o.seed, tag, say)
    interrupted = False
    try:
        if search.trials:
            _run(search, study, storage, name, o, address, verbose)
    except KeyboardInterrupt:
        interrupted = True
    return _finish(sweep_dir, study, name, url, o, job, tag, interrupted)


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
    job: TrialJob,
    tag: str,
    interrupted: bool,
) -> SweepResult:
    rows = report.rows_of(studies.mine(study, tag))
    result = SweepResult(sweep_dir, rows, o.evals, name, url, interrupted=interrupted)
    report.write_csv(rows, sweep_dir / "trials.csv")
    if rows:
        report.plot(rows, sweep_dir / "trials.png", f"{o.env}, {o.algo}: {len(rows)} trials")
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if complete:
        best = max(complete, key=lambda t: t.value)
        cfg = job.config(best.params)
        entry = {**cfg.hyperparams, "n_timesteps": cfg.steps}
        header = [
            f"nb2 sweep {o.env} --algo {o.algo}: the best of {len(complete)} complete trials of study {name}",
            f"(trial {best.number}, {best.user_attrs.get('run_dir', '')}: mean return {best.value:.4g} in "
            f"its final evaluation, {o.eval_episodes} episodes,",
            f"evaluation seed {cfg.seed + EVAL_SEED_OFFSET}, training seed {cfg.seed}).",
            "Report returns on other seeds: nb2 train --env ENV --hyperparams THIS_FILE --seed S",
        ]
        if cfg.env_kwargs:
            header.append(f"env_kwargs (pass with --env-kwargs): {cfg.env_kwargs}")
        result.best_file = sweep_dir / f"{o.algo}.yaml"
        report.write_best(result.best_file, str(o.env), plain(entry), header)
        result.best_value, result.best_params = float(best.value), dict(best.params)
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
