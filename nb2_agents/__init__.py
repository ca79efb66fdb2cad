"""nb2-agents: NB2 encoder-decoder transformer policies for Stable-Baselines3.

>>> from stable_baselines3 import PPO
>>> from nb2_agents import NB2Policy
>>> model = PPO(NB2Policy, "CartPole-v1")  # or PPO("NB2Policy", "CartPole-v1")

Importing the package registers the ``nb2/`` Gymnasium ids (CartPole physics variants and
``nb2/CartPoleNoVel-v1``) and the ``"NB2Policy"`` name in SB3's algorithms. Its attributes are
imported when first read (:mod:`nb2_agents.lazy`, :mod:`nb2_agents.sb3.aliases`), so
``import nb2_agents`` does not load torch.
"""

from typing import TYPE_CHECKING

from nb2_agents.curriculum.variants import register_variants
from nb2_agents.lazy import functions_over_subpackages, lazy_exports
from nb2_agents.pomdp import register_pomdp
from nb2_agents.sb3.aliases import register_on_sb3_import

if TYPE_CHECKING:
    from nb2_agents.config import TrainOptions
    from nb2_agents.curriculum import CurriculumResult, run_curriculum, run_references
    from nb2_agents.curriculum.resolve import CurriculumOptions
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
    from nb2_agents.sweep import SweepOptions, SweepResult, sweep
    from nb2_agents.training import TrainResult, train

    NB2Policy = NB2ActorCriticPolicy

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "TrainOptions": "nb2_agents.config",
        "CurriculumOptions": "nb2_agents.curriculum.resolve",
        "CurriculumResult": "nb2_agents.curriculum.results",
        "run_curriculum": "nb2_agents.curriculum.runner",
        "run_references": "nb2_agents.curriculum.runner",
        "DistillResult": "nb2_agents.distill.run",
        "distill": "nb2_agents.distill.run",
        "EvalResult": "nb2_agents.evaluation",
        "evaluate": "nb2_agents.evaluation",
        "ExportedPolicy": "nb2_agents.export.loader",
        "ExportResult": "nb2_agents.export.exporter",
        "export": "nb2_agents.export.exporter",
        "NB2": "nb2_agents.nn.model",
        "PRESETS": "nb2_agents.nn.config",
        "NB2Config": "nb2_agents.nn.config",
        "get_config": "nb2_agents.nn.config",
        "MaskableNB2Policy": "nb2_agents.sb3.actor_critic",
        "NB2ActorCriticPolicy": "nb2_agents.sb3.actor_critic",
        "NB2Policy": "nb2_agents.sb3.actor_critic:NB2ActorCriticPolicy",
        # The NB2 policy for PPO and A2C; "NB2Policy" names the right class for every algorithm.
        "NB2DQNPolicy": "nb2_agents.sb3.off_policy",
        "NB2SACPolicy": "nb2_agents.sb3.off_policy",
        "NB2TD3Policy": "nb2_agents.sb3.off_policy",
        "NB2Extractor": "nb2_agents.sb3.extractor",
        "register_policies": "nb2_agents.sb3.registry",
        "SweepOptions": "nb2_agents.sweep.run",
        "SweepResult": "nb2_agents.sweep.run",
        "sweep": "nb2_agents.sweep.run",
        "TrainResult": "nb2_agents.training",
        "train": "nb2_agents.training",
    },
)

functions_over_subpackages(__name__, ("distill", "export", "sweep"))  # the functions, as the API has them
register_on_sb3_import()
register_variants()
register_pomdp()

__version__ = "0.1.0"

__all__ = [
    "NB2",
    "PRESETS",
    "CurriculumOptions",
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
    "SweepOptions",
    "SweepResult",
    "TrainOptions",
    "TrainResult",
    "distill",
    "evaluate",
    "export",
    "get_config",
    "register_policies",
    "run_curriculum",
    "run_references",
    "sweep",
    "train",
]
