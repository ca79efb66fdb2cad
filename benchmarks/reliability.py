"""Reliability over seeds: NB2-nano against SB3's MlpPolicy, with the same hyperparameters.

``python -m benchmarks.reliability [--seeds 0-9] [--rows NAME,...] [--policies nb2,mlp]
[--steps-scale 1.0] [--workers 2] [--runs-dir runs/benchmarks/reliability] [--quick]``, or
``python -m benchmarks --only reliability``.

Rows (:data:`ROWS`; the budget ``yaml`` is the entry's ``n_timesteps``):

==================  =======================  =====  ======  ==============================
row                 env                      algo   budget  overrides
==================  =======================  =====  ======  ==============================
cartpole-ppo        CartPole-v1              ppo    100k
cartpole-ppo-const  CartPole-v1              ppo    100k    learning_rate 1e-3, clip 0.2
acrobot-ppo         Acrobot-v1               ppo    yaml    (200k)
doorkey-ppo         MiniGrid-DoorKey-5x5-v0  ppo    150k    (skipped without MiniGrid)
cartpole-dqn        CartPole-v1              dqn    yaml    (50k)
cartpole-a2c        CartPole-v1              a2c    yaml    (500k)
pendulum-sac        Pendulum-v1              sac    20k
pendulum-td3        Pendulum-v1              td3    20k
==================  =======================  =====  ======  ==============================

Policies. ``nb2``: the env's entry of ``policies/<algo>.yaml`` as it stands (``policy:
NB2Policy``, NB2-nano). ``mlp``: the same entry with ``policy: MlpPolicy`` and without the
NB2-only ``policy_kwargs`` (:func:`nb2_agents.hyperparams.nb2_only_policy_kwargs`: preset,
sampling, nb2_kwargs, share_encoder, critic_grad_scale, check_finite); the others
(normalize_images, log_std_init, ...) stay, and the network is SB3's default for the algorithm.
Every run is one :func:`nb2_agents.train` call (the row's overrides on top), in a fresh spawned
process of its own, ``--workers`` of them side by side.

Evaluation. After training, model.zip plays :data:`EPISODES` episodes (3 with ``--quick``),
episode ``e`` of training seed ``s`` on env seed ``10_000_000 + 1000 s + e`` (:func:`eval_seed`),
which also seeds the action sampling. No run sees these seeds: training envs take ``s .. s +
n_envs - 1``, and the evaluations during training and ``eval.json`` (what the entries in
``policies/`` were tuned on) ``s + 10_000`` (:data:`nb2_agents.evaluation.EVAL_SEED_OFFSET`).
Actions are greedy, except MiniGrid's: sampled, as RL Zoo and ``nb2 evaluate`` do (the run's
``deterministic_eval``). A seed's figure is its mean return over those episodes. The run's own
``eval.json`` is left at one episode (it is not used). The evaluations during training (every
budget / 10 steps, 5 episodes, ``eval/evaluations.npz``) are kept as each run's curve.

Figures per row and policy: the per-seed returns; their interquartile mean (IQM: the mean of the
middle half, ``n // 4`` seeds cut from each end, as rliable's, Agarwal et al. 2021) with a 95 %
percentile-bootstrap CI over seeds (:func:`nb2_agents.curriculum.metrics.bootstrap_ci`); the seeds
at or above the env's threshold; the worst seed. Targets per row, on NB2 (:data:`SCORES` holds the
thresholds and score ranges):

* IQM >= MLP's IQM - 2 % of the env's score range;
* at least 90 % of the seeds (9 of 10) at or above the threshold;
* DoorKey: no late collapse, i.e. on every seed the last evaluation during training is within
  0.05 of that run's best.

A target whose runs are missing (a failed seed, a policy not run) is n/a. Figures are printed and
written to ``{runs-dir}/summary.md`` / ``summary.json``, never asserted. Wall time (the job's whole
process function: training and evaluation), training time, CPU time and peak RSS come with every run.
``summary.json`` holds ``config``, ``measures`` (what the figures are), ``scores`` (env →
threshold, low, high), ``rows`` (row → its :class:`~benchmarks.reliability_figures.Spec` and per
policy its :class:`~benchmarks.reliability_figures.Figures`: per_seed, iqm, ci_low, ci_high,
at_threshold, worst, worst_seed, collapsed, curves, wall_s), ``skipped`` (row → why), ``checks``
(the targets: metric, value, goal, met) and ``runs`` (every
:class:`~benchmarks.reliability_figures.Outcome`: its job, run folder, wall / train / CPU seconds,
peak RSS, steps, eval seeds, returns, curve, error).

Resume: each finished (row, policy, seed) job's outcome is kept under ``{runs-dir}/measured/``
(``{row}__{policy}__s{seed}.json``: ``{"job": ..., "outcome": ...}``);
a later invocation reuses those of exactly the same job (row, env, algo, budget, overrides,
episodes, device, threads), and an interrupted job runs again. The key is the job, not the code
or the hyperparameter files: delete the files there to measure afresh after changing either.

Duration (the defaults), estimated from the CPU time per step of ``--quick``'s runs (which
overstates the cheap MLP runs' cost: fixed costs weigh more on 2k steps) plus the evaluations at
a solved level (about 1 ms per batch-1 step for NB2-nano, 0.3 ms for an MLP): per seed about 60
minutes of one core for NB2 (Acrobot and DoorKey ~14 each, Pendulum SAC ~9, CartPole A2C ~9) and
25 for MLP, so about 14 hours of CPU for 10 seeds, about 7 hours of wall time with ``--workers 2``
on two free cores. ``--quick`` (seed 0, 2k steps per run, 3 episodes, all rows) takes about
3 minutes of CPU and only checks that everything runs: its figures mean nothing.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from benchmarks import common
from benchmarks.common import (
    MEASURED_DIR,
    Row,
    add_run_options,
    cpu_s,
    eval_curve,
    maxrss_mb,
    names_of,
    parse_run_options,
)
from benchmarks.reliability_figures import (
    EPISODES,
    EVAL_SEED_BASE,
    EVAL_SEED_STRIDE,
    NB2,
    NOTE,
    POLICIES,
    ROWS,
    SCORES,
    Job,
    Outcome,
    Spec,
    analyse,
    eval_seed,
    summary_table,
    target_line,
)
from nb2_agents.envs_util import EnvSpec
from nb2_agents.runs import write_json

SEEDS = tuple(range(10))
WORKERS = 2
RUNS_DIR = Path("runs/benchmarks/reliability")
QUICK_SEEDS = (0,)
QUICK_STEPS = 2_000
QUICK_EPISODES = 3
QUICK_RUNS_DIR = Path("runs/benchmarks/reliability-quick")

# --------------------------------------------------------------------------- the runs


def policy_overrides(spec: Spec, policy: str) -> dict[str, Any]:
    """``train``'s overrides for ``policy``: MLP swaps the policy and drops NB2's options."""
    if policy == NB2:
        return dict(spec.overrides)
    from nb2_agents.hyperparams import ALGOS, DATA_DIR, load_entry, nb2_only_policy_kwargs

    entry, _ = load_entry(DATA_DIR / "policies" / f"{spec.algo}.yaml", spec.env)
    drop = set(nb2_only_policy_kwargs(ALGOS[spec.algo]))
    kwargs = {k: v for k, v in (entry.get("policy_kwargs") or {}).items() if k not in drop}
    return {"policy": "MlpPolicy", "policy_kwargs": kwargs, **spec.overrides}


def held_out_returns(
    model_path: Path,
    spec: EnvSpec,
    seeds: Sequence[int],
    deterministic: bool,
    device: str = "auto",
) -> list[float]:
    """One episode of the saved model on each env seed, the action sampling seeded alike."""
    from stable_baselines3.common.utils import set_random_seed

    from nb2_agents.evaluation import load_model, run_episodes

    model = load_model(model_path, device=device).model
    returns: list[float] = []
    for seed in seeds:
        vec = spec.make_vec(1, seed)
        set_random_seed(seed)
        try:
            episode, _, _ = run_episodes(model, vec, 1, deterministic)
        finally:
            vec.close()
        returns += episode
    return returns


def train_for_benchmark(
    job: Any, algo: str, eval_freq: int | None, env_kwargs: dict[str, Any] | None = None
) -> Any:
    """One quiet :func:`nb2_agents.train` run of a benchmark job (``env``, ``steps``, ``seed``,
    ``overrides``, ``runs_dir``, ``device``, ``threads``); an interrupted run raises."""
    from nb2_agents import train

    torch.set_num_threads(job.threads)
    result = train(
        env=job.env,
        algo=algo,
        steps=job.steps,
        seed=job.seed,
        overrides=job.overrides,
        env_kwargs=env_kwargs,
        runs_dir=job.runs_dir,
        eval_freq=eval_freq,
        final_episodes=1,
        device=job.device,
        threads=job.threads,
        progress=False,
        verbose=False,
    )
    if result.interrupted:
        raise RuntimeError(f"training was interrupted ({result.run_dir})")
    return result


def run_job(job: Job) -> Outcome:
    """Train and evaluate ``job`` in this process (the pool gives each job a fresh one)."""
    baseline, start, cpu_start = maxrss_mb(), time.perf_counter(), cpu_s()
    result = train_for_benchmark(job, job.algo, job.eval_freq)
    deterministic = result.config.deterministic_eval
    seeds = [eval_seed(job.seed, e) for e in range(job.episodes)]
    returns = held_out_returns(
        result.model_path, EnvSpec(job.env, {}, job.algo), seeds, deterministic, job.device
    )
    return Outcome(
        job,
        run_dir=str(result.run_dir),
        wall_s=time.perf_counter() - start,
        train_s=result.seconds,
        cpu_s=cpu_s() - cpu_start,
        peak_mb=maxrss_mb(),
        baseline_mb=baseline,
        steps=result.steps,
        deterministic=deterministic,
        eval_seeds=seeds,
        returns=returns,
        curve=eval_curve(result.run_dir),
    )


def measured_path(job: Job) -> Path:
    return Path(job.runs_dir) / MEASURED_DIR / f"{job.row}__{job.policy}__s{job.seed}.json"


def _rebuild(job: Job, fields: dict[str, Any]) -> Outcome:
    fields["curve"] = [(int(t), float(r)) for t, r in fields["curve"]]
    return Outcome(job, **fields)


def run_jobs(jobs: Sequence[Job], workers: int) -> list[Outcome]:
    """Every job in a fresh process (:func:`benchmarks.common.run_jobs`), kept ones reused."""
    return common.run_jobs(jobs, workers, run_job, measured_path, _rebuild, lambda j, e: Outcome(j, error=e))


# --------------------------------------------------------------------------- the plan


def budget(spec: Spec) -> int:
    """The row's budget: its own, else the entry's ``n_timesteps``."""
    if spec.steps is not None:
        return spec.steps
    from nb2_agents.config import resolve_config

    return resolve_config(env=spec.env, algo=spec.algo).steps


def plan_jobs(
    rows: Sequence[str],
    policies: Sequence[str],
    seeds: Sequence[int],
    base: Job,
    steps_scale: float | None = None,
    quick: bool = False,
) -> tuple[list[Job], dict[str, str]]:
    """Every (row, policy, seed) job, the longest rows first; and the rows skipped, with why.

    Budgets: ``quick`` :data:`QUICK_STEPS` (evaluated halfway and at the end), unless
    ``steps_scale`` is given: the row's budget times it (at least 1 step)."""
    minigrid = importlib.util.find_spec("minigrid") is not None
    jobs: list[Job] = []
    skipped: dict[str, str] = {}
    for row in rows:
        spec = ROWS[row]
        if spec.env.startswith("MiniGrid-") and not minigrid:
            skipped[row] = "MiniGrid not installed (pip install 'nb2-agents[minigrid]')"
            continue
        if quick and steps_scale is None:
            steps, every = QUICK_STEPS, QUICK_STEPS // 2
        else:
            steps, every = max(1, round(budget(spec) * (steps_scale or 1.0))), None
        for policy in policies:
            job = replace(base, row=row, policy=policy, env=spec.env, algo=spec.algo, steps=steps)
            job = replace(job, overrides=policy_overrides(spec, policy), eval_freq=every)
            jobs += [replace(job, seed=seed) for seed in seeds]
    # the longest first, so that the workers finish together; each row's seeds interleave policies
    jobs.sort(key=lambda j: (-j.steps, rows.index(j.row), j.seed, policies.index(j.policy)))
    return jobs, skipped


