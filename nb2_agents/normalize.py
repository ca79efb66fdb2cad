"""Observation and reward normalisation (RL Zoo's ``normalize``), with statistics kept as data.

A hyperparameter entry (or a curriculum task) may say ``normalize: true`` (observations and
rewards, as RL Zoo's ``normalize: true``) or give a mapping of :class:`NormalizeConfig`'s
fields, e.g. ``normalize: {norm_obs: true, norm_reward: false}``.

* ``nb2 train`` wraps its envs in SB3's ``VecNormalize`` (the eval env with ``training=False``
  and raw rewards; SB3's ``EvalCallback`` copies the statistics over before each evaluation).
* A curriculum gives each task its own :class:`RunningStats`, shared by all the task's env
  copies through :class:`NormalizeWrapper` (inside the task adapter, on the task's own
  observation). Each task's statistics are updated while it trains and frozen after it; the
  evaluation and probe envs read them without updating them.

Statistics are saved inside the model zip as ``normalize.json`` (plain numbers, no pickle:
RL Zoo's ``vecnormalize.pkl`` would run code when loaded), one entry per env or task, so a
checkpoint or a final model carries what its policy needs. :func:`nb2_agents.evaluate` and
``nb2 export`` read them back.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from nb2_agents.errors import UsageError

NORMALIZE_MEMBER = "normalize.json"
"""The member of a model zip that holds the normalisation statistics."""
FORMAT = 1


@dataclass(frozen=True)
class NormalizeConfig:
    """SB3 ``VecNormalize``'s settings (its defaults)."""

    norm_obs: bool = True
    norm_reward: bool = True
    clip_obs: float = 10.0
    clip_reward: float = 10.0
    epsilon: float = 1e-8

    def __post_init__(self) -> None:
        for name in ("clip_obs", "clip_reward", "epsilon"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise UsageError(f"normalize.{name}: expected a number > 0, got {value!r}")
            object.__setattr__(self, name, float(value))
        for name in ("norm_obs", "norm_reward"):
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"normalize.{name}: expected true or false, got {getattr(self, name)!r}")


def parse_normalize(value: Any, where: str) -> NormalizeConfig | None:
    """``true`` / ``false`` / a mapping of :class:`NormalizeConfig` fields → a config or None."""
    if value is None or value is False:
        return None
    if value is True:
        return NormalizeConfig()
    keys = [f.name for f in fields(NormalizeConfig)]
    if not isinstance(value, dict):
        raise UsageError(
            f"{where}: expected true, false or a mapping with keys {keys} "
            f"(e.g. {{norm_obs: true, norm_reward: false}}), got {value!r}"
        )
    unknown = sorted(set(value) - set(keys))
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {unknown}; valid keys: {keys}")
    try:
        return NormalizeConfig(**value)
    except UsageError as err:
        raise UsageError(f"{where}: {err}") from err


def check_space(space: spaces.Space, where: str) -> None:
    """Normalisation is for vector observations: a Box that is not an image."""
    if not isinstance(space, spaces.Box) or is_image_space(space, check_channels=False):
        raise UsageError(
            f"{where}: normalize needs vector observations (a Box that is not an image), got {space}; "
            "images are scaled by 255 already. Remove normalize, or set norm_obs: false"
        )


# --------------------------------------------------------------------------- statistics


def _rms_to_dict(rms: RunningMeanStd) -> dict[str, Any]:
    return {"mean": np.asarray(rms.mean).tolist(), "var": np.asarray(rms.var).tolist(), "count": rms.count}


def _rms_from_dict(data: dict[str, Any], shape: tuple[int, ...], where: str) -> RunningMeanStd:
    try:
        mean = np.asarray(data["mean"], dtype=np.float64).reshape(shape)
        var = np.asarray(data["var"], dtype=np.float64).reshape(shape)
        count = float(data["count"])
    except (KeyError, TypeError, ValueError) as err:
        raise UsageError(f"{where}: expected mean and var of shape {shape} and a count ({err})") from err
    if not (np.all(np.isfinite(mean)) and np.all(var >= 0) and math.isfinite(count) and count > 0):
        raise UsageError(f"{where}: mean must be finite, var >= 0 and count > 0")
    rms = RunningMeanStd(shape=shape)
    rms.mean, rms.var, rms.count = mean, var, count
    return rms


