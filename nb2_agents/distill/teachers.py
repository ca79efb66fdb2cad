"""Teachers: frozen SB3 or NB2 policies, loaded from a model zip or a run folder, that label the
states a student visits.

>>> teacher = load_teacher("teacher.zip", env.observation_space, env.action_space)  # doctest: +SKIP
>>> teacher.outputs(obs_tensor).log_probs  # doctest: +SKIP

A teacher is any model saved by SB3 (``model.save``) or ``nb2 train``: MLP, CNN, MultiInput or
NB2 policies of PPO, A2C, MaskablePPO (action distributions), DQN (Q-values, read as
``softmax(Q / τ)``), SAC or TD3 (deterministic actions). Loading is safe by default: the policy
is rebuilt from the algorithm, the env's spaces and ``policy_kwargs`` read as plain JSON, and
its weights are read with ``torch.load(weights_only=True)`` (:mod:`.sb3_zip`); nothing is
unpickled. A teacher that cannot be rebuilt that way (a custom policy class, an object in
``policy_kwargs``) is refused unless ``trust=True`` (``--trust-pickle``), which loads it with
SB3's own ``load``, unpickling what the file holds.

A teacher trained with ``normalize`` (SB3's ``VecNormalize``) normalises the observations it
is shown with the statistics saved in its zip (``normalize.json``, plain JSON; see
:mod:`nb2_agents.normalize`), so it acts as it did in training while the student sees raw
observations. RL Zoo's separate ``vecnormalize.pkl`` is not read: it is a pickle.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.utils import get_device

from nb2_agents.distill.policies import Obs, Outputs, policy_outputs
from nb2_agents.errors import UsageError
from nb2_agents.hyperparams import ALGOS
from nb2_agents.normalize import RunningStats, read_stats, stats_for
from nb2_agents.runs import read_meta
from nb2_agents.safe_files import warn_trusted
from nb2_agents.sb3.sb3_zip import (
    ModelZip,
    NeedsUnpickling,
    check_space,
    load_weights,
    policy_class,
    policy_kwargs,
    read_zip,
)
from nb2_agents.zoo.registry import resolve_any

ZOO_PREFIX = "zoo:"
TRUST_HINT = "pass --trust-pickle (trust_pickle=True) only if you trust the file: SB3's load unpickles it"


def resolve_teacher_path(text: str | Path) -> Path:
    """A teacher argument → its model zip: ``zoo:NAME`` (the policy zoo), a run folder or a zip."""
    text = str(text)
    if text.startswith(ZOO_PREFIX):
        name = text[len(ZOO_PREFIX) :]
        if importlib.util.find_spec("nb2_agents.zoo") is None:
            raise UsageError(
                f"teacher {text}: this installation has no policy zoo (nb2_agents.zoo); "
                "pass a model .zip or a run folder instead"
            )
        zoo: Any = importlib.import_module("nb2_agents.zoo")
        text = str(zoo.resolve(name))
    model, _ = resolve_any(text)
    return model


def _no_learning(_progress_remaining: float) -> float:
    return 0.0  # a teacher is never trained: its optimizer's learning rate is 0


@dataclass
class Teacher:
    """A frozen policy and what it can say about a batch of observations."""

    policy: BasePolicy
    algo: str
    path: Path
    trusted: bool
    """Loaded with SB3's ``load`` (unpickled), after ``--trust-pickle``."""
    stats: RunningStats | None = None
    """The observation statistics it was trained with (``normalize``), applied to what it is shown."""

    @property
    def observation_space(self) -> spaces.Space:
        return self.policy.observation_space

    @property
    def action_space(self) -> spaces.Space:
        return self.policy.action_space

    @property
    def kind(self) -> str:
        """``q-values``, ``categorical``, ``gaussian`` or ``deterministic``."""
        if self.algo == "dqn":
            return "q-values"
        if self.algo in ("sac", "td3"):
            return "deterministic"
        return "categorical" if isinstance(self.action_space, spaces.Discrete) else "gaussian"

    @torch.no_grad()
    def outputs(self, obs: Obs, temperature: float = 1.0) -> Outputs:
        """Action targets and value for a batch (tensors on :attr:`device`): probabilities as
        ``softmax(logits / τ)`` or ``softmax(Q / τ)``, a Gaussian, or a deterministic action."""
        if self.stats is not None:
            assert isinstance(obs, torch.Tensor), "normalised teachers take Box observations"
            obs = self.stats.normalize_tensor(obs)
        return policy_outputs(self.policy, self.algo, obs, temperature)

    @property
    def device(self) -> torch.device:
        return self.policy.device

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
        action_masks: np.ndarray | None = None,
    ) -> tuple[np.ndarray, Any]:
        """SB3's ``predict``, so SB3's ``evaluate_policy`` can run the teacher (sb3-contrib's, with
        the action masks a MaskablePPO teacher takes)."""
        if self.stats is not None:
            observation = self.stats.normalize_obs(np.asarray(observation, dtype=np.float64))
        if action_masks is not None:
            return self.policy.predict(  # type: ignore[call-arg]
                observation, state, episode_start, deterministic, action_masks=action_masks
            )
        return self.policy.predict(observation, state, episode_start, deterministic)

    def describe(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "algo": self.algo,
            "kind": self.kind,
            "loaded": "trusted (unpickled by SB3)" if self.trusted else "safe (no unpickling)",
            "normalized": self.stats is not None,
        }


