"""Toy tasks for retention tests: "say which bit you see", its mirror image, and "always say 0".

``nb2test/Match-v0``: the observation is the one-hot code of a random bit, Box(0, 1, (2,));
the action (Discrete(2)) earns 1 when it equals the bit. ``nb2test/MatchMirrored-v0`` earns 1
when it equals ``1 - bit``, ``nb2test/Hold-v0`` when it is 0, whatever the bit. Episodes are
truncated after 10 steps: a random policy returns 5, a perfect one 10. The tasks look the same;
Match and MatchMirrored want opposite actions, so an agent that is not told the task id cannot
keep both; NB2 with task ids can.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

MATCH_ID = "nb2test/Match-v0"
MIRRORED_ID = "nb2test/MatchMirrored-v0"
HOLD_ID = "nb2test/Hold-v0"
EPISODE_STEPS = 10


class MatchEnv(gym.Env[np.ndarray, int]):
    """Reward 1 when the action names the observed bit (its complement when ``mirrored``, 0 when
    ``hold``)."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}

    def __init__(self, mirrored: bool = False, hold: bool = False) -> None:
        self.mirrored, self.hold = mirrored, hold
        self.observation_space = spaces.Box(0.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.bit = 0
        self.t = 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(2, np.float32)
        obs[self.bit] = 1.0
        return obs

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        self.bit = int(self.np_random.integers(2))
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        target = 0 if self.hold else 1 - self.bit if self.mirrored else self.bit
        reward = float(int(action) == target)
        self.t += 1
        self.bit = int(self.np_random.integers(2))
        return self._obs(), reward, False, self.t >= EPISODE_STEPS, {}


def register() -> None:
    """Register both ids once (importing this module twice must not warn or fail)."""
    rules = ((MATCH_ID, {}), (MIRRORED_ID, {"mirrored": True}), (HOLD_ID, {"hold": True}))
    for env_id, kwargs in rules:
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=MatchEnv, kwargs=kwargs)


register()
