"""Smoke tests: every SB3 algorithm with NB2 on every observation / action space it takes.

Tiny budgets: these check that training runs, changes the weights and keeps them finite, and that
a model survives saving and loading in a fresh Python process. Learning itself is tested in
``test_learning.py`` (the ``slow`` tier).
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from sb3_contrib import MaskablePPO
from sb3_contrib.common.envs import (
    InvalidActionEnvDiscrete,
    InvalidActionEnvMultiBinary,
    InvalidActionEnvMultiDiscrete,
)
from sb3_contrib.common.maskable.utils import get_action_masks
from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import (
    FakeImageEnv,
    IdentityEnv,
    IdentityEnvBox,
    IdentityEnvMultiBinary,
    IdentityEnvMultiDiscrete,
    SimpleMultiObsEnv,
)
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

import nb2_agents
from nb2_agents import MaskableNB2Policy, NB2ActorCriticPolicy, NB2DQNPolicy, NB2SACPolicy, NB2TD3Policy
from nb2_agents.nn.probes import recording

pytestmark = pytest.mark.filterwarnings(
    # SB3's own advice about Monitor wrappers and the like is expected with these test envs
    "ignore::UserWarning:stable_baselines3.*",
    "ignore::UserWarning:sb3_contrib.*",
)

POLICY = "NB2Policy"
NANO = {"preset": "nano"}


# --- test environments ----------------------------------------------------------------------------


class DictEnv(gym.Env):
    """Dict observations with every kind of key (optionally a task id), and any action space."""

    def __init__(
        self,
        action_space: spaces.Space | None = None,
        image: bool = True,
        task: bool = False,
        ep_length: int = 10,
    ) -> None:
        obs = {
            "vec": spaces.Box(-1, 1, (6,), dtype=np.float32),
            "cat": spaces.MultiDiscrete([3, 2]),
            "flag": spaces.MultiBinary(2),
            "d": spaces.Discrete(3),
        }
        if task:
            obs["task_id"] = spaces.Discrete(3)
        if image:
            obs["img"] = spaces.Box(0, 255, (16, 16, 1), dtype=np.uint8)  # HWC: SB3 transposes it
        self.observation_space = spaces.Dict(obs)
        self.action_space = action_space if action_space is not None else spaces.Discrete(3)
        self.ep_length = ep_length
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        self.t += 1
        reward = float(np.asarray(action, dtype=np.float32).ravel()[0] > 0)
        return self.observation_space.sample(), reward, False, self.t >= self.ep_length, {}


class Masked(gym.Wrapper):
    """Adds ``action_masks()`` to a Discrete-action env: a random half of the actions, always 0."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._rng = np.random.default_rng(0)

    def action_masks(self) -> np.ndarray:
        mask = self._rng.random(int(self.action_space.n)) < 0.5
        mask[0] = True
        return mask


def fake_image(channel_first: bool = False, discrete: bool = True) -> FakeImageEnv:
    shape = dict(screen_height=36, screen_width=36, n_channels=1 if channel_first else 3)
    return FakeImageEnv(action_dim=4, channel_first=channel_first, discrete=discrete, **shape)


ENVS: dict[str, Any] = {
    # vector observations
    "cartpole": lambda: gym.make("CartPole-v1"),
    "identity-discrete": lambda: IdentityEnv(4, ep_length=10),
    "identity-box": lambda: IdentityEnvBox(ep_length=10),
    "identity-multidiscrete": lambda: IdentityEnvMultiDiscrete(3, ep_length=10),
    "identity-multibinary": lambda: IdentityEnvMultiBinary(3, ep_length=10),
    # images
    "image-hwc": lambda: fake_image(),
    "image-chw-box": lambda: fake_image(channel_first=True, discrete=False),
    # Dict
    "multi-obs": lambda: SimpleMultiObsEnv(random_start=False),
    "dict-discrete": lambda: DictEnv(),
    "dict-multidiscrete": lambda: DictEnv(spaces.MultiDiscrete([2, 3]), image=False),
    "dict-multibinary": lambda: DictEnv(spaces.MultiBinary(3), image=False),
    "dict-box": lambda: DictEnv(spaces.Box(-1, 1, (2,), dtype=np.float32)),
    "dict-task-discrete": lambda: DictEnv(task=True),
    "dict-task-box": lambda: DictEnv(spaces.Box(-1, 1, (2,), dtype=np.float32), image=False, task=True),
    # masked actions
    "masked-discrete": lambda: InvalidActionEnvDiscrete(dim=6, ep_length=10, n_invalid_actions=3),
    "masked-multidiscrete": lambda: InvalidActionEnvMultiDiscrete(
        dims=[3, 3], ep_length=10, n_invalid_actions=2
    ),
    "masked-multibinary": lambda: InvalidActionEnvMultiBinary(dims=3, ep_length=10, n_invalid_actions=1),
    "masked-image": lambda: Masked(fake_image()),
    "masked-dict": lambda: Masked(DictEnv()),
}

