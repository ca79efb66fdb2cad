"""NB2 inside Stable-Baselines3: a features extractor and one policy class per algorithm family."""

from nb2_agents.sb3 import algos
from nb2_agents.sb3.actor_critic import MaskableNB2Policy, NB2ActorCriticPolicy
from nb2_agents.sb3.extractor import NB2Extractor
from nb2_agents.sb3.off_policy import NB2DQNPolicy, NB2SACPolicy, NB2TD3Policy
from nb2_agents.sb3.registry import POLICY_FOR_ALGO, register_policies

__all__ = [
    "POLICY_FOR_ALGO",
    "MaskableNB2Policy",
    "NB2ActorCriticPolicy",
    "NB2DQNPolicy",
    "NB2Extractor",
    "NB2SACPolicy",
    "NB2TD3Policy",
    "algos",
    "register_policies",
]
