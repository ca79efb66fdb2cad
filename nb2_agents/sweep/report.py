"""What a sweep leaves in its folder: ``trials.csv`` (every trial), ``trials.png`` (each trial's
result and the best so far; the evaluations of each), and ``<algo>.yaml``, the best trial as an
entry of ``policies/<algo>.yaml`` that ``nb2 train --hyperparams`` takes unchanged."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nb2_agents.runs import dump_yaml, write_text

STATES = {
    "COMPLETE": "complete",
    "PRUNED": "pruned",
    "FAIL": "failed",
    "RUNNING": "running",
    "WAITING": "waiting",
}


@dataclass
class TrialRow:
    """One trial, as the table shows it."""

    number: int
    state: str
    """complete, pruned (stopped early by ASHA), failed, or running (elsewhere, or killed)."""
    value: float | None
    """The last evaluation's mean return (a pruned trial's: at the budget it reached)."""
    evaluations: list[float]
    params: dict[str, Any]
    run_dir: str
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def rows_of(trials: Sequence[Any]) -> list[TrialRow]:
    """Table rows of Optuna trials, in the order they started."""
    out = []
    for t in sorted(trials, key=lambda t: t.number):
        evaluations = [v for _, v in sorted(t.intermediate_values.items())]
        value = t.value if t.value is not None else (evaluations[-1] if evaluations else None)
        out.append(
            TrialRow(
                number=t.number,
                state=STATES.get(t.state.name, t.state.name.lower()),
                value=value,
                evaluations=evaluations,
                params=dict(t.params),
                run_dir=str(t.user_attrs.get("run_dir", "")),
                error=str(t.user_attrs.get("error", "")),
            )
        )
    return out


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(rows: Sequence[TrialRow], evals: int, measure: str = "mean return", top: int = 10) -> str:
    """The ``top`` trials, best first (complete ones before those stopped early), as text."""
    ranked = sorted(
        rows,
        key=lambda r: (r.state != "complete", -(r.value if r.value is not None else -math.inf)),
    )
    keys = sorted({k for r in rows for k in r.params})
    header = ["trial", "state", measure, "evals", *keys]
    lines = [header]
    for r in ranked[:top]:
        value = "-" if r.value is None else f"{r.value:.4g}"
        lines.append(
            [
                str(r.number),
                r.state,
                value,
                f"{len(r.evaluations)}/{evals}",
                *(_fmt(r.params.get(k, "")) for k in keys),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    if len(ranked) > top:
        text.append(f"... {len(ranked) - top} more in trials.csv")
    return "\n".join(text)


def write_csv(rows: Sequence[TrialRow], path: Path) -> None:
    keys = sorted({k for r in rows for k in r.params})
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["trial", "state", "mean_return", "evaluations", *keys, "run_dir", "error"])
        for r in rows:
            value = "" if r.value is None else f"{r.value:.6g}"
            evals = " ".join(f"{v:.6g}" for v in r.evaluations)
            out.writerow(
                [r.number, r.state, value, evals, *(r.params.get(k, "") for k in keys), r.run_dir, r.error]
            )


def plot(rows: Sequence[TrialRow], path: Path, title: str) -> None:
    """Left: each trial's mean return (filled: complete; hollow: stopped early; x: failed) and
    the best complete one so far. Right: each trial's evaluations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    best, best_x, best_y = -math.inf, [], []
    for r in rows:
        if r.value is None:
            left.scatter([r.number], [0], marker="x", color="grey")
            continue
        done = r.state == "complete"
        left.scatter([r.number], [r.value], facecolors="C0" if done else "none", edgecolors="C0")
        if done and r.value > best:
            best = r.value
        if best > -math.inf:
            best_x.append(r.number)
            best_y.append(best)
        right.plot(range(1, len(r.evaluations) + 1), r.evaluations, marker=".", alpha=0.6 if done else 0.3)
    left.step(best_x, best_y, where="post", color="C1", label="best complete so far")
    left.set(xlabel="trial", ylabel="mean return (final evaluation)", title=title)
    left.legend(loc="lower right")
    right.set(xlabel="evaluation", ylabel="mean return", title="evaluations during training")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_best(path: Path, env: str, entry: dict[str, Any], header: Sequence[str]) -> None:
    """``{env: entry}`` as a hyperparameter file, with ``header`` as its opening comment."""
    comment = "".join(f"# {line}\n" for line in header)
    write_text(path, comment + dump_yaml({env: entry}))
