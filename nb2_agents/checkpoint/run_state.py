"""Everything a run's checkpoint holds, gathered and put back: the algorithm (:mod:`.algo_state`),
each env's episode in progress (:mod:`.episodes`), the global random generators (:mod:`.rng`),
the callbacks' counters and evaluation history, the logger's values not yet written, and the
length of every Monitor CSV (rows written after the checkpoint are cut on resume, so no episode
is counted twice). TensorBoard resumes at the checkpoint's step: events the crashed run wrote
after it are hidden (``purge_step``), so no point appears twice and none is lost.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, EvalCallback, EventCallback
from stable_baselines3.common.logger import Logger, TensorBoardOutputFormat
from stable_baselines3.common.vec_env import VecEnv
from torch.utils.tensorboard import SummaryWriter

from nb2_agents.checkpoint import algo_state, episodes, rng
from nb2_agents.checkpoint.store import Checkpoint

EVAL_FIELDS = ("evaluations_timesteps", "evaluations_results", "evaluations_length", "evaluations_successes",
               "best_mean_reward", "last_mean_reward")  # fmt: skip


@dataclass
class RunParts:
    """The pieces of a run that a checkpoint covers."""

    model: BaseAlgorithm
    envs: dict[str, VecEnv]
    """By name: ``train`` (the algorithm's), ``eval`` (EvalCallback's) ..."""
    callbacks: list[BaseCallback]
    run_dir: Path
    extra: dict[str, Any] = field(default_factory=dict)
    """JSON-able state of the job itself (a curriculum's position ...)."""


def _walk(callbacks: list[BaseCallback]) -> Iterator[BaseCallback]:
    """Every callback, nested ones included, in a fixed order."""
    for cb in callbacks:
        yield cb
        if isinstance(cb, CallbackList):
            yield from _walk(cb.callbacks)
        if isinstance(cb, EventCallback) and cb.callback is not None:
            yield from _walk([cb.callback])
        if isinstance(cb, EvalCallback) and cb.callback_on_new_best is not None:
            yield from _walk([cb.callback_on_new_best])


def _plain(value: Any) -> Any:
    return np.asarray(value).tolist() if isinstance(value, (list, np.ndarray, np.generic)) else value


def _callback_state(cb: BaseCallback) -> dict[str, Any]:
    state: dict[str, Any] = {"class": type(cb).__name__, "n_calls": int(cb.n_calls)}
    if isinstance(cb, EvalCallback):
        state.update({name: _plain(getattr(cb, name)) for name in EVAL_FIELDS})
    own = getattr(cb, "state_dict", None)
    if callable(own):
        state["own"] = own()
    return state


def _load_callback_state(cb: BaseCallback, state: dict[str, Any]) -> None:
    cb.n_calls = state["n_calls"]
    if isinstance(cb, EvalCallback):
        for name in EVAL_FIELDS:
            value = state[name]
            setattr(cb, name, float(value) if name.endswith("_reward") else list(value))
    if "own" in state:
        cb.load_state_dict(state["own"])  # type: ignore[attr-defined]


def _logger_state(logger: Logger) -> dict[str, Any]:
    numbers = {k: v for k, v in logger.name_to_value.items()
               if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)}  # fmt: skip
    return {
        "values": {k: float(v) for k, v in numbers.items()},
        "counts": {k: int(logger.name_to_count[k]) for k in numbers if k in logger.name_to_count},
        "excluded": {k: list(logger.name_to_excluded.get(k, ())) for k in numbers},
    }


def _load_logger_state(logger: Logger, state: dict[str, Any], step: int) -> None:
    for key, value in state["values"].items():
        logger.name_to_value[key] = value
        logger.name_to_count[key] = state["counts"].get(key, 0)
        logger.name_to_excluded[key] = tuple(state["excluded"].get(key, ()))
    for fmt in logger.output_formats:
        if isinstance(fmt, TensorBoardOutputFormat):
            folder = fmt.writer.log_dir
            fmt.writer.close()
            # events at the checkpoint's own step were written before it: hide only later ones
            fmt.writer = SummaryWriter(log_dir=folder, purge_step=step + 1)


def monitor_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.rglob("*.monitor.csv"))


def capture(parts: RunParts) -> Checkpoint:
    info, arrays, torch_part = algo_state.capture(parts.model)
    info["envs"] = {}
    for name, vec in parts.envs.items():
        info["envs"][name], env_arrays = episodes.capture(vec, name)
        arrays.update(env_arrays)
    info["rng"], rng_arrays = rng.global_state()
    arrays.update(rng_arrays)
    info["callbacks"] = [_callback_state(cb) for cb in _walk(parts.callbacks)]
    info["logger"] = _logger_state(parts.model.logger)
    info["files"] = {str(p.relative_to(parts.run_dir)): p.stat().st_size
                     for p in monitor_files(parts.run_dir)}  # fmt: skip
    info["extra"] = parts.extra
    return Checkpoint(info, arrays, torch_part)


def cut_files(run_dir: Path, ckpt: Checkpoint) -> None:
    """Cut each Monitor CSV back to its length at the checkpoint (before the envs reopen them)."""
    for rel, size in ckpt.info["files"].items():
        path = run_dir / rel
        if path.is_file() and path.stat().st_size > size:
            with path.open("r+b") as f:
                f.truncate(size)


class RestoreCallback(BaseCallback):
    """First in the callback list of a resumed ``learn``: puts back what ``learn``'s set-up resets
    (the global generators, the action noise), just before the first step."""

    def __init__(self, parts: RunParts, ckpt: Checkpoint) -> None:
        super().__init__()
        self.parts, self.ckpt = parts, ckpt
        self.done = False

    def _on_training_start(self) -> None:
        if self.done:
            return
        self.done = True
        algo_state.restore_volatile(self.parts.model, self.ckpt.info, self.ckpt.arrays)
        rng.set_global_state(self.ckpt.info["rng"], self.ckpt.arrays)

    def _on_step(self) -> bool:
        return True


def restore(parts: RunParts, ckpt: Checkpoint) -> RestoreCallback:
    """Put ``parts`` (built afresh from the run's configuration) in the checkpoint's state; the
    returned callback goes first into ``learn``'s callbacks (it is not part of ``parts.callbacks``)."""
    info, arrays = ckpt.info, ckpt.arrays
    algo_state.restore(parts.model, info, arrays, ckpt.torch_part)
    for name, vec in parts.envs.items():
        episodes.restore(vec, name, info["envs"][name], arrays)
    # matched by class, in order: callbacks that only report (which depend on -q / -v) may differ
    saved: dict[str, list[dict[str, Any]]] = {}
    for state in info["callbacks"]:
        saved.setdefault(state["class"], []).append(state)
    for cb in _walk(parts.callbacks):
        states = saved.get(type(cb).__name__)
        if states:
            _load_callback_state(cb, states.pop(0))
    _load_logger_state(parts.model.logger, info["logger"], ckpt.steps)
    parts.extra.update(info.get("extra", {}))
    return RestoreCallback(parts, ckpt)
