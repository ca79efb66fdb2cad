"""A loaded SB3 policy as one torch module: raw observations → (deterministic action, logits).

:class:`PolicyGraph` is what gets exported. Its inputs are observations exactly as the env
(after SB3's wrappers, e.g. ``VecTransposeImage``) hands them to ``model.predict``: uint8
images, integer ``Discrete`` / ``MultiDiscrete`` values, ``MultiBinary`` bits, float vectors;
a Dict observation is one input per key, in the space's key order. A model trained with
``normalize`` normalises them first, with its saved statistics (:mod:`.normalizer`); then
SB3's ``preprocess_obs``
(images / 255 where the policy normalises them, one-hot codes for Discrete and MultiDiscrete,
floats for the rest) runs inside the graph.

Its two outputs:

* ``action``, the deterministic action ``model.predict(obs, deterministic=True)`` returns:
  the argmax of the logits (Discrete; per dimension for MultiDiscrete), ``logit > 0``
  (MultiBinary), or for Box actions the action *in the env's bounds*: PPO / A2C's Gaussian
  mean clipped to ``[low, high]``; with a squashed output (SAC, TD3, gSDE with
  ``squash_output``) the tanh output in [-1, 1] rescaled to ``low + (a + 1) / 2 * (high - low)``,
  as SB3's ``predict`` does. Integer actions are int64; Box actions float32.
* ``logits``, the raw network output the action is taken from: action logits (after the
  ``action_mask`` observation key of an NB2 actor-critic policy sets invalid ones to -1e8),
  DQN's Q-values, PPO / A2C's Gaussian mean, SAC's mean before its tanh, TD3's actor output
  in [-1, 1].

Works for every NB2 policy (PPO, A2C, MaskablePPO, DQN, SAC, TD3) and for SB3's own
Mlp / Cnn / MultiInput policies; NB2 networks run through :class:`~.graph.StaticNB2`.
"""

from __future__ import annotations

from typing import Any

import torch
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from torch import nn

from nb2_agents.curriculum.adapter import OBS_KEY
from nb2_agents.errors import UsageError
from nb2_agents.export.graph import StaticNB2
from nb2_agents.export.normalizer import ObsNormalizer
from nb2_agents.nn.tokenizer import ACTION_MASK_KEY, TASK_KEY
from nb2_agents.sb3.actor_critic import _ActorCriticMixin
from nb2_agents.sb3.extractor import NB2Extractor

MASKED_LOGIT = -1e8
"""What an invalid action's logit becomes, as in NB2's actor-critic policies."""
OUTPUTS = ["action", "logits"]
MEMORY_INPUTS = ["memory", "memory_valid"]
"""A memory-carrying policy's extra inputs, after the observation's: the summaries of the last K
steps (B, K, C), most recent first, and which of them belong to the episode (B, K), 1 or 0."""
MEMORY_OUTPUTS = ["memory_out", "memory_valid_out"]
"""... and outputs: the same two after this step, to feed back with the next observation."""


def _features(extractor: nn.Module) -> nn.Module:
    """The features extractor as exported: NB2 through its static-shape forward."""
    return StaticNB2(extractor.net) if isinstance(extractor, NB2Extractor) else extractor


