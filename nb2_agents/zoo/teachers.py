"""Teachers: plain SB3 models (``MlpPolicy`` ...) trained by SB3 directly from a card's recipe.

No NB2 network is involved; the env is built as ``nb2 train`` and ``nb2 evaluate`` build it
(:class:`~nb2_agents.envs_util.EnvSpec`: Monitor, MiniGrid's ``ImgObsWrapper``, HWC images
transposed), so a teacher sees exactly the observations an NB2 student of the same env sees.
Hyperparameters are RL Zoo's; ``lin_X`` becomes SB3's own ``LinearSchedule(X, 0, 1)``, so a
saved teacher unpickles with SB3 alone.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.utils import LinearSchedule

from nb2_agents.envs_util import EnvSpec, check_algo, check_env_id, probe
from nb2_agents.errors import UsageError
from nb2_agents.hyperparams import ALGOS

# constructor arguments a recipe may not set: the builder sets them, or YAML cannot express them
_NOT_IN_RECIPE = {
    "self",
    "policy",
    "env",
    "seed",
    "device",
    "verbose",
    "tensorboard_log",
    "_init_setup_model",
    "action_noise",
    "replay_buffer_class",
    "rollout_buffer_class",
}
_SCHEDULE_KEYS = ("learning_rate", "clip_range", "clip_range_vf")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def recipe_keys(algo: str) -> list[str]:
    """The hyperparameters a teacher recipe for ``algo`` may hold (SB3's constructor arguments)."""
    return sorted(set(inspect.signature(ALGOS[algo].__init__).parameters) - _NOT_IN_RECIPE)


def _value(key: str, value: Any, where: str) -> Any:
    """A recipe value as SB3 takes it: ``lin_X`` → a schedule, ``1e-3`` text → a float."""
    if isinstance(value, str) and value.startswith("lin_"):
        if key not in _SCHEDULE_KEYS:
            raise UsageError(
                f"{where}.{key}: lin_X is accepted only for {list(_SCHEDULE_KEYS)}; got {value!r}"
            )
        if not _NUMBER.fullmatch(value[4:]):
            raise UsageError(f"{where}.{key}: {value!r} is not a schedule; write lin_<number>, e.g. lin_1e-3")
        return LinearSchedule(float(value[4:]), 0.0, 1.0)
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        return float(value)  # YAML 1.1 reads 1e-3 (no dot) as text
    return value


def check_hyperparams(algo: str, hyperparams: Any, where: str) -> dict[str, Any]:
    """Check a recipe's ``hyperparams`` for ``algo`` and return them as SB3's constructor takes them."""
    valid = recipe_keys(algo)
    if hyperparams is None:
        return {}
    if not isinstance(hyperparams, dict):
        raise UsageError(
            f"{where}: expected a mapping of {ALGOS[algo].__name__} arguments; valid keys: {valid}"
        )
    kwargs: dict[str, Any] = {}
    for key, value in hyperparams.items():
        if key not in valid:
            raise UsageError(
                f"{where}.{key}: unknown argument of {ALGOS[algo].__name__}; valid keys: {valid}"
            )
        if key == "policy_kwargs" and not isinstance(value, dict):
            raise UsageError(f"{where}.policy_kwargs: expected a mapping, e.g. {{net_arch: [64, 64]}}")
        kwargs[key] = _value(key, value, where)
    return kwargs


def train_teacher(
    env_id: str,
    algo: str,
    policy: str,
    steps: int,
    seed: int,
    n_envs: int,
    hyperparams: dict[str, Any],
    where: str = "recipe",
    progress: bool = False,
) -> BaseAlgorithm:
    """Train ``ALGO(policy, env, **hyperparams)`` for ``steps`` on one torch thread, on the CPU.

    One thread and the CPU make the run repeatable on one machine: the same recipe gives the
    same weights (across machines the floating point may differ).
    """
    check_env_id(env_id)
    spec = EnvSpec(env_id, {}, algo)
    check_algo(algo, env_id, probe(spec)[1])
    kwargs = check_hyperparams(algo, hyperparams, f"{where}.hyperparams")
    torch.set_num_threads(1)
    env = spec.make_vec(n_envs, seed)
    try:
        model = ALGOS[algo](policy, env, seed=seed, device="cpu", verbose=0, **kwargs)
        model.learn(steps, progress_bar=progress)
    finally:
        env.close()
    return model


def drop_optimizer_state(model: BaseAlgorithm) -> None:
    """Forget the optimizers' running moments (Adam's two per weight), keeping their settings.

    A teacher is used for inference; the moments would double the file (a DQN [256, 256]
    teacher passes 1 MB with them). SB3 loads the empty state, and further training restarts
    the moments from zero.
    """
    for module in model.policy.modules():
        optimizer = getattr(module, "optimizer", None)
        if isinstance(optimizer, torch.optim.Optimizer):
            optimizer.state.clear()
