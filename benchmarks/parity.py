"""Export parity on every built-in curriculum: exported files act as the PyTorch policy does.

For each suite in ``envs/`` whose packages are installed here, one PPO + NB2 agent serves all
of its tasks at once (the curriculum's shared spaces: ``obs``, ``obs_mask``, ``task_id``,
``action_mask`` where the tasks need them), trains briefly so that its logits are no longer
near-uniform, and 1,000 observations are recorded with it acting on every task. Then, for
ONNX (onnxruntime) and TorchScript, fp32 and int8:

* actions: share of the recorded observations where the file's deterministic action equals
  ``model.predict(obs, deterministic=True)`` (issue: all, fp32; >= 99 %, int8);
* logits: largest difference from SB3's own action distribution (issue: <= 1e-4, fp32);
* return: mean return of the ONNX int8 file vs the PyTorch policy over a few deterministic
  episodes of every task, same seeds (issue: within 2 %).

Suites whose packages are missing (continual-world needs metaworld) are listed as skipped.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import VecEnv

from benchmarks.common import Row
from nb2_agents.curriculum.evaluator import task_env_fns, task_vec_env, vec_env
from nb2_agents.curriculum.runner import probe_spaces, resolve
from nb2_agents.curriculum.spec import builtin_curricula
from nb2_agents.errors import UsageError
from nb2_agents.export import ExportedPolicy, export
from nb2_agents.runs import save_model
from nb2_agents.training import make_algorithm

RECORDED = 1000
LOGIT_GOAL = 1e-4
INT8_AGREEMENT_GOAL = 0.99
INT8_RETURN_GOAL = 0.02


def record(model: BaseAlgorithm, n: int, seed: int = 0, vec: VecEnv | None = None) -> Any:
    """``n`` observations met while ``model`` acts (sampled actions, for varied states) in ``vec``
    (default: its own env)."""
    vec = vec if vec is not None else model.get_env()
    assert vec is not None
    vec.seed(seed)
    obs = vec.reset()
    seen: list[Any] = []
    while len(seen) * vec.num_envs < n:
        seen.append(obs)
        action, _ = model.predict(obs, deterministic=False)
        obs, *_ = vec.step(action)
    if isinstance(obs, dict):
        return {k: np.concatenate([o[k] for o in seen])[:n] for k in obs}
    return np.concatenate(seen)[:n]


def sb3_logits(model: BaseAlgorithm, obs: Any) -> np.ndarray:
    """Log-probabilities (Discrete) or Gaussian means of SB3's action distribution."""
    policy: Any = model.policy
    x, _ = policy.obs_to_tensor(obs)
    with torch.no_grad():
        dist = policy.get_distribution(x).distribution
    return (dist.logits if isinstance(model.action_space, spaces.Discrete) else dist.mean).numpy()


def logit_diff(model: BaseAlgorithm, file_logits: np.ndarray, obs: Any) -> float:
    reference = sb3_logits(model, obs)
    if isinstance(model.action_space, spaces.Discrete):
        file_logits = torch.log_softmax(torch.from_numpy(file_logits), dim=-1).numpy()
        valid = reference > -1e7  # masked actions (-1e8) are excluded: float32 steps there are ~8
        return float(np.abs(file_logits - reference)[valid].max())
    return float(np.abs(file_logits - reference).max())


def agreement(actions: np.ndarray, expected: np.ndarray, box: bool) -> float:
    same = np.isclose(actions, expected, rtol=0, atol=1e-5) if box else actions == expected
    return float(same.reshape(len(actions), -1).all(axis=1).mean())


def returns(policy: Any, spec: Any, common: Any, episodes: int) -> list[float]:
    """Mean deterministic return of ``policy`` on each task (seeded alike for every policy)."""
    means = []
    for i, task in enumerate(spec.tasks):
        vec = task_vec_env(task, i, common, spec.algo, 1, 10_000 + i)
        try:
            mean, _ = evaluate_policy(policy, vec, n_eval_episodes=episodes, deterministic=True)
        finally:
            vec.close()
        means.append(float(mean))
    return means


