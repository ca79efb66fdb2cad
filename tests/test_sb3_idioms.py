"""SB3's own policy options on NB2 policies: same meaning as in SB3, or an error saying why not.

Issue 13, point 4: ``share_features_extractor``, ``features_extractor_class`` /
``features_extractor_kwargs``, ``net_arch``, ``activation_fn``, ``ortho_init``, ``log_std_init``
and ``use_sde`` through ``policy_kwargs``; saved models rebuild the same policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3 import DQN, PPO, SAC
from stable_baselines3.common.distributions import DiagGaussianDistribution, StateDependentNoiseDistribution
from stable_baselines3.common.envs import IdentityEnv, IdentityEnvBox
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.sac.policies import SACPolicy
from torch import nn

from nb2_agents import (
    MaskableNB2Policy,
    NB2ActorCriticPolicy,
    NB2DQNPolicy,
    NB2SACPolicy,
    NB2TD3Policy,
    get_config,
)
from nb2_agents.nn.blocks import GatedResidual
from nb2_agents.sb3.actor_critic import DEFAULT_SHARE_ENCODER
from nb2_agents.sb3.extractor import EXTRACTOR_KWARGS, NB2Extractor

pytestmark = pytest.mark.filterwarnings(
    # SB3's own advice about Monitor wrappers and the like is expected with these test envs
    "ignore::UserWarning:stable_baselines3.*",
)

OBS = spaces.Box(-1, 1, (5,))
BOX = spaces.Box(-1, 1, (2,))
D_MODEL = get_config("nano").d_model
SB3_KEYS = ("features_extractor_class", "features_extractor_kwargs", "share_features_extractor")


def lr_schedule(_: float) -> float:
    return 1e-3


AC_POLICIES = [NB2ActorCriticPolicy, MaskableNB2Policy]
ALL_POLICIES = [
    (NB2ActorCriticPolicy, spaces.Discrete(3), 2),
    (MaskableNB2Policy, spaces.Discrete(3), 2),
    (NB2DQNPolicy, spaces.Discrete(3), 1),
    (NB2SACPolicy, BOX, 1),
    (NB2TD3Policy, BOX, 1),
]
ALL_IDS = [cls.__name__ for cls, _, _ in ALL_POLICIES]


def linears(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def layer_types(module: nn.Module) -> list[type[nn.Module]]:
    return [type(m) for m in module.children()]


def predictions_agree(a: Any, b: Any, obs: np.ndarray) -> None:
    np.testing.assert_allclose(a.predict(obs, deterministic=True)[0], b.predict(obs, deterministic=True)[0])


# --- share_features_extractor ---------------------------------------------------------------------


@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("policy_class", AC_POLICIES)
def test_share_features_extractor_is_share_encoder(policy_class, share: bool) -> None:
    sb3 = policy_class(OBS, spaces.Discrete(2), lr_schedule, share_features_extractor=share)
    ours = policy_class(OBS, spaces.Discrete(2), lr_schedule, share_encoder=share)
    both = policy_class(
        OBS, spaces.Discrete(2), lr_schedule, share_encoder=share, share_features_extractor=share
    )
    for policy in (sb3, ours, both):
        assert policy.share_features_extractor is share
        assert len(policy.nb2_networks()) == (1 if share else 2)
        assert (policy.pi_features_extractor is policy.vf_features_extractor) is share
        assert policy.mlp_extractor.critic_grad_scale == (0.2 if share else 1.0)
        params = policy._get_constructor_parameters()
        assert params["share_encoder"] is share  # one name, NB2's
        assert not set(SB3_KEYS) & set(params)


@pytest.mark.parametrize("policy_class", AC_POLICIES)
def test_share_encoder_default(policy_class) -> None:
    policy = policy_class(OBS, spaces.Discrete(2), lr_schedule)
    assert policy.share_features_extractor is DEFAULT_SHARE_ENCODER
    assert policy._get_constructor_parameters()["share_encoder"] is DEFAULT_SHARE_ENCODER


@pytest.mark.parametrize(
    ("policy_class", "action_space"), [(NB2ActorCriticPolicy, spaces.Discrete(2)), (NB2SACPolicy, BOX)]
)
def test_share_names_that_disagree_are_an_error(policy_class, action_space) -> None:
    with pytest.raises(ValueError, match=r"share_encoder.*share_features_extractor"):
        policy_class(OBS, action_space, lr_schedule, share_encoder=True, share_features_extractor=False)


@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("policy_class", [NB2SACPolicy, NB2TD3Policy])
def test_off_policy_share_features_extractor(policy_class, share: bool) -> None:
    sb3 = policy_class(OBS, BOX, lr_schedule, share_features_extractor=share)
    ours = policy_class(OBS, BOX, lr_schedule, share_encoder=share)
    for policy in (sb3, ours):
        assert policy.share_features_extractor is share
        assert (policy.actor.features_extractor is policy.critic.features_extractor) is share
        assert policy._get_constructor_parameters()["share_encoder"] is share
    assert len(sb3.nb2_networks()) == len(ours.nb2_networks())
    # the default is SB3's: one encoder each
    assert policy_class(OBS, BOX, lr_schedule)._get_constructor_parameters()["share_encoder"] is False


@pytest.mark.parametrize("key", ["share_features_extractor", "share_encoder"])
def test_dqn_rejects_sharing_with_the_reason(key: str) -> None:
    with pytest.raises(ValueError, match=rf"'{key}'.*single network"):
        NB2DQNPolicy(OBS, spaces.Discrete(2), lr_schedule, **{key: False})


# --- save / load ----------------------------------------------------------------------------------

ROUND_TRIPS = {
    "PPO-separate": (
        PPO,
        lambda: IdentityEnv(3),
        {
            "share_features_extractor": False,
            "features_extractor_kwargs": {"features_dim": 48, "sampling": False},
            "net_arch": {"pi": [8], "vf": [8]},
            "ortho_init": False,
        },
    ),
    "SAC-shared-sde": (
        SAC,
        IdentityEnvBox,
        {
            "share_features_extractor": True,
            "features_extractor_kwargs": {"features_dim": 16, "check_finite": False},
            "net_arch": {"pi": [8], "qf": [8]},
            "log_std_init": -2.0,
        },
    ),
    "DQN": (DQN, lambda: IdentityEnv(3), {"features_extractor_kwargs": {"d_model": 16}, "net_arch": [8]}),
}


@pytest.mark.parametrize("case", list(ROUND_TRIPS))
def test_save_load_rebuilds_the_same_policy(case: str, tmp_path: Path) -> None:
    algo, make_env, policy_kwargs = ROUND_TRIPS[case]
    extra = {"use_sde": True} if algo is SAC else {}
    model = algo("NB2Policy", make_env(), policy_kwargs=policy_kwargs, seed=0, **extra)
    obs = np.stack([model.observation_space.sample() for _ in range(4)])
    # the whole model
    model.save(tmp_path / "model.zip")
    loaded = algo.load(tmp_path / "model.zip")
    # the policy alone, rebuilt from _get_constructor_parameters
    model.policy.save(tmp_path / "policy.pt")
    policy = type(model.policy).load(tmp_path / "policy.pt")
    for other in (loaded.policy, policy):
        assert type(other) is type(model.policy)
        assert other.nb2_config == model.policy.nb2_config
        assert getattr(other, "share_features_extractor", None) == getattr(
            model.policy, "share_features_extractor", None
        )
        assert len(other.nb2_networks()) == len(model.policy.nb2_networks())
        assert [n.check_finite for n in other.nb2_networks()] == [
            n.check_finite for n in model.policy.nb2_networks()
        ]
        assert linears(other) == linears(model.policy)
        predictions_agree(model.policy, other, obs)
    params = model.policy._get_constructor_parameters()
    assert not set(SB3_KEYS) & set(params)


# --- features_extractor_class / features_extractor_kwargs -----------------------------------------


@pytest.mark.parametrize(("policy_class", "action_space", "n_queries"), ALL_POLICIES, ids=ALL_IDS)
def test_features_extractor_class_nb2_is_accepted(policy_class, action_space, n_queries: int) -> None:
    policy = policy_class(OBS, action_space, lr_schedule, features_extractor_class=NB2Extractor)
    assert all(
        isinstance(m.net.cfg, type(policy.nb2_config))
        for m in policy.modules()
        if isinstance(m, NB2Extractor)
    )
    with pytest.raises(ValueError, match=r"features_extractor_class.*FlattenExtractor.*MlpPolicy"):
        policy_class(OBS, action_space, lr_schedule, features_extractor_class=FlattenExtractor)


@pytest.mark.parametrize("algo", [PPO, DQN])
def test_features_extractor_class_rejected_through_policy_kwargs(algo) -> None:
    with pytest.raises(ValueError, match="features_extractor_class"):
        algo("NB2Policy", IdentityEnv(3), policy_kwargs={"features_extractor_class": FlattenExtractor})


@pytest.mark.parametrize(("policy_class", "action_space", "n_queries"), ALL_POLICIES, ids=ALL_IDS)
def test_features_dim_sizes_the_extractor_output(policy_class, action_space, n_queries: int) -> None:
    features_dim = 16 * n_queries
    policy = policy_class(
        OBS, action_space, lr_schedule, features_extractor_kwargs={"features_dim": features_dim}
    )
    assert policy.nb2_config.d_model == 16
    extractors = [m for m in policy.modules() if isinstance(m, NB2Extractor)]
    assert extractors and all(m.features_dim == features_dim for m in extractors)
    params = policy._get_constructor_parameters()
    assert params["nb2_kwargs"] == {"d_model": 16}
    # the same width as given, agreeing with nb2_kwargs, is fine
    same = policy_class(
        OBS,
        action_space,
        lr_schedule,
        nb2_kwargs={"d_model": 16},
        features_extractor_kwargs={"features_dim": features_dim},
    )
    assert same.nb2_config == policy.nb2_config


@pytest.mark.parametrize(
    ("extractor_kwargs", "other", "match"),
    [
        ({"features_dim": 47}, {}, "multiple of 2"),
        ({"features_dim": 50}, {}, r"features_dim'\]=50 gives d_model 25.*divisible by n_heads"),
        ({"features_dim": 0}, {}, "positive integer"),
        (
            {"features_dim": 48},
            {"nb2_kwargs": {"d_model": 16}},
            r"features_dim'\]=48 means d_model 24.*nb2_kwargs",
        ),
        ({"features_dim": 48, "d_model": 16}, {}, r"features_dim'\]=48 means d_model 24.*'d_model'\]=16"),
        (
            {"d_model": 48},
            {"nb2_kwargs": {"d_model": 16}},
            r"nb2_kwargs'\]\['d_model'\]=16 and .*'d_model'\]=48",
        ),
        ({"sampling": False}, {"sampling": True}, r"'sampling'\]=True and .*'sampling'\]=False"),
        (
            {"check_finite": False},
            {"check_finite": True},
            r"'check_finite'\]=True and .*'check_finite'\]=False",
        ),
    ],
)
def test_features_extractor_kwargs_conflicts(extractor_kwargs, other, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        NB2ActorCriticPolicy(
            OBS, spaces.Discrete(2), lr_schedule, features_extractor_kwargs=extractor_kwargs, **other
        )


@pytest.mark.parametrize(("policy_class", "action_space", "n_queries"), ALL_POLICIES, ids=ALL_IDS)
def test_nb2_fields_in_features_extractor_kwargs(policy_class, action_space, n_queries: int) -> None:
    extractor_kwargs = {"d_model": 16, "n_heads": 4, "sampling": False, "check_finite": False}
    policy = policy_class(OBS, action_space, lr_schedule, features_extractor_kwargs=extractor_kwargs)
    cfg = policy.nb2_config
    assert (cfg.d_model, cfg.n_heads, cfg.sampling) == (16, 4, False)
    assert not any(net.check_finite for net in policy.nb2_networks())
    params = policy._get_constructor_parameters()
    assert params["sampling"] is False and params["check_finite"] is False
    assert params["nb2_kwargs"] == {"d_model": 16, "n_heads": 4}
    assert not set(SB3_KEYS) & set(params)
    # the same as nb2_kwargs
    plain = policy_class(
        OBS,
        action_space,
        lr_schedule,
        nb2_kwargs={"d_model": 16, "n_heads": 4},
        sampling=False,
        check_finite=False,
    )
    assert plain.nb2_config == cfg
    assert linears(plain) == linears(policy)


@pytest.mark.parametrize(("policy_class", "action_space", "n_queries"), ALL_POLICIES, ids=ALL_IDS)
@pytest.mark.parametrize("key", ["normalized_image", "config", "n_queries"])
def test_unknown_features_extractor_kwarg_lists_accepted_keys(
    policy_class, action_space, n_queries, key
) -> None:
    with pytest.raises(ValueError, match=rf"\['{key}'\] has no meaning for NB2") as info:
        policy_class(OBS, action_space, lr_schedule, features_extractor_kwargs={key: 1})
    for name in EXTRACTOR_KWARGS:
        assert repr(name) in str(info.value)


# --- net_arch and activation_fn -------------------------------------------------------------------

SB3_OBS = spaces.Box(-1, 1, (D_MODEL,))  # flattened, as wide as NB2's output: same head inputs


@pytest.mark.parametrize(
    "net_arch",
    [[16], [16, 8], {"pi": [16], "vf": [8, 4]}, {"pi": [12]}],
    ids=["one", "two", "dict", "pi-only"],
)
@pytest.mark.parametrize("activation_fn", [nn.ReLU, nn.Tanh])
def test_actor_critic_heads_as_sb3_builds_them(net_arch, activation_fn) -> None:
    ours = NB2ActorCriticPolicy(SB3_OBS, BOX, lr_schedule, net_arch=net_arch, activation_fn=activation_fn)
    sb3 = ActorCriticPolicy(SB3_OBS, BOX, lr_schedule, net_arch=net_arch, activation_fn=activation_fn)
    assert layer_types(ours.mlp_extractor.pi) == layer_types(sb3.mlp_extractor.policy_net)
    assert layer_types(ours.mlp_extractor.vf) == layer_types(sb3.mlp_extractor.value_net)
    assert linears(ours.mlp_extractor.pi) == linears(sb3.mlp_extractor.policy_net)
    assert linears(ours.mlp_extractor.vf) == linears(sb3.mlp_extractor.value_net)
    assert linears(ours.action_net) == linears(sb3.action_net)
    assert linears(ours.value_net) == linears(sb3.value_net)
    assert activation_fn in layer_types(ours.mlp_extractor.pi)
    with torch.no_grad():
        actions, values, _ = ours(torch.randn(3, D_MODEL))
    assert actions.shape == (3, 2) and values.shape == (3, 1)


def test_actor_critic_default_activation_is_sb3s() -> None:
    policy = NB2ActorCriticPolicy(OBS, spaces.Discrete(2), lr_schedule, net_arch=[8])
    assert policy.activation_fn is nn.Tanh and nn.Tanh in layer_types(policy.mlp_extractor.pi)


def test_actor_critic_net_arch_unknown_key() -> None:
    with pytest.raises(ValueError, match=r"\['qf'\].*dict\(pi=\[...\], vf=\[...\]\)"):
        NB2ActorCriticPolicy(OBS, spaces.Discrete(2), lr_schedule, net_arch={"pi": [8], "qf": [8]})


@pytest.mark.parametrize("net_arch", [[16], {"pi": [16], "qf": [8, 4]}], ids=["list", "dict"])
@pytest.mark.parametrize("activation_fn", [nn.ReLU, nn.Tanh])
def test_sac_heads_as_sb3_builds_them(net_arch, activation_fn) -> None:
    ours = NB2SACPolicy(SB3_OBS, BOX, lr_schedule, net_arch=net_arch, activation_fn=activation_fn)
    sb3 = SACPolicy(SB3_OBS, BOX, lr_schedule, net_arch=net_arch, activation_fn=activation_fn)
    for name in ("latent_pi", "mu", "log_std"):
        assert linears(getattr(ours.actor, name)) == linears(getattr(sb3.actor, name))
    assert layer_types(ours.actor.latent_pi) == layer_types(sb3.actor.latent_pi)
    for q_ours, q_sb3 in zip(ours.critic.q_networks, sb3.critic.q_networks, strict=True):
        assert linears(q_ours) == linears(q_sb3) and layer_types(q_ours) == layer_types(q_sb3)
    assert activation_fn in layer_types(ours.actor.latent_pi)


def test_td3_and_dqn_heads() -> None:
    td3 = NB2TD3Policy(OBS, BOX, lr_schedule, net_arch={"pi": [16], "qf": [8]}, activation_fn=nn.Tanh)
    assert linears(td3.actor.mu) == [(D_MODEL, 16), (16, 2)]
    assert nn.Tanh in layer_types(td3.actor.mu)
    assert linears(td3.critic.q_networks[0]) == [(D_MODEL + 2, 8), (8, 1)]
    dqn = NB2DQNPolicy(OBS, spaces.Discrete(3), lr_schedule, net_arch=[16, 8], activation_fn=nn.Tanh)
    assert linears(dqn.q_net.q_net) == [(D_MODEL, 16), (16, 8), (8, 3)]
    assert layer_types(dqn.q_net.q_net).count(nn.Tanh) == 2
    assert linears(NB2DQNPolicy(OBS, spaces.Discrete(3), lr_schedule).q_net.q_net) == [(D_MODEL, 3)]


@pytest.mark.parametrize(
    ("policy_class", "action_space", "net_arch", "match"),
    [
        (NB2DQNPolicy, spaces.Discrete(3), {"pi": [8], "qf": [8]}, "list of hidden sizes"),
        (NB2SACPolicy, BOX, {"pi": [8]}, r"exactly the keys \['pi', 'qf'\]"),
        (NB2TD3Policy, BOX, {"pi": [8], "vf": [8]}, r"exactly the keys \['pi', 'qf'\]"),
    ],
)
def test_off_policy_net_arch_errors(policy_class, action_space, net_arch, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        policy_class(OBS, action_space, lr_schedule, net_arch=net_arch)


# --- ortho_init -----------------------------------------------------------------------------------


def gram(weight: torch.Tensor) -> torch.Tensor:
    """W Wᵀ or Wᵀ W, whichever is the smaller: gain² I for an orthogonal init."""
    return weight @ weight.T if weight.shape[0] <= weight.shape[1] else weight.T @ weight


def assert_orthogonal(layer: nn.Linear, gain: float) -> None:
    g = gram(layer.weight.detach())
    torch.testing.assert_close(g, gain**2 * torch.eye(len(g)), atol=1e-5 * max(gain**2, 1e-2), rtol=0)
    assert not layer.bias.any()


def nb2_kept_its_init(policy: Any) -> None:
    """NB2's own init, whatever its scales: gates at their bias, head gates exactly open, and no
    weight orthogonal with SB3's gain sqrt 2 (which would also zero the gate biases)."""
    gate_bias = policy.nb2_config.gate_bias
    for net in policy.nb2_networks():
        assert not net.decoder.head_gate.weight.any() and not net.decoder.head_gate.bias.any()
        for m in net.modules():
            if isinstance(m, GatedResidual):
                assert torch.equal(m.logit.data, torch.full_like(m.logit, gate_bias))
            if isinstance(m, nn.Linear) and m is not net.decoder.head_gate:
                g = gram(m.weight.detach())
                assert not torch.allclose(g, 2 * torch.eye(len(g)), atol=0.05)


