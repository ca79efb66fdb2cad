"""The policy zoo: small pretrained teachers and their NB2 students, in ``policies/zoo/``.

Each entry is a folder with ``model.zip`` (≤ 1 MB) and ``card.yaml`` (env, algorithm, steps,
seed, score ± std, the recipe and the command that rebuilds it). ``zoo:NAME`` is accepted
wherever a model path is (``nb2 evaluate zoo:cartpole-ppo-mlp``, ``--teacher zoo:...``).

>>> from nb2_agents import zoo
>>> sorted(zoo.entries())  # doctest: +SKIP
['acrobot-dqn-mlp', 'cartpole-ppo-mlp', 'doorkey-ppo-mlp', 'mountaincar-dqn-mlp']
>>> zoo.resolve("cartpole-ppo-mlp")  # doctest: +SKIP
PosixPath('.../policies/zoo/cartpole-ppo-mlp/model.zip')
"""

from typing import TYPE_CHECKING

from nb2_agents.lazy import functions_over_subpackages, lazy_exports

if TYPE_CHECKING:
    from nb2_agents.zoo.build import build, build_many, measure
    from nb2_agents.zoo.card import (
        MAX_BYTES,
        PREFIX,
        Built,
        Card,
        EvalSettings,
        Score,
        StudentRecipe,
        TeacherRecipe,
        expected_return,
        read_card,
        tolerance,
    )
    from nb2_agents.zoo.registry import ZOO_DIR, entries, get, is_zoo_ref, resolve

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "build": "nb2_agents.zoo.build",
        "build_many": "nb2_agents.zoo.build",
        "measure": "nb2_agents.zoo.build",
        "MAX_BYTES": "nb2_agents.zoo.card",
        "PREFIX": "nb2_agents.zoo.card",
        "Built": "nb2_agents.zoo.card",
        "Card": "nb2_agents.zoo.card",
        "EvalSettings": "nb2_agents.zoo.card",
        "Score": "nb2_agents.zoo.card",
        "StudentRecipe": "nb2_agents.zoo.card",
        "TeacherRecipe": "nb2_agents.zoo.card",
        "expected_return": "nb2_agents.zoo.card",
        "read_card": "nb2_agents.zoo.card",
        "tolerance": "nb2_agents.zoo.card",
        "ZOO_DIR": "nb2_agents.zoo.registry",
        "entries": "nb2_agents.zoo.registry",
        "get": "nb2_agents.zoo.registry",
        "is_zoo_ref": "nb2_agents.zoo.registry",
        "resolve": "nb2_agents.zoo.registry",
    },
)

functions_over_subpackages(__name__, ("build",))  # zoo.build: the function, as the API has it

__all__ = [
    "MAX_BYTES",
    "PREFIX",
    "ZOO_DIR",
    "Built",
    "Card",
    "EvalSettings",
    "Score",
    "StudentRecipe",
    "TeacherRecipe",
    "build",
    "build_many",
    "entries",
    "expected_return",
    "get",
    "is_zoo_ref",
    "measure",
    "read_card",
    "resolve",
    "tolerance",
]
