"""NB2 policies for the off-policy algorithms: DQN's Q-network, SAC's and TD3's actor and critics.

SB3 builds each network (Q-net, target Q-net, actor, critics) with its own features
extractor; here that extractor is NB2 with a single decoder query, followed by SB3's usual
small MLP head (which, for the critics, also takes the action).
"""

from __future__ import annotations

from typing import Any, ClassVar

from gymnasium import spaces
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.dqn.policies import DQNPolicy
from stable_baselines3.sac.policies import SACPolicy
from stable_baselines3.td3.policies import TD3Policy

from nb2_agents.nn.config import NB2Config
from nb2_agents.sb3.extractor import NB2Extractor, NB2PolicyMixin


class _OffPolicyMixin(NB2PolicyMixin):
    default_net_arch: ClassVar[list[int]] = []
    supports_sharing: ClassVar[bool] = True
    _share_encoder: bool | None

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        preset: str | NB2Config = "nano",
        sampling: bool | None = None,
        check_finite: bool = True,
        nb2_kwargs: dict[str, Any] | None = None,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        share_encoder: bool | None = None,
        **kwargs: Any,
    ) -> None:
        extractor_kwargs = self._nb2_setup(
            preset, sampling, check_finite, nb2_kwargs, 1, kwargs, adam_defaults={}
        )
        self._share_encoder = share_encoder
        if share_encoder is not None:
            if not self.supports_sharing:
                raise ValueError(
                    f"{type(self).__name__} has a single network; 'share_encoder' does not apply"
                )
            kwargs["share_features_extractor"] = share_encoder
        super().__init__(  # type: ignore[call-arg]
            observation_space,
            action_space,
            lr_schedule,
            net_arch=net_arch if net_arch is not None else list(self.default_net_arch),
            features_extractor_class=NB2Extractor,
            features_extractor_kwargs=extractor_kwargs,
            **kwargs,
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        if self._share_encoder is not None:
            data["share_encoder"] = self._share_encoder
        return data


class NB2DQNPolicy(_OffPolicyMixin, DQNPolicy):
    """NB2 Q-network policy for DQN: NB2 features → linear Q-values (``net_arch=[]`` by default).

    Options as :class:`~nb2_agents.sb3.actor_critic.NB2ActorCriticPolicy` (no ``share_encoder``).
    """

    supports_sharing = False


class NB2SACPolicy(_OffPolicyMixin, SACPolicy):
    """NB2 actor and critics for SAC. Each gets its own NB2 encoder unless ``share_encoder=True``.

    ``net_arch`` (default ``[64, 64]``) is the MLP head after NB2, as in SB3.
    """

    default_net_arch: ClassVar[list[int]] = [64, 64]


class NB2TD3Policy(_OffPolicyMixin, TD3Policy):
    """NB2 actor and critics for TD3 (and DDPG). Options as :class:`NB2SACPolicy`."""

    default_net_arch: ClassVar[list[int]] = [64, 64]