@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("policy_class", AC_POLICIES)
def test_ortho_init_heads(policy_class, share: bool) -> None:
    policy = policy_class(
        OBS, spaces.Discrete(3), lr_schedule, net_arch=[16, 8], ortho_init=True, share_encoder=share
    )
    hidden = [m for m in policy.mlp_extractor.modules() if isinstance(m, nn.Linear)]
    assert len(hidden) == 4
    for layer in hidden:
        assert_orthogonal(layer, np.sqrt(2))
    assert_orthogonal(policy.action_net, 0.01)
    assert_orthogonal(policy.value_net, 1.0)
    nb2_kept_its_init(policy)


@pytest.mark.parametrize("policy_class", AC_POLICIES)
def test_ortho_init_off_skips_sb3s_init(policy_class) -> None:
    policy = policy_class(OBS, spaces.Discrete(3), lr_schedule, net_arch=[16], ortho_init=False)
    assert policy._get_constructor_parameters()["ortho_init"] is False
    # PyTorch's default init: U(-1/sqrt(in), 1/sqrt(in)) weights and biases, not gain 0.01 / zero biases
    assert policy.action_net.weight.abs().max() > 0.05
    for layer in [*policy.mlp_extractor.modules(), policy.action_net, policy.value_net]:
        if isinstance(layer, nn.Linear):
            assert layer.bias.any()
            bound = 1 / np.sqrt(layer.in_features)
            assert layer.weight.abs().max() <= bound
    nb2_kept_its_init(policy)


