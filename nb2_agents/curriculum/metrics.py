"""Continual-learning metrics (Continual World, Wołczyk et al. 2021), pure numpy.

Scores
    ``p_i(t)`` is the normalised score of task ``i`` at time ``t``: a success rate in [0, 1]
    when the task defines success, otherwise ``(R - R_random) / (R_reference - R_random)``
    clipped to [0, 1] (:func:`normalise_score`). Every function here takes scores already in
    [0, 1]; values outside it by more than ``SCORE_TOLERANCE`` are rejected, smaller overshoots
    (float noise) are clipped.

Performance matrix
    ``M`` is ``T x T``: ``M[i, j]`` is ``p_j`` evaluated right after training on task ``i``
    ended (row: "after task i", column: "evaluated task j").

Metrics of one seed (:func:`sequential_metrics`)
    * average performance ``A = mean_j M[T-1, j]``;
    * forgetting ``F = mean_i (M[i, i] - M[T-1, i])`` over *all* ``T`` tasks (the last task
      contributes 0; a single task gives 0.0). A task that was never learned (a column of
      zeros) contributes 0;
    * backward transfer (GEM, Lopez-Paz & Ranzato 2017)
      ``BWT = mean_{i < T-1} (M[T-1, i] - M[i, i])``; ``None`` when ``T == 1``;
    * forward transfer ``FT_i = (AUC_i - AUC_ref_i) / (1 - AUC_ref_i)``, where ``AUC_i`` is
      the mean of ``p_i`` over task ``i``'s own training window in the curriculum run
      (:func:`window_auc`) and ``AUC_ref_i`` the same in a single-task, from-scratch reference
      run. When ``AUC_ref_i >= 1`` (the reference solved the task from its first evaluation)
      the ratio is undefined and ``FT_i = AUC_i - AUC_ref_i`` (<= 0) is used instead
      (:func:`forward_transfer_task`). Tasks without a reference (``None`` or NaN) are left
      out; ``FT`` is the mean of the available ``FT_i``, ``None`` if there are none;
    * AUC gap ``G = mean_i (AUC_i - AUC_ref_i)`` over the same tasks (:func:`auc_gap`): forward
      transfer as a plain difference in [-1, 1]. The ratio ``FT_i`` divides by ``1 - AUC_ref_i``,
      so on a task the reference learns almost at once a small lag becomes a large negative
      ``FT_i``; ``G`` weighs every task alike and is the better-conditioned summary there.

Multitask runs (:func:`multitask_metrics`) have no task ends, only a final row of scores:
``A`` is their mean, forgetting and BWT are ``None``, and forward transfer uses each task's
AUC over the whole run against the references, if given.

Across seeds, :func:`aggregate` reports the mean and a percentile-bootstrap confidence
interval (:func:`bootstrap_ci`) of each metric in :data:`METRIC_KEYS`, skipping seeds where
the metric is undefined. :func:`matrix_to_csv` / :func:`read_matrix_csv` store ``M``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nb2_agents.runs import write_text

__all__ = [
    "METRIC_KEYS",
    "SCORE_TOLERANCE",
    "SeedMetrics",
    "aggregate",
    "auc_gap",
    "bootstrap_ci",
    "forward_transfer_task",
    "matrix_to_csv",
    "multitask_metrics",
    "normalise_score",
    "read_matrix_csv",
    "sequential_metrics",
    "window_auc",
]

#: How far outside [0, 1] a score may be (float noise) before it is rejected rather than clipped.
SCORE_TOLERANCE = 1e-6

#: The metrics that :func:`aggregate` reports, in this order.
METRIC_KEYS = ("average_performance", "forgetting", "forward_transfer", "backward_transfer", "auc_gap")

_CSV_FIRST_COLUMN = "after_task"


# --------------------------------------------------------------------------- validation


def _check_scores(values: np.ndarray, what: str) -> np.ndarray:
    """``values`` as float64 clipped to [0, 1]; ValueError on NaN/inf or values outside the tolerance."""
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or inf: {arr.tolist()}")
    low, high = -SCORE_TOLERANCE, 1.0 + SCORE_TOLERANCE
    if arr.size and (arr.min() < low or arr.max() > high):
        raise ValueError(
            f"{what} must be normalised scores in [0, 1], got values in [{arr.min():g}, {arr.max():g}]"
        )
    return np.clip(arr, 0.0, 1.0)


def _check_score(value: float, what: str) -> float:
    return float(_check_scores(np.array([value], dtype=np.float64), what)[0])


def _is_missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float | int | np.floating) and math.isnan(value))


def _check_vector(values: Sequence[float], n_tasks: int, what: str) -> np.ndarray:
    """A length-``n_tasks`` vector of scores in [0, 1]."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.shape[0] != n_tasks:
        raise ValueError(f"{what} must have one value per task ({n_tasks}), got shape {arr.shape}")
    return _check_scores(arr, what)