ON_POLICY_ENVS = [
    "cartpole",
    "identity-discrete",
    "identity-box",
    "identity-multidiscrete",
    "identity-multibinary",
    "image-hwc",
    "image-chw-box",
    "multi-obs",
    "dict-discrete",
    "dict-multidiscrete",
    "dict-multibinary",
    "dict-box",
]
MASKABLE_ENVS = [
    "masked-discrete",
    "masked-multidiscrete",
    "masked-multibinary",
    "masked-image",
    "masked-dict",
]
DQN_ENVS = ["cartpole", "identity-discrete", "image-hwc", "dict-discrete"]
CONTINUOUS_ENVS = ["identity-box", "dict-box"]

ALGO_KWARGS: dict[type, dict[str, Any]] = {
    PPO: dict(n_steps=32, batch_size=32, n_epochs=1),
    A2C: dict(n_steps=8),
    MaskablePPO: dict(n_steps=32, batch_size=32, n_epochs=1),
    DQN: dict(learning_starts=16, buffer_size=256, batch_size=16, train_freq=4, target_update_interval=16),
    SAC: dict(learning_starts=16, buffer_size=256, batch_size=16, train_freq=4),
    TD3: dict(learning_starts=16, buffer_size=256, batch_size=16, train_freq=4, policy_delay=1),
    DDPG: dict(learning_starts=16, buffer_size=256, batch_size=16, train_freq=4),
}
POLICY_CLASS = {
    PPO: NB2ActorCriticPolicy,
    A2C: NB2ActorCriticPolicy,
    MaskablePPO: MaskableNB2Policy,
    DQN: NB2DQNPolicy,
    SAC: NB2SACPolicy,
    TD3: NB2TD3Policy,
    DDPG: NB2TD3Policy,
}


def make_model(algo, env_name: str, policy_kwargs: dict | None = None, **kwargs):
    env = ENVS[env_name]()
    merged = {**ALGO_KWARGS[algo], **kwargs}
    return algo(POLICY, env, policy_kwargs={**NANO, **(policy_kwargs or {})}, seed=0, verbose=0, **merged)


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.policy.state_dict().items()}


def check_training(model, before: dict[str, torch.Tensor], steps: int) -> None:
    after = model.policy.state_dict()
    assert model.num_timesteps >= steps
    for name, value in after.items():
        assert torch.isfinite(value).all(), f"{name} is not finite after training"
    nb2_changed = [k for k in after if ".net." in k and not torch.equal(before[k], after[k])]
    assert nb2_changed, "training did not change any NB2 weight"


def check_predict(model) -> None:
    """Deterministic predictions on the env's observations: repeatable, valid, respecting masks."""
    env = model.get_env()
    obs = env.reset()
    kwargs = {}
    if isinstance(model, MaskablePPO):
        kwargs["action_masks"] = get_action_masks(env)
    action, _ = model.predict(obs, deterministic=True, **kwargs)
    again, _ = model.predict(obs, deterministic=True, **kwargs)
    np.testing.assert_array_equal(action, again)
    assert all(model.action_space.contains(np.asarray(a, dtype=model.action_space.dtype)) for a in action)
    if "action_masks" in kwargs and isinstance(model.action_space, spaces.Discrete):
        assert kwargs["action_masks"][np.arange(len(action)), action].all()


@pytest.mark.parametrize("env_name", ON_POLICY_ENVS)
@pytest.mark.parametrize("algo", [PPO, A2C], ids=lambda a: a.__name__)
def test_on_policy(algo, env_name: str) -> None:
    model = make_model(algo, env_name)
    assert type(model.policy) is POLICY_CLASS[algo]
    before = snapshot(model)
    model.learn(64)
    check_training(model, before, 64)
    check_predict(model)


