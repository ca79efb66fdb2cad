"""Short policy names: ``PPO("NB2Policy", env)`` works for every supported algorithm."""

from __future__ import annotations

from sb3_contrib import MaskablePPO
from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.policies import BasePolicy

from nb2_agents.sb3.actor_critic import MaskableNB2Policy, NB2ActorCriticPolicy
from nb2_agents.sb3.off_policy import NB2DQNPolicy, NB2SACPolicy, NB2TD3Policy

SHORT_NAME = "NB2Policy"

POLICY_FOR_ALGO: dict[type[BaseAlgorithm], type[BasePolicy]] = {
    PPO: NB2ActorCriticPolicy,
    A2C: NB2ActorCriticPolicy,
    MaskablePPO: MaskableNB2Policy,
    DQN: NB2DQNPolicy,
    SAC: NB2SACPolicy,
    TD3: NB2TD3Policy,
    DDPG: NB2TD3Policy,
}


def register_policies() -> None:
    """Add ``"NB2Policy"`` to each algorithm's ``policy_aliases`` (idempotent).

    A new dict is assigned on each class rather than mutating the inherited one, so no other
    algorithm sharing that dict sees the name.
    """
    for algo, policy in POLICY_FOR_ALGO.items():
        if algo.__dict__.get("policy_aliases", {}).get(SHORT_NAME) is not policy:
            algo.policy_aliases = {**algo.policy_aliases, SHORT_NAME: policy}  # type: ignore[misc]