def _check_refs(ref_auc: Sequence[float | None] | None, n_tasks: int) -> list[float | None]:
    """``ref_auc`` as a list with ``None`` for missing references (``None`` for all if not given)."""
    if ref_auc is None:
        return [None] * n_tasks
    refs = list(ref_auc)
    if len(refs) != n_tasks:
        raise ValueError(f"ref_auc must have one value per task ({n_tasks}), got {len(refs)}")
    return [
        None if r is None or _is_missing(r) else _check_score(float(r), f"ref_auc[{i}]")
        for i, r in enumerate(refs)
    ]


def _check_matrix(matrix: np.ndarray) -> np.ndarray:
    """A square ``T x T`` (T >= 1) performance matrix with every entry in [0, 1]."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] == 0:
        raise ValueError(f"performance matrix must be square T x T with T >= 1, got shape {m.shape}")
    if np.isnan(m).any():
        rows, cols = np.nonzero(np.isnan(m))
        where = [(int(r), int(c)) for r, c in zip(rows, cols, strict=True)]
        raise ValueError(f"performance matrix contains NaN at (row, column) {where}")
    return _check_scores(m, "performance matrix")


# --------------------------------------------------------------------------- per-task pieces


def normalise_score(mean_return: float, random_return: float, reference_return: float) -> float:
    """``(R - R_random) / (R_reference - R_random)`` clipped to [0, 1].

    Raises ValueError if any input is not finite or if ``reference_return <= random_return``
    (equal: the score is undefined; smaller: the reference does not beat random, so the scale
    would be inverted).
    """
    for name, value in (
        ("mean_return", mean_return),
        ("random_return", random_return),
        ("reference_return", reference_return),
    ):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
    if reference_return <= random_return:
        raise ValueError(
            f"reference_return ({reference_return:g}) must be greater than random_return "
            f"({random_return:g}) to normalise a score"
        )
    score = (mean_return - random_return) / (reference_return - random_return)
    return float(min(1.0, max(0.0, score)))


def window_auc(scores: Sequence[float]) -> float:
    """Mean of the normalised scores ``p`` over a training window (the area under the curve).

    Raises ValueError on an empty window, NaN, or scores outside [0, 1] beyond the tolerance.
    """
    arr = np.asarray(scores, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError("window_auc needs at least one score, got an empty window")
    return float(np.mean(_check_scores(arr, "window scores")))


def forward_transfer_task(auc: float, ref_auc: float) -> float:
    """``FT_i = (AUC_i - AUC_ref_i) / (1 - AUC_ref_i)`` for one task.

    When the reference run solved the task from its first evaluation (``ref_auc >= 1`` up to
    the tolerance) the ratio is undefined; the plain difference ``auc - ref_auc`` (<= 0) is
    returned instead, so such a task can only count against transfer, never blow it up.
    """
    a = _check_score(auc, "auc")
    r = _check_score(ref_auc, "ref_auc")
    if r >= 1.0 - SCORE_TOLERANCE:
        return a - r
    return (a - r) / (1.0 - r)


def auc_gap(auc: Sequence[float] | np.ndarray, ref_auc: Sequence[float | None] | None) -> float | None:
    """``mean_i (AUC_i - AUC_ref_i)`` over the tasks with a reference; ``None`` if none has one."""
    aucs = _check_scores(np.asarray(auc, dtype=np.float64).ravel(), "auc")
    refs = _check_refs(ref_auc, aucs.size)
    return _mean_or_none([None if r is None else float(a) - r for a, r in zip(aucs, refs, strict=True)])


# --------------------------------------------------------------------------- one seed


@dataclass(frozen=True)
class SeedMetrics:
    """The metrics of one run (one seed); ``None`` marks a metric that is undefined for it."""

    average_performance: float
    forgetting: float | None
    forward_transfer: float | None
    backward_transfer: float | None
    per_task_forgetting: list[float | None]
    per_task_forward_transfer: list[float | None]
    auc_gap: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (plain floats, lists and ``None``)."""
        return asdict(self)


