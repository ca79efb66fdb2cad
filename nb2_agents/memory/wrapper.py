"""``MemoryWindow``: a VecEnv wrapper that puts each env's last K observations in its observation."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecTransposeImage
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from nb2_agents.memory.layout import STEP_KEY, MemoryLayout, check_k, memory_space
from nb2_agents.memory.window import ObsWindow


def transposed_space(space: spaces.Space) -> spaces.Space:
    """``space`` as a model SB3 builds on it holds it: channels-last images transposed, alone or
    as a Dict key (``VecTransposeImage``)."""
    if isinstance(space, spaces.Dict):
        return spaces.Dict({key: transposed_space(sub) for key, sub in space.spaces.items()})
    if is_image_space(space) and not is_image_space_channels_first(space):  # type: ignore[arg-type]
        return VecTransposeImage.transpose_space(space)  # type: ignore[arg-type]
    return space


def needs_transpose(space: spaces.Space) -> bool:
    """Whether SB3 would wrap an env of ``space`` in ``VecTransposeImage``: a channels-last image,
    alone or as a Dict key."""
    return transposed_space(space) != space


class MemoryWindow(VecEnvWrapper):
    """Each env's observation with its last ``k`` steps of the current episode beside it.

    The observation becomes a Dict: the step (its own keys, or ``obs``), ``memory:<key>`` with
    the last ``k`` values of each key (most recent first) and ``memory:valid`` marking which of
    them belong to the episode (``memory/layout.py``). An env's memory is emptied when its
    episode ends, so each env's memory follows its own episode; ``terminal_observation`` in
    ``infos`` carries the memory of the episode it ends (SB3 bootstraps truncated episodes
    from it). Channels-last images are transposed first, as SB3 would (``VecTransposeImage``),
    so the step and its past share one layout.

    >>> from stable_baselines3.common.env_util import make_vec_env
    >>> venv = MemoryWindow(make_vec_env("CartPole-v1", n_envs=2), k=4)
    >>> sorted(venv.observation_space.spaces)
    ['memory:obs', 'memory:valid', 'obs']
    """

    def __init__(self, venv: VecEnv, k: int) -> None:
        k = check_k(k, "MemoryWindow k")
        if needs_transpose(venv.observation_space):
            venv = VecTransposeImage(venv)
        space = memory_space(venv.observation_space, k)
        super().__init__(venv, observation_space=space)
        layout = MemoryLayout.of(space)
        assert layout is not None
        self.layout = layout
        self.k = k
        self.window = ObsWindow(layout, venv.num_envs)
        self._last: Any = None

    def reset(self) -> VecEnvObs:
        obs = self.venv.reset()
        self.window.clear(np.ones(self.num_envs, dtype=bool))
        self._last = copy.deepcopy(obs)
        return self.window.compose(obs)

    def step_wait(self) -> VecEnvStepReturn:
        obs, rewards, dones, infos = self.venv.step_wait()
        self.window.push(self._last)  # the step every env just acted on joins its memory
        for i, done in enumerate(dones):
            terminal = infos[i].get("terminal_observation") if done else None
            if terminal is not None:  # the last observation of the episode, with that episode's memory
                infos[i]["terminal_observation"] = self.window.compose_one(terminal, i)
        self.window.clear(np.asarray(dones, dtype=bool))
        self._last = copy.deepcopy(obs)
        return self.window.compose(obs), rewards, dones, infos

    def get_state(self) -> dict[str, np.ndarray]:
        """The memory and the last observation, as arrays (checkpoints: exact resume)."""
        out = {f"past/{key}": past.copy() for key, past in self.window.past.items()}
        out["valid"] = self.window.valid.copy()
        if self._last is not None:
            out.update(
                {f"last/{key}": np.asarray(v).copy() for key, v in self.window.parts(self._last).items()}
            )
        return out

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Put back what :meth:`get_state` returned; an empty ``state`` (a checkpoint saved without
        memory) leaves the memory as it is."""
        if not state:
            return
        for key, past in self.window.past.items():
            past[:] = state[f"past/{key}"]
        self.window.valid[:] = state["valid"]
        last = {key[len("last/") :]: value for key, value in state.items() if key.startswith("last/")}
        if last:
            self._last = last if self.layout.is_dict else last[STEP_KEY]

    def __repr__(self) -> str:
        return f"MemoryWindow({self.venv!r}, k={self.k})"


def with_memory_of(venv: VecEnv, space: spaces.Space) -> VecEnv:
    """``venv`` wrapped to carry the memory that a model of observation space ``space`` reads
    (unchanged when ``space`` carries none, or ``venv`` already does)."""
    layout = MemoryLayout.of(space)
    if layout is None or MemoryLayout.of(venv.observation_space) is not None:
        return venv
    return MemoryWindow(venv, layout.k)