def _suite(name: str, steps: int) -> tuple[BaseAlgorithm, Any, Any]:
    cfg, spec, hp = resolve(name)  # UsageError when a package the suite needs is missing
    common = probe_spaces(spec, cfg.algo)
    fns = [fn for i, task in enumerate(spec.tasks) for fn in task_env_fns(task, i, common, cfg.algo, 1, i)]
    with warnings.catch_warnings():  # SB3 notes batch sizes that do not divide n_steps * n_envs
        warnings.simplefilter("ignore", UserWarning)
        model, _ = make_algorithm(cfg.algo, hp, vec_env(fns, 0), seed=0, device="cpu")
    if steps:
        model.learn(steps)
    return model, spec, common


def _file_rows(label: str, int8: bool, share: float, diff: float) -> list[Row]:
    if int8:
        goal = f">= {100 * INT8_AGREEMENT_GOAL:.0f} %"
        return [
            Row(
                "parity", f"{label} actions agree", f"{100 * share:.1f} %", goal, share >= INT8_AGREEMENT_GOAL
            )
        ]
    return [
        Row("parity", f"{label} actions equal", f"{100 * share:.1f} %", "100 %", share == 1.0),
        Row(
            "parity", f"{label} logits max |diff|", f"{diff:.1e}", f"<= {LOGIT_GOAL:.0e}", diff <= LOGIT_GOAL
        ),
    ]


def _return_row(
    name: str, int8_file: ExportedPolicy, model: BaseAlgorithm, spec: Any, common: Any, episodes: int
) -> Row:
    ours, theirs = returns(int8_file, spec, common, episodes), returns(model, spec, common, episodes)
    gaps = [abs(a - b) / max(abs(b), 1e-8) if a != b else 0.0 for a, b in zip(ours, theirs, strict=True)]
    detail = ", ".join(
        f"{t.name} {b:.3g} → {a:.3g}" for t, a, b in zip(spec.tasks, ours, theirs, strict=True)
    )
    print(f"     return PyTorch → ONNX int8 ({episodes} episodes per task): {detail}")
    worst = max(gaps)
    goal = f"<= {100 * INT8_RETURN_GOAL:.0f} %"
    label = f"{name}: ONNX int8 return vs PyTorch (worst task)"
    return Row("parity", label, f"{100 * worst:.1f} %", goal, worst <= INT8_RETURN_GOAL)


def _check_suite(name: str, steps: int, episodes: int, folder: Path) -> list[Row]:
    model, spec, common = _suite(name, steps)
    obs = record(model, RECORDED)
    expected, _ = model.predict(obs, deterministic=True)
    box = isinstance(model.action_space, spaces.Box)
    meta = {"algo": spec.algo, "env": None, "curriculum": name}
    zip_path = save_model(model, folder / name / "model.zip", meta)
    print(
        f"   {name}: {len(spec.tasks)} tasks, {model.num_timesteps:,d} steps trained, {RECORDED} observations"
    )
    rows: list[Row] = []
    int8_onnx = None
    for fmt in ("onnx", "torchscript"):
        for int8 in (False, True):
            policy = ExportedPolicy(export(zip_path, format=fmt, int8=int8).path)
            actions, logits = policy.run(obs)
            share = agreement(actions.reshape(expected.shape), expected, box)
            diff = logit_diff(model, logits, obs)
            kind = "int8" if int8 else "fp32"
            print(f"     {fmt:<12} {kind}  actions equal {100 * share:6.2f} %   logits max |diff| {diff:.2e}")
            rows += _file_rows(f"{name}: {fmt}{' int8' if int8 else ''}", int8, share, diff)
            if fmt == "onnx" and int8:
                int8_onnx = policy
    assert int8_onnx is not None
    return [*rows, _return_row(name, int8_onnx, model, spec, common, episodes)]


def run(quick: bool = False) -> list[Row]:
    steps, episodes = (1024, 2) if quick else (8192, 10)
    print(f"\n## Export parity: every built-in suite, {RECORDED} recorded observations")
    print(f"   one PPO + NB2 agent per suite, trained {steps:,d} steps on all of its tasks at once")
    rows: list[Row] = []
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for name in builtin_curricula():
            try:
                rows += _check_suite(name, steps, episodes, Path(tmp))
            except UsageError as err:
                print(f"   {name}: skipped ({err})")
                rows.append(Row("parity", name, f"skipped: {str(err).split(' (')[0]}"))
    return rows
