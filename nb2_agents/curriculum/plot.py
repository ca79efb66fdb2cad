"""Plots of a curriculum run folder: per-task score curves and the performance-matrix heatmap.

A curriculum run folder holds ``metrics.json`` (suite, mode, tasks, task ends, metrics),
``matrix.csv`` (:func:`nb2_agents.curriculum.metrics.matrix_to_csv`) and ``curves.csv``
(``seed,step,current_task,task,mean_return,std_return,success_rate,score``, one row per seed,
evaluation point and evaluated task). :func:`plot_curriculum` draws

* the curves: one panel per task, the normalised score against env steps as the mean over
  seeds with a ± std band (seeds are aligned by evaluation index, x is their mean step),
  dashed lines at the task ends (mean over seeds) and the task's own training window shaded;
* the heatmap of the matrix: row "after <task>", column the evaluated task.

Figures are drawn on :class:`matplotlib.figure.Figure` directly (no pyplot, so no global
state) and saved as PNG by the Agg canvas, each atomically (temp file, then rename).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nb2_agents.curriculum.metrics import METRIC_KEYS, read_matrix_csv
from nb2_agents.curriculum.results import METRICS_NAME
from nb2_agents.errors import UsageError

__all__ = ["is_curriculum_run", "plot_curriculum"]

MATRIX_NAME = "matrix.csv"
CURVES_NAME = "curves.csv"
_MODES = ("sequential", "multitask")
_SHORT = dict(
    zip(METRIC_KEYS, ("avg perf", "forgetting", "fwd transfer", "bwd transfer", "AUC gap"), strict=True)
)


@dataclass(frozen=True)
class _Meta:
    title: str
    mode: str
    tasks: list[str]
    ends: list[float]  # mean over seeds of each task's end step (one entry for multitask)


def is_curriculum_run(path: Path) -> bool:
    """Whether ``path`` is a folder with ``curves.csv`` and a ``metrics.json`` that lists ``tasks``."""
    path = Path(path)
    if not (path / CURVES_NAME).is_file() or not (path / METRICS_NAME).is_file():
        return False
    try:
        data = json.loads((path / METRICS_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "tasks" in data


# --------------------------------------------------------------------------- reading


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"{path} is missing; a curriculum run folder holds "
            f"{METRICS_NAME}, {MATRIX_NAME} and {CURVES_NAME}"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} cannot be read: {exc}") from None


def _fmt_metric(entry: Any) -> str:
    mean = entry.get("mean") if isinstance(entry, dict) else None
    if not isinstance(mean, int | float):
        return "n/a"
    text = f"{mean:.2f}"
    low, high = entry.get("ci_low"), entry.get("ci_high")
    if isinstance(low, int | float) and isinstance(high, int | float) and entry.get("n", 2) >= 2:
        text += f" [{low:.2f}, {high:.2f}]"  # one seed: no interval
    return text


def _mean_ends(raw: Any, n_tasks: int, path: Path) -> list[float]:
    """Mean over seeds of each task's end step, from ``task_end_steps`` (``{seed: [steps]}``)."""
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: task_end_steps must map each seed to a list of steps, got {raw!r}")
    per_seed: list[list[float]] = []
    for seed, steps in raw.items():
        ok = isinstance(steps, list) and 1 <= len(steps) <= n_tasks
        if not ok or not all(isinstance(s, int | float) and math.isfinite(s) for s in steps):
            raise UsageError(
                f"{path}: task_end_steps[{seed!r}] must be a list of 1 to {n_tasks} step numbers, "
                f"got {steps!r}"
            )
        per_seed.append([float(s) for s in steps])
    longest = max((len(s) for s in per_seed), default=0)
    return [float(np.mean([s[i] for s in per_seed if len(s) > i])) for i in range(longest)]


