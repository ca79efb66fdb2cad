"""Knowledge distillation: kickstarted vs scratch NB2, pure distillation, a multi-teacher student.

``python -m benchmarks.distill [--seeds 0,1,2] [--quick] [--runs-dir runs/benchmarks/distill]
[--workers 2] [--measures kickstart,pure,multi]``, or ``python -m benchmarks --only distill``.

The teachers are the policy zoo's (``zoo:NAME``, ``policies/zoo/``); a measure whose teacher is
not built yet is reported as skipped. Every run is one call, :func:`nb2_agents.train` or
:func:`nb2_agents.distill`, made in a fresh (spawned) process of its own, ``--workers`` of them
side by side, all seeds of all measures in this one invocation. The issue's targets (issue 6):

* **Kickstart** (CartPole-v1, Acrobot-v1): per seed, ``nb2 train`` from scratch with the env's
  ``policies/ppo.yaml`` entry and ``nb2 distill --mode kickstart`` with the zoo teacher, the
  same entry, preset and budget (the entry's ``n_timesteps``), both evaluated every
  ``budget / 20`` steps (5 deterministic episodes, ``eval/evaluations.npz``). Steps to
  threshold: the first evaluation whose mean return reaches the threshold, which is 95 % of the
  teacher's *card* score, normalised by the env's random return:
  ``R_random + 0.95 (R_card − R_random)`` (CartPole: 476.1, next to Gymnasium's 475 "solved").
  Per seed the ratio kickstart / scratch; target: mean over seeds <= 1/3. A run that never
  reaches it counts its whole budget, so the ratio is a bound (``<=`` or ``>=``), and a mean of
  bounds that cannot decide the target is reported as n/a. Steps are known to one evaluation
  interval (5 % of the budget): a kickstarted CartPole student that scores 500 at its first
  evaluation is counted at 5k steps.
* **Pure** (CartPole, Acrobot, MountainCar, DoorKey-5x5 when its teacher and MiniGrid are
  there): ``nb2 distill --mode pure`` into NB2-nano (settings: ``policies/distill.yaml``);
  ``teachers.json`` evaluates student and teacher on the same 20 episodes. Kept:
  ``(R_student − R_random) / (R_teacher − R_random)``, unclipped, so that negative returns
  (Acrobot, MountainCar) read the right way round;
  ``R_random`` is the env's ``random_return`` in ``envs/classic-control.yaml`` /
  ``envs/minigrid.yaml`` (CartPole's 22.7 makes it within 5 % of the plain return ratio).
  Target: mean over seeds >= 0.95.
* **Multi-teacher** (``classic-control``): one pure student distilled from the zoo teachers of
  the suite's tasks, in the suite's order. Kept per task is ``teachers.json``'s ``kept``:
  student score / teacher score, both the suite's normalised score ``(R − random) /
  (reference − random)`` clipped to [0, 1] (:mod:`nb2_agents.distill.report`), on the same 10
  episodes. Target: each task's mean over seeds >= 0.9.

Budgets: kickstart and scratch the ppo.yaml entry's (CartPole 100k, Acrobot 200k); pure
CartPole 50k (the issue's acceptance command), the others 100k; multi-teacher 300k (100k per
task, the envs split evenly between tasks). Pure and multi-teacher students are evaluated every
``budget / 5`` steps (a learning curve in the run folder; the figures are the final evaluation).
Temperature τ: 1 for policy teachers, 0.01 for Q-value (DQN) teachers (Rusu et al. 2016); a
multi-teacher student takes the smallest of its teachers'. Figures are printed and written to
``{runs-dir}/summary.md`` / ``summary.json``, never asserted. Wall time, CPU time and peak RSS
(``getrusage`` of the run's own fresh process) come with every run; other load on the machine
moves the wall times, not the figures.

Duration (the defaults), estimated from the CPU time of ``--quick``'s runs (about 1.5-2 ms of
one core per env step for NB2-nano, 2-4 ms where the student is distilled or kickstarted or
reads DoorKey's 49 cells, and about 1 ms per step of a batch-1 evaluation): per seed about
50 minutes of one core (scratch + kickstart CartPole ~11, Acrobot ~14; pure ~14 with DoorKey;
multi-teacher ~11), so about 2.5 hours of CPU for 3 seeds (give or take half), about 1.3 hours
of wall time with ``--workers 2`` on two free cores. ``--quick`` (seed 0, 3k steps, 5 final
episodes) takes about 2.5 minutes of CPU and only checks that everything runs: its figures
mean nothing.

The benchmark resumes: each finished run's figures are kept under ``{runs-dir}/measured/``, and a
later invocation reuses those of exactly the same job (an interrupted run starts again). The key
is the job (measure, env, seed, teachers, budget, τ, device), not the code or the hyperparameter
files: delete a measure's files there to measure it again after changing either.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
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
    load_kept,
    maxrss_mb,
    names_of,
    parse_run_options,
    save_kept,
)
from benchmarks.distill_figures import (
    KICKSTART,
    MULTI,
    PURE,
    SCRATCH,
    SUITE,
    Job,
    Line,
    Outcome,
    kickstart_line,
    multi_lines,
    pure_line,
    random_returns,
    runs_table,
    table,
)
from nb2_agents import zoo
from nb2_agents.curriculum.spec import load_curriculum

MEASURES = (KICKSTART, PURE, MULTI)
PRESET = "nano"
TEACHERS = {
    "CartPole-v1": "cartpole-ppo-mlp",
    "Acrobot-v1": "acrobot-dqn-mlp",
    "MountainCar-v0": "mountaincar-dqn-mlp",
    "MiniGrid-DoorKey-5x5-v0": "doorkey-ppo-mlp",
}
"""The zoo teacher of each env."""
KICKSTART_ENVS = ("CartPole-v1", "Acrobot-v1")
PURE_STEPS = {"CartPole-v1": 50_000, "Acrobot-v1": 100_000, "MountainCar-v0": 100_000}
PURE_STEPS_MINIGRID = {"MiniGrid-DoorKey-5x5-v0": 100_000}
MULTI_STEPS = 300_000
EVALS_PER_RUN = 20
"""Kickstart and scratch are evaluated every ``budget / EVALS_PER_RUN`` steps."""
EVALS_PER_DISTILL_RUN = 5
"""Pure and multi-teacher students every ``budget / 5`` (a learning curve; the figure is the
final evaluation). A CartPole policy at 500 makes each evaluation 2,500 policy steps at batch 1."""
TEMPERATURE = {"dqn": 0.01}
"""τ by teacher algorithm (1 otherwise): Q-values are sharpened, as in Rusu et al. 2016."""
SEEDS = (0, 1, 2)
WORKERS = 2
RUNS_DIR = Path("runs/benchmarks/distill")
QUICK_SEEDS = (0,)
QUICK_STEPS = 3_000
QUICK_EVAL_FREQ = 1_500
"""Kickstart and scratch, twice; pure and multi-teacher once, at :data:`QUICK_STEPS`."""
QUICK_FINAL_EPISODES = 5
QUICK_RUNS_DIR = Path("runs/benchmarks/distill-quick")


def run_job(job: Job) -> Outcome:
    """Train ``job`` in this process (the pool gives each job a fresh one)."""
    from nb2_agents import distill, train

    torch.set_num_threads(job.threads)
    baseline, start, cpu_start = maxrss_mb(), time.perf_counter(), cpu_s()
    common: dict[str, Any] = dict(
        preset=PRESET,
        steps=job.steps,
        seed=job.seed,
        runs_dir=job.runs_dir,
        device=job.device,
        eval_freq=job.eval_freq,
        final_episodes=job.final_episodes,
        progress=False,
        verbose=False,
    )
    outcome = Outcome(job)
    if job.kind == SCRATCH:
        trained = train(env=job.target, algo="ppo", threads=job.threads, **common)
        run_dir, outcome.steps = trained.run_dir, trained.steps
        outcome.final_return = None if trained.eval is None else trained.eval.mean_return
    else:
        where: dict[str, Any] = {"curriculum" if job.kind == MULTI else "env": job.target}
        mode = KICKSTART if job.kind == KICKSTART else PURE
        result = distill(list(job.teachers), mode=mode, temperature=job.temperature, **where, **common)
        run_dir, outcome.steps, outcome.report = result.run_dir, result.steps, result.report
        outcome.final_return = None if result.eval is None else result.eval.mean_return
    outcome.wall_s, outcome.cpu_s = time.perf_counter() - start, cpu_s() - cpu_start
    outcome.peak_mb, outcome.baseline_mb = maxrss_mb(), baseline
    outcome.run_dir, outcome.curve = str(run_dir), eval_curve(Path(run_dir))
    return outcome


def measured_path(job: Job) -> Path:
    """Where a finished job's outcome is kept, so that a later invocation resumes after it."""
    name = f"{job.kind}__{job.target}__s{job.seed}.json".replace("/", "_")
    return Path(job.runs_dir) / MEASURED_DIR / name


