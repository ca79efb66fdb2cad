"""One observation space and one action space for a curriculum whose tasks' spaces differ.

SB3 fixes one observation space and one action space per model; a curriculum's tasks need not
share them (CartPole's Box(4) and 2 actions, Acrobot's Box(6) and 3). :func:`common_spaces`
builds the spaces one NB2 model serves, and :class:`TaskAdapter` wraps each task's env into them:

* Observations become a Dict: ``obs`` (the task's observation; vectors of different sizes are
  zero-padded to the largest, with ``obs_mask`` marking the real scalars, which NB2's tokenizer
  uses to mask padding tokens out of attention), ``task_id`` (Discrete: NB2's task embedding and
  its head gates read it) and, when tasks have fewer actions than the shared space,
  ``action_mask``. A task whose observation is itself a Dict keeps its keys.
* Discrete actions share ``Discrete(max n)``; each task's invalid actions are masked in the
  policy (``action_mask``, read by NB2's actor-critic policies) and, for MaskablePPO, through
  ``action_masks()``. An invalid action that reaches the env anyway (DQN's random exploration)
  is taken modulo the task's action count.
* Continuous actions share ``Box(-1, 1, (max d,))``; each task reads its first ``d`` dimensions,
  rescaled to its bounds, and ignores the rest. Tasks whose Box spaces are all equal keep theirs.

A curriculum that mixes discrete and continuous actions is rejected: one policy head cannot
serve both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space

from nb2_agents.errors import UsageError
from nb2_agents.nn.tokenizer import ACTION_MASK_KEY, MASK_SUFFIX, TASK_KEY

OBS_KEY = "obs"
OBS_MASK_KEY = OBS_KEY + MASK_SUFFIX
RESERVED_KEYS = (TASK_KEY, ACTION_MASK_KEY)


def _describe(space: spaces.Space) -> str:
    if isinstance(space, spaces.Discrete):
        return f"Discrete({space.n})"
    if isinstance(space, spaces.Box):
        return f"Box{space.shape}"
    return type(space).__name__


def _is_vector(space: spaces.Space) -> bool:
    return isinstance(space, spaces.Box) and not is_image_space(space, check_channels=False)


@dataclass(frozen=True)
class CommonSpaces:
    """The spaces one model serves, and how each task maps into them."""

    observation_space: spaces.Dict
    action_space: spaces.Space
    task_observation_spaces: tuple[spaces.Space, ...]
    task_action_spaces: tuple[spaces.Space, ...]
    n_task_ids: int
    padded: bool
    """Vector observations padded to the largest, with ``obs_mask``."""
    action_masked: bool
    """Tasks have fewer discrete actions than the shared space; ``action_mask`` is present."""
    rescaled: bool
    """Continuous actions go through the shared ``Box(-1, 1)``."""
    memory: int | None = None
    """Past steps each env keeps (``policy_kwargs.memory``), or None; with it the model reads
    :attr:`observation_space` through a ``MemoryWindow`` (:attr:`model_observation_space`)."""

    @property
    def model_observation_space(self) -> spaces.Space:
        """The observation space of the model that serves these tasks: channels-last images
        transposed, as SB3 (or ``MemoryWindow``) hands them to it."""
        from nb2_agents.memory import memory_space
        from nb2_agents.memory.wrapper import transposed_space

        space = transposed_space(self.observation_space)
        return space if self.memory is None else memory_space(space, self.memory)

    @property
    def discrete(self) -> bool:
        return isinstance(self.action_space, spaces.Discrete)

    def action_mask(self, task: int) -> np.ndarray:
        """Valid actions of task ``task`` in the shared Discrete space."""
        assert isinstance(self.action_space, spaces.Discrete)
        n = int(self.task_action_spaces[task].n)  # type: ignore[attr-defined]
        return np.arange(int(self.action_space.n)) < n


def common_spaces(
    names: Sequence[str],
    observation_spaces: Sequence[spaces.Space],
    action_spaces: Sequence[spaces.Space],
    n_task_ids: int | None = None,
    curriculum: str = "curriculum",
) -> CommonSpaces:
    """The shared spaces for tasks ``names``; :class:`UsageError` when they cannot be shared."""
    n_task_ids = len(names) if n_task_ids is None else n_task_ids
    action_space, masked, rescaled = _common_actions(names, action_spaces, curriculum)
    obs_keys, padded = _common_observations(names, observation_spaces, curriculum)
    obs_keys[TASK_KEY] = spaces.Discrete(n_task_ids)
    if masked:
        assert isinstance(action_space, spaces.Discrete)
        obs_keys[ACTION_MASK_KEY] = spaces.MultiBinary(int(action_space.n))
    return CommonSpaces(
        spaces.Dict(obs_keys),
        action_space,
        tuple(observation_spaces),
        tuple(action_spaces),
        n_task_ids,
        padded,
        masked,
        rescaled,
    )


def _common_actions(
    names: Sequence[str], action_spaces: Sequence[spaces.Space], curriculum: str
) -> tuple[spaces.Space, bool, bool]:
    first = action_spaces[0]
    if all(space == first for space in action_spaces):
        return first, False, False
    kinds = {
        "discrete": [n for n, s in zip(names, action_spaces, strict=True) if isinstance(s, spaces.Discrete)],
        "continuous": [n for n, s in zip(names, action_spaces, strict=True) if isinstance(s, spaces.Box)],
    }
    other = [
        f"{n}: {_describe(s)}"
        for n, s in zip(names, action_spaces, strict=True)
        if not isinstance(s, (spaces.Discrete, spaces.Box))
    ]
    if kinds["discrete"] and kinds["continuous"]:
        raise UsageError(
            f"{curriculum} mixes discrete actions ({', '.join(kinds['discrete'])}) and continuous actions "
            f"({', '.join(kinds['continuous'])}); one agent needs all tasks discrete or all continuous"
        )
    if other:
        raise UsageError(
            f"{curriculum}: tasks' action spaces differ and {', '.join(other)} cannot be shared; "
            "differing action spaces must all be Discrete or all be 1-D Box"
        )
    if kinds["discrete"]:
        n = max(int(s.n) for s in action_spaces)  # type: ignore[attr-defined]
        if any(int(s.start) != 0 for s in action_spaces):  # type: ignore[attr-defined]
            raise UsageError(f"{curriculum}: Discrete action spaces must start at 0 to be shared")
        return spaces.Discrete(n), True, False
    for name, space in zip(names, action_spaces, strict=True):
        assert isinstance(space, spaces.Box)
        if len(space.shape) != 1 or not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise UsageError(
                f"{curriculum}: task {name}'s action space {space} must be a 1-D Box with finite bounds "
                "to share a padded continuous action space"
            )
    d = max(int(s.shape[0]) for s in action_spaces)  # type: ignore[index]
    return spaces.Box(-1.0, 1.0, (d,), np.float32), False, True


def _common_observations(
    names: Sequence[str], observation_spaces: Sequence[spaces.Space], curriculum: str
) -> tuple[dict[str, spaces.Space], bool]:
    first = observation_spaces[0]
    for name, space in zip(names, observation_spaces, strict=True):
        if isinstance(space, spaces.Dict) and set(space.spaces) & {*RESERVED_KEYS, OBS_MASK_KEY}:
            raise UsageError(
                f"{curriculum}: task {name}'s observation Dict uses a reserved key "
                f"({sorted(set(space.spaces) & {*RESERVED_KEYS, OBS_MASK_KEY})})"
            )
    if all(space == first for space in observation_spaces):
        if isinstance(first, spaces.Dict):
            return dict(first.spaces), False
        return {OBS_KEY: first}, False
    if all(_is_vector(space) for space in observation_spaces):
        size = max(int(np.prod(space.shape)) for space in observation_spaces)  # type: ignore[arg-type]
        box = spaces.Box(-np.inf, np.inf, (size,), np.float32)
        return {OBS_KEY: box, OBS_MASK_KEY: spaces.MultiBinary(size)}, True
    listed = ", ".join(f"{n}: {_describe(s)}" for n, s in zip(names, observation_spaces, strict=True))
    raise UsageError(
        f"{curriculum}: tasks' observation spaces differ ({listed}); NB2 can share vector Box "
        "observations of any sizes (padded and masked) or identical spaces. Resize images to one shape "
        "with a task wrapper (e.g. gymnasium.wrappers.ResizeObservation)"
    )


class TaskAdapter(gym.Wrapper):
    """Task ``task``'s env seen through the curriculum's :class:`CommonSpaces`.

    ``task_id`` is what the observation's ``task_id`` key reads (default ``task``); 0 for every
    task hides the task's identity from the agent.
    """

    def __init__(self, env: gym.Env, common: CommonSpaces, task: int, task_id: int | None = None) -> None:
        super().__init__(env)
        self.common = common
        self.task = task
        self.task_id = task if task_id is None else task_id
        self.observation_space = common.observation_space
        self.action_space = common.action_space
        obs_space = common.task_observation_spaces[task]
        self._size = int(np.prod(obs_space.shape or ())) if common.padded else 0
        width = int(np.prod(common.observation_space[OBS_KEY].shape or ())) if common.padded else 0
        self._obs_mask = (np.arange(width) < self._size).astype(np.int8)
        self._action_mask = common.action_mask(task) if common.action_masked else None
        act = common.task_action_spaces[task]
        self._n_actions = int(act.n) if isinstance(act, spaces.Discrete) else 0
        if common.rescaled:
            assert isinstance(act, spaces.Box)
            self._low, self._high = act.low.astype(np.float64), act.high.astype(np.float64)

    def observation(self, obs: Any) -> dict[str, Any]:
        out: dict[str, Any]
        if self.common.padded:
            vec = np.zeros(self._obs_mask.shape, dtype=np.float32)
            vec[: self._size] = np.asarray(obs, dtype=np.float32).reshape(-1)
            out = {OBS_KEY: vec, OBS_MASK_KEY: self._obs_mask.copy()}
        elif isinstance(obs, dict):
            out = dict(obs)
        else:
            out = {OBS_KEY: obs}
        out[TASK_KEY] = self.task_id
        if self._action_mask is not None:
            out[ACTION_MASK_KEY] = self._action_mask.astype(np.int8)
        return out

    def action(self, action: Any) -> Any:
        if self._n_actions and self.common.action_masked:
            return int(action) % self._n_actions
        if self.common.rescaled:
            a = np.clip(np.asarray(action, dtype=np.float64)[: self._low.shape[0]], -1.0, 1.0)
            return (self._low + (a + 1.0) * 0.5 * (self._high - self._low)).astype(np.float32)
        return action

    def action_masks(self) -> np.ndarray:
        """Valid actions now, for sb3-contrib's MaskablePPO."""
        if self._action_mask is not None:
            return self._action_mask.copy()
        n = self.common.action_space.n if isinstance(self.common.action_space, spaces.Discrete) else 0
        return np.ones(int(n), dtype=bool)

    def reset(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return self.observation(obs), info

    def step(self, action: Any) -> tuple[dict[str, Any], Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(self.action(action))
        return self.observation(obs), reward, terminated, truncated, info
