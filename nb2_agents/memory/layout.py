"""Where memory over time lives in an observation: the last K steps of each env, as Dict keys.

SB3's on-policy loop hands the policy nothing but observations, at rollout and at update alike,
so each env's recent past travels inside its observation (as ``VecFrameStack``'s frames do):

* ``memory:<key>``: the last K values of observation key ``key`` (``obs`` for an observation
  that is not a Dict), most recent first: (K, *shape), Discrete ids as integers;
* ``memory:valid``: (K,) 1 where that past step belongs to the current episode, 0 before it.

The update then sees exactly the memory the rollout saw (the PPO ratio stays exact), and the
network recomputes the past steps' summaries from it with the current weights.
:class:`MemoryLayout` reads these keys back from a space; :func:`memory_space` writes them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

from nb2_agents.nn.tokenizer import ACTION_MASK_KEY

PREFIX = "memory:"
VALID_KEY = PREFIX + "valid"
STEP_KEY = "obs"
"""The key a non-Dict observation takes beside its memory."""
MEMORY_ALGOS = ("ppo", "a2c", "maskable_ppo")
"""The algorithms that carry memory through their rollouts (on-policy: the window is part of
each stored observation)."""


def check_k(k: object, what: str = "memory") -> int:
    """``k`` as the number of past steps kept, or ``ValueError`` naming ``what``."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{what} must be a positive integer (past steps each env keeps), got {k!r}")
    return int(k)


def past_space(space: spaces.Space, k: int) -> spaces.Box:
    """The space of K past values of one observation key of ``space``."""
    if isinstance(space, spaces.Box):
        low = np.broadcast_to(space.low, (k, *space.shape))
        high = np.broadcast_to(space.high, (k, *space.shape))
        return spaces.Box(low, high, dtype=space.dtype)  # type: ignore[arg-type]
    if isinstance(space, spaces.Discrete):
        return spaces.Box(int(space.start), int(space.start + space.n - 1), (k,), np.int64)
    if isinstance(space, spaces.MultiDiscrete):
        high = np.broadcast_to(space.start + space.nvec - 1, (k, *space.nvec.shape))
        low = np.broadcast_to(space.start, (k, *space.nvec.shape))
        return spaces.Box(low, high, dtype=np.int64)
    if isinstance(space, spaces.MultiBinary):
        shape = (space.n,) if isinstance(space.n, int) else tuple(space.n)
        return spaces.Box(0, 1, (k, *shape), np.int8)
    raise TypeError(
        f"memory over time cannot keep a {type(space).__name__} observation; it keeps Box, "
        "Discrete, MultiDiscrete and MultiBinary ones, and flat Dicts of these"
    )


def step_items(space: spaces.Space) -> dict[str, spaces.Space]:
    """One step's observation as named parts: a Dict's keys, or ``{"obs": space}``."""
    if isinstance(space, spaces.Dict):
        clash = [key for key in space.spaces if str(key).startswith(PREFIX)]
        if clash:
            raise ValueError(f"observation keys {clash} already hold memory: the env is wrapped twice")
        return {str(key): sub for key, sub in space.spaces.items()}
    return {STEP_KEY: space}


def memory_space(space: spaces.Space, k: int) -> spaces.Dict:
    """``space`` with the last ``k`` steps of each part beside it (the module doc)."""
    k = check_k(k)
    items = step_items(space)
    past = {PREFIX + key: past_space(sub, k) for key, sub in items.items() if key != ACTION_MASK_KEY}
    valid = spaces.Box(0.0, 1.0, (k,), np.float32)
    return spaces.Dict({**items, **past, VALID_KEY: valid})


@dataclass(frozen=True)
class MemoryLayout:
    """How a memory-carrying observation space (:func:`memory_space`) splits into one step and its past."""

    k: int
    step_space: spaces.Space
    """One step's observation space (a Dict, or the single part of a non-Dict observation)."""
    step_keys: tuple[str, ...]
    """The Dict keys of one step (``("obs",)`` for a non-Dict observation)."""
    past_keys: tuple[str, ...]
    """The step keys whose past is kept (every one but ``action_mask``)."""

    @property
    def is_dict(self) -> bool:
        return isinstance(self.step_space, spaces.Dict)

    def step_part(self, key: str) -> spaces.Space:
        return self.step_space[key] if isinstance(self.step_space, spaces.Dict) else self.step_space

    @classmethod
    def of(cls, space: spaces.Space) -> MemoryLayout | None:
        """The layout of ``space``; None when it carries no memory."""
        if not isinstance(space, spaces.Dict) or VALID_KEY not in space.spaces:
            return None
        k = int(space[VALID_KEY].shape[0])  # type: ignore[index]
        step = {key: sub for key, sub in space.spaces.items() if not key.startswith(PREFIX)}
        past = tuple(
            key[len(PREFIX) :] for key in space.spaces if key.startswith(PREFIX) and key != VALID_KEY
        )
        if set(step) == {STEP_KEY}:
            return cls(k, step[STEP_KEY], (STEP_KEY,), past)
        return cls(k, spaces.Dict(step), tuple(step), past)

    def carries(self, obs: object) -> bool:
        """Whether an observation already holds its memory (a Dict with the valid key)."""
        return isinstance(obs, dict) and VALID_KEY in obs


def resolve_memory(policy: str, memory: object, space: spaces.Space) -> int | None:
    """``policy_kwargs['memory']`` checked against the observation space: the K it keeps, or None.

    A memory-carrying space (:class:`~nb2_agents.memory.MemoryWindow`) sets K by itself; a
    ``memory`` without one is an error naming the wrapper.
    """
    layout = MemoryLayout.of(space)
    if memory is None:
        return None if layout is None else layout.k
    k = check_k(memory, f"{policy}: policy_kwargs['memory']")
    if layout is None:
        raise ValueError(
            f"{policy}: policy_kwargs['memory']={k} needs each env's last {k} observations in its "
            f"observation: wrap the VecEnv with nb2_agents.memory.MemoryWindow(venv, {k}) "
            "(nb2 train and nb2 curriculum wrap it themselves)"
        )
    if layout.k != k:
        raise ValueError(
            f"{policy}: policy_kwargs['memory']={k} but the env's MemoryWindow keeps {layout.k} steps; "
            "give both the same K"
        )
    return k


def reject_memory(algo: str, memory: object, space: spaces.Space) -> None:
    """Raise for memory over time under an algorithm that cannot carry it."""
    if memory is None and MemoryLayout.of(space) is None:
        return
    given = f"policy_kwargs['memory']={memory!r}" if memory is not None else "a MemoryWindow env"
    raise ValueError(
        f"{given}: {algo} cannot carry memory over time (its replay samples single steps); "
        f"the algorithms that can: {', '.join(MEMORY_ALGOS)}"
    )