@pytest.mark.parametrize(
    ("policy_class", "action_space"),
    [(NB2DQNPolicy, spaces.Discrete(3)), (NB2SACPolicy, BOX), (NB2TD3Policy, BOX)],
)
@pytest.mark.parametrize("value", [True, False])
def test_off_policy_rejects_ortho_init(policy_class, action_space, value: bool) -> None:
    with pytest.raises(ValueError, match=r"'ortho_init'\] does not apply.*actor-critic"):
        policy_class(OBS, action_space, lr_schedule, ortho_init=value)


# --- log_std_init and use_sde ---------------------------------------------------------------------


def test_ppo_log_std_init() -> None:
    policy = NB2ActorCriticPolicy(OBS, BOX, lr_schedule, log_std_init=-0.7)
    assert isinstance(policy.action_dist, DiagGaussianDistribution)
    torch.testing.assert_close(policy.log_std.data, torch.full((2,), -0.7))
    with torch.no_grad():
        dist = policy.get_distribution(torch.zeros(1, 5))
    torch.testing.assert_close(dist.distribution.stddev, torch.full((1, 2), float(np.exp(-0.7))))


@pytest.mark.parametrize("full_std", [True, False])
def test_ppo_use_sde(full_std: bool) -> None:
    policy = NB2ActorCriticPolicy(
        OBS, BOX, lr_schedule, use_sde=True, log_std_init=-1.5, full_std=full_std, net_arch=[8]
    )
    assert isinstance(policy.action_dist, StateDependentNoiseDistribution)
    assert policy.log_std.shape == ((8, 2) if full_std else (8, 1))
    torch.testing.assert_close(policy.log_std.data, torch.full_like(policy.log_std, -1.5))
    policy.reset_noise(4)
    with torch.no_grad():
        assert isinstance(policy.get_distribution(torch.zeros(4, 5)), StateDependentNoiseDistribution)
    # and PPO trains with it
    model = PPO(
        "NB2Policy", IdentityEnvBox(), use_sde=True, sde_sample_freq=4, n_steps=16, batch_size=8, n_epochs=1
    )
    model.learn(32)
    assert isinstance(model.policy.action_dist, StateDependentNoiseDistribution)
    assert torch.isfinite(model.policy.log_std).all()