def _rebuild(job: Job, fields: dict[str, Any]) -> Outcome:
    fields["curve"] = [(int(t), float(r)) for t, r in fields["curve"]]
    return Outcome(job, **fields)


def load_measured(job: Job) -> Outcome | None:
    """The outcome of exactly this job (same kind, target, seed, teachers, budget, evaluation,
    temperature, device and threads) from an earlier invocation, or None."""
    return load_kept(measured_path(job), job, partial(_rebuild, job))


def save_measured(outcome: Outcome) -> None:
    """Keep a successful outcome (temp file, then rename)."""
    save_kept(measured_path(outcome.job), outcome.job, outcome)


def run_jobs(jobs: Sequence[Job], workers: int) -> list[Outcome]:
    """Every job in a fresh spawned process, ``workers`` side by side; in ``jobs``' order.
    A failed job is reported with its error, so it does not cost the other runs' figures. A job
    measured by an earlier invocation (``{runs-dir}/measured/``) is not run again."""
    return common.run_jobs(
        jobs, workers, run_job, measured_path, _rebuild, lambda job, err: Outcome(job, error=err)
    )


# --------------------------------------------------------------------------- the plan


def teacher_status(env_id: str) -> tuple[zoo.Card | None, str | None]:
    """The zoo card of ``env_id``'s teacher, or None and why it is missing."""
    name = TEACHERS[env_id]
    try:
        card = zoo.get(name)
    except Exception as err:
        return None, f"zoo entry {name}: {err}"
    if card.built is None or not card.model_path.is_file():
        return None, f"zoo:{name} not built ({card.command})"
    return card, None


