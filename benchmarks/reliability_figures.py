"""The reliability benchmark's figures (:mod:`benchmarks.reliability`): its rows and scores, what
each run produced, and per row and policy the per-seed returns, their IQM and CI, the seeds at the
threshold and whether the targets are met. Pure functions of the runs' outcomes, so the test suite
checks them on synthetic results."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks.common import Row

NB2, MLP = "nb2", "mlp"
POLICIES = (NB2, MLP)
EPISODES = 20
EVAL_SEED_BASE = 10_000_000
EVAL_SEED_STRIDE = 1_000
"""Held-out evaluation: episode ``e`` of seed ``s`` on env seed ``BASE + STRIDE * s + e``."""
IQM_MARGIN = 0.02
"""NB2's IQM may trail MLP's by this share of the env's score range."""
SHARE_MIN = 0.9
"""Share of seeds at or above the threshold (9 of 10)."""
COLLAPSE_TOLERANCE = 0.05
"""DoorKey: the last evaluation during training within this of the run's best."""


@dataclass(frozen=True)
class Score:
    """How an env's returns are judged."""

    threshold: float
    low: float
    """The score range, for the IQM margin: worst and best returns."""
    high: float


SCORES = {
    "CartPole-v1": Score(475.0, 0.0, 500.0),  # Gymnasium's reward_threshold; 500 steps at +1
    "Acrobot-v1": Score(-100.0, -500.0, 0.0),  # Gymnasium's reward_threshold; 500 steps at -1
    # MiniGrid pays 1 - 0.9 steps / max_steps on success: 0.9 is the goal within 28 of 250 steps
    "MiniGrid-DoorKey-5x5-v0": Score(0.9, 0.0, 1.0),
    # no Gymnasium threshold; untrained policies score about -1200 to -1600, trained ones about -150
    "Pendulum-v1": Score(-200.0, -1600.0, 0.0),
}
"""Per env: the threshold a seed must reach, and the score range."""


@dataclass(frozen=True)
class Spec:
    """One row: an env and algorithm, the budget (None: the entry's ``n_timesteps``), overrides."""

    env: str
    algo: str
    steps: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    late_collapse: bool = False
    """Check the training-time evaluation curve for a late collapse."""


ROWS = {
    "cartpole-ppo": Spec("CartPole-v1", "ppo", 100_000),
    "cartpole-ppo-const": Spec("CartPole-v1", "ppo", 100_000, {"learning_rate": 1e-3, "clip_range": 0.2}),
    "acrobot-ppo": Spec("Acrobot-v1", "ppo"),
    "doorkey-ppo": Spec("MiniGrid-DoorKey-5x5-v0", "ppo", 150_000, late_collapse=True),
    "cartpole-dqn": Spec("CartPole-v1", "dqn"),
    "cartpole-a2c": Spec("CartPole-v1", "a2c"),
    "pendulum-sac": Spec("Pendulum-v1", "sac", 20_000),
    "pendulum-td3": Spec("Pendulum-v1", "td3", 20_000),
}


def eval_seed(seed: int, episode: int) -> int:
    """The env seed of held-out episode ``episode`` of training seed ``seed``."""
    if not 0 <= episode < EVAL_SEED_STRIDE:
        raise ValueError(f"episode must be in [0, {EVAL_SEED_STRIDE}), got {episode}")
    return EVAL_SEED_BASE + EVAL_SEED_STRIDE * seed + episode


# --------------------------------------------------------------------------- the runs


@dataclass(frozen=True)
class Job:
    """One training run and its held-out evaluation (plain values: the key of its kept outcome)."""

    row: str
    policy: str
    seed: int
    env: str
    algo: str
    steps: int
    overrides: dict[str, Any]
    """What :func:`nb2_agents.train` gets as ``overrides`` (the policy's and the row's)."""
    episodes: int = EPISODES
    eval_freq: int | None = None
    """None: the default (a tenth of the budget)."""
    runs_dir: str = "runs"
    device: str = "auto"
    threads: int = 1

    @property
    def label(self) -> str:
        return f"{self.row} {self.policy} s{self.seed}"


