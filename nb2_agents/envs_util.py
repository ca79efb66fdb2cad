"""Creating environments for NB2: id checks with suggestions, MiniGrid wrappers, vec envs.

MiniGrid: the observation is reduced to the agent's 7x7 egocentric grid of cells
(``minigrid.wrappers.ImgObsWrapper``; each cell holds object, colour and state ids), which
NB2 tokenizes as one token per cell. With ``env_kwargs={"minigrid_obs": "rgb"}`` it is the same
view as pixels instead (``RGBImgPartialObsWrapper``): 7 x ``minigrid_tile`` pixels a side (8 by
default: 56x56x3). These two keys are nb2's, not the env's, so ``gym.make`` never sees them. The
mission string and the direction are dropped: for the single-task MiniGrid envs used here the
mission is constant. Episodes that end by reaching the goal (terminated with a positive reward)
report ``info["is_success"]``.
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from stable_baselines3.common.vec_env import VecEnv, VecTransposeImage

from nb2_agents.errors import UsageError
from nb2_agents.sb3.algos import ALGOS

EXTRAS: dict[str, tuple[str, str]] = {
    "MiniGrid-": ("minigrid", "pip install 'nb2-agents[minigrid]'"),
    "BabyAI-": ("minigrid", "pip install 'nb2-agents[minigrid]'"),
    "ALE/": ("ale_py", "pip install 'gymnasium[atari]'"),
    "popgym-": ("popgym", "pip install 'nb2-agents[popgym]'"),
}
"""Env-id prefixes registered by another package: (module to import, how to install it)."""

ACTION_SPACES: dict[str, tuple[type[spaces.Space], ...]] = {
    name: algo.action_spaces for name, algo in ALGOS.items()
}
"""Which action spaces each algorithm accepts (SB3's own support table, in ``sb3/algos.py``)."""


MINIGRID_OBS = ("cells", "rgb")
"""Values of the ``minigrid_obs`` env kwarg: the 7x7 view as cell ids, or as RGB pixels."""
NB2_ENV_KEYS = ("minigrid_obs", "minigrid_tile")
"""``env_kwargs`` keys nb2's wrappers read; they are not passed to ``gym.make``."""


def _extra_for(env_id: str) -> tuple[str, str] | None:
    for prefix, extra in EXTRAS.items():
        if env_id.lower().startswith(prefix.lower()):
            return extra
    return None


def _import_registering(module: str, what: str) -> None:
    """Import a module of the user's that registers envs; ``what`` opens the error if it cannot."""
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise UsageError(f"{what} ({err}); install it or put it on PYTHONPATH") from None


GYM_PACKAGES_VAR = "NB2_GYM_PACKAGES"
"""Where ``--gym-packages`` is kept for the worker processes a job spawns, which import it too."""


def import_gym_packages(modules: Sequence[str] | None = None) -> None:
    """Import the modules that register a user's envs (``--gym-packages``, as RL Zoo's), and keep
    them in :data:`GYM_PACKAGES_VAR` for spawned workers; ``None``: the ones kept there."""
    if modules is None:
        modules = [m for m in os.environ.get(GYM_PACKAGES_VAR, "").split(",") if m]
    elif modules:
        os.environ[GYM_PACKAGES_VAR] = ",".join(modules)
    for module in modules:
        _import_registering(module, f"--gym-packages {module}: cannot import it")


def check_env_id(env_id: str) -> None:
    """Import the package that registers ``env_id`` if needed; unknown ids get suggestions.

    ``module:EnvId`` (Gymnasium's syntax for an env that a package of the user's registers when
    imported) imports ``module`` first; the id is kept whole, so every process that makes the env
    (and ``nb2 evaluate`` later, from the run's config) imports it again."""
    if ":" in env_id:
        module, _, env_id = env_id.partition(":")
        _import_registering(
            module,
            f"env id {module}:{env_id}: cannot import {module!r}, the module that should register {env_id!r}",
        )
    extra = _extra_for(env_id)
    if extra is not None and env_id not in gym.registry:
        module, install = extra
        try:
            importlib.import_module(module)
        except ImportError:
            raise UsageError(
                f"unknown env id {env_id!r}: it needs the {module} package, not installed; {install}"
            ) from None
    if env_id in gym.registry:
        return
    ids = list(gym.registry)
    close = difflib.get_close_matches(env_id, ids, n=4, cutoff=0.6)
    if not close:  # compare case-insensitively and without the version too
        lowered = {i.lower(): i for i in ids}
        close = [
            lowered[c] for c in difflib.get_close_matches(env_id.lower(), list(lowered), n=4, cutoff=0.5)
        ]
    hint = f"did you mean {', '.join(close)}?" if close else "no close match among the registered ids;"
    extras = sorted({f"{p}* ({how})" for p, (_, how) in EXTRAS.items()})
    raise UsageError(
        f"unknown env id {env_id!r}; {hint} list them with "
        f"`python -c 'import gymnasium; gymnasium.pprint_registry()'`; other families: {', '.join(extras)}"
    )


MINIGRID_PREFIXES = ("MiniGrid-", "BabyAI-")


def is_minigrid_id(env_id: str) -> bool:
    """Whether a Gymnasium id names a MiniGrid (or BabyAI) env, without making it."""
    return env_id.startswith(MINIGRID_PREFIXES)


def is_minigrid(env: gym.Env) -> bool:
    try:
        from minigrid.minigrid_env import MiniGridEnv
    except ImportError:
        return False
    return isinstance(env.unwrapped, MiniGridEnv)


class SuccessInfo(gym.Wrapper):
    """Adds ``info["is_success"]`` at the end of a MiniGrid episode: the goal was reached."""

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            info = {**info, "is_success": bool(terminated and float(reward) > 0)}
        return obs, reward, terminated, truncated, info


def _all_actions_valid(env: gym.Env) -> np.ndarray:
    space = env.action_space
    if isinstance(space, spaces.Discrete):
        return np.ones(int(space.n), dtype=bool)
    if isinstance(space, spaces.MultiDiscrete):
        return np.ones(int(np.sum(space.nvec)), dtype=bool)
    return np.ones(2 * int(np.prod(space.shape or ())), dtype=bool)  # MultiBinary


@dataclass(frozen=True)
class EnvSpec:
    """How to build one environment: its id, gym.make kwargs and what the algorithm needs."""

    env_id: str
    env_kwargs: dict[str, Any]
    algo: str = "ppo"

    @property
    def gym_kwargs(self) -> dict[str, Any]:
        """``env_kwargs`` without nb2's own keys: what ``gym.make`` gets."""
        return {k: v for k, v in self.env_kwargs.items() if k not in NB2_ENV_KEYS}

    def minigrid_view(self) -> tuple[str, int]:
        """(``minigrid_obs``, ``minigrid_tile``) from ``env_kwargs``, checked."""
        obs = self.env_kwargs.get("minigrid_obs", "cells")
        tile = self.env_kwargs.get("minigrid_tile", 8)
        if obs not in MINIGRID_OBS:
            raise UsageError(f"env_kwargs['minigrid_obs']={obs!r}: expected one of {list(MINIGRID_OBS)}")
        if not isinstance(tile, int) or isinstance(tile, bool) or tile < 1:
            raise UsageError(f"env_kwargs['minigrid_tile']={tile!r}: expected a positive integer (pixels)")
        if "minigrid_tile" in self.env_kwargs and obs != "rgb":
            raise UsageError("env_kwargs['minigrid_tile'] applies with env_kwargs['minigrid_obs']='rgb' only")
        return obs, tile

    def wrap(self, env: gym.Env) -> gym.Env:
        """NB2's wrappers, applied outside SB3's Monitor (so Monitor logs the env's own rewards)."""
        if is_minigrid(env):
            from minigrid.wrappers import ImgObsWrapper, RGBImgPartialObsWrapper

            obs, tile = self.minigrid_view()
            if obs == "rgb":
                env = RGBImgPartialObsWrapper(env, tile_size=tile)
            env = SuccessInfo(ImgObsWrapper(env))
        elif any(key in self.env_kwargs for key in NB2_ENV_KEYS):
            keys = [key for key in NB2_ENV_KEYS if key in self.env_kwargs]
            raise UsageError(f"env_kwargs {keys} apply to MiniGrid envs only, not {self.env_id}")
        if self.algo == "maskable_ppo" and not hasattr(env.unwrapped, "action_masks"):
            from sb3_contrib.common.wrappers import ActionMasker

            env = ActionMasker(env, _all_actions_valid)
        return env

    def make(self, render_mode: str | None = None) -> gym.Env:
        """One wrapped env (no Monitor): for checks and recording."""
        kwargs = self.gym_kwargs
        if render_mode is not None:
            kwargs["render_mode"] = render_mode
        return self.wrap(gym.make(self.env_id, **kwargs))

    def make_vec(
        self,
        n_envs: int,
        seed: int,
        monitor_dir: str | None = None,
        make: Callable[..., gym.Env] | None = None,
        record: bool = False,
        append: bool = False,
    ) -> VecEnv:
        """``make_vec_env`` with Monitor, NB2's wrappers and, for HWC images, VecTransposeImage.

        The transpose is what SB3 adds to a training env by itself; doing it here keeps the
        evaluation env wrapped the same way. ``record``: each env's episode is recorded for
        resumable checkpoints (:class:`~nb2_agents.checkpoint.EpisodeRecorder`, outermost);
        ``append``: Monitor CSVs are continued, not rewritten (a resumed run).
        """
        env_id: str | Callable[..., gym.Env] = make if make is not None else self.env_id
        wrap = self.wrap
        if record:
            from nb2_agents.checkpoint import EpisodeRecorder

            def wrap(env: gym.Env) -> gym.Env:
                return EpisodeRecorder(self.wrap(env))

        vec = make_vec_env(
            env_id,
            n_envs=n_envs,
            seed=seed,
            monitor_dir=monitor_dir,
            env_kwargs=None if make is not None else self.gym_kwargs,
            wrapper_class=wrap,
            monitor_kwargs={"override_existing": not append},
        )
        space = vec.observation_space
        if is_image_space(space) and not is_image_space_channels_first(space):  # type: ignore[arg-type]
            vec = VecTransposeImage(vec)
        return vec


def probe(spec: EnvSpec) -> tuple[spaces.Space, spaces.Space, bool]:
    """Build one env to read its spaces: (observation space, action space, is MiniGrid)."""
    try:
        env = spec.make()
    except gym.error.DependencyNotInstalled as err:
        raise UsageError(f"{spec.env_id} needs a package that is not installed: {err}") from err
    except TypeError as err:
        raise UsageError(f"{spec.env_id} rejected --env-kwargs {spec.env_kwargs}: {err}") from err
    try:
        return env.observation_space, env.action_space, is_minigrid(env)
    finally:
        env.close()


def check_algo(algo: str, env_id: str, action_space: spaces.Space) -> None:
    """Raise :class:`UsageError` when ``algo`` cannot act in ``action_space``."""
    if isinstance(action_space, ACTION_SPACES[algo]):
        return
    fits = [name for name, ok in ACTION_SPACES.items() if isinstance(action_space, ok)]
    pairs = "; ".join(f"{name}: {'/'.join(s.__name__ for s in ok)}" for name, ok in ACTION_SPACES.items())
    raise UsageError(
        f"--algo {algo} cannot act in {env_id}'s {type(action_space).__name__} action space; "
        f"algorithms for it: {', '.join(fits) or 'none'} (valid pairs: {pairs})"
    )