def temperature(cards: Sequence[zoo.Card]) -> float:
    """τ for these teachers: the smallest of their algorithms' (see :data:`TEMPERATURE`)."""
    return min(TEMPERATURE.get(c.built.algorithm if c.built else "", 1.0) for c in cards)


def budget(env_id: str) -> int:
    """The ppo.yaml entry's ``n_timesteps`` (what ``nb2 train --env`` trains for)."""
    from nb2_agents.config import resolve_config

    return resolve_config(env=env_id, algo="ppo", preset=PRESET).steps


@dataclass
class Plan:
    jobs: list[Job]
    skipped: dict[str, str]
    """Measure and env (or suite) → why it was not run."""
    cards: dict[str, zoo.Card]
    """Env id → its teacher's card (built ones)."""
    budgets: dict[str, int]
    """Kickstart / scratch budget per env."""


def plan_jobs(measures: Sequence[str], seeds: Sequence[int], quick: bool, base: Job) -> Plan:
    """The jobs of every measure and seed, the longest kinds first (they finish together)."""
    cards: dict[str, zoo.Card] = {}
    skipped: dict[str, str] = {}
    budgets: dict[str, int] = {}
    for env_id in TEACHERS:
        card, why = teacher_status(env_id)
        if card is not None:
            cards[env_id] = card
        else:
            skipped[env_id] = why or "no teacher"
    minigrid = importlib.util.find_spec("minigrid") is not None
    small: dict[str, Any] = dict(steps=QUICK_STEPS, final_episodes=QUICK_FINAL_EPISODES) if quick else {}
    groups: list[list[Job]] = []
    if MULTI in measures:
        envs = [t.env_id for t in load_curriculum(SUITE).tasks]
        missing = [skipped[e] for e in envs if e not in cards]
        if missing:
            skipped[f"{MULTI} {SUITE}"] = "; ".join(missing)
        else:
            refs = tuple(f"{zoo.PREFIX}{cards[e].name}" for e in envs)
            tau = temperature([cards[e] for e in envs])
            every = QUICK_STEPS if quick else math.ceil(MULTI_STEPS / EVALS_PER_DISTILL_RUN)
            job = replace(base, kind=MULTI, target=SUITE, teachers=refs, steps=MULTI_STEPS, temperature=tau)
            groups.append([replace(job, seed=s, eval_freq=every, **small) for s in seeds])
    if KICKSTART in measures:
        for env_id in reversed(KICKSTART_ENVS):  # Acrobot, the longer, first
            if env_id not in cards:
                skipped[f"{KICKSTART} {env_id}"] = skipped[env_id]
                continue
            steps = QUICK_STEPS if quick else budget(env_id)
            budgets[env_id] = steps
            every = QUICK_EVAL_FREQ if quick else math.ceil(steps / EVALS_PER_RUN)
            ref = (f"{zoo.PREFIX}{cards[env_id].name}",)
            for kind, teachers in ((KICKSTART, ref), (SCRATCH, ())):
                job = replace(base, kind=kind, target=env_id, teachers=teachers, steps=steps, eval_freq=every)
                job = replace(job, temperature=temperature([cards[env_id]]), **small)
                groups.append([replace(job, seed=s) for s in seeds])
    if PURE in measures:
        pure = {**(PURE_STEPS_MINIGRID if minigrid else {}), **PURE_STEPS}
        if not minigrid:
            skipped[f"{PURE} MiniGrid-DoorKey-5x5-v0"] = (
                "MiniGrid not installed (pip install 'nb2-agents[minigrid]')"
            )
        for env_id, steps in pure.items():
            if env_id not in cards:
                skipped[f"{PURE} {env_id}"] = skipped[env_id]
                continue
            ref = (f"{zoo.PREFIX}{cards[env_id].name}",)
            every = QUICK_STEPS if quick else math.ceil(steps / EVALS_PER_DISTILL_RUN)
            job = replace(base, kind=PURE, target=env_id, teachers=ref, steps=steps, eval_freq=every)
            job = replace(job, temperature=temperature([cards[env_id]]), **small)
            groups.append([replace(job, seed=s) for s in seeds])
    for env_id in TEACHERS:  # only the measure-level reasons are reported
        skipped.pop(env_id, None)
    return Plan([job for group in groups for job in group], skipped, cards, budgets)