# --------------------------------------------------------------------------- reporting


def report(
    outcomes: Sequence[Outcome],
    jobs: Sequence[Job],
    skipped: dict[str, str],
    config: dict[str, Any],
    runs_dir: Path,
) -> list[Row]:
    """Print the table and the targets; write ``summary.md`` and ``summary.json`` into ``runs_dir``."""
    table, targets = analyse(outcomes, config["rows"], config["policies"])
    wall, cpu = sum(o.wall_s for o in outcomes), sum(o.cpu_s for o in outcomes)
    notes = [
        NOTE,
        f"Runs: {len(outcomes)}; {wall / 60:.0f} min of wall time and {cpu / 60:.0f} min of CPU in all.",
    ]
    notes += [f"Skipped {row}: {why}." for row, why in skipped.items()]
    notes += [f"Failed {o.job.label}: {o.error}" for o in outcomes if o.error is not None]
    lines = [target_line(r) for r in targets]
    md = summary_table(table, jobs)
    print("\n## Reliability\n")
    print(md)
    print("\n" + "\n".join(notes))
    print("\nTargets:\n" + ("\n".join(lines) or "(none)"))
    runs_dir.mkdir(parents=True, exist_ok=True)
    text = ["# Reliability benchmark", "", md, "", *notes, "", "## Targets", "", *lines, ""]
    (runs_dir / "summary.md").write_text("\n".join(text))
    data = {
        "config": config,
        "measures": NOTE,
        "scores": {env: asdict(s) for env, s in SCORES.items()},
        "rows": {
            row: {**asdict(ROWS[row]), "policies": {p: asdict(f) for p, f in per_policy.items()}}
            for row, per_policy in table.items()
        },
        "skipped": skipped,
        "checks": [asdict(r) for r in targets],
        "runs": [asdict(o) for o in outcomes],
    }
    write_json(runs_dir / "summary.json", data)
    print(f"\nsummary: {runs_dir / 'summary.md'}, {runs_dir / 'summary.json'}")
    return targets


