"""Single-task reference runs for forward transfer: where they are cached and what they hold.

A reference for task ``i`` is task ``i`` trained alone, from scratch, with the curriculum's
spaces, algorithm, preset, hyperparameters and evaluation schedule; its file name carries a hash
of all of these (not the seed: each seed is its own file), so a changed setting never reuses a
stale reference.
"""

from __future__ import annotations

import glob
import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from nb2_agents.curriculum.results import CurriculumConfig
from nb2_agents.curriculum.spec import CurriculumSpec
from nb2_agents.hyperparams import plain
from nb2_agents.runs import safe_name

REFERENCES_DIR = "references"


def reference_key(cfg: CurriculumConfig, spec: CurriculumSpec, index: int) -> str:
    """What a single-task reference depends on (not the seed: each seed is its own file)."""
    task = asdict(spec.tasks[index])
    if not task["normalize"]:  # as before tasks could normalise: earlier references stay valid
        task.pop("normalize")
    data = {
        "task": task, "index": index, "tasks": spec.task_names(), "algo": cfg.algo,
        "preset": cfg.preset, "hyperparams": plain(cfg.hyperparams), "evals_per_task": cfg.evals_per_task,
    }  # fmt: skip
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:10]


def reference_path(root: Path, cfg: CurriculumConfig, spec: CurriculumSpec, index: int, seed: int) -> Path:
    key = reference_key(cfg, spec, index)
    name = f"{safe_name(spec.tasks[index].name)}__{cfg.algo}__{cfg.preset}__s{seed}__{key}.json"
    return root / REFERENCES_DIR / cfg.suite / name


def reference_aucs(cfg: CurriculumConfig, spec: CurriculumSpec, root: Path) -> list[float | None]:
    """Per task, the mean AUC of its cached single-task reference runs (any seeds), or None."""
    out: list[float | None] = []
    for i in range(len(spec.tasks)):
        key = reference_key(cfg, spec, i)
        folder = root / REFERENCES_DIR / cfg.suite
        pattern = f"{glob.escape(safe_name(spec.tasks[i].name))}__*__{key}.json"
        found = [json.loads(p.read_text())["auc"] for p in folder.glob(pattern)]
        out.append(float(np.mean(found)) if found else None)
    return out