def analyse(plan: Plan, outcomes: Sequence[Outcome], seeds: Sequence[int]) -> list[Line]:
    """Every line of the table, in the issue's order; skipped measures as n/a lines."""
    randoms = random_returns()
    lines = []
    for env_id in KICKSTART_ENVS:
        mine = [o for o in outcomes if o.job.kind in (KICKSTART, SCRATCH) and o.job.target == env_id]
        if mine:
            card = plan.cards[env_id]
            assert card.built is not None
            lines.append(
                kickstart_line(
                    env_id, mine, card.built.score.mean_return, randoms[env_id], plan.budgets[env_id]
                )
            )
    for env_id in TEACHERS:
        mine = [o for o in outcomes if o.job.kind == PURE and o.job.target == env_id]
        if mine:
            lines.append(pure_line(env_id, mine, randoms[env_id]))
    multi = [o for o in outcomes if o.job.kind == MULTI]
    if multi:
        lines += multi_lines(multi)
    for what, why in plan.skipped.items():
        measure, where = what.split(" ", 1)
        lines.append(Line(f"{measure} (skipped)", where, dict.fromkeys(seeds, "—"), "n/a", why, None))
    return lines


# --------------------------------------------------------------------------- reporting


NOTE = (
    "Kickstart: steps to the first evaluation (5 episodes, every budget/20 steps) reaching 95% of "
    "the teacher's card score above random; per seed kickstart / scratch (kickstart steps / scratch "
    "steps; '>' never reached, its budget counted, so the ratio is a bound). Pure: (student - random) "
    "/ (teacher - random) of the mean returns on the same 20 episodes (student / teacher shown). "
    "Multi-teacher: teachers.json's kept, student / teacher normalised score (shown), 10 episodes "
    "per task. Targets on the mean over seeds. Wall time, CPU time and peak RSS: each run's own process, "
    "runs side by side."
)


