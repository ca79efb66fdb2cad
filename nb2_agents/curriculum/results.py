"""What a curriculum run produced: its resolved configuration, per-seed results, the metrics
over seeds (``metrics.json``) and the CSV files next to them."""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nb2_agents import __version__
from nb2_agents.curriculum.evaluator import CURVE_FIELDS
from nb2_agents.curriculum.metrics import (
    METRIC_KEYS,
    SeedMetrics,
    aggregate,
    multitask_metrics,
    sequential_metrics,
)
from nb2_agents.curriculum.spec import CurriculumSpec
from nb2_agents.hyperparams import plain
from nb2_agents.runs import atomic_write

METRICS_NAME = "metrics.json"
"""A curriculum run's metrics over seeds; written last, it marks a finished run."""


@dataclass
class CurriculumConfig:
    """A resolved ``nb2 curriculum`` run; saved as the run's ``config.yaml``."""

    curriculum: str
    suite: str
    algo: str
    preset: str
    mode: str
    retention: str
    seeds: list[int]
    steps_scale: float
    evals_per_task: int
    hyperparams: dict[str, Any]
    device: str = "auto"
    task_steps: list[int] = field(default_factory=list)
    retention_options: dict[str, Any] = field(default_factory=dict)
    """Settings of the retention strategy (``replay_budget_mb``, ``ewc_strength``, ...)."""
    task_ids: bool = True
    """Observations carry the task's id (else 0 for every task): ``nb2`` retention and
    ``multitask`` use them; ``none``, ``ewc`` and ``distill`` must tell tasks apart by sight."""
    checkpoint_freq: int = 0
    """Steps between resumable checkpoints (``--checkpoint-freq``); also one at each task's start."""
    keep_checkpoints: int = 2
    nb2_agents: str = __version__
    """The version that wrote the run (``--resume`` refuses another, unless ``--force``)."""

    def to_dict(self) -> dict[str, Any]:
        return plain(asdict(self))  # type: ignore[no-any-return]


@dataclass
class SeedResult:
    """What one seed's run produced (picklable: seeds may run in worker processes)."""

    seed: int
    rows: list[list[float]]
    """Performance-matrix rows: scores of every task after each trained task (one row in multitask)."""
    aucs: list[float | None]
    curves: list[dict[str, Any]]
    task_end_steps: list[int]
    seconds: float
    steps: int
    phase_seconds: dict[str, float] = field(default_factory=dict)
    """``seconds`` split by :func:`phase_seconds`."""


def phase_seconds(total: float, watched: dict[str, float]) -> dict[str, float]:
    """A seed's wall time split three ways: ``evaluation`` (every scheduled evaluation of every
    task, with its logging), ``retention`` (the strategy's work: its extra loss and gradient at each
    optimizer step, storing observations, probing starts, snapshots and Fishers at task
    boundaries) and ``training``, the rest (rollouts and SB3's own updates)."""
    evaluation, retention = watched.get("evaluation", 0.0), watched.get("retention", 0.0)
    return {"training": total - evaluation - retention, "evaluation": evaluation, "retention": retention}


@dataclass
class CurriculumResult:
    run_dir: Path
    config: CurriculumConfig
    metrics: dict[str, Any]
    seeds: list[SeedResult]

    def summary(self) -> str:
        lines = [f"{self.config.suite}: {self.config.mode}, retention {self.config.retention}, "
                 f"seeds {','.join(map(str, self.config.seeds))}"]  # fmt: skip
        for key in METRIC_KEYS:
            m = self.metrics[key]
            if m["mean"] is None:
                value = "n/a"
            elif m.get("n", 0) < 2:  # one seed has no spread: an interval would only repeat the mean
                value = f"{m['mean']:+.3f}  (one seed: no CI)"
            else:
                value = f"{m['mean']:+.3f}  [{m['ci_low']:+.3f}, {m['ci_high']:+.3f}]"
            lines.append(f"  {key:<20} {value}")
        if self.metrics.get("forward_transfer_note"):
            lines.append(f"  ({self.metrics['forward_transfer_note']})")
        matrix = np.mean([r.rows for r in self.seeds], axis=0)
        names = self.metrics["tasks"]
        lines.append("  performance matrix (mean over seeds; row: after training, column: task evaluated)")
        labels = (
            [f"t{i} {n}" for i, n in enumerate(names)] if self.config.mode == "sequential" else ["multitask"]
        )
        width = max(len(label) for label in [f"t0 {n}" for n in names] + labels)
        lines.append(f"  {'':<{width}}" + "".join(f"{f't{j}':>6}" for j in range(len(names))))
        for label, row in zip(labels, matrix, strict=False):
            lines.append(f"  {label:<{width}}" + "".join(f"{v:6.2f}" for v in row))
        lines += [f"run folder: {self.run_dir}", f"tensorboard --logdir {self.run_dir}"]
        return "\n".join(lines)


def write_curves(path: Path, rows: list[dict[str, Any]]) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CURVE_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)


def write_multitask_matrix(path: Path, names: list[str], row: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["after_task", *names])
            writer.writerow(["multitask", *(f"{v:.4f}" for v in row)])

    atomic_write(path, write)


def curriculum_metrics(
    cfg: CurriculumConfig, spec: CurriculumSpec, results: list[SeedResult], refs: list[float | None]
) -> dict[str, Any]:
    per_seed: list[SeedMetrics] = []
    for r in results:
        aucs = [a if a is not None else 0.0 for a in r.aucs]
        if cfg.mode == "sequential":
            per_seed.append(sequential_metrics(np.asarray(r.rows), aucs, refs))
        else:
            per_seed.append(multitask_metrics(r.rows[0], aucs, refs))
    out: dict[str, Any] = aggregate(per_seed, cfg.seeds)
    missing = [t.name for t, ref in zip(spec.tasks, refs, strict=True) if ref is None]
    out.update(
        suite=cfg.suite, mode=cfg.mode, retention=cfg.retention, algo=cfg.algo, preset=cfg.preset,
        seeds=cfg.seeds, tasks=spec.task_names(),
        task_end_steps={str(r.seed): r.task_end_steps for r in results},
        matrix=np.mean([r.rows for r in results], axis=0).round(4).tolist(),
        auc={str(r.seed): r.aucs for r in results},
        reference_auc=refs,
        per_seed_metrics={str(r.seed): m.to_dict() for r, m in zip(results, per_seed, strict=True)},
        seconds={str(r.seed): round(r.seconds, 1) for r in results},
        phase_seconds={str(r.seed): {k: round(v, 1) for k, v in r.phase_seconds.items()} for r in results},
        forward_transfer_note=(
            f"no reference runs for {', '.join(missing)}: run `nb2 curriculum {cfg.curriculum} --references`"
            if missing else None
        ),
    )  # fmt: skip
    return out