@dataclass
class Outcome:
    """What one job produced (plain data: it crosses processes)."""

    job: Job
    run_dir: str = ""
    wall_s: float = 0.0
    """The whole job: training, the final eval.json, the held-out episodes."""
    train_s: float = 0.0
    cpu_s: float = 0.0
    peak_mb: float = 0.0
    baseline_mb: float = 0.0
    """Peak RSS of the job's fresh process before training (Python, torch, the imports)."""
    steps: int = 0
    deterministic: bool = True
    eval_seeds: list[int] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    """One per held-out episode, on ``eval_seeds``."""
    curve: list[tuple[int, float]] = field(default_factory=list)
    """(step, mean return) of each evaluation during training."""
    error: str | None = None

    @property
    def mean_return(self) -> float | None:
        return float(np.mean(self.returns)) if self.returns and self.error is None else None

    def summary(self) -> str:
        mean = "n/a" if self.mean_return is None else f"{self.mean_return:.4g}"
        return f"{self.wall_s:6.0f} s ({self.cpu_s:.0f} s CPU)  return {mean:>7}  {self.run_dir}"


# --------------------------------------------------------------------------- the figures


def iqm(rows: np.ndarray) -> np.ndarray:
    """The interquartile mean of each row of a 2-D array: the mean of the middle half, ``n // 4``
    values cut from each end (``scipy.stats.trim_mean(x, 0.25)``, as rliable)."""
    rows = np.sort(np.atleast_2d(rows), axis=1)
    cut = rows.shape[1] // 4
    return rows[:, cut : rows.shape[1] - cut].mean(axis=1)


@dataclass
class Figures:
    """One row's figures for one policy, over its seeds."""

    row: str
    policy: str
    per_seed: dict[int, float | None]
    """Seed → mean held-out return; None where the run failed."""
    iqm: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    at_threshold: int = 0
    """Seeds at or above the env's threshold."""
    worst: float | None = None
    worst_seed: int | None = None
    collapsed: list[int] = field(default_factory=list)
    """Seeds whose last evaluation during training is more than the tolerance below their best."""
    curves: int = 0
    """Seeds with a training-time evaluation curve."""
    wall_s: float = 0.0
    """Mean wall time per run."""

    @property
    def complete(self) -> bool:
        return bool(self.per_seed) and all(v is not None for v in self.per_seed.values())


def late_collapse(curve: Sequence[tuple[int, float]], tolerance: float = COLLAPSE_TOLERANCE) -> bool:
    """The last evaluation is more than ``tolerance`` below the best one."""
    return bool(curve) and curve[-1][1] < max(r for _, r in curve) - tolerance


def figures(row: str, policy: str, outcomes: Sequence[Outcome]) -> Figures:
    """The figures of ``outcomes`` (one row, one policy, one per seed)."""
    from nb2_agents.curriculum.metrics import bootstrap_ci

    score = SCORES[ROWS[row].env]
    fig = Figures(row, policy, {o.job.seed: o.mean_return for o in outcomes})
    done = {s: v for s, v in fig.per_seed.items() if v is not None}
    ok = [o for o in outcomes if o.mean_return is not None]
    if done:
        fig.iqm, fig.ci_low, fig.ci_high = bootstrap_ci(list(done.values()), statistic=iqm)
        fig.at_threshold = sum(v >= score.threshold for v in done.values())
        fig.worst_seed = min(done, key=lambda s: done[s])
        fig.worst = done[fig.worst_seed]
        fig.wall_s = float(np.mean([o.wall_s for o in ok]))
    fig.collapsed = [o.job.seed for o in ok if late_collapse(o.curve)]
    fig.curves = sum(bool(o.curve) for o in ok)
    return fig


