"""NB2 inside Stable-Baselines3: a features extractor and one policy class per algorithm family."""

from typing import TYPE_CHECKING

from nb2_agents.lazy import lazy_exports

if TYPE_CHECKING:
    from nb2_agents.sb3 import algos
    from nb2_agents.sb3.actor_critic import MaskableNB2Policy, NB2ActorCriticPolicy
    from nb2_agents.sb3.extractor import NB2Extractor
    from nb2_agents.sb3.off_policy import NB2DQNPolicy, NB2SACPolicy, NB2TD3Policy
    from nb2_agents.sb3.registry import POLICY_FOR_ALGO, register_policies

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "algos": "nb2_agents.sb3.algos",
        "MaskableNB2Policy": "nb2_agents.sb3.actor_critic",
        "NB2ActorCriticPolicy": "nb2_agents.sb3.actor_critic",
        "NB2Extractor": "nb2_agents.sb3.extractor",
        "NB2DQNPolicy": "nb2_agents.sb3.off_policy",
        "NB2SACPolicy": "nb2_agents.sb3.off_policy",
        "NB2TD3Policy": "nb2_agents.sb3.off_policy",
        "POLICY_FOR_ALGO": "nb2_agents.sb3.registry",
        "register_policies": "nb2_agents.sb3.registry",
    },
)

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