class RunningStats:
    """One env's (or task's) running observation mean / variance and discounted-return variance."""

    def __init__(self, config: NormalizeConfig, shape: tuple[int, ...], gamma: float) -> None:
        self.config, self.shape, self.gamma = config, tuple(shape), float(gamma)
        self.obs_rms = RunningMeanStd(shape=self.shape)
        self.ret_rms = RunningMeanStd(shape=())

    def normalize_obs(self, obs: np.ndarray) -> np.ndarray:
        if not self.config.norm_obs:
            return obs
        scale = np.sqrt(self.obs_rms.var + self.config.epsilon)
        clip = self.config.clip_obs
        return np.clip((obs - self.obs_rms.mean) / scale, -clip, clip).astype(np.float32)

    def normalize_tensor(self, obs: torch.Tensor) -> torch.Tensor:
        """:meth:`normalize_obs` for a batch of observations in torch (B, *shape)."""
        if not self.config.norm_obs:
            return obs
        mean = torch.as_tensor(self.obs_rms.mean, dtype=torch.float32, device=obs.device)
        scale = torch.as_tensor(np.sqrt(self.obs_rms.var + self.config.epsilon), dtype=torch.float32,
                                device=obs.device)  # fmt: skip
        return torch.clamp((obs.float() - mean) / scale, -self.config.clip_obs, self.config.clip_obs)

    def normalize_reward(self, reward: float) -> float:
        if not self.config.norm_reward:
            return reward
        clip = self.config.clip_reward
        return float(np.clip(reward / np.sqrt(self.ret_rms.var + self.config.epsilon), -clip, clip))

    def to_dict(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "gamma": self.gamma, "shape": list(self.shape),
                "obs": _rms_to_dict(self.obs_rms), "ret": _rms_to_dict(self.ret_rms)}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Any, where: str) -> RunningStats:
        if not isinstance(data, dict):
            raise UsageError(f"{where}: expected a mapping of statistics, got {type(data).__name__}")
        try:
            config = parse_normalize(data["config"], f"{where}.config") or NormalizeConfig()
            shape = tuple(int(n) for n in data["shape"])
            stats = cls(config, shape, float(data["gamma"]))
        except (KeyError, TypeError, ValueError) as err:
            raise UsageError(f"{where}: missing or malformed config, shape or gamma ({err})") from err
        stats.obs_rms = _rms_from_dict(data.get("obs") or {}, shape, f"{where}.obs")
        stats.ret_rms = _rms_from_dict(data.get("ret") or {}, (), f"{where}.ret")
        return stats

    @classmethod
    def of_vec_normalize(cls, vn: VecNormalize) -> RunningStats:
        config = NormalizeConfig(vn.norm_obs, vn.norm_reward, vn.clip_obs, vn.clip_reward, vn.epsilon)
        assert isinstance(vn.obs_rms, RunningMeanStd), "nb2 normalises Box observations only"
        stats = cls(config, vn.obs_rms.mean.shape, vn.gamma)
        stats.obs_rms, stats.ret_rms = vn.obs_rms.copy(), vn.ret_rms.copy()
        return stats

    def into_vec_normalize(self, vn: VecNormalize) -> None:
        vn.obs_rms = self.obs_rms.copy()  # type: ignore[assignment]  # Dict spaces: a dict of them
        vn.ret_rms = self.ret_rms.copy()