def test_sac_use_sde_and_log_std_init() -> None:
    policy = NB2SACPolicy(OBS, BOX, lr_schedule, use_sde=True, log_std_init=-2.0, net_arch=[8])
    assert policy.actor.use_sde
    assert isinstance(policy.actor.action_dist, StateDependentNoiseDistribution)
    torch.testing.assert_close(policy.actor.log_std.data, torch.full((8, 2), -2.0))
    # without gSDE, SAC's log std is a layer of the state, and log_std_init is unused (as in SB3)
    plain = NB2SACPolicy(OBS, BOX, lr_schedule, log_std_init=-2.0)
    assert isinstance(plain.actor.log_std, nn.Linear)
    model = SAC(
        "NB2Policy",
        IdentityEnvBox(),
        use_sde=True,
        learning_starts=0,
        buffer_size=64,
        batch_size=8,
        train_freq=4,
    )
    model.learn(16)
    assert isinstance(model.policy.actor.action_dist, StateDependentNoiseDistribution)


@pytest.mark.parametrize(
    ("policy_class", "action_space", "key"),
    [
        (MaskableNB2Policy, spaces.Discrete(3), "use_sde"),
        (MaskableNB2Policy, spaces.Discrete(3), "log_std_init"),
        (NB2TD3Policy, BOX, "use_sde"),
        (NB2TD3Policy, BOX, "log_std_init"),
        (NB2DQNPolicy, spaces.Discrete(3), "use_sde"),
        (NB2DQNPolicy, spaces.Discrete(3), "log_std_init"),
    ],
)
def test_gaussian_options_rejected_with_the_reason(policy_class, action_space, key: str) -> None:
    with pytest.raises(ValueError, match=rf"'{key}'\] does not apply: .*(discrete|deterministic|greedily)"):
        policy_class(OBS, action_space, lr_schedule, **{key: -1.0 if key == "log_std_init" else True})
