"""What ``--resume RUN`` checks before it continues a run, the same for every job."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from nb2_agents.checkpoint.store import STATE_DIR, Checkpoint, latest
from nb2_agents.errors import UsageError
from nb2_agents.hyperparams import read_yaml
from nb2_agents.runs import CHECKPOINTS, CONFIG_NAME


def read_run_config(run_dir: Path, command: str) -> dict[str, Any]:
    """The ``config.yaml`` of the run folder ``run_dir``, or a clear error."""
    path = run_dir / CONFIG_NAME
    if not path.is_file():
        raise UsageError(f"--resume {run_dir}: not a run folder of nb2 {command} (no {CONFIG_NAME})")
    config = read_yaml(path)
    if not isinstance(config, dict):
        raise UsageError(f"--resume {run_dir}: {path} is not a run configuration")
    return config


def config_changes(saved: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: saved -> new`` for each setting that differs (``source`` is where it came from, not
    a setting)."""
    keys = sorted((set(saved) | set(new)) - {"source"})
    return [f"{k}: {saved.get(k)!r} -> {new.get(k)!r}" for k in keys if saved.get(k) != new.get(k)]


def refuse_unresumable(
    run_dir: Path, saved: dict[str, Any], new: dict[str, Any], force: bool, command: str, verbose: int,
    finished: str,
) -> None:  # fmt: skip
    """Refused, with the reason: a finished run (it has ``finished``); a configuration ``new`` (or
    an nb2-agents version) other than the run's ``saved`` one, unless ``force``."""
    if (run_dir / finished).is_file():
        raise UsageError(f"{run_dir} has finished ({run_dir / finished} exists): there is nothing to resume")
    changes = config_changes(saved, new)
    if changes and not force:
        raise UsageError(
            f"--resume {run_dir}: the configuration differs from the run's {run_dir / CONFIG_NAME} "
            f"({'; '.join(changes)}); pass --force to resume with it anyway"
        )
    if changes and verbose:
        print(
            f"nb2 {command}: resuming with a changed configuration (--force): {'; '.join(changes)}",
            flush=True,
        )


def newest_checkpoint(folder: Path, command: str) -> Checkpoint | None:
    """The newest readable checkpoint in ``folder``; each damaged newer one is named on stderr."""
    ckpt, skipped = latest(folder)
    for line in skipped:
        print(f"nb2 {command}: {line}; trying the checkpoint before it", file=sys.stderr, flush=True)
    return ckpt


def checkpoint_to_resume(
    run_dir: Path,
    saved: dict[str, Any],
    new: dict[str, Any],
    force: bool,
    command: str,
    verbose: int,
    finished: str,
    save_freq: int,
    restart: str,
) -> Checkpoint:
    """The newest readable checkpoint of ``run_dir``, once it is clear the run may be resumed
    (:func:`refuse_unresumable`); a run without a readable checkpoint is refused too (``restart``:
    the command that starts it again). A damaged newest checkpoint falls back to the one before
    it, and says so.
    """
    refuse_unresumable(run_dir, saved, new, force, command, verbose, finished)
    folder = run_dir / CHECKPOINTS / STATE_DIR
    ckpt = newest_checkpoint(folder, command)
    if ckpt is None:
        raise UsageError(
            f"--resume {run_dir}: no readable checkpoint in {folder} (one is written every "
            f"save_freq = {save_freq:,} steps); start it again: {restart}"
        )
    return ckpt