def _per_task_forward_transfer(auc: np.ndarray, refs: list[float | None]) -> list[float | None]:
    return [None if r is None else forward_transfer_task(float(a), r) for a, r in zip(auc, refs, strict=True)]


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def sequential_metrics(
    matrix: np.ndarray, auc: Sequence[float], ref_auc: Sequence[float | None] | None = None
) -> SeedMetrics:
    """Average performance, forgetting, forward and backward transfer of a sequential run.

    ``matrix`` is the ``T x T`` performance matrix, ``auc[i]`` task ``i``'s AUC over its own
    training window, ``ref_auc[i]`` the same in its single-task reference run (``None``/NaN, or
    ``ref_auc=None`` altogether, where there is none).
    """
    m = _check_matrix(matrix)
    n_tasks = m.shape[0]
    auc_arr = _check_vector(auc, n_tasks, "auc")
    refs = _check_refs(ref_auc, n_tasks)

    final = m[-1]
    diag = np.diag(m)
    per_task_forgetting: list[float | None] = [float(d - f) for d, f in zip(diag, final, strict=True)]
    per_task_ft = _per_task_forward_transfer(auc_arr, refs)
    backward = float(np.mean(final[:-1] - diag[:-1])) if n_tasks > 1 else None
    return SeedMetrics(
        average_performance=float(np.mean(final)),
        forgetting=float(np.mean(diag - final)),
        forward_transfer=_mean_or_none(per_task_ft),
        backward_transfer=backward,
        per_task_forgetting=per_task_forgetting,
        per_task_forward_transfer=per_task_ft,
        auc_gap=auc_gap(auc_arr, refs),
    )


def multitask_metrics(
    final_scores: Sequence[float], auc: Sequence[float], ref_auc: Sequence[float | None] | None = None
) -> SeedMetrics:
    """Metrics of a multitask run: no task ends, so forgetting and backward transfer are ``None``.

    ``final_scores[i]`` is ``p_i`` at the end of the run, ``auc[i]`` the mean of ``p_i`` over
    the whole run and ``ref_auc[i]`` the AUC of task ``i``'s single-task reference run.
    """
    final = np.asarray(final_scores, dtype=np.float64)
    if final.ndim != 1 or final.size == 0:
        raise ValueError(f"final_scores must be a non-empty list of per-task scores, got shape {final.shape}")
    final = _check_scores(final, "final_scores")
    n_tasks = final.shape[0]
    auc_arr = _check_vector(auc, n_tasks, "auc")
    per_task_ft = _per_task_forward_transfer(auc_arr, _check_refs(ref_auc, n_tasks))
    return SeedMetrics(
        average_performance=float(np.mean(final)),
        forgetting=None,
        forward_transfer=_mean_or_none(per_task_ft),
        backward_transfer=None,
        per_task_forgetting=[None] * n_tasks,
        per_task_forward_transfer=per_task_ft,
        auc_gap=auc_gap(auc_arr, ref_auc),
    )


# --------------------------------------------------------------------------- across seeds


