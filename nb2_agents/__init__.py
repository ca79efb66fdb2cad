"""nb2-agents: NB2 encoder-decoder transformer policies for Stable-Baselines3.

>>> from stable_baselines3 import PPO
>>> from nb2_agents import NB2Policy
>>> model = PPO(NB2Policy, "CartPole-v1")  # or PPO("NB2Policy", "CartPole-v1")

Importing the package also registers the ``nb2/`` Gymnasium ids (CartPole physics variants).
"""

from nb2_agents.curriculum import CurriculumResult, run_curriculum, run_references
from nb2_agents.curriculum.variants import register_variants
from nb2_agents.distill import DistillResult, distill
from nb2_agents.evaluation import EvalResult, evaluate
from nb2_agents.export import ExportedPolicy, ExportResult, export
from nb2_agents.nn import NB2, PRESETS, NB2Config, get_config
from nb2_agents.sb3 import (
    MaskableNB2Policy,
    NB2ActorCriticPolicy,
    NB2DQNPolicy,
    NB2Extractor,
    NB2SACPolicy,
    NB2TD3Policy,
    register_policies,
)
from nb2_agents.training import TrainResult, train

NB2Policy = NB2ActorCriticPolicy
"""The NB2 policy for PPO and A2C; ``"NB2Policy"`` names the right class for every algorithm."""

register_policies()
register_variants()

__version__ = "0.1.0"

__all__ = [
    "NB2",
    "PRESETS",
    "CurriculumResult",
    "DistillResult",
    "EvalResult",
    "ExportResult",
    "ExportedPolicy",
    "MaskableNB2Policy",
    "NB2ActorCriticPolicy",
    "NB2Config",
    "NB2DQNPolicy",
    "NB2Extractor",
    "NB2Policy",
    "NB2SACPolicy",
    "NB2TD3Policy",
    "TrainResult",
    "distill",
    "evaluate",
    "export",
    "get_config",
    "run_curriculum",
    "run_references",
    "train",
]
