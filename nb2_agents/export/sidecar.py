"""The metadata sidecar ``<file>.json`` written next to every exported file, and its checks.

It holds what a loader needs to run the file safely and what a person needs to trust it::

    format, int8           "onnx" or "torchscript"; whether Linear layers are int8
    sha256                 of the exported file: a sidecar never vouches for another file
    observation_space      the spaces as plain JSON (nb2_agents.export.spaces)
    action_space
    inputs, outputs        graph input names / dtypes / shapes; outputs "action" and "logits"
    action                 how the action is taken from the logits (argmax, clip, tanh + rescale...)
    algo, policy, preset   what was exported (and env, env_kwargs, eval_seed, deterministic_eval,
    env, tasks, ...        seed, num_timesteps: the model's nb2 metadata; tasks: task id → name)
    exporter               versions of nb2-agents, torch, onnx, onnxscript, onnxruntime
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any

from nb2_agents.errors import UsageError
from nb2_agents.runs import write_json

SIDECAR_SUFFIX = ".json"
SCHEMA = 1
REQUIRED = ("schema", "format", "int8", "sha256", "observation_space", "action_space", "inputs", "outputs")


def sidecar_path(file: str | Path) -> Path:
    """``model.onnx`` → ``model.onnx.json``."""
    file = Path(file)
    return file.with_name(file.name + SIDECAR_SUFFIX)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def versions() -> dict[str, str | None]:
    """Versions of the packages that wrote (and will run) an export; None where not installed."""
    out: dict[str, str | None] = {}
    for name in ("nb2-agents", "torch", "onnx", "onnxscript", "onnxruntime"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def write_sidecar(file: Path, meta: dict[str, Any]) -> Path:
    """Write ``meta`` plus the file's sha256 to ``<file>.json``, atomically."""
    return write_json(sidecar_path(file), {"schema": SCHEMA, **meta, "sha256": sha256(file)})


def read_sidecar(file: str | Path) -> dict[str, Any]:
    """The checked sidecar of an exported file: present, well-formed, and its sha256 matches.

    Raises :class:`UsageError` naming the file and what is expected otherwise.
    """
    file = Path(file)
    side = sidecar_path(file)
    again = f"re-export it: nb2 export MODEL --format FORMAT --out {file}"
    if not file.is_file():
        raise UsageError(
            f"exported model {file} does not exist; expected an .onnx or .pt file from nb2 export"
        )
    if not side.is_file():
        raise UsageError(
            f"{file} has no metadata sidecar {side}; nb2 export writes one next to every export and it is "
            f"needed to check the file and its spaces; {again}"
        )
    try:
        meta = json.loads(side.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"cannot read the metadata sidecar {side} ({err}); {again}") from err
    missing = [key for key in REQUIRED if not isinstance(meta, dict) or key not in meta]
    if missing:
        raise UsageError(
            f"metadata sidecar {side} lacks {', '.join(missing)}: not written by nb2 export; {again}"
        )
    if meta["schema"] != SCHEMA:
        raise UsageError(f"metadata sidecar {side} has schema {meta['schema']!r}; this nb2 reads {SCHEMA}")
    actual = sha256(file)
    if actual != meta["sha256"]:
        raise UsageError(
            f"{file} does not match its metadata sidecar {side}: sha256 {actual[:16]}..., the sidecar "
            f"expects {str(meta['sha256'])[:16]}... (the file was changed, or the sidecar belongs to another "
            f"export); {again}"
        )
    return dict(meta)