def bootstrap_ci(
    values: Sequence[float],
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
    statistic: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean over seeds and its percentile-bootstrap confidence interval
    (``(statistic, low, high)`` with ``statistic``).

    ``statistic`` replaces the mean (e.g. the interquartile mean): it maps each row of a 2-D
    array of resamples to one value. Deterministic given ``seed``. One value gives ``(v, v, v)``.
    The interval is widened to contain the statistic if resampling (or float rounding, e.g.
    identical values) puts it outside. Raises ValueError on an empty or non-finite input or a
    ``confidence`` outside (0, 1).
    """
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError("bootstrap_ci needs at least one value, got none")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"bootstrap_ci values must be finite, got {arr.tolist()}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    stat = statistic or (lambda rows: rows.mean(axis=1))
    value = float(stat(arr[None, :])[0])
    if arr.size == 1:
        return value, value, value
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, arr.size, size=(n_resamples, arr.size))
    resampled = stat(arr[idx])
    alpha = 1.0 - confidence
    low, high = np.quantile(resampled, [alpha / 2.0, 1.0 - alpha / 2.0])
    return value, min(float(low), value), max(float(high), value)


def aggregate(per_seed: Sequence[SeedMetrics], seeds: Sequence[int]) -> dict[str, Any]:
    """Mean and bootstrap CI of each metric in :data:`METRIC_KEYS` over seeds.

    Returns ``{key: {"mean", "ci_low", "ci_high", "per_seed", "n"}}``. ``per_seed`` lists
    ``{"seed": s, "value": v}`` for every seed, ``v`` ``None`` where the metric is undefined;
    such seeds are skipped for the mean and CI and ``n`` counts the others. If no seed
    defines a metric, its mean/ci_low/ci_high are ``None`` and ``n`` is 0.
    """
    seed_list = [int(s) for s in seeds]
    if len(per_seed) != len(seed_list):
        raise ValueError(f"got metrics for {len(per_seed)} seeds but {len(seed_list)} seed ids")
    if len(set(seed_list)) != len(seed_list):
        raise ValueError(f"seed ids must be unique, got {seed_list}")
    result: dict[str, Any] = {}
    for key in METRIC_KEYS:
        values: list[float | None] = [getattr(m, key) for m in per_seed]
        present = [v for v in values if v is not None]
        mean: float | None = None
        low: float | None = None
        high: float | None = None
        if present:
            mean, low, high = bootstrap_ci(present)
        result[key] = {
            "mean": mean,
            "ci_low": low,
            "ci_high": high,
            "per_seed": [{"seed": s, "value": v} for s, v in zip(seed_list, values, strict=True)],
            "n": len(present),
        }
    return result


# --------------------------------------------------------------------------- CSV


def matrix_to_csv(matrix: np.ndarray, task_names: Sequence[str], path: Path) -> None:
    """Write the performance matrix as CSV, atomically (temp file in the same folder, then rename).

    Header ``after_task,<task names...>``; row ``i`` starts with ``task_names[i]`` and holds
    ``M[i, :]`` with 4 decimals. ``matrix`` may have fewer rows than columns (a run stopped
    part-way), one per task trained so far.
    """
    m = np.asarray(matrix, dtype=np.float64)
    names = [str(n) for n in task_names]
    if m.ndim != 2 or m.shape[1] != len(names) or not 0 < m.shape[0] <= m.shape[1]:
        raise ValueError(
            f"matrix must have one column per task ({len(names)}) and 1..{len(names)} rows, "
            f"got shape {m.shape}"
        )
    if any(not n for n in names) or len(set(names)) != len(names):
        raise ValueError(f"task names must be non-empty and unique, got {names}")
    if not np.all(np.isfinite(m)):
        raise ValueError("performance matrix contains NaN or inf")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([_CSV_FIRST_COLUMN, *names])
    for name, row in zip(names[: m.shape[0]], m, strict=True):
        writer.writerow([name, *(f"{v:.4f}" for v in row)])
    write_text(Path(path), buf.getvalue())


def read_matrix_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """Read a file written by :func:`matrix_to_csv`: ``(task_names, matrix)`` (rows x tasks)."""
    with Path(path).open(encoding="utf-8", newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    if not rows or rows[0][0] != _CSV_FIRST_COLUMN or len(rows[0]) < 2:
        raise ValueError(
            f"{path}: not a performance-matrix CSV (header must be '{_CSV_FIRST_COLUMN},<tasks...>')"
        )
    names = rows[0][1:]
    if len(rows) < 2:
        raise ValueError(f"{path}: performance matrix has no rows")
    data: list[list[float]] = []
    for i, row in enumerate(rows[1:]):
        if len(row) != len(names) + 1:
            raise ValueError(f"{path}: row {i + 1} has {len(row) - 1} values, expected {len(names)}")
        if i >= len(names) or row[0] != names[i]:
            raise ValueError(f"{path}: row {i + 1} is labelled {row[0]!r}, expected the task names in order")
        try:
            data.append([float(v) for v in row[1:]])
        except ValueError as exc:
            raise ValueError(f"{path}: row {i + 1} ({row[0]!r}) has a non-numeric value: {exc}") from None
    return names, np.array(data, dtype=np.float64)