def _read_metrics(run_dir: Path) -> _Meta:
    path = run_dir / METRICS_NAME
    try:
        data = json.loads(_read_text(path))
    except ValueError as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold a JSON object, got {type(data).__name__}")
    tasks = data.get("tasks")
    if (
        not isinstance(tasks, list)
        or not tasks
        or not all(isinstance(t, str) and t for t in tasks)
        or len(set(tasks)) != len(tasks)
    ):
        raise UsageError(f"{path}: 'tasks' must be a non-empty list of unique task names, got {tasks!r}")
    mode = data.get("mode", "sequential")
    if mode not in _MODES:
        raise UsageError(f"{path}: 'mode' must be one of {', '.join(_MODES)}, got {mode!r}")
    seeds = data.get("seeds")
    n_seeds = f" · {len(seeds)} seeds" if isinstance(seeds, list) else ""
    head = (
        f"{data.get('suite', '?')} · {mode} · retention {data.get('retention', '?')} · "
        f"{data.get('algo', '?')} {data.get('preset', '?')}{n_seeds}"
    )
    scores = "   ".join(f"{_SHORT[key]} {_fmt_metric(data.get(key))}" for key in METRIC_KEYS)
    ends = _mean_ends(data.get("task_end_steps"), len(tasks), path)
    return _Meta(title=f"{head}\n{scores}", mode=mode, tasks=list(tasks), ends=ends)


def _read_curves(path: Path, tasks: list[str]) -> dict[int, dict[int, list[tuple[float, float]]]]:
    """``{task index: {seed: [(step, score), ...] sorted by step}}`` from ``curves.csv``."""
    lines = _read_text(path).splitlines()
    reader = csv.DictReader(lines)
    missing = {"seed", "step", "task", "score"} - set(reader.fieldnames or [])
    if missing:
        raise UsageError(f"{path}: header lacks the column(s) {', '.join(sorted(missing))}")
    index = {name: i for i, name in enumerate(tasks)}
    curves: dict[int, dict[int, list[tuple[float, float]]]] = {}
    for line, row in enumerate(reader, start=2):
        try:
            seed, step, score = int(row["seed"]), float(row["step"]), float(row["score"])
        except (TypeError, ValueError):
            raise UsageError(f"{path}: line {line}: missing or non-numeric seed, step or score") from None
        task = (row["task"] or "").strip()
        j = index.get(task, int(task) if task.isdigit() else -1)
        if not 0 <= j < len(tasks):
            raise UsageError(f"{path}: line {line} names task {task!r}, which is not in {METRICS_NAME}")
        if not (math.isfinite(step) and math.isfinite(score)):
            raise UsageError(f"{path}: line {line} has a non-finite step or score")
        curves.setdefault(j, {}).setdefault(seed, []).append((step, score))
    if not curves:
        raise UsageError(f"{path} has no evaluation rows")
    for per_seed in curves.values():
        for points in per_seed.values():
            points.sort()
    return curves


def _read_matrix(path: Path, meta: _Meta) -> tuple[list[str], np.ndarray]:
    """``(row labels, matrix)``; a multitask file's single row may carry any label ("multitask")."""
    text = _read_text(path)  # a clear error for a missing file
    try:
        names, matrix = read_matrix_csv(path)
        labels = [f"after {n}" for n in names[: matrix.shape[0]]]
    except ValueError as exc:
        rows = [r for r in csv.reader(text.splitlines()) if r]
        try:  # read_matrix_csv wants task names as row labels; accept one row labelled otherwise
            if len(rows) != 2 or len(rows[0]) < 2 or len(rows[1]) != len(rows[0]) or rows[1][0] in rows[0]:
                raise ValueError
            names, matrix = rows[0][1:], np.array([[float(v) for v in rows[1][1:]]], dtype=np.float64)
            labels = [rows[1][0]]
        except ValueError:
            raise UsageError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from None
    if names != meta.tasks:
        raise UsageError(f"{path}: columns {names} do not match the tasks {meta.tasks} of {METRICS_NAME}")
    if not np.all(np.isfinite(matrix)):
        raise UsageError(f"{path}: performance matrix contains NaN or inf")
    if meta.mode == "multitask" and matrix.shape[0] == 1:
        labels = ["multitask"]  # the end of the run, whatever the file labels the row
    return labels, matrix


# --------------------------------------------------------------------------- drawing


