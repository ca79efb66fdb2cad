"""Checkpoint folders: written whole or not at all, the last few kept, the newest readable one found.

``checkpoints/state/<steps>/`` holds ``state.json`` (numbers and settings), ``arrays.npz``
(observations, actions, replay buffer, statistics; read without pickle) and ``params.pt``
(weights and optimizer states; read with ``weights_only=True``). It is written as
``.<steps>.tmp/``, each file flushed to disk, then renamed into place, so a crash leaves the
previous checkpoint intact and a half-written one is never taken for a checkpoint.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nb2_agents.safe_files import load_npz

STATE_DIR = "state"
FILES = ("state.json", "arrays.npz", "params.pt")


@dataclass
class Checkpoint:
    info: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    torch_part: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def steps(self) -> int:
        return int(self.info["num_timesteps"])


def _fsync(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def write(folder: Path, ckpt: Checkpoint, keep: int) -> Path:
    """Write ``ckpt`` as ``folder/<steps>/`` atomically; keep the newest ``keep`` checkpoints."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{ckpt.steps:012d}"
    tmp = folder / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    (tmp / "state.json").write_text(json.dumps(ckpt.info))
    np.savez(tmp / "arrays.npz", **ckpt.arrays)  # type: ignore[arg-type]
    torch.save(ckpt.torch_part, tmp / "params.pt")
    for name in FILES:
        _fsync(tmp / name)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in listed(folder)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def listed(folder: Path) -> list[Path]:
    """Checkpoint folders, newest first."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), reverse=True)


def read(path: Path) -> Checkpoint:
    """One checkpoint folder; ``ValueError`` naming the file when it is missing or damaged."""
    try:
        info = json.loads((path / "state.json").read_text())
        with load_npz(path / "arrays.npz") as npz:
            arrays = {k: npz[k] for k in npz.files}
        torch_part = torch.load(path / "params.pt", map_location="cpu", weights_only=True)
    except (
        OSError,
        ValueError,
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        KeyError,
        IndexError,
        TypeError,
        pickle.UnpicklingError,
    ) as err:  # fmt: skip  (a damaged params.pt fails in the unpickler)
        raise ValueError(f"checkpoint {path} cannot be read: {type(err).__name__}: {err}") from err
    if not isinstance(info, dict) or "num_timesteps" not in info:
        raise ValueError(f"checkpoint {path / 'state.json'} holds no training state")
    return Checkpoint(info, arrays, torch_part, path)


def latest(folder: Path) -> tuple[Checkpoint | None, list[str]]:
    """The newest readable checkpoint, and a line for each newer one that could not be read."""
    skipped: list[str] = []
    for path in listed(folder):
        try:
            return read(path), skipped
        except ValueError as err:
            skipped.append(str(err))
    return None, skipped
