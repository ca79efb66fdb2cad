"""The distillation benchmark's figures (:mod:`benchmarks.distill`): what each run produced, and
per measure the per-seed values, their mean and whether the target is met. Pure functions of
the runs' outcomes, so the test suite checks them on synthetic results."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks.common import Row
from nb2_agents.curriculum.spec import load_curriculum

SCRATCH, KICKSTART, PURE, MULTI = "scratch", "kickstart", "pure", "multi"
SUITE = "classic-control"
"""The multi-teacher measure's curriculum."""
THRESHOLD_SHARE = 0.95
"""Kickstart's threshold: this share of the teacher's card score, normalised by the random return."""
KICKSTART_RATIO_MAX = 1 / 3
PURE_KEPT_MIN = 0.95
MULTI_KEPT_MIN = 0.9


# --------------------------------------------------------------------------- the runs


@dataclass(frozen=True)
class Job:
    """One training run: ``nb2 train`` (scratch) or ``nb2 distill`` (kickstart, pure, multi)."""

    kind: str
    target: str
    """The env id, or the suite for ``multi``."""
    seed: int
    teachers: tuple[str, ...] = ()
    """``zoo:NAME`` references (none for scratch)."""
    steps: int | None = None
    """None: the ppo.yaml entry's budget."""
    eval_freq: int | None = None
    """None: the default (a tenth of the budget)."""
    temperature: float = 1.0
    final_episodes: int | None = None
    runs_dir: str = "runs"
    device: str = "auto"
    threads: int = 1

    @property
    def label(self) -> str:
        return f"{self.kind} {self.target} s{self.seed}"


@dataclass
class Outcome:
    """What one job produced, as the tables need it (plain data: it crosses processes)."""

    job: Job
    run_dir: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    """User + system CPU seconds of the job's process (one torch thread: about one core)."""
    peak_mb: float = 0.0
    """``ru_maxrss`` of the job's own fresh process."""
    baseline_mb: float = 0.0
    """The same before training: Python, torch, the imports."""
    steps: int = 0
    curve: list[tuple[int, float]] = field(default_factory=list)
    """(step, mean return) of each in-training evaluation (one env)."""
    final_return: float | None = None
    report: dict[str, Any] = field(default_factory=dict)
    """``teachers.json`` (distillation runs)."""
    error: str | None = None

    def summary(self) -> str:
        """The figures of the benchmark's progress line."""
        return (
            f"{self.wall_s:6.0f} s ({self.cpu_s:.0f} s CPU)  peak RSS {self.peak_mb:4.0f} MB  {self.run_dir}"
        )


def random_returns() -> dict[str, float]:
    """Each env's uniform-random return, from the suites' normalisers (``envs/*.yaml``)."""
    out: dict[str, float] = {}
    for suite in (SUITE, "minigrid"):
        for task in load_curriculum(suite).tasks:
            if task.random_return is not None:
                out.setdefault(task.env_id, float(task.random_return))
    return out


def threshold(card_return: float, random_return: float) -> float:
    """Kickstart's target return: :data:`THRESHOLD_SHARE` of the card's score above random."""
    return random_return + THRESHOLD_SHARE * (card_return - random_return)


# --------------------------------------------------------------------------- the figures


@dataclass
class Line:
    """One line of the benchmark's table: a measure on one env or task, per seed and the mean."""

    measure: str
    where: str
    cells: dict[int, str]
    """Seed → the formatted per-seed figure."""
    mean: str
    target: str
    met: bool | None
    data: dict[str, Any] = field(default_factory=dict)
    """The raw figures (summary.json)."""

    def row(self) -> Row:
        seeds = ", ".join(f"s{s} {c}" for s, c in self.cells.items())
        return Row(
            "distill", f"{self.measure}: {self.where}", f"{seeds}; mean {self.mean}", self.target, self.met
        )


def steps_to_threshold(curve: Sequence[tuple[int, float]], level: float) -> int | None:
    """The step of the first evaluation whose mean return reaches ``level``; None if none does."""
    return next((step for step, mean in curve if mean >= level), None)


def _k(steps: float) -> str:
    return f"{steps / 1000:.1f}k" if steps < 100_000 else f"{steps / 1000:.0f}k"


def kickstart_ratio(kick: int | None, scratch: int | None, budget: int) -> tuple[float | None, str]:
    """Kickstart's steps over scratch's and what the value is: ``=`` exact, ``<=`` / ``>=`` a
    bound (scratch / kickstart never reached the threshold: its budget counts), ``?`` neither."""
    if kick is None and scratch is None:
        return None, "?"
    if scratch is None:
        return (kick or 0) / budget, "<="
    if kick is None:
        return budget / max(scratch, 1), ">="
    return kick / max(scratch, 1), "="


def mean_ratio(
    ratios: Sequence[tuple[float | None, str]], goal: float
) -> tuple[float | None, str, bool | None]:
    """The mean over seeds, its kind (as :func:`kickstart_ratio`'s) and whether it meets ``<= goal``:
    None where bounds cannot decide (a mean of upper bounds above the goal, lower bounds below)."""
    kinds = {kind for _, kind in ratios}
    if not ratios or "?" in kinds or {"<=", ">="} <= kinds:
        return None, "?", None
    mean = float(np.mean([value for value, _ in ratios]))
    if "<=" in kinds:
        return mean, "<=", True if mean <= goal else None
    if ">=" in kinds:
        return mean, ">=", False if mean > goal else None
    return mean, "=", mean <= goal


