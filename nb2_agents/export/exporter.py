"""``nb2 export`` as a function: a trained model → an ONNX or TorchScript file plus its sidecar.

>>> result = export("runs/CartPole-v1__ppo__nano__s0__20250101-120000", format="onnx")  # doctest: +SKIP
>>> result.path  # doctest: +SKIP
PosixPath('runs/CartPole-v1__ppo__nano__s0__20250101-120000/model.onnx')

The exported graph maps raw observations to the deterministic action and the logits (see
:mod:`nb2_agents.export.module` for what each output holds, and how Box actions are clipped or
rescaled to the env's bounds). Right after writing, the file is run on 64 observations sampled
from the observation space and compared with the PyTorch policy; the figures go into the
result and the sidecar, and an fp32 export whose logits differ by more than 1e-3 is removed
and reported as an error rather than left to act wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from nb2_agents.errors import UsageError
from nb2_agents.evaluation import LoadedModel, load_model
from nb2_agents.export.formats import FORMATS
from nb2_agents.export.loader import SUFFIXES, onnx_runner, torchscript_runner
from nb2_agents.export.module import MEMORY_INPUTS, MEMORY_OUTPUTS, OUTPUTS, PolicyGraph
from nb2_agents.export.normalizer import normalizer_for
from nb2_agents.export.sidecar import read_sidecar, versions, write_sidecar
from nb2_agents.export.spaces import GraphInput, graph_inputs, space_from_json, space_to_json
from nb2_agents.export.writers import require_onnx, write_onnx, write_torchscript
from nb2_agents.normalize import read_stats
from nb2_agents.runs import atomic_write
from nb2_agents.sb3.extractor import NB2PolicyMixin

CHECK_SAMPLES = 64
FP32_TOLERANCE = 1e-3
"""Largest logit difference from PyTorch an fp32 export may show on the check samples."""


@dataclass
class ExportResult:
    """What :func:`export` wrote and how closely the file reproduces the PyTorch policy."""

    path: Path
    sidecar: Path
    format: str
    int8: bool
    size_bytes: int
    sha256: str
    action_agreement: float
    """Share of the check observations where the file's action equals PyTorch's."""
    max_abs_logit_diff: float
    """Largest |logit difference| from PyTorch over the check observations."""

    def summary(self) -> str:
        kind = f"{self.format}{' int8' if self.int8 else ''}"
        return (
            f"wrote {self.path} ({kind}, {self.size_bytes / 1024:.1f} KiB) and {self.sidecar.name}; on "
            f"{CHECK_SAMPLES} sampled observations: actions equal PyTorch's on "
            f"{100 * self.action_agreement:.1f}%, logits within {self.max_abs_logit_diff:.2g}"
        )


def check_format(format: str | None, out: str | Path | None) -> str:
    """The format to write: ``format``, else the one ``out``'s suffix names, else onnx."""
    suffix = Path(out).suffix.lower() if out is not None else ""
    if format is None:
        return SUFFIXES.get(suffix, "onnx")
    if format not in FORMATS:
        raise UsageError(f"unknown export format {format!r}; valid formats: {', '.join(FORMATS)}")
    if out is not None and suffix in SUFFIXES and SUFFIXES[suffix] != format:
        raise UsageError(
            f"--out {out} is a {SUFFIXES[suffix]} file name; for --format {format} use {FORMATS[format]}"
        )
    return format


def output_path(model_path: Path, format: str, int8: bool, out: str | Path | None) -> Path:
    """``--out``: a file, or a folder (existing, or a name without a suffix) for the default name;
    else the default name next to the model zip."""
    name = f"{model_path.stem}{'.int8' if int8 else ''}{FORMATS[format]}"
    if out is None:
        return model_path.with_name(name)
    path = Path(out)
    if path.is_dir() or not path.suffix:
        return path / name
    valid = [s for s, f in SUFFIXES.items() if f == format]
    if path.suffix.lower() not in valid:
        raise UsageError(f"--out {path}: a {format} file name ends in {' or '.join(valid)}")
    return path


def example_inputs(
    space: spaces.Space, inputs: list[GraphInput], n: int, seed: int = 0
) -> list[torch.Tensor]:
    """``n`` observations sampled from ``space`` (a fresh copy, seeded), as graph inputs."""
    space = space_from_json(space_to_json(space))
    space.seed(seed)
    samples = [space.sample() for _ in range(n)]
    if isinstance(space, spaces.Dict):
        columns = [np.stack([s[i.name] for s in samples]) for i in inputs]
    else:
        columns = [np.stack(samples)]
    return [
        torch.from_numpy(np.ascontiguousarray(c, dtype=np.dtype(i.dtype)))
        for c, i in zip(columns, inputs, strict=True)
    ]


