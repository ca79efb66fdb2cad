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

from nb2_agents.memory.layout import reject_memory
from nb2_agents.nn.config import NB2Config
from nb2_agents.sb3.extractor import NB2Extractor, NB2PolicyMixin, reject_options, resolve_share_encoder

_NO_ORTHO = "ortho_init is an option of SB3's actor-critic policies (PPO / A2C); {} keeps PyTorch's init"
_NO_SDE = "{} has a deterministic actor (no Gaussian to explore with gSDE or to set a log std for)"


class _OffPolicyMixin(NB2PolicyMixin):
    default_net_arch: ClassVar[list[int]] = []
    net_arch_keys: ClassVar[tuple[str, ...]] = ("pi", "qf")
    """The keys of a dict ``net_arch`` (empty: only a list, one network)."""
    supports_sharing: ClassVar[bool] = True
    not_applicable: ClassVar[dict[str, str]] = {}
    """SB3 options the base policy does not take, and why."""
    _share_encoder: bool | None

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        preset: str | NB2Config = "nano",
        sampling: bool | None = None,
        check_finite: bool | None = None,
        nb2_kwargs: dict[str, Any] | None = None,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        share_encoder: bool | None = None,
        memory: int | None = None,
        **kwargs: Any,
    ) -> None:
        name = type(self).__name__
        reject_memory(name.removeprefix("NB2").removesuffix("Policy"), memory, observation_space)
        reject_options(name, kwargs, self.not_applicable)
        if not self.supports_sharing and (share_encoder is not None or "share_features_extractor" in kwargs):
            key = "share_encoder" if share_encoder is not None else "share_features_extractor"
            raise ValueError(
                f"{name}: policy_kwargs[{key!r}] does not apply: DQN has a single network (its "
                "target is a copy, never shared), and SB3's DQNPolicy takes no share_features_extractor"
            )
        self._share_encoder = resolve_share_encoder(name, share_encoder, kwargs)
        if self._share_encoder is not None:
            kwargs["share_features_extractor"] = self._share_encoder
        self._check_net_arch(net_arch)
        extractor_kwargs = self._nb2_setup(
            preset, sampling, check_finite, nb2_kwargs, 1, kwargs, adam_defaults={}
        )
        super().__init__(  # type: ignore[call-arg]
            observation_space,
            action_space,
            lr_schedule,
            net_arch=net_arch if net_arch is not None else list(self.default_net_arch),
            features_extractor_class=NB2Extractor,
            features_extractor_kwargs=extractor_kwargs,
            **kwargs,
        )
        self._forget_reshaped_optimizer_state()

    def _check_net_arch(self, net_arch: Any) -> None:
        if not isinstance(net_arch, dict):
            return
        keys = self.net_arch_keys
        if not keys:
            raise ValueError(
                f"{type(self).__name__}: net_arch must be a list of hidden sizes (one Q-network), "
                f"got {net_arch!r}"
            )
        if sorted(net_arch) != sorted(keys):
            raise ValueError(
                f"{type(self).__name__}: a dict net_arch needs exactly the keys {list(keys)} (actor, "
                f"critics), got {sorted(net_arch)}"
            )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        if self.supports_sharing:
            # SB3 leaves share_features_extractor out of its own: saved here, under NB2's name
            data["share_encoder"] = bool(getattr(self, "share_features_extractor", False))
        return data


class NB2DQNPolicy(_OffPolicyMixin, DQNPolicy):
    """NB2 Q-network policy for DQN: NB2 features → linear Q-values (``net_arch=[]`` by default).

    Options as :class:`~nb2_agents.sb3.actor_critic.NB2ActorCriticPolicy`, except those that
    need two networks or a Gaussian actor: ``share_encoder`` / ``share_features_extractor``,
    ``ortho_init``, ``use_sde`` and ``log_std_init`` raise a ``ValueError`` saying why.
    ``net_arch`` is a list (hidden layers of the Q-head), ``activation_fn`` follows each.
    """

    net_arch_keys: ClassVar[tuple[str, ...]] = ()
    supports_sharing = False
    not_applicable: ClassVar[dict[str, str]] = {
        "ortho_init": _NO_ORTHO.format("SB3's DQNPolicy"),
        "use_sde": "DQN acts greedily on Q-values (epsilon-greedy exploration); there is no Gaussian",
        "log_std_init": "DQN acts greedily on Q-values; there is no Gaussian",
    }


class NB2SACPolicy(_OffPolicyMixin, SACPolicy):
    """NB2 actor and critics for SAC. Each gets its own NB2 encoder unless ``share_encoder=True``
    (or SB3's ``share_features_extractor=True``); then the critic reuses the actor's, as in SB3.

    ``net_arch`` (default ``[64, 64]``) is SB3's MLP head after NB2: a list for the actor and
    critics, or ``dict(pi=[...], qf=[...])``; ``activation_fn`` follows each layer.
    ``use_sde``, ``log_std_init``, ``use_expln`` and ``clip_mean`` are SB3's. ``ortho_init``
    raises a ``ValueError`` (SB3's SACPolicy has none).
    """

    default_net_arch: ClassVar[list[int]] = [64, 64]
    not_applicable: ClassVar[dict[str, str]] = {"ortho_init": _NO_ORTHO.format("SB3's SACPolicy")}


class NB2TD3Policy(_OffPolicyMixin, TD3Policy):
    """NB2 actor and critics for TD3 (and DDPG). Options as :class:`NB2SACPolicy`, less the
    Gaussian's: ``use_sde`` and ``log_std_init`` raise a ``ValueError``, as does ``ortho_init``.
    """

    default_net_arch: ClassVar[list[int]] = [64, 64]
    not_applicable: ClassVar[dict[str, str]] = {
        "ortho_init": _NO_ORTHO.format("SB3's TD3Policy"),
        "use_sde": _NO_SDE.format("TD3"),
        "log_std_init": _NO_SDE.format("TD3"),
    }
