"""A curriculum run's configuration, resolved and checked before anything trains (``resolve``):
the suite, algorithm, preset, mode, retention strategy and its options, seeds and hyperparameters."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nb2_agents.curriculum.available import check_available
from nb2_agents.curriculum.results import CurriculumConfig
from nb2_agents.curriculum.spec import CurriculumSpec, load_curriculum
from nb2_agents.errors import UsageError
from nb2_agents.hyperparams import ALGOS, DATA_DIR, Hyperparams, load_entry, parse_entry, set_dotted
from nb2_agents.nn.config import PRESETS
from nb2_agents.retention.base import check_strategy, make_strategy

MODES = ("sequential", "multitask")


def _hyperparams(
    spec: CurriculumSpec, algo: str, preset: str, overrides: dict[str, Any] | None
) -> tuple[dict[str, Any], Hyperparams]:
    path = DATA_DIR / "policies" / f"{algo}.yaml"
    entry, labels = load_entry(path, "default")
    entry = {k: v for k, v in entry.items() if k != "n_timesteps"}
    if algo == spec.algo:  # the suite's own settings are tuned for its algorithm
        where = f"{spec.source or spec.name} [hyperparams]"
        entry.update(spec.hyperparams)
        labels.update({key: where for key in spec.hyperparams})
    for key, value in (overrides or {}).items():
        set_dotted(entry, key, value)
        labels[key.split(".")[0]] = "--set "
    set_dotted(entry, "policy_kwargs.preset", preset)
    labels.setdefault("policy_kwargs", "--preset")
    return entry, parse_entry(ALGOS[algo], entry, labels)


def resolve(
    curriculum: str | Path,
    algo: str | None = None,
    preset: str | None = None,
    mode: str = "sequential",
    retention: str = "none",
    seeds: Sequence[int] = (0,),
    steps_scale: float = 1.0,
    evals_per_task: int = 4,
    overrides: dict[str, Any] | None = None,
    device: str = "auto",
    task_ids: bool | None = None,
    retention_options: dict[str, Any] | None = None,
    checkpoint_freq: int | None = None,
    keep_checkpoints: int = 2,
) -> tuple[CurriculumConfig, CurriculumSpec, Hyperparams]:
    """Check everything the user gave before anything trains; :class:`UsageError` otherwise.

    ``checkpoint_freq``: steps between resumable checkpoints (0: only at each task's start; default:
    as often as the evaluations, on average); ``keep_checkpoints``: how many are kept."""
    spec = load_curriculum(curriculum)
    algo = algo or spec.algo
    preset = preset or spec.preset
    if algo not in ALGOS:
        raise UsageError(f"unknown --algo {algo!r}; valid: {', '.join(ALGOS)}")
    if preset not in PRESETS:
        raise UsageError(f"unknown --preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    if mode not in MODES:
        raise UsageError(f"unknown --mode {mode!r}; valid: {', '.join(MODES)}")
    check_strategy(retention)
    make_strategy(retention, retention_options)  # options checked here, before any folder exists
    if not seeds or len(set(seeds)) != len(seeds) or any(int(s) < 0 for s in seeds):
        raise UsageError(f"--seeds must be distinct non-negative integers, e.g. 0,1,2; got {list(seeds)}")
    if not (steps_scale > 0 and np.isfinite(steps_scale)):
        raise UsageError(f"--steps-scale must be a positive number, got {steps_scale}")
    if evals_per_task < 1:
        raise UsageError(f"--evals-per-task must be at least 1, got {evals_per_task}")
    if checkpoint_freq is not None and (isinstance(checkpoint_freq, bool) or checkpoint_freq < 0):
        raise UsageError(f"--checkpoint-freq must be 0 or a positive number of steps, got {checkpoint_freq}")
    if isinstance(keep_checkpoints, bool) or keep_checkpoints < 1:
        raise UsageError(f"--keep-checkpoints must be at least 1, got {keep_checkpoints}")
    if not spec.trainable_here:
        raise UsageError(
            f"{spec.name} is a specification for multi-machine runs (trainable_here: false in "
            f"{spec.source}); it is validated here but not trained"
        )
    spec = spec.scaled(steps_scale)
    check_available(spec)
    entry, hp = _hyperparams(spec, algo, preset, overrides)
    spec = spec.resolved(hp.normalize)
    cfg = CurriculumConfig(
        curriculum=str(curriculum),
        suite=spec.name,
        algo=algo,
        preset=preset,
        mode=mode,
        retention=retention,
        seeds=[int(s) for s in seeds],
        steps_scale=float(steps_scale),
        evals_per_task=int(evals_per_task),
        hyperparams=entry,
        device=device,
        task_steps=[t.steps for t in spec.tasks],
        task_ids=_task_ids(mode, retention) if task_ids is None else task_ids,
        retention_options=dict(retention_options or {}),
        checkpoint_freq=int(
            checkpoint_freq if checkpoint_freq is not None else _evaluation_interval(spec, evals_per_task)
        ),
        keep_checkpoints=int(keep_checkpoints),
    )
    return cfg, spec, hp


def _evaluation_interval(spec: CurriculumSpec, evals_per_task: int) -> int:
    """Steps between two evaluations, on average over the tasks: the default checkpoint cadence."""
    return max(1, sum(t.steps for t in spec.tasks) // (len(spec.tasks) * evals_per_task))


def _task_ids(mode: str, retention: str) -> bool:
    """Default: the joint upper bound and strategies built on NB2's task embedding see task ids."""
    return mode == "multitask" or make_strategy(retention).uses_task_ids
