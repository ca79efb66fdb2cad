"""The algorithms NB2 plugs into, in one table: what every part of the package asks of an algorithm.

Each :class:`Algo` row holds the ``--algo`` name (and ``policies/<name>.yaml``), SB3's class, the
NB2 policy class, the action spaces SB3 supports for it, and its *family*: how its policy is read
(``actor_critic``: a distribution and V(s); ``q``: a Q-network; ``sac`` and ``td3``: an actor and a
critic, each with its own optimizer). Retention's optimizer parts and heads and distillation's
policy outputs dispatch on the family (the export body recognises SB3's own policies too, by
their structure), and a saved zip is recognised by the
attributes only its algorithm writes (:func:`recognise`), from plain data, never by unpickling.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import BasePolicy

from nb2_agents.errors import UsageError
from nb2_agents.sb3.actor_critic import MaskableNB2Policy, NB2ActorCriticPolicy
from nb2_agents.sb3.names import ALGO_NAMES
from nb2_agents.sb3.off_policy import NB2DQNPolicy, NB2SACPolicy, NB2TD3Policy

Family = Literal["actor_critic", "q", "sac", "td3"]
SERIALIZED = ":serialized:"
"""The key of a pickled entry in a zip's ``data`` JSON (SB3's ``save_util``)."""

_ANY = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


@dataclass(frozen=True)
class Algo:
    """One algorithm NB2 supports."""

    name: str
    """The ``--algo`` name, and the stem of its ``policies/<name>.yaml``."""
    cls: type[BaseAlgorithm]
    policy: type[BasePolicy]
    """The NB2 policy class, ``"NB2Policy"`` in the algorithm's ``policy_aliases``."""
    action_spaces: tuple[type[spaces.Space], ...]
    """The action spaces SB3 supports for it."""
    family: Family
    signature: str
    """A key of a saved zip's ``data`` that this algorithm writes and the rows after it in
    :data:`TABLE` do not; the table is in recognition order (:func:`recognise`)."""
    masks_actions: bool = False
    """Whether it can take per-task action masks (curricula whose tasks have different numbers of
    actions): the actor-critic algorithms, through NB2's masked distribution."""


TABLE: tuple[Algo, ...] = (
    Algo("dqn", DQN, NB2DQNPolicy, (spaces.Discrete,), "q", "exploration_rate"),
    Algo("sac", SAC, NB2SACPolicy, (spaces.Box,), "sac", "target_entropy"),
    Algo("td3", TD3, NB2TD3Policy, (spaces.Box,), "td3", "policy_delay"),  # DDPG saves it too
    Algo("maskable_ppo", MaskablePPO, MaskableNB2Policy, _ANY[1:], "actor_critic", "clip_range", True),
    Algo("ppo", PPO, NB2ActorCriticPolicy, _ANY, "actor_critic", "clip_range", True),
    Algo("a2c", A2C, NB2ActorCriticPolicy, _ANY, "actor_critic", "gae_lambda", True),
)  # fmt: skip
"""Every supported algorithm, in recognition order: a zip is the first row whose ``signature``
its data holds (PPO saves ``gae_lambda`` too, so it comes before A2C; MaskablePPO and PPO share
``clip_range`` and are told apart by their classes)."""

_BY_NAME = {a.name: a for a in TABLE}
ALGOS: dict[str, Algo] = {name: _BY_NAME[name] for name in ALGO_NAMES}
"""The rows by ``--algo`` name, in the order the CLI lists them."""


def get(name: str, what: str = "--algo") -> Algo:
    """The row of ``name``; a UsageError naming ``what`` and the valid names otherwise."""
    if name not in ALGOS:
        raise UsageError(f"{what} {name!r} is not supported; valid: {', '.join(ALGOS)}")
    return ALGOS[name]


def of(model: BaseAlgorithm | type[BaseAlgorithm]) -> Algo:
    """The row of a model or an algorithm class (a subclass of a row's class counts; DDPG is TD3's)."""
    cls = model if isinstance(model, type) else type(model)
    for algo in sorted(TABLE, key=lambda a: len(a.cls.__mro__), reverse=True):  # most derived first
        if issubclass(cls, algo.cls):
            return algo
    raise UsageError(f"{cls.__name__} is not supported; valid: {', '.join(a.cls.__name__ for a in TABLE)}")


def recognise_data(data: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> str | None:
    """The algorithm that saved a zip: the ``algo`` of nb2's metadata ``meta`` when it names one,
    else from its ``data`` member as plain JSON (nothing unpickled): :func:`recognise` on its keys,
    maskable when its policy or rollout buffer class is sb3-contrib's maskable one (by the
    readable summary SB3 writes beside each pickle)."""
    if meta and meta.get("algo") in ALGOS:
        return str(meta["algo"])
    classes = [readable(data.get(key)) for key in ("policy_class", "rollout_buffer_class")]
    return recognise(data.keys(), maskable="maskable" in json.dumps(classes, default=str).lower())


def readable(entry: Any) -> dict[str, Any]:
    """A pickled entry's readable summary (its type and attributes), without the pickle."""
    if isinstance(entry, dict):
        return {k: v for k, v in entry.items() if k != SERIALIZED}
    return {}


def recognise(data_keys: Collection[str], maskable: bool) -> str | None:
    """The algorithm that saved a zip whose ``data`` has ``data_keys`` (``maskable``: its policy or
    rollout buffer class is sb3-contrib's maskable one); None if no row's signature is there."""
    for algo in TABLE:
        if algo.signature not in data_keys:
            continue
        if algo.signature != "clip_range" or maskable == (algo.name == "maskable_ppo"):  # PPO or MaskablePPO
            return algo.name
    return None


def optimizers(policy: Any) -> dict[str, torch.optim.Optimizer]:
    """The policy's optimizers by part: ``policy`` (one for the whole policy: the actor-critic and
    Q families), or ``actor`` and ``critic`` (SAC, TD3)."""
    if isinstance(getattr(policy, "optimizer", None), torch.optim.Optimizer):
        return {"policy": policy.optimizer}
    return {"actor": policy.actor.optimizer, "critic": policy.critic.optimizer}


POLICY_FOR_CLASS: dict[type[BaseAlgorithm], type[BasePolicy]] = {
    **{a.cls: a.policy for a in TABLE}, DDPG: NB2TD3Policy
}  # fmt: skip
"""Each SB3 class's NB2 policy (DDPG, a TD3 with ``policy_delay`` 1, takes TD3's)."""