class NormalizeWrapper(gym.Wrapper):
    """Normalises one env copy's observations (and, while training, rewards) with shared
    :class:`RunningStats`; ``training=True`` also updates them, as SB3's ``VecNormalize`` does."""

    def __init__(self, env: gym.Env, stats: RunningStats, training: bool) -> None:
        super().__init__(env)
        check_space(env.observation_space, f"normalize ({env.spec.id if env.spec else env})")
        self.stats, self.training = stats, training
        if stats.config.norm_obs:
            self.observation_space = spaces.Box(-np.inf, np.inf, env.observation_space.shape, np.float32)
        self._return = 0.0
        self.raw_obs: Any = None
        """The env's last observation before normalising: what a resumable checkpoint's episode
        fingerprint reads (the normalised one depends on statistics that move on)."""

    def _obs(self, obs: Any) -> Any:
        self.raw_obs = obs
        if not self.stats.config.norm_obs:
            return obs
        raw = np.asarray(obs, dtype=np.float64)
        if self.training:
            self.stats.obs_rms.update(raw[None])
        return self.stats.normalize_obs(raw)

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._return = 0.0
        return self._obs(obs), info

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.training:
            self._return = self._return * self.stats.gamma + float(reward)
            self.stats.ret_rms.update(np.array([self._return]))
            reward = self.stats.normalize_reward(float(reward))
        if terminated or truncated:
            self._return = 0.0
        return self._obs(obs), reward, terminated, truncated, info


# --------------------------------------------------------------------------- SB3's VecNormalize


def vec_normalize(vec: VecEnv, config: NormalizeConfig, gamma: float, training: bool = True) -> VecNormalize:
    """SB3's ``VecNormalize`` with ``config``; for evaluation (``training=False``) rewards stay raw."""
    check_space(vec.observation_space, "normalize")
    return VecNormalize(
        vec,
        training=training,
        norm_obs=config.norm_obs,
        norm_reward=config.norm_reward and training,
        clip_obs=config.clip_obs,
        clip_reward=config.clip_reward,
        gamma=gamma,
        epsilon=config.epsilon,
    )


def evaluation_env(vec: VecEnv, stats: RunningStats) -> VecNormalize:
    """``vec`` normalised with saved statistics that it never updates."""
    vn = vec_normalize(vec, stats.config, stats.gamma, training=False)
    stats.into_vec_normalize(vn)
    return vn


# --------------------------------------------------------------------------- in model files


def model_stats(model: BaseAlgorithm, env_id: str) -> dict[str, RunningStats]:
    """The statistics of ``model``'s own ``VecNormalize`` env, keyed by ``env_id`` ({} if none)."""
    vn = model.get_vec_normalize_env()
    return {env_id: RunningStats.of_vec_normalize(vn)} if vn is not None else {}


def add_to_zip(archive: zipfile.ZipFile, stats: dict[str, RunningStats]) -> None:
    data = {"format": FORMAT, "envs": {name: s.to_dict() for name, s in stats.items()}}
    archive.writestr(NORMALIZE_MEMBER, json.dumps(data))


def read_stats(path: str | Path) -> dict[str, RunningStats]:
    """A model zip's normalisation statistics by env id (or task name); {} if it has none."""
    with zipfile.ZipFile(path) as archive:
        if NORMALIZE_MEMBER not in archive.namelist():
            return {}
        raw = archive.read(NORMALIZE_MEMBER)
    where = f"{path} [{NORMALIZE_MEMBER}]"
    try:
        data = json.loads(raw)
    except ValueError as err:
        raise UsageError(f"{where}: not valid JSON ({err})") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("envs"), dict):
        raise UsageError(f"{where}: expected {{'format': {FORMAT}, 'envs': {{name: statistics}}}}")
    return {str(k): RunningStats.from_dict(v, f"{where}.envs.{k}") for k, v in data["envs"].items()}


def stats_for(stats: dict[str, RunningStats], env_id: str, path: str | Path) -> RunningStats | None:
    """The statistics for ``env_id``; a model normalised for other envs only is an error."""
    if not stats:
        return None
    if env_id not in stats:
        raise UsageError(
            f"{path} was trained with normalised observations for {sorted(stats)}, not {env_id!r}: "
            "its policy needs their statistics. Evaluate it on one of those envs"
        )
    return stats[env_id]