def memory_inputs(graph: PolicyGraph) -> list[GraphInput]:
    """The memory inputs of a memory-carrying graph (none otherwise)."""
    shape = graph.memory_shape
    if shape is None:
        return []
    k, c = shape
    return [GraphInput(MEMORY_INPUTS[0], "float32", (k, c)), GraphInput(MEMORY_INPUTS[1], "float32", (k,))]


def memory_examples(graph: PolicyGraph, n: int, seed: int = 0) -> list[torch.Tensor]:
    """``n`` memories to check the export on: summaries at the encoder's unit scale, each row with
    its own number of valid past steps (none for the first: an episode's start)."""
    shape = graph.memory_shape
    if shape is None:
        return []
    k, c = shape
    gen = torch.Generator().manual_seed(seed)
    past = torch.randn(n, k, c, generator=gen)  # (n, K, C)
    valid = (torch.arange(k) < torch.arange(n).remainder(k + 1).unsqueeze(1)).float()  # (n, K)
    return [past, valid]


def _task_names(meta: dict[str, Any], space: spaces.Space) -> dict[str, str] | None:
    """Task id → task name for a curriculum model whose observations carry a task id."""
    if not meta.get("curriculum") or not isinstance(space, spaces.Dict) or "task_id" not in space.spaces:
        return None
    if isinstance(meta.get("tasks"), list):  # saved by nb2 since normalisation came
        return {str(i): str(name) for i, name in enumerate(meta["tasks"])}
    from nb2_agents.curriculum.spec import load_curriculum

    try:
        names = load_curriculum(str(meta["curriculum"])).task_names()
    except (UsageError, OSError, ValueError):
        return None
    return {str(i): name for i, name in enumerate(names)}


def _action_rule(graph: PolicyGraph) -> str:
    space = graph.action_space
    if isinstance(space, spaces.Discrete):
        return "argmax(logits)" + (" after action_mask sets invalid logits to -1e8" if graph.masked else "")
    if isinstance(space, spaces.MultiDiscrete):
        return "argmax of each dimension's slice of logits"
    if isinstance(space, spaces.MultiBinary):
        return "logits > 0"
    if graph.clip:
        return "clip(logits, low, high): the Gaussian mean, clipped to the action space's bounds"
    squash = "tanh(logits)" if graph.tanh else "logits (already in [-1, 1])"
    return f"low + (a + 1) / 2 * (high - low) with a = {squash}: rescaled to the action space's bounds"


def _metadata(
    loaded: LoadedModel, graph: PolicyGraph, fmt: str, int8: bool, inputs: list[GraphInput]
) -> dict[str, Any]:
    policy, meta = loaded.model.policy, loaded.meta
    options = getattr(policy, "_nb2_options", {}) if isinstance(policy, NB2PolicyMixin) else {}
    preset = meta.get("preset") or (options.get("preset") if isinstance(options.get("preset"), str) else None)
    action_dtype = "float32" if isinstance(graph.action_space, spaces.Box) else "int64"
    return {
        "format": fmt,
        "int8": int8,
        "source": str(loaded.path),
        "algo": loaded.algo,
        "policy": type(policy).__name__,
        "preset": preset,
        "env": meta.get("env"),
        "env_kwargs": meta.get("env_kwargs") or {},
        "curriculum": meta.get("curriculum"),
        "tasks": _task_names(meta, graph.observation_space),
        "normalized": sorted(read_stats(loaded.path)),  # statistics applied inside the graph
        "seed": meta.get("seed"),
        "eval_seed": meta.get("eval_seed"),
        "deterministic_eval": True,  # the file holds the deterministic policy
        "num_timesteps": int(loaded.model.num_timesteps),
        "observation_space": space_to_json(graph.observation_space),
        "action_space": space_to_json(graph.action_space, "action space"),
        "inputs": [i.to_json() for i in inputs],
        "outputs": [
            {
                "name": OUTPUTS[0],
                "dtype": action_dtype,
                "shape": ["batch", *(graph.action_space.shape or ())],
            },
            {"name": OUTPUTS[1], "dtype": "float32", "shape": ["batch", "n"]},
            *(
                {"name": name, "dtype": "float32", "shape": ["batch", *i.shape]}
                for name, i in zip(MEMORY_OUTPUTS, memory_inputs(graph), strict=False)  # none without memory
            ),
        ],
        "memory": _memory_meta(graph),
        "action": _action_rule(graph),
        "exporter": versions(),
    }


