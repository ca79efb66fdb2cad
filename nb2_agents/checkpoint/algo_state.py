"""An SB3 algorithm's training state as plain data: weights and optimizers, counters, the last
observations, episode statistics, the replay buffer, action noise and VecNormalize's statistics.

Everything is numbers and arrays (``state.json``, ``arrays.npz``, ``params.pt`` read with
``weights_only=True``): a checkpoint is restored into an algorithm built afresh from the run's
configuration, never unpickled.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import OrnsteinUhlenbeckActionNoise, VectorizedActionNoise
from stable_baselines3.common.save_util import recursive_getattr
from stable_baselines3.common.vec_env import VecNormalize

from nb2_agents.checkpoint.rng import set_spaces_state, spaces_state

COUNTERS = ("num_timesteps", "_n_updates", "_episode_num", "_n_calls")
FLOATS = ("_current_progress_remaining", "exploration_rate", "ent_coef")
"""Attributes kept when the algorithm has them as numbers (SAC's ``ent_coef`` may be ``"auto"``:
its value is the ``log_ent_coef`` tensor, a torch variable)."""
OBS = ("_last_obs", "_last_original_obs")
BUFFER = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def _put(arrays: dict[str, np.ndarray], key: str, value: Any) -> None:
    if isinstance(value, dict):
        for sub, v in value.items():
            arrays[f"{key}/{sub}"] = np.asarray(v)
    elif value is not None:
        arrays[key] = np.asarray(value)


def _get(arrays: dict[str, np.ndarray], key: str) -> Any:
    if key in arrays:
        return arrays[key].copy()
    subs = {k[len(key) + 1 :]: v.copy() for k, v in arrays.items() if k.startswith(key + "/")}
    return subs or None


def _noises(model: BaseAlgorithm) -> list[Any]:
    noise = getattr(model, "action_noise", None)
    return list(noise.noises) if isinstance(noise, VectorizedActionNoise) else [noise]


def capture(model: BaseAlgorithm) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """(JSON part, arrays, torch part) of ``model``'s state."""
    info: dict[str, Any] = {}
    for name in COUNTERS:
        if isinstance(getattr(model, name, None), int):
            info[name] = int(getattr(model, name))
    for name in FLOATS:
        value = getattr(model, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            info[name] = float(value)
    info["ep_info_buffer"] = [{k: float(v) for k, v in e.items()} for e in model.ep_info_buffer or []]
    info["ep_success_buffer"] = [bool(s) for s in model.ep_success_buffer or []]
    info["action_space"] = spaces_state(model.action_space)
    arrays: dict[str, np.ndarray] = {}
    for name in OBS:
        _put(arrays, f"model/{name}", getattr(model, name, None))
    if getattr(model, "_last_episode_starts", None) is not None:
        arrays["model/_last_episode_starts"] = np.asarray(model._last_episode_starts)
    for i, noise in enumerate(_noises(model)):
        if isinstance(noise, OrnsteinUhlenbeckActionNoise):
            arrays[f"noise/{i}"] = np.asarray(noise.noise_prev)
    buffer = getattr(model, "replay_buffer", None)
    if buffer is not None:
        info["replay"] = _buffer_capture(buffer, arrays)
    vn = model.get_vec_normalize_env()
    if vn is not None:
        _vec_normalize_capture(vn, arrays)
    _, variables = model._get_torch_save_params()
    tensors = {v: recursive_getattr(model, v).detach().cpu() for v in variables}
    torch_part = {"params": model.get_parameters(), "variables": tensors}
    return info, arrays, torch_part


def restore(
    model: BaseAlgorithm, info: dict[str, Any], arrays: dict[str, np.ndarray], torch_part: dict[str, Any]
) -> None:
    """Put ``model`` (built afresh from the same configuration) in the captured state; the global
    random generators and the action noise are restored apart (:func:`restore_volatile`), after
    ``learn`` has set up."""
    model.set_parameters(torch_part["params"], exact_match=True, device=model.device)
    for name, value in torch_part["variables"].items():
        with torch.no_grad():
            recursive_getattr(model, name).copy_(value.to(model.device))
    for name in (*COUNTERS, *FLOATS):
        if name in info:
            setattr(model, name, info[name])
    window = model._stats_window_size
    model.ep_info_buffer = deque(info["ep_info_buffer"], maxlen=window)
    model.ep_success_buffer = deque(info["ep_success_buffer"], maxlen=window)
    for name in OBS:
        value = _get(arrays, f"model/{name}")
        if value is not None:
            setattr(model, name, value)
    if "model/_last_episode_starts" in arrays:
        model._last_episode_starts = arrays["model/_last_episode_starts"].copy()
    if "replay" in info:
        _buffer_restore(model.replay_buffer, info["replay"], arrays)  # type: ignore[attr-defined]
    vn = model.get_vec_normalize_env()
    if vn is not None:
        _vec_normalize_restore(vn, arrays)


def restore_volatile(model: BaseAlgorithm, info: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """The model's action-space generator and its action noise (``learn`` resets the noise)."""
    set_spaces_state(model.action_space, info["action_space"])
    for i, noise in enumerate(_noises(model)):
        if f"noise/{i}" in arrays:
            noise.noise_prev = arrays[f"noise/{i}"].copy()


def _buffer_capture(buffer: ReplayBuffer, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    size = buffer.buffer_size if buffer.full else buffer.pos
    for name in BUFFER:
        value = getattr(buffer, name, None)
        if isinstance(value, dict):
            _put(arrays, f"replay/{name}", {k: v[:size] for k, v in value.items()})
        elif value is not None:
            arrays[f"replay/{name}"] = value[:size]
    return {"pos": int(buffer.pos), "full": bool(buffer.full), "size": int(size)}


def _buffer_restore(buffer: ReplayBuffer, saved: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    size = saved["size"]
    if size > buffer.buffer_size:
        raise ValueError(f"replay buffer: {size} transitions saved, room for {buffer.buffer_size} here")
    for name in BUFFER:
        target = getattr(buffer, name, None)
        value = _get(arrays, f"replay/{name}")
        if value is None or target is None:
            continue
        if isinstance(target, dict):
            for key, part in value.items():
                target[key][:size] = part
        else:
            target[:size] = value
    buffer.pos, buffer.full = saved["pos"], saved["full"]


def _statistics(vn: VecNormalize) -> dict[str, Any]:
    """VecNormalize's running statistics by array prefix."""
    obs = vn.obs_rms if isinstance(vn.obs_rms, dict) else {"": vn.obs_rms}
    return {**{f"vecnormalize/obs{key and '/' + key}": rms for key, rms in obs.items()},
            "vecnormalize/ret": vn.ret_rms}  # fmt: skip


def _vec_normalize_capture(vn: VecNormalize, arrays: dict[str, np.ndarray]) -> None:
    for prefix, rms in _statistics(vn).items():
        _put(arrays, prefix, {"mean": rms.mean, "var": rms.var, "count": rms.count})
    arrays["vecnormalize/returns"] = np.asarray(vn.returns)


def _vec_normalize_restore(vn: VecNormalize, arrays: dict[str, np.ndarray]) -> None:
    for prefix, rms in _statistics(vn).items():
        if f"{prefix}/mean" in arrays:
            rms.mean = arrays[f"{prefix}/mean"].copy()
            rms.var = arrays[f"{prefix}/var"].copy()
            rms.count = float(arrays[f"{prefix}/count"])
    if "vecnormalize/returns" in arrays:
        vn.returns = arrays["vecnormalize/returns"].copy()