def report(
    lines: Sequence[Line], outcomes: Sequence[Outcome], config: dict[str, Any], runs_dir: Path
) -> list[Row]:
    """Print the tables; write ``summary.md`` and ``summary.json`` into ``runs_dir``."""
    seeds = config["seeds"]
    wall, cpu = sum(o.wall_s for o in outcomes), sum(o.cpu_s for o in outcomes)
    baseline = max((o.baseline_mb for o in outcomes), default=0.0)
    notes = [
        NOTE,
        f"Runs: {len(outcomes)}; {wall / 60:.0f} min of wall time and {cpu / 60:.0f} min of CPU in all "
        f"(the runs' own processes); baseline RSS {baseline:.0f} MB.",
    ]
    print("\n## Distillation\n")
    print(table(lines, seeds))
    print()
    print(runs_table(outcomes))
    print("\n" + "\n".join(notes))
    runs_dir.mkdir(parents=True, exist_ok=True)
    md = [
        "# Distillation benchmark",
        "",
        table(lines, seeds),
        "",
        *notes,
        "",
        "## Runs",
        "",
        runs_table(outcomes),
        "",
    ]
    (runs_dir / "summary.md").write_text("\n".join(md))
    data = {
        "config": config,
        "measures": NOTE,
        "lines": [asdict(line) for line in lines],
        "runs": [asdict(o) for o in outcomes],
    }
    (runs_dir / "summary.json").write_text(json.dumps(data, indent=2, default=str))
    print(f"\nsummary: {runs_dir / 'summary.md'}, {runs_dir / 'summary.json'}")
    return [line.row() for line in lines]


def run(
    quick: bool = False,
    *,
    seeds: Sequence[int] | None = None,
    measures: Sequence[str] = MEASURES,
    workers: int = WORKERS,
    runs_dir: Path | None = None,
    device: str = "auto",
) -> list[Row]:
    """The benchmark; ``quick``: seed 0, 3k steps per run, 5 final episodes (given arguments win)."""
    seeds = list(seeds if seeds is not None else (QUICK_SEEDS if quick else SEEDS))
    runs_dir = Path(runs_dir if runs_dir is not None else (QUICK_RUNS_DIR if quick else RUNS_DIR))
    threads = torch.get_num_threads()
    base = Job("", "", 0, runs_dir=str(runs_dir), device=device, threads=threads)
    plan = plan_jobs(measures, seeds, quick, base)
    config = dict(
        seeds=seeds,
        measures=list(measures),
        quick=quick,
        workers=workers,
        runs_dir=str(runs_dir),
        device=device,
        torch_threads=threads,
        teachers={env: card.name for env, card in plan.cards.items()},
        kickstart_budgets=plan.budgets,
    )
    print("\n## Distillation: kickstart vs scratch, pure, multi-teacher (zoo teachers)")
    print(f"   seeds {seeds}; {len(plan.jobs)} runs, {workers} side by side; {runs_dir}")
    for what, why in plan.skipped.items():
        print(f"   skipped {what}: {why}")
    outcomes = run_jobs(plan.jobs, workers)
    return report(analyse(plan, outcomes, seeds), outcomes, config, runs_dir)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.distill", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"seed 0, {QUICK_STEPS:,} steps per run")
    parser.add_argument("--seeds", type=lambda v: [int(s) for s in _csv(v)], help="default 0,1,2")
    parser.add_argument(
        "--measures",
        type=names_of(MEASURES, "measure"),
        default=list(MEASURES),
        help=f"default {','.join(MEASURES)}",
    )
    add_run_options(parser, WORKERS, RUNS_DIR, QUICK_RUNS_DIR)
    args, options = parse_run_options(parser, argv)
    return run(args.quick, seeds=args.seeds, measures=args.measures, **options)


if __name__ == "__main__":
    main()
