"""Inference latency of an NB2 policy exported for deployment, and its weight size per preset.

Latency: one PPO + NB2-nano policy per observation type (CartPole-v1's 4 floats; a
MiniGrid-like 7x7x3 uint8 grid of cell ids, 49 tokens in 4 windows, where adaptive token
sampling runs), deterministic action from numpy observations at batch 1 and 64:

* SB3 ``predict``: ``model.predict(obs, deterministic=True)``, everything SB3 adds included;
* PyTorch eager: ``policy._predict`` on a tensor in inference mode (the network alone), with
  NB2's traced forward switched off (``NB2.traced_inference``);
* PyTorch traced: the same call as NB2 runs it by default, through its traced graph
  (``nn/inference.py``);
* TorchScript and TorchScript int8: the ``nb2 export --format torchscript`` files;
* ONNX Runtime and ONNX int8: the ``nb2 export --format onnx`` files, one intra-op thread.

All contenders run in this one process, in interleaved rounds; each figure is the median over
rounds of the mean time per call. Weights are freshly initialised: latency does not depend on
training, except eager PyTorch's token sampling, which keeps more or fewer tokens by weight.

Size: parameter count of the whole policy (actor and critic) and of the exported graph (the
actor's path), bytes of the weights inside the ONNX file (initializers) and of the files
themselves, fp32 vs int8. Dynamic int8 quantization stores the Linear layers' weights (and
constant lookup tables) in int8; LayerNorm, biases, embeddings and the graph itself stay, so
the file shrinks less than the weights, most of all for nano.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import PPO

import nb2_agents  # noqa: F401  (registers "NB2Policy")
from benchmarks.common import Row, calibrate, fmt_time, interleave, median, time_calls
from nb2_agents.export import ExportedPolicy, export
from nb2_agents.runs import save_model

PRESETS = ("nano", "small", "base")
BATCHES = (1, 64)
GOAL_ORT_S = 0.3e-3
"""Design note §5: nano, batch 1, ONNX Runtime under 0.3 ms."""
GOAL_INT8 = 1 / 3
"""Design note §5: int8 weights at most a third of fp32."""
WARMUP = 20
MIN_REPS = 10
LABELS = {
    "torchscript": "TorchScript",
    "torchscript int8": "TorchScript int8",
    "onnx": "ONNX Runtime",
    "onnx int8": "ONNX int8",
}


class GridLike(gym.Env[np.ndarray, int]):
    """MiniGrid's observation as NB2 reads it (``ImgObsWrapper``): 7x7 cells of (object, colour,
    state) ids, uint8, and its 7 actions; no dynamics (only its spaces are used)."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    observation_space = spaces.Box(0, 255, (7, 7, 3), np.uint8)
    action_space = spaces.Discrete(7)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action: int) -> tuple[Any, float, bool, bool, dict]:
        return self.observation_space.sample(), 0.0, False, False, {}


ENVS: dict[str, Callable[[], gym.Env]] = {
    "CartPole-v1": lambda: gym.make("CartPole-v1"),
    "grid 7x7x3": GridLike,
}


def make_model(env: str, preset: str) -> PPO:
    kwargs = {"preset": preset, "normalize_images": False}  # cell ids, not pixels (as for MiniGrid)
    return PPO("NB2Policy", ENVS[env](), policy_kwargs=kwargs, seed=0, device="cpu", n_steps=64)


def observations(model: PPO, batch: int, seed: int = 0) -> np.ndarray:
    """A batch of observations as the model sees them: floats, or cell ids 0-10 (MiniGrid's range)."""
    rng = np.random.default_rng(seed)
    space = model.observation_space
    shape = (batch, *(space.shape or ()))
    if space.dtype == np.uint8:
        return rng.integers(0, 11, size=shape).astype(np.uint8)
    return rng.normal(size=shape).astype(np.float32) * 0.1


def export_all(model: PPO, folder: Path, formats: tuple[str, ...]) -> dict[str, Path]:
    """Save ``model`` and export it in each format, fp32 and int8: {"onnx": ..., "onnx int8": ...}."""
    zip_path = save_model(model, folder / "model.zip", {"algo": "ppo", "env": None})
    files = {}
    for fmt in formats:
        for int8 in (False, True):
            files[f"{fmt}{' int8' if int8 else ''}"] = export(zip_path, format=fmt, int8=int8).path
    return files