def _aligned(per_seed: dict[int, list[tuple[float, float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean step, mean score, std score) per evaluation index over seeds (NaN-padded to the longest)."""
    n = max(len(points) for points in per_seed.values())
    steps = np.full((len(per_seed), n), np.nan)
    scores = np.full((len(per_seed), n), np.nan)
    for k, points in enumerate(per_seed.values()):
        steps[k, : len(points)] = [p[0] for p in points]
        scores[k, : len(points)] = [p[1] for p in points]
    return np.nanmean(steps, 0), np.nanmean(scores, 0), np.nanstd(scores, 0)


def _save(fig: Any, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    try:
        fig.savefig(tmp, format="png")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _draw_curves(meta: _Meta, curves: dict[int, dict[int, list[tuple[float, float]]]], out: Path) -> Path:
    from matplotlib.figure import Figure

    n = len(meta.tasks)
    fig = Figure(figsize=(9, 1.7 * n + 1.3), dpi=100)
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    for j, (ax, task) in enumerate(zip(axes, meta.tasks, strict=True)):
        if meta.mode == "sequential" and j < len(meta.ends):
            ax.axvspan(meta.ends[j - 1] if j else 0.0, meta.ends[j], color="tab:orange", alpha=0.12, lw=0)
        for end in meta.ends:
            ax.axvline(end, color="0.4", ls="--", lw=0.8)
        if j in curves:
            x, mean, std = _aligned(curves[j])
            (line,) = ax.plot(x, mean, marker=".", lw=1.4)
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.25, lw=0)
        else:
            ax.text(0.5, 0.5, "no evaluations", transform=ax.transAxes, ha="center", va="center")
        ax.set_ylim(0.0, 1.05)
        ax.set_ylabel(task, fontsize="small")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("environment steps")
    fig.suptitle(meta.title, fontsize="medium")
    fig.supylabel("normalised score")
    fig.tight_layout()
    return _save(fig, out)


def _draw_heatmap(meta: _Meta, labels: list[str], matrix: np.ndarray, out: Path) -> Path:
    from matplotlib.figure import Figure

    rows, cols = matrix.shape
    fig = Figure(figsize=(max(5.0, 0.9 * cols + 3.0), max(2.5, 0.6 * rows + 2.0)), dpi=100)
    ax = fig.subplots()
    image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    for i in range(rows):
        for j in range(cols):
            value = matrix[i, j]
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="black" if value > 0.6 else "white")
    ax.set_xticks(
        range(cols), meta.tasks, rotation=30 if cols > 3 else 0, ha="right" if cols > 3 else "center"
    )
    ax.set_yticks(range(rows), labels)
    ax.set_xlabel("evaluated task")
    fig.colorbar(image, ax=ax, label="normalised score")
    ax.set_title(meta.title.splitlines()[0], fontsize="medium")
    fig.tight_layout()
    return _save(fig, out)


# --------------------------------------------------------------------------- entry points


def _check_png(out: Path) -> Path:
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out {out}: expected a .png file name")
    return out


def plot_curriculum(run_dir: Path, out: Path | None = None) -> list[Path]:
    """Draw a curriculum run's curves and heatmap; return ``[curves.png, heatmap.png]`` paths.

    Default: ``run_dir/curves.png`` and ``run_dir/heatmap.png``. With ``out`` (``x.png``) the
    curves go to ``out`` and the heatmap to ``x-heatmap.png`` beside it. Raises UsageError,
    naming the file, when one of the run's files is missing or malformed (before writing).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir} is not a folder; expected a curriculum run folder")
    if out is None:
        curves_out, heatmap_out = run_dir / "curves.png", run_dir / "heatmap.png"
    else:
        curves_out = _check_png(Path(out))
        heatmap_out = curves_out.with_name(curves_out.stem + "-heatmap.png")
    meta = _read_metrics(run_dir)
    curves = _read_curves(run_dir / CURVES_NAME, meta.tasks)
    labels, matrix = _read_matrix(run_dir / MATRIX_NAME, meta)
    return [_draw_curves(meta, curves, curves_out), _draw_heatmap(meta, labels, matrix, heatmap_out)]
