"""Resumable checkpoints: a run killed at any point continues from its last checkpoint as if it
had never stopped (``nb2 train --resume RUN``).

A checkpoint (``checkpoints/state/<steps>/``) holds the weights, optimizer states and schedule
progress; ``num_timesteps`` and SB3's other counters; the last observations; the episode
statistics; the replay buffer (off-policy); VecNormalize's statistics; the action noise; the
global random generators (Python, NumPy, torch) and every space's; each env's episode in
progress, rebuilt by replaying its reset and actions (:mod:`.episodes`); the evaluation history,
best return and callback counters; the logger's values not yet written; the length of each
Monitor CSV. Nothing in it is unpickled.
"""

from __future__ import annotations

from pathlib import Path

from nb2_agents.checkpoint.episodes import EpisodeRecorder
from nb2_agents.checkpoint.resume import checkpoint_to_resume, config_changes, read_run_config
from nb2_agents.checkpoint.run_state import RestoreCallback, RunParts, capture, cut_files, restore
from nb2_agents.checkpoint.store import STATE_DIR, Checkpoint, latest, listed, read, write

__all__ = [
    "STATE_DIR",
    "Checkpoint",
    "EpisodeRecorder",
    "RestoreCallback",
    "RunParts",
    "capture",
    "checkpoint_to_resume",
    "config_changes",
    "cut_files",
    "latest",
    "listed",
    "read",
    "read_run_config",
    "restore",
    "save_state",
    "write",
]


def save_state(parts: RunParts, checkpoints_dir: Path, keep: int) -> Path:
    """Capture ``parts`` and write it under ``checkpoints_dir/state/``, keeping the newest ``keep``."""
    return write(checkpoints_dir / STATE_DIR, capture(parts), keep)
