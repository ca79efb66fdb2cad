"""NB2 policies inside SB3: log-probabilities, initialisation, encoders, options, names."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from sb3_contrib import ARS, QRDQN, TQC, TRPO, CrossQ, MaskablePPO, RecurrentPPO
from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3
from stable_baselines3.common.envs import IdentityEnv, IdentityEnvBox

import nb2_agents
from nb2_agents import (
    NB2,
    PRESETS,
    MaskableNB2Policy,
    NB2ActorCriticPolicy,
    NB2Config,
    NB2DQNPolicy,
    NB2Policy,
    NB2SACPolicy,
    NB2TD3Policy,
    get_config,
)
from nb2_agents.nn.blocks import GatedResidual
from nb2_agents.nn.probes import recording
from nb2_agents.sb3 import register_policies
from nb2_agents.sb3.extractor import NB2Extractor


def lr_schedule(_: float) -> float:
    return 1e-3


def image(shape: tuple[int, ...]) -> spaces.Box:
    return spaces.Box(0, 255, shape, dtype=np.uint8)


OBS_SPACES = {
    "vec200-small": (spaces.Box(-1, 1, (200,)), {"preset": "small"}),  # multi-group, sampling in groups
    "vec40": (spaces.Box(-1, 1, (40,)), {}),
    "image": (image((3, 36, 36)), {}),
    "dict-task": (
        spaces.Dict(
            {
                "vec": spaces.Box(-1, 1, (12,)),
                "img": image((1, 12, 12)),
                "cat": spaces.MultiDiscrete([3, 2]),
                "task_id": spaces.Discrete(3),
            }
        ),
        {},
    ),
}

ACTION_SPACES = {
    "discrete": spaces.Discrete(5),
    "multidiscrete": spaces.MultiDiscrete([3, 4]),
    "multibinary": spaces.MultiBinary(3),
    "box": spaces.Box(-1, 1, (2,)),
}


def sample_batch(space: spaces.Space, n: int) -> np.ndarray | dict[str, np.ndarray]:
    """``n`` observations with varied scales, as a VecEnv would return them."""
    rng = np.random.default_rng(0)
    if isinstance(space, spaces.Dict):
        return {k: sample_batch(s, n) for k, s in space.spaces.items()}  # type: ignore[misc]
    batch = np.stack([space.sample() for _ in range(n)])
    if isinstance(space, spaces.Box) and space.dtype != np.uint8:
        batch = (batch * rng.uniform(0.1, 3.0, (n, *([1] * len(space.shape))))).astype(space.dtype)
    return batch


def take(obs, idx):
    return {k: v[idx] for k, v in obs.items()} if isinstance(obs, dict) else obs[idx]


def nb2_gates(policy) -> list[GatedResidual]:
    return [m for net in policy.nb2_networks() for m in net.modules() if isinstance(m, GatedResidual)]


# --- forward vs evaluate_actions ------------------------------------------------------------------


@pytest.mark.parametrize("share_encoder", [True, False], ids=["shared", "separate"])
@pytest.mark.parametrize("action", list(ACTION_SPACES))
@pytest.mark.parametrize("obs", list(OBS_SPACES))
def test_forward_and_evaluate_actions_agree(obs: str, action: str, share_encoder: bool) -> None:
    obs_space, kwargs = OBS_SPACES[obs]
    policy = NB2ActorCriticPolicy(
        obs_space, ACTION_SPACES[action], lr_schedule, share_encoder=share_encoder, **kwargs
    )
    policy.set_training_mode(False)
    batch = sample_batch(obs_space, 8)
    obs_t, _ = policy.obs_to_tensor(batch)
    with torch.no_grad():
        actions, values, log_prob = policy(obs_t)
        values2, log_prob2, entropy = policy.evaluate_actions(obs_t, actions)
    assert log_prob.shape == values.shape[:1] == (8,)
    torch.testing.assert_close(log_prob2, log_prob, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(values2, values, atol=1e-5, rtol=1e-5)
    assert entropy is None or torch.isfinite(entropy).all()
    # rollouts see one env's observation at a time, updates a minibatch: same numbers
    with torch.no_grad():
        for i in (0, 5):
            one, _ = policy.obs_to_tensor(take(batch, slice(i, i + 1)))
            v, lp, _ = policy.evaluate_actions(one, actions[i : i + 1])
            torch.testing.assert_close(lp, log_prob[i : i + 1], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(v, values[i : i + 1], atol=1e-5, rtol=1e-5)


MASKED_ACTIONS = {
    "discrete": (spaces.Discrete(5), 5),
    "multidiscrete": (spaces.MultiDiscrete([3, 4]), 7),
    "multibinary": (spaces.MultiBinary(3), 6),
}


@pytest.mark.parametrize("obs", ["vec40", "dict-task"])
@pytest.mark.parametrize("action", list(MASKED_ACTIONS))
def test_maskable_forward_and_evaluate_actions_agree(obs: str, action: str) -> None:
    obs_space, kwargs = OBS_SPACES[obs]
    action_space, mask_len = MASKED_ACTIONS[action]
    policy = MaskableNB2Policy(obs_space, action_space, lr_schedule, **kwargs)
    policy.set_training_mode(False)
    rng = np.random.default_rng(1)
    masks = rng.random((16, mask_len)) < 0.6
    # at least one valid choice per categorical dimension
    starts = {"discrete": [0], "multidiscrete": [0, 3], "multibinary": [0, 2, 4]}[action]
    masks[:, starts] = True
    obs_t, _ = policy.obs_to_tensor(sample_batch(obs_space, 16))
    with torch.no_grad():
        actions, values, log_prob = policy(obs_t, action_masks=masks)
        values2, log_prob2, _ = policy.evaluate_actions(obs_t, actions, action_masks=masks)
    torch.testing.assert_close(log_prob2, log_prob, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(values2, values, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(log_prob).all()
    # sampled actions are valid
    a = actions.numpy().reshape(16, -1)
    if action == "discrete":
        assert masks[np.arange(16), a[:, 0]].all()
    elif action == "multidiscrete":
        assert masks[np.arange(16), a[:, 0]].all() and masks[np.arange(16), 3 + a[:, 1]].all()
    else:
        assert masks[np.arange(16)[:, None], np.arange(3) * 2 + a].all()


def test_maskable_masked_actions_have_zero_probability() -> None:
    policy = MaskableNB2Policy(spaces.Box(-1, 1, (6,)), spaces.Discrete(5), lr_schedule)
    masks = np.array([[True, False, True, False, False]] * 4)
    obs, _ = policy.obs_to_tensor(np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32))
    with torch.no_grad():
        dist = policy.get_distribution(obs, action_masks=masks)
        probs = dist.distribution.probs
        assert (probs[:, ~masks[0]] == 0).all()
        torch.testing.assert_close(probs.sum(-1), torch.ones(4))
        for _ in range(5):
            assert set(policy(obs, deterministic=False, action_masks=masks)[0].tolist()) <= {0, 2}


# --- initialisation inside SB3 --------------------------------------------------------------------

AC_POLICIES = [NB2ActorCriticPolicy, MaskableNB2Policy]


@pytest.mark.parametrize("share_encoder", [True, False], ids=["shared", "separate"])
@pytest.mark.parametrize("policy_class", AC_POLICIES)
@pytest.mark.parametrize("gate_bias", [-2.0, -3.0])
def test_orthogonal_init_does_not_clobber_nb2_init(
    policy_class, share_encoder: bool, gate_bias: float
) -> None:
    obs_space = OBS_SPACES["dict-task"][0]
    policy = policy_class(
        obs_space,
        spaces.Discrete(4),
        lr_schedule,
        share_encoder=share_encoder,
        nb2_kwargs={"gate_bias": gate_bias},
        ortho_init=True,
    )
    assert policy.ortho_init
    gates = nb2_gates(policy)
    assert gates
    for m in gates:
        assert torch.equal(m.logit.data, torch.full_like(m.logit, gate_bias))
    for net in policy.nb2_networks():
        assert not net.decoder.head_gate.weight.any() and not net.decoder.head_gate.bias.any()
        assert not net.encoder.global_token.any()
        # NB2's own init (std 0.02), not SB3's orthogonal one (std ~ sqrt(2 / 32) = 0.25)
        for module in net.modules():
            if isinstance(module, torch.nn.Linear) and module is not net.decoder.head_gate:
                assert module.weight.std() < 0.05
    obs = policy.obs_to_tensor(sample_batch(obs_space, 3))[0]
    for net in policy.nb2_networks():
        with torch.no_grad(), recording(net) as rec:
            policy(obs)  # runs every encoder
        assert rec.gates is not None and torch.equal(rec.gates, torch.ones_like(rec.gates))
    # SB3's heads still get SB3's init: small action head (gain 0.01)
    assert policy.action_net.weight.abs().max() < 0.05


def test_ortho_init_off_keeps_nb2_init() -> None:
    policy = NB2ActorCriticPolicy(spaces.Box(-1, 1, (5,)), spaces.Discrete(2), lr_schedule, ortho_init=False)
    for m in nb2_gates(policy):
        assert torch.equal(m.logit.data, torch.full_like(m.logit, PRESETS["nano"].gate_bias))


@pytest.mark.parametrize(
    ("policy_class", "action_space"),
    [
        (NB2DQNPolicy, spaces.Discrete(3)),
        (NB2SACPolicy, spaces.Box(-1, 1, (2,))),
        (NB2TD3Policy, spaces.Box(-1, 1, (2,))),
    ],
)
def test_off_policy_gates(policy_class, action_space) -> None:
    policy = policy_class(spaces.Box(-1, 1, (5,)), action_space, lr_schedule, nb2_kwargs={"gate_bias": -1.5})
    assert nb2_gates(policy)
    for m in nb2_gates(policy):
        assert torch.equal(m.logit.data, torch.full_like(m.logit, -1.5))


# --- encoders -------------------------------------------------------------------------------------


def test_shared_encoder_is_one_network() -> None:
    policy = NB2ActorCriticPolicy(spaces.Box(-1, 1, (5,)), spaces.Discrete(2), lr_schedule)
    nets = policy.nb2_networks()
    assert len(nets) == 1
    assert policy.pi_features_extractor is policy.vf_features_extractor is policy.features_extractor
    assert nets[0].decoder.queries.shape[1] == 2  # actor and critic queries


@pytest.mark.parametrize("policy_class", AC_POLICIES)
def test_separate_encoders_are_two_networks(policy_class) -> None:
    policy = policy_class(spaces.Box(-1, 1, (5,)), spaces.Discrete(2), lr_schedule, share_encoder=False)
    nets = policy.nb2_networks()
    assert len(nets) == 2
    assert nets[0] is not nets[1]
    assert policy.pi_features_extractor is not policy.vf_features_extractor
    assert isinstance(policy.pi_features_extractor, NB2Extractor)
    assert isinstance(policy.vf_features_extractor, NB2Extractor)
    ids0 = {id(p) for p in nets[0].parameters()}
    ids1 = {id(p) for p in nets[1].parameters()}
    assert not ids0 & ids1
    # both are trained
    optimised = {id(p) for group in policy.optimizer.param_groups for p in group["params"]}
    assert ids0 | ids1 <= optimised
    # the critic reads its own encoder: changing the actor's leaves the values alone
    obs = torch.randn(3, 5)
    with torch.no_grad():
        values = policy.predict_values(obs)
        for p in policy.pi_features_extractor.parameters():
            p.add_(1.0)
        torch.testing.assert_close(policy.predict_values(obs), values)
    assert policy._get_constructor_parameters()["share_encoder"] is False


@pytest.mark.parametrize(
    ("algo", "env", "share", "n_nets"),
    [
        (SAC, IdentityEnvBox, None, 3),  # actor, critic, critic target
        (SAC, IdentityEnvBox, True, 2),  # actor = critic encoder, critic target
        (SAC, IdentityEnvBox, False, 3),
        (TD3, IdentityEnvBox, None, 4),  # actor, actor target, critic, critic target
        (DDPG, IdentityEnvBox, None, 4),
        (DQN, lambda: IdentityEnv(3), None, 2),  # Q-net, target
    ],
)
def test_off_policy_encoders(algo, env, share, n_nets: int) -> None:
    kwargs = {} if share is None else {"share_encoder": share}
    model = algo("NB2Policy", env(), policy_kwargs=kwargs, learning_starts=0, buffer_size=10)
    assert len(model.policy.nb2_networks()) == n_nets
    if share:
        assert model.policy.actor.features_extractor is model.policy.critic.features_extractor
    for net in model.policy.nb2_networks():
        assert net.decoder.queries.shape[1] == 1  # one query per network


@pytest.mark.parametrize("policy_class", AC_POLICIES)
def test_critic_grad_scale(policy_class) -> None:
    space = OBS_SPACES["vec40"][0]
    full = policy_class(space, spaces.Discrete(3), lr_schedule, critic_grad_scale=1.0)
    default = policy_class(space, spaces.Discrete(3), lr_schedule)
    assert default.mlp_extractor.critic_grad_scale == 0.2  # the README's default
    assert default._get_constructor_parameters()["critic_grad_scale"] == 0.2
    scaled = policy_class(space, spaces.Discrete(3), lr_schedule, critic_grad_scale=0.3)
    scaled.load_state_dict(full.state_dict())
    obs = torch.as_tensor(sample_batch(space, 6))
    # the forward pass is unchanged
    torch.testing.assert_close(scaled.predict_values(obs), full.predict_values(obs))
    actions = torch.zeros(6, dtype=torch.long)
    v1, lp1, _ = scaled.evaluate_actions(obs, actions)
    v2, lp2, _ = full.evaluate_actions(obs, actions)
    torch.testing.assert_close(v1, v2)
    torch.testing.assert_close(lp1, lp2)

    def grads(policy) -> dict[str, torch.Tensor]:
        policy.zero_grad(set_to_none=True)
        policy.predict_values(obs).sum().backward()
        return {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}

    g_full, g_scaled = grads(full), grads(scaled)
    assert set(g_full) == set(g_scaled)
    for name, grad in g_full.items():
        expected = grad * 0.3 if name.startswith("features_extractor.") else grad  # value head unscaled
        torch.testing.assert_close(g_scaled[name], expected, atol=1e-6, rtol=1e-4)
    # the actor's gradient into the shared encoder is untouched
    full.zero_grad(set_to_none=True)
    scaled.zero_grad(set_to_none=True)
    full.evaluate_actions(obs, actions)[1].sum().backward()
    scaled.evaluate_actions(obs, actions)[1].sum().backward()
    for (n, p1), p2 in zip(full.named_parameters(), scaled.parameters(), strict=True):
        if p1.grad is not None:
            torch.testing.assert_close(p2.grad, p1.grad, msg=n)


def test_critic_grad_scale_ignored_with_separate_encoders() -> None:
    policy = NB2ActorCriticPolicy(
        spaces.Box(-1, 1, (5,)), spaces.Discrete(2), lr_schedule, share_encoder=False, critic_grad_scale=0.3
    )
    assert policy.mlp_extractor.critic_grad_scale == 1.0
    assert policy._get_constructor_parameters()["critic_grad_scale"] == 0.3


def test_dqn_rejects_share_encoder() -> None:
    with pytest.raises(ValueError, match="share_encoder"):
        NB2DQNPolicy(spaces.Box(-1, 1, (5,)), spaces.Discrete(2), lr_schedule, share_encoder=True)


# --- options --------------------------------------------------------------------------------------

ALL_POLICIES = [
    (NB2ActorCriticPolicy, spaces.Discrete(3)),
    (MaskableNB2Policy, spaces.Discrete(3)),
    (NB2DQNPolicy, spaces.Discrete(3)),
    (NB2SACPolicy, spaces.Box(-1, 1, (2,))),
    (NB2TD3Policy, spaces.Box(-1, 1, (2,))),
]
POLICY_IDS = [cls.__name__ for cls, _ in ALL_POLICIES]


@pytest.mark.parametrize(("policy_class", "action_space"), ALL_POLICIES, ids=POLICY_IDS)
@pytest.mark.parametrize("preset", ["huge", "NANO"])
def test_unknown_preset_lists_presets(policy_class, action_space, preset: str) -> None:
    with pytest.raises(ValueError) as info:
        policy_class(spaces.Box(-1, 1, (5,)), action_space, lr_schedule, preset=preset)
    for name in PRESETS:
        assert repr(name) in str(info.value)


# SB3's own extractor options (share_features_extractor, features_extractor_class / _kwargs):
# tests/test_sb3_idioms.py


@pytest.mark.parametrize(("policy_class", "action_space"), ALL_POLICIES, ids=POLICY_IDS)
def test_nb2_options_reach_the_network(policy_class, action_space) -> None:
    policy = policy_class(
        spaces.Box(-1, 1, (5,)),
        action_space,
        lr_schedule,
        preset="small",
        sampling=False,
        nb2_kwargs={"d_model": 16, "n_heads": 2},
    )
    cfg = policy.nb2_config
    assert (cfg.d_model, cfg.n_heads, cfg.sampling, cfg.n_local_layers) == (16, 2, False, 2)
    for net in policy.nb2_networks():
        assert net.cfg == cfg
    params = policy._get_constructor_parameters()
    assert params["preset"] == "small" and params["sampling"] is False
    assert params["nb2_kwargs"] == {"d_model": 16, "n_heads": 2}
    for key in ("features_extractor_class", "features_extractor_kwargs", "share_features_extractor"):
        assert key not in params
    # rebuilt from its constructor parameters, as SB3's load does
    params["lr_schedule"] = lr_schedule
    clone = policy_class(**params)
    assert clone.nb2_config == cfg
    clone.load_state_dict(policy.state_dict())


def test_config_object_as_preset() -> None:
    cfg = NB2Config(d_model=16, n_heads=4)
    policy = NB2ActorCriticPolicy(spaces.Box(-1, 1, (5,)), spaces.Discrete(2), lr_schedule, preset=cfg)
    assert policy.nb2_config == cfg
    assert policy.action_net.in_features == 16


@pytest.mark.parametrize(
    ("net_arch", "dims"),
    [
        (None, (32, 32)),
        ([], (32, 32)),
        ([16], (16, 16)),
        ({"pi": [8], "vf": [4, 6]}, (8, 6)),
        ({"pi": [8]}, (8, 32)),
    ],
)
def test_net_arch_heads(net_arch, dims: tuple[int, int]) -> None:
    policy = NB2ActorCriticPolicy(spaces.Box(-1, 1, (5,)), spaces.Discrete(2), lr_schedule, net_arch=net_arch)
    assert (policy.mlp_extractor.latent_dim_pi, policy.mlp_extractor.latent_dim_vf) == dims
    assert policy.action_net.in_features == dims[0] and policy.value_net.in_features == dims[1]
    with torch.no_grad():
        actions, values, _ = policy(torch.randn(3, 5))
    assert values.shape == (3, 1) and actions.shape == (3,)


def test_default_optimizer_is_fused_adam() -> None:
    policy = NB2ActorCriticPolicy(spaces.Box(-1, 1, (5,)), spaces.Discrete(2), lr_schedule)
    assert isinstance(policy.optimizer, torch.optim.Adam)
    assert policy.optimizer.defaults["fused"] is True
    assert policy.optimizer.defaults["eps"] == 1e-5
    # the user's choice wins
    policy = NB2ActorCriticPolicy(
        spaces.Box(-1, 1, (5,)), spaces.Discrete(2), lr_schedule, optimizer_kwargs={"eps": 1e-3}
    )
    assert not policy.optimizer.defaults.get("fused")
    assert policy.optimizer.defaults["eps"] == 1e-3
    policy = NB2ActorCriticPolicy(
        spaces.Box(-1, 1, (5,)), spaces.Discrete(2), lr_schedule, optimizer_class=torch.optim.SGD
    )
    assert isinstance(policy.optimizer, torch.optim.SGD)


@pytest.mark.parametrize(("policy_class", "action_space"), ALL_POLICIES, ids=POLICY_IDS)
def test_check_finite_in_predict(policy_class, action_space) -> None:
    obs = np.zeros((2, 5), dtype=np.float32)
    obs[1, 4] = np.nan
    policy = policy_class(spaces.Box(-1, 1, (5,)), action_space, lr_schedule)
    with pytest.raises(ValueError, match="feature 4"):
        policy.predict(obs)
    policy = policy_class(spaces.Box(-1, 1, (5,)), action_space, lr_schedule, check_finite=False)
    nets = policy.nb2_networks()
    assert nets and not any(net.check_finite for net in nets)
    with torch.no_grad():
        for net in nets:
            assert torch.isnan(net(torch.as_tensor(obs))[1]).all()  # passes NaN on instead


def test_unsupported_observation_space() -> None:
    bad = spaces.Dict({"a": spaces.Box(-1, 1, (2,)), "b": spaces.Dict({"c": spaces.Discrete(2)})})
    with pytest.raises(TypeError, match="nested Dict at observation key 'b'"):
        NB2ActorCriticPolicy(bad, spaces.Discrete(2), lr_schedule)


# --- the short name -------------------------------------------------------------------------------

EXPECTED = {
    PPO: NB2ActorCriticPolicy,
    A2C: NB2ActorCriticPolicy,
    MaskablePPO: MaskableNB2Policy,
    DQN: NB2DQNPolicy,
    SAC: NB2SACPolicy,
    TD3: NB2TD3Policy,
    DDPG: NB2TD3Policy,
}


@pytest.mark.parametrize("algo", list(EXPECTED), ids=lambda a: a.__name__)
def test_short_name_resolves(algo) -> None:
    assert algo.policy_aliases["NB2Policy"] is EXPECTED[algo]
    assert algo._get_policy_from_name(algo, "NB2Policy") is EXPECTED[algo]
    # SB3's own names are untouched
    assert "MlpPolicy" in algo.policy_aliases


@pytest.mark.parametrize(
    ("algo", "env"),
    [
        (PPO, lambda: IdentityEnv(3)),
        (A2C, lambda: IdentityEnv(3)),
        (DQN, lambda: IdentityEnv(3)),
        (SAC, IdentityEnvBox),
        (TD3, IdentityEnvBox),
        (DDPG, IdentityEnvBox),
    ],
    ids=lambda a: getattr(a, "__name__", ""),
)
def test_short_name_builds_the_right_policy(algo, env) -> None:
    model = algo("NB2Policy", env())
    assert type(model.policy) is EXPECTED[algo]


def test_nb2_policy_is_the_actor_critic_policy() -> None:
    assert NB2Policy is NB2ActorCriticPolicy
    assert nb2_agents.NB2Policy is NB2ActorCriticPolicy
    assert isinstance(PPO(NB2Policy, IdentityEnv(3)).policy.features_extractor.net, NB2)


@pytest.mark.parametrize("algo", [QRDQN, TQC, TRPO, RecurrentPPO, ARS, CrossQ], ids=lambda a: a.__name__)
def test_short_name_not_registered_elsewhere(algo) -> None:
    assert "NB2Policy" not in algo.policy_aliases


def test_register_policies_is_idempotent() -> None:
    before = {algo: dict(algo.policy_aliases) for algo in EXPECTED}
    register_policies()
    register_policies()
    for algo in EXPECTED:
        assert algo.policy_aliases == before[algo]


def test_get_config_matches_policy_default() -> None:
    policy = NB2ActorCriticPolicy(spaces.Box(-1, 1, (5,)), spaces.Discrete(2), lr_schedule)
    assert policy.nb2_config == get_config("nano")
