"""A curriculum run's configuration, resolved and checked before anything trains (``resolve``):
the suite, algorithm, preset, mode, retention strategy and its options, seeds and hyperparameters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nb2_agents.config import options_of
from nb2_agents.curriculum.available import check_available
from nb2_agents.curriculum.results import CurriculumConfig
from nb2_agents.curriculum.spec import CurriculumSpec, load_curriculum
from nb2_agents.envs_util import is_minigrid_id
from nb2_agents.errors import UsageError
from nb2_agents.hyperparams import (
    ALGOS,
    DATA_DIR,
    Hyperparams,
    assignments,
    load_entry,
    parse_entry,
    set_dotted,
)
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
    minigrid = [t for t in spec.tasks if is_minigrid_id(t.env_id)]
    if minigrid:  # as nb2 train: MiniGrid's cells hold small ids, not pixels to scale by 1/255
        pixels = any(t.env_kwargs.get("minigrid_obs", "cells") == "rgb" for t in minigrid)
        entry["policy_kwargs"] = {"normalize_images": pixels, **entry["policy_kwargs"]}
    return entry, parse_entry(ALGOS[algo], entry, labels)


@dataclass(frozen=True)
class CurriculumOptions:
    """What a user gives ``nb2 curriculum`` (its options, by the same names), checked once by
    :func:`resolve` before anything trains."""

    curriculum: str | Path = "cartpole-variants"
    """A built-in suite name (``nb2 curriculum --list``) or a curriculum YAML file."""
    algo: str | None = None
    """Default: the suite's."""
    preset: str | None = None
    """Default: the suite's."""
    mode: str = "sequential"
    retention: str = "none"
    seeds: Sequence[int] = (0,)
    steps_scale: float = 1.0
    evals_per_task: int = 4
    overrides: Sequence[str] | Mapping[str, Any] | None = None
    """Hyperparameters over the suite's (``--set key=value`` strings, or a mapping)."""
    device: str = "auto"
    task_ids: bool | None = None
    """Tell the agent which task it is on (default: ``nb2`` retention and multitask)."""
    retention_options: Sequence[str] | Mapping[str, Any] | None = None
    """The strategy's settings, e.g. ``{"replay_budget_mb": 16}`` (``--retention-set``)."""
    checkpoint_freq: int | None = None
    """Steps between resumable checkpoints (0: only at each task's start; default: as often as
    the evaluations, on average)."""
    keep_checkpoints: int = 2
    """Resumable checkpoints kept per seed."""

    @classmethod
    def of_run(cls, saved: dict[str, Any]) -> CurriculumOptions:
        """The options that rebuild a run's configuration from its ``config.yaml`` (the resolved
        hyperparameters come back as overrides of every key); ``KeyError`` names a missing key."""
        return cls(
            curriculum=saved["curriculum"], algo=saved["algo"], preset=saved["preset"], mode=saved["mode"],
            retention=saved["retention"], seeds=saved["seeds"], steps_scale=saved["steps_scale"],
            evals_per_task=saved["evals_per_task"], overrides=saved["hyperparams"],
            device=saved.get("device", "auto"), task_ids=saved["task_ids"],
            retention_options=saved.get("retention_options"), checkpoint_freq=saved.get("checkpoint_freq", 0),
            keep_checkpoints=saved.get("keep_checkpoints", 2),
        )  # fmt: skip


def curriculum_options(
    options: CurriculumOptions | str | Path | None, fields: dict[str, Any]
) -> CurriculumOptions:
    """The options of a call such as ``resolve("cartpole-variants", retention="nb2")``: ``options``
    (a curriculum's name or file stands for its options) with the keyword ``fields`` over it."""
    chosen: CurriculumOptions = options_of(CurriculumOptions, options, fields)
    return chosen


def resolve(
    options: CurriculumOptions | str | Path | None = None, /, **fields: Any
) -> tuple[CurriculumConfig, CurriculumSpec, Hyperparams]:
    """Check everything the user gave before anything trains; :class:`UsageError` otherwise.

    ``options`` and ``fields`` as :func:`curriculum_options` takes them."""
    o = curriculum_options(options, fields)
    overrides, retention_options = assignments(o.overrides), assignments(o.retention_options)
    spec = load_curriculum(o.curriculum)
    algo = o.algo or spec.algo
    preset = o.preset or spec.preset
    if algo not in ALGOS:
        raise UsageError(f"unknown --algo {algo!r}; valid: {', '.join(ALGOS)}")
    if preset not in PRESETS:
        raise UsageError(f"unknown --preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    if o.mode not in MODES:
        raise UsageError(f"unknown --mode {o.mode!r}; valid: {', '.join(MODES)}")
    check_strategy(o.retention)
    make_strategy(o.retention, retention_options)  # options checked here, before any folder exists
    if not o.seeds or len(set(o.seeds)) != len(o.seeds) or any(int(s) < 0 for s in o.seeds):
        raise UsageError(f"--seeds must be distinct non-negative integers, e.g. 0,1,2; got {list(o.seeds)}")
    if not (o.steps_scale > 0 and np.isfinite(o.steps_scale)):
        raise UsageError(f"--steps-scale must be a positive number, got {o.steps_scale}")
    if o.evals_per_task < 1:
        raise UsageError(f"--evals-per-task must be at least 1, got {o.evals_per_task}")
    freq = o.checkpoint_freq
    if freq is not None and (isinstance(freq, bool) or freq < 0):
        raise UsageError(f"--checkpoint-freq must be 0 or a positive number of steps, got {freq}")
    if isinstance(o.keep_checkpoints, bool) or o.keep_checkpoints < 1:
        raise UsageError(f"--keep-checkpoints must be at least 1, got {o.keep_checkpoints}")
    spec = spec.scaled(o.steps_scale)
    check_available(spec)
    entry, hp = _hyperparams(spec, algo, preset, overrides)
    spec = spec.resolved(hp.normalize)
    cfg = CurriculumConfig(
        curriculum=str(o.curriculum),
        suite=spec.name,
        algo=algo,
        preset=preset,
        mode=o.mode,
        retention=o.retention,
        seeds=[int(s) for s in o.seeds],
        steps_scale=float(o.steps_scale),
        evals_per_task=int(o.evals_per_task),
        hyperparams=entry,
        device=o.device,
        task_steps=[t.steps for t in spec.tasks],
        task_ids=_task_ids(o.mode, o.retention) if o.task_ids is None else o.task_ids,
        retention_options=retention_options,
        checkpoint_freq=int(freq if freq is not None else _evaluation_interval(spec, o.evals_per_task)),
        keep_checkpoints=int(o.keep_checkpoints),
    )
    return cfg, spec, hp


def _evaluation_interval(spec: CurriculumSpec, evals_per_task: int) -> int:
    """Steps between two evaluations, on average over the tasks: the default checkpoint cadence."""
    return max(1, sum(t.steps for t in spec.tasks) // (len(spec.tasks) * evals_per_task))


def _task_ids(mode: str, retention: str) -> bool:
    """Default: the joint upper bound and strategies built on NB2's task embedding see task ids."""
    return mode == "multitask" or make_strategy(retention).uses_task_ids