def _rebuild(
    model: ModelZip, obs_space: spaces.Space, action_space: spaces.Space, device: torch.device
) -> BasePolicy:
    """The policy rebuilt from plain data and the env's spaces, with the zip's weights."""
    cls = policy_class(model)
    kwargs = policy_kwargs(model)
    if model.algo in ("ppo", "a2c"):  # SB3's on-policy algorithms pass use_sde themselves
        kwargs["use_sde"] = bool(model.data.get("use_sde", False))
    try:
        policy = cls(obs_space, action_space, _no_learning, **kwargs)
    except (TypeError, ValueError, KeyError, AssertionError) as err:
        raise NeedsUnpickling(
            f"teacher {model.path}: cannot rebuild its {cls.__name__} from the plain policy_kwargs "
            f"{sorted(kwargs)} ({' '.join(str(err).split())})"
        ) from err
    state = load_weights(model.path, device)
    try:
        policy.load_state_dict(state)
    except RuntimeError as err:
        first = " ".join(str(err).split())[:300]
        raise NeedsUnpickling(
            f"teacher {model.path}: its weights do not fit a {cls.__name__} rebuilt from the plain "
            f"policy_kwargs ({first})"
        ) from err
    return policy.to(device)


_IGNORED_ON_LOAD = ("learning_rate", "lr_schedule", "clip_range", "clip_range_vf", "exploration_schedule")
"""Schedules a teacher never uses: replaced on a trusted load, so a missing lambda cannot fail it."""


def _trusted_load(model: ModelZip, device: torch.device) -> BasePolicy:
    custom: dict[str, Any] = dict.fromkeys(_IGNORED_ON_LOAD, _no_learning)
    custom["learning_rate"] = 0.0
    warn_trusted(model.path, "the teacher zip")
    try:
        loaded = ALGOS[model.algo].load(model.path, device=device, custom_objects=custom)
    except Exception as err:  # anything unpickled code may raise
        raise UsageError(
            f"cannot load teacher {model.path} with SB3's {ALGOS[model.algo].__name__}.load: "
            f"{type(err).__name__}: {' '.join(str(err).split())}"
        ) from err
    return loaded.policy


def load_teacher(
    path: str | Path,
    observation_space: spaces.Space,
    action_space: spaces.Space,
    where: str = "the env",
    trust: bool = False,
    device: str | torch.device = "auto",
) -> Teacher:
    """Load a teacher for an env with these spaces; :class:`UsageError` when it cannot serve it.

    :param path: a model zip, a run folder or ``zoo:NAME``
    :param where: the env, as error messages name it (``CartPole-v1``, ``task Acrobot-v1``)
    :param trust: fall back to SB3's ``load`` (unpickling) where safe loading is impossible
    """
    model = read_zip(resolve_teacher_path(path))
    check_space(model, "observation_space", observation_space, where)
    check_space(model, "action_space", action_space, where)
    if not isinstance(action_space, (spaces.Discrete, spaces.Box)):
        raise UsageError(
            f"teacher {model.path}: {where} has a {type(action_space).__name__} action space; "
            "distillation supports Discrete and Box actions"
        )
    dev = get_device(device)
    try:
        policy, trusted = _rebuild(model, observation_space, action_space, dev), False
    except NeedsUnpickling as err:
        if not trust:
            raise NeedsUnpickling(f"{err}; {TRUST_HINT}") from None
        policy, trusted = _trusted_load(model, dev), True
    policy.set_training_mode(False)
    for param in policy.parameters():
        param.requires_grad_(False)
    env = read_meta(model.path).get("env")
    stats = stats_for(read_stats(model.path), str(env), model.path)  # the env it was trained on
    return Teacher(policy, model.algo, model.path, trusted, stats)