def run(
    quick: bool = False,
    *,
    seeds: Sequence[int] | None = None,
    rows: Sequence[str] | None = None,
    policies: Sequence[str] = POLICIES,
    steps_scale: float | None = None,
    workers: int = WORKERS,
    runs_dir: Path | None = None,
    device: str = "auto",
) -> list[Row]:
    """The benchmark; ``quick``: seed 0, 2k steps per run, 3 episodes (given arguments win)."""
    seeds = list(seeds if seeds is not None else (QUICK_SEEDS if quick else SEEDS))
    rows = list(rows or ROWS)
    runs_dir = Path(runs_dir if runs_dir is not None else (QUICK_RUNS_DIR if quick else RUNS_DIR))
    threads = torch.get_num_threads()
    episodes = QUICK_EPISODES if quick else EPISODES
    base = Job("", "", 0, "", "", 0, {}, episodes, None, str(runs_dir), device, threads)
    jobs, skipped = plan_jobs(rows, list(policies), seeds, base, steps_scale, quick)
    config = dict(
        seeds=seeds,
        rows=rows,
        policies=list(policies),
        quick=quick,
        steps_scale=steps_scale,
        episodes=episodes,
        eval_seeds=f"{EVAL_SEED_BASE} + {EVAL_SEED_STRIDE} * seed + episode",
        workers=workers,
        runs_dir=str(runs_dir),
        device=device,
        torch_threads=threads,
    )
    print("\n## Reliability: NB2-nano vs SB3 MlpPolicy, same hyperparameters, per seed")
    print(f"   seeds {seeds}; {len(jobs)} runs, {workers} side by side; {runs_dir}")
    for row, why in skipped.items():
        print(f"   skipped {row}: {why}")
    outcomes = run_jobs(jobs, workers)
    return report(outcomes, jobs, skipped, config, runs_dir)