@pytest.mark.parametrize("env_name", ["image-hwc", "dict-box"])
def test_ppo_separate_encoders_and_small_preset(env_name: str) -> None:
    model = make_model(PPO, env_name, policy_kwargs={"preset": "small", "share_encoder": False})
    assert len(model.policy.nb2_networks()) == 2
    before = snapshot(model)
    model.learn(64)
    check_training(model, before, 64)


@pytest.mark.parametrize("sampling", [True, False], ids=["sampling", "no-sampling"])
def test_ppo_sampling_switch(sampling: bool) -> None:
    model = make_model(PPO, "image-hwc", policy_kwargs={"sampling": sampling})
    assert model.policy.nb2_config.sampling is sampling
    # SB3 transposes HWC images to CHW before the policy sees them
    assert model.observation_space.shape == (3, 36, 36)
    assert model.policy.nb2_networks()[0].tokenizer.segments[0].channels_first
    model.learn(64)


@pytest.mark.parametrize("env_name", MASKABLE_ENVS)
def test_maskable_ppo(env_name: str) -> None:
    model = make_model(MaskablePPO, env_name)
    assert type(model.policy) is MaskableNB2Policy
    before = snapshot(model)
    model.learn(64)
    check_training(model, before, 64)
    check_predict(model)


@pytest.mark.parametrize("env_name", DQN_ENVS)
def test_dqn(env_name: str) -> None:
    model = make_model(DQN, env_name)
    before = snapshot(model)
    model.learn(64)
    check_training(model, before, 64)
    check_predict(model)


@pytest.mark.parametrize(
    ("algo", "env_name"),
    [(algo, env) for algo in (SAC, TD3) for env in CONTINUOUS_ENVS] + [(DDPG, "identity-box")],
    ids=lambda x: getattr(x, "__name__", x),
)
def test_continuous_off_policy(algo, env_name: str) -> None:
    model = make_model(algo, env_name)
    before = snapshot(model)
    model.learn(64)
    check_training(model, before, 64)
    check_predict(model)


FLAT_CASES = (
    [(algo, env) for algo in (PPO, A2C) for env in ON_POLICY_ENVS]
    + [(MaskablePPO, env) for env in MASKABLE_ENVS]
    + [(DQN, env) for env in DQN_ENVS]
    + [(algo, env) for algo in (SAC, TD3) for env in CONTINUOUS_ENVS]
)


@pytest.mark.parametrize(("algo", "env_name"), FLAT_CASES, ids=[f"{a.__name__}-{e}" for a, e in FLAT_CASES])
def test_flat_attention_baseline(algo, env_name: str) -> None:
    """The flat-attention baseline (preset ``nano-flat``) trains wherever NB2 does."""
    model = make_model(algo, env_name, policy_kwargs={"preset": "nano-flat"})
    assert model.policy.nb2_config.attention == "flat"
    before = snapshot(model)
    model.learn(64)
    check_training(model, before, 64)
    check_predict(model)


@pytest.mark.parametrize("share_encoder", [True, False])
def test_sac_encoder_sharing(share_encoder: bool) -> None:
    model = make_model(SAC, "dict-box", policy_kwargs={"share_encoder": share_encoder})
    before = snapshot(model)
    model.learn(48)
    check_training(model, before, 48)


@pytest.mark.parametrize(
    ("algo", "env_name"),
    [
        (PPO, "dict-task-discrete"),
        (A2C, "dict-task-discrete"),
        (DQN, "dict-task-discrete"),
        (SAC, "dict-task-box"),
    ],
    ids=["PPO", "A2C", "DQN", "SAC"],
)
def test_train_with_task_id(algo, env_name: str) -> None:
    model = make_model(algo, env_name)
    before = snapshot(model)
    model.learn(64)
    check_training(model, before, 64)


@pytest.mark.parametrize("algo", [PPO, DQN], ids=lambda a: a.__name__)
def test_predict_with_task_id(algo) -> None:
    """Rollouts and predict see task ids with shape (B,): that path works."""
    model = make_model(algo, "dict-task-discrete")
    obs = model.get_env().reset()
    assert obs["task_id"].shape == (1,)
    action, _ = model.predict(obs, deterministic=True)
    assert int(action[0]) in range(3)


# --- the SB3 API around training ------------------------------------------------------------------