def _bounded(value: float | None, kind: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" if kind == "=" else f"{kind} {value:.2f}"


def kickstart_line(
    env_id: str, outcomes: Sequence[Outcome], card_return: float, random_return: float, steps: int
) -> Line:
    level = threshold(card_return, random_return)
    target = (
        f"<= {KICKSTART_RATIO_MAX:.2f} (threshold {level:.1f}: {THRESHOLD_SHARE:.0%} of the card's "
        f"{card_return:.1f} above random {random_return:.1f})"
    )
    runs = {(o.job.kind, o.job.seed): o for o in outcomes if o.job.target == env_id and o.error is None}
    seeds = sorted({o.job.seed for o in outcomes if o.job.target == env_id})
    cells: dict[int, str] = {}
    ratios: list[tuple[float | None, str]] = []
    data: dict[str, Any] = {}
    for seed in seeds:
        kick_run, scratch_run = runs.get((KICKSTART, seed)), runs.get((SCRATCH, seed))
        if kick_run is None or scratch_run is None:
            cells[seed] = "failed"
            continue
        kick = steps_to_threshold(kick_run.curve, level)
        scratch = steps_to_threshold(scratch_run.curve, level)
        ratio = kickstart_ratio(kick, scratch, steps)
        ratios.append(ratio)
        shown = [_k(s) if s is not None else f">{_k(steps)}" for s in (kick, scratch)]
        cells[seed] = f"{_bounded(*ratio)} ({shown[0]} / {shown[1]})"
        data[str(seed)] = {
            "kickstart_steps": kick,
            "scratch_steps": scratch,
            "ratio": ratio[0],
            "kind": ratio[1],
        }
    mean, kind, met = (
        mean_ratio(ratios, KICKSTART_RATIO_MAX) if len(ratios) == len(seeds) else (None, "?", None)
    )
    data.update(threshold=level, card_return=card_return, random_return=random_return, budget=steps)
    return Line(
        "kickstart / scratch steps to threshold", env_id, cells, _bounded(mean, kind), target, met, data
    )


def kept_share(student: float, teacher: float, random_return: float) -> float | None:
    """``(student − random) / (teacher − random)``; None where the teacher is no better than random."""
    gap = teacher - random_return
    return (student - random_return) / gap if gap > 0 else None


def _mean_line(
    measure: str,
    where: str,
    cells: dict[int, str],
    values: list[float | None],
    goal: float,
    data: dict[str, Any],
) -> Line:
    complete = bool(values) and all(v is not None for v in values) and len(values) == len(cells)
    mean = float(np.mean([v for v in values if v is not None])) if complete else None
    met = None if mean is None else mean >= goal
    return Line(measure, where, cells, "n/a" if mean is None else f"{mean:.3f}", f">= {goal}", met, data)


def pure_line(env_id: str, outcomes: Sequence[Outcome], random_return: float) -> Line:
    cells: dict[int, str] = {}
    values: list[float | None] = []
    data: dict[str, Any] = {}
    for o in (o for o in outcomes if o.job.target == env_id):
        if o.error is not None or not o.report:
            cells[o.job.seed] = "failed"
            continue
        entry = o.report["teachers"][0]
        student, teacher = entry["student"]["mean_return"], entry["teacher"]["mean_return"]
        kept = kept_share(student, teacher, random_return)
        values.append(kept)
        cells[o.job.seed] = f"{'n/a' if kept is None else f'{kept:.3f}'} ({student:.4g} / {teacher:.4g})"
        data[str(o.job.seed)] = {"kept": kept, "student_return": student, "teacher_return": teacher}
    data["random_return"] = random_return
    return _mean_line("pure: kept share of the teacher's return", env_id, cells, values, PURE_KEPT_MIN, data)


def multi_lines(outcomes: Sequence[Outcome]) -> list[Line]:
    tasks = [t.name for t in load_curriculum(SUITE).tasks]
    lines = []
    for i, task in enumerate(tasks):
        cells: dict[int, str] = {}
        values: list[float | None] = []
        data: dict[str, Any] = {}
        for o in outcomes:
            if o.error is not None or not o.report:
                cells[o.job.seed] = "failed"
                continue
            entry = o.report["teachers"][i]
            kept, student, teacher = entry["kept"], entry["student"]["score"], entry["teacher"]["score"]
            values.append(kept)
            cells[o.job.seed] = f"{'n/a' if kept is None else f'{kept:.3f}'} ({student:.2f} / {teacher:.2f})"
            data[str(o.job.seed)] = {"kept": kept, "student_score": student, "teacher_score": teacher}
        measure = f"multi-teacher {SUITE}: kept share of the normalised score"
        lines.append(_mean_line(measure, task, cells, values, MULTI_KEPT_MIN, data))
    return lines


# --------------------------------------------------------------------------- reporting


def _met(met: bool | None) -> str:
    return "n/a" if met is None else ("met" if met else "NOT met")


def table(lines: Sequence[Line], seeds: Sequence[int]) -> str:
    head = ["measure", "env / task", *(f"seed {s}" for s in seeds), "mean", "target", "met"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for line in lines:
        cells = [line.measure, line.where, *(line.cells.get(s, "—") for s in seeds)]
        out.append("| " + " | ".join([*cells, line.mean, line.target, _met(line.met)]) + " |")
    return "\n".join(out)


def runs_table(outcomes: Sequence[Outcome]) -> str:
    out = [
        "| run | steps | wall (s) | CPU (s) | peak RSS (MB) | final return | run folder |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        if o.error is not None:
            out.append(f"| {o.job.label} | — | — | — | — | — | failed: {o.error} |")
            continue
        final = "—" if o.final_return is None else f"{o.final_return:.2f}"
        out.append(
            f"| {o.job.label} | {o.steps:,} | {o.wall_s:.0f} | {o.cpu_s:.0f} | {o.peak_mb:.0f} | {final} "
            f"| {o.run_dir} |"
        )
    return "\n".join(out)