# --------------------------------------------------------------------------- the command line


def parse_seeds(value: str) -> list[int]:
    """``0-9``, ``0,1,2`` or ``0-4,7`` → the seeds, in order, each once."""
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in value.split(",") if p.strip()):
            low, _, high = part.partition("-")
            seeds += range(int(low), int(high or low) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds: expected e.g. 0-9 or 0,1,2; got {value!r}") from None
    if not seeds:
        raise argparse.ArgumentTypeError(f"seeds: expected e.g. 0-9 or 0,1,2; got {value!r}")
    return list(dict.fromkeys(seeds))


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.reliability", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"seed 0, {QUICK_STEPS:,} steps per run, {QUICK_EPISODES} episodes",
    )
    parser.add_argument("--seeds", type=parse_seeds, help="e.g. 0-9 (the default) or 0,1,2")
    parser.add_argument("--rows", type=names_of(list(ROWS), "row"), help=f"default {','.join(ROWS)}")
    parser.add_argument(
        "--policies",
        type=names_of(POLICIES, "policy"),
        default=list(POLICIES),
        help=f"default {','.join(POLICIES)}",
    )
    parser.add_argument("--steps-scale", type=float, help="every row's budget times this (default 1)")
    add_run_options(parser, WORKERS, RUNS_DIR, QUICK_RUNS_DIR)
    args, options = parse_run_options(parser, argv)
    return run(
        args.quick,
        seeds=args.seeds,
        rows=args.rows,
        policies=args.policies,
        steps_scale=args.steps_scale,
        **options,
    )


if __name__ == "__main__":
    main()