def test_predict_single_and_batched() -> None:
    model = make_model(PPO, "identity-box")
    obs = np.array([0.3], dtype=np.float32)
    action, state = model.predict(obs, deterministic=True)
    assert action.shape == (1,) and state is None
    batch = np.array([[0.3], [-0.5], [0.9]], dtype=np.float32)
    actions, _ = model.predict(batch, deterministic=True)
    assert actions.shape == (3, 1)
    np.testing.assert_allclose(actions[0], action, atol=1e-6)
    # Dict observations, including the image in the env's HWC layout
    model = make_model(PPO, "dict-discrete")
    obs = ENVS["dict-discrete"]().observation_space.sample()
    action, _ = model.predict(obs, deterministic=True)
    assert int(action) in range(3)


def test_predict_rejects_nan_observations() -> None:
    model = make_model(PPO, "identity-box")
    with pytest.raises(ValueError, match="check_finite=False"):
        model.predict(np.array([np.nan], dtype=np.float32))


@pytest.mark.parametrize("algo", [PPO, DQN], ids=lambda a: a.__name__)
def test_evaluate_policy(algo) -> None:
    model = make_model(algo, "identity-discrete")
    eval_env = Monitor(IdentityEnv(4, ep_length=5))
    mean, std = evaluate_policy(model, eval_env, n_eval_episodes=3, deterministic=True)
    assert 0.0 <= mean <= 5.0 and std >= 0.0
    rewards, lengths = evaluate_policy(model, eval_env, n_eval_episodes=2, return_episode_rewards=True)
    assert lengths == [5, 5] and len(rewards) == 2


def test_maskable_evaluate_policy() -> None:
    from sb3_contrib.common.maskable.evaluation import evaluate_policy as maskable_evaluate

    model = make_model(MaskablePPO, "masked-discrete")
    env = Monitor(InvalidActionEnvDiscrete(dim=6, ep_length=5, n_invalid_actions=3))
    mean, _ = maskable_evaluate(model, env, n_eval_episodes=2, use_masking=True)
    assert 0.0 <= mean <= 5.0


@pytest.mark.parametrize(
    ("algo", "env_id"),
    [(PPO, "CartPole-v1"), (A2C, "CartPole-v1"), (DQN, "CartPole-v1"), (SAC, "Pendulum-v1")],
    ids=["PPO", "A2C", "DQN", "SAC"],
)
def test_vectorised_env(algo, env_id: str) -> None:
    env = make_vec_env(env_id, n_envs=2, seed=0)
    kwargs = {**ALGO_KWARGS[algo]}
    if algo is PPO:
        kwargs.update(n_steps=16)  # 2 envs x 16 steps = one batch of 32
    model = algo(POLICY, env, policy_kwargs=dict(NANO), seed=0, **kwargs)  # SB3 may add keys
    before = snapshot(model)
    model.learn(64)
    check_training(model, before, 64)
    actions, _ = model.predict(env.reset(), deterministic=True)
    assert len(actions) == 2
    env.close()


@pytest.mark.parametrize("algo", [PPO, DQN, SAC], ids=lambda a: a.__name__)
def test_set_env_and_continue_learning(algo) -> None:
    env_name = "identity-box" if algo is SAC else "identity-discrete"
    model = make_model(algo, env_name)
    model.learn(32)
    assert model.num_timesteps == 32
    model.learn(32, reset_num_timesteps=False)
    assert model.num_timesteps == 64
    model.set_env(ENVS[env_name]())
    model.learn(32, reset_num_timesteps=False)
    assert model.num_timesteps == 96
    model.learn(32)  # a fresh count
    assert model.num_timesteps == 32


def test_set_env_rejects_other_spaces() -> None:
    model = make_model(PPO, "identity-discrete")
    with pytest.raises(ValueError):
        model.set_env(IdentityEnv(5))


# --- save, then load in a fresh process -----------------------------------------------------------

LOAD_SCRIPT = textwrap.dedent(
    """
    import pickle, sys
    import numpy as np
    import torch
    torch.set_num_threads(1)
    import sb3_contrib, stable_baselines3

    # no `import nb2_agents` here: loading the zip must be enough
    name, path, obs_path, out_path = sys.argv[1:]
    algo = getattr(stable_baselines3, name, None) or getattr(sb3_contrib, name)
    model = algo.load(path, device="cpu")
    with open(obs_path, "rb") as f:
        obs, masks = pickle.load(f)
    kwargs = {} if masks is None else {"action_masks": masks}
    actions, _ = model.predict(obs, deterministic=True, **kwargs)
    net = model.policy.nb2_networks()[0]
    info = (type(model.policy).__name__, net.cfg, len(model.policy.nb2_networks()))
    with open(out_path, "wb") as f:
        pickle.dump((actions, info), f)
    """
)

