"""``import nb2_agents`` and ``nb2 --help`` stay light (no torch, no SB3), while every exported
name still resolves and ``PPO("NB2Policy", env)`` still works after ``import nb2_agents``, in
whichever order SB3 and nb2_agents are imported."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import pytest

import nb2_agents
from nb2_agents.sb3 import algos
from nb2_agents.sb3.names import ALGO_NAMES, SB3_CLASSES

HEAVY = ("torch", "stable_baselines3", "sb3_contrib")
SUBPACKAGES = ("curriculum", "nn", "sb3", "distill", "export", "zoo")
PACKAGES = ("nb2_agents", *(f"nb2_agents.{p}" for p in SUBPACKAGES))


def _run(code: str) -> str:
    """``code`` in a fresh interpreter (nothing imported yet); its stdout."""
    argv = [sys.executable, "-c", textwrap.dedent(code)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_help_and_the_package_import_neither_torch_nor_sb3() -> None:
    out = _run(
        f"""
        import sys
        import nb2_agents
        from nb2_agents.cli import main
        for argv in (["--help"], ["train", "--help"], ["curriculum", "--help"], ["export", "--help"],
                     ["distill", "--help"], ["zoo", "--help"], ["--version"]):
            try:
                main(argv)
            except SystemExit:
                pass
        print([m for m in {HEAVY!r} if m in sys.modules])
        """
    )
    assert out.splitlines()[-1] == "[]"


@pytest.mark.parametrize("sb3_first", [False, True])
def test_the_short_policy_name_works_in_either_import_order(sb3_first: bool) -> None:
    sb3 = ["from stable_baselines3 import DQN, PPO", "from sb3_contrib import MaskablePPO"]
    order = [*sb3, "import nb2_agents"] if sb3_first else ["import nb2_agents", *sb3]
    out = _run(
        "\n".join(order)
        + """
import gymnasium as gym
from sb3_contrib.common.wrappers import ActionMasker
ppo = PPO("NB2Policy", "CartPole-v1", n_steps=16, batch_size=16, device="cpu")
dqn = DQN("NB2Policy", "CartPole-v1", learning_starts=0, device="cpu")
env = ActionMasker(gym.make("CartPole-v1"), lambda env: [True, True])
maskable = MaskablePPO("NB2Policy", env, n_steps=16, batch_size=16, device="cpu")
print(type(ppo.policy).__name__, type(dqn.policy).__name__, type(maskable.policy).__name__)
"""
    )
    assert out.splitlines()[-1] == "NB2ActorCriticPolicy NB2DQNPolicy MaskableNB2Policy"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"
        assert name in dir(module)
    with pytest.raises(AttributeError, match="no attribute 'not_there'"):
        module.not_there  # noqa: B018


def test_functions_named_like_their_modules_stay_the_functions_once_those_are_imported() -> None:
    out = _run(
        """
        import sys
        import nb2_agents.distill.run, nb2_agents.export.exporter, nb2_agents.zoo.build
        from nb2_agents import distill, export
        from nb2_agents.zoo import build
        print(export is sys.modules["nb2_agents.export.exporter"].export,
              distill is sys.modules["nb2_agents.distill.run"].distill,
              build is sys.modules["nb2_agents.zoo.build"].build)
        """
    )
    assert out == "True True True"


def test_nb2policy_is_the_actor_critic_policy() -> None:
    assert nb2_agents.NB2Policy is nb2_agents.NB2ActorCriticPolicy


def test_the_light_name_tables_match_the_algorithm_table() -> None:
    assert tuple(algos.ALGOS) == ALGO_NAMES
    named = {getattr(importlib.import_module(p), name) for p, names in SB3_CLASSES.items() for name in names}
    assert named == set(algos.POLICY_FOR_CLASS)
