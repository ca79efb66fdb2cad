"""Speed at equal return: NB2 against flat attention and SB3's own networks on token-rich tasks.

``python -m benchmarks.speed [--seeds 0-2] [--tasks NAME,...] [--policies NAME,...]
[--workers 2] [--runs-dir runs/benchmarks/speed] [--quick]``, or ``python -m benchmarks --only speed``.

Tasks and contenders are data, in ``policies/speed.yaml`` (:data:`SPEC_FILE`). The task is PPO
on MiniGrid-DoorKey-5x5-v0, three ways: the 7x7 view as cell ids (49 tokens), and as 56x56
RGB pixels in 8x8 patches (49 tokens) or 4x4 patches (196 tokens). The contenders are:

* ``nb2``: NB2-nano;
* ``nb2-sampling``: the same with adaptive token sampling on (cells and 196 tokens);
* ``flat``: the flat-attention baseline (preset ``nano-flat``): the same width, depth,
  tokenizer and decoder, with every token attending to every other;
* ``mlp`` (cells) / ``cnn`` (pixels): SB3's ``MlpPolicy`` / ``CnnPolicy``.

Each contender's hyperparameters and where they come from are in the YAML.

Every run is one :func:`nb2_agents.train` call, with no evaluation during training, in a fresh
spawned process of its own. ``--workers`` of them run side by side, the contenders of a seed
interleaved, so they share the machine's load. Per run:

* **time to 0.9**: the training wall time at which the mean return of the last
  :data:`WINDOW` finished training episodes, over all envs in the order they ended, first
  reaches the threshold (:data:`THRESHOLD`). It is read off the Monitor files, from the
  envs' creation, and is None where it is never reached.
* **return at the budget**: the mean over :data:`EPISODES` held-out episodes after training.
  Episode ``e`` of seed ``s`` runs on env seed ``10_000_000 + 1000 s + e``, with sampled
  actions, as MiniGrid is evaluated (:mod:`benchmarks.reliability`).
* **steps per second**: env steps over training wall time.

Figures per task and contender: those three per seed and their medians, the seeds that reached
0.9, and per seed the ratio of NB2's time to 0.9 to each other contender's, with its median.
The targets are on those ratios: NB2 / flat ≤ 0.5 at 196 tokens and ≤ 0.75 at 49 cell tokens,
at equal or better return. Figures are printed and written to ``{runs-dir}/summary.md`` and
``summary.json``, never asserted. Finished runs are kept under ``{runs-dir}/measured/`` and
reused by a later invocation of exactly the same job (:mod:`benchmarks.common`).

Duration here (2 cores): NB2-nano on the cells takes about 7 minutes of one core per 150k-step
run, the MLP 1; pixels at 196 tokens cost several times the cells. ``--quick`` (seed 0, 2k steps,
3 episodes, every task and contender) only checks that everything runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import yaml

from benchmarks import common
from benchmarks.common import MEASURED_DIR, Row, add_run_options, cpu_s, names_of, parse_run_options
from benchmarks.reliability import held_out_returns, parse_seeds, train_for_benchmark
from benchmarks.reliability_figures import eval_seed
from nb2_agents.curriculum.metrics import bootstrap_ci
from nb2_agents.envs_util import EnvSpec
from nb2_agents.hyperparams import DATA_DIR
from nb2_agents.runs import write_json

SPEC_FILE = DATA_DIR / "policies" / "speed.yaml"
THRESHOLD = 0.9
WINDOW = 100
"""Training episodes in the moving mean that must reach :data:`THRESHOLD` (SB3's ``ep_info_buffer``)."""
EPISODES = 20
SEEDS = (0, 1, 2)
WORKERS = 2
RUNS_DIR = Path("runs/benchmarks/speed")
QUICK_STEPS = 2_000
QUICK_EPISODES = 3
QUICK_RUNS_DIR = Path("runs/benchmarks/speed-quick")
NB2 = "nb2"
GOALS = {"doorkey-rgb-196": 0.5, "doorkey-cells": 0.75}
"""NB2's time to 0.9 over flat attention's, per task: the targets."""
SAMPLING = "nb2-sampling"
SAMPLING_RETURN_LOSS = 0.02
"""Token sampling may lose at most this share of NB2's mean return over the same seeds."""
SAMPLING_TIME_SAVED = 0.2
"""Token sampling should take at least this much less wall time per step (steps/s >= 1 / 0.8)."""


@dataclass(frozen=True)
class Task:
    """One task of ``policies/speed.yaml``: env, budget, env kwargs and contenders."""

    name: str
    env: str
    steps: int
    env_kwargs: dict[str, Any]
    policies: dict[str, dict[str, Any]]
    """Contender → ``{"source": ..., "overrides": ...}``."""


def load_tasks(path: Path = SPEC_FILE) -> dict[str, Task]:
    """The tasks of ``path``; a malformed entry names the file, the task and the key."""
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a mapping of task name -> env, steps, policies")
    tasks = {}
    for name, entry in data.items():
        where = f"{path} [{name}]"
        if not isinstance(entry, dict) or not {"env", "steps", "policies"} <= set(entry):
            raise ValueError(f"{where}: needs env, steps and policies (env_kwargs is optional)")
        policies = entry["policies"]
        for policy, body in policies.items():
            if not isinstance(body, dict) or set(body) != {"source", "overrides"}:
                raise ValueError(f"{where}.policies.{policy}: needs exactly source and overrides")
        tasks[name] = Task(
            name, entry["env"], int(entry["steps"]), dict(entry.get("env_kwargs") or {}), policies
        )
    return tasks


TASKS = load_tasks()
POLICIES = tuple(dict.fromkeys(p for t in TASKS.values() for p in t.policies))


@dataclass(frozen=True)
class Job:
    """One training run and its held-out evaluation (plain values: the key of its kept outcome)."""

    task: str
    policy: str
    seed: int
    env: str
    steps: int
    env_kwargs: dict[str, Any]
    overrides: dict[str, Any]
    episodes: int = EPISODES
    runs_dir: str = str(RUNS_DIR)
    device: str = "auto"
    threads: int = 1

    @property
    def label(self) -> str:
        return f"{self.task} {self.policy} s{self.seed}"


@dataclass
class Outcome:
    """What one job produced (plain data: it crosses processes)."""

    job: Job
    run_dir: str = ""
    train_s: float = 0.0
    cpu_s: float = 0.0
    steps: int = 0
    time_to_threshold: float | None = None
    """Seconds from the envs' creation to the first moving mean at :data:`THRESHOLD`."""
    returns: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def mean_return(self) -> float | None:
        return float(np.mean(self.returns)) if self.returns and self.error is None else None

    @property
    def steps_per_s(self) -> float | None:
        return self.steps / self.train_s if self.train_s > 0 and self.error is None else None

    def summary(self) -> str:
        reach = "never" if self.time_to_threshold is None else f"{self.time_to_threshold:.0f} s"
        mean = "n/a" if self.mean_return is None else f"{self.mean_return:.3f}"
        return (
            f"{self.train_s:6.0f} s  {self.steps_per_s or 0:5.0f} steps/s  0.9 at {reach:>6}  return {mean}"
        )


# --------------------------------------------------------------------------- time to the threshold


def monitor_episodes(run_dir: Path) -> list[tuple[float, float]]:
    """(seconds since the first env was created, return) of every training episode, in the
    order they ended, from SB3's ``*.monitor.csv`` files."""
    episodes: list[tuple[float, float]] = []
    starts: list[float] = []
    for path in sorted(run_dir.glob("*.monitor.csv")):
        with path.open() as f:
            header = json.loads(f.readline().lstrip("#"))
            start = float(header["t_start"])
            starts.append(start)
            episodes += [(start + float(row["t"]), float(row["r"])) for row in csv.DictReader(f)]
    if not starts:
        return []
    t0 = min(starts)
    return sorted((t - t0, r) for t, r in episodes)


def time_to_threshold(
    episodes: Sequence[tuple[float, float]], threshold: float = THRESHOLD, window: int = WINDOW
) -> float | None:
    """The end time of the first episode at which the mean of the last ``window`` returns
    reaches ``threshold``; None if it never does (or fewer than ``window`` episodes ended)."""
    returns = np.array([r for _, r in episodes], dtype=float)
    if len(returns) < window:
        return None
    means = np.convolve(returns, np.ones(window) / window, mode="valid")  # means[i]: episodes i..i+w-1
    hit = np.flatnonzero(means >= threshold)
    return None if not hit.size else float(episodes[int(hit[0]) + window - 1][0])


# --------------------------------------------------------------------------- the runs


def run_job(job: Job) -> Outcome:
    """Train and evaluate ``job`` in this process (the pool gives each job a fresh one)."""
    start_cpu = cpu_s()
    result = train_for_benchmark(job, "ppo", 0, job.env_kwargs)
    seeds = [eval_seed(job.seed, e) for e in range(job.episodes)]
    spec = EnvSpec(job.env, job.env_kwargs, "ppo")
    returns = held_out_returns(result.model_path, spec, seeds, result.config.deterministic_eval, job.device)
    return Outcome(
        job,
        run_dir=str(result.run_dir),
        train_s=result.seconds,
        cpu_s=cpu_s() - start_cpu,
        steps=result.steps,
        time_to_threshold=time_to_threshold(monitor_episodes(result.run_dir)),
        returns=returns,
    )


def measured_path(job: Job) -> Path:
    return Path(job.runs_dir) / MEASURED_DIR / f"{job.task}__{job.policy}__s{job.seed}.json"


def run_jobs(jobs: Sequence[Job], workers: int) -> list[Outcome]:
    return common.run_jobs(
        jobs,
        workers,
        run_job,
        measured_path,
        lambda job, fields: Outcome(job, **fields),
        lambda job, error: Outcome(job, error=error),
    )


def plan_jobs(
    tasks: Sequence[str], policies: Sequence[str], seeds: Sequence[int], base: Job, steps: int | None = None
) -> list[Job]:
    """Every (task, contender, seed) job the tasks have; seed by seed, contenders interleaved."""
    jobs = []
    for seed in seeds:
        for name in tasks:
            task = TASKS[name]
            for policy in policies:
                if policy not in task.policies:
                    continue
                overrides = dict(task.policies[policy]["overrides"])
                jobs.append(
                    replace(
                        base,
                        task=name,
                        policy=policy,
                        seed=seed,
                        env=task.env,
                        steps=steps or task.steps,
                        env_kwargs=task.env_kwargs,
                        overrides=overrides,
                    )
                )
    return jobs


# --------------------------------------------------------------------------- figures


@dataclass
class Figures:
    """One task's figures for one contender, over its seeds."""

    task: str
    policy: str
    time_to_threshold: dict[int, float | None]
    returns: dict[int, float | None]
    steps_per_s: dict[int, float | None]
    reached: int = 0
    median_time: float | None = None
    median_return: float | None = None
    median_steps_per_s: float | None = None
    time_vs_nb2: dict[int, float | None] = field(default_factory=dict)
    """Per seed, NB2's time to 0.9 over this contender's (None unless both reached it)."""
    median_time_vs_nb2: float | None = None


def _median(values: Sequence[float | None]) -> float | None:
    done = [v for v in values if v is not None]
    return float(np.median(done)) if done else None


def figures(outcomes: Sequence[Outcome]) -> dict[str, dict[str, Figures]]:
    """Task → contender → its figures; ratios against the same task's ``nb2`` runs, seed by seed."""
    by: dict[str, dict[str, dict[int, Outcome]]] = {}
    for o in outcomes:
        by.setdefault(o.job.task, {}).setdefault(o.job.policy, {})[o.job.seed] = o
    table: dict[str, dict[str, Figures]] = {}
    for task, per_policy in by.items():
        nb2 = per_policy.get(NB2, {})
        table[task] = {}
        for policy, runs in per_policy.items():
            times = {s: o.time_to_threshold if o.error is None else None for s, o in runs.items()}
            fig = Figures(
                task,
                policy,
                times,
                {s: o.mean_return for s, o in runs.items()},
                {s: o.steps_per_s for s, o in runs.items()},
            )
            fig.reached = sum(t is not None for t in times.values())
            fig.median_time = _median(list(times.values()))
            fig.median_return = _median(list(fig.returns.values()))
            fig.median_steps_per_s = _median(list(fig.steps_per_s.values()))
            if policy != NB2:
                for seed, t in times.items():
                    own = nb2[seed].time_to_threshold if seed in nb2 and nb2[seed].error is None else None
                    fig.time_vs_nb2[seed] = None if own is None or t is None else own / t
                fig.median_time_vs_nb2 = _median(list(fig.time_vs_nb2.values()))
            table[task][policy] = fig
    return table


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def summary_table(table: dict[str, dict[str, Figures]]) -> str:
    lines = [
        "| task | contender | time to 0.9 (s), per seed | median | reached | return at budget, per seed "
        "| median | steps/s (median) | NB2 time / this, per seed | median |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, per_policy in table.items():
        for policy, f in per_policy.items():
            seeds = sorted(f.returns)
            times = ", ".join(_fmt(f.time_to_threshold[s], ".0f") for s in seeds)
            rets = ", ".join(_fmt(f.returns[s], ".3f") for s in seeds)
            ratios = ", ".join(_fmt(f.time_vs_nb2.get(s), ".2f") for s in seeds) if policy != NB2 else ""
            lines.append(
                f"| {task} | {policy} | {times} | {_fmt(f.median_time, '.0f')} | {f.reached}/{len(seeds)} "
                f"| {rets} | {_fmt(f.median_return, '.3f')} | {_fmt(f.median_steps_per_s, '.0f')} "
                f"| {ratios} | {'' if policy == NB2 else _fmt(f.median_time_vs_nb2, '.2f')} |"
            )
    return "\n".join(lines)


def targets(table: dict[str, dict[str, Figures]]) -> list[Row]:
    """NB2 / flat time to 0.9 per task with a goal; met only at equal or better median return."""
    rows = []
    for task, goal in GOALS.items():
        flat, nb2 = table.get(task, {}).get("flat"), table.get(task, {}).get(NB2)
        if flat is None or nb2 is None:
            continue
        ratio = flat.median_time_vs_nb2
        ours, theirs = nb2.median_return, flat.median_return
        equal = ours is not None and theirs is not None and ours >= theirs
        met = None if ratio is None else bool(ratio <= goal and equal)
        value = f"{_fmt(ratio, '.2f')} (return {_fmt(ours, '.3f')} vs {_fmt(theirs, '.3f')})"
        rows.append(Row("speed", f"{task}: NB2 / flat time to {THRESHOLD}", value, f"<= {goal}", met))
    for task, per_policy in table.items():
        if SAMPLING in per_policy and NB2 in per_policy:
            rows += sampling_targets(task, per_policy[NB2], per_policy[SAMPLING])
    return rows


def sampling_targets(task: str, nb2: Figures, sampled: Figures) -> list[Row]:
    """Token sampling against NB2 without it, on the seeds both finished: the mean return (95 %
    bootstrap CI, worst seed) within :data:`SAMPLING_RETURN_LOSS`, and steps/s, seed by seed."""
    seeds = [
        s for s in sorted(nb2.returns) if nb2.returns[s] is not None and sampled.returns.get(s) is not None
    ]
    if not seeds:
        return []
    on_returns = [cast(float, sampled.returns[s]) for s in seeds]
    on, off = bootstrap_ci(on_returns), bootstrap_ci([cast(float, nb2.returns[s]) for s in seeds])
    value = (
        f"{on[0]:.3f} [{on[1]:.3f}, {on[2]:.3f}] vs {off[0]:.3f} [{off[1]:.3f}, {off[2]:.3f}]"
        f" (worst seed {min(on_returns):.3f}; seeds {', '.join(map(str, seeds))})"
    )
    keep = 1 - SAMPLING_RETURN_LOSS
    metric = f"{task}: mean return with / without token sampling"
    rows = [Row("speed", metric, value, f">= {keep:.2f}x without", bool(on[0] >= keep * off[0]))]
    speeds = []
    for s in seeds:
        fast, slow = sampled.steps_per_s.get(s), nb2.steps_per_s.get(s)
        if fast is not None and slow:
            speeds.append(fast / slow)
    if speeds:
        ratio, goal = float(np.median(speeds)), 1 / (1 - SAMPLING_TIME_SAVED)
        value = f"{ratio:.2f} (per seed {', '.join(f'{r:.2f}' for r in speeds)})"
        metric = f"{task}: steps/s with / without token sampling"
        rows.append(Row("speed", metric, value, f">= {goal:.2f}", ratio >= goal))
    return rows


# --------------------------------------------------------------------------- the benchmark


def run(
    quick: bool = False,
    *,
    seeds: Sequence[int] | None = None,
    tasks: Sequence[str] | None = None,
    policies: Sequence[str] | None = None,
    workers: int = WORKERS,
    runs_dir: Path | None = None,
    device: str = "auto",
) -> list[Row]:
    """The benchmark; ``quick``: seed 0, 2k steps per run, 3 episodes (given arguments win)."""
    seeds = list(seeds if seeds is not None else ((0,) if quick else SEEDS))
    tasks = list(tasks or TASKS)
    policies = list(policies or POLICIES)
    runs_dir = Path(runs_dir if runs_dir is not None else (QUICK_RUNS_DIR if quick else RUNS_DIR))
    episodes = QUICK_EPISODES if quick else EPISODES
    base = Job("", "", 0, "", 0, {}, {}, episodes, str(runs_dir), device, torch.get_num_threads())
    jobs = plan_jobs(tasks, policies, seeds, base, QUICK_STEPS if quick else None)
    print("\n## Speed at equal return: PPO on MiniGrid-DoorKey-5x5, cells and pixels")
    print(f"   seeds {seeds}; {len(jobs)} runs, {workers} side by side; {runs_dir}")
    start = time.perf_counter()
    outcomes = run_jobs(jobs, workers)
    table = figures(outcomes)
    md = summary_table(table)
    rows = targets(table)
    failed = [f"Failed {o.job.label}: {o.error}" for o in outcomes if o.error is not None]
    sources = [
        f"- {t} / {p}: {TASKS[t].policies[p]['source']}"
        for t in tasks
        for p in policies
        if p in TASKS[t].policies
    ]
    print("\n" + md + "\n" + "\n".join(failed))
    for r in rows:
        verdict = {True: ", met", False: ", missed", None: ""}[r.met]
        print(f"   {r.metric}: {r.value} (goal {r.goal}{verdict})")
    runs_dir.mkdir(parents=True, exist_ok=True)
    text = ["# Speed at equal return", "", md, "", *failed, "", "Hyperparameters:", "", *sources, ""]
    (runs_dir / "summary.md").write_text("\n".join(text))
    write_json(
        runs_dir / "summary.json",
        {
            "config": dict(seeds=seeds, tasks=tasks, policies=policies, quick=quick, workers=workers),
            "threshold": THRESHOLD,
            "window": WINDOW,
            "figures": {t: {p: asdict(f) for p, f in per.items()} for t, per in table.items()},
            "targets": [asdict(r) for r in rows],
            "runs": [asdict(o) for o in outcomes],
            "wall_s": time.perf_counter() - start,
        },
    )
    print(f"\nsummary: {runs_dir / 'summary.md'}, {runs_dir / 'summary.json'}")
    return rows


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"seed 0, {QUICK_STEPS:,} steps, {QUICK_EPISODES} episodes"
    )
    parser.add_argument("--seeds", type=parse_seeds, help="e.g. 0-2 (the default) or 0,1")
    parser.add_argument("--tasks", type=names_of(list(TASKS), "task"), help=f"default {','.join(TASKS)}")
    parser.add_argument(
        "--policies", type=names_of(list(POLICIES), "contender"), help=f"default {','.join(POLICIES)}"
    )
    add_run_options(parser, WORKERS, RUNS_DIR, QUICK_RUNS_DIR)
    args, options = parse_run_options(parser, argv)
    return run(args.quick, seeds=args.seeds, tasks=args.tasks, policies=args.policies, **options)


if __name__ == "__main__":
    main()