SAVE_LOAD_CASES = {
    "PPO-vector": (PPO, "cartpole", {}),
    "PPO-dict-separate": (PPO, "dict-discrete", {"share_encoder": False, "sampling": False}),
    "A2C-image": (A2C, "image-hwc", {}),
    "MaskablePPO": (MaskablePPO, "masked-discrete", {}),
    "DQN": (DQN, "cartpole", {"nb2_kwargs": {"d_model": 16}}),
    "SAC": (SAC, "identity-box", {"share_encoder": True}),
    "SAC-dict": (SAC, "dict-box", {}),
    "TD3": (TD3, "identity-box", {"preset": "small"}),
}


def fixed_observations(space: spaces.Space, n: int = 16):
    space.seed(123)
    samples = [space.sample() for _ in range(n)]
    if isinstance(space, spaces.Dict):
        return {k: np.stack([s[k] for s in samples]) for k in space.spaces}
    return np.stack(samples)


@pytest.mark.parametrize("case", list(SAVE_LOAD_CASES))
def test_save_load_in_fresh_process(case: str, tmp_path: Path) -> None:
    algo, env_name, policy_kwargs = SAVE_LOAD_CASES[case]
    model = make_model(algo, env_name, policy_kwargs=policy_kwargs)
    model.learn(48)  # so the weights are not the initial ones
    env = ENVS[env_name]()
    obs = fixed_observations(env.observation_space)
    masks = None
    if algo is MaskablePPO:
        masks = np.ones((16, int(env.action_space.n)), dtype=bool)
        masks[::2, 1:3] = False
    expected, _ = model.predict(obs, deterministic=True, **({} if masks is None else {"action_masks": masks}))

    path, obs_path, out_path = tmp_path / "model.zip", tmp_path / "obs.pkl", tmp_path / "out.pkl"
    model.save(path)
    with open(obs_path, "wb") as f:
        pickle.dump((obs, masks), f)
    result = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, algo.__name__, str(path), str(obs_path), str(out_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**_child_env(), "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out_path, "rb") as f:
        actions, (policy_name, cfg, n_nets) = pickle.load(f)
    assert policy_name == POLICY_CLASS[algo].__name__
    assert cfg == model.policy.nb2_config
    assert n_nets == len(model.policy.nb2_networks())
    np.testing.assert_array_equal(actions, expected)

    # and in this process too, with the env
    loaded = algo.load(path, env=model.get_env())
    np.testing.assert_array_equal(
        loaded.predict(obs, deterministic=True, **({} if masks is None else {"action_masks": masks}))[0],
        expected,
    )
    loaded.learn(32, reset_num_timesteps=False)


def _child_env() -> dict[str, str]:
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def test_package_import_registers_names() -> None:
    assert nb2_agents.__version__
    for algo, policy in POLICY_CLASS.items():
        assert algo.policy_aliases[POLICY] is policy


def test_ppo_update_log_probs_equal_the_rollouts_with_token_sampling() -> None:
    """With sampling on (196 patches in 14 windows of 14), which tokens are kept depends on the
    observation alone, so PPO's minibatches re-score each action exactly as the rollout did."""
    env = FakeImageEnv(action_dim=4, screen_height=56, screen_width=56, n_channels=3, discrete=True)
    kwargs = {"preset": "nano", "sampling": True, "nb2_kwargs": {"patch_size": 4}}
    model = PPO(POLICY, env, n_steps=64, batch_size=16, n_epochs=1, policy_kwargs=kwargs, seed=0)
    model.learn(64)  # weights away from their init
    _, callback = model._setup_learn(64, callback=None, reset_num_timesteps=False)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, n_rollout_steps=64)
    net = model.policy.nb2_networks()[0]
    for batch in model.rollout_buffer.get(16):
        with torch.no_grad(), recording(net) as rec:
            _, log_prob, _ = model.policy.evaluate_actions(batch.observations, batch.actions.long().flatten())
        torch.testing.assert_close(log_prob, batch.old_log_prob, rtol=0, atol=1e-5)
        assert rec.kept is not None and float(rec.kept.mean()) < 1.0  # tokens were dropped
