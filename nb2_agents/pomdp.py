"""Partially observable tasks for memory over time, registered as Gymnasium ids in ``nb2``.

- ``nb2/CartPoleNoVel-v1``: CartPole-v1 with the velocities masked out: the observation is the
  cart position and the pole angle only (RL Zoo's ``CartPoleNoVel-v1``, which RL Zoo uses to test
  ``RecurrentPPO``). A policy must recover both velocities from its memory of past steps; the
  same limits as CartPole-v1 (500 steps, threshold 475).

:func:`register_pomdp` runs when this module is imported (and when ``nb2_agents`` is).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

CARTPOLE_NO_VEL = "nb2/CartPoleNoVel-v1"
KEPT = np.array([0, 2])
"""CartPole's observation indices that stay: cart position, pole angle."""


class MaskVelocity(gym.ObservationWrapper):  # type: ignore[type-arg]
    """CartPole's observation without its two velocities."""

    def __init__(self, env: gym.Env) -> None:  # type: ignore[type-arg]
        super().__init__(env)
        box = env.observation_space
        assert isinstance(box, spaces.Box)
        self.observation_space = spaces.Box(box.low[KEPT], box.high[KEPT], dtype=box.dtype)  # type: ignore[arg-type]

    def observation(self, observation: Any) -> Any:
        return observation[KEPT]


def make_cartpole_no_vel(**kwargs: Any) -> gym.Env:  # type: ignore[type-arg]
    from gymnasium.envs.classic_control.cartpole import CartPoleEnv

    return MaskVelocity(CartPoleEnv(**kwargs))


def register_pomdp() -> None:
    """Register the ids above; safe to call again."""
    if CARTPOLE_NO_VEL not in gym.envs.registry:
        gym.register(
            id=CARTPOLE_NO_VEL,
            entry_point="nb2_agents.pomdp:make_cartpole_no_vel",
            max_episode_steps=500,
            reward_threshold=475.0,
        )


register_pomdp()