def target_line(row: Row) -> str:
    """A target as the summary lists it: met, missed, or n/a."""
    met = "n/a" if row.met is None else ("met" if row.met else "missed")
    return f"- {row.metric}: {row.value} (target {row.goal}): {met}"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def checks(row: str, nb2: Figures | None, mlp: Figures | None) -> list[Row]:
    """The row's targets on NB2 (see the module docstring); None where the runs are missing."""
    if nb2 is None:
        return []
    spec, score = ROWS[row], SCORES[ROWS[row].env]
    margin = IQM_MARGIN * (score.high - score.low)
    out = []
    if mlp is not None:
        met = None
        if nb2.complete and mlp.complete and nb2.iqm is not None and mlp.iqm is not None:
            met = nb2.iqm >= mlp.iqm - margin
        value = f"{_num(nb2.iqm)} / {_num(mlp.iqm)}"
        out.append(Row("reliability", f"{row}: IQM nb2 / mlp", value, f"nb2 >= mlp - {margin:g}", met))
    n = len(nb2.per_seed)
    share = None if not nb2.complete else nb2.at_threshold >= SHARE_MIN * n
    goal = f">= {math.ceil(SHARE_MIN * n)}/{n}"
    out.append(
        Row("reliability", f"{row}: nb2 seeds >= {score.threshold:g}", f"{nb2.at_threshold}/{n}", goal, share)
    )
    if spec.late_collapse:
        met = None if not nb2.complete or nb2.curves < n else not nb2.collapsed
        value = f"{n - len(nb2.collapsed)}/{n}" + (f" (collapsed: {nb2.collapsed})" if nb2.collapsed else "")
        goal = f"{n}/{n} (last evaluation within {COLLAPSE_TOLERANCE} of the best)"
        out.append(Row("reliability", f"{row}: nb2 seeds without a late collapse", value, goal, met))
    return out


def analyse(
    outcomes: Sequence[Outcome], rows: Sequence[str], policies: Sequence[str]
) -> tuple[dict[str, dict[str, Figures]], list[Row]]:
    """Per row and policy its figures, and every row's targets."""
    table: dict[str, dict[str, Figures]] = {}
    targets: list[Row] = []
    for row in rows:
        mine = {p: [o for o in outcomes if o.job.row == row and o.job.policy == p] for p in policies}
        per_policy = {p: figures(row, p, sorted(m, key=lambda o: o.job.seed)) for p, m in mine.items() if m}
        if per_policy:
            table[row] = per_policy
            targets += checks(row, per_policy.get(NB2), per_policy.get(MLP))
    return table, targets


# --------------------------------------------------------------------------- reporting


NOTE = (
    f"Per seed: the mean return of the final model over held-out episodes (env seeds {EVAL_SEED_BASE:,} "
    f"+ {EVAL_SEED_STRIDE} x seed + episode; greedy actions, MiniGrid's sampled). IQM: mean of the "
    "middle half of the seeds, 95% percentile-bootstrap CI over seeds. Wall: mean per run (training "
    "and evaluation, each run in its own process, runs side by side)."
)


def summary_table(table: dict[str, dict[str, Figures]], jobs: Sequence[Job]) -> str:
    head = "| row | env | algo | steps | policy | IQM [95% CI] | seeds >= threshold | worst (seed) |"
    out = [head + " late collapses | wall / run (s) | per seed |", "|" + "---|" * 11]
    steps = {j.row: j.steps for j in jobs}
    for row, per_policy in table.items():
        spec, score = ROWS[row], SCORES[ROWS[row].env]
        for policy, f in per_policy.items():
            ci = "n/a" if f.iqm is None else f"{f.iqm:.4g} [{f.ci_low:.4g}, {f.ci_high:.4g}]"
            worst = "n/a" if f.worst is None else f"{f.worst:.4g} (s{f.worst_seed})"
            collapses = f"{len(f.collapsed)}/{f.curves}" if spec.late_collapse else "—"
            seeds = ", ".join("failed" if v is None else f"{v:.4g}" for v in f.per_seed.values())
            cells = [row, spec.env, spec.algo, f"{steps.get(row, 0):,}", policy, ci]
            cells += [f"{f.at_threshold}/{len(f.per_seed)} (>= {score.threshold:g})", worst, collapses]
            out.append("| " + " | ".join([*cells, f"{f.wall_s:.0f}", seeds]) + " |")
    return "\n".join(out)