class _ActorCriticBody(nn.Module):
    """PPO / A2C / MaskablePPO: features → actor latent → ``action_net``."""

    def __init__(self, policy: Any) -> None:
        super().__init__()
        self.features = _features(policy.pi_features_extractor)
        self.mlp_extractor = policy.mlp_extractor
        self.action_net = policy.action_net

    def forward(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        return self.action_net(self.mlp_extractor.forward_actor(self.features(obs)))


class _MemoryActorCriticBody(nn.Module):
    """PPO / A2C / MaskablePPO with memory over time: (step, K past summaries, their validity) →
    (logits, this step's summary). The summaries come in instead of the past observations: a step
    costs one encoding (``nn/temporal.py``)."""

    def __init__(self, policy: Any) -> None:
        super().__init__()
        self.net = policy.pi_features_extractor.net
        self.mlp_extractor = policy.mlp_extractor
        self.action_net = policy.action_net

    def forward(
        self, obs: torch.Tensor | dict[str, torch.Tensor], past: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out, summary = self.net.step(obs, past, valid > 0.5, in_place=True)  # (B, nq, C), (B, C)
        return self.action_net(self.mlp_extractor.forward_actor(out.flatten(1))), summary


class _QBody(nn.Module):
    """DQN: features → Q-values."""

    def __init__(self, policy: Any) -> None:
        super().__init__()
        self.features = _features(policy.q_net.features_extractor)
        self.head = policy.q_net.q_net

    def forward(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.features(obs))


class _ActorBody(nn.Module):
    """SAC (features → ``latent_pi`` → ``mu``, the mean before tanh) and TD3 (features → ``mu``)."""

    def __init__(self, policy: Any) -> None:
        super().__init__()
        actor = policy.actor
        self.features = _features(actor.features_extractor)
        self.latent = getattr(actor, "latent_pi", nn.Identity())
        self.mu = actor.mu

    def forward(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        return self.mu(self.latent(self.features(obs)))


def _body(policy: BasePolicy) -> tuple[nn.Module, bool]:
    """(raw-output network, whether its Box output still needs a tanh)."""
    if hasattr(policy, "mlp_extractor") and hasattr(policy, "action_net"):
        squash = bool(getattr(policy, "squash_output", False))  # gSDE with squash_output
        return _ActorCriticBody(policy), squash
    if hasattr(policy, "q_net") and hasattr(policy.q_net, "q_net"):
        return _QBody(policy), False
    actor = getattr(policy, "actor", None)
    if actor is not None and hasattr(actor, "mu"):
        return _ActorBody(policy), hasattr(actor, "latent_pi")  # SAC's mu is pre-tanh; TD3's is not
    raise UsageError(
        f"cannot export a {type(policy).__name__}: supported are actor-critic policies (PPO, A2C, "
        "MaskablePPO), DQN's Q-network and SAC / TD3 actors, NB2's or SB3's own"
    )


class PolicyGraph(nn.Module):
    """Raw observations (one tensor, or one per Dict key in key order) → (action, logits).

    With memory over time the observation is one step (the env's own, without the window) and
    :data:`MEMORY_INPUTS` follow it; :data:`MEMORY_OUTPUTS` follow the two outputs. Zeros (no
    valid past) start each episode."""

    low: torch.Tensor  # (n,) Box action bounds, buffers
    high: torch.Tensor

    def __init__(self, policy: BasePolicy, normalizer: ObsNormalizer | None = None) -> None:
        """``normalizer``: the model's observation normalisation (``normalize``), applied first."""
        super().__init__()
        self.normalizer = normalizer
        self.layout = getattr(policy, "memory_layout", None)
        """Where the policy reads its memory from (None: it has none)."""
        self.observation_space = policy.observation_space if self.layout is None else self.layout.step_space
        """What the graph takes: the policy's observation, or with memory one step of it."""
        self.action_space = policy.action_space
        self.normalize_images = bool(policy.normalize_images)
        obs = self.observation_space
        self.keys = list(obs.spaces) if isinstance(obs, spaces.Dict) else []
        self.body, self.tanh = (
            _body(policy) if self.layout is None else (_MemoryActorCriticBody(policy), False)
        )
        self.output_names = OUTPUTS + (MEMORY_OUTPUTS if self.layout is not None else [])
        # NB2's actor-critic policies apply an ``action_mask`` key to Discrete logits
        self.masked = (
            isinstance(policy, _ActorCriticMixin)
            and isinstance(self.action_space, spaces.Discrete)
            and ACTION_MASK_KEY in self.keys
        )
        act = self.action_space
        self.clip = isinstance(act, spaces.Box) and not (self.tanh or policy.squash_output)
        if isinstance(act, spaces.Box):
            low = torch.as_tensor(act.low, dtype=torch.float32).reshape(-1)
            high = torch.as_tensor(act.high, dtype=torch.float32).reshape(-1)
            self.register_buffer("low", low, persistent=False)  # (n,)
            self.register_buffer("high", high, persistent=False)  # (n,)
        self.eval()

    @property
    def memory_shape(self) -> tuple[int, int] | None:
        """(K, C) of the memory inputs; None without memory."""
        if self.layout is None:
            return None
        assert isinstance(self.body, _MemoryActorCriticBody)
        return self.layout.k, self.body.net.cfg.d_model

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        obs: torch.Tensor | dict[str, torch.Tensor]
        past = valid = None
        if self.layout is not None:
            *step, past, valid = inputs  # (B, K, C), (B, K)
            inputs = tuple(step)
        obs = dict(zip(self.keys, inputs, strict=True)) if self.keys else inputs[0]
        if self.normalizer is not None:
            if isinstance(obs, dict):
                obs = {**obs, OBS_KEY: self.normalizer(obs[OBS_KEY], obs.get(TASK_KEY))}
            else:
                obs = self.normalizer(obs)
        x = preprocess_obs(obs, self.observation_space, normalize_images=self.normalize_images)
        summary = None
        if past is not None:
            logits, summary = self.body(x, past, valid)  # (B, n), (B, C)
        else:
            logits = self.body(x)  # (B, n)
        if self.masked:
            assert isinstance(obs, dict)
            allowed = obs[ACTION_MASK_KEY].reshape(logits.shape) > 0.5  # (B, n)
            logits = logits.masked_fill(~allowed, MASKED_LOGIT)
        if summary is None:
            return self.decide(logits), logits
        assert past is not None and valid is not None
        new_past = torch.cat([summary.unsqueeze(1), past[:, :-1]], dim=1)  # (B, K, C): oldest dropped
        new_valid = torch.cat([torch.ones_like(valid[:, :1]), valid[:, :-1]], dim=1)  # (B, K)
        return self.decide(logits), logits, new_past, new_valid

    def decide(self, logits: torch.Tensor) -> torch.Tensor:
        """The deterministic action from the raw output (B, n)."""
        act = self.action_space
        b = logits.shape[0]
        if isinstance(act, spaces.Discrete):
            return logits.argmax(dim=-1)  # (B,)
        if isinstance(act, spaces.MultiDiscrete):
            sizes = [int(n) for n in act.nvec.ravel()]
            picks = [part.argmax(dim=-1) for part in torch.split(logits, sizes, dim=-1)]
            return torch.stack(picks, dim=-1).view(b, *act.shape)  # (B, *nvec.shape)
        if isinstance(act, spaces.MultiBinary):
            return (logits > 0).long().view(b, *act.shape)  # SB3: round(sigmoid(logit))
        assert isinstance(act, spaces.Box)
        if self.clip:
            a = torch.minimum(torch.maximum(logits, self.low), self.high)  # (B, n)
        else:
            a = torch.tanh(logits) if self.tanh else logits  # (B, n) in [-1, 1]
            a = self.low + 0.5 * (a + 1.0) * (self.high - self.low)
        return a.view(b, *act.shape)
