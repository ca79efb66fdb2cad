"""Physics variants of CartPole, registered as Gymnasium ids in the ``nb2`` namespace.

Each variant is gymnasium's ``CartPoleEnv`` with one physical attribute changed after
construction (the derived quantities ``total_mass`` and ``polemass_length`` kept consistent),
with CartPole-v1's limits: 500 steps per episode, reward threshold 475. The spaces are
CartPole-v1's, so a curriculum of them needs no padding.

- ``nb2/CartPole-LongPole-v0``: pole half-length 1.0 (CartPole-v1: 0.5); slower, larger swings.
- ``nb2/CartPole-HeavyPole-v0``: pole mass 0.5 (0.1).
- ``nb2/CartPole-HighGravity-v0``: gravity 20 (9.8); the pole falls faster.
- ``nb2/CartPole-WeakForce-v0``: push force 5 (10).
- ``nb2/CartPole-Mirrored-v0``: the actions swapped (0 pushes right, 1 pushes left).

Each stays solvable by a linear policy: pushing towards ``theta + 0.5 theta' + 0.05 x + 0.1 x'``
(the other way when mirrored) holds every variant up for the full 500 steps, as
``tests/test_curriculum_spec.py`` checks. A uniform random policy's mean returns (200 episodes,
measured for ``envs/cartpole-variants.yaml``) are 20.7–33.5 against CartPole-v1's 22.7.

:func:`register_variants` runs when this module is imported, so
``gym.make("nb2_agents.curriculum.variants:nb2/CartPole-LongPole-v0")`` works without
importing ``nb2_agents`` first.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

NAMESPACE = "nb2"
ENTRY_POINT = "nb2_agents.curriculum.variants:make_cartpole"
MAX_EPISODE_STEPS = 500  # CartPole-v1's
REWARD_THRESHOLD = 475.0  # CartPole-v1's

CARTPOLE_VARIANTS: dict[str, dict[str, Any]] = {
    f"{NAMESPACE}/CartPole-LongPole-v0": {"length": 1.0},
    f"{NAMESPACE}/CartPole-HeavyPole-v0": {"masspole": 0.5},
    f"{NAMESPACE}/CartPole-HighGravity-v0": {"gravity": 20.0},
    f"{NAMESPACE}/CartPole-WeakForce-v0": {"force_mag": 5.0},
    f"{NAMESPACE}/CartPole-Mirrored-v0": {"mirrored": True},
}
"""Each variant id and the keyword arguments of :func:`make_cartpole` that define it."""


class MirrorActions(gym.ActionWrapper):
    """Swaps a ``Discrete(2)`` action: 0 becomes 1 and 1 becomes 0."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        space = env.action_space
        if not isinstance(space, gym.spaces.Discrete) or int(space.n) != 2:
            raise ValueError(f"MirrorActions needs a Discrete(2) action space, got {space}")

    def action(self, action: Any) -> int:
        return 1 - int(action)


def make_cartpole(
    length: float | None = None,
    masspole: float | None = None,
    gravity: float | None = None,
    force_mag: float | None = None,
    mirrored: bool = False,
    render_mode: str | None = None,
) -> gym.Env:
    """``CartPoleEnv`` with the given physics (``None`` keeps CartPole-v1's value).

    ``length`` is the pole's half-length, as in ``CartPoleEnv``. ``mirrored`` swaps the two
    actions with :class:`MirrorActions`.
    """
    env = CartPoleEnv(render_mode=render_mode)
    for name, value in (("length", length), ("masspole", masspole), ("gravity", gravity),
                        ("force_mag", force_mag)):  # fmt: skip
        if value is not None and not float(value) > 0:
            raise ValueError(f"make_cartpole: {name} must be > 0, got {value!r}")
    if gravity is not None:
        env.gravity = float(gravity)
    if force_mag is not None:
        env.force_mag = float(force_mag)
    if masspole is not None:
        env.masspole = float(masspole)
    if length is not None:
        env.length = float(length)
    env.total_mass = env.masspole + env.masscart
    env.polemass_length = env.masspole * env.length
    return MirrorActions(env) if mirrored else env


def register_variants() -> list[str]:
    """Register the ``nb2/`` CartPole variants; safe to call again (registered ids are skipped).

    Returns the variant ids.
    """
    for env_id, kwargs in CARTPOLE_VARIANTS.items():
        if env_id in gym.envs.registry:
            continue
        gym.register(
            id=env_id,
            entry_point=ENTRY_POINT,
            kwargs=dict(kwargs),
            max_episode_steps=MAX_EPISODE_STEPS,
            reward_threshold=REWARD_THRESHOLD,
        )
    return list(CARTPOLE_VARIANTS)


register_variants()
