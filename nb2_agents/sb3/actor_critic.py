"""NB2 actor-critic policies for PPO, A2C and sb3-contrib's MaskablePPO."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import maybe_transpose
from stable_baselines3.common.torch_layers import create_mlp
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.common.utils import is_vectorized_observation
from torch import nn

from nb2_agents.memory.layout import STEP_KEY, MemoryLayout, resolve_memory
from nb2_agents.memory.window import ObsWindow
from nb2_agents.nn.config import NB2Config
from nb2_agents.nn.tokenizer import ACTION_MASK_KEY
from nb2_agents.sb3.extractor import NB2Extractor, NB2PolicyMixin, reject_options, resolve_share_encoder

DEFAULT_SHARE_ENCODER = True
"""One NB2 encoder for actor and critic unless ``share_encoder`` (or SB3's
``share_features_extractor``) says otherwise: the one place this default is set."""


class NB2Heads(nn.Module):
    """SB3's ``mlp_extractor`` slot: splits NB2's (actor, critic) query outputs.

    Optional hidden layers run on each half, as SB3's ``MlpExtractor`` builds them:
    ``net_arch=[64]`` for both, ``dict(pi=[...], vf=[...])`` for each, each layer followed by
    ``activation_fn``.
    ``critic_grad_scale`` scales the value loss's gradient on its way back into the network
    that the actor shares (the forward pass is unchanged); 1.0 leaves it as is.
    """

    def __init__(
        self,
        d_model: int,
        net_arch: list[int] | dict[str, list[int]],
        activation_fn: type[nn.Module],
        critic_grad_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.critic_grad_scale = critic_grad_scale
        arch = net_arch if isinstance(net_arch, dict) else {"pi": net_arch, "vf": net_arch}
        unknown = sorted(set(arch) - {"pi", "vf"})
        if unknown:
            raise ValueError(
                f"net_arch keys {unknown} are not actor-critic heads; use dict(pi=[...], vf=[...]) "
                "or a list for both"
            )
        self.d_model = d_model
        self.pi = nn.Sequential(*create_mlp(d_model, -1, list(arch.get("pi", [])), activation_fn))
        self.vf = nn.Sequential(*create_mlp(d_model, -1, list(arch.get("vf", [])), activation_fn))
        self.latent_dim_pi = arch["pi"][-1] if arch.get("pi") else d_model
        self.latent_dim_vf = arch["vf"][-1] if arch.get("vf") else d_model

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return self.pi(features[:, : self.d_model])  # the actor query's output

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        latent = features[:, self.d_model : 2 * self.d_model]  # the critic query's output
        if self.critic_grad_scale != 1.0 and torch.is_grad_enabled():
            s = self.critic_grad_scale  # value unchanged, gradient times s
            latent = latent * s + latent.detach() * (1.0 - s)
        return self.vf(latent)


class _ActorCriticMixin(NB2PolicyMixin):
    """What PPO / A2C and MaskablePPO policies share: the heads and NB2's own init."""

    net_arch: Any
    activation_fn: type[nn.Module]
    ortho_init: bool
    _share_encoder: bool
    # SB3 options this policy's base class does not take, and why
    _not_applicable: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        preset: str | NB2Config = "nano",
        sampling: bool | None = None,
        share_encoder: bool | None = None,
        critic_grad_scale: float = 0.2,
        check_finite: bool | None = None,
        nb2_kwargs: dict[str, Any] | None = None,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        memory: int | None = None,
        **kwargs: Any,
    ) -> None:
        reject_options(type(self).__name__, kwargs, self._not_applicable)
        resolve_memory(type(self).__name__, memory, observation_space)
        self.memory_layout = MemoryLayout.of(observation_space)
        """Where each observation carries its env's last K steps; None without memory."""
        share = resolve_share_encoder(type(self).__name__, share_encoder, kwargs)
        # SB3's actor-critic policies use Adam with eps=1e-5 (from OpenAI baselines)
        extractor_kwargs = self._nb2_setup(
            preset, sampling, check_finite, nb2_kwargs, 2, kwargs, adam_defaults={"eps": 1e-5}
        )
        self._share_encoder = DEFAULT_SHARE_ENCODER if share is None else share
        self._critic_grad_scale = critic_grad_scale
        super().__init__(  # type: ignore[call-arg]
            observation_space,
            action_space,
            lr_schedule,
            net_arch=net_arch if net_arch is not None else [],
            features_extractor_class=NB2Extractor,
            features_extractor_kwargs=extractor_kwargs,
            share_features_extractor=self._share_encoder,
            **kwargs,
        )
        self._forget_reshaped_optimizer_state()

    def _build_mlp_extractor(self) -> None:
        scale = self._critic_grad_scale if self._share_encoder else 1.0
        self.mlp_extractor = NB2Heads(  # type: ignore[assignment]
            self.nb2_config.d_model, self.net_arch, self.activation_fn, critic_grad_scale=scale
        )

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)  # type: ignore[misc]
        # With ortho_init, SB3's orthogonal init (gain sqrt 2, zero biases) also reaches the
        # features extractor, and would reset NB2's gate biases, which must start near the
        # identity: the heads keep SB3's init (hidden layers sqrt 2, action_net 0.01,
        # value_net 1), NB2 gets its own back. Without it SB3 leaves every module as built.
        if self.ortho_init:
            for net in self.nb2_networks():
                net.reset_parameters()

    # An ``action_mask`` observation key (curricula whose tasks have fewer actions than the
    # shared space) is kept for _get_action_dist_from_latent, which each SB3 path that builds a
    # distribution calls after reading the observation: forward and evaluate_actions through
    # extract_features, get_distribution (predict) directly.
    def _keep_action_mask(self, obs: Any) -> None:
        self._obs_action_mask = obs.get(ACTION_MASK_KEY) if isinstance(obs, dict) else None

    def extract_features(self, obs: Any, features_extractor: Any = None) -> Any:
        self._keep_action_mask(obs)
        return super().extract_features(obs, features_extractor)  # type: ignore[misc]

    def get_distribution(self, obs: Any, *args: Any, **kwargs: Any) -> Any:
        self._keep_action_mask(obs)
        return super().get_distribution(obs, *args, **kwargs)  # type: ignore[misc]

    def _get_action_dist_from_latent(self, latent_pi: torch.Tensor) -> Any:
        mask = getattr(self, "_obs_action_mask", None)
        if mask is None or not isinstance(self.action_space, spaces.Discrete):  # type: ignore[attr-defined]
            return super()._get_action_dist_from_latent(latent_pi)  # type: ignore[misc]
        logits = self.action_net(latent_pi)  # type: ignore[attr-defined]  # (B, n)
        logits = logits.masked_fill(mask.reshape(logits.shape) < 0.5, -1e8)  # invalid: probability 0
        return self.action_dist.proba_distribution(action_logits=logits)  # type: ignore[attr-defined]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data["share_encoder"] = self._share_encoder
        data["critic_grad_scale"] = self._critic_grad_scale
        data["memory"] = None if self.memory_layout is None else self.memory_layout.k
        return data

    def predict(
        self,
        observation: Any,
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
        **kwargs: Any,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """SB3's ``predict``; with memory on, ``state`` carries it as ``RecurrentPPO``'s does.

        An observation from a :class:`~nb2_agents.memory.MemoryWindow` env holds its memory
        already (``state`` is not needed and None comes back). A plain observation of the env
        underneath takes its memory from ``state`` (None at the first step), which the envs
        where ``episode_start`` is true forget; the state after this step comes back, to pass
        on with the next observation (``evaluate_policy`` does). ``kwargs``: the base class's
        (MaskablePPO's ``action_masks``)."""
        layout = self.memory_layout
        if layout is None or layout.carries(observation):
            return super().predict(observation, state, episode_start, deterministic, **kwargs)  # type: ignore[misc]
        step = observation if layout.is_dict else {STEP_KEY: observation}
        step = {key: np.asarray(value) for key, value in step.items()}
        batched = is_vectorized_observation(step[layout.past_keys[0]], layout.step_part(layout.past_keys[0]))
        if not batched:
            step = {key: value[None] for key, value in step.items()}  # a batch of one env
        step = {key: maybe_transpose(value, layout.step_part(key)) for key, value in step.items()}
        window = ObsWindow.from_state(layout, state, len(next(iter(step.values()))))
        if episode_start is not None:
            window.clear(np.asarray(episode_start, dtype=bool))
        parts = step if layout.is_dict else step[STEP_KEY]
        actions, _ = super().predict(window.compose(parts), None, None, deterministic, **kwargs)  # type: ignore[misc]
        window.push(parts)
        return (actions if batched else actions[0]), window.state()


class NB2ActorCriticPolicy(_ActorCriticMixin, ActorCriticPolicy):  # type: ignore[misc]
    """NB2 actor-critic policy for PPO and A2C (``PPO(NB2Policy, env)`` or ``PPO("NB2Policy", env)``).

    :param preset: ``"nano"``, ``"small"``, ``"base"`` or an :class:`NB2Config`
    :param sampling: adaptive token sampling on / off (None: the preset's)
    :param share_encoder: one NB2 encoder for actor and critic (True) or one each (False);
        ``share_features_extractor``, SB3's name for it, is accepted too. Default:
        :data:`DEFAULT_SHARE_ENCODER`
    :param critic_grad_scale: with a shared encoder, the value loss's gradient into the shared
        network is scaled by this. Value targets (returns) are orders of magnitude larger than
        the policy loss, and at full scale they reshaped the features under the actor: PPO +
        NB2-nano on CartPole collapsed late in 2 of 4 seeds; at 0.2, none did (SB3's MlpPolicy
        avoids this with separate actor and critic networks). Ignored with separate encoders.
    :param check_finite: raise ``ValueError`` on NaN / Inf observations (None: True)
    :param nb2_kwargs: other :class:`NB2Config` fields to override
    :param net_arch: hidden layers after NB2, a list (both heads) or ``dict(pi=[...], vf=[...])``;
        none by default
    :param memory: memory over time, the last ``memory`` steps of each env (``nn/temporal.py``);
        the env must be wrapped in :class:`~nb2_agents.memory.MemoryWindow` with the same K,
        which also sets it when left out. ``predict`` then carries the memory in ``state``
    :param kwargs: the rest of SB3's ``ActorCriticPolicy`` arguments, with SB3's meaning:
        ``activation_fn`` after each ``net_arch`` layer; ``ortho_init`` SB3's orthogonal init of
        the heads (NB2 keeps its own); ``use_sde``, ``log_std_init``, ``full_std``, ``use_expln``,
        ``squash_output`` for ``Box`` actions; ``features_extractor_kwargs`` as in
        :class:`~nb2_agents.sb3.extractor.NB2PolicyMixin`
    """


class MaskableNB2Policy(_ActorCriticMixin, MaskableActorCriticPolicy):  # type: ignore[misc]
    """NB2 actor-critic policy for sb3-contrib's MaskablePPO; invalid actions get zero probability.

    Takes the same options as :class:`NB2ActorCriticPolicy`, except the ``Box`` ones.
    """

    _not_applicable: ClassVar[dict[str, str]] = {
        key: "MaskablePPO's actions are discrete, and sb3-contrib's MaskableActorCriticPolicy has no "
        "Gaussian (or gSDE) distribution for it to configure"
        for key in ("use_sde", "log_std_init", "full_std", "use_expln", "squash_output")
    }
