"""What a policy outputs on a batch of observations, in one form for teachers and students.

:class:`Outputs` holds the action distribution's parameters (log-probabilities for Discrete
actions; mean and log standard deviation for Box actions, or a deterministic action) and a
value estimate. Box actions are in the env's units throughout: SB3's actor-critic Gaussians
already are; SAC's and TD3's tanh-squashed actions are mapped back to the env's bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy

from nb2_agents.retention.heads import actor_critic_forward
from nb2_agents.sb3 import algos

Obs = Any
"""A tensor, or a dict of tensors for Dict observation spaces (as SB3's ``obs_to_tensor`` gives)."""


@dataclass
class Outputs:
    """A policy's outputs on a batch of B observations."""

    log_probs: torch.Tensor | None = None
    """(B, n) log-probabilities of Discrete actions."""
    mean: torch.Tensor | None = None
    """(B, d) Box actions: the Gaussian's mean, or the deterministic action, in env units."""
    log_std: torch.Tensor | None = None
    """(B, d) the Gaussian's log standard deviation; None for a deterministic policy."""
    value: torch.Tensor | None = None
    """(B,) a value estimate (V, max Q or Q at the policy's action); None without a critic."""


def distribution_outputs(dist: Any, value: torch.Tensor | None, temperature: float = 1.0) -> Outputs:
    """:class:`Outputs` of an SB3 ``Distribution``; categorical logits are divided by ``temperature``."""
    inner = dist.distribution
    if isinstance(inner, torch.distributions.Categorical):
        return Outputs(log_probs=F.log_softmax(inner.logits / temperature, dim=-1), value=value)
    if isinstance(inner, torch.distributions.Normal):
        return Outputs(mean=inner.mean, log_std=inner.stddev.log(), value=value)
    raise TypeError(f"cannot distil a {type(dist).__name__}; supported: Discrete and Box actions")


def _unscale(policy: BasePolicy, scaled: torch.Tensor) -> torch.Tensor:
    """A squashed action in [-1, 1] mapped to the action space's bounds (SB3's ``unscale_action``)."""
    space = policy.action_space
    assert isinstance(space, spaces.Box)
    low = torch.as_tensor(space.low, dtype=scaled.dtype, device=scaled.device)
    high = torch.as_tensor(space.high, dtype=scaled.dtype, device=scaled.device)
    return low + 0.5 * (scaled + 1.0) * (high - low)


def policy_outputs(policy: Any, algo: str, obs: Obs, temperature: float = 1.0) -> Outputs:
    """:class:`Outputs` of any supported SB3 policy.

    * PPO, A2C, MaskablePPO: the action distribution (logits / ``temperature``) and V(s);
    * DQN: ``log_softmax(Q / temperature)`` and max Q;
    * SAC: the deterministic action ``tanh(mean)`` in env units (its Gaussian lives before the
      squashing, where the student's does not) and Q1(s, a);
    * TD3: the actor's action in env units and Q1(s, a).
    """
    family = algos.get(algo).family
    if family == "q":
        q = policy.q_net(obs)  # (B, n)
        return Outputs(log_probs=F.log_softmax(q / temperature, dim=-1), value=q.max(dim=-1).values)
    if family in ("sac", "td3"):
        scaled = policy.actor(obs, deterministic=True) if family == "sac" else policy.actor(obs)  # (B, d)
        value = policy.critic(obs, scaled)[0].reshape(-1)
        return Outputs(mean=_unscale(policy, scaled), value=value)
    dist, value = actor_critic_forward(policy, obs)
    return distribution_outputs(dist, value, temperature)