def _memory_meta(graph: PolicyGraph) -> dict[str, Any] | None:
    shape = graph.memory_shape
    if shape is None:
        return None
    return {
        "k": shape[0],
        "d_model": shape[1],
        "inputs": MEMORY_INPUTS,
        "outputs": MEMORY_OUTPUTS,
        "rule": "zeros at each episode's start; then feed memory_out and memory_valid_out back in "
        "with the next observation",
    }


def _compare(
    graph: PolicyGraph, file: Path, fmt: str, examples: list[torch.Tensor], names: list[str]
) -> tuple[float, float]:
    """(action agreement, largest logit difference) of ``file`` against ``graph`` on ``examples``."""
    run = onnx_runner(file, names) if fmt == "onnx" else torchscript_runner(file)
    action, logits, *memory = run([x.numpy() for x in examples])
    with torch.inference_mode():
        ref_action, ref_logits, *ref_memory = (t.numpy() for t in graph(*examples))
    if isinstance(graph.action_space, spaces.Box):
        same = np.isclose(action, ref_action, rtol=1e-4, atol=1e-4).reshape(len(action), -1).all(axis=1)
    else:
        same = (action == ref_action).reshape(len(action), -1).all(axis=1)
    diffs = [
        np.abs(got - want).max()
        for got, want in zip([logits, *memory], [ref_logits, *ref_memory], strict=True)
    ]
    return float(same.mean()), float(max(diffs))


def export(
    path: str | Path,
    format: str | None = None,
    int8: bool = False,
    out: str | Path | None = None,
    trust_pickle: bool = False,
) -> ExportResult:
    """Export the deterministic policy of a run folder's ``model.zip`` (or any model zip).

    :param format: ``"onnx"`` (run by onnxruntime; needs the ``export`` extra) or
        ``"torchscript"`` (``torch.jit.load``); None: from ``out``'s suffix, else onnx
    :param int8: dynamic int8 quantization of the Linear layers
    :param out: the file to write (``.onnx``; ``.pt`` or ``.ts``), or a folder; default: next
        to the model zip, ``model.onnx``, ``model.int8.onnx``, ``model.pt``, ...
    :param trust_pickle: load a model zip that needs unpickling (``--trust-pickle``)
    :return: where it went and how closely it reproduces the PyTorch policy
    """
    fmt = check_format(format, out)
    if fmt == "onnx":
        require_onnx()
    loaded = load_model(path, device="cpu", trust_pickle=trust_pickle)
    target = output_path(loaded.path, fmt, int8, out)
    policy = loaded.model.policy
    space_to_json(policy.observation_space)  # a UsageError naming a space the export cannot express
    space_to_json(policy.action_space, "action space")
    layout = getattr(policy, "memory_layout", None)
    step_space = policy.observation_space if layout is None else layout.step_space
    graph = PolicyGraph(policy, normalizer_for(loaded.path, loaded.meta, step_space))
    obs_inputs = graph_inputs(graph.observation_space)
    inputs = obs_inputs + memory_inputs(graph)
    names = [i.name for i in inputs]
    examples = example_inputs(graph.observation_space, obs_inputs, CHECK_SAMPLES)
    examples += memory_examples(graph, CHECK_SAMPLES)
    if fmt == "onnx":
        atomic_write(target, lambda tmp: write_onnx(graph, examples, names, tmp, int8))
    else:
        atomic_write(target, lambda tmp: write_torchscript(graph, examples, tmp, int8))
    agreement, diff = _compare(graph, target, fmt, examples, names)
    if not int8 and not diff <= FP32_TOLERANCE:
        target.unlink()
        raise RuntimeError(
            f"the {fmt} export of {loaded.path} differs from PyTorch (logits by {diff:.3g} > "
            f"{FP32_TOLERANCE}); nothing was written. Please report it with the model file"
        )
    meta = _metadata(loaded, graph, fmt, int8, inputs)
    meta["check"] = {"observations": CHECK_SAMPLES, "action_agreement": agreement, "max_abs_logit_diff": diff}
    sidecar = write_sidecar(target, meta)
    digest = read_sidecar(target)["sha256"]
    return ExportResult(target, sidecar, fmt, int8, target.stat().st_size, digest, agreement, diff)