def contenders(model: PPO, files: dict[str, Path], obs: np.ndarray) -> dict[str, Callable[[], Any]]:
    """Name → one deterministic-action call on ``obs`` (numpy in, numpy out)."""
    policy: Any = model.policy
    tensor = torch.from_numpy(obs)

    nets = policy.nb2_networks()

    def network(traced: bool) -> np.ndarray:
        for net in nets:
            net.traced_inference = traced
        try:
            with torch.inference_mode():
                return policy._predict(tensor, deterministic=True).numpy()
        finally:
            for net in nets:
                net.traced_inference = True

    calls: dict[str, Callable[[], Any]] = {
        "SB3 predict": partial(model.predict, obs, deterministic=True),
        "PyTorch eager": partial(network, False),
        "PyTorch traced": partial(network, True),
    }
    for key, path in files.items():
        calls[LABELS[key]] = partial(ExportedPolicy(path, threads=1).run, obs)
    return calls


def _latency(env: str, rounds: int, target: float, folder: Path) -> list[Row]:
    model = make_model(env, "nano")
    files = export_all(model, folder / safe(env), ("torchscript", "onnx"))
    rows = []
    for batch in BATCHES:
        obs = observations(model, batch)
        calls = contenders(model, files, obs)
        for fn in calls.values():  # TorchScript's profiling executor optimizes after a few calls
            for _ in range(WARMUP):
                fn()
        reps = {name: max(calibrate(fn, target), MIN_REPS) for name, fn in calls.items()}
        times = interleave({n: partial(time_calls, fn, reps[n]) for n, fn in calls.items()}, rounds)
        eager = median(times["PyTorch eager"])
        print(f"   {env}, batch {batch}:")
        for name, values in times.items():
            t = median(values)
            goal, met = "—", None
            if name == "ONNX Runtime" and batch == 1:
                goal, met = f"< {fmt_time(GOAL_ORT_S)}", t < GOAL_ORT_S
            print(f"     {name:<17} {fmt_time(t):>10}   {eager / t:5.2f}x eager")
            value = f"{fmt_time(t)} ({eager / t:.2f}x eager)"
            rows.append(Row("latency", f"{env}, nano, batch {batch}: {name}", value, goal, met))
    return rows


def onnx_weight_bytes(path: Path) -> int:
    """Bytes of the weights (initializers) inside an ONNX file."""
    import onnx
    from onnx import numpy_helper

    return sum(numpy_helper.to_array(t).nbytes for t in onnx.load(str(path)).graph.initializer)


def _size(env: str, preset: str, folder: Path) -> list[Row]:
    model = make_model(env, preset)
    files = export_all(model, folder / f"{safe(env)}-{preset}", ("onnx", "torchscript"))
    policy_params = sum(p.numel() for p in model.policy.parameters())
    graph_params = sum(p.numel() for p in model.policy.pi_features_extractor.parameters())
    graph_params += sum(p.numel() for p in model.policy.action_net.parameters())
    w32, w8 = onnx_weight_bytes(files["onnx"]), onnx_weight_bytes(files["onnx int8"])
    label = f"{env}, {preset}"
    print(f"   {label:<20} {policy_params:>9,d} parameters ({graph_params:,d} exported)")
    rows = [Row("size", f"{label}: parameters, policy (exported)", f"{policy_params:,d} ({graph_params:,d})")]
    pairs = [("ONNX weights", w32, w8)]
    for fmt, name in (("onnx", "ONNX file"), ("torchscript", "TorchScript file")):
        pairs.append((name, files[fmt].stat().st_size, files[f"{fmt} int8"].stat().st_size))
    for name, fp32, int8 in pairs:
        ratio = int8 / fp32
        print(f"     {name:<17} fp32 {fp32 / 1024:8.1f} KiB   int8 {int8 / 1024:8.1f} KiB   ({ratio:.2f}x)")
        value = f"{fp32 / 1024:.1f} → {int8 / 1024:.1f} KiB ({ratio:.2f}x)"
        rows.append(Row("size", f"{label}: {name} fp32 → int8", value, "<= 0.33x", ratio <= GOAL_INT8))
    return rows


def safe(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name)


def run(quick: bool = False) -> list[Row]:
    rounds, target = (5, 0.05) if quick else (15, 0.2)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print("\n## Latency: deterministic action from numpy observations, NB2-nano (fresh weights)")
        print(
            f"   {rounds} interleaved rounds of ~{target:.2f} s per contender; torch and onnxruntime 1 thread"
        )
        for env in ENVS:
            rows += _latency(env, rounds, target, folder)
        print(
            "\n## Size: parameters, and weights / files fp32 vs int8 (dynamic quantization of Linear layers)"
        )
        for env in ENVS if not quick else ("CartPole-v1",):
            for preset in PRESETS:
                rows += _size(env, preset, folder)
    return rows
